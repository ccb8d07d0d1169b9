//! The Double Ratchet (`spec/ratchet.md`), after Signal's specification.
//!
//! ```text
//! KDF_RK(RK, DH) = HKDF-SHA256(salt = RK, ikm = DH, info = "hush-ratchet-v1 root", L = 64)
//!                  -> RK' = okm[0..32], CK = okm[32..64]
//! KDF_CK(CK)     = (HMAC-SHA256(CK, 0x01), HMAC-SHA256(CK, 0x02))     -> (MK, CK')
//! header         = ratchet_key (32) || previous_counter (u32 BE) || counter (u32 BE)
//! ciphertext     = ChaCha20-Poly1305(key, nonce, AD || header, plaintext)
//!                  where key || nonce = HKDF(0^32, MK, "hush-ratchet-v1 message", 44)
//! ```
//!
//! The sending half of a DH ratchet step is taken lazily, at the first
//! encryption after a new ratchet key arrived; the wire result is the
//! same as Signal's eager step. Every decryption computes the complete
//! next state on the side, authenticates, and only then commits, so a
//! forged, corrupt or replayed message changes nothing.

use std::collections::VecDeque;

use hush_proto::{Message, state, wire};
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::chain::{Chain, decrypt_with, encrypt_with};
use crate::error::{DecodeError, DecryptError, EncryptError, X3dhError};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::prekey::{PreKeyRef, PreKeySecrets, VerifiedBundle};
use crate::primitives::{dh, fixed, hkdf, x25519_public};
use crate::secret::{ChainKey, MessageKey, RootKey, SharedSecret};
use crate::state::{STATE_VERSION, check_version};
use crate::x3dh::{self, Handshake};

pub use crate::chain::MAX_SKIP;

/// Skipped message keys kept per session, across all chains; the oldest
/// is evicted first (`spec/ratchet.md`, "Limits").
pub const MAX_SKIPPED_KEYS: usize = 2_000;

/// Receiving chains kept per session, newest first.
pub const MAX_RECEIVER_CHAINS: usize = 5;

const ROOT_INFO: &[u8] = b"hush-ratchet-v1 root";
const MESSAGE_INFO: &[u8] = b"hush-ratchet-v1 message";
const HEADER_LEN: usize = 40;

/// One Double Ratchet message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RatchetMessage {
    /// The sender's current ratchet public key.
    pub ratchet_key: [u8; 32],
    /// Index of this message in the sender's chain.
    pub counter: u32,
    /// Length of the sender's previous sending chain.
    pub previous_counter: u32,
    /// ChaCha20-Poly1305 ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl RatchetMessage {
    /// The 40-byte header authenticated as associated data.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        header_bytes(&self.ratchet_key, self.previous_counter, self.counter)
    }

    fn to_proto(&self) -> wire::RatchetMessage {
        wire::RatchetMessage {
            ratchet_key: self.ratchet_key.to_vec(),
            counter: self.counter,
            previous_counter: self.previous_counter,
            ciphertext: self.ciphertext.clone(),
        }
    }

    fn from_proto(proto: wire::RatchetMessage) -> Result<Self, DecodeError> {
        Ok(Self {
            ratchet_key: fixed("ratchet_key", &proto.ratchet_key)?,
            counter: proto.counter,
            previous_counter: proto.previous_counter,
            ciphertext: proto.ciphertext,
        })
    }

    /// Encodes as a `RatchetMessage` protobuf.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }
}

impl TryFrom<&[u8]> for RatchetMessage {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_proto(wire::RatchetMessage::decode(bytes)?)
    }
}

fn header_bytes(ratchet_key: &[u8; 32], previous_counter: u32, counter: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..32].copy_from_slice(ratchet_key);
    out[32..36].copy_from_slice(&previous_counter.to_be_bytes());
    out[36..].copy_from_slice(&counter.to_be_bytes());
    out
}

