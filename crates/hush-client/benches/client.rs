//! Client benchmarks against the real `hush-relay` binary (release) on
//! loopback QUIC, with real profiles (SQLite, `synchronous = FULL`):
//!
//! 1. first-message latency: bundle fetch + X3DH + encrypt + store +
//!    send + the relay's push + the recipient's decrypt and store;
//! 2. steady-state latency of one message, sender's call to recipient's
//!    stored message (p50/p99), each sent once the previous one's
//!    delivery receipt is back;
//! 3. messages per second one client pushes through encrypt, persist,
//!    send and the relay's acknowledgement;
//! 4. the disk's flush latency, the floor under 1 and 2.
//!
//! `cargo bench -p hush-client --bench client [-- first|steady|push|disk]`
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use hush_client::Client;
use hush_client::client::Event;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{Relay, temp_dir as temp};

/// The release relay, with rate limits out of the way of one client's
/// bursts.
fn start_relay() -> Relay {
    Relay::start_with(
        "bench",
        "send_burst = 1000000\nsend_refill_micros = 1\nbundle_burst = 100000\nbundle_refill_secs = 1\n",
    )
}

async fn client(relay: &Relay, name: &str) -> Client {
    common::client(relay, name).await
}

async fn introduce(a: &mut Client, a_name: &str, b: &mut Client, b_name: &str) {
    let (aa, ba) = (a.address().to_string(), b.address().to_string());
    a.add_contact(b_name, &ba).await.unwrap();
    b.add_contact(a_name, &aa).await.unwrap();
}

/// Runs `client`'s receiving side in a task of its own: every message
/// it stores is reported with the moment it was stored.
fn receiver(mut client: Client) -> tokio::sync::mpsc::UnboundedReceiver<(String, Instant)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(envelope) = client.wait_push().await {
            let events = client.handle_push(envelope).await.unwrap();
            for event in events {
                if let Event::Message(m) = event {
                    let _ = tx.send((m.text, Instant::now()));
                }
            }
            let _ = client.send_receipts().await;
        }
    });
    rx
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn first(relay: &Relay) {
    let mut alice = client(relay, "first-alice").await;
    let mut times = Vec::new();
    for i in 0..40 {
        // A new recipient each time: no session yet.
        let mut bob = client(relay, &format!("first-bob-{i}")).await;
        let name = format!("bob{i}");
        introduce(&mut alice, "alice", &mut bob, &name).await;
        bob.sync().await.unwrap();
        let mut stored = receiver(bob);
        let start = Instant::now();
        alice.send_text(&name, "first").await.unwrap();
        let (_, at) = stored.recv().await.unwrap();
        times.push((at - start).as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "first message (bundle fetch, X3DH, store, send, push, decrypt, store): p50 {:.2} ms, p99 {:.2} ms over {}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.len()
    );
}

async fn steady(relay: &Relay) {
    let mut alice = client(relay, "steady-alice").await;
    let mut bob = client(relay, "steady-bob").await;
    introduce(&mut alice, "alice", &mut bob, "bob").await;
    alice.send_text("bob", "warm up").await.unwrap();
    bob.sync().await.unwrap();
    let mut stored = receiver(bob);
    let mut times = Vec::new();
    for n in 0..500 {
        let start = Instant::now();
        let id = alice
            .send_text("bob", &format!("steady {n}"))
            .await
            .unwrap();
        let (_, at) = stored.recv().await.unwrap();
        times.push((at - start).as_secs_f64() * 1e3);
        // A conversation, not a flood: the next message goes once this
        // one's delivery receipt is back, so each is measured on its own.
        'receipt: loop {
            for event in alice.sync().await.unwrap() {
                if let Event::Status { id: of, status, .. } = event
                    && of == id
                    && status == hush_client::Status::Delivered
                {
                    break 'receipt;
                }
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "steady state, sender's call to recipient's stored message: p50 {:.2} ms, p99 {:.2} ms over {}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.len()
    );
}

async fn push(relay: &Relay) {
    let mut alice = client(relay, "push-alice").await;
    let mut bob = client(relay, "push-bob").await;
    introduce(&mut alice, "alice", &mut bob, "bob").await;
    alice.send_text("bob", "warm up").await.unwrap();
    let n = 5_000;
    let texts: Vec<String> = (0..n).map(|i| format!("message {i}")).collect();
    let start = Instant::now();
    let ids = alice.send_texts("bob", &texts).await.unwrap();
    alice.wait_sent(&ids).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "one client pushing {n} messages (encrypt, store, send, relay ack): {:.0} messages/s",
        n as f64 / secs
    );
}

/// The disk's floor in the same run: every latency above waits for at
/// least two flushes (the sender's commit and the relay's), so the
/// machine's flush latency bounds what they can be.
fn disk() {
    use std::os::unix::fs::FileExt;
    let path = temp("disk").join("flush");
    let file = std::fs::File::create(&path).unwrap();
    file.write_all_at(&[0u8; 4096 * 64], 0).unwrap();
    file.sync_all().unwrap();
    let mut times = Vec::new();
    for i in 0..2000u64 {
        file.write_all_at(&[1u8; 4096], (i % 64) * 4096).unwrap();
        let start = Instant::now();
        file.sync_data().unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_micros(200));
    }
    times.sort_by(f64::total_cmp);
    println!(
        "disk floor, one 4 KiB write + fdatasync: p50 {:.2} ms, p99 {:.2} ms over {}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let run = |name: &str| filter.is_empty() || filter == name;
    let relay = start_relay();
    if run("first") {
        first(&relay).await;
    }
    if run("steady") {
        steady(&relay).await;
    }
    if run("push") {
        push(&relay).await;
    }
    if run("disk") {
        disk();
    }
}
