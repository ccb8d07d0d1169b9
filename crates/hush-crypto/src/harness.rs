//! The two-party action harness (`feature = "harness"`): one driver for
//! the proptest suite and the fuzz targets.
//!
//! Alice starts a session with Bob from his bundle; then a sequence of
//! [`Action`]s sends, delivers (in any order), drops, duplicates and
//! corrupts messages and saves/restores either side's state through its
//! serialized form. [`Conversation::apply`] checks after every step:
//!
//! - a genuine message decrypts, to its own plaintext, exactly once;
//! - a replayed or corrupted message fails, and the receiver's state is
//!   byte-for-byte what it was before;
//! - a state restored from its bytes serializes to the same bytes.

mod group;

pub use group::{Group, GroupAction, MEMBERS};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::IdentityKeyPair;
use crate::prekey::{
    ExtraPreKey, OneTimePreKeyPair, PreKeyBundle, PreKeySecrets, SignedPreKeyPair,
};
use crate::ratchet::{PreKeyMessage, RatchetMessage, Session, SessionMessage};

/// One side of the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    /// The initiator.
    Alice,
    /// The responder.
    Bob,
}

/// One step of a conversation. Indexes pick among messages in flight
/// modulo their number, so every value is meaningful.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `from` encrypts a message of `len` bytes.
    Send {
        /// Sender.
        from: Party,
        /// Plaintext length.
        len: u8,
    },
    /// Delivers (and removes) an in-flight message: any index, so
    /// messages arrive in any order.
    Deliver(usize),
    /// Loses an in-flight message.
    Drop(usize),
    /// Delivers a copy of an in-flight message, keeping it in flight.
    Duplicate(usize),
    /// Delivers an in-flight message with one bit flipped.
    Corrupt {
        /// Which message.
        index: usize,
        /// Which bit of its encoding.
        bit: usize,
    },
    /// Replays an already delivered message.
    Replay(usize),
    /// Serializes and restores one side's state.
    Restore(Party),
}

impl Action {
    /// Decodes actions from arbitrary bytes (for fuzzers): three bytes
    /// per action.
    pub fn from_bytes(data: &[u8]) -> Vec<Action> {
        data.chunks_exact(3)
            .map(|c| {
                let arg = usize::from(c[1]) | (usize::from(c[2]) << 8);
                let party = if c[1] & 1 == 0 {
                    Party::Alice
                } else {
                    Party::Bob
                };
                match c[0] % 8 {
                    0 | 1 => Action::Send {
                        from: party,
                        len: c[2],
                    },
                    2 | 3 => Action::Deliver(arg),
                    4 => Action::Drop(arg),
                    5 => Action::Duplicate(arg),
                    6 => Action::Corrupt {
                        index: usize::from(c[1]),
                        bit: usize::from(c[2]),
                    },
                    _ => {
                        if c[1] & 2 == 0 {
                            Action::Replay(arg)
                        } else {
                            Action::Restore(party)
                        }
                    }
                }
            })
            .collect()
    }
}

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

struct BobKeys {
    signed: SignedPreKeyPair,
    one_time: OneTimePreKeyPair,
    last_resort: SignedPreKeyPair,
}

impl PreKeySecrets for BobKeys {
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        (self.signed.id() == id).then_some(&self.signed)
    }
    fn last_resort_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        (self.last_resort.id() == id).then_some(&self.last_resort)
    }
    fn one_time_prekey(&self, id: u32) -> Option<&OneTimePreKeyPair> {
        (self.one_time.id() == id).then_some(&self.one_time)
    }
}

struct InFlight {
    to: Party,
    message: SessionMessage,
    plaintext: Vec<u8>,
}

/// A conversation between two parties under test.
pub struct Conversation {
    rng: ChaCha20Rng,
    bob_identity: IdentityKeyPair,
    bob_keys: BobKeys,
    alice: Session,
    bob: Option<Session>,
    in_flight: Vec<InFlight>,
    delivered: Vec<InFlight>,
    sent: u64,
    /// Messages decrypted so far.
    pub decrypted: u64,
}

