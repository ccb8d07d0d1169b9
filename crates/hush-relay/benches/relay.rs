//! Relay benchmarks against the real `hush-relay` binary (release build)
//! on loopback QUIC with durable SQLite (WAL, synchronous=FULL):
//!
//! 1. sustained end-to-end envelopes/s: send, commit, push, ack, delete;
//! 2. p50/p99 send-to-ack and send-to-delivery latency at 5,000/s;
//! 3. backlog drain rate for one device with 100,000 queued;
//! 4. relay resident memory with 1,000 and 10,000 idle devices;
//! 5. the SQLite store alone, without QUIC: envelopes/s enqueued and
//!    acked through `SqliteStore` (what the relay's single writer can do).
//!
//! 6. the same end-to-end throughput with PostgreSQL as the store.
//!
//! `cargo bench -p hush-relay --bench relay [-- throughput|latency|drain|memory|store|pg]`
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hush_crypto::{IdentityKeyPair, SignedPreKeyPair};
use hush_proto::relay as proto;
use hush_relay::client::{RelayClient, endpoint, parse_fingerprint};
use proto::client_frame::Request;
use proto::relay_frame::Body;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Relay {
    child: Child,
    addr: SocketAddr,
    fingerprint: [u8; 32],
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(name: &str) -> Relay {
    start_relay_on(name, None)
}

/// The relay on SQLite, or on the PostgreSQL database `database`.
fn start_relay_on(name: &str, database: Option<&str>) -> Relay {
    let bin = env!("CARGO_BIN_EXE_hush-relay");
    let data = std::env::temp_dir().join(format!("hush-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let out = Command::new(bin)
        .args(["--data", data.to_str().unwrap(), "fingerprint"])
        .output()
        .unwrap();
    let fingerprint = parse_fingerprint(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = data.join("relay.toml");
    // Generous limits: the benchmark measures the relay, not its rate limiter.
    std::fs::write(&config, "send_burst = 1000000\nsend_refill_micros = 1\n").unwrap();
    let log = std::fs::File::create(data.join("relay.log")).unwrap();
    let mut args = vec![
        "--config".to_string(),
        config.to_str().unwrap().to_string(),
        "--data".to_string(),
        data.to_str().unwrap().to_string(),
        "--listen".to_string(),
        addr.to_string(),
    ];
    if let Some(url) = database {
        args.extend(["--database".to_string(), url.to_string()]);
    }
    let child = Command::new(bin)
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    Relay {
        child,
        addr,
        fingerprint,
    }
}

/// CPU time the process has used (user + system), in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let ticks: u64 = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and
            // stime are fields 14 and 15 of the whole line.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

/// CPU seconds per thread name (threads of one name summed).
fn thread_cpu_secs(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ticks = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0);
        *by_name.entry(name.trim().to_string()).or_insert(0.0) += ticks as f64 / 100.0;
    }
    by_name
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn device(client: &RelayClient, rng: &mut ChaCha20Rng) -> IdentityKeyPair {
    let identity = IdentityKeyPair::generate(rng);
    client.authenticate(&identity).await.unwrap();
    let signed = SignedPreKeyPair::generate(rng, &identity, 1);
    let last_resort = SignedPreKeyPair::generate_last_resort(rng, &identity, 2);
    client
        .register_prekeys(&signed, &last_resort, &[])
        .await
        .unwrap();
    identity
}

async fn go_live(client: &RelayClient) {
    let body = client
        .request(Request::FetchPage(proto::FetchPage {
            after_seq: 0,
            max_envelopes: 0,
        }))
        .await
        .unwrap();
    assert!(matches!(
        body,
        Body::Page(proto::Page {
            queue_empty: true,
            ..
        })
    ));
}

fn send(id: u64, body: Vec<u8>, to: &IdentityKeyPair) -> Request {
    let mut message_id = [0u8; 16];
    message_id[..8].copy_from_slice(&id.to_be_bytes());
    Request::Send(proto::Send {
        message_id: message_id.to_vec(),
        body,
        recipients: vec![proto::Recipient {
            device_key: to.public().as_bytes().to_vec(),
            slot: vec![1; 48],
        }],
        // As a client sends: the recipient account's devices (one).
        expected: vec![proto::ExpectedDevices {
            account: to.public().as_bytes().to_vec(),
            devices: vec![to.public().as_bytes().to_vec()],
        }],
    })
}

/// A 256-byte body (the smallest padding bucket) that carries its send time.
fn body(sent_nanos: u64) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    b[..8].copy_from_slice(&sent_nanos.to_be_bytes());
    b
}

type Latencies = Arc<std::sync::Mutex<Vec<u64>>>;

/// Receives pushes and acks them in batches; counts and timestamps.
fn spawn_receiver(
    mut client: RelayClient,
    start: Instant,
    delivered: Arc<AtomicU64>,
    latencies: Option<Latencies>,
) {
    tokio::spawn(async move {
        let mut pending = Vec::new();
        loop {
            let push = if pending.is_empty() {
                client.next_push().await
            } else {
                match tokio::time::timeout(Duration::from_millis(1), client.next_push()).await {
                    Ok(p) => p,
                    Err(_) => {
                        let seqs = std::mem::take(&mut pending);
                        let n = seqs.len() as u64;
                        let _ = client.start(Request::Ack(proto::Ack { seqs })).await;
                        delivered.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                }
            };
            let Some(envelope) = push else { return };
            if let Some(l) = &latencies {
                let sent = u64::from_be_bytes(envelope.body[..8].try_into().unwrap());
                let now = start.elapsed().as_nanos() as u64;
                l.lock().unwrap().push(now.saturating_sub(sent));
            }
            pending.push(envelope.seq);
            if pending.len() >= 256 {
                let seqs = std::mem::take(&mut pending);
                let n = seqs.len() as u64;
                let _ = client.start(Request::Ack(proto::Ack { seqs })).await;
                delivered.fetch_add(n, Ordering::Relaxed);
            }
        }
    });
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

/// Saturation throughput: two senders, each keeping `window` sends in
/// flight, to four live receivers that ack what they get.
async fn throughput(window: usize, database: Option<&str>) {
    let store = if database.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let relay = start_relay_on("throughput", database);
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let start = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    for _ in 0..4 {
        let client = RelayClient::connect(relay.addr, relay.fingerprint)
            .await
            .unwrap();
        let id = device(&client, &mut rng).await;
        go_live(&client).await;
        spawn_receiver(client, start, delivered.clone(), None);
        receivers.push(id);
    }
    let receivers = Arc::new(receivers);
    let duration = Duration::from_secs(8);
    let acked = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for s in 0..2u64 {
        let client = Arc::new(
            RelayClient::connect(relay.addr, relay.fingerprint)
                .await
                .unwrap(),
        );
        let receivers = receivers.clone();
        let acked = acked.clone();
        senders.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut in_flight = std::collections::VecDeque::new();
            while start.elapsed() < duration {
                let to = &receivers[(n % receivers.len() as u64) as usize];
                in_flight.push_back(
                    client
                        .start(send((s << 40) | n, body(0), to))
                        .await
                        .unwrap(),
                );
                n += 1;
                if in_flight.len() >= window
                    && let Some(a) = in_flight.pop_front()
                    && matches!(client.finish(a).await, Ok(Body::Sent(_)))
                {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            for a in in_flight {
                if matches!(client.finish(a).await, Ok(Body::Sent(_))) {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Measure the steady part: from 2 s to the end of sending.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = relay.child.id();
    let threads0 = thread_cpu_secs(pid);
    let (d0, a0, t0, c0, b0) = (
        delivered.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        Instant::now(),
        cpu_secs(pid),
        cpu_secs(std::process::id()),
    );
    for s in senders {
        s.await.unwrap();
    }
    let (d1, a1, t1, c1, b1) = (
        delivered.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        Instant::now(),
        cpu_secs(pid),
        cpu_secs(std::process::id()),
    );
    let threads1 = thread_cpu_secs(pid);
    let secs = (t1 - t0).as_secs_f64();
    let per_thread: Vec<String> = threads1
        .iter()
        .map(|(name, c)| {
            let used = c - threads0.get(name).copied().unwrap_or(0.0);
            format!("{name} {:.1}", used * 1e6 / (d1 - d0).max(1) as f64)
        })
        .collect();
    println!(
        "throughput ({store}): relay CPU per envelope by thread, us: {}",
        per_thread.join(", ")
    );
    println!(
        "throughput ({store}): {:.0} envelopes/s end to end (delivered and acked), {:.0} sends/s acked by the relay (2 senders x {window} in flight, 4 live receivers, 256-byte bodies); relay CPU {:.2} cores = {:.1} us per envelope, load generator {:.2} cores",
        (d1 - d0) as f64 / secs,
        (a1 - a0) as f64 / secs,
        (c1 - c0) / secs,
        (c1 - c0) * 1e6 / (d1 - d0).max(1) as f64,
        (b1 - b0) / secs,
    );
}

async fn latency() {
    let relay = start_relay("latency");
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let start = Instant::now();
    let receiver = RelayClient::connect(relay.addr, relay.fingerprint)
        .await
        .unwrap();
    let bob = device(&receiver, &mut rng).await;
    go_live(&receiver).await;
    let delivery: Latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    spawn_receiver(
        receiver,
        start,
        Arc::new(AtomicU64::new(0)),
        Some(delivery.clone()),
    );
    let sender = Arc::new(
        RelayClient::connect(relay.addr, relay.fingerprint)
            .await
            .unwrap(),
    );
    let rate = 5_000u64;
    let duration = Duration::from_secs(6);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut n = 0u64;
    let mut waits = Vec::new();
    let begin = Instant::now();
    while begin.elapsed() < duration {
        tick.tick().await;
        let due = (begin.elapsed().as_secs_f64() * rate as f64) as u64;
        while n < due {
            let sent = start.elapsed().as_nanos() as u64;
            let answer = sender.start(send(n, body(sent), &bob)).await.unwrap();
            let s = sender.clone();
            waits.push(tokio::spawn(async move {
                let ok = matches!(s.finish(answer).await, Ok(Body::Sent(_)));
                (ok, start.elapsed().as_nanos() as u64 - sent)
            }));
            n += 1;
        }
    }
    let mut acks = Vec::new();
    for w in waits {
        let (ok, nanos) = w.await.unwrap();
        if ok {
            acks.push(nanos);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    acks.sort_unstable();
    let mut d = delivery.lock().unwrap().clone();
    d.sort_unstable();
    println!(
        "latency at {rate}/s for {:.0} s: send-to-ack p50 {:.2} ms p99 {:.2} ms; send-to-delivery p50 {:.2} ms p99 {:.2} ms ({} sent, {} acked, {} delivered)",
        duration.as_secs_f64(),
        percentile(&acks, 0.5),
        percentile(&acks, 0.99),
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        n,
        acks.len(),
        d.len()
    );
}

async fn drain() {
    let relay = start_relay("drain");
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let setup = RelayClient::connect(relay.addr, relay.fingerprint)
        .await
        .unwrap();
    let bob = device(&setup, &mut rng).await;
    setup.close().await;
    let sender = RelayClient::connect(relay.addr, relay.fingerprint)
        .await
        .unwrap();
    let total = 100_000u64;
    let fill = Instant::now();
    let mut window = std::collections::VecDeque::new();
    for n in 0..total {
        window.push_back(sender.start(send(n, body(0), &bob)).await.unwrap());
        if window.len() >= 4096 {
            let a = window.pop_front().unwrap();
            assert!(matches!(sender.finish(a).await, Ok(Body::Sent(_))));
        }
    }
    for a in window {
        assert!(matches!(sender.finish(a).await, Ok(Body::Sent(_))));
    }
    let fill_secs = fill.elapsed().as_secs_f64();
    let client = RelayClient::connect(relay.addr, relay.fingerprint)
        .await
        .unwrap();
    assert_eq!(client.authenticate(&bob).await.unwrap(), total);
    let t = Instant::now();
    let mut after = 0;
    let mut got = 0u64;
    loop {
        let request = Request::FetchPage(proto::FetchPage {
            after_seq: after,
            max_envelopes: 0,
        });
        let Body::Page(page) = client.request(request).await.unwrap() else {
            panic!("page")
        };
        if page.envelopes.is_empty() {
            break;
        }
        got += page.envelopes.len() as u64;
        after = page.envelopes.last().unwrap().seq;
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, total);
    println!(
        "drain: {total} queued envelopes paged and acked in {secs:.2} s = {:.0} envelopes/s (filling the queue ran at {:.0} sends/s)",
        total as f64 / secs,
        total as f64 / fill_secs
    );
}

async fn memory() {
    let relay = start_relay("memory");
    let pid = relay.child.id();
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss_kib(pid);
    let ep = endpoint(relay.fingerprint, false).unwrap();
    let mut clients = Vec::new();
    for target in [1_000usize, 10_000] {
        while clients.len() < target {
            let batch: Vec<_> = (0..200.min(target - clients.len()))
                .map(|_| IdentityKeyPair::generate(&mut rng))
                .collect();
            let mut tasks = Vec::new();
            for identity in batch {
                let ep = ep.clone();
                let addr = relay.addr;
                tasks.push(tokio::spawn(async move {
                    let c = RelayClient::connect_on(&ep, addr).await.unwrap();
                    c.authenticate(&identity).await.unwrap();
                    c
                }));
            }
            for t in tasks {
                clients.push(t.await.unwrap());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(pid);
        println!(
            "memory: {target} idle authenticated devices: relay RSS {:.1} MiB ({:.1} MiB above the idle relay's {:.1} MiB; {:.1} KiB per connection)",
            rss as f64 / 1024.0,
            rss.saturating_sub(base) as f64 / 1024.0,
            base as f64 / 1024.0,
            rss.saturating_sub(base) as f64 / target as f64
        );
    }
}

/// The SQLite store alone: 4,096 enqueues in flight to `devices`
/// devices, each device acking what it got every millisecond.
async fn store(devices: usize) {
    use hush_relay::store::sqlite::SqliteStore;
    use hush_relay::store::{
        Enqueued, Expected, NewEnvelope, PrekeyUpload, QueueLimits, SignedKey, Store,
    };
    let dir =
        std::env::temp_dir().join(format!("hush-bench-store-{}-{devices}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("relay.sqlite")).await.unwrap();
    let key = |id| SignedKey {
        id,
        public: [1; 32],
        signature: [1; 64],
    };
    let keys: Vec<[u8; 32]> = (0..devices)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_be_bytes());
            k
        })
        .collect();
    for k in &keys {
        let upload = PrekeyUpload {
            signed: key(1),
            last_resort: key(2),
            one_time: Vec::new(),
        };
        store.register(*k, upload).await.unwrap();
    }
    let limits = QueueLimits {
        max_envelopes: u64::MAX,
        max_bytes: u64::MAX,
    };
    let body = Arc::new(vec![0u8; 256]);
    let duration = Duration::from_secs(6);
    let start = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let (committed, mut seqs) = tokio::sync::mpsc::unbounded_channel::<(usize, u64)>();
    // Acker: acks each device's envelopes in runs of up to 256, and
    // whatever is pending every millisecond (as a live device would).
    let acker = {
        let store = store.clone();
        let keys = keys.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut pending: Vec<Vec<u64>> = vec![Vec::new(); keys.len()];
            let mut acks = futures_util::stream::FuturesUnordered::new();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let ack = |list: Vec<u64>, d: usize| {
                let (store, key, done) = (store.clone(), keys[d], done.clone());
                async move {
                    let n = store.ack(key, list).await.unwrap();
                    done.fetch_add(u64::from(n), Ordering::Relaxed);
                }
            };
            loop {
                tokio::select! {
                    next = seqs.recv() => {
                        let Some((d, seq)) = next else { break };
                        pending[d].push(seq);
                        if pending[d].len() >= 256 {
                            acks.push(ack(std::mem::take(&mut pending[d]), d));
                        }
                    }
                    _ = tick.tick() => {
                        for (d, list) in pending.iter_mut().enumerate() {
                            if !list.is_empty() {
                                acks.push(ack(std::mem::take(list), d));
                            }
                        }
                    }
                    Some(()) = futures_util::StreamExt::next(&mut acks), if !acks.is_empty() => {}
                }
            }
            while futures_util::StreamExt::next(&mut acks).await.is_some() {}
        })
    };
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    let mut n = 0u64;
    let mut measured = None;
    while start.elapsed() < duration {
        if measured.is_none() && start.elapsed() > Duration::from_secs(2) {
            measured = Some((
                Instant::now(),
                done.load(Ordering::Relaxed),
                cpu_secs(std::process::id()),
            ));
        }
        while inflight.len() < 4096 {
            let d = (n % devices as u64) as usize;
            let mut message_id = [0u8; 16];
            message_id[..8].copy_from_slice(&n.to_be_bytes());
            let envelope = NewEnvelope {
                message_id,
                body: body.clone(),
                recipients: vec![(keys[d], [1; 48])],
                expires_at: u64::MAX >> 2,
                expected: vec![Expected {
                    account: keys[d],
                    devices: vec![keys[d]],
                }],
            };
            let (store, committed) = (store.clone(), committed.clone());
            inflight.push(async move {
                if let Ok(Enqueued::Stored(s)) = store.enqueue(envelope, limits).await {
                    let _ = committed.send((d, s[0]));
                }
            });
            n += 1;
        }
        futures_util::StreamExt::next(&mut inflight).await;
    }
    let (t0, d0, c0) = measured.unwrap();
    let (t1, d1, c1) = (
        Instant::now(),
        done.load(Ordering::Relaxed),
        cpu_secs(std::process::id()),
    );
    while futures_util::StreamExt::next(&mut inflight).await.is_some() {}
    drop(committed);
    acker.await.unwrap();
    let secs = (t1 - t0).as_secs_f64();
    println!(
        "store: {:.0} envelopes/s enqueued, committed and acked through SqliteStore ({devices} devices, 4,096 in flight, acks of up to 256 every ms); process CPU {:.2} cores = {:.1} us per envelope",
        (d1 - d0) as f64 / secs,
        (c1 - c0) / secs,
        (c1 - c0) * 1e6 / (d1 - d0).max(1) as f64,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let run = |name: &str| filter.is_empty() || filter == name;
    if run("throughput") {
        throughput(2_048, None).await;
        throughput(8_192, None).await;
    }
    // Against a fresh database on the PostgreSQL server `.ci/test` uses
    // (or `HUSH_TEST_DATABASE_URL`).
    if run("pg") {
        let url = hush_relay::testing::test_database().await;
        throughput(2_048, Some(&url)).await;
    }
    if run("latency") {
        latency().await;
    }
    if run("drain") {
        drain().await;
    }
    if run("memory") {
        memory().await;
    }
    if run("store") {
        store(4).await;
        store(1_000).await;
    }
}
