//! A client for the relay protocol: connect with a pinned certificate,
//! authenticate, send requests and receive pushes. Used by the hush
//! client SDK and by the relay's own end-to-end tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hush_crypto::{IdentityKeyPair, OneTimePreKeyPair, SignedPreKeyPair};
use hush_proto::relay as proto;
use hush_proto::wire;
use proto::client_frame::Request;
use proto::relay_frame::Body;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Endpoint, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::frame;
use crate::relay::{AUTH_CONTEXT, EXPORTER_LABEL};
use crate::server::ALPN;

/// Client failures.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The fingerprint is not 64 hex digits.
    #[error("a relay fingerprint is 64 hex digits")]
    BadFingerprint,
    /// Could not reach or handshake with the relay (wrong pin included).
    #[error("cannot connect to the relay at {addr}: {reason}")]
    Connect {
        /// The relay address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection is gone.
    #[error("connection to the relay lost: {0}")]
    Closed(String),
    /// The relay answered with an error.
    #[error("relay error {code:?}: {message}")]
    Relay {
        /// The code.
        code: proto::ErrorCode,
        /// The relay's explanation.
        message: String,
        /// Devices concerned (unknown recipients, full queues).
        device_keys: Vec<Vec<u8>>,
    },
    /// The relay answered with something else than expected.
    #[error("unexpected answer from the relay")]
    Unexpected,
    /// No answer in time.
    #[error("the relay did not answer in time")]
    Timeout,
    /// The relay served a bundle that does not verify or is not the
    /// asked-for device's.
    #[error("the relay served a bad prekey bundle: {0}")]
    BadBundle(String),
}

#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use sha2::{Digest, Sha256};
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            &seen[..],
            &self.fingerprint[..],
        )) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS 1.3 client settings that accept only the relay certificate whose
/// SHA-256 is `fingerprint` (still checking the handshake signature with
/// its key), offering ALPN `hush/1`.
pub fn pinned_tls(fingerprint: [u8; 32]) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertificate {
        fingerprint,
        provider: provider.clone(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Ok(tls)
}

/// A client endpoint (one UDP socket) that accepts only the relay
/// certificate whose SHA-256 is `fingerprint`. Many connections can
/// share one endpoint.
pub fn endpoint(fingerprint: [u8; 32], ipv6: bool) -> Result<Endpoint, ClientError> {
    let bind: SocketAddr = if ipv6 {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let err = |reason: String| ClientError::Connect { addr: bind, reason };
    let tls = pinned_tls(fingerprint).map_err(|e| err(e.to_string()))?;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| err(e.to_string()))?;
    let mut transport = TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(15)));
    if let Ok(idle) = Duration::from_secs(60).try_into() {
        transport.max_idle_timeout(Some(idle));
    }
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    let mut endpoint = Endpoint::client(bind).map_err(|e| err(e.to_string()))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The QUIC and TLS handshake alone (pinned certificate, ALPN): a
/// connection with no stream open yet, on a new endpoint.
pub async fn handshake(
    addr: SocketAddr,
    fingerprint: [u8; 32],
) -> Result<(Endpoint, quinn::Connection), ClientError> {
    let endpoint = endpoint(fingerprint, addr.is_ipv6())?;
    let connection = connect_on(&endpoint, addr).await?;
    Ok((endpoint, connection))
}

async fn connect_on(
    endpoint: &Endpoint,
    addr: SocketAddr,
) -> Result<quinn::Connection, ClientError> {
    let err = |reason: String| ClientError::Connect { addr, reason };
    endpoint
        .connect(addr, "hush-relay")
        .map_err(|e| err(e.to_string()))?
        .await
        .map_err(|e| err(e.to_string()))
}

/// Parses the fingerprint `hush-relay fingerprint` prints.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], ClientError> {
    let bytes = hex::decode(text.trim()).map_err(|_| ClientError::BadFingerprint)?;
    bytes.try_into().map_err(|_| ClientError::BadFingerprint)
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Body>>>>;

