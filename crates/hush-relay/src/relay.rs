//! The relay logic (`spec/relay.md`): requests in, responses and pushes
//! out, over a [`Store`]. No sockets here; the QUIC shell (`server`)
//! feeds frames in and writes what comes out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hush_crypto::devices::{DeviceList, DeviceListError, MAX_DEVICES};
use hush_crypto::prekey::ExtraPreKey;
use hush_crypto::{IdentityKey, OneTimePreKey, PreKeyBundle, SignedPreKey};
use hush_proto::relay as proto;
use hush_proto::wire;
use tokio::sync::{mpsc, oneshot};

use crate::store::{
    AccountKey, CommitListener, Committed, DeviceKey, Enqueued, Expected, MessageId, NewEnvelope,
    PrekeyUpload, Published, QueueLimits, Seen, SignedKey, Slot, Store, StoreError, StoredEnvelope,
    StoredList,
};

/// Domain separation for the device auth signature.
pub const AUTH_CONTEXT: &[u8] = b"hush-relay-auth-v1";
/// TLS exporter label for the auth challenge.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-hush-relay-auth";

/// Operator-visible limits and timings (`spec/relay.md`, "Limits").
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest sealed body accepted, bytes.
    pub max_body: usize,
    /// Most recipients in one send.
    pub max_recipients: usize,
    /// Per-queue quota.
    pub queue: QueueLimits,
    /// How long an envelope waits before it is swept.
    pub expiry: Duration,
    /// Most envelopes in one page.
    pub page_size: u32,
    /// Most one-time prekeys in one upload.
    pub max_one_time_prekeys: usize,
    /// Bundle fetches: burst and refill interval, per connection and
    /// per target device.
    pub bundle_burst: u32,
    /// One token back per this interval.
    pub bundle_refill: Duration,
    /// Sends: burst and refill interval, per connection.
    pub send_burst: u32,
    /// One token back per this interval.
    pub send_refill: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 64 * 1024,
            max_recipients: 1_000,
            queue: QueueLimits {
                max_envelopes: 100_000,
                max_bytes: 1 << 30,
            },
            expiry: Duration::from_secs(30 * 24 * 3600),
            page_size: 512,
            max_one_time_prekeys: 100,
            bundle_burst: 50,
            bundle_refill: Duration::from_secs(6),
            send_burst: 10_000,
            send_refill: Duration::from_micros(20),
        }
    }
}

/// A token bucket.
#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, burst: u32, refill: Duration, now: Instant) -> Result<(), Duration> {
        let per_sec = 1.0 / refill.as_secs_f64().max(1e-9);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(f64::from(burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_sec))
        }
    }

    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// Whether the bucket has refilled completely by `now` (and so is
    /// the same as a new one).
    fn is_full(&self, burst: u32, refill: Duration, now: Instant) -> bool {
        let per_sec = 1.0 / refill.as_secs_f64().max(1e-9);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * per_sec >= f64::from(burst)
    }
}

/// Per-target buckets. A full bucket is the same as none, so full ones
/// are dropped whenever the table has doubled since the last sweep:
/// memory follows the targets fetched in the last refill period, not
/// every key ever asked for.
struct TargetBuckets {
    buckets: HashMap<DeviceKey, Bucket>,
    sweep_at: usize,
}

impl TargetBuckets {
    /// The table size that triggers the first sweep.
    const FIRST_SWEEP: usize = 1024;

    fn new() -> Self {
        Self {
            buckets: HashMap::new(),
            sweep_at: Self::FIRST_SWEEP,
        }
    }

    fn take(
        &mut self,
        target: DeviceKey,
        burst: u32,
        refill: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        if self.buckets.len() >= self.sweep_at {
            self.buckets.retain(|_, b| !b.is_full(burst, refill, now));
            self.sweep_at = (2 * self.buckets.len()).max(Self::FIRST_SWEEP);
        }
        self.buckets
            .entry(target)
            .or_insert_with(|| Bucket::full(burst, now))
            .take(burst, refill, now)
    }
}

/// What [`Relay::begin`] made of a request.
pub enum Handled {
    /// The answer.
    Done(proto::RelayFrame),
    /// A validated request to finish with [`Relay::commit`]: it needs the
    /// store but no more connection state, so it may run concurrently.
    Commit(Deferred),
}

/// A validated send or ack, not yet stored.
pub struct Deferred {
    request_id: u64,
    work: Work,
}

enum Work {
    Send(NewEnvelope),
    Ack(DeviceKey, Vec<u64>),
}

/// A push to a connected device.
#[derive(Clone, Debug)]
pub enum Notification {
    /// Envelopes one commit of this relay just stored in the device's
    /// queue, in sequence order.
    Committed(Vec<Pushed>),
    /// Another relay committed to its queue: read the store.
    Wake,
}

/// An envelope just committed, as pushed.
#[derive(Clone, Debug)]
pub struct Pushed {
    seq: u64,
    /// Shared by every recipient of the envelope.
    body: Arc<Vec<u8>>,
    slot: Slot,
    expires_at: u64,
    committed: Instant,
}

/// The most sequence numbers one `Ack` may list.
pub const MAX_ACK: usize = 4096;

/// Capacity of a connection's notification buffer.
const NOTIFY_CAPACITY: usize = 1024;

/// Envelopes waiting in a connection's notification buffer at most; past
/// it the connection reads from the store instead.
const PUSH_BUFFER: usize = 4096;

struct Online {
    connection: u64,
    notify: mpsc::Sender<Notification>,
    /// Envelopes in `notify` not yet taken.
    buffered: Arc<AtomicUsize>,
    /// Set when a notification could not be buffered: resync from store.
    overflowed: Arc<AtomicBool>,
    takeover: Option<oneshot::Sender<Ended>>,
}

