//! Sealed envelopes (`spec/envelope.md`): what the relay receives. The
//! relay learns neither the sender, nor the kind of message, nor (within
//! a padding bucket) its length.
//!
//! One body serves any number of recipients, so a group message is
//! stored once; each recipient gets a 48-byte key slot.
//!
//! ```text
//! M                  = 32 random bytes
//! e || K             = HKDF(0^32, M, "hush-seal-v1 message", 64)
//! E                  = X25519(e, 9)
//! body               = ChaCha20-Poly1305(K, 0^12, "hush-seal-v1" || E, pad(SealedContent))
//! for each recipient R (identity, X25519 form R_x):
//!   mask             = HKDF(salt = E || R_x, X25519(e, R_x), "hush-seal-v1 slot", 32)
//!   masked           = M xor mask
//!   tag              = HKDF(0^32, X25519(IK_S, R_x),
//!                           "hush-seal-v1 sender" || E || R || S || masked || SHA-256(body), 16)
//!   slot             = masked || tag
//! ```
//!
//! The recipient unmasks `M`, checks `E` is derived from it, decrypts the
//! body, learns the sender `S` from it and checks `tag`: only `S` (or the
//! recipient itself) can compute `X25519(IK_S, R_x)`, and the tag covers
//! the body ciphertext, so another member (who knows `M` and `K`) can
//! neither make a slot claiming `S` sent a body nor pair a genuine slot
//! with a body of its own.

use hush_proto::{Message, wire};
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{DecodeError, OpenError, SealError};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::primitives::{ct_eq, dh, fixed, hkdf, open, seal as aead_seal, x25519_public};
use sha2::{Digest, Sha256};

/// Envelope format version.
pub const VERSION: u32 = 1;

/// Padded sizes of the sealed content (`spec/envelope.md`, "Padding").
pub const BUCKETS: [usize; 10] = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 49152, 65024];

/// The largest `content` [`seal`] accepts: the largest bucket less the
/// `SealedContent` framing (at most 46 bytes), the padding marker and a
/// margin of 17 bytes for future fields.
pub const MAX_CONTENT_LEN: usize = 64_960;

/// Size of a recipient's key slot.
pub const SLOT_LEN: usize = 48;

const MESSAGE_INFO: &[u8] = b"hush-seal-v1 message";
const SLOT_INFO: &[u8] = b"hush-seal-v1 slot";
const SENDER_INFO: &[u8] = b"hush-seal-v1 sender";
const BODY_AD: &[u8] = b"hush-seal-v1";

/// What the sealed content is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// A [`crate::PreKeyMessage`].
    PreKey,
    /// A [`crate::RatchetMessage`].
    Ratchet,
    /// A [`crate::SenderKeyMessage`].
    SenderKey,
}

impl ContentType {
    fn to_wire(self) -> wire::ContentType {
        match self {
            ContentType::PreKey => wire::ContentType::Prekey,
            ContentType::Ratchet => wire::ContentType::Ratchet,
            ContentType::SenderKey => wire::ContentType::SenderKey,
        }
    }

    fn from_wire(value: i32) -> Result<Self, DecodeError> {
        match wire::ContentType::try_from(value) {
            Ok(wire::ContentType::Prekey) => Ok(ContentType::PreKey),
            Ok(wire::ContentType::Ratchet) => Ok(ContentType::Ratchet),
            Ok(wire::ContentType::SenderKey) => Ok(ContentType::SenderKey),
            _ => Err(DecodeError::UnknownEnum {
                field: "content_type",
                value,
            }),
        }
    }
}

/// The part of an envelope shared by every recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedBody {
    /// `E`.
    pub ephemeral_key: [u8; 32],
    /// Encrypted, padded `SealedContent`.
    pub ciphertext: Vec<u8>,
}

impl SealedBody {
    fn to_proto(&self) -> wire::SealedBody {
        wire::SealedBody {
            version: VERSION,
            ephemeral_key: self.ephemeral_key.to_vec(),
            ciphertext: self.ciphertext.clone(),
        }
    }

