//! Storage behind the relay (`spec/relay.md`, "Storage"): devices and
//! their prekeys, per-device queues of opaque envelopes, and message ids
//! for idempotent resends. Nothing here knows who sent an envelope.
//!
//! Every operation that writes is durable when its future resolves:
//! callers answer the network only after that (persist before ack).

pub mod postgres;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;

/// A device: the 32-byte Ed25519 identity key it authenticates with. It
/// names the device's queue and its directory entry.
pub type DeviceKey = [u8; 32];

/// An account: the Ed25519 key of its primary device, which signs its
/// device list (`spec/devices.md`).
pub type AccountKey = [u8; 32];

/// A sender-chosen message id; a resend reuses it.
pub type MessageId = [u8; 16];

/// A recipient's key slot in a sealed envelope.
pub type Slot = [u8; 48];

/// The most body bytes in one page (at least one envelope is always
/// returned): keeps every page frame far below `frame::MAX_FRAME`.
pub const PAGE_MAX_BYTES: usize = 1 << 20;

/// A signed prekey or last-resort prekey, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedKey {
    /// Prekey id.
    pub id: u32,
    /// X25519 public key.
    pub public: [u8; 32],
    /// Ed25519 signature by the device key.
    pub signature: [u8; 64],
}

/// A checked prekey upload (signatures verified by the caller).
#[derive(Clone, Debug)]
pub struct PrekeyUpload {
    /// The signed prekey.
    pub signed: SignedKey,
    /// The last-resort prekey.
    pub last_resort: SignedKey,
    /// One-time prekeys; if non-empty they replace the stored set.
    pub one_time: Vec<(u32, [u8; 32])>,
}

/// What a bundle fetch returns: the device's prekeys with at most one
/// one-time prekey, which is gone from the store once this is returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleParts {
    /// The signed prekey.
    pub signed: SignedKey,
    /// The last-resort prekey.
    pub last_resort: SignedKey,
    /// A one-time prekey, taken; `None` when the stock is empty.
    pub one_time: Option<(u32, [u8; 32])>,
}

/// An envelope to enqueue for one or more devices.
#[derive(Clone, Debug)]
pub struct NewEnvelope {
    /// Idempotency key.
    pub message_id: MessageId,
    /// The sealed body, stored once.
    pub body: Arc<Vec<u8>>,
    /// Recipient queues with their slots; no device twice.
    pub recipients: Vec<(DeviceKey, Slot)>,
    /// Unix seconds after which the envelope is swept.
    pub expires_at: u64,
    /// The devices the sender believes recipient accounts have.
    pub expected: Vec<Expected>,
}

/// The devices a sender believes an account has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The account.
    pub account: AccountKey,
    /// Its devices, no repeats.
    pub devices: Vec<DeviceKey>,
}

/// How a sender's idea of an account's devices differs from the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    /// The account.
    pub account: AccountKey,
    /// In the list, not expected; in list order.
    pub missing: Vec<DeviceKey>,
    /// Expected, not in the list; in the sender's order.
    pub removed: Vec<DeviceKey>,
}

impl Expected {
    /// Compares with the account's devices: `listed` is its stored list,
    /// or `None` for an account without one (its primary alone).
    pub fn compare(&self, listed: Option<&[DeviceKey]>) -> Option<Stale> {
        let alone = [self.account];
        let listed = listed.unwrap_or(&alone);
        let missing: Vec<DeviceKey> = listed
            .iter()
            .filter(|d| !self.devices.contains(d))
            .copied()
            .collect();
        let removed: Vec<DeviceKey> = self
            .devices
            .iter()
            .filter(|d| !listed.contains(d))
            .copied()
            .collect();
        (!missing.is_empty() || !removed.is_empty()).then_some(Stale {
            account: self.account,
            missing,
            removed,
        })
    }
}

/// An account's device list as the relay keeps it. The relay verified
/// it before storing; the store only compares versions and devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredList {
    /// The account.
    pub account: AccountKey,
    /// The list's version.
    pub version: u64,
    /// Its devices, in list order.
    pub devices: Vec<DeviceKey>,
    /// The `hush.wire.v1.DeviceList` encoding, served as published.
    pub encoded: Vec<u8>,
}

