//! Authentication, prekey and bundle checks (`spec/relay.md`,
//! "Authentication", "Authenticate", "RegisterPrekeys", "FetchBundle",
//! "PrekeyCount").

use anyhow::{Context, Result, bail, ensure};
use hush_proto::relay as proto;
use hush_proto::wire;
use proto::ErrorCode;
use proto::client_frame::Request;
use wire::pre_key_bundle::Extra;

use super::net::{AUTH_CONTEXT, Conn, authenticate};
use super::queue::go_live;
use super::session::{
    Device, KIND_LAST_RESORT, KIND_SIGNED, Outcome, Outgoing, Registered, Session, Verdict, ack,
    authenticated, bundle, error, fetch_bundle, fetch_page, prekey_count, registered, stock,
    unknown_key,
};

/// Checks `PrekeyCount` on `conn`.
async fn expect_stock(conn: &mut Conn, expected: u32, when: &str) -> Result<()> {
    let got = stock(conn.request(prekey_count()).await?).with_context(|| when.to_string())?;
    ensure!(
        got == expected,
        "expected a stock of {expected} {when}, got {got}"
    );
    Ok(())
}

/// `auth.required`: `RegisterPrekeys`, `PrekeyCount`, `FetchPage` and
/// `Ack` before authentication are answered `UNAUTHENTICATED`, with no
/// effect.
pub(crate) async fn required(s: &mut Session) -> Outcome {
    let device = Device::new()?;
    let mut conn = s.connect().await?;
    let requests = [
        (
            "RegisterPrekeys",
            Request::RegisterPrekeys(device.upload(&[1, 2])?),
        ),
        ("PrekeyCount", prekey_count()),
        ("FetchPage", fetch_page(0, 0)),
        ("Ack", ack(vec![1])),
    ];
    for (what, request) in requests {
        error(conn.request(request).await?, ErrorCode::Unauthenticated).context(what)?;
    }
    error(
        conn.request(fetch_bundle(&device.key)).await?,
        ErrorCode::UnknownDevice,
    )
    .context("fetching the bundle of the device whose upload was refused")?;
    Ok(Verdict::Pass)
}

/// `auth.fresh_device`: a device that never registered authenticates;
/// `queued` is 0.
pub(crate) async fn fresh_device(s: &mut Session) -> Outcome {
    let (_, queued) = s.login(&Device::new()?).await?;
    ensure!(
        queued == 0,
        "expected queued 0 for a new device, got {queued}"
    );
    Ok(Verdict::Pass)
}

