//! Every public hush-crypto type that holds secret bytes wipes them when
//! it is dropped, is never `Copy`, and shows none of them in its `Debug`;
//! every serialization of secret state is handed out in a `Zeroizing`
//! buffer (`audit/THREAT_MODEL.md`, "Secrets in memory").
//!
//! The internal newtypes (root, chain and message keys, DH outputs, HKDF
//! output) are checked by `src/secret.rs`'s unit tests. For the composite
//! types below, `ZeroizeOnDrop` is implemented next to a compile-time check
//! that each of their secret fields wipes itself (`src/secret.rs`,
//! `wipes_on_drop`), so the bound asserted here cannot hold by accident.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_crypto::envelope::{Agreements, ContentType, seal_with};
use hush_crypto::kat;
use hush_crypto::prekey::{OneTimePreKeyPair, PreKeyBundle, PreKeySecrets, SignedPreKeyPair};
use hush_crypto::{IdentityKeyPair, SenderKeyDistribution, SenderKeyRecord, Session};
use hush_proto::{Message, state, wire};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// Compiles only for types that wipe themselves on drop.
fn wipes_on_drop<T: ZeroizeOnDrop>() {}

/// `<T as AmbiguousIfCopy<_>>::some_item` is ambiguous, hence a compile
/// error, exactly when `T: Copy` (the `static_assertions` technique).
trait AmbiguousIfCopy<A> {
    fn some_item() {}
}
impl<T: ?Sized> AmbiguousIfCopy<()> for T {}
impl<T: Copy> AmbiguousIfCopy<u8> for T {}

macro_rules! assert_not_copy {
    ($($t:ty),* $(,)?) => {
        $(const _: fn() = || {
            let _ = <$t as AmbiguousIfCopy<_>>::some_item;
        };)*
    };
}

assert_not_copy!(
    IdentityKeyPair,
    SignedPreKeyPair,
    OneTimePreKeyPair,
    Session,
    SenderKeyRecord,
    SenderKeyDistribution,
    Agreements,
);

#[test]
fn every_secret_type_wipes_itself_on_drop() {
    wipes_on_drop::<IdentityKeyPair>();
    wipes_on_drop::<SignedPreKeyPair>();
    wipes_on_drop::<OneTimePreKeyPair>();
    wipes_on_drop::<Session>();
    wipes_on_drop::<SenderKeyRecord>();
    wipes_on_drop::<SenderKeyDistribution>();
    wipes_on_drop::<Agreements>();
    wipes_on_drop::<hush_crypto::LinkCode>();
    // What the secret types are built from (their fields' types).
    wipes_on_drop::<ed25519_dalek::SigningKey>();
    wipes_on_drop::<x25519_dalek::StaticSecret>();
    wipes_on_drop::<Zeroizing<Vec<u8>>>();
    // The AEADs every message key, body key and the profile key pass
    // through (the `zeroize` feature of chacha20poly1305; finding X1).
    wipes_on_drop::<chacha20poly1305::ChaCha20Poly1305>();
    wipes_on_drop::<chacha20poly1305::XChaCha20Poly1305>();
}

/// Every way `secret` could be printed: lower- and upper-case hex, the
/// `[1, 2, 3]` form of a byte array's `Debug`, and the raw bytes, for the
/// whole secret and for each 6-byte window of it.
fn assert_hidden(shown: &str, secret: &[u8], what: &str) {
    assert!(secret.len() >= 6, "{what}: too short to check");
    for window in secret.windows(6) {
        let lower = hex::encode(window);
        let upper = lower.to_uppercase();
        let decimal = window
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        for form in [&lower, &upper, &decimal] {
            assert!(
                !shown.contains(form.as_str()),
                "{what} shows in {shown:?} as {form}"
            );
        }
        assert!(
            !shown.as_bytes().windows(6).any(|w| w == window),
            "{what} shows in {shown:?} as raw bytes"
        );
    }
}

struct Prekeys {
    signed: SignedPreKeyPair,
    one_time: OneTimePreKeyPair,
}

impl PreKeySecrets for Prekeys {
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        (self.signed.id() == id).then_some(&self.signed)
    }
    fn last_resort_prekey(&self, _: u32) -> Option<&SignedPreKeyPair> {
        None
    }
    fn one_time_prekey(&self, id: u32) -> Option<&OneTimePreKeyPair> {
        (self.one_time.id() == id).then_some(&self.one_time)
    }
}

