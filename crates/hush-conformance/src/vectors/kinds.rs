//! Which fields of each vector are inputs and which are outputs
//! (`spec/conformance.md`, "Inputs and outputs"), how a vector is split
//! into a request and the answer expected, and how an answer is compared
//! with it.

use anyhow::{Result, anyhow, bail};
use serde_json::{Map, Value};

use Part::{Each, Fields, In, Out};

/// How one value of a vector is split.
pub(crate) enum Part {
    /// Sent to the implementation.
    In,
    /// Stripped from the request and expected back, compared exactly.
    Out,
    /// An object whose keys are split one by one; a key not listed makes
    /// the vector unsplittable.
    Fields(&'static [(&'static str, Part)]),
    /// An array whose elements are each split by the inner part.
    Each(&'static Part),
    /// An array of objects split by the value of their `op` key.
    ByOp(&'static [(&'static str, &'static [(&'static str, Part)])]),
}

/// One kind of vector: the operation an implementation runs for it.
pub(crate) struct Kind {
    /// The file's `mechanism`.
    pub(crate) mechanism: &'static str,
    /// The operation, sent in the request.
    pub(crate) kind: &'static str,
    /// The vectors of this kind, by name.
    pub(crate) names: &'static [&'static str],
    /// The vector's keys (besides `name`).
    pub(crate) fields: &'static [(&'static str, Part)],
}

/// A prekey of Bob's: id and secret in, public out.
const PREKEY: Part = Fields(&[("id", In), ("secret", In), ("public", Out)]);

/// A prekey of Bob's, id and secret only.
const PREKEY_SECRET: Part = Fields(&[("id", In), ("secret", In)]);

/// The fields of a vector of `x3dh.json` or `ratchet.json`: the setup
/// (draws, both identities, Bob's prekeys as `$prekey`, his bundle), then
/// the rest.
macro_rules! with_setup {
    ($prekey:expr; $($rest:expr),* $(,)?) => {
        &[
            ("draws", In),
            ("alice_identity_seed", In),
            ("bob_identity_seed", In),
            ("bob_signed_prekey", $prekey),
            ("bob_last_resort_prekey", $prekey),
            ("bob_one_time_prekey", $prekey),
            ("bundle", In),
            $($rest),*
        ]
    };
}

