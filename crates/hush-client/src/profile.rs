//! The profile: everything a device keeps, in one SQLite file
//! (`HOME/profile.sqlite`, `spec/client.md`, "Profile"). Private keys,
//! session states and message texts are sealed by the [`Vault`];
//! identities of contacts, counters, statuses and the outbox's sealed
//! envelopes (already encrypted to their recipient) are stored as they
//! are.
//!
//! Every change that must happen together is one transaction: a send
//! stores the advanced session, the message and its outbox entry at once;
//! a receive stores the session, the message and its id as seen at once,
//! and only then is the relay told to delete the envelope.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use hush_crypto::{Address, IdentityKey, IdentityKeyPair, OneTimePreKeyPair, SignedPreKeyPair};
use rand_core::CryptoRng;
use sqlx::sqlite::SqliteRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use thiserror::Error;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::content::{GroupId, MessageId};
use crate::vault::{Vault, VaultError};

/// The schema version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &[&str] = &[
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE prekeys (
        kind INTEGER NOT NULL, id INTEGER NOT NULL, secret BLOB NOT NULL,
        created_at INTEGER NOT NULL, PRIMARY KEY (kind, id))",
    "CREATE TABLE contacts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        identity BLOB NOT NULL UNIQUE,
        verified INTEGER NOT NULL DEFAULT 0,
        changed INTEGER NOT NULL DEFAULT 0,
        send_counter INTEGER NOT NULL DEFAULT 0,
        session BLOB,
        added_at INTEGER NOT NULL)",
    "CREATE TABLE messages (
        id BLOB PRIMARY KEY,
        position INTEGER NOT NULL UNIQUE,
        contact INTEGER NOT NULL,
        outgoing INTEGER NOT NULL,
        counter INTEGER NOT NULL,
        relay_seq INTEGER,
        sent_at_ms INTEGER NOT NULL,
        received_at_ms INTEGER,
        text BLOB NOT NULL,
        status INTEGER NOT NULL,
        recalled INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX messages_by_contact ON messages (contact, position)",
    "CREATE TABLE outbox (
        message_id BLOB PRIMARY KEY,
        contact INTEGER NOT NULL,
        device_key BLOB NOT NULL,
        body BLOB NOT NULL,
        slot BLOB NOT NULL,
        first_attempt_ms INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE seen (message_id BLOB PRIMARY KEY, at_ms INTEGER NOT NULL)",
];

/// From each schema version to the next: `MIGRATIONS[v - 1]` takes a
/// version `v` profile to `v + 1`. A new profile runs [`SCHEMA`] and then
/// all of them.
const MIGRATIONS: &[&[&str]] = &[
    &[
        // 1 -> 2: groups.
        "ALTER TABLE messages ADD COLUMN grp BLOB",
        "CREATE INDEX messages_by_group ON messages (grp, position) WHERE grp IS NOT NULL",
        // Recipients after the first (device key || slot, 80 bytes each) and
        // the group of a group send.
        "ALTER TABLE outbox ADD COLUMN more_recipients BLOB",
        "ALTER TABLE outbox ADD COLUMN grp BLOB",
        "CREATE TABLE groups (
        id BLOB PRIMARY KEY,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        members BLOB NOT NULL,
        admins BLOB NOT NULL,
        member INTEGER NOT NULL,
        send_counter INTEGER NOT NULL DEFAULT 0,
        sender_key BLOB)",
        "CREATE TABLE sender_keys (
        grp BLOB NOT NULL, sender BLOB NOT NULL, record BLOB NOT NULL,
        PRIMARY KEY (grp, sender))",
        // The distribution of this device's chain each member was given
        // (sealed), sent again if it asks.
        "CREATE TABLE given_keys (
        grp BLOB NOT NULL, member BLOB NOT NULL, key_id INTEGER NOT NULL,
        distribution BLOB NOT NULL,
        PRIMARY KEY (grp, member))",
        // Group messages waiting for their sender's key (or their group).
        "CREATE TABLE parked (
        id INTEGER PRIMARY KEY, grp BLOB NOT NULL, sender BLOB NOT NULL,
        message BLOB NOT NULL, seq INTEGER NOT NULL)",
        "CREATE INDEX parked_by_group ON parked (grp, id)",
        // When this device last asked a member for its key.
        "CREATE TABLE key_requests (
        grp BLOB NOT NULL, sender BLOB NOT NULL, at_ms INTEGER NOT NULL,
        PRIMARY KEY (grp, sender))",
    ],
    &[
        // 2 -> 3: sessions per device of a contact (`spec/devices.md`). The
        // sessions kept in `contacts.session` move here when the profile is
        // next unlocked (they are re-sealed under their new row's purpose).
        "CREATE TABLE devices (
        contact INTEGER NOT NULL,
        device_key BLOB NOT NULL,
        session BLOB NOT NULL,
        PRIMARY KEY (contact, device_key))",
        "CREATE INDEX devices_by_key ON devices (device_key)",
    ],
];

/// Profile failures.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// No profile in this directory.
    #[error("no hush profile in {0} (create one with `hush init`)")]
    Missing(PathBuf),
    /// A profile already exists here.
    #[error("a hush profile already exists in {0}")]
    Exists(PathBuf),
    /// The profile is held by another running `hush`.
    #[error("the profile in {0} is in use by another hush process")]
    Locked(PathBuf),
    /// The profile was written by a newer hush.
    #[error("the profile was written by a newer hush (schema {0})")]
    Newer(i64),
    /// The profile key is wrong or missing.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The database failed.
    #[error("profile database: {0}")]
    Database(String),
    /// A stored value does not parse.
    #[error("profile data is damaged: {0}")]
    Damaged(String),
    /// A write would store something a second time (a message id already
    /// seen); nothing of it was stored.
    #[error("already stored")]
    Duplicate,
    /// The address is already a contact under another name.
    #[error("that address is already your contact {0:?}")]
    AlreadyContact(String),
}

/// Names of contacts made for senders nobody named (the prefix, then ten
/// characters of the address); `contact add` gives them a name.
pub const UNKNOWN_PREFIX: &str = "unknown-";

impl From<sqlx::Error> for ProfileError {
    fn from(e: sqlx::Error) -> Self {
        ProfileError::Database(e.to_string())
    }
}

/// How the profile key is kept.
#[derive(Clone, PartialEq, Eq)]
pub enum Unlock {
    /// A random key in `HOME/key`, owner-only.
    KeyFile,
    /// A passphrase (Argon2id).
    Passphrase(Zeroizing<String>),
}

impl core::fmt::Debug for Unlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Unlock::KeyFile => f.write_str("KeyFile"),
            Unlock::Passphrase(_) => f.write_str("Passphrase(..)"),
        }
    }
}

/// Compile-time proof that a secret field wipes itself on drop: the
/// [`ZeroizeOnDrop`] markers below are each next to a check of their
/// type's secret fields (`audit/THREAT_MODEL.md`, "Secrets in memory").
fn wipes_on_drop<T: ZeroizeOnDrop + ?Sized>(_: &T) {}

/// A passphrase is wiped when the `Unlock` holding it is dropped.
impl ZeroizeOnDrop for Unlock {}
const _: fn(&Unlock) = |unlock| {
    if let Unlock::Passphrase(passphrase) = unlock {
        wipes_on_drop(passphrase);
    }
};

/// Prekey kinds in the `prekeys` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrekeyKind {
    /// Signed prekeys (the current one and recent ones in their grace period).
    Signed = 0,
    /// The last-resort prekey.
    LastResort = 1,
    /// One-time prekeys not yet used.
    OneTime = 2,
}

/// A contact as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Local row id.
    pub id: i64,
    /// The name the user gave.
    pub name: String,
    /// Their identity key (what their address encodes).
    pub identity: IdentityKey,
    /// The user compared safety numbers and confirmed them.
    pub verified: bool,
    /// Their address was changed to a new identity since the user last
    /// confirmed: sending is refused until the user accepts the change.
    pub changed: bool,
}

impl Contact {
    /// Their address.
    pub fn address(&self) -> Address {
        Address::from(&self.identity)
    }
}

/// The status of an outgoing message (`spec/client.md`, "Statuses").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Stored locally, not yet acknowledged by the relay.
    Sending = 0,
    /// The relay stored it.
    Sent = 1,
    /// The recipient's device stored it.
    Delivered = 2,
    /// The recipient saw it.
    Read = 3,
    /// The relay never acknowledged it within the retry window.
    Failed = 4,
}