/// The messages an initiator sends until the responder answers: the
/// X3DH values and a ratchet message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeyMessage {
    /// The initiator's identity key.
    pub identity: IdentityKey,
    /// The initiator's X3DH ephemeral key `EK_A`.
    pub base_key: [u8; 32],
    /// The responder's signed prekey used.
    pub signed_prekey_id: u32,
    /// The responder's one-time or last-resort prekey used, if any. After
    /// a successful [`Session::respond`] the responder deletes a one-time
    /// prekey named here.
    pub extra: Option<PreKeyRef>,
    /// The encrypted message.
    pub message: RatchetMessage,
}

impl PreKeyMessage {
    /// Encodes as a `PreKeyMessage` protobuf.
    pub fn to_bytes(&self) -> Vec<u8> {
        let extra = self.extra.map(|e| match e {
            PreKeyRef::OneTime(id) => wire::pre_key_message::Extra::OneTimePrekeyId(id),
            PreKeyRef::LastResort(id) => wire::pre_key_message::Extra::LastResortPrekeyId(id),
        });
        wire::PreKeyMessage {
            identity_key: self.identity.as_bytes().to_vec(),
            base_key: self.base_key.to_vec(),
            signed_prekey_id: self.signed_prekey_id,
            extra,
            message: Some(self.message.to_proto()),
        }
        .encode_to_vec()
    }
}

impl TryFrom<&[u8]> for PreKeyMessage {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let proto = wire::PreKeyMessage::decode(bytes)?;
        let extra = proto.extra.map(|e| match e {
            wire::pre_key_message::Extra::OneTimePrekeyId(id) => PreKeyRef::OneTime(id),
            wire::pre_key_message::Extra::LastResortPrekeyId(id) => PreKeyRef::LastResort(id),
        });
        Ok(Self {
            identity: IdentityKey::decode("identity_key", &proto.identity_key)?,
            base_key: fixed("base_key", &proto.base_key)?,
            signed_prekey_id: proto.signed_prekey_id,
            extra,
            message: RatchetMessage::from_proto(
                proto.message.ok_or(DecodeError::MissingField("message"))?,
            )?,
        })
    }
}

/// What [`Session::encrypt`] produces and [`Session::decrypt`] takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionMessage {
    /// A first message (carries the X3DH values). Boxed: it is rare and
    /// several times the size of a ratchet message.
    PreKey(Box<PreKeyMessage>),
    /// A message of an established session.
    Ratchet(RatchetMessage),
}

impl SessionMessage {
    /// The sealed-envelope content type for this message.
    pub fn content_type(&self) -> crate::ContentType {
        match self {
            SessionMessage::PreKey(_) => crate::ContentType::PreKey,
            SessionMessage::Ratchet(_) => crate::ContentType::Ratchet,
        }
    }

    /// Encodes the message (without its type; see [`Self::content_type`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SessionMessage::PreKey(m) => m.to_bytes(),
            SessionMessage::Ratchet(m) => m.to_bytes(),
        }
    }

    /// The ratchet message inside.
    pub fn ratchet_message(&self) -> &RatchetMessage {
        match self {
            SessionMessage::PreKey(m) => &m.message,
            SessionMessage::Ratchet(m) => m,
        }
    }
}

/// An X25519 ratchet key pair with its public half cached.
struct RatchetKeyPair {
    secret: StaticSecret,
    public: [u8; 32],
}

impl RatchetKeyPair {
    fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_secret(StaticSecret::from(*bytes))
    }

    fn from_secret(secret: StaticSecret) -> Self {
        let public = x25519_public(&secret);
        Self { secret, public }
    }
}

#[derive(Clone)]
struct ReceiverChain {
    ratchet_key: [u8; 32],
    chain: Chain,
}

struct SkippedKey {
    ratchet_key: [u8; 32],
    index: u32,
    key: MessageKey,
}

