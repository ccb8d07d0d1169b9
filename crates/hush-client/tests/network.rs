//! Real networks: a lossy path between clients and relay, and a client
//! whose UDP socket changes mid-conversation (QUIC migration).
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{LossyProxy, Relay, temp_dir};
use hush_client::client::Event;
use hush_client::{Client, Options, Unlock};

fn options() -> Options {
    Options {
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_secs(1),
        request_timeout: Duration::from_secs(3),
        // A handshake whose packets are lost is retransmitted after 1, 2,
        // 4, 8 s (QUIC's probe timeout doubling): at 10% loss, a flight
        // lost three times in a row (seen about once in ten runs)
        // outlasts 5 s. A client on such a network waits longer.
        connect_timeout: Duration::from_secs(20),
        ..Options::default()
    }
}

async fn pair(relay: &str, pin: [u8; 32], name: &str) -> (Client, Client) {
    let mut alice = Client::init(
        &temp_dir(&format!("{name}-alice")),
        relay,
        pin,
        Unlock::KeyFile,
        options(),
    )
    .await
    .expect("alice");
    let mut bob = Client::init(
        &temp_dir(&format!("{name}-bob")),
        relay,
        pin,
        Unlock::KeyFile,
        options(),
    )
    .await
    .expect("bob");
    let (a, b) = (alice.address().to_string(), bob.address().to_string());
    alice.add_contact("bob", &b).await.expect("adds");
    bob.add_contact("alice", &a).await.expect("adds");
    (alice, bob)
}

fn texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.text.clone()),
            _ => None,
        })
        .collect()
}

/// Receives until `want` texts arrived (or a minute passed).
async fn receive(client: &mut Client, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        if let Ok(events) = client.sync().await {
            got.extend(texts(&events));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_reordering_duplicating_network_loses_and_repeats_nothing() {
    let relay = Relay::start("lossy");
    let proxy = LossyProxy::start(relay.addr, 0.10, 7).await;
    let pin = hush_relay::client::parse_fingerprint(&relay.fingerprint).expect("pin");
    let (mut alice, mut bob) = pair(&proxy.addr.to_string(), pin, "lossy").await;

    let mut ids = Vec::new();
    for n in 0..200 {
        ids.push(
            alice
                .send_text("bob", &format!("a{n}"))
                .await
                .expect("stores"),
        );
    }
    for n in 0..50 {
        bob.send_text("alice", &format!("b{n}"))
            .await
            .expect("stores");
    }
    for id in &ids {
        alice
            .wait_sent(std::slice::from_ref(id))
            .await
            .expect("the relay took it");
    }
    let to_bob = receive(&mut bob, 200).await;
    assert_eq!(
        to_bob,
        (0..200).map(|n| format!("a{n}")).collect::<Vec<_>>()
    );
    let to_alice = receive(&mut alice, 50).await;
    assert_eq!(
        to_alice,
        (0..50).map(|n| format!("b{n}")).collect::<Vec<_>>()
    );
    // Nothing comes twice afterwards.
    assert!(texts(&bob.sync().await.expect("syncs")).is_empty());
    let s = &proxy.stats;
    let impaired = s.dropped.load(Ordering::Relaxed)
        + s.duplicated.load(Ordering::Relaxed)
        + s.delayed.load(Ordering::Relaxed)
        + s.reordered.load(Ordering::Relaxed);
    let total = s.forwarded.load(Ordering::Relaxed);
    assert!(
        impaired * 100 >= total * 7 && s.dropped.load(Ordering::Relaxed) > 0,
        "the network was lossy: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_socket_changes_keeps_its_conversation() {
    let relay = Relay::start("rebind");
    let pin = hush_relay::client::parse_fingerprint(&relay.fingerprint).expect("pin");
    let (mut alice, mut bob) = pair(&relay.address(), pin, "rebind").await;
    alice.send_text("bob", "before").await.expect("sends");
    assert_eq!(texts(&bob.sync().await.expect("syncs")), ["before"]);

    let old = bob.local_addr().expect("connected");
    let new = bob.rebind().expect("rebinds").expect("connected");
    assert_ne!(old.port(), new.port());
    alice.rebind().expect("rebinds");

    // Bob's connection is the same one: the new messages are pushed to it.
    for n in 0..5 {
        alice
            .send_text("bob", &format!("after {n}"))
            .await
            .expect("sends");
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 5 && Instant::now() < deadline {
        let push = tokio::time::timeout(Duration::from_secs(5), bob.wait_push())
            .await
            .expect("pushed in time")
            .expect("connection kept");
        got.extend(texts(&bob.handle_push(push).await.expect("stored")));
    }
    assert_eq!(
        got,
        (0..5).map(|n| format!("after {n}")).collect::<Vec<_>>()
    );
    assert_eq!(bob.local_addr(), Some(new), "no reconnection happened");
    bob.send_text("alice", "still here").await.expect("sends");
    assert_eq!(texts(&alice.sync().await.expect("syncs")), ["still here"]);
}
