//! Two `hush-relay` processes on one real PostgreSQL database serve one
//! user base: a device connected to relay B receives at once what was
//! sent via relay A, and one-time prekeys are never handed out twice,
//! whichever relay serves the fetch.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Device, RelayProcess, temp_dir};
use hush_relay::testing::test_database;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

async fn two_relays(name: &str) -> (RelayProcess, RelayProcess) {
    let url = test_database().await;
    let a = RelayProcess::start_in(temp_dir(&format!("{name}-a")), &["--database", &url]);
    let b = RelayProcess::start_in(temp_dir(&format!("{name}-b")), &["--database", &url]);
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_relay_b_receives_at_once_what_was_sent_via_relay_a() {
    let (relay_a, relay_b) = two_relays("cross").await;
    assert!(relay_a.log().contains("postgres://"), "{}", relay_a.log());
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let bob = Device::new(&mut rng, 0);
    let mut on_b = relay_b.client().await;
    bob.register(&on_b).await;
    let page = on_b.fetch_page(0).await.expect("pages");
    assert!(page.queue_empty, "live on relay B");

    let sender = relay_a.client().await;
    for i in 0..5u8 {
        let duplicate = sender
            .send([i; 16], vec![i; 300], &[(bob.key(), [i; 48])], &[])
            .await
            .expect("sends via relay A");
        assert!(!duplicate);
    }
    let mut seqs = Vec::new();
    for _ in 0..5 {
        let pushed = tokio::time::timeout(Duration::from_secs(10), on_b.next_push())
            .await
            .expect("pushed by relay B in time")
            .expect("connection alive");
        seqs.push(pushed.seq);
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(on_b.ack(seqs).await.expect("acks"), 5);
    // A resend through the other relay is still recognised.
    assert!(
        relay_b
            .client()
            .await
            .send([0; 16], vec![0; 300], &[(bob.key(), [0; 48])], &[])
            .await
            .expect("sends via relay B")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_prekeys_are_never_shared_across_relays() {
    let (relay_a, relay_b) = two_relays("prekeys").await;
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let bob = Device::new(&mut rng, 40);
    bob.register(&relay_a.client().await).await;
    let mut tasks = Vec::new();
    for relay in [&relay_a, &relay_b, &relay_a, &relay_b] {
        let client = relay.client().await;
        let key = bob.key();
        tasks.push(tokio::spawn(async move {
            common::fetch_bundles(&client, key, 12).await
        }));
    }
    let mut one_time = Vec::new();
    for t in tasks {
        for id in t.await.expect("joins") {
            if let Some(hush_crypto::PreKeyRef::OneTime(id)) = id {
                one_time.push(id);
            }
        }
    }
    let unique: HashSet<_> = one_time.iter().collect();
    assert_eq!(
        unique.len(),
        one_time.len(),
        "a one-time prekey was handed out twice"
    );
    assert_eq!(
        one_time.len(),
        40,
        "all 40 handed out across the two relays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_on_another_relay_takes_over() {
    let (relay_a, relay_b) = two_relays("takeover").await;
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let bob = Device::new(&mut rng, 0);
    let first = relay_a.client().await;
    bob.register(&first).await;
    // Give relay B's listener a moment to subscribe after start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = relay_b.client().await;
    second
        .authenticate(&bob.identity)
        .await
        .expect("auth on relay B");
    let reason = tokio::time::timeout(Duration::from_secs(10), first.closed_reason())
        .await
        .expect("the connection on relay A is closed");
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code,
                quinn::VarInt::from_u32(hush_relay::server::close::TAKEN_OVER)
            );
        }
        other => panic!("unexpected close: {other:?}"),
    }
    assert!(
        second.fetch_page(0).await.is_ok(),
        "the new connection works"
    );
}
