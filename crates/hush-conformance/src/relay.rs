//! Relay conformance (`spec/conformance-relay.md`): a scripted session
//! against a running relay that checks the requests, answers, pushes,
//! error codes and limits of `spec/relay.md`.
//!
//! ```text
//! hush-conformance relay ADDR --pin FP [--json] [--timeout SECS] [--limit KEY=VALUE]... [--only PREFIX]...
//! ```
//!
//! Every check talks to the relay over QUIC with frames built and parsed
//! here from `proto/relay.proto` ([`net`]), with fresh random identities,
//! so it can run again and again against the same relay. One line per
//! check (`pass NAME`, `FAIL NAME: expected ..., got ...`, `skip NAME:
//! why`), then a summary; any FAIL makes the exit status non-zero.

mod auth;
mod devices;
mod limits;
mod net;
mod queue;
mod session;
mod transport;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use net::Target;
use session::Session;

/// The relay's limits as documented in `spec/relay.md` ("Limits",
/// "Rate limits", "Configuration"), or as the operator says its relay is
/// configured (`--limit KEY=VALUE`, with the relay's TOML key names). The
/// relay does not announce them, so checks that need one use these.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// `max_body_bytes`: the largest `Send.body`.
    pub(crate) max_body_bytes: usize,
    /// `max_recipients`: most recipients in one `Send`.
    pub(crate) max_recipients: usize,
    /// `queue_max_envelopes`: most envelopes waiting in one queue.
    pub(crate) queue_max_envelopes: u64,
    /// `queue_max_bytes`: most `len(body) + 48` bytes waiting in one queue.
    pub(crate) queue_max_bytes: u64,
    /// `expiry_secs`, or `expiry_days` × 86,400: an envelope's lifetime.
    pub(crate) expiry_secs: u64,
    /// `sweep_interval_secs`: time between expiry sweeps.
    pub(crate) sweep_interval: Duration,
    /// `page_size`: most envelopes per page.
    pub(crate) page_size: u32,
    /// `bundle_burst`: bundle fetches per connection and per target.
    pub(crate) bundle_burst: u32,
    /// `bundle_refill_secs`: one bundle-fetch token back per this.
    pub(crate) bundle_refill: Duration,
    /// `send_burst`: sends per connection.
    pub(crate) send_burst: u32,
    /// `send_refill_micros`: one send token back per this.
    pub(crate) send_refill: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 65_536,
            max_recipients: 1_000,
            queue_max_envelopes: 100_000,
            queue_max_bytes: 1 << 30,
            expiry_secs: 30 * 86_400,
            sweep_interval: Duration::from_secs(60),
            page_size: 512,
            bundle_burst: 50,
            bundle_refill: Duration::from_secs(6),
            send_burst: 10_000,
            send_refill: Duration::from_micros(20),
        }
    }
}

impl Limits {
    /// Applies `--limit KEY=VALUE` settings (`expiry_secs` wins over
    /// `expiry_days`, as in the relay's configuration).
    fn set_all(&mut self, settings: &[(String, u64)]) -> Result<()> {
        let mut expiry_secs = None;
        for (key, value) in settings {
            let value = *value;
            if value == 0 {
                bail!("--limit {key}: must be at least 1");
            }
            let small =
                || u32::try_from(value).with_context(|| format!("--limit {key}: too large"));
            match key.as_str() {
                "max_body_bytes" => self.max_body_bytes = usize::try_from(value)?,
                "max_recipients" => self.max_recipients = usize::try_from(value)?,
                "queue_max_envelopes" => self.queue_max_envelopes = value,
                "queue_max_bytes" => self.queue_max_bytes = value,
                "expiry_days" => {
                    self.expiry_secs = value
                        .checked_mul(86_400)
                        .ok_or_else(|| anyhow!("--limit expiry_days: too large"))?;
                }
                "expiry_secs" => expiry_secs = Some(value),
                "sweep_interval_secs" => self.sweep_interval = Duration::from_secs(value),
                "page_size" => self.page_size = small()?,
                "bundle_burst" => self.bundle_burst = small()?,
                "bundle_refill_secs" => self.bundle_refill = Duration::from_secs(value),
                "send_burst" => self.send_burst = small()?,
                "send_refill_micros" => self.send_refill = Duration::from_micros(value),
                other => bail!("--limit {other}: not a limit this checker knows"),
            }
        }
        if let Some(secs) = expiry_secs {
            self.expiry_secs = secs;
        }
        Ok(())
    }
}

