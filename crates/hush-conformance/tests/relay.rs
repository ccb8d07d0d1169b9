//! `hush-conformance relay` end to end: the real binary against the real
//! `hush-relay` on loopback (with its default limits, and configured low
//! so that no check is skipped), against a relay configured otherwise
//! than the checker is told, against a wrong pin, an address where
//! nothing listens, and fake relays that answer garbage or nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hush-conformance");

/// Checks that skip at the default limits, and why: they would need
/// 100,000 envelopes or 1 GiB in a queue, a 30-day wait, or a relay
/// faster than 50,000 sends a second (likely only in release builds).
const SKIPPED_AT_DEFAULTS: [&str; 4] = [
    "queue.expiry",
    "limits.quota_envelopes",
    "limits.quota_bytes",
    "rate.send",
];

/// Every check the checker runs.
const CHECKS: usize = 68;

/// A relay configuration low enough for every check to run.
const LOW_LIMITS: &str = "\
max_body_bytes = 131072
max_recipients = 5
queue_max_envelopes = 20
queue_max_bytes = 2000000
page_size = 10
expiry_secs = 6
sweep_interval_secs = 1
bundle_burst = 10
bundle_refill_secs = 60
send_burst = 100
send_refill_micros = 10000
";

/// `LOW_LIMITS` as the checker's `--limit` options.
fn limit_args(config: &str) -> Vec<String> {
    config
        .lines()
        .flat_map(|line| {
            let (key, value) = line.split_once(" = ").expect("key = value");
            ["--limit".to_string(), format!("{key}={value}")]
        })
        .collect()
}

/// A fresh, empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hush-conformance-relay-{}-{test}",
        std::process::id()
    ));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

static BUILD: OnceLock<PathBuf> = OnceLock::new();

/// The `hush-relay` binary of this build, next to `hush-conformance`,
/// brought up to date once per test run (a binary left by an earlier
/// build may be stale: `cargo test -p hush-conformance` does not build
/// another package's binaries).
fn relay_binary() -> PathBuf {
    BUILD
        .get_or_init(|| {
            let dir = Path::new(BIN).parent().expect("target directory");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "hush-relay", "--bin", "hush-relay"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            assert!(
                build.status().expect("runs cargo build").success(),
                "building hush-relay failed"
            );
            dir.join("hush-relay")
        })
        .clone()
}

/// A `hush-relay` process on loopback with its own data directory.
struct Relay {
    child: Child,
    data: PathBuf,
    addr: SocketAddr,
    pin: String,
    log: PathBuf,
}

