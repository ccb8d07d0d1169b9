//! The embedded SQLite store (`spec/relay.md`, "Storage").
//!
//! One writer task owns the database connection. Callers send it jobs;
//! it takes every job waiting, runs them in one transaction, commits
//! (WAL, `synchronous = FULL`: the commit is on disk), and only then
//! answers each caller. Commits happen whenever the writer is free, so
//! a busy relay batches many envelopes per fsync and an idle one
//! commits at once. If a batch fails, its jobs are retried one by one
//! so one bad job cannot fail the others.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{
    BundleParts, CommitListener, Committed, DeviceKey, Enqueued, NewEnvelope, Page, PrekeyUpload,
    QueueLimits, Slot, Stats, Store, StoreError,
};
use super::{Columns, bound_page, fixed, i64_of, u32_of, u64_of};

/// Jobs taken into one transaction at most.
const MAX_BATCH: usize = 512;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS devices (
        device_key BLOB PRIMARY KEY,
        spk_id INTEGER NOT NULL, spk_public BLOB NOT NULL, spk_signature BLOB NOT NULL,
        lr_id INTEGER NOT NULL, lr_public BLOB NOT NULL, lr_signature BLOB NOT NULL,
        next_seq INTEGER NOT NULL DEFAULT 0,
        queued_count INTEGER NOT NULL DEFAULT 0,
        queued_bytes INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS one_time_prekeys (
        device_key BLOB NOT NULL, id INTEGER NOT NULL, public_key BLOB NOT NULL,
        PRIMARY KEY (device_key, id)
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS bodies (
        id INTEGER PRIMARY KEY, data BLOB NOT NULL, refs INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS bodies_unreferenced ON bodies (id) WHERE refs <= 0",
    "CREATE TABLE IF NOT EXISTS queue (
        device_key BLOB NOT NULL, seq INTEGER NOT NULL, body_id INTEGER NOT NULL,
        slot BLOB NOT NULL, size INTEGER NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (device_key, seq)
    ) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS queue_expiry ON queue (expires_at)",
    "CREATE INDEX IF NOT EXISTS queue_body ON queue (body_id)",
    "CREATE TABLE IF NOT EXISTS sent_messages (
        message_id BLOB PRIMARY KEY, expires_at INTEGER NOT NULL
    ) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS sent_expiry ON sent_messages (expires_at)",
    "PRAGMA user_version = 1",
];

enum Op {
    Register(DeviceKey, PrekeyUpload),
    TakeBundle(DeviceKey),
    PrekeyCount(DeviceKey),
    Enqueue(NewEnvelope, QueueLimits),
    Page(DeviceKey, u64, u32),
    Read(DeviceKey, u64, u32),
    Ack(DeviceKey, Vec<u64>),
    QueueLen(DeviceKey),
    Stats,
    Sweep(u64),
}

enum Answer {
    Count(u32),
    Bundle(Box<Option<BundleParts>>),
    MaybeCount(Option<u32>),
    Enqueued(Result<Enqueued, StoreError>),
    Page(Page),
    Number(u64),
    Stats(Stats),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// The SQLite store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    listener: Listener,
}

type Listener = Arc<RwLock<Option<Arc<dyn CommitListener>>>>;

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let mut conn = SqliteConnection::connect_with(&options).await?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&mut conn).await?;
        }
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        let listener: Listener = Arc::new(RwLock::new(None));
        tokio::spawn(writer(conn, rx, listener.clone()));
        Ok(Self { jobs, listener })
    }

    async fn call(&self, op: Op) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

fn unexpected() -> StoreError {
    StoreError::Backend("writer answered a different operation".into())
}

impl Store for SqliteStore {
    async fn announce_online(&self, _device: DeviceKey) -> Result<(), StoreError> {
        // One relay process owns a SQLite file: nobody else to tell.
        Ok(())
    }

    fn set_listener(&self, listener: Arc<dyn CommitListener>) {
        if let Ok(mut slot) = self.listener.write() {
            *slot = Some(listener);
        }
    }

