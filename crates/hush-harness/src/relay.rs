//! The relay logic driven by arbitrary request sequences from several
//! devices, against a reference model written from `spec/relay.md`.
//!
//! A run opens a fresh SQLite store (a real file, WAL, the relay's own
//! settings), then applies [`Step`]s decoded from the input: connect
//! (taking over an earlier connection), register prekeys, fetch bundles,
//! count prekeys, send to any set of devices (resending earlier message
//! ids), take pushes, page (acknowledging a prefix or not), ack, let time
//! pass and sweep, reopen the store as after a restart, publish device
//! lists for the first device's account (linking and revoking the
//! others, with stale, forged and rolled-back versions), fetch them,
//! unregister, and raw frames decoded from the input on an
//! unauthenticated connection. Sends state the devices they expect of
//! an account. Every answer must be exactly the one the model predicts,
//! so:
//!
//! - nothing acknowledged to a sender is lost: every page and push is
//!   the model's queue (same seq, body, slot, expiry), in order, with no
//!   gap, until the recipient acks it or it expires;
//! - no one-time prekey is handed out twice, and bundles follow the spec
//!   (lowest id first, then the last-resort key);
//! - quotas hold (`QUOTA` exactly when a queue would go over, naming
//!   exactly the full queues), resends are not enqueued twice, and
//!   unknown recipients and bad requests get their documented errors;
//! - a send whose expected devices differ from the account's list stores
//!   nothing and names exactly what is missing and removed; a revoked
//!   device loses its queue and connection and never comes back;
//! - the store's totals (devices, bodies, envelopes, bytes, prekeys)
//!   match the model after the run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hush_crypto::devices::{Device, DeviceList, MAX_DEVICES};
use hush_crypto::harness::Violation;
use hush_crypto::{IdentityKeyPair, SignedPreKeyPair};
use hush_proto::relay as proto;
use hush_proto::wire;
use hush_relay::relay::{AUTH_CONTEXT, Connection, Event, Limits, Relay};
use hush_relay::store::sqlite::SqliteStore;
use hush_relay::store::{QueueLimits, Store, StoredList};
use prost::Message;
use proto::client_frame::Request;
use proto::relay_frame::Body;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Devices taking part.
const DEVICES: usize = 4;
/// Most actions taken from one input.
const MAX_STEPS: usize = 300;
const SLOT_LEN: usize = 48;
/// The Unix time a run starts at.
const START: u64 = 1_700_000_000;

/// Small limits, so every one of them is reached. Rate limits are out of
/// reach: the model has no clock for them.
fn limits() -> Limits {
    Limits {
        max_body: 300,
        max_recipients: 3,
        queue: QueueLimits {
            max_envelopes: 6,
            max_bytes: 1_000,
        },
        expiry: Duration::from_secs(100),
        page_size: 4,
        max_one_time_prekeys: 5,
        bundle_burst: 1_000_000_000,
        bundle_refill: Duration::from_nanos(1),
        send_burst: 1_000_000_000,
        send_refill: Duration::from_nanos(1),
    }
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A new connection authenticates as the device (taking over).
    Connect(usize),
    /// The device uploads prekeys with this many new one-time keys.
    Register(usize, u8),
    /// A bundle fetch for the target device.
    Fetch(usize),
    /// The device asks for its one-time prekey stock.
    Count(usize),
    /// A send to the devices in the bit mask, with a body of `len` bytes;
    /// `resend` repeats the message id of an earlier send.
    Send {
        /// Recipient bit mask (bit 4 adds a device that never registers).
        to: u8,
        /// Body length.
        len: u16,
        /// Which earlier message id to reuse, if any.
        resend: Option<usize>,
        /// Bit 0: expect the recipients among devices 0 to 3 as account
        /// 0's devices; bit 1: expect device 3 alone as its account.
        expect: u8,
    },
    /// The device takes what was pushed to it.
    Drain(usize),
    /// The device fetches a page, acknowledging what it has if `ack`.
    Page {
        /// Which device.
        device: usize,
        /// `max_envelopes`.
        max: u32,
        /// `after_seq` = the last seq received, else 0.
        ack: bool,
    },
    /// The device acks the queued envelopes picked by the bit mask (and
    /// a sequence number never assigned).
    Ack(usize, u8),
    /// Time passes, then a sweep.
    Tick(u8),
    /// The relay restarts on the same database.
    Reopen,
    /// Raw bytes as a frame, on an unauthenticated connection.
    Raw(Vec<u8>),
    /// The device publishes a device list of account 0: device 0 and
    /// the devices 1 to 3 in the bit mask, at the stored version plus
    /// `delta` minus 1; `forged` spoils its signature.
    Publish {
        /// Which device's connection publishes.
        by: usize,
        /// Devices 1 to 3, bits 1 to 3.
        mask: u8,
        /// 0 to 3.
        delta: u8,
        /// The signature does not verify.
        forged: bool,
    },
    /// The device (or, if it is not connected, anyone) fetches the device
    /// list of the account of device `account`.
    FetchDevices {
        /// Who asks.
        by: usize,
        /// Whose account.
        account: usize,
    },
    /// The device deletes its registration and queue.
    Unregister(usize),
}

