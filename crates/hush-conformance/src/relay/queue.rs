//! Send, queue, push, ack and takeover checks (`spec/relay.md`, "Send",
//! "FetchPage", "Ack", "Deliver (push)", "Sequence numbers", "Takeover").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use hush_proto::relay as proto;
use proto::ErrorCode;
use proto::relay_frame::Body;

use super::net::Conn;
use super::session::{
    Device, Outcome, Outgoing, Registered, Session, Verdict, ack, acked, describe, error,
    fetch_page, page, registered, sent, seqs, unknown_key,
};

/// How far the relay's clock may be from the checker's when
/// `expires_at` is compared.
const CLOCK_SKEW: u64 = 120;

/// The longest the expiry check waits.
const PRACTICAL_WAIT: Duration = Duration::from_secs(20);

/// Waited beyond the lifetime and the sweep interval (whole seconds, a
/// sweep's own time).
const EXPIRY_SLACK: Duration = Duration::from_secs(2);

/// Close code `TAKEN_OVER` (`spec/relay.md`, "Closing").
const TAKEN_OVER: u64 = 1;

/// Pages from the start to the end of the queue as a client does (each
/// page's `after_seq` acknowledges the page before) and returns every
/// envelope; the connection is live afterwards.
pub(crate) async fn go_live(conn: &mut Conn) -> Result<Vec<proto::Envelope>> {
    let mut all: Vec<proto::Envelope> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.seq);
        let p = page(conn.request(fetch_page(after, 0)).await?)?;
        ensure!(
            p.envelopes.iter().all(|e| e.seq > after),
            "expected a page after seq {after}, got seqs {:?}",
            seqs(&p.envelopes)
        );
        let done = p.queue_empty;
        all.extend(p.envelopes);
        if done {
            return Ok(all);
        }
    }
}

