//! The QUIC shell (`spec/relay.md`, "Transport"): it accepts
//! connections, runs one frame stream per connection through the
//! [`Relay`], and shuts down gracefully. It holds no relay logic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{FuturesUnordered, StreamExt};
use hush_proto::relay as proto;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, TransportConfig, VarInt};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::frame;
use crate::relay::{EXPORTER_LABEL, Event, Handled, Relay};
use crate::store::Store;
use crate::tls::Identity;

/// The ALPN protocol id.
pub const ALPN: &[u8] = b"hush/1";

/// Sends and acks of one connection waiting for their commit at most;
/// past it the relay reads nothing more from the connection until some
/// are answered.
pub const MAX_IN_FLIGHT: usize = 16_384;

/// Application close codes (`spec/relay.md`, "Closing").
pub mod close {
    /// The client finished its stream; nothing wrong.
    pub const NORMAL: u32 = 0;
    /// Another connection authenticated as the same device.
    pub const TAKEN_OVER: u32 = 1;
    /// A frame was too large, truncated or not a `ClientFrame`.
    pub const PROTOCOL: u32 = 2;
    /// The relay is shutting down; reconnect later.
    pub const SHUTTING_DOWN: u32 = 3;
    /// The device was dropped from its account's device list.
    pub const REVOKED: u32 = 4;
}

/// Transport settings.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// UDP address.
    pub listen: SocketAddr,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Concurrent bidirectional streams a client may open.
    pub max_streams: u32,
    /// Requested UDP buffer size.
    pub udp_buffer: usize,
}

/// The endpoint could not be set up.
#[derive(Debug, Error)]
pub enum ServerError {
    /// TLS configuration.
    #[error("TLS: {0}")]
    Tls(String),
    /// Socket.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the QUIC endpoint. Returns it and the UDP buffer sizes the
/// kernel granted (receive, send).
pub fn bind(
    options: &TransportOptions,
    identity: Identity,
) -> Result<(Endpoint, (usize, usize)), ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| ServerError::Tls(e.to_string()))?;
    let mut transport = TransportConfig::default();
    transport.keep_alive_interval(Some(options.keep_alive));
    transport.max_idle_timeout(Some(
        options
            .idle_timeout
            .try_into()
            .map_err(|_| ServerError::Tls("idle timeout out of range".into()))?,
    ));
    transport.max_concurrent_bidi_streams(VarInt::from_u32(options.max_streams));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    config.migration(true);

    let addr = options.listen;
    let bind_err = |source| ServerError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind_err)?;
    // Loopback's default buffers drop bursts: ask for more (the kernel
    // may grant less; the granted sizes are logged).
    let _ = socket.set_recv_buffer_size(options.udp_buffer);
    let _ = socket.set_send_buffer_size(options.udp_buffer);
    socket.bind(&addr.into()).map_err(bind_err)?;
    let granted = (
        socket.recv_buffer_size().unwrap_or(0),
        socket.send_buffer_size().unwrap_or(0),
    );
    let runtime = quinn::default_runtime()
        .ok_or_else(|| bind_err(std::io::Error::other("no async runtime")))?;
    let endpoint = Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket.into(),
        runtime,
    )
    .map_err(bind_err)?;
    Ok((endpoint, granted))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serves until `shutdown` turns true: then stops accepting, lets every
/// connection finish the requests it has begun (every accepted send is
/// committed and answered), closes them with `SHUTTING_DOWN`, and waits
/// for the endpoint to go idle.
pub async fn serve<S: Store>(
    endpoint: Endpoint,
    relay: Arc<Relay<S>>,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                // Past the cap, refuse before the handshake costs anything.
                Some(incoming) if connections.len() >= max_connections => {
                    relay
                        .counters
                        .refused_connections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    incoming.refuse();
                }
                Some(incoming) => {
                    let relay = relay.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(async move { connection(relay, incoming, shutdown).await });
                }
                None => break,
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    tracing::info!(
        connections = connections.len(),
        "shutting down: no new connections"
    );
    endpoint.set_server_config(None);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing them");
    }
    endpoint.close(
        VarInt::from_u32(close::SHUTTING_DOWN),
        b"relay shutting down",
    );
    endpoint.wait_idle().await;
}

enum Closing {
    Finished,
    Protocol(String),
    TakenOver,
    Revoked,
    Shutdown,
    Gone,
}