/// A pairwise Double Ratchet session.
pub struct Session {
    ad: [u8; 64],
    local_identity: IdentityKey,
    remote_identity: IdentityKey,
    initiator: bool,
    root: RootKey,
    ratchet: RatchetKeyPair,
    their_ratchet_key: [u8; 32],
    /// `None`: a DH step is due before the next encryption.
    sending: Option<Chain>,
    previous_counter: u32,
    /// Newest first, at most [`MAX_RECEIVER_CHAINS`].
    receiving: VecDeque<ReceiverChain>,
    /// Oldest first, at most [`MAX_SKIPPED_KEYS`].
    skipped: VecDeque<SkippedKey>,
    handshake: Handshake,
    /// Initiator only: no message from the peer has decrypted yet, so
    /// ours are still prekey messages.
    unacknowledged: bool,
}

/// Every key of a session (root, ratchet secret, chain keys, skipped
/// message keys) wipes itself when the session is dropped.
impl zeroize::ZeroizeOnDrop for Session {}
const _: fn(&Session) = |session| {
    use crate::secret::wipes_on_drop;
    wipes_on_drop(&session.root);
    wipes_on_drop(&session.ratchet.secret);
    if let Some(chain) = &session.sending {
        wipes_on_drop(&chain.key);
    }
    for receiving in &session.receiving {
        wipes_on_drop(&receiving.chain.key);
    }
    for skipped in &session.skipped {
        wipes_on_drop(&skipped.key);
    }
};

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("remote_identity", &self.remote_identity)
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

pub(crate) fn kdf_rk(root: &RootKey, shared: &SharedSecret) -> (RootKey, ChainKey) {
    let okm = hkdf::<64>(Some(root.as_bytes()), shared.as_bytes(), &[ROOT_INFO]);
    let mut rk = [0u8; 32];
    let mut ck = [0u8; 32];
    rk.copy_from_slice(&okm.0[..32]);
    ck.copy_from_slice(&okm.0[32..]);
    (RootKey(rk), ChainKey(ck))
}

/// The state change one successful decryption makes.
struct Commit {
    root: Option<RootKey>,
    /// A new receiving chain from a DH step, and the update to the chain
    /// it replaces as newest.
    new_chain: Option<(ReceiverChain, Option<Chain>)>,
    /// An advanced existing receiving chain (by position).
    advanced: Option<(usize, Chain)>,
    used_skipped: Option<usize>,
    skipped: Vec<SkippedKey>,
}

impl Session {
    /// Starts a session as the initiator from a verified bundle. Draws 32
    /// bytes for the X3DH ephemeral key, then 32 for the first ratchet key.
    pub fn initiate(
        rng: &mut impl CryptoRng,
        identity: &IdentityKeyPair,
        bundle: &VerifiedBundle,
    ) -> Result<Self, X3dhError> {
        let (agreement, handshake) = x3dh::initiate(rng, identity, bundle)?;
        let their_ratchet_key = bundle.bundle().signed_prekey.public;
        let ratchet = RatchetKeyPair::generate(rng);
        let shared = dh(&ratchet.secret, &their_ratchet_key).ok_or(X3dhError::WeakKeyAgreement)?;
        let (root, ck) = kdf_rk(&agreement.root, &shared);
        Ok(Self {
            ad: agreement.ad,
            local_identity: identity.public().clone(),
            remote_identity: bundle.bundle().identity.clone(),
            initiator: true,
            root,
            ratchet,
            their_ratchet_key,
            sending: Some(Chain { key: ck, index: 0 }),
            previous_counter: 0,
            receiving: VecDeque::new(),
            skipped: VecDeque::new(),
            handshake,
            unacknowledged: true,
        })
    }

