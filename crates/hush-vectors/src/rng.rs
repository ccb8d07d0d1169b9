//! RNGs that record and replay every draw, so vectors list "RNG outputs"
//! exactly as the spec's draw order states them.

use std::convert::Infallible;

use rand_chacha::ChaCha20Rng;
use rand_core::{SeedableRng, TryCryptoRng, TryRng};

/// Where scenario randomness comes from.
pub enum VectorRng {
    /// Draws from a seeded ChaCha20 and records each one.
    Record {
        /// The source.
        inner: Box<ChaCha20Rng>,
        /// Draws so far.
        draws: Vec<Vec<u8>>,
    },
    /// Serves recorded draws in order.
    Replay {
        /// Remaining draws, in order.
        draws: std::collections::VecDeque<Vec<u8>>,
        /// Draws served (for the output).
        served: Vec<Vec<u8>>,
        /// First mismatch, if any.
        error: Option<String>,
    },
}

impl VectorRng {
    /// A recording RNG from a seed.
    pub fn record(seed: u8) -> Self {
        VectorRng::Record {
            inner: Box::new(ChaCha20Rng::from_seed([seed; 32])),
            draws: Vec::new(),
        }
    }

    /// A replaying RNG over recorded draws.
    pub fn replay(draws: Vec<Vec<u8>>) -> Self {
        VectorRng::Replay {
            draws: draws.into(),
            served: Vec::new(),
            error: None,
        }
    }

    /// The draws made, in order.
    pub fn draws(&self) -> &[Vec<u8>] {
        match self {
            VectorRng::Record { draws, .. } => draws,
            VectorRng::Replay { served, .. } => served,
        }
    }

    /// A replay problem (wrong draw size, too few or too many draws).
    pub fn error(&self) -> Option<String> {
        match self {
            VectorRng::Record { .. } => None,
            VectorRng::Replay { error, draws, .. } => error.clone().or_else(|| {
                (!draws.is_empty()).then(|| format!("{} recorded draws left unused", draws.len()))
            }),
        }
    }

    fn fill(&mut self, dst: &mut [u8]) {
        match self {
            VectorRng::Record { inner, draws } => {
                rand_core::Rng::fill_bytes(inner.as_mut(), dst);
                draws.push(dst.to_vec());
            }
            VectorRng::Replay {
                draws,
                served,
                error,
            } => match draws.pop_front() {
                Some(draw) if draw.len() == dst.len() => {
                    dst.copy_from_slice(&draw);
                    served.push(draw);
                }
                Some(draw) => {
                    error.get_or_insert(format!(
                        "draw {} is {} bytes, the code asked for {}",
                        served.len(),
                        draw.len(),
                        dst.len()
                    ));
                    dst.fill(0);
                }
                None => {
                    error.get_or_insert(format!(
                        "the code asked for draw {} of {} bytes, none recorded",
                        served.len(),
                        dst.len()
                    ));
                    dst.fill(0);
                }
            },
        }
    }
}

impl TryRng for VectorRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_be_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_be_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

impl TryCryptoRng for VectorRng {}
