//! Protobuf types for hush, generated at build time from the schemas in
//! `proto/` by protox and prost-build.
//!
//! These are raw wire types: every field may be missing or the wrong
//! length. Other crates parse them into validated domain types at the
//! boundary and never pass them further (see `spec/index.md`).

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Wire messages (`proto/wire.proto`).
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/hush.wire.v1.rs"));
}

/// Persisted state records (`proto/state.proto`).
pub mod state {
    include!(concat!(env!("OUT_DIR"), "/hush.state.v1.rs"));
}

pub use prost::Message;
