//! Group fan-out against the real `hush-relay` binary (release) on
//! loopback QUIC, with real clients (one profile each, all in this
//! process): one 100-byte text to groups of 10, 100 and 1,000 members,
//! sent once with the sender key and one multi-recipient request, and
//! the same text sent pairwise to each member, for comparison.
//!
//! For each: the payload uploaded, what the relay stores (read from its
//! database while every copy is still queued), and the time from the
//! send until every member (all online) has it stored.
//!
//! `cargo bench -p hush-client --bench groups [-- 10|100|1000]`
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use hush_client::{Client, Event};
use sqlx::{ConnectOptions, Row};

#[path = "../tests/common/mod.rs"]
mod common;
use common::Relay;

const TEXT_LEN: usize = 100;

fn start_relay() -> Relay {
    Relay::start_with(
        "groups-bench",
        "send_burst = 1000000\nsend_refill_micros = 1\nbundle_burst = 1000000\nbundle_refill_secs = 1\nmax_connections = 100000\n",
    )
}

/// What the relay's database holds: shared bodies (count, bytes) and
/// queue entries (count, bytes of their own body copies and slots).
struct Stored {
    bodies: u64,
    body_bytes: u64,
    entries: u64,
    entry_bytes: u64,
}

async fn stored(relay: &Relay) -> Stored {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(relay.data.join("relay.sqlite"))
        .connect()
        .await
        .unwrap();
    let b = sqlx::query("SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM bodies")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let q = sqlx::query(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(slot) + COALESCE(LENGTH(body), 0)), 0) FROM queue",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    Stored {
        bodies: b.get::<i64, _>(0) as u64,
        body_bytes: b.get::<i64, _>(1) as u64,
        entries: q.get::<i64, _>(0) as u64,
        entry_bytes: q.get::<i64, _>(1) as u64,
    }
}

async fn clients(relay: &Relay, n: usize) -> Vec<Client> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(common::client(relay, &format!("groups-bench-{i}")).await);
    }
    out
}

/// Every member syncs (all at once).
async fn sync_all(members: Vec<Client>) -> Vec<Client> {
    let mut set = tokio::task::JoinSet::new();
    for (i, mut c) in members.into_iter().enumerate() {
        set.spawn(async move {
            c.sync().await.unwrap();
            (i, c)
        });
    }
    let mut out: Vec<(usize, Client)> = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, c)| c).collect()
}

/// Members wait for `text`, store it (without acknowledging it, so the
/// relay keeps every copy), and report when.
fn listen(
    members: Vec<Client>,
    text: &str,
) -> (
    tokio::task::JoinSet<(usize, Client)>,
    tokio::sync::mpsc::UnboundedReceiver<Instant>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut set = tokio::task::JoinSet::new();
    for (i, mut c) in members.into_iter().enumerate() {
        let tx = tx.clone();
        let text = text.to_string();
        set.spawn(async move {
            'wait: while let Some(envelope) = c.wait_push().await {
                for event in c.handle_push(envelope).await.unwrap() {
                    if matches!(&event, Event::Message(m) if m.text == text) {
                        let _ = tx.send(Instant::now());
                        break 'wait;
                    }
                }
            }
            (i, c)
        });
    }
    (set, rx)
}

struct Outcome {
    uploaded: u64,
    stored: Stored,
    all: Duration,
    half: Duration,
}

async fn run(n: usize) {
    let mut relay = start_relay();
    let setup = Instant::now();
    let mut members = clients(&relay, n).await;
    let mut sender = members.remove(0);
    let names: Vec<String> = (1..n).map(|i| format!("m{i}")).collect();
    for (name, member) in names.iter().zip(&members) {
        sender
            .add_contact(name, &member.address().to_string())
            .await
            .unwrap();
    }
    sender.create_group("bench", &names).await.unwrap();
    members = sync_all(members).await;
    // Warm up: sessions, sender keys handed out.
    sender.send_group_text("bench", "warm up").await.unwrap();
    members = sync_all(members).await;
    sender.sync().await.unwrap();
    eprintln!(
        "{n} members: set up in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let mut outcomes = Vec::new();
    for group in [true, false] {
        let text = format!(
            "{}{}",
            if group { "G" } else { "P" },
            "x".repeat(TEXT_LEN - 1)
        );
        let (mut set, mut times) = listen(members, &text);
        // Let every listener reach its wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        if group {
            let id = sender.send_group_text("bench", &text).await.unwrap();
            sender.wait_sent(&[id]).await.unwrap();
        } else {
            let mut ids = Vec::new();
            for name in &names {
                ids.push(sender.send_text(name, &text).await.unwrap());
            }
            sender.wait_sent(&ids).await.unwrap();
        }
        let mut at = Vec::with_capacity(n - 1);
        while at.len() < n - 1 {
            let t = tokio::time::timeout(Duration::from_secs(120), times.recv())
                .await
                .expect("every member gets it")
                .unwrap();
            at.push(t - start);
        }
        at.sort();
        let mut back: Vec<(usize, Client)> = Vec::new();
        while let Some(r) = set.join_next().await {
            back.push(r.unwrap());
        }
        back.sort_by_key(|(i, _)| *i);
        members = back.into_iter().map(|(_, c)| c).collect();
        // Every copy is still queued: read what the relay holds.
        relay.kill9();
        let held = stored(&relay).await;
        let (data, addr) = (relay.data.clone(), relay.addr);
        relay = Relay::start_at(data, addr);
        let uploaded = if group {
            // One request: the body, and a device key and slot per member.
            held.body_bytes + (n as u64 - 1) * (32 + 48)
        } else {
            // A request per member: its own body, device key and slot.
            held.entry_bytes + (n as u64 - 1) * 32
        };
        outcomes.push(Outcome {
            uploaded,
            stored: held,
            all: at[at.len() - 1],
            half: at[at.len() / 2],
        });
        // Take the copies (they come again after the restart), on new
        // connections.
        for c in &mut members {
            c.disconnect();
        }
        sender.disconnect();
        members = sync_all(members).await;
        sender.sync().await.unwrap();
    }
    for (outcome, how) in outcomes.iter().zip(["sender key, one request", "pairwise"]) {
        let s = &outcome.stored;
        println!(
            "{n:>5} members, {how:<23}: uploaded {:>9} B; relay holds {} shared bodies ({} B) + {} queue entries ({} B of own bodies and slots) = {} B; all {} have it in {:.1} ms (half in {:.1} ms)",
            outcome.uploaded,
            s.bodies,
            s.body_bytes,
            s.entries,
            s.entry_bytes,
            s.body_bytes + s.entry_bytes,
            n - 1,
            outcome.all.as_secs_f64() * 1e3,
            outcome.half.as_secs_f64() * 1e3,
        );
    }
    for c in members {
        c.close().await;
    }
    sender.close().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let only: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    for n in [10, 100, 1000] {
        if only.is_none_or(|o| o == n) {
            run(n).await;
        }
    }
}
