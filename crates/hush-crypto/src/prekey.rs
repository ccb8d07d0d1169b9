//! Prekeys and prekey bundles (`spec/x3dh.md`, "Prekeys" and "Bundles").
//!
//! A device publishes a signed prekey, a reusable last-resort prekey
//! (also signed) and a stock of unsigned one-time prekeys. The signed
//! bytes are
//!
//! ```text
//! "hush-prekey-v1" || kind (1 byte: 1 signed, 2 last-resort) || id (u32 BE) || public (32)
//! ```
//!
//! A [`PreKeyBundle`] from the network is inert: X3DH takes only a
//! [`VerifiedBundle`], which only [`PreKeyBundle::verify`] can build.

use hush_proto::{Message, state, wire};
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{DecodeError, X3dhError};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::primitives::{fixed, x25519_public};
use crate::state::{STATE_VERSION, check_version};

const SIGNED_KIND: u8 = 1;
const LAST_RESORT_KIND: u8 = 2;

fn signed_bytes(kind: u8, id: u32, public: &[u8; 32]) -> [u8; 14 + 1 + 4 + 32] {
    let mut out = [0u8; 51];
    out[..14].copy_from_slice(b"hush-prekey-v1");
    out[14] = kind;
    out[15..19].copy_from_slice(&id.to_be_bytes());
    out[19..].copy_from_slice(public);
    out
}

fn generate_secret(rng: &mut impl CryptoRng) -> StaticSecret {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(bytes.as_mut());
    StaticSecret::from(*bytes)
}

/// Field names for decode errors: (public key, signature).
type Fields = (&'static str, &'static str);
const SIGNED_FIELDS: Fields = ("signed_prekey.public_key", "signed_prekey.signature");
const LAST_RESORT_FIELDS: Fields = (
    "last_resort_prekey.public_key",
    "last_resort_prekey.signature",
);

/// A signed prekey or last-resort prekey as published (public part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPreKey {
    /// Prekey id, chosen by the owner.
    pub id: u32,
    /// X25519 public key.
    pub public: [u8; 32],
    /// Ed25519 signature by the owner's identity key.
    pub signature: [u8; 64],
}

impl SignedPreKey {
    fn decode(proto: &wire::SignedPreKey, field: Fields) -> Result<Self, DecodeError> {
        Ok(Self {
            id: proto.id,
            public: fixed(field.0, &proto.public_key)?,
            signature: fixed(field.1, &proto.signature)?,
        })
    }

    fn encode(&self) -> wire::SignedPreKey {
        wire::SignedPreKey {
            id: self.id,
            public_key: self.public.to_vec(),
            signature: self.signature.to_vec(),
        }
    }

    fn verifies(&self, identity: &IdentityKey, kind: u8) -> bool {
        identity.verify(&signed_bytes(kind, self.id, &self.public), &self.signature)
    }
}

/// A one-time prekey as published (public part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimePreKey {
    /// Prekey id, chosen by the owner.
    pub id: u32,
    /// X25519 public key.
    pub public: [u8; 32],
}

/// Which optional prekey a bundle or initial message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PreKeyRef {
    /// A one-time prekey: the responder deletes it after use.
    OneTime(u32),
    /// The last-resort prekey: served when one-time keys ran out.
    LastResort(u32),
}

/// The optional fourth key of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtraPreKey {
    /// A one-time prekey taken from the owner's stock.
    OneTime(OneTimePreKey),
    /// The reusable last-resort prekey.
    LastResort(SignedPreKey),
}

impl ExtraPreKey {
    /// The id and kind of this prekey.
    pub fn reference(&self) -> PreKeyRef {
        match self {
            ExtraPreKey::OneTime(k) => PreKeyRef::OneTime(k.id),
            ExtraPreKey::LastResort(k) => PreKeyRef::LastResort(k.id),
        }
    }

