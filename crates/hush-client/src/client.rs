//! The client (`spec/client.md`): an account on a relay, sessions with
//! contacts, and messages that arrive exactly once, in order.
//!
//! Sending: a message gets its id, counter and ciphertext, and is stored
//! with its sealed envelope in the outbox in one transaction, before the
//! first attempt. The outbox is sent on an unauthenticated connection (so
//! the relay cannot tie a send to the sending device) and resent, the same
//! bytes under the same id, with jittered exponential backoff until the
//! relay acknowledges it or the retry window closes (status `failed`).
//!
//! Receiving: on the device's authenticated connection, every envelope is
//! opened, decrypted, checked against the ids already seen, and stored
//! with the advanced session in one transaction; only then is the relay
//! told to delete it. A lost acknowledgement means the envelope comes
//! again; its id is then already seen and nothing is shown twice.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hush_crypto::prekey::{PreKeyRef, PreKeySecrets};
use hush_crypto::{
    Address, ContentType, IdentityKey, IdentityKeyPair, OneTimePreKeyPair, PreKeyMessage,
    RatchetMessage, SafetyNumber, SealedBody, SealedEnvelope, Session, SessionMessage,
    SignedPreKeyPair,
};
use hush_crypto::{Agreements, seal_with};
use hush_proto::relay as proto;
use hush_relay::client::{ClientError as RelayError, RelayClient};
use rand_core::Rng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::content::{Body, Content, MessageId, ReceiptKind};
use crate::rng::ErasingRng;

mod groups;
use crate::profile::{
    Contact, Outgoing, PrekeyKind, Profile, ProfileError, Status, StoredMessage, Unlock, Writes,
    now_ms,
};

/// This device's number in its sealed envelopes (one device per account
/// until multi-device accounts).
pub const DEVICE: u32 = 1;

/// One-time prekeys uploaded at once (the relay's maximum).
pub const ONE_TIME_BATCH: u32 = 100;

/// Below this relay stock, a fresh batch of one-time prekeys is uploaded.
pub const ONE_TIME_LOW: u32 = 25;

/// Client failures, each with a one-line explanation for a person.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The profile could not be opened or written.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The relay could not be reached, refused us, or failed.
    #[error("relay: {0}")]
    Relay(#[from] RelayError),
    /// The relay address does not resolve.
    #[error("relay address {0} does not resolve to an IP address")]
    BadRelayAddress(String),
    /// No contact by that name.
    #[error("no contact named {0:?} (see `hush contact list`)")]
    UnknownContact(String),
    /// A contact name is empty, has characters that do not print, or
    /// looks like the name of an unnamed sender.
    #[error("contact names are 1 to 64 printable characters, not starting with \"unknown-\"")]
    BadContactName,
    /// The text is empty or too long.
    #[error("a message is 1 to {} bytes of text", crate::content::MAX_TEXT)]
    BadText,
    /// The contact's identity changed; the user must accept it first.
    #[error(
        "{0}'s identity changed: compare safety numbers with `hush verify {0}`, then accept with `hush verify {0} --accept`"
    )]
    IdentityChanged(String),
    /// The address is this profile's own.
    #[error("that address is this profile's own")]
    OwnAddress,
    /// The operating system's random generator failed.
    #[error("no randomness from the operating system: {0}")]
    Randomness(String),
    /// The crypto core refused (should not happen with stored state).
    #[error("encryption failed: {0}")]
    Crypto(String),
    /// No group by that name among this device's groups.
    #[error("no group named {0:?} (see `hush group list`)")]
    UnknownGroup(String),
    /// Several groups have that name.
    #[error("more than one group is named {0:?}")]
    AmbiguousGroup(String),
    /// A group name is empty or too long.
    #[error("group names are 1 to {} bytes", crate::content::MAX_GROUP_NAME)]
    BadGroupName,
    /// More members than a group holds.
    #[error("a group has at most {} members", crate::content::MAX_GROUP_MEMBERS)]
    TooManyMembers,
    /// Only a group's admins may change it.
    #[error("only an admin of {0:?} can change it")]
    NotAdmin(String),
    /// The contact is not in the group.
    #[error("{0} is not a member of {1:?} that can be removed")]
    NotAMember(String, String),
    /// Nobody else is in the group.
    #[error("nobody else is in group {0:?}")]
    EmptyGroup(String),
    /// The relay never acknowledged the message within the retry window.
    #[error("the relay did not take the message within {0:?}; it is marked failed")]
    Undelivered(Duration),
}

/// Timing and limits of a client.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a message is retried before it is marked failed.
    pub retry_window: Duration,
    /// First retry delay; doubles each attempt, with jitter.
    pub retry_base: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
    /// How long to wait for each relay answer.
    pub request_timeout: Duration,
    /// How long to wait for the relay's handshake.
    pub connect_timeout: Duration,
    /// A signed prekey older than this is replaced.
    pub signed_prekey_rotation: Duration,
    /// A replaced signed prekey (and an unused one-time prekey) is kept
    /// this long, so first messages made with it still open.
    pub prekey_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            retry_window: Duration::from_secs(10 * 60),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            signed_prekey_rotation: Duration::from_secs(7 * 24 * 3600),
            prekey_grace: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Something that happened, for a user interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new message.
    Message(Received),
    /// One of our messages changed status.
    Status {
        /// The contact.
        contact: String,
        /// The message.
        id: MessageId,
        /// Its new status.
        status: Status,
    },
    /// A contact started or stopped typing.
    Typing {
        /// The contact.
        contact: String,
        /// Typing now.
        typing: bool,
    },
    /// A group changed: this device was added to it (or it changed while
    /// a member), or removed from it (`member` false).
    Group {
        /// The group's name.
        group: String,
        /// The admin who changed it.
        by: String,
        /// This device is a member now.
        member: bool,
    },
    /// A contact withdrew one of their messages.
    Recalled {
        /// The contact.
        contact: String,
        /// The message.
        id: MessageId,
    },
}

/// A received chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The contact's name (a new sender gets a name made from its address).
    pub from: String,
    /// Its address.
    pub address: String,
    /// The message id.
    pub id: MessageId,
    /// The text.
    pub text: String,
    /// The sender's clock.
    pub sent_at_ms: u64,
    /// The sender's counter (orders its messages).
    pub counter: u64,
    /// The relay's sequence number in this device's queue.
    pub seq: u64,
    /// The group it was sent in, by name; `None` for a 1:1 message.
    pub group: Option<String>,
}

/// Sessions kept with one contact: the current one first, then up to
/// [`Sessions::KEPT`] - 1 earlier ones (`spec/client.md`, "Sessions").
///
/// When both sides start a session at the same time, each first answers
/// the other's: both then hold two sessions, and each decrypts with
/// whichever one a message belongs to. A session that decrypts a message
/// becomes the current one, so the two sides settle on the same session
/// after one message each way, and messages sent meanwhile still open.
#[derive(Default)]
struct Sessions {
    list: Vec<Session>,
}

impl Sessions {
    /// Sessions kept per contact.
    const KEPT: usize = 5;