/// Every kind the checker knows, in the order of `spec/conformance.md`.
pub(crate) const KINDS: &[Kind] = &[
    Kind {
        mechanism: "primitives",
        kind: "kdf_steps",
        names: &["kdf_steps"],
        fields: &[
            ("draws", In),
            (
                "x25519",
                Fields(&[
                    ("secret_a", In),
                    ("secret_b", In),
                    ("public_a", Out),
                    ("public_b", Out),
                    ("shared", Out),
                ]),
            ),
            (
                "kdf_rk",
                Fields(&[
                    ("root_key", In),
                    ("dh_output", In),
                    ("new_root_key", Out),
                    ("chain_key", Out),
                ]),
            ),
            (
                "kdf_ck",
                Fields(&[
                    ("chain_key", In),
                    ("message_key", Out),
                    ("next_chain_key", Out),
                ]),
            ),
            (
                "message_keys",
                Each(&Fields(&[
                    ("info", In),
                    ("message_key", In),
                    ("key", Out),
                    ("nonce", Out),
                ])),
            ),
            ("x3dh_secret", Each(&Fields(&[("dh", In), ("sk", Out)]))),
            (
                "padding",
                Each(&Fields(&[("content_len", In), ("padded_len", Out)])),
            ),
        ],
    },
    Kind {
        mechanism: "identity",
        kind: "identity",
        names: &["identity_1", "identity_2"],
        fields: &[
            ("draws", In),
            ("seed", In),
            ("message", In),
            ("ed25519_public", Out),
            ("x25519_secret", Out),
            ("x25519_public", Out),
            ("address", Out),
            ("signature", Out),
        ],
    },
    Kind {
        mechanism: "identity",
        kind: "address_parse",
        names: &["address_errors"],
        fields: &[
            ("draws", In),
            (
                "cases",
                Each(&Fields(&[("case", In), ("input", In), ("result", Out)])),
            ),
        ],
    },
    Kind {
        mechanism: "x3dh",
        kind: "handshake",
        names: &[
            "one_time_prekey",
            "last_resort_prekey",
            "signed_prekey_only",
        ],
        fields: with_setup![PREKEY;
            ("alice_ephemeral_secret", In),
            ("alice_first_ratchet_secret", In),
            ("plaintext", In),
            ("alice_ephemeral_public", Out),
            ("dh", Out),
            ("sk", Out),
            ("ad", Out),
            ("alice_first_ratchet_public", Out),
            ("root_key_after_first_step", Out),
            ("sending_chain_key", Out),
            ("message_key", Out),
            ("next_chain_key", Out),
            ("aead_key", Out),
            ("aead_nonce", Out),
            ("header", Out),
            ("prekey_message", Out),
        ],
    },
    Kind {
        mechanism: "x3dh",
        kind: "rejections",
        names: &["rejections"],
        fields: with_setup![PREKEY_SECRET;
            (
                "cases",
                Each(&Fields(&[
                    ("case", In),
                    ("bundle", In),
                    ("prekey_message", In),
                    ("error", Out),
                ])),
            ),
        ],
    },
    Kind {
        mechanism: "ratchet",
        kind: "conversation",
        names: &["conversation"],
        fields: with_setup![PREKEY_SECRET;
            (
                "steps",
                Part::ByOp(&[
                    (
                        "encrypt",
                        &[
                            ("op", In),
                            ("party", In),
                            ("plaintext", In),
                            ("draws", Out),
                            ("type", Out),
                            ("message", Out),
                        ],
                    ),
                    (
                        "decrypt",
                        &[
                            ("op", In),
                            ("party", In),
                            ("type", In),
                            ("message", In),
                            ("result", Out),
                        ],
                    ),
                ]),
            ),
        ],
    },
    Kind {
        mechanism: "sender-keys",
        kind: "group",
        names: &["group"],
        fields: &[
            ("draws", In),
            ("group_id", In),
            ("chain_key", In),
            ("signing_seed", In),
            ("key_id", Out),
            ("signing_public", Out),
            ("distribution", Out),
            ("first_message_key", Out),
            ("first_aead_key", Out),
            ("first_aead_nonce", Out),
            (
                "messages",
                Each(&Fields(&[("plaintext", In), ("message", Out)])),
            ),
            (
                "receiver_steps",
                Each(&Fields(&[("case", In), ("message", In), ("result", Out)])),
            ),
            ("rotated_distribution", Out),
        ],
    },
    Kind {
        mechanism: "envelope",
        kind: "seal_one",
        names: &["one_recipient"],
        fields: &[
            ("draws", In),
            ("identity_seeds", In),
            ("sender_device", In),
            ("content_type", In),
            ("content", In),
            ("message_secret", In),
            ("ephemeral_secret", Out),
            ("body_key", Out),
            ("ephemeral_public", Out),
            ("padded_content", Out),
            ("slot_mask", Out),
            ("envelope", Out),
            ("opened", Out),
            (
                "rejections",
                Each(&Fields(&[("case", In), ("envelope", In), ("error", Out)])),
            ),
        ],
    },
    Kind {
        mechanism: "envelope",
        kind: "seal_many",
        names: &["three_recipients"],
        fields: &[
            ("draws", In),
            ("identity_seeds", In),
            ("sender_device", In),
            ("content_type", In),
            ("content", In),
            ("message_secret", In),
            ("body", Out),
            ("slots", Out),
            ("per_recipient", Out),
        ],
    },
    Kind {
        mechanism: "safety-numbers",
        kind: "pair",
        names: &["pair_1", "pair_2"],
        fields: &[
            ("draws", In),
            ("local_identity", In),
            ("remote_identity", In),
            ("digits", Out),
            ("scannable_local", Out),
            ("scannable_remote", Out),
        ],
    },
    Kind {
        mechanism: "decoding",
        kind: "decode",
        names: &[
            "pre_key_bundle",
            "pre_key_message",
            "ratchet_message",
            "sender_key_message",
            "sender_key_distribution",
            "sealed_envelope",
            "address",
            "scannable_safety_number",
        ],
        fields: &[
            ("draws", In),
            ("type", In),
            (
                "cases",
                Each(&Fields(&[("case", In), ("input", In), ("error", Out)])),
            ),
        ],
    },
    Kind {
        mechanism: "devices",
        kind: "device_lists",
        names: &["linked_and_unlinked"],
        fields: &[
            ("draws", In),
            ("primary_seed", In),
            ("laptop_seed", In),
            ("desktop_seed", In),
            ("other_seed", In),
            ("names", In),
            ("lists", Out),
            (
                "rejections",
                Each(&Fields(&[("case", In), ("list", In), ("error", Out)])),
            ),
        ],
    },
    Kind {
        mechanism: "devices",
        kind: "link_code",
        names: &["link_code"],
        fields: &[
            ("draws", In),
            ("secret", In),
            ("code", Out),
            ("mailbox", Out),
            ("key", Out),
            (
                "cases",
                Each(&Fields(&[("case", In), ("input", In), ("result", Out)])),
            ),
        ],
    },
];

