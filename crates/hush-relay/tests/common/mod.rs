//! Starts the real `hush-relay` binary on loopback for a test.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hush_relay::client::{RelayClient, parse_fingerprint};

/// A running relay process with its own data directory.
pub struct RelayProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub fingerprint: [u8; 32],
    pub log: PathBuf,
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hush-e2e-{name}-{}-{}",
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

impl RelayProcess {
    pub fn start(name: &str) -> Self {
        Self::start_in(temp_dir(name), &[])
    }

    pub fn start_in(data: PathBuf, extra: &[&str]) -> Self {
        let bin = env!("CARGO_BIN_EXE_hush-relay");
        let out = Command::new(bin)
            .args(["--data", data.to_str().expect("utf-8 path"), "fingerprint"])
            .output()
            .expect("runs hush-relay fingerprint");
        assert!(out.status.success(), "fingerprint failed: {out:?}");
        let fingerprint =
            parse_fingerprint(&String::from_utf8_lossy(&out.stdout)).expect("fingerprint");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port())
            .parse()
            .expect("addr");
        let log = data.join("relay.log");
        let child = Command::new(bin)
            .args([
                "--data",
                data.to_str().expect("utf-8 path"),
                "--listen",
                &addr.to_string(),
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starts hush-relay");
        let relay = Self {
            child,
            addr,
            data,
            fingerprint,
            log,
        };
        relay.wait_until_serving();
        relay
    }

    fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains("hush-relay serving")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "relay did not start: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub async fn client(&self) -> RelayClient {
        RelayClient::connect(self.addr, self.fingerprint)
            .await
            .expect("connects")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("waits")
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use hush_crypto::{IdentityKeyPair, OneTimePreKeyPair, PreKeySecrets, SignedPreKeyPair};
use rand_chacha::ChaCha20Rng;

/// A device with its prekey secrets (it can answer X3DH).
pub struct Device {
    pub identity: IdentityKeyPair,
    pub signed: SignedPreKeyPair,
    pub last_resort: SignedPreKeyPair,
    pub one_time: Vec<OneTimePreKeyPair>,
}

impl Device {
    pub fn new(rng: &mut ChaCha20Rng, one_time: u32) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        Self {
            signed: SignedPreKeyPair::generate(rng, &identity, 1),
            last_resort: SignedPreKeyPair::generate_last_resort(rng, &identity, 2),
            one_time: (0..one_time)
                .map(|i| OneTimePreKeyPair::generate(rng, 100 + i))
                .collect(),
            identity,
        }
    }

    pub fn key(&self) -> [u8; 32] {
        *self.identity.public().as_bytes()
    }

    /// Authenticates `client` as this device and uploads its prekeys.
    pub async fn register(&self, client: &RelayClient) {
        client
            .authenticate(&self.identity)
            .await
            .expect("authenticates");
        let stock = client
            .register_prekeys(&self.signed, &self.last_resort, &self.one_time)
            .await
            .expect("registers");
        assert_eq!(stock as usize, self.one_time.len());
    }
}

impl PreKeySecrets for Device {
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        (self.signed.id() == id).then_some(&self.signed)
    }
    fn last_resort_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        (self.last_resort.id() == id).then_some(&self.last_resort)
    }
    fn one_time_prekey(&self, id: u32) -> Option<&OneTimePreKeyPair> {
        self.one_time.iter().find(|k| k.id() == id)
    }
}

/// Fetches `n` bundles of `device` over `client`, all in flight at once,
/// verifies each, and returns which fourth key each one carried.
pub async fn fetch_bundles(
    client: &RelayClient,
    device: [u8; 32],
    n: usize,
) -> Vec<Option<hush_crypto::PreKeyRef>> {
    use hush_proto::relay::{self as proto, client_frame::Request, relay_frame::Body};
    let mut answers = Vec::new();
    for _ in 0..n {
        answers.push(
            client
                .start(Request::FetchBundle(proto::FetchBundle {
                    device_key: device.to_vec(),
                }))
                .await
                .expect("starts"),
        );
    }
    let mut refs = Vec::new();
    for a in answers {
        let Ok(Body::Bundle(proto::Bundle { bundle: Some(b) })) = client.finish(a).await else {
            panic!("bundle expected")
        };
        let bundle =
            hush_crypto::PreKeyBundle::try_from(prost::Message::encode_to_vec(&b).as_slice())
                .expect("decodes")
                .verify()
                .expect("verifies");
        refs.push(bundle.bundle().extra.as_ref().map(|e| e.reference()));
    }
    refs
}

/// A new device registered over `client` with `one_time` one-time
/// prekeys; returns its identity.
pub async fn new_device(
    client: &RelayClient,
    rng: &mut ChaCha20Rng,
    one_time: u32,
) -> IdentityKeyPair {
    let device = Device::new(rng, one_time);
    device.register(client).await;
    device.identity
}