/// Why a connection ended.
fn closed(connection: &quinn::Connection) -> ClientError {
    ClientError::Closed(
        connection
            .close_reason()
            .map_or_else(|| "stream ended".to_string(), |r| r.to_string()),
    )
}

/// The answer to a request sent with [`RelayClient::start`]; it can be
/// awaited after the client itself is gone.
#[derive(Debug)]
pub struct Answer {
    rx: oneshot::Receiver<Body>,
    connection: quinn::Connection,
    timeout: Duration,
}

impl Answer {
    /// Waits for the answer (up to the client's request timeout); relay
    /// errors become [`ClientError::Relay`].
    pub async fn finish(self) -> Result<Body, ClientError> {
        match tokio::time::timeout(self.timeout, self.rx).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(_)) => Err(closed(&self.connection)),
            Ok(Ok(Body::Error(e))) => Err(ClientError::Relay {
                code: proto::ErrorCode::try_from(e.code).unwrap_or(proto::ErrorCode::Unspecified),
                message: e.message,
                device_keys: e.device_keys,
            }),
            Ok(Ok(body)) => Ok(body),
        }
    }
}

/// A connection to a relay.
pub struct RelayClient {
    endpoint: Endpoint,
    connection: quinn::Connection,
    exporter: [u8; 32],
    out: mpsc::Sender<proto::ClientFrame>,
    pending: Pending,
    pushes: mpsc::Receiver<proto::Envelope>,
    next_id: AtomicU64,
    timeout: Duration,
}

impl RelayClient {
    /// Connects to `addr`, accepting only the certificate whose SHA-256
    /// is `fingerprint`.
    pub async fn connect(addr: SocketAddr, fingerprint: [u8; 32]) -> Result<Self, ClientError> {
        let (endpoint, connection) = handshake(addr, fingerprint).await?;
        Self::start_on(endpoint, connection, addr).await
    }

    /// Connects over an existing endpoint from [`endpoint`] (so many
    /// connections share one socket).
    pub async fn connect_on(endpoint: &Endpoint, addr: SocketAddr) -> Result<Self, ClientError> {
        let connection = connect_on(endpoint, addr).await?;
        Self::start_on(endpoint.clone(), connection, addr).await
    }

    async fn start_on(
        endpoint: Endpoint,
        connection: quinn::Connection,
        addr: SocketAddr,
    ) -> Result<Self, ClientError> {
        let err = |reason: String| ClientError::Connect { addr, reason };
        let mut exporter = [0u8; 32];
        connection
            .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .map_err(|_| err("TLS exporter unavailable".into()))?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| err(e.to_string()))?;