    fn from_proto(proto: wire::SealedBody) -> Result<Self, DecodeError> {
        if proto.version != VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: proto.version,
                supported: VERSION,
            });
        }
        Ok(Self {
            ephemeral_key: fixed("ephemeral_key", &proto.ephemeral_key)?,
            ciphertext: proto.ciphertext,
        })
    }

    /// Encodes as a `SealedBody` protobuf.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }
}

impl TryFrom<&[u8]> for SealedBody {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_proto(wire::SealedBody::decode(bytes)?)
    }
}

/// What one recipient receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedEnvelope {
    /// The shared body.
    pub body: SealedBody,
    /// This recipient's key slot.
    pub slot: [u8; SLOT_LEN],
}

/// An opened envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The authenticated sender identity.
    pub sender: IdentityKey,
    /// The sender's device number (`spec/envelope.md`).
    pub sender_device: u32,
    /// What `content` is.
    pub content_type: ContentType,
    /// The inner message, to decode by `content_type`.
    pub content: Vec<u8>,
}

/// Pads to the smallest bucket that holds `data` and a 0x80 marker.
fn pad(data: &[u8]) -> Option<Vec<u8>> {
    let size = *BUCKETS.iter().find(|&&b| b > data.len())?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(data);
    out.push(0x80);
    out.resize(size, 0);
    Some(out)
}

fn unpad(padded: &[u8]) -> Result<&[u8], DecodeError> {
    if !BUCKETS.contains(&padded.len()) {
        return Err(DecodeError::BadPadding);
    }
    let end = padded
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(DecodeError::BadPadding)?;
    if padded[end] != 0x80 {
        return Err(DecodeError::BadPadding);
    }
    Ok(&padded[..end])
}

struct MessageSecret {
    ephemeral: StaticSecret,
    ephemeral_public: [u8; 32],
    body_key: Zeroizing<[u8; 32]>,
}

fn expand(m: &[u8; 32]) -> MessageSecret {
    let okm = hkdf::<64>(None, m, &[MESSAGE_INFO]);
    let mut e = Zeroizing::new([0u8; 32]);
    e.copy_from_slice(&okm.0[..32]);
    let mut body_key = Zeroizing::new([0u8; 32]);
    body_key.copy_from_slice(&okm.0[32..]);
    let ephemeral = StaticSecret::from(*e);
    MessageSecret {
        ephemeral_public: x25519_public(&ephemeral),
        ephemeral,
        body_key,
    }
}

pub(crate) fn mask(
    shared: &crate::secret::SharedSecret,
    ephemeral: &[u8; 32],
    recipient_x: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    let salt = [&ephemeral[..], &recipient_x[..]].concat();
    Zeroizing::new(hkdf::<32>(Some(&salt), shared.as_bytes(), &[SLOT_INFO]).0)
}

fn sender_tag(
    shared: &crate::secret::SharedSecret,
    ephemeral: &[u8; 32],
    recipient: &IdentityKey,
    sender: &IdentityKey,
    masked: &[u8; 32],
    body_hash: &[u8],
) -> [u8; 16] {
    hkdf::<16>(
        None,
        shared.as_bytes(),
        &[
            SENDER_INFO,
            ephemeral,
            recipient.as_bytes(),
            sender.as_bytes(),
            masked,
            body_hash,
        ],
    )
    .0
}

/// How many static agreements an [`Agreements`] keeps before it starts
/// over.
pub const AGREEMENTS_CAPACITY: usize = 4096;

/// A cache of the static agreements `X25519(IK_own, X_peer)` that bind a
/// slot to its sender. They are the same for every envelope between two
/// identities, so a client that keeps one of these computes each once
/// per peer instead of once per envelope (one X25519 of three when
/// sealing, of three when opening). The wire format does not change.
///
/// The cache belongs to one local identity; used with another, it
/// empties itself first. It holds at most [`AGREEMENTS_CAPACITY`]
/// entries and is emptied when full. Entries are zeroized on drop.
#[derive(Clone, Default)]
pub struct Agreements {
    owner: Option<[u8; 32]>,
    shared: std::collections::HashMap<[u8; 32], crate::secret::SharedSecret>,
}

