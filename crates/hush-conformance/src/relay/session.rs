//! What the checks share: the session (target, limits, report), fresh
//! random devices and prekeys, request builders, and readers of answers
//! that say what was expected and what came.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use hush_crypto::IdentityKeyPair;
use hush_proto::relay as proto;
use hush_proto::wire;
use proto::ErrorCode;
use proto::client_frame::Request;
use proto::relay_frame::Body;

use super::Limits;
use super::net::{Conn, Target};

/// How a check ended when it did not fail.
pub(crate) enum Verdict {
    /// Everything checked held.
    Pass,
    /// Not checked, and why.
    Skip(String),
}

/// A check's result: an error is a FAIL whose text says what was
/// expected and what came.
pub(crate) type Outcome = Result<Verdict>;

/// How long a check waits to be sure that something (a push) does not
/// come.
const QUIET: Duration = Duration::from_millis(500);

/// Length of a recipient's key slot.
pub(crate) const SLOT: usize = 48;

/// Prints one line of the report. A closed stdout is not the relay's
/// fault: the checks go on and the exit status still tells.
fn emit(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// The scripted session against one relay.
pub(crate) struct Session {
    /// The relay.
    pub(crate) target: Target,
    /// Its limits, as documented or as told.
    pub(crate) limits: Limits,
    json: bool,
    /// Name prefixes of the checks to run; all when empty.
    only: Vec<String>,
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Session {
    /// A session reporting as text, or as JSON lines with `json`, running
    /// the checks whose names start with one of `only` (all when empty).
    pub(crate) fn new(target: Target, limits: Limits, json: bool, only: Vec<String>) -> Self {
        Self {
            target,
            limits,
            json,
            only,
            passed: 0,
            failed: 0,
            skipped: 0,
        }
    }

    /// Whether the check `name` is to run (`transport.handshake`, which
    /// every other check needs, always is).
    pub(crate) fn selected(&self, name: &str) -> bool {
        name == "transport.handshake"
            || self.only.is_empty()
            || self
                .only
                .iter()
                .any(|prefix| name.starts_with(prefix.as_str()))
    }

    /// The longest a whole check may take.
    pub(crate) fn check_limit(&self) -> Duration {
        self.target.timeout * 30
    }

    /// How long to wait to be sure that nothing comes.
    pub(crate) fn quiet(&self) -> Duration {
        QUIET.min(self.target.timeout)
    }

    /// Prints a check's result; returns whether it passed.
    pub(crate) fn record(&mut self, name: &str, outcome: Outcome) -> bool {
        let (result, detail) = match &outcome {
            Ok(Verdict::Pass) => {
                self.passed += 1;
                ("pass", None)
            }
            Ok(Verdict::Skip(why)) => {
                self.skipped += 1;
                ("skip", Some(why.clone()))
            }
            Err(e) => {
                self.failed += 1;
                ("fail", Some(format!("{e:#}")))
            }
        };
        if self.json {
            let mut line = serde_json::json!({ "check": name, "result": result });
            if let Some(detail) = detail {
                line["detail"] = detail.into();
            }
            emit(&line.to_string());
        } else {
            let result = if result == "fail" { "FAIL" } else { result };
            match detail {
                Some(detail) => emit(&format!("{result} {name}: {detail}")),
                None => emit(&format!("{result} {name}")),
            }
        }
        matches!(outcome, Ok(Verdict::Pass))
    }

    /// Prints the summary; returns how many checks failed.
    pub(crate) fn finish(&self) -> usize {
        if self.json {
            let summary = serde_json::json!({ "summary": {
                "pass": self.passed, "fail": self.failed, "skip": self.skipped,
            }});
            emit(&summary.to_string());
        } else {
            emit(&format!(
                "summary: {} pass, {} FAIL, {} skip",
                self.passed, self.failed, self.skipped
            ));
        }
        self.failed
    }

    /// A new connection.
    pub(crate) async fn connect(&self) -> Result<Conn> {
        self.target.connect().await
    }

    /// A new connection authenticated as `device`, and how many envelopes
    /// its `authenticated` answer says are queued.
    pub(crate) async fn login(&self, device: &Device) -> Result<(Conn, u64)> {
        let mut conn = self.connect().await?;
        let body = conn.authenticate(&device.identity).await?;
        let queued = authenticated(body).context("authenticating")?;
        Ok((conn, queued))
    }

    /// A new device, registered with one-time prekeys `one_time` over a
    /// connection that stays authenticated (and not live).
    pub(crate) async fn registered(&self, one_time: &[u32]) -> Result<Registered> {
        let device = Device::new()?;
        let (mut conn, _) = self.login(&device).await?;
        let upload = device.upload(one_time)?;
        let stock = registered(
            conn.request(Request::RegisterPrekeys(upload.clone()))
                .await?,
        )
        .context("registering prekeys")?;
        ensure!(
            stock as usize == one_time.len(),
            "expected a stock of {} after registering, got {stock}",
            one_time.len()
        );
        Ok(Registered {
            device,
            conn,
            upload,
        })
    }
}

/// Stores `sends` (each answered `sent`, not a duplicate), pipelined
/// over `conn`; sends refused `RATE_LIMITED` are sent again after the
/// time the relay asks for.
pub(crate) async fn send_all(conn: &mut Conn, sends: Vec<proto::Send>) -> Result<()> {
    let mut waiting = sends;
    while !waiting.is_empty() {
        let ids = conn
            .start_all(waiting.iter().cloned().map(Request::Send))
            .await?;
        let mut again = Vec::new();
        let mut pause = Duration::ZERO;
        for (id, send) in ids.into_iter().zip(waiting) {
            match conn.answer(id).await? {
                Body::Sent(s) if s.message_id == send.message_id && !s.duplicate => {}
                Body::Error(e) if e.code == ErrorCode::RateLimited as i32 => {
                    pause = pause.max(retry_after(&e.message)?);
                    again.push(send);
                }
                other => bail!("sending envelopes: expected sent, got {}", describe(&other)),
            }
        }
        tokio::time::sleep(pause).await;
        waiting = again;
    }
    Ok(())
}

/// A device registered by [`Session::registered`].
pub(crate) struct Registered {
    /// The device.
    pub(crate) device: Device,
    /// Its connection (authenticated, not live).
    pub(crate) conn: Conn,
    /// What it uploaded.
    pub(crate) upload: proto::RegisterPrekeys,
}

/// A device: a fresh random identity.
pub(crate) struct Device {
    /// Its identity key pair.
    pub(crate) identity: IdentityKeyPair,
    /// Its public key, the queue's name.
    pub(crate) key: Vec<u8>,
}

/// `x3dh.md`, "Prekeys": the signature kinds.
pub(crate) const KIND_SIGNED: u8 = 0x01;
/// The last-resort prekey's kind.
pub(crate) const KIND_LAST_RESORT: u8 = 0x02;

impl Device {
    /// A new random device.
    pub(crate) fn new() -> Result<Self> {
        let identity = IdentityKeyPair::from_seed(&random()?);
        let key = identity.public().as_bytes().to_vec();
        Ok(Self { identity, key })
    }

    /// A prekey of `kind` with id `id` and a random public key, signed
    /// over the 51-byte layout of `x3dh.md`: `"hush-prekey-v1" || kind ||
    /// u32be(id) || public`.
    pub(crate) fn signed_prekey(&self, kind: u8, id: u32) -> Result<wire::SignedPreKey> {
        let public: [u8; 32] = random()?;
        let mut signed = b"hush-prekey-v1".to_vec();
        signed.push(kind);
        signed.extend_from_slice(&id.to_be_bytes());
        signed.extend_from_slice(&public);
        Ok(wire::SignedPreKey {
            id,
            public_key: public.to_vec(),
            signature: self.identity.sign(&signed).to_vec(),
        })
    }

    /// A valid upload: a signed prekey (id 1), a last-resort prekey (id 2)
    /// and one-time prekeys with the ids `one_time`, all new and random.
    pub(crate) fn upload(&self, one_time: &[u32]) -> Result<proto::RegisterPrekeys> {
        Ok(proto::RegisterPrekeys {
            signed_prekey: Some(self.signed_prekey(KIND_SIGNED, 1)?),
            last_resort_prekey: Some(self.signed_prekey(KIND_LAST_RESORT, 2)?),
            one_time_prekeys: one_time
                .iter()
                .map(|&id| {
                    Ok(wire::OneTimePreKey {
                        id,
                        public_key: random::<32>()?.to_vec(),
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

/// `N` random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(bytes)
}

/// `n` random bytes.
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(bytes)
}

/// A random 32-byte key nobody registered.
pub(crate) fn unknown_key() -> Result<Vec<u8>> {
    Ok(random::<32>()?.to_vec())
}

/// An envelope to send: a random message id and slot per recipient.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    /// The `Send` request.
    pub(crate) send: proto::Send,
}

impl Outgoing {
    /// `body` to the devices `to`, each with a random slot.
    pub(crate) fn new(body: Vec<u8>, to: &[&[u8]]) -> Result<Self> {
        Ok(Self {
            send: proto::Send {
                message_id: random::<16>()?.to_vec(),
                body,
                recipients: to
                    .iter()
                    .map(|key| {
                        Ok(proto::Recipient {
                            device_key: key.to_vec(),
                            slot: random_bytes(SLOT)?,
                        })
                    })
                    .collect::<Result<_>>()?,
                expected: Vec::new(),
            },
        })
    }

    /// A random body of `len` bytes to `to`.
    pub(crate) fn random(len: usize, to: &[&[u8]]) -> Result<Self> {
        Self::new(random_bytes(len)?, to)
    }

    /// The request.
    pub(crate) fn request(&self) -> Request {
        Request::Send(self.send.clone())
    }

    /// The slot given to the `i`th recipient.
    pub(crate) fn slot(&self, i: usize) -> &[u8] {
        self.send
            .recipients
            .get(i)
            .map_or(&[][..], |r| r.slot.as_slice())
    }

    /// Sends it over `conn` and checks that it was stored (not a
    /// duplicate).
    pub(crate) async fn deliver(&self, conn: &mut Conn) -> Result<()> {
        sent(
            conn.request(self.request()).await?,
            &self.send.message_id,
            false,
        )
    }

    /// Checks that `envelope` is this one as the `i`th recipient gets it.
    pub(crate) fn matches(&self, envelope: &proto::Envelope, i: usize) -> Result<()> {
        ensure!(
            envelope.body == self.send.body,
            "expected envelope seq {} to carry the body sent ({} bytes), got {} other bytes",
            envelope.seq,
            self.send.body.len(),
            envelope.body.len()
        );
        ensure!(
            envelope.slot == self.slot(i),
            "expected envelope seq {} to carry this recipient's slot, got another ({} bytes)",
            envelope.seq,
            envelope.slot.len()
        );
        Ok(())
    }
}

/// A `FetchPage` request.
pub(crate) fn fetch_page(after_seq: u64, max_envelopes: u32) -> Request {
    Request::FetchPage(proto::FetchPage {
        after_seq,
        max_envelopes,
    })
}

/// A `FetchBundle` request.
pub(crate) fn fetch_bundle(device_key: &[u8]) -> Request {
    Request::FetchBundle(proto::FetchBundle {
        device_key: device_key.to_vec(),
    })
}

/// A `PrekeyCount` request.
pub(crate) fn prekey_count() -> Request {
    Request::PrekeyCount(proto::PrekeyCount {})
}

/// An `Ack` request.
pub(crate) fn ack(seqs: Vec<u64>) -> Request {
    Request::Ack(proto::Ack { seqs })
}

/// A short description of an answer, for messages.
pub(crate) fn describe(body: &Body) -> String {
    match body {
        Body::Error(e) => {
            let code = ErrorCode::try_from(e.code).map_or_else(
                |_| format!("code {}", e.code),
                |c| c.as_str_name().to_string(),
            );
            format!("error {code} ({:?})", e.message)
        }
        Body::Authenticated(a) => format!("authenticated (queued {})", a.queued),
        Body::Registered(r) => format!("registered ({} one-time prekeys)", r.one_time_prekeys),
        Body::Bundle(_) => "a bundle".into(),
        Body::PrekeyStock(s) => format!("prekey_stock ({})", s.one_time_prekeys),
        Body::Sent(s) => format!("sent (duplicate {})", s.duplicate),
        Body::Page(p) => format!(
            "a page of {} envelopes (queue_empty {})",
            p.envelopes.len(),
            p.queue_empty
        ),
        Body::Acked(a) => format!("acked ({} deleted)", a.deleted),
        Body::Deliver(e) => format!("a push (seq {})", e.seq),
        Body::Published(p) => format!(
            "published (version {}, {} revoked)",
            p.version,
            p.revoked.len()
        ),
        Body::Devices(d) => format!("devices ({} status entries)", d.status.len()),
        Body::Unregistered(u) => format!("unregistered ({} deleted)", u.deleted),
    }
}

fn unexpected(expected: &str, got: &Body) -> anyhow::Error {
    anyhow!("expected {expected}, got {}", describe(got))
}

/// The error of `code`, or why the answer is not it.
pub(crate) fn error(body: Body, code: ErrorCode) -> Result<proto::Error> {
    match body {
        Body::Error(e) if e.code == code as i32 => Ok(e),
        other => Err(unexpected(&format!("error {}", code.as_str_name()), &other)),
    }
}

/// `authenticated`: the queued count.
pub(crate) fn authenticated(body: Body) -> Result<u64> {
    match body {
        Body::Authenticated(a) => Ok(a.queued),
        other => Err(unexpected("authenticated", &other)),
    }
}

/// `registered`: the stock.
pub(crate) fn registered(body: Body) -> Result<u32> {
    match body {
        Body::Registered(r) => Ok(r.one_time_prekeys),
        other => Err(unexpected("registered", &other)),
    }
}

/// `prekey_stock`: the stock.
pub(crate) fn stock(body: Body) -> Result<u32> {
    match body {
        Body::PrekeyStock(s) => Ok(s.one_time_prekeys),
        other => Err(unexpected("prekey_stock", &other)),
    }
}

/// `bundle`: the bundle.
pub(crate) fn bundle(body: Body) -> Result<wire::PreKeyBundle> {
    match body {
        Body::Bundle(proto::Bundle { bundle: Some(b) }) => Ok(b),
        other => Err(unexpected("a bundle", &other)),
    }
}

/// `page`: the page, its envelopes checked to be in strictly increasing
/// `seq` order with 48-byte slots.
pub(crate) fn page(body: Body) -> Result<proto::Page> {
    match body {
        Body::Page(p) => {
            ensure!(
                p.envelopes.windows(2).all(|w| w[0].seq < w[1].seq),
                "expected a page in increasing seq order, got seqs {:?}",
                seqs(&p.envelopes)
            );
            ensure!(
                p.envelopes
                    .iter()
                    .all(|e| e.seq > 0 && e.slot.len() == SLOT),
                "expected envelopes with seq ≥ 1 and 48-byte slots, got another"
            );
            ensure!(
                !p.envelopes.is_empty() || p.queue_empty,
                "expected an empty page to have queue_empty, got queue_empty false"
            );
            Ok(p)
        }
        other => Err(unexpected("a page", &other)),
    }
}

/// `acked`: how many were deleted.
pub(crate) fn acked(body: Body) -> Result<u32> {
    match body {
        Body::Acked(a) => Ok(a.deleted),
        other => Err(unexpected("acked", &other)),
    }
}

/// Checks a `sent` answer echoing `message_id` with `duplicate`.
pub(crate) fn sent(body: Body, message_id: &[u8], duplicate: bool) -> Result<()> {
    match body {
        Body::Sent(s) if s.message_id == message_id && s.duplicate == duplicate => Ok(()),
        Body::Sent(s) if s.message_id != message_id => bail!(
            "expected sent echoing message_id {}, got message_id {}",
            hex::encode(message_id),
            hex::encode(&s.message_id)
        ),
        other => Err(unexpected(&format!("sent (duplicate {duplicate})"), &other)),
    }
}

/// The `seq`s of `envelopes`.
pub(crate) fn seqs(envelopes: &[proto::Envelope]) -> Vec<u64> {
    envelopes.iter().map(|e| e.seq).collect()
}

/// The wait a `RATE_LIMITED` message asks for: it contains `retry in N
/// ms`, `N` a decimal integer ≥ 1 (`spec/relay.md`, "Errors").
pub(crate) fn retry_after(message: &str) -> Result<Duration> {
    let millis = message
        .split_once("retry in ")
        .and_then(|(_, rest)| rest.split_once(" ms"))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            anyhow!("expected a RATE_LIMITED message containing \"retry in N ms\" (N ≥ 1), got {message:?}")
        })?;
    Ok(Duration::from_millis(millis))
}