    /// Starts a session as the responder from a received prekey message,
    /// decrypting the message it carries. The caller deletes the
    /// one-time prekey named in `message.extra` once it has stored the
    /// session, and should first check it holds no session with this
    /// `base_key` already (then use [`Session::decrypt`] on that one).
    pub fn respond(
        identity: &IdentityKeyPair,
        prekeys: &impl PreKeySecrets,
        message: &PreKeyMessage,
    ) -> Result<(Self, Vec<u8>), X3dhError> {
        let (agreement, spk) = x3dh::respond(
            identity,
            prekeys,
            &message.identity,
            &message.base_key,
            message.signed_prekey_id,
            message.extra,
        )?;
        let mut session = Self {
            ad: agreement.ad,
            local_identity: identity.public().clone(),
            remote_identity: message.identity.clone(),
            initiator: false,
            root: agreement.root,
            ratchet: RatchetKeyPair::from_secret(spk.secret().clone()),
            their_ratchet_key: message.message.ratchet_key,
            sending: None,
            previous_counter: 0,
            receiving: VecDeque::new(),
            skipped: VecDeque::new(),
            handshake: Handshake {
                signed_prekey_id: message.signed_prekey_id,
                extra: message.extra,
                base_key: message.base_key,
            },
            unacknowledged: false,
        };
        let plaintext = session.decrypt_ratchet(&message.message)?;
        Ok((session, plaintext))
    }

    /// The peer's identity key.
    pub fn remote_identity(&self) -> &IdentityKey {
        &self.remote_identity
    }

    /// Our identity key.
    pub fn local_identity(&self) -> &IdentityKey {
        &self.local_identity
    }

    /// The X3DH base key that identifies this session's handshake.
    pub fn base_key(&self) -> &[u8; 32] {
        &self.handshake.base_key
    }

    /// Whether we started this session and have not yet heard back (our
    /// messages are still prekey messages).
    pub fn is_unacknowledged(&self) -> bool {
        self.unacknowledged
    }

    /// Encrypts `plaintext`. Draws 32 bytes (a new ratchet key) only when
    /// a DH step is due.
    pub fn encrypt(
        &mut self,
        rng: &mut impl CryptoRng,
        plaintext: &[u8],
    ) -> Result<SessionMessage, EncryptError> {
        let chain = match self.sending.take() {
            Some(chain) => chain,
            None => {
                let ratchet = RatchetKeyPair::generate(rng);
                let shared = dh(&ratchet.secret, &self.their_ratchet_key)
                    .ok_or(EncryptError::WeakKeyAgreement)?;
                let (root, ck) = kdf_rk(&self.root, &shared);
                self.root = root;
                self.ratchet = ratchet;
                Chain { key: ck, index: 0 }
            }
        };
        let (mk, next) = match chain.step() {
            Ok(step) => step,
            Err(_) => {
                self.sending = Some(chain);
                return Err(EncryptError::ChainExhausted);
            }
        };
        let header = header_bytes(&self.ratchet.public, self.previous_counter, chain.index);
        let ciphertext = encrypt_with(&mk, MESSAGE_INFO, &[&self.ad, &header], plaintext);
        let message = RatchetMessage {
            ratchet_key: self.ratchet.public,
            counter: chain.index,
            previous_counter: self.previous_counter,
            ciphertext,
        };
        self.sending = Some(next);
        Ok(if self.unacknowledged {
            SessionMessage::PreKey(Box::new(PreKeyMessage {
                identity: self.local_identity.clone(),
                base_key: self.handshake.base_key,
                signed_prekey_id: self.handshake.signed_prekey_id,
                extra: self.handshake.extra,
                message,
            }))
        } else {
            SessionMessage::Ratchet(message)
        })
    }

    /// Decrypts a message of this session. On any error the session is
    /// unchanged.
    pub fn decrypt(&mut self, message: &SessionMessage) -> Result<Vec<u8>, DecryptError> {
        match message {
            SessionMessage::PreKey(m) => {
                // Every X3DH field must be this session's: the ids are
                // not authenticated by the ratchet message inside.
                let handshake = Handshake {
                    signed_prekey_id: m.signed_prekey_id,
                    extra: m.extra,
                    base_key: m.base_key,
                };
                if self.initiator
                    || handshake != self.handshake
                    || m.identity != self.remote_identity
                {
                    return Err(DecryptError::HandshakeMismatch);
                }
                self.decrypt_ratchet(&m.message)
            }
            SessionMessage::Ratchet(m) => self.decrypt_ratchet(m),
        }
    }

