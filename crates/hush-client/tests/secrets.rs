//! Every hush-client type that holds a secret (the profile key, a
//! passphrase, sender-key bytes, the profile and client around them)
//! wipes it when dropped and shows none of it in its `Debug`; every
//! accessor that hands out secret bytes hands them out in a `Zeroizing`
//! buffer (`audit/THREAT_MODEL.md`, "Secrets in memory"). The protocol
//! types they hold are checked in `hush-crypto/tests/secrets.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_client::content::SenderKeyBytes;
use hush_client::profile::{Profile, Unlock};
use hush_client::vault::Vault;
use hush_client::{Client, Options};
use hush_crypto::{IdentityKeyPair, SenderKeyRecord, Session};
use hush_proto::Message;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::{ZeroizeOnDrop, Zeroizing};

fn wipes_on_drop<T: ZeroizeOnDrop>() {}

/// See `hush-crypto/tests/secrets.rs`: ambiguous, hence a compile error,
/// exactly for `Copy` types.
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
assert_not_copy!(Vault, Unlock, SenderKeyBytes, Profile, Client);

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hush-secrets-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// As in `hush-crypto/tests/secrets.rs`: `secret` in hex (either case),
/// as a decimal byte list or as raw bytes, whole or any 6-byte window.
fn assert_hidden(shown: &str, secret: &[u8], what: &str) {
    assert!(secret.len() >= 6, "{what}: too short to check");
    for window in secret.windows(6) {
        let lower = hex::encode(window);
        let decimal = window
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        for form in [lower.clone(), lower.to_uppercase(), decimal] {
            assert!(
                !shown.contains(&form),
                "{what} shows in {shown:?} as {form}"
            );
        }
        assert!(
            !shown.as_bytes().windows(6).any(|w| w == window),
            "{what} shows in {shown:?} as raw bytes"
        );
    }
}

#[test]
fn every_secret_holder_wipes_itself_on_drop() {
    wipes_on_drop::<Vault>();
    wipes_on_drop::<Unlock>();
    wipes_on_drop::<Profile>();
    wipes_on_drop::<Zeroizing<Vec<u8>>>();
    wipes_on_drop::<Zeroizing<String>>();
    // What a client holds its keys and sessions in.
    wipes_on_drop::<IdentityKeyPair>();
    wipes_on_drop::<Session>();
    wipes_on_drop::<SenderKeyRecord>();
    wipes_on_drop::<hush_crypto::Agreements>();
}

#[tokio::test]
async fn debug_shows_no_key_passphrase_or_sender_key() {
    let mut rng = ChaCha20Rng::from_seed([11; 32]);

    // The profile key, from its key file.
    let dir = temp("vault");
    let vault = Vault::create_key_file(&mut rng, &dir.join("key")).unwrap();
    let key = std::fs::read(dir.join("key")).unwrap();
    assert_eq!(key.len(), 32);
    assert_hidden(&format!("{vault:?}"), &key, "profile key");

    // A passphrase.
    let passphrase = "correct horse battery staple";
    let unlock = Unlock::Passphrase(Zeroizing::new(passphrase.to_string()));
    let shown = format!("{unlock:?}");
    assert!(!shown.contains(passphrase), "{shown}");
    assert!(!shown.contains("horse"), "{shown}");
    assert_hidden(&shown, passphrase.as_bytes(), "passphrase");

    // Sender-key bytes as they travel in content.
    let record = SenderKeyRecord::generate(&mut rng, [4; 16]);
    let bytes = record.distribution().unwrap().to_bytes();
    let shown = format!("{:?}", SenderKeyBytes(bytes.clone()));
    assert_hidden(&shown, &bytes, "sender key");

    // A profile and a client on it: no identity seed, no profile key.
    let home = temp("profile");
    let identity = IdentityKeyPair::generate(&mut rng);
    let seed = hush_proto::state::IdentityRecord::decode(identity.to_bytes().as_slice())
        .unwrap()
        .seed;
    let profile = Profile::create(
        &mut rng,
        &home,
        &Unlock::KeyFile,
        &identity,
        "127.0.0.1:1",
        &[0; 32],
    )
    .await
    .unwrap();
    let key = std::fs::read(home.join("key")).unwrap();
    let shown = format!("{profile:?}");
    assert_hidden(&shown, &seed, "identity seed");
    assert_hidden(&shown, &key, "profile key");
    profile.close().await;
    let client = Client::open(&home, None, Options::default()).await.unwrap();
    let shown = format!("{client:?}");
    assert_hidden(&shown, &seed, "identity seed");
    assert_hidden(&shown, &key, "profile key");
    client.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test]
async fn secret_bytes_are_handed_out_in_zeroizing_buffers() {
    let mut rng = ChaCha20Rng::from_seed([12; 32]);
    let home = temp("accessors");
    let identity = IdentityKeyPair::generate(&mut rng);
    let profile = Profile::create(
        &mut rng,
        &home,
        &Unlock::Passphrase(Zeroizing::new("p".into())),
        &identity,
        "127.0.0.1:1",
        &[0; 32],
    )
    .await
    .unwrap();
    let group = [5u8; 16];
    // Each binding has its type written out: an accessor that stopped
    // returning `Zeroizing` would not compile.
    let sealed = profile.vault().seal(&mut rng, "x", b"secret");
    let _: Zeroizing<Vec<u8>> = profile.vault().open("x", &sealed).unwrap();
    let _: Vec<([u8; 32], Zeroizing<Vec<u8>>)> = profile.conversation(1).await.unwrap().0;
    let _: Option<Zeroizing<Vec<u8>>> = profile.own_sender_key(&group).await.unwrap();
    let _: Option<Zeroizing<Vec<u8>>> =
        profile.sender_key(&group, identity.public()).await.unwrap();
    let _: Option<Zeroizing<Vec<u8>>> = profile.given_key(&group, identity.public()).await.unwrap();
    let _: SenderKeyBytes = SenderKeyBytes(Zeroizing::new(Vec::new()));
    profile.close().await;
    let _ = std::fs::remove_dir_all(&home);
}
