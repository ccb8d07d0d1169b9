use super::*;
use crate::prekey::{ExtraPreKey, OneTimePreKeyPair, PreKeyBundle, SignedPreKeyPair};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The responder's prekey secrets for tests.
pub(crate) struct Keys {
    pub(crate) signed: SignedPreKeyPair,
    pub(crate) last_resort: SignedPreKeyPair,
    pub(crate) one_time: Vec<OneTimePreKeyPair>,
}

impl PreKeySecrets for Keys {
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        (self.signed.id() == id).then_some(&self.signed)
    }
    fn last_resort_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        (self.last_resort.id() == id).then_some(&self.last_resort)
    }
    fn one_time_prekey(&self, id: u32) -> Option<&OneTimePreKeyPair> {
        self.one_time.iter().find(|k| k.id() == id)
    }
}

struct Pair {
    rng: ChaCha20Rng,
    alice_id: IdentityKeyPair,
    bob_id: IdentityKeyPair,
    keys: Keys,
    alice: Session,
}

fn setup(seed: u8, extra: Option<bool>) -> Pair {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let keys = Keys {
        signed: SignedPreKeyPair::generate(&mut rng, &bob_id, 1),
        last_resort: SignedPreKeyPair::generate_last_resort(&mut rng, &bob_id, 2),
        one_time: vec![OneTimePreKeyPair::generate(&mut rng, 3)],
    };
    let bundle = PreKeyBundle {
        identity: bob_id.public().clone(),
        signed_prekey: keys.signed.public(),
        extra: match extra {
            None => None,
            Some(false) => Some(ExtraPreKey::OneTime(keys.one_time[0].public())),
            Some(true) => Some(ExtraPreKey::LastResort(keys.last_resort.public())),
        },
    }
    .verify()
    .expect("valid bundle");
    let alice = Session::initiate(&mut rng, &alice_id, &bundle).expect("initiates");
    Pair {
        rng,
        alice_id,
        bob_id,
        keys,
        alice,
    }
}

fn prekey(message: SessionMessage) -> PreKeyMessage {
    match message {
        SessionMessage::PreKey(m) => *m,
        SessionMessage::Ratchet(_) => panic!("expected a prekey message"),
    }
}

/// Sets up a conversation where both sides have sent and received.
fn established(seed: u8) -> (ChaCha20Rng, Session, Session) {
    let mut p = setup(seed, Some(false));
    let first = prekey(p.alice.encrypt(&mut p.rng, b"hi bob").expect("encrypts"));
    let (mut bob, text) = Session::respond(&p.bob_id, &p.keys, &first).expect("responds");
    assert_eq!(text, b"hi bob");
    let reply = bob.encrypt(&mut p.rng, b"hi alice").expect("encrypts");
    assert!(matches!(reply, SessionMessage::Ratchet(_)));
    assert_eq!(p.alice.decrypt(&reply).expect("decrypts"), b"hi alice");
    (p.rng, p.alice, bob)
}

#[test]
fn handshake_with_each_prekey_shape() {
    for extra in [None, Some(false), Some(true)] {
        let mut p = setup(1, extra);
        let first = prekey(p.alice.encrypt(&mut p.rng, b"one").expect("encrypts"));
        assert_eq!(first.identity, *p.alice_id.public());
        let decoded = PreKeyMessage::try_from(first.to_bytes().as_slice()).expect("decodes");
        assert_eq!(decoded, first);
        let (bob, text) = Session::respond(&p.bob_id, &p.keys, &decoded).expect("responds");
        assert_eq!(text, b"one");
        assert_eq!(bob.remote_identity(), p.alice_id.public());
        assert_eq!(bob.base_key(), p.alice.base_key());
    }
}

#[test]
fn initiator_sends_prekey_messages_until_a_reply() {
    let mut p = setup(2, Some(false));
    let m1 = prekey(p.alice.encrypt(&mut p.rng, b"1").expect("encrypts"));
    let m2 = p.alice.encrypt(&mut p.rng, b"2").expect("encrypts");
    let m3 = p.alice.encrypt(&mut p.rng, b"3").expect("encrypts");
    assert!(p.alice.is_unacknowledged());
    let (mut bob, _) = Session::respond(&p.bob_id, &p.keys, &m1).expect("responds");
    // Later prekey messages of the same handshake go to the same session,
    // in any order.
    assert_eq!(bob.decrypt(&m3).expect("decrypts"), b"3");
    assert_eq!(bob.decrypt(&m2).expect("decrypts"), b"2");
    let reply = bob.encrypt(&mut p.rng, b"ok").expect("encrypts");
    p.alice.decrypt(&reply).expect("decrypts");
    assert!(!p.alice.is_unacknowledged());
    assert!(matches!(
        p.alice.encrypt(&mut p.rng, b"4").expect("encrypts"),
        SessionMessage::Ratchet(_)
    ));
}

