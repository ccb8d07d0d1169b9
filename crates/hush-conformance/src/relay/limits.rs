//! Limit checks (`spec/relay.md`, "Limits", "FetchPage", the quotas of
//! "Send", "Rate limits"). The relay does not announce its limits: these
//! checks use the documented defaults or what `--limit` says, and skip
//! when filling a queue to a limit would take too long.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hush_proto::relay as proto;
use proto::ErrorCode;
use proto::client_frame::Request;
use proto::relay_frame::Body;

use super::net::Conn;
use super::queue::go_live;
use super::session::{
    Outcome, Outgoing, Session, Verdict, ack, acked, describe, error, fetch_bundle, fetch_page,
    page, retry_after, send_all, unknown_key,
};

/// The most envelopes a check puts in one queue to reach a limit.
const PRACTICAL_ENVELOPES: u64 = 10_000;
/// The most bytes a check puts in one queue to reach a limit.
const PRACTICAL_BYTES: u64 = 16 << 20;
/// `PAGE_MAX_BYTES`: bodies per page.
const PAGE_MAX_BYTES: usize = 1_048_576;
/// What a queue entry costs beyond its body.
const ENTRY: u64 = 48;

/// Puts `count` envelopes with `body`-byte bodies in `key`'s queue.
async fn fill(sender: &mut Conn, key: &[u8], count: u64, body: usize) -> Result<()> {
    let sends = (0..count)
        .map(|_| Outgoing::random(body, &[key]).map(|o| o.send))
        .collect::<Result<Vec<_>>>()?;
    send_all(sender, sends).await
}

/// Deletes everything in `conn`'s queue up to `last`.
async fn clear(conn: &mut Conn, last: u64) -> Result<()> {
    page(conn.request(fetch_page(last, 1)).await?)?;
    Ok(())
}

/// Checks a page's size and end marker.
fn expect_page(p: &proto::Page, len: usize, queue_empty: bool, what: &str) -> Result<()> {
    ensure!(
        p.envelopes.len() == len && p.queue_empty == queue_empty,
        "expected {what} of {len} envelopes (queue_empty {queue_empty}), got {} (queue_empty {})",
        p.envelopes.len(),
        p.queue_empty
    );
    Ok(())
}

/// The seq of a page's last envelope.
fn last_seq(p: &proto::Page) -> u64 {
    p.envelopes.last().map_or(0, |e| e.seq)
}

/// `limits.page_size`: with `max_envelopes` 0 or above `page_size`, a
/// page holds `page_size` envelopes, and is not the end.
pub(crate) async fn page_size(s: &mut Session) -> Outcome {
    let size = s.limits.page_size;
    let n = u64::from(size) + 1;
    if n > s.limits.queue_max_envelopes.min(PRACTICAL_ENVELOPES) {
        return Ok(Verdict::Skip(format!(
            "needs {n} envelopes (page_size + 1) in one queue"
        )));
    }
    let mut r = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    fill(&mut sender, &r.device.key, n, 8).await?;
    for max in [0, size.saturating_add(1)] {
        let p = page(r.conn.request(fetch_page(0, max)).await?)?;
        expect_page(
            &p,
            size as usize,
            false,
            &format!("a page with max_envelopes {max}"),
        )?;
    }
    let first = page(r.conn.request(fetch_page(0, 0)).await?)?;
    let rest = page(r.conn.request(fetch_page(last_seq(&first), 0)).await?)?;
    expect_page(&rest, 1, true, "the next page")?;
    clear(&mut r.conn, last_seq(&rest)).await?;
    Ok(Verdict::Pass)
}

