use super::*;
use crate::chain::MAX_SKIP;

const GROUP: GroupId = [0x47; 16];
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn group(seed: u8) -> (ChaCha20Rng, SenderKeyRecord, SenderKeyRecord) {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let own = SenderKeyRecord::generate(&mut rng, GROUP);
    let dist = own.distribution().expect("own chain");
    let wire = SenderKeyDistribution::try_from(dist.to_bytes().as_slice()).expect("decodes");
    let mut theirs = SenderKeyRecord::new(GROUP);
    theirs.process(&wire).expect("same group");
    (rng, own, theirs)
}

#[test]
fn in_order_out_of_order_and_duplicates() {
    let (_, mut own, mut theirs) = group(1);
    let m: Vec<_> = (0..5)
        .map(|i| own.encrypt(format!("m{i}").as_bytes()).expect("encrypts"))
        .collect();
    assert_eq!(theirs.decrypt(&m[0]).expect("decrypts"), b"m0");
    assert_eq!(theirs.decrypt(&m[3]).expect("decrypts"), b"m3");
    assert_eq!(theirs.decrypt(&m[1]).expect("decrypts"), b"m1");
    assert_eq!(theirs.decrypt(&m[1]), Err(DecryptError::Duplicate));
    assert_eq!(theirs.decrypt(&m[0]), Err(DecryptError::Duplicate));
    let wire = SenderKeyMessage::try_from(m[2].to_bytes().as_slice()).expect("decodes");
    assert_eq!(theirs.decrypt(&wire).expect("decrypts"), b"m2");
    assert_eq!(theirs.decrypt(&m[4]).expect("decrypts"), b"m4");
}

#[test]
fn failures_change_nothing() {
    let (mut rng, mut own, mut theirs) = group(2);
    let m = own.encrypt(b"hello").expect("encrypts");
    let before = theirs.to_bytes().to_vec();

    let mut bad = m.clone();
    bad.signature[0] ^= 1;
    assert_eq!(theirs.decrypt(&bad), Err(DecryptError::BadSignature));
    let mut bad = m.clone();
    bad.ciphertext[0] ^= 1;
    assert_eq!(theirs.decrypt(&bad), Err(DecryptError::BadSignature));
    let mut bad = m.clone();
    bad.iteration = 7;
    assert_eq!(theirs.decrypt(&bad), Err(DecryptError::BadSignature));
    let mut bad = m.clone();
    bad.key_id ^= 1;
    assert_eq!(
        theirs.decrypt(&bad),
        Err(DecryptError::UnknownSenderKey {
            key_id: m.key_id ^ 1
        })
    );
    // A validly signed message too far ahead.
    let mut far = SenderKeyRecord::from_bytes(&own.to_bytes()).expect("restores");
    for _ in 0..=MAX_SKIP + 1 {
        far.encrypt(b"").expect("encrypts");
    }
    let ahead = far.encrypt(b"far").expect("encrypts");
    assert!(matches!(
        theirs.decrypt(&ahead),
        Err(DecryptError::TooFarAhead { .. })
    ));
    // Signed by someone else's key under the same key id.
    let mut other = SenderKeyRecord::generate(&mut rng, GROUP);
    let mut forged = other.encrypt(b"x").expect("encrypts");
    forged.key_id = m.key_id;
    assert_eq!(theirs.decrypt(&forged), Err(DecryptError::BadSignature));

    assert_eq!(theirs.to_bytes().to_vec(), before);
    assert_eq!(theirs.decrypt(&m).expect("decrypts"), b"hello");
}