impl Step {
    /// Decodes steps from arbitrary bytes: three per step, a raw frame
    /// takes the bytes it names after them.
    pub fn from_bytes(mut data: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        while let Some((c, rest)) = data.split_first_chunk::<3>() {
            data = rest;
            let d = usize::from(c[1]) % DEVICES;
            steps.push(match c[0] % 16 {
                0 => Step::Connect(d),
                1 => Step::Register(d, c[2] % 8),
                2 => Step::Fetch(d),
                3 => Step::Count(d),
                4 | 5 => Step::Send {
                    to: c[1] & 0x1f,
                    len: u16::from(c[2]) * 2,
                    resend: (c[1] & 0x80 != 0).then_some(usize::from(c[2])),
                    expect: (c[1] >> 5) & 3,
                },
                6 => Step::Drain(d),
                7 => Step::Page {
                    device: d,
                    max: u32::from(c[2] % 6),
                    ack: c[1] & 0x80 != 0,
                },
                8 => Step::Ack(d, c[2]),
                9 => Step::Tick(c[2]),
                10 if c[2] == 0 => Step::Reopen,
                12 => Step::Publish {
                    by: d,
                    mask: c[2] & 0x0e,
                    delta: (c[2] >> 4) & 3,
                    forged: c[2] & 0xc0 == 0xc0,
                },
                13 => Step::FetchDevices {
                    by: d,
                    account: usize::from(c[2]) % DEVICES,
                },
                14 => Step::Unregister(d),
                _ => {
                    let (raw, rest) = data.split_at(usize::from(c[2]).min(data.len()));
                    data = rest;
                    Step::Raw(raw.to_vec())
                }
            });
            if steps.len() == MAX_STEPS {
                break;
            }
        }
        steps
    }
}

/// A device's keys (fixed per index, made once).
struct Keys {
    identity: IdentityKeyPair,
    signed: wire::SignedPreKey,
    last_resort: wire::SignedPreKey,
}

fn keys() -> &'static [Keys] {
    static KEYS: OnceLock<Vec<Keys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([0x5e; 32]);
        (0..=DEVICES)
            .map(|_| {
                let identity = IdentityKeyPair::generate(&mut rng);
                let signed = SignedPreKeyPair::generate(&mut rng, &identity, 1).public();
                let last_resort =
                    SignedPreKeyPair::generate_last_resort(&mut rng, &identity, 2).public();
                let wire = |k: hush_crypto::SignedPreKey| wire::SignedPreKey {
                    id: k.id,
                    public_key: k.public.to_vec(),
                    signature: k.signature.to_vec(),
                };
                Keys {
                    signed: wire(signed),
                    last_resort: wire(last_resort),
                    identity,
                }
            })
            .collect()
    })
}

fn device_key(d: usize) -> [u8; 32] {
    keys()[d].identity.public().as_bytes().to_owned()
}

/// One envelope in the model's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    body: Vec<u8>,
    slot: Vec<u8>,
    expires_at: u64,
    /// Which send stored it (its body is stored once for all recipients).
    send: usize,
}

/// What the relay must hold, by `spec/relay.md`.
#[derive(Default)]
struct Model {
    /// Registered devices by key: their one-time prekey stock by id.
    devices: HashMap<[u8; 32], BTreeMap<u32, Vec<u8>>>,
    queues: HashMap<[u8; 32], BTreeMap<u64, Entry>>,
    /// Every envelope ever stored: a push taken from a notification may
    /// carry one deleted since (`spec/relay.md`, "Deliver").
    history: HashMap<[u8; 32], BTreeMap<u64, Entry>>,
    last_seq: HashMap<[u8; 32], u64>,
    /// Recorded message ids and when they expire.
    recorded: HashMap<Vec<u8>, u64>,
    /// Every one-time prekey ever handed out, by device and id.
    handed_out: HashMap<([u8; 32], u32), Vec<u8>>,
    sends: usize,
    /// Stored device lists by account.
    lists: HashMap<[u8; 32], StoredList>,
    revoked: HashSet<[u8; 32]>,
    /// The day each registered device last authenticated (0: not since
    /// it registered).
    last_seen: HashMap<[u8; 32], u64>,
}

impl Model {
    fn queued(&self, device: &[u8; 32]) -> u64 {
        self.queues.get(device).map_or(0, |q| q.len() as u64)
    }

    fn queued_bytes(&self, device: &[u8; 32]) -> u64 {
        self.queues.get(device).map_or(0, |q| {
            q.values().map(|e| (e.body.len() + SLOT_LEN) as u64).sum()
        })
    }

