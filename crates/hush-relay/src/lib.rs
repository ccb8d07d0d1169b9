//! The hush relay (`spec/relay.md`): a prekey directory and durable,
//! opaque per-device queues, served over QUIC.
//!
//! The relay logic works on plain types over a [`store::Store`]; the
//! QUIC shell only moves frames.

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod frame;
pub mod metrics;
pub mod relay;
pub mod server;
pub mod store;
pub mod testing;
pub mod tls;