/// Checks that `got` are the envelopes `sent` (to recipient 0), in order.
fn same(got: &[proto::Envelope], sent: &[&Outgoing]) -> Result<()> {
    ensure!(
        got.len() == sent.len(),
        "expected {} envelopes, got {} (seqs {:?})",
        sent.len(),
        got.len(),
        seqs(got)
    );
    for (envelope, outgoing) in got.iter().zip(sent) {
        outgoing.matches(envelope, 0)?;
    }
    Ok(())
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A registered device gone offline with `n` envelopes sent to it one
/// after another; returns it, the envelopes and the Unix time before the
/// first send and after the last answer.
async fn backlog(s: &Session, n: usize) -> Result<(Device, Vec<Outgoing>, (u64, u64))> {
    let Registered { device, conn, .. } = s.registered(&[]).await?;
    drop(conn);
    let mut sender = s.connect().await?;
    let before = unix_now();
    let mut sent = Vec::new();
    for i in 0..n {
        let e = Outgoing::random(20 + i, &[&device.key])?;
        e.deliver(&mut sender).await?;
        sent.push(e);
    }
    Ok((device, sent, (before, unix_now())))
}

/// `send.anonymous`: a connection that never authenticated sends; the
/// envelope is answered `sent` (echoing the id) and queued.
pub(crate) async fn anonymous(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    let e = Outgoing::random(100, &[&r.device.key])?;
    e.deliver(&mut sender)
        .await
        .context("a Send on a connection that never authenticated")?;
    same(&go_live(&mut r.conn).await?, &[&e])?;
    Ok(Verdict::Pass)
}

/// `send.duplicate`: a message id already stored is answered
/// `duplicate = true`, whatever the body, recipients or connection, and
/// nothing is queued again; of two pipelined `Send`s with one id, one is
/// stored and the other is the duplicate.
pub(crate) async fn duplicate(s: &mut Session) -> Outcome {
    let mut a = s.registered(&[]).await?;
    let mut b = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    let e = Outgoing::random(100, &[&a.device.key])?;
    let id = e.send.message_id.clone();
    e.deliver(&mut sender).await?;
    sent(sender.request(e.request()).await?, &id, true).context("the same Send again")?;
    let mut other = Outgoing::random(50, &[&b.device.key])?;
    other.send.message_id.clone_from(&id);
    sent(sender.request(other.request()).await?, &id, true)
        .context("another body to another device with the same message_id")?;
    let mut second = s.connect().await?;
    sent(second.request(e.request()).await?, &id, true)
        .context("the same Send from another connection")?;
    let twin = Outgoing::random(60, &[&a.device.key])?;
    let ids = sender.start_all([twin.request(), twin.request()]).await?;
    let mut duplicates = Vec::new();
    for id in ids {
        match sender.answer(id).await? {
            Body::Sent(x) if x.message_id == twin.send.message_id => duplicates.push(x.duplicate),
            other => bail!(
                "expected sent for a pipelined pair of one message_id, got {}",
                describe(&other)
            ),
        }
    }
    duplicates.sort_unstable();
    ensure!(
        duplicates == [false, true],
        "expected one of two pipelined Sends of one message_id stored and the other a duplicate, got duplicate flags {duplicates:?}"
    );
    same(&go_live(&mut a.conn).await?, &[&e, &twin]).context("the first recipient's queue")?;
    same(&go_live(&mut b.conn).await?, &[]).context("the other device's queue")?;
    Ok(Verdict::Pass)
}

/// `send.multi_recipient`: one `Send` to three devices queues the body
/// in each queue with that recipient's slot and that queue's next seq.
pub(crate) async fn multi_recipient(s: &mut Session) -> Outcome {
    if s.limits.max_recipients < 3 {
        return Ok(Verdict::Skip("needs max_recipients ≥ 3".into()));
    }
    let mut rs = [
        s.registered(&[]).await?,
        s.registered(&[]).await?,
        s.registered(&[]).await?,
    ];
    let mut sender = s.connect().await?;
    let earlier = [
        Outgoing::random(10, &[&rs[0].device.key])?,
        Outgoing::random(11, &[&rs[0].device.key])?,
    ];
    for e in &earlier {
        e.deliver(&mut sender).await?;
    }
    let keys: Vec<&[u8]> = rs.iter().map(|r| r.device.key.as_slice()).collect();
    let e = Outgoing::random(300, &keys)?;
    e.deliver(&mut sender).await?;
    for (i, r) in rs.iter_mut().enumerate() {
        let got = go_live(&mut r.conn).await?;
        let expected = if i == 0 { vec![1, 2, 3] } else { vec![1] };
        ensure!(
            seqs(&got) == expected,
            "expected recipient {i}'s queue to hold seqs {expected:?}, got {:?}",
            seqs(&got)
        );
        if let Some(last) = got.last() {
            e.matches(last, i)
                .with_context(|| format!("recipient {i}"))?;
        }
    }
    Ok(Verdict::Pass)
}

/// `send.empty_body`: an empty body is accepted and delivered empty.
pub(crate) async fn empty_body(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    let e = Outgoing::new(Vec::new(), &[&r.device.key])?;
    e.deliver(&mut sender).await?;
    same(&go_live(&mut r.conn).await?, &[&e])?;
    Ok(Verdict::Pass)
}

/// `send.body_limit`: a body of `max_body_bytes` is accepted and
/// delivered whole; one byte more is `TOO_LARGE`.
pub(crate) async fn body_limit(s: &mut Session) -> Outcome {
    let max = s.limits.max_body_bytes;
    let mut r = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    let e = Outgoing::random(max, &[&r.device.key])?;
    e.deliver(&mut sender)
        .await
        .with_context(|| format!("a body of {max} bytes (max_body_bytes)"))?;
    let over = Outgoing::random(max + 1, &[&r.device.key])?;
    error(sender.request(over.request()).await?, ErrorCode::TooLarge)
        .with_context(|| format!("a body of {} bytes", max + 1))?;
    same(&go_live(&mut r.conn).await?, &[&e])?;
    Ok(Verdict::Pass)
}

/// `send.field_rules`: bad message ids, recipient counts, key and slot
/// lengths, and a device named twice are `MALFORMED`, checked in the
/// documented order; nothing is stored and the id is not recorded.
pub(crate) async fn send_field_rules(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    let good = Outgoing::random(10, &[&r.device.key])?;
    let too_large = vec![0u8; s.limits.max_body_bytes + 1];
    let case = |change: &dyn Fn(&mut proto::Send)| {
        let mut send = good.send.clone();
        change(&mut send);
        send
    };
    let malformed = [
        ("a 15-byte message_id", case(&|x| x.message_id.truncate(15))),
        ("an empty message_id", case(&|x| x.message_id.clear())),
        ("a 17-byte message_id", case(&|x| x.message_id.push(0))),
        ("no recipients", case(&|x| x.recipients.clear())),
        (
            "a 31-byte recipient device_key",
            case(&|x| {
                x.recipients
                    .iter_mut()
                    .for_each(|r| r.device_key.truncate(31))
            }),
        ),
        (
            "a 47-byte slot",
            case(&|x| x.recipients.iter_mut().for_each(|r| r.slot.truncate(47))),
        ),
        (
            "a 49-byte slot",
            case(&|x| x.recipients.iter_mut().for_each(|r| r.slot.push(0))),
        ),
        (
            "a device twice among the recipients",
            case(&|x| x.recipients.extend(x.recipients.clone())),
        ),
        (
            "a 15-byte message_id and a body over the limit (the id is checked first)",
            case(&|x| {
                x.message_id.truncate(15);
                x.body.clone_from(&too_large);
            }),
        ),
    ];
    for (what, send) in malformed {
        error(
            sender
                .request(proto::client_frame::Request::Send(send))
                .await?,
            ErrorCode::Malformed,
        )
        .context(what)?;
    }
    let over_and_empty = case(&|x| {
        x.body.clone_from(&too_large);
        x.recipients.clear();
    });
    error(
        sender
            .request(proto::client_frame::Request::Send(over_and_empty))
            .await?,
        ErrorCode::TooLarge,
    )
    .context("a body over the limit and no recipients (the body is checked first)")?;
    good.deliver(&mut sender)
        .await
        .context("the well-formed Send with the same message_id (refused ids are not recorded)")?;
    same(&go_live(&mut r.conn).await?, &[&good])?;
    Ok(Verdict::Pass)
}

/// `send.max_recipients`: `max_recipients` recipients pass the field
/// rules (all unregistered here: `UNKNOWN_DEVICE` naming every one, in
/// request order); one more is `MALFORMED`.
pub(crate) async fn max_recipients(s: &mut Session) -> Outcome {
    let n = s.limits.max_recipients;
    let mut keys = (0..n).map(|_| unknown_key()).collect::<Result<Vec<_>>>()?;
    let mut sender = s.connect().await?;
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let e = Outgoing::random(10, &refs)?;
    let refused = error(sender.request(e.request()).await?, ErrorCode::UnknownDevice)
        .with_context(|| format!("{n} unregistered recipients (max_recipients)"))?;
    ensure!(
        refused.device_keys == keys,
        "expected device_keys to name all {n} recipients in request order, got {} keys",
        refused.device_keys.len()
    );
    keys.push(unknown_key()?);
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let over = Outgoing::random(10, &refs)?;
    error(sender.request(over.request()).await?, ErrorCode::Malformed)
        .with_context(|| format!("{} recipients", n + 1))?;
    Ok(Verdict::Pass)
}

/// `send.unknown_recipient`: a `Send` naming unregistered devices is
/// `UNKNOWN_DEVICE` with exactly those keys in request order; nothing is
/// stored for the registered one, and the id can be sent again.
pub(crate) async fn unknown_recipient(s: &mut Session) -> Outcome {
    if s.limits.max_recipients < 3 {
        return Ok(Verdict::Skip("needs max_recipients ≥ 3".into()));
    }
    let mut r = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    let (u1, u2) = (unknown_key()?, unknown_key()?);
    let e = Outgoing::random(10, &[&u1, &r.device.key, &u2])?;
    let refused = error(sender.request(e.request()).await?, ErrorCode::UnknownDevice)?;
    ensure!(
        refused.device_keys == [u1.clone(), u2.clone()],
        "expected device_keys to be the two unregistered recipients in request order, got {} keys",
        refused.device_keys.len()
    );
    let mut only = e.clone();
    only.send
        .recipients
        .retain(|x| x.device_key == r.device.key);
    only.deliver(&mut sender)
        .await
        .context("the same message_id to the registered recipient alone")?;
    same(&go_live(&mut r.conn).await?, &[&only])?;
    Ok(Verdict::Pass)
}

/// `queue.backlog`: envelopes sent to an offline device are counted in
/// `authenticated.queued` and paged in order, `max_envelopes` at a time,
/// with `queue_empty` only on the last page.
pub(crate) async fn backlog_pages(s: &mut Session) -> Outcome {
    let (device, sent, _) = backlog(s, 5).await?;
    let (mut conn, queued) = s.login(&device).await?;
    ensure!(queued == 5, "expected queued 5, got {queued}");
    let per_page = 2.min(s.limits.page_size as usize);
    let mut got: Vec<proto::Envelope> = Vec::new();
    while got.len() < sent.len() {
        let after = got.last().map_or(0, |e| e.seq);
        let p = page(conn.request(fetch_page(after, 2)).await?)?;
        let expected = per_page.min(sent.len() - got.len());
        let last = got.len() + expected == sent.len();
        ensure!(
            p.envelopes.len() == expected && p.queue_empty == last,
            "expected a page of {expected} (queue_empty {last}) after seq {after}, got {} (queue_empty {})",
            p.envelopes.len(),
            p.queue_empty
        );
        got.extend(p.envelopes);
    }
    let refs: Vec<&Outgoing> = sent.iter().collect();
    same(&got, &refs)?;
    let after = got.last().map_or(0, |e| e.seq);
    let end = page(conn.request(fetch_page(after, 2)).await?)?;
    ensure!(
        end.envelopes.is_empty() && end.queue_empty,
        "expected an empty page after the last envelope, got {} envelopes",
        end.envelopes.len()
    );
    Ok(Verdict::Pass)
}

/// `queue.sequence`: every queue numbers its envelopes 1, 2, 3, ... on
/// its own.
pub(crate) async fn sequence(s: &mut Session) -> Outcome {
    let mut a = s.registered(&[]).await?;
    let mut b = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    for to in [
        &a.device.key,
        &b.device.key,
        &a.device.key,
        &b.device.key,
        &a.device.key,
    ] {
        Outgoing::random(10, &[to])?.deliver(&mut sender).await?;
    }
    for (name, r, expected) in [
        ("first", &mut a, vec![1, 2, 3]),
        ("second", &mut b, vec![1, 2]),
    ] {
        let got = seqs(&go_live(&mut r.conn).await?);
        ensure!(
            got == expected,
            "expected the {name} queue's seqs {expected:?}, got {got:?}"
        );
    }
    Ok(Verdict::Pass)
}

/// `queue.envelope`: an envelope carries the body and slot as sent and
/// `expires_at` = the time of the send + the envelope lifetime.
pub(crate) async fn envelope(s: &mut Session) -> Outcome {
    let (device, sent, (before, after)) = backlog(s, 1).await?;
    let (mut conn, _) = s.login(&device).await?;
    let got = go_live(&mut conn).await?;
    let refs: Vec<&Outgoing> = sent.iter().collect();
    same(&got, &refs)?;
    let lifetime = s.limits.expiry_secs;
    let (low, high) = (
        (before + lifetime).saturating_sub(CLOCK_SKEW),
        after + lifetime + CLOCK_SKEW,
    );
    for e in &got {
        ensure!(
            (low..=high).contains(&e.expires_at),
            "expected expires_at within {CLOCK_SKEW} s of the send time + {lifetime} s ({}..{}), got {}",
            before + lifetime,
            after + lifetime,
            e.expires_at
        );
    }
    Ok(Verdict::Pass)
}

/// `queue.after_seq`: `FetchPage.after_seq` returns what follows it and
/// deletes everything up to it (seen in the next `queued`), even past the
/// last seq.
pub(crate) async fn after_seq(s: &mut Session) -> Outcome {
    if s.limits.page_size < 4 {
        return Ok(Verdict::Skip("needs page_size ≥ 4".into()));
    }
    let (device, sent, _) = backlog(s, 4).await?;
    let (mut conn, _) = s.login(&device).await?;
    let all = page(conn.request(fetch_page(0, 0)).await?)?;
    let refs: Vec<&Outgoing> = sent.iter().collect();
    same(&all.envelopes, &refs)?;
    let numbers = seqs(&all.envelopes);
    let rest = page(conn.request(fetch_page(numbers[1], 0)).await?)?;
    ensure!(
        seqs(&rest.envelopes) == numbers[2..],
        "expected the envelopes after seq {}, {:?}, got {:?}",
        numbers[1],
        &numbers[2..],
        seqs(&rest.envelopes)
    );
    let (mut again, queued) = s.login(&device).await?;
    ensure!(
        queued == 2,
        "expected queued 2 after after_seq {} acknowledged two, got {queued}",
        numbers[1]
    );
    let left = page(again.request(fetch_page(0, 0)).await?)?;
    ensure!(
        seqs(&left.envelopes) == numbers[2..],
        "expected seqs {:?} left, got {:?}",
        &numbers[2..],
        seqs(&left.envelopes)
    );
    let beyond =
        page(again.request(fetch_page(u64::MAX, 0)).await?).context("after_seq 2^64 − 1")?;
    ensure!(
        beyond.envelopes.is_empty() && beyond.queue_empty,
        "expected an empty page after seq 2^64 − 1, got {} envelopes",
        beyond.envelopes.len()
    );
    let (_, queued) = s.login(&device).await?;
    ensure!(
        queued == 0,
        "expected queued 0 after after_seq 2^64 − 1, got {queued}"
    );
    Ok(Verdict::Pass)
}

/// `queue.unregistered`: an authenticated device that never registered
/// gets an empty page with `queue_empty`.
pub(crate) async fn unregistered(s: &mut Session) -> Outcome {
    let (mut conn, _) = s.login(&Device::new()?).await?;
    let p = page(conn.request(fetch_page(0, 0)).await?)?;
    ensure!(
        p.envelopes.is_empty(),
        "expected an empty page, got {} envelopes",
        p.envelopes.len()
    );
    Ok(Verdict::Pass)
}

/// `queue.seq_not_reused`: after acks, a new prekey upload and a new
/// connection, the next envelope gets the next seq, never an old one.
pub(crate) async fn seq_not_reused(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    for _ in 0..2 {
        Outgoing::random(10, &[&r.device.key])?
            .deliver(&mut sender)
            .await?;
    }
    let got = go_live(&mut r.conn).await?;
    ensure!(
        seqs(&got) == [1, 2],
        "expected seqs [1, 2], got {:?}",
        seqs(&got)
    );
    let deleted = acked(r.conn.request(ack(vec![1, 2])).await?)?;
    ensure!(deleted == 2, "expected 2 deleted, got {deleted}");
    let upload = r.device.upload(&[5])?;
    registered(
        r.conn
            .request(proto::client_frame::Request::RegisterPrekeys(upload))
            .await?,
    )?;
    let third = Outgoing::random(10, &[&r.device.key])?;
    third.deliver(&mut sender).await?;
    let push = r.conn.push().await?;
    ensure!(
        push.seq == 3,
        "expected seq 3 after acks and a new upload, got {}",
        push.seq
    );
    drop(r.conn);
    let (mut conn, _) = s.login(&r.device).await?;
    Outgoing::random(10, &[&r.device.key])?
        .deliver(&mut sender)
        .await?;
    let got = seqs(&go_live(&mut conn).await?);
    ensure!(
        got == [3, 4],
        "expected seqs [3, 4] on a new connection, got {got:?}"
    );
    Ok(Verdict::Pass)
}

/// `queue.expiry`: an envelope is swept once past its `expires_at` (by
/// the sweep every `sweep_interval_secs`), unacked: gone from the queue,
/// and its message id forgotten, so the same id is stored again.
pub(crate) async fn expiry(s: &mut Session) -> Outcome {
    let wait = Duration::from_secs(s.limits.expiry_secs) + s.limits.sweep_interval + EXPIRY_SLACK;
    if wait > PRACTICAL_WAIT {
        return Ok(Verdict::Skip(format!(
            "envelopes live {} s and are swept every {:?}: too long to wait (give --limit expiry_secs=N --limit sweep_interval_secs=N for a relay configured that low)",
            s.limits.expiry_secs, s.limits.sweep_interval
        )));
    }
    let Registered { device, conn, .. } = s.registered(&[]).await?;
    drop(conn);
    let mut sender = s.connect().await?;
    let e = Outgoing::random(10, &[&device.key])?;
    e.deliver(&mut sender).await?;
    tokio::time::sleep(wait).await;
    let (mut conn, queued) = s.login(&device).await?;
    ensure!(
        queued == 0,
        "expected the envelope swept {wait:?} after it was sent, got queued {queued}"
    );
    same(&go_live(&mut conn).await?, &[])?;
    e.deliver(&mut sender)
        .await
        .context("the same message_id after its envelope expired")?;
    Ok(Verdict::Pass)
}

/// `push.live`: after a page with `queue_empty`, a new envelope is pushed
/// (`request_id` 0, `deliver`) with the next seq.
pub(crate) async fn push_live(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[]).await?;
    go_live(&mut r.conn).await?;
    let mut sender = s.connect().await?;
    let e = Outgoing::random(100, &[&r.device.key])?;
    e.deliver(&mut sender).await?;
    let push = r.conn.push().await?;
    e.matches(&push, 0)?;
    ensure!(push.seq == 1, "expected seq 1, got {}", push.seq);
    Ok(Verdict::Pass)
}

