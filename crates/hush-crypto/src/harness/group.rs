//! The sender-key group harness: three members, each with a chain of
//! its own and a record of every other member's chain, driven by a
//! sequence of [`GroupAction`]s. [`Group::apply`] checks after every
//! step:
//!
//! - a genuine message decrypts, to its own plaintext, exactly once at
//!   each recipient (while its chain is among the states a record keeps);
//! - a replayed, corrupted or misrouted message (given to the record of
//!   another sender) fails, and the record is byte-for-byte unchanged;
//! - records restored from their bytes serialize to the same bytes.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::Violation;
use crate::SenderKeyRecord;
use crate::sender_key::{GroupId, MAX_SENDER_KEY_STATES, SenderKeyMessage};

/// Members of the group under test.
pub const MEMBERS: usize = 3;

const GROUP: GroupId = [0x47; 16];

/// One step of a group conversation. Indexes pick among messages in
/// flight modulo their number, members modulo [`MEMBERS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupAction {
    /// A member encrypts a message of `len` bytes to the others.
    Send {
        /// Sender.
        from: usize,
        /// Plaintext length.
        len: u8,
    },
    /// Delivers (and removes) an in-flight message, in any order.
    Deliver(usize),
    /// Loses an in-flight message.
    Drop(usize),
    /// Delivers an in-flight message twice.
    Duplicate(usize),
    /// Delivers an in-flight message with one bit flipped.
    Corrupt {
        /// Which message.
        index: usize,
        /// Which bit of its encoding.
        bit: usize,
    },
    /// Replays a delivered message, to its record and to the record of
    /// another sender.
    Replay(usize),
    /// Serializes and restores every record of a member.
    Restore(usize),
    /// A member starts a new chain and distributes it.
    Rotate(usize),
}

impl GroupAction {
    /// Decodes actions from arbitrary bytes (for fuzzers): three bytes
    /// per action.
    pub fn from_bytes(data: &[u8]) -> Vec<GroupAction> {
        data.chunks_exact(3)
            .map(|c| {
                let arg = usize::from(c[1]) | (usize::from(c[2]) << 8);
                let member = usize::from(c[1]) % MEMBERS;
                match c[0] % 10 {
                    0..=2 => GroupAction::Send {
                        from: member,
                        len: c[2],
                    },
                    3 | 4 => GroupAction::Deliver(arg),
                    5 => GroupAction::Drop(arg),
                    6 => GroupAction::Duplicate(arg),
                    7 => GroupAction::Corrupt {
                        index: usize::from(c[1]),
                        bit: usize::from(c[2]),
                    },
                    8 => GroupAction::Replay(arg),
                    _ if c[2] & 1 == 0 => GroupAction::Restore(member),
                    _ => GroupAction::Rotate(member),
                }
            })
            .collect()
    }
}

struct Member {
    own: SenderKeyRecord,
    /// `peers[j]`: the record of member `j`'s chains (`peers[self]` is
    /// unused and stays empty).
    peers: Vec<SenderKeyRecord>,
    /// Rotations so far: a message of a chain more than
    /// [`MAX_SENDER_KEY_STATES`] rotations old may be forgotten.
    rotations: usize,
}

struct InFlight {
    from: usize,
    to: usize,
    /// The sender's rotation count when it encrypted.
    generation: usize,
    message: SenderKeyMessage,
    plaintext: Vec<u8>,
}

/// A group conversation under test.
pub struct Group {
    rng: ChaCha20Rng,
    members: Vec<Member>,
    in_flight: Vec<InFlight>,
    delivered: Vec<InFlight>,
    sent: u64,
    /// Messages decrypted so far.
    pub decrypted: u64,
}

