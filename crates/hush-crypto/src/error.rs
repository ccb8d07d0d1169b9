//! Error types, one per domain. None of their `Display`s contain key
//! material or message content.

use thiserror::Error;

/// Bytes from outside (network, disk) that do not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The protobuf encoding itself is invalid.
    #[error("malformed protobuf encoding")]
    Protobuf,
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A fixed-size field has the wrong length.
    #[error("field `{field}` is {found} bytes, expected {expected}")]
    BadLength {
        /// The field.
        field: &'static str,
        /// The length the spec requires.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// A public key that is not a valid (or is a weak) curve point.
    #[error("field `{0}` is not a valid public key")]
    InvalidKey(&'static str),
    /// A record or message from a format version this build does not
    /// read (a newer one, or none at all).
    #[error("format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Padding that does not follow `spec/envelope.md`.
    #[error("bad padding")]
    BadPadding,
    /// An enum value this build does not know.
    #[error("unknown value {value} for `{field}`")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value found.
        value: i32,
    },
    /// A state record whose fields contradict each other.
    #[error("inconsistent state: {0}")]
    Inconsistent(&'static str),
}

impl From<prost::DecodeError> for DecodeError {
    fn from(_: prost::DecodeError) -> Self {
        DecodeError::Protobuf
    }
}

/// A public key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// Not the encoding of a curve point.
    #[error("not a valid Ed25519 public key")]
    Invalid,
    /// A point of small order, which would make signatures or key
    /// agreement meaningless.
    #[error("weak (small-order) public key")]
    Weak,
}

/// A printed address that does not parse (`spec/identity.md`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    /// The address does not start with `hush`.
    #[error("an address starts with \"hush\"")]
    BadPrefix,
    /// A character outside the address alphabet.
    #[error("character {position} is not allowed in an address")]
    BadCharacter {
        /// Zero-based byte offset in the input, leading spaces removed.
        position: usize,
    },
    /// Too short or too long.
    #[error("an address has {expected} characters after \"hush\", found {found}")]
    BadLength {
        /// The number of characters required.
        expected: usize,
        /// The number found.
        found: usize,
    },
    /// The checksum does not match: most likely a typo.
    #[error("address checksum does not match (typo?)")]
    BadChecksum,
    /// An address version this build does not know.
    #[error("address version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The checksum matches but the key inside is unusable.
    #[error("address holds an unusable key: {0}")]
    Key(#[from] KeyError),
}

/// X3DH failures (`spec/x3dh.md`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum X3dhError {
    /// The signed prekey's signature does not verify.
    #[error("signed prekey signature does not verify")]
    BadSignedPreKeySignature,
    /// The last-resort prekey's signature does not verify.
    #[error("last-resort prekey signature does not verify")]
    BadLastResortSignature,
    /// The message names a signed prekey we do not hold.
    #[error("unknown signed prekey {0}")]
    UnknownSignedPreKey(u32),
    /// The message names a one-time prekey we do not hold (used or never
    /// issued).
    #[error("unknown one-time prekey {0}")]
    UnknownOneTimePreKey(u32),
    /// The message names a last-resort prekey we do not hold.
    #[error("unknown last-resort prekey {0}")]
    UnknownLastResortPreKey(u32),
    /// A Diffie-Hellman output was all zeros (a low-order key).
    #[error("key agreement with a low-order key")]
    WeakKeyAgreement,
    /// The first ratchet message inside the prekey message did not
    /// decrypt.
    #[error("initial message: {0}")]
    Decrypt(#[from] DecryptError),
}

/// Encryption failures.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncryptError {
    /// The chain reached 2^32 - 1 messages; a new session or sender key
    /// is needed.
    #[error("message counter exhausted")]
    ChainExhausted,
    /// A sender-key record that holds only other members' chains.
    #[error("this sender-key record has no signing key of ours")]
    NotOwnChain,
    /// A Diffie-Hellman output was all zeros (a low-order key).
    #[error("key agreement with a low-order key")]
    WeakKeyAgreement,
}

/// Decryption failures. After any of these the session or sender-key
/// record is exactly as it was before the call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecryptError {
    /// The message does not parse.
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// The message key was already used (a replay) or was discarded
    /// under the skipped-key bounds.
    #[error("duplicate message")]
    Duplicate,
    /// The message is further ahead in its chain than the jump bound.
    #[error("message is {jump} ahead in its chain, more than the limit of {limit}")]
    TooFarAhead {
        /// How far ahead.
        jump: u32,
        /// The bound (`MAX_SKIP`).
        limit: u32,
    },
    /// Authentication failed: forged, corrupted, or not for this session.
    #[error("message authentication failed")]
    AuthenticationFailed,
    /// A Diffie-Hellman output was all zeros (a low-order ratchet key).
    #[error("key agreement with a low-order key")]
    WeakKeyAgreement,
    /// The counter would pass 2^32 - 1.
    #[error("message counter exhausted")]
    ChainExhausted,
    /// A prekey message whose X3DH values (base key, prekey ids,
    /// identity) are not this session's handshake.
    #[error("prekey message belongs to another session")]
    HandshakeMismatch,
    /// A sender-key message for a key id we hold no chain for.
    #[error("no sender key {key_id}")]
    UnknownSenderKey {
        /// The key id the message names.
        key_id: u32,
    },
    /// The sender-key message signature does not verify.
    #[error("sender-key message signature does not verify")]
    BadSignature,
    /// A sender-key message or distribution for another group than the
    /// record's.
    #[error("sender key belongs to another group")]
    WrongGroup,
}

/// Sealing failures.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    /// A sealed envelope needs at least one recipient.
    #[error("no recipients")]
    NoRecipients,
    /// The content does not fit the largest padding bucket.
    #[error("content is {len} bytes; at most {max} can be sealed")]
    TooLarge {
        /// Content length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A recipient identity key gives an all-zero Diffie-Hellman output.
    #[error("key agreement with a low-order key")]
    WeakKeyAgreement,
}

/// Failures opening a sealed envelope.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpenError {
    /// The envelope does not parse.
    #[error("malformed envelope: {0}")]
    Malformed(#[from] DecodeError),
    /// A Diffie-Hellman output was all zeros.
    #[error("key agreement with a low-order key")]
    WeakKeyAgreement,
    /// The key slot is not for us or was altered.
    #[error("envelope is not addressed to this identity")]
    NotForUs,
    /// The body does not decrypt.
    #[error("envelope authentication failed")]
    AuthenticationFailed,
    /// The body decrypts but the sender tag does not match the claimed
    /// sender: someone other than the claimed sender built this slot.
    #[error("sender authentication failed")]
    BadSender,
}