impl Conversation {
    /// A fresh conversation; everything is derived from `seed`.
    pub fn new(seed: [u8; 32]) -> Result<Self, Violation> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let alice_identity = IdentityKeyPair::generate(&mut rng);
        let bob_identity = IdentityKeyPair::generate(&mut rng);
        let bob_keys = BobKeys {
            signed: SignedPreKeyPair::generate(&mut rng, &bob_identity, 1),
            one_time: OneTimePreKeyPair::generate(&mut rng, 2),
            last_resort: SignedPreKeyPair::generate_last_resort(&mut rng, &bob_identity, 3),
        };
        let bundle = PreKeyBundle {
            identity: bob_identity.public().clone(),
            signed_prekey: bob_keys.signed.public(),
            extra: Some(ExtraPreKey::OneTime(bob_keys.one_time.public())),
        }
        .verify()
        .map_err(|e| Violation(format!("bundle: {e}")))?;
        let alice = Session::initiate(&mut rng, &alice_identity, &bundle)
            .map_err(|e| Violation(format!("initiate: {e}")))?;
        Ok(Self {
            rng,
            bob_identity,
            bob_keys,
            alice,
            bob: None,
            in_flight: Vec::new(),
            delivered: Vec::new(),
            sent: 0,
            decrypted: 0,
        })
    }

    /// Applies one action and checks the invariants.
    pub fn apply(&mut self, action: &Action) -> Result<(), Violation> {
        match *action {
            Action::Send { from, len } => self.send(from, len),
            Action::Deliver(i) => {
                if self.in_flight.is_empty() {
                    return Ok(());
                }
                let item = self.in_flight.remove(i % self.in_flight.len());
                self.deliver_genuine(&item)?;
                self.delivered.push(item);
                Ok(())
            }
            Action::Drop(i) => {
                if !self.in_flight.is_empty() {
                    let len = self.in_flight.len();
                    self.in_flight.remove(i % len);
                }
                Ok(())
            }
            Action::Duplicate(i) => {
                if self.in_flight.is_empty() {
                    return Ok(());
                }
                let index = i % self.in_flight.len();
                let item = self.in_flight.remove(index);
                self.deliver_genuine(&item)?;
                self.expect_rejected(item.to, &item.message, "duplicate")?;
                self.delivered.push(item);
                Ok(())
            }
            Action::Replay(i) => {
                if self.delivered.is_empty() {
                    return Ok(());
                }
                let index = i % self.delivered.len();
                let (to, message) = {
                    let item = &self.delivered[index];
                    (item.to, item.message.clone())
                };
                self.expect_rejected(to, &message, "replay")
            }
            Action::Corrupt { index, bit } => {
                if self.in_flight.is_empty() {
                    return Ok(());
                }
                let item = &self.in_flight[index % self.in_flight.len()];
                let Some(corrupted) = corrupt(&item.message, bit) else {
                    return Ok(());
                };
                let to = item.to;
                self.expect_rejected(to, &corrupted, "corrupted")
            }
            Action::Restore(party) => self.restore(party),
        }
    }

    fn send(&mut self, from: Party, len: u8) -> Result<(), Violation> {
        self.sent += 1;
        let mut plaintext = self.sent.to_be_bytes().to_vec();
        plaintext.resize(8 + usize::from(len), 0xab);
        let (session, to) = match from {
            Party::Alice => (&mut self.alice, Party::Bob),
            Party::Bob => match self.bob.as_mut() {
                Some(bob) => (bob, Party::Alice),
                None => return Ok(()),
            },
        };
        let message = session
            .encrypt(&mut self.rng, &plaintext)
            .map_err(|e| Violation(format!("encrypt: {e}")))?;
        self.in_flight.push(InFlight {
            to,
            message,
            plaintext,
        });
        Ok(())
    }

    fn snapshot(&self, party: Party) -> Option<Vec<u8>> {
        match party {
            Party::Alice => Some(self.alice.to_bytes().to_vec()),
            Party::Bob => self.bob.as_ref().map(|s| s.to_bytes().to_vec()),
        }
    }

    fn try_deliver(&mut self, to: Party, message: &SessionMessage) -> Result<Vec<u8>, String> {
        match to {
            Party::Alice => self.alice.decrypt(message).map_err(|e| e.to_string()),
            Party::Bob => match (&mut self.bob, message) {
                (Some(bob), _) => bob.decrypt(message).map_err(|e| e.to_string()),
                (None, SessionMessage::PreKey(m)) => {
                    let (session, plaintext) =
                        Session::respond(&self.bob_identity, &self.bob_keys, m)
                            .map_err(|e| e.to_string())?;
                    self.bob = Some(session);
                    Ok(plaintext)
                }
                (None, SessionMessage::Ratchet(_)) => Err("no session".into()),
            },
        }
    }

    fn deliver_genuine(&mut self, item: &InFlight) -> Result<(), Violation> {
        match self.try_deliver(item.to, &item.message) {
            Ok(plaintext) if plaintext == item.plaintext => {
                self.decrypted += 1;
                Ok(())
            }
            Ok(_) => Err(Violation("decrypted to the wrong plaintext".into())),
            Err(e) => Err(Violation(format!("genuine message rejected: {e}"))),
        }
    }

    fn expect_rejected(
        &mut self,
        to: Party,
        message: &SessionMessage,
        what: &str,
    ) -> Result<(), Violation> {
        let before = self.snapshot(to);
        match self.try_deliver(to, message) {
            Ok(_) => Err(Violation(format!("{what} message accepted"))),
            Err(_) if self.snapshot(to) != before => {
                Err(Violation(format!("{what} message changed the state")))
            }
            Err(_) => Ok(()),
        }
    }

    fn restore(&mut self, party: Party) -> Result<(), Violation> {
        let Some(bytes) = self.snapshot(party) else {
            return Ok(());
        };
        let restored =
            Session::from_bytes(&bytes).map_err(|e| Violation(format!("restore: {e}")))?;
        if restored.to_bytes().as_slice() != bytes.as_slice() {
            return Err(Violation("restored state serializes differently".into()));
        }
        match party {
            Party::Alice => self.alice = restored,
            Party::Bob => self.bob = Some(restored),
        }
        Ok(())
    }
}

