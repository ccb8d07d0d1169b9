//! Device list checks (`spec/relay.md`, "PublishDevices", "FetchDevices",
//! "Unregister", the stale check of "Send"; `spec/devices.md`).

use anyhow::{Context, Result, bail, ensure};
use hush_crypto::devices::{Device as Linked, DeviceList};
use hush_proto::relay as proto;
use hush_proto::wire;
use prost::Message;
use proto::ErrorCode;
use proto::client_frame::Request;
use proto::relay_frame::Body;

use super::session::{
    Device, Outcome, Outgoing, Registered, Session, Verdict, describe, error, fetch_bundle,
    fetch_page, page, prekey_count, sent,
};

/// Close code `REVOKED` (`spec/relay.md`, "Closing").
const REVOKED: u64 = 4;

fn consent(device: &Device, account: &Device, name: &str) -> Result<Linked> {
    Ok(Linked::consent(
        &device.identity,
        account.identity.public(),
        name,
    )?)
}

/// The list of `account` with the `linked` devices, at `version`.
fn list(account: &Device, version: u64, linked: &[&Device]) -> Result<DeviceList> {
    let mut devices = vec![consent(account, account, "primary")?];
    for (i, d) in linked.iter().enumerate() {
        devices.push(consent(d, account, &format!("device {}", i + 1))?);
    }
    Ok(DeviceList::signed(&account.identity, version, devices)?)
}

fn publish(list: &DeviceList) -> Result<Request> {
    Ok(Request::PublishDevices(proto::PublishDevices {
        list: Some(wire::DeviceList::decode(list.to_bytes().as_slice())?),
    }))
}

fn fetch_devices(account: &Device) -> Request {
    Request::FetchDevices(proto::FetchDevices {
        account: account.key.clone(),
    })
}

/// Expects `published` with `version` and exactly `revoked`.
fn published(body: Body, version: u64, revoked: &[&Device]) -> Result<()> {
    let Body::Published(p) = body else {
        bail!("expected published, got {}", describe(&body));
    };
    let want: Vec<&[u8]> = revoked.iter().map(|d| d.key.as_slice()).collect();
    let got: Vec<&[u8]> = p.revoked.iter().map(Vec::as_slice).collect();
    ensure!(
        p.version == version && got == want,
        "expected published version {version} revoking {} device(s), got version {} revoking {}",
        want.len(),
        p.version,
        got.len()
    );
    Ok(())
}

fn devices(body: Body) -> Result<proto::Devices> {
    match body {
        Body::Devices(d) => Ok(d),
        other => bail!("expected devices, got {}", describe(&other)),
    }
}

/// `account` registered with `linked` devices registered too, and the
/// list naming them published from the primary (version 1).
async fn account(s: &mut Session, linked: usize) -> Result<(Registered, Vec<Registered>)> {
    let mut primary = s.registered(&[]).await?;
    let mut devices = Vec::new();
    for _ in 0..linked {
        devices.push(s.registered(&[]).await?);
    }
    let refs: Vec<&Device> = devices.iter().map(|d| &d.device).collect();
    let v1 = list(&primary.device, 1, &refs)?;
    published(primary.conn.request(publish(&v1)?).await?, 1, &[])
        .context("publishing version 1")?;
    Ok((primary, devices))
}

