//! The primitive operations every mechanism is built from: HKDF-SHA256,
//! HMAC-SHA256, ChaCha20-Poly1305 and X25519 with the all-zero check.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::secret::{Okm, SharedSecret};

/// HKDF-SHA256 (RFC 5869) with output length `N`.
///
/// `salt = None` means HashLen zero bytes, as in the RFC.
pub(crate) fn hkdf<const N: usize>(salt: Option<&[u8]>, ikm: &[u8], info: &[&[u8]]) -> Okm<N> {
    const { assert!(N <= 255 * 32) };
    let hk = hkdf::Hkdf::<Sha256>::new(salt, ikm);
    let mut okm = Okm([0u8; N]);
    // Cannot fail: N is checked above against HKDF's 255 * HashLen limit.
    let _ = hk.expand_multi_info(info, &mut okm.0);
    okm
}

/// HMAC-SHA256 of `data` under a 32-byte key.
pub(crate) fn hmac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    mac.update(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

#[cold]
fn unreachable_hmac() -> ! {
    // HMAC accepts every key length; this arm exists only to avoid unwrap.
    #[allow(clippy::panic)]
    {
        panic!("HMAC rejected a 32-byte key")
    }
}

/// ChaCha20-Poly1305 encryption; returns ciphertext || tag.
pub(crate) fn seal(key: &[u8; 32], nonce: &[u8; 12], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    // Encryption fails only past 2^38 bytes; every input here is bounded
    // far below that, so an error cannot occur. Return empty rather than
    // panic; the receiver then reports an authentication failure.
    cipher
        .encrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .unwrap_or_default()
}

/// ChaCha20-Poly1305 decryption of ciphertext || tag.
pub(crate) fn open(
    key: &[u8; 32],
    nonce: &[u8; 12],
    ad: &[u8],
    ciphertext: &[u8],
) -> Option<Vec<u8>> {
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    cipher
        .decrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .ok()
}

/// X25519, rejecting an all-zero output (a low-order public key).
pub(crate) fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Option<SharedSecret> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    if shared.was_contributory() {
        Some(SharedSecret(shared.to_bytes()))
    } else {
        None
    }
}

/// The X25519 public key for a secret.
pub(crate) fn x25519_public(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}

/// Constant-time equality of two byte strings of equal length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Copies a slice into a fixed array, or reports the field's bad length.
pub(crate) fn fixed<const N: usize>(
    field: &'static str,
    bytes: &[u8],
) -> Result<[u8; N], crate::DecodeError> {
    bytes.try_into().map_err(|_| crate::DecodeError::BadLength {
        field,
        expected: N,
        found: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5869 test case 1.
    #[test]
    fn hkdf_rfc5869_case1() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let okm = hkdf::<42>(Some(&salt), &ikm, &[&info]);
        assert_eq!(
            hex::encode(okm.0),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    /// Known answers computed independently (Python's `hmac`, SHA-256),
    /// including the one-byte chain constant shape KDF_CK uses.
    #[test]
    fn hmac_known_answers() {
        assert_eq!(
            hex::encode(hmac(&[0x0b; 32], b"Hi There")),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        assert_eq!(
            hex::encode(hmac(&key, &[0x01])),
            "9b4c8120a4823a95f47cde17a244f4507244ee6e3957d1fab9fa29b44d3829b7"
        );
    }

    #[test]
    fn dh_rejects_low_order_points() {
        let secret = StaticSecret::from([9u8; 32]);
        assert!(dh(&secret, &[0u8; 32]).is_none());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(dh(&secret, &one).is_none());
    }

    #[test]
    fn aead_round_trip_and_tamper() {
        let key = [1u8; 32];
        let nonce = [2u8; 12];
        let ct = seal(&key, &nonce, b"ad", b"hello");
        assert_eq!(
            open(&key, &nonce, b"ad", &ct).as_deref(),
            Some(&b"hello"[..])
        );
        assert!(open(&key, &nonce, b"ax", &ct).is_none());
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(open(&key, &nonce, b"ad", &bad).is_none());
        assert!(open(&key, &nonce, b"ad", &ct[..10]).is_none());
    }
}
