//! The PostgreSQL store (`spec/relay.md`, "Storage"): several relay
//! processes on one database serve one user base.
//!
//! Every operation is one transaction. A send locks its recipients'
//! device rows in key order (so concurrent multi-recipient sends cannot
//! deadlock), takes the next sequence numbers from them, stores the body
//! once and a row per queue, and commits; sequence order per queue is
//! therefore commit order. Inside the same transaction it calls
//! `pg_notify('hush_commits', ..)`, which PostgreSQL delivers only if the
//! transaction commits: every relay listens and wakes its connected
//! devices, so a device on relay A receives at once what was sent via B.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, Postgres};
use sqlx::{QueryBuilder, Row, Transaction};

use super::{
    BundleParts, Columns, CommitListener, Committed, DeviceKey, Enqueued, NewEnvelope, Page,
    PrekeyUpload, QueueLimits, Stats, Store, StoreError, bound_page, fixed, i64_of, u32_of, u64_of,
};

/// The notification channel between relays: commits.
const CHANNEL: &str = "hush_commits";

/// The notification channel between relays: a device authenticated.
const ONLINE_CHANNEL: &str = "hush_online";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS devices (
        device_key BYTEA PRIMARY KEY,
        spk_id BIGINT NOT NULL, spk_public BYTEA NOT NULL, spk_signature BYTEA NOT NULL,
        lr_id BIGINT NOT NULL, lr_public BYTEA NOT NULL, lr_signature BYTEA NOT NULL,
        next_seq BIGINT NOT NULL DEFAULT 0,
        queued_count BIGINT NOT NULL DEFAULT 0,
        queued_bytes BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS one_time_prekeys (
        device_key BYTEA NOT NULL, id BIGINT NOT NULL, public_key BYTEA NOT NULL,
        PRIMARY KEY (device_key, id))",
    "CREATE TABLE IF NOT EXISTS bodies (id BIGSERIAL PRIMARY KEY, data BYTEA NOT NULL, refs BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS queue (
        device_key BYTEA NOT NULL, seq BIGINT NOT NULL, body_id BIGINT NOT NULL,
        slot BYTEA NOT NULL, size BIGINT NOT NULL, expires_at BIGINT NOT NULL,
        PRIMARY KEY (device_key, seq))",
    "CREATE INDEX IF NOT EXISTS queue_expiry ON queue (expires_at)",
    "CREATE INDEX IF NOT EXISTS queue_body ON queue (body_id)",
    "CREATE TABLE IF NOT EXISTS sent_messages (message_id BYTEA PRIMARY KEY, expires_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS sent_expiry ON sent_messages (expires_at)",
];

type Listener = Arc<RwLock<Option<Arc<dyn CommitListener>>>>;

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    listener: Listener,
    /// Tells this process's notifications from other relays'.
    instance: String,
}

impl PgStore {
    /// Connects to `url`, creates the schema if missing, and starts
    /// listening for other relays' commits.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let mut tx = pool.begin().await?;
        // Two relays starting at once must not race on CREATE.
        sqlx::query("SELECT pg_advisory_xact_lock(7462011)")
            .execute(&mut *tx)
            .await?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // Acked means durable: warn if the server may lose commits.
        if let Ok(row) = sqlx::query("SHOW synchronous_commit")
            .fetch_one(&pool)
            .await
            && let Ok(setting) = row.try_get::<String, _>(0)
            && setting == "off"
        {
            tracing::warn!(
                "PostgreSQL synchronous_commit is off: envelopes the relay acked can be lost in a server crash"
            );
        }
        let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
        let instance = hex::encode(&Sha256::digest(seed.as_bytes())[..8]);
        let listener: Listener = Arc::new(RwLock::new(None));
        tokio::spawn(listen(pool.clone(), listener.clone(), instance.clone()));
        Ok(Self {
            pool,
            listener,
            instance,
        })
    }

    fn announce(&self, envelope: &NewEnvelope, seqs: &[u64]) {
        if let Ok(slot) = self.listener.read()
            && let Some(listener) = slot.as_ref()
        {
            listener.committed(&[Committed {
                recipients: &envelope.recipients,
                seqs,
                body: &envelope.body,
                expires_at: envelope.expires_at,
            }]);
        }
    }
}

