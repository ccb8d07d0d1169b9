//! The symmetric-key ratchet shared by pairwise sessions and sender keys
//! (`spec/ratchet.md`, "Chains").
//!
//! ```text
//! MK  = HMAC-SHA256(CK, 0x01)        CK' = HMAC-SHA256(CK, 0x02)
//! key || nonce = HKDF-SHA256(salt = 0^32, ikm = MK, info, L = 44)
//! ```
//!
//! with `info` = `"hush-ratchet-v1 message"` or `"hush-sender-key-v1 message"`.

use crate::error::DecryptError;
use crate::primitives::{hkdf, hmac, open, seal};
use crate::secret::{ChainKey, MessageKey};

/// The most message keys one message may make a receiver derive, across
/// all chains it touches (`spec/ratchet.md`, "Limits").
pub const MAX_SKIP: u32 = 25_000;

/// A chain key and the index of the next message key it yields.
#[derive(Clone, Debug)]
pub(crate) struct Chain {
    pub(crate) key: ChainKey,
    pub(crate) index: u32,
}

/// Keys skipped over while advancing a chain, and the target key.
pub(crate) struct Advance {
    /// `(index, key)` for skipped indexes, at most `keep` of the newest.
    pub(crate) skipped: Vec<(u32, MessageKey)>,
    /// The key for the target index.
    pub(crate) key: MessageKey,
    /// The chain after the target index.
    pub(crate) next: Chain,
}

impl Chain {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self {
            key: ChainKey(key),
            index: 0,
        }
    }

    /// The message key at `self.index` and the chain after it.
    pub(crate) fn step(&self) -> Result<(MessageKey, Chain), DecryptError> {
        let index = self
            .index
            .checked_add(1)
            .ok_or(DecryptError::ChainExhausted)?;
        let mk = MessageKey(hmac(self.key.as_bytes(), &[0x01]));
        let next = Chain {
            key: ChainKey(hmac(self.key.as_bytes(), &[0x02])),
            index,
        };
        Ok((mk, next))
    }

    /// Derives forward to `target` (>= `self.index`), keeping at most
    /// `keep` of the newest skipped keys. Fails if the jump exceeds
    /// [`MAX_SKIP`]. Does not modify `self`.
    pub(crate) fn advance_to(&self, target: u32, keep: usize) -> Result<Advance, DecryptError> {
        let (skipped, chain) = self.skip_to(target, keep)?;
        let (key, next) = chain.step()?;
        Ok(Advance { skipped, key, next })
    }

    /// Derives every key from `self.index` up to (not including) `end`,
    /// keeping at most `keep` of the newest. Returns the chain at `end`.
    pub(crate) fn skip_to(
        &self,
        end: u32,
        keep: usize,
    ) -> Result<(Vec<(u32, MessageKey)>, Chain), DecryptError> {
        if end <= self.index {
            return Ok((Vec::new(), self.clone()));
        }
        let jump = end - self.index;
        if jump > MAX_SKIP {
            return Err(DecryptError::TooFarAhead {
                jump,
                limit: MAX_SKIP,
            });
        }
        let first_kept = end.saturating_sub(u32::try_from(keep).unwrap_or(u32::MAX));
        let mut skipped = Vec::new();
        let mut chain = self.clone();
        while chain.index < end {
            let (mk, next) = chain.step()?;
            if chain.index >= first_kept {
                skipped.push((chain.index, mk));
            }
            chain = next;
        }
        Ok((skipped, chain))
    }
}

/// Encrypts with the AEAD key and nonce expanded from a message key.
pub(crate) fn encrypt_with(
    mk: &MessageKey,
    info: &[u8],
    ad: &[&[u8]],
    plaintext: &[u8],
) -> Vec<u8> {
    let okm = hkdf::<44>(None, mk.as_bytes(), &[info]);
    let (key, nonce) = split_key_nonce(&okm.0);
    seal(&key, &nonce, &ad.concat(), plaintext)
}

/// Decrypts with the AEAD key and nonce expanded from a message key.
pub(crate) fn decrypt_with(
    mk: &MessageKey,
    info: &[u8],
    ad: &[&[u8]],
    ciphertext: &[u8],
) -> Result<Vec<u8>, DecryptError> {
    let okm = hkdf::<44>(None, mk.as_bytes(), &[info]);
    let (key, nonce) = split_key_nonce(&okm.0);
    open(&key, &nonce, &ad.concat(), ciphertext).ok_or(DecryptError::AuthenticationFailed)
}

fn split_key_nonce(okm: &[u8; 44]) -> (zeroize::Zeroizing<[u8; 32]>, [u8; 12]) {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (key, nonce)
}