#[test]
fn rotation_and_late_distribution() {
    let (mut rng, mut own, mut theirs) = group(3);
    let before = own.encrypt(b"before").expect("encrypts");
    own.rotate(&mut rng);
    let rotated = own.distribution().expect("own");
    let after = own.encrypt(b"after").expect("encrypts");
    assert_ne!(before.key_id, after.key_id);
    // A removed member keeps only the old chain: cannot read `after`.
    let mut removed = SenderKeyRecord::from_bytes(&theirs.to_bytes()).expect("restores");
    assert!(matches!(
        removed.decrypt(&after),
        Err(DecryptError::UnknownSenderKey { .. })
    ));
    // A member who gets the new distribution reads new messages.
    theirs.process(&rotated).expect("same group");
    assert_eq!(theirs.decrypt(&after).expect("decrypts"), b"after");
    assert_eq!(theirs.decrypt(&before).expect("decrypts"), b"before");
    // A late joiner given the current chain cannot read earlier messages.
    let mut late = SenderKeyRecord::new(GROUP);
    late.process(&own.distribution().expect("own"))
        .expect("same group");
    assert_eq!(late.decrypt(&after), Err(DecryptError::Duplicate));
    let next = own.encrypt(b"next").expect("encrypts");
    assert_eq!(late.decrypt(&next).expect("decrypts"), b"next");
    // Re-processing an old distribution does not rewind the chain.
    let again = own.distribution().expect("own");
    theirs.process(&again).expect("same group");
    assert_eq!(theirs.decrypt(&next).expect("decrypts"), b"next");
    assert_eq!(theirs.decrypt(&next), Err(DecryptError::Duplicate));
}

#[test]
fn states_are_bounded_and_receivers_cannot_send() {
    let (mut rng, mut own, mut theirs) = group(4);
    for _ in 0..(MAX_SENDER_KEY_STATES + 2) {
        own.rotate(&mut rng);
        theirs
            .process(&own.distribution().expect("own"))
            .expect("same group");
    }
    assert_eq!(theirs.states.len(), MAX_SENDER_KEY_STATES);
    assert_eq!(own.states.len(), MAX_SENDER_KEY_STATES);
    assert_eq!(theirs.encrypt(b"x").err(), Some(EncryptError::NotOwnChain));
    assert!(theirs.distribution().is_none());
}

#[test]
fn state_round_trip_and_redaction() {
    let (_, mut own, theirs) = group(5);
    own.encrypt(b"x").expect("encrypts");
    let restored = SenderKeyRecord::from_bytes(&own.to_bytes()).expect("restores");
    assert_eq!(restored.to_bytes().to_vec(), own.to_bytes().to_vec());
    let dist = own.distribution().expect("own");
    assert!(format!("{dist:?}").ends_with(".. }"));
    assert!(format!("{theirs:?}").ends_with(".. }"));
    let mut record = state::SenderKeyRecord::decode(own.to_bytes().as_slice()).expect("decodes");
    record.states[0].signing_public = theirs.states[0].signing_public.as_bytes().to_vec();
    let mut other = record.clone();
    other.states[0].signing_secret = vec![9; 32];
    assert_eq!(
        SenderKeyRecord::from_bytes(&other.encode_to_vec()).err(),
        Some(DecodeError::Inconsistent("signing key pair mismatch"))
    );
}

#[test]
fn other_groups_are_rejected() {
    let (mut rng, mut own, mut theirs) = group(6);
    let mut elsewhere = SenderKeyRecord::generate(&mut rng, [1; 16]);
    let m = elsewhere.encrypt(b"x").expect("encrypts");
    assert_eq!(theirs.decrypt(&m), Err(DecryptError::WrongGroup));
    assert_eq!(
        theirs.process(&elsewhere.distribution().expect("own")),
        Err(DecryptError::WrongGroup)
    );
    // Changing the group id of a genuine message breaks its signature.
    let mut moved = own.encrypt(b"y").expect("encrypts");
    moved.group_id = [1; 16];
    let mut other_group = SenderKeyRecord::new([1; 16]);
    let mut dist = own.distribution().expect("own");
    dist.group_id = [1; 16];
    other_group.process(&dist).expect("same group");
    assert_eq!(other_group.decrypt(&moved), Err(DecryptError::BadSignature));
}

#[test]
fn own_chain_is_used_even_behind_a_received_one() {
    let (_, mut own, theirs) = group(7);
    let foreign = {
        let mut rng = ChaCha20Rng::from_seed([8; 32]);
        SenderKeyRecord::generate(&mut rng, GROUP)
            .distribution()
            .expect("own")
    };
    own.process(&foreign).expect("same group");
    // A distribution reusing our key id with another signing key does
    // not replace our chain.
    let mut impostor = foreign.clone();
    impostor.key_id = own.distribution().expect("own").key_id;
    own.process(&impostor).expect("same group");
    let mut theirs = theirs;
    let m = own.encrypt(b"still mine").expect("encrypts");
    assert_eq!(theirs.decrypt(&m).expect("decrypts"), b"still mine");
    assert_eq!(own.distribution().expect("own").key_id, m.key_id);
}
