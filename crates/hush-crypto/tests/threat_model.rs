//! The protocol-core claims of `audit/THREAT_MODEL.md` that no unit test
//! states directly: forward secrecy and post-compromise recovery of the
//! Double Ratchet against a stolen session state, what a stolen state
//! still exposes, and what a group member who holds another member's
//! sender-key chain can and cannot do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signer, SigningKey};
use hush_crypto::kat;
use hush_crypto::prekey::{
    ExtraPreKey, OneTimePreKeyPair, PreKeyBundle, PreKeySecrets, SignedPreKeyPair,
};
use hush_crypto::{
    DecryptError, IdentityKeyPair, SenderKeyMessage, SenderKeyRecord, Session, SessionMessage,
};
use hush_proto::{Message, wire};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Prekeys {
    signed: SignedPreKeyPair,
    one_time: OneTimePreKeyPair,
}

impl PreKeySecrets for Prekeys {
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        (self.signed.id() == id).then_some(&self.signed)
    }
    fn last_resort_prekey(&self, _: u32) -> Option<&SignedPreKeyPair> {
        None
    }
    fn one_time_prekey(&self, id: u32) -> Option<&OneTimePreKeyPair> {
        (self.one_time.id() == id).then_some(&self.one_time)
    }
}

/// Alice and Bob with a session each, after one message each way.
fn established(seed: u8) -> (ChaCha20Rng, Session, Session) {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    let prekeys = Prekeys {
        signed: SignedPreKeyPair::generate(&mut rng, &bob, 1),
        one_time: OneTimePreKeyPair::generate(&mut rng, 2),
    };
    let bundle = PreKeyBundle {
        identity: bob.public().clone(),
        signed_prekey: prekeys.signed.public(),
        extra: Some(ExtraPreKey::OneTime(prekeys.one_time.public())),
    }
    .verify()
    .unwrap();
    let mut a = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let SessionMessage::PreKey(first) = a.encrypt(&mut rng, b"first").unwrap() else {
        panic!("a first message is a prekey message")
    };
    let (mut b, plaintext) = Session::respond(&bob, &prekeys, &first).unwrap();
    assert_eq!(plaintext, b"first");
    let reply = b.encrypt(&mut rng, b"reply").unwrap();
    assert_eq!(a.decrypt(&reply).unwrap(), b"reply");
    (rng, a, b)
}

/// A copy of a session as an attacker who read the device's stored state
/// (or its memory) would hold it.
fn steal(session: &Session) -> Session {
    Session::from_bytes(&session.to_bytes()).unwrap()
}

/// Forward secrecy: every ciphertext a network observer or the relay
/// kept stays closed to whoever later steals both devices' session
/// states (message keys are used once and deleted, chain keys only move
/// forward, ratchet secrets are replaced).
#[test]
fn a_stolen_session_opens_none_of_the_messages_it_already_read() {
    let (mut rng, mut alice, mut bob) = established(1);
    let (mut to_bob, mut to_alice) = (Vec::new(), Vec::new());
    for round in 0..3 {
        for i in 0..3 {
            let text = format!("alice {round}.{i}");
            let m = alice.encrypt(&mut rng, text.as_bytes()).unwrap();
            assert_eq!(bob.decrypt(&m).unwrap(), text.as_bytes());
            to_bob.push(m);
        }
        for i in 0..3 {
            let text = format!("bob {round}.{i}");
            let m = bob.encrypt(&mut rng, text.as_bytes()).unwrap();
            assert_eq!(alice.decrypt(&m).unwrap(), text.as_bytes());
            to_alice.push(m);
        }
    }
    for m in &to_bob {
        assert!(steal(&bob).decrypt(m).is_err(), "bob's state opens {m:?}");
        // The sender keeps no key of what it sent.
        assert!(
            steal(&alice).decrypt(m).is_err(),
            "alice's state opens {m:?}"
        );
    }
    for m in &to_alice {
        assert!(
            steal(&alice).decrypt(m).is_err(),
            "alice's state opens {m:?}"
        );
        assert!(steal(&bob).decrypt(m).is_err(), "bob's state opens {m:?}");
    }
}