impl Group {
    /// A fresh group; everything is derived from `seed`. Every member's
    /// first distribution reaches every other member.
    pub fn new(seed: [u8; 32]) -> Result<Self, Violation> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut members: Vec<Member> = (0..MEMBERS)
            .map(|_| Member {
                own: SenderKeyRecord::generate(&mut rng, GROUP),
                peers: (0..MEMBERS).map(|_| SenderKeyRecord::new(GROUP)).collect(),
                rotations: 0,
            })
            .collect();
        for from in 0..MEMBERS {
            distribute(&mut members, from)?;
        }
        Ok(Self {
            rng,
            members,
            in_flight: Vec::new(),
            delivered: Vec::new(),
            sent: 0,
            decrypted: 0,
        })
    }

    /// Applies one action and checks the invariants.
    pub fn apply(&mut self, action: &GroupAction) -> Result<(), Violation> {
        match *action {
            GroupAction::Send { from, len } => self.send(from % MEMBERS, len),
            GroupAction::Deliver(i) => {
                if self.in_flight.is_empty() {
                    return Ok(());
                }
                let item = self.in_flight.remove(i % self.in_flight.len());
                self.deliver_genuine(&item)?;
                self.delivered.push(item);
                Ok(())
            }
            GroupAction::Drop(i) => {
                if !self.in_flight.is_empty() {
                    let len = self.in_flight.len();
                    self.in_flight.remove(i % len);
                }
                Ok(())
            }
            GroupAction::Duplicate(i) => {
                if self.in_flight.is_empty() {
                    return Ok(());
                }
                let item = self.in_flight.remove(i % self.in_flight.len());
                self.deliver_genuine(&item)?;
                self.expect_rejected(item.to, item.from, &item.message, "duplicate")?;
                self.delivered.push(item);
                Ok(())
            }
            GroupAction::Replay(i) => {
                if self.delivered.is_empty() {
                    return Ok(());
                }
                let item = &self.delivered[i % self.delivered.len()];
                let (to, from, message) = (item.to, item.from, item.message.clone());
                self.expect_rejected(to, from, &message, "replay")?;
                // The same message given to the record of another sender.
                let other = (0..MEMBERS).find(|&m| m != from && m != to);
                match other {
                    Some(other) => self.expect_rejected(to, other, &message, "misrouted"),
                    None => Ok(()),
                }
            }
            GroupAction::Corrupt { index, bit } => {
                if self.in_flight.is_empty() {
                    return Ok(());
                }
                let item = &self.in_flight[index % self.in_flight.len()];
                let Some(corrupted) = corrupt(&item.message, bit) else {
                    return Ok(());
                };
                let (to, from) = (item.to, item.from);
                self.expect_rejected(to, from, &corrupted, "corrupted")
            }
            GroupAction::Restore(member) => self.restore(member % MEMBERS),
            GroupAction::Rotate(member) => self.rotate(member % MEMBERS),
        }
    }

    fn send(&mut self, from: usize, len: u8) -> Result<(), Violation> {
        self.sent += 1;
        let mut plaintext = self.sent.to_be_bytes().to_vec();
        plaintext.resize(8 + usize::from(len), 0xcd);
        let member = &mut self.members[from];
        let message = member
            .own
            .encrypt(&plaintext)
            .map_err(|e| Violation(format!("encrypt: {e}")))?;
        let generation = member.rotations;
        for to in (0..MEMBERS).filter(|&to| to != from) {
            self.in_flight.push(InFlight {
                from,
                to,
                generation,
                message: message.clone(),
                plaintext: plaintext.clone(),
            });
        }
        Ok(())
    }

    fn rotate(&mut self, member: usize) -> Result<(), Violation> {
        self.members[member].own.rotate(&mut self.rng);
        self.members[member].rotations += 1;
        distribute(&mut self.members, member)
    }

    fn deliver_genuine(&mut self, item: &InFlight) -> Result<(), Violation> {
        let forgotten =
            self.members[item.from].rotations - item.generation >= MAX_SENDER_KEY_STATES;
        match self.members[item.to].peers[item.from].decrypt(&item.message) {
            Ok(plaintext) if plaintext == item.plaintext => {
                self.decrypted += 1;
                Ok(())
            }
            Ok(_) => Err(Violation("decrypted to the wrong plaintext".into())),
            Err(crate::DecryptError::UnknownSenderKey { .. }) if forgotten => Ok(()),
            Err(e) => Err(Violation(format!("genuine group message rejected: {e}"))),
        }
    }

    fn expect_rejected(
        &mut self,
        to: usize,
        record_of: usize,
        message: &SenderKeyMessage,
        what: &str,
    ) -> Result<(), Violation> {
        let record = &mut self.members[to].peers[record_of];
        let before = record.to_bytes();
        match record.decrypt(message) {
            Ok(_) => Err(Violation(format!("{what} group message accepted"))),
            Err(_) if record.to_bytes() != before => Err(Violation(format!(
                "{what} group message changed the record"
            ))),
            Err(_) => Ok(()),
        }
    }

    fn restore(&mut self, member: usize) -> Result<(), Violation> {
        let m = &mut self.members[member];
        for record in std::iter::once(&mut m.own).chain(m.peers.iter_mut()) {
            let bytes = record.to_bytes();
            let restored = SenderKeyRecord::from_bytes(&bytes)
                .map_err(|e| Violation(format!("restore: {e}")))?;
            if restored.to_bytes() != bytes {
                return Err(Violation("restored record serializes differently".into()));
            }
            *record = restored;
        }
        Ok(())
    }
}

/// Hands `from`'s current distribution to every other member.
fn distribute(members: &mut [Member], from: usize) -> Result<(), Violation> {
    let distribution = members[from]
        .own
        .distribution()
        .ok_or_else(|| Violation("own record has no chain".into()))?;
    for (to, member) in members.iter_mut().enumerate() {
        if to != from {
            member.peers[from]
                .process(&distribution)
                .map_err(|e| Violation(format!("distribution refused: {e}")))?;
        }
    }
    Ok(())
}

/// Flips one bit of the message's encoding; `None` when the result does
/// not decode or decodes to the same message.
fn corrupt(message: &SenderKeyMessage, bit: usize) -> Option<SenderKeyMessage> {
    let mut bytes = message.to_bytes();
    if bytes.is_empty() {
        return None;
    }
    let bit = bit % (bytes.len() * 8);
    bytes[bit / 8] ^= 1 << (bit % 8);
    let decoded = SenderKeyMessage::try_from(bytes.as_slice()).ok()?;
    (decoded != *message).then_some(decoded)
}