/// `limits.page_bytes`: a page holds at most `PAGE_MAX_BYTES` of bodies:
/// with bodies of `max_body_bytes`, the page stops before the body that
/// would pass it, and is not the end.
pub(crate) async fn page_bytes(s: &mut Session) -> Outcome {
    let body = s.limits.max_body_bytes;
    let fits = PAGE_MAX_BYTES / body;
    let n = fits as u64 + 1;
    if fits == 0 || n > u64::from(s.limits.page_size) {
        return Ok(Verdict::Skip(format!(
            "needs page_size ≥ {n}, so that {n} bodies of {body} bytes pass PAGE_MAX_BYTES first"
        )));
    }
    if n > s.limits.queue_max_envelopes || n * (body as u64 + ENTRY) > s.limits.queue_max_bytes {
        return Ok(Verdict::Skip(format!(
            "needs {n} bodies of {body} bytes in one queue, over its quota"
        )));
    }
    let mut r = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    fill(&mut sender, &r.device.key, n, body).await?;
    let first = page(r.conn.request(fetch_page(0, 0)).await?)?;
    expect_page(&first, fits, false, "the first page")?;
    let rest = page(r.conn.request(fetch_page(last_seq(&first), 0)).await?)?;
    expect_page(&rest, 1, true, "the next page")?;
    clear(&mut r.conn, last_seq(&rest)).await?;
    Ok(Verdict::Pass)
}

/// Checks a `QUOTA` answer naming exactly `full`.
fn quota(body: Body, full: &[u8], what: &str) -> Result<()> {
    let refused = error(body, ErrorCode::Quota).context(what.to_string())?;
    ensure!(
        refused.device_keys == [full.to_vec()],
        "expected QUOTA naming only the full queue ({what}), got {} keys",
        refused.device_keys.len()
    );
    Ok(())
}

/// `limits.quota_envelopes`: a queue holding `queue_max_envelopes`
/// refuses the next envelope with `QUOTA` naming it (also in a
/// multi-recipient send, which stores nothing; an unknown recipient is
/// reported first); after an ack the refused id is accepted.
pub(crate) async fn quota_envelopes(s: &mut Session) -> Outcome {
    let q = s.limits.queue_max_envelopes;
    if q > PRACTICAL_ENVELOPES {
        return Ok(Verdict::Skip(format!(
            "queue_max_envelopes is {q}: too many to fill here (give --limit queue_max_envelopes=N for a relay configured with at most {PRACTICAL_ENVELOPES})"
        )));
    }
    if q * ENTRY > s.limits.queue_max_bytes || s.limits.max_recipients < 2 {
        return Ok(Verdict::Skip(
            "needs queue_max_bytes ≥ 48 × queue_max_envelopes and max_recipients ≥ 2".into(),
        ));
    }
    let mut full = s.registered(&[]).await?;
    let mut other = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    fill(&mut sender, &full.device.key, q, 0).await?;
    let key = full.device.key.clone();
    let over = Outgoing::new(Vec::new(), &[&key])?;
    quota(
        sender.request(over.request()).await?,
        &key,
        "one envelope more",
    )?;
    let both = Outgoing::new(Vec::new(), &[&other.device.key, &key])?;
    quota(
        sender.request(both.request()).await?,
        &key,
        "to a free and the full queue",
    )?;
    let unknown = unknown_key()?;
    let with_unknown = Outgoing::new(Vec::new(), &[&unknown, &key])?;
    let refused = error(
        sender.request(with_unknown.request()).await?,
        ErrorCode::UnknownDevice,
    )
    .context("to an unknown device and the full queue")?;
    ensure!(
        refused.device_keys == [unknown],
        "expected UNKNOWN_DEVICE naming only the unknown device, got {} keys",
        refused.device_keys.len()
    );
    let stored = go_live(&mut other.conn).await?;
    ensure!(
        stored.is_empty(),
        "expected nothing stored for the free queue of a refused send, got {} envelopes",
        stored.len()
    );
    let deleted = acked(full.conn.request(ack(vec![1])).await?)?;
    ensure!(deleted == 1, "expected the ack to delete 1, got {deleted}");
    over.deliver(&mut sender)
        .await
        .context("the refused message_id again after an ack made room")?;
    clear(&mut full.conn, q + 1).await?;
    Ok(Verdict::Pass)
}

