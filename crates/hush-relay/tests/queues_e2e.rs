//! Queue behaviour through the real binary: paging thousands of
//! envelopes, quotas, and concurrent one-time prekey takes.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{RelayProcess, temp_dir};
use hush_crypto::IdentityKeyPair;
use hush_proto::relay as proto;
use hush_relay::client::{ClientError, RelayClient};
use proto::client_frame::Request;
use proto::relay_frame::Body;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn send(i: u32, to: &IdentityKeyPair) -> Request {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&i.to_be_bytes());
    Request::Send(proto::Send {
        message_id: id.to_vec(),
        body: i.to_be_bytes().to_vec(),
        recipients: vec![proto::Recipient {
            device_key: to.public().as_bytes().to_vec(),
            slot: vec![0; 48],
        }],
        expected: Vec::new(),
    })
}

fn config(extra: &str) -> std::path::PathBuf {
    let data = temp_dir("queues");
    std::fs::write(data.join("relay.toml"), extra).expect("writes config");
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_envelopes_page_in_seq_order_exactly_once() {
    let relay = RelayProcess::start("paging");
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let setup = relay.client().await;
    let bob = common::new_device(&setup, &mut rng, 0).await;
    setup.close().await;
    let sender = relay.client().await;
    let total = 3_000u32;
    let mut answers = Vec::new();
    for i in 0..total {
        answers.push(sender.start(send(i, &bob)).await.expect("starts"));
    }
    for a in answers {
        assert!(matches!(sender.finish(a).await, Ok(Body::Sent(_))));
    }
    let bob_client = relay.client().await;
    assert_eq!(
        bob_client.authenticate(&bob).await.expect("auth"),
        u64::from(total)
    );
    let (mut after, mut pages, mut seen) = (0, 0, Vec::new());
    loop {
        let Body::Page(page) = bob_client
            .request(Request::FetchPage(proto::FetchPage {
                after_seq: after,
                max_envelopes: 0,
            }))
            .await
            .expect("pages")
        else {
            panic!("page expected")
        };
        pages += 1;
        for e in &page.envelopes {
            assert!(e.seq > after);
            after = e.seq;
            seen.push(u32::from_be_bytes(
                e.body.as_slice().try_into().expect("4 bytes"),
            ));
        }
        if page.envelopes.is_empty() {
            assert!(page.queue_empty);
            break;
        }
        // A short page is not the end unless it says so.
        assert_eq!(page.queue_empty, seen.len() == total as usize);
    }
    // Seqs increase (checked above); every envelope comes exactly once.
    // Pipelined sends commit concurrently, so seq order need not be the
    // sender's request order (spec/relay.md): senders order their own
    // messages by their own counters.
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..total).collect::<Vec<u32>>(), "exactly once");
    assert!(
        pages >= 6,
        "pages are bounded (512 each by default): {pages}"
    );
    assert_eq!(
        bob_client.authenticate(&bob).await.expect("auth"),
        0,
        "paging past acked everything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_quota_and_stores_nothing_more() {
    let data = config("queue_max_envelopes = 5\n");
    let config_path = data.join("relay.toml");
    let relay = RelayProcess::start_in(data, &["--config", config_path.to_str().expect("utf-8")]);
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let client = relay.client().await;
    let bob = common::new_device(&client, &mut rng, 0).await;
    for i in 0..5 {
        assert!(matches!(
            client.request(send(i, &bob)).await,
            Ok(Body::Sent(_))
        ));
    }
    match client.request(send(5, &bob)).await {
        Err(ClientError::Relay {
            code, device_keys, ..
        }) => {
            assert_eq!(code, proto::ErrorCode::Quota);
            assert_eq!(device_keys, vec![bob.public().as_bytes().to_vec()]);
        }
        other => panic!("expected QUOTA, got {other:?}"),
    }
    // Making room (acking one) lets the same message through.
    let body = client
        .request(Request::Ack(proto::Ack { seqs: vec![1] }))
        .await
        .expect("acks");
    assert!(matches!(body, Body::Acked(proto::Acked { deleted: 1 })));
    assert!(matches!(
        client.request(send(5, &bob)).await,
        Ok(Body::Sent(_))
    ));
    assert_eq!(client.authenticate(&bob).await.expect("auth"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bundle_fetches_never_share_a_one_time_prekey() {
    let data = config("bundle_burst = 1000\n");
    let config_path = data.join("relay.toml");
    let relay = Arc::new(RelayProcess::start_in(
        data,
        &["--config", config_path.to_str().expect("utf-8")],
    ));
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let owner = relay.client().await;
    let bob = common::new_device(&owner, &mut rng, 60).await;
    let key = *bob.public().as_bytes();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let relay = relay.clone();
        tasks.push(tokio::spawn(async move {
            let client = relay.client().await;
            common::fetch_bundles(&client, key, 10).await
        }));
    }
    let mut one_time = Vec::new();
    let mut last_resort = 0;
    for t in tasks {
        for id in t.await.expect("joins") {
            match id {
                Some(hush_crypto::PreKeyRef::OneTime(id)) => one_time.push(id),
                Some(hush_crypto::PreKeyRef::LastResort(_)) => last_resort += 1,
                None => panic!("a bundle without a fourth key"),
            }
        }
    }
    let unique: HashSet<_> = one_time.iter().collect();
    assert_eq!(one_time.len(), 60, "every one-time prekey handed out");
    assert_eq!(unique.len(), 60, "none twice");
    assert_eq!(last_resort, 20, "then the last-resort key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_envelopes_are_swept_and_counted() {
    let data = config("expiry_secs = 1\nsweep_interval_secs = 1\n");
    let config_path = data.join("relay.toml");
    let relay = RelayProcess::start_in(data, &["--config", config_path.to_str().expect("utf-8")]);
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let client = relay.client().await;
    let bob = common::new_device(&client, &mut rng, 0).await;
    for i in 0..3 {
        assert!(matches!(
            client.request(send(i, &bob)).await,
            Ok(Body::Sent(_))
        ));
    }
    assert_eq!(client.authenticate(&bob).await.expect("auth"), 3);
    // Expiry is in whole seconds: wait past it and at least one sweep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let left = client.authenticate(&bob).await.expect("auth");
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} envelopes still queued"
        );
    }
    assert!(
        relay.log().contains("swept expired envelopes"),
        "{}",
        relay.log()
    );
    let Body::Page(page) = client
        .request(Request::FetchPage(proto::FetchPage {
            after_seq: 0,
            max_envelopes: 0,
        }))
        .await
        .expect("pages")
    else {
        panic!("page expected")
    };
    assert!(page.envelopes.is_empty() && page.queue_empty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused() {
    let data = config("max_connections = 1\n");
    let config_path = data.join("relay.toml");
    let relay = RelayProcess::start_in(data, &["--config", config_path.to_str().expect("utf-8")]);
    let first = relay.client().await;
    match RelayClient::connect(relay.addr, relay.fingerprint).await {
        Err(ClientError::Connect { .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a second connection got past max_connections = 1"),
    }
    first.close().await;
    // Room again once the first has gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match RelayClient::connect(relay.addr, relay.fingerprint).await {
            Ok(_) => break,
            Err(e) => assert!(std::time::Instant::now() < deadline, "still refused: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