    pub(crate) fn public(&self) -> &[u8; 32] {
        match self {
            ExtraPreKey::OneTime(k) => &k.public,
            ExtraPreKey::LastResort(k) => &k.public,
        }
    }
}

/// A prekey bundle as received: not yet checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeyBundle {
    /// The owner's identity key.
    pub identity: IdentityKey,
    /// The signed prekey.
    pub signed_prekey: SignedPreKey,
    /// A one-time prekey, or the last-resort prekey, or neither.
    pub extra: Option<ExtraPreKey>,
}

impl PreKeyBundle {
    /// Checks every signature and returns the only form X3DH accepts.
    pub fn verify(self) -> Result<VerifiedBundle, X3dhError> {
        if !self.signed_prekey.verifies(&self.identity, SIGNED_KIND) {
            return Err(X3dhError::BadSignedPreKeySignature);
        }
        if let Some(ExtraPreKey::LastResort(key)) = &self.extra
            && !key.verifies(&self.identity, LAST_RESORT_KIND)
        {
            return Err(X3dhError::BadLastResortSignature);
        }
        Ok(VerifiedBundle(self))
    }

    /// Encodes as a `PreKeyBundle` protobuf.
    pub fn to_bytes(&self) -> Vec<u8> {
        let extra = self.extra.as_ref().map(|extra| match extra {
            ExtraPreKey::OneTime(k) => {
                wire::pre_key_bundle::Extra::OneTimePrekey(wire::OneTimePreKey {
                    id: k.id,
                    public_key: k.public.to_vec(),
                })
            }
            ExtraPreKey::LastResort(k) => wire::pre_key_bundle::Extra::LastResortPrekey(k.encode()),
        });
        wire::PreKeyBundle {
            identity_key: self.identity.as_bytes().to_vec(),
            signed_prekey: Some(self.signed_prekey.encode()),
            extra,
        }
        .encode_to_vec()
    }
}

impl TryFrom<&[u8]> for PreKeyBundle {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let proto = wire::PreKeyBundle::decode(bytes)?;
        let signed = proto
            .signed_prekey
            .as_ref()
            .ok_or(DecodeError::MissingField("signed_prekey"))?;
        let extra = match &proto.extra {
            None => None,
            Some(wire::pre_key_bundle::Extra::OneTimePrekey(k)) => {
                Some(ExtraPreKey::OneTime(OneTimePreKey {
                    id: k.id,
                    public: fixed("one_time_prekey.public_key", &k.public_key)?,
                }))
            }
            Some(wire::pre_key_bundle::Extra::LastResortPrekey(k)) => Some(
                ExtraPreKey::LastResort(SignedPreKey::decode(k, LAST_RESORT_FIELDS)?),
            ),
        };
        Ok(Self {
            identity: IdentityKey::decode("identity_key", &proto.identity_key)?,
            signed_prekey: SignedPreKey::decode(signed, SIGNED_FIELDS)?,
            extra,
        })
    }
}

/// A bundle whose signatures have been checked. Only
/// [`PreKeyBundle::verify`] builds one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBundle(PreKeyBundle);

impl VerifiedBundle {
    /// The checked bundle.
    pub fn bundle(&self) -> &PreKeyBundle {
        &self.0
    }
}

/// A signed prekey (or last-resort prekey) with its secret.
pub struct SignedPreKeyPair {
    id: u32,
    secret: StaticSecret,
    public: [u8; 32],
    signature: [u8; 64],
    last_resort: bool,
}

/// The prekey secret wipes itself when the pair is dropped.
impl zeroize::ZeroizeOnDrop for SignedPreKeyPair {}
const _: fn(&SignedPreKeyPair) = |pair| crate::secret::wipes_on_drop(&pair.secret);

impl core::fmt::Debug for SignedPreKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "SignedPreKeyPair {{ id: {}, last_resort: {}, .. }}",
            self.id, self.last_resort
        )
    }
}