/// `limits.quota_bytes`: a queue filled to exactly `queue_max_bytes`
/// (Σ len(body) + 48) accepts that, and refuses the next envelope with
/// `QUOTA`.
pub(crate) async fn quota_bytes(s: &mut Session) -> Outcome {
    let limit = s.limits.queue_max_bytes;
    if limit > PRACTICAL_BYTES {
        return Ok(Verdict::Skip(format!(
            "queue_max_bytes is {limit}: too many bytes to fill here (give --limit queue_max_bytes=N for a relay configured with at most {PRACTICAL_BYTES})"
        )));
    }
    let body = s.limits.max_body_bytes as u64;
    let whole = limit / (body + ENTRY);
    let rest = limit - whole * (body + ENTRY);
    if whole + 2 > s.limits.queue_max_envelopes {
        return Ok(Verdict::Skip(
            "queue_max_envelopes would be reached before queue_max_bytes".into(),
        ));
    }
    let mut full = s.registered(&[]).await?;
    let mut sender = s.connect().await?;
    fill(&mut sender, &full.device.key, whole, body as usize).await?;
    let mut stored = whole;
    if let Some(last) = rest.checked_sub(ENTRY) {
        Outgoing::random(last as usize, &[&full.device.key])?
            .deliver(&mut sender)
            .await
            .with_context(|| format!("the envelope filling the queue to exactly {limit} bytes"))?;
        stored += 1;
    }
    let over = Outgoing::new(Vec::new(), &[&full.device.key])?;
    quota(
        sender.request(over.request()).await?,
        &full.device.key,
        "one empty envelope more",
    )?;
    clear(&mut full.conn, stored).await?;
    Ok(Verdict::Pass)
}

/// Checks which of `n` requests answered in order a token bucket of
/// `burst` tokens, one more per `refill`, refused over `elapsed`: never
/// the first `burst`, and never more allowed than the bucket had.
fn bucket(
    refused: &[bool],
    burst: u32,
    refill: Duration,
    elapsed: Duration,
    what: &str,
) -> Outcome {
    let budget = f64::from(burst) + elapsed.as_secs_f64() / refill.as_secs_f64();
    if let Some(first) = refused.iter().position(|r| *r) {
        ensure!(
            first >= burst as usize,
            "expected the first {burst} {what} allowed (a new bucket is full), got RATE_LIMITED at number {}",
            first + 1
        );
    }
    let allowed = refused.iter().filter(|r| !**r).count();
    ensure!(
        allowed as f64 <= budget + 1e-6,
        "expected at most {budget:.0} {what} allowed ({burst} + refill over {elapsed:.2?}), got {allowed}"
    );
    if allowed == refused.len() {
        return Ok(Verdict::Skip(format!(
            "{allowed} {what} took {elapsed:.2?}, no faster than the refill: nothing to refuse"
        )));
    }
    Ok(Verdict::Pass)
}

/// Sends `requests` pipelined and returns, in order, which were refused
/// `RATE_LIMITED` (each with a `retry in N ms` message); every other
/// answer must be an error of `code`. Also returns the time taken.
async fn limited(
    conn: &mut Conn,
    requests: Vec<Request>,
    code: ErrorCode,
) -> Result<(Vec<bool>, Duration)> {
    let start = Instant::now();
    let ids = conn.start_all(requests).await?;
    let mut refused = Vec::with_capacity(ids.len());
    for id in ids {
        match conn.answer(id).await? {
            Body::Error(e) if e.code == ErrorCode::RateLimited as i32 => {
                retry_after(&e.message)?;
                refused.push(true);
            }
            Body::Error(e) if e.code == code as i32 => refused.push(false),
            other => bail!(
                "expected error {} or RATE_LIMITED, got {}",
                code.as_str_name(),
                describe(&other)
            ),
        }
    }
    Ok((refused, start.elapsed()))
}