/// Sends each `(what, device_key, signature)` as an `Authenticate` and
/// expects `code`; then the connection must still be unauthenticated.
async fn refused(
    conn: &mut Conn,
    cases: Vec<(&'static str, Vec<u8>, Vec<u8>)>,
    code: ErrorCode,
) -> Result<()> {
    for (what, key, signature) in cases {
        error(conn.request(authenticate(&key, &signature)).await?, code).context(what)?;
    }
    error(
        conn.request(prekey_count()).await?,
        ErrorCode::Unauthenticated,
    )
    .context("after the refused authentications")?;
    Ok(())
}

/// `auth.field_rules`: a `device_key` other than 32 bytes or a
/// `signature` other than 64 bytes is `MALFORMED`.
pub(crate) async fn field_rules(s: &mut Session) -> Outcome {
    let device = Device::new()?;
    let mut conn = s.connect().await?;
    let proof = conn.proof(&device.identity);
    let key = device.key.clone();
    let cases = vec![
        ("a 31-byte device_key", key[..31].to_vec(), proof.clone()),
        (
            "a 33-byte device_key",
            [&key[..], &[0]].concat(),
            proof.clone(),
        ),
        ("an empty device_key", Vec::new(), proof.clone()),
        ("a 63-byte signature", key.clone(), proof[..63].to_vec()),
        ("an empty signature", key, Vec::new()),
    ];
    refused(&mut conn, cases, ErrorCode::Malformed).await?;
    Ok(Verdict::Pass)
}

/// `auth.invalid_key`: a `device_key` that is no valid identity key
/// (`identity.md`, "Public key validation") is `MALFORMED`, before the
/// signature is looked at.
pub(crate) async fn invalid_key(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    let mut neutral = vec![0u8; 32];
    neutral[0] = 1;
    let mut non_canonical = vec![0xffu8; 32];
    non_canonical[0] = 0xed;
    non_canonical[31] = 0x7f;
    let cases = vec![
        (
            "the all-zero key (small order)",
            vec![0u8; 32],
            vec![0u8; 64],
        ),
        ("the neutral point", neutral, vec![0u8; 64]),
        ("a non-canonical encoding", non_canonical, vec![0u8; 64]),
    ];
    refused(&mut conn, cases, ErrorCode::Malformed).await?;
    Ok(Verdict::Pass)
}

/// `auth.bad_signature`: a proof that is not this connection's is
/// `BAD_SIGNATURE`.
pub(crate) async fn bad_signature(s: &mut Session) -> Outcome {
    let device = Device::new()?;
    let other = Device::new()?;
    let mut conn = s.connect().await?;
    let exporter = conn.exporter();
    let sign = |d: &Device, message: &[u8]| d.identity.sign(message).to_vec();
    let cases = vec![
        (
            "a signature over another exporter value",
            device.key.clone(),
            sign(&device, &[AUTH_CONTEXT, &[0u8; 32]].concat()),
        ),
        (
            "a signature over the exporter without \"hush-relay-auth-v1\"",
            device.key.clone(),
            sign(&device, &exporter),
        ),
        (
            "another key's proof",
            device.key.clone(),
            conn.proof(&other.identity),
        ),
    ];
    refused(&mut conn, cases, ErrorCode::BadSignature).await?;
    Ok(Verdict::Pass)
}

/// `auth.replay`: a proof made on one connection does not verify on
/// another; the failed attempt leaves both connections as they were.
pub(crate) async fn replay(s: &mut Session) -> Outcome {
    let device = Device::new()?;
    let mut first = s.connect().await?;
    let mut second = s.connect().await?;
    let proof = first.proof(&device.identity);
    authenticated(first.request(authenticate(&device.key, &proof)).await?)
        .context("the proof on its own connection")?;
    error(
        second.request(authenticate(&device.key, &proof)).await?,
        ErrorCode::BadSignature,
    )
    .context("the same proof on another connection")?;
    error(
        second.request(prekey_count()).await?,
        ErrorCode::Unauthenticated,
    )
    .context("the second connection after the replay")?;
    error(
        first.request(prekey_count()).await?,
        ErrorCode::UnknownDevice,
    )
    .context("the first connection after the replay (authenticated, not taken over)")?;
    Ok(Verdict::Pass)
}

/// `auth.other_device`: on an authenticated connection, authenticating
/// as another device is `MALFORMED`, after the signature check (a bad
/// proof is `BAD_SIGNATURE`). A failed `Authenticate` (those, or a bad
/// proof for the connection's own device) leaves the connection
/// authenticated and live, and takes no connection of the other device
/// over.
pub(crate) async fn other_device(s: &mut Session) -> Outcome {
    let mut first = s.registered(&[1, 2, 3]).await?;
    let mut second = s.registered(&[1]).await?;
    go_live(&mut first.conn).await?;
    let bad = [AUTH_CONTEXT, &[0u8; 32]].concat();
    let cases = [
        (
            "a bad proof for its own device",
            &first.device,
            first.device.identity.sign(&bad).to_vec(),
            ErrorCode::BadSignature,
        ),
        (
            "a bad proof for another device (the signature is checked first)",
            &second.device,
            second.device.identity.sign(&bad).to_vec(),
            ErrorCode::BadSignature,
        ),
        (
            "another device's good proof",
            &second.device,
            first.conn.proof(&second.device.identity),
            ErrorCode::Malformed,
        ),
    ];
    for (what, device, signature, code) in cases {
        error(
            first
                .conn
                .request(authenticate(&device.key, &signature))
                .await?,
            code,
        )
        .context(what)?;
    }
    expect_stock(
        &mut first.conn,
        3,
        "on the first device's connection afterwards",
    )
    .await?;
    expect_stock(&mut second.conn, 1, "on the second device's own connection").await?;
    let mut sender = s.connect().await?;
    let e = Outgoing::random(10, &[&first.device.key])?;
    e.deliver(&mut sender).await?;
    let push = first
        .conn
        .push()
        .await
        .context("the first connection, still live")?;
    e.matches(&push, 0)?;
    Ok(Verdict::Pass)
}

/// `auth.again`: authenticating again as the same device succeeds and
/// leaves the live state: no pushes until the device pages to the end.
pub(crate) async fn again(s: &mut Session) -> Outcome {
    let mut receiver = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    let first = go_live(&mut receiver.conn).await?;
    ensure!(first.is_empty(), "expected an empty queue, got {first:?}");
    let queued = authenticated(
        receiver
            .conn
            .authenticate(&receiver.device.identity)
            .await?,
    )
    .context("authenticating again")?;
    ensure!(queued == 0, "expected queued 0, got {queued}");
    let envelope = Outgoing::random(10, &[&receiver.device.key])?;
    envelope.deliver(&mut sender).await?;
    if let Some(push) = receiver.conn.quiet(s.quiet()).await? {
        bail!(
            "expected no push after authenticating again (not live), got seq {}",
            push.seq
        );
    }
    let paged = go_live(&mut receiver.conn).await?;
    ensure!(
        paged.len() == 1,
        "expected the envelope in a page, got {} envelopes",
        paged.len()
    );
    let next = Outgoing::random(10, &[&receiver.device.key])?;
    next.deliver(&mut sender).await?;
    let push = receiver
        .conn
        .push()
        .await
        .context("live again after paging")?;
    next.matches(&push, 0)?;
    Ok(Verdict::Pass)
}

/// `prekeys.register`: an upload is answered with the stock, which
/// `PrekeyCount` then reports.
pub(crate) async fn register(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[1, 2, 3, 4, 5]).await?;
    expect_stock(&mut r.conn, 5, "after registering 5").await?;
    Ok(Verdict::Pass)
}

