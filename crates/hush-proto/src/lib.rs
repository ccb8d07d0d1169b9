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