/// Why a device's connection is closed from outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    TakenOver,
    Revoked,
}

/// The devices connected now. Told by the store after every commit (and
/// by other relays through it), and wakes the recipients' connections.
#[derive(Default)]
struct Registry {
    online: Mutex<HashMap<DeviceKey, Online>>,
}

impl Registry {
    fn wake_one(o: &Online) {
        if o.notify.try_send(Notification::Wake).is_err() {
            o.overflowed.store(true, Ordering::Release);
        }
    }
}

impl CommitListener for Registry {
    fn committed(&self, commit: &[Committed<'_>]) {
        let Ok(online) = self.online.lock() else {
            return;
        };
        let now = Instant::now();
        // One notification per connected recipient per commit.
        let mut pushes: HashMap<&DeviceKey, Vec<Pushed>> = HashMap::new();
        for c in commit {
            for ((device, slot), seq) in c.recipients.iter().zip(c.seqs) {
                if online.contains_key(device) {
                    pushes.entry(device).or_default().push(Pushed {
                        seq: *seq,
                        body: c.body.clone(),
                        slot: *slot,
                        expires_at: c.expires_at,
                        committed: now,
                    });
                }
            }
        }
        for (device, pushed) in pushes {
            let Some(o) = online.get(device) else {
                continue;
            };
            let n = pushed.len();
            let room = o.buffered.fetch_add(n, Ordering::AcqRel) + n <= PUSH_BUFFER;
            if !room || o.notify.try_send(Notification::Committed(pushed)).is_err() {
                o.buffered.fetch_sub(n, Ordering::AcqRel);
                o.overflowed.store(true, Ordering::Release);
            }
        }
    }

    fn wake(&self, device: &DeviceKey) {
        if let Ok(online) = self.online.lock()
            && let Some(o) = online.get(device)
        {
            Registry::wake_one(o);
        }
    }

    fn wake_all(&self) {
        if let Ok(online) = self.online.lock() {
            for o in online.values() {
                Registry::wake_one(o);
            }
        }
    }

    fn taken_over(&self, device: &DeviceKey) {
        self.end(device, Ended::TakenOver);
    }

    fn revoked(&self, device: &DeviceKey) {
        self.end(device, Ended::Revoked);
    }
}

impl Registry {
    fn end(&self, device: &DeviceKey, why: Ended) {
        if let Ok(mut online) = self.online.lock()
            && let Some(mut o) = online.remove(device)
            && let Some(tx) = o.takeover.take()
        {
            let _ = tx.send(why);
        }
    }
}

/// Counters for metrics.
#[derive(Default, Debug)]
pub struct Counters {
    /// Envelopes accepted (per recipient).
    pub envelopes_in: AtomicU64,
    /// Envelopes delivered (pages and pushes).
    pub envelopes_out: AtomicU64,
    /// Envelopes deleted by recipient acks.
    pub acks: AtomicU64,
    /// Sends rejected for quota.
    pub quota_rejections: AtomicU64,
    /// Sends rejected because the sender's device lists were stale.
    pub stale_rejections: AtomicU64,
    /// Devices revoked by device lists published here.
    pub revoked_devices: AtomicU64,
    /// Envelopes swept by expiry.
    pub expired: AtomicU64,
    /// Requests rejected by rate limits.
    pub rate_limited: AtomicU64,
    /// Open connections.
    pub connections: AtomicU64,
    /// Connections refused at the `max_connections` cap.
    pub refused_connections: AtomicU64,
    /// Send commit latency.
    pub commit_latency: crate::metrics::Histogram,
    /// Commit-to-push latency.
    pub delivery_latency: crate::metrics::Histogram,
}

/// The relay: shared by every connection.
pub struct Relay<S: Store> {
    store: S,
    limits: Limits,
    registry: Arc<Registry>,
    targets: Mutex<TargetBuckets>,
    next_connection: AtomicU64,
    /// Counters for metrics.
    pub counters: Counters,
}

/// One connection's state in the relay.
pub struct Connection {
    id: u64,
    exporter: [u8; 32],
    device: Option<DeviceKey>,
    /// Highest sequence number handed to the device on this connection.
    delivered: u64,
    /// The device has paged to the end: new envelopes are pushed.
    live: bool,
    notifications: Option<mpsc::Receiver<Notification>>,
    /// Envelopes waiting in `notifications`.
    buffered: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
    /// More is waiting than the last gap fill read.
    resync: bool,
    /// A gap fill failed: try again at this time.
    retry_at: Option<tokio::time::Instant>,
    takeover: Option<oneshot::Receiver<Ended>>,
    bundles: Bucket,
    sends: Bucket,
}

impl Connection {
    /// The authenticated device, if any.
    pub fn device(&self) -> Option<&DeviceKey> {
        self.device.as_ref()
    }

    /// A notification already waiting, without waiting.
    pub fn try_notification(&mut self) -> Option<Notification> {
        self.notifications.as_mut()?.try_recv().ok()
    }