/// `prekeys.count_unregistered`: `PrekeyCount` of an authenticated device
/// that never registered is `UNKNOWN_DEVICE`.
pub(crate) async fn count_unregistered(s: &mut Session) -> Outcome {
    let (mut conn, _) = s.login(&Device::new()?).await?;
    error(
        conn.request(prekey_count()).await?,
        ErrorCode::UnknownDevice,
    )?;
    Ok(Verdict::Pass)
}

/// Uploads `upload` on `r`'s connection.
async fn upload(
    r: &mut Registered,
    upload: proto::RegisterPrekeys,
) -> Result<proto::relay_frame::Body> {
    r.conn.request(Request::RegisterPrekeys(upload)).await
}

/// `prekeys.too_many`: 101 one-time prekeys are `TOO_MANY_PREKEYS`, the
/// first check (before a missing signed prekey); 100 are accepted.
pub(crate) async fn too_many(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[1, 2, 3, 4, 5]).await?;
    let ids: Vec<u32> = (1..=101).collect();
    let mut over = r.device.upload(&ids)?;
    over.signed_prekey = None;
    error(upload(&mut r, over).await?, ErrorCode::TooManyPrekeys)
        .context("101 one-time prekeys and no signed prekey")?;
    expect_stock(&mut r.conn, 5, "after the refused upload").await?;
    let most = r.device.upload(&ids[..100])?;
    let got = registered(upload(&mut r, most).await?).context("100 one-time prekeys")?;
    ensure!(got == 100, "expected a stock of 100, got {got}");
    Ok(Verdict::Pass)
}

/// `prekeys.field_rules`: missing prekeys and wrong lengths are
/// `MALFORMED` (before any signature is checked), and change nothing.
pub(crate) async fn prekey_field_rules(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[1, 2, 3]).await?;
    let base = r.device.upload(&[10, 11])?;
    let case = |change: &dyn Fn(&mut proto::RegisterPrekeys)| {
        let mut u = base.clone();
        change(&mut u);
        u
    };
    let cases = [
        ("no signed_prekey", case(&|u| u.signed_prekey = None)),
        (
            "a 31-byte signed_prekey",
            case(&|u| {
                if let Some(k) = &mut u.signed_prekey {
                    k.public_key.truncate(31);
                }
            }),
        ),
        (
            "a 63-byte signed_prekey signature",
            case(&|u| {
                if let Some(k) = &mut u.signed_prekey {
                    k.signature.truncate(63);
                }
            }),
        ),
        (
            "no last_resort_prekey",
            case(&|u| u.last_resort_prekey = None),
        ),
        (
            "a 33-byte last_resort_prekey",
            case(&|u| {
                if let Some(k) = &mut u.last_resort_prekey {
                    k.public_key.push(0);
                }
            }),
        ),
        (
            "an empty last_resort_prekey signature",
            case(&|u| {
                if let Some(k) = &mut u.last_resort_prekey {
                    k.signature.clear();
                }
            }),
        ),
        (
            "a one-time prekey id repeated",
            case(&|u| {
                if let [a, b, ..] = u.one_time_prekeys.as_mut_slice() {
                    b.id = a.id;
                }
            }),
        ),
        (
            "a 31-byte one-time prekey",
            case(&|u| {
                if let Some(k) = u.one_time_prekeys.last_mut() {
                    k.public_key.truncate(31);
                }
            }),
        ),
        (
            "a bad signed-prekey signature and a 31-byte one-time prekey",
            case(&|u| {
                if let Some(k) = &mut u.signed_prekey {
                    k.signature[0] ^= 1;
                }
                if let Some(k) = u.one_time_prekeys.last_mut() {
                    k.public_key.truncate(31);
                }
            }),
        ),
    ];
    for (what, u) in cases {
        error(upload(&mut r, u).await?, ErrorCode::Malformed).context(what)?;
    }
    expect_stock(&mut r.conn, 3, "after the refused uploads").await?;
    Ok(Verdict::Pass)
}