    fn from_bytes(bytes: &[u8]) -> Result<Self, ClientError> {
        let damaged = || ProfileError::Damaged("session list".into());
        let mut list = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(damaged)?;
            let len = u32::from_be_bytes(*len) as usize;
            if tail.len() < len {
                return Err(damaged().into());
            }
            let (one, tail) = tail.split_at(len);
            list.push(Session::from_bytes(one).map_err(|e| ProfileError::Damaged(e.to_string()))?);
            rest = tail;
        }
        Ok(Self { list })
    }

    /// `u32be(len) || session` for each, current first. Secret.
    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        for session in &self.list {
            let bytes = session.to_bytes();
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    fn put_first(&mut self, session: Session) {
        self.list.insert(0, session);
        self.list.truncate(Self::KEPT);
    }

    fn has_base_key(&self, base_key: &[u8; 32]) -> bool {
        self.list.iter().any(|s| s.base_key() == base_key)
    }

    /// Decrypts with the first session that can (a failed attempt
    /// changes no session), and makes it the current one.
    fn decrypt(&mut self, message: &SessionMessage) -> Result<Vec<u8>, String> {
        let mut last = "no session with the sender".to_string();
        for i in 0..self.list.len() {
            match self.list[i].decrypt(message) {
                Ok(plaintext) => {
                    let session = self.list.remove(i);
                    self.list.insert(0, session);
                    return Ok(plaintext);
                }
                // Already decrypted once: no other session will do better.
                Err(hush_crypto::DecryptError::Duplicate) => return Err("duplicate message".into()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

/// The prekey secrets, for [`Session::respond`].
struct Prekeys {
    signed: Vec<SignedPreKeyPair>,
    last_resort: Vec<SignedPreKeyPair>,
    one_time: Vec<OneTimePreKeyPair>,
}

impl PreKeySecrets for Prekeys {
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        self.signed.iter().find(|k| k.id() == id)
    }
    fn last_resort_prekey(&self, id: u32) -> Option<&SignedPreKeyPair> {
        self.last_resort.iter().find(|k| k.id() == id)
    }
    fn one_time_prekey(&self, id: u32) -> Option<&OneTimePreKeyPair> {
        self.one_time.iter().find(|k| k.id() == id)
    }
}

/// A random generator seeded from the operating system, whose state
/// never reveals what it drew before (`crate::rng`).
fn os_rng() -> Result<ErasingRng, ClientError> {
    ErasingRng::from_os().map_err(|e| ClientError::Randomness(e.to_string()))
}

/// Resolves `HOST:PORT`.
async fn resolve(relay: &str) -> Result<SocketAddr, ClientError> {
    tokio::net::lookup_host(relay)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ClientError::BadRelayAddress(relay.to_string()))
}

fn meta_u32(bytes: Option<Vec<u8>>) -> u32 {
    bytes
        .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

/// Checks a contact name: 1 to 64 characters, none of them control
/// characters.
pub fn check_name(name: &str) -> Result<(), ClientError> {
    let n = name.chars().count();
    if n == 0
        || n > 64
        || name.chars().any(char::is_control)
        || name.trim() != name
        || name.starts_with(crate::profile::UNKNOWN_PREFIX)
    {
        return Err(ClientError::BadContactName);
    }
    Ok(())
}

/// A hush client on one profile.
pub struct Client {
    profile: Profile,
    identity: IdentityKeyPair,
    relay: SocketAddr,
    pin: [u8; 32],
    rng: ErasingRng,
    /// Authenticated: receives this device's queue.
    inbox: Option<RelayClient>,
    /// Unauthenticated: sends and bundle fetches.
    outbox: Option<RelayClient>,
    options: Options,
    /// Messages stored but not yet receipted, by sender name.
    receipts: BTreeMap<String, Vec<MessageId>>,
    /// The contacts as stored (loaded on first use, dropped on change).
    contacts: Option<Vec<Contact>>,
    /// Session states and send counters as stored, by contact. An entry
    /// is taken out while it changes and put back only once the change
    /// is committed, so a failed write leaves nothing stale here.
    conversations: HashMap<i64, Conversation>,
    /// Static agreements for sealing and opening.
    agreements: Agreements,
    /// The groups as stored (loaded on first use, kept up to date by
    /// every write of a group).
    groups: Option<Vec<crate::profile::Group>>,
    /// Envelopes queued since the last attempt.
    fresh: Vec<Outgoing>,
    /// The stored outbox holds nothing but `fresh`: the next attempt
    /// need not read it back.
    outbox_clean: bool,
    /// A send was committed without syncing (it began a session); the
    /// next round's outcomes are synced.
    unsynced_sends: bool,
    /// Relay sequence numbers of pushed envelopes processed (committed,
    /// not yet synced to the disk) and not yet acknowledged.
    unacked: Vec<u64>,
}

/// A round of send attempts: the entries, and for each the answer to
/// wait for or why it could not be sent.
#[derive(Default)]
struct Round {
    due: Vec<Outgoing>,
    started: Vec<Result<hush_relay::client::Answer, ClientError>>,
    /// `due` was read from the stored outbox (not only fresh entries).
    from_store: bool,
}

/// A contact's sessions and the last counter given to a message to them.
#[derive(Default)]
struct Conversation {
    /// Sessions per device of the contact.
    devices: HashMap<[u8; 32], Sessions>,
    send_counter: u64,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("profile", &self.profile)
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Creates a profile in `home` with a new identity and registers it
    /// with the relay at `relay` whose certificate fingerprint is `pin`.
    /// If the relay cannot be reached or refuses, nothing is left behind.
    pub async fn init(
        home: &Path,
        relay: &str,
        pin: [u8; 32],
        unlock: Unlock,
        options: Options,
    ) -> Result<Self, ClientError> {
        let addr = resolve(relay).await?;
        let mut rng = os_rng()?;
        let identity = IdentityKeyPair::generate(&mut rng);
        let existed = home.join("profile.sqlite").exists();
        let profile = Profile::create(&mut rng, home, &unlock, &identity, relay, &pin).await?;
        let mut client = Self::new(profile, identity, addr, pin, rng, options);
        // A new profile's outbox is empty.
        client.outbox_clean = true;
        let registered = async {
            client.new_signed_prekeys().await?;
            client.new_one_time_prekeys().await?;
            client.inbox().await?;
            Ok::<(), ClientError>(())
        }
        .await;
        if let Err(e) = registered {
            if !existed {
                let home = client.profile.home().to_path_buf();
                drop(client);
                for file in [
                    "profile.sqlite",
                    "profile.sqlite-wal",
                    "profile.sqlite-shm",
                    "key",
                ] {
                    let _ = std::fs::remove_file(home.join(file));
                }
            }
            return Err(e);
        }
        Ok(client)
    }

    /// Opens the profile in `home`.
    pub async fn open(
        home: &Path,
        passphrase: Option<&str>,
        options: Options,
    ) -> Result<Self, ClientError> {
        let profile = Profile::open(home, passphrase).await?;
        let identity = profile.identity().await?;
        let (relay, pin) = profile.relay().await?;
        let relay = resolve(&relay).await?;
        Ok(Self::new(profile, identity, relay, pin, os_rng()?, options))
    }

    fn new(
        profile: Profile,
        identity: IdentityKeyPair,
        relay: SocketAddr,
        pin: [u8; 32],
        rng: ErasingRng,
        options: Options,
    ) -> Self {
        Self {
            profile,
            identity,
            relay,
            pin,
            rng,
            inbox: None,
            outbox: None,
            options,
            receipts: BTreeMap::new(),
            contacts: None,
            conversations: HashMap::new(),
            agreements: Agreements::new(),
            groups: None,
            fresh: Vec::new(),
            outbox_clean: false,
            unsynced_sends: false,
            unacked: Vec::new(),
        }
    }

    /// This profile's address.
    pub fn address(&self) -> Address {
        Address::from(self.identity.public())
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    async fn next_prekey_id(&mut self, n: u32) -> Result<u32, ClientError> {
        let first = meta_u32(self.profile.meta("next_prekey_id").await?).max(1);
        let mut tx = self.profile.begin().await?;
        Profile::set_meta(
            &mut tx,
            "next_prekey_id",
            &first.wrapping_add(n).to_be_bytes(),
        )
        .await?;
        tx.commit().await.map_err(ProfileError::from)?;
        Ok(first)
    }

    /// Makes a new signed prekey (and, the first time, the last-resort
    /// prekey), stored before anything is uploaded.
    async fn new_signed_prekeys(&mut self) -> Result<(), ClientError> {
        let first = self.next_prekey_id(2).await?;
        let signed = SignedPreKeyPair::generate(&mut self.rng, &self.identity, first);
        let first_time = self.profile.meta("last_resort_prekey").await?.is_none();
        // The profile has one connection: no other query while `tx` is open.
        let mut tx = self.profile.begin().await?;
        self.profile
            .put_prekey(
                &mut self.rng,
                &mut tx,
                PrekeyKind::Signed,
                first,
                &signed.to_bytes(),
            )
            .await?;
        Profile::set_meta(&mut tx, "signed_prekey", &first.to_be_bytes()).await?;
        Profile::set_meta(&mut tx, "signed_prekey_at", &now_ms().to_be_bytes()).await?;
        if first_time {
            let last =
                SignedPreKeyPair::generate_last_resort(&mut self.rng, &self.identity, first + 1);
            self.profile
                .put_prekey(
                    &mut self.rng,
                    &mut tx,
                    PrekeyKind::LastResort,
                    first + 1,
                    &last.to_bytes(),
                )
                .await?;
            Profile::set_meta(&mut tx, "last_resort_prekey", &(first + 1).to_be_bytes()).await?;
        }
        let grace = now_ms().saturating_sub(self.options.prekey_grace.as_millis() as u64);
        Profile::expire_prekeys(&mut tx, PrekeyKind::Signed, grace, first).await?;
        tx.commit().await.map_err(ProfileError::from)?;
        Ok(())
    }

    /// Makes a batch of one-time prekeys (stored before upload), and
    /// forgets unused ones older than the grace period.
    async fn new_one_time_prekeys(&mut self) -> Result<Vec<OneTimePreKeyPair>, ClientError> {
        let first = self.next_prekey_id(ONE_TIME_BATCH).await?;
        let keys: Vec<OneTimePreKeyPair> = (0..ONE_TIME_BATCH)
            .map(|i| OneTimePreKeyPair::generate(&mut self.rng, first + i))
            .collect();
        let mut tx = self.profile.begin().await?;
        for key in &keys {
            self.profile
                .put_prekey(
                    &mut self.rng,
                    &mut tx,
                    PrekeyKind::OneTime,
                    key.id(),
                    &key.to_bytes(),
                )
                .await?;
        }
        let grace = now_ms().saturating_sub(self.options.prekey_grace.as_millis() as u64);
        Profile::expire_prekeys(&mut tx, PrekeyKind::OneTime, grace, first).await?;
        tx.commit().await.map_err(ProfileError::from)?;
        Ok(keys)
    }

    async fn prekeys(&self, one_time: Option<&[u32]>) -> Result<Prekeys, ClientError> {
        let (signed, last_resort, one_time) = self.profile.prekeys(one_time).await?;
        Ok(Prekeys {
            signed,
            last_resort,
            one_time,
        })
    }

    /// Keeps the relay's copy of this device's prekeys current: a new
    /// signed prekey when the current one is older than the rotation
    /// period, a new batch of one-time prekeys when the relay's stock is
    /// low (or on first registration).
    async fn maintain_prekeys(&mut self, relay: &RelayClient) -> Result<(), ClientError> {
        let signed_at = self
            .profile
            .meta("signed_prekey_at")
            .await?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let rotate = now_ms().saturating_sub(signed_at)
            > self.options.signed_prekey_rotation.as_millis() as u64;
        if rotate {
            self.new_signed_prekeys().await?;
        }
        let registered = self.profile.meta("registered").await?.is_some();
        let stock = if registered {
            relay.prekey_count().await.unwrap_or(0)
        } else {
            0
        };
        let one_time = if !registered || stock < ONE_TIME_LOW {
            if registered {
                self.new_one_time_prekeys().await?
            } else {
                // First registration: the batch made at init.
                self.prekeys(None).await?.one_time
            }
        } else {
            Vec::new()
        };
        if rotate || !one_time.is_empty() || !registered {
            let keys = self.prekeys(None).await?;
            let signed_id = meta_u32(self.profile.meta("signed_prekey").await?);
            let last_id = meta_u32(self.profile.meta("last_resort_prekey").await?);
            let (Some(signed), Some(last)) = (
                keys.signed_prekey(signed_id),
                keys.last_resort_prekey(last_id),
            ) else {
                return Err(ProfileError::Damaged("current prekeys missing".into()).into());
            };
            relay.register_prekeys(signed, last, &one_time).await?;
            if !registered {
                let mut tx = self.profile.begin().await?;
                Profile::set_meta(&mut tx, "registered", b"1").await?;
                tx.commit().await.map_err(ProfileError::from)?;
            }
        }
        Ok(())
    }

    async fn connect(&self) -> Result<RelayClient, ClientError> {
        let mut relay = tokio::time::timeout(
            self.options.connect_timeout,
            RelayClient::connect(self.relay, self.pin),
        )
        .await
        .map_err(|_| {
            ClientError::Relay(RelayError::Connect {
                addr: self.relay,
                reason: format!("no answer within {:?}", self.options.connect_timeout),
            })
        })??;
        relay.set_timeout(self.options.request_timeout);
        Ok(relay)
    }

    /// The authenticated connection (made, authenticated and its prekeys
    /// maintained if there is none or it was lost).
    pub async fn inbox(&mut self) -> Result<&mut RelayClient, ClientError> {
        if self
            .inbox
            .as_ref()
            .is_some_and(|c| c.close_reason().is_some())
        {
            self.inbox = None;
        }
        if self.inbox.is_none() {
            let relay = self.connect().await?;
            relay.authenticate(&self.identity).await?;
            self.maintain_prekeys(&relay).await?;
            self.inbox = Some(relay);
        }
        self.inbox
            .as_mut()
            .ok_or_else(|| ClientError::Relay(RelayError::Closed("no connection".into())))
    }

    /// The unauthenticated connection for sends and bundles.
    async fn outbox(&mut self) -> Result<&RelayClient, ClientError> {
        if self
            .outbox
            .as_ref()
            .is_some_and(|c| c.close_reason().is_some())
        {
            self.outbox = None;
        }
        if self.outbox.is_none() {
            self.outbox = Some(self.connect().await?);
        }
        self.outbox
            .as_ref()
            .ok_or_else(|| ClientError::Relay(RelayError::Closed("no connection".into())))
    }

    /// Drops both connections (the next use reconnects).
    pub fn disconnect(&mut self) {
        self.inbox = None;
        self.outbox = None;
    }

    /// Moves both connections to new local UDP sockets (QUIC migration),
    /// as when a phone changes networks; the conversation goes on.
    /// Returns the new local address of the authenticated connection.
    pub fn rebind(&self) -> std::io::Result<Option<SocketAddr>> {
        let mut local = None;
        for (i, relay) in [&self.inbox, &self.outbox].into_iter().enumerate() {
            if let Some(relay) = relay {
                let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
                relay.rebind(socket)?;
                if i == 0 {
                    local = Some(relay.local_addr()?);
                }
            }
        }
        Ok(local)
    }

    /// The local UDP address of the authenticated connection, if any.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inbox.as_ref().and_then(|r| r.local_addr().ok())
    }

    /// Closes the connections and the profile (another process may open
    /// it as soon as this returns).
    pub async fn close(self) {
        self.profile.close().await;
    }

    /// Adds a contact by address, or changes the address of a known name
    /// (which marks the contact changed and unverified: sending then
    /// waits for the user to accept). Returns the contact and whether its
    /// identity changed.
    pub async fn add_contact(
        &mut self,
        name: &str,
        address: &str,
    ) -> Result<(Contact, bool), ClientError> {
        check_name(name)?;
        let address: Address = address
            .trim()
            .parse()
            .map_err(|_| ClientError::Crypto(format!("{address:?} is not a valid hush address")))?;
        if address.identity() == self.identity.public() {
            return Err(ClientError::OwnAddress);
        }
        self.store_contact(name, address.identity()).await
    }

    /// Stores a contact (new, or a known name's new identity) and keeps
    /// the caches in step: a new contact starts with an empty
    /// conversation, a known one's is read again.
    async fn store_contact(
        &mut self,
        name: &str,
        identity: &IdentityKey,
    ) -> Result<(Contact, bool), ClientError> {
        let known = self
            .cached_contacts()
            .await?
            .iter()
            .any(|c| c.name == name || c.identity == *identity);
        let mut tx = self.profile.begin().await?;
        let stored = match Profile::put_contact(&mut tx, name, identity).await {
            Ok(stored) => tx
                .commit()
                .await
                .map(|()| stored)
                .map_err(ProfileError::from),
            Err(e) => Err(e),
        };
        let Ok((contact, changed)) = stored else {
            self.forget_contacts();
            return stored.map_err(ClientError::from);
        };
        if let Some(cached) = self.contacts.as_mut() {
            // A merge deletes the row that had the name.
            for gone in cached
                .iter()
                .filter(|c| c.name == contact.name && c.id != contact.id)
            {
                self.conversations.remove(&gone.id);
            }
            cached.retain(|c| c.id != contact.id && c.name != contact.name);
            cached.push(contact.clone());
        }
        if known {
            self.conversations.remove(&contact.id);
        } else {
            // A new contact has no session and was sent nothing yet.
            self.conversations
                .insert(contact.id, Conversation::default());
        }
        Ok((contact, changed))
    }

    /// Drops the cached contacts and conversations (after a change to
    /// contacts).
    fn forget_contacts(&mut self) {
        self.contacts = None;
        self.conversations.clear();
    }

    /// The contacts, from the cache.
    async fn cached_contacts(&mut self) -> Result<&[Contact], ClientError> {
        if self.contacts.is_none() {
            self.contacts = Some(self.profile.contacts().await?);
        }
        Ok(self.contacts.as_deref().unwrap_or_default())
    }

    /// The contact with this identity, if any.
    async fn contact_by_identity(
        &mut self,
        identity: &IdentityKey,
    ) -> Result<Option<Contact>, ClientError> {
        Ok(self
            .cached_contacts()
            .await?
            .iter()
            .find(|c| c.identity == *identity)
            .cloned())
    }

    /// The contact with this identity, made (named `unknown-` and ten
    /// characters of its address) if there is none.
    async fn contact_for(&mut self, identity: &IdentityKey) -> Result<Contact, ClientError> {
        if let Some(c) = self.contact_by_identity(identity).await? {
            return Ok(c);
        }
        let address = Address::from(identity).to_string();
        let name = format!(
            "{}{}",
            crate::profile::UNKNOWN_PREFIX,
            &address[4..14.min(address.len())]
        );
        Ok(self.store_contact(&name, identity).await?.0)
    }

    /// Takes a contact's conversation out of the cache (loading it if
    /// needed); [`Self::put_conversation`] returns it once its changes
    /// are stored.
    async fn take_conversation(&mut self, contact: i64) -> Result<Conversation, ClientError> {
        if let Some(c) = self.conversations.remove(&contact) {
            return Ok(c);
        }
        let (stored, send_counter) = self.profile.conversation(contact).await?;
        let mut devices = HashMap::with_capacity(stored.len());
        for (device, bytes) in stored {
            devices.insert(device, Sessions::from_bytes(&bytes)?);
        }
        Ok(Conversation {
            devices,
            send_counter,
        })
    }

    fn put_conversation(&mut self, contact: i64, conversation: Conversation) {
        self.conversations.insert(contact, conversation);
    }

    /// Every contact.
    pub async fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        Ok(self.profile.contacts().await?)
    }

    async fn contact(&mut self, name: &str) -> Result<Contact, ClientError> {
        self.cached_contacts()
            .await?
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| ClientError::UnknownContact(name.to_string()))
    }

    /// The safety number with a contact.
    pub async fn safety_number(
        &mut self,
        name: &str,
    ) -> Result<(Contact, SafetyNumber), ClientError> {
        let contact = self.contact(name).await?;
        let number = SafetyNumber::new(self.identity.public(), &contact.identity);
        Ok((contact, number))
    }

    /// Marks a contact verified (accepting an identity change).
    pub async fn verify(&mut self, name: &str) -> Result<(), ClientError> {
        let contact = self.contact(name).await?;
        let result = self.profile.set_verified(contact.id, true).await;
        self.forget_contacts();
        Ok(result?)
    }

    /// A conversation's last `limit` messages, in order.
    pub async fn history(
        &mut self,
        name: &str,
        limit: u32,
    ) -> Result<(Contact, Vec<StoredMessage>), ClientError> {
        let contact = self.contact(name).await?;
        let messages = self.profile.history(contact.id, limit).await?;
        Ok((contact, messages))
    }

    /// Encrypts `body` for `contact` and puts it in the outbox, with the
    /// advanced session (and, for a text, the message in the history),
    /// in one transaction. The session is made from a fetched bundle if
    /// there is none.
    async fn queue(&mut self, contact: &Contact, body: Body) -> Result<MessageId, ClientError> {
        self.queue_many(contact, vec![body])
            .await?
            .pop()
            .ok_or_else(|| ClientError::Crypto("nothing queued".into()))
    }

    /// [`Self::queue`] for several bodies, in order, in one transaction.
    async fn queue_many(
        &mut self,
        contact: &Contact,
        bodies: Vec<Body>,
    ) -> Result<Vec<MessageId>, ClientError> {
        let mut conversation = self.take_conversation(contact.id).await?;
        let device = *contact.identity.as_bytes();
        let initiated = conversation
            .devices
            .get(&device)
            .is_none_or(|s| s.list.is_empty());
        if initiated {
            let bundle = self.outbox().await?.fetch_bundle(&contact.identity).await?;
            let session = Session::initiate(&mut self.rng, &self.identity, &bundle)
                .map_err(|e| ClientError::Crypto(e.to_string()))?;
            conversation
                .devices
                .entry(device)
                .or_default()
                .put_first(session);
        }
        let Some(session) = conversation
            .devices
            .get_mut(&device)
            .and_then(|s| s.list.first_mut())
        else {
            return Err(ClientError::Crypto("no session".into()));
        };
        let now = now_ms();
        let mut ids = Vec::with_capacity(bodies.len());
        let mut texts = Vec::new();
        let mut messages = Vec::with_capacity(bodies.len());
        for body in bodies {
            let mut id = [0u8; 16];
            self.rng.fill_bytes(&mut id);
            conversation.send_counter += 1;
            let content = Content {
                id,
                sent_at_ms: now,
                counter: conversation.send_counter,
                body,
            };
            let plaintext = Zeroizing::new(content.to_bytes());
            let message = session
                .encrypt(&mut self.rng, &plaintext)
                .map_err(|e| ClientError::Crypto(e.to_string()))?;
            if let Body::Text(text) = content.body {
                texts.push(StoredMessage {
                    id,
                    contact: contact.id,
                    outgoing: true,
                    counter: content.counter,
                    sent_at_ms: now,
                    text,
                    status: Status::Sending,
                    recalled: false,
                    group: None,
                });
            }
            messages.push((message.content_type(), message.to_bytes()));
            ids.push(id);
        }
        let sealed = self.seal_all(&contact.identity, &messages)?;
        let outgoing: Vec<(i64, Outgoing)> = ids
            .iter()
            .zip(sealed)
            .map(|(id, sealed)| {
                (
                    contact.id,
                    Outgoing {
                        message_id: *id,
                        device_key: *contact.identity.as_bytes(),
                        body: sealed.body.to_bytes(),
                        slot: sealed.slot,
                        more: Vec::new(),
                        group: None,
                        first_attempt_ms: now,
                        attempts: 0,
                    },
                )
            })
            .collect();
        let mut writes = Writes::default();
        let messages: Vec<_> = texts.iter().map(|m| (m, None)).collect();
        self.profile
            .stage_messages(&mut self.rng, &mut writes, &messages);
        Profile::stage_outgoing(&mut writes, &outgoing);
        if let Some(sessions) = conversation.devices.get(&device) {
            self.profile.stage_session(
                &mut self.rng,
                &mut writes,
                contact.id,
                &device,
                &sessions.to_bytes(),
            );
        }
        Profile::stage_send_counter(&mut writes, contact.id, conversation.send_counter);
        if initiated {
            // The session is new: if a power cut undid this commit after
            // the envelope left, the next send would start another
            // session with fresh keys, so nothing could be encrypted
            // twice under one key. It is synced with the round's
            // outcomes.
            self.profile.write_unsynced(writes).await?;
            self.unsynced_sends = true;
        } else {
            // Synced before the envelope leaves: a session state lost
            // after its message went out would encrypt the next message
            // under the same key.
            self.profile.write(writes).await?;
        }
        self.put_conversation(contact.id, conversation);
        self.fresh.extend(outgoing.into_iter().map(|(_, out)| out));
        Ok(ids)
    }

    /// Seals each message for `recipient`, in order. A long batch is
    /// split between this thread and a second one (sealing costs two
    /// X25519 operations per message; the rest of a send is cheap).
    fn seal_all(
        &mut self,
        recipient: &IdentityKey,
        messages: &[(ContentType, Vec<u8>)],
    ) -> Result<Vec<SealedEnvelope>, ClientError> {
        /// Below this many, a second thread costs more than it saves.
        const PARALLEL_FROM: usize = 64;
        let seal = |rng: &mut ErasingRng,
                    agreements: &mut Agreements,
                    identity: &IdentityKeyPair,
                    part: &[(ContentType, Vec<u8>)]| {
            part.iter()
                .map(|(kind, bytes)| {
                    seal_with(rng, agreements, identity, DEVICE, recipient, *kind, bytes)
                        .map_err(|e| ClientError::Crypto(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        if messages.len() < PARALLEL_FROM {
            return seal(
                &mut self.rng,
                &mut self.agreements,
                &self.identity,
                messages,
            );
        }
        let (first, second) = messages.split_at(messages.len() / 2);
        let mut seed = Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(seed.as_mut());
        let mut rng = ErasingRng::from_seed(&seed);
        let mut agreements = self.agreements.clone();
        let identity = &self.identity;
        let (here, there) = std::thread::scope(|scope| {
            let helper = scope.spawn(|| seal(&mut rng, &mut agreements, identity, second));
            let here = seal(&mut self.rng, &mut self.agreements, identity, first);
            let there = helper
                .join()
                .unwrap_or_else(|_| Err(ClientError::Crypto("sealing thread failed".into())));
            (here, there)
        });
        let mut done = here?;
        done.extend(there?);
        Ok(done)
    }

    /// Stores several texts for `name` (one transaction) and makes the
    /// first attempt for all of them at once. Returns their ids, in order.
    pub async fn send_texts(
        &mut self,
        name: &str,
        texts: &[String],
    ) -> Result<Vec<MessageId>, ClientError> {
        if texts
            .iter()
            .any(|t| t.is_empty() || t.len() > crate::content::MAX_TEXT)
        {
            return Err(ClientError::BadText);
        }
        let contact = self.contact(name).await?;
        if contact.changed {
            return Err(ClientError::IdentityChanged(contact.name));
        }
        if !self.outbox_clean {
            let bodies = texts.iter().map(|t| Body::Text(t.clone())).collect();
            let ids = self.queue_many(&contact, bodies).await?;
            let _ = self.flush().await;
            return Ok(ids);
        }
        // Each part goes to the relay while the next is sealed and stored.
        const PART: usize = 512;
        let mut round = Round::default();
        let mut ids = Vec::with_capacity(texts.len());
        for part in texts.chunks(PART) {
            let bodies = part.iter().map(|t| Body::Text(t.clone())).collect();
            match self.queue_many(&contact, bodies).await {
                Ok(queued) => ids.extend(queued),
                Err(e) => {
                    // What was queued before stays queued (and is retried).
                    let _ = self.finish_round(round).await;
                    return Err(e);
                }
            }
            let fresh = std::mem::take(&mut self.fresh);
            self.start_round(&mut round, fresh).await;
        }
        let _ = self.finish_round(round).await;
        Ok(ids)
    }

    /// Stores a text for `name` and makes the first attempt to hand it to
    /// the relay. Returns its id; [`Self::flush`] retries.
    pub async fn send_text(&mut self, name: &str, text: &str) -> Result<MessageId, ClientError> {
        if text.is_empty() || text.len() > crate::content::MAX_TEXT {
            return Err(ClientError::BadText);
        }
        let contact = self.contact(name).await?;
        if contact.changed {
            return Err(ClientError::IdentityChanged(contact.name));
        }
        let id = self.queue(&contact, Body::Text(text.to_string())).await?;
        let _ = self.flush().await;
        Ok(id)
    }

    /// Sends a control message (receipt, typing, recall) to `name`.
    pub async fn send_control(&mut self, name: &str, body: Body) -> Result<MessageId, ClientError> {
        let contact = self.contact(name).await?;
        if contact.changed {
            return Err(ClientError::IdentityChanged(contact.name));
        }
        if let Body::Recall(id) = &body {
            let mut writes = Writes::default();
            self.profile
                .stage_recall(&mut self.rng, &mut writes, contact.id, id, true);
            self.profile.write(writes).await?;
        }
        let id = self.queue(&contact, body).await?;
        let _ = self.flush().await;
        Ok(id)
    }

    /// Sends `name` a read receipt for every message of theirs not yet
    /// marked read, and marks them read.
    pub async fn mark_read(&mut self, name: &str) -> Result<usize, ClientError> {
        let contact = self.contact(name).await?;
        let mut tx = self.profile.begin().await?;
        let ids = Profile::mark_read(&mut tx, contact.id).await?;
        tx.commit().await.map_err(ProfileError::from)?;
        for chunk in ids.chunks(crate::content::MAX_RECEIPT_IDS) {
            self.queue(&contact, Body::Receipt(ReceiptKind::Read, chunk.to_vec()))
                .await?;
        }
        if !ids.is_empty() {
            let _ = self.flush().await;
        }
        Ok(ids.len())
    }

    /// The delay before attempt `attempts + 1`: exponential, capped,
    /// with ±50% jitter so clients that failed together do not retry
    /// together.
    fn backoff(&mut self, attempts: u32) -> Duration {
        let base = self.options.retry_base.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << attempts.min(20));
        let capped = exp.min(self.options.retry_max.as_millis() as u64).max(1);
        let jitter = self.rng.next_u64() % capped;
        Duration::from_millis(capped / 2 + jitter)
    }

    /// Makes one attempt for every outbox entry that is due: all sends
    /// go out at once (pipelined on one connection), then the answers
    /// are taken, and every outcome is stored in one transaction. Returns
    /// the events (statuses) it caused.
    pub async fn flush(&mut self) -> Result<Vec<Event>, ClientError> {
        let from_store = !self.outbox_clean;
        let due = if from_store {
            self.fresh.clear();
            self.profile.due(now_ms()).await?
        } else {
            std::mem::take(&mut self.fresh)
        };
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut round = Round {
            from_store,
            ..Round::default()
        };
        self.start_round(&mut round, due).await;
        self.finish_round(round).await
    }

    /// Sends `due` without waiting for the answers, into `round`.
    async fn start_round(&mut self, round: &mut Round, due: Vec<Outgoing>) {
        self.outbox_clean = false;
        match self.outbox().await {
            Err(e) => {
                let reason = e.to_string();
                round.started.extend(
                    due.iter()
                        .map(|_| Err(ClientError::Relay(RelayError::Closed(reason.clone())))),
                );
            }
            Ok(relay) => {
                for out in &due {
                    round.started.push(
                        relay
                            .start(hush_proto::relay::client_frame::Request::Send(
                                proto::Send {
                                    message_id: out.message_id.to_vec(),
                                    body: out.body.clone(),
                                    recipients: std::iter::once((&out.device_key, &out.slot))
                                        .chain(out.more.iter().map(|(d, s)| (d, s)))
                                        .map(|(device, slot)| proto::Recipient {
                                            device_key: device.to_vec(),
                                            slot: slot.to_vec(),
                                        })
                                        .collect(),
                                    expected: Vec::new(),
                                },
                            ))
                            .await
                            .map_err(ClientError::from),
                    );
                }
            }
        }
        round.due.extend(due);
    }

    /// Takes the answers of a round and stores every outcome in one
    /// transaction. Returns the events (statuses) it caused.
    async fn finish_round(&mut self, round: Round) -> Result<Vec<Event>, ClientError> {
        let Round {
            due,
            started,
            from_store,
        } = round;
        let mut results = Vec::with_capacity(due.len());
        for answer in started {
            results.push(match answer {
                Ok(answer) => match answer.finish().await {
                    Ok(proto::relay_frame::Body::Sent(_)) => Ok(()),
                    Ok(_) => Err(ClientError::Relay(RelayError::Unexpected)),
                    Err(e) => Err(e.into()),
                },
                Err(e) => Err(e),
            });
        }
        let now = now_ms();
        let mut settled = Vec::new();
        let mut later = Vec::new();
        for (out, result) in due.iter().zip(results) {
            let expired = now.saturating_sub(out.first_attempt_ms)
                > self.options.retry_window.as_millis() as u64;
            match result {
                Ok(()) => settled.push((out, Status::Sent)),
                // The recipient is not registered: retrying cannot help.
                Err(ClientError::Relay(RelayError::Relay {
                    code: proto::ErrorCode::UnknownDevice,
                    ..
                })) => settled.push((out, Status::Failed)),
                Err(e) => {
                    tracing::debug!(error = %e, "send attempt failed");
                    if matches!(
                        e,
                        ClientError::Relay(
                            RelayError::Closed(_)
                                | RelayError::Timeout
                                | RelayError::Connect { .. }
                        )
                    ) {
                        self.outbox = None;
                    }
                    if expired {
                        settled.push((out, Status::Failed));
                    } else {
                        let wait = self.backoff(out.attempts);
                        later.push((out.message_id, now_ms() + wait.as_millis() as u64));
                    }
                }
            }
        }
        let outcomes: Vec<(MessageId, Status)> = settled
            .iter()
            .map(|(out, status)| (out.message_id, *status))
            .collect();
        let synced = std::mem::take(&mut self.unsynced_sends);
        if let Err(e) = self.profile.settle(&outcomes, &later, synced).await {
            self.unsynced_sends |= synced;
            return Err(e.into());
        }
        self.outbox_clean =
            later.is_empty() && (!from_store || self.profile.outbox_len().await? == 0);
        let mut events = Vec::with_capacity(settled.len());
        let mut names: BTreeMap<[u8; 32], Option<String>> = BTreeMap::new();
        for (out, status) in settled {
            if let Some(group) = out.group {
                // A group send: its status is the group's.
                if let Some(g) = self.known_groups().await?.iter().find(|g| g.id == group) {
                    events.push(Event::Status {
                        contact: g.name.clone(),
                        id: out.message_id,
                        status,
                    });
                }
                continue;
            }
            let name = match names.get(&out.device_key) {
                Some(name) => name.clone(),
                None => {
                    let name = match IdentityKey::from_bytes(&out.device_key) {
                        Ok(identity) => self.contact_by_identity(&identity).await?.map(|c| c.name),
                        Err(_) => None,
                    };
                    names.insert(out.device_key, name.clone());
                    name
                }
            };
            if let Some(contact) = name {
                events.push(Event::Status {
                    contact,
                    id: out.message_id,
                    status,
                });
            }
        }
        Ok(events)
    }

    /// Retries until the relay has acknowledged every message of `ids`
    /// (`Ok`) or the retry window of one of them closes (`Undelivered`).
    /// Ids of no outgoing text count as acknowledged.
    pub async fn wait_sent(&mut self, ids: &[MessageId]) -> Result<(), ClientError> {
        loop {
            let (sending, failed) = self.profile.pending(ids).await?;
            if failed > 0 {
                return Err(ClientError::Undelivered(self.options.retry_window));
            }
            if sending == 0 {
                return Ok(());
            }
            let next = self.profile.next_due().await?.unwrap_or_else(now_ms);
            let wait = next.saturating_sub(now_ms());
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            self.flush().await?;
        }
    }

    /// Fetches everything waiting at the relay, page by page, processes
    /// it, and acknowledges each page once it is stored. Sends what the
    /// outbox holds first. Returns what happened, each sender's messages
    /// in its counter order.
    pub async fn sync(&mut self) -> Result<Vec<Event>, ClientError> {
        self.sync_up_to(usize::MAX).await
    }

    /// [`Self::sync`], but stops after storing `max` envelopes, before
    /// acknowledging the page they came in: they come again next time
    /// (and are recognised), as after a crash between storing and
    /// acknowledging.
    pub async fn sync_up_to(&mut self, max: usize) -> Result<Vec<Event>, ClientError> {
        let result = self.sync_pages(max).await;
        if result.is_err() {
            // A failed exchange may have left the connection unusable.
            self.inbox = None;
        }
        result
    }

    async fn sync_pages(&mut self, max: usize) -> Result<Vec<Event>, ClientError> {
        let mut events = self.flush().await.unwrap_or_default();
        // Pushes handled before are acknowledged first.
        self.acknowledge().await?;
        let mut after = 0u64;
        let mut stored = 0usize;
        'pages: loop {
            // Asking for the page after `after` acknowledges everything
            // up to it: what the last page brought is synced first.
            if after > 0 {
                self.profile.sync().await?;
            }
            let page = self.inbox().await?.fetch_page(after).await?;
            if page.envelopes.is_empty() {
                break;
            }
            for envelope in page.envelopes {
                if stored == max {
                    break 'pages;
                }
                after = after.max(envelope.seq);
                events.extend(self.receive(envelope).await?);
                stored += 1;
            }
        }
        // Shown only once it is on the disk, so a power cut cannot make
        // the relay's copy come back to be shown twice.
        if stored > 0 {
            self.profile.sync().await?;
        }
        events.extend(self.send_receipts().await?);
        order_events(&mut events);
        Ok(events)
    }

    /// Waits for the next envelope pushed on the authenticated
    /// connection (live after [`Self::sync`]); `None` once the connection
    /// is gone. Cancel-safe: an envelope is never half taken.
    pub async fn wait_push(&mut self) -> Option<proto::Envelope> {
        let envelope = self.inbox.as_mut()?.next_push().await;
        if envelope.is_none() {
            self.inbox = None;
        }
        envelope
    }

    /// Processes a pushed envelope and returns what happened as soon as
    /// it is committed (it survives the process from then on). The
    /// relay is told to delete it by [`Self::acknowledge`] (which
    /// [`Self::send_receipts`] calls), once it is also on the disk: until
    /// then the relay keeps its copy, so not even a power cut loses it.
    pub async fn handle_push(
        &mut self,
        envelope: proto::Envelope,
    ) -> Result<Vec<Event>, ClientError> {
        let seq = envelope.seq;
        let events = self.receive(envelope).await?;
        self.unacked.push(seq);
        Ok(events)
    }

    /// Syncs what [`Self::handle_push`] stored to the disk (one flush for
    /// all of it), then acknowledges it to the relay without waiting for
    /// the answer: a lost acknowledgement means the envelope comes again
    /// and is recognised.
    pub async fn acknowledge(&mut self) -> Result<(), ClientError> {
        if self.unacked.is_empty() {
            return Ok(());
        }
        self.profile.sync().await?;
        let seqs = std::mem::take(&mut self.unacked);
        if let Some(inbox) = self.inbox.as_ref() {
            let _ = inbox
                .start(hush_proto::relay::client_frame::Request::Ack(proto::Ack {
                    seqs,
                }))
                .await;
        }
        Ok(())
    }

    /// Acknowledges what was pushed ([`Self::acknowledge`]), sends a
    /// delivery receipt to every sender of messages stored since the last
    /// call (one per sender), then flushes the outbox.
    pub async fn send_receipts(&mut self) -> Result<Vec<Event>, ClientError> {
        self.acknowledge().await?;
        let by_contact = std::mem::take(&mut self.receipts);
        for (name, ids) in by_contact {
            let Ok(contact) = self.contact(&name).await else {
                continue;
            };
            if contact.changed {
                continue;
            }
            for chunk in ids.chunks(crate::content::MAX_RECEIPT_IDS) {
                self.queue(
                    &contact,
                    Body::Receipt(ReceiptKind::Delivered, chunk.to_vec()),
                )
                .await?;
            }
        }
        self.flush().await
    }

    /// Opens, decrypts and stores one envelope; the caller acks it. An
    /// envelope that cannot be opened or decrypted (forged, damaged, a
    /// replay) is logged and dropped: nothing can ever read it.
    async fn receive(&mut self, envelope: proto::Envelope) -> Result<Vec<Event>, ClientError> {
        let seq = envelope.seq;
        let opened = (|| {
            let body = SealedBody::try_from(envelope.body.as_slice()).ok()?;
            let slot: [u8; 48] = envelope.slot.as_slice().try_into().ok()?;
            SealedEnvelope { body, slot }
                .open_with(&mut self.agreements, &self.identity)
                .ok()
        })();
        let Some(opened) = opened else {
            tracing::warn!(seq, "dropped an envelope that does not open");
            return Ok(Vec::new());
        };
        let message = match opened.content_type {
            ContentType::PreKey => PreKeyMessage::try_from(opened.content.as_slice())
                .map(|m| SessionMessage::PreKey(Box::new(m)))
                .ok(),
            ContentType::Ratchet => RatchetMessage::try_from(opened.content.as_slice())
                .map(SessionMessage::Ratchet)
                .ok(),
            ContentType::SenderKey => {
                return self
                    .receive_group(&opened.sender, &opened.content, seq)
                    .await;
            }
        };
        let Some(message) = message else {
            tracing::warn!(seq, "dropped an envelope whose message does not parse");
            return Ok(Vec::new());
        };
        // The envelope authenticates its sender; a prekey message inside
        // must be that sender's own (`spec/envelope.md`, "Binding the
        // content to the sender"), or a session with one identity would
        // be filed under another's contact.
        if let SessionMessage::PreKey(pre) = &message
            && pre.identity != opened.sender
        {
            tracing::warn!(
                seq,
                "dropped a prekey message of another identity than its sender"
            );
            return Ok(Vec::new());
        }

        // A sender with no contact yet gets one only if its message opens.
        let known = self.contact_by_identity(&opened.sender).await?;
        let mut conversation = match &known {
            Some(c) => self.take_conversation(c.id).await?,
            None => Conversation::default(),
        };
        let mut used_one_time = None;
        let device = *opened.sender.as_bytes();
        let sessions = conversation.devices.entry(device).or_default();
        let plaintext = match &message {
            SessionMessage::PreKey(pre) if !sessions.has_base_key(&pre.base_key) => {
                let one_time = match pre.extra {
                    Some(PreKeyRef::OneTime(id)) => vec![id],
                    _ => Vec::new(),
                };
                let prekeys = self.prekeys(Some(&one_time)).await?;
                match Session::respond(&self.identity, &prekeys, pre) {
                    Ok((new, plaintext)) => {
                        used_one_time = one_time.first().copied();
                        sessions.put_first(new);
                        Ok(plaintext)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            _ => sessions.decrypt(&message),
        };
        let plaintext = match plaintext {
            Ok(p) => Zeroizing::new(p),
            Err(e) => {
                // Nothing changed: the conversation goes back as it was.
                if let Some(c) = &known {
                    self.put_conversation(c.id, conversation);
                }
                tracing::warn!(seq, error = %e, "dropped an envelope that does not decrypt");
                return Ok(Vec::new());
            }
        };
        let contact = match known {
            Some(c) => c,
            None => self.contact_for(&opened.sender).await?,
        };
        let content = match Content::try_from(plaintext.as_slice()) {
            Ok(content) => Some(content),
            Err(e) => {
                tracing::warn!(seq, error = %e, "dropped a message whose content does not parse");
                None
            }
        };
        let session = sessions.to_bytes();
        let stage_session = |client: &mut Self, writes: &mut Writes| {
            client
                .profile
                .stage_session(&mut client.rng, writes, contact.id, &device, &session);
            if let Some(id) = used_one_time {
                Profile::stage_delete_prekey(writes, PrekeyKind::OneTime, id);
            }
        };
        let work = match &content {
            Some(c) => {
                self.group_work(&opened.sender, &contact.name, &c.body)
                    .await?
            }
            None => groups::GroupWork::default(),
        };
        let mut writes = Writes::default();
        stage_session(self, &mut writes);
        if let Some(content) = &content {
            Profile::stage_seen(&mut writes, &content.id);
            self.stage_content(&mut writes, &contact, content, seq);
            work.stage(self, &mut writes);
        }
        // Synced to the disk before the relay is told (`acknowledge`).
        let (mut events, work) = match self.profile.write_unsynced(writes).await {
            Ok(rows) => {
                let mut events = match content {
                    Some(content) => Self::applied(&contact, content, seq, &rows)?,
                    None => Vec::new(),
                };
                events.extend(work.event());
                (events, Some(work))
            }
            Err(ProfileError::Duplicate) => {
                // Seen before: only the session moves on.
                let mut writes = Writes::default();
                stage_session(self, &mut writes);
                self.profile.write_unsynced(writes).await?;
                (Vec::new(), None)
            }
            Err(e) => return Err(e.into()),
        };
        self.put_conversation(contact.id, conversation);
        // Stored: the senders may now be told.
        for event in &events {
            if let Event::Message(m) = event {
                self.receipts.entry(m.from.clone()).or_default().push(m.id);
            }
        }
        if let Some(work) = work {
            // Group messages opened now record their own receipts.
            events.extend(self.group_follow_up(work).await?);
        }
        Ok(events)
    }

    /// Stages what new content from `contact` changes.
    fn stage_content(
        &mut self,
        writes: &mut Writes,
        contact: &Contact,
        content: &Content,
        seq: u64,
    ) {
        match &content.body {
            Body::Text(text) => {
                let message = StoredMessage {
                    id: content.id,
                    contact: contact.id,
                    outgoing: false,
                    counter: content.counter,
                    sent_at_ms: content.sent_at_ms,
                    text: text.clone(),
                    status: Status::Sent,
                    recalled: false,
                    group: None,
                };
                self.profile
                    .stage_messages(&mut self.rng, writes, &[(&message, Some(seq))]);
            }
            Body::Receipt(kind, ids) => {
                let status = match kind {
                    ReceiptKind::Delivered => Status::Delivered,
                    ReceiptKind::Read => Status::Read,
                };
                Profile::stage_receipt(writes, contact.id, ids, status);
            }
            Body::Typing(_) => {}
            Body::Recall(id) => {
                self.profile
                    .stage_recall(&mut self.rng, writes, contact.id, id, false);
            }
            // Worked out by `group_work`, staged with its result.
            Body::GroupUpdate(_) | Body::SenderKey(_) | Body::SenderKeyRequest(_) => {}
        }
    }

    /// The events of content from `contact` once stored; `rows` are what
    /// its statements returned (the ids that changed).
    fn applied(
        contact: &Contact,
        content: Content,
        seq: u64,
        rows: &[sqlx::sqlite::SqliteRow],
    ) -> Result<Vec<Event>, ClientError> {
        use sqlx::Row;
        let changed = || -> Result<Vec<MessageId>, ClientError> {
            rows.iter()
                .map(|r| {
                    let id: Vec<u8> = r.try_get(0).map_err(ProfileError::from)?;
                    MessageId::try_from(id.as_slice())
                        .map_err(|_| ProfileError::Damaged("message id".into()).into())
                })
                .collect()
        };
        Ok(match content.body {
            Body::Text(text) => vec![Event::Message(Received {
                from: contact.name.clone(),
                address: contact.address().to_string(),
                id: content.id,
                text,
                sent_at_ms: content.sent_at_ms,
                counter: content.counter,
                seq,
                group: None,
            })],
            Body::Receipt(kind, _) => {
                let status = match kind {
                    ReceiptKind::Delivered => Status::Delivered,
                    ReceiptKind::Read => Status::Read,
                };
                changed()?
                    .into_iter()
                    .map(|id| Event::Status {
                        contact: contact.name.clone(),
                        id,
                        status,
                    })
                    .collect()
            }
            Body::Typing(typing) => vec![Event::Typing {
                contact: contact.name.clone(),
                typing,
            }],
            Body::Recall(id) => {
                if changed()?.is_empty() {
                    Vec::new()
                } else {
                    vec![Event::Recalled {
                        contact: contact.name.clone(),
                        id,
                    }]
                }
            }
            // Their events come from `group_work`.
            Body::GroupUpdate(_) | Body::SenderKey(_) | Body::SenderKeyRequest(_) => Vec::new(),
        })
    }
}

/// Orders the messages among `events` by sender counter within each
/// sender, keeping everything else where it is.
fn order_events(events: &mut [Event]) {
    let mut by_sender: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Event::Message(m) = e {
            by_sender.entry(m.from.clone()).or_default().push(i);
        }
    }
    for slots in by_sender.values() {
        let mut messages: Vec<Event> = slots.iter().map(|i| events[*i].clone()).collect();
        messages.sort_by_key(|e| match e {
            Event::Message(m) => m.counter,
            _ => 0,
        });
        for (slot, message) in slots.iter().zip(messages) {
            events[*slot] = message;
        }
    }
}