/// The limit of forward secrecy: a message skipped over (lost or still
/// on its way) keeps its key in the receiver's state, at most 2,000 of
/// them, until it arrives; a stolen state opens it.
#[test]
fn a_stolen_session_opens_messages_skipped_and_not_yet_delivered() {
    let (mut rng, mut alice, mut bob) = established(2);
    let delayed = alice.encrypt(&mut rng, b"delayed").unwrap();
    let next = alice.encrypt(&mut rng, b"next").unwrap();
    bob.decrypt(&next).unwrap();
    assert_eq!(steal(&bob).decrypt(&delayed).unwrap(), b"delayed");
    // Once delivered, its key is gone.
    bob.decrypt(&delayed).unwrap();
    assert_eq!(
        steal(&bob).decrypt(&delayed).err(),
        Some(DecryptError::Duplicate)
    );
}

/// Post-compromise recovery: an attacker holding a copy of Bob's state
/// reads what is sent on the chains it knows, until Bob and Alice each
/// send with a fresh ratchet key; from then on it reads nothing (a
/// passive attacker: one who impersonates with the stolen state before
/// the round trip is not healed against).
#[test]
fn a_stolen_session_heals_after_one_round_trip() {
    let (mut rng, mut alice, mut bob) = established(3);
    let mut eve = steal(&bob);
    let exposed = alice.encrypt(&mut rng, b"exposed").unwrap();
    assert_eq!(eve.decrypt(&exposed).unwrap(), b"exposed");
    bob.decrypt(&exposed).unwrap();

    let answer = bob.encrypt(&mut rng, b"bob's new ratchet key").unwrap();
    alice.decrypt(&answer).unwrap();
    let healed = alice.encrypt(&mut rng, b"healed").unwrap();
    let before = eve.to_bytes().to_vec();
    assert!(eve.decrypt(&answer).is_err());
    assert_eq!(
        eve.decrypt(&healed).err(),
        Some(DecryptError::AuthenticationFailed)
    );
    assert_eq!(eve.to_bytes().to_vec(), before, "failures change nothing");
    assert_eq!(bob.decrypt(&healed).unwrap(), b"healed");
    // And it stays healed.
    for i in 0..5 {
        let m = bob.encrypt(&mut rng, format!("b{i}").as_bytes()).unwrap();
        alice.decrypt(&m).unwrap();
        let m = alice.encrypt(&mut rng, format!("a{i}").as_bytes()).unwrap();
        assert!(eve.decrypt(&m).is_err());
        bob.decrypt(&m).unwrap();
    }
}

/// A member given another member's chain (chain key and signing public
/// key) reads that member's messages but cannot write one: it has no
/// signing seed, and a message signed with any other key fails
/// `BadSignature` before any key is derived, changing nothing.
#[test]
fn a_member_holding_a_chain_cannot_write_as_its_owner() {
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let group = [7u8; 16];
    let mut alice = SenderKeyRecord::generate(&mut rng, group);
    let distribution = alice.distribution().unwrap();
    let mut carol = SenderKeyRecord::new(group);
    carol.process(&distribution).unwrap();

    // Bob, a member, decodes the distribution he was given and builds the
    // message Alice would send next, with her key id, iteration and
    // chain, signed with a key of his own.
    let given = wire::SenderKeyDistribution::decode(distribution.to_bytes().as_slice()).unwrap();
    let chain_key: [u8; 32] = given.chain_key.as_slice().try_into().unwrap();
    let (message_key, _) = kat::kdf_ck(&chain_key);
    let (key, nonce) = kat::message_key_expansion(b"hush-sender-key-v1 message", &message_key);
    let mut header = Vec::new();
    header.extend_from_slice(b"hush-sender-key-v1");
    header.extend_from_slice(&group);
    header.extend_from_slice(&given.key_id.to_be_bytes());
    header.extend_from_slice(&given.iteration.to_be_bytes());
    let ciphertext = ChaCha20Poly1305::new(&Key::from(key))
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: b"alice never wrote this",
                aad: &header,
            },
        )
        .unwrap();
    let cipher = ChaCha20Poly1305::new(&Key::from(key));
    let bobs_key = SigningKey::from_bytes(&[9; 32]);
    let signature = bobs_key
        .sign(&[&header[..], &ciphertext].concat())
        .to_bytes();
    let forged = SenderKeyMessage {
        group_id: group,
        key_id: given.key_id,
        iteration: given.iteration,
        ciphertext,
        signature,
    };
    let before = carol.to_bytes().to_vec();
    assert_eq!(
        carol.decrypt(&forged).err(),
        Some(DecryptError::BadSignature)
    );
    assert_eq!(
        carol.to_bytes().to_vec(),
        before,
        "a forgery changes nothing"
    );
    // Alice's genuine message at that iteration still opens.
    let genuine = alice.encrypt(b"genuine").unwrap();
    assert_eq!(genuine.iteration, forged.iteration);
    assert_eq!(genuine.key_id, forged.key_id);
    // Bob did derive Alice's real message key: it opens her message. Only
    // the signature was beyond him.
    let opened = cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &genuine.ciphertext,
                aad: &header,
            },
        )
        .unwrap();
    assert_eq!(opened, b"genuine");
    assert_eq!(carol.decrypt(&genuine).unwrap(), b"genuine");
}

