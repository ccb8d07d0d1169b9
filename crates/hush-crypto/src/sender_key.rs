//! Sender keys for groups (`spec/sender-keys.md`).
//!
//! Each (group, sender device) has a chain key and an Ed25519 signing
//! key. The sender hands the group id, `key_id`, the current iteration,
//! the chain key and the signing public key to every member over
//! pairwise sessions ([`SenderKeyDistribution`]). A group message is
//! encrypted once:
//!
//! ```text
//! MK, CK' = KDF_CK(CK)                      (spec/ratchet.md, "Chains")
//! key || nonce = HKDF(0^32, MK, "hush-sender-key-v1 message", 44)
//! header    = "hush-sender-key-v1" || group_id (16) || key_id (u32 BE) || iteration (u32 BE)
//! ciphertext = ChaCha20-Poly1305(key, nonce, header, plaintext)
//! signature  = Ed25519(signing key, header || ciphertext)
//! ```
//!
//! Receivers verify the signature (RFC 8032, cofactorless; the signing
//! key was checked not to be weak when its distribution was decoded)
//! before any key is derived or used, and keep the same out-of-order
//! bounds as pairwise sessions, per state.

use std::collections::VecDeque;

use ed25519_dalek::{Signer, SigningKey};
use hush_proto::{Message, state, wire};
use rand_core::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use crate::chain::{Chain, decrypt_with, encrypt_with};
use crate::error::{DecodeError, DecryptError, EncryptError};
use crate::identity::IdentityKey;
use crate::primitives::fixed;
use crate::secret::{ChainKey, MessageKey};
use crate::state::{STATE_VERSION, check_version};

/// Sender-key states kept per (group, sender device), newest first.
pub const MAX_SENDER_KEY_STATES: usize = 5;

/// Skipped message keys kept per sender-key state, oldest evicted.
pub const MAX_SKIPPED_SENDER_KEYS: usize = 2_000;

const MESSAGE_INFO: &[u8] = b"hush-sender-key-v1 message";
const DOMAIN: &[u8; 18] = b"hush-sender-key-v1";
const HEADER_LEN: usize = 18 + 16 + 4 + 4;

/// A group's 16-byte identifier, chosen at random by its creator. The
/// relay never sees it: it travels inside sealed envelopes.
pub type GroupId = [u8; 16];

fn header(group_id: &GroupId, key_id: u32, iteration: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..18].copy_from_slice(DOMAIN);
    out[18..34].copy_from_slice(group_id);
    out[34..38].copy_from_slice(&key_id.to_be_bytes());
    out[38..].copy_from_slice(&iteration.to_be_bytes());
    out
}

/// What a sender gives each member so they can read its group messages.
/// Holds the chain key: send it only inside a pairwise session.
#[derive(Clone)]
pub struct SenderKeyDistribution {
    /// The group.
    pub group_id: GroupId,
    /// The sender-key id.
    pub key_id: u32,
    /// The iteration the chain key is at.
    pub iteration: u32,
    chain_key: ChainKey,
    /// The key group messages are signed with.
    pub signing_key: IdentityKey,
}

/// The chain key wipes itself when the distribution is dropped.
impl zeroize::ZeroizeOnDrop for SenderKeyDistribution {}
const _: fn(&SenderKeyDistribution) = |d| crate::secret::wipes_on_drop(&d.chain_key);

impl core::fmt::Debug for SenderKeyDistribution {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "SenderKeyDistribution {{ key_id: {}, iteration: {}, .. }}",
            self.key_id, self.iteration
        )
    }
}

impl SenderKeyDistribution {
    /// Encodes as a `SenderKeyDistribution` protobuf. The result holds
    /// the chain key.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut proto = wire::SenderKeyDistribution {
            key_id: self.key_id,
            iteration: self.iteration,
            chain_key: self.chain_key.as_bytes().to_vec(),
            signing_key: self.signing_key.as_bytes().to_vec(),
            group_id: self.group_id.to_vec(),
        };
        let bytes = Zeroizing::new(proto.encode_to_vec());
        proto.chain_key.zeroize();
        bytes
    }
}