/// `push.not_live`: a connection that has not paged to the end (never
/// paged, or last page not `queue_empty`) gets no pushes; once it has,
/// it does.
pub(crate) async fn push_not_live(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    let to = [r.device.key.as_slice()];
    let es = [
        Outgoing::random(10, &to)?,
        Outgoing::random(11, &to)?,
        Outgoing::random(12, &to)?,
        Outgoing::random(13, &to)?,
    ];
    es[0].deliver(&mut sender).await?;
    es[1].deliver(&mut sender).await?;
    if let Some(push) = r.conn.quiet(s.quiet()).await? {
        bail!("expected no push before paging, got seq {}", push.seq);
    }
    let first = page(r.conn.request(fetch_page(0, 1)).await?)?;
    ensure!(
        first.envelopes.len() == 1 && !first.queue_empty,
        "expected a page of 1 (queue_empty false), got {} (queue_empty {})",
        first.envelopes.len(),
        first.queue_empty
    );
    es[2].deliver(&mut sender).await?;
    if let Some(push) = r.conn.quiet(s.quiet()).await? {
        bail!(
            "expected no push after a page that was not the end, got seq {}",
            push.seq
        );
    }
    let rest = page(
        r.conn
            .request(fetch_page(first.envelopes[0].seq, 0))
            .await?,
    )?;
    ensure!(
        rest.queue_empty,
        "expected the rest of the queue in one page with queue_empty"
    );
    same(&rest.envelopes, &[&es[1], &es[2]])?;
    es[3].deliver(&mut sender).await?;
    let push = r.conn.push().await.context("after paging to the end")?;
    es[3].matches(&push, 0)?;
    Ok(Verdict::Pass)
}