/// `devices.publish`: a list published by its primary is served as
/// published to anyone, with the devices' status only to its own
/// devices; a resend of it is answered alike; a lower or equal version
/// that differs is `OLD_VERSION`.
pub(crate) async fn publish_and_fetch(s: &mut Session) -> Outcome {
    let (mut primary, mut linked) = account(s, 1).await?;
    let v1 = list(&primary.device, 1, &[&linked[0].device])?;
    let mut anyone = s.connect().await?;
    let seen = devices(anyone.request(fetch_devices(&primary.device)).await?)?;
    let served = seen.list.map(|l| l.encode_to_vec()).unwrap_or_default();
    ensure!(
        served == v1.to_bytes(),
        "the list served is not the list published"
    );
    ensure!(
        seen.status.is_empty(),
        "status served to an unauthenticated connection"
    );
    let own = devices(
        linked[0]
            .conn
            .request(fetch_devices(&primary.device))
            .await?,
    )?;
    let keys: Vec<&[u8]> = own.status.iter().map(|d| d.device_key.as_slice()).collect();
    ensure!(
        keys == [
            primary.device.key.as_slice(),
            linked[0].device.key.as_slice()
        ],
        "expected a status per device, in list order, for a device of the list; got {}",
        own.status.len()
    );
    published(primary.conn.request(publish(&v1)?).await?, 1, &[]).context("a resend")?;
    let other = list(&primary.device, 1, &[])?;
    error(
        primary.conn.request(publish(&other)?).await?,
        ErrorCode::OldVersion,
    )
    .context("another list at the same version")?;
    let stranger = Device::new()?;
    error(
        anyone.request(fetch_devices(&stranger)).await?,
        ErrorCode::UnknownDevice,
    )
    .context("an account without a list")?;
    Ok(Verdict::Pass)
}

/// `devices.refused`: lists published without authentication, by a
/// device not in them, with a bad signature, a bad consent or version 0
/// are refused and change nothing.
pub(crate) async fn refused(s: &mut Session) -> Outcome {
    let mut primary = s.registered(&[]).await?;
    let outsider = s.registered(&[]).await?;
    let mut outsider_conn = outsider.conn;
    let v1 = list(&primary.device, 1, &[])?;
    let mut anyone = s.connect().await?;
    error(
        anyone.request(publish(&v1)?).await?,
        ErrorCode::Unauthenticated,
    )
    .context("unauthenticated")?;
    error(
        outsider_conn.request(publish(&v1)?).await?,
        ErrorCode::Unauthenticated,
    )
    .context("from a device not in the list")?;
    let mut forged = v1.clone();
    forged.signature[0] ^= 1;
    error(
        primary.conn.request(publish(&forged)?).await?,
        ErrorCode::BadSignature,
    )
    .context("a bad account signature")?;
    let foreign = DeviceList::signed(
        &primary.device.identity,
        1,
        vec![
            consent(&primary.device, &primary.device, "primary")?,
            consent(&outsider.device, &outsider.device, "someone else's")?,
        ],
    )?;
    error(
        primary.conn.request(publish(&foreign)?).await?,
        ErrorCode::BadSignature,
    )
    .context("a device that consented to another account")?;
    let zero = list(&primary.device, 0, &[])?;
    error(
        primary.conn.request(publish(&zero)?).await?,
        ErrorCode::Malformed,
    )
    .context("version 0")?;
    error(
        anyone.request(fetch_devices(&primary.device)).await?,
        ErrorCode::UnknownDevice,
    )
    .context("fetching after the refusals")?;
    Ok(Verdict::Pass)
}

/// A send to `to` stating `expected` for `account`.
fn expecting(to: &[&[u8]], account: &Device, expected: &[&Device]) -> Result<Outgoing> {
    let mut out = Outgoing::random(20, to)?;
    out.send.expected = vec![proto::ExpectedDevices {
        account: account.key.clone(),
        devices: expected.iter().map(|d| d.key.clone()).collect(),
    }];
    Ok(out)
}