/// What [`Store::publish_devices`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// Stored. These devices, in the old list and not the new one, are
    /// revoked: their registration, prekeys and queue are gone.
    Stored(Vec<DeviceKey>),
    /// This very list is stored already (a resend): nothing changed.
    Unchanged,
    /// The stored list has this version, not lower than the one given;
    /// nothing changed.
    Old(u64),
    /// The list names these devices, revoked earlier; nothing changed.
    Revoked(Vec<DeviceKey>),
}

/// What the relay knows of a device, for its account's own devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    /// The day (Unix seconds / 86400) it last authenticated; 0: never
    /// since it registered.
    pub last_seen_day: u64,
    /// Envelopes waiting in its queue.
    pub queued: u64,
}

/// What [`Store::seen`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Envelopes waiting in the device's queue.
    Queued(u64),
    /// The device was revoked: it may not authenticate.
    Revoked,
}

/// Per-queue limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most envelopes waiting in one queue.
    pub max_envelopes: u64,
    /// Most bytes (body + slot) waiting in one queue.
    pub max_bytes: u64,
}

/// What [`Store::enqueue`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored: each recipient's sequence number, in request order.
    Stored(Vec<u64>),
    /// The message id was already stored; nothing was added.
    Duplicate,
}

/// An envelope in a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Per-queue sequence number.
    pub seq: u64,
    /// The sealed body.
    pub body: Vec<u8>,
    /// This queue's slot.
    pub slot: Slot,
    /// Unix seconds.
    pub expires_at: u64,
}

/// A page of a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Envelopes after the requested sequence number, in order.
    pub envelopes: Vec<StoredEnvelope>,
    /// Nothing follows the last envelope.
    pub queue_empty: bool,
}

/// Aggregates for metrics (no per-device detail).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Registered devices.
    pub devices: u64,
    /// Stored bodies (each shared by all its recipients' queues).
    pub bodies: u64,
    /// Envelopes waiting, all queues.
    pub queued_envelopes: u64,
    /// Bytes waiting, all queues.
    pub queued_bytes: u64,
    /// Envelopes in the fullest queue.
    pub deepest_queue: u64,
    /// One-time prekeys in stock, all devices.
    pub one_time_prekeys: u64,
    /// Devices with fewer than 10 one-time prekeys.
    pub devices_low_on_prekeys: u64,
}

/// An envelope one commit stored: announced to the [`CommitListener`]
/// right after the commit, before the sender is answered. With SQLite's single
/// writer announcements come in commit order, so for any one queue in
/// increasing sequence order; with PostgreSQL, concurrent commits may be
/// announced out of order and the relay repairs gaps from the store.
pub struct Committed<'a> {
    /// Recipient queues and their slots.
    pub recipients: &'a [(DeviceKey, Slot)],
    /// Each recipient's sequence number, in the same order.
    pub seqs: &'a [u64],
    /// The body.
    pub body: &'a Arc<Vec<u8>>,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Told about every commit (store before push: it runs after the commit).
pub trait CommitListener: Send + Sync + 'static {
    /// Called once per commit with every envelope it stored, in commit
    /// order; must not block.
    fn committed(&self, commit: &[Committed<'_>]);

    /// Another relay process committed to this device's queue (shared
    /// PostgreSQL): fetch from the store.
    fn wake(&self, device: &DeviceKey);

    /// Cross-relay wake-ups may have been missed (the notification
    /// channel reconnected): fetch from the store for every device.
    fn wake_all(&self);

    /// The device authenticated on another relay process: close this
    /// process's connection for it (one consumer per queue).
    fn taken_over(&self, device: &DeviceKey);

    /// The device was revoked (by this relay process or another): close
    /// its connection.
    fn revoked(&self, device: &DeviceKey);
}

/// Unsigned counters and ids as the databases store them (signed 64-bit).
pub(crate) fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored signed 64-bit value as an unsigned counter (negative: 0).
pub(crate) fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A stored prekey id, which must fit in 32 bits.
pub(crate) fn u32_of(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Backend("stored id out of range".into()))
}

