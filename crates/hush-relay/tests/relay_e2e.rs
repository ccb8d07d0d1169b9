//! End to end against the real `hush-relay` binary over loopback QUIC
//! with a real SQLite file: register, fetch a bundle, send to an offline
//! device, connect, receive, ack, gone; live push; takeover; wrong pin.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Device, RelayProcess};
use hush_crypto::prekey::ExtraPreKey;
use hush_crypto::{
    ContentType, PreKeyBundle, PreKeyMessage, SealedEnvelope, Session, SessionMessage, envelope,
};
use hush_proto::relay as proto;
use hush_relay::client::{ClientError, RelayClient};
use hush_relay::server::close;
use proto::client_frame::Request;
use proto::relay_frame::Body;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

async fn send_sealed(client: &RelayClient, id: u8, env: &SealedEnvelope, to: &Device) -> Body {
    client
        .request(Request::Send(proto::Send {
            message_id: vec![id; 16],
            body: env.body.to_bytes(),
            recipients: vec![proto::Recipient {
                device_key: to.identity.public().as_bytes().to_vec(),
                slot: env.slot.to_vec(),
            }],
            expected: Vec::new(),
        }))
        .await
        .expect("sends")
}

fn open(to: &Device, e: &proto::Envelope) -> hush_crypto::Opened {
    let body = hush_crypto::SealedBody::try_from(e.body.as_slice()).expect("body decodes");
    let slot: [u8; 48] = e.slot.as_slice().try_into().expect("48-byte slot");
    SealedEnvelope { body, slot }
        .open(&to.identity)
        .expect("opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_message_is_delivered_acked_and_gone() {
    let relay = RelayProcess::start("offline");
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let (alice, bob) = (Device::new(&mut rng, 10), Device::new(&mut rng, 10));

    // Bob registers and goes away.
    let bob_client = relay.client().await;
    bob.register(&bob_client).await;
    bob_client.close().await;

    // Alice, unauthenticated, fetches Bob's bundle and sends a sealed
    // first message.
    let alice_client = relay.client().await;
    let Body::Bundle(proto::Bundle { bundle: Some(b) }) = alice_client
        .request(Request::FetchBundle(proto::FetchBundle {
            device_key: bob.identity.public().as_bytes().to_vec(),
        }))
        .await
        .expect("bundle")
    else {
        panic!("bundle expected")
    };
    let bundle = PreKeyBundle::try_from(prost::Message::encode_to_vec(&b).as_slice())
        .expect("decodes")
        .verify()
        .expect("verifies");
    assert!(matches!(
        bundle.bundle().extra,
        Some(ExtraPreKey::OneTime(_))
    ));
    let mut session = Session::initiate(&mut rng, &alice.identity, &bundle).expect("x3dh");
    let first = session
        .encrypt(&mut rng, b"hello bob, you were offline")
        .expect("encrypts");
    let sealed = envelope::seal(
        &mut rng,
        &alice.identity,
        1,
        bob.identity.public(),
        ContentType::PreKey,
        &first.to_bytes(),
    )
    .expect("seals");
    assert!(matches!(
        send_sealed(&alice_client, 1, &sealed, &bob).await,
        Body::Sent(proto::Sent {
            duplicate: false,
            ..
        })
    ));
    // A resend after a lost ack is not stored twice.
    assert!(matches!(
        send_sealed(&alice_client, 1, &sealed, &bob).await,
        Body::Sent(proto::Sent {
            duplicate: true,
            ..
        })
    ));

    // Bob comes back, pages his queue, decrypts, acks by paging on.
    let bob_client = relay.client().await;
    assert_eq!(
        bob_client.authenticate(&bob.identity).await.expect("auth"),
        1
    );
    let Body::Page(page) = bob_client
        .request(Request::FetchPage(proto::FetchPage {
            after_seq: 0,
            max_envelopes: 0,
        }))
        .await
        .expect("page")
    else {
        panic!("page expected")
    };
    assert_eq!(page.envelopes.len(), 1);
    assert!(page.queue_empty);
    let opened = open(&bob, &page.envelopes[0]);
    assert_eq!(opened.sender, *alice.identity.public());
    assert_eq!(opened.content_type, ContentType::PreKey);
    let message = PreKeyMessage::try_from(opened.content.as_slice()).expect("prekey message");
    let (mut bob_session, text) =
        Session::respond(&bob.identity, &bob, &message).expect("responds");
    assert_eq!(text, b"hello bob, you were offline");
    let seq = page.envelopes[0].seq;
    let Body::Page(next) = bob_client
        .request(Request::FetchPage(proto::FetchPage {
            after_seq: seq,
            max_envelopes: 0,
        }))
        .await
        .expect("page")
    else {
        panic!("page expected")
    };
    assert!(next.envelopes.is_empty() && next.queue_empty);

    // Live: Bob replies; Alice is pushed the reply while connected.
    // Alice registers (she needs a queue) and pages to the end: live.
    alice.register(&alice_client).await;
    let page = alice_client.fetch_page(0).await.expect("pages");
    assert!(page.envelopes.is_empty() && page.queue_empty);
    let reply = bob_session
        .encrypt(&mut rng, b"hi alice")
        .expect("encrypts");
    assert!(matches!(reply, SessionMessage::Ratchet(_)));
    let sealed = envelope::seal(
        &mut rng,
        &bob.identity,
        1,
        alice.identity.public(),
        ContentType::Ratchet,
        &reply.to_bytes(),
    )
    .expect("seals");
    assert!(matches!(
        send_sealed(&bob_client, 2, &sealed, &alice).await,
        Body::Sent(_)
    ));
    let mut alice_client = alice_client;
    let pushed = tokio::time::timeout(Duration::from_secs(10), alice_client.next_push())
        .await
        .expect("pushed in time")
        .expect("connection alive");
    let opened = open(&alice, &pushed);
    let ratchet =
        hush_crypto::RatchetMessage::try_from(opened.content.as_slice()).expect("decodes");
    assert_eq!(
        session
            .decrypt(&SessionMessage::Ratchet(ratchet))
            .expect("decrypts"),
        b"hi alice"
    );
    let Body::Acked(acked) = alice_client
        .request(Request::Ack(proto::Ack {
            seqs: vec![pushed.seq],
        }))
        .await
        .expect("acks")
    else {
        panic!("acked expected")
    };
    assert_eq!(acked.deleted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_takes_over_and_the_first_is_told_why() {
    let relay = RelayProcess::start("takeover");
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let bob = Device::new(&mut rng, 10);
    let first = relay.client().await;
    bob.register(&first).await;
    let second = relay.client().await;
    second.authenticate(&bob.identity).await.expect("auth");
    let reason = tokio::time::timeout(Duration::from_secs(10), first.closed_reason())
        .await
        .expect("first connection closed");
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(close::TAKEN_OVER));
            assert!(String::from_utf8_lossy(&c.reason).contains("took over"));
        }
        other => panic!("unexpected close: {other:?}"),
    }
    // The second connection still works.
    let body = second
        .request(Request::PrekeyCount(proto::PrekeyCount {}))
        .await
        .expect("works");
    assert!(matches!(body, Body::PrekeyStock(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused() {
    let relay = RelayProcess::start("pin");
    let mut wrong = relay.fingerprint;
    wrong[0] ^= 1;
    match RelayClient::connect(relay.addr, wrong).await {
        Err(ClientError::Connect { .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connected with a wrong pin"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_then_closes_with_a_reason() {
    let mut relay = RelayProcess::start("shutdown");
    let client = relay.client().await;
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    Device::new(&mut rng, 10).register(&client).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = relay.stop();
        (status, relay)
    });
    let reason = tokio::time::timeout(Duration::from_secs(15), client.closed_reason())
        .await
        .expect("closed in time");
    let (status, relay) = status.await.expect("joins");
    assert!(status.success(), "exit {status:?}: {}", relay.log());
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(close::SHUTTING_DOWN));
        }
        other => panic!("unexpected close: {other:?}"),
    }
    assert!(relay.log().contains("stopped"));
}

fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("writes");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("reads");
    text
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happens_and_name_no_one() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let relay = RelayProcess::start_in(
        common::temp_dir("metrics"),
        &["--metrics", &metrics.to_string()],
    );
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let bob = Device::new(&mut rng, 10);
    let client = relay.client().await;
    bob.register(&client).await;
    let env = envelope::seal(
        &mut rng,
        &bob.identity,
        1,
        bob.identity.public(),
        ContentType::Ratchet,
        b"to self",
    )
    .expect("seals");
    assert!(matches!(
        send_sealed(&client, 9, &env, &bob).await,
        Body::Sent(_)
    ));
    let text = tokio::task::spawn_blocking(move || scrape(metrics))
        .await
        .expect("joins");
    assert_eq!(metric(&text, "hush_relay_envelopes_in_total"), 1);
    assert_eq!(metric(&text, "hush_relay_queued_envelopes"), 1);
    assert_eq!(metric(&text, "hush_relay_devices"), 1);
    assert_eq!(metric(&text, "hush_relay_one_time_prekeys"), 10);
    assert_eq!(metric(&text, "hush_relay_commit_seconds_count"), 1);
    assert!(metric(&text, "hush_relay_connections") >= 1);
    assert!(!text.contains(&hex::encode(bob.identity.public().as_bytes())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_changes_network_keeps_its_connection() {
    let relay = RelayProcess::start("migration");
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let bob = Device::new(&mut rng, 10);
    let client = relay.client().await;
    bob.register(&client).await;
    let before = client.local_addr().expect("local addr");
    // A phone moving from Wi-Fi to mobile data: a new local socket.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("new socket");
    client.rebind(socket).expect("rebinds");
    let after = client.local_addr().expect("local addr");
    assert_ne!(before.port(), after.port());
    // The same connection (same authentication) keeps working.
    let body = client
        .request(Request::PrekeyCount(proto::PrekeyCount {}))
        .await
        .expect("still connected after migration");
    assert!(matches!(
        body,
        Body::PrekeyStock(proto::PrekeyStock {
            one_time_prekeys: 10
        })
    ));
    assert!(client.close_reason().is_none());
}
