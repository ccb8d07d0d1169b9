//! Identity keys (`spec/identity.md`).
//!
//! An identity is an Ed25519 key pair. Its X25519 form, used in X3DH and
//! sealed envelopes, is derived from it, never chosen separately:
//!
//! - secret: `x = SHA-512(seed)[0..32]`, clamped by X25519 as usual
//!   (the same scalar Ed25519 signs with);
//! - public: the Montgomery `u = (1 + y) / (1 - y)` of the Ed25519 point.
//!
//! so `X25519(x, 9)` equals the birational map of the Ed25519 public key.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hush_proto::{Message, state};
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{DecodeError, KeyError};
use crate::primitives::fixed;
use crate::state::{STATE_VERSION, check_version};

/// A public identity key: Ed25519 for signatures, with its X25519 form
/// for key agreement.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityKey {
    ed: VerifyingKey,
    x: [u8; 32],
}

impl core::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "IdentityKey({})", crate::Address::from(self))
    }
}

impl core::hash::Hash for IdentityKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.ed.as_bytes().hash(state);
    }
}

impl IdentityKey {
    /// Parses a 32-byte Ed25519 public key, rejecting non-canonical and
    /// invalid encodings and small-order points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        if !canonical_y(bytes) {
            return Err(KeyError::Invalid);
        }
        let ed = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::Invalid)?;
        if ed.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(Self::from_verifying(ed))
    }

    /// Parses a key field of a wire message.
    pub(crate) fn decode(field: &'static str, bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_bytes(&fixed(field, bytes)?).map_err(|_| DecodeError::InvalidKey(field))
    }

    /// Wraps a key derived from a secret we hold (prime order by
    /// construction, so no weak-key check is needed).
    pub(crate) fn from_verifying(ed: VerifyingKey) -> Self {
        let x = ed.to_montgomery().to_bytes();
        Self { ed, x }
    }

    /// The Ed25519 encoding (32 bytes).
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.ed.as_bytes()
    }

    /// The X25519 form used in key agreement (32 bytes).
    pub fn x25519(&self) -> &[u8; 32] {
        &self.x
    }

    /// Verifies an Ed25519 signature (strict: rejects non-canonical
    /// signatures and small-order components).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.ed
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// Verifies with RFC 8032's cofactorless equation, without the strict
    /// small-order checks on `R` (one point decompression cheaper). Used
    /// for sender-key messages, whose signing key was checked not weak
    /// when decoded and whose replays are caught by (key id, iteration),
    /// not by signature bytes.
    pub(crate) fn verify_rfc8032(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        use ed25519_dalek::Verifier;
        self.ed
            .verify(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

/// Whether the encoded `y` (sign bit cleared) is below p = 2^255 - 19,
/// as RFC 8032 requires. Without this, `y` and `y + p` would decode to
/// one point under two encodings: two addresses for one key.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    // p in little-endian is ed ff .. ff 7f.
    let top = bytes[31] & 0x7f;
    if top != 0x7f {
        return true;
    }
    if bytes[1..31].iter().any(|&b| b != 0xff) {
        return true;
    }
    bytes[0] < 0xed
}

/// An identity key pair. Holds the Ed25519 seed and the derived X25519
/// secret; both are zeroized on drop.
pub struct IdentityKeyPair {
    signing: SigningKey,
    x_secret: StaticSecret,
    public: IdentityKey,
}

/// The seed and the X25519 scalar wipe themselves when the pair is dropped.
impl zeroize::ZeroizeOnDrop for IdentityKeyPair {}
const _: fn(&IdentityKeyPair) = |pair| {
    crate::secret::wipes_on_drop(&pair.signing);
    crate::secret::wipes_on_drop(&pair.x_secret);
};

impl core::fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "IdentityKeyPair {{ public: {:?}, .. }}", self.public)
    }
}

impl IdentityKeyPair {
    /// Generates a new identity. Draws 32 bytes (the seed) from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// Rebuilds an identity from its 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let x_secret = StaticSecret::from(signing.to_scalar_bytes());
        let public = IdentityKey::from_verifying(signing.verifying_key());
        Self {
            signing,
            x_secret,
            public,
        }
    }

    /// The public identity key.
    pub fn public(&self) -> &IdentityKey {
        &self.public
    }

    /// Signs `message` with the Ed25519 identity key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The X25519 secret for key agreement.
    pub(crate) fn x25519_secret(&self) -> &StaticSecret {
        &self.x_secret
    }

    /// Serializes to a versioned `IdentityRecord` (`spec/state.md`).
    /// The result contains the secret seed: store it encrypted.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let record = state::IdentityRecord {
            version: STATE_VERSION,
            seed: self.signing.to_bytes().to_vec(),
        };
        Zeroizing::new(record.encode_to_vec())
    }

    /// Restores from [`IdentityKeyPair::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut record = state::IdentityRecord::decode(bytes)?;
        let seed = check_version(record.version)
            .and_then(|()| fixed::<32>("seed", &record.seed).map(Zeroizing::new));
        record.seed.zeroize();
        Ok(Self::from_seed(&*seed?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn x25519_form_matches_birational_map() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let id = IdentityKeyPair::generate(&mut rng);
        let from_secret = crate::primitives::x25519_public(id.x25519_secret());
        assert_eq!(&from_secret, id.public().x25519());
    }

    #[test]
    fn sign_verify() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let id = IdentityKeyPair::generate(&mut rng);
        let sig = id.sign(b"msg");
        assert!(id.public().verify(b"msg", &sig));
        assert!(!id.public().verify(b"msh", &sig));
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(IdentityKey::from_bytes(&[0u8; 32]), Err(KeyError::Weak));
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            IdentityKey::from_bytes(&identity_point),
            Err(KeyError::Weak)
        );
        // y = p + 1: a non-canonical encoding of y = 1.
        let mut over = [0xffu8; 32];
        over[0] = 0xee;
        over[31] = 0x7f;
        assert_eq!(IdentityKey::from_bytes(&over), Err(KeyError::Invalid));
        // y = 2 is not on the curve.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        assert_eq!(IdentityKey::from_bytes(&bad), Err(KeyError::Invalid));
    }

    #[test]
    fn state_round_trip_and_version() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let id = IdentityKeyPair::generate(&mut rng);
        let restored = IdentityKeyPair::from_bytes(&id.to_bytes()).expect("restores");
        assert_eq!(restored.public(), id.public());
        let newer = state::IdentityRecord {
            version: STATE_VERSION + 1,
            seed: vec![0; 32],
        }
        .encode_to_vec();
        assert_eq!(
            IdentityKeyPair::from_bytes(&newer).err(),
            Some(DecodeError::UnsupportedVersion {
                found: STATE_VERSION + 1,
                supported: STATE_VERSION
            })
        );
        assert!(IdentityKeyPair::from_bytes(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let id = IdentityKeyPair::from_seed(&[5; 32]);
        let shown = format!("{id:?}");
        assert!(shown.starts_with("IdentityKeyPair { public: IdentityKey(hush"));
        assert!(shown.ends_with(", .. }"));
    }
}