/// `push.order`: envelopes sent pipelined are all pushed, in strictly
/// increasing seq without gaps.
pub(crate) async fn push_order(s: &mut Session) -> Outcome {
    let n = 10;
    let mut r = s.registered(&[]).await?;
    go_live(&mut r.conn).await?;
    let mut sender = s.connect().await?;
    let es = (0..n)
        .map(|i| Outgoing::random(10 + i, &[&r.device.key]))
        .collect::<Result<Vec<_>>>()?;
    let ids = sender.start_all(es.iter().map(Outgoing::request)).await?;
    for (id, e) in ids.into_iter().zip(&es) {
        sent(sender.answer(id).await?, &e.send.message_id, false)?;
    }
    let mut pushes = Vec::new();
    for _ in 0..n {
        pushes.push(r.conn.push().await?);
    }
    let expected: Vec<u64> = (1..=n as u64).collect();
    ensure!(
        seqs(&pushes) == expected,
        "expected pushes of seqs {expected:?}, got {:?}",
        seqs(&pushes)
    );
    for push in &pushes {
        let e = es
            .iter()
            .find(|e| e.send.body == push.body)
            .with_context(|| {
                format!(
                    "expected push seq {} to carry a body sent, got another",
                    push.seq
                )
            })?;
        e.matches(push, 0)?;
    }
    Ok(Verdict::Pass)
}