async fn connection<S: Store>(
    relay: Arc<Relay<S>>,
    incoming: quinn::Incoming,
    mut shutdown: watch::Receiver<bool>,
) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
    };
    let id = conn.stable_id();
    tracing::debug!(connection = id, "connected");
    let mut exporter = [0u8; 32];
    if conn
        .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .is_err()
    {
        conn.close(VarInt::from_u32(close::PROTOCOL), b"no TLS exporter");
        return;
    }
    let (mut send, mut recv) = tokio::select! {
        stream = conn.accept_bi() => match stream {
            Ok(stream) => stream,
            Err(_) => return,
        },
        _ = shutdown.changed() => {
            conn.close(VarInt::from_u32(close::SHUTTING_DOWN), b"relay shutting down");
            return;
        }
    };

    // Writer: drains every frame waiting into one write.
    let (out, mut outgoing) = mpsc::channel::<proto::RelayFrame>(4096);
    let writer = tokio::spawn(async move {
        if frame::pump(&mut outgoing, &mut send).await.is_err() {
            return;
        }
        let _ = send.finish();
        let _ = send.stopped().await;
    });

    let mut state = relay.connect(exporter, Instant::now());
    let mut reader = frame::Reader::new();
    // Sends and acks commit concurrently, polled here: no task per
    // request. Every frame one read brings is handled before the next
    // read, and its sends and acks go to the store as one job.
    let mut commits = FuturesUnordered::new();
    let mut in_flight = 0usize;
    let closing = loop {
        tokio::select! {
            // Past the in-flight bound, stop reading until commits finish:
            // the client's flow control then holds it back.
            filled = reader.fill(&mut recv), if in_flight < MAX_IN_FLIGHT => match filled {
                Ok(true) => {
                    let mut deferred = Vec::new();
                    let mut stop = None;
                    loop {
                        match reader.decode::<proto::ClientFrame>() {
                            Ok(None) => break,
                            // Request id 0 is reserved for pushes: a client
                            // sending it is broken, and an error answer would
                            // look like a push.
                            Ok(Some(frame)) if frame.request_id == 0 => {
                                stop = Some(Closing::Protocol("request_id 0 is reserved for pushes".into()));
                                break;
                            }
                            Ok(Some(frame)) => match relay.begin(&mut state, frame, Instant::now(), unix_now()).await {
                                Handled::Done(reply) => {
                                    if out.send(reply).await.is_err() {
                                        stop = Some(Closing::Gone);
                                        break;
                                    }
                                }
                                Handled::Commit(pending) => deferred.push(pending),
                            },
                            Err(e) => {
                                stop = Some(Closing::Protocol(e.to_string()));
                                break;
                            }
                        }
                    }
                    // What was accepted before a broken frame is still
                    // committed and answered.
                    if !deferred.is_empty() {
                        let n = deferred.len();
                        in_flight += n;
                        let relay = relay.clone();
                        commits.push(async move { (n, relay.commit_all(deferred).await) });
                    }
                    if let Some(closing) = stop {
                        break closing;
                    }
                }
                Ok(false) => break Closing::Finished,
                Err(e) => break Closing::Protocol(e.to_string()),
            },
            event = state.next_event() => match event {
                Event::Notified(n) => {
                    // Take every notification already waiting: one wake-up
                    // per burst, not per envelope.
                    let mut frames = relay.deliver(&mut state, n).await;
                    while let Some(n) = state.try_notification() {
                        frames.extend(relay.deliver(&mut state, n).await);
                    }
                    for f in frames {
                        if out.send(f).await.is_err() {
                            break;
                        }
                    }
                }
                Event::Resync => {
                    for f in relay.resync(&mut state).await {
                        if out.send(f).await.is_err() {
                            break;
                        }
                    }
                }
                Event::TakenOver => break Closing::TakenOver,
                Event::Revoked => break Closing::Revoked,
            },
            _ = shutdown.changed() => break Closing::Shutdown,
            Some((n, replies)) = commits.next(), if !commits.is_empty() => {
                in_flight -= n;
                let mut gone = false;
                for reply in replies {
                    if out.send(reply).await.is_err() {
                        gone = true;
                        break;
                    }
                }
                if gone {
                    break Closing::Gone;
                }
            }
        }
    };
    // Every send taken in is committed and answered before closing.
    while let Some((_, replies)) = commits.next().await {
        for reply in replies {
            let _ = out.send(reply).await;
        }
    }
    relay.disconnect(&state);
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    let (code, reason): (u32, String) = match closing {
        Closing::Finished | Closing::Gone => (close::NORMAL, String::new()),
        Closing::Protocol(why) => (close::PROTOCOL, why),
        Closing::TakenOver => (
            close::TAKEN_OVER,
            "another connection took over this device".into(),
        ),
        Closing::Revoked => (
            close::REVOKED,
            "this device was removed from its account".into(),
        ),
        Closing::Shutdown => (close::SHUTTING_DOWN, "relay shutting down".into()),
    };
    tracing::debug!(connection = id, code, "closing");
    conn.close(VarInt::from_u32(code), reason.as_bytes());
}