    /// The answer to a send, and its effect.
    fn send(&mut self, s: &proto::Send, unix_now: u64, limits: &Limits) -> Body {
        if s.message_id.len() != 16 {
            return error_body(proto::ErrorCode::Malformed);
        }
        if s.body.len() > limits.max_body {
            return error_body(proto::ErrorCode::TooLarge);
        }
        if s.recipients.is_empty() || s.recipients.len() > limits.max_recipients {
            return error_body(proto::ErrorCode::Malformed);
        }
        let mut seen: Vec<&[u8]> = Vec::new();
        for r in &s.recipients {
            if r.device_key.len() != 32
                || r.slot.len() != SLOT_LEN
                || seen.contains(&r.device_key.as_slice())
            {
                return error_body(proto::ErrorCode::Malformed);
            }
            seen.push(&r.device_key);
        }
        if !expected_is_valid(&s.expected, limits.max_recipients) {
            return error_body(proto::ErrorCode::Malformed);
        }
        let sent = |duplicate| {
            Body::Sent(proto::Sent {
                message_id: s.message_id.clone(),
                duplicate,
            })
        };
        if self.recorded.contains_key(&s.message_id) {
            return sent(true);
        }
        let mut missing = Vec::new();
        let mut removed = Vec::new();
        let mut stale = Vec::new();
        for e in &s.expected {
            let alone = vec![<[u8; 32]>::try_from(e.account.as_slice()).unwrap_or([0; 32])];
            let listed = self
                .lists
                .get(e.account.as_slice())
                .map_or(&alone, |l| &l.devices);
            let m: Vec<Vec<u8>> = listed
                .iter()
                .filter(|d| !e.devices.iter().any(|x| x == *d))
                .map(|d| d.to_vec())
                .collect();
            let r: Vec<Vec<u8>> = e
                .devices
                .iter()
                .filter(|x| !listed.iter().any(|d| d == x.as_slice()))
                .cloned()
                .collect();
            if !m.is_empty() || !r.is_empty() {
                missing.extend(m.iter().cloned());
                removed.extend(r.iter().cloned());
                stale.push(proto::StaleDevices {
                    account: e.account.clone(),
                    missing: m,
                    removed: r,
                });
            }
        }
        if !stale.is_empty() {
            return Body::Error(proto::Error {
                code: proto::ErrorCode::StaleDevices as i32,
                message: String::new(),
                device_keys: [missing, removed].concat(),
                stale,
            });
        }
        let keys: Vec<[u8; 32]> = s
            .recipients
            .iter()
            .filter_map(|r| <[u8; 32]>::try_from(r.device_key.as_slice()).ok())
            .collect();
        let unknown: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| !self.devices.contains_key(*k))
            .map(|k| k.to_vec())
            .collect();
        if !unknown.is_empty() {
            return error_with(proto::ErrorCode::UnknownDevice, unknown);
        }
        let full: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| {
                self.queued(k) + 1 > limits.queue.max_envelopes
                    || self.queued_bytes(k) + (s.body.len() + SLOT_LEN) as u64
                        > limits.queue.max_bytes
            })
            .map(|k| k.to_vec())
            .collect();
        if !full.is_empty() {
            return error_with(proto::ErrorCode::Quota, full);
        }
        let expires_at = unix_now + limits.expiry.as_secs();
        self.sends += 1;
        for (key, r) in keys.iter().zip(&s.recipients) {
            let seq = self.last_seq.entry(*key).or_insert(0);
            *seq += 1;
            let entry = Entry {
                body: s.body.clone(),
                slot: r.slot.clone(),
                expires_at,
                send: self.sends,
            };
            self.history
                .entry(*key)
                .or_default()
                .insert(*seq, entry.clone());
            self.queues.entry(*key).or_default().insert(*seq, entry);
        }
        self.recorded.insert(s.message_id.clone(), expires_at);
        sent(false)
    }

    /// The answer to a bundle fetch, and its effect.
    fn fetch(&mut self, f: &proto::FetchBundle) -> Result<Body, Violation> {
        let Ok(target) = <[u8; 32]>::try_from(f.device_key.as_slice()) else {
            return Ok(error_body(proto::ErrorCode::Malformed));
        };
        let Some(stock) = self.devices.get_mut(&target) else {
            return Ok(error_body(proto::ErrorCode::UnknownDevice));
        };
        let Some(d) = (0..DEVICES).find(|&d| device_key(d) == target) else {
            return Err(Violation(
                "a registered device the harness does not know".into(),
            ));
        };
        let extra = match stock.pop_first() {
            Some((id, public_key)) => {
                if self
                    .handed_out
                    .insert((target, id), public_key.clone())
                    .is_some()
                {
                    return Err(Violation(format!("one-time prekey {id} handed out twice")));
                }
                wire::pre_key_bundle::Extra::OneTimePrekey(wire::OneTimePreKey { id, public_key })
            }
            None => wire::pre_key_bundle::Extra::LastResortPrekey(keys()[d].last_resort.clone()),
        };
        Ok(Body::Bundle(proto::Bundle {
            bundle: Some(wire::PreKeyBundle {
                identity_key: target.to_vec(),
                signed_prekey: Some(keys()[d].signed.clone()),
                extra: Some(extra),
            }),
        }))
    }

    /// The answer to a page, and its effect (`after_seq` deletes).
    fn page(&mut self, device: &[u8; 32], p: &proto::FetchPage, page_size: u32) -> Body {
        let queue = self.queues.entry(*device).or_default();
        queue.retain(|seq, _| *seq > p.after_seq);
        let n = match p.max_envelopes {
            0 => page_size,
            m => m.min(page_size),
        } as usize;
        let envelopes: Vec<proto::Envelope> = queue
            .iter()
            .take(n)
            .map(|(seq, e)| envelope(*seq, e))
            .collect();
        Body::Page(proto::Page {
            queue_empty: envelopes.len() == queue.len(),
            envelopes,
        })
    }

    /// Removes what expired at `now`; returns how many envelopes.
    fn sweep(&mut self, now: u64) -> u64 {
        let mut swept = 0;
        for queue in self.queues.values_mut() {
            let before = queue.len();
            queue.retain(|_, e| e.expires_at > now);
            swept += (before - queue.len()) as u64;
        }
        self.recorded.retain(|_, expires_at| *expires_at > now);
        swept
    }

    /// Deletes a device's registration, prekeys and queue; returns how
    /// many envelopes were waiting.
    fn remove_device(&mut self, key: &[u8; 32]) -> u64 {
        let queued = self.queued(key);
        self.devices.remove(key);
        self.queues.remove(key);
        self.history.remove(key);
        self.last_seq.remove(key);
        self.last_seen.remove(key);
        queued
    }

    /// The answer to a device list publication from a connection
    /// authenticated as `by` (or none), and its effect.
    fn publish(&mut self, by: Option<[u8; 32]>, p: &proto::PublishDevices) -> Body {
        let Some(by) = by else {
            return error_body(proto::ErrorCode::Unauthenticated);
        };
        let Some(list) = &p.list else {
            return error_body(proto::ErrorCode::Malformed);
        };
        let encoded = list.encode_to_vec();
        let Ok(parsed) = DeviceList::try_from(encoded.as_slice()) else {
            return error_body(proto::ErrorCode::Malformed);
        };
        match parsed.verify() {
            Ok(()) => {}
            Err(
                hush_crypto::devices::DeviceListError::BadSignature
                | hush_crypto::devices::DeviceListError::BadConsent,
            ) => return error_body(proto::ErrorCode::BadSignature),
            Err(_) => return error_body(proto::ErrorCode::Malformed),
        }
        if parsed.version == 0 {
            return error_body(proto::ErrorCode::Malformed);
        }
        let devices: Vec<[u8; 32]> = parsed.devices.iter().map(|d| *d.key.as_bytes()).collect();
        if !devices.contains(&by) {
            return error_body(proto::ErrorCode::Unauthenticated);
        }
        let named: Vec<Vec<u8>> = devices
            .iter()
            .filter(|d| self.revoked.contains(*d))
            .map(|d| d.to_vec())
            .collect();
        if !named.is_empty() {
            return error_with(proto::ErrorCode::Revoked, named);
        }
        let account = *parsed.account.as_bytes();
        let before = match self.lists.get(&account) {
            Some(stored) if stored.version >= parsed.version => {
                return if stored.version == parsed.version && stored.encoded == encoded {
                    Body::Published(proto::Published {
                        version: stored.version,
                        revoked: Vec::new(),
                    })
                } else {
                    error_body(proto::ErrorCode::OldVersion)
                };
            }
            Some(stored) => stored.devices.clone(),
            None => vec![account],
        };
        let dropped: Vec<[u8; 32]> = before
            .into_iter()
            .filter(|d| !devices.contains(d))
            .collect();
        for d in &dropped {
            self.remove_device(d);
            self.revoked.insert(*d);
        }
        self.lists.insert(
            account,
            StoredList {
                account,
                version: parsed.version,
                devices,
                encoded,
            },
        );
        Body::Published(proto::Published {
            version: parsed.version,
            revoked: dropped.iter().map(|d| d.to_vec()).collect(),
        })
    }

    /// The answer to a device list fetch from a connection authenticated
    /// as `by` (or none).
    fn fetch_devices(&self, by: Option<[u8; 32]>, f: &proto::FetchDevices) -> Body {
        if f.account.len() != 32 {
            return error_body(proto::ErrorCode::Malformed);
        }
        let Some(StoredList {
            devices, encoded, ..
        }) = self.lists.get(f.account.as_slice())
        else {
            return error_body(proto::ErrorCode::UnknownDevice);
        };
        let status = match by {
            Some(by) if devices.contains(&by) => devices
                .iter()
                .map(|d| proto::DeviceStatus {
                    device_key: d.to_vec(),
                    last_seen_day: self.last_seen.get(d).copied().unwrap_or(0),
                    queued: self.queued(d),
                })
                .collect(),
            _ => Vec::new(),
        };
        Body::Devices(proto::Devices {
            list: wire::DeviceList::decode(encoded.as_slice()).ok(),
            status,
        })
    }
}

