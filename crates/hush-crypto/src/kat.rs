//! Known-answer helpers: the individual KDF and key-agreement steps,
//! exposed so `spec/vectors/` can publish every intermediate value and a
//! second implementation can check itself step by step. Applications
//! never need these. Every function here hands out secret bytes.

use x25519_dalek::StaticSecret;

use crate::chain::Chain;
use crate::primitives::{dh, hkdf, x25519_public as public_of};
use crate::secret::{MessageKey, RootKey, SharedSecret};

/// X25519; `None` for an all-zero output. Returns secret bytes.
pub fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Option<[u8; 32]> {
    dh(&StaticSecret::from(*secret), public).map(|s| *s.as_bytes())
}

/// The X25519 public key of a secret.
pub fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    public_of(&StaticSecret::from(*secret))
}

/// X3DH: `SK` from the DH outputs in order DH1..DH4 (`spec/x3dh.md`).
/// Returns secret bytes.
pub fn x3dh_secret(dhs: &[[u8; 32]]) -> [u8; 32] {
    let mut ikm = vec![0xffu8; 32];
    for d in dhs {
        ikm.extend_from_slice(d);
    }
    hkdf::<32>(None, &ikm, &[crate::x3dh::INFO]).0
}

/// `KDF_RK` (`spec/ratchet.md`): returns `(RK', CK)`, secret bytes.
pub fn kdf_rk(root_key: &[u8; 32], dh_output: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let (rk, ck) = crate::ratchet::kdf_rk(&RootKey(*root_key), &SharedSecret(*dh_output));
    (*rk.as_bytes(), *ck.as_bytes())
}

/// `KDF_CK` (`spec/ratchet.md`): returns `(MK, CK')`, secret bytes.
pub fn kdf_ck(chain_key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    match Chain::new(*chain_key).step() {
        Ok((mk, next)) => (*mk.as_bytes(), *next.key.as_bytes()),
        // Index 0 cannot overflow.
        Err(_) => ([0; 32], [0; 32]),
    }
}

/// The AEAD key and nonce expanded from a message key with `info`
/// (`"hush-ratchet-v1 message"` or `"hush-sender-key-v1 message"`).
pub fn message_key_expansion(info: &[u8], message_key: &[u8; 32]) -> ([u8; 32], [u8; 12]) {
    let okm = hkdf::<44>(None, &MessageKey(*message_key).0, &[info]);
    let mut key = [0u8; 32];
    let mut nonce = [0u8; 12];
    key.copy_from_slice(&okm.0[..32]);
    nonce.copy_from_slice(&okm.0[32..]);
    (key, nonce)
}

/// Sealed envelope: `(e, K, E)` from the message secret `M`
/// (`spec/envelope.md`).
pub fn seal_message_secret(m: &[u8; 32]) -> ([u8; 32], [u8; 32], [u8; 32]) {
    let okm = hkdf::<64>(None, m, &[b"hush-seal-v1 message"]);
    let mut e = [0u8; 32];
    let mut k = [0u8; 32];
    e.copy_from_slice(&okm.0[..32]);
    k.copy_from_slice(&okm.0[32..]);
    (e, k, x25519_public(&e))
}

/// The padded length for `len` bytes of encoded `SealedContent`, or
/// `None` if it does not fit.
pub fn padded_len(len: usize) -> Option<usize> {
    crate::envelope::BUCKETS.iter().copied().find(|&b| b > len)
}

/// An identity's X25519 secret: `SHA-512(seed)[0..32]` (before clamping).
/// Returns secret bytes.
pub fn identity_x25519_secret(seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(seed).to_scalar_bytes()
}

/// Sealed envelope slot mask for one recipient: `HKDF(salt = E || R_x,
/// ikm = X25519(e, R_x), "hush-seal-v1 slot", 32)`. Returns secret bytes.
pub fn seal_slot_mask(shared: &[u8; 32], ephemeral: &[u8; 32], recipient_x: &[u8; 32]) -> [u8; 32] {
    *crate::envelope::mask(&SharedSecret(*shared), ephemeral, recipient_x)
}