/// Flips one bit of the message's encoding; `None` when the result does
/// not decode or decodes to the same message (the flip hit nothing).
fn corrupt(message: &SessionMessage, bit: usize) -> Option<SessionMessage> {
    let mut bytes = message.to_bytes();
    let len = bytes.len();
    if len == 0 {
        return None;
    }
    let bit = bit % (len * 8);
    bytes[bit / 8] ^= 1 << (bit % 8);
    let decoded = match message {
        SessionMessage::PreKey(_) => PreKeyMessage::try_from(bytes.as_slice())
            .ok()
            .map(|m| SessionMessage::PreKey(Box::new(m))),
        SessionMessage::Ratchet(_) => RatchetMessage::try_from(bytes.as_slice())
            .ok()
            .map(SessionMessage::Ratchet),
    }?;
    (decoded != *message).then_some(decoded)
}

/// `what` re-decoded equals the original.
fn same<T: PartialEq>(what: &str, again: Option<T>, original: T) -> Result<(), Violation> {
    if again.as_ref() == Some(&original) {
        Ok(())
    } else {
        Err(Violation(format!("{what} does not round-trip")))
    }
}

/// A `PreKeyBundle` decoder check: no panic (verification included), and
/// what decodes round-trips.
pub fn check_bundle(data: &[u8]) -> Result<(), Violation> {
    use crate::PreKeyBundle;
    if let Ok(b) = PreKeyBundle::try_from(data) {
        let _ = b.clone().verify();
        same(
            "bundle",
            PreKeyBundle::try_from(b.to_bytes().as_slice()).ok(),
            b,
        )?;
    }
    Ok(())
}

/// The X3DH initial message (`PreKeyMessage`) decoder.
pub fn check_prekey_message(data: &[u8]) -> Result<(), Violation> {
    if let Ok(m) = PreKeyMessage::try_from(data) {
        same(
            "prekey message",
            PreKeyMessage::try_from(m.to_bytes().as_slice()).ok(),
            m,
        )?;
    }
    Ok(())
}