/// The relay's rules for a send's `expected` (`spec/relay.md`).
fn expected_is_valid(expected: &[proto::ExpectedDevices], max_accounts: usize) -> bool {
    let mut accounts: Vec<&[u8]> = Vec::new();
    for e in expected {
        if e.account.len() != 32
            || accounts.contains(&e.account.as_slice())
            || e.devices.is_empty()
            || e.devices.len() > MAX_DEVICES
        {
            return false;
        }
        accounts.push(&e.account);
        let mut devices: Vec<&[u8]> = Vec::new();
        for d in &e.devices {
            if d.len() != 32 || devices.contains(&d.as_slice()) {
                return false;
            }
            devices.push(d);
        }
    }
    expected.len() <= max_accounts
}

fn envelope(seq: u64, e: &Entry) -> proto::Envelope {
    proto::Envelope {
        seq,
        body: e.body.clone(),
        slot: e.slot.clone(),
        expires_at: e.expires_at,
    }
}

fn error_body(code: proto::ErrorCode) -> Body {
    error_with(code, Vec::new())
}

fn error_with(code: proto::ErrorCode, device_keys: Vec<Vec<u8>>) -> Body {
    Body::Error(proto::Error {
        code: code as i32,
        message: String::new(),
        device_keys,
        stale: Vec::new(),
    })
}