impl SignedPreKeyPair {
    /// Generates a signed prekey. Draws 32 bytes (the secret).
    pub fn generate(rng: &mut impl CryptoRng, identity: &IdentityKeyPair, id: u32) -> Self {
        Self::build(generate_secret(rng), identity, id, false)
    }

    /// Generates a last-resort prekey. Draws 32 bytes (the secret).
    pub fn generate_last_resort(
        rng: &mut impl CryptoRng,
        identity: &IdentityKeyPair,
        id: u32,
    ) -> Self {
        Self::build(generate_secret(rng), identity, id, true)
    }

    fn build(secret: StaticSecret, identity: &IdentityKeyPair, id: u32, last_resort: bool) -> Self {
        let public = x25519_public(&secret);
        let kind = if last_resort {
            LAST_RESORT_KIND
        } else {
            SIGNED_KIND
        };
        let signature = identity.sign(&signed_bytes(kind, id, &public));
        Self {
            id,
            secret,
            public,
            signature,
            last_resort,
        }
    }

    /// Prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether this is a last-resort prekey.
    pub fn is_last_resort(&self) -> bool {
        self.last_resort
    }

    /// The public part to publish.
    pub fn public(&self) -> SignedPreKey {
        SignedPreKey {
            id: self.id,
            public: self.public,
            signature: self.signature,
        }
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// Serializes to a versioned `SignedPreKeyRecord`. Contains the
    /// secret: store it encrypted.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            state::SignedPreKeyRecord {
                version: STATE_VERSION,
                id: self.id,
                secret: self.secret.to_bytes().to_vec(),
                signature: self.signature.to_vec(),
                last_resort: self.last_resort,
            }
            .encode_to_vec(),
        )
    }

    /// Restores from [`SignedPreKeyPair::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut record = state::SignedPreKeyRecord::decode(bytes)?;
        let result = (|| {
            check_version(record.version)?;
            let secret =
                StaticSecret::from(*Zeroizing::new(fixed::<32>("secret", &record.secret)?));
            Ok(Self {
                id: record.id,
                public: x25519_public(&secret),
                secret,
                signature: fixed("signature", &record.signature)?,
                last_resort: record.last_resort,
            })
        })();
        record.secret.zeroize();
        result
    }
}

/// A one-time prekey with its secret.
pub struct OneTimePreKeyPair {
    id: u32,
    secret: StaticSecret,
    public: [u8; 32],
}

/// The prekey secret wipes itself when the pair is dropped.
impl zeroize::ZeroizeOnDrop for OneTimePreKeyPair {}
const _: fn(&OneTimePreKeyPair) = |pair| crate::secret::wipes_on_drop(&pair.secret);

impl core::fmt::Debug for OneTimePreKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "OneTimePreKeyPair {{ id: {}, .. }}", self.id)
    }
}

impl OneTimePreKeyPair {
    /// Generates a one-time prekey. Draws 32 bytes (the secret).
    pub fn generate(rng: &mut impl CryptoRng, id: u32) -> Self {
        let secret = generate_secret(rng);
        Self {
            id,
            public: x25519_public(&secret),
            secret,
        }
    }

    /// Prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The public part to publish.
    pub fn public(&self) -> OneTimePreKey {
        OneTimePreKey {
            id: self.id,
            public: self.public,
        }
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// Serializes to a versioned `OneTimePreKeyRecord`. Contains the
    /// secret: store it encrypted.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            state::OneTimePreKeyRecord {
                version: STATE_VERSION,
                id: self.id,
                secret: self.secret.to_bytes().to_vec(),
            }
            .encode_to_vec(),
        )
    }

    /// Restores from [`OneTimePreKeyPair::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut record = state::OneTimePreKeyRecord::decode(bytes)?;
        let result = (|| {
            check_version(record.version)?;
            let secret =
                StaticSecret::from(*Zeroizing::new(fixed::<32>("secret", &record.secret)?));
            Ok(Self {
                id: record.id,
                public: x25519_public(&secret),
                secret,
            })
        })();
        record.secret.zeroize();
        result
    }
}

