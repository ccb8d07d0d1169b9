//! The checker's side of the wire (`spec/relay.md`, "Transport",
//! "Framing", "Request ids and pipelining"): QUIC with a pinned
//! certificate and one bidirectional stream, on which frames are encoded
//! and parsed here from `proto/relay.proto`. Nothing of hush's relay
//! client is used, so what is checked is the relay's wire behaviour, and
//! every rule a relay must keep on its side of the stream (exactly one
//! answer per request, pushes only with `request_id` 0, frames within
//! `MAX_FRAME`) is checked on every frame it sends.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use hush_crypto::IdentityKeyPair;
use hush_proto::relay as proto;
use prost::Message;
use proto::client_frame::Request;
use proto::relay_frame::Body;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Endpoint, VarInt};
use tokio::sync::mpsc;

use super::session::describe;

/// The ALPN protocol id (`spec/relay.md`, "Transport").
pub(crate) const ALPN: &[u8] = b"hush/1";
/// The server name a client sends.
pub(crate) const SERVER_NAME: &str = "hush-relay";
/// `MAX_FRAME`: the largest frame message either side accepts.
pub(crate) const MAX_FRAME: usize = 2_097_152;
/// TLS exporter label of the auth challenge (`spec/relay.md`,
/// "Authentication"; hex `4558504f525445522d687573682d72656c61792d61757468`).
const EXPORTER_LABEL: &[u8] = b"EXPORTER-hush-relay-auth";
/// Signed before the exporter output (hex `687573682d72656c61792d617574682d7631`).
pub(crate) const AUTH_CONTEXT: &[u8] = b"hush-relay-auth-v1";

/// The relay under test: its address and pin, and one client endpoint
/// (UDP socket) shared by every connection of the session.
pub(crate) struct Target {
    addr: SocketAddr,
    pin: [u8; 32],
    endpoint: Endpoint,
    /// How long any one wait on the relay may take.
    pub(crate) timeout: Duration,
}

impl Target {
    /// A client endpoint for the relay at `addr` pinned to `pin`.
    pub(crate) fn new(addr: SocketAddr, pin: [u8; 32], timeout: Duration) -> Result<Self> {
        let bind: SocketAddr = if addr.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let endpoint = Endpoint::client(bind).context("opening a UDP socket")?;
        Ok(Self {
            addr,
            pin,
            endpoint,
            timeout,
        })
    }

    /// A QUIC client configuration offering the protocols `alpn`.
    fn config(&self, alpn: &[&[u8]]) -> Result<quinn::ClientConfig> {
        let mut tls = hush_relay::client::pinned_tls(self.pin)?;
        tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        transport.max_idle_timeout(Some(VarInt::from_u32(60_000).into()));
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }

    /// The QUIC and TLS handshake alone, offering `alpn` and naming
    /// `server_name`.
    pub(crate) async fn handshake(
        &self,
        alpn: &[&[u8]],
        server_name: &str,
    ) -> Result<quinn::Connection> {
        let connecting = self
            .endpoint
            .connect_with(self.config(alpn)?, self.addr, server_name)?;
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(connection) => connection.with_context(|| format!("handshake with {}", self.addr)),
            Err(_) => bail!(
                "handshake with {}: no answer within {:?}",
                self.addr,
                self.timeout
            ),
        }
    }

    /// A connection as a client makes it: ALPN `hush/1`, server name
    /// `hush-relay`, one bidirectional stream.
    pub(crate) async fn connect(&self) -> Result<Conn> {
        let connection = self.handshake(&[ALPN], SERVER_NAME).await?;
        Conn::open(connection, self.timeout).await
    }

    /// Closes every connection and waits (briefly) for the endpoint.
    pub(crate) async fn close(&self) {
        self.endpoint.close(VarInt::from_u32(0), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// The ALPN protocol the handshake agreed on, if any.
pub(crate) fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// What the stream reader saw.
enum Incoming {
    Frame(proto::RelayFrame),
    /// The relay ended its stream between frames.
    End,
    /// The stream broke (the connection was closed, say).
    Broken(String),
    /// The relay sent something that is no `RelayFrame`.
    Invalid(String),
}

/// How the relay closed a connection.
#[derive(Debug)]
pub(crate) struct Close {
    /// The application close code (`spec/relay.md`, "Closing").
    pub(crate) code: u64,
    /// The reason phrase.
    pub(crate) reason: String,
}

/// One connection with its stream: requests out, answers and pushes in.
pub(crate) struct Conn {
    connection: quinn::Connection,
    send: quinn::SendStream,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    /// Why no more frames will come, once that is known.
    ended: Option<String>,
    exporter: [u8; 32],
    next_id: u64,
    /// Requests written and not answered yet.
    outstanding: HashSet<u64>,
    /// Answers received and not taken yet, in arrival order.
    answers: VecDeque<(u64, Body)>,
    /// Pushes received and not taken yet, in arrival order.
    pushes: VecDeque<proto::Envelope>,
    timeout: Duration,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.connection.close(VarInt::from_u32(0), b"done");
    }
}

impl Conn {
    async fn open(connection: quinn::Connection, timeout: Duration) -> Result<Self> {
        let mut exporter = [0u8; 32];
        connection
            .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .map_err(|_| anyhow!("no TLS exporter on the connection"))?;
        let (send, recv) = tokio::time::timeout(timeout, connection.open_bi())
            .await
            .map_err(|_| anyhow!("expected a bidirectional stream, got no stream credit"))?
            .context("opening the stream")?;
        let (tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(recv, tx));
        Ok(Self {
            connection,
            send,
            incoming,
            ended: None,
            exporter,
            next_id: 1,
            outstanding: HashSet::new(),
            answers: VecDeque::new(),
            pushes: VecDeque::new(),
            timeout,
        })
    }

    /// The QUIC connection.
    pub(crate) fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// A fresh request id.
    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Writes raw bytes on the stream; `answered` are the request ids in
    /// them that the relay must answer.
    pub(crate) async fn write_raw(&mut self, bytes: &[u8], answered: &[u64]) -> Result<()> {
        self.outstanding.extend(answered);
        tokio::time::timeout(self.timeout, self.send.write_all(bytes))
            .await
            .map_err(|_| anyhow!("the relay took no data for {:?}", self.timeout))?
            .context("writing to the relay")
    }

    /// Sends requests in one write, pipelined; returns their ids.
    pub(crate) async fn start_all(
        &mut self,
        requests: impl IntoIterator<Item = Request>,
    ) -> Result<Vec<u64>> {
        let mut bytes = Vec::new();
        let mut ids = Vec::new();
        for request in requests {
            let id = self.next_id();
            bytes.extend(frame(id, Some(request)));
            ids.push(id);
        }
        self.write_raw(&bytes, &ids).await?;
        Ok(ids)
    }

    /// Sends a request; returns its id.
    pub(crate) async fn start(&mut self, request: Request) -> Result<u64> {
        let id = self.next_id();
        self.write_raw(&frame(id, Some(request)), &[id]).await?;
        Ok(id)
    }

    /// Sends a request and waits for its answer.
    pub(crate) async fn request(&mut self, request: Request) -> Result<Body> {
        let id = self.start(request).await?;
        self.answer(id).await
    }

    /// Ends the stream (FIN).
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.send.finish().context("finishing the stream")
    }

    /// The next frame from the relay, checked and filed as an answer or
    /// a push.
    async fn pump(&mut self) -> Result<()> {
        if let Some(why) = &self.ended {
            bail!("{why}");
        }
        let incoming = tokio::time::timeout(self.timeout, self.incoming.recv()).await;
        let frame = match incoming {
            Err(_) => bail!("nothing from the relay within {:?}", self.timeout),
            Ok(Some(Incoming::Frame(frame))) => frame,
            Ok(Some(Incoming::End) | None) => {
                let why = format!("the relay ended the stream ({})", self.close_text());
                self.ended = Some(why.clone());
                bail!("{why}");
            }
            Ok(Some(Incoming::Broken(why) | Incoming::Invalid(why))) => {
                let why = format!("{why} ({})", self.close_text());
                self.ended = Some(why.clone());
                bail!("{why}");
            }
        };
        match (frame.request_id, frame.body) {
            (0, Some(Body::Deliver(envelope))) => self.pushes.push_back(envelope),
            (0, other) => bail!(
                "the relay sent {} with request_id 0, which is reserved for pushes",
                other
                    .as_ref()
                    .map_or_else(|| "an empty frame".into(), describe)
            ),
            (id, None) => bail!("the relay answered request {id} with an empty frame"),
            (id, Some(Body::Deliver(_))) => bail!("the relay sent a push with request_id {id}"),
            (id, Some(body)) => {
                ensure!(
                    self.outstanding.remove(&id),
                    "the relay answered request {id}, which was not waiting for an answer ({})",
                    describe(&body)
                );
                self.answers.push_back((id, body));
            }
        }
        Ok(())
    }

    /// The answer to request `id`.
    pub(crate) async fn answer(&mut self, id: u64) -> Result<Body> {
        loop {
            if let Some(at) = self.answers.iter().position(|(i, _)| *i == id)
                && let Some((_, body)) = self.answers.remove(at)
            {
                return Ok(body);
            }
            self.pump()
                .await
                .with_context(|| format!("waiting for the answer to request {id}"))?;
        }
    }

    /// The next answer in arrival order, with its request id.
    pub(crate) async fn next_answer(&mut self) -> Result<(u64, Body)> {
        loop {
            if let Some(answer) = self.answers.pop_front() {
                return Ok(answer);
            }
            self.pump().await.context("waiting for an answer")?;
        }
    }

    /// The next push.
    pub(crate) async fn push(&mut self) -> Result<proto::Envelope> {
        loop {
            if let Some(envelope) = self.pushes.pop_front() {
                return Ok(envelope);
            }
            self.pump().await.context("waiting for a push")?;
        }
    }

    /// A push arriving within `wait`, if any (answers arriving meanwhile
    /// are kept).
    pub(crate) async fn quiet(&mut self, wait: Duration) -> Result<Option<proto::Envelope>> {
        let deadline = tokio::time::Instant::now() + wait;
        while self.pushes.is_empty() {
            match tokio::time::timeout_at(deadline, self.pump()).await {
                Err(_) => return Ok(None),
                Ok(result) => result?,
            }
        }
        Ok(self.pushes.pop_front())
    }

    /// Waits for the relay to close the connection, with nothing more
    /// sent on the stream, and returns how it closed it.
    pub(crate) async fn end(&mut self) -> Result<Close> {
        if let Some(envelope) = self.pushes.front() {
            bail!(
                "expected no more frames, got a push of seq {}",
                envelope.seq
            );
        }
        if let Some((id, body)) = self.answers.front() {
            bail!(
                "expected no more frames, got answer {id}: {}",
                describe(body)
            );
        }
        if self.ended.is_none() {
            match tokio::time::timeout(self.timeout, self.incoming.recv()).await {
                Err(_) => bail!(
                    "expected the relay to close the connection within {:?}, got nothing",
                    self.timeout
                ),
                Ok(Some(Incoming::Frame(frame))) => bail!(
                    "expected no more frames, got {} (request_id {})",
                    frame
                        .body
                        .as_ref()
                        .map_or_else(|| "an empty frame".into(), describe),
                    frame.request_id
                ),
                Ok(Some(Incoming::Invalid(why))) => bail!("expected no more frames, got {why}"),
                Ok(Some(Incoming::End | Incoming::Broken(_)) | None) => {}
            }
        }
        let closed = tokio::time::timeout(self.timeout, self.connection.closed())
            .await
            .map_err(|_| {
                anyhow!(
                    "expected the relay to close the connection within {:?}; it ended its stream but kept the connection open",
                    self.timeout
                )
            })?;
        match closed {
            quinn::ConnectionError::ApplicationClosed(close) => Ok(Close {
                code: close.error_code.into_inner(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }),
            other => bail!("expected an application close, got {other}"),
        }
    }

    /// How the connection ended, for messages.
    fn close_text(&self) -> String {
        self.connection
            .close_reason()
            .map_or_else(|| "connection still open".into(), |e| e.to_string())
    }

    /// This connection's auth proof for `identity`: the Ed25519 signature
    /// of `"hush-relay-auth-v1" || exporter`.
    pub(crate) fn proof(&self, identity: &IdentityKeyPair) -> Vec<u8> {
        identity
            .sign(&[AUTH_CONTEXT, &self.exporter].concat())
            .to_vec()
    }

    /// The exporter output of this connection.
    pub(crate) fn exporter(&self) -> [u8; 32] {
        self.exporter
    }

    /// Authenticates as `identity` with this connection's proof.
    pub(crate) async fn authenticate(&mut self, identity: &IdentityKeyPair) -> Result<Body> {
        let proof = self.proof(identity);
        self.request(authenticate(identity.public().as_bytes(), &proof))
            .await
    }
}

/// Reads frames off the relay's stream until it ends or breaks.
async fn read_frames(mut recv: quinn::RecvStream, tx: mpsc::UnboundedSender<Incoming>) {
    loop {
        let mut prefix = [0u8; 4];
        match recv.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => {
                let _ = tx.send(Incoming::End);
                return;
            }
            Err(e) => {
                let _ = tx.send(Incoming::Broken(format!("the stream broke: {e}")));
                return;
            }
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_FRAME {
            let _ = tx.send(Incoming::Invalid(format!(
                "the relay sent a frame of {len} bytes, over MAX_FRAME"
            )));
            return;
        }
        let mut message = vec![0u8; len];
        if let Err(e) = recv.read_exact(&mut message).await {
            let _ = tx.send(Incoming::Broken(format!(
                "the stream broke inside a frame: {e}"
            )));
            return;
        }
        let Ok(frame) = proto::RelayFrame::decode(message.as_slice()) else {
            let _ = tx.send(Incoming::Invalid(
                "the relay sent a frame that is not a RelayFrame".into(),
            ));
            return;
        };
        if tx.send(Incoming::Frame(frame)).is_err() {
            return;
        }
    }
}

/// `message` with its 4-byte big-endian length in front.
pub(crate) fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + message.len());
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// One `ClientFrame`, framed.
pub(crate) fn frame(request_id: u64, request: Option<Request>) -> Vec<u8> {
    framed(
        &proto::ClientFrame {
            request_id,
            request,
        }
        .encode_to_vec(),
    )
}

/// An `Authenticate` request.
pub(crate) fn authenticate(device_key: &[u8], signature: &[u8]) -> Request {
    Request::Authenticate(proto::Authenticate {
        device_key: device_key.to_vec(),
        signature: signature.to_vec(),
    })
}
