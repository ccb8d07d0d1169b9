//! Encryption at rest (`spec/client.md`, "Profile"): every private key,
//! session state and message text in the profile database is sealed
//! under one 32-byte profile key.
//!
//! The profile key is either random, kept in the file `key` beside the
//! database (created owner-only, `0600`, and refused if anyone else may
//! read it), or derived from a passphrase with Argon2id (64 MiB, 3
//! passes, 1 lane) and a random 16-byte salt kept in the database.
//!
//! A sealed value is `0x01 || nonce (24) || XChaCha20-Poly1305(key, nonce,
//! aad = purpose, plaintext)`: the purpose (`"identity"`, `"session:7"`,
//! ...) binds a value to its place, so values cannot be swapped between
//! rows unnoticed.

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The version byte of a sealed value.
const VERSION: u8 = 1;

/// Argon2id cost: memory in KiB, passes, lanes.
pub const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes.
pub const ARGON2_PASSES: u32 = 3;
/// Argon2id lanes.
pub const ARGON2_LANES: u32 = 1;

/// Why the vault could not be opened or a value unsealed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VaultError {
    /// The key file is missing, unreadable or not 32 bytes.
    #[error("profile key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file may be read by users other than its owner.
    #[error("profile key file {0} is readable by other users; run: chmod 600 {0}")]
    KeyFileExposed(String),
    /// The passphrase (or key file) does not open this profile.
    #[error("wrong passphrase or key for this profile")]
    WrongKey,
    /// A sealed value is damaged or was moved from another place.
    #[error("a stored secret is damaged ({0})")]
    Damaged(String),
    /// Argon2 rejected its parameters (cannot happen with the constants).
    #[error("key derivation failed: {0}")]
    Derivation(String),
}

/// The profile key. Never `Copy`; zeroized on drop; `Debug` prints `..`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Vault {
    key: [u8; 32],
}

impl core::fmt::Debug for Vault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Vault(..)")
    }
}

impl Vault {
    /// A new random profile key, written to `path` (which must not
    /// exist) readable by its owner only.
    pub fn create_key_file(rng: &mut impl CryptoRng, path: &Path) -> Result<Self, VaultError> {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let vault = Self { key };
        let err = |e: std::io::Error| VaultError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(err)?;
        file.write_all(&vault.key).map_err(err)?;
        file.sync_all().map_err(err)?;
        key.zeroize();
        Ok(vault)
    }

    /// The profile key in `path`.
    pub fn from_key_file(path: &Path) -> Result<Self, VaultError> {
        let shown = path.display().to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| VaultError::KeyFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(VaultError::KeyFileExposed(shown));
            }
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| VaultError::KeyFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?);
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::KeyFile {
                path: shown,
                reason: format!("{} bytes, expected 32", bytes.len()),
            })?;
        Ok(Self { key })
    }

    /// The profile key derived from `passphrase` and `salt` (Argon2id).
    pub fn from_passphrase(passphrase: &str, salt: &[u8; 16]) -> Result<Self, VaultError> {
        let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, Some(32))
            .map_err(|e| VaultError::Derivation(e.to_string()))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(passphrase.as_bytes(), salt, &mut key)
            .map_err(|e| VaultError::Derivation(e.to_string()))?;
        Ok(Self { key })
    }

    /// Seals `plaintext` for the place `purpose`. Draws 24 bytes.
    pub fn seal(&self, rng: &mut impl CryptoRng, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(&Key::from(self.key));
        // Encryption fails only for inputs far beyond anything stored here.
        let ciphertext = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + 24 + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens a value sealed for `purpose`. The result is secret.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let (&version, rest) = sealed
            .split_first()
            .ok_or_else(|| VaultError::Damaged(format!("{purpose}: empty")))?;
        if version != VERSION || rest.len() < 24 + 16 {
            return Err(VaultError::Damaged(format!("{purpose}: unknown format")));
        }
        let (nonce, ciphertext) = rest.split_at(24);
        let nonce: [u8; 24] = nonce
            .try_into()
            .map_err(|_| VaultError::Damaged(format!("{purpose}: short")))?;
        let cipher = XChaCha20Poly1305::new(&Key::from(self.key));
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Damaged(format!("{purpose}: does not authenticate")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hush-vault-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn sealed_values_open_only_in_their_place_and_with_their_key() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let dir = temp("seal");
        let vault = Vault::create_key_file(&mut rng, &dir.join("key")).expect("creates");
        let sealed = vault.seal(&mut rng, "session:1", b"secret state");
        assert_eq!(
            vault.open("session:1", &sealed).expect("opens").as_slice(),
            b"secret state"
        );
        assert!(matches!(
            vault.open("session:2", &sealed),
            Err(VaultError::Damaged(_))
        ));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(vault.open("session:1", &flipped).is_err());
        assert!(vault.open("session:1", &[]).is_err());
        assert!(vault.open("session:1", &sealed[..10]).is_err());
        let reread = Vault::from_key_file(&dir.join("key")).expect("reads");
        assert!(reread.open("session:1", &sealed).is_ok());
        let other = Vault::from_passphrase("not it", &[0; 16]).expect("derives");
        assert!(other.open("session:1", &sealed).is_err());
        // A second key file is never written over the first.
        assert!(Vault::create_key_file(&mut rng, &dir.join("key")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_owner_only_and_an_exposed_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let dir = temp("perm");
        let path = dir.join("key");
        Vault::create_key_file(&mut rng, &path).expect("creates");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            Vault::from_key_file(&path),
            Err(VaultError::KeyFileExposed(_))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, b"short").expect("writes");
        assert!(matches!(
            Vault::from_key_file(&path),
            Err(VaultError::KeyFile { .. })
        ));
    }

    #[test]
    fn passphrases_derive_stable_distinct_keys() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let a = Vault::from_passphrase("correct horse", &[7; 16]).expect("derives");
        let sealed = a.seal(&mut rng, "identity", b"x");
        let again = Vault::from_passphrase("correct horse", &[7; 16]).expect("derives");
        assert!(again.open("identity", &sealed).is_ok());
        let salted = Vault::from_passphrase("correct horse", &[8; 16]).expect("derives");
        assert!(salted.open("identity", &sealed).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let vault = Vault::from_passphrase("p", &[0; 16]).expect("derives");
        assert_eq!(format!("{vault:?}"), "Vault(..)");
    }
}