    /// Waits for the next push for this connection, or for a takeover.
    /// Never resolves before authentication.
    pub async fn next_event(&mut self) -> Event {
        if self.resync && self.live {
            self.resync = false;
            return Event::Resync;
        }
        let (Some(rx), Some(takeover)) = (self.notifications.as_mut(), self.takeover.as_mut())
        else {
            return std::future::pending().await;
        };
        let retry = self.retry_at;
        let due = async move {
            match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            n = rx.recv() => match n {
                Some(n) => return Event::Notified(n),
                None => None,
            },
            why = takeover => why.ok(),
            () = due => {
                self.retry_at = None;
                return Event::Resync;
            }
        };
        // A closed channel: the registry dropped it after saying why.
        match ended.or_else(|| self.takeover.as_mut()?.try_recv().ok()) {
            Some(Ended::Revoked) => Event::Revoked,
            _ => Event::TakenOver,
        }
    }
}

/// Something that happened to a connection outside its requests.
#[derive(Debug)]
pub enum Event {
    /// An envelope was committed to this device's queue.
    Notified(Notification),
    /// Another connection authenticated as this device.
    TakenOver,
    /// The device was dropped from its account's device list.
    Revoked,
    /// A gap fill stopped at a page boundary: call [`Relay::resync`].
    Resync,
}

fn error(request_id: u64, code: proto::ErrorCode, message: impl Into<String>) -> proto::RelayFrame {
    error_with(request_id, code, message, Vec::new())
}

fn error_with(
    request_id: u64,
    code: proto::ErrorCode,
    message: impl Into<String>,
    devices: Vec<DeviceKey>,
) -> proto::RelayFrame {
    proto::RelayFrame {
        request_id,
        body: Some(proto::relay_frame::Body::Error(proto::Error {
            code: code as i32,
            message: message.into(),
            device_keys: devices.iter().map(|d| d.to_vec()).collect(),
            stale: Vec::new(),
        })),
    }
}

fn unauthenticated(request_id: u64) -> proto::RelayFrame {
    error(
        request_id,
        proto::ErrorCode::Unauthenticated,
        "authenticate first",
    )
}

fn reply(request_id: u64, body: proto::relay_frame::Body) -> proto::RelayFrame {
    proto::RelayFrame {
        request_id,
        body: Some(body),
    }
}

fn store_error(request_id: u64, e: StoreError) -> proto::RelayFrame {
    match e {
        StoreError::UnknownDevices(devices) => error_with(
            request_id,
            proto::ErrorCode::UnknownDevice,
            "unknown recipient device",
            devices,
        ),
        StoreError::Quota(devices) => error_with(
            request_id,
            proto::ErrorCode::Quota,
            "recipient queue over quota",
            devices,
        ),
        StoreError::StaleDevices(stale) => {
            let keys = |f: fn(&crate::store::Stale) -> &Vec<DeviceKey>| {
                stale
                    .iter()
                    .flat_map(move |s| f(s).iter().map(|d| d.to_vec()))
                    .collect::<Vec<_>>()
            };
            let device_keys = [keys(|s| &s.missing), keys(|s| &s.removed)].concat();
            proto::RelayFrame {
                request_id,
                body: Some(proto::relay_frame::Body::Error(proto::Error {
                    code: proto::ErrorCode::StaleDevices as i32,
                    message: "the recipients' device lists changed; fetch them and send again"
                        .into(),
                    device_keys,
                    stale: stale
                        .iter()
                        .map(|s| proto::StaleDevices {
                            account: s.account.to_vec(),
                            missing: s.missing.iter().map(|d| d.to_vec()).collect(),
                            removed: s.removed.iter().map(|d| d.to_vec()).collect(),
                        })
                        .collect(),
                })),
            }
        }
        StoreError::Revoked => error(
            request_id,
            proto::ErrorCode::Revoked,
            "this device was removed from its account",
        ),
        StoreError::Backend(_) | StoreError::Conflict(_) | StoreError::Closed => {
            tracing::error!(error = %e, "store failure");
            error(
                request_id,
                proto::ErrorCode::Internal,
                "relay storage failure; retry",
            )
        }
    }
}

fn envelope_frame(e: &StoredEnvelope) -> proto::Envelope {
    proto::Envelope {
        seq: e.seq,
        body: e.body.clone(),
        slot: e.slot.to_vec(),
        expires_at: e.expires_at,
    }
}

/// Checks a send's `expected` field: accounts and devices of 32 bytes,
/// no account twice, 1 to `MAX_DEVICES` devices each without repeats.
fn parse_expected(
    expected: &[proto::ExpectedDevices],
    max_accounts: usize,
) -> Result<Vec<Expected>, String> {
    if expected.len() > max_accounts {
        return Err(format!("at most {max_accounts} expected accounts"));
    }
    let mut out: Vec<Expected> = Vec::with_capacity(expected.len());
    for e in expected {
        let account = key32("expected.account", &e.account)?;
        if out.iter().any(|x| x.account == account) {
            return Err("an account appears twice in expected".into());
        }
        if e.devices.is_empty() || e.devices.len() > MAX_DEVICES {
            return Err(format!("1 to {MAX_DEVICES} expected devices per account"));
        }
        let mut devices = Vec::with_capacity(e.devices.len());
        for d in &e.devices {
            let d = key32("expected.devices", d)?;
            if devices.contains(&d) {
                return Err("a device appears twice in an expected account".into());
            }
            devices.push(d);
        }
        out.push(Expected { account, devices });
    }
    Ok(out)
}

fn key32(field: &str, bytes: &[u8]) -> Result<[u8; 32], String> {
    bytes
        .try_into()
        .map_err(|_| format!("{field} must be 32 bytes, got {}", bytes.len()))
}

fn signed_key(field: &str, k: Option<&wire::SignedPreKey>) -> Result<SignedKey, String> {
    let k = k.ok_or_else(|| format!("{field} missing"))?;
    Ok(SignedKey {
        id: k.id,
        public: key32(field, &k.public_key)?,
        signature: k
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| format!("{field} signature must be 64 bytes"))?,
    })
}