        let (out, mut outgoing) = mpsc::channel::<proto::ClientFrame>(4096);
        tokio::spawn(async move {
            if frame::pump(&mut outgoing, &mut send).await.is_ok() {
                let _ = send.finish();
            }
        });
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (push_tx, pushes) = mpsc::channel(65_536);
        let waiting = pending.clone();
        tokio::spawn(async move {
            let mut reader = frame::Reader::new();
            while let Ok(Some(frame)) = reader.next::<proto::RelayFrame, _>(&mut recv).await {
                let Some(body) = frame.body else { continue };
                if frame.request_id == 0 {
                    if let Body::Deliver(envelope) = body
                        && push_tx.send(envelope).await.is_err()
                    {
                        return;
                    }
                    continue;
                }
                let waiter = waiting
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&frame.request_id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(body);
                }
            }
            // Connection over: wake every waiter with an error.
            if let Ok(mut p) = waiting.lock() {
                p.clear();
            }
        });
        Ok(Self {
            endpoint,
            connection,
            exporter,
            out,
            pending,
            pushes,
            next_id: AtomicU64::new(1),
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends a request without waiting; the returned [`Answer`] gets the
    /// answer. Lets a caller keep many requests in flight.
    pub async fn start(&self, request: Request) -> Result<Answer, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        self.out
            .send(proto::ClientFrame {
                request_id: id,
                request: Some(request),
            })
            .await
            .map_err(|_| self.closed())?;
        Ok(Answer {
            rx,
            connection: self.connection.clone(),
            timeout: self.timeout,
        })
    }

    /// Waits for an answer started with [`Self::start`]; relay errors
    /// become [`ClientError::Relay`].
    pub async fn finish(&self, answer: Answer) -> Result<Body, ClientError> {
        answer.finish().await
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&self, request: Request) -> Result<Body, ClientError> {
        let answer = self.start(request).await?;
        self.finish(answer).await
    }

    fn closed(&self) -> ClientError {
        closed(&self.connection)
    }

    /// Proves this connection belongs to `identity`'s device. Returns
    /// how many envelopes wait in its queue.
    pub async fn authenticate(&self, identity: &IdentityKeyPair) -> Result<u64, ClientError> {
        let signature = identity.sign(&[AUTH_CONTEXT, &self.exporter[..]].concat());
        match self
            .request(Request::Authenticate(proto::Authenticate {
                device_key: identity.public().as_bytes().to_vec(),
                signature: signature.to_vec(),
            }))
            .await?
        {
            Body::Authenticated(a) => Ok(a.queued),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Uploads this device's prekeys (after [`Self::authenticate`]).
    /// Returns the one-time prekey stock the relay now holds.
    pub async fn register_prekeys(
        &self,
        signed: &SignedPreKeyPair,
        last_resort: &SignedPreKeyPair,
        one_time: &[OneTimePreKeyPair],
    ) -> Result<u32, ClientError> {
        let to_wire = |k: &SignedPreKeyPair| {
            let p = k.public();
            wire::SignedPreKey {
                id: p.id,
                public_key: p.public.to_vec(),
                signature: p.signature.to_vec(),
            }
        };
        let request = Request::RegisterPrekeys(proto::RegisterPrekeys {
            signed_prekey: Some(to_wire(signed)),
            last_resort_prekey: Some(to_wire(last_resort)),
            one_time_prekeys: one_time
                .iter()
                .map(|k| wire::OneTimePreKey {
                    id: k.id(),
                    public_key: k.public().public.to_vec(),
                })
                .collect(),
        });
        match self.request(request).await? {
            Body::Registered(r) => Ok(r.one_time_prekeys),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Fetches `device`'s prekey bundle (no authentication needed),
    /// taking one of its one-time prekeys, and checks its signatures.
    pub async fn fetch_bundle(
        &self,
        device: &hush_crypto::IdentityKey,
    ) -> Result<hush_crypto::prekey::VerifiedBundle, ClientError> {
        let request = Request::FetchBundle(proto::FetchBundle {
            device_key: device.as_bytes().to_vec(),
        });
        let Body::Bundle(proto::Bundle {
            bundle: Some(bundle),
        }) = self.request(request).await?
        else {
            return Err(ClientError::Unexpected);
        };
        let bytes = prost::Message::encode_to_vec(&bundle);
        let bundle = hush_crypto::PreKeyBundle::try_from(bytes.as_slice())
            .map_err(|e| ClientError::BadBundle(e.to_string()))?;
        if bundle.identity != *device {
            return Err(ClientError::BadBundle(
                "the bundle is for another identity".into(),
            ));
        }
        bundle
            .verify()
            .map_err(|e| ClientError::BadBundle(e.to_string()))
    }

    /// How many one-time prekeys the relay holds for this device (after
    /// [`Self::authenticate`]).
    pub async fn prekey_count(&self) -> Result<u32, ClientError> {
        match self
            .request(Request::PrekeyCount(proto::PrekeyCount {}))
            .await?
        {
            Body::PrekeyStock(s) => Ok(s.one_time_prekeys),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// How long to wait for each answer (30 s unless set).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a sealed body to recipient devices with their slots, stating
    /// the devices it believes recipient accounts have (may be empty).
    /// Returns whether the relay had already stored this message id (a
    /// resend).
    pub async fn send(
        &self,
        message_id: [u8; 16],
        body: Vec<u8>,
        recipients: &[([u8; 32], [u8; 48])],
        expected: &[([u8; 32], Vec<[u8; 32]>)],
    ) -> Result<bool, ClientError> {
        let request = Request::Send(proto::Send {
            message_id: message_id.to_vec(),
            body,
            recipients: recipients
                .iter()
                .map(|(device, slot)| proto::Recipient {
                    device_key: device.to_vec(),
                    slot: slot.to_vec(),
                })
                .collect(),
            expected: expected
                .iter()
                .map(|(account, devices)| proto::ExpectedDevices {
                    account: account.to_vec(),
                    devices: devices.iter().map(|d| d.to_vec()).collect(),
                })
                .collect(),
        });
        match self.request(request).await? {
            Body::Sent(s) => Ok(s.duplicate),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Publishes the account's signed device list (from one of its
    /// devices, authenticated). Returns the devices it revoked.
    pub async fn publish_devices(
        &self,
        list: &hush_crypto::devices::DeviceList,
    ) -> Result<Vec<[u8; 32]>, ClientError> {
        let list =
            <hush_proto::wire::DeviceList as prost::Message>::decode(list.to_bytes().as_slice())
                .map_err(|_| ClientError::Unexpected)?;
        match self
            .request(Request::PublishDevices(proto::PublishDevices {
                list: Some(list),
            }))
            .await?
        {
            Body::Published(p) => p
                .revoked
                .iter()
                .map(|d| <[u8; 32]>::try_from(d.as_slice()).map_err(|_| ClientError::Unexpected))
                .collect(),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Fetches an account's device list as stored (unverified: the
    /// caller verifies it), with its devices' status when this
    /// connection is one of them.
    pub async fn fetch_devices(&self, account: [u8; 32]) -> Result<proto::Devices, ClientError> {
        match self
            .request(Request::FetchDevices(proto::FetchDevices {
                account: account.to_vec(),
            }))
            .await?
        {
            Body::Devices(d) => Ok(d),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Deletes this device's registration, prekeys and queue at the
    /// relay; returns how many envelopes were waiting.
    pub async fn unregister(&self) -> Result<u64, ClientError> {
        match self
            .request(Request::Unregister(proto::Unregister {}))
            .await?
        {
            Body::Unregistered(u) => Ok(u.deleted),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Fetches the page after `after_seq`, acknowledging everything up to it.
    pub async fn fetch_page(&self, after_seq: u64) -> Result<proto::Page, ClientError> {
        match self
            .request(Request::FetchPage(proto::FetchPage {
                after_seq,
                max_envelopes: 0,
            }))
            .await?
        {
            Body::Page(page) => Ok(page),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Pages through the whole queue, acknowledging as it goes, and
    /// returns every envelope in sequence order.
    pub async fn drain(&self) -> Result<Vec<proto::Envelope>, ClientError> {
        let mut after = 0;
        let mut all = Vec::new();
        loop {
            let page = self.fetch_page(after).await?;
            if let Some(last) = page.envelopes.last() {
                after = last.seq;
            }
            let done = page.envelopes.is_empty();
            all.extend(page.envelopes);
            if done {
                return Ok(all);
            }
        }
    }

    /// Acknowledges (deletes) pushed envelopes; returns how many existed.
    pub async fn ack(&self, seqs: Vec<u64>) -> Result<u32, ClientError> {
        match self.request(Request::Ack(proto::Ack { seqs })).await? {
            Body::Acked(a) => Ok(a.deleted),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// The next pushed envelope, or `None` once the connection is gone.
    pub async fn next_push(&mut self) -> Option<proto::Envelope> {
        self.pushes.recv().await
    }

    /// Why the relay closed the connection, once it has.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.connection.close_reason()
    }

    /// Waits until the connection is closed, and returns why.
    pub async fn closed_reason(&self) -> quinn::ConnectionError {
        self.connection.closed().await
    }

    /// Moves the connection to a new local UDP socket (QUIC migration),
    /// as a phone changing networks would.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.endpoint.rebind(socket)
    }

    /// The local UDP address in use.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.connection.close(VarInt::from_u32(0), b"bye");
        self.endpoint.wait_idle().await;
    }
}
