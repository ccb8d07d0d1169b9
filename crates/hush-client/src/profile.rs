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
use std::time::Duration;

use hush_crypto::{Address, IdentityKey, IdentityKeyPair, OneTimePreKeyPair, SignedPreKeyPair};
use rand_core::CryptoRng;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::content::MessageId;
use crate::vault::{Vault, VaultError};

/// The schema version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

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
}

impl From<sqlx::Error> for ProfileError {
    fn from(e: sqlx::Error) -> Self {
        ProfileError::Database(e.to_string())
    }
}

/// How the profile key is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unlock {
    /// A random key in `HOME/key`, owner-only.
    KeyFile,
    /// A passphrase (Argon2id).
    Passphrase(Zeroizing<String>),
}

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
}

impl core::fmt::Debug for Profile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Profile")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
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
        for statement in SCHEMA {
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
        Ok(Self {
            pool,
            vault,
            home: home.to_path_buf(),
        })
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

    /// Deletes a prekey's secret within `tx`.
    pub async fn delete_prekey(
        tx: &mut Tx<'_>,
        kind: PrekeyKind,
        id: u32,
    ) -> Result<(), ProfileError> {
        sqlx::query("DELETE FROM prekeys WHERE kind = ? AND id = ?")
            .bind(kind as i64)
            .bind(i64::from(id))
            .execute(&mut **tx)
            .await?;
        Ok(())
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

    /// Every stored prekey secret: signed, last-resort, one-time.
    pub async fn prekeys(
        &self,
    ) -> Result<
        (
            Vec<SignedPreKeyPair>,
            Vec<SignedPreKeyPair>,
            Vec<OneTimePreKeyPair>,
        ),
        ProfileError,
    > {
        let rows = sqlx::query("SELECT kind, id, secret FROM prekeys ORDER BY kind, id")
            .fetch_all(&self.pool)
            .await?;
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
    pub async fn put_contact(
        tx: &mut Tx<'_>,
        name: &str,
        identity: &IdentityKey,
    ) -> Result<(Contact, bool), ProfileError> {
        let existing = sqlx::query(
            "SELECT id, name, identity, verified, changed FROM contacts WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(Self::contact_from_row)
        .transpose()?;
        match existing {
            Some(c) if c.identity == *identity => Ok((c, false)),
            Some(c) => {
                sqlx::query("UPDATE contacts SET identity = ?, verified = 0, changed = 1, session = NULL WHERE id = ?")
                    .bind(&identity.as_bytes()[..])
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
            None => {
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

    /// A contact's sealed session state, within `tx`. Secret.
    pub async fn session(
        &self,
        tx: &mut Tx<'_>,
        contact: i64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ProfileError> {
        let sealed: Option<Vec<u8>> = sqlx::query("SELECT session FROM contacts WHERE id = ?")
            .bind(contact)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get::<Option<Vec<u8>>, _>(0))
            .transpose()?
            .flatten();
        match sealed {
            Some(s) => Ok(Some(self.vault.open(&format!("session:{contact}"), &s)?)),
            None => Ok(None),
        }
    }

    /// Stores a contact's session state within `tx`.
    pub async fn put_session(
        &self,
        rng: &mut impl CryptoRng,
        tx: &mut Tx<'_>,
        contact: i64,
        state: &[u8],
    ) -> Result<(), ProfileError> {
        let sealed = self.vault.seal(rng, &format!("session:{contact}"), state);
        sqlx::query("UPDATE contacts SET session = ? WHERE id = ?")
            .bind(sealed)
            .bind(contact)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Takes the next send counter of a conversation, within `tx`.
    pub async fn next_counter(tx: &mut Tx<'_>, contact: i64) -> Result<u64, ProfileError> {
        let n: i64 = sqlx::query(
            "UPDATE contacts SET send_counter = send_counter + 1 WHERE id = ? RETURNING send_counter",
        )
        .bind(contact)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
        Ok(u64_of(n))
    }

    /// Records a message id as processed; `false` if it already was.
    pub async fn mark_seen(tx: &mut Tx<'_>, id: &MessageId) -> Result<bool, ProfileError> {
        Ok(
            sqlx::query(
                "INSERT INTO seen (message_id, at_ms) VALUES (?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&id[..])
            .bind(i64_of(now_ms()))
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1,
        )
    }

    /// Stores a message of a conversation within `tx`.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_message(
        &self,
        rng: &mut impl CryptoRng,
        tx: &mut Tx<'_>,
        message: &StoredMessage,
        relay_seq: Option<u64>,
    ) -> Result<(), ProfileError> {
        let sealed = self.vault.seal(
            rng,
            &format!("message:{}", hex::encode(message.id)),
            message.text.as_bytes(),
        );
        sqlx::query(
            "INSERT INTO messages (id, position, contact, outgoing, counter, relay_seq, sent_at_ms, received_at_ms, text, status)
             VALUES (?, (SELECT COALESCE(MAX(position), 0) + 1 FROM messages), ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&message.id[..])
        .bind(message.contact)
        .bind(i64::from(message.outgoing))
        .bind(i64_of(message.counter))
        .bind(relay_seq.map(i64_of))
        .bind(i64_of(message.sent_at_ms))
        .bind((!message.outgoing).then(|| i64_of(now_ms())))
        .bind(sealed)
        .bind(message.status as i64)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Raises an outgoing message's status (never lowers it; `Failed`
    /// only from `Sending`), within `tx`. Returns whether it changed.
    pub async fn raise_status(
        tx: &mut Tx<'_>,
        id: &MessageId,
        status: Status,
    ) -> Result<bool, ProfileError> {
        let sql = if status == Status::Failed {
            "UPDATE messages SET status = ? WHERE id = ? AND outgoing = 1 AND status = 0"
        } else {
            "UPDATE messages SET status = ? WHERE id = ? AND outgoing = 1 AND (status < ? OR status = 4)"
        };
        let mut q = sqlx::query(sql).bind(status as i64).bind(&id[..]);
        if status != Status::Failed {
            q = q.bind(status as i64);
        }
        Ok(q.execute(&mut **tx).await?.rows_affected() == 1)
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

    /// Withdraws a message of `contact` (only theirs), within `tx`.
    pub async fn recall(
        &self,
        rng: &mut impl CryptoRng,
        tx: &mut Tx<'_>,
        contact: i64,
        id: &MessageId,
        outgoing: bool,
    ) -> Result<bool, ProfileError> {
        let empty = self
            .vault
            .seal(rng, &format!("message:{}", hex::encode(id)), b"");
        Ok(sqlx::query(
            "UPDATE messages SET recalled = 1, text = ? WHERE id = ? AND contact = ? AND outgoing = ?",
        )
        .bind(empty)
        .bind(&id[..])
        .bind(contact)
        .bind(i64::from(outgoing))
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1)
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
            "SELECT id, outgoing, counter, sent_at_ms, text, status, recalled FROM
               (SELECT * FROM messages WHERE contact = ? ORDER BY position DESC LIMIT ?)
             ORDER BY position",
        )
        .bind(contact)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let id: MessageId = fixed("message id", &row.try_get::<Vec<u8>, _>(0)?)?;
            let sealed: Vec<u8> = row.try_get(4)?;
            let text = self
                .vault
                .open(&format!("message:{}", hex::encode(id)), &sealed)?;
            messages.push(StoredMessage {
                id,
                contact,
                outgoing: row.try_get::<i64, _>(1)? != 0,
                counter: u64_of(row.try_get(2)?),
                sent_at_ms: u64_of(row.try_get(3)?),
                text: String::from_utf8_lossy(&text).into_owned(),
                status: Status::from_i64(row.try_get(5)?),
                recalled: row.try_get::<i64, _>(6)? != 0,
            });
        }
        order_by_sender_counter(&mut messages);
        Ok(messages)
    }

    /// Queues an envelope for the relay within `tx`.
    pub async fn put_outgoing(
        tx: &mut Tx<'_>,
        contact: i64,
        out: &Outgoing,
    ) -> Result<(), ProfileError> {
        sqlx::query(
            "INSERT INTO outbox (message_id, contact, device_key, body, slot, first_attempt_ms, next_attempt_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&out.message_id[..])
        .bind(contact)
        .bind(&out.device_key[..])
        .bind(&out.body)
        .bind(&out.slot[..])
        .bind(i64_of(out.first_attempt_ms))
        .bind(i64_of(out.first_attempt_ms))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Envelopes due for an attempt at `now_ms`, oldest first.
    pub async fn due(&self, now_ms: u64) -> Result<Vec<Outgoing>, ProfileError> {
        let rows = sqlx::query(
            "SELECT message_id, device_key, body, slot, first_attempt_ms, attempts FROM outbox
             WHERE next_attempt_ms <= ? ORDER BY first_attempt_ms, rowid",
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

    /// Stores the outcome of a round of attempts in one transaction:
    /// `settled` envelopes leave the outbox with their message's status;
    /// `later` ones are due again at the given time.
    pub async fn settle(
        &self,
        settled: &[(MessageId, Status)],
        later: &[(MessageId, u64)],
    ) -> Result<(), ProfileError> {
        if settled.is_empty() && later.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, status) in settled {
            sqlx::query("DELETE FROM outbox WHERE message_id = ?")
                .bind(&id[..])
                .execute(&mut *tx)
                .await?;
            Self::raise_status(&mut tx, id, *status).await?;
        }
        for (id, next_ms) in later {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ? WHERE message_id = ?",
            )
            .bind(i64_of(*next_ms))
            .bind(&id[..])
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The status of an outgoing message.
    pub async fn status(&self, id: &MessageId) -> Result<Option<Status>, ProfileError> {
        Ok(sqlx::query("SELECT status FROM messages WHERE id = ?")
            .bind(&id[..])
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .map(Status::from_i64))
    }
}

/// Puts each sender's messages in counter order within the places its
/// messages hold: arrival order across senders, counter order within one.
pub fn order_by_sender_counter(messages: &mut [StoredMessage]) {
    for outgoing in [true, false] {
        let slots: Vec<usize> = (0..messages.len())
            .filter(|i| messages[*i].outgoing == outgoing)
            .collect();
        let mut theirs: Vec<StoredMessage> = slots.iter().map(|i| messages[*i].clone()).collect();
        theirs.sort_by_key(|m| m.counter);
        for (slot, message) in slots.into_iter().zip(theirs) {
            messages[slot] = message;
        }
    }
}