/// Receives other relays' commit notifications and wakes local devices.
async fn listen(pool: PgPool, listener: Listener, instance: String) {
    let wake_all = |listener: &Listener| {
        if let Ok(slot) = listener.read()
            && let Some(l) = slot.as_ref()
        {
            l.wake_all();
        }
    };
    loop {
        let mut channel = match PgListener::connect_with(&pool).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "commit notifications: cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = channel.listen_all([CHANNEL, ONLINE_CHANNEL]).await {
            tracing::warn!(error = %e, "commit notifications: cannot listen; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Anything committed while we were not listening: look.
        wake_all(&listener);
        loop {
            // try_recv, not recv: recv reconnects silently, and anything
            // notified while disconnected would be missed. Ok(None) says
            // the connection was lost; the next call reconnects.
            match channel.try_recv().await {
                Ok(None) => {
                    tracing::warn!("commit notifications: connection lost; reconnecting");
                    wake_all(&listener);
                }
                Ok(Some(n)) => {
                    let Some((from, devices)) = n.payload().split_once(' ') else {
                        continue;
                    };
                    if from == instance {
                        continue;
                    }
                    let Ok(slot) = listener.read() else { continue };
                    let Some(l) = slot.as_ref() else { continue };
                    let online = n.channel() == ONLINE_CHANNEL;
                    for device in devices.split(',') {
                        if let Ok(bytes) = hex::decode(device)
                            && let Ok(key) = DeviceKey::try_from(bytes.as_slice())
                        {
                            if online {
                                l.taken_over(&key);
                            } else {
                                l.wake(&key);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "commit notifications lost; reconnecting");
                    break;
                }
            }
        }
    }
}

type Tx = Transaction<'static, Postgres>;

/// Runs a transaction again after a transient conflict (a deadlock or
/// serialization failure rolled it back: nothing was stored), with a
/// short growing pause, at most 5 times.
async fn retry<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0u32;
    loop {
        match op().await {
            Err(StoreError::Conflict(e)) if attempt < 5 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "transaction conflict; retrying");
                tokio::time::sleep(Duration::from_millis(2u64 << attempt)).await;
            }
            other => return other,
        }
    }
}

/// One attempt of each writing operation; see [`retry`].
impl PgStore {
    async fn register_once(
        &self,
        device: DeviceKey,
        upload: PrekeyUpload,
    ) -> Result<u32, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (s, l) = (&upload.signed, &upload.last_resort);
        sqlx::query(
            "INSERT INTO devices (device_key, spk_id, spk_public, spk_signature, lr_id, lr_public, lr_signature)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (device_key) DO UPDATE SET
               spk_id = excluded.spk_id, spk_public = excluded.spk_public, spk_signature = excluded.spk_signature,
               lr_id = excluded.lr_id, lr_public = excluded.lr_public, lr_signature = excluded.lr_signature",
        )
        .bind(&device[..])
        .bind(i64::from(s.id))
        .bind(&s.public[..])
        .bind(&s.signature[..])
        .bind(i64::from(l.id))
        .bind(&l.public[..])
        .bind(&l.signature[..])
        .execute(&mut *tx)
        .await?;
        if !upload.one_time.is_empty() {
            sqlx::query("DELETE FROM one_time_prekeys WHERE device_key = $1")
                .bind(&device[..])
                .execute(&mut *tx)
                .await?;
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO one_time_prekeys (device_key, id, public_key) ",
            );
            q.push_values(&upload.one_time, |mut b, (id, public)| {
                b.push_bind(device.to_vec())
                    .push_bind(i64::from(*id))
                    .push_bind(public.to_vec());
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM one_time_prekeys WHERE device_key = $1")
            .bind(&device[..])
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        tx.commit().await?;
        u32_of(n)
    }

    async fn take_bundle_once(&self, device: DeviceKey) -> Result<Option<BundleParts>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT spk_id, spk_public, spk_signature, lr_id, lr_public, lr_signature FROM devices WHERE device_key = $1",
        )
        .bind(&device[..])
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let signed = row.signed_key(0)?;
        let last_resort = row.signed_key(3)?;
        // SKIP LOCKED: a concurrent taker (on any relay) skips the key this
        // transaction holds; no key is ever handed out twice.
        let taken = sqlx::query(
            "DELETE FROM one_time_prekeys WHERE (device_key, id) IN
               (SELECT device_key, id FROM one_time_prekeys WHERE device_key = $1
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, public_key",
        )
        .bind(&device[..])
        .fetch_optional(&mut *tx)
        .await?;
        let one_time = match taken {
            Some(r) => Some((u32_of(r.try_get(0)?)?, fixed(r.try_get::<&[u8], _>(1)?)?)),
            None => None,
        };
        tx.commit().await?;
        Ok(Some(BundleParts {
            signed,
            last_resort,
            one_time,
        }))
    }