/// A stored fixed-size key, which must have its length.
pub(crate) fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Backend("stored key has the wrong length".into()))
}

/// Decodes the columns both stores read the same way.
pub(crate) trait Columns: sqlx::Row {
    /// A signed 64-bit column.
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    /// A byte column.
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError>;

    /// `seq, body, slot, expires_at` from column `at` on.
    fn envelope(&self, at: usize) -> Result<StoredEnvelope, StoreError> {
        Ok(StoredEnvelope {
            seq: u64_of(self.int(at)?),
            body: self.bytes(at + 1)?,
            slot: fixed(&self.bytes(at + 2)?)?,
            expires_at: u64_of(self.int(at + 3)?),
        })
    }

    /// `id, public, signature` from column `at` on.
    fn signed_key(&self, at: usize) -> Result<SignedKey, StoreError> {
        Ok(SignedKey {
            id: u32_of(self.int(at)?)?,
            public: fixed(&self.bytes(at + 1)?)?,
            signature: fixed(&self.bytes(at + 2)?)?,
        })
    }

    /// The seven counts of [`Stats`], in field order.
    fn stats(&self) -> Result<Stats, StoreError> {
        Ok(Stats {
            devices: u64_of(self.int(0)?),
            bodies: u64_of(self.int(1)?),
            queued_envelopes: u64_of(self.int(2)?),
            queued_bytes: u64_of(self.int(3)?),
            deepest_queue: u64_of(self.int(4)?),
            one_time_prekeys: u64_of(self.int(5)?),
            devices_low_on_prekeys: u64_of(self.int(6)?),
        })
    }
}

impl Columns for sqlx::sqlite::SqliteRow {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        Ok(sqlx::Row::try_get(self, i)?)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        Ok(sqlx::Row::try_get(self, i)?)
    }
}

impl Columns for sqlx::postgres::PgRow {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        Ok(sqlx::Row::try_get(self, i)?)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        Ok(sqlx::Row::try_get(self, i)?)
    }
}

/// Cuts rows read in sequence order down to one page: at most `max`
/// envelopes and [`PAGE_MAX_BYTES`] of bodies, never empty while a row
/// exists. `rows` may hold one more row than `max`, to tell the end.
pub(crate) fn bound_page(rows: Vec<StoredEnvelope>, max: u32) -> Page {
    let mut envelopes = Vec::with_capacity(rows.len().min(max as usize));
    let mut bytes = 0usize;
    let mut queue_empty = true;
    for row in rows {
        let full = envelopes.len() >= max as usize
            || (!envelopes.is_empty() && bytes + row.body.len() > PAGE_MAX_BYTES);
        if full {
            queue_empty = false;
            break;
        }
        bytes += row.body.len();
        envelopes.push(row);
    }
    Page {
        envelopes,
        queue_empty,
    }
}

/// Storage failures.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StoreError {
    /// Some recipient devices are not registered; nothing was stored.
    #[error("{} unknown recipient device(s)", .0.len())]
    UnknownDevices(Vec<DeviceKey>),
    /// Some recipient queues are full; nothing was stored.
    #[error("{} recipient queue(s) over quota", .0.len())]
    Quota(Vec<DeviceKey>),
    /// The sender's idea of some accounts' devices is out of date;
    /// nothing was stored.
    #[error("stale device lists for {} account(s)", .0.len())]
    StaleDevices(Vec<Stale>),
    /// The device was revoked by its account's device list.
    #[error("device revoked")]
    Revoked,
    /// The database failed; nothing of the operation was stored.
    #[error("storage failure: {0}")]
    Backend(String),
    /// A transient conflict between concurrent transactions (deadlock,
    /// serialization failure); nothing was stored and a retry can work.
    #[error("storage conflict: {0}")]
    Conflict(String),
    /// The store is shutting down.
    #[error("store closed")]
    Closed,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // PostgreSQL: deadlock_detected, serialization_failure.
        let transient = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code == "40P01" || code == "40001");
        if transient {
            StoreError::Conflict(e.to_string())
        } else {
            StoreError::Backend(e.to_string())
        }
    }
}