#[test]
fn respond_rejects_unknown_prekeys_and_bad_keys() {
    let mut p = setup(3, Some(false));
    let first = prekey(p.alice.encrypt(&mut p.rng, b"x").expect("encrypts"));
    let mut m = first.clone();
    m.signed_prekey_id = 99;
    assert_eq!(
        Session::respond(&p.bob_id, &p.keys, &m).err(),
        Some(X3dhError::UnknownSignedPreKey(99))
    );
    let mut m = first.clone();
    m.extra = Some(PreKeyRef::OneTime(77));
    assert_eq!(
        Session::respond(&p.bob_id, &p.keys, &m).err(),
        Some(X3dhError::UnknownOneTimePreKey(77))
    );
    let mut m = first.clone();
    m.extra = Some(PreKeyRef::LastResort(55));
    assert_eq!(
        Session::respond(&p.bob_id, &p.keys, &m).err(),
        Some(X3dhError::UnknownLastResortPreKey(55))
    );
    let mut m = first.clone();
    m.base_key = [0u8; 32];
    assert_eq!(
        Session::respond(&p.bob_id, &p.keys, &m).err(),
        Some(X3dhError::WeakKeyAgreement)
    );
    // A valid handshake but the wrong one-time key: the keys differ, so
    // the first message does not authenticate.
    let mut m = first.clone();
    m.extra = None;
    assert_eq!(
        Session::respond(&p.bob_id, &p.keys, &m).err(),
        Some(X3dhError::Decrypt(DecryptError::AuthenticationFailed))
    );
    // Someone else's identity claimed in the message.
    let mut m = first;
    m.identity = p.bob_id.public().clone();
    assert!(Session::respond(&p.bob_id, &p.keys, &m).is_err());
}

#[test]
fn low_order_signed_prekey_is_rejected_by_initiator() {
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    // A correctly signed but low-order "prekey".
    let public = [0u8; 32];
    let mut signed = [0u8; 51];
    signed[..14].copy_from_slice(b"hush-prekey-v1");
    signed[14] = 1;
    signed[15..19].copy_from_slice(&5u32.to_be_bytes());
    let bundle = PreKeyBundle {
        identity: bob.public().clone(),
        signed_prekey: crate::SignedPreKey {
            id: 5,
            public,
            signature: bob.sign(&signed),
        },
        extra: None,
    }
    .verify()
    .expect("signature is valid");
    assert_eq!(
        Session::initiate(&mut rng, &alice, &bundle).err(),
        Some(X3dhError::WeakKeyAgreement)
    );
}

#[test]
fn long_conversation_both_directions() {
    let (mut rng, mut alice, mut bob) = established(5);
    for round in 0..20u32 {
        for i in 0..(round % 4) {
            let text = format!("a{round}.{i}");
            let m = alice.encrypt(&mut rng, text.as_bytes()).expect("encrypts");
            assert_eq!(bob.decrypt(&m).expect("decrypts"), text.as_bytes());
        }
        for i in 0..(round % 3) {
            let text = format!("b{round}.{i}");
            let m = bob.encrypt(&mut rng, text.as_bytes()).expect("encrypts");
            assert_eq!(alice.decrypt(&m).expect("decrypts"), text.as_bytes());
        }
    }
}

