//! The hush protocol core: identities and addresses, signed prekeys and
//! bundles, X3DH, the Double Ratchet, sender keys for groups, sealed
//! envelopes and safety numbers.
//!
//! Everything here is pure: no I/O, no async, no clocks, no global state.
//! Randomness comes in as `rng: &mut impl CryptoRng`; persisting state is
//! the caller's job (every stateful type serializes to versioned bytes and
//! restores exactly). Each module names the `spec/` section it implements;
//! the spec, not this code, is the reference for other implementations.
//!
//! | module | spec |
//! |---|---|
//! | [`identity`], [`address`] | `spec/identity.md` |
//! | [`prekey`], [`x3dh`] | `spec/x3dh.md` |
//! | [`ratchet`] | `spec/ratchet.md` |
//! | [`sender_key`] | `spec/sender-keys.md` |
//! | [`envelope`] | `spec/envelope.md` |
//! | [`safety`] | `spec/safety-numbers.md` |
//! | [`devices`] | `spec/devices.md` (multi-device accounts; design) |
//! | state blobs | `spec/state.md` |

#![warn(missing_docs)]

pub mod address;
mod chain;
pub mod devices;
pub mod envelope;
mod error;
#[cfg(any(test, feature = "harness"))]
pub mod harness;
pub mod identity;
pub mod kat;
pub mod prekey;
mod primitives;
pub mod ratchet;
pub mod safety;
mod secret;
pub mod sender_key;
mod state;
pub mod x3dh;

pub use address::Address;
pub use devices::{Device, DeviceList, DeviceListError, LinkCode, LinkCodeError};
pub use envelope::{
    Agreements, ContentType, Opened, SealedBody, SealedEnvelope, seal, seal_many, seal_many_with,
    seal_with,
};
pub use error::{
    AddressError, DecodeError, DecryptError, EncryptError, KeyError, OpenError, SealError,
    X3dhError,
};
pub use identity::{IdentityKey, IdentityKeyPair};
pub use prekey::{
    OneTimePreKey, OneTimePreKeyPair, PreKeyBundle, PreKeyRef, PreKeySecrets, SignedPreKey,
    SignedPreKeyPair, VerifiedBundle,
};
pub use ratchet::{PreKeyMessage, RatchetMessage, Session, SessionMessage};
pub use safety::{SafetyNumber, ScannableSafetyNumber};
pub use sender_key::{SenderKeyDistribution, SenderKeyMessage, SenderKeyRecord};

/// The random number generator every function here takes: a
/// cryptographically secure, infallible RNG.
pub use rand_core::CryptoRng;