    async fn enqueue_once(
        &self,
        envelope: NewEnvelope,
        limits: QueueLimits,
    ) -> Result<Enqueued, StoreError> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query("INSERT INTO sent_messages (message_id, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&envelope.message_id[..])
            .bind(i64_of(envelope.expires_at))
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !fresh {
            return Ok(Enqueued::Duplicate);
        }
        let keys: Vec<Vec<u8>> = envelope
            .recipients
            .iter()
            .map(|(d, _)| d.to_vec())
            .collect();
        let rows = sqlx::query(
            "SELECT device_key, next_seq, queued_count, queued_bytes FROM devices
             WHERE device_key = ANY($1) ORDER BY device_key FOR UPDATE",
        )
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
        let size = envelope.body.len() as u64 + 48;
        let mut state = std::collections::HashMap::new();
        for row in &rows {
            let key: DeviceKey = fixed(row.try_get::<&[u8], _>(0)?)?;
            state.insert(
                key,
                (
                    u64_of(row.try_get(1)?),
                    u64_of(row.try_get(2)?),
                    u64_of(row.try_get(3)?),
                ),
            );
        }
        let unknown: Vec<DeviceKey> = envelope
            .recipients
            .iter()
            .filter(|(d, _)| !state.contains_key(d))
            .map(|(d, _)| *d)
            .collect();
        if !unknown.is_empty() {
            return Err(StoreError::UnknownDevices(unknown));
        }
        let full: Vec<DeviceKey> = envelope
            .recipients
            .iter()
            .filter(|(d, _)| {
                state.get(d).is_some_and(|(_, count, bytes)| {
                    count + 1 > limits.max_envelopes || bytes + size > limits.max_bytes
                })
            })
            .map(|(d, _)| *d)
            .collect();
        if !full.is_empty() {
            return Err(StoreError::Quota(full));
        }
        let body_id: i64 =
            sqlx::query("INSERT INTO bodies (data, refs) VALUES ($1, $2) RETURNING id")
                .bind(envelope.body.as_slice())
                .bind(envelope.recipients.len() as i64)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let seqs: Vec<u64> = envelope
            .recipients
            .iter()
            .map(|(d, _)| state.get(d).map_or(0, |(next, _, _)| next + 1))
            .collect();
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO queue (device_key, seq, body_id, slot, size, expires_at) ",
        );
        q.push_values(
            envelope.recipients.iter().zip(&seqs),
            |mut b, ((device, slot), seq)| {
                b.push_bind(device.to_vec())
                    .push_bind(i64_of(*seq))
                    .push_bind(body_id)
                    .push_bind(slot.to_vec())
                    .push_bind(i64_of(size))
                    .push_bind(i64_of(envelope.expires_at));
            },
        );
        q.build().execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE devices SET next_seq = next_seq + 1, queued_count = queued_count + 1,
                                queued_bytes = queued_bytes + $2
             WHERE device_key = ANY($1)",
        )
        .bind(&keys)
        .bind(i64_of(size))
        .execute(&mut *tx)
        .await?;
        // Delivered by PostgreSQL only if this transaction commits.
        for chunk in keys.chunks(100) {
            let devices: Vec<String> = chunk.iter().map(hex::encode).collect();
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(format!("{} {}", self.instance, devices.join(",")))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.announce(&envelope, &seqs);
        Ok(Enqueued::Stored(seqs))
    }

    async fn page_once(&self, device: DeviceKey, after: u64, max: u32) -> Result<Page, StoreError> {
        let mut tx = self.pool.begin().await?;
        remove(&mut tx, Removal::UpTo(&device, after)).await?;
        let page = read(&mut tx, &device, after, max).await?;
        tx.commit().await?;
        Ok(page)
    }

    async fn ack_once(&self, device: DeviceKey, seqs: Vec<u64>) -> Result<u32, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = remove(&mut tx, Removal::Listed(&device, &seqs)).await?;
        tx.commit().await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn sweep_once(&self, now: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = remove(&mut tx, Removal::Expired(now)).await?;
        sqlx::query("DELETE FROM sent_messages WHERE expires_at <= $1")
            .bind(i64_of(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}

impl Store for PgStore {
    async fn register(&self, device: DeviceKey, upload: PrekeyUpload) -> Result<u32, StoreError> {
        retry(|| self.register_once(device, upload.clone())).await
    }

    async fn take_bundle(&self, device: DeviceKey) -> Result<Option<BundleParts>, StoreError> {
        retry(|| self.take_bundle_once(device)).await
    }

    async fn enqueue(
        &self,
        envelope: NewEnvelope,
        limits: QueueLimits,
    ) -> Result<Enqueued, StoreError> {
        retry(|| self.enqueue_once(envelope.clone(), limits)).await
    }

    async fn page(&self, device: DeviceKey, after: u64, max: u32) -> Result<Page, StoreError> {
        retry(|| self.page_once(device, after, max)).await
    }

    async fn ack(&self, device: DeviceKey, seqs: Vec<u64>) -> Result<u32, StoreError> {
        retry(|| self.ack_once(device, seqs.clone())).await
    }

    async fn sweep(&self, now: u64) -> Result<u64, StoreError> {
        retry(|| self.sweep_once(now)).await
    }

    async fn announce_online(&self, device: DeviceKey) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ONLINE_CHANNEL)
            .bind(format!("{} {}", self.instance, hex::encode(device)))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn set_listener(&self, listener: Arc<dyn CommitListener>) {
        if let Ok(mut slot) = self.listener.write() {
            *slot = Some(listener);
        }
    }

    async fn prekey_count(&self, device: DeviceKey) -> Result<Option<u32>, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM one_time_prekeys WHERE device_key = $1) FROM devices WHERE device_key = $1",
        )
        .bind(&device[..])
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(u32_of(r.try_get(0)?)?)),
            None => Ok(None),
        }
    }

    async fn read(&self, device: DeviceKey, after: u64, max: u32) -> Result<Page, StoreError> {
        let mut tx = self.pool.begin().await?;
        let page = read(&mut tx, &device, after, max).await?;
        tx.commit().await?;
        Ok(page)
    }

    async fn queue_len(&self, device: DeviceKey) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT queued_count FROM devices WHERE device_key = $1")
            .bind(&device[..])
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(u64_of(r.try_get(0)?)),
            None => Ok(0),
        }
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), (SELECT COUNT(*) FROM bodies), COALESCE(SUM(queued_count), 0)::BIGINT,
                    COALESCE(SUM(queued_bytes), 0)::BIGINT, COALESCE(MAX(queued_count), 0),
                    (SELECT COUNT(*) FROM one_time_prekeys),
                    (SELECT COUNT(*) FROM devices d WHERE
                       (SELECT COUNT(*) FROM one_time_prekeys o WHERE o.device_key = d.device_key) < 10)
             FROM devices",
        )
        .fetch_one(&self.pool)
        .await?;
        row.stats()
    }
}