    async fn register(&self, device: DeviceKey, upload: PrekeyUpload) -> Result<u32, StoreError> {
        match self.call(Op::Register(device, upload)).await? {
            Answer::Count(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    async fn take_bundle(&self, device: DeviceKey) -> Result<Option<BundleParts>, StoreError> {
        match self.call(Op::TakeBundle(device)).await? {
            Answer::Bundle(b) => Ok(*b),
            _ => Err(unexpected()),
        }
    }

    async fn prekey_count(&self, device: DeviceKey) -> Result<Option<u32>, StoreError> {
        match self.call(Op::PrekeyCount(device)).await? {
            Answer::MaybeCount(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    async fn enqueue(
        &self,
        envelope: NewEnvelope,
        limits: QueueLimits,
    ) -> Result<Enqueued, StoreError> {
        match self.call(Op::Enqueue(envelope, limits)).await? {
            Answer::Enqueued(result) => result,
            _ => Err(unexpected()),
        }
    }

    async fn page(&self, device: DeviceKey, after: u64, max: u32) -> Result<Page, StoreError> {
        match self.call(Op::Page(device, after, max)).await? {
            Answer::Page(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    async fn read(&self, device: DeviceKey, after: u64, max: u32) -> Result<Page, StoreError> {
        match self.call(Op::Read(device, after, max)).await? {
            Answer::Page(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    async fn ack(&self, device: DeviceKey, seqs: Vec<u64>) -> Result<u32, StoreError> {
        match self.call(Op::Ack(device, seqs)).await? {
            Answer::Count(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    async fn queue_len(&self, device: DeviceKey) -> Result<u64, StoreError> {
        match self.call(Op::QueueLen(device)).await? {
            Answer::Number(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        match self.call(Op::Stats).await? {
            Answer::Stats(s) => Ok(s),
            _ => Err(unexpected()),
        }
    }

    async fn sweep(&self, now: u64) -> Result<u64, StoreError> {
        match self.call(Op::Sweep(now)).await? {
            Answer::Number(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }
}

/// Announces a committed enqueue, then answers its caller.
fn answer(listener: &Listener, job: Job, answer: Answer) {
    if let (Op::Enqueue(envelope, _), Answer::Enqueued(Ok(Enqueued::Stored(seqs)))) =
        (&job.op, &answer)
        && let Ok(slot) = listener.read()
        && let Some(listener) = slot.as_ref()
    {
        listener.committed(Committed {
            recipients: &envelope.recipients,
            seqs,
            body: &envelope.body,
            expires_at: envelope.expires_at,
        });
    }
    let _ = job.reply.send(Ok(answer));
}

async fn writer(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>, listener: Listener) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match run(&mut conn, &batch).await {
            Ok(answers) => {
                for (job, a) in batch.into_iter().zip(answers) {
                    answer(&listener, job, a);
                }
            }
            // Retry one by one: a failing job must not fail the others.
            Err(_) if batch.len() > 1 => {
                for job in batch {
                    let result = run(&mut conn, std::slice::from_ref(&job))
                        .await
                        .map(|mut answers| answers.pop());
                    match result {
                        Ok(Some(a)) => answer(&listener, job, a),
                        Ok(None) => {
                            let _ = job.reply.send(Err(unexpected()));
                        }
                        Err(e) => {
                            let _ = job.reply.send(Err(e));
                        }
                    }
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone_kind()));
                }
            }
        }
    }
}

impl StoreError {
    fn clone_kind(&self) -> StoreError {
        match self {
            StoreError::UnknownDevices(d) => StoreError::UnknownDevices(d.clone()),
            StoreError::Quota(d) => StoreError::Quota(d.clone()),
            StoreError::Backend(m) => StoreError::Backend(m.clone()),
            StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
            StoreError::Closed => StoreError::Closed,
        }
    }
}

/// Runs jobs in one transaction; answers only if it committed. Every
/// job but an enqueue runs in order first; then all enqueues run as one
/// group with multi-row statements. Any serial order is a valid
/// linearization: no caller is answered before the commit.
async fn run(conn: &mut SqliteConnection, batch: &[Job]) -> Result<Vec<Answer>, StoreError> {
    let mut tx = conn.begin().await?;
    let mut answers: Vec<Option<Answer>> = batch.iter().map(|_| None).collect();
    let mut enqueues = Vec::new();
    for (i, job) in batch.iter().enumerate() {
        match &job.op {
            Op::Enqueue(envelope, limits) => enqueues.push((i, envelope, *limits)),
            op => answers[i] = Some(execute(&mut tx, op).await?),
        }
    }
    for (i, result) in enqueue_batch(&mut tx, &enqueues).await? {
        answers[i] = Some(Answer::Enqueued(result));
    }
    tx.commit().await?;
    answers
        .into_iter()
        .map(|a| a.ok_or_else(unexpected))
        .collect()
}

type Tx<'c> = Transaction<'c, Sqlite>;

async fn execute(tx: &mut Tx<'_>, op: &Op) -> Result<Answer, StoreError> {
    Ok(match op {
        Op::Register(device, upload) => Answer::Count(register(tx, device, upload).await?),
        Op::TakeBundle(device) => Answer::Bundle(Box::new(take_bundle(tx, device).await?)),
        Op::PrekeyCount(device) => Answer::MaybeCount(prekey_count(tx, device).await?),
        Op::Enqueue(envelope, limits) => {
            let mut results = enqueue_batch(tx, &[(0, envelope, *limits)]).await?;
            match results.pop() {
                Some((_, result)) => Answer::Enqueued(result),
                None => return Err(unexpected()),
            }
        }
        Op::Page(device, after, max) => {
            remove(tx, Removal::UpTo(device, *after)).await?;
            Answer::Page(read(tx, device, *after, *max).await?)
        }
        Op::Read(device, after, max) => Answer::Page(read(tx, device, *after, *max).await?),
        Op::Ack(device, seqs) => {
            let deleted = remove(tx, Removal::Listed(device, seqs)).await?;
            Answer::Count(u32::try_from(deleted).unwrap_or(u32::MAX))
        }
        Op::QueueLen(device) => {
            let row = sqlx::query("SELECT queued_count FROM devices WHERE device_key = ?")
                .bind(&device[..])
                .fetch_optional(&mut **tx)
                .await?;
            match row {
                Some(r) => Answer::Number(u64_of(r.try_get(0)?)),
                None => Answer::Number(0),
            }
        }
        Op::Stats => {
            let row = sqlx::query(
                "SELECT COUNT(*), (SELECT COUNT(*) FROM bodies), COALESCE(SUM(queued_count), 0), COALESCE(SUM(queued_bytes), 0),
                        COALESCE(MAX(queued_count), 0),
                        (SELECT COUNT(*) FROM one_time_prekeys),
                        (SELECT COUNT(*) FROM devices d WHERE
                           (SELECT COUNT(*) FROM one_time_prekeys o WHERE o.device_key = d.device_key) < 10)
                 FROM devices",
            )
            .fetch_one(&mut **tx)
            .await?;
            Answer::Stats(row.stats()?)
        }
        Op::Sweep(now) => {
            let removed = remove(tx, Removal::Expired(*now)).await?;
            sqlx::query("DELETE FROM sent_messages WHERE expires_at <= ?")
                .bind(i64_of(*now))
                .execute(&mut **tx)
                .await?;
            Answer::Number(removed)
        }
    })
}

async fn register(
    tx: &mut Tx<'_>,
    device: &DeviceKey,
    upload: &PrekeyUpload,
) -> Result<u32, StoreError> {
    let (s, l) = (&upload.signed, &upload.last_resort);
    sqlx::query(
        "INSERT INTO devices (device_key, spk_id, spk_public, spk_signature, lr_id, lr_public, lr_signature)
         VALUES (?, ?, ?, ?, ?, ?, ?)
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
    .execute(&mut **tx)
    .await?;
    if !upload.one_time.is_empty() {
        sqlx::query("DELETE FROM one_time_prekeys WHERE device_key = ?")
            .bind(&device[..])
            .execute(&mut **tx)
            .await?;
        for (id, public) in &upload.one_time {
            sqlx::query("INSERT OR REPLACE INTO one_time_prekeys (device_key, id, public_key) VALUES (?, ?, ?)")
                .bind(&device[..])
                .bind(i64::from(*id))
                .bind(&public[..])
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(prekey_count(tx, device).await?.unwrap_or(0))
}

async fn take_bundle(
    tx: &mut Tx<'_>,
    device: &DeviceKey,
) -> Result<Option<BundleParts>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT spk_id, spk_public, spk_signature, lr_id, lr_public, lr_signature
         FROM devices WHERE device_key = ?",
    )
    .bind(&device[..])
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let signed = row.signed_key(0)?;
    let last_resort = row.signed_key(3)?;
    // The writer is the only connection: take and delete are one step.
    let taken = sqlx::query(
        "DELETE FROM one_time_prekeys WHERE device_key = ?1 AND id =
           (SELECT id FROM one_time_prekeys WHERE device_key = ?1 ORDER BY id LIMIT 1)
         RETURNING id, public_key",
    )
    .bind(&device[..])
    .fetch_optional(&mut **tx)
    .await?;
    let one_time = match taken {
        Some(r) => Some((u32_of(r.try_get(0)?)?, fixed(r.try_get::<&[u8], _>(1)?)?)),
        None => None,
    };
    Ok(Some(BundleParts {
        signed,
        last_resort,
        one_time,
    }))
}

async fn prekey_count(tx: &mut Tx<'_>, device: &DeviceKey) -> Result<Option<u32>, StoreError> {
    let known = sqlx::query("SELECT 1 FROM devices WHERE device_key = ?")
        .bind(&device[..])
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    if !known {
        return Ok(None);
    }
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM one_time_prekeys WHERE device_key = ?")
        .bind(&device[..])
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    Ok(Some(u32_of(n)?))
}

/// A JSON array of hex strings, for `IN (SELECT unhex(value) FROM json_each(?))`.
fn hex_list<'a>(items: impl Iterator<Item = &'a [u8]>) -> String {
    let quoted: Vec<String> = items.map(|b| format!("\"{}\"", hex::encode(b))).collect();
    format!("[{}]", quoted.join(","))
}

/// Rows per multi-row insert (SQLite allows 32,766 parameters).
const ROWS_PER_INSERT: usize = 1_000;

struct QueueRow<'a> {
    device: &'a DeviceKey,
    seq: u64,
    body_id: i64,
    slot: &'a Slot,
    size: u64,
    expires_at: u64,
}

struct QueueState {
    next_seq: u64,
    count: u64,
    bytes: u64,
}

/// Stores a group of envelopes with a handful of statements: one dedup
/// query, one device query, multi-row inserts, one update per device.
/// Sequence numbers are assigned here, in job order: this task is the
/// only writer.
async fn enqueue_batch(
    tx: &mut Tx<'_>,
    jobs: &[(usize, &NewEnvelope, QueueLimits)],
) -> Result<Vec<(usize, Result<Enqueued, StoreError>)>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids = hex_list(jobs.iter().map(|(_, e, _)| &e.message_id[..]));
    let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for row in sqlx::query(
        "SELECT message_id FROM sent_messages WHERE message_id IN (SELECT unhex(value) FROM json_each(?))",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?
    {
        seen.insert(row.try_get(0)?);
    }
    let mut devices: std::collections::HashMap<DeviceKey, QueueState> =
        std::collections::HashMap::new();
    let keys = {
        let mut keys: Vec<&DeviceKey> = jobs
            .iter()
            .flat_map(|(_, e, _)| e.recipients.iter().map(|(d, _)| d))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        hex_list(keys.into_iter().map(|k| &k[..]))
    };
    for row in sqlx::query(
        "SELECT device_key, next_seq, queued_count, queued_bytes FROM devices
         WHERE device_key IN (SELECT unhex(value) FROM json_each(?))",
    )
    .bind(keys)
    .fetch_all(&mut **tx)
    .await?
    {
        devices.insert(
            fixed(row.try_get::<&[u8], _>(0)?)?,
            QueueState {
                next_seq: u64_of(row.try_get(1)?),
                count: u64_of(row.try_get(2)?),
                bytes: u64_of(row.try_get(3)?),
            },
        );
    }
    let mut next_body: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM bodies")
        .fetch_one(&mut **tx)
        .await?
        .try_get::<i64, _>(0)?
        + 1;

    let mut results = Vec::with_capacity(jobs.len());
    let mut bodies: Vec<(i64, &[u8], i64)> = Vec::new();
    let mut rows: Vec<QueueRow<'_>> = Vec::new();
    let mut sent: Vec<(&[u8], u64)> = Vec::new();
    let mut touched: Vec<DeviceKey> = Vec::new();
    for (i, envelope, limits) in jobs {
        let id = &envelope.message_id[..];
        if seen.contains(id) {
            results.push((*i, Ok(Enqueued::Duplicate)));
            continue;
        }
        let size = envelope.body.len() as u64 + 48;
        let unknown: Vec<DeviceKey> = envelope
            .recipients
            .iter()
            .filter(|(d, _)| !devices.contains_key(d))
            .map(|(d, _)| *d)
            .collect();
        if !unknown.is_empty() {
            results.push((*i, Err(StoreError::UnknownDevices(unknown))));
            continue;
        }
        let full: Vec<DeviceKey> = envelope
            .recipients
            .iter()
            .filter(|(d, _)| {
                devices.get(d).is_some_and(|q| {
                    q.count + 1 > limits.max_envelopes || q.bytes + size > limits.max_bytes
                })
            })
            .map(|(d, _)| *d)
            .collect();
        if !full.is_empty() {
            results.push((*i, Err(StoreError::Quota(full))));
            continue;
        }
        let body_id = next_body;
        next_body += 1;
        bodies.push((
            body_id,
            &envelope.body[..],
            envelope.recipients.len() as i64,
        ));
        let mut seqs = Vec::with_capacity(envelope.recipients.len());
        for (device, slot) in &envelope.recipients {
            if let Some(q) = devices.get_mut(device) {
                q.next_seq += 1;
                q.count += 1;
                q.bytes += size;
                seqs.push(q.next_seq);
                rows.push(QueueRow {
                    device,
                    seq: q.next_seq,
                    body_id,
                    slot,
                    size,
                    expires_at: envelope.expires_at,
                });
                touched.push(*device);
            }
        }
        sent.push((id, envelope.expires_at));
        seen.insert(id.to_vec());
        results.push((*i, Ok(Enqueued::Stored(seqs))));
    }
    for chunk in bodies.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO bodies (id, data, refs) ");
        q.push_values(chunk, |mut b, (id, data, refs)| {
            b.push_bind(*id).push_bind(data.to_vec()).push_bind(*refs);
        });
        q.build().execute(&mut **tx).await?;
    }
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO queue (device_key, seq, body_id, slot, size, expires_at) ",
        );
        q.push_values(chunk, |mut b, row| {
            b.push_bind(row.device.to_vec())
                .push_bind(i64_of(row.seq))
                .push_bind(row.body_id)
                .push_bind(row.slot.to_vec())
                .push_bind(i64_of(row.size))
                .push_bind(i64_of(row.expires_at));
        });
        q.build().execute(&mut **tx).await?;
    }
    for chunk in sent.chunks(ROWS_PER_INSERT) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO sent_messages (message_id, expires_at) ");
        q.push_values(chunk, |mut b, (id, expires)| {
            b.push_bind(id.to_vec()).push_bind(i64_of(*expires));
        });
        q.build().execute(&mut **tx).await?;
    }
    touched.sort_unstable();
    touched.dedup();
    for device in touched {
        if let Some(q) = devices.get(&device) {
            sqlx::query("UPDATE devices SET next_seq = ?, queued_count = ?, queued_bytes = ? WHERE device_key = ?")
                .bind(i64_of(q.next_seq))
                .bind(i64_of(q.count))
                .bind(i64_of(q.bytes))
                .bind(&device[..])
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(results)
}

async fn read(
    tx: &mut Tx<'_>,
    device: &DeviceKey,
    after: u64,
    max: u32,
) -> Result<Page, StoreError> {
    let rows = sqlx::query(
        "SELECT q.seq, b.data, q.slot, q.expires_at FROM queue q JOIN bodies b ON b.id = q.body_id
         WHERE q.device_key = ? AND q.seq > ? ORDER BY q.seq LIMIT ?",
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

/// Which queue rows to delete.
enum Removal<'a> {
    UpTo(&'a DeviceKey, u64),
    Listed(&'a DeviceKey, &'a [u64]),
    Expired(u64),
}

/// The second bound parameter of a removal filter.
enum Arg {
    Int(i64),
    Text(String),
}

/// Binds a removal filter's two parameters (`?1`, `?2`) to a query.
macro_rules! bind_filter {
    ($query:expr, $device:expr, $arg:expr) => {
        match $arg {
            Arg::Int(n) => $query.bind($device.clone()).bind(*n),
            Arg::Text(t) => $query.bind($device.clone()).bind(t.clone()),
        }
    };
}

/// [`remove`] for rows of one queue, with plain (non-correlated)
/// statements: read the rows, delete them, subtract their totals from
/// the device, and drop one reference from each body. A body appears at
/// most once in one queue (a send names a device once), so "minus one"
/// per listed body is exact.
async fn remove_from_one_queue(
    tx: &mut Tx<'_>,
    device: &DeviceKey,
    filter: &str,
    arg: &Arg,
) -> Result<u64, StoreError> {
    let device_bind = Some(device.to_vec());
    let select = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT body_id, size FROM queue WHERE {filter}"
    )));
    let rows = bind_filter!(select, device_bind, arg)
        .fetch_all(&mut **tx)
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut bytes = 0i64;
    let mut bodies = Vec::with_capacity(rows.len());
    for row in &rows {
        bodies.push(row.try_get::<i64, _>(0)?.to_string());
        bytes += row.try_get::<i64, _>(1)?;
    }
    let delete = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM queue WHERE {filter}"
    )));
    let deleted = bind_filter!(delete, device_bind, arg)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    sqlx::query(
        "UPDATE devices SET queued_count = queued_count - ?, queued_bytes = queued_bytes - ? WHERE device_key = ?",
    )
    .bind(rows.len() as i64)
    .bind(bytes)
    .bind(&device[..])
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE bodies SET refs = refs - 1 WHERE id IN (SELECT value FROM json_each(?))")
        .bind(format!("[{}]", bodies.join(",")))
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM bodies WHERE refs <= 0")
        .execute(&mut **tx)
        .await?;
    Ok(deleted)
}

/// Deletes queue rows, keeping device counters and body reference
/// counts right, and deletes bodies nothing refers to any more.
/// Returns the number of rows deleted.
async fn remove(tx: &mut Tx<'_>, which: Removal<'_>) -> Result<u64, StoreError> {
    let (filter, device, arg): (&str, Option<&DeviceKey>, Arg) = match which {
        Removal::UpTo(d, seq) => (
            "device_key = ?1 AND seq <= ?2",
            Some(d),
            Arg::Int(i64_of(seq)),
        ),
        // The list travels as one JSON array: one pass for a whole ack.
        Removal::Listed(d, seqs) => (
            "device_key = ?1 AND seq IN (SELECT value FROM json_each(?2))",
            Some(d),
            Arg::Text(format!(
                "[{}]",
                seqs.iter()
                    .map(|s| i64_of(*s).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        ),
        Removal::Expired(now) => (
            "?1 IS NULL AND expires_at <= ?2",
            None,
            Arg::Int(i64_of(now)),
        ),
    };
    let device_bind: Option<Vec<u8>> = device.map(|d| d.to_vec());
    if let Some(device) = device {
        return remove_from_one_queue(tx, device, filter, &arg).await;
    }
    let statements = [
        format!(
            "UPDATE devices SET
               queued_count = queued_count - (SELECT COUNT(*) FROM queue WHERE queue.device_key = devices.device_key AND ({f})),
               queued_bytes = queued_bytes - (SELECT COALESCE(SUM(size), 0) FROM queue WHERE queue.device_key = devices.device_key AND ({f}))
             WHERE device_key IN (SELECT device_key FROM queue WHERE {f})",
            f = filter.replace("device_key = ?1", "queue.device_key = ?1")
        ),
        format!(
            "UPDATE bodies SET refs = refs - (SELECT COUNT(*) FROM queue WHERE queue.body_id = bodies.id AND ({filter}))
             WHERE id IN (SELECT body_id FROM queue WHERE {filter})"
        ),
    ];
    for sql in statements {
        bind_filter!(sqlx::query(sqlx::AssertSqlSafe(sql)), device_bind, &arg)
            .execute(&mut **tx)
            .await?;
    }
    let delete = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM queue WHERE {filter}"
    )));
    let deleted = bind_filter!(delete, device_bind, &arg)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if deleted > 0 {
        sqlx::query("DELETE FROM bodies WHERE refs <= 0")
            .execute(&mut **tx)
            .await?;
    }
    Ok(deleted)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::suite;
    use std::path::PathBuf;

    pub(crate) fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hush-relay-test-{}-{name}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("relay.sqlite")
    }

    async fn open(name: &str) -> SqliteStore {
        SqliteStore::open(&temp_db(name)).await.expect("opens")
    }

    #[tokio::test]
    async fn bundles_take_each_one_time_key_once_then_last_resort() {
        suite::bundles_take_each_one_time_key_once_then_last_resort(
            open("bundles_take_each_one_time_key_once_then_last_resort").await,
        )
        .await;
    }

    #[tokio::test]
    async fn concurrent_takes_never_share_a_key() {
        suite::concurrent_takes_never_share_a_key(open("concurrent_takes_never_share_a_key").await)
            .await;
    }

    #[tokio::test]
    async fn multi_recipient_body_is_stored_once_and_freed_by_the_last_ack() {
        suite::multi_recipient_body_is_stored_once_and_freed_by_the_last_ack(
            open("multi_recipient_body_is_stored_once_and_freed_by_the_last_ack").await,
        )
        .await;
    }

    #[tokio::test]
    async fn unknown_devices_and_quotas_store_nothing() {
        suite::unknown_devices_and_quotas_store_nothing(
            open("unknown_devices_and_quotas_store_nothing").await,
        )
        .await;
    }

    #[tokio::test]
    async fn paging_is_bounded_and_ordered() {
        suite::paging_is_bounded_and_ordered(open("paging_is_bounded_and_ordered").await).await;
    }

    #[tokio::test]
    async fn concurrent_enqueues_batch_correctly() {
        suite::concurrent_enqueues_batch_correctly(
            open("concurrent_enqueues_batch_correctly").await,
        )
        .await;
    }

    #[tokio::test]
    async fn pages_are_bounded_by_bytes_but_never_empty() {
        suite::pages_are_bounded_by_bytes_but_never_empty(
            open("pages_are_bounded_by_bytes_but_never_empty").await,
        )
        .await;
    }

    #[tokio::test]
    async fn expiry_sweeps_envelopes_and_ids() {
        suite::expiry_sweeps_envelopes_and_ids(open("expiry_sweeps_envelopes_and_ids").await).await;
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let path = temp_db("reopen");
        let a = [1; 32];
        {
            let store = SqliteStore::open(&path).await.expect("opens");
            store
                .register(a, suite::upload(2))
                .await
                .expect("registers");
            store
                .enqueue(suite::envelope(1, b"kept", &[a]), suite::LIMITS)
                .await
                .expect("stores");
        }
        let store = SqliteStore::open(&path).await.expect("reopens");
        assert_eq!(store.prekey_count(a).await, Ok(Some(2)));
        let page = store.page(a, 0, 10).await.expect("pages");
        assert_eq!(page.envelopes[0].body, b"kept");
        // Sequence numbers continue.
        assert_eq!(
            store
                .enqueue(suite::envelope(2, b"next", &[a]), suite::LIMITS)
                .await,
            Ok(Enqueued::Stored(vec![2]))
        );
    }
}