/// `devices.stale`: a send whose expected devices differ from the
/// account's list is `STALE_DEVICES`, names the missing and removed
/// devices, and stores nothing; the same message id then goes through.
/// An account without a list is its primary alone.
pub(crate) async fn stale(s: &mut Session) -> Outcome {
    let (primary, mut linked) = account(s, 1).await?;
    let extra = Device::new()?;
    let mut sender = s.connect().await?;
    let to = [primary.device.key.as_slice()];
    let wrong = expecting(&to, &primary.device, &[&primary.device, &extra])?;
    let e = error(
        sender.request(wrong.request()).await?,
        ErrorCode::StaleDevices,
    )?;
    let want = proto::StaleDevices {
        account: primary.device.key.clone(),
        missing: vec![linked[0].device.key.clone()],
        removed: vec![extra.key.clone()],
    };
    ensure!(
        e.stale == [want] && e.device_keys == [linked[0].device.key.clone(), extra.key.clone()],
        "expected stale = missing the linked device, removing the extra one; got {} entries, {} keys",
        e.stale.len(),
        e.device_keys.len()
    );
    let mut right = expecting(
        &[&primary.device.key, &linked[0].device.key],
        &primary.device,
        &[&linked[0].device, &primary.device],
    )?;
    right.send.message_id = wrong.send.message_id.clone();
    sent(
        sender.request(right.request()).await?,
        &right.send.message_id,
        false,
    )
    .context("the same message id with the right devices")?;
    let got = page(linked[0].conn.request(fetch_page(0, 0)).await?)?;
    ensure!(
        got.envelopes.len() == 1,
        "expected one envelope for the linked device, got {}",
        got.envelopes.len()
    );
    // Without a list, an account is its primary alone.
    let single = s.registered(&[]).await?;
    let alone = expecting(&[&single.device.key], &single.device, &[&single.device])?;
    alone
        .deliver(&mut sender)
        .await
        .context("a single device")?;
    let more = expecting(
        &[&single.device.key],
        &single.device,
        &[&single.device, &extra],
    )?;
    error(
        sender.request(more.request()).await?,
        ErrorCode::StaleDevices,
    )
    .context("expecting a second device of an account without a list")?;
    Ok(Verdict::Pass)
}

/// `devices.revoke`: a list dropping a device revokes it: its connection
/// is closed with `REVOKED`, its queue and bundle are gone, it cannot
/// authenticate again, and no later list may name it.
pub(crate) async fn revoke(s: &mut Session) -> Outcome {
    let (mut primary, mut linked) = account(s, 1).await?;
    let laptop = linked.remove(0);
    let mut sender = s.connect().await?;
    Outgoing::random(10, &[&laptop.device.key])?
        .deliver(&mut sender)
        .await?;
    let v2 = list(&primary.device, 2, &[])?;
    published(
        primary.conn.request(publish(&v2)?).await?,
        2,
        &[&laptop.device],
    )?;
    let mut laptop_conn = laptop.conn;
    let close = laptop_conn
        .end()
        .await
        .context("the revoked device's connection")?;
    ensure!(
        close.code == REVOKED,
        "expected the revoked device's connection closed with REVOKED (4), got code {} ({:?})",
        close.code,
        close.reason
    );
    let mut again = s.connect().await?;
    let body = again.authenticate(&laptop.device.identity).await?;
    error(body, ErrorCode::Revoked).context("authenticating again")?;
    error(
        sender.request(fetch_bundle(&laptop.device.key)).await?,
        ErrorCode::UnknownDevice,
    )
    .context("its bundle")?;
    let late = Outgoing::random(10, &[&laptop.device.key])?;
    error(
        sender.request(late.request()).await?,
        ErrorCode::UnknownDevice,
    )
    .context("sending to it")?;
    let v3 = list(&primary.device, 3, &[&laptop.device])?;
    let e = error(
        primary.conn.request(publish(&v3)?).await?,
        ErrorCode::Revoked,
    )
    .context("a list naming it again")?;
    ensure!(
        e.device_keys == [laptop.device.key.clone()],
        "expected device_keys to name the revoked device"
    );
    Ok(Verdict::Pass)
}

/// `devices.unregister`: a device deleting its registration takes its
/// queue and bundle with it and is no longer authenticated.
pub(crate) async fn unregister(s: &mut Session) -> Outcome {
    let mut mailbox = s.registered(&[1, 2]).await?;
    let mut sender = s.connect().await?;
    for _ in 0..2 {
        Outgoing::random(10, &[&mailbox.device.key])?
            .deliver(&mut sender)
            .await?;
    }
    match mailbox
        .conn
        .request(Request::Unregister(proto::Unregister {}))
        .await?
    {
        Body::Unregistered(u) if u.deleted == 2 => {}
        other => bail!(
            "expected unregistered with 2 deleted, got {}",
            describe(&other)
        ),
    }
    error(
        mailbox.conn.request(prekey_count()).await?,
        ErrorCode::Unauthenticated,
    )
    .context("the connection afterwards")?;
    error(
        sender.request(fetch_bundle(&mailbox.device.key)).await?,
        ErrorCode::UnknownDevice,
    )
    .context("its bundle")?;
    Ok(Verdict::Pass)
}
