//! The client's random generator (`audit/REVIEW.md`, finding C1).
//!
//! ChaCha20, seeded from the operating system, with two rules:
//!
//! - **Erasure:** each block of output replaces the key with its first
//!   32 bytes and keeps the rest as a pool that draws take from, wiping
//!   what they take ("fast key erasure"), so the state never says
//!   anything about what was drawn before. A plain `ChaCha20Rng` keeps its seed
//!   for life and can be wound back (`get_seed`, `set_word_pos`): whoever
//!   read a long-running client's memory once could recompute every
//!   ephemeral key, ratchet secret and envelope secret it ever drew,
//!   undoing forward secrecy.
//! - **Fresh entropy for keys:** a draw of 32 bytes or more (every secret
//!   key hush-crypto generates: ratchet and prekey secrets, X3DH
//!   ephemerals, envelope secrets, sender keys, identity seeds) is made
//!   after 32 new bytes from the operating system are mixed into the key,
//!   so a copy of the state does not predict the next keys either and
//!   the Double Ratchet's post-compromise recovery holds against a
//!   memory compromise too. Smaller draws (message ids, nonces, key ids,
//!   jitter) come from the stream alone.

use core::convert::Infallible;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, TryCryptoRng, TryRng};
use zeroize::Zeroizing;

/// Draws of this many bytes or more get fresh operating-system entropy.
const KEY_DRAW: usize = 32;

/// Output made at each rekey beyond the next key, handed out to draws.
const POOL: usize = 224;

/// A ChaCha20 generator with fast key erasure: each block of output
/// makes the next key (its first 32 bytes) and a pool of output that
/// draws take from, wiping what they take; a key-sized draw first mixes
/// fresh entropy into the key.
pub(crate) struct ErasingRng {
    inner: ChaCha20Rng,
    /// Output not handed out yet: the last `left` bytes (the bytes
    /// before them are zero).
    pool: Zeroizing<[u8; POOL]>,
    left: usize,
}

impl core::fmt::Debug for ErasingRng {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ErasingRng(..)")
    }
}

impl ErasingRng {
    /// A generator seeded from the operating system.
    pub(crate) fn from_os() -> Result<Self, getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut())?;
        Ok(Self::from_seed(&seed))
    }

    /// A generator seeded with `seed` (secret).
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        let mut rng = Self {
            inner: ChaCha20Rng::from_seed(*seed),
            pool: Zeroizing::new([0u8; POOL]),
            left: 0,
        };
        rng.rekey(None);
        rng
    }

    /// Replaces the key, in place, with 32 bytes of the current stream
    /// (xor `fresh` if given, after which the key is replaced once more
    /// so the pool comes from after the fresh entropy), and refills the
    /// pool from the same block.
    fn rekey(&mut self, fresh: Option<&[u8; 32]>) {
        let mut seed = Zeroizing::new([0u8; 32]);
        if let Some(fresh) = fresh {
            self.inner.fill_bytes(seed.as_mut());
            for (s, f) in seed.iter_mut().zip(fresh) {
                *s ^= f;
            }
            self.inner = ChaCha20Rng::from_seed(*seed);
        }
        let mut block = Zeroizing::new([0u8; 32 + POOL]);
        self.inner.fill_bytes(block.as_mut());
        seed.copy_from_slice(&block[..32]);
        self.inner = ChaCha20Rng::from_seed(*seed);
        self.pool.copy_from_slice(&block[32..]);
        self.left = POOL;
    }

    /// Mixes 32 bytes from the operating system into the key. If the
    /// operating system fails (it does not once it has been seeded), the
    /// stream goes on as it is: as unpredictable as before, only not
    /// refreshed.
    fn refresh(&mut self) {
        let mut fresh = Zeroizing::new([0u8; 32]);
        if getrandom::fill(fresh.as_mut()).is_ok() {
            self.rekey(Some(&fresh));
        }
    }

    /// Fills `dst` from the pool, wiping what it hands out.
    fn take(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(POOL) {
            if self.left < chunk.len() {
                self.rekey(None);
            }
            let start = POOL - self.left;
            let taken = &mut self.pool[start..start + chunk.len()];
            chunk.copy_from_slice(taken);
            taken.fill(0);
            self.left -= chunk.len();
        }
    }
}

impl TryRng for ErasingRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0u8; 4];
        self.take(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0u8; 8];
        self.take(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        if dst.len() >= KEY_DRAW {
            self.refresh();
        }
        self.take(dst);
        Ok(())
    }
}

impl TryCryptoRng for ErasingRng {}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;

    /// Everything a generator seeded with `seed` produces from the start
    /// of its stream (more than any draw here).
    fn stream_of(seed: [u8; 32]) -> Vec<u8> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        rng.set_word_pos(0);
        let mut out = vec![0u8; 4096];
        rng.fill_bytes(&mut out);
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// The finding: a plain ChaCha20 generator's current state replays
    /// what it drew earlier, and predicts what it draws next.
    #[test]
    fn a_plain_chacha_state_replays_earlier_draws_and_predicts_later_ones() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let mut copy = rng.clone();
        assert!(contains(&stream_of(rng.get_seed()), &secret));
        let (mut next, mut predicted) = ([0u8; 32], [0u8; 32]);
        rng.fill_bytes(&mut next);
        copy.fill_bytes(&mut predicted);
        assert_eq!(next, predicted);
    }

    /// Erasure: after any draw, the state (its key, from the beginning of
    /// its stream) reproduces none of the draws made before.
    #[test]
    fn the_state_after_a_draw_says_nothing_of_it() {
        let mut rng = ErasingRng::from_seed(&[7; 32]);
        let mut drawn: Vec<Vec<u8>> = Vec::new();
        for len in [32usize, 24, 16, 32, 64, 4] {
            let mut out = vec![0u8; len];
            rng.fill_bytes(&mut out);
            drawn.push(out);
            drawn.push(rng.next_u32().to_le_bytes().to_vec());
            drawn.push(rng.next_u64().to_le_bytes().to_vec());
            let stream = stream_of(rng.inner.get_seed());
            for earlier in drawn.iter().filter(|d| d.len() >= 8) {
                assert!(!contains(&stream, earlier), "an earlier draw is replayable");
                assert!(!contains(&rng.pool[..], earlier), "an earlier draw is kept");
            }
        }
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        rng.fill_bytes(&mut a);
        rng.fill_bytes(&mut b);
        assert_ne!(a, b);
        assert_eq!(format!("{rng:?}"), "ErasingRng(..)");
    }

    /// Fresh entropy: two generators in the same state (a device and an
    /// attacker's copy of its memory) agree on small draws but never on
    /// a key-sized one.
    #[test]
    fn a_copy_of_the_state_does_not_predict_the_next_key() {
        let mut device = ErasingRng::from_seed(&[9; 32]);
        let mut copy = ErasingRng::from_seed(&[9; 32]);
        let (mut id, mut predicted_id) = ([0u8; 16], [0u8; 16]);
        device.fill_bytes(&mut id);
        copy.fill_bytes(&mut predicted_id);
        assert_eq!(id, predicted_id, "small draws come from the stream");
        for _ in 0..8 {
            let (mut key, mut predicted) = ([0u8; 32], [0u8; 32]);
            device.fill_bytes(&mut key);
            copy.fill_bytes(&mut predicted);
            assert_ne!(key, predicted);
        }
    }
}