fn to_wire(k: &SignedKey) -> SignedPreKey {
    SignedPreKey {
        id: k.id,
        public: k.public,
        signature: k.signature,
    }
}

impl<S: Store> Relay<S> {
    /// A relay over `store` with `limits`.
    pub fn new(store: S, limits: Limits) -> Self {
        let registry = Arc::new(Registry::default());
        store.set_listener(registry.clone());
        Self {
            store,
            limits,
            registry,
            targets: Mutex::new(TargetBuckets::new()),
            next_connection: AtomicU64::new(1),
            counters: Counters::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Per-target bundle-fetch buckets held now.
    pub fn target_buckets(&self) -> usize {
        self.targets.lock().map(|t| t.buckets.len()).unwrap_or(0)
    }

    /// Devices connected and authenticated now.
    pub fn online_devices(&self) -> usize {
        self.registry.online.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// State for a new connection whose TLS exporter output (label
    /// [`EXPORTER_LABEL`], empty context, 32 bytes) is `exporter`.
    pub fn connect(&self, exporter: [u8; 32], now: Instant) -> Connection {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        Connection {
            id: self.next_connection.fetch_add(1, Ordering::Relaxed),
            exporter,
            device: None,
            delivered: 0,
            live: false,
            notifications: None,
            buffered: Arc::new(AtomicUsize::new(0)),
            overflowed: Arc::new(AtomicBool::new(false)),
            resync: false,
            retry_at: None,
            takeover: None,
            bundles: Bucket::full(self.limits.bundle_burst, now),
            sends: Bucket::full(self.limits.send_burst, now),
        }
    }

    /// Forgets a closed connection.
    pub fn disconnect(&self, connection: &Connection) {
        self.counters.connections.fetch_sub(1, Ordering::Relaxed);
        self.go_offline(connection);
    }

    /// Removes the connection's device from the devices online, unless
    /// another connection took it over.
    fn go_offline(&self, connection: &Connection) {
        if let (Some(device), Ok(mut online)) = (connection.device, self.registry.online.lock())
            && online
                .get(&device)
                .is_some_and(|o| o.connection == connection.id)
        {
            online.remove(&device);
        }
    }

    /// Makes a connection unauthenticated again, dropping its pushes.
    fn disconnect_device(&self, conn: &mut Connection) {
        self.go_offline(conn);
        conn.device = None;
        conn.notifications = None;
        conn.takeover = None;
        conn.buffered = Arc::new(AtomicUsize::new(0));
        conn.overflowed = Arc::new(AtomicBool::new(false));
        conn.live = false;
        conn.delivered = 0;
        conn.resync = false;
        conn.retry_at = None;
    }

    /// Handles one client frame; returns the frames to send back.
    pub async fn handle(
        &self,
        conn: &mut Connection,
        frame: proto::ClientFrame,
        now: Instant,
        unix_now: u64,
    ) -> Vec<proto::RelayFrame> {
        match self.begin(conn, frame, now, unix_now).await {
            Handled::Done(frame) => vec![frame],
            Handled::Commit(send) => vec![self.commit(send).await],
        }
    }

    /// Handles one client frame up to the point where it needs no more
    /// connection state: everything but a send is answered here; a send
    /// is validated and rate limited here and committed by
    /// [`Relay::commit`], which the shell runs concurrently so one
    /// connection can have many sends in one commit batch.
    pub async fn begin(
        &self,
        conn: &mut Connection,
        frame: proto::ClientFrame,
        now: Instant,
        unix_now: u64,
    ) -> Handled {
        use proto::client_frame::Request;
        let id = frame.request_id;
        if id == 0 {
            return Handled::Done(error(
                0,
                proto::ErrorCode::Malformed,
                "request_id must not be 0",
            ));
        }
        let Some(request) = frame.request else {
            return Handled::Done(error(id, proto::ErrorCode::Malformed, "empty request"));
        };
        Handled::Done(match request {
            Request::Authenticate(a) => self.authenticate(conn, id, a, unix_now).await,
            Request::RegisterPrekeys(r) => self.register(conn, id, r).await,
            Request::FetchBundle(f) => self.fetch_bundle(conn, id, f, now).await,
            Request::PrekeyCount(_) => self.prekey_count(conn, id).await,
            Request::Send(s) => match self.prepare_send(conn, id, s, now, unix_now) {
                Ok(send) => return Handled::Commit(send),
                Err(frame) => *frame,
            },
            Request::FetchPage(p) => self.fetch_page(conn, id, p).await,
            Request::Ack(a) => return self.prepare_ack(conn, id, a),
            Request::PublishDevices(p) => self.publish_devices(conn, id, p).await,
            Request::FetchDevices(f) => self.fetch_devices(conn, id, f, now).await,
            Request::Unregister(_) => self.unregister(conn, id).await,
        })
    }

    async fn authenticate(
        &self,
        conn: &mut Connection,
        id: u64,
        a: proto::Authenticate,
        unix_now: u64,
    ) -> proto::RelayFrame {
        let device = match key32("device_key", &a.device_key) {
            Ok(d) => d,
            Err(m) => return error(id, proto::ErrorCode::Malformed, m),
        };
        let Ok(signature) = <[u8; 64]>::try_from(a.signature.as_slice()) else {
            return error(
                id,
                proto::ErrorCode::Malformed,
                "signature must be 64 bytes",
            );
        };
        let Ok(identity) = IdentityKey::from_bytes(&device) else {
            return error(
                id,
                proto::ErrorCode::Malformed,
                "device_key is not a valid public key",
            );
        };
        let signed = [AUTH_CONTEXT, &conn.exporter[..]].concat();
        if !identity.verify(&signed, &signature) {
            return error(
                id,
                proto::ErrorCode::BadSignature,
                "auth proof does not verify for this connection",
            );
        }
        if conn.device.is_some_and(|d| d != device) {
            return error(
                id,
                proto::ErrorCode::Malformed,
                "connection already authenticated as another device",
            );
        }
        // Read before any state changes: a failure here leaves the
        // connection, and any other connection of this device, as it was.
        let queued = match self.store.seen(device, unix_now / 86_400).await {
            Ok(Seen::Queued(queued)) => queued,
            Ok(Seen::Revoked) => {
                return error(
                    id,
                    proto::ErrorCode::Revoked,
                    "this device was removed from its account",
                );
            }
            Err(e) => return store_error(id, e),
        };
        let (notify, notifications) = mpsc::channel(NOTIFY_CAPACITY);
        let buffered = Arc::new(AtomicUsize::new(0));
        let (takeover_tx, takeover_rx) = oneshot::channel();
        let previous = match self.registry.online.lock() {
            Ok(mut online) => online.insert(
                device,
                Online {
                    connection: conn.id,
                    notify,
                    buffered: buffered.clone(),
                    overflowed: conn.overflowed.clone(),
                    takeover: Some(takeover_tx),
                },
            ),
            Err(_) => return error(id, proto::ErrorCode::Internal, "relay state poisoned"),
        };
        if let Some(mut previous) = previous
            && previous.connection != conn.id
            && let Some(tx) = previous.takeover.take()
        {
            let _ = tx.send(Ended::TakenOver);
        }
        // One consumer per queue across relays sharing a database.
        if let Err(e) = self.store.announce_online(device).await {
            tracing::warn!(error = %e, "could not announce the device to other relays");
        }
        conn.device = Some(device);
        conn.notifications = Some(notifications);
        conn.buffered = buffered;
        conn.takeover = Some(takeover_rx);
        conn.live = false;
        conn.delivered = 0;
        conn.resync = false;
        reply(
            id,
            proto::relay_frame::Body::Authenticated(proto::Authenticated { queued }),
        )
    }

    async fn register(
        &self,
        conn: &mut Connection,
        id: u64,
        r: proto::RegisterPrekeys,
    ) -> proto::RelayFrame {
        let Some(device) = conn.device else {
            return unauthenticated(id);
        };
        if r.one_time_prekeys.len() > self.limits.max_one_time_prekeys {
            return error(
                id,
                proto::ErrorCode::TooManyPrekeys,
                format!(
                    "at most {} one-time prekeys per upload",
                    self.limits.max_one_time_prekeys
                ),
            );
        }
        let parsed = (|| -> Result<PrekeyUpload, String> {
            let signed = signed_key("signed_prekey", r.signed_prekey.as_ref())?;
            let last_resort = signed_key("last_resort_prekey", r.last_resort_prekey.as_ref())?;
            let mut one_time = Vec::with_capacity(r.one_time_prekeys.len());
            for k in &r.one_time_prekeys {
                if one_time.iter().any(|(i, _)| *i == k.id) {
                    return Err(format!("one-time prekey id {} repeated", k.id));
                }
                one_time.push((k.id, key32("one_time_prekey", &k.public_key)?));
            }
            Ok(PrekeyUpload {
                signed,
                last_resort,
                one_time,
            })
        })();
        let upload = match parsed {
            Ok(u) => u,
            Err(m) => return error(id, proto::ErrorCode::Malformed, m),
        };
        // Every signature is checked, through the same verified-bundle
        // path a client uses.
        let Ok(identity) = IdentityKey::from_bytes(&device) else {
            return error(id, proto::ErrorCode::Malformed, "device key invalid");
        };
        let check = PreKeyBundle {
            identity,
            signed_prekey: to_wire(&upload.signed),
            extra: Some(ExtraPreKey::LastResort(to_wire(&upload.last_resort))),
        };
        if let Err(e) = check.verify() {
            return error(id, proto::ErrorCode::BadSignature, e.to_string());
        }
        match self.store.register(device, upload).await {
            Ok(n) => reply(
                id,
                proto::relay_frame::Body::Registered(proto::Registered {
                    one_time_prekeys: n,
                }),
            ),
            Err(e) => store_error(id, e),
        }
    }

    async fn fetch_bundle(
        &self,
        conn: &mut Connection,
        id: u64,
        f: proto::FetchBundle,
        now: Instant,
    ) -> proto::RelayFrame {
        let target = match key32("device_key", &f.device_key) {
            Ok(d) => d,
            Err(m) => return error(id, proto::ErrorCode::Malformed, m),
        };
        if let Some(wait) = self.rate_limit_directory(conn, &target, now) {
            return error(
                id,
                proto::ErrorCode::RateLimited,
                format!(
                    "directory fetches limited; retry in {} ms",
                    wait.as_millis().max(1)
                ),
            );
        }
        let parts = match self.store.take_bundle(target).await {
            Ok(Some(p)) => p,
            Ok(None) => return error(id, proto::ErrorCode::UnknownDevice, "no such device"),
            Err(e) => return store_error(id, e),
        };
        let Ok(identity) = IdentityKey::from_bytes(&target) else {
            return error(id, proto::ErrorCode::UnknownDevice, "no such device");
        };
        let extra = match parts.one_time {
            Some((otk_id, public)) => ExtraPreKey::OneTime(OneTimePreKey { id: otk_id, public }),
            None => ExtraPreKey::LastResort(to_wire(&parts.last_resort)),
        };
        let bundle = PreKeyBundle {
            identity,
            signed_prekey: to_wire(&parts.signed),
            extra: Some(extra),
        };
        match <wire::PreKeyBundle as prost::Message>::decode(bundle.to_bytes().as_slice()) {
            Ok(b) => reply(
                id,
                proto::relay_frame::Body::Bundle(proto::Bundle { bundle: Some(b) }),
            ),
            Err(_) => error(id, proto::ErrorCode::Internal, "bundle encoding failed"),
        }
    }

    async fn prekey_count(&self, conn: &mut Connection, id: u64) -> proto::RelayFrame {
        let Some(device) = conn.device else {
            return unauthenticated(id);
        };
        match self.store.prekey_count(device).await {
            Ok(Some(n)) => reply(
                id,
                proto::relay_frame::Body::PrekeyStock(proto::PrekeyStock {
                    one_time_prekeys: n,
                }),
            ),
            Ok(None) => error(id, proto::ErrorCode::UnknownDevice, "register first"),
            Err(e) => store_error(id, e),
        }
    }

    fn prepare_send(
        &self,
        conn: &mut Connection,
        id: u64,
        s: proto::Send,
        now: Instant,
        unix_now: u64,
    ) -> Result<Deferred, Box<proto::RelayFrame>> {
        if let Err(wait) = conn
            .sends
            .take(self.limits.send_burst, self.limits.send_refill, now)
        {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(Box::new(error(
                id,
                proto::ErrorCode::RateLimited,
                format!("sending too fast; retry in {} ms", wait.as_millis().max(1)),
            )));
        }
        let Ok(message_id) = MessageId::try_from(s.message_id.as_slice()) else {
            return Err(Box::new(error(
                id,
                proto::ErrorCode::Malformed,
                "message_id must be 16 bytes",
            )));
        };
        if s.body.len() > self.limits.max_body {
            return Err(Box::new(error(
                id,
                proto::ErrorCode::TooLarge,
                format!(
                    "body is {} bytes; the limit is {}",
                    s.body.len(),
                    self.limits.max_body
                ),
            )));
        }
        if s.recipients.is_empty() || s.recipients.len() > self.limits.max_recipients {
            return Err(Box::new(error(
                id,
                proto::ErrorCode::Malformed,
                format!("1 to {} recipients", self.limits.max_recipients),
            )));
        }
        let mut recipients: Vec<(DeviceKey, Slot)> = Vec::with_capacity(s.recipients.len());
        for r in &s.recipients {
            let (Ok(device), Ok(slot)) = (
                DeviceKey::try_from(r.device_key.as_slice()),
                Slot::try_from(r.slot.as_slice()),
            ) else {
                return Err(Box::new(error(
                    id,
                    proto::ErrorCode::Malformed,
                    "recipient: 32-byte device_key and 48-byte slot",
                )));
            };
            if recipients.iter().any(|(d, _)| *d == device) {
                return Err(Box::new(error(
                    id,
                    proto::ErrorCode::Malformed,
                    "a device appears twice among the recipients",
                )));
            }
            recipients.push((device, slot));
        }
        let expected = parse_expected(&s.expected, self.limits.max_recipients)
            .map_err(|m| Box::new(error(id, proto::ErrorCode::Malformed, m)))?;
        let expires_at = unix_now.saturating_add(self.limits.expiry.as_secs());
        Ok(Deferred {
            request_id: id,
            work: Work::Send(NewEnvelope {
                message_id,
                body: Arc::new(s.body),
                recipients,
                expires_at,
                expected,
            }),
        })
    }

    /// Verifies and stores a device list (`spec/devices.md`).
    async fn publish_devices(
        &self,
        conn: &mut Connection,
        id: u64,
        p: proto::PublishDevices,
    ) -> proto::RelayFrame {
        let Some(device) = conn.device else {
            return unauthenticated(id);
        };
        let Some(list) = p.list else {
            return error(id, proto::ErrorCode::Malformed, "list missing");
        };
        let encoded = prost::Message::encode_to_vec(&list);
        let parsed = match DeviceList::try_from(encoded.as_slice()) {
            Ok(parsed) => parsed,
            Err(e) => return error(id, proto::ErrorCode::Malformed, e.to_string()),
        };
        match parsed.verify() {
            Ok(()) => {}
            Err(e @ (DeviceListError::BadSignature | DeviceListError::BadConsent)) => {
                return error(id, proto::ErrorCode::BadSignature, e.to_string());
            }
            Err(e) => return error(id, proto::ErrorCode::Malformed, e.to_string()),
        }
        if parsed.version == 0 {
            return error(id, proto::ErrorCode::Malformed, "versions start at 1");
        }
        let devices: Vec<DeviceKey> = parsed.devices.iter().map(|d| *d.key.as_bytes()).collect();
        if !devices.contains(&device) {
            return error(
                id,
                proto::ErrorCode::Unauthenticated,
                "publish a device list from one of its devices",
            );
        }
        let version = parsed.version;
        let stored = StoredList {
            account: *parsed.account.as_bytes(),
            version,
            devices,
            encoded,
        };
        let revoked = match self.store.publish_devices(stored).await {
            Ok(Published::Stored(revoked)) => revoked,
            Ok(Published::Unchanged) => Vec::new(),
            Ok(Published::Old(stored)) => {
                return error(
                    id,
                    proto::ErrorCode::OldVersion,
                    format!("the stored device list has version {stored}"),
                );
            }
            Ok(Published::Revoked(named)) => {
                return error_with(
                    id,
                    proto::ErrorCode::Revoked,
                    "the list names revoked devices",
                    named,
                );
            }
            Err(e) => return store_error(id, e),
        };
        self.counters
            .revoked_devices
            .fetch_add(revoked.len() as u64, Ordering::Relaxed);
        reply(
            id,
            proto::relay_frame::Body::Published(proto::Published {
                version,
                revoked: revoked.iter().map(|d| d.to_vec()).collect(),
            }),
        )
    }

    /// Bundle and device list fetches share the rate limits, per
    /// connection and per target: how long to wait if over them.
    fn rate_limit_directory(
        &self,
        conn: &mut Connection,
        target: &[u8; 32],
        now: Instant,
    ) -> Option<Duration> {
        let (burst, refill) = (self.limits.bundle_burst, self.limits.bundle_refill);
        let wait = conn.bundles.take(burst, refill, now).err().or_else(|| {
            self.targets
                .lock()
                .ok()?
                .take(*target, burst, refill, now)
                .err()
        })?;
        self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        Some(wait)
    }

    async fn fetch_devices(
        &self,
        conn: &mut Connection,
        id: u64,
        f: proto::FetchDevices,
        now: Instant,
    ) -> proto::RelayFrame {
        let account: AccountKey = match key32("account", &f.account) {
            Ok(a) => a,
            Err(m) => return error(id, proto::ErrorCode::Malformed, m),
        };
        if let Some(wait) = self.rate_limit_directory(conn, &account, now) {
            return error(
                id,
                proto::ErrorCode::RateLimited,
                format!(
                    "directory fetches limited; retry in {} ms",
                    wait.as_millis().max(1)
                ),
            );
        }
        let stored = match self.store.device_list(account).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                return error(
                    id,
                    proto::ErrorCode::UnknownDevice,
                    "no device list for this account",
                );
            }
            Err(e) => return store_error(id, e),
        };
        let Ok(list) = <wire::DeviceList as prost::Message>::decode(stored.encoded.as_slice())
        else {
            return error(
                id,
                proto::ErrorCode::Internal,
                "stored device list unreadable",
            );
        };
        // The account's own devices see when each was last here.
        let mut status = Vec::new();
        if conn.device.is_some_and(|d| stored.devices.contains(&d)) {
            match self.store.device_status(stored.devices.clone()).await {
                Ok(found) => {
                    status = stored
                        .devices
                        .iter()
                        .zip(found)
                        .map(|(d, s)| proto::DeviceStatus {
                            device_key: d.to_vec(),
                            last_seen_day: s.last_seen_day,
                            queued: s.queued,
                        })
                        .collect();
                }
                Err(e) => return store_error(id, e),
            }
        }
        reply(
            id,
            proto::relay_frame::Body::Devices(proto::Devices {
                list: Some(list),
                status,
            }),
        )
    }

    async fn unregister(&self, conn: &mut Connection, id: u64) -> proto::RelayFrame {
        let Some(device) = conn.device else {
            return unauthenticated(id);
        };
        match self.store.unregister(device).await {
            Ok(deleted) => {
                // The connection is no longer the device's: pushes
                // buffered for the deleted queue go with it, and a
                // registration made later (whose queue starts at 1
                // again) needs a new authentication.
                self.disconnect_device(conn);
                reply(
                    id,
                    proto::relay_frame::Body::Unregistered(proto::Unregistered { deleted }),
                )
            }
            Err(e) => store_error(id, e),
        }
    }

    /// Commits a validated send or ack. Answers only after the envelope
    /// is durable in every queue; the store has woken the recipients'
    /// connections by then (store before push, in commit order).
    pub async fn commit(&self, deferred: Deferred) -> proto::RelayFrame {
        let id = deferred.request_id;
        match self.commit_all(vec![deferred]).await.pop() {
            Some(frame) => frame,
            None => error(
                id,
                proto::ErrorCode::Internal,
                "relay storage failure; retry",
            ),
        }
    }

    /// Commits validated sends and acks, answering each in the order
    /// given. The sends go to the store together, so a burst of them
    /// costs one store job (one transaction with SQLite); the acks go
    /// alongside.
    pub async fn commit_all(&self, deferred: Vec<Deferred>) -> Vec<proto::RelayFrame> {
        let mut sends = Vec::new();
        let mut sent = Vec::new();
        let mut acks = Vec::new();
        let mut is_send = Vec::with_capacity(deferred.len());
        for d in deferred {
            match d.work {
                Work::Send(envelope) => {
                    is_send.push(true);
                    sent.push((d.request_id, envelope.message_id));
                    sends.push(envelope);
                }
                Work::Ack(device, seqs) => {
                    is_send.push(false);
                    acks.push(self.commit_ack(d.request_id, device, seqs));
                }
            }
        }
        let started = Instant::now();
        let enqueue = async {
            if sends.is_empty() {
                Vec::new()
            } else {
                self.store.enqueue_many(sends, self.limits.queue).await
            }
        };
        let (results, acked) =
            futures_util::future::join(enqueue, futures_util::future::join_all(acks)).await;
        let latency = started.elapsed();
        let mut sent_frames = sent
            .into_iter()
            .zip(results)
            .map(|((id, message_id), result)| {
                self.counters.commit_latency.observe(latency);
                self.sent_frame(id, message_id, result)
            });
        let mut acked = acked.into_iter();
        is_send
            .into_iter()
            .filter_map(|send| {
                if send {
                    sent_frames.next()
                } else {
                    acked.next()
                }
            })
            .collect()
    }

    fn sent_frame(
        &self,
        id: u64,
        message_id: MessageId,
        result: Result<Enqueued, StoreError>,
    ) -> proto::RelayFrame {
        match result {
            Ok(Enqueued::Stored(seqs)) => {
                self.counters
                    .envelopes_in
                    .fetch_add(seqs.len() as u64, Ordering::Relaxed);
                reply(
                    id,
                    proto::relay_frame::Body::Sent(proto::Sent {
                        message_id: message_id.to_vec(),
                        duplicate: false,
                    }),
                )
            }
            Ok(Enqueued::Duplicate) => reply(
                id,
                proto::relay_frame::Body::Sent(proto::Sent {
                    message_id: message_id.to_vec(),
                    duplicate: true,
                }),
            ),
            Err(e) => {
                let counter = match e {
                    StoreError::Quota(_) => Some(&self.counters.quota_rejections),
                    StoreError::StaleDevices(_) => Some(&self.counters.stale_rejections),
                    _ => None,
                };
                if let Some(counter) = counter {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                store_error(id, e)
            }
        }
    }

    async fn fetch_page(
        &self,
        conn: &mut Connection,
        id: u64,
        p: proto::FetchPage,
    ) -> proto::RelayFrame {
        let Some(device) = conn.device else {
            return unauthenticated(id);
        };
        let max = match p.max_envelopes {
            0 => self.limits.page_size,
            n => n.min(self.limits.page_size),
        };
        match self.store.page(device, p.after_seq, max).await {
            Ok(page) => {
                if let Some(last) = page.envelopes.last() {
                    conn.delivered = conn.delivered.max(last.seq);
                } else {
                    conn.delivered = conn.delivered.max(p.after_seq);
                }
                if page.queue_empty {
                    conn.live = true;
                }
                self.counters
                    .envelopes_out
                    .fetch_add(page.envelopes.len() as u64, Ordering::Relaxed);
                reply(
                    id,
                    proto::relay_frame::Body::Page(proto::Page {
                        envelopes: page.envelopes.iter().map(envelope_frame).collect(),
                        queue_empty: page.queue_empty,
                    }),
                )
            }
            Err(e) => store_error(id, e),
        }
    }

    fn prepare_ack(&self, conn: &Connection, id: u64, a: proto::Ack) -> Handled {
        let Some(device) = conn.device else {
            return Handled::Done(unauthenticated(id));
        };
        if a.seqs.len() > MAX_ACK {
            return Handled::Done(error(
                id,
                proto::ErrorCode::Malformed,
                format!("at most {MAX_ACK} sequence numbers per ack"),
            ));
        }
        Handled::Commit(Deferred {
            request_id: id,
            work: Work::Ack(device, a.seqs),
        })
    }

    async fn commit_ack(&self, id: u64, device: DeviceKey, seqs: Vec<u64>) -> proto::RelayFrame {
        match self.store.ack(device, seqs).await {
            Ok(deleted) => {
                self.counters
                    .acks
                    .fetch_add(u64::from(deleted), Ordering::Relaxed);
                reply(
                    id,
                    proto::relay_frame::Body::Acked(proto::Acked { deleted }),
                )
            }
            Err(e) => store_error(id, e),
        }
    }

    /// Turns a push into frames for the device: in order, without gaps,
    /// and only once the device has paged to the end of its queue. A gap
    /// or an overflowed notification buffer is filled from the store
    /// (read only: pushed envelopes are deleted by the device's ack).
    pub async fn deliver(&self, conn: &mut Connection, n: Notification) -> Vec<proto::RelayFrame> {
        let pushes = match n {
            Notification::Committed(pushes) => {
                conn.buffered.fetch_sub(pushes.len(), Ordering::AcqRel);
                pushes
            }
            Notification::Wake => Vec::new(),
        };
        if !conn.live || conn.device.is_none() {
            return Vec::new();
        }
        if pushes.is_empty() || conn.overflowed.swap(false, Ordering::AcqRel) {
            return self.resync(conn).await;
        }
        let mut frames = Vec::with_capacity(pushes.len());
        for n in pushes {
            if n.seq <= conn.delivered {
                continue;
            }
            if n.seq != conn.delivered + 1 {
                // A gap: the store has it all, this one included.
                frames.extend(self.resync(conn).await);
                return frames;
            }
            conn.delivered = n.seq;
            self.counters
                .delivery_latency
                .observe(n.committed.elapsed());
            frames.push(reply(
                0,
                proto::relay_frame::Body::Deliver(proto::Envelope {
                    seq: n.seq,
                    body: n.body.as_ref().clone(),
                    slot: n.slot.to_vec(),
                    expires_at: n.expires_at,
                }),
            ));
        }
        self.counters
            .envelopes_out
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        frames
    }

    /// Reads the next page after what this connection has delivered and
    /// pushes it; if more is waiting, [`Connection::next_event`] returns
    /// [`Event::Resync`] next, so a far-behind device is caught up page
    /// by page between its requests, never stalled.
    pub async fn resync(&self, conn: &mut Connection) -> Vec<proto::RelayFrame> {
        let Some(device) = conn.device else {
            return Vec::new();
        };
        if !conn.live {
            return Vec::new();
        }
        let page = match self
            .store
            .read(device, conn.delivered, self.limits.page_size)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "push gap fill failed; retrying in 1 s");
                conn.retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                return Vec::new();
            }
        };
        conn.resync = !page.queue_empty;
        let mut frames = Vec::with_capacity(page.envelopes.len());
        for e in page.envelopes {
            if e.seq > conn.delivered {
                conn.delivered = e.seq;
                frames.push(reply(
                    0,
                    proto::relay_frame::Body::Deliver(envelope_frame(&e)),
                ));
            }
        }
        self.counters
            .envelopes_out
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        frames
    }

    /// Sweeps expired envelopes; returns how many.
    pub async fn sweep(&self, unix_now: u64) -> Result<u64, StoreError> {
        let n = self.store.sweep(unix_now).await?;
        self.counters.expired.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