async fn read(tx: &mut Tx, device: &DeviceKey, after: u64, max: u32) -> Result<Page, StoreError> {
    let rows = sqlx::query(
        "SELECT q.seq, b.data, q.slot, q.expires_at FROM queue q JOIN bodies b ON b.id = q.body_id
         WHERE q.device_key = $1 AND q.seq > $2 ORDER BY q.seq LIMIT $3",
    )
    .bind(&device[..])
    .bind(i64_of(after))
    .bind(i64::from(max) + 1)
    .fetch_all(&mut **tx)
    .await?;
    let mut envelopes = Vec::with_capacity(rows.len());
    for row in &rows {
        envelopes.push(row.envelope(0)?);
    }
    Ok(bound_page(envelopes, max))
}

enum Removal<'a> {
    UpTo(&'a DeviceKey, u64),
    Listed(&'a DeviceKey, &'a [u64]),
    Expired(u64),
}

/// Deletes queue rows and, in the same statement, fixes the device
/// counters and body reference counts; then deletes bodies nothing
/// refers to. Returns the number of rows deleted.
async fn remove(tx: &mut Tx, which: Removal<'_>) -> Result<u64, StoreError> {
    const TAIL: &str = "),
        d AS (UPDATE devices SET queued_count = devices.queued_count - g.n, queued_bytes = devices.queued_bytes - g.b
              FROM (SELECT device_key, COUNT(*) AS n, SUM(size) AS b FROM gone GROUP BY device_key) g
              WHERE devices.device_key = g.device_key),
        r AS (UPDATE bodies SET refs = bodies.refs - g.n
              FROM (SELECT body_id, COUNT(*) AS n FROM gone GROUP BY body_id) g
              WHERE bodies.id = g.body_id RETURNING bodies.id, bodies.refs)
        SELECT (SELECT COUNT(*) FROM gone), COALESCE((SELECT array_agg(id) FROM r WHERE refs <= 0), '{}')";
    let row = match which {
        Removal::UpTo(device, after) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH gone AS (DELETE FROM queue WHERE device_key = $1 AND seq <= $2 RETURNING device_key, body_id, size{TAIL}"
            )))
            .bind(&device[..])
            .bind(i64_of(after))
            .fetch_one(&mut **tx)
            .await?
        }
        Removal::Listed(device, seqs) => {
            let seqs: Vec<i64> = seqs.iter().map(|s| i64_of(*s)).collect();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH gone AS (DELETE FROM queue WHERE device_key = $1 AND seq = ANY($2) RETURNING device_key, body_id, size{TAIL}"
            )))
            .bind(&device[..])
            .bind(seqs)
            .fetch_one(&mut **tx)
            .await?
        }
        Removal::Expired(now) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH gone AS (DELETE FROM queue WHERE expires_at <= $1 RETURNING device_key, body_id, size{TAIL}"
            )))
            .bind(i64_of(now))
            .fetch_one(&mut **tx)
            .await?
        }
    };
    let deleted: i64 = row.try_get(0)?;
    let unreferenced: Vec<i64> = row.try_get(1)?;
    if !unreferenced.is_empty() {
        sqlx::query("DELETE FROM bodies WHERE id = ANY($1) AND refs <= 0")
            .bind(unreferenced)
            .execute(&mut **tx)
            .await?;
    }
    Ok(u64_of(deleted))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::suite;

    async fn open() -> PgStore {
        PgStore::open(&crate::testing::test_database().await)
            .await
            .expect("opens")
    }

    #[tokio::test]
    async fn bundles_take_each_one_time_key_once_then_last_resort() {
        suite::bundles_take_each_one_time_key_once_then_last_resort(open().await).await;
    }

    #[tokio::test]
    async fn concurrent_takes_never_share_a_key() {
        suite::concurrent_takes_never_share_a_key(open().await).await;
    }

    #[tokio::test]
    async fn multi_recipient_body_is_stored_once_and_freed_by_the_last_ack() {
        suite::multi_recipient_body_is_stored_once_and_freed_by_the_last_ack(open().await).await;
    }

    #[tokio::test]
    async fn unknown_devices_and_quotas_store_nothing() {
        suite::unknown_devices_and_quotas_store_nothing(open().await).await;
    }

    #[tokio::test]
    async fn paging_is_bounded_and_ordered() {
        suite::paging_is_bounded_and_ordered(open().await).await;
    }

    #[tokio::test]
    async fn concurrent_enqueues_batch_correctly() {
        suite::concurrent_enqueues_batch_correctly(open().await).await;
    }

    #[tokio::test]
    async fn pages_are_bounded_by_bytes_but_never_empty() {
        suite::pages_are_bounded_by_bytes_but_never_empty(open().await).await;
    }

    #[tokio::test]
    async fn expiry_sweeps_envelopes_and_ids() {
        suite::expiry_sweeps_envelopes_and_ids(open().await).await;
    }

    #[tokio::test]
    async fn conflicts_are_retried_then_reported() {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let result = retry(|| async {
            let n = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n < 2 {
                Err(StoreError::Conflict("deadlock detected".into()))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(result, Ok(2));
        let always = retry(|| async { Err::<(), _>(StoreError::Conflict("again".into())) }).await;
        assert_eq!(always, Err(StoreError::Conflict("again".into())));
        let fatal = retry(|| async { Err::<(), _>(StoreError::Backend("no".into())) }).await;
        assert_eq!(fatal, Err(StoreError::Backend("no".into())));
    }

    #[derive(Default)]
    struct Woken(std::sync::Mutex<Vec<DeviceKey>>);

    impl CommitListener for Woken {
        fn committed(&self, _: &[Committed<'_>]) {}
        fn wake(&self, device: &DeviceKey) {
            if let Ok(mut w) = self.0.lock() {
                w.push(*device);
            }
        }
        fn wake_all(&self) {}
        fn taken_over(&self, _: &DeviceKey) {}
    }

    /// Two relay processes on one database: a commit through one wakes
    /// the other's listener for exactly the recipient devices.
    #[tokio::test]
    async fn a_commit_on_one_relay_wakes_the_other() {
        let url = crate::testing::test_database().await;
        let (a, b) = (
            PgStore::open(&url).await.expect("opens"),
            PgStore::open(&url).await.expect("opens"),
        );
        let woken = Arc::new(Woken::default());
        b.set_listener(woken.clone());
        let local = Arc::new(Woken::default());
        a.set_listener(local.clone());
        let device = [4; 32];
        a.register(device, suite::upload(0))
            .await
            .expect("registers");
        // The listener needs a moment to subscribe.
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.enqueue(suite::envelope(1, b"x", &[device]), suite::LIMITS)
            .await
            .expect("stores");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while woken.0.lock().map(|w| w.is_empty()).unwrap_or(true) {
            assert!(
                std::time::Instant::now() < deadline,
                "relay B was never woken"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*woken.0.lock().expect("lock"), vec![device]);
        // A relay does not wake itself through the database.
        assert!(local.0.lock().expect("lock").is_empty());
        // And B reads what A stored.
        assert_eq!(
            b.read(device, 0, 10).await.expect("reads").envelopes.len(),
            1
        );
    }
}
