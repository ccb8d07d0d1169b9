//! Prometheus metrics (`spec/relay.md`, "Metrics"), served as text over
//! plain HTTP on a separate address, off unless configured. Nothing here
//! names a device or carries content.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::relay::Relay;
use crate::store::Store;

/// Histogram bucket upper bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// The metrics text for a relay.
pub async fn render<S: Store>(relay: &Relay<S>) -> String {
    let c = &relay.counters;
    let mut out = String::new();
    gauge(
        &mut out,
        "hush_relay_connections",
        "Open QUIC connections.",
        c.connections.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "hush_relay_devices_online",
        "Authenticated devices connected.",
        relay.online_devices() as u64,
    );
    counter(
        &mut out,
        "hush_relay_envelopes_in_total",
        "Envelopes stored (one per recipient queue).",
        c.envelopes_in.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hush_relay_envelopes_out_total",
        "Envelopes handed to devices (pages and pushes).",
        c.envelopes_out.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hush_relay_acks_total",
        "Envelopes deleted by recipient acks.",
        c.acks.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hush_relay_expired_total",
        "Envelopes removed by expiry.",
        c.expired.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hush_relay_quota_rejections_total",
        "Sends refused because a recipient queue was full.",
        c.quota_rejections.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hush_relay_stale_rejections_total",
        "Sends refused because the sender's device lists were stale.",
        c.stale_rejections.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hush_relay_revoked_devices_total",
        "Devices revoked by device lists published here.",
        c.revoked_devices.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hush_relay_rate_limited_total",
        "Requests refused by rate limits.",
        c.rate_limited.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hush_relay_refused_connections_total",
        "Connections refused at the max_connections cap.",
        c.refused_connections.load(Ordering::Relaxed),
    );
    match relay.store().stats().await {
        Ok(s) => {
            gauge(
                &mut out,
                "hush_relay_devices",
                "Registered devices.",
                s.devices,
            );
            gauge(
                &mut out,
                "hush_relay_queued_envelopes",
                "Envelopes waiting in all queues.",
                s.queued_envelopes,
            );
            gauge(
                &mut out,
                "hush_relay_queued_bytes",
                "Bytes waiting in all queues.",
                s.queued_bytes,
            );
            gauge(
                &mut out,
                "hush_relay_queue_depth_max",
                "Envelopes in the fullest queue.",
                s.deepest_queue,
            );
            gauge(
                &mut out,
                "hush_relay_one_time_prekeys",
                "One-time prekeys in stock, all devices.",
                s.one_time_prekeys,
            );
            gauge(
                &mut out,
                "hush_relay_devices_low_on_prekeys",
                "Devices with fewer than 10 one-time prekeys left.",
                s.devices_low_on_prekeys,
            );
        }
        Err(e) => tracing::warn!(error = %e, "metrics: store statistics failed"),
    }
    c.commit_latency.render(
        &mut out,
        "hush_relay_commit_seconds",
        "Time to commit a send durably, from request to ack.",
    );
    c.delivery_latency.render(
        &mut out,
        "hush_relay_delivery_seconds",
        "Time from commit to push for online devices.",
    );
    out
}

/// Serves `GET /metrics` (any path) on a bound listener until the task is
/// dropped. Bind first ([`TcpListener::bind`]) so a bad address stops the
/// relay at start instead of being logged and ignored.
pub async fn serve<S: Store>(listener: TcpListener, relay: Arc<Relay<S>>) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening");
    }
    loop {
        let (mut stream, _) = listener.accept().await?;
        let relay = relay.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 2048];
            let read =
                tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return;
            }
            let body = render(&relay).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