/// The relay's storage: SQLite (the embedded default) and PostgreSQL
/// (several relay processes on one database).
pub trait Store: Send + Sync + 'static {
    /// Sets who is told about commits (replacing any earlier listener).
    fn set_listener(&self, listener: Arc<dyn CommitListener>);

    /// Tells other relay processes sharing this store that `device` just
    /// authenticated here, so they close their connections for it. A
    /// store only one process uses does nothing.
    fn announce_online(
        &self,
        device: DeviceKey,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates or replaces a device's prekeys. Returns the one-time
    /// stock; [`StoreError::Revoked`] for a revoked device.
    fn register(
        &self,
        device: DeviceKey,
        upload: PrekeyUpload,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Takes a bundle, removing the one-time prekey it carries. Under
    /// any concurrency no one-time prekey is returned twice. `None` for
    /// an unknown device.
    fn take_bundle(
        &self,
        device: DeviceKey,
    ) -> impl Future<Output = Result<Option<BundleParts>, StoreError>> + Send;

    /// The one-time prekey stock, `None` for an unknown device.
    fn prekey_count(
        &self,
        device: DeviceKey,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send;

    /// Records that `device` authenticated on day `day` (Unix seconds /
    /// 86400) and returns its queue length, or says it is revoked.
    fn seen(
        &self,
        device: DeviceKey,
        day: u64,
    ) -> impl Future<Output = Result<Seen, StoreError>> + Send;

    /// Deletes a device's registration, prekeys and queue; returns the
    /// number of envelopes that were waiting (0 for an unknown device).
    fn unregister(&self, device: DeviceKey)
    -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Stores an account's device list if its version is higher than the
    /// stored one, revoking the devices it drops (see [`Published`]).
    /// Tells the listener, and other relay processes, of every device
    /// revoked.
    fn publish_devices(
        &self,
        list: StoredList,
    ) -> impl Future<Output = Result<Published, StoreError>> + Send;

    /// An account's stored device list.
    fn device_list(
        &self,
        account: AccountKey,
    ) -> impl Future<Output = Result<Option<StoredList>, StoreError>> + Send;

    /// What the relay knows of each device, in order (unknown devices:
    /// the default).
    fn device_status(
        &self,
        devices: Vec<DeviceKey>,
    ) -> impl Future<Output = Result<Vec<DeviceStatus>, StoreError>> + Send;

    /// Stores an envelope in every recipient queue, or nothing. If any
    /// of its `expected` accounts differs from the stored device lists,
    /// nothing is stored ([`StoreError::StaleDevices`]).
    fn enqueue(
        &self,
        envelope: NewEnvelope,
        limits: QueueLimits,
    ) -> impl Future<Output = Result<Enqueued, StoreError>> + Send;

    /// Stores several envelopes, each in every recipient queue or in
    /// none: one result per envelope, in order. The SQLite store commits
    /// them in one transaction, as if one after another; by default they
    /// are stored concurrently, in any order.
    fn enqueue_many(
        &self,
        envelopes: Vec<NewEnvelope>,
        limits: QueueLimits,
    ) -> impl Future<Output = Vec<Result<Enqueued, StoreError>>> + Send {
        futures_util::future::join_all(
            envelopes
                .into_iter()
                .map(move |envelope| self.enqueue(envelope, limits)),
        )
    }

    /// Deletes envelopes with `seq <= after`, then returns up to `max`
    /// envelopes (and at most [`PAGE_MAX_BYTES`] of bodies, but always
    /// one if any is waiting) with `seq > after`.
    fn page(
        &self,
        device: DeviceKey,
        after: u64,
        max: u32,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Returns up to `max` envelopes with `seq > after`, deleting nothing.
    fn read(
        &self,
        device: DeviceKey,
        after: u64,
        max: u32,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Deletes the listed envelopes; returns how many existed.
    fn ack(
        &self,
        device: DeviceKey,
        seqs: Vec<u64>,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Envelopes waiting in a queue.
    fn queue_len(&self, device: DeviceKey) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Aggregate numbers for metrics.
    fn stats(&self) -> impl Future<Output = Result<Stats, StoreError>> + Send;

    /// Deletes envelopes and message ids expired at `now`; returns the
    /// number of envelopes removed.
    fn sweep(&self, now: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