/// The command line.
struct Options {
    addr: String,
    pin: [u8; 32],
    json: bool,
    timeout: Duration,
    limits: Limits,
    only: Vec<String>,
}

const USAGE: &str = "usage: hush-conformance relay ADDR --pin FP [--json] [--timeout SECS] [--limit KEY=VALUE]... [--only PREFIX]...";

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut addr = None;
        let mut pin = None;
        let mut json = false;
        let mut timeout = Duration::from_secs(10);
        let mut settings = Vec::new();
        let mut only = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| anyhow!("{arg} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--pin" => {
                    let bytes = hex::decode(value()?.trim())
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok());
                    pin = Some(bytes.ok_or_else(|| anyhow!("--pin: 64 hex digits"))?);
                }
                "--json" => json = true,
                "--timeout" => {
                    let secs: f64 = value()?.parse().context("--timeout: seconds")?;
                    timeout = Duration::try_from_secs_f64(secs)
                        .ok()
                        .filter(|t| !t.is_zero())
                        .ok_or_else(|| anyhow!("--timeout: a positive number of seconds"))?;
                }
                "--limit" => {
                    let setting = value()?;
                    let (key, number) = setting
                        .split_once('=')
                        .ok_or_else(|| anyhow!("--limit KEY=VALUE, got {setting}"))?;
                    let number = number
                        .parse()
                        .with_context(|| format!("--limit {key}: a whole number"))?;
                    settings.push((key.to_string(), number));
                }
                "--only" => only.push(value()?.clone()),
                "-h" | "--help" => bail!("{USAGE}"),
                flag if flag.starts_with('-') => bail!("unknown option {flag}\n{USAGE}"),
                _ if addr.is_none() => addr = Some(arg.clone()),
                other => bail!("unexpected argument {other}\n{USAGE}"),
            }
        }
        let mut limits = Limits::default();
        limits.set_all(&settings)?;
        Ok(Self {
            addr: addr.ok_or_else(|| anyhow!("{USAGE}"))?,
            pin: pin.ok_or_else(|| anyhow!("--pin is required\n{USAGE}"))?,
            json,
            timeout,
            limits,
            only,
        })
    }
}

/// Runs `hush-conformance relay ...`.
pub(crate) fn main(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let failed = runtime.block_on(run(options))?;
    // A misbehaving relay may leave reads pending: do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match failed {
        0 => Ok(()),
        n => bail!("{n} relay check(s) failed"),
    }
}

/// Runs one check under an overall time limit (every network wait has its
/// own timeout already; this bounds a check as a whole).
macro_rules! check {
    ($s:ident, $name:literal, $check:path) => {{
        if $s.selected($name) {
            let limit = $s.check_limit();
            let outcome = match tokio::time::timeout(limit, $check(&mut $s)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow!(
                    "expected the check to finish within {limit:?}, got no end"
                )),
            };
            $s.record($name, outcome)
        } else {
            false
        }
    }};
}