/// Compares an answer with the expected one; error messages are free
/// text and not compared.
fn expect(what: &str, got: Option<Body>, want: &Body) -> Result<(), Violation> {
    let got = match got {
        Some(Body::Error(mut e)) => {
            e.message.clear();
            Some(Body::Error(e))
        }
        other => other,
    };
    if got.as_ref() == Some(want) {
        Ok(())
    } else {
        Err(Violation(format!("{what}: expected {want:?}, got {got:?}")))
    }
}

/// A connection the harness holds for a device.
struct Online {
    conn: Connection,
    /// The last seq this connection received.
    delivered: u64,
    live: bool,
}

struct Run {
    path: PathBuf,
    relay: Relay<SqliteStore>,
    model: Model,
    limits: Limits,
    online: HashMap<usize, Online>,
    /// For sends and raw frames.
    anonymous: Connection,
    message_ids: Vec<Vec<u8>>,
    next_request: u64,
    next_exporter: u8,
    next_prekey_id: u32,
    started: Instant,
    unix_now: u64,
}

impl Run {
    async fn new(path: PathBuf) -> Result<Self, Violation> {
        let limits = limits();
        let relay = open(&path, &limits).await?;
        let started = Instant::now();
        let anonymous = relay.connect([0; 32], started);
        Ok(Self {
            path,
            relay,
            model: Model::default(),
            limits,
            online: HashMap::new(),
            anonymous,
            message_ids: Vec::new(),
            next_request: 1,
            next_exporter: 1,
            next_prekey_id: 1,
            started,
            unix_now: START,
        })
    }

    /// Sends one request on `conn` (a device's, or the anonymous one)
    /// and returns the answer's body.
    async fn call(&mut self, device: Option<usize>, request: Request) -> Result<Body, Violation> {
        let id = self.next_request;
        self.next_request += 1;
        let frame = proto::ClientFrame {
            request_id: id,
            request: Some(request),
        };
        let conn = match device.and_then(|d| self.online.get_mut(&d)) {
            Some(o) => &mut o.conn,
            None => &mut self.anonymous,
        };
        let mut frames = self
            .relay
            .handle(conn, frame, self.started, self.unix_now)
            .await;
        match (frames.pop(), frames.is_empty()) {
            (Some(f), true) if f.request_id == id => f
                .body
                .ok_or_else(|| Violation("answer without a body".into())),
            (f, _) => Err(Violation(format!(
                "one answer to request {id} expected, got {f:?} and {} more",
                frames.len()
            ))),
        }
    }

    async fn step(&mut self, step: &Step) -> Result<(), Violation> {
        match step {
            Step::Connect(d) => self.connect(*d).await,
            Step::Register(d, n) => self.register(*d, *n).await,
            Step::Fetch(d) => {
                let request = proto::FetchBundle {
                    device_key: device_key(*d).to_vec(),
                };
                let want = self.model.fetch(&request)?;
                let got = self.call(None, Request::FetchBundle(request)).await?;
                expect("fetch bundle", Some(got), &want)
            }
            Step::Count(d) => {
                let key = device_key(*d);
                let want = match (self.online.contains_key(d), self.model.devices.get(&key)) {
                    (false, _) => error_body(proto::ErrorCode::Unauthenticated),
                    (true, None) => error_body(proto::ErrorCode::UnknownDevice),
                    (true, Some(stock)) => Body::PrekeyStock(proto::PrekeyStock {
                        one_time_prekeys: stock.len() as u32,
                    }),
                };
                let got = self
                    .call(Some(*d), Request::PrekeyCount(proto::PrekeyCount {}))
                    .await?;
                expect("prekey count", Some(got), &want)
            }
            Step::Send {
                to,
                len,
                resend,
                expect,
            } => {
                let message_id = match resend.filter(|_| !self.message_ids.is_empty()) {
                    Some(i) => self.message_ids[i % self.message_ids.len()].clone(),
                    None => {
                        let id = (self.message_ids.len() as u128).to_be_bytes().to_vec();
                        self.message_ids.push(id.clone());
                        id
                    }
                };
                let recipients = (0..=DEVICES)
                    .filter(|d| to & (1 << d) != 0)
                    .map(|d| proto::Recipient {
                        device_key: device_key(d).to_vec(),
                        slot: vec![d as u8 ^ message_id[15]; SLOT_LEN],
                    })
                    .collect();
                let body = (0..*len).map(|i| (i as u8) ^ message_id[15]).collect();
                let mut expected = Vec::new();
                if expect & 1 != 0 {
                    expected.push(proto::ExpectedDevices {
                        account: device_key(0).to_vec(),
                        devices: (0..DEVICES)
                            .filter(|d| to & (1 << d) != 0)
                            .map(|d| device_key(d).to_vec())
                            .collect(),
                    });
                }
                if expect & 2 != 0 {
                    expected.push(proto::ExpectedDevices {
                        account: device_key(3).to_vec(),
                        devices: vec![device_key(3).to_vec()],
                    });
                }
                self.send(proto::Send {
                    message_id,
                    body,
                    recipients,
                    expected,
                })
                .await
            }
            Step::Drain(d) => self.drain(*d).await,
            Step::Page { device, max, ack } => self.page(*device, *max, *ack).await,
            Step::Ack(d, mask) => self.ack(*d, *mask).await,
            Step::Tick(secs) => {
                self.unix_now += u64::from(*secs);
                let want = self.model.sweep(self.unix_now);
                match self.relay.sweep(self.unix_now).await {
                    Ok(n) if n == want => Ok(()),
                    other => Err(Violation(format!("sweep: expected {want}, got {other:?}"))),
                }
            }
            // Run by `check_relay_actions`, which owns the run.
            Step::Reopen => Ok(()),
            Step::Raw(bytes) => self.raw(bytes).await,
            Step::Publish {
                by,
                mask,
                delta,
                forged,
            } => self.publish(*by, *mask, *delta, *forged).await,
            Step::FetchDevices { by, account } => {
                let request = proto::FetchDevices {
                    account: device_key(*account).to_vec(),
                };
                let asker = self.online.contains_key(by).then(|| device_key(*by));
                let want = self.model.fetch_devices(asker, &request);
                let got = self.call(Some(*by), Request::FetchDevices(request)).await?;
                expect("fetch devices", Some(got), &want)
            }
            Step::Unregister(d) => {
                let key = device_key(*d);
                let want = if self.online.contains_key(d) {
                    Body::Unregistered(proto::Unregistered {
                        deleted: self.model.remove_device(&key),
                    })
                } else {
                    error_body(proto::ErrorCode::Unauthenticated)
                };
                let got = self
                    .call(Some(*d), Request::Unregister(proto::Unregister {}))
                    .await?;
                // The connection is no longer the device's.
                self.online.remove(d);
                expect("unregister", Some(got), &want)
            }
        }
    }

