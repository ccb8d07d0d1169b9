//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`)
//! and generates prost types into `OUT_DIR`.

use std::path::PathBuf;

/// Every message with a field holding secret bytes (a seed, a private
/// key, a root, chain or message key, a sender-key distribution).
const SECRET_MESSAGES: &[&str] = &[
    ".hush.state.v1.IdentityRecord",
    ".hush.state.v1.SignedPreKeyRecord",
    ".hush.state.v1.OneTimePreKeyRecord",
    ".hush.state.v1.ChainState",
    ".hush.state.v1.SkippedKey",
    ".hush.state.v1.SessionRecord",
    ".hush.state.v1.SenderKeyState",
    ".hush.state.v1.SkippedSenderKey",
    ".hush.wire.v1.SenderKeyDistribution",
    ".hush.client.v1.SenderKey",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&root)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    files.sort();
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile(&files, [&root])?;
    prost_build::Config::new()
        .include_file("protos.rs")
        // Messages with a secret field get a hand-written, redacted
        // `Debug` (`src/lib.rs`) instead of the derived one.
        .skip_debug(SECRET_MESSAGES)
        .compile_fds(descriptors)?;
    Ok(())
}
