//! The generated types that carry secret bytes (persisted state records,
//! sender-key distributions) print none of them in `Debug`, nor do the
//! messages that contain them; and every message of `proto/` with a
//! secret-looking field is one of them (`audit/REVIEW.md`, finding P1).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_proto::{client, state, wire};

/// A recognisable 32-byte secret.
const SECRET: [u8; 32] = [
    0xc1, 0x5e, 0xc2, 0x07, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x17, 0x28, 0x39, 0x4a, 0x5b, 0x6c,
    0x7d, 0x8e, 0x9f, 0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xa9, 0xba, 0xcb, 0xdc,
];

fn assert_hidden(value: &impl core::fmt::Debug) {
    for shown in [format!("{value:?}"), format!("{value:#?}")] {
        for window in SECRET.windows(4) {
            let decimal = window
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!shown.contains(&decimal), "{shown}");
            assert!(!shown.contains(&hex), "{shown}");
            assert!(!shown.contains(&hex.to_uppercase()), "{shown}");
        }
        let pretty = SECRET[..4]
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(",\n");
        assert!(!shown.replace(' ', "").contains(&pretty), "{shown}");
    }
}

fn chain() -> state::ChainState {
    state::ChainState {
        chain_key: SECRET.to_vec(),
        index: 3,
    }
}

#[test]
fn records_and_distributions_print_no_secret() {
    let secret = SECRET.to_vec();
    assert_hidden(&state::IdentityRecord {
        version: 1,
        seed: secret.clone(),
    });
    assert_hidden(&state::SignedPreKeyRecord {
        version: 1,
        id: 1,
        secret: secret.clone(),
        signature: vec![0; 64],
        last_resort: false,
    });
    assert_hidden(&state::OneTimePreKeyRecord {
        version: 1,
        id: 1,
        secret: secret.clone(),
    });
    assert_hidden(&chain());
    assert_hidden(&state::ReceiverChain {
        ratchet_key: vec![0; 32],
        chain: Some(chain()),
    });
    assert_hidden(&state::SkippedKey {
        ratchet_key: vec![0; 32],
        index: 1,
        message_key: secret.clone(),
    });
    assert_hidden(&state::SessionRecord {
        version: 1,
        root_key: secret.clone(),
        ratchet_secret: secret.clone(),
        sending: Some(chain()),
        ..Default::default()
    });
    let sender_state = state::SenderKeyState {
        key_id: 1,
        chain: Some(chain()),
        signing_public: vec![0; 32],
        signing_secret: secret.clone(),
        skipped: vec![state::SkippedSenderKey {
            iteration: 1,
            message_key: secret.clone(),
        }],
    };
    assert_hidden(&sender_state);
    assert_hidden(&state::SkippedSenderKey {
        iteration: 1,
        message_key: secret.clone(),
    });
    assert_hidden(&state::SenderKeyRecord {
        version: 1,
        states: vec![sender_state],
        group_id: vec![0; 16],
    });
    assert_hidden(&wire::SenderKeyDistribution {
        key_id: 1,
        iteration: 2,
        chain_key: secret.clone(),
        signing_key: vec![0; 32],
        group_id: vec![0; 16],
    });
    let sender_key = client::SenderKey {
        distribution: secret.clone(),
    };
    assert_hidden(&sender_key);
    assert_hidden(&client::Content {
        message_id: vec![0; 16],
        sent_at_ms: 1,
        counter: 1,
        body: Some(client::content::Body::SenderKey(sender_key)),
    });
    // Redacted, not emptied: the name still shows.
    assert_eq!(format!("{:?}", chain()), "ChainState { .. }");
}

/// Every message of `proto/*.proto` with a field named like a secret,
/// by package. A new secret field fails here until its message is added
/// to `build.rs`'s `SECRET_MESSAGES` (and to `src/lib.rs`) and to this
/// list.
#[test]
fn every_message_with_a_secret_field_is_redacted() {
    const SECRET_WORDS: &[&str] = &["secret", "seed", "_key\0", "distribution"];
    const PUBLIC_KEYS: &[&str] = &[
        "identity_key",
        "ratchet_key",
        "base_key",
        "signing_key",
        "public_key",
        "ephemeral_key",
        "device_key",
        "their_ratchet_key",
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut found = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut package = String::new();
        let mut message = String::new();
        for line in text.lines() {
            let line = line.split("//").next().unwrap_or("").trim();
            if let Some(p) = line.strip_prefix("package ") {
                package = p.trim_end_matches(';').to_string();
            } else if let Some(m) = line.strip_prefix("message ") {
                message = m.split_whitespace().next().unwrap_or("").to_string();
            } else if let Some((declaration, _)) = line.split_once('=') {
                // Secret bytes are `bytes` fields (repeated or not).
                let words: Vec<&str> = declaration.split_whitespace().collect();
                let [.., kind, field] = words.as_slice() else {
                    continue;
                };
                let marked = format!("{field}\0");
                let secret = *kind == "bytes"
                    && SECRET_WORDS.iter().any(|w| marked.contains(w))
                    && !PUBLIC_KEYS.contains(field);
                let name = format!(".{package}.{message}");
                if secret && !found.contains(&name) {
                    found.push(name);
                }
            }
        }
    }
    found.sort();
    let mut expected = vec![
        ".hush.client.v1.SenderKey",
        ".hush.state.v1.ChainState",
        ".hush.state.v1.IdentityRecord",
        ".hush.state.v1.OneTimePreKeyRecord",
        ".hush.state.v1.SenderKeyState",
        ".hush.state.v1.SessionRecord",
        ".hush.state.v1.SignedPreKeyRecord",
        ".hush.state.v1.SkippedKey",
        ".hush.state.v1.SkippedSenderKey",
        ".hush.wire.v1.SenderKeyDistribution",
    ];
    expected.sort();
    assert_eq!(found, expected);
}