#[test]
fn debug_shows_no_secret_byte() {
    let mut rng = ChaCha20Rng::from_seed([42; 32]);

    // Identity: the Ed25519 seed and the X25519 scalar derived from it.
    let seed: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    let alice = IdentityKeyPair::from_seed(&seed);
    let shown = format!("{alice:?}");
    assert_hidden(&shown, &seed, "identity seed");
    assert_hidden(
        &shown,
        &kat::identity_x25519_secret(&seed),
        "identity X25519 secret",
    );
    let record = state::IdentityRecord::decode(alice.to_bytes().as_slice()).unwrap();
    assert_eq!(record.seed, seed, "the record is what was checked");

    // A link code: neither its bytes nor its text.
    let code = hush_crypto::LinkCode::generate(&mut ChaCha20Rng::from_seed([43; 32]));
    let text = code.to_text();
    let shown = format!("{code:?}");
    assert!(!shown.contains(text.as_str()), "link code text in {shown}");
    let mut drawn = [0u8; 10];
    rand_core::Rng::fill_bytes(&mut ChaCha20Rng::from_seed([43; 32]), &mut drawn);
    assert_hidden(&shown, &drawn, "link code bytes");

    // Prekeys.
    let bob = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKeyPair::generate(&mut rng, &bob, 7);
    let last_resort = SignedPreKeyPair::generate_last_resort(&mut rng, &bob, 8);
    let one_time = OneTimePreKeyPair::generate(&mut rng, 9);
    for pair in [&signed, &last_resort] {
        let secret = state::SignedPreKeyRecord::decode(pair.to_bytes().as_slice())
            .unwrap()
            .secret;
        assert_hidden(&format!("{pair:?}"), &secret, "signed prekey secret");
    }
    let secret = state::OneTimePreKeyRecord::decode(one_time.to_bytes().as_slice())
        .unwrap()
        .secret;
    assert_hidden(&format!("{one_time:?}"), &secret, "one-time prekey secret");

    // Sessions, mid-conversation: root, ratchet secret, sending and
    // receiving chains, a skipped key.
    let bundle = PreKeyBundle {
        identity: bob.public().clone(),
        signed_prekey: signed.public(),
        extra: Some(hush_crypto::prekey::ExtraPreKey::OneTime(one_time.public())),
    }
    .verify()
    .unwrap();
    let mut a = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let first = a.encrypt(&mut rng, b"hello").unwrap();
    let hush_crypto::SessionMessage::PreKey(first) = first else {
        panic!("a first message is a prekey message")
    };
    let prekeys = Prekeys { signed, one_time };
    let (mut b, _) = Session::respond(&bob, &prekeys, &first).unwrap();
    let reply = b.encrypt(&mut rng, b"hi").unwrap();
    a.decrypt(&reply).unwrap();
    let _skipped = a.encrypt(&mut rng, b"lost").unwrap();
    let later = a.encrypt(&mut rng, b"arrives").unwrap();
    b.decrypt(&later).unwrap();
    for (who, session) in [("initiator", &a), ("responder", &b)] {
        let shown = format!("{session:?}");
        let record = state::SessionRecord::decode(session.to_bytes().as_slice()).unwrap();
        assert_hidden(&shown, &record.root_key, "root key");
        assert_hidden(&shown, &record.ratchet_secret, "ratchet secret");
        if let Some(chain) = &record.sending {
            assert_hidden(&shown, &chain.chain_key, "sending chain key");
        }
        for chain in &record.receiving {
            let key = &chain.chain.as_ref().unwrap().chain_key;
            assert_hidden(&shown, key, "receiving chain key");
        }
        for skipped in &record.skipped {
            assert_hidden(&shown, &skipped.message_key, "skipped message key");
        }
        if who == "responder" {
            assert_eq!(record.skipped.len(), 1, "the check saw a skipped key");
        }
    }

    // Sender keys: our record, a received one with a skipped key, and the
    // distribution.
    let group = [3u8; 16];
    let mut own = SenderKeyRecord::generate(&mut rng, group);
    let distribution = own.distribution().unwrap();
    let chain_key = wire::SenderKeyDistribution::decode(distribution.to_bytes().as_slice())
        .unwrap()
        .chain_key;
    assert_hidden(
        &format!("{distribution:?}"),
        &chain_key,
        "distribution chain key",
    );
    let mut theirs = SenderKeyRecord::new(group);
    theirs.process(&distribution).unwrap();
    let _skipped = own.encrypt(b"lost").unwrap();
    theirs.decrypt(&own.encrypt(b"arrives").unwrap()).unwrap();
    for record in [&own, &theirs] {
        let shown = format!("{record:?}");
        let decoded = state::SenderKeyRecord::decode(record.to_bytes().as_slice()).unwrap();
        for s in &decoded.states {
            assert_hidden(&shown, &s.chain.as_ref().unwrap().chain_key, "chain key");
            if !s.signing_secret.is_empty() {
                assert_hidden(&shown, &s.signing_secret, "signing seed");
            }
            for k in &s.skipped {
                assert_hidden(&shown, &k.message_key, "skipped sender key");
            }
        }
    }

    // The cache of static agreements.
    let mut agreements = Agreements::new();
    seal_with(
        &mut rng,
        &mut agreements,
        &alice,
        1,
        bob.public(),
        ContentType::Ratchet,
        b"x",
    )
    .unwrap();
    let shared = kat::x25519(&kat::identity_x25519_secret(&seed), bob.public().x25519()).unwrap();
    assert_hidden(&format!("{agreements:?}"), &shared, "static agreement");
}

#[test]
fn secret_state_is_handed_out_in_zeroizing_buffers() {
    let mut rng = ChaCha20Rng::from_seed([43; 32]);
    let identity = IdentityKeyPair::generate(&mut rng);
    let record = SenderKeyRecord::generate(&mut rng, [1; 16]);
    // Each binding has its type written out: a serializer that stopped
    // returning `Zeroizing` would not compile.
    let _: Zeroizing<Vec<u8>> = identity.to_bytes();
    let _: Zeroizing<Vec<u8>> = SignedPreKeyPair::generate(&mut rng, &identity, 1).to_bytes();
    let _: Zeroizing<Vec<u8>> = OneTimePreKeyPair::generate(&mut rng, 2).to_bytes();
    let _: Zeroizing<Vec<u8>> = record.to_bytes();
    let _: Zeroizing<Vec<u8>> = record.distribution().unwrap().to_bytes();
    let bob = IdentityKeyPair::generate(&mut rng);
    let bundle = PreKeyBundle {
        identity: bob.public().clone(),
        signed_prekey: SignedPreKeyPair::generate(&mut rng, &bob, 1).public(),
        extra: None,
    }
    .verify()
    .unwrap();
    let session = Session::initiate(&mut rng, &identity, &bundle).unwrap();
    let _: Zeroizing<Vec<u8>> = session.to_bytes();
}
