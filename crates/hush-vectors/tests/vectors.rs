//! Checks hush-crypto against every file in spec/vectors, and that the
//! generator reproduces those files exactly.

use std::path::PathBuf;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors")
}

#[test]
fn every_vector_passes() {
    let outcomes = hush_vectors::check_all(&vectors_dir()).expect("vector files readable");
    let failures: Vec<_> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    let known: usize = hush_vectors::files()
        .iter()
        .map(|f| f.scenarios.len())
        .sum();
    assert_eq!(outcomes.len(), known);
    assert!(failures.is_empty(), "failing vectors: {failures:#?}");
}

#[test]
fn generator_reproduces_the_published_files() {
    for (file, text) in hush_vectors::generate().expect("generates") {
        let published = std::fs::read_to_string(vectors_dir().join(file)).expect("published file");
        assert!(
            published == text,
            "{file} differs from the generator's output: run `cargo run -p hush-vectors -- generate spec/vectors`"
        );
    }
}

#[test]
fn a_tampered_vector_fails() {
    let dir = std::env::temp_dir().join(format!("hush-vectors-tamper-{}", std::process::id()));
    hush_vectors::write_all(&dir).expect("writes");
    let path = dir.join("ratchet.json");
    let text = std::fs::read_to_string(&path).expect("reads");
    // Flip one hex digit of the first recorded message.
    let at = text.find("\"message\": \"").expect("has a message") + 12;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, bytes).expect("writes");
    let outcomes = hush_vectors::check_all(&dir).expect("checks");
    assert!(outcomes.iter().any(|o| o.failure.is_some()));
    std::fs::remove_dir_all(&dir).ok();
}