impl Relay {
    /// Starts a relay with the TOML `config`.
    fn start(test: &str, config: &str) -> Self {
        let data = scratch(test);
        let bin = relay_binary();
        let out = Command::new(&bin)
            .args(["--data", data.to_str().unwrap(), "fingerprint"])
            .output()
            .expect("runs hush-relay fingerprint");
        assert!(out.status.success(), "fingerprint: {out:?}");
        let pin = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let config_file = data.join("relay.toml");
        std::fs::write(&config_file, config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let log = data.join("relay.log");
        let child = Command::new(&bin)
            .args(["--config", config_file.to_str().unwrap()])
            .args([
                "--data",
                data.to_str().unwrap(),
                "--listen",
                &addr.to_string(),
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starts hush-relay");
        let relay = Self {
            child,
            data,
            addr,
            pin,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !relay.log().contains("hush-relay serving") {
            assert!(
                Instant::now() < deadline,
                "relay did not start: {}",
                relay.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        relay
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// One run of the checker.
struct Run {
    status: ExitStatus,
    /// `(name, result, detail)` per check, in order.
    checks: Vec<(String, String, String)>,
    /// The summary line.
    summary: Value,
    took: Duration,
}

impl Run {
    fn with(&self, result: &str) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|(_, r, _)| r == result)
            .map(|(name, _, _)| name.as_str())
            .collect()
    }

    fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|(_, r, _)| r == "fail")
            .map(|(name, _, detail)| format!("{name}: {detail}"))
            .collect()
    }
}

/// Runs `hush-conformance relay ADDR --pin PIN --json ARGS`; it must end
/// within `limit`.
fn check(addr: SocketAddr, pin: &str, args: &[String], limit: Duration) -> Run {
    let dir = scratch(&format!("run-{}", addr.port()));
    let out_path = dir.join("stdout");
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["relay", &addr.to_string(), "--pin", pin, "--json"])
        .args(args)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs hush-conformance");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "the checker did not finish within {limit:?}:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    let text = std::fs::read_to_string(&out_path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let mut checks = Vec::new();
    let mut summary = Value::Null;
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if let Some(name) = v["check"].as_str() {
            let result = v["result"].as_str().unwrap().to_string();
            let detail = v["detail"].as_str().unwrap_or_default().to_string();
            checks.push((name.to_string(), result, detail));
        } else {
            summary = v["summary"].clone();
        }
    }
    assert!(!summary.is_null(), "no summary line in\n{text}");
    Run {
        status,
        checks,
        summary,
        took,
    }
}

/// hush-relay with its default limits: nothing fails, and only the
/// checks needing a deep queue, a long wait or a fast relay skip.
#[test]
fn hush_relay_passes_at_its_default_limits() {
    let relay = Relay::start("defaults", "");
    let run = check(relay.addr, &relay.pin, &[], Duration::from_secs(300));
    assert!(
        run.failures().is_empty(),
        "failures: {:#?}\nrelay log:\n{}",
        run.failures(),
        relay.log()
    );
    assert!(run.status.success(), "exit {:?}", run.status);
    assert_eq!(run.checks.len(), CHECKS);
    let skipped = run.with("skip");
    assert!(
        skipped
            .iter()
            .all(|name| SKIPPED_AT_DEFAULTS.contains(name)),
        "unexpected skips: {skipped:?}"
    );
    assert!(run.with("pass").len() >= CHECKS - SKIPPED_AT_DEFAULTS.len());
    assert_eq!(run.summary["fail"], 0);
}

/// hush-relay configured low, and the checker told so: every check runs
/// (quotas, expiry, rate limits included) and passes.
#[test]
fn hush_relay_passes_every_check_at_low_limits() {
    let relay = Relay::start("low", LOW_LIMITS);
    let run = check(
        relay.addr,
        &relay.pin,
        &limit_args(LOW_LIMITS),
        Duration::from_secs(300),
    );
    assert!(
        run.failures().is_empty(),
        "failures: {:#?}\nrelay log:\n{}",
        run.failures(),
        relay.log()
    );
    assert!(run.status.success(), "exit {:?}", run.status);
    assert_eq!(
        run.with("pass").len(),
        CHECKS,
        "skipped: {:?}",
        run.with("skip")
    );
    assert_eq!(run.summary["pass"], CHECKS);
}

/// A relay whose limits are not those the checker is told fails the
/// limit checks (non-zero exit); a wrong pin fails the handshake at once.
#[test]
fn other_limits_and_a_wrong_pin_are_detected() {
    let relay = Relay::start("mismatch", LOW_LIMITS);
    let told = LOW_LIMITS
        .replace("queue_max_envelopes = 20", "queue_max_envelopes = 15")
        .replace("page_size = 10", "page_size = 11");
    let mut args = limit_args(&told);
    args.extend(["--only".to_string(), "limits.".to_string()]);
    let run = check(relay.addr, &relay.pin, &args, Duration::from_secs(120));
    assert!(!run.status.success());
    let failed = run.with("fail");
    assert!(
        failed.contains(&"limits.quota_envelopes") && failed.contains(&"limits.page_size"),
        "failed: {:#?}",
        run.failures()
    );
    assert!(
        run.checks
            .iter()
            .all(|(name, _, _)| name == "transport.handshake" || name.starts_with("limits.")),
        "--only limits. ran {:?}",
        run.checks
    );

    let mut wrong = relay.pin.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let run = check(
        relay.addr,
        std::str::from_utf8(&wrong).unwrap(),
        &[],
        Duration::from_secs(30),
    );
    assert!(!run.status.success());
    assert_eq!(run.with("fail"), ["transport.handshake"]);
    assert_eq!(run.checks.len(), 1, "nothing runs without a connection");
}

/// Nothing listening: the handshake fails within the timeout, cleanly.
#[test]
fn nothing_listening_fails_fast() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let pin = "00".repeat(32);
    let args = ["--timeout".to_string(), "2".to_string()];
    let run = check(addr, &pin, &args, Duration::from_secs(30));
    assert!(!run.status.success());
    assert_eq!(run.with("fail"), ["transport.handshake"]);
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
}

/// How a fake relay misbehaves once a client has opened its stream.
#[derive(Clone, Copy)]
enum Fake {
    /// Answers whatever comes with bytes that are no `RelayFrame`.
    Garbage,
    /// Reads everything and answers nothing.
    Silent,
}

/// A fake relay: hush-relay's own TLS identity and QUIC endpoint (ALPN
/// `hush/1`), misbehaving as `fake` on every connection. Returns its
/// address and pin; it serves until the runtime is dropped.
fn fake_relay(runtime: &tokio::runtime::Runtime, test: &str, fake: Fake) -> (SocketAddr, String) {
    let dir = scratch(test);
    let identity = hush_relay::tls::load_or_create(&dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let pin = identity.fingerprint();
    let options = hush_relay::server::TransportOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        keep_alive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        max_streams: 1,
        udp_buffer: 1 << 20,
    };
    let (endpoint, _) = runtime
        .block_on(async { hush_relay::server::bind(&options, identity) })
        .unwrap();
    let addr = endpoint.local_addr().unwrap();
    runtime.spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                let Ok((mut send, mut recv)) = connection.accept_bi().await else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(Some(_)) = recv.read(&mut buf).await {
                    if let Fake::Garbage = fake {
                        let _ = send.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await;
                    }
                }
                connection.closed().await;
            });
        }
    });
    (addr, pin)
}