#[test]
fn out_of_order_across_ratchet_steps() {
    let (mut rng, mut alice, mut bob) = established(6);
    let a1 = alice.encrypt(&mut rng, b"a1").expect("encrypts");
    let a2 = alice.encrypt(&mut rng, b"a2").expect("encrypts");
    let a3 = alice.encrypt(&mut rng, b"a3").expect("encrypts");
    assert_eq!(bob.decrypt(&a3).expect("decrypts"), b"a3");
    let b1 = bob.encrypt(&mut rng, b"b1").expect("encrypts");
    alice.decrypt(&b1).expect("decrypts");
    let a4 = alice.encrypt(&mut rng, b"a4").expect("encrypts");
    // a4 comes from a new chain; a1 and a2 are still readable later.
    assert_eq!(bob.decrypt(&a4).expect("decrypts"), b"a4");
    assert_eq!(bob.decrypt(&a1).expect("decrypts"), b"a1");
    assert_eq!(bob.decrypt(&a2).expect("decrypts"), b"a2");
    assert_eq!(bob.decrypt(&a2), Err(DecryptError::Duplicate));
}

#[test]
fn lost_messages_including_whole_chains() {
    let (mut rng, mut alice, mut bob) = established(7);
    // Alice's chain: a0 a1 lost, Bob replies anyway after a2.
    let _lost = alice.encrypt(&mut rng, b"lost").expect("encrypts");
    let a2 = alice.encrypt(&mut rng, b"a2").expect("encrypts");
    bob.decrypt(&a2).expect("decrypts");
    let b = bob.encrypt(&mut rng, b"b").expect("encrypts");
    alice.decrypt(&b).expect("decrypts");
    let a_new = alice.encrypt(&mut rng, b"new chain").expect("encrypts");
    assert_eq!(bob.decrypt(&a_new).expect("decrypts"), b"new chain");
}

fn snapshot(session: &Session) -> Vec<u8> {
    session.to_bytes().to_vec()
}

#[test]
fn every_failure_leaves_the_session_unchanged() {
    let (mut rng, mut alice, mut bob) = established(8);
    let m1 = alice.encrypt(&mut rng, b"m1").expect("encrypts");
    let m2 = alice.encrypt(&mut rng, b"m2").expect("encrypts");
    bob.decrypt(&m2).expect("decrypts");
    let before = snapshot(&bob);

    let mut forged = m1.ratchet_message().clone();
    forged.ciphertext[0] ^= 1;
    assert_eq!(
        bob.decrypt(&SessionMessage::Ratchet(forged)),
        Err(DecryptError::AuthenticationFailed)
    );
    assert_eq!(snapshot(&bob), before);

    // Header tampering: counter changed (a skipped-key miss path).
    let mut forged = m1.ratchet_message().clone();
    forged.counter += 5;
    assert!(bob.decrypt(&SessionMessage::Ratchet(forged)).is_err());
    assert_eq!(snapshot(&bob), before);

    // Forged new ratchet key: would take a DH step.
    let mut forged = m1.ratchet_message().clone();
    forged.ratchet_key = crate::primitives::x25519_public(&StaticSecret::from([42u8; 32]));
    forged.previous_counter = 100;
    assert_eq!(
        bob.decrypt(&SessionMessage::Ratchet(forged)),
        Err(DecryptError::AuthenticationFailed)
    );
    assert_eq!(snapshot(&bob), before);

    // Low-order ratchet key.
    let mut forged = m1.ratchet_message().clone();
    forged.ratchet_key = [0u8; 32];
    assert_eq!(
        bob.decrypt(&SessionMessage::Ratchet(forged)),
        Err(DecryptError::WeakKeyAgreement)
    );
    assert_eq!(snapshot(&bob), before);

    // Too far ahead.
    let mut forged = m1.ratchet_message().clone();
    forged.counter = MAX_SKIP + 10;
    assert!(matches!(
        bob.decrypt(&SessionMessage::Ratchet(forged)),
        Err(DecryptError::TooFarAhead { .. })
    ));
    assert_eq!(snapshot(&bob), before);

    // Replay.
    assert_eq!(bob.decrypt(&m2), Err(DecryptError::Duplicate));
    assert_eq!(snapshot(&bob), before);

    // Truncated ciphertext.
    let mut forged = m1.ratchet_message().clone();
    forged.ciphertext.truncate(3);
    assert_eq!(
        bob.decrypt(&SessionMessage::Ratchet(forged)),
        Err(DecryptError::AuthenticationFailed)
    );
    assert_eq!(snapshot(&bob), before);

    // And the genuine message still decrypts afterwards.
    assert_eq!(bob.decrypt(&m1).expect("decrypts"), b"m1");
}