/// Sends `n` envelopes to `r` (live) one after another and takes their
/// pushes.
async fn pushed(r: &mut Registered, sender: &mut Conn, n: usize) -> Result<Vec<Outgoing>> {
    let mut sent = Vec::new();
    for i in 0..n {
        let e = Outgoing::random(10 + i, &[&r.device.key])?;
        e.deliver(sender).await?;
        e.matches(&r.conn.push().await?, 0)?;
        sent.push(e);
    }
    Ok(sent)
}

/// `ack.delete`: `Ack` deletes the listed envelopes of the device's own
/// queue, no other, and counts them (repeated and unknown seqs ignored);
/// the connection stays live; what was acked is not delivered again.
pub(crate) async fn ack_delete(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[]).await?;
    let bystander = s.registered(&[]).await?;
    go_live(&mut r.conn).await?;
    let mut sender = s.connect().await?;
    let kept = Outgoing::random(10, &[&bystander.device.key])?;
    kept.deliver(&mut sender).await?;
    let sent = pushed(&mut r, &mut sender, 3).await?;
    let deleted = acked(
        r.conn
            .request(ack(vec![1, 2, 2, 1_000_000, u64::MAX]))
            .await?,
    )?;
    ensure!(
        deleted == 2,
        "expected 2 deleted by Ack [1, 2, 2, 1000000, 2^64 − 1], got {deleted}"
    );
    let deleted = acked(r.conn.request(ack(vec![1])).await?)?;
    ensure!(
        deleted == 0,
        "expected 0 deleted by acking seq 1 again, got {deleted}"
    );
    let more = pushed(&mut r, &mut sender, 1)
        .await
        .context("live after acks")?;
    drop(r.conn);
    let (mut conn, queued) = s.login(&r.device).await?;
    ensure!(queued == 2, "expected queued 2 (the unacked), got {queued}");
    same(&go_live(&mut conn).await?, &[&sent[2], &more[0]])?;
    let (mut other, _) = s.login(&bystander.device).await?;
    same(&go_live(&mut other).await?, &[&kept]).context("another device's queue (seq 1)")?;
    Ok(Verdict::Pass)
}

