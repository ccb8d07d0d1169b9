//! X3DH key agreement (`spec/x3dh.md`), after Signal's X3DH specification.
//!
//! ```text
//! DH1 = X25519(IK_A, SPK_B)      DH2 = X25519(EK_A, IK_B)
//! DH3 = X25519(EK_A, SPK_B)      DH4 = X25519(EK_A, OPK_B)   (if the bundle has one)
//! SK  = HKDF-SHA256(salt = 0^32, ikm = 0xFF^32 || DH1 || DH2 || DH3 [|| DH4],
//!                   info = "hush-x3dh-v1", L = 32)
//! AD  = Ed25519(IK_A) || Ed25519(IK_B)
//! ```
//!
//! `IK` in a DH is the identity's X25519 form (`spec/identity.md`); `OPK_B`
//! is the one-time prekey or, when the relay had none left, the
//! last-resort prekey. Any all-zero DH output aborts the handshake.

use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::error::X3dhError;
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::prekey::{PreKeyRef, PreKeySecrets, SignedPreKeyPair, VerifiedBundle};
use crate::primitives::{dh, hkdf, x25519_public};
use crate::secret::RootKey;

/// HKDF info string for the shared secret.
pub const INFO: &[u8] = b"hush-x3dh-v1";

/// The result of X3DH on either side.
pub(crate) struct Agreement {
    pub(crate) root: RootKey,
    /// `Ed25519(IK_initiator) || Ed25519(IK_responder)`.
    pub(crate) ad: [u8; 64],
}

/// The X3DH values that identify a handshake: the initiator repeats them
/// in every prekey message, the responder matches them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Handshake {
    pub(crate) signed_prekey_id: u32,
    pub(crate) extra: Option<PreKeyRef>,
    pub(crate) base_key: [u8; 32],
}

fn associated_data(initiator: &IdentityKey, responder: &IdentityKey) -> [u8; 64] {
    let mut ad = [0u8; 64];
    ad[..32].copy_from_slice(initiator.as_bytes());
    ad[32..].copy_from_slice(responder.as_bytes());
    ad
}

fn derive(dhs: &[Option<crate::secret::SharedSecret>]) -> Result<RootKey, X3dhError> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * (dhs.len() + 1)));
    ikm.extend_from_slice(&[0xff; 32]);
    for shared in dhs {
        ikm.extend_from_slice(
            shared
                .as_ref()
                .ok_or(X3dhError::WeakKeyAgreement)?
                .as_bytes(),
        );
    }
    let okm = hkdf::<32>(None, &ikm, &[INFO]);
    Ok(RootKey(okm.0))
}

/// Initiator side. Draws 32 bytes (the ephemeral key `EK_A`).
pub(crate) fn initiate(
    rng: &mut impl CryptoRng,
    identity: &IdentityKeyPair,
    bundle: &VerifiedBundle,
) -> Result<(Agreement, Handshake), X3dhError> {
    let bundle = bundle.bundle();
    let mut ek_bytes = [0u8; 32];
    rng.fill_bytes(&mut ek_bytes);
    let ek = StaticSecret::from(ek_bytes);
    ek_bytes.zeroize();
    let spk = &bundle.signed_prekey.public;
    let mut dhs = vec![
        dh(identity.x25519_secret(), spk),
        dh(&ek, bundle.identity.x25519()),
        dh(&ek, spk),
    ];
    if let Some(extra) = &bundle.extra {
        dhs.push(dh(&ek, extra.public()));
    }
    let root = derive(&dhs)?;
    let handshake = Handshake {
        signed_prekey_id: bundle.signed_prekey.id,
        extra: bundle.extra.as_ref().map(|e| e.reference()),
        base_key: x25519_public(&ek),
    };
    let ad = associated_data(identity.public(), &bundle.identity);
    Ok((Agreement { root, ad }, handshake))
}

/// Responder side: finds the named prekeys and recomputes `SK`.
/// Returns the agreement and the signed prekey (its secret seeds the
/// responder's first ratchet key).
pub(crate) fn respond<'a, S: PreKeySecrets>(
    identity: &IdentityKeyPair,
    prekeys: &'a S,
    initiator: &IdentityKey,
    base_key: &[u8; 32],
    signed_prekey_id: u32,
    extra: Option<PreKeyRef>,
) -> Result<(Agreement, &'a SignedPreKeyPair), X3dhError> {
    let spk = prekeys
        .signed_prekey(signed_prekey_id)
        .ok_or(X3dhError::UnknownSignedPreKey(signed_prekey_id))?;
    let mut dhs = vec![
        dh(spk.secret(), initiator.x25519()),
        dh(identity.x25519_secret(), base_key),
        dh(spk.secret(), base_key),
    ];
    match extra {
        None => {}
        Some(PreKeyRef::OneTime(id)) => {
            let opk = prekeys
                .one_time_prekey(id)
                .ok_or(X3dhError::UnknownOneTimePreKey(id))?;
            dhs.push(dh(opk.secret(), base_key));
        }
        Some(PreKeyRef::LastResort(id)) => {
            let lr = prekeys
                .last_resort_prekey(id)
                .ok_or(X3dhError::UnknownLastResortPreKey(id))?;
            dhs.push(dh(lr.secret(), base_key));
        }
    }
    let root = derive(&dhs)?;
    let ad = associated_data(initiator, identity.public());
    Ok((Agreement { root, ad }, spk))
}