#[test]
fn jump_limit_is_exact() {
    let (mut rng, mut alice, mut bob) = established(9);
    let m = alice.encrypt(&mut rng, b"x").expect("encrypts");
    let base = m.ratchet_message().counter;
    for _ in 0..MAX_SKIP {
        alice.encrypt(&mut rng, b"skip").expect("encrypts");
    }
    let at_limit = alice.encrypt(&mut rng, b"at limit").expect("encrypts");
    assert_eq!(at_limit.ratchet_message().counter, base + MAX_SKIP + 1);
    let over = alice.encrypt(&mut rng, b"over").expect("encrypts");
    bob.decrypt(&m).expect("decrypts");
    // Bob's chain is at base + 1: `at_limit` is exactly MAX_SKIP ahead.
    assert_eq!(
        bob.decrypt(&over),
        Err(DecryptError::TooFarAhead {
            jump: MAX_SKIP + 1,
            limit: MAX_SKIP
        })
    );
    assert_eq!(bob.decrypt(&at_limit).expect("decrypts"), b"at limit");
    assert_eq!(bob.decrypt(&over).expect("decrypts"), b"over");
    // Only the newest MAX_SKIPPED_KEYS of the skipped keys are kept.
    assert_eq!(bob.skipped.len(), MAX_SKIPPED_KEYS);
}

#[test]
fn oldest_skipped_keys_are_evicted() {
    let (mut rng, mut alice, mut bob) = established(10);
    let mut held = Vec::new();
    for i in 0..(MAX_SKIPPED_KEYS + 10) {
        held.push(
            alice
                .encrypt(&mut rng, format!("{i}").as_bytes())
                .expect("encrypts"),
        );
    }
    let last = alice.encrypt(&mut rng, b"last").expect("encrypts");
    bob.decrypt(&last).expect("decrypts");
    assert_eq!(bob.skipped.len(), MAX_SKIPPED_KEYS);
    // The 10 oldest were evicted; the rest still open.
    assert_eq!(bob.decrypt(&held[0]), Err(DecryptError::Duplicate));
    assert_eq!(bob.decrypt(&held[9]), Err(DecryptError::Duplicate));
    assert_eq!(bob.decrypt(&held[10]).expect("decrypts"), b"10");
}

#[test]
fn receiver_chains_are_bounded() {
    let (mut rng, mut alice, mut bob) = established(11);
    for _ in 0..(MAX_RECEIVER_CHAINS + 3) {
        let m = alice.encrypt(&mut rng, b"a").expect("encrypts");
        bob.decrypt(&m).expect("decrypts");
        let m = bob.encrypt(&mut rng, b"b").expect("encrypts");
        alice.decrypt(&m).expect("decrypts");
    }
    assert_eq!(bob.receiving.len(), MAX_RECEIVER_CHAINS);
    assert_eq!(alice.receiving.len(), MAX_RECEIVER_CHAINS);
}

#[test]
fn state_round_trip_mid_conversation() {
    let (mut rng, mut alice, bob) = established(12);
    let held = alice.encrypt(&mut rng, b"held").expect("encrypts");
    let later = alice.encrypt(&mut rng, b"later").expect("encrypts");
    let mut bob = Session::from_bytes(&bob.to_bytes()).expect("restores");
    bob.decrypt(&later).expect("decrypts");
    let mut bob = Session::from_bytes(&bob.to_bytes()).expect("restores");
    assert_eq!(bob.decrypt(&held).expect("decrypts"), b"held");
    let reply = bob.encrypt(&mut rng, b"r").expect("encrypts");
    let mut alice = Session::from_bytes(&alice.to_bytes()).expect("restores");
    assert_eq!(alice.decrypt(&reply).expect("decrypts"), b"r");
    assert_eq!(
        snapshot(&Session::from_bytes(&alice.to_bytes()).expect("restores")),
        snapshot(&alice)
    );
}

