// Test code: a broken checkout should fail loudly.
#![allow(clippy::expect_used, clippy::panic)]

//! Replays every fuzz corpus (`fuzz/corpus/TARGET/`) and every kept
//! crash (`fuzz/regressions/TARGET/`) through its target's check, and
//! keeps `fuzz/` in step with `hush_harness::TARGETS`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_input_passes_its_check() {
    let mut failures = Vec::new();
    for target in hush_harness::TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target.name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{} has no seed inputs",
            target.name
        );
        let regressions = files(&fuzz_dir().join("regressions").join(target.name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("readable input");
            if let Err(v) = (target.check)(&data) {
                failures.push(format!("{}: {}", path.display(), v.0));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fuzz_targets_match_the_harness() {
    let names: BTreeSet<&str> = hush_harness::TARGETS.iter().map(|t| t.name).collect();
    let on_disk: BTreeSet<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    assert_eq!(
        on_disk,
        names.iter().map(|n| n.to_string()).collect(),
        "fuzz/fuzz_targets/ and hush_harness::TARGETS differ"
    );
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in &names {
        let source = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs")))
            .expect("target source");
        assert!(
            source.contains(&format!("hush_harness::check(\"{name}\"")),
            "fuzz_targets/{name}.rs does not run its own check"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
}