/// The cached agreements wipe themselves when the cache is dropped or
/// emptied.
impl zeroize::ZeroizeOnDrop for Agreements {}
const _: fn(&Agreements) = |cache| {
    for shared in cache.shared.values() {
        crate::secret::wipes_on_drop(shared);
    }
};

impl core::fmt::Debug for Agreements {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agreements")
            .field("entries", &self.shared.len())
            .finish_non_exhaustive()
    }
}

impl Agreements {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// `X25519(IK_own, X_peer)`, computed once.
    fn get(
        &mut self,
        own: &IdentityKeyPair,
        peer: &IdentityKey,
    ) -> Option<&crate::secret::SharedSecret> {
        let owner = *own.public().as_bytes();
        if self.owner != Some(owner) {
            self.shared.clear();
            self.owner = Some(owner);
        }
        let key = *peer.x25519();
        if !self.shared.contains_key(&key) {
            if self.shared.len() >= AGREEMENTS_CAPACITY {
                self.shared.clear();
            }
            let shared = dh(own.x25519_secret(), peer.x25519())?;
            self.shared.insert(key, shared);
        }
        self.shared.get(&key)
    }
}

/// Seals `content` for one recipient. Draws 32 bytes (`M`).
pub fn seal(
    rng: &mut impl CryptoRng,
    sender: &IdentityKeyPair,
    sender_device: u32,
    recipient: &IdentityKey,
    content_type: ContentType,
    content: &[u8],
) -> Result<SealedEnvelope, SealError> {
    seal_with(
        rng,
        &mut Agreements::new(),
        sender,
        sender_device,
        recipient,
        content_type,
        content,
    )
}

/// [`seal`] with the static agreement taken from (and added to)
/// `agreements`. The output is the same.
pub fn seal_with(
    rng: &mut impl CryptoRng,
    agreements: &mut Agreements,
    sender: &IdentityKeyPair,
    sender_device: u32,
    recipient: &IdentityKey,
    content_type: ContentType,
    content: &[u8],
) -> Result<SealedEnvelope, SealError> {
    let (body, slots) = seal_many_with(
        rng,
        agreements,
        sender,
        sender_device,
        core::slice::from_ref(recipient),
        content_type,
        content,
    )?;
    let slot = slots.into_iter().next().ok_or(SealError::NoRecipients)?;
    Ok(SealedEnvelope { body, slot })
}

/// Seals `content` once for many recipients: one body and one slot per
/// recipient, in the order given. Draws 32 bytes (`M`).
pub fn seal_many(
    rng: &mut impl CryptoRng,
    sender: &IdentityKeyPair,
    sender_device: u32,
    recipients: &[IdentityKey],
    content_type: ContentType,
    content: &[u8],
) -> Result<(SealedBody, Vec<[u8; SLOT_LEN]>), SealError> {
    seal_many_with(
        rng,
        &mut Agreements::new(),
        sender,
        sender_device,
        recipients,
        content_type,
        content,
    )
}

/// [`seal_many`] with the static agreements taken from (and added to)
/// `agreements`. The output is the same.
pub fn seal_many_with(
    rng: &mut impl CryptoRng,
    agreements: &mut Agreements,
    sender: &IdentityKeyPair,
    sender_device: u32,
    recipients: &[IdentityKey],
    content_type: ContentType,
    content: &[u8],
) -> Result<(SealedBody, Vec<[u8; SLOT_LEN]>), SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    if content.len() > MAX_CONTENT_LEN {
        return Err(SealError::TooLarge {
            len: content.len(),
            max: MAX_CONTENT_LEN,
        });
    }
    let mut inner = wire::SealedContent {
        sender_identity: sender.public().as_bytes().to_vec(),
        sender_device,
        content_type: content_type.to_wire() as i32,
        content: content.to_vec(),
    };
    let encoded = Zeroizing::new(inner.encode_to_vec());
    inner.content.zeroize();
    let padded = Zeroizing::new(pad(&encoded).ok_or(SealError::TooLarge {
        len: content.len(),
        max: MAX_CONTENT_LEN,
    })?);

    let mut m = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(m.as_mut());
    let secret = expand(&m);
    let ad = [BODY_AD, &secret.ephemeral_public[..]].concat();
    let ciphertext = aead_seal(&secret.body_key, &[0u8; 12], &ad, &padded);
    let body_hash = Sha256::digest(&ciphertext);

    let mut slots = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        let shared =
            dh(&secret.ephemeral, recipient.x25519()).ok_or(SealError::WeakKeyAgreement)?;
        let mask = mask(&shared, &secret.ephemeral_public, recipient.x25519());
        let mut masked = [0u8; 32];
        for (out, (a, b)) in masked.iter_mut().zip(m.iter().zip(mask.iter())) {
            *out = a ^ b;
        }
        let static_shared = agreements
            .get(sender, recipient)
            .ok_or(SealError::WeakKeyAgreement)?;
        let tag = sender_tag(
            static_shared,
            &secret.ephemeral_public,
            recipient,
            sender.public(),
            &masked,
            &body_hash,
        );
        let mut slot = [0u8; SLOT_LEN];
        slot[..32].copy_from_slice(&masked);
        slot[32..].copy_from_slice(&tag);
        slots.push(slot);
    }
    Ok((
        SealedBody {
            ephemeral_key: secret.ephemeral_public,
            ciphertext,
        },
        slots,
    ))
}

