//! Client-side decoders: the decrypted `Content` of every message, and
//! the sealed values of the profile database.

use std::sync::OnceLock;

use hush_client::content::Content;
use hush_client::vault::Vault;
use hush_crypto::harness::Violation;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// `Content` decoding: no panic, and what decodes re-encodes to an
/// equal value.
pub(crate) fn check_content(data: &[u8]) -> Result<(), Violation> {
    if let Ok(content) = Content::try_from(data) {
        let again = Content::try_from(content.to_bytes().as_slice()).ok();
        if again.as_ref() != Some(&content) {
            return Err(Violation("client content does not round-trip".into()));
        }
    }
    Ok(())
}

/// A profile key made once, in a key file in a fresh directory.
fn vault() -> Result<&'static Vault, Violation> {
    static VAULT: OnceLock<Result<Vault, String>> = OnceLock::new();
    VAULT
        .get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("hush-harness-vault-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let path = dir.join("key");
            let _ = std::fs::remove_file(&path);
            let mut rng = ChaCha20Rng::from_seed([0x76; 32]);
            let vault = Vault::create_key_file(&mut rng, &path).map_err(|e| e.to_string());
            let _ = std::fs::remove_dir_all(&dir);
            vault
        })
        .as_ref()
        .map_err(|e| Violation(format!("vault: {e}")))
}

/// Opening arbitrary bytes as a sealed value fails cleanly; sealing the
/// bytes and opening them again gives them back, and only under the
/// purpose they were sealed for.
pub(crate) fn check_sealed_value(data: &[u8]) -> Result<(), Violation> {
    let vault = vault()?;
    if vault.open("session:1", data).is_ok() {
        return Err(Violation("arbitrary bytes opened as a sealed value".into()));
    }
    let mut rng = ChaCha20Rng::from_seed([data.len() as u8; 32]);
    let sealed = vault.seal(&mut rng, "session:1", data);
    match vault.open("session:1", &sealed) {
        Ok(opened) if opened.as_slice() == data => {}
        _ => return Err(Violation("a sealed value does not open to itself".into())),
    }
    if vault.open("session:2", &sealed).is_ok() {
        return Err(Violation(
            "a sealed value opened under another purpose".into(),
        ));
    }
    Ok(())
}