/// The `RatchetMessage` decoder.
pub fn check_ratchet_message(data: &[u8]) -> Result<(), Violation> {
    if let Ok(m) = RatchetMessage::try_from(data) {
        same(
            "ratchet message",
            RatchetMessage::try_from(m.to_bytes().as_slice()).ok(),
            m,
        )?;
    }
    Ok(())
}

/// The `SenderKeyMessage` and `SenderKeyDistribution` decoders.
pub fn check_sender_key_messages(data: &[u8]) -> Result<(), Violation> {
    use crate::{SenderKeyDistribution, SenderKeyMessage};
    if let Ok(m) = SenderKeyMessage::try_from(data) {
        same(
            "sender-key message",
            SenderKeyMessage::try_from(m.to_bytes().as_slice()).ok(),
            m,
        )?;
    }
    if let Ok(d) = SenderKeyDistribution::try_from(data) {
        let again = SenderKeyDistribution::try_from(d.to_bytes().as_slice())
            .ok()
            .map(|a| a.to_bytes().to_vec());
        same("distribution", again, d.to_bytes().to_vec())?;
    }
    Ok(())
}

/// The `SealedEnvelope` decoder, and opening what decodes with a fixed
/// identity.
pub fn check_envelope(data: &[u8]) -> Result<(), Violation> {
    use crate::SealedEnvelope;
    if let Ok(e) = SealedEnvelope::try_from(data) {
        let _ = e.open(&IdentityKeyPair::from_seed(&[7; 32]));
        same(
            "envelope",
            SealedEnvelope::try_from(e.to_bytes().as_slice()).ok(),
            e,
        )?;
    }
    Ok(())
}

/// The stored state decoders: sessions, sender-key records, identity and
/// prekey pairs.
pub fn check_state(data: &[u8]) -> Result<(), Violation> {
    use crate::{OneTimePreKeyPair, SenderKeyRecord, SignedPreKeyPair};
    if let Ok(s) = Session::from_bytes(data) {
        let bytes = s.to_bytes().to_vec();
        let again = Session::from_bytes(&bytes)
            .ok()
            .map(|a| a.to_bytes().to_vec());
        same("session state", again, bytes)?;
    }
    if let Ok(r) = SenderKeyRecord::from_bytes(data) {
        let bytes = r.to_bytes().to_vec();
        let again = SenderKeyRecord::from_bytes(&bytes)
            .ok()
            .map(|a| a.to_bytes().to_vec());
        same("sender-key state", again, bytes)?;
    }
    let _ = IdentityKeyPair::from_bytes(data);
    let _ = SignedPreKeyPair::from_bytes(data);
    let _ = OneTimePreKeyPair::from_bytes(data);
    Ok(())
}

/// The address parser: what parses prints back to itself.
pub fn check_address(data: &[u8]) -> Result<(), Violation> {
    use crate::Address;
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(a) = text.parse::<Address>()
    {
        same("address", a.to_string().parse::<Address>().ok(), a)?;
    }
    Ok(())
}

/// The `DeviceList` decoder, and verifying what decodes.
pub fn check_device_list(data: &[u8]) -> Result<(), Violation> {
    use crate::DeviceList;
    if let Ok(list) = DeviceList::try_from(data) {
        let _ = list.verify();
        same(
            "device list",
            DeviceList::try_from(list.to_bytes().as_slice()).ok(),
            list,
        )?;
    }
    Ok(())
}

/// Every decoder of hush-crypto on `data` (the checks above): none may
/// panic, and whatever decodes must re-encode to bytes that decode to the
/// same value. For the decoder property test.
pub fn check_decoders(data: &[u8]) -> Result<(), Violation> {
    check_bundle(data)?;
    check_prekey_message(data)?;
    check_ratchet_message(data)?;
    check_sender_key_messages(data)?;
    check_envelope(data)?;
    check_state(data)?;
    check_device_list(data)?;
    check_address(data)
}
