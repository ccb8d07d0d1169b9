//! The checks behind every fuzz target in `fuzz/`: one function per
//! target, shared by the fuzzers and by the corpus replay that runs in
//! `cargo test`.