/// The session: every check in turn. Returns how many failed.
async fn run(options: Options) -> Result<usize> {
    let addr: SocketAddr = tokio::net::lookup_host(&options.addr)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| anyhow!("cannot resolve {}", options.addr))?;
    let target = Target::new(addr, options.pin, options.timeout)?;
    let mut s = Session::new(target, options.limits, options.json, options.only);

    // Nothing else can run without a connection.
    if check!(s, "transport.handshake", transport::handshake) {
        check!(s, "transport.alpn", transport::alpn);
        check!(s, "transport.server_name", transport::server_name);
        check!(s, "transport.streams", transport::streams);
        check!(s, "framing.request_ids", transport::request_ids);
        check!(s, "framing.unknown_fields", transport::unknown_fields);
        check!(s, "framing.empty_request", transport::empty_request);
        check!(s, "framing.unknown_request", transport::unknown_request);
        check!(s, "framing.zero_length", transport::zero_length);
        check!(s, "framing.request_id_zero", transport::request_id_zero);
        check!(s, "framing.max_frame", transport::max_frame);
        check!(s, "framing.oversized", transport::oversized);
        check!(s, "framing.malformed", transport::malformed);
        check!(s, "framing.truncated", transport::truncated);
        check!(s, "closing.clean_end", transport::clean_end);

        check!(s, "auth.required", auth::required);
        check!(s, "auth.fresh_device", auth::fresh_device);
        check!(s, "auth.field_rules", auth::field_rules);
        check!(s, "auth.invalid_key", auth::invalid_key);
        check!(s, "auth.bad_signature", auth::bad_signature);
        check!(s, "auth.replay", auth::replay);
        check!(s, "auth.other_device", auth::other_device);
        check!(s, "auth.again", auth::again);

        check!(s, "prekeys.register", auth::register);
        check!(s, "prekeys.count_unregistered", auth::count_unregistered);
        check!(s, "prekeys.too_many", auth::too_many);
        check!(s, "prekeys.field_rules", auth::prekey_field_rules);
        check!(s, "prekeys.bad_signature", auth::prekey_bad_signature);
        check!(s, "prekeys.keep_stock", auth::keep_stock);
        check!(s, "prekeys.replace_stock", auth::replace_stock);

        check!(s, "bundle.one_time", auth::bundle_one_time);
        check!(s, "bundle.last_resort", auth::bundle_last_resort);
        check!(s, "bundle.unknown_device", auth::bundle_unknown_device);
        check!(s, "bundle.field_rules", auth::bundle_field_rules);

        check!(s, "send.anonymous", queue::anonymous);
        check!(s, "send.duplicate", queue::duplicate);
        check!(s, "send.multi_recipient", queue::multi_recipient);
        check!(s, "send.empty_body", queue::empty_body);
        check!(s, "send.body_limit", queue::body_limit);
        check!(s, "send.field_rules", queue::send_field_rules);
        check!(s, "send.max_recipients", queue::max_recipients);
        check!(s, "send.unknown_recipient", queue::unknown_recipient);

        check!(s, "queue.backlog", queue::backlog_pages);
        check!(s, "queue.sequence", queue::sequence);
        check!(s, "queue.envelope", queue::envelope);
        check!(s, "queue.after_seq", queue::after_seq);
        check!(s, "queue.unregistered", queue::unregistered);
        check!(s, "queue.seq_not_reused", queue::seq_not_reused);
        check!(s, "queue.expiry", queue::expiry);

        check!(s, "push.live", queue::push_live);
        check!(s, "push.not_live", queue::push_not_live);
        check!(s, "push.order", queue::push_order);
        check!(s, "ack.delete", queue::ack_delete);
        check!(s, "ack.redelivery", queue::ack_redelivery);
        check!(s, "ack.limit", queue::ack_limit);
        check!(s, "takeover", queue::takeover);

        check!(s, "devices.publish", devices::publish_and_fetch);
        check!(s, "devices.refused", devices::refused);
        check!(s, "devices.stale", devices::stale);
        check!(s, "devices.revoke", devices::revoke);
        check!(s, "devices.unregister", devices::unregister);

        check!(s, "limits.page_size", limits::page_size);
        check!(s, "limits.page_bytes", limits::page_bytes);
        check!(s, "limits.quota_envelopes", limits::quota_envelopes);
        check!(s, "limits.quota_bytes", limits::quota_bytes);
        check!(s, "rate.bundle_connection", limits::bundle_connection);
        check!(s, "rate.bundle_target", limits::bundle_target);
        check!(s, "rate.send", limits::send_rate);
    }
    s.target.close().await;
    Ok(s.finish())
}