impl Status {
    fn from_i64(n: i64) -> Self {
        match n {
            1 => Status::Sent,
            2 => Status::Delivered,
            3 => Status::Read,
            4 => Status::Failed,
            _ => Status::Sending,
        }
    }

    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Failed => "failed",
        }
    }
}

/// A message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message id.
    pub id: MessageId,
    /// The contact's row id.
    pub contact: i64,
    /// Sent by this device.
    pub outgoing: bool,
    /// The sender's counter.
    pub counter: u64,
    /// The sender's clock.
    pub sent_at_ms: u64,
    /// The text (empty once recalled).
    pub text: String,
    /// Outgoing: its status. Incoming: `Read` once shown, else `Sent`.
    pub status: Status,
    /// Withdrawn by its sender.
    pub recalled: bool,
    /// The group it was sent in (for an outgoing group message,
    /// `contact` is 0).
    pub group: Option<GroupId>,
}

/// A group as this device holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The group id.
    pub id: GroupId,
    /// Its name, as its admins announced it.
    pub name: String,
    /// The version of the state held.
    pub version: u64,
    /// Members, admins included (this device's identity among them while
    /// it is a member).
    pub members: Vec<IdentityKey>,
    /// Admins.
    pub admins: Vec<IdentityKey>,
    /// This device is a member.
    pub member: bool,
    /// The last counter given to a message of this device in the group.
    pub send_counter: u64,
}

fn keys_blob(keys: &[IdentityKey]) -> Vec<u8> {
    keys.iter()
        .flat_map(|k| k.as_bytes().iter().copied())
        .collect()
}

fn keys_of_blob(what: &str, bytes: &[u8]) -> Result<Vec<IdentityKey>, ProfileError> {
    if !bytes.len().is_multiple_of(32) {
        return Err(ProfileError::Damaged(format!("{what} list")));
    }
    bytes
        .chunks_exact(32)
        .map(|c| {
            IdentityKey::from_bytes(&fixed(what, c)?)
                .map_err(|e| ProfileError::Damaged(format!("{what}: {e}")))
        })
        .collect()
}

/// An envelope waiting for the relay's acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The message id.
    pub message_id: MessageId,
    /// The recipient device.
    pub device_key: [u8; 32],
    /// The sealed body (`Send.body`).
    pub body: Vec<u8>,
    /// The recipient's key slot.
    pub slot: [u8; 48],
    /// A group send's other recipients (device, slot), the same body.
    pub more: Vec<([u8; 32], [u8; 48])>,
    /// The group of a group send.
    pub group: Option<GroupId>,
    /// When the first attempt was made.
    pub first_attempt_ms: u64,
    /// Attempts made.
    pub attempts: u32,
}

/// The profile database and its key.
pub struct Profile {
    pool: SqlitePool,
    vault: Vault,
    home: PathBuf,
    /// The next message position. The profile is held under an
    /// exclusive lock, so this process alone numbers messages.
    next_position: AtomicI64,
}

/// The profile key is wiped when the profile is dropped.
impl ZeroizeOnDrop for Profile {}
const _: fn(&Profile) = |profile| wipes_on_drop(&profile.vault);

impl core::fmt::Debug for Profile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Profile")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

/// What a device's sealed sessions are bound to: the contact's row and
/// the device, so no row's sessions open as another's.
fn session_purpose(contact: i64, device: &[u8; 32]) -> String {
    format!("session:{contact}:{}", hex::encode(device))
}

fn db_path(home: &Path) -> PathBuf {
    home.join("profile.sqlite")
}

/// Milliseconds since 1970.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn fixed<const N: usize>(what: &str, bytes: &[u8]) -> Result<[u8; N], ProfileError> {
    bytes
        .try_into()
        .map_err(|_| ProfileError::Damaged(format!("{what} has the wrong length")))
}

/// A transaction on the profile.
pub type Tx<'c> = Transaction<'c, Sqlite>;