impl TryFrom<&[u8]> for SenderKeyDistribution {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut proto = wire::SenderKeyDistribution::decode(bytes)?;
        let result = (|| {
            Ok(Self {
                group_id: fixed("group_id", &proto.group_id)?,
                key_id: proto.key_id,
                iteration: proto.iteration,
                chain_key: ChainKey(fixed("chain_key", &proto.chain_key)?),
                signing_key: IdentityKey::decode("signing_key", &proto.signing_key)?,
            })
        })();
        proto.chain_key.zeroize();
        result
    }
}

/// One group message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderKeyMessage {
    /// The group.
    pub group_id: GroupId,
    /// The sender-key id.
    pub key_id: u32,
    /// The chain iteration of this message.
    pub iteration: u32,
    /// ChaCha20-Poly1305 ciphertext and tag.
    pub ciphertext: Vec<u8>,
    /// Ed25519 signature over header || ciphertext.
    pub signature: [u8; 64],
}

impl SenderKeyMessage {
    fn signed_bytes(&self) -> Vec<u8> {
        [
            &header(&self.group_id, self.key_id, self.iteration)[..],
            &self.ciphertext,
        ]
        .concat()
    }

    /// Encodes as a `SenderKeyMessage` protobuf.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::SenderKeyMessage {
            key_id: self.key_id,
            iteration: self.iteration,
            ciphertext: self.ciphertext.clone(),
            signature: self.signature.to_vec(),
            group_id: self.group_id.to_vec(),
        }
        .encode_to_vec()
    }
}

impl TryFrom<&[u8]> for SenderKeyMessage {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let proto = wire::SenderKeyMessage::decode(bytes)?;
        Ok(Self {
            group_id: fixed("group_id", &proto.group_id)?,
            key_id: proto.key_id,
            iteration: proto.iteration,
            signature: fixed("signature", &proto.signature)?,
            ciphertext: proto.ciphertext,
        })
    }
}

struct SenderKeyState {
    key_id: u32,
    chain: Chain,
    signing_public: IdentityKey,
    signing_secret: Option<SigningKey>,
    /// Oldest first.
    skipped: VecDeque<(u32, MessageKey)>,
}

/// All sender-key states of one (group, sender device): our own chains,
/// or what we received from one other member's device.
pub struct SenderKeyRecord {
    group_id: GroupId,
    /// Newest first.
    states: VecDeque<SenderKeyState>,
}

/// Every chain key, signing seed and skipped message key of the record
/// wipes itself when the record is dropped.
impl zeroize::ZeroizeOnDrop for SenderKeyRecord {}
const _: fn(&SenderKeyRecord) = |record| {
    use crate::secret::wipes_on_drop;
    for state in &record.states {
        wipes_on_drop(&state.chain.key);
        if let Some(seed) = &state.signing_secret {
            wipes_on_drop(seed);
        }
        for (_, key) in &state.skipped {
            wipes_on_drop(key);
        }
    }
};

impl core::fmt::Debug for SenderKeyRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ids: Vec<u32> = self.states.iter().map(|s| s.key_id).collect();
        write!(f, "SenderKeyRecord {{ key_ids: {ids:?}, .. }}")
    }
}

impl SenderKeyRecord {
    /// An empty record for `group_id`, to receive another member's
    /// distribution into.
    pub fn new(group_id: GroupId) -> Self {
        Self {
            group_id,
            states: VecDeque::new(),
        }
    }

    /// A record holding a fresh chain of our own for `group_id`.
    /// Draws 4 bytes (key id, big-endian), 32 (chain key), 32 (signing seed).
    pub fn generate(rng: &mut impl CryptoRng, group_id: GroupId) -> Self {
        let mut record = Self::new(group_id);
        record.rotate(rng);
        record
    }