#[test]
fn state_decode_rejects_bad_records() {
    let (_, alice, _) = established(13);
    let mut record = state::SessionRecord::decode(alice.to_bytes().as_slice()).expect("decodes");
    record.version = 2;
    assert_eq!(
        Session::from_bytes(&record.encode_to_vec()).err(),
        Some(DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
    record.version = 1;
    record.root_key.truncate(5);
    assert!(matches!(
        Session::from_bytes(&record.encode_to_vec()),
        Err(DecodeError::BadLength {
            field: "root_key",
            ..
        })
    ));
    assert_eq!(
        Session::from_bytes(&[0x0a]).err(),
        Some(DecodeError::Protobuf)
    );
}

#[test]
fn messages_decode_strictly() {
    assert_eq!(
        RatchetMessage::try_from(&[0xff][..]),
        Err(DecodeError::Protobuf)
    );
    assert!(matches!(
        RatchetMessage::try_from(&[][..]),
        Err(DecodeError::BadLength {
            field: "ratchet_key",
            ..
        })
    ));
    assert_eq!(
        PreKeyMessage::try_from(&[][..]),
        Err(DecodeError::BadLength {
            field: "identity_key",
            expected: 32,
            found: 0
        })
    );
}

#[test]
fn debug_is_redacted() {
    let (_, alice, _) = established(14);
    let shown = format!("{alice:?}");
    assert!(shown.starts_with("Session { remote_identity: IdentityKey(hush"));
    assert!(shown.ends_with(".. }"));
}

#[test]
fn later_prekey_messages_must_match_the_whole_handshake() {
    let mut p = setup(15, Some(false));
    let first = prekey(p.alice.encrypt(&mut p.rng, b"1").expect("encrypts"));
    let second = prekey(p.alice.encrypt(&mut p.rng, b"2").expect("encrypts"));
    let (mut bob, _) = Session::respond(&p.bob_id, &p.keys, &first).expect("responds");
    let before = snapshot(&bob);
    let altered = [
        PreKeyMessage {
            signed_prekey_id: second.signed_prekey_id + 1,
            ..second.clone()
        },
        PreKeyMessage {
            extra: Some(PreKeyRef::OneTime(1234)),
            ..second.clone()
        },
        PreKeyMessage {
            extra: None,
            ..second.clone()
        },
        PreKeyMessage {
            base_key: [7; 32],
            ..second.clone()
        },
    ];
    for m in altered {
        assert_eq!(
            bob.decrypt(&SessionMessage::PreKey(Box::new(m))),
            Err(DecryptError::HandshakeMismatch)
        );
        assert_eq!(snapshot(&bob), before);
    }
    // The initiator never accepts prekey messages.
    assert_eq!(
        p.alice
            .decrypt(&SessionMessage::PreKey(Box::new(second.clone()))),
        Err(DecryptError::HandshakeMismatch)
    );
    assert_eq!(
        bob.decrypt(&SessionMessage::PreKey(Box::new(second)))
            .expect("decrypts"),
        b"2"
    );
}

#[test]
fn one_message_derives_at_most_max_skip_keys_in_all() {
    let (mut rng, mut alice, mut bob) = established(16);
    // Alice's current chain: 20,000 messages Bob never sees.
    for _ in 0..20_000 {
        alice.encrypt(&mut rng, b"lost").expect("encrypts");
    }
    let seen = alice.encrypt(&mut rng, b"seen").expect("encrypts");
    bob.decrypt(&seen)
        .expect("20,001 ahead is within the limit");
    let reply = bob.encrypt(&mut rng, b"r").expect("encrypts");
    alice.decrypt(&reply).expect("decrypts");
    // A new chain whose previous_counter claims 20,000 more on the old
    // chain, at counter 6,000: 26,000 keys in all.
    let m = alice.encrypt(&mut rng, b"new").expect("encrypts");
    let mut claim = m.ratchet_message().clone();
    claim.previous_counter += 20_000;
    claim.counter = 6_000;
    let before = snapshot(&bob);
    assert_eq!(
        bob.decrypt(&SessionMessage::Ratchet(claim)),
        Err(DecryptError::TooFarAhead {
            jump: 26_000,
            limit: MAX_SKIP
        })
    );
    assert_eq!(snapshot(&bob), before);
    assert_eq!(bob.decrypt(&m).expect("decrypts"), b"new");
}

#[test]
fn restore_rejects_inconsistent_chains() {
    let (_, alice, _) = established(17);
    let mut record = state::SessionRecord::decode(alice.to_bytes().as_slice()).expect("decodes");
    record.their_ratchet_key = vec![1; 32];
    assert_eq!(
        Session::from_bytes(&record.encode_to_vec()).err(),
        Some(DecodeError::Inconsistent(
            "newest chain is not their ratchet key"
        ))
    );
}