    fn decrypt_ratchet(&mut self, message: &RatchetMessage) -> Result<Vec<u8>, DecryptError> {
        let (plaintext, commit) = self.plan(message)?;
        self.apply(commit, message);
        Ok(plaintext)
    }

    /// Computes the plaintext and the state change, touching nothing.
    fn plan(&self, message: &RatchetMessage) -> Result<(Vec<u8>, Commit), DecryptError> {
        let header = message.header();
        let ad: [&[u8]; 2] = [&self.ad, &header];
        let mut commit = Commit {
            root: None,
            new_chain: None,
            advanced: None,
            used_skipped: None,
            skipped: Vec::new(),
        };
        let held = self
            .receiving
            .iter()
            .position(|c| c.ratchet_key == message.ratchet_key);
        // At or past a held chain's position: the common, in-order case.
        // Skipped keys of a held chain all lie below its position, so the
        // skipped list need not be searched.
        if let Some(position) = held
            && message.counter >= self.receiving[position].chain.index
        {
            let chain = &self.receiving[position].chain;
            let advance = chain.advance_to(message.counter, MAX_SKIPPED_KEYS)?;
            let plaintext = decrypt_with(&advance.key, MESSAGE_INFO, &ad, &message.ciphertext)?;
            commit.skipped = tag_skipped(advance.skipped, &message.ratchet_key);
            commit.advanced = Some((position, advance.next));
            return Ok((plaintext, commit));
        }
        // Behind a held chain, or on a chain no longer held: a key skipped
        // earlier, or a replay.
        if let Some(position) = self
            .skipped
            .iter()
            .position(|s| s.index == message.counter && s.ratchet_key == message.ratchet_key)
        {
            let plaintext = decrypt_with(
                &self.skipped[position].key,
                MESSAGE_INFO,
                &ad,
                &message.ciphertext,
            )?;
            commit.used_skipped = Some(position);
            return Ok((plaintext, commit));
        }
        if held.is_some() {
            return Err(DecryptError::Duplicate);
        }
        // A new ratchet key: finish the newest chain up to
        // previous_counter, then take the receiving half of a DH step.
        // One message may make us derive at most MAX_SKIP keys in all,
        // across the old chain's tail and the new chain's head.
        let tail = self.receiving.front().map_or(0, |newest| {
            message.previous_counter.saturating_sub(newest.chain.index)
        });
        let jump = tail.saturating_add(message.counter);
        if jump > MAX_SKIP {
            return Err(DecryptError::TooFarAhead {
                jump,
                limit: MAX_SKIP,
            });
        }
        let mut old_chain_end = None;
        if let Some(newest) = self.receiving.front() {
            let (skipped, end) = newest
                .chain
                .skip_to(message.previous_counter, MAX_SKIPPED_KEYS)?;
            commit.skipped = tag_skipped(skipped, &newest.ratchet_key);
            old_chain_end = Some(end);
        }
        let shared =
            dh(&self.ratchet.secret, &message.ratchet_key).ok_or(DecryptError::WeakKeyAgreement)?;
        let (root, ck) = kdf_rk(&self.root, &shared);
        let chain = Chain { key: ck, index: 0 };
        let advance = chain.advance_to(message.counter, MAX_SKIPPED_KEYS)?;
        let plaintext = decrypt_with(&advance.key, MESSAGE_INFO, &ad, &message.ciphertext)?;
        commit
            .skipped
            .extend(tag_skipped(advance.skipped, &message.ratchet_key));
        commit.root = Some(root);
        commit.new_chain = Some((
            ReceiverChain {
                ratchet_key: message.ratchet_key,
                chain: advance.next,
            },
            old_chain_end,
        ));
        Ok((plaintext, commit))
    }