impl Profile {
    async fn connect(home: &Path, create: bool) -> Result<SqlitePool, ProfileError> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(db_path(home))
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .locking_mode(sqlx::sqlite::SqliteLockingMode::Exclusive)
            .busy_timeout(Duration::from_secs(2));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.message().contains("locked") => {
                    ProfileError::Locked(home.to_path_buf())
                }
                _ => ProfileError::from(e),
            })?;
        // Take the exclusive lock now, so a second process fails at once.
        sqlx::query("BEGIN IMMEDIATE; COMMIT")
            .execute(&pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.message().contains("locked") => {
                    ProfileError::Locked(home.to_path_buf())
                }
                _ => ProfileError::from(e),
            })?;
        Ok(pool)
    }

    /// Creates a profile in `home` (made if missing; it must not hold a
    /// profile) with a new identity, and returns it.
    pub async fn create(
        rng: &mut impl CryptoRng,
        home: &Path,
        unlock: &Unlock,
        identity: &IdentityKeyPair,
        relay: &str,
        pin: &[u8; 32],
    ) -> Result<Self, ProfileError> {
        std::fs::create_dir_all(home)
            .map_err(|e| ProfileError::Database(format!("creating {}: {e}", home.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700));
        }
        if db_path(home).exists() {
            return Err(ProfileError::Exists(home.to_path_buf()));
        }
        let (vault, salt) = match unlock {
            Unlock::KeyFile => (Vault::create_key_file(rng, &home.join("key"))?, None),
            Unlock::Passphrase(p) => {
                let mut salt = [0u8; 16];
                rng.fill_bytes(&mut salt);
                (Vault::from_passphrase(p, &salt)?, Some(salt))
            }
        };
        let pool = Self::connect(home, true).await?;
        let mut tx = pool.begin().await?;
        for statement in SCHEMA.iter().chain(MIGRATIONS.iter().copied().flatten()) {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {SCHEMA_VERSION}"
        )))
        .execute(&mut *tx)
        .await?;
        let profile_key_kind: &[u8] = if salt.is_some() {
            b"passphrase"
        } else {
            b"keyfile"
        };
        let check = vault.seal(rng, "check", b"hush profile");
        let sealed_identity = vault.seal(rng, "identity", &identity.to_bytes());
        let mut meta: Vec<(&str, Vec<u8>)> = vec![
            ("unlock", profile_key_kind.to_vec()),
            ("check", check),
            ("identity", sealed_identity),
            ("relay", relay.as_bytes().to_vec()),
            ("pin", pin.to_vec()),
        ];
        if let Some(salt) = salt {
            meta.push(("salt", salt.to_vec()));
        }
        for (key, value) in meta {
            sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?)")
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Self {
            pool,
            vault,
            home: home.to_path_buf(),
            next_position: AtomicI64::new(1),
        })
    }

    /// Opens the profile in `home`. With a passphrase profile, `passphrase`
    /// must be given.
    pub async fn open(home: &Path, passphrase: Option<&str>) -> Result<Self, ProfileError> {
        if !db_path(home).exists() {
            return Err(ProfileError::Missing(home.to_path_buf()));
        }
        let pool = Self::connect(home, false).await?;
        let version: i64 = sqlx::query("PRAGMA user_version")
            .fetch_one(&pool)
            .await?
            .try_get(0)?;
        if version > SCHEMA_VERSION {
            return Err(ProfileError::Newer(version));
        }
        if version < SCHEMA_VERSION {
            let mut tx = pool.begin().await?;
            for step in MIGRATIONS
                .iter()
                .skip(usize::try_from(version - 1).unwrap_or(0))
            {
                for statement in *step {
                    sqlx::query(*statement).execute(&mut *tx).await?;
                }
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "PRAGMA user_version = {SCHEMA_VERSION}"
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        let kind = Self::meta_in(&pool, "unlock").await?;
        let vault = match kind.as_deref() {
            Some(b"passphrase") => {
                let salt = Self::meta_in(&pool, "salt")
                    .await?
                    .ok_or_else(|| ProfileError::Damaged("no salt".into()))?;
                let salt: [u8; 16] = fixed("salt", &salt)?;
                let passphrase = passphrase.ok_or(VaultError::WrongKey)?;
                Vault::from_passphrase(passphrase, &salt)?
            }
            _ => Vault::from_key_file(&home.join("key"))?,
        };
        let check = Self::meta_in(&pool, "check")
            .await?
            .ok_or_else(|| ProfileError::Damaged("no key check".into()))?;
        if vault.open("check", &check).is_err() {
            return Err(VaultError::WrongKey.into());
        }
        Self::move_sessions(&pool, &vault).await?;
        let last: i64 = sqlx::query("SELECT COALESCE(MAX(position), 0) FROM messages")
            .fetch_one(&pool)
            .await?
            .try_get(0)?;
        let profile = Self {
            pool,
            vault,
            home: home.to_path_buf(),
            next_position: AtomicI64::new(last + 1),
        };
        profile
            .expire_seen(now_ms().saturating_sub(SEEN_KEPT.as_millis() as u64))
            .await?;
        Ok(profile)
    }

    /// Moves sessions a version 2 profile kept per contact to the
    /// contact's primary device, re-sealed under the device's purpose.
    async fn move_sessions(pool: &SqlitePool, vault: &Vault) -> Result<(), ProfileError> {
        let rows =
            sqlx::query("SELECT id, identity, session FROM contacts WHERE session IS NOT NULL")
                .fetch_all(pool)
                .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut rng = crate::rng::ErasingRng::from_os()
            .map_err(|e| ProfileError::Database(format!("no randomness: {e}")))?;
        let mut tx = pool.begin().await?;
        for row in rows {
            let contact: i64 = row.try_get(0)?;
            let device: [u8; 32] = fixed("identity", row.try_get::<&[u8], _>(1)?)?;
            let sealed: Vec<u8> = row.try_get(2)?;
            let state = vault.open(&format!("session:{contact}"), &sealed)?;
            let resealed = vault.seal(&mut rng, &session_purpose(contact, &device), &state);
            sqlx::query(
                "INSERT OR REPLACE INTO devices (contact, device_key, session) VALUES (?, ?, ?)",
            )
            .bind(contact)
            .bind(&device[..])
            .bind(resealed)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE contacts SET session = NULL WHERE id = ?")
                .bind(contact)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the ids seen before `before_ms`. Returns how many.
    pub async fn expire_seen(&self, before_ms: u64) -> Result<u64, ProfileError> {
        Ok(sqlx::query("DELETE FROM seen WHERE at_ms < ?")
            .bind(i64_of(before_ms))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Whether the profile in `home` needs a passphrase.
    pub async fn needs_passphrase(home: &Path) -> Result<bool, ProfileError> {
        if !db_path(home).exists() {
            return Err(ProfileError::Missing(home.to_path_buf()));
        }
        let pool = Self::connect(home, false).await?;
        let kind = Self::meta_in(&pool, "unlock").await?;
        pool.close().await;
        Ok(kind.as_deref() == Some(b"passphrase"))
    }

    /// Closes the database (the file is free once this returns).
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// The profile directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The vault (to seal values stored through a transaction).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx<'static>, ProfileError> {
        Ok(self.pool.begin().await?)
    }

    async fn meta_in(pool: &SqlitePool, key: &str) -> Result<Option<Vec<u8>>, ProfileError> {
        Ok(sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(pool)
            .await?
            .map(|r| r.try_get::<Vec<u8>, _>(0))
            .transpose()?)
    }

    /// A metadata value.
    pub async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, ProfileError> {
        Self::meta_in(&self.pool, key).await
    }

    /// Sets a metadata value within `tx`.
    pub async fn set_meta(tx: &mut Tx<'_>, key: &str, value: &[u8]) -> Result<(), ProfileError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// A numeric metadata value (0 when absent).
    pub async fn counter(&self, key: &str) -> Result<u64, ProfileError> {
        Ok(match self.meta(key).await? {
            Some(v) => u64::from_be_bytes(fixed("counter", &v)?),
            None => 0,
        })
    }

    /// The relay address and certificate pin.
    pub async fn relay(&self) -> Result<(String, [u8; 32]), ProfileError> {
        let relay = self
            .meta("relay")
            .await?
            .ok_or_else(|| ProfileError::Damaged("no relay".into()))?;
        let pin = self
            .meta("pin")
            .await?
            .ok_or_else(|| ProfileError::Damaged("no pin".into()))?;
        Ok((
            String::from_utf8(relay).map_err(|_| ProfileError::Damaged("relay".into()))?,
            fixed("pin", &pin)?,
        ))
    }

    /// This device's identity. Secret.
    pub async fn identity(&self) -> Result<IdentityKeyPair, ProfileError> {
        let sealed = self
            .meta("identity")
            .await?
            .ok_or_else(|| ProfileError::Damaged("no identity".into()))?;
        let bytes = self.vault.open("identity", &sealed)?;
        IdentityKeyPair::from_bytes(&bytes).map_err(|e| ProfileError::Damaged(e.to_string()))
    }

    fn prekey_purpose(kind: PrekeyKind, id: u32) -> String {
        format!("prekey:{}:{id}", kind as i64)
    }

    /// Stores a prekey's secret within `tx`.
    pub async fn put_prekey(
        &self,
        rng: &mut impl CryptoRng,
        tx: &mut Tx<'_>,
        kind: PrekeyKind,
        id: u32,
        secret: &[u8],
    ) -> Result<(), ProfileError> {
        let sealed = self
            .vault
            .seal(rng, &Self::prekey_purpose(kind, id), secret);
        sqlx::query(
            "INSERT INTO prekeys (kind, id, secret, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (kind, id) DO UPDATE SET secret = excluded.secret",
        )
        .bind(kind as i64)
        .bind(i64::from(id))
        .bind(sealed)
        .bind(i64_of(now_ms()))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Stages deleting a prekey.
    pub fn stage_delete_prekey(writes: &mut Writes, kind: PrekeyKind, id: u32) {
        writes.push(
            "DELETE FROM prekeys WHERE kind = ? AND id = ?",
            [Arg::Int(kind as i64), Arg::Int(i64::from(id))],
        );
    }

    /// Deletes prekeys of `kind` created before `before_ms`, except `keep`.
    pub async fn expire_prekeys(
        tx: &mut Tx<'_>,
        kind: PrekeyKind,
        before_ms: u64,
        keep: u32,
    ) -> Result<u64, ProfileError> {
        Ok(
            sqlx::query("DELETE FROM prekeys WHERE kind = ? AND created_at < ? AND id != ?")
                .bind(kind as i64)
                .bind(i64_of(before_ms))
                .bind(i64::from(keep))
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        )
    }

    /// The prekey secrets: the signed and last-resort ones, and of the
    /// one-time ones those in `one_time` (all of them if `None`).
    pub async fn prekeys(
        &self,
        one_time: Option<&[u32]>,
    ) -> Result<
        (
            Vec<SignedPreKeyPair>,
            Vec<SignedPreKeyPair>,
            Vec<OneTimePreKeyPair>,
        ),
        ProfileError,
    > {
        let rows = match one_time {
            None => {
                sqlx::query("SELECT kind, id, secret FROM prekeys ORDER BY kind, id")
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(ids) => {
                let sql = format!(
                    "SELECT kind, id, secret FROM prekeys WHERE kind != 2 OR id IN ({}) ORDER BY kind, id",
                    list(ids.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in ids {
                    query = query.bind(i64::from(*id));
                }
                query.fetch_all(&self.pool).await?
            }
        };
        let (mut signed, mut last_resort, mut one_time) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            let kind: i64 = row.try_get(0)?;
            let id = u32::try_from(row.try_get::<i64, _>(1)?)
                .map_err(|_| ProfileError::Damaged("prekey id".into()))?;
            let sealed: Vec<u8> = row.try_get(2)?;
            let damaged = |e: hush_crypto::DecodeError| ProfileError::Damaged(e.to_string());
            match kind {
                0 => {
                    let bytes = self
                        .vault
                        .open(&Self::prekey_purpose(PrekeyKind::Signed, id), &sealed)?;
                    signed.push(SignedPreKeyPair::from_bytes(&bytes).map_err(damaged)?);
                }
                1 => {
                    let bytes = self
                        .vault
                        .open(&Self::prekey_purpose(PrekeyKind::LastResort, id), &sealed)?;
                    last_resort.push(SignedPreKeyPair::from_bytes(&bytes).map_err(damaged)?);
                }
                _ => {
                    let bytes = self
                        .vault
                        .open(&Self::prekey_purpose(PrekeyKind::OneTime, id), &sealed)?;
                    one_time.push(OneTimePreKeyPair::from_bytes(&bytes).map_err(damaged)?);
                }
            }
        }
        Ok((signed, last_resort, one_time))
    }

    fn contact_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Contact, ProfileError> {
        let identity: Vec<u8> = row.try_get(2)?;
        let identity = IdentityKey::from_bytes(&fixed("contact identity", &identity)?)
            .map_err(|e| ProfileError::Damaged(e.to_string()))?;
        Ok(Contact {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            identity,
            verified: row.try_get::<i64, _>(3)? != 0,
            changed: row.try_get::<i64, _>(4)? != 0,
        })
    }

    /// Every contact, by name.
    pub async fn contacts(&self) -> Result<Vec<Contact>, ProfileError> {
        sqlx::query("SELECT id, name, identity, verified, changed FROM contacts ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Self::contact_from_row)
            .collect()
    }

    /// The contact called `name`.
    pub async fn contact(&self, name: &str) -> Result<Option<Contact>, ProfileError> {
        sqlx::query("SELECT id, name, identity, verified, changed FROM contacts WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(Self::contact_from_row)
            .transpose()
    }

    /// The contact whose identity is `identity`, within `tx`.
    pub async fn contact_by_identity(
        tx: &mut Tx<'_>,
        identity: &IdentityKey,
    ) -> Result<Option<Contact>, ProfileError> {
        sqlx::query("SELECT id, name, identity, verified, changed FROM contacts WHERE identity = ?")
            .bind(&identity.as_bytes()[..])
            .fetch_optional(&mut **tx)
            .await?
            .as_ref()
            .map(Self::contact_from_row)
            .transpose()
    }

    /// The contact with row id `id`.
    pub async fn contact_by_id(&self, id: i64) -> Result<Option<Contact>, ProfileError> {
        sqlx::query("SELECT id, name, identity, verified, changed FROM contacts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(Self::contact_from_row)
            .transpose()
    }

    /// Adds a contact, or gives a known name a new identity (which marks
    /// it changed and unverified, and drops its session), within `tx`.
    /// An identity that already wrote unnamed (an [`UNKNOWN_PREFIX`]
    /// contact) is named, or merged into the named contact; an identity
    /// that already has a name is refused (`AlreadyContact`).
    pub async fn put_contact(
        tx: &mut Tx<'_>,
        name: &str,
        identity: &IdentityKey,
    ) -> Result<(Contact, bool), ProfileError> {
        let found = sqlx::query(
            "SELECT id, name, identity, verified, changed FROM contacts WHERE name = ? OR identity = ?",
        )
        .bind(name)
        .bind(&identity.as_bytes()[..])
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(Self::contact_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        let named = found.iter().find(|c| c.name == name).cloned();
        let holder = found.iter().find(|c| c.identity == *identity).cloned();
        match (named, holder) {
            (Some(c), _) if c.identity == *identity => Ok((c, false)),
            (_, Some(h)) if !h.name.starts_with(UNKNOWN_PREFIX) => {
                Err(ProfileError::AlreadyContact(h.name))
            }
            // A sender nobody had named gets its name, with its history
            // and sessions.
            (None, Some(h)) => {
                sqlx::query("UPDATE contacts SET name = ? WHERE id = ?")
                    .bind(name)
                    .bind(h.id)
                    .execute(&mut **tx)
                    .await?;
                Ok((
                    Contact {
                        name: name.to_string(),
                        ..h
                    },
                    false,
                ))
            }
            // A known name moves to the identity that already wrote (a
            // reinstalled contact): one contact, both histories, the new
            // identity's sessions, marked changed.
            (Some(c), Some(h)) => {
                for statement in [
                    "UPDATE messages SET contact = ? WHERE contact = ?",
                    "UPDATE outbox SET contact = ? WHERE contact = ?",
                ] {
                    sqlx::query(statement)
                        .bind(h.id)
                        .bind(c.id)
                        .execute(&mut **tx)
                        .await?;
                }
                sqlx::query("DELETE FROM devices WHERE contact = ?")
                    .bind(c.id)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("DELETE FROM contacts WHERE id = ?")
                    .bind(c.id)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("UPDATE contacts SET name = ?, verified = 0, changed = 1 WHERE id = ?")
                    .bind(name)
                    .bind(h.id)
                    .execute(&mut **tx)
                    .await?;
                Ok((
                    Contact {
                        name: name.to_string(),
                        verified: false,
                        changed: true,
                        ..h
                    },
                    true,
                ))
            }
            (Some(c), None) => {
                sqlx::query(
                    "UPDATE contacts SET identity = ?, verified = 0, changed = 1 WHERE id = ?",
                )
                .bind(&identity.as_bytes()[..])
                .bind(c.id)
                .execute(&mut **tx)
                .await?;
                sqlx::query("DELETE FROM devices WHERE contact = ?")
                    .bind(c.id)
                    .execute(&mut **tx)
                    .await?;
                Ok((
                    Contact {
                        identity: identity.clone(),
                        verified: false,
                        changed: true,
                        ..c
                    },
                    true,
                ))
            }
            (None, None) => {
                let id: i64 = sqlx::query(
                    "INSERT INTO contacts (name, identity, added_at) VALUES (?, ?, ?) RETURNING id",
                )
                .bind(name)
                .bind(&identity.as_bytes()[..])
                .bind(i64_of(now_ms()))
                .fetch_one(&mut **tx)
                .await?
                .try_get(0)?;
                Ok((
                    Contact {
                        id,
                        name: name.to_string(),
                        identity: identity.clone(),
                        verified: false,
                        changed: false,
                    },
                    false,
                ))
            }
        }
    }

    /// Marks a contact verified (the user compared safety numbers), which
    /// also accepts an identity change.
    pub async fn set_verified(&self, id: i64, verified: bool) -> Result<(), ProfileError> {
        sqlx::query("UPDATE contacts SET verified = ?, changed = 0 WHERE id = ?")
            .bind(i64::from(verified))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A contact's session states per device (secret) and its last
    /// send counter.
    pub async fn conversation(
        &self,
        contact: i64,
    ) -> Result<(Vec<([u8; 32], Zeroizing<Vec<u8>>)>, u64), ProfileError> {
        let counter = sqlx::query("SELECT send_counter FROM contacts WHERE id = ?")
            .bind(contact)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get(0).map(u64_of))
            .transpose()?
            .unwrap_or(0);
        let mut devices = Vec::new();
        for row in sqlx::query("SELECT device_key, session FROM devices WHERE contact = ?")
            .bind(contact)
            .fetch_all(&self.pool)
            .await?
        {
            let device: [u8; 32] = fixed("device key", row.try_get::<&[u8], _>(0)?)?;
            let sealed: Vec<u8> = row.try_get(1)?;
            let state = self
                .vault
                .open(&session_purpose(contact, &device), &sealed)?;
            devices.push((device, state));
        }
        Ok((devices, counter))
    }

    /// Stages a contact's last send counter.
    pub fn stage_send_counter(writes: &mut Writes, contact: i64, send_counter: u64) {
        writes.push(
            "UPDATE contacts SET send_counter = ? WHERE id = ?",
            [Arg::Int(i64_of(send_counter)), Arg::Int(contact)],
        );
    }

    /// Stages the session state kept with one device of a contact.
    pub fn stage_session(
        &self,
        rng: &mut impl CryptoRng,
        writes: &mut Writes,
        contact: i64,
        device: &[u8; 32],
        state: &[u8],
    ) {
        let sealed = self
            .vault
            .seal(rng, &session_purpose(contact, device), state);
        writes.push(
            "INSERT OR REPLACE INTO devices (contact, device_key, session) VALUES (?, ?, ?)",
            [
                Arg::Int(contact),
                Arg::Blob(device.to_vec()),
                Arg::Blob(sealed),
            ],
        );
    }

    /// Stages recording a message id as processed. If it already was,
    /// the write fails with [`ProfileError::Duplicate`] and stores
    /// nothing.
    pub fn stage_seen(writes: &mut Writes, id: &MessageId) {
        writes.push(
            "INSERT INTO seen (message_id, at_ms) VALUES (?, ?)",
            [Arg::Blob(id.to_vec()), Arg::Int(i64_of(now_ms()))],
        );
    }

    /// Stages messages of conversations (each with the relay sequence
    /// number it came with, if incoming), in this order. Their texts are
    /// sealed here.
    pub fn stage_messages(
        &self,
        rng: &mut impl CryptoRng,
        writes: &mut Writes,
        messages: &[(&StoredMessage, Option<u64>)],
    ) {
        const COLUMNS: usize = 11;
        for chunk in messages.chunks(ROWS_PER_STATEMENT) {
            let first = self
                .next_position
                .fetch_add(chunk.len() as i64, Ordering::Relaxed);
            let mut args = Vec::with_capacity(chunk.len() * COLUMNS);
            for (i, (message, relay_seq)) in chunk.iter().enumerate() {
                let sealed = self.vault.seal(
                    rng,
                    &format!("message:{}", hex::encode(message.id)),
                    message.text.as_bytes(),
                );
                args.extend([
                    Arg::Blob(message.id.to_vec()),
                    Arg::Int(first + i as i64),
                    Arg::Int(message.contact),
                    Arg::Int(i64::from(message.outgoing)),
                    Arg::Int(i64_of(message.counter)),
                    relay_seq.map_or(Arg::Null, |n| Arg::Int(i64_of(n))),
                    Arg::Int(i64_of(message.sent_at_ms)),
                    if message.outgoing {
                        Arg::Null
                    } else {
                        Arg::Int(i64_of(now_ms()))
                    },
                    Arg::Blob(sealed),
                    Arg::Int(message.status as i64),
                    message.group.map_or(Arg::Null, |g| Arg::Blob(g.to_vec())),
                ]);
            }
            writes.push(
                &format!(
                    "INSERT INTO messages (id, position, contact, outgoing, counter, relay_seq, sent_at_ms, received_at_ms, text, status, grp) VALUES {}",
                    rows(COLUMNS, chunk.len())
                ),
                args,
            );
        }
    }

    /// Stages raising outgoing messages' status (never lowering it;
    /// `Failed` only from `Sending`). The write returns a row with the id
    /// of each message that changed.
    pub fn stage_status(writes: &mut Writes, ids: &[MessageId], status: Status) {
        for chunk in ids.chunks(ROWS_PER_STATEMENT * 4) {
            let condition = if status == Status::Failed {
                "status = 0"
            } else {
                "(status < ? OR status = 4)"
            };
            let mut args = vec![Arg::Int(status as i64)];
            if status != Status::Failed {
                args.push(Arg::Int(status as i64));
            }
            args.extend(chunk.iter().map(|id| Arg::Blob(id.to_vec())));
            writes.push(
                &format!(
                    "UPDATE messages SET status = ? WHERE outgoing = 1 AND {condition} AND id IN ({}) RETURNING id",
                    list(chunk.len())
                ),
                args,
            );
        }
    }

    /// Stages what a receipt from `contact` says of outgoing messages:
    /// their status rises as in [`Self::stage_status`], but only for
    /// messages sent to that contact, or group messages (whose status is
    /// the group's: any member's receipt raises it). A contact cannot
    /// mark what was sent to someone else. The write returns a row with
    /// the id of each message that changed.
    pub fn stage_receipt(writes: &mut Writes, contact: i64, ids: &[MessageId], status: Status) {
        for chunk in ids.chunks(ROWS_PER_STATEMENT * 4) {
            let mut args = vec![
                Arg::Int(status as i64),
                Arg::Int(status as i64),
                Arg::Int(contact),
            ];
            args.extend(chunk.iter().map(|id| Arg::Blob(id.to_vec())));
            writes.push(
                &format!(
                    "UPDATE messages SET status = ? WHERE outgoing = 1 AND (status < ? OR status = 4)
                     AND (contact = ? OR grp IS NOT NULL) AND id IN ({}) RETURNING id",
                    list(chunk.len())
                ),
                args,
            );
        }
    }

    /// Marks incoming messages of a contact read; returns their ids.
    pub async fn mark_read(tx: &mut Tx<'_>, contact: i64) -> Result<Vec<MessageId>, ProfileError> {
        let rows = sqlx::query(
            "UPDATE messages SET status = 3 WHERE contact = ? AND outgoing = 0 AND status != 3 AND recalled = 0
             RETURNING id",
        )
        .bind(contact)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter()
            .map(|r| fixed("message id", &r.try_get::<Vec<u8>, _>(0)?))
            .collect()
    }

    /// Stages withdrawing a message of a conversation (an `outgoing` one
    /// of this device, or an incoming one of `contact`). The write returns
    /// a row if it was there.
    pub fn stage_recall(
        &self,
        rng: &mut impl CryptoRng,
        writes: &mut Writes,
        contact: i64,
        id: &MessageId,
        outgoing: bool,
    ) {
        let empty = self
            .vault
            .seal(rng, &format!("message:{}", hex::encode(id)), b"");
        writes.push(
            "UPDATE messages SET recalled = 1, text = ? WHERE id = ? AND contact = ? AND outgoing = ? RETURNING id",
            [
                Arg::Blob(empty),
                Arg::Blob(id.to_vec()),
                Arg::Int(contact),
                Arg::Int(i64::from(outgoing)),
            ],
        );
    }

    /// A conversation's messages: each sender's in its counter order,
    /// the two interleaved in the order this device stored them
    /// (`spec/client.md`, "Ordering"). The last `limit`.
    pub async fn history(
        &self,
        contact: i64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ProfileError> {
        let rows = sqlx::query(
            "SELECT id, outgoing, counter, sent_at_ms, text, status, recalled, contact, grp FROM
               (SELECT * FROM messages WHERE contact = ? AND grp IS NULL ORDER BY position DESC LIMIT ?)
             ORDER BY position",
        )
        .bind(contact)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.messages_from_rows(rows)
    }

    /// A group's messages, the last `limit`, in the order of
    /// [`Self::history`].
    pub async fn group_history(
        &self,
        group: &GroupId,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ProfileError> {
        let rows = sqlx::query(
            "SELECT id, outgoing, counter, sent_at_ms, text, status, recalled, contact, grp FROM
               (SELECT * FROM messages WHERE grp = ? ORDER BY position DESC LIMIT ?)
             ORDER BY position",
        )
        .bind(&group[..])
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.messages_from_rows(rows)
    }

    fn messages_from_rows(&self, rows: Vec<SqliteRow>) -> Result<Vec<StoredMessage>, ProfileError> {
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let id: MessageId = fixed("message id", &row.try_get::<Vec<u8>, _>(0)?)?;
            let sealed: Vec<u8> = row.try_get(4)?;
            let text = self
                .vault
                .open(&format!("message:{}", hex::encode(id)), &sealed)?;
            messages.push(StoredMessage {
                id,
                contact: row.try_get(7)?,
                outgoing: row.try_get::<i64, _>(1)? != 0,
                counter: u64_of(row.try_get(2)?),
                sent_at_ms: u64_of(row.try_get(3)?),
                text: String::from_utf8_lossy(&text).into_owned(),
                status: Status::from_i64(row.try_get(5)?),
                recalled: row.try_get::<i64, _>(6)? != 0,
                group: row
                    .try_get::<Option<Vec<u8>>, _>(8)?
                    .map(|g| fixed("group id", &g))
                    .transpose()?,
            });
        }
        order_by_sender_counter(&mut messages);
        Ok(messages)
    }

    /// Stages envelopes for the relay, each with its contact.
    pub fn stage_outgoing(writes: &mut Writes, outgoing: &[(i64, Outgoing)]) {
        const COLUMNS: usize = 9;
        for chunk in outgoing.chunks(ROWS_PER_STATEMENT) {
            let mut args = Vec::with_capacity(chunk.len() * COLUMNS);
            for (contact, out) in chunk {
                args.extend([
                    Arg::Blob(out.message_id.to_vec()),
                    Arg::Int(*contact),
                    Arg::Blob(out.device_key.to_vec()),
                    Arg::Blob(out.body.clone()),
                    Arg::Blob(out.slot.to_vec()),
                    Arg::Int(i64_of(out.first_attempt_ms)),
                    Arg::Int(i64_of(out.first_attempt_ms)),
                    if out.more.is_empty() {
                        Arg::Null
                    } else {
                        Arg::Blob(
                            out.more
                                .iter()
                                .flat_map(|(device, slot)| device.iter().chain(slot.iter()))
                                .copied()
                                .collect(),
                        )
                    },
                    out.group.map_or(Arg::Null, |g| Arg::Blob(g.to_vec())),
                ]);
            }
            writes.push(
                &format!(
                    "INSERT INTO outbox (message_id, contact, device_key, body, slot, first_attempt_ms, next_attempt_ms, more_recipients, grp) VALUES {}",
                    rows(COLUMNS, chunk.len())
                ),
                args,
            );
        }
    }

    /// Envelopes due for an attempt at `now_ms`, oldest first.
    pub async fn due(&self, now_ms: u64) -> Result<Vec<Outgoing>, ProfileError> {
        let rows = sqlx::query(
            "SELECT message_id, device_key, body, slot, first_attempt_ms, attempts, more_recipients, grp
             FROM outbox WHERE next_attempt_ms <= ? ORDER BY first_attempt_ms, rowid",
        )
        .bind(i64_of(now_ms))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Outgoing {
                    message_id: fixed("message id", &r.try_get::<Vec<u8>, _>(0)?)?,
                    device_key: fixed("device key", &r.try_get::<Vec<u8>, _>(1)?)?,
                    body: r.try_get(2)?,
                    slot: fixed("slot", &r.try_get::<Vec<u8>, _>(3)?)?,
                    first_attempt_ms: u64_of(r.try_get(4)?),
                    attempts: u32::try_from(r.try_get::<i64, _>(5)?).unwrap_or(u32::MAX),
                    more: match r.try_get::<Option<Vec<u8>>, _>(6)? {
                        None => Vec::new(),
                        Some(bytes) if bytes.len().is_multiple_of(80) => bytes
                            .chunks_exact(80)
                            .map(|c| Ok((fixed("device key", &c[..32])?, fixed("slot", &c[32..])?)))
                            .collect::<Result<_, ProfileError>>()?,
                        Some(_) => return Err(ProfileError::Damaged("outbox recipients".into())),
                    },
                    group: r
                        .try_get::<Option<Vec<u8>>, _>(7)?
                        .map(|g| fixed("group id", &g))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// When the next queued envelope is due, if any.
    pub async fn next_due(&self) -> Result<Option<u64>, ProfileError> {
        Ok(sqlx::query("SELECT MIN(next_attempt_ms) FROM outbox")
            .fetch_one(&self.pool)
            .await?
            .try_get::<Option<i64>, _>(0)?
            .map(u64_of))
    }

    /// Envelopes still waiting for the relay.
    pub async fn outbox_len(&self) -> Result<u64, ProfileError> {
        Ok(u64_of(
            sqlx::query("SELECT COUNT(*) FROM outbox")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        ))
    }

    /// Every group this device knows, by name.
    pub async fn groups(&self) -> Result<Vec<Group>, ProfileError> {
        let rows = sqlx::query(
            "SELECT id, name, version, members, admins, member, send_counter FROM groups ORDER BY name, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Group {
                    id: fixed("group id", &r.try_get::<Vec<u8>, _>(0)?)?,
                    name: r.try_get(1)?,
                    version: u64_of(r.try_get(2)?),
                    members: keys_of_blob("member", &r.try_get::<Vec<u8>, _>(3)?)?,
                    admins: keys_of_blob("admin", &r.try_get::<Vec<u8>, _>(4)?)?,
                    member: r.try_get::<i64, _>(5)? != 0,
                    send_counter: u64_of(r.try_get(6)?),
                })
            })
            .collect()
    }

    /// Stages storing a group's state (new or replacing what was held).
    pub fn stage_group(writes: &mut Writes, group: &Group) {
        writes.push(
            "INSERT INTO groups (id, name, version, members, admins, member, send_counter)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, version = excluded.version,
               members = excluded.members, admins = excluded.admins, member = excluded.member,
               send_counter = excluded.send_counter",
            [
                Arg::Blob(group.id.to_vec()),
                Arg::Text(group.name.clone()),
                Arg::Int(i64_of(group.version)),
                Arg::Blob(keys_blob(&group.members)),
                Arg::Blob(keys_blob(&group.admins)),
                Arg::Int(i64::from(group.member)),
                Arg::Int(i64_of(group.send_counter)),
            ],
        );
    }

    /// This device's own sender-key record of a group (secret).
    pub async fn own_sender_key(
        &self,
        group: &GroupId,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ProfileError> {
        let sealed: Option<Vec<u8>> = sqlx::query("SELECT sender_key FROM groups WHERE id = ?")
            .bind(&group[..])
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<Option<Vec<u8>>, _>(0))
            .transpose()?
            .flatten();
        sealed
            .map(|s| {
                self.vault
                    .open(&format!("own-sender-key:{}", hex::encode(group)), &s)
            })
            .transpose()
            .map_err(ProfileError::from)
    }

    /// Stages this device's own sender-key record of a group (after the
    /// group's row is staged), or its removal.
    pub fn stage_own_sender_key(
        &self,
        rng: &mut impl CryptoRng,
        writes: &mut Writes,
        group: &GroupId,
        record: Option<&[u8]>,
    ) {
        let sealed = record.map(|r| {
            self.vault
                .seal(rng, &format!("own-sender-key:{}", hex::encode(group)), r)
        });
        writes.push(
            "UPDATE groups SET sender_key = ? WHERE id = ?",
            [
                sealed.map_or(Arg::Null, Arg::Blob),
                Arg::Blob(group.to_vec()),
            ],
        );
    }

    fn sender_key_purpose(group: &GroupId, sender: &IdentityKey) -> String {
        format!(
            "sender-key:{}:{}",
            hex::encode(group),
            hex::encode(sender.as_bytes())
        )
    }

    /// The sender-key record another member's device sent for a group
    /// (secret).
    pub async fn sender_key(
        &self,
        group: &GroupId,
        sender: &IdentityKey,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ProfileError> {
        let sealed: Option<Vec<u8>> =
            sqlx::query("SELECT record FROM sender_keys WHERE grp = ? AND sender = ?")
                .bind(&group[..])
                .bind(&sender.as_bytes()[..])
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        sealed
            .map(|s| {
                self.vault
                    .open(&Self::sender_key_purpose(group, sender), &s)
            })
            .transpose()
            .map_err(ProfileError::from)
    }

    /// Stages another member's sender-key record of a group.
    pub fn stage_sender_key(
        &self,
        rng: &mut impl CryptoRng,
        writes: &mut Writes,
        group: &GroupId,
        sender: &IdentityKey,
        record: &[u8],
    ) {
        let sealed = self
            .vault
            .seal(rng, &Self::sender_key_purpose(group, sender), record);
        writes.push(
            "INSERT INTO sender_keys (grp, sender, record) VALUES (?, ?, ?)
             ON CONFLICT (grp, sender) DO UPDATE SET record = excluded.record",
            [
                Arg::Blob(group.to_vec()),
                Arg::Blob(sender.as_bytes().to_vec()),
                Arg::Blob(sealed),
            ],
        );
    }

    /// Stages forgetting other members' sender keys of a group, and what
    /// they were given of this device's: all of them, or those of members
    /// not in `keep`.
    pub fn stage_forget_sender_keys(writes: &mut Writes, group: &GroupId, keep: &[IdentityKey]) {
        for sql in [
            "DELETE FROM sender_keys WHERE grp = ? AND sender NOT IN",
            "DELETE FROM given_keys WHERE grp = ? AND member NOT IN",
        ] {
            let mut args = vec![Arg::Blob(group.to_vec())];
            args.extend(keep.iter().map(|k| Arg::Blob(k.as_bytes().to_vec())));
            writes.push(&format!("{sql} ({})", list(keep.len())), args);
        }
    }

    /// Stages the distribution a member was given of this device's
    /// chain `key_id` in a group.
    pub fn stage_given_key(
        &self,
        rng: &mut impl CryptoRng,
        writes: &mut Writes,
        group: &GroupId,
        member: &IdentityKey,
        key_id: u32,
        distribution: &[u8],
    ) {
        let sealed = self
            .vault
            .seal(rng, &Self::given_key_purpose(group, member), distribution);
        writes.push(
            "INSERT INTO given_keys (grp, member, key_id, distribution) VALUES (?, ?, ?, ?)
             ON CONFLICT (grp, member) DO UPDATE SET key_id = excluded.key_id,
               distribution = excluded.distribution",
            [
                Arg::Blob(group.to_vec()),
                Arg::Blob(member.as_bytes().to_vec()),
                Arg::Int(i64::from(key_id)),
                Arg::Blob(sealed),
            ],
        );
    }

    fn given_key_purpose(group: &GroupId, member: &IdentityKey) -> String {
        format!(
            "given-key:{}:{}",
            hex::encode(group),
            hex::encode(member.as_bytes())
        )
    }

    /// The distribution a member was last given (secret).
    pub async fn given_key(
        &self,
        group: &GroupId,
        member: &IdentityKey,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ProfileError> {
        let sealed: Option<Vec<u8>> =
            sqlx::query("SELECT distribution FROM given_keys WHERE grp = ? AND member = ?")
                .bind(&group[..])
                .bind(&member.as_bytes()[..])
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        sealed
            .map(|s| self.vault.open(&Self::given_key_purpose(group, member), &s))
            .transpose()
            .map_err(ProfileError::from)
    }

    /// The members (identity key bytes) given this device's chain
    /// `key_id` in a group.
    pub async fn given_current(
        &self,
        group: &GroupId,
        key_id: u32,
    ) -> Result<std::collections::HashSet<[u8; 32]>, ProfileError> {
        let rows = sqlx::query("SELECT member FROM given_keys WHERE grp = ? AND key_id = ?")
            .bind(&group[..])
            .bind(i64::from(key_id))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| fixed("member", &r.try_get::<Vec<u8>, _>(0)?))
            .collect()
    }

    /// Parks a group message until its sender's key (or its group)
    /// arrives. At most [`MAX_PARKED`] are kept per sender; beyond that
    /// the oldest go.
    pub async fn park(
        &self,
        group: &GroupId,
        sender: &IdentityKey,
        message: &[u8],
        seq: u64,
    ) -> Result<(), ProfileError> {
        let mut writes = Writes::default();
        writes.push(
            "INSERT INTO parked (grp, sender, message, seq) VALUES (?, ?, ?, ?)",
            [
                Arg::Blob(group.to_vec()),
                Arg::Blob(sender.as_bytes().to_vec()),
                Arg::Blob(message.to_vec()),
                Arg::Int(i64_of(seq)),
            ],
        );
        writes.push(
            "DELETE FROM parked WHERE sender = ? AND id NOT IN
               (SELECT id FROM parked WHERE sender = ? ORDER BY id DESC LIMIT ?)",
            [
                Arg::Blob(sender.as_bytes().to_vec()),
                Arg::Blob(sender.as_bytes().to_vec()),
                Arg::Int(MAX_PARKED),
            ],
        );
        self.write_unsynced(writes).await?;
        Ok(())
    }

    /// The parked messages of a group, oldest first: (row, sender,
    /// message, seq).
    pub async fn parked(
        &self,
        group: &GroupId,
    ) -> Result<Vec<(i64, IdentityKey, Vec<u8>, u64)>, ProfileError> {
        let rows =
            sqlx::query("SELECT id, sender, message, seq FROM parked WHERE grp = ? ORDER BY id")
                .bind(&group[..])
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    IdentityKey::from_bytes(&fixed("sender", &r.try_get::<Vec<u8>, _>(1)?)?)
                        .map_err(|e| ProfileError::Damaged(e.to_string()))?,
                    r.try_get(2)?,
                    u64_of(r.try_get(3)?),
                ))
            })
            .collect()
    }

    /// Stages forgetting a parked message.
    pub fn stage_unpark(writes: &mut Writes, row: i64) {
        writes.push("DELETE FROM parked WHERE id = ?", [Arg::Int(row)]);
    }

    /// Records asking `sender` for its key of `group` now, unless that
    /// was done less than `again_ms` ago; returns whether to ask.
    pub async fn ask_for_key(
        &self,
        group: &GroupId,
        sender: &IdentityKey,
        again_ms: u64,
    ) -> Result<bool, ProfileError> {
        let now = now_ms();
        let rows = self
            .write_unsynced({
                let mut writes = Writes::default();
                writes.push(
                    "INSERT INTO key_requests (grp, sender, at_ms) VALUES (?, ?, ?)
                     ON CONFLICT (grp, sender) DO UPDATE SET at_ms = excluded.at_ms
                       WHERE key_requests.at_ms < ?
                     RETURNING at_ms",
                    [
                        Arg::Blob(group.to_vec()),
                        Arg::Blob(sender.as_bytes().to_vec()),
                        Arg::Int(i64_of(now)),
                        Arg::Int(i64_of(now.saturating_sub(again_ms))),
                    ],
                );
                writes
            })
            .await?;
        Ok(!rows.is_empty())
    }

    /// Stores the outcome of a round of attempts in one transaction:
    /// `settled` envelopes leave the outbox with their message's status;
    /// `later` ones are due again at the given time. Synced to the disk
    /// only if `synced` (it carries earlier unsynced commits with it).
    pub async fn settle(
        &self,
        settled: &[(MessageId, Status)],
        later: &[(MessageId, u64)],
        synced: bool,
    ) -> Result<(), ProfileError> {
        let mut writes = Writes::default();
        let ids: Vec<MessageId> = settled.iter().map(|(id, _)| *id).collect();
        for chunk in ids.chunks(ROWS_PER_STATEMENT * 4) {
            writes.push(
                &format!(
                    "DELETE FROM outbox WHERE message_id IN ({})",
                    list(chunk.len())
                ),
                chunk.iter().map(|id| Arg::Blob(id.to_vec())),
            );
        }
        for status in [Status::Sent, Status::Failed] {
            let ids: Vec<MessageId> = settled
                .iter()
                .filter(|(_, s)| *s == status)
                .map(|(id, _)| *id)
                .collect();
            Self::stage_status(&mut writes, &ids, status);
        }
        for (id, next_ms) in later {
            writes.push(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ? WHERE message_id = ?",
                [Arg::Int(i64_of(*next_ms)), Arg::Blob(id.to_vec())],
            );
        }
        // An outcome lost with power is an envelope sent again under its
        // id, which the relay recognises: it need not be synced itself.
        self.write_with(writes, synced).await?;
        Ok(())
    }

    /// How many of `ids` are still sending and how many failed.
    pub async fn pending(&self, ids: &[MessageId]) -> Result<(usize, usize), ProfileError> {
        let (mut sending, mut failed) = (0, 0);
        for chunk in ids.chunks(ROWS_PER_STATEMENT * 4) {
            let sql = format!(
                "SELECT status, COUNT(*) FROM messages WHERE id IN ({}) GROUP BY status",
                list(chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(&id[..]);
            }
            for row in query.fetch_all(&self.pool).await? {
                let n = usize::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0);
                match Status::from_i64(row.try_get(0)?) {
                    Status::Sending => sending += n,
                    Status::Failed => failed += n,
                    _ => {}
                }
            }
        }
        Ok((sending, failed))
    }

    /// Stores `writes` in one transaction, handed to the database thread
    /// in one piece (one round trip, one commit). Returns the rows the
    /// statements return, in order. On failure nothing is stored.
    pub async fn write(&self, writes: Writes) -> Result<Vec<SqliteRow>, ProfileError> {
        self.write_with(writes, true).await
    }

    /// [`Self::write`] without flushing to the disk: the commit survives
    /// the process, not a power cut, until the next synced commit or
    /// [`Self::sync`].
    pub async fn write_unsynced(&self, writes: Writes) -> Result<Vec<SqliteRow>, ProfileError> {
        self.write_with(writes, false).await
    }

    /// Flushes every commit so far to the disk (a synced commit of a
    /// marker; the log is written in order, so this carries everything
    /// before it).
    pub async fn sync(&self) -> Result<(), ProfileError> {
        let mut writes = Writes::default();
        writes.push(
            "INSERT INTO meta (key, value) VALUES ('synced_at', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [Arg::Blob(now_ms().to_be_bytes().to_vec())],
        );
        self.write(writes).await?;
        Ok(())
    }

    /// [`Self::write`]; unless `synced`, the commit is not flushed to the
    /// disk at once (it survives the process, not a power cut, until the
    /// next synced commit).
    async fn write_with(
        &self,
        writes: Writes,
        synced: bool,
    ) -> Result<Vec<SqliteRow>, ProfileError> {
        if writes.sql.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await?;
        let sql = if synced {
            format!("BEGIN IMMEDIATE;\n{}COMMIT", writes.sql)
        } else {
            format!(
                "PRAGMA synchronous = NORMAL;\nBEGIN IMMEDIATE;\n{}COMMIT;\nPRAGMA synchronous = FULL",
                writes.sql
            )
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for arg in writes.args {
            query = match arg {
                Arg::Int(n) => query.bind(n),
                Arg::Blob(b) => query.bind(b),
                Arg::Text(t) => query.bind(t),
                Arg::Null => query.bind(None::<i64>),
            };
        }
        match query.fetch_all(&mut *conn).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                // A statement failed mid-way: undo what ran before it.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                if !synced {
                    let _ = sqlx::query("PRAGMA synchronous = FULL")
                        .execute(&mut *conn)
                        .await;
                }
                match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        Err(ProfileError::Duplicate)
                    }
                    _ => Err(e.into()),
                }
            }
        }
    }
}

/// How long a processed message id is remembered: twice the relay's
/// default envelope lifetime (`spec/relay.md`). An envelope older than
/// that cannot come again from a relay with default settings, and one
/// that did would still be refused by its session (its key is used up).
pub const SEEN_KEPT: Duration = Duration::from_secs(60 * 24 * 3600);

/// Group messages kept per sender while their key is missing.
pub const MAX_PARKED: i64 = 1_000;

/// Rows per multi-row statement.
const ROWS_PER_STATEMENT: usize = 64;

/// A value bound to a staged statement.
#[derive(Clone, Debug)]
pub enum Arg {
    /// An integer.
    Int(i64),
    /// Bytes.
    Blob(Vec<u8>),
    /// Text.
    Text(String),
    /// NULL.
    Null,
}

/// Changes to store together: statements and their arguments, run by
/// [`Profile::write`] as one transaction. Built by the `stage_*`
/// functions.
#[derive(Clone, Default)]
pub struct Writes {
    sql: String,
    args: Vec<Arg>,
}

impl core::fmt::Debug for Writes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Writes")
            .field("arguments", &self.args.len())
            .finish_non_exhaustive()
    }
}

impl Writes {
    fn push(&mut self, sql: &str, args: impl IntoIterator<Item = Arg>) {
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self.args.extend(args);
    }

    /// Nothing staged.
    pub fn is_empty(&self) -> bool {
        self.sql.is_empty()
    }
}

/// `?, ?, ...` (`n` of them).
fn list(n: usize) -> String {
    let mut out = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('?');
    }
    out
}

/// `(?, ..), (?, ..), ...`: `n` rows of `columns`.
fn rows(columns: usize, n: usize) -> String {
    let row = format!("({})", list(columns));
    let mut out = String::with_capacity(n * (row.len() + 2));
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&row);
    }
    out
}