/// `prekeys.bad_signature`: prekey signatures that do not verify for the
/// device (altered, of the other kind, by another key) are
/// `BAD_SIGNATURE`; the stored prekeys stay.
pub(crate) async fn prekey_bad_signature(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[1, 2, 3]).await?;
    let other = Device::new()?;
    let base = r.device.upload(&[])?;
    let mut altered_signed = base.clone();
    if let Some(k) = &mut altered_signed.signed_prekey {
        k.signature[0] ^= 1;
    }
    let mut altered_last = base.clone();
    if let Some(k) = &mut altered_last.last_resort_prekey {
        k.signature[0] ^= 1;
    }
    let mut kinds_swapped_signed = base.clone();
    kinds_swapped_signed.signed_prekey = Some(r.device.signed_prekey(KIND_LAST_RESORT, 1)?);
    let mut kinds_swapped_last = base.clone();
    kinds_swapped_last.last_resort_prekey = Some(r.device.signed_prekey(KIND_SIGNED, 2)?);
    let cases = [
        ("an altered signed-prekey signature", altered_signed),
        ("an altered last-resort signature", altered_last),
        (
            "a signed prekey signed as last-resort (kind 0x02)",
            kinds_swapped_signed,
        ),
        (
            "a last-resort prekey signed as signed prekey (kind 0x01)",
            kinds_swapped_last,
        ),
        ("prekeys signed by another identity", other.upload(&[])?),
    ];
    for (what, u) in cases {
        error(upload(&mut r, u).await?, ErrorCode::BadSignature).context(what)?;
    }
    expect_stock(&mut r.conn, 3, "after the refused uploads").await?;
    let mut fetcher = s.connect().await?;
    let b = bundle(fetcher.request(fetch_bundle(&r.device.key)).await?)?;
    ensure!(
        b.signed_prekey == r.upload.signed_prekey,
        "expected the bundle to carry the signed prekey stored before the refused uploads, got another"
    );
    Ok(Verdict::Pass)
}

/// Checks that `b` is `device`'s bundle with `signed` and `extra`.
fn check_bundle(
    b: &wire::PreKeyBundle,
    device: &Device,
    signed: Option<&wire::SignedPreKey>,
    extra: &Extra,
) -> Result<()> {
    ensure!(
        b.identity_key == device.key,
        "expected the bundle's identity_key to be the device's key, got {}",
        hex::encode(&b.identity_key)
    );
    ensure!(
        b.signed_prekey.as_ref() == signed,
        "expected the bundle's signed_prekey as uploaded, got {:?}",
        b.signed_prekey.as_ref().map(|k| k.id)
    );
    let describe = |e: Option<&Extra>| match e {
        Some(Extra::OneTimePrekey(k)) => format!("one-time prekey {}", k.id),
        Some(Extra::LastResortPrekey(k)) => format!("last-resort prekey {}", k.id),
        None => "no extra prekey".into(),
    };
    ensure!(
        b.extra.as_ref() == Some(extra),
        "expected {} as uploaded, got {}",
        describe(Some(extra)),
        describe(b.extra.as_ref())
    );
    Ok(())
}

/// The uploaded one-time prekey with id `id`, as a bundle's extra.
fn one_time(upload: &proto::RegisterPrekeys, id: u32) -> Result<Extra> {
    upload
        .one_time_prekeys
        .iter()
        .find(|k| k.id == id)
        .map(|k| Extra::OneTimePrekey(k.clone()))
        .ok_or_else(|| anyhow::anyhow!("no one-time prekey {id} uploaded"))
}

