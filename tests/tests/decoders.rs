// Test code: a failed setup step should abort the test.
#![allow(clippy::expect_used, clippy::panic)]

//! Every decoder on random bytes and on mutated valid encodings: an
//! error, never a panic; and whatever decodes re-encodes to an equal
//! value. (The fuzz targets in fuzz/ do the same, coverage-guided.)

use proptest::prelude::*;

/// Valid encodings of every decodable thing, to mutate: the seed inputs
/// of the decoder fuzz targets (`fuzz/corpus/`, written by
/// `cargo run -p hush-harness --example seeds`), read once.
fn samples() -> &'static [Vec<u8>] {
    static SAMPLES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(|| {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut samples = Vec::new();
        for target in [
            "address",
            "bundle",
            "prekey_message",
            "ratchet_message",
            "sender_key_message",
            "sealed_envelope",
            "crypto_state",
            "device_list",
        ] {
            let dir = corpus.join(target);
            for entry in std::fs::read_dir(&dir).expect("the seed corpus is checked in") {
                let path = entry.expect("directory entry").path();
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
                {
                    samples.push(std::fs::read(&path).expect("readable seed"));
                }
            }
        }
        assert!(
            samples.len() >= 12,
            "seed corpus incomplete: {} samples",
            samples.len()
        );
        samples
    })
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
