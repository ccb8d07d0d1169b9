// A benchmark aborts if its setup fails: nothing to recover.
#![allow(clippy::expect_used, clippy::panic)]

//! hush-crypto benchmarks, with vodozemac (Matrix's Olm and Megolm) on
//! the same message pattern in the same run. 64-byte messages throughout.
//!
//! - `x3dh/*`: bundle verification, X3DH on both sides and the first
//!   message (Olm: outbound + inbound session and the first message).
//! - `ratchet_one_way/*`: one message from an established session, no DH
//!   step (the sender already heard back once).
//! - `ratchet_ping_pong/*`: messages alternate direction, so every
//!   message carries a DH ratchet step.
//! - `group/*`: one sender-key (Megolm) message, encrypt and decrypt.
//! - `envelope/*`: seal and open a 64-byte content for one recipient
//!   (`*_cached_agreement`: with the sender-recipient agreement cached).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hush_crypto::prekey::ExtraPreKey;
use hush_crypto::{
    ContentType, IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, PreKeySecrets,
    SenderKeyDistribution, SenderKeyRecord, Session, SessionMessage, SignedPreKeyPair, envelope,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::hint::black_box;
use vodozemac::megolm::{GroupSession, InboundGroupSession};
use vodozemac::olm::{Account, OlmMessage, SessionConfig};

const MESSAGE: [u8; 64] = [0x42; 64];

struct Keys {
    signed: SignedPreKeyPair,
    one_time: OneTimePreKeyPair,
}

impl PreKeySecrets for Keys {
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

struct Parties {
    rng: ChaCha20Rng,
    alice: IdentityKeyPair,
    bob: IdentityKeyPair,
    keys: Keys,
    bundle: PreKeyBundle,
}

fn parties() -> Parties {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    let keys = Keys {
        signed: SignedPreKeyPair::generate(&mut rng, &bob, 1),
        one_time: OneTimePreKeyPair::generate(&mut rng, 2),
    };
    let bundle = PreKeyBundle {
        identity: bob.public().clone(),
        signed_prekey: keys.signed.public(),
        extra: Some(ExtraPreKey::OneTime(keys.one_time.public())),
    };
    Parties {
        rng,
        alice,
        bob,
        keys,
        bundle,
    }
}

/// Two sessions that have each sent and received once.
fn hush_sessions(p: &mut Parties) -> (Session, Session) {
    let verified = p.bundle.clone().verify().expect("valid");
    let mut a = Session::initiate(&mut p.rng, &p.alice, &verified).expect("initiates");
    let SessionMessage::PreKey(first) = a.encrypt(&mut p.rng, &MESSAGE).expect("encrypts") else {
        panic!("expected a prekey message")
    };
    let (mut b, _) = Session::respond(&p.bob, &p.keys, &first).expect("responds");
    let reply = b.encrypt(&mut p.rng, &MESSAGE).expect("encrypts");
    a.decrypt(&reply).expect("decrypts");
    (a, b)
}

fn olm_sessions() -> (vodozemac::olm::Session, vodozemac::olm::Session) {
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_one_time_keys(1);
    let otk = *bob.one_time_keys().values().next().expect("one key");
    let mut a = alice
        .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
        .expect("outbound");
    let OlmMessage::PreKey(first) = a.encrypt(MESSAGE).expect("encrypts") else {
        panic!("expected a pre-key message")
    };
    let mut b = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &first)
        .expect("inbound")
        .session;
    let reply = b.encrypt(MESSAGE).expect("encrypts");
    a.decrypt(&reply).expect("decrypts");
    (a, b)
}

fn x3dh(c: &mut Criterion) {
    let mut g = c.benchmark_group("x3dh");
    let mut p = parties();
    g.bench_function("hush", |bench| {
        bench.iter(|| {
            let verified = p.bundle.clone().verify().expect("valid");
            let mut a = Session::initiate(&mut p.rng, &p.alice, &verified).expect("initiates");
            let SessionMessage::PreKey(first) = a.encrypt(&mut p.rng, &MESSAGE).expect("encrypts")
            else {
                panic!("expected a prekey message")
            };
            black_box(Session::respond(&p.bob, &p.keys, &first).expect("responds"))
        })
    });
    g.bench_function("vodozemac_olm", |bench| {
        let alice = Account::new();
        bench.iter_batched(
            || {
                let mut bob = Account::new();
                bob.generate_one_time_keys(1);
                bob
            },
            |mut bob| {
                let otk = *bob.one_time_keys().values().next().expect("one key");
                let mut a = alice
                    .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
                    .expect("outbound");
                let OlmMessage::PreKey(first) = a.encrypt(MESSAGE).expect("encrypts") else {
                    panic!("expected a pre-key message")
                };
                black_box(
                    bob.create_inbound_session(
                        SessionConfig::version_1(),
                        alice.curve25519_key(),
                        &first,
                    )
                    .expect("inbound"),
                )
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn ratchet_one_way(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratchet_one_way");
    let mut p = parties();
    let (mut a, mut b) = hush_sessions(&mut p);
    g.bench_function("hush", |bench| {
        bench.iter(|| {
            let m = a.encrypt(&mut p.rng, &MESSAGE).expect("encrypts");
            black_box(b.decrypt(&m).expect("decrypts"))
        })
    });
    g.bench_function("hush_encrypt_only", |bench| {
        bench.iter(|| black_box(a.encrypt(&mut p.rng, &MESSAGE).expect("encrypts")))
    });
    let (mut oa, mut ob) = olm_sessions();
    g.bench_function("vodozemac_olm", |bench| {
        bench.iter(|| {
            let m = oa.encrypt(MESSAGE).expect("encrypts");
            black_box(ob.decrypt(&m).expect("decrypts"))
        })
    });
    g.bench_function("vodozemac_olm_encrypt_only", |bench| {
        bench.iter(|| black_box(oa.encrypt(MESSAGE).expect("encrypts")))
    });
    g.finish();
}

fn ratchet_ping_pong(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratchet_ping_pong");
    let mut p = parties();
    let (mut a, mut b) = hush_sessions(&mut p);
    let mut turn = false;
    g.bench_function("hush", |bench| {
        bench.iter(|| {
            turn = !turn;
            let (from, to) = if turn {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let m = from.encrypt(&mut p.rng, &MESSAGE).expect("encrypts");
            black_box(to.decrypt(&m).expect("decrypts"))
        })
    });
    let (mut oa, mut ob) = olm_sessions();
    let mut turn = false;
    g.bench_function("vodozemac_olm", |bench| {
        bench.iter(|| {
            turn = !turn;
            let (from, to) = if turn {
                (&mut oa, &mut ob)
            } else {
                (&mut ob, &mut oa)
            };
            let m = from.encrypt(MESSAGE).expect("encrypts");
            black_box(to.decrypt(&m).expect("decrypts"))
        })
    });
    g.finish();
}

fn group(c: &mut Criterion) {
    let mut g = c.benchmark_group("group");
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let mut own = SenderKeyRecord::generate(&mut rng, [7; 16]);
    let dist = own.distribution().expect("own");
    let mut member = SenderKeyRecord::new([7; 16]);
    member
        .process(&SenderKeyDistribution::try_from(dist.to_bytes().as_slice()).expect("decodes"))
        .expect("same group");
    g.bench_function("hush_sender_key", |bench| {
        bench.iter(|| {
            let m = own.encrypt(&MESSAGE).expect("encrypts");
            black_box(member.decrypt(&m).expect("decrypts"))
        })
    });
    g.bench_function("hush_sender_key_encrypt_only", |bench| {
        bench.iter(|| black_box(own.encrypt(&MESSAGE).expect("encrypts")))
    });
    let mut outbound = GroupSession::new(vodozemac::megolm::SessionConfig::version_1());
    let mut inbound = InboundGroupSession::new(
        &outbound.session_key(),
        vodozemac::megolm::SessionConfig::version_1(),
    );
    g.bench_function("vodozemac_megolm", |bench| {
        bench.iter(|| {
            let m = outbound.encrypt(MESSAGE);
            black_box(inbound.decrypt(&m).expect("decrypts"))
        })
    });
    g.finish();
}

fn sealed(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope");
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let sender = IdentityKeyPair::generate(&mut rng);
    let recipient = IdentityKeyPair::generate(&mut rng);
    g.bench_function("seal", |bench| {
        bench.iter(|| {
            black_box(
                envelope::seal(
                    &mut rng,
                    &sender,
                    1,
                    recipient.public(),
                    ContentType::Ratchet,
                    &MESSAGE,
                )
                .expect("seals"),
            )
        })
    });
    let mut sealing = envelope::Agreements::new();
    g.bench_function("seal_cached_agreement", |bench| {
        bench.iter(|| {
            black_box(
                envelope::seal_with(
                    &mut rng,
                    &mut sealing,
                    &sender,
                    1,
                    recipient.public(),
                    ContentType::Ratchet,
                    &MESSAGE,
                )
                .expect("seals"),
            )
        })
    });
    let env = envelope::seal(
        &mut rng,
        &sender,
        1,
        recipient.public(),
        ContentType::Ratchet,
        &MESSAGE,
    )
    .expect("seals");
    g.bench_function("open", |bench| {
        bench.iter(|| black_box(env.open(&recipient).expect("opens")))
    });
    let mut opening = envelope::Agreements::new();
    g.bench_function("open_cached_agreement", |bench| {
        bench.iter(|| black_box(env.open_with(&mut opening, &recipient).expect("opens")))
    });
    g.finish();
}

/// The primitive floor on this machine, measured in the same run.
fn floor(c: &mut Criterion) {
    use chacha20poly1305::aead::{Aead, KeyInit};
    use ed25519_dalek::{Signer, SigningKey};
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    use x25519_dalek::{PublicKey, StaticSecret};

    let mut g = c.benchmark_group("floor");
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into());
    let nonce = chacha20poly1305::Nonce::from([1u8; 12]);
    g.bench_function("chacha20poly1305_64B_seal", |b| {
        b.iter(|| black_box(cipher.encrypt(&nonce, &MESSAGE[..]).expect("seals")))
    });
    g.bench_function("hkdf_sha256_44B", |b| {
        b.iter(|| {
            let mut okm = [0u8; 44];
            hkdf::Hkdf::<Sha256>::new(None, &MESSAGE[..32])
                .expand(b"info", &mut okm)
                .expect("length");
            black_box(okm)
        })
    });
    g.bench_function("hmac_sha256", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&MESSAGE[..32]).expect("key");
            mac.update(&[1]);
            black_box(mac.finalize().into_bytes())
        })
    });
    let secret = StaticSecret::from([9u8; 32]);
    let public = PublicKey::from(&StaticSecret::from([8u8; 32]));
    g.bench_function("x25519_dh", |b| {
        b.iter(|| black_box(secret.diffie_hellman(&public)))
    });
    g.bench_function("x25519_keygen", |b| {
        b.iter(|| black_box(PublicKey::from(&secret)))
    });
    let signing = SigningKey::from_bytes(&[5u8; 32]);
    let verifying = signing.verifying_key();
    let signature = signing.sign(&MESSAGE);
    g.bench_function("ed25519_sign", |b| {
        b.iter(|| black_box(signing.sign(&MESSAGE)))
    });
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| black_box(verifying.verify_strict(&MESSAGE, &signature).is_ok()))
    });
    g.bench_function("ed25519_verify_rfc8032", |b| {
        b.iter(|| {
            black_box(ed25519_dalek::Verifier::verify(&verifying, &MESSAGE, &signature).is_ok())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = floor, x3dh, ratchet_one_way, ratchet_ping_pong, group, sealed
}
criterion_main!(benches);