    /// The group this record belongs to.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    fn newest_own(&mut self) -> Option<&mut SenderKeyState> {
        self.states.iter_mut().find(|s| s.signing_secret.is_some())
    }

    /// Starts a fresh chain of our own (after a membership change) and
    /// makes it the one [`Self::encrypt`] uses. Draws like [`Self::generate`];
    /// a key id already in the record is drawn again (4 more bytes).
    pub fn rotate(&mut self, rng: &mut impl CryptoRng) {
        let mut id = [0u8; 4];
        rng.fill_bytes(&mut id);
        while self
            .states
            .iter()
            .any(|s| s.key_id == u32::from_be_bytes(id))
        {
            rng.fill_bytes(&mut id);
        }
        let mut chain_key = [0u8; 32];
        rng.fill_bytes(&mut chain_key);
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let signing = SigningKey::from_bytes(&seed);
        let state = SenderKeyState {
            key_id: u32::from_be_bytes(id),
            chain: Chain::new(chain_key),
            signing_public: IdentityKey::from_verifying(signing.verifying_key()),
            signing_secret: Some(signing),
            skipped: VecDeque::new(),
        };
        chain_key.zeroize();
        self.push(state);
    }

    fn push(&mut self, state: SenderKeyState) {
        self.states.push_front(state);
        self.states.truncate(MAX_SENDER_KEY_STATES);
    }

    /// The distribution message for our newest own chain, at its current
    /// iteration, or `None` if the record holds no chain of ours.
    pub fn distribution(&self) -> Option<SenderKeyDistribution> {
        let state = self.states.iter().find(|s| s.signing_secret.is_some())?;
        Some(SenderKeyDistribution {
            group_id: self.group_id,
            key_id: state.key_id,
            iteration: state.chain.index,
            chain_key: state.chain.key.clone(),
            signing_key: state.signing_public.clone(),
        })
    }

    /// Adds another member's chain. A key id we already hold is kept as
    /// it is (a repeated distribution must not rewind the chain) unless
    /// the new one carries a different signing key, which replaces it;
    /// a chain of our own is never replaced.
    /// The caller keeps one record per (group, sender device) and feeds
    /// it only distributions that arrived over that sender's pairwise
    /// session.
    pub fn process(&mut self, distribution: &SenderKeyDistribution) -> Result<(), DecryptError> {
        if distribution.group_id != self.group_id {
            return Err(DecryptError::WrongGroup);
        }
        if let Some(existing) = self
            .states
            .iter()
            .position(|s| s.key_id == distribution.key_id)
        {
            let state = &self.states[existing];
            if state.signing_public == distribution.signing_key || state.signing_secret.is_some() {
                return Ok(());
            }
            self.states.remove(existing);
        }
        self.push(SenderKeyState {
            key_id: distribution.key_id,
            chain: Chain {
                key: distribution.chain_key.clone(),
                index: distribution.iteration,
            },
            signing_public: distribution.signing_key.clone(),
            signing_secret: None,
            skipped: VecDeque::new(),
        });
        Ok(())
    }

    /// Encrypts with our newest own chain.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<SenderKeyMessage, EncryptError> {
        let group_id = self.group_id;
        let state = self.newest_own().ok_or(EncryptError::NotOwnChain)?;
        let (mk, next) = state
            .chain
            .step()
            .map_err(|_| EncryptError::ChainExhausted)?;
        let head = header(&group_id, state.key_id, state.chain.index);
        let ciphertext = encrypt_with(&mk, MESSAGE_INFO, &[&head], plaintext);
        let mut message = SenderKeyMessage {
            group_id,
            key_id: state.key_id,
            iteration: state.chain.index,
            ciphertext,
            signature: [0u8; 64],
        };
        let Some(signing) = &state.signing_secret else {
            return Err(EncryptError::NotOwnChain);
        };
        message.signature = signing.sign(&message.signed_bytes()).to_bytes();
        state.chain = next;
        Ok(message)
    }

    /// Verifies and decrypts a group message. On any error the record is
    /// unchanged.
    pub fn decrypt(&mut self, message: &SenderKeyMessage) -> Result<Vec<u8>, DecryptError> {
        if message.group_id != self.group_id {
            return Err(DecryptError::WrongGroup);
        }
        let state = self
            .states
            .iter_mut()
            .find(|s| s.key_id == message.key_id)
            .ok_or(DecryptError::UnknownSenderKey {
                key_id: message.key_id,
            })?;
        if !state
            .signing_public
            .verify_rfc8032(&message.signed_bytes(), &message.signature)
        {
            return Err(DecryptError::BadSignature);
        }
        let head = header(&message.group_id, message.key_id, message.iteration);
        if message.iteration < state.chain.index {
            let position = state
                .skipped
                .iter()
                .position(|(i, _)| *i == message.iteration)
                .ok_or(DecryptError::Duplicate)?;
            let plaintext = decrypt_with(
                &state.skipped[position].1,
                MESSAGE_INFO,
                &[&head],
                &message.ciphertext,
            )?;
            state.skipped.remove(position);
            return Ok(plaintext);
        }
        let advance = state
            .chain
            .advance_to(message.iteration, MAX_SKIPPED_SENDER_KEYS)?;
        let plaintext = decrypt_with(&advance.key, MESSAGE_INFO, &[&head], &message.ciphertext)?;
        state.chain = advance.next;
        state.skipped.extend(advance.skipped);
        while state.skipped.len() > MAX_SKIPPED_SENDER_KEYS {
            state.skipped.pop_front();
        }
        Ok(plaintext)
    }

    /// Serializes to a versioned `SenderKeyRecord` (`spec/state.md`). Holds
    /// secrets: store it encrypted.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut record = state::SenderKeyRecord {
            version: STATE_VERSION,
            group_id: self.group_id.to_vec(),
            states: self
                .states
                .iter()
                .map(|s| state::SenderKeyState {
                    key_id: s.key_id,
                    chain: Some(state::ChainState {
                        chain_key: s.chain.key.as_bytes().to_vec(),
                        index: s.chain.index,
                    }),
                    signing_public: s.signing_public.as_bytes().to_vec(),
                    signing_secret: s
                        .signing_secret
                        .as_ref()
                        .map(|k| k.to_bytes().to_vec())
                        .unwrap_or_default(),
                    skipped: s
                        .skipped
                        .iter()
                        .map(|(iteration, key)| state::SkippedSenderKey {
                            iteration: *iteration,
                            message_key: key.as_bytes().to_vec(),
                        })
                        .collect(),
                })
                .collect(),
        };
        let bytes = Zeroizing::new(record.encode_to_vec());
        wipe(&mut record);
        bytes
    }

    /// Restores from [`SenderKeyRecord::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut record = state::SenderKeyRecord::decode(bytes)?;
        let result = Self::from_record(&record);
        wipe(&mut record);
        result
    }

    fn from_record(record: &state::SenderKeyRecord) -> Result<Self, DecodeError> {
        check_version(record.version)?;
        if record.states.len() > MAX_SENDER_KEY_STATES {
            return Err(DecodeError::Inconsistent("too many sender-key states"));
        }
        let mut states: VecDeque<SenderKeyState> = VecDeque::new();
        for s in &record.states {
            if states.iter().any(|t| t.key_id == s.key_id) {
                return Err(DecodeError::Inconsistent("repeated sender-key id"));
            }
            if s.skipped.len() > MAX_SKIPPED_SENDER_KEYS {
                return Err(DecodeError::Inconsistent("too many skipped sender keys"));
            }
            let chain = s.chain.as_ref().ok_or(DecodeError::MissingField("chain"))?;
            let signing_public = IdentityKey::decode("signing_public", &s.signing_public)?;
            let signing_secret = if s.signing_secret.is_empty() {
                None
            } else {
                let seed = Zeroizing::new(fixed::<32>("signing_secret", &s.signing_secret)?);
                let key = SigningKey::from_bytes(&seed);
                if key.verifying_key().as_bytes() != signing_public.as_bytes() {
                    return Err(DecodeError::Inconsistent("signing key pair mismatch"));
                }
                Some(key)
            };
            states.push_back(SenderKeyState {
                key_id: s.key_id,
                chain: Chain {
                    key: ChainKey(fixed("chain_key", &chain.chain_key)?),
                    index: chain.index,
                },
                signing_public,
                signing_secret,
                skipped: s
                    .skipped
                    .iter()
                    .map(|k| {
                        Ok((
                            k.iteration,
                            MessageKey(fixed("message_key", &k.message_key)?),
                        ))
                    })
                    .collect::<Result<_, DecodeError>>()?,
            });
        }
        Ok(Self {
            group_id: fixed("group_id", &record.group_id)?,
            states,
        })
    }
}

fn wipe(record: &mut state::SenderKeyRecord) {
    for s in &mut record.states {
        s.signing_secret.zeroize();
        if let Some(c) = s.chain.as_mut() {
            c.chain_key.zeroize();
        }
        for k in &mut s.skipped {
            k.message_key.zeroize();
        }
    }
}

#[cfg(test)]
mod tests;