impl SealedEnvelope {
    /// Opens the envelope with the recipient's identity.
    pub fn open(&self, recipient: &IdentityKeyPair) -> Result<Opened, OpenError> {
        self.open_with(&mut Agreements::new(), recipient)
    }

    /// [`Self::open`] with the static agreement taken from (and added
    /// to) `agreements`. The outcome is the same.
    pub fn open_with(
        &self,
        agreements: &mut Agreements,
        recipient: &IdentityKeyPair,
    ) -> Result<Opened, OpenError> {
        let e_pub = &self.body.ephemeral_key;
        let shared = dh(recipient.x25519_secret(), e_pub).ok_or(OpenError::WeakKeyAgreement)?;
        let mask = mask(&shared, e_pub, recipient.public().x25519());
        let mut masked = [0u8; 32];
        masked.copy_from_slice(&self.slot[..32]);
        let mut m = Zeroizing::new([0u8; 32]);
        for (out, (a, b)) in m.iter_mut().zip(masked.iter().zip(mask.iter())) {
            *out = a ^ b;
        }
        let secret = expand(&m);
        if !ct_eq(&secret.ephemeral_public, e_pub) {
            return Err(OpenError::NotForUs);
        }
        let ad = [BODY_AD, &e_pub[..]].concat();
        let padded = Zeroizing::new(
            open(&secret.body_key, &[0u8; 12], &ad, &self.body.ciphertext)
                .ok_or(OpenError::AuthenticationFailed)?,
        );
        let inner = wire::SealedContent::decode(unpad(&padded)?).map_err(DecodeError::from)?;
        let sender = IdentityKey::decode("sender_identity", &inner.sender_identity)?;
        let content_type = ContentType::from_wire(inner.content_type)?;
        let static_shared = agreements
            .get(recipient, &sender)
            .ok_or(OpenError::WeakKeyAgreement)?;
        let body_hash = Sha256::digest(&self.body.ciphertext);
        let expected = sender_tag(
            static_shared,
            e_pub,
            recipient.public(),
            &sender,
            &masked,
            &body_hash,
        );
        if !ct_eq(&expected, &self.slot[32..]) {
            return Err(OpenError::BadSender);
        }
        Ok(Opened {
            sender,
            sender_device: inner.sender_device,
            content_type,
            content: inner.content,
        })
    }

    /// Encodes as a `SealedEnvelope` protobuf.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::SealedEnvelope {
            body: Some(self.body.to_proto()),
            slot: self.slot.to_vec(),
        }
        .encode_to_vec()
    }
}

impl TryFrom<&[u8]> for SealedEnvelope {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let proto = wire::SealedEnvelope::decode(bytes)?;
        Ok(Self {
            slot: fixed("slot", &proto.slot)?,
            body: SealedBody::from_proto(proto.body.ok_or(DecodeError::MissingField("body"))?)?,
        })
    }
}

#[cfg(test)]
mod tests;