/// A vector split into what the implementation is sent and what it must
/// answer.
pub(crate) struct Split {
    /// The kind of the vector.
    pub(crate) kind: &'static Kind,
    /// The input fields.
    pub(crate) inputs: Value,
    /// The output fields, as recorded.
    pub(crate) outputs: Value,
}

/// Splits the vector `name` of `mechanism`.
pub(crate) fn split(mechanism: &str, name: &str, vector: &Value) -> Result<Split> {
    let kind = KINDS
        .iter()
        .find(|k| k.mechanism == mechanism && k.names.contains(&name))
        .ok_or_else(|| anyhow!("the checker does not know this vector's inputs and outputs"))?;
    let mut vector = vector.clone();
    if let Value::Object(map) = &mut vector {
        map.remove("name");
    }
    let (inputs, outputs) = split_fields(kind.fields, &vector, "")?;
    if outputs.is_empty() {
        bail!("the vector has no output fields to check");
    }
    Ok(Split {
        kind,
        inputs: Value::Object(inputs),
        outputs: Value::Object(outputs),
    })
}

fn split_fields(
    fields: &[(&str, Part)],
    value: &Value,
    path: &str,
) -> Result<(Map<String, Value>, Map<String, Value>)> {
    let Value::Object(map) = value else {
        bail!("{} is not an object", shown(path));
    };
    let mut inputs = Map::new();
    let mut outputs = Map::new();
    for (key, value) in map {
        let here = join(path, key);
        let part = fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, p)| p)
            .ok_or_else(|| anyhow!("unknown field {here}"))?;
        let (input, output) = split_value(part, value, &here)?;
        if let Some(input) = input {
            inputs.insert(key.clone(), input);
        }
        if let Some(output) = output {
            outputs.insert(key.clone(), output);
        }
    }
    Ok((inputs, outputs))
}

/// The input and output sides of `value`; `None` for a side it has
/// nothing of.
fn split_value(part: &Part, value: &Value, path: &str) -> Result<(Option<Value>, Option<Value>)> {
    let (inputs, outputs) = match part {
        In => return Ok((Some(value.clone()), None)),
        Out => return Ok((None, Some(value.clone()))),
        Fields(fields) => {
            let (inputs, outputs) = split_fields(fields, value, path)?;
            return Ok((non_empty(inputs), non_empty(outputs)));
        }
        Each(part) => each(value, path, |item, here| split_value(part, item, here))?,
        Part::ByOp(variants) => each(value, path, |item, here| {
            let op = item.get("op").and_then(Value::as_str).unwrap_or_default();
            let fields = variants
                .iter()
                .find(|(name, _)| *name == op)
                .map(|(_, fields)| *fields)
                .ok_or_else(|| anyhow!("{here}: unknown op {op:?}"))?;
            let (inputs, outputs) = split_fields(fields, item, here)?;
            Ok((non_empty(inputs), non_empty(outputs)))
        })?,
    };
    // An element with nothing on one side is `{}` there, so both arrays
    // keep the vector's indices.
    let side = |items: Vec<Option<Value>>| {
        items.iter().any(Option::is_some).then(|| {
            Value::Array(
                items
                    .into_iter()
                    .map(|v| v.unwrap_or_else(|| Value::Object(Map::new())))
                    .collect(),
            )
        })
    };
    Ok((side(inputs), side(outputs)))
}

type Sides = (Vec<Option<Value>>, Vec<Option<Value>>);