/// A relay that answers garbage fails every check that talks to it, fast,
/// and the checker does not panic.
#[test]
fn a_relay_answering_garbage_fails() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, pin) = fake_relay(&runtime, "garbage", Fake::Garbage);
    let run = check(addr, &pin, &[], Duration::from_secs(120));
    assert!(!run.status.success());
    assert_eq!(run.checks.len(), CHECKS);
    // The handshake and the handshake-only checks pass: the fake is a
    // real QUIC endpoint with hush's ALPN.
    assert_eq!(
        run.with("pass"),
        [
            "transport.handshake",
            "transport.alpn",
            "transport.server_name"
        ]
    );
    let (_, _, detail) = &run.checks[3];
    assert!(detail.contains("not a RelayFrame"), "{detail}");
}

/// A relay that answers nothing fails with a timeout, not a hang.
#[test]
fn a_silent_relay_fails_with_a_timeout() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, pin) = fake_relay(&runtime, "silent", Fake::Silent);
    let args: Vec<String> = [
        "--timeout",
        "1",
        "--only",
        "auth.",
        "--only",
        "send.anonymous",
    ]
    .map(String::from)
    .to_vec();
    let run = check(addr, &pin, &args, Duration::from_secs(60));
    assert!(!run.status.success());
    assert_eq!(run.with("pass"), ["transport.handshake"]);
    assert!(run.with("fail").len() >= 8, "{:#?}", run.checks);
    assert!(
        run.failures()
            .iter()
            .all(|f| f.contains("nothing from the relay within 1s")),
        "{:#?}",
        run.failures()
    );
}
