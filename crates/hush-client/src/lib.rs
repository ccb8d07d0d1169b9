//! The hush client SDK (`spec/client.md`): a profile (identity, prekeys,
//! sessions, contacts, history, outbox) kept encrypted at rest, and a
//! [`client::Client`] that talks to a relay so that messages arrive
//! exactly once and in order, however the network behaves.
//!
//! The `hush` command-line client (`src/main.rs`) is built on it.

#![warn(missing_docs)]

pub mod client;
pub mod content;
pub mod profile;
mod rng;
pub mod vault;

pub use client::{Client, ClientError, Event, Options, Received};
pub use profile::{Status, Unlock};