    /// Publishes a device list of account 0 from device `by`; revoked
    /// devices' connections must be told.
    async fn publish(
        &mut self,
        by: usize,
        mask: u8,
        delta: u8,
        forged: bool,
    ) -> Result<(), Violation> {
        let account = &keys()[0].identity;
        let devices: Vec<Device> = (0..DEVICES)
            .filter(|d| *d == 0 || mask & (1 << d) != 0)
            .map(|d| Device::consent(&keys()[d].identity, account.public(), &format!("d{d}")))
            .collect::<Result<_, _>>()
            .map_err(|e| Violation(format!("consent: {e}")))?;
        let stored = self
            .model
            .lists
            .get(&device_key(0))
            .map_or(0, |l| l.version);
        let version = (stored + u64::from(delta)).saturating_sub(1);
        let mut list = DeviceList::signed(account, version, devices)
            .map_err(|e| Violation(format!("list: {e}")))?;
        if forged {
            list.signature[0] ^= 1;
        }
        let request = proto::PublishDevices {
            list: wire::DeviceList::decode(list.to_bytes().as_slice()).ok(),
        };
        let asker = self.online.contains_key(&by).then(|| device_key(by));
        let want = self.model.publish(asker, &request);
        let got = self
            .call(Some(by), Request::PublishDevices(request))
            .await?;
        expect("publish devices", Some(got), &want)?;
        let Body::Published(p) = want else {
            return Ok(());
        };
        for d in 0..DEVICES {
            if !p.revoked.contains(&device_key(d).to_vec()) {
                continue;
            }
            let Some(mut online) = self.online.remove(&d) else {
                continue;
            };
            loop {
                match poll(online.conn.next_event()).await {
                    Some(Event::Revoked) => break,
                    Some(Event::Notified(_) | Event::Resync) => {}
                    other => {
                        return Err(Violation(format!(
                            "device {d} revoked, its connection got {other:?}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The relay restarts on the same database: connections are gone,
    /// what was stored stays.
    async fn reopen(self) -> Result<Self, Violation> {
        let Run {
            path,
            relay,
            limits,
            ..
        } = self;
        drop(relay);
        let relay = open(&path, &limits).await?;
        Ok(Run {
            anonymous: relay.connect([0; 32], self.started),
            relay,
            path,
            limits,
            online: HashMap::new(),
            ..self
        })
    }

    async fn send(&mut self, send: proto::Send) -> Result<(), Violation> {
        let want = self.model.send(&send, self.unix_now, &self.limits);
        let got = self.call(None, Request::Send(send)).await?;
        expect("send", Some(got), &want)
    }

    async fn connect(&mut self, d: usize) -> Result<(), Violation> {
        let exporter = [self.next_exporter; 32];
        self.next_exporter = self.next_exporter.wrapping_add(1);
        let conn = self.relay.connect(exporter, self.started);
        let previous = self.online.insert(
            d,
            Online {
                conn,
                delivered: 0,
                live: false,
            },
        );
        let signature = keys()[d]
            .identity
            .sign(&[AUTH_CONTEXT, &exporter[..]].concat());
        let got = self
            .call(
                Some(d),
                Request::Authenticate(proto::Authenticate {
                    device_key: device_key(d).to_vec(),
                    signature: signature.to_vec(),
                }),
            )
            .await?;
        let key = device_key(d);
        if self.model.revoked.contains(&key) {
            self.online.remove(&d);
            return expect(
                "authenticate",
                Some(got),
                &error_body(proto::ErrorCode::Revoked),
            );
        }
        if self.model.devices.contains_key(&key) {
            let day = self.unix_now / 86_400;
            let seen = self.model.last_seen.entry(key).or_insert(0);
            *seen = (*seen).max(day);
        }
        let want = Body::Authenticated(proto::Authenticated {
            queued: self.model.queued(&key),
        });
        expect("authenticate", Some(got), &want)?;
        if let Some(mut previous) = previous {
            // Pushes may still be waiting before the takeover.
            loop {
                match poll(previous.conn.next_event()).await {
                    Some(Event::TakenOver) => break,
                    Some(Event::Notified(_) | Event::Resync) => {}
                    Some(Event::Revoked) | None => {
                        return Err(Violation("the connection taken over was not told".into()));
                    }
                }
            }
        }
        Ok(())
    }

    async fn register(&mut self, d: usize, n: u8) -> Result<(), Violation> {
        let one_time: Vec<wire::OneTimePreKey> = (0..u32::from(n))
            .map(|i| wire::OneTimePreKey {
                id: self.next_prekey_id + i,
                public_key: (self.next_prekey_id + i).to_be_bytes().repeat(8),
            })
            .collect();
        self.next_prekey_id += u32::from(n);
        let key = device_key(d);
        let want = if !self.online.contains_key(&d) {
            error_body(proto::ErrorCode::Unauthenticated)
        } else if one_time.len() > self.limits.max_one_time_prekeys {
            error_body(proto::ErrorCode::TooManyPrekeys)
        } else {
            self.model.last_seen.entry(key).or_insert(0);
            let stock = self.model.devices.entry(key).or_default();
            if !one_time.is_empty() {
                *stock = one_time
                    .iter()
                    .map(|k| (k.id, k.public_key.clone()))
                    .collect();
            }
            Body::Registered(proto::Registered {
                one_time_prekeys: stock.len() as u32,
            })
        };
        let request = Request::RegisterPrekeys(proto::RegisterPrekeys {
            signed_prekey: Some(keys()[d].signed.clone()),
            last_resort_prekey: Some(keys()[d].last_resort.clone()),
            one_time_prekeys: one_time,
        });
        let got = self.call(Some(d), request).await?;
        expect("register", Some(got), &want)
    }

    /// Takes every push and gap fill waiting for the device: each must be
    /// the next envelope of the model's queue after the last one the
    /// connection received.
    async fn drain(&mut self, d: usize) -> Result<(), Violation> {
        let key = device_key(d);
        let Some(online) = self.online.get_mut(&d) else {
            return Ok(());
        };
        loop {
            let frames = match poll(online.conn.next_event()).await {
                None => return Ok(()),
                Some(Event::Notified(n)) => self.relay.deliver(&mut online.conn, n).await,
                Some(Event::Resync) => self.relay.resync(&mut online.conn).await,
                Some(Event::TakenOver | Event::Revoked) => {
                    return Err(Violation(
                        "closed with no second connection and no revocation".into(),
                    ));
                }
            };
            for frame in frames {
                let Some(Body::Deliver(got)) = frame.body else {
                    return Err(Violation(format!(
                        "a push that is not a delivery: {frame:?}"
                    )));
                };
                // The next queued envelope, or one deleted since before it.
                let next = self
                    .model
                    .queues
                    .get(&key)
                    .and_then(|q| q.range(online.delivered + 1..).next())
                    .map(|(seq, _)| *seq);
                let stored = self
                    .model
                    .history
                    .get(&key)
                    .and_then(|h| h.get(&got.seq))
                    .map(|e| envelope(got.seq, e));
                let in_order =
                    got.seq > online.delivered && next.is_none_or(|next| got.seq <= next);
                if !online.live || !in_order || stored.as_ref() != Some(&got) {
                    return Err(Violation(format!(
                        "pushed {got:?} after seq {} (live: {}); next queued {next:?}, stored {stored:?}",
                        online.delivered, online.live
                    )));
                }
                online.delivered = got.seq;
            }
        }
    }

    async fn page(&mut self, d: usize, max: u32, ack: bool) -> Result<(), Violation> {
        let key = device_key(d);
        let Some(online) = self.online.get(&d) else {
            let got = self
                .call(None, Request::FetchPage(proto::FetchPage::default()))
                .await?;
            return expect(
                "page",
                Some(got),
                &error_body(proto::ErrorCode::Unauthenticated),
            );
        };
        let request = proto::FetchPage {
            after_seq: if ack { online.delivered } else { 0 },
            max_envelopes: max,
        };
        let want = self.model.page(&key, &request, self.limits.page_size);
        let got = self.call(Some(d), Request::FetchPage(request)).await?;
        expect("page", Some(got), &want)?;
        if let (Body::Page(page), Some(online)) = (want, self.online.get_mut(&d)) {
            let last = page.envelopes.last().map_or(request.after_seq, |e| e.seq);
            online.delivered = online.delivered.max(last);
            online.live |= page.queue_empty;
        }
        Ok(())
    }

    async fn ack(&mut self, d: usize, mask: u8) -> Result<(), Violation> {
        let key = device_key(d);
        let queued: Vec<u64> = self
            .model
            .queues
            .get(&key)
            .map(|q| q.keys().copied().collect())
            .unwrap_or_default();
        let mut seqs: Vec<u64> = queued
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 7 && mask & (1 << i) != 0)
            .map(|(_, s)| *s)
            .collect();
        if mask & 0x80 != 0 {
            let never = self.model.last_seq.get(&key).copied().unwrap_or(0) + 3;
            seqs.push(never);
            seqs.extend(seqs.first().copied());
        }
        let want = if self.online.contains_key(&d) {
            let queue = self.model.queues.entry(key).or_default();
            let deleted = seqs.iter().filter(|s| queue.remove(s).is_some()).count();
            Body::Acked(proto::Acked {
                deleted: deleted as u32,
            })
        } else {
            error_body(proto::ErrorCode::Unauthenticated)
        };
        let got = self
            .call(Some(d), Request::Ack(proto::Ack { seqs }))
            .await?;
        expect("ack", Some(got), &want)
    }

    /// A frame decoded from raw bytes, on the anonymous connection: only
    /// sends and bundle fetches can succeed there.
    async fn raw(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        let Ok(frame) = proto::ClientFrame::decode(bytes) else {
            return Ok(());
        };
        let want = match (&frame.request, frame.request_id) {
            (_, 0) | (None, _) => Some(error_body(proto::ErrorCode::Malformed)),
            (Some(Request::Send(s)), _) => Some(self.model.send(s, self.unix_now, &self.limits)),
            (Some(Request::FetchBundle(f)), _) => Some(self.model.fetch(f)?),
            (Some(Request::FetchDevices(f)), _) => Some(self.model.fetch_devices(None, f)),
            (Some(Request::Authenticate(_)), _) => None,
            (Some(_), _) => Some(error_body(proto::ErrorCode::Unauthenticated)),
        };
        let id = frame.request_id;
        let mut frames = self
            .relay
            .handle(&mut self.anonymous, frame, self.started, self.unix_now)
            .await;
        let got = match (frames.pop(), frames.is_empty()) {
            (Some(f), true) if f.request_id == id => f.body,
            (f, _) => return Err(Violation(format!("raw frame {id}: answered {f:?}"))),
        };
        match want {
            Some(want) => expect("raw frame", got, &want),
            // A proof for this connection cannot be forged.
            None if matches!(got, Some(Body::Error(_))) => Ok(()),
            None => Err(Violation(format!(
                "forged authentication accepted: {got:?}"
            ))),
        }
    }

    /// After the run: every device's whole queue, paged to the end, is
    /// the model's, account 0's list is the model's, and the store's
    /// totals match.
    async fn finish(&mut self) -> Result<(), Violation> {
        self.step(&Step::FetchDevices {
            by: DEVICES,
            account: 0,
        })
        .await?;
        for d in 0..=DEVICES {
            if d < DEVICES {
                self.connect(d).await?;
                loop {
                    let before = self.model.queued(&device_key(d));
                    self.page(d, 0, true).await?;
                    if before == 0 {
                        break;
                    }
                }
            }
        }
        let stats = self
            .relay
            .store()
            .stats()
            .await
            .map_err(|e| Violation(format!("stats: {e}")))?;
        let model = &self.model;
        let bodies: std::collections::HashSet<usize> = model
            .queues
            .values()
            .flat_map(|q| q.values().map(|e| e.send))
            .collect();
        let want = (
            model.devices.len() as u64,
            model.devices.values().map(|s| s.len() as u64).sum::<u64>(),
            model.queues.values().map(|q| q.len() as u64).sum::<u64>(),
            bodies.len() as u64,
        );
        let got = (
            stats.devices,
            stats.one_time_prekeys,
            stats.queued_envelopes,
            stats.bodies,
        );
        if got != want {
            return Err(Violation(format!(
                "store totals (devices, prekeys, envelopes, bodies) {got:?}, model {want:?}"
            )));
        }
        Ok(())
    }
}

async fn open(path: &std::path::Path, limits: &Limits) -> Result<Relay<SqliteStore>, Violation> {
    let store = SqliteStore::open(path)
        .await
        .map_err(|e| Violation(format!("open store: {e}")))?;
    Ok(Relay::new(store, limits.clone()))
}

/// Polls a future once: its output if ready now.
async fn poll<F: std::future::Future>(future: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::ZERO, future).await.ok()
}

/// Runs the steps decoded from `data` against a fresh relay store.
pub(crate) fn check_relay_actions(data: &[u8]) -> Result<(), Violation> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let steps = Step::from_bytes(data);
    let dir = scratch_dir();
    let path = dir.join(format!(
        "hush-harness-relay-{}-{}.db",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let result = crate::runtime().block_on(async {
        let mut run = Run::new(path.clone()).await?;
        for (i, step) in steps.iter().enumerate() {
            if *step == Step::Reopen {
                run = run.reopen().await?;
                continue;
            }
            run.step(step)
                .await
                .map_err(|v| Violation(format!("step {i} {step:?}: {}", v.0)))?;
        }
        run.finish().await
    });
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    result
}

/// Where run databases go: memory-backed when the machine has it.
fn scratch_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}
