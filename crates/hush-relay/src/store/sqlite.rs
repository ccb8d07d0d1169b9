//! The embedded SQLite store (`spec/relay.md`, "Storage").
//!
//! One writer task owns the only connection to the database, which it
//! opens in exclusive locking mode: no other process can read or write
//! the file while the relay runs. Callers send it jobs; it takes every
//! job waiting, runs them in one transaction, commits (WAL,
//! `synchronous = FULL`: the commit is on disk), and only then answers
//! each caller. Commits happen whenever the writer is free, so a busy
//! relay batches many envelopes per fsync and an idle one commits at
//! once. If a batch fails, its jobs are retried one by one so one bad
//! job cannot fail the others.
//!
//! Because the writer is the only connection, it keeps in memory what
//! every send needs to know: each device's queue counters and next
//! sequence number, and the recorded message ids. Nothing in memory
//! changes until the transaction that changes the database has
//! committed, so memory and file agree after every batch, and the
//! memory is rebuilt from the file at start. The per-envelope cost is
//! then what must be written: one queue row (with the body inline when
//! it has one recipient), one message id row appended to a log, and on
//! ack one row deleted. Queue rows are stored in arrival order (a
//! rowid table with an index on `(device, seq)`), so a batch appends
//! to the end of the table whatever the number of recipients, and the
//! expiry sweep deletes from its head.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Arguments, Connection, Row, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{
    AccountKey, BundleParts, CommitListener, Committed, DeviceKey, DeviceStatus, Enqueued,
    MessageId, NewEnvelope, Page, PrekeyUpload, Published, QueueLimits, Seen, Stale, Stats, Store,
    StoreError, StoredList,
};
use super::{Columns, bound_page, fixed, i64_of, u32_of, u64_of};

/// Jobs taken into one transaction at most.
const MAX_BATCH: usize = 2048;

/// Message ids remembered for idempotent resends, by default.
pub const DEFAULT_MAX_MESSAGE_IDS: usize = 4_000_000;

/// Rows SQLite's thread may hand over before this task takes them.
const ROW_CHANNEL: usize = 16_384;

/// Prepared statements kept: every shape of the batched statements
/// (see [`chunks`]) and the rest.
const STATEMENT_CACHE: usize = 512;

/// Bound parameters per statement, below SQLite's limit of 32,766.
const MAX_PARAMS: usize = 30_000;

/// The schema version this code reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS devices (
        id INTEGER PRIMARY KEY,
        device_key BLOB NOT NULL UNIQUE,
        spk_id INTEGER NOT NULL, spk_public BLOB NOT NULL, spk_signature BLOB NOT NULL,
        lr_id INTEGER NOT NULL, lr_public BLOB NOT NULL, lr_signature BLOB NOT NULL,
        next_seq INTEGER NOT NULL DEFAULT 0,
        last_seen INTEGER NOT NULL DEFAULT 0
    )",
    "CREATE TABLE IF NOT EXISTS one_time_prekeys (
        device INTEGER NOT NULL, id INTEGER NOT NULL, public_key BLOB NOT NULL,
        PRIMARY KEY (device, id)
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS bodies (
        id INTEGER PRIMARY KEY, data BLOB NOT NULL, refs INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS queue (
        id INTEGER PRIMARY KEY,
        device INTEGER NOT NULL, seq INTEGER NOT NULL,
        body BLOB, body_id INTEGER,
        slot BLOB NOT NULL, size INTEGER NOT NULL, expires_at INTEGER NOT NULL
    )",
    // Covers the counting of what a deletion takes.
    "CREATE INDEX IF NOT EXISTS queue_device_seq ON queue (device, seq, size, body_id)",
    "CREATE TRIGGER IF NOT EXISTS queue_release AFTER DELETE ON queue
     WHEN old.body_id IS NOT NULL BEGIN
        UPDATE bodies SET refs = refs - 1 WHERE id = old.body_id;
        DELETE FROM bodies WHERE id = old.body_id AND refs <= 0;
     END",
    "CREATE TABLE IF NOT EXISTS sent_messages (
        id INTEGER PRIMARY KEY, message_id BLOB NOT NULL, expires_at INTEGER NOT NULL
    )",
    // `devices`: the list's device keys, 32 bytes each, in order.
    "CREATE TABLE IF NOT EXISTS device_lists (
        account BLOB PRIMARY KEY, version INTEGER NOT NULL,
        devices BLOB NOT NULL, encoded BLOB NOT NULL
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS revoked (device_key BLOB PRIMARY KEY) WITHOUT ROWID",
];

/// From schema version 2 to 3: device lists, revoked devices, last seen.
const MIGRATE_FROM_2: &[&str] =
    &["ALTER TABLE devices ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0"];

/// From schema version 1 (one row per device key, bodies always in their
/// own table, indexed message ids) to version 2, keeping every row.
const MIGRATE_FROM_1: &[&str] = &[
    "ALTER TABLE devices RENAME TO v1_devices",
    "ALTER TABLE one_time_prekeys RENAME TO v1_one_time_prekeys",
    "ALTER TABLE bodies RENAME TO v1_bodies",
    "ALTER TABLE queue RENAME TO v1_queue",
    "ALTER TABLE sent_messages RENAME TO v1_sent_messages",
    "DROP INDEX IF EXISTS bodies_unreferenced",
    "DROP INDEX IF EXISTS queue_expiry",
    "DROP INDEX IF EXISTS queue_body",
    "DROP INDEX IF EXISTS sent_expiry",
];

/// Copies version 1 rows into the version 2 tables (after [`SCHEMA`]).
const COPY_FROM_1: &[&str] = &[
    "INSERT INTO devices (device_key, spk_id, spk_public, spk_signature, lr_id, lr_public, lr_signature, next_seq)
     SELECT device_key, spk_id, spk_public, spk_signature, lr_id, lr_public, lr_signature, next_seq
     FROM v1_devices ORDER BY device_key",
    "INSERT INTO one_time_prekeys (device, id, public_key)
     SELECT d.id, o.id, o.public_key FROM v1_one_time_prekeys o JOIN devices d ON d.device_key = o.device_key",
    "INSERT INTO bodies (id, data, refs) SELECT id, data, refs FROM v1_bodies",
    "INSERT INTO queue (device, seq, body, body_id, slot, size, expires_at)
     SELECT d.id, q.seq, NULL, q.body_id, q.slot, q.size, q.expires_at
     FROM v1_queue q JOIN devices d ON d.device_key = q.device_key ORDER BY q.expires_at, d.id, q.seq",
    "INSERT INTO sent_messages (message_id, expires_at)
     SELECT message_id, expires_at FROM v1_sent_messages ORDER BY expires_at",
    "DROP TABLE v1_devices",
    "DROP TABLE v1_one_time_prekeys",
    "DROP TABLE v1_bodies",
    "DROP TABLE v1_queue",
    "DROP TABLE v1_sent_messages",
];

enum Op {
    Register(DeviceKey, PrekeyUpload),
    TakeBundle(DeviceKey),
    PrekeyCount(DeviceKey),
    Enqueue(Vec<NewEnvelope>, QueueLimits),
    Page(DeviceKey, u64, u32),
    Read(DeviceKey, u64, u32),
    Ack(DeviceKey, Vec<u64>),
    QueueLen(DeviceKey),
    Stats,
    Sweep(u64),
    Seen(DeviceKey, u64),
    Unregister(DeviceKey),
    Publish(StoredList),
    DeviceList(AccountKey),
    DeviceStatus(Vec<DeviceKey>),
}

