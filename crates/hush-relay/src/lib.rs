//! The hush relay (`spec/relay.md`): a prekey directory and durable,
//! opaque per-device queues, served over QUIC.
//!
//! The relay logic ([`relay`]) works on plain types over a
//! [`store::Store`]: embedded SQLite ([`store::sqlite`], the default) or
//! PostgreSQL ([`store::postgres`], several relays on one database). The
//! QUIC shell ([`server`]) only moves frames.

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
