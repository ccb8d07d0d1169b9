//! The checks behind every fuzz target in `fuzz/`: one function per
//! target ([`TARGETS`]), shared by the fuzzers and by the corpus replay
//! that runs in `cargo test` (`tests/corpora.rs`), so a stored input that
//! once failed fails the build again if the bug comes back.
//!
//! A check returns a [`Violation`] for a broken invariant; a panic inside
//! hush is a bug the fuzzer reports by itself.

mod client;
mod frames;
mod relay;

use std::sync::OnceLock;

pub use hush_crypto::harness::Violation;
use hush_crypto::harness::{self as crypto, Action, Conversation, Group, GroupAction};

pub use relay::Step;

/// One fuzz target: its name (the file `fuzz/fuzz_targets/NAME.rs` and
/// the corpus directory `fuzz/corpus/NAME/`), what it feeds, and its check.
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// What the input is.
    pub input: &'static str,
    /// The check.
    pub check: fn(&[u8]) -> Result<(), Violation>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "address",
        input: "an address as typed (text)",
        check: crypto::check_address,
    },
    Target {
        name: "bundle",
        input: "a PreKeyBundle, decoded and verified",
        check: crypto::check_bundle,
    },
    Target {
        name: "prekey_message",
        input: "an X3DH initial message (PreKeyMessage)",
        check: crypto::check_prekey_message,
    },
    Target {
        name: "ratchet_message",
        input: "a Double Ratchet message",
        check: crypto::check_ratchet_message,
    },
    Target {
        name: "sender_key_message",
        input: "a SenderKeyMessage and a SenderKeyDistribution",
        check: crypto::check_sender_key_messages,
    },
    Target {
        name: "sealed_envelope",
        input: "a SealedEnvelope, decoded and opened",
        check: crypto::check_envelope,
    },
    Target {
        name: "device_list",
        input: "a multi-device account's DeviceList, decoded and verified",
        check: crypto::check_device_list,
    },
    Target {
        name: "crypto_state",
        input: "stored state: sessions, sender-key records, key pairs",
        check: crypto::check_state,
    },
    Target {
        name: "relay_frame",
        input: "a byte stream of relay frames, both directions",
        check: frames::check_relay_frames,
    },
    Target {
        name: "client_content",
        input: "a decrypted client Content (chat, receipts, groups, ...)",
        check: client::check_content,
    },
    Target {
        name: "client_state",
        input: "a sealed profile value (vault)",
        check: client::check_sealed_value,
    },
    Target {
        name: "ratchet_actions",
        input: "a 32-byte seed, then a two-party ratchet action sequence",
        check: check_ratchet_actions,
    },
    Target {
        name: "group_actions",
        input: "a 32-byte seed, then a sender-key group action sequence",
        check: check_group_actions,
    },
    Target {
        name: "relay_actions",
        input: "a relay request sequence from several devices",
        check: relay::check_relay_actions,
    },
];

/// Runs the target `name` on `data`.
pub fn check(name: &str, data: &[u8]) -> Result<(), Violation> {
    match TARGETS.iter().find(|t| t.name == name) {
        Some(target) => (target.check)(data),
        None => Err(Violation(format!("no fuzz target named {name}"))),
    }
}

/// The most actions a stateful target takes from one input.
const MAX_ACTIONS: usize = 400;

fn check_ratchet_actions(data: &[u8]) -> Result<(), Violation> {
    let Some((seed, rest)) = data.split_first_chunk::<32>() else {
        return Ok(());
    };
    let mut conversation = Conversation::new(*seed)?;
    for action in Action::from_bytes(&rest[..rest.len().min(3 * MAX_ACTIONS)]) {
        conversation
            .apply(&action)
            .map_err(|v| Violation(format!("{action:?}: {}", v.0)))?;
    }
    Ok(())
}

fn check_group_actions(data: &[u8]) -> Result<(), Violation> {
    let Some((seed, rest)) = data.split_first_chunk::<32>() else {
        return Ok(());
    };
    let mut group = Group::new(*seed)?;
    for action in GroupAction::from_bytes(&rest[..rest.len().min(3 * MAX_ACTIONS)]) {
        group
            .apply(&action)
            .map_err(|v| Violation(format!("{action:?}: {}", v.0)))?;
    }
    Ok(())
}

/// One current-thread runtime for the async checks.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            // Nothing can be checked without it; the fuzzer reports this.
            #[allow(clippy::panic)]
            Err(e) => panic!("tokio runtime: {e}"),
        }
    })
}
