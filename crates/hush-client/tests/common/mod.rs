//! Test support: the real `hush-relay` binary on loopback, and the real
//! `hush` binary run as a person would.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hush-client-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

static BUILD: Mutex<()> = Mutex::new(());

/// The `hush-relay` binary of this build (built first if this test run
/// did not build it: `cargo test -p hush-client` alone does not).
pub fn relay_binary() -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf();
    let bin = dir.join("hush-relay");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "hush-relay", "--bin", "hush-relay"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("runs cargo build");
        assert!(status.success(), "building hush-relay failed");
    }
    bin
}

/// A running relay with its own data directory.
pub struct Relay {
    pub child: Child,
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub fingerprint: String,
    pub log: PathBuf,
}

impl Relay {
    pub fn start(name: &str) -> Self {
        let data = temp_dir(&format!("relay-{name}"));
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port())
            .parse()
            .expect("addr");
        Self::start_at(data, addr)
    }

    /// Starts a relay with this configuration file (TOML).
    pub fn start_with(name: &str, config: &str) -> Self {
        let data = temp_dir(&format!("relay-{name}"));
        std::fs::write(data.join("relay.toml"), config).expect("writes the config");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port())
            .parse()
            .expect("addr");
        Self::start_at(data, addr)
    }

    /// Starts (or restarts) a relay on `data` and `addr`, with
    /// `data/relay.toml` as its configuration if there is one.
    pub fn start_at(data: PathBuf, addr: SocketAddr) -> Self {
        let bin = relay_binary();
        let out = Command::new(&bin)
            .args(["--data", data.to_str().expect("utf-8"), "fingerprint"])
            .output()
            .expect("runs hush-relay fingerprint");
        assert!(out.status.success(), "fingerprint: {out:?}");
        let fingerprint = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let log = data.join(format!("relay-{}.log", std::process::id()));
        let mut command = Command::new(&bin);
        let config = data.join("relay.toml");
        if config.exists() {
            command.args(["--config", config.to_str().expect("utf-8")]);
        }
        let child = command
            .args([
                "--data",
                data.to_str().expect("utf-8"),
                "--listen",
                &addr.to_string(),
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("starts hush-relay");
        let relay = Self {
            child,
            addr,
            data,
            fingerprint,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&relay.log).unwrap_or_default();
            if text.contains("hush-relay serving") {
                break;
            }
            assert!(Instant::now() < deadline, "relay did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
        relay
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `hush --home HOME ARGS...`.
pub fn hush(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hush"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("HUSH_HOME")
        .env_remove("HUSH_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .expect("runs hush")
}

/// Runs `hush` and requires success; returns stdout.
pub fn hush_ok(home: &Path, args: &[&str]) -> String {
    let out = hush(home, args);
    assert!(
        out.status.success(),
        "hush {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new profile on `relay` through the library, in its own directory.
pub async fn client(relay: &Relay, name: &str) -> hush_client::Client {
    let pin = hush_relay::client::parse_fingerprint(&relay.fingerprint).expect("pin");
    hush_client::Client::init(
        &temp_dir(name),
        &relay.address(),
        pin,
        hush_client::Unlock::KeyFile,
        hush_client::Options::default(),
    )
    .await
    .expect("init")
}

/// A new profile on `relay`; returns its address.
pub fn init(home: &Path, relay: &Relay) -> String {
    hush_ok(
        home,
        &[
            "init",
            "--relay",
            &relay.address(),
            "--pin",
            &relay.fingerprint,
        ],
    )
    .trim()
    .to_string()
}

/// A UDP proxy between clients and a relay that drops, duplicates,
/// delays and reorders a fraction of the datagrams in both directions
/// (each impairment a quarter of `fraction`).
pub struct LossyProxy {
    pub addr: SocketAddr,
    pub stats: std::sync::Arc<ProxyStats>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default, Debug)]
pub struct ProxyStats {
    pub forwarded: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
    pub duplicated: std::sync::atomic::AtomicU64,
    pub delayed: std::sync::atomic::AtomicU64,
    pub reordered: std::sync::atomic::AtomicU64,
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What to do with one datagram.
enum Fate {
    Pass,
    Drop,
    Duplicate,
    Delay(Duration),
    Reorder,
}

struct Impair {
    rng: std::sync::Mutex<rand_chacha::ChaCha20Rng>,
    fraction: f64,
    stats: std::sync::Arc<ProxyStats>,
}

impl Impair {
    fn fate(&self) -> Fate {
        use rand_core::Rng;
        use std::sync::atomic::Ordering::Relaxed;
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let roll = (rng.next_u32() as f64) / (u32::MAX as f64);
        let quarter = self.fraction / 4.0;
        let fate = if roll < quarter {
            self.stats.dropped.fetch_add(1, Relaxed);
            Fate::Drop
        } else if roll < 2.0 * quarter {
            self.stats.duplicated.fetch_add(1, Relaxed);
            Fate::Duplicate
        } else if roll < 3.0 * quarter {
            self.stats.delayed.fetch_add(1, Relaxed);
            Fate::Delay(Duration::from_millis(5 + u64::from(rng.next_u32() % 45)))
        } else if roll < self.fraction {
            self.stats.reordered.fetch_add(1, Relaxed);
            Fate::Reorder
        } else {
            Fate::Pass
        };
        self.stats.forwarded.fetch_add(1, Relaxed);
        fate
    }
}

/// Sends `data` to `to` from `socket` as `impair` decides; a reordered
/// datagram waits in `held` and goes after the next one.
async fn forward(
    socket: &std::sync::Arc<tokio::net::UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
    impair: &std::sync::Arc<Impair>,
    held: &mut Option<Vec<u8>>,
) {
    match impair.fate() {
        Fate::Drop => return,
        Fate::Duplicate => {
            let _ = socket.send_to(&data, to).await;
            let _ = socket.send_to(&data, to).await;
        }
        Fate::Delay(wait) => {
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = socket.send_to(&data, to).await;
            });
        }
        Fate::Reorder => {
            if let Some(previous) = held.replace(data) {
                let _ = socket.send_to(&previous, to).await;
            }
            return;
        }
        Fate::Pass => {
            let _ = socket.send_to(&data, to).await;
        }
    }
    if let Some(previous) = held.take() {
        let _ = socket.send_to(&previous, to).await;
    }
}

impl LossyProxy {
    pub async fn start(relay: SocketAddr, fraction: f64, seed: u8) -> Self {
        use rand_core::SeedableRng;
        use std::sync::Arc;
        let front = Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("binds"),
        );
        let addr = front.local_addr().expect("addr");
        let stats = Arc::new(ProxyStats::default());
        let impair = Arc::new(Impair {
            rng: std::sync::Mutex::new(rand_chacha::ChaCha20Rng::from_seed([seed; 32])),
            fraction,
            stats: stats.clone(),
        });
        let task = tokio::spawn(async move {
            let mut upstreams: std::collections::HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> =
                std::collections::HashMap::new();
            let mut held = None;
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    return;
                };
                let upstream = match upstreams.get(&client) {
                    Some(u) => u.clone(),
                    None => {
                        let Ok(u) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        let u = Arc::new(u);
                        upstreams.insert(client, u.clone());
                        // Relay -> client, through the same impairments.
                        let (u2, front2, impair2) = (u.clone(), front.clone(), impair.clone());
                        tokio::spawn(async move {
                            let mut held = None;
                            let mut buf = vec![0u8; 65_536];
                            while let Ok((n, _)) = u2.recv_from(&mut buf).await {
                                forward(&front2, client, buf[..n].to_vec(), &impair2, &mut held)
                                    .await;
                            }
                        });
                        u
                    }
                };
                forward(&upstream, relay, buf[..n].to_vec(), &impair, &mut held).await;
            }
        });
        Self { addr, stats, task }
    }
}
