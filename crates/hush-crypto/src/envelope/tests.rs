use super::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn ids(rng: &mut ChaCha20Rng, n: usize) -> Vec<IdentityKeyPair> {
    (0..n).map(|_| IdentityKeyPair::generate(rng)).collect()
}

#[test]
fn seal_open_round_trip() {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let p = ids(&mut rng, 2);
    let env = seal(
        &mut rng,
        &p[0],
        3,
        p[1].public(),
        ContentType::Ratchet,
        b"payload",
    )
    .expect("seals");
    let wire = SealedEnvelope::try_from(env.to_bytes().as_slice()).expect("decodes");
    let opened = wire.open(&p[1]).expect("opens");
    assert_eq!(opened.sender, *p[0].public());
    assert_eq!(opened.sender_device, 3);
    assert_eq!(opened.content_type, ContentType::Ratchet);
    assert_eq!(opened.content, b"payload");
}

#[test]
fn cached_agreements_change_nothing_on_the_wire() {
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let p = ids(&mut rng, 3);
    let mut sealing = Agreements::new();
    let mut opening = Agreements::new();
    for round in 0..3u8 {
        for (from, to) in [(0, 1), (2, 1), (1, 0)] {
            let seed = [round.wrapping_add(from as u8 * 16 + to as u8); 32];
            let plain = seal(
                &mut ChaCha20Rng::from_seed(seed),
                &p[from],
                1,
                p[to].public(),
                ContentType::Ratchet,
                b"same",
            )
            .expect("seals");
            let cached = seal_with(
                &mut ChaCha20Rng::from_seed(seed),
                &mut sealing,
                &p[from],
                1,
                p[to].public(),
                ContentType::Ratchet,
                b"same",
            )
            .expect("seals");
            assert_eq!(plain, cached);
            // One cache serves whichever identity opens: it starts over
            // when the owner changes.
            let opened = cached.open_with(&mut opening, &p[to]).expect("opens");
            assert_eq!(opened.sender, *p[from].public());
            assert_eq!(opened, cached.open(&p[to]).expect("opens"));
            // A slot made for one recipient stays closed to another.
            let other = (to + 1) % 3;
            assert!(cached.open_with(&mut opening, &p[other]).is_err());
        }
    }
    assert!(format!("{sealing:?}").starts_with("Agreements"));
}

#[test]
fn sizes_fall_into_buckets() {
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let p = ids(&mut rng, 2);
    for (len, bucket) in [
        (0, 256),
        (150, 256),
        (300, 512),
        (5000, 8192),
        (MAX_CONTENT_LEN, 65024),
    ] {
        let env = seal(
            &mut rng,
            &p[0],
            0,
            p[1].public(),
            ContentType::Ratchet,
            &vec![7u8; len],
        )
        .expect("seals");
        assert_eq!(env.body.ciphertext.len(), bucket + 16, "content {len}");
        assert_eq!(env.open(&p[1]).expect("opens").content.len(), len);
        assert!(env.to_bytes().len() <= 64 * 1024);
    }
    assert_eq!(
        seal(
            &mut rng,
            &p[0],
            u32::MAX,
            p[1].public(),
            ContentType::Ratchet,
            &vec![0u8; MAX_CONTENT_LEN]
        )
        .map(|e| e.body.ciphertext.len()),
        Ok(65024 + 16)
    );
    assert_eq!(
        seal(
            &mut rng,
            &p[0],
            0,
            p[1].public(),
            ContentType::Ratchet,
            &vec![0u8; MAX_CONTENT_LEN + 1]
        ),
        Err(SealError::TooLarge {
            len: MAX_CONTENT_LEN + 1,
            max: MAX_CONTENT_LEN
        })
    );
}

#[test]
fn multi_recipient_shares_one_body() {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let p = ids(&mut rng, 5);
    let recipients: Vec<IdentityKey> = p[1..].iter().map(|i| i.public().clone()).collect();
    let (body, slots) = seal_many(
        &mut rng,
        &p[0],
        1,
        &recipients,
        ContentType::SenderKey,
        b"group",
    )
    .expect("seals");
    assert_eq!(slots.len(), 4);
    for (identity, slot) in p[1..].iter().zip(&slots) {
        let env = SealedEnvelope {
            body: body.clone(),
            slot: *slot,
        };
        assert_eq!(env.open(identity).expect("opens").content, b"group");
    }
    // A slot for someone else does not open.
    let env = SealedEnvelope {
        body: body.clone(),
        slot: slots[0],
    };
    assert_eq!(env.open(&p[2]), Err(OpenError::NotForUs));
    assert_eq!(
        seal_many(&mut rng, &p[0], 1, &[], ContentType::SenderKey, b"x"),
        Err(SealError::NoRecipients)
    );
}

/// What a recipient learns from its own slot, as `open` computes it: `M`.
fn recover_message_secret(
    me: &IdentityKeyPair,
    body: &SealedBody,
    slot: &[u8; SLOT_LEN],
) -> [u8; 32] {
    let shared = dh(me.x25519_secret(), &body.ephemeral_key).expect("dh");
    let mask = mask(&shared, &body.ephemeral_key, me.public().x25519());
    let mut m = [0u8; 32];
    for (out, (a, b)) in m.iter_mut().zip(slot.iter().zip(mask.iter())) {
        *out = a ^ b;
    }
    m
}

