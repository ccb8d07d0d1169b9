//! Vector conformance (`spec/conformance.md`): runs every vector of
//! `spec/vectors/` against an implementation that speaks the JSON-lines
//! protocol, hush itself by default, and prints one line per vector.
//!
//! For each vector the checker splits the fields into inputs and outputs
//! ([`kinds`]), sends the inputs ([`child`]), and compares the outputs
//! the implementation answers with the recorded ones. `serve` is hush's
//! side of the protocol ([`serve`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};

mod child;
mod kinds;
mod serve;

use child::Implementation;

const USAGE: &str =
    "usage: hush-conformance vectors [--dir DIR] [--timeout SECONDS] [--impl COMMAND ARGS...]";

/// How long an implementation may take to answer one request.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `hush-conformance serve`.
pub(crate) fn serve() -> Result<()> {
    serve::run()
}

/// `hush-conformance vectors ...`: fails if any vector fails.
pub(crate) fn main(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let files = vector_files(&options.dir)?;
    let mut implementation = Implementation::start(options.command, options.timeout)?;
    let mut tally = Tally::default();
    let mut id: u64 = 0;
    for path in files {
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let (mechanism, vectors) = match load(&path) {
            Ok(loaded) => loaded,
            Err(e) => {
                tally.report(&file, Outcome::Fail(format!("{e:#}")));
                continue;
            }
        };
        for (index, vector) in vectors.iter().enumerate() {
            id += 1;
            let name = vector
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("#{index}"), str::to_string);
            let outcome = run(&mut implementation, id, &mechanism, &name, vector);
            tally.report(&format!("{mechanism}/{name}"), outcome);
        }
    }
    println!(
        "{} vectors: {} passed, {} failed, {} skipped",
        tally.passed + tally.failed + tally.skipped,
        tally.passed,
        tally.failed,
        tally.skipped
    );
    ensure!(
        tally.passed + tally.failed + tally.skipped > 0,
        "no vectors in {}",
        options.dir.display()
    );
    ensure!(tally.failed == 0, "{} vectors failed", tally.failed);
    Ok(())
}

/// The command line of `vectors`.
struct Options {
    dir: PathBuf,
    command: Vec<OsString>,
    timeout: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut dir = None;
        let mut command = None;
        let mut timeout = DEFAULT_TIMEOUT;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| anyhow!("{arg} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--dir" => dir = Some(PathBuf::from(value()?)),
                "--timeout" => {
                    let seconds: f64 = value()?
                        .parse()
                        .map_err(|_| anyhow!("--timeout takes a number of seconds"))?;
                    timeout = Duration::try_from_secs_f64(seconds)
                        .ok()
                        .filter(|t| !t.is_zero())
                        .ok_or_else(|| anyhow!("--timeout takes a positive number of seconds"))?;
                }
                "--impl" => {
                    let rest: Vec<OsString> = args.by_ref().map(OsString::from).collect();
                    ensure!(!rest.is_empty(), "--impl needs a command\n{USAGE}");
                    command = Some(rest);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        let command = match command {
            Some(command) => command,
            None => vec![
                std::env::current_exe()
                    .context("finding this program to run `serve`")?
                    .into_os_string(),
                "serve".into(),
            ],
        };
        Ok(Self {
            dir: dir.unwrap_or_else(default_dir),
            command,
            timeout,
        })
    }
}

/// `spec/vectors` under the current directory, else the one of the
/// source tree this binary was built from.
fn default_dir() -> PathBuf {
    let here = PathBuf::from("spec/vectors");
    if here.is_dir() {
        here
    } else {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec/vectors"))
    }
}

/// Every `.json` file in `dir`, by name.
fn vector_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading the directory {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("reading the directory {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A vector file's `mechanism` and `vectors`.
fn load(path: &Path) -> Result<(String, Vec<Value>)> {
    let text = std::fs::read_to_string(path).context("cannot read the file")?;
    let mut doc: Value = serde_json::from_str(&text).context("not JSON")?;
    let mechanism = doc
        .get("mechanism")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no `mechanism` string"))?
        .to_string();
    match doc.get_mut("vectors").map(Value::take) {
        Some(Value::Array(vectors)) => Ok((mechanism, vectors)),
        _ => bail!("no `vectors` array"),
    }
}

/// What became of one vector.
enum Outcome {
    Pass,
    Fail(String),
    Skip,
}

/// Runs one vector against the implementation.
fn run(
    implementation: &mut Implementation,
    id: u64,
    mechanism: &str,
    name: &str,
    vector: &Value,
) -> Outcome {
    let split = match kinds::split(mechanism, name, vector) {
        Ok(split) => split,
        Err(e) => return Outcome::Fail(format!("{e:#}")),
    };
    let request = json!({
        "id": id,
        "mechanism": mechanism,
        "kind": split.kind.kind,
        "name": name,
        "vector": split.inputs,
    });
    let answer = match implementation.ask(&request) {
        Ok(answer) => answer,
        Err(why) => return Outcome::Fail(why),
    };
    if answer.get("unsupported") == Some(&Value::Bool(true)) {
        return Outcome::Skip;
    }
    if let Some(error) = answer.get("error") {
        let error = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string);
        return Outcome::Fail(format!("the implementation reported an error: {error}"));
    }
    let Some(outputs) = answer.get("outputs") else {
        return Outcome::Fail(
            "the answer has none of `outputs`, `unsupported` and `error`".to_string(),
        );
    };
    let differing = kinds::differences(&split.outputs, outputs);
    if differing.is_empty() {
        return Outcome::Pass;
    }
    const SHOWN: usize = 8;
    let mut why = format!(
        "fields differ: {}",
        differing[..differing.len().min(SHOWN)].join(", ")
    );
    if differing.len() > SHOWN {
        why.push_str(&format!(" and {} more", differing.len() - SHOWN));
    }
    Outcome::Fail(why)
}

/// Counts outcomes and prints one line for each.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Tally {
    fn report(&mut self, label: &str, outcome: Outcome) {
        match outcome {
            Outcome::Pass => {
                self.passed += 1;
                println!("pass {label}");
            }
            Outcome::Fail(why) => {
                self.failed += 1;
                println!("FAIL {label}: {why}");
            }
            Outcome::Skip => {
                self.skipped += 1;
                println!("skip {label} (unsupported by the implementation)");
            }
        }
    }
}