enum Answer {
    Count(u32),
    Bundle(Box<Option<BundleParts>>),
    MaybeCount(Option<u32>),
    Enqueued(Vec<Result<Enqueued, StoreError>>),
    Page(Page),
    Number(u64),
    Stats(Stats),
    Seen(Seen),
    Published(Published),
    List(Option<StoredList>),
    Status(Vec<DeviceStatus>),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// Options of the SQLite store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Message ids remembered for idempotent resends (the newest are
    /// kept; each costs about 40 bytes of memory). Beyond it the oldest
    /// are forgotten at the next sweep, before their envelopes expire.
    pub max_message_ids: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_message_ids: DEFAULT_MAX_MESSAGE_IDS,
        }
    }
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
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (creating if missing) the database file at `path`, and
    /// takes it for this process: a second relay on the same file fails
    /// to open it (`database is locked`) within 10 s.
    pub async fn open_with(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .locking_mode(SqliteLockingMode::Exclusive)
            .busy_timeout(Duration::from_secs(10))
            // A batch's deletions return a row each: let SQLite's thread
            // hand them all over without waiting for this task.
            .row_buffer_size(ROW_CHANNEL)
            .statement_cache_capacity(STATEMENT_CACHE)
            // Pages stay at SQLite's default 4 KiB: larger ones write a
            // busy batch with fewer system calls, but make every small
            // commit write (and fsync) more, which costs latency.
            // 64 MiB of page cache.
            .pragma("cache_size", "-65536")
            // Statement journals (a multi-row statement's undo, for when it
            // fails half-way) in memory, not in a temporary file.
            .pragma("temp_store", "memory")
            // Deleted envelopes are overwritten where that costs no extra
            // I/O, so acked traffic does not linger in free pages.
            .pragma("secure_delete", "FAST");
        let mut conn = SqliteConnection::connect_with(&connect).await?;
        prepare_schema(&mut conn).await?;
        let state = State::load(&mut conn, options).await?;
        let (jobs, rx) = mpsc::channel(2 * MAX_BATCH);
        let listener: Listener = Arc::new(RwLock::new(None));
        let (answered, answers) = mpsc::unbounded_channel();
        tokio::spawn(announcer(answers, listener.clone()));
        // The writer gets a thread of its own: its round trips to
        // SQLite's thread are the relay's critical path, and must not
        // wait for a turn among the connections' tasks.
        std::thread::Builder::new()
            .name("hush-sqlite-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(writer(conn, state, rx, answered)),
                    Err(e) => tracing::error!(error = %e, "cannot start the SQLite writer"),
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the SQLite writer: {e}")))?;
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

/// Creates the schema in a new file, migrates an older one, and refuses
/// a newer one.
async fn prepare_schema(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let version: i64 = sqlx::query("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let steps: Vec<&str> = match version {
        SCHEMA_VERSION => return Ok(()),
        0 => SCHEMA.to_vec(),
        2 => MIGRATE_FROM_2.iter().chain(SCHEMA).copied().collect(),
        1 => MIGRATE_FROM_1
            .iter()
            .chain(SCHEMA)
            .chain(COPY_FROM_1)
            .copied()
            .collect(),
        v => {
            return Err(StoreError::Backend(format!(
                "database schema version {v} is newer than this relay's ({SCHEMA_VERSION})"
            )));
        }
    };
    let mut tx = conn.begin().await?;
    for statement in steps {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA user_version = {SCHEMA_VERSION}"
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
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
        match self.call(Op::Enqueue(vec![envelope], limits)).await? {
            Answer::Enqueued(mut results) => results.pop().unwrap_or_else(|| Err(unexpected())),
            _ => Err(unexpected()),
        }
    }

    async fn enqueue_many(
        &self,
        envelopes: Vec<NewEnvelope>,
        limits: QueueLimits,
    ) -> Vec<Result<Enqueued, StoreError>> {
        let n = envelopes.len();
        match self.call(Op::Enqueue(envelopes, limits)).await {
            Ok(Answer::Enqueued(results)) if results.len() == n => results,
            Ok(_) => (0..n).map(|_| Err(unexpected())).collect(),
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
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

    async fn seen(&self, device: DeviceKey, day: u64) -> Result<Seen, StoreError> {
        match self.call(Op::Seen(device, day)).await? {
            Answer::Seen(seen) => Ok(seen),
            _ => Err(unexpected()),
        }
    }

    async fn unregister(&self, device: DeviceKey) -> Result<u64, StoreError> {
        match self.call(Op::Unregister(device)).await? {
            Answer::Number(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    async fn publish_devices(&self, list: StoredList) -> Result<Published, StoreError> {
        match self.call(Op::Publish(list)).await? {
            Answer::Published(p) => Ok(p),
            _ => Err(unexpected()),
        }
    }

    async fn device_list(&self, account: AccountKey) -> Result<Option<StoredList>, StoreError> {
        match self.call(Op::DeviceList(account)).await? {
            Answer::List(list) => Ok(list),
            _ => Err(unexpected()),
        }
    }

    async fn device_status(
        &self,
        devices: Vec<DeviceKey>,
    ) -> Result<Vec<DeviceStatus>, StoreError> {
        match self.call(Op::DeviceStatus(devices)).await? {
            Answer::Status(status) => Ok(status),
            _ => Err(unexpected()),
        }
    }
}

/// One device's queue, as the writer knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Queue {
    /// `devices.id`.
    id: i64,
    /// The last sequence number assigned.
    next_seq: u64,
    /// `devices.next_seq` as stored; brought up to `next_seq` whenever
    /// entries are deleted, so a queue emptied keeps counting on after a
    /// restart (otherwise the highest stored `seq` gives it).
    saved_seq: u64,
    /// Entries waiting.
    count: u64,
    /// Σ size of the entries waiting.
    bytes: u64,
    /// `devices.last_seen`: the day it last authenticated.
    last_seen: u64,
}

/// An account's device list, as the writer keeps it (the encoding stays
/// in the file).
struct List {
    version: u64,
    devices: Vec<DeviceKey>,
}

/// What the writer keeps in memory. It changes the memory as it plans a
/// batch; if the transaction then fails, it rolls back and reloads the
/// memory from the file. So after every commit or rollback, memory and
/// file agree.
struct State {
    devices: HashMap<DeviceKey, Queue>,
    /// Recorded message ids.
    sent: HashSet<MessageId>,
    /// Queue entries holding their body inline (one recipient).
    inline: u64,
    /// The next `bodies.id` to use.
    next_body: i64,
    /// Accounts' device lists.
    lists: HashMap<AccountKey, List>,
    /// Devices revoked by a device list.
    revoked: HashSet<DeviceKey>,
    options: SqliteOptions,
}

impl State {
    async fn load(conn: &mut SqliteConnection, options: SqliteOptions) -> Result<Self, StoreError> {
        let mut devices = HashMap::new();
        let mut by_id = HashMap::new();
        let mut inline = 0;
        for row in sqlx::query("SELECT id, device_key, next_seq, last_seen FROM devices")
            .fetch_all(&mut *conn)
            .await?
        {
            let id: i64 = row.try_get(0)?;
            let key: DeviceKey = fixed(row.try_get::<&[u8], _>(1)?)?;
            let seq = u64_of(row.try_get(2)?);
            by_id.insert(id, key);
            devices.insert(
                key,
                Queue {
                    id,
                    next_seq: seq,
                    saved_seq: seq,
                    count: 0,
                    bytes: 0,
                    last_seen: u64_of(row.try_get(3)?),
                },
            );
        }
        for row in sqlx::query(
            "SELECT device, COUNT(*), COALESCE(SUM(size), 0), MAX(seq), SUM(body IS NOT NULL)
             FROM queue GROUP BY device",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            let id: i64 = row.try_get(0)?;
            let queue = by_id
                .get(&id)
                .and_then(|key| devices.get_mut(key))
                .ok_or_else(|| StoreError::Backend("queue entry of an unknown device".into()))?;
            queue.count = u64_of(row.try_get(1)?);
            queue.bytes = u64_of(row.try_get(2)?);
            queue.next_seq = queue.next_seq.max(u64_of(row.try_get(3)?));
            inline += u64_of(row.try_get(4)?);
        }
        let mut sent = HashSet::new();
        for row in sqlx::query("SELECT message_id FROM sent_messages ORDER BY id DESC LIMIT ?")
            .bind(i64_of(options.max_message_ids as u64))
            .fetch_all(&mut *conn)
            .await?
        {
            sent.insert(fixed(row.try_get::<&[u8], _>(0)?)?);
        }
        let next_body = sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 FROM bodies")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        let mut lists = HashMap::new();
        for row in sqlx::query("SELECT account, version, devices FROM device_lists")
            .fetch_all(&mut *conn)
            .await?
        {
            lists.insert(
                fixed(row.try_get::<&[u8], _>(0)?)?,
                List {
                    version: u64_of(row.try_get(1)?),
                    devices: keys(row.try_get::<&[u8], _>(2)?)?,
                },
            );
        }
        let mut revoked = HashSet::new();
        for row in sqlx::query("SELECT device_key FROM revoked")
            .fetch_all(&mut *conn)
            .await?
        {
            revoked.insert(fixed(row.try_get::<&[u8], _>(0)?)?);
        }
        Ok(Self {
            devices,
            sent,
            inline,
            next_body,
            lists,
            revoked,
            options,
        })
    }

    /// Counts deleted queue entries out of their queues' counters.
    fn release(&mut self, freed: &HashMap<i64, Freed>, devices: impl Iterator<Item = DeviceKey>) {
        for device in devices {
            if let Some(q) = self.devices.get_mut(&device)
                && let Some(f) = freed.get(&q.id)
            {
                q.count = q.count.saturating_sub(f.count);
                q.bytes = q.bytes.saturating_sub(f.bytes);
                self.inline = self.inline.saturating_sub(f.inline);
            }
        }
    }
}

/// Device keys stored back to back.
fn keys(bytes: &[u8]) -> Result<Vec<DeviceKey>, StoreError> {
    if !bytes.len().is_multiple_of(32) {
        return Err(StoreError::Backend("stored device list is cut".into()));
    }
    bytes.chunks(32).map(fixed).collect()
}

/// What deletions took from one queue.
#[derive(Default)]
struct Freed {
    count: u64,
    bytes: u64,
    inline: u64,
}

impl Freed {
    /// Adds a deleted entry from a row `size, body IS NOT NULL` at `at`.
    fn add(&mut self, row: &SqliteRow, at: usize) -> Result<(), StoreError> {
        self.count += 1;
        self.bytes += u64_of(row.int(at)?);
        if row.int(at + 1)? != 0 {
            self.inline += 1;
        }
        Ok(())
    }
}

/// A committed batch, for the announcer.
type Answered = Vec<(Job, Answer)>;

/// Announces committed enqueues and answers callers, batch after batch in
/// commit order, while the writer goes on with the next batch.
async fn announcer(mut rx: mpsc::UnboundedReceiver<Answered>, listener: Listener) {
    while let Some(batch) = rx.recv().await {
        if let Some(listener) = listener.read().ok().and_then(|l| l.clone()) {
            let mut commit = Vec::new();
            for (job, answer) in &batch {
                if let (Op::Enqueue(envelopes, _), Answer::Enqueued(results)) = (&job.op, answer) {
                    for (envelope, result) in envelopes.iter().zip(results) {
                        if let Ok(Enqueued::Stored(seqs)) = result {
                            commit.push(Committed {
                                recipients: &envelope.recipients,
                                seqs,
                                body: &envelope.body,
                                expires_at: envelope.expires_at,
                            });
                        }
                    }
                }
            }
            if !commit.is_empty() {
                listener.committed(&commit);
            }
            for (_, answer) in &batch {
                if let Answer::Published(Published::Stored(revoked)) = answer {
                    for device in revoked {
                        listener.revoked(device);
                    }
                }
            }
        }
        for (job, answer) in batch {
            let _ = job.reply.send(Ok(answer));
        }
    }
}

async fn writer(
    mut conn: SqliteConnection,
    state: State,
    mut rx: mpsc::Receiver<Job>,
    answered: mpsc::UnboundedSender<Answered>,
) {
    let options = state.options;
    // `None` after a failed reload: reload before the next batch.
    let mut state = Some(state);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut done = Vec::with_capacity(batch.len());
        let mut failed = Vec::new();
        match attempt(&mut conn, &mut state, options, &batch).await {
            Ok(answers) => done.extend(batch.into_iter().zip(answers)),
            // Retry one by one: a failing job must not fail the others.
            Err(_) if batch.len() > 1 => {
                for job in batch {
                    match attempt(&mut conn, &mut state, options, std::slice::from_ref(&job))
                        .await
                        .map(|mut answers| answers.pop())
                    {
                        Ok(Some(answer)) => done.push((job, answer)),
                        Ok(None) => failed.push((job, unexpected())),
                        Err(e) => failed.push((job, e)),
                    }
                }
            }
            Err(e) => failed.extend(batch.into_iter().map(|job| (job, e.clone()))),
        }
        // Failures are answered after the successes that committed
        // before them; nothing was stored for them, so nothing to announce.
        if !done.is_empty() && answered.send(done).is_err() {
            return;
        }
        for (job, e) in failed {
            let _ = job.reply.send(Err(e));
        }
    }
}

/// Runs a batch against the memory, loading it first if a failure left
/// it unknown; reloads it after a failure.
async fn attempt(
    conn: &mut SqliteConnection,
    state: &mut Option<State>,
    options: SqliteOptions,
    batch: &[Job],
) -> Result<Vec<Answer>, StoreError> {
    let current = match state {
        Some(current) => current,
        None => state.insert(State::load(conn, options).await?),
    };
    let result = run(conn, current, batch).await;
    if result.is_err() {
        // The transaction was rolled back; the memory may be ahead of it.
        *state = State::load(conn, options).await.ok();
    }
    result
}

type Tx<'c> = Transaction<'c, Sqlite>;

/// Runs jobs in one transaction; answers only if it committed. In the
/// transaction, as if one after another in this order: every job that is
/// not a send, an ack or a read, in job order; all sends, in job order;
/// all deletions (acks, and pages' implicit acks); all reads. No caller
/// is answered before the commit, so any serial order is a valid one.
async fn run(
    conn: &mut SqliteConnection,
    state: &mut State,
    batch: &[Job],
) -> Result<Vec<Answer>, StoreError> {
    let mut tx = conn.begin().await?;
    let mut answers: Vec<Option<Answer>> = batch.iter().map(|_| None).collect();
    let mut writes = Writes::default();
    for (i, job) in batch.iter().enumerate() {
        answers[i] = match &job.op {
            Op::Register(device, upload) => Some(Answer::Count(
                register(&mut tx, state, device, upload).await?,
            )),
            Op::TakeBundle(device) => Some(Answer::Bundle(Box::new(
                take_bundle(&mut tx, state, device).await?,
            ))),
            Op::PrekeyCount(device) => Some(Answer::MaybeCount(
                prekey_count(&mut tx, state, device).await?,
            )),
            Op::QueueLen(device) => Some(Answer::Number(
                state.devices.get(device).map(|q| q.count).unwrap_or(0),
            )),
            Op::Stats => Some(Answer::Stats(stats(&mut tx, state).await?)),
            Op::Sweep(now) => Some(Answer::Number(sweep(&mut tx, state, *now).await?)),
            Op::Seen(device, day) => Some(Answer::Seen(seen(&mut tx, state, device, *day).await?)),
            Op::Unregister(device) => {
                Some(Answer::Number(remove_device(&mut tx, state, device).await?))
            }
            Op::Publish(list) => Some(Answer::Published(publish(&mut tx, state, list).await?)),
            Op::DeviceList(account) => {
                Some(Answer::List(device_list(&mut tx, state, account).await?))
            }
            Op::DeviceStatus(devices) => Some(Answer::Status(
                devices
                    .iter()
                    .map(|d| {
                        state
                            .devices
                            .get(d)
                            .map(|q| DeviceStatus {
                                last_seen_day: q.last_seen,
                                queued: q.count,
                            })
                            .unwrap_or_default()
                    })
                    .collect(),
            )),
            Op::Enqueue(..) | Op::Page(..) | Op::Read(..) | Op::Ack(..) => None,
        };
    }
    for (i, job) in batch.iter().enumerate() {
        if let Op::Enqueue(envelopes, limits) = &job.op {
            answers[i] = Some(Answer::Enqueued(
                envelopes
                    .iter()
                    .map(|envelope| writes.enqueue(state, envelope, *limits))
                    .collect(),
            ));
        }
    }
    for job in batch {
        match &job.op {
            Op::Ack(device, seqs) => writes.delete_listed(state, device, seqs),
            Op::Page(device, after, _) => writes.delete_up_to(state, device, *after),
            _ => {}
        }
    }
    let mut deleted = writes.execute(&mut tx, state).await?.into_iter();
    for (i, job) in batch.iter().enumerate() {
        match &job.op {
            Op::Ack(device, _) => {
                // One count per ack of a known device, in batch order.
                let n = if state.devices.contains_key(device) {
                    deleted.next().unwrap_or(0)
                } else {
                    0
                };
                answers[i] = Some(Answer::Count(u32::try_from(n).unwrap_or(u32::MAX)));
            }
            Op::Page(device, after, max) | Op::Read(device, after, max) => {
                answers[i] = Some(Answer::Page(
                    read(&mut tx, state, device, *after, *max).await?,
                ));
            }
            _ => {}
        }
    }
    tx.commit().await?;
    answers
        .into_iter()
        .map(|a| a.ok_or_else(unexpected))
        .collect()
}

/// The sends and deletions of one batch, as a few multi-row statements.
#[derive(Default)]
struct Writes {
    /// Shared bodies: `(id, data, refs)`.
    bodies: Vec<(i64, Arc<Vec<u8>>, i64)>,
    /// Queue rows.
    rows: Vec<QueueRow>,
    /// Message ids recorded: `(id, expires_at)`.
    sent: Vec<(MessageId, u64)>,
    /// Deletion requests (acks and pages' implicit acks), in batch
    /// order: the device id, and whether the request is an ack.
    deletions: Vec<(i64, bool)>,
    /// What each request deletes: runs of sequence numbers
    /// `(request, device id, first, last)`, disjoint across requests (a
    /// sequence number listed twice is deleted by the first).
    runs: Vec<(usize, i64, u64, u64)>,
    /// Per device id, the runs taken so far: sorted, disjoint.
    claimed: HashMap<i64, Vec<(u64, u64)>>,
    /// Devices whose entries may be deleted (their `next_seq` is saved).
    deleting: HashSet<DeviceKey>,
}

struct QueueRow {
    device: i64,
    seq: u64,
    body: Body,
    slot: [u8; 48],
    size: u64,
    expires_at: u64,
}

enum Body {
    Inline(Arc<Vec<u8>>),
    Shared(i64),
}

impl Writes {
    /// Stores an envelope in every recipient queue, or nothing, exactly
    /// as `spec/relay.md` "Send" orders the checks.
    fn enqueue(
        &mut self,
        state: &mut State,
        envelope: &NewEnvelope,
        limits: QueueLimits,
    ) -> Result<Enqueued, StoreError> {
        if state.sent.contains(&envelope.message_id) {
            return Ok(Enqueued::Duplicate);
        }
        let stale: Vec<Stale> = envelope
            .expected
            .iter()
            .filter_map(|e| e.compare(state.lists.get(&e.account).map(|l| &l.devices[..])))
            .collect();
        if !stale.is_empty() {
            return Err(StoreError::StaleDevices(stale));
        }
        let mut queues = Vec::with_capacity(envelope.recipients.len());
        let mut unknown = Vec::new();
        for (device, _) in &envelope.recipients {
            match state.devices.get(device) {
                Some(q) => queues.push(*q),
                None => unknown.push(*device),
            }
        }
        if !unknown.is_empty() {
            return Err(StoreError::UnknownDevices(unknown));
        }
        let size = envelope.body.len() as u64 + 48;
        let full: Vec<DeviceKey> = envelope
            .recipients
            .iter()
            .zip(&queues)
            .filter(|(_, q)| {
                q.count + 1 > limits.max_envelopes || q.bytes + size > limits.max_bytes
            })
            .map(|((d, _), _)| *d)
            .collect();
        if !full.is_empty() {
            return Err(StoreError::Quota(full));
        }
        let body = if envelope.recipients.len() > 1 {
            let id = state.next_body;
            state.next_body += 1;
            self.bodies
                .push((id, envelope.body.clone(), envelope.recipients.len() as i64));
            Body::Shared(id)
        } else {
            state.inline += 1;
            Body::Inline(envelope.body.clone())
        };
        let mut seqs = Vec::with_capacity(queues.len());
        for (device, slot) in &envelope.recipients {
            let Some(q) = state.devices.get_mut(device) else {
                continue;
            };
            q.next_seq += 1;
            q.count += 1;
            q.bytes += size;
            seqs.push(q.next_seq);
            self.rows.push(QueueRow {
                device: q.id,
                seq: q.next_seq,
                body: match &body {
                    Body::Inline(data) => Body::Inline(data.clone()),
                    Body::Shared(id) => Body::Shared(*id),
                },
                slot: *slot,
                size,
                expires_at: envelope.expires_at,
            });
        }
        self.sent.push((envelope.message_id, envelope.expires_at));
        state.sent.insert(envelope.message_id);
        Ok(Enqueued::Stored(seqs))
    }

    fn delete_listed(&mut self, state: &State, device: &DeviceKey, seqs: &[u64]) {
        let Some(q) = state.devices.get(device) else {
            return;
        };
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for seq in seqs {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == seq => *last = seq,
                _ => runs.push((seq, seq)),
            }
        }
        self.delete(*device, q.id, true, runs);
    }

    fn delete_up_to(&mut self, state: &State, device: &DeviceKey, after: u64) {
        if let Some(q) = state.devices.get(device)
            && after > 0
        {
            self.delete(*device, q.id, false, vec![(1, after)]);
        }
    }

    /// Records a deletion request of sorted, disjoint runs, minus what
    /// earlier requests of the batch take from the same queue.
    fn delete(&mut self, device: DeviceKey, id: i64, ack: bool, runs: Vec<(u64, u64)>) {
        let request = self.deletions.len();
        self.deletions.push((id, ack));
        self.deleting.insert(device);
        let claimed = self.claimed.entry(id).or_default();
        let mut taken = Vec::new();
        for (first, last) in runs {
            let mut from = first;
            let mut i = claimed.partition_point(|&(_, end)| end < first);
            while from <= last {
                match claimed.get(i) {
                    Some(&(start, end)) if start <= last => {
                        if start > from {
                            taken.push((from, start - 1));
                        }
                        match end.checked_add(1) {
                            Some(next) => from = next,
                            None => break,
                        }
                        i += 1;
                    }
                    _ => {
                        taken.push((from, last));
                        break;
                    }
                }
            }
        }
        claimed.extend(taken.iter().copied());
        claimed.sort_unstable();
        self.runs.extend(
            taken
                .into_iter()
                .map(|(first, last)| (request, id, first, last)),
        );
    }

    /// Runs every write. Returns, for each listed deletion in order, how
    /// many entries it deleted; the queues' counters in `state` are
    /// brought down accordingly.
    ///
    /// Rows go in multi-row statements whose sizes are powers of two, so
    /// the few statement texts there are stay prepared in the
    /// connection's cache: SQLite parses each shape once, not each batch.
    async fn execute(self, tx: &mut Tx<'_>, state: &mut State) -> Result<Vec<u64>, StoreError> {
        let mut rest = &self.bodies[..];
        for n in chunks(self.bodies.len(), MAX_PARAMS / 3) {
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut args = SqliteArguments::default();
            for (id, data, refs) in chunk {
                arg(&mut args, *id)?;
                arg(&mut args, data.as_slice())?;
                arg(&mut args, *refs)?;
            }
            run_sql(
                tx,
                insert_sql("bodies (id, data, refs)", "(?,?,?)", n),
                args,
            )
            .await?;
        }
        // With one row per message id (sends to one device each, the usual
        // case), each chunk's queue rows and ids go in one round trip.
        let paired = self.rows.len() == self.sent.len();
        let mut rows = &self.rows[..];
        let mut sent = &self.sent[..];
        for n in chunks(self.rows.len(), MAX_PARAMS / 9) {
            let (chunk, tail) = rows.split_at(n);
            rows = tail;
            let mut args = SqliteArguments::default();
            for row in chunk {
                let (inline, shared) = match &row.body {
                    Body::Inline(data) => (Some(data.as_slice()), None),
                    Body::Shared(id) => (None, Some(*id)),
                };
                arg(&mut args, row.device)?;
                arg(&mut args, i64_of(row.seq))?;
                arg(&mut args, inline)?;
                arg(&mut args, shared)?;
                arg(&mut args, &row.slot[..])?;
                arg(&mut args, i64_of(row.size))?;
                arg(&mut args, i64_of(row.expires_at))?;
            }
            let mut sql = insert_sql(
                "queue (device, seq, body, body_id, slot, size, expires_at)",
                "(?,?,?,?,?,?,?)",
                n,
            );
            if paired {
                let (ids, tail) = sent.split_at(n);
                sent = tail;
                sql.push(';');
                sql.push_str(&insert_sql(
                    "sent_messages (message_id, expires_at)",
                    "(?,?)",
                    n,
                ));
                for (id, expires_at) in ids {
                    arg(&mut args, &id[..])?;
                    arg(&mut args, i64_of(*expires_at))?;
                }
            }
            run_sql(tx, sql, args).await?;
        }
        for n in chunks(sent.len(), MAX_PARAMS / 2) {
            let (chunk, tail) = sent.split_at(n);
            sent = tail;
            let mut args = SqliteArguments::default();
            for (id, expires_at) in chunk {
                arg(&mut args, &id[..])?;
                arg(&mut args, i64_of(*expires_at))?;
            }
            let sql = insert_sql("sent_messages (message_id, expires_at)", "(?,?)", n);
            run_sql(tx, sql, args).await?;
        }
        // Save the next sequence number of every queue that may empty.
        let mut saves = Vec::new();
        for device in &self.deleting {
            if let Some(q) = state.devices.get_mut(device)
                && q.saved_seq != q.next_seq
            {
                q.saved_seq = q.next_seq;
                saves.push((q.id, q.next_seq));
            }
        }
        let mut rest = &saves[..];
        for n in chunks(saves.len(), MAX_PARAMS / 2) {
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut sql = String::from("UPDATE devices SET next_seq = v.column2 FROM (VALUES ");
            push_marks(&mut sql, n, "(?,?)");
            sql.push_str(") AS v WHERE devices.id = v.column1");
            let mut args = SqliteArguments::default();
            for (id, seq) in chunk {
                arg(&mut args, *id)?;
                arg(&mut args, i64_of(*seq))?;
            }
            run_sql(tx, sql, args).await?;
        }
        // All deletions at once: count what each request takes, then
        // delete it. The runs travel as one JSON array, so the statement
        // text never changes.
        let mut freed: HashMap<i64, Freed> = HashMap::new();
        let mut counts = vec![0; self.deletions.len()];
        if !self.runs.is_empty() {
            let mut runs = String::with_capacity(self.runs.len() * 24 + 2);
            runs.push('[');
            for (i, (request, device, first, last)) in self.runs.iter().enumerate() {
                let comma = if i == 0 { "" } else { "," };
                let (first, last) = (i64_of(*first), i64_of(*last));
                let _ = write!(runs, "{comma}[{request},{device},{first},{last}]");
            }
            runs.push(']');
            let rows = sqlx::query(
                "SELECT r.value->>0, COUNT(*), COALESCE(SUM(q.size), 0), COALESCE(SUM(q.body_id IS NULL), 0)
                 FROM json_each(?1) r JOIN queue q
                   ON q.device = r.value->>1 AND q.seq BETWEEN r.value->>2 AND r.value->>3
                 GROUP BY 1;
                 DELETE FROM queue WHERE id IN (
                   SELECT q.id FROM json_each(?1) r JOIN queue q
                     ON q.device = r.value->>1 AND q.seq BETWEEN r.value->>2 AND r.value->>3)",
            )
            .bind(runs)
            .fetch_all(&mut **tx)
            .await?;
            for row in &rows {
                let request = usize::try_from(row.int(0)?).unwrap_or(usize::MAX);
                let Some((device, _)) = self.deletions.get(request) else {
                    return Err(StoreError::Backend(
                        "a deletion counted for no request".into(),
                    ));
                };
                let n = u64_of(row.int(1)?);
                let f = freed.entry(*device).or_default();
                f.count += n;
                f.bytes += u64_of(row.int(2)?);
                f.inline += u64_of(row.int(3)?);
                counts[request] = n;
            }
        }
        let counts = self
            .deletions
            .iter()
            .zip(counts)
            .filter(|((_, ack), _)| *ack)
            .map(|(_, n)| n)
            .collect();
        state.release(&freed, self.deleting.into_iter());
        Ok(counts)
    }
}

/// Splits `n` rows into statement sizes: as many of `max` (rounded down
/// to a power of two) as fit, then the powers of two of the rest.
fn chunks(n: usize, max: usize) -> impl Iterator<Item = usize> {
    let top = if max == 0 { 1 } else { 1 << max.ilog2() };
    let full = n / top;
    let rest = n % top;
    std::iter::repeat_n(top, full).chain(
        (0..usize::BITS)
            .rev()
            .map(|bit| 1usize << bit)
            .filter(move |size| rest & size != 0),
    )
}

/// `INSERT INTO {table} VALUES` with `n` copies of `group`.
fn insert_sql(table: &str, group: &str, n: usize) -> String {
    let mut sql = format!("INSERT INTO {table} VALUES ");
    push_marks(&mut sql, n, group);
    sql
}

/// Runs statements that return no rows (prepared once per text).
async fn run_sql(tx: &mut Tx<'_>, sql: String, args: SqliteArguments) -> Result<(), StoreError> {
    sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Adds one bound parameter.
fn arg<'t, T>(args: &mut SqliteArguments, value: T) -> Result<(), StoreError>
where
    T: sqlx::Encode<'t, Sqlite> + sqlx::Type<Sqlite>,
{
    args.add(value)
        .map_err(|e| StoreError::Backend(format!("binding a parameter: {e}")))
}

/// `n` comma-separated copies of `group`.
fn push_marks(sql: &mut String, n: usize, group: &str) {
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(group);
    }
}

async fn register(
    tx: &mut Tx<'_>,
    state: &mut State,
    device: &DeviceKey,
    upload: &PrekeyUpload,
) -> Result<u32, StoreError> {
    if state.revoked.contains(device) {
        return Err(StoreError::Revoked);
    }
    let (s, l) = (&upload.signed, &upload.last_resort);
    let id: i64 = sqlx::query(
        "INSERT INTO devices (device_key, spk_id, spk_public, spk_signature, lr_id, lr_public, lr_signature)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (device_key) DO UPDATE SET
           spk_id = excluded.spk_id, spk_public = excluded.spk_public, spk_signature = excluded.spk_signature,
           lr_id = excluded.lr_id, lr_public = excluded.lr_public, lr_signature = excluded.lr_signature
         RETURNING id",
    )
    .bind(&device[..])
    .bind(i64::from(s.id))
    .bind(&s.public[..])
    .bind(&s.signature[..])
    .bind(i64::from(l.id))
    .bind(&l.public[..])
    .bind(&l.signature[..])
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    state.devices.entry(*device).or_insert(Queue {
        id,
        next_seq: 0,
        saved_seq: 0,
        count: 0,
        bytes: 0,
        last_seen: 0,
    });
    if !upload.one_time.is_empty() {
        sqlx::query("DELETE FROM one_time_prekeys WHERE device = ?")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        let mut sql = String::from(
            "INSERT OR REPLACE INTO one_time_prekeys (device, id, public_key) VALUES ",
        );
        push_marks(&mut sql, upload.one_time.len(), "(?,?,?)");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for (key_id, public) in &upload.one_time {
            q = q.bind(id).bind(i64::from(*key_id)).bind(&public[..]);
        }
        q.execute(&mut **tx).await?;
    }
    count_one_time(tx, id).await
}

/// Records the day a device authenticated (once a day at most).
async fn seen(
    tx: &mut Tx<'_>,
    state: &mut State,
    device: &DeviceKey,
    day: u64,
) -> Result<Seen, StoreError> {
    if state.revoked.contains(device) {
        return Ok(Seen::Revoked);
    }
    let Some(q) = state.devices.get_mut(device) else {
        return Ok(Seen::Queued(0));
    };
    if q.last_seen < day {
        sqlx::query("UPDATE devices SET last_seen = ? WHERE id = ?")
            .bind(i64_of(day))
            .bind(q.id)
            .execute(&mut **tx)
            .await?;
        q.last_seen = day;
    }
    Ok(Seen::Queued(q.count))
}

/// Deletes a device's queue, prekeys and registration; returns the
/// number of envelopes that were waiting.
async fn remove_device(
    tx: &mut Tx<'_>,
    state: &mut State,
    device: &DeviceKey,
) -> Result<u64, StoreError> {
    let Some(q) = state.devices.get(device).copied() else {
        return Ok(0);
    };
    // fetch_all: every statement runs (the stream is read to its end).
    let rows = sqlx::query(
        "SELECT COUNT(*) FROM queue WHERE device = ?1 AND body IS NOT NULL;
         DELETE FROM queue WHERE device = ?1;
         DELETE FROM one_time_prekeys WHERE device = ?1;
         DELETE FROM devices WHERE id = ?1",
    )
    .bind(q.id)
    .fetch_all(&mut **tx)
    .await?;
    let inline = match rows.first() {
        Some(row) => row.int(0)?,
        None => return Err(StoreError::Backend("queue count missing".into())),
    };
    state.inline = state.inline.saturating_sub(u64_of(inline));
    state.devices.remove(device);
    Ok(q.count)
}

/// Stores a device list newer than the stored one and revokes the
/// devices it drops.
async fn publish(
    tx: &mut Tx<'_>,
    state: &mut State,
    list: &StoredList,
) -> Result<Published, StoreError> {
    let named: Vec<DeviceKey> = list
        .devices
        .iter()
        .filter(|d| state.revoked.contains(*d))
        .copied()
        .collect();
    if !named.is_empty() {
        return Ok(Published::Revoked(named));
    }
    let before = match state.lists.get(&list.account) {
        Some(stored) if stored.version >= list.version => {
            let same = stored.version == list.version
                && device_list(tx, state, &list.account)
                    .await?
                    .is_some_and(|s| s.encoded == list.encoded);
            return Ok(if same {
                Published::Unchanged
            } else {
                Published::Old(stored.version)
            });
        }
        Some(stored) => stored.devices.clone(),
        None => vec![list.account],
    };
    let dropped: Vec<DeviceKey> = before
        .into_iter()
        .filter(|d| !list.devices.contains(d))
        .collect();
    sqlx::query(
        "INSERT OR REPLACE INTO device_lists (account, version, devices, encoded) VALUES (?, ?, ?, ?)",
    )
    .bind(&list.account[..])
    .bind(i64_of(list.version))
    .bind(list.devices.concat())
    .bind(&list.encoded[..])
    .execute(&mut **tx)
    .await?;
    for device in &dropped {
        remove_device(tx, state, device).await?;
        sqlx::query("INSERT OR IGNORE INTO revoked (device_key) VALUES (?)")
            .bind(&device[..])
            .execute(&mut **tx)
            .await?;
        state.revoked.insert(*device);
    }
    state.lists.insert(
        list.account,
        List {
            version: list.version,
            devices: list.devices.clone(),
        },
    );
    Ok(Published::Stored(dropped))
}

async fn device_list(
    tx: &mut Tx<'_>,
    state: &State,
    account: &AccountKey,
) -> Result<Option<StoredList>, StoreError> {
    let Some(list) = state.lists.get(account) else {
        return Ok(None);
    };
    let encoded: Vec<u8> = sqlx::query("SELECT encoded FROM device_lists WHERE account = ?")
        .bind(&account[..])
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    Ok(Some(StoredList {
        account: *account,
        version: list.version,
        devices: list.devices.clone(),
        encoded,
    }))
}

async fn count_one_time(tx: &mut Tx<'_>, id: i64) -> Result<u32, StoreError> {
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM one_time_prekeys WHERE device = ?")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    u32_of(n)
}

async fn take_bundle(
    tx: &mut Tx<'_>,
    state: &State,
    device: &DeviceKey,
) -> Result<Option<BundleParts>, StoreError> {
    let Some(q) = state.devices.get(device) else {
        return Ok(None);
    };
    // The writer is the only connection: take and delete are one step.
    // Both statements go to the database in one call: the device's row
    // (six columns), then the one-time prekey taken, if any (two).
    let rows = sqlx::query(
        "SELECT spk_id, spk_public, spk_signature, lr_id, lr_public, lr_signature
         FROM devices WHERE id = ?;
         DELETE FROM one_time_prekeys WHERE device = ? AND id =
           (SELECT id FROM one_time_prekeys WHERE device = ? ORDER BY id LIMIT 1)
         RETURNING id, public_key",
    )
    .bind(q.id)
    .bind(q.id)
    .bind(q.id)
    .fetch_all(&mut **tx)
    .await?;
    let Some(row) = rows.iter().find(|r| r.len() == 6) else {
        return Ok(None);
    };
    let signed = row.signed_key(0)?;
    let last_resort = row.signed_key(3)?;
    let one_time = match rows.iter().find(|r| r.len() == 2) {
        Some(r) => Some((u32_of(r.try_get(0)?)?, fixed(r.try_get::<&[u8], _>(1)?)?)),
        None => None,
    };
    Ok(Some(BundleParts {
        signed,
        last_resort,
        one_time,
    }))
}

async fn prekey_count(
    tx: &mut Tx<'_>,
    state: &State,
    device: &DeviceKey,
) -> Result<Option<u32>, StoreError> {
    match state.devices.get(device) {
        Some(q) => Ok(Some(count_one_time(tx, q.id).await?)),
        None => Ok(None),
    }
}

async fn stats(tx: &mut Tx<'_>, state: &State) -> Result<Stats, StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM bodies),
                (SELECT COUNT(*) FROM one_time_prekeys),
                (SELECT COUNT(*) FROM devices d WHERE
                   (SELECT COUNT(*) FROM one_time_prekeys o WHERE o.device = d.id) < 10)",
    )
    .fetch_one(&mut **tx)
    .await?;
    let mut stats = Stats {
        devices: state.devices.len() as u64,
        bodies: u64_of(row.int(0)?).saturating_add(state.inline),
        one_time_prekeys: u64_of(row.int(1)?),
        devices_low_on_prekeys: u64_of(row.int(2)?),
        ..Stats::default()
    };
    for q in state.devices.values() {
        stats.queued_envelopes += q.count;
        stats.queued_bytes += q.bytes;
        stats.deepest_queue = stats.deepest_queue.max(q.count);
    }
    Ok(stats)
}

/// Deletes the expired entries and message ids. Both tables are in
/// arrival order and every entry gets the same lifetime, so the expired
/// rows are the ones before the first row that has not expired: the
/// sweep reads only what it deletes. (An entry stored under a longer
/// `expiry_days` than a later one goes with the first that outlives it.)
/// Then forgets the oldest message ids beyond the memory limit.
async fn sweep(tx: &mut Tx<'_>, state: &mut State, now: u64) -> Result<u64, StoreError> {
    let rows = sqlx::query(
        "DELETE FROM queue WHERE id < COALESCE(
           (SELECT id FROM queue WHERE expires_at > ?1 ORDER BY id LIMIT 1), 9223372036854775807)
         RETURNING device, size, body IS NOT NULL",
    )
    .bind(i64_of(now))
    .fetch_all(&mut **tx)
    .await?;
    if !rows.is_empty() {
        let mut freed: HashMap<i64, Freed> = HashMap::new();
        for row in &rows {
            freed.entry(row.int(0)?).or_default().add(row, 1)?;
        }
        let touched: Vec<DeviceKey> = state
            .devices
            .iter()
            .filter(|(_, q)| freed.contains_key(&q.id))
            .map(|(k, _)| *k)
            .collect();
        state.release(&freed, touched.iter().copied());
        for device in touched {
            if let Some(q) = state.devices.get_mut(&device)
                && q.saved_seq != q.next_seq
            {
                sqlx::query("UPDATE devices SET next_seq = ? WHERE id = ?")
                    .bind(i64_of(q.next_seq))
                    .bind(q.id)
                    .execute(&mut **tx)
                    .await?;
                q.saved_seq = q.next_seq;
            }
        }
    }
    let mut forgotten = sqlx::query(
        "DELETE FROM sent_messages WHERE id < COALESCE(
           (SELECT id FROM sent_messages WHERE expires_at > ?1 ORDER BY id LIMIT 1), 9223372036854775807)
         RETURNING message_id",
    )
    .bind(i64_of(now))
    .fetch_all(&mut **tx)
    .await?;
    let excess = state
        .sent
        .len()
        .saturating_sub(forgotten.len())
        .saturating_sub(state.options.max_message_ids);
    if excess > 0 {
        forgotten.extend(
            sqlx::query(
                "DELETE FROM sent_messages WHERE id IN
                   (SELECT id FROM sent_messages ORDER BY id LIMIT ?)
                 RETURNING message_id",
            )
            .bind(i64_of(excess as u64))
            .fetch_all(&mut **tx)
            .await?,
        );
    }
    for row in forgotten {
        state.sent.remove(&fixed::<16>(&row.bytes(0)?)?);
    }
    Ok(rows.len() as u64)
}

async fn read(
    tx: &mut Tx<'_>,
    state: &State,
    device: &DeviceKey,
    after: u64,
    max: u32,
) -> Result<Page, StoreError> {
    let Some(q) = state.devices.get(device) else {
        return Ok(bound_page(Vec::new(), max));
    };
    let rows: Vec<SqliteRow> = sqlx::query(
        "SELECT q.seq, COALESCE(q.body, b.data), q.slot, q.expires_at
         FROM queue q LEFT JOIN bodies b ON b.id = q.body_id
         WHERE q.device = ? AND q.seq > ? ORDER BY q.seq LIMIT ?",
    )
    .bind(q.id)
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

    /// Acked envelopes are zeroed in the database file, not left in the
    /// pages that held them (`secure_delete`; audit finding R1).
    #[tokio::test]
    async fn acked_envelopes_leave_no_bytes_in_the_file() {
        let path = temp_db("acked_envelopes_leave_no_bytes_in_the_file");
        let marker = b"an acked envelope must not linger".repeat(8);
        let device = [7; 32];
        let store = SqliteStore::open(&path).await.expect("opens");
        store
            .register(device, suite::upload(1))
            .await
            .expect("registers");
        for id in 0..3 {
            store
                .enqueue(suite::envelope(id, &marker, &[device]), suite::LIMITS)
                .await
                .expect("stored");
        }
        let page = store.page(device, 0, 10).await.expect("page");
        let seqs = page.envelopes.iter().map(|e| e.seq).collect();
        assert_eq!(store.ack(device, seqs).await, Ok(3));
        drop(store);
        // Opening again waits for the first writer to close (which
        // checkpoints the WAL into the file); closing this one does it too.
        drop(SqliteStore::open(&path).await.expect("opens again"));
        let file = std::fs::read(&path).expect("database file");
        assert!(
            !file.windows(marker.len()).any(|w| w == marker.as_slice()),
            "an acked envelope's bytes are still in the database file"
        );
    }

    #[tokio::test]
    async fn device_lists_check_senders_and_revoke_devices() {
        suite::device_lists_check_senders_and_revoke_devices(
            open("device_lists_check_senders_and_revoke_devices").await,
        )
        .await;
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
        let (a, b) = ([1; 32], [2; 32]);
        {
            let store = SqliteStore::open(&path).await.expect("opens");
            for d in [a, b] {
                store
                    .register(d, suite::upload(2))
                    .await
                    .expect("registers");
            }
            store
                .enqueue(suite::envelope(1, b"kept", &[a]), suite::LIMITS)
                .await
                .expect("stores");
            store
                .enqueue(suite::envelope(2, b"shared", &[a, b]), suite::LIMITS)
                .await
                .expect("stores");
            // b's queue empties: its next sequence number must survive.
            assert_eq!(store.ack(b, vec![1]).await, Ok(1));
        }
        let store = SqliteStore::open(&path).await.expect("reopens");
        assert_eq!(store.prekey_count(a).await, Ok(Some(2)));
        assert_eq!(store.queue_len(a).await, Ok(2));
        assert_eq!(store.queue_len(b).await, Ok(0));
        let page = store.page(a, 0, 10).await.expect("pages");
        assert_eq!(page.envelopes[0].body, b"kept");
        assert_eq!(page.envelopes[1].body, b"shared");
        // Message ids are remembered; sequence numbers continue.
        assert_eq!(
            store
                .enqueue(suite::envelope(1, b"kept", &[a]), suite::LIMITS)
                .await,
            Ok(Enqueued::Duplicate)
        );
        assert_eq!(
            store
                .enqueue(suite::envelope(3, b"next", &[a, b]), suite::LIMITS)
                .await,
            Ok(Enqueued::Stored(vec![3, 2]))
        );
        assert_eq!(store.stats().await.map(|s| s.queued_envelopes), Ok(4));
    }

    /// Acks that overlap, in one batch or not: every entry is deleted
    /// once and counted once, by the first ack that lists it.
    #[tokio::test]
    async fn overlapping_acks_count_each_entry_once() {
        let store = open("overlapping_acks").await;
        let a = [1; 32];
        store
            .register(a, suite::upload(0))
            .await
            .expect("registers");
        let limits = QueueLimits {
            max_envelopes: 1_000,
            max_bytes: 1 << 30,
        };
        for id in 0..200u8 {
            store
                .enqueue(suite::envelope(id, b"x", &[a]), limits)
                .await
                .expect("stores");
        }
        let lists: Vec<Vec<u64>> = vec![
            (1..=100).collect(),
            (50..=150).rev().collect(),
            vec![7, 7, 7, 120, 199, 300],
            (1..=200).step_by(2).collect(),
        ];
        let tasks: Vec<_> = lists
            .into_iter()
            .map(|seqs| {
                let store = store.clone();
                tokio::spawn(async move { store.ack(a, seqs).await.expect("acks") })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("joins");
        }
        // 1..=150, 199, and the odd numbers up to 199: 150 + 25.
        assert_eq!(total, 175);
        assert_eq!(store.queue_len(a).await, Ok(25));
        let left = store.read(a, 0, 100).await.expect("reads");
        let seqs: Vec<u64> = left.envelopes.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (152..=198).step_by(2).chain([200]).collect::<Vec<_>>()
        );
        assert_eq!(store.stats().await.map(|s| s.queued_envelopes), Ok(25));
    }

    #[test]
    fn a_batch_deletes_each_sequence_number_for_the_first_request_naming_it() {
        let mut w = Writes::default();
        let d = [1; 32];
        w.delete(d, 7, true, vec![(1, 100)]);
        w.delete(d, 7, true, vec![(2, 2), (50, 150), (160, 170)]);
        w.delete(d, 7, false, vec![(1, 165)]);
        w.delete([2; 32], 8, true, vec![(1, 5)]);
        w.delete(d, 7, true, vec![(u64::MAX - 1, u64::MAX)]);
        w.delete(d, 7, true, vec![(u64::MAX, u64::MAX)]);
        assert_eq!(
            w.runs,
            vec![
                (0, 7, 1, 100),
                (1, 7, 101, 150),
                (1, 7, 160, 170),
                (2, 7, 151, 159),
                (3, 8, 1, 5),
                (4, 7, u64::MAX - 1, u64::MAX),
            ]
        );
        assert_eq!(
            w.deletions,
            vec![
                (7, true),
                (7, true),
                (7, false),
                (8, true),
                (7, true),
                (7, true)
            ]
        );
    }

    #[tokio::test]
    async fn a_burst_of_bodies_comes_back_exactly() {
        suite::a_burst_of_bodies_comes_back_exactly(open("burst_of_bodies").await).await;
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_file() {
        let path = temp_db("exclusive");
        let _store = SqliteStore::open(&path).await.expect("opens");
        let connect = SqliteConnectOptions::from_str("sqlite:")
            .expect("options")
            .filename(&path)
            .busy_timeout(Duration::from_millis(100));
        let mut other = SqliteConnection::connect_with(&connect)
            .await
            .expect("the file opens");
        let read = sqlx::query("SELECT COUNT(*) FROM devices")
            .fetch_one(&mut other)
            .await;
        assert!(read.is_err(), "the writer holds the file exclusively");
    }

    #[tokio::test]
    async fn message_ids_beyond_the_limit_are_forgotten_at_the_sweep() {
        let path = temp_db("id-limit");
        let store = SqliteStore::open_with(&path, SqliteOptions { max_message_ids: 3 })
            .await
            .expect("opens");
        let a = [1; 32];
        store
            .register(a, suite::upload(0))
            .await
            .expect("registers");
        for id in 1..=5 {
            store
                .enqueue(suite::envelope(id, b"x", &[a]), suite::LIMITS)
                .await
                .expect("stores");
        }
        // All five are remembered until the sweep...
        assert_eq!(
            store
                .enqueue(suite::envelope(1, b"x", &[a]), suite::LIMITS)
                .await,
            Ok(Enqueued::Duplicate)
        );
        assert_eq!(store.sweep(0).await, Ok(0));
        // ...which forgets the two oldest, and keeps the three newest.
        assert_eq!(
            store
                .enqueue(suite::envelope(1, b"x", &[a]), suite::LIMITS)
                .await,
            Ok(Enqueued::Stored(vec![6]))
        );
        for id in 3..=5 {
            assert_eq!(
                store
                    .enqueue(suite::envelope(id, b"x", &[a]), suite::LIMITS)
                    .await,
                Ok(Enqueued::Duplicate)
            );
        }
        drop(store);
        // After a restart the newest three (3, 4, 5 and the resent 1 are
        // the four newest; the limit keeps 4, 5, 1) are loaded.
        let store = reopen(&path, 3).await;
        for id in [4, 5, 1] {
            assert_eq!(
                store
                    .enqueue(suite::envelope(id, b"x", &[a]), suite::LIMITS)
                    .await,
                Ok(Enqueued::Duplicate)
            );
        }
    }

    async fn reopen(path: &Path, max_message_ids: usize) -> SqliteStore {
        // The previous writer releases the file as soon as it sees its
        // channel closed; the busy timeout covers the moment between.
        SqliteStore::open_with(path, SqliteOptions { max_message_ids })
            .await
            .expect("reopens")
    }

    /// A version 2 database (no device lists, no last-seen day) gets
    /// them and keeps its devices and envelopes; device lists and
    /// revocations then survive a restart.
    #[tokio::test]
    async fn a_version_2_database_is_migrated_and_lists_survive_restarts() {
        let path = temp_db("migrate-v2");
        let (a, b) = ([1u8; 32], [2u8; 32]);
        {
            let store = SqliteStore::open(&path).await.expect("opens");
            for d in [a, b] {
                store
                    .register(d, suite::upload(1))
                    .await
                    .expect("registers");
            }
            let sent = store.enqueue(suite::envelope(1, b"kept", &[a, b]), suite::LIMITS);
            assert_eq!(sent.await, Ok(Enqueued::Stored(vec![1, 1])));
        }
        {
            // Back to what version 2 had (the writer let go of the file).
            let connect = SqliteConnectOptions::from_str("sqlite:")
                .expect("options")
                .filename(&path)
                .busy_timeout(Duration::from_secs(10));
            let mut conn = SqliteConnection::connect_with(&connect)
                .await
                .expect("connects");
            for statement in [
                "ALTER TABLE devices DROP COLUMN last_seen",
                "DROP TABLE device_lists",
                "DROP TABLE revoked",
                "PRAGMA user_version = 2",
            ] {
                sqlx::query(statement)
                    .execute(&mut conn)
                    .await
                    .expect("downgrades");
            }
        }
        let store = reopen(&path, DEFAULT_MAX_MESSAGE_IDS).await;
        assert_eq!(store.queue_len(b).await, Ok(1));
        assert_eq!(store.seen(a, 20_000).await, Ok(Seen::Queued(1)));
        let list = StoredList {
            account: a,
            version: 1,
            devices: vec![a],
            encoded: b"list".to_vec(),
        };
        let revoking = store.publish_devices(list.clone()).await;
        assert_eq!(revoking, Ok(Published::Stored(vec![])));
        let dropped = StoredList {
            version: 2,
            encoded: b"list 2".to_vec(),
            ..list.clone()
        };
        // b was never in a's list: nothing to revoke.
        assert_eq!(
            store.publish_devices(dropped.clone()).await,
            Ok(Published::Stored(vec![]))
        );
        drop(store);
        let store = reopen(&path, DEFAULT_MAX_MESSAGE_IDS).await;
        assert_eq!(store.device_list(a).await, Ok(Some(dropped)));
        assert_eq!(
            store.device_status(vec![a]).await,
            Ok(vec![DeviceStatus {
                last_seen_day: 20_000,
                queued: 1
            }])
        );
        let three = StoredList {
            version: 3,
            devices: vec![a, b],
            encoded: b"list 3".to_vec(),
            ..list.clone()
        };
        assert_eq!(
            store.publish_devices(three).await,
            Ok(Published::Stored(vec![]))
        );
        let four = StoredList {
            version: 4,
            encoded: b"list 4".to_vec(),
            ..list
        };
        assert_eq!(
            store.publish_devices(four).await,
            Ok(Published::Stored(vec![b]))
        );
        drop(store);
        let store = reopen(&path, DEFAULT_MAX_MESSAGE_IDS).await;
        assert_eq!(store.seen(b, 20_001).await, Ok(Seen::Revoked));
        assert_eq!(store.queue_len(b).await, Ok(0));
        let stats = store.stats().await.expect("stats");
        assert_eq!(
            (stats.devices, stats.queued_envelopes, stats.bodies),
            (1, 1, 1)
        );
    }

    /// A database written by the version 1 schema keeps every device,
    /// prekey, envelope and message id.
    #[tokio::test]
    async fn a_version_1_database_is_migrated() {
        let path = temp_db("migrate-v1");
        {
            let connect = SqliteConnectOptions::from_str("sqlite:")
                .expect("options")
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            let mut conn = SqliteConnection::connect_with(&connect)
                .await
                .expect("creates");
            for statement in V1_SCHEMA {
                sqlx::query(*statement)
                    .execute(&mut conn)
                    .await
                    .expect("v1 schema");
            }
            let (a, b) = ([1u8; 32], [2u8; 32]);
            for (d, next_seq, count) in [(a, 7, 2), (b, 3, 1)] {
                sqlx::query("INSERT INTO devices VALUES (?, 1, ?, ?, 2, ?, ?, ?, ?, ?)")
                    .bind(&d[..])
                    .bind(&[1u8; 32][..])
                    .bind(&[1u8; 64][..])
                    .bind(&[2u8; 32][..])
                    .bind(&[2u8; 64][..])
                    .bind(next_seq)
                    .bind(count)
                    .bind(count * 52)
                    .execute(&mut conn)
                    .await
                    .expect("device");
            }
            sqlx::query("INSERT INTO one_time_prekeys VALUES (?, 100, ?), (?, 101, ?)")
                .bind(&a[..])
                .bind(&[5u8; 32][..])
                .bind(&a[..])
                .bind(&[6u8; 32][..])
                .execute(&mut conn)
                .await
                .expect("prekeys");
            sqlx::query("INSERT INTO bodies VALUES (1, X'6f6e65', 2), (2, X'74776f', 1)")
                .execute(&mut conn)
                .await
                .expect("bodies");
            for (d, seq, body) in [(a, 6, 1), (b, 3, 1), (a, 7, 2)] {
                sqlx::query("INSERT INTO queue VALUES (?, ?, ?, ?, 51, 1000)")
                    .bind(&d[..])
                    .bind(seq)
                    .bind(body)
                    .bind(&[d[0]; 48][..])
                    .execute(&mut conn)
                    .await
                    .expect("queue");
            }
            sqlx::query("INSERT INTO sent_messages VALUES (?, 1000)")
                .bind(&[9u8; 16][..])
                .execute(&mut conn)
                .await
                .expect("ids");
            sqlx::query("PRAGMA user_version = 1")
                .execute(&mut conn)
                .await
                .expect("version");
        }
        let store = SqliteStore::open(&path).await.expect("migrates");
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(store.prekey_count(a).await, Ok(Some(2)));
        let page = store.read(a, 0, 10).await.expect("reads");
        let got: Vec<(u64, Vec<u8>)> = page
            .envelopes
            .iter()
            .map(|e| (e.seq, e.body.clone()))
            .collect();
        assert_eq!(got, vec![(6, b"one".to_vec()), (7, b"two".to_vec())]);
        assert_eq!(store.queue_len(b).await, Ok(1));
        let mut envelope = suite::envelope(9, b"x", &[a]);
        envelope.message_id = [9; 16];
        assert_eq!(
            store.enqueue(envelope, suite::LIMITS).await,
            Ok(Enqueued::Duplicate)
        );
        assert_eq!(
            store
                .enqueue(suite::envelope(1, b"new", &[a, b]), suite::LIMITS)
                .await,
            Ok(Enqueued::Stored(vec![8, 4]))
        );
        // The shared body "one" is freed when its last reference goes.
        assert_eq!(store.ack(a, vec![6]).await, Ok(1));
        assert_eq!(store.ack(b, vec![3]).await, Ok(1));
        assert_eq!(store.stats().await.map(|s| s.bodies), Ok(2));
    }

    /// The version 1 schema, as the relay created it.
    const V1_SCHEMA: &[&str] = &[
        "CREATE TABLE devices (
            device_key BLOB PRIMARY KEY,
            spk_id INTEGER NOT NULL, spk_public BLOB NOT NULL, spk_signature BLOB NOT NULL,
            lr_id INTEGER NOT NULL, lr_public BLOB NOT NULL, lr_signature BLOB NOT NULL,
            next_seq INTEGER NOT NULL DEFAULT 0,
            queued_count INTEGER NOT NULL DEFAULT 0,
            queued_bytes INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID",
        "CREATE TABLE one_time_prekeys (
            device_key BLOB NOT NULL, id INTEGER NOT NULL, public_key BLOB NOT NULL,
            PRIMARY KEY (device_key, id)
        ) WITHOUT ROWID",
        "CREATE TABLE bodies (id INTEGER PRIMARY KEY, data BLOB NOT NULL, refs INTEGER NOT NULL)",
        "CREATE INDEX bodies_unreferenced ON bodies (id) WHERE refs <= 0",
        "CREATE TABLE queue (
            device_key BLOB NOT NULL, seq INTEGER NOT NULL, body_id INTEGER NOT NULL,
            slot BLOB NOT NULL, size INTEGER NOT NULL, expires_at INTEGER NOT NULL,
            PRIMARY KEY (device_key, seq)
        ) WITHOUT ROWID",
        "CREATE INDEX queue_expiry ON queue (expires_at)",
        "CREATE INDEX queue_body ON queue (body_id)",
        "CREATE TABLE sent_messages (message_id BLOB PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE INDEX sent_expiry ON sent_messages (expires_at)",
    ];
}