/// `ack.redelivery`: pushed envelopes never acked are delivered again on
/// the next connection, exactly as pushed (`expires_at` included).
pub(crate) async fn ack_redelivery(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[]).await?;
    go_live(&mut r.conn).await?;
    let mut sender = s.connect().await?;
    let mut pushes = Vec::new();
    for _ in 0..2 {
        Outgoing::random(10, &[&r.device.key])?
            .deliver(&mut sender)
            .await?;
        pushes.push(r.conn.push().await?);
    }
    drop(r.conn);
    let (mut conn, queued) = s.login(&r.device).await?;
    ensure!(queued == 2, "expected queued 2, got {queued}");
    let again = go_live(&mut conn).await?;
    ensure!(
        again == pushes,
        "expected the pushed envelopes (seqs {:?}) again, exactly as pushed, got seqs {:?}",
        seqs(&pushes),
        seqs(&again)
    );
    Ok(Verdict::Pass)
}

/// `ack.limit`: an `Ack` of 4,097 seqs is `MALFORMED`; 4,096 are fine.
pub(crate) async fn ack_limit(s: &mut Session) -> Outcome {
    let mut r = s.registered(&[]).await?;
    error(
        r.conn.request(ack((1..=4097).collect())).await?,
        ErrorCode::Malformed,
    )
    .context("an Ack of 4097 seqs")?;
    let deleted =
        acked(r.conn.request(ack((1..=4096).collect())).await?).context("an Ack of 4096 seqs")?;
    ensure!(
        deleted == 0,
        "expected 0 deleted from an empty queue, got {deleted}"
    );
    Ok(Verdict::Pass)
}

/// `takeover`: a second connection authenticating as the device closes
/// the first with `TAKEN_OVER`; what the first got but did not ack is
/// delivered again to the second, which then gets the pushes.
pub(crate) async fn takeover(s: &mut Session) -> Outcome {
    let mut first = s.registered(&[]).await?;
    go_live(&mut first.conn).await?;
    let mut sender = s.connect().await?;
    let sent = pushed(&mut first, &mut sender, 1).await?;
    let (mut second, queued) = s.login(&first.device).await?;
    ensure!(queued == 1, "expected queued 1, got {queued}");
    let close = first.conn.end().await.context("the first connection")?;
    ensure!(
        close.code == TAKEN_OVER,
        "expected the first connection closed with TAKEN_OVER (1), got code {} ({:?})",
        close.code,
        close.reason
    );
    same(&go_live(&mut second).await?, &[&sent[0]]).context("the second connection's page")?;
    let next = Outgoing::random(10, &[&first.device.key])?;
    next.deliver(&mut sender).await?;
    next.matches(&second.push().await?, 0)?;
    Ok(Verdict::Pass)
}