/// A recipient of a group message (who learns M) cannot re-address the
/// body to a third member as if from the original sender.
#[test]
fn another_recipient_cannot_forge_the_sender() {
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let p = ids(&mut rng, 3);
    let (sender, bob, carol) = (&p[0], &p[1], &p[2]);
    let recipients = [bob.public().clone(), carol.public().clone()];
    let (body, slots) = seal_many(
        &mut rng,
        sender,
        1,
        &recipients,
        ContentType::SenderKey,
        b"x",
    )
    .expect("seals");
    // Bob recovers M from his slot, as open() does.
    let m = recover_message_secret(bob, &body, &slots[0]);
    // ...and builds a slot for Carol with a correct mask but cannot make
    // the sender tag, which needs X25519(IK_sender, IK_carol).
    let secret = expand(&m);
    let carol_shared = dh(&secret.ephemeral, carol.public().x25519()).expect("dh");
    let carol_mask = mask(&carol_shared, &body.ephemeral_key, carol.public().x25519());
    let mut slot = [0u8; SLOT_LEN];
    for i in 0..32 {
        slot[i] = m[i] ^ carol_mask[i];
    }
    let forged = SealedEnvelope { body, slot };
    assert_eq!(forged.open(carol), Err(OpenError::BadSender));
}

/// Found in review: a recipient who knows K encrypts a body of its own
/// and pairs it with another member's genuine slot (the relay holds all
/// slots). The tag covers the body, so the other member rejects it.
#[test]
fn a_genuine_slot_cannot_carry_another_body() {
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    let p = ids(&mut rng, 3);
    let (sender, bob, carol) = (&p[0], &p[1], &p[2]);
    let recipients = [bob.public().clone(), carol.public().clone()];
    let (body, slots) = seal_many(
        &mut rng,
        sender,
        1,
        &recipients,
        ContentType::SenderKey,
        b"real",
    )
    .expect("seals");
    let m = recover_message_secret(bob, &body, &slots[0]);
    let secret = expand(&m);
    let fake = wire::SealedContent {
        sender_identity: sender.public().as_bytes().to_vec(),
        sender_device: 9,
        content_type: wire::ContentType::Ratchet as i32,
        content: b"forged".to_vec(),
    }
    .encode_to_vec();
    let ad = [BODY_AD, &body.ephemeral_key[..]].concat();
    let forged_body = SealedBody {
        ephemeral_key: body.ephemeral_key,
        ciphertext: aead_seal(
            &secret.body_key,
            &[0u8; 12],
            &ad,
            &pad(&fake).expect("fits"),
        ),
    };
    let forged = SealedEnvelope {
        body: forged_body,
        slot: slots[1],
    };
    assert_eq!(forged.open(carol), Err(OpenError::BadSender));
}

#[test]
fn tampering_is_detected() {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let p = ids(&mut rng, 2);
    let env = seal(&mut rng, &p[0], 0, p[1].public(), ContentType::PreKey, b"x").expect("seals");
    let mut bad = env.clone();
    bad.body.ciphertext[10] ^= 1;
    assert_eq!(bad.open(&p[1]), Err(OpenError::AuthenticationFailed));
    let mut bad = env.clone();
    bad.slot[40] ^= 1;
    assert_eq!(bad.open(&p[1]), Err(OpenError::BadSender));
    let mut bad = env.clone();
    bad.slot[0] ^= 1;
    assert_eq!(bad.open(&p[1]), Err(OpenError::NotForUs));
    let mut bad = env.clone();
    bad.body.ephemeral_key = [0u8; 32];
    assert_eq!(bad.open(&p[1]), Err(OpenError::WeakKeyAgreement));
    let mut bad = env;
    bad.body.ephemeral_key[0] ^= 1;
    assert!(bad.open(&p[1]).is_err());
}

#[test]
fn padding_rules() {
    assert_eq!(unpad(&pad(b"").expect("fits")), Ok(&b""[..]));
    assert_eq!(
        unpad(&pad(&[0u8; 255]).expect("fits")).map(<[u8]>::len),
        Ok(255)
    );
    assert_eq!(pad(&[0u8; 255]).expect("fits").len(), 256);
    assert_eq!(pad(&[0u8; 256]).expect("fits").len(), 512);
    assert!(pad(&[0u8; 65024]).is_none());
    assert_eq!(unpad(&[0u8; 256]), Err(DecodeError::BadPadding));
    let mut odd = vec![0u8; 256];
    odd[3] = 1;
    assert_eq!(unpad(&odd), Err(DecodeError::BadPadding));
    assert_eq!(unpad(&[0x80; 100]), Err(DecodeError::BadPadding));
}

#[test]
fn decode_errors() {
    assert_eq!(
        SealedEnvelope::try_from(&[0xff][..]),
        Err(DecodeError::Protobuf)
    );
    let env = wire::SealedEnvelope {
        body: Some(wire::SealedBody {
            version: 2,
            ephemeral_key: vec![0; 32],
            ciphertext: vec![],
        }),
        slot: vec![0; 48],
    };
    assert_eq!(
        SealedEnvelope::try_from(env.encode_to_vec().as_slice()),
        Err(DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
}
