//! The relay's TLS identity (`spec/relay.md`, "Transport"): a
//! self-signed certificate made at first start and kept in the data
//! directory, or the operator's PEM files. Clients pin the SHA-256 of
//! the certificate (DER), printed by `hush-relay fingerprint`.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Certificate and key could not be made or loaded.
#[derive(Debug, Error)]
pub enum TlsError {
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: not a PEM {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// Certificate generation failed.
    #[error("generating the certificate: {0}")]
    Generate(String),
}

/// The relay's certificate chain and key.
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The fingerprint clients pin: lowercase hex SHA-256 of the leaf DER.
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .map(|leaf| fingerprint(leaf.as_ref()))
            .unwrap_or_default()
    }
}

/// Lowercase hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads the operator's PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|_| TlsError::Pem {
            path: cert.to_path_buf(),
            what: "certificate",
        })?
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::Pem {
        path: key.to_path_buf(),
        what: "private key",
    })?;
    Ok(Identity { chain, key })
}

/// Loads `DIR/tls/cert.pem` and `key.pem`, creating them (key readable
/// by the owner only) if they do not exist.
pub fn load_or_create(data: &Path) -> Result<Identity, TlsError> {
    let dir = data.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return load(&cert, &key);
    }
    // A crash between writing the key and the certificate leaves half an
    // identity that no client has pinned yet: start over.
    for leftover in [&key, &cert] {
        if leftover.exists() {
            std::fs::remove_file(leftover).map_err(io(leftover))?;
        }
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec!["hush-relay".to_string()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    write_file(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert, certificate.pem().as_bytes(), 0o644)?;
    // The new names must survive a crash too: clients may pin this
    // fingerprint as soon as it is printed.
    #[cfg(unix)]
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    load(&cert, &key)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded_with_the_same_fingerprint() {
        let dir = std::env::temp_dir().join(format!("hush-tls-{}", std::process::id()));
        let first = load_or_create(&dir).expect("creates");
        let second = load_or_create(&dir).expect("loads");
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.fingerprint().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("tls/key.pem"))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by others");
        }
        // Half an identity (crash after the key) is replaced.
        std::fs::remove_file(dir.join("tls/cert.pem")).expect("removes");
        let third = load_or_create(&dir).expect("recreates");
        assert_ne!(third.fingerprint(), first.fingerprint());
        std::fs::write(dir.join("tls/cert.pem"), "not pem").expect("writes");
        assert!(matches!(load_or_create(&dir), Err(TlsError::Pem { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }
}