/// Where the responder of X3DH finds its prekey secrets. The client
/// implements this over its store; ids it does not hold return `None`
/// and the handshake fails with the matching `Unknown*` error.
pub trait PreKeySecrets {
    /// The signed prekey with this id (not a last-resort key).
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKeyPair>;
    /// The last-resort prekey with this id.
    fn last_resort_prekey(&self, id: u32) -> Option<&SignedPreKeyPair>;
    /// The one-time prekey with this id, if not yet used.
    fn one_time_prekey(&self, id: u32) -> Option<&OneTimePreKeyPair>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn bundle(rng: &mut ChaCha20Rng, extra_last_resort: bool) -> (IdentityKeyPair, PreKeyBundle) {
        let identity = IdentityKeyPair::generate(rng);
        let spk = SignedPreKeyPair::generate(rng, &identity, 7);
        let extra = if extra_last_resort {
            ExtraPreKey::LastResort(
                SignedPreKeyPair::generate_last_resort(rng, &identity, 9).public(),
            )
        } else {
            ExtraPreKey::OneTime(OneTimePreKeyPair::generate(rng, 11).public())
        };
        let bundle = PreKeyBundle {
            identity: identity.public().clone(),
            signed_prekey: spk.public(),
            extra: Some(extra),
        };
        (identity, bundle)
    }

    #[test]
    fn verify_and_round_trip() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        for last_resort in [false, true] {
            let (_, bundle) = bundle(&mut rng, last_resort);
            let decoded = PreKeyBundle::try_from(bundle.to_bytes().as_slice()).expect("decodes");
            assert_eq!(decoded, bundle);
            assert!(decoded.verify().is_ok());
        }
    }

    #[test]
    fn bad_signatures_rejected() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let (_, mut b) = bundle(&mut rng, true);
        b.signed_prekey.signature[0] ^= 1;
        assert_eq!(b.verify(), Err(X3dhError::BadSignedPreKeySignature));

        let (_, mut b) = bundle(&mut rng, true);
        if let Some(ExtraPreKey::LastResort(k)) = &mut b.extra {
            k.public[0] ^= 1;
        }
        assert_eq!(b.verify(), Err(X3dhError::BadLastResortSignature));

        // A signed prekey signature cannot be replayed as a last-resort one.
        let (_, mut b) = bundle(&mut rng, false);
        b.extra = Some(ExtraPreKey::LastResort(b.signed_prekey.clone()));
        assert_eq!(b.verify(), Err(X3dhError::BadLastResortSignature));
    }

    #[test]
    fn decode_errors() {
        assert_eq!(
            PreKeyBundle::try_from(&[0xff][..]),
            Err(DecodeError::Protobuf)
        );
        assert_eq!(
            PreKeyBundle::try_from(&[][..]),
            Err(DecodeError::MissingField("signed_prekey"))
        );
    }

    #[test]
    fn state_round_trip() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let identity = IdentityKeyPair::generate(&mut rng);
        let spk = SignedPreKeyPair::generate_last_resort(&mut rng, &identity, 3);
        let back = SignedPreKeyPair::from_bytes(&spk.to_bytes()).expect("restores");
        assert_eq!(back.public(), spk.public());
        assert!(back.is_last_resort());
        let opk = OneTimePreKeyPair::generate(&mut rng, 4);
        let back = OneTimePreKeyPair::from_bytes(&opk.to_bytes()).expect("restores");
        assert_eq!(back.public(), opk.public());
        assert_eq!(format!("{opk:?}"), "OneTimePreKeyPair { id: 4, .. }");
        assert_eq!(
            format!("{spk:?}"),
            "SignedPreKeyPair { id: 3, last_resort: true, .. }"
        );
    }
}
