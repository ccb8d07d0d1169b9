// Test code: a failed setup step should abort the test.
#![allow(clippy::expect_used, clippy::panic)]

//! Every decoder on random bytes and on mutated valid encodings: an
//! error, never a panic; and whatever decodes re-encodes to an equal
//! value. (The fuzz targets in fuzz/ do the same, coverage-guided.)

use hush_crypto::prekey::ExtraPreKey;
use hush_crypto::{
    Address, ContentType, IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, SenderKeyRecord,
    Session, SessionMessage, SignedPreKeyPair, envelope,
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Valid encodings of every decodable thing, to mutate (built once).
fn samples() -> &'static [Vec<u8>] {
    static SAMPLES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(build_samples)
}

fn build_samples() -> Vec<Vec<u8>> {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPreKeyPair::generate(&mut rng, &bob, 1);
    let opk = OneTimePreKeyPair::generate(&mut rng, 2);
    let bundle = PreKeyBundle {
        identity: bob.public().clone(),
        signed_prekey: spk.public(),
        extra: Some(ExtraPreKey::OneTime(opk.public())),
    };
    let mut session = Session::initiate(&mut rng, &alice, &bundle.clone().verify().expect("valid"))
        .expect("initiates");
    let SessionMessage::PreKey(first) = session.encrypt(&mut rng, b"hello").expect("encrypts")
    else {
        panic!("prekey message expected")
    };
    let mut group = SenderKeyRecord::generate(&mut rng, [1; 16]);
    let group_message = group.encrypt(b"group").expect("encrypts");
    let sealed = envelope::seal(
        &mut rng,
        &alice,
        1,
        bob.public(),
        ContentType::PreKey,
        &first.to_bytes(),
    )
    .expect("seals");
    vec![
        bundle.to_bytes(),
        first.to_bytes(),
        first.message.to_bytes(),
        group_message.to_bytes(),
        group.distribution().expect("own").to_bytes().to_vec(),
        sealed.to_bytes(),
        session.to_bytes().to_vec(),
        group.to_bytes().to_vec(),
        alice.to_bytes().to_vec(),
        spk.to_bytes().to_vec(),
        opk.to_bytes().to_vec(),
        Address::from(alice.public()).to_string().into_bytes(),
    ]
}

fn decode_everything(data: &[u8]) {
    if let Err(v) = hush_crypto::harness::check_decoders(data) {
        panic!("{}: {}", v.0, hex(data));
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode_everything(&data);
    }

    #[test]
    fn mutated_valid_encodings(
        which in any::<usize>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<Option<usize>>(),
    ) {
        let samples = samples();
        let mut data = samples[which % samples.len()].clone();
        for (at, value) in flips {
            if !data.is_empty() {
                let len = data.len();
                data[at % len] ^= value;
            }
        }
        if let Some(cut) = cut {
            data.truncate(cut % (data.len() + 1));
        }
        decode_everything(&data);
    }
}

#[test]
fn unmodified_samples_decode() {
    for sample in samples() {
        decode_everything(sample);
    }
}
