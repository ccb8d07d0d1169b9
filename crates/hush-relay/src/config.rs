//! Relay configuration (`spec/relay.md`, "Configuration"): defaults,
//! overridden by a TOML file, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::relay::Limits;
use crate::store::QueueLimits;

/// A configuration problem, reported to the operator.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The complete configuration. Every field has a default
/// ([`Config::default`]); the TOML file uses the same names.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP address to serve QUIC on.
    pub listen: SocketAddr,
    /// Directory for the SQLite database, TLS key and certificate.
    pub data: PathBuf,
    /// `postgres://...` to use PostgreSQL instead of SQLite.
    pub database: Option<String>,
    /// Address for Prometheus metrics over HTTP; off when absent.
    pub metrics: Option<SocketAddr>,
    /// Operator-supplied PEM certificate chain (else self-signed, in `data`).
    pub tls_cert: Option<PathBuf>,
    /// Operator-supplied PEM private key.
    pub tls_key: Option<PathBuf>,
    /// QUIC keep-alive interval, seconds.
    pub keep_alive_secs: u64,
    /// QUIC idle timeout, seconds: a silent connection is closed after it.
    pub idle_timeout_secs: u64,
    /// Most connections at once (including handshakes); more are refused.
    pub max_connections: usize,
    /// Concurrent bidirectional streams a client may open. The protocol
    /// uses one; the relay serves only the first.
    pub max_streams: u32,
    /// Requested UDP socket buffer size (send and receive), bytes.
    pub udp_buffer_bytes: usize,
    /// How often expired envelopes are swept, seconds.
    pub sweep_interval_secs: u64,
    /// Largest sealed body, bytes.
    pub max_body_bytes: usize,
    /// Most recipients in one send.
    pub max_recipients: usize,
    /// Most envelopes waiting in one device queue.
    pub queue_max_envelopes: u64,
    /// Most bytes waiting in one device queue.
    pub queue_max_bytes: u64,
    /// Days an envelope waits before it is swept.
    pub expiry_days: u64,
    /// Seconds an envelope waits before it is swept; when set, overrides
    /// `expiry_days` (for short-lived relays and tests).
    pub expiry_secs: Option<u64>,
    /// Most envelopes per page.
    pub page_size: u32,
    /// Bundle fetches: burst per connection and per target device.
    pub bundle_burst: u32,
    /// Bundle fetches: seconds per refilled token.
    pub bundle_refill_secs: u64,
    /// Sends: burst per connection.
    pub send_burst: u32,
    /// Sends: microseconds per refilled token.
    pub send_refill_micros: u64,
    /// SQLite store: most message ids remembered for idempotent resends
    /// (each costs about 40 bytes of memory).
    pub sqlite_max_message_ids: usize,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data: PathBuf::from("hush-relay-data"),
            database: None,
            metrics: None,
            tls_cert: None,
            tls_key: None,
            keep_alive_secs: 15,
            idle_timeout_secs: 60,
            max_connections: 50_000,
            max_streams: 1,
            udp_buffer_bytes: 8 << 20,
            sweep_interval_secs: 60,
            max_body_bytes: limits.max_body,
            max_recipients: limits.max_recipients,
            queue_max_envelopes: limits.queue.max_envelopes,
            queue_max_bytes: limits.queue.max_bytes,
            expiry_days: limits.expiry.as_secs() / 86_400,
            expiry_secs: None,
            page_size: limits.page_size,
            bundle_burst: limits.bundle_burst,
            bundle_refill_secs: limits.bundle_refill.as_secs(),
            send_burst: limits.send_burst,
            send_refill_micros: u64::try_from(limits.send_refill.as_micros()).unwrap_or(u64::MAX),
            sqlite_max_message_ids: crate::store::sqlite::DEFAULT_MAX_MESSAGE_IDS,
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_string()));
        if self.keep_alive_secs == 0 || self.keep_alive_secs >= self.idle_timeout_secs {
            return bad("keep_alive_secs must be at least 1 and below idle_timeout_secs");
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.max_streams != 1 {
            return bad("max_streams must be 1 (the protocol uses one stream per connection)");
        }
        if self.sweep_interval_secs == 0 {
            return bad("sweep_interval_secs must be at least 1");
        }
        if self.max_recipients > 2_000 {
            return bad("max_recipients must be 1 to 2000 (a send must fit in one frame)");
        }
        if !(1..=86_400).contains(&self.bundle_refill_secs) {
            return bad("bundle_refill_secs must be 1 to 86400");
        }
        if !(1..=60_000_000).contains(&self.send_refill_micros) {
            return bad("send_refill_micros must be 1 to 60000000");
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > 128 * 1024 {
            return bad("max_body_bytes must be 1 to 131072");
        }
        if self.page_size > 4_096 {
            return bad("page_size must be 1 to 4096 (a page must fit in one frame)");
        }
        if self.max_recipients == 0 || self.page_size == 0 || self.expiry_days == 0 {
            return bad("max_recipients, page_size and expiry_days must be at least 1");
        }
        if self.expiry_secs == Some(0) {
            return bad("expiry_secs must be at least 1");
        }
        if self.bundle_burst == 0 || self.send_burst == 0 {
            return bad("bundle_burst and send_burst must be at least 1");
        }
        if self.sqlite_max_message_ids == 0 {
            return bad("sqlite_max_message_ids must be at least 1");
        }
        if let Some(url) = &self.database
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return bad(
                "database must be a postgres:// or postgresql:// URL (omit it for the embedded SQLite store)",
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together");
        }
        Ok(())
    }

    /// The SQLite store's options.
    pub fn sqlite(&self) -> crate::store::sqlite::SqliteOptions {
        crate::store::sqlite::SqliteOptions {
            max_message_ids: self.sqlite_max_message_ids,
        }
    }

    /// The relay limits this configuration sets.
    pub fn limits(&self) -> Limits {
        Limits {
            max_body: self.max_body_bytes,
            max_recipients: self.max_recipients,
            queue: QueueLimits {
                max_envelopes: self.queue_max_envelopes,
                max_bytes: self.queue_max_bytes,
            },
            expiry: Duration::from_secs(
                self.expiry_secs
                    .unwrap_or_else(|| self.expiry_days.saturating_mul(86_400)),
            ),
            page_size: self.page_size,
            max_one_time_prekeys: 100,
            bundle_burst: self.bundle_burst,
            bundle_refill: Duration::from_secs(self.bundle_refill_secs),
            send_burst: self.send_burst,
            send_refill: Duration::from_micros(self.send_refill_micros),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("hush-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("relay.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:5000\"\nexpiry_days = 7\n").expect("writes");
        let config = Config::from_file(&path).expect("parses");
        assert_eq!(config.listen.port(), 5000);
        assert_eq!(config.limits().expiry, Duration::from_secs(7 * 86_400));
        assert_eq!(config.keep_alive_secs, 15);
        std::fs::write(&path, "lisen = \"0.0.0.0:5000\"\n").expect("writes");
        let err = Config::from_file(&path).expect_err("unknown key");
        assert!(err.to_string().contains("lisen"), "{err}");
        std::fs::write(&path, "keep_alive_secs = 90\n").expect("writes");
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Invalid(_))
        ));
        assert!(Config::from_file(&dir.join("missing.toml")).is_err());
    }
}
