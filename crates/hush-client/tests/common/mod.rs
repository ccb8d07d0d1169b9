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

    /// Starts (or restarts) a relay on `data` and `addr`.
    pub fn start_at(data: PathBuf, addr: SocketAddr) -> Self {
        let bin = relay_binary();
        let out = Command::new(&bin)
            .args(["--data", data.to_str().expect("utf-8"), "fingerprint"])
            .output()
            .expect("runs hush-relay fingerprint");
        assert!(out.status.success(), "fingerprint: {out:?}");
        let fingerprint = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let log = data.join(format!("relay-{}.log", std::process::id()));
        let child = Command::new(&bin)
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