/// Sender keys do not heal: whoever holds a chain reads every later
/// message of it. What shuts a removed member out is the rotation: the
/// new chain is given to the remaining members only, and the old one
/// says nothing about it. A member added late reads nothing before its
/// distribution's iteration.
#[test]
fn only_rotation_shuts_out_a_former_member_and_late_members_read_no_history() {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let group = [8u8; 16];
    let mut alice = SenderKeyRecord::generate(&mut rng, group);
    let first = alice.distribution().unwrap();
    let (mut bob, mut carol) = (SenderKeyRecord::new(group), SenderKeyRecord::new(group));
    bob.process(&first).unwrap();
    carol.process(&first).unwrap();
    let mut history = Vec::new();
    for i in 0..20 {
        let m = alice.encrypt(format!("m{i}").as_bytes()).unwrap();
        assert!(bob.decrypt(&m).is_ok());
        assert!(carol.decrypt(&m).is_ok(), "no healing within a chain");
        history.push(m);
    }

    // Dave joins now: he reads from here on, nothing before.
    let mut dave = SenderKeyRecord::new(group);
    dave.process(&alice.distribution().unwrap()).unwrap();
    for m in &history {
        assert_eq!(dave.decrypt(m).err(), Some(DecryptError::Duplicate));
    }

    // Carol is removed: Alice rotates and gives the new chain to Bob and
    // Dave only.
    alice.rotate(&mut rng);
    let rotated = alice.distribution().unwrap();
    assert_ne!(rotated.key_id, first.key_id);
    bob.process(&rotated).unwrap();
    dave.process(&rotated).unwrap();
    for i in 0..5 {
        let m = alice.encrypt(format!("after {i}").as_bytes()).unwrap();
        assert!(bob.decrypt(&m).is_ok());
        assert!(dave.decrypt(&m).is_ok());
        assert_eq!(
            carol.decrypt(&m).err(),
            Some(DecryptError::UnknownSenderKey {
                key_id: rotated.key_id
            })
        );
        // Even relabelled with the old chain's id, it does not open.
        let mut relabelled = m.clone();
        relabelled.key_id = first.key_id;
        assert!(carol.decrypt(&relabelled).is_err());
    }
}

/// A replayed message (the relay storing an envelope again, a network
/// duplicate) is refused by the session or sender-key record that read
/// it, and the refusal changes nothing.
#[test]
fn replays_are_refused_and_change_nothing() {
    let (mut rng, mut alice, mut bob) = established(6);
    let m = alice.encrypt(&mut rng, b"once").unwrap();
    bob.decrypt(&m).unwrap();
    let before = bob.to_bytes().to_vec();
    assert_eq!(bob.decrypt(&m).err(), Some(DecryptError::Duplicate));
    assert_eq!(bob.to_bytes().to_vec(), before);

    let group = [1u8; 16];
    let mut own = SenderKeyRecord::generate(&mut rng, group);
    let mut member = SenderKeyRecord::new(group);
    member.process(&own.distribution().unwrap()).unwrap();
    let g = own.encrypt(b"once").unwrap();
    member.decrypt(&g).unwrap();
    let before = member.to_bytes().to_vec();
    assert_eq!(member.decrypt(&g).err(), Some(DecryptError::Duplicate));
    assert_eq!(member.to_bytes().to_vec(), before);
}