/// Puts each sender's messages in counter order within the places its
/// messages hold: arrival order across senders, counter order within one.
pub fn order_by_sender_counter(messages: &mut [StoredMessage]) {
    let sender = |m: &StoredMessage| (m.outgoing, if m.outgoing { 0 } else { m.contact });
    let mut senders: Vec<(bool, i64)> = messages.iter().map(sender).collect();
    senders.sort_unstable();
    senders.dedup();
    for who in senders {
        let slots: Vec<usize> = (0..messages.len())
            .filter(|i| sender(&messages[*i]) == who)
            .collect();
        let mut theirs: Vec<StoredMessage> = slots.iter().map(|i| messages[*i].clone()).collect();
        theirs.sort_by_key(|m| m.counter);
        for (slot, message) in slots.into_iter().zip(theirs) {
            messages[slot] = message;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn temp() -> PathBuf {
        std::env::temp_dir().join(format!(
            "hush-profile-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ))
    }

    fn message(id: MessageId, contact: i64, text: &str) -> StoredMessage {
        StoredMessage {
            id,
            contact,
            outgoing: false,
            counter: 1,
            sent_at_ms: 1,
            text: text.into(),
            status: Status::Sent,
            recalled: false,
            group: None,
        }
    }

    /// A write that would see an id a second time stores none of its
    /// statements, and says so; a failed statement leaves the profile as
    /// it was and writable.
    #[tokio::test]
    async fn a_write_is_all_or_nothing_and_seen_ids_are_refused() {
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let home = temp();
        let identity = IdentityKeyPair::generate(&mut rng);
        let profile = Profile::create(
            &mut rng,
            &home,
            &Unlock::KeyFile,
            &identity,
            "127.0.0.1:1",
            &[0; 32],
        )
        .await
        .unwrap();
        let peer = IdentityKeyPair::generate(&mut rng);
        let mut tx = profile.begin().await.unwrap();
        let (contact, _) = Profile::put_contact(&mut tx, "peer", peer.public())
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut writes = Writes::default();
        Profile::stage_seen(&mut writes, &[1; 16]);
        profile.stage_messages(
            &mut rng,
            &mut writes,
            &[(&message([1; 16], contact.id, "one"), Some(1))],
        );
        profile.write_unsynced(writes).await.unwrap();

        let mut writes = Writes::default();
        profile.stage_messages(
            &mut rng,
            &mut writes,
            &[(&message([2; 16], contact.id, "two"), Some(2))],
        );
        Profile::stage_seen(&mut writes, &[1; 16]);
        assert!(matches!(
            profile.write_unsynced(writes).await,
            Err(ProfileError::Duplicate)
        ));

        let mut writes = Writes::default();
        Profile::stage_seen(&mut writes, &[3; 16]);
        profile.stage_messages(
            &mut rng,
            &mut writes,
            &[(&message([3; 16], contact.id, "three"), Some(3))],
        );
        profile.write(writes).await.unwrap();
        profile.sync().await.unwrap();

        let texts: Vec<String> = profile
            .history(contact.id, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["one", "three"]);

        // A profile of schema 2 kept one session per contact: opened, it
        // is the session of the contact's primary device.
        let legacy =
            profile
                .vault()
                .seal(&mut rng, &format!("session:{}", contact.id), b"a session");
        sqlx::query("UPDATE contacts SET session = ? WHERE id = ?")
            .bind(legacy)
            .bind(contact.id)
            .execute(&profile.pool)
            .await
            .unwrap();
        for statement in ["DROP TABLE devices", "PRAGMA user_version = 2"] {
            sqlx::query(statement).execute(&profile.pool).await.unwrap();
        }
        profile.close().await;
        let profile = Profile::open(&home, None).await.unwrap();
        let (sessions, _) = profile.conversation(contact.id).await.unwrap();
        let sessions: Vec<([u8; 32], Vec<u8>)> = sessions
            .into_iter()
            .map(|(device, state)| (device, state.to_vec()))
            .collect();
        assert_eq!(
            sessions,
            [(*contact.identity.as_bytes(), b"a session".to_vec())]
        );

        // A profile of schema 1 (before groups) is brought up to date when
        // it is opened, keeping what it holds.
        for statement in [
            "DROP TABLE devices",
            "DROP INDEX messages_by_group",
            "ALTER TABLE messages DROP COLUMN grp",
            "ALTER TABLE outbox DROP COLUMN more_recipients",
            "ALTER TABLE outbox DROP COLUMN grp",
            "DROP TABLE groups",
            "DROP TABLE sender_keys",
            "DROP TABLE given_keys",
            "DROP TABLE parked",
            "DROP TABLE key_requests",
            "PRAGMA user_version = 1",
        ] {
            sqlx::query(statement).execute(&profile.pool).await.unwrap();
        }
        profile.close().await;
        let profile = Profile::open(&home, None).await.unwrap();
        let version: i64 = sqlx::query("PRAGMA user_version")
            .fetch_one(&profile.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(profile.groups().await.unwrap(), []);
        assert_eq!(profile.history(contact.id, 10).await.unwrap().len(), 2);

        // Seen ids are forgotten once old enough, and only then.
        assert_eq!(profile.expire_seen(1).await.unwrap(), 0);
        assert_eq!(profile.expire_seen(now_ms() + 1).await.unwrap(), 2);
        profile.close().await;
        let _ = std::fs::remove_dir_all(&home);
    }
}
