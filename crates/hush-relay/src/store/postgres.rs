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
    AccountKey, BundleParts, Columns, CommitListener, Committed, DeviceKey, DeviceStatus, Enqueued,
    NewEnvelope, Page, PrekeyUpload, Published, QueueLimits, Seen, Stale, Stats, Store, StoreError,
    StoredList, bound_page, fixed, i64_of, u32_of, u64_of,
};

/// The notification channel between relays: commits.
const CHANNEL: &str = "hush_commits";

/// The notification channel between relays: a device authenticated.
const ONLINE_CHANNEL: &str = "hush_online";

/// The notification channel between relays: devices revoked.
const REVOKED_CHANNEL: &str = "hush_revoked";

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
    "ALTER TABLE devices ADD COLUMN IF NOT EXISTS last_seen BIGINT NOT NULL DEFAULT 0",
    "CREATE TABLE IF NOT EXISTS device_lists (
        account BYTEA PRIMARY KEY, version BIGINT NOT NULL,
        devices BYTEA[] NOT NULL, encoded BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS revoked (device_key BYTEA PRIMARY KEY)",
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

    fn announce(&self, stored: &[(&NewEnvelope, Vec<u64>)]) {
        if let Ok(slot) = self.listener.read()
            && let Some(listener) = slot.as_ref()
        {
            let commit: Vec<Committed<'_>> = stored
                .iter()
                .map(|(envelope, seqs)| Committed {
                    recipients: &envelope.recipients,
                    seqs,
                    body: &envelope.body,
                    expires_at: envelope.expires_at,
                })
                .collect();
            listener.committed(&commit);
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
        if let Err(e) = channel
            .listen_all([CHANNEL, ONLINE_CHANNEL, REVOKED_CHANNEL])
            .await
        {
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
                    for device in devices.split(',') {
                        if let Ok(bytes) = hex::decode(device)
                            && let Ok(key) = DeviceKey::try_from(bytes.as_slice())
                        {
                            match n.channel() {
                                ONLINE_CHANNEL => l.taken_over(&key),
                                REVOKED_CHANNEL => l.revoked(&key),
                                _ => l.wake(&key),
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
        if lock_device(&mut tx, &device).await? {
            return Err(StoreError::Revoked);
        }
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

    /// Stores a burst of envelopes in one transaction, each in every
    /// recipient queue or in none, as if one after another in order.
    /// Recipient rows are locked in key order (no deadlock with other
    /// bursts), message ids are recorded last: if another relay recorded
    /// one of them meanwhile, the whole burst is a conflict and is retried
    /// (and then sees it as a duplicate).
    async fn enqueue_once(
        &self,
        envelopes: &[NewEnvelope],
        limits: QueueLimits,
    ) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Device lists first (publications lock them first too).
        let mut accounts: Vec<Vec<u8>> = envelopes
            .iter()
            .flat_map(|e| e.expected.iter().map(|x| x.account.to_vec()))
            .collect();
        accounts.sort_unstable();
        accounts.dedup();
        let mut lists = std::collections::HashMap::new();
        if !accounts.is_empty() {
            for row in sqlx::query(
                "SELECT account, devices FROM device_lists
                 WHERE account = ANY($1) ORDER BY account FOR SHARE",
            )
            .bind(&accounts)
            .fetch_all(&mut *tx)
            .await?
            {
                let account: AccountKey = fixed(row.try_get::<&[u8], _>(0)?)?;
                lists.insert(account, device_keys(row.try_get(1)?)?);
            }
        }
        let mut keys: Vec<Vec<u8>> = envelopes
            .iter()
            .flat_map(|e| e.recipients.iter().map(|(d, _)| d.to_vec()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut queues = std::collections::HashMap::new();
        for row in sqlx::query(
            "SELECT device_key, next_seq, queued_count, queued_bytes FROM devices
             WHERE device_key = ANY($1) ORDER BY device_key FOR UPDATE",
        )
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?
        {
            let key: DeviceKey = fixed(row.try_get::<&[u8], _>(0)?)?;
            queues.insert(
                key,
                (
                    u64_of(row.try_get(1)?),
                    u64_of(row.try_get(2)?),
                    u64_of(row.try_get(3)?),
                ),
            );
        }
        let ids: Vec<Vec<u8>> = envelopes.iter().map(|e| e.message_id.to_vec()).collect();
        let mut recorded = std::collections::HashSet::new();
        for row in sqlx::query("SELECT message_id FROM sent_messages WHERE message_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
        {
            recorded.insert(fixed::<16>(row.try_get::<&[u8], _>(0)?)?);
        }

        let mut results = Vec::with_capacity(envelopes.len());
        let mut stored: Vec<(&NewEnvelope, Vec<u64>)> = Vec::new();
        for envelope in envelopes {
            if !recorded.insert(envelope.message_id) {
                results.push(Ok(Enqueued::Duplicate));
                continue;
            }
            let stale: Vec<Stale> = envelope
                .expected
                .iter()
                .filter_map(|e| e.compare(lists.get(&e.account).map(Vec::as_slice)))
                .collect();
            if !stale.is_empty() {
                recorded.remove(&envelope.message_id);
                results.push(Err(StoreError::StaleDevices(stale)));
                continue;
            }
            let unknown: Vec<DeviceKey> = envelope
                .recipients
                .iter()
                .filter(|(d, _)| !queues.contains_key(d))
                .map(|(d, _)| *d)
                .collect();
            let size = envelope.body.len() as u64 + 48;
            let full: Vec<DeviceKey> = envelope
                .recipients
                .iter()
                .filter(|(d, _)| {
                    queues.get(d).is_some_and(|(_, count, bytes)| {
                        count + 1 > limits.max_envelopes || bytes + size > limits.max_bytes
                    })
                })
                .map(|(d, _)| *d)
                .collect();
            if !unknown.is_empty() || !full.is_empty() {
                // A rejected id is not recorded: it may come again.
                recorded.remove(&envelope.message_id);
                results.push(Err(if unknown.is_empty() {
                    StoreError::Quota(full)
                } else {
                    StoreError::UnknownDevices(unknown)
                }));
                continue;
            }
            let mut seqs = Vec::with_capacity(envelope.recipients.len());
            for (device, _) in &envelope.recipients {
                if let Some((next, count, bytes)) = queues.get_mut(device) {
                    *next += 1;
                    *count += 1;
                    *bytes += size;
                    seqs.push(*next);
                }
            }
            results.push(Ok(Enqueued::Stored(seqs.clone())));
            stored.push((envelope, seqs));
        }
        if stored.is_empty() {
            tx.commit().await?;
            return Ok(results);
        }

        let body_ids: Vec<i64> = sqlx::query_scalar(
            "SELECT nextval(pg_get_serial_sequence('bodies', 'id')) FROM generate_series(1, $1)",
        )
        .bind(stored.len() as i64)
        .fetch_all(&mut *tx)
        .await?;
        if body_ids.len() != stored.len() {
            return Err(StoreError::Backend("body ids not allocated".into()));
        }
        let bodies: Vec<&[u8]> = stored.iter().map(|(e, _)| e.body.as_slice()).collect();
        let refs: Vec<i64> = stored
            .iter()
            .map(|(e, _)| e.recipients.len() as i64)
            .collect();
        sqlx::query("INSERT INTO bodies (id, data, refs) SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::bigint[])")
            .bind(&body_ids)
            .bind(&bodies)
            .bind(&refs)
            .execute(&mut *tx)
            .await?;
        let (mut q_device, mut q_seq, mut q_body, mut q_slot, mut q_size, mut q_expires) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for ((envelope, seqs), body_id) in stored.iter().zip(&body_ids) {
            for ((device, slot), seq) in envelope.recipients.iter().zip(seqs) {
                q_device.push(&device[..]);
                q_seq.push(i64_of(*seq));
                q_body.push(*body_id);
                q_slot.push(&slot[..]);
                q_size.push(i64_of(envelope.body.len() as u64 + 48));
                q_expires.push(i64_of(envelope.expires_at));
            }
        }
        sqlx::query(
            "INSERT INTO queue (device_key, seq, body_id, slot, size, expires_at)
             SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bigint[], $6::bigint[])",
        )
        .bind(&q_device)
        .bind(&q_seq)
        .bind(&q_body)
        .bind(&q_slot)
        .bind(&q_size)
        .bind(&q_expires)
        .execute(&mut *tx)
        .await?;
        let (mut d_key, mut d_next, mut d_count, mut d_bytes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (key, (next, count, bytes)) in &queues {
            d_key.push(&key[..]);
            d_next.push(i64_of(*next));
            d_count.push(i64_of(*count));
            d_bytes.push(i64_of(*bytes));
        }
        sqlx::query(
            "UPDATE devices SET next_seq = v.next_seq, queued_count = v.queued_count,
                                queued_bytes = v.queued_bytes
             FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[], $4::bigint[])
                  AS v(device_key, next_seq, queued_count, queued_bytes)
             WHERE devices.device_key = v.device_key",
        )
        .bind(&d_key)
        .bind(&d_next)
        .bind(&d_count)
        .bind(&d_bytes)
        .execute(&mut *tx)
        .await?;
        let new_ids: Vec<&[u8]> = stored.iter().map(|(e, _)| &e.message_id[..]).collect();
        let expiries: Vec<i64> = stored.iter().map(|(e, _)| i64_of(e.expires_at)).collect();
        let inserted = sqlx::query(
            "INSERT INTO sent_messages (message_id, expires_at)
             SELECT * FROM UNNEST($1::bytea[], $2::bigint[]) ON CONFLICT DO NOTHING",
        )
        .bind(&new_ids)
        .bind(&expiries)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted != stored.len() as u64 {
            // Another relay recorded one of these ids since we looked.
            return Err(StoreError::Conflict(
                "a message id was recorded concurrently".into(),
            ));
        }
        // Delivered by PostgreSQL only if this transaction commits.
        let touched: Vec<String> = d_key.iter().map(hex::encode).collect();
        for chunk in touched.chunks(100) {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(format!("{} {}", self.instance, chunk.join(",")))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.announce(&stored);
        Ok(results)
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

    async fn unregister_once(&self, device: DeviceKey) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = remove_device(&mut tx, &device).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn publish_once(&self, list: &StoredList) -> Result<Published, StoreError> {
        let mut tx = self.pool.begin().await?;
        let keys: Vec<&[u8]> = list.devices.iter().map(|d| &d[..]).collect();
        let named: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT device_key FROM revoked WHERE device_key = ANY($1)")
                .bind(&keys)
                .fetch_all(&mut *tx)
                .await?;
        if !named.is_empty() {
            return Ok(Published::Revoked(device_keys(named)?));
        }
        let stored = sqlx::query(
            "SELECT version, devices, encoded FROM device_lists WHERE account = $1 FOR UPDATE",
        )
        .bind(&list.account[..])
        .fetch_optional(&mut *tx)
        .await?;
        let before = match stored {
            Some(row) => {
                let version = u64_of(row.try_get(0)?);
                if version >= list.version {
                    let encoded: Vec<u8> = row.try_get(2)?;
                    return Ok(if version == list.version && encoded == list.encoded {
                        Published::Unchanged
                    } else {
                        Published::Old(version)
                    });
                }
                sqlx::query(
                    "UPDATE device_lists SET version = $2, devices = $3, encoded = $4 WHERE account = $1",
                )
                .bind(&list.account[..])
                .bind(i64_of(list.version))
                .bind(&keys)
                .bind(&list.encoded)
                .execute(&mut *tx)
                .await?;
                device_keys(row.try_get(1)?)?
            }
            None => {
                let inserted = sqlx::query(
                    "INSERT INTO device_lists (account, version, devices, encoded)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(&list.account[..])
                .bind(i64_of(list.version))
                .bind(&keys)
                .bind(&list.encoded)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Err(StoreError::Conflict(
                        "a device list was published concurrently".into(),
                    ));
                }
                vec![list.account]
            }
        };
        let dropped: Vec<DeviceKey> = before
            .into_iter()
            .filter(|d| !list.devices.contains(d))
            .collect();
        for device in &dropped {
            remove_device(&mut tx, device).await?;
            sqlx::query("INSERT INTO revoked (device_key) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(&device[..])
                .execute(&mut *tx)
                .await?;
        }
        if !dropped.is_empty() {
            let hexes: Vec<String> = dropped.iter().map(hex::encode).collect();
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(REVOKED_CHANNEL)
                .bind(format!("{} {}", self.instance, hexes.join(",")))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if let Ok(slot) = self.listener.read()
            && let Some(l) = slot.as_ref()
        {
            for device in &dropped {
                l.revoked(device);
            }
        }
        Ok(Published::Stored(dropped))
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
        let envelopes = [envelope];
        retry(|| self.enqueue_once(&envelopes, limits))
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Backend("no outcome for the send".into())))
    }

    async fn enqueue_many(
        &self,
        envelopes: Vec<NewEnvelope>,
        limits: QueueLimits,
    ) -> Vec<Result<Enqueued, StoreError>> {
        match retry(|| self.enqueue_once(&envelopes, limits)).await {
            Ok(results) => results,
            Err(e) => envelopes.iter().map(|_| Err(e.clone())).collect(),
        }
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

    async fn seen(&self, device: DeviceKey, day: u64) -> Result<Seen, StoreError> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM revoked WHERE device_key = $1),
                    (SELECT queued_count FROM devices WHERE device_key = $1)",
        )
        .bind(&device[..])
        .fetch_one(&self.pool)
        .await?;
        if row.try_get::<bool, _>(0)? {
            return Ok(Seen::Revoked);
        }
        // Once a day at most: the condition makes later calls no-ops.
        sqlx::query("UPDATE devices SET last_seen = $2 WHERE device_key = $1 AND last_seen < $2")
            .bind(&device[..])
            .bind(i64_of(day))
            .execute(&self.pool)
            .await?;
        Ok(Seen::Queued(u64_of(
            row.try_get::<Option<i64>, _>(1)?.unwrap_or(0),
        )))
    }

    async fn unregister(&self, device: DeviceKey) -> Result<u64, StoreError> {
        retry(|| self.unregister_once(device)).await
    }

    async fn publish_devices(&self, list: StoredList) -> Result<Published, StoreError> {
        retry(|| self.publish_once(&list)).await
    }

    async fn device_list(&self, account: AccountKey) -> Result<Option<StoredList>, StoreError> {
        let row =
            sqlx::query("SELECT version, devices, encoded FROM device_lists WHERE account = $1")
                .bind(&account[..])
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(row) => Ok(Some(StoredList {
                account,
                version: u64_of(row.try_get(0)?),
                devices: device_keys(row.try_get(1)?)?,
                encoded: row.try_get(2)?,
            })),
            None => Ok(None),
        }
    }

    async fn device_status(
        &self,
        devices: Vec<DeviceKey>,
    ) -> Result<Vec<DeviceStatus>, StoreError> {
        let keys: Vec<&[u8]> = devices.iter().map(|d| &d[..]).collect();
        let mut found = std::collections::HashMap::new();
        for row in sqlx::query(
            "SELECT device_key, last_seen, queued_count FROM devices WHERE device_key = ANY($1)",
        )
        .bind(&keys)
        .fetch_all(&self.pool)
        .await?
        {
            let key: DeviceKey = fixed(row.try_get::<&[u8], _>(0)?)?;
            found.insert(
                key,
                DeviceStatus {
                    last_seen_day: u64_of(row.try_get(1)?),
                    queued: u64_of(row.try_get(2)?),
                },
            );
        }
        Ok(devices
            .iter()
            .map(|d| found.get(d).copied().unwrap_or_default())
            .collect())
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

/// Stored device keys, 32 bytes each.
fn device_keys(stored: Vec<Vec<u8>>) -> Result<Vec<DeviceKey>, StoreError> {
    stored.iter().map(|k| fixed(k)).collect()
}

/// Serializes registration and removal of one device (a row lock cannot:
/// the row may not exist yet). Returns whether the device is revoked.
async fn lock_device(tx: &mut Tx, device: &DeviceKey) -> Result<bool, StoreError> {
    let mut key = [0u8; 8];
    key.copy_from_slice(&device[..8]);
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(i64::from_be_bytes(key))
        .execute(&mut **tx)
        .await?;
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM revoked WHERE device_key = $1)")
            .bind(&device[..])
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// Deletes a device's queue, prekeys and registration; returns the
/// number of envelopes that were waiting. The device's row is locked
/// first, so no send commits to the queue while it goes.
async fn remove_device(tx: &mut Tx, device: &DeviceKey) -> Result<u64, StoreError> {
    lock_device(tx, device).await?;
    let found = sqlx::query("SELECT 1 FROM devices WHERE device_key = $1 FOR UPDATE")
        .bind(&device[..])
        .fetch_optional(&mut **tx)
        .await?;
    if found.is_none() {
        return Ok(0);
    }
    let n = remove(tx, Removal::Device(device)).await?;
    sqlx::query("DELETE FROM one_time_prekeys WHERE device_key = $1")
        .bind(&device[..])
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM devices WHERE device_key = $1")
        .bind(&device[..])
        .execute(&mut **tx)
        .await?;
    Ok(n)
}

enum Removal<'a> {
    Device(&'a DeviceKey),
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
        Removal::Device(device) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH gone AS (DELETE FROM queue WHERE device_key = $1 RETURNING device_key, body_id, size{TAIL}"
            )))
            .bind(&device[..])
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
    async fn device_lists_check_senders_and_revoke_devices() {
        suite::device_lists_check_senders_and_revoke_devices(open().await).await;
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
    async fn a_burst_of_bodies_comes_back_exactly() {
        suite::a_burst_of_bodies_comes_back_exactly(open().await).await;
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
        fn revoked(&self, _: &DeviceKey) {}
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
