//! Protobuf types for hush, generated at build time from the schemas in
//! `proto/` by protox and prost-build.
//!
//! These are raw wire types: every field may be missing or the wrong
//! length. Other crates parse them into validated domain types at the
//! boundary and never pass them further (see `spec/index.md`).

#![allow(missing_docs, unreachable_pub, clippy::all)]

// Nested as the protobuf packages are (`hush.wire.v1`, ...), so the
// generated cross-package paths resolve.
include!(concat!(env!("OUT_DIR"), "/protos.rs"));

/// Wire messages (`proto/wire.proto`).
pub use hush::wire::v1 as wire;

/// Persisted state records (`proto/state.proto`).
pub use hush::state::v1 as state;

/// Relay protocol frames (`proto/relay.proto`).
pub use hush::relay::v1 as relay;

/// What clients say to each other inside a ratchet message
/// (`proto/client.proto`).
pub use hush::client::v1 as client;

pub use prost::Message;

/// `Debug` for the messages that hold secret bytes (`build.rs`,
/// `SECRET_MESSAGES`): the name and nothing else, so a record logged or
/// shown in a failed assertion gives away no key (`audit/REVIEW.md`,
/// finding P1). The messages that only contain these (a receiver chain,
/// a sender-key record, content carrying a sender key) keep their derived
/// `Debug`, which prints these as redacted.
macro_rules! redacted_debug {
    ($($name:literal => $ty:ty),* $(,)?) => {
        $(impl core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct($name).finish_non_exhaustive()
            }
        })*
    };
}

redacted_debug!(
    "IdentityRecord" => state::IdentityRecord,
    "SignedPreKeyRecord" => state::SignedPreKeyRecord,
    "OneTimePreKeyRecord" => state::OneTimePreKeyRecord,
    "ChainState" => state::ChainState,
    "SkippedKey" => state::SkippedKey,
    "SessionRecord" => state::SessionRecord,
    "SenderKeyState" => state::SenderKeyState,
    "SkippedSenderKey" => state::SkippedSenderKey,
    "SenderKeyDistribution" => wire::SenderKeyDistribution,
    "SenderKey" => client::SenderKey,
);