/// Bundle fetches of `targets`.
fn fetches(targets: &[Vec<u8>]) -> Vec<Request> {
    targets.iter().map(|t| fetch_bundle(t)).collect()
}

/// `rate.bundle_connection`: a connection's bundle fetches (of unknown
/// devices, which count too) are limited to `bundle_burst`, then
/// `RATE_LIMITED` with `retry in N ms`; malformed fetches, refused
/// before the rate check, spend no token.
pub(crate) async fn bundle_connection(s: &mut Session) -> Outcome {
    let burst = s.limits.bundle_burst;
    let targets = (0..burst + 2)
        .map(|_| unknown_key())
        .collect::<Result<Vec<_>>>()?;
    let mut conn = s.connect().await?;
    let malformed = vec![vec![0u8; 31]; burst as usize];
    let (refused, _) = limited(&mut conn, fetches(&malformed), ErrorCode::Malformed).await?;
    ensure!(
        !refused.contains(&true),
        "expected {burst} fetches with a 31-byte device_key MALFORMED (checked before the rate), got RATE_LIMITED"
    );
    let (refused, elapsed) =
        limited(&mut conn, fetches(&targets), ErrorCode::UnknownDevice).await?;
    bucket(
        &refused,
        burst,
        s.limits.bundle_refill,
        elapsed,
        "bundle fetches",
    )
}

/// `rate.bundle_target`: fetches of one device are limited across
/// connections to `bundle_burst`; a fetch refused by the target's bucket
/// has spent a token of the connection's.
pub(crate) async fn bundle_target(s: &mut Session) -> Outcome {
    let burst = s.limits.bundle_burst;
    let target = unknown_key()?;
    let start = Instant::now();
    let mut first = s.connect().await?;
    let same = vec![target.clone(); burst as usize];
    let (refused, _) = limited(&mut first, fetches(&same), ErrorCode::UnknownDevice).await?;
    ensure!(
        !refused.contains(&true),
        "expected {burst} fetches of one device allowed (new buckets are full), got RATE_LIMITED"
    );
    let mut second = s.connect().await?;
    let mut others = vec![target];
    for _ in 0..burst {
        others.push(unknown_key()?);
    }
    let (refused, _) = limited(&mut second, fetches(&others), ErrorCode::UnknownDevice).await?;
    let elapsed = start.elapsed();
    if elapsed >= s.limits.bundle_refill {
        return Ok(Verdict::Skip(format!(
            "the fetches took {elapsed:.2?}, longer than one refill ({:?})",
            s.limits.bundle_refill
        )));
    }
    let mut expected = vec![false; burst as usize + 1];
    expected[0] = true;
    expected[burst as usize] = true;
    ensure!(
        refused == expected,
        "expected, on a new connection, the spent device's fetch RATE_LIMITED, then {} allowed and the last RATE_LIMITED (its token was spent); got refusals at {:?}",
        burst - 1,
        refused
            .iter()
            .enumerate()
            .filter(|(_, r)| **r)
            .map(|(i, _)| i + 1)
            .collect::<Vec<_>>()
    );
    Ok(Verdict::Pass)
}

/// `rate.send`: a connection's sends are limited to `send_burst`, refilled
/// one per `send_refill_micros`, and the rate check comes first (the
/// sends here have no message id: allowed ones are `MALFORMED`, nothing
/// is stored).
pub(crate) async fn send_rate(s: &mut Session) -> Outcome {
    let burst = s.limits.send_burst;
    let n = 2 * burst as usize + 100;
    let requests = (0..n)
        .map(|_| Request::Send(proto::Send::default()))
        .collect();
    let mut conn = s.connect().await?;
    let (refused, elapsed) = limited(&mut conn, requests, ErrorCode::Malformed).await?;
    bucket(&refused, burst, s.limits.send_refill, elapsed, "sends")
}