fn each(
    value: &Value,
    path: &str,
    mut split: impl FnMut(&Value, &str) -> Result<(Option<Value>, Option<Value>)>,
) -> Result<Sides> {
    let Value::Array(items) = value else {
        bail!("{} is not an array", shown(path));
    };
    let mut sides: Sides = (Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let (input, output) = split(item, &format!("{path}[{i}]"))?;
        sides.0.push(input);
        sides.1.push(output);
    }
    Ok(sides)
}

fn non_empty(map: Map<String, Value>) -> Option<Value> {
    (!map.is_empty()).then_some(Value::Object(map))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "the vector" } else { path }
}

/// The paths at which `got` differs from `expected`: a differing value,
/// a missing or an unexpected key, an array of another length.
pub(crate) fn differences(expected: &Value, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(expected, got, "", &mut out);
    out
}

fn diff(expected: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (key, value) in e {
                match g.get(key) {
                    Some(other) => diff(value, other, &join(path, key), out),
                    None => out.push(format!("{} (missing)", join(path, key))),
                }
            }
            out.extend(
                g.keys()
                    .filter(|k| !e.contains_key(k.as_str()))
                    .map(|k| format!("{} (unexpected)", join(path, k))),
            );
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
            for (i, (a, b)) in e.iter().zip(g).enumerate() {
                diff(a, b, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Array(e), Value::Array(g)) => out.push(format!(
            "{} ({} items, expected {})",
            shown(path),
            g.len(),
            e.len()
        )),
        _ if expected != got => out.push(shown(path).to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn splits_nested_fields_and_keeps_indices() {
        let vector = json!({
            "name": "group", "draws": ["00"], "group_id": "67", "key_id": 7,
            "messages": [{"plaintext": "6730", "message": "aa"}],
            "receiver_steps": [{"case": "in_order", "message": "aa", "result": {"plaintext": "6730"}}],
        });
        let split = split("sender-keys", "group", &vector).unwrap();
        assert_eq!(split.kind.kind, "group");
        assert_eq!(
            split.inputs,
            json!({"draws": ["00"], "group_id": "67", "messages": [{"plaintext": "6730"}],
                   "receiver_steps": [{"case": "in_order", "message": "aa"}]})
        );
        assert_eq!(
            split.outputs,
            json!({"key_id": 7, "messages": [{"message": "aa"}],
                   "receiver_steps": [{"result": {"plaintext": "6730"}}]})
        );
    }

    #[test]
    fn splits_steps_by_op() {
        let vector = json!({"steps": [
            {"op": "encrypt", "party": "alice", "plaintext": "61", "draws": 0, "type": "prekey", "message": "aa"},
            {"op": "decrypt", "party": "bob", "type": "prekey", "message": "aa", "result": {"error": "Duplicate"}},
        ]});
        let split = split("ratchet", "conversation", &vector).unwrap();
        assert_eq!(
            split.inputs,
            json!({"steps": [{"op": "encrypt", "party": "alice", "plaintext": "61"},
                             {"op": "decrypt", "party": "bob", "type": "prekey", "message": "aa"}]})
        );
        assert_eq!(
            split.outputs,
            json!({"steps": [{"draws": 0, "type": "prekey", "message": "aa"},
                             {"result": {"error": "Duplicate"}}]})
        );
    }

    #[test]
    fn refuses_what_it_cannot_split() {
        let unknown_field = json!({"draws": [], "seed": "00", "surprise": 1, "address": "x"});
        assert!(split("identity", "identity_1", &unknown_field).is_err());
        assert!(split("identity", "identity_9", &json!({"address": "x"})).is_err());
        let bad_op = json!({"steps": [{"op": "rewind"}]});
        assert!(split("ratchet", "conversation", &bad_op).is_err());
        let no_outputs = json!({"draws": [], "seed": "00"});
        assert!(split("identity", "identity_1", &no_outputs).is_err());
    }

    #[test]
    fn reports_each_difference_by_path() {
        let expected = json!({"a": "1", "list": [{"x": 1}, {"x": 2}], "gone": true});
        let got = json!({"a": "2", "list": [{"x": 1}, {"x": 3}], "extra": 0});
        assert_eq!(
            differences(&expected, &got),
            ["a", "gone (missing)", "list[1].x", "extra (unexpected)"]
        );
        assert!(differences(&expected, &expected).is_empty());
    }
}