    fn apply(&mut self, commit: Commit, message: &RatchetMessage) {
        if let Some(position) = commit.used_skipped {
            self.skipped.remove(position);
        }
        if let Some((position, chain)) = commit.advanced
            && let Some(existing) = self.receiving.get_mut(position)
        {
            existing.chain = chain;
        }
        if let Some((new_chain, old_end)) = commit.new_chain {
            if let (Some(end), Some(newest)) = (old_end, self.receiving.front_mut()) {
                newest.chain = end;
            }
            self.receiving.push_front(new_chain);
            self.receiving.truncate(MAX_RECEIVER_CHAINS);
            self.their_ratchet_key = message.ratchet_key;
            if let Some(sending) = self.sending.take() {
                self.previous_counter = sending.index;
            }
        }
        if let Some(root) = commit.root {
            self.root = root;
        }
        self.skipped.extend(commit.skipped);
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            self.skipped.pop_front();
        }
        // Any message from the peer proves it has the session.
        self.unacknowledged = false;
    }

    /// Serializes to a versioned `SessionRecord` (`spec/state.md`). The
    /// result holds the session's secrets: store it encrypted.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let chain = |c: &Chain| state::ChainState {
            chain_key: c.key.as_bytes().to_vec(),
            index: c.index,
        };
        let handshake = state::Handshake {
            signed_prekey_id: self.handshake.signed_prekey_id,
            extra: self.handshake.extra.map(|e| match e {
                PreKeyRef::OneTime(id) => state::handshake::Extra::OneTimePrekeyId(id),
                PreKeyRef::LastResort(id) => state::handshake::Extra::LastResortPrekeyId(id),
            }),
            base_key: self.handshake.base_key.to_vec(),
        };
        let mut record = state::SessionRecord {
            version: STATE_VERSION,
            local_identity: self.local_identity.as_bytes().to_vec(),
            remote_identity: self.remote_identity.as_bytes().to_vec(),
            initiator: self.initiator,
            root_key: self.root.as_bytes().to_vec(),
            ratchet_secret: self.ratchet.secret.to_bytes().to_vec(),
            their_ratchet_key: self.their_ratchet_key.to_vec(),
            sending: self.sending.as_ref().map(chain),
            previous_counter: self.previous_counter,
            receiving: self
                .receiving
                .iter()
                .map(|r| state::ReceiverChain {
                    ratchet_key: r.ratchet_key.to_vec(),
                    chain: Some(chain(&r.chain)),
                })
                .collect(),
            skipped: self
                .skipped
                .iter()
                .map(|s| state::SkippedKey {
                    ratchet_key: s.ratchet_key.to_vec(),
                    index: s.index,
                    message_key: s.key.as_bytes().to_vec(),
                })
                .collect(),
            handshake: Some(handshake),
            unacknowledged: self.unacknowledged,
        };
        let bytes = Zeroizing::new(record.encode_to_vec());
        wipe_session_record(&mut record);
        bytes
    }

    /// Restores from [`Session::to_bytes`] output, checking every field.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut record = state::SessionRecord::decode(bytes)?;
        let result = Self::from_record(&record);
        wipe_session_record(&mut record);
        result
    }

    fn from_record(record: &state::SessionRecord) -> Result<Self, DecodeError> {
        check_version(record.version)?;
        let chain = |c: &state::ChainState| -> Result<Chain, DecodeError> {
            Ok(Chain {
                key: ChainKey(fixed("chain_key", &c.chain_key)?),
                index: c.index,
            })
        };
        if record.receiving.len() > MAX_RECEIVER_CHAINS {
            return Err(DecodeError::Inconsistent("too many receiving chains"));
        }
        if record.skipped.len() > MAX_SKIPPED_KEYS {
            return Err(DecodeError::Inconsistent("too many skipped keys"));
        }
        let receiving = record
            .receiving
            .iter()
            .map(|r| {
                Ok(ReceiverChain {
                    ratchet_key: fixed("ratchet_key", &r.ratchet_key)?,
                    chain: chain(r.chain.as_ref().ok_or(DecodeError::MissingField("chain"))?)?,
                })
            })
            .collect::<Result<VecDeque<_>, DecodeError>>()?;
        let skipped = record
            .skipped
            .iter()
            .map(|s| {
                Ok(SkippedKey {
                    ratchet_key: fixed("ratchet_key", &s.ratchet_key)?,
                    index: s.index,
                    key: MessageKey(fixed("message_key", &s.message_key)?),
                })
            })
            .collect::<Result<VecDeque<_>, DecodeError>>()?;
        let h = record
            .handshake
            .as_ref()
            .ok_or(DecodeError::MissingField("handshake"))?;
        let handshake = Handshake {
            signed_prekey_id: h.signed_prekey_id,
            extra: h.extra.map(|e| match e {
                state::handshake::Extra::OneTimePrekeyId(id) => PreKeyRef::OneTime(id),
                state::handshake::Extra::LastResortPrekeyId(id) => PreKeyRef::LastResort(id),
            }),
            base_key: fixed("handshake.base_key", &h.base_key)?,
        };
        if record.unacknowledged && !record.initiator {
            return Err(DecodeError::Inconsistent(
                "only an initiator is unacknowledged",
            ));
        }
        for (i, chain) in receiving.iter().enumerate() {
            if receiving
                .iter()
                .skip(i + 1)
                .any(|c| c.ratchet_key == chain.ratchet_key)
            {
                return Err(DecodeError::Inconsistent("repeated receiving chain"));
            }
        }
        let their_ratchet_key = fixed("their_ratchet_key", &record.their_ratchet_key)?;
        if receiving
            .front()
            .is_some_and(|newest| newest.ratchet_key != their_ratchet_key)
        {
            return Err(DecodeError::Inconsistent(
                "newest chain is not their ratchet key",
            ));
        }
        let local_identity = IdentityKey::decode("local_identity", &record.local_identity)?;
        let remote_identity = IdentityKey::decode("remote_identity", &record.remote_identity)?;
        let (first, second) = if record.initiator {
            (&local_identity, &remote_identity)
        } else {
            (&remote_identity, &local_identity)
        };
        let mut ad = [0u8; 64];
        ad[..32].copy_from_slice(first.as_bytes());
        ad[32..].copy_from_slice(second.as_bytes());
        let secret = Zeroizing::new(fixed::<32>("ratchet_secret", &record.ratchet_secret)?);
        Ok(Self {
            ad,
            local_identity,
            remote_identity,
            initiator: record.initiator,
            root: RootKey(fixed("root_key", &record.root_key)?),
            ratchet: RatchetKeyPair::from_secret(StaticSecret::from(*secret)),
            their_ratchet_key,
            sending: record.sending.as_ref().map(chain).transpose()?,
            previous_counter: record.previous_counter,
            receiving,
            skipped,
            handshake,
            unacknowledged: record.unacknowledged,
        })
    }
}

fn tag_skipped(keys: Vec<(u32, MessageKey)>, ratchet_key: &[u8; 32]) -> Vec<SkippedKey> {
    keys.into_iter()
        .map(|(index, key)| SkippedKey {
            ratchet_key: *ratchet_key,
            index,
            key,
        })
        .collect()
}

fn wipe_session_record(record: &mut state::SessionRecord) {
    record.root_key.zeroize();
    record.ratchet_secret.zeroize();
    if let Some(c) = record.sending.as_mut() {
        c.chain_key.zeroize();
    }
    for r in &mut record.receiving {
        if let Some(c) = r.chain.as_mut() {
            c.chain_key.zeroize();
        }
    }
    for s in &mut record.skipped {
        s.message_key.zeroize();
    }
}

#[cfg(test)]
mod tests;
