//! Known-answer vectors for hush (`spec/vectors/`).
//!
//! Every vector is produced by a scenario: a short script over the
//! hush-crypto API. Generating runs each scenario with a recording RNG
//! and writes what it did, every random draw included; checking replays
//! the recorded draws through the same scenario and requires the output
//! to be identical, field by field. The JSON fields are documented in
//! `spec/vectors/README.md` so another implementation can check itself.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use serde_json::{Map, Value, json};

mod rng;
mod scenarios;

pub use rng::VectorRng;

use hush_crypto::{OneTimePreKeyPair, PreKeySecrets, SignedPreKeyPair};

/// A responder's prekey secrets, as the X3DH and ratchet vectors set
/// them up (also used by the conformance kit's implementation).
pub struct PreKeys {
    /// The signed prekey.
    pub signed: SignedPreKeyPair,
    /// The last-resort prekey.
    pub last_resort: SignedPreKeyPair,
    /// The one-time prekey, if the vector has one.
    pub one_time: Option<OneTimePreKeyPair>,
}

impl PreKeySecrets for PreKeys {
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        (self.signed.id() == id).then_some(&self.signed)
    }
    fn last_resort_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        (self.last_resort.id() == id).then_some(&self.last_resort)
    }
    fn one_time_prekey(&self, id: u32) -> Option<&OneTimePreKeyPair> {
        self.one_time.as_ref().filter(|k| k.id() == id)
    }
}

/// A scenario: runs against the RNG and returns the vector's fields.
pub type Scenario = fn(&mut VectorRng) -> Result<Map<String, Value>>;

/// One vector file.
pub struct VectorFile {
    /// File name in `spec/vectors/`.
    pub file: &'static str,
    /// The spec section it checks.
    pub spec: &'static str,
    /// What it covers.
    pub description: &'static str,
    /// Named scenarios, each with the seed used to generate it.
    pub scenarios: Vec<(&'static str, u8, Scenario)>,
}

/// Every vector file hush publishes.
pub fn files() -> Vec<VectorFile> {
    scenarios::files()
}

fn run(scenario: Scenario, name: &str, rng: &mut VectorRng) -> Result<Value> {
    let fields = scenario(rng).with_context(|| format!("scenario {name}"))?;
    if let Some(problem) = rng.error() {
        return Err(anyhow!("scenario {name}: {problem}"));
    }
    let mut vector = Map::new();
    vector.insert("name".into(), json!(name));
    vector.insert(
        "draws".into(),
        Value::Array(rng.draws().iter().map(|d| json!(hex::encode(d))).collect()),
    );
    vector.extend(fields);
    Ok(Value::Object(vector))
}

/// Generates every file's JSON.
pub fn generate() -> Result<BTreeMap<&'static str, String>> {
    let mut out = BTreeMap::new();
    for file in files() {
        let mut vectors = Vec::new();
        for (name, seed, scenario) in &file.scenarios {
            vectors.push(run(*scenario, name, &mut VectorRng::record(*seed))?);
        }
        let doc = json!({
            "mechanism": file.file.trim_end_matches(".json"),
            "spec": file.spec,
            "description": file.description,
            "vectors": vectors,
        });
        out.insert(file.file, serde_json::to_string_pretty(&doc)? + "\n");
    }
    Ok(out)
}

/// Writes every vector file into `dir`.
pub fn write_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, text) in generate()? {
        std::fs::write(dir.join(file), text).with_context(|| format!("writing {file}"))?;
    }
    Ok(())
}

/// The result of checking one vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `file/vector`.
    pub vector: String,
    /// `None` on success, else what differs.
    pub failure: Option<String>,
}

/// Checks every vector in `dir` against this implementation.
pub fn check_all(dir: &Path) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    for file in files() {
        let path = dir.join(file.file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let stored = doc
            .get("vectors")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("{}: no `vectors` array", file.file))?;
        if stored.len() != file.scenarios.len() {
            outcomes.push(Outcome {
                vector: file.file.to_string(),
                failure: Some(format!(
                    "{} vectors stored, {} scenarios known",
                    stored.len(),
                    file.scenarios.len()
                )),
            });
        }
        for vector in stored {
            let name = vector.get("name").and_then(Value::as_str).unwrap_or("?");
            let label = format!("{}/{name}", file.file);
            let failure = check_one(&file, name, vector)
                .err()
                .map(|e| format!("{e:#}"));
            outcomes.push(Outcome {
                vector: label,
                failure,
            });
        }
    }
    Ok(outcomes)
}

fn check_one(file: &VectorFile, name: &str, stored: &Value) -> Result<()> {
    let (_, _, scenario) = file
        .scenarios
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| anyhow!("no scenario named {name}"))?;
    let draws = stored
        .get("draws")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("no `draws`"))?
        .iter()
        .map(|d| {
            d.as_str()
                .ok_or_else(|| anyhow!("draw is not a string"))
                .and_then(|s| hex::decode(s).map_err(|e| anyhow!("draw: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let fresh = run(*scenario, name, &mut VectorRng::replay(draws))?;
    let (Value::Object(fresh), Value::Object(stored)) = (&fresh, stored) else {
        return Err(anyhow!("vector is not an object"));
    };
    let mut differing: Vec<&str> = fresh
        .iter()
        .filter(|(k, v)| stored.get(k.as_str()) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    differing.extend(
        stored
            .keys()
            .filter(|k| !fresh.contains_key(k.as_str()))
            .map(String::as_str),
    );
    if differing.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("fields differ: {}", differing.join(", ")))
    }
}

/// The stable name of an error: its variant name.
pub fn error_name(error: &impl core::fmt::Debug) -> String {
    let text = format!("{error:?}");
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}