/// The uploaded last-resort prekey, as a bundle's extra.
fn last_resort(upload: &proto::RegisterPrekeys) -> Result<Extra> {
    upload
        .last_resort_prekey
        .clone()
        .map(Extra::LastResortPrekey)
        .ok_or_else(|| anyhow::anyhow!("no last-resort prekey uploaded"))
}

/// `prekeys.keep_stock`: an upload without one-time prekeys replaces the
/// signed and last-resort prekeys and keeps the stored one-time set.
pub(crate) async fn keep_stock(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[1, 2, 3]).await?;
    let next = r.device.upload(&[])?;
    let got = registered(upload(&mut r, next.clone()).await?)?;
    ensure!(got == 3, "expected the stock of 3 kept, got {got}");
    let mut fetcher = s.connect().await?;
    let b = bundle(fetcher.request(fetch_bundle(&r.device.key)).await?)?;
    check_bundle(
        &b,
        &r.device,
        next.signed_prekey.as_ref(),
        &one_time(&r.upload, 1)?,
    )?;
    Ok(Verdict::Pass)
}

/// `prekeys.replace_stock`: an upload with one-time prekeys replaces the
/// whole stored set.
pub(crate) async fn replace_stock(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[1, 2, 3]).await?;
    let next = r.device.upload(&[501, 500])?;
    let got = registered(upload(&mut r, next.clone()).await?)?;
    ensure!(got == 2, "expected a stock of 2 after replacing, got {got}");
    let mut fetcher = s.connect().await?;
    for extra in [
        one_time(&next, 500)?,
        one_time(&next, 501)?,
        last_resort(&next)?,
    ] {
        let b = bundle(fetcher.request(fetch_bundle(&r.device.key)).await?)?;
        check_bundle(&b, &r.device, next.signed_prekey.as_ref(), &extra)?;
    }
    Ok(Verdict::Pass)
}

/// `bundle.one_time`: unauthenticated fetches get the device's bundle
/// with its one-time prekeys, lowest id first, each once; the stock goes
/// down by one each time.
pub(crate) async fn bundle_one_time(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[30, 10, 20]).await?;
    let mut fetcher = s.connect().await?;
    for (left, id) in [(2, 10), (1, 20), (0, 30)] {
        let b = bundle(fetcher.request(fetch_bundle(&r.device.key)).await?)?;
        check_bundle(
            &b,
            &r.device,
            r.upload.signed_prekey.as_ref(),
            &one_time(&r.upload, id)?,
        )?;
        expect_stock(
            &mut r.conn,
            left,
            &format!("after one-time prekey {id} was taken"),
        )
        .await?;
    }
    Ok(Verdict::Pass)
}

/// `bundle.last_resort`: once the one-time prekeys are gone, every
/// bundle carries the last-resort prekey.
pub(crate) async fn bundle_last_resort(s: &mut Session) -> Outcome {
    let r = s.registered(&[7]).await?;
    let mut fetcher = s.connect().await?;
    let extras = [
        one_time(&r.upload, 7)?,
        last_resort(&r.upload)?,
        last_resort(&r.upload)?,
    ];
    for extra in extras {
        let b = bundle(fetcher.request(fetch_bundle(&r.device.key)).await?)?;
        check_bundle(&b, &r.device, r.upload.signed_prekey.as_ref(), &extra)?;
    }
    Ok(Verdict::Pass)
}

/// `bundle.unknown_device`: a device that never registered is
/// `UNKNOWN_DEVICE`.
pub(crate) async fn bundle_unknown_device(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    error(
        conn.request(fetch_bundle(&unknown_key()?)).await?,
        ErrorCode::UnknownDevice,
    )?;
    Ok(Verdict::Pass)
}

/// `bundle.field_rules`: a `device_key` other than 32 bytes is
/// `MALFORMED`.
pub(crate) async fn bundle_field_rules(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    let key = unknown_key()?;
    for (what, bad) in [
        ("a 31-byte device_key", &key[..31]),
        ("an empty device_key", &[][..]),
    ] {
        error(conn.request(fetch_bundle(bad)).await?, ErrorCode::Malformed).context(what)?;
    }
    Ok(Verdict::Pass)
}
