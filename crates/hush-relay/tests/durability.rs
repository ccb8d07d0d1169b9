//! The relay keeps what it acknowledged: `kill -9` in the middle of
//! 10,000 sends, restart, and every acked envelope is delivered exactly
//! once. And it keeps nothing it must not: the database files and logs
//! hold no message text and no sender identity.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::RelayProcess;
use hush_crypto::{ContentType, IdentityKeyPair, envelope};
use hush_proto::relay as proto;
use hush_relay::client::RelayClient;
use proto::client_frame::Request;
use proto::relay_frame::Body;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn send_request(i: u32, to: &IdentityKeyPair) -> Request {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&i.to_be_bytes());
    Request::Send(proto::Send {
        message_id: id.to_vec(),
        body: i.to_be_bytes().to_vec(),
        recipients: vec![proto::Recipient {
            device_key: to.public().as_bytes().to_vec(),
            slot: vec![7; 48],
        }],
        expected: Vec::new(),
    })
}

/// Sends `ids` in batches of 250 and returns the ids the relay acked.
/// With `kill_at`, the relay is killed (SIGKILL) while the batch that
/// starts there is in flight; sending stops after that batch.
async fn send_all(
    client: &RelayClient,
    ids: &[u32],
    to: &IdentityKeyPair,
    mut kill_at: Option<(usize, &mut RelayProcess)>,
) -> BTreeSet<u32> {
    let mut acked = BTreeSet::new();
    for (n, batch) in ids.chunks(250).enumerate() {
        let mut answers = Vec::new();
        for &i in batch {
            match client.start(send_request(i, to)).await {
                Ok(answer) => answers.push((i, answer)),
                Err(_) => return acked,
            }
        }
        let killing = kill_at.as_ref().is_some_and(|(at, _)| *at == n);
        if killing && let Some((_, relay)) = kill_at.as_mut() {
            tokio::time::sleep(Duration::from_millis(3)).await;
            relay.kill9();
        }
        let collect = async {
            for (i, answer) in answers {
                if let Ok(Body::Sent(_)) = client.finish(answer).await {
                    acked.insert(i);
                }
            }
        };
        // After a kill, unanswered requests never get an answer: stop
        // waiting after a bound, as a client's retry timer would.
        let _ =
            tokio::time::timeout(Duration::from_secs(if killing { 3 } else { 60 }), collect).await;
        if killing {
            return acked;
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_10000_sends_loses_no_acked_envelope() {
    let mut relay = RelayProcess::start("kill9");
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let setup = relay.client().await;
    let bob = common::new_device(&setup, &mut rng, 0).await;
    setup.close().await;

    let total = 10_000u32;
    let all: Vec<u32> = (0..total).collect();
    let sender = relay.client().await;
    let acked = send_all(&sender, &all, &bob, Some((20, &mut relay))).await;
    assert!(
        acked.len() >= 5_000 && acked.len() < total as usize,
        "acked {}",
        acked.len()
    );

    // Restart on the same data; the client resends everything not acked,
    // with the same message ids, as the brief's retry rule requires.
    let relay = RelayProcess::start_in(relay.data.clone(), &[]);
    let sender = relay.client().await;
    let unacked: Vec<u32> = all.iter().copied().filter(|i| !acked.contains(i)).collect();
    let resent = send_all(&sender, &unacked, &bob, None).await;
    assert_eq!(resent.len(), unacked.len(), "every resend is acked");

    let bob_client = relay.client().await;
    bob_client.authenticate(&bob).await.expect("auth");
    let delivered = bob_client.drain().await.expect("drains");
    let mut seen = BTreeSet::new();
    let mut last_seq = 0;
    for e in &delivered {
        assert!(e.seq > last_seq, "sequence numbers increase");
        last_seq = e.seq;
        let n = u32::from_be_bytes(e.body.as_slice().try_into().expect("4 bytes"));
        assert!(seen.insert(n), "envelope {n} delivered twice");
    }
    let lost: Vec<_> = acked.difference(&seen).collect();
    assert!(
        lost.is_empty(),
        "{} acked envelopes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(
        seen.len(),
        total as usize,
        "every message delivered exactly once after resends"
    );
    // Nothing is delivered again after it was acked by paging past it.
    assert!(bob_client.drain().await.expect("drains").is_empty());
    let mut relay = relay;
    assert!(relay.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_logs_hold_no_content_and_no_sender() {
    let mut relay = RelayProcess::start("zero-knowledge");
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob_client = relay.client().await;
    let bob = common::new_device(&bob_client, &mut rng, 0).await;
    let alice_client = relay.client().await;
    let texts: Vec<String> = (0..20)
        .map(|i| format!("secret text number {i} for bob"))
        .collect();
    for (i, text) in texts.iter().enumerate() {
        let env = envelope::seal(
            &mut rng,
            &alice,
            1,
            bob.public(),
            ContentType::Ratchet,
            text.as_bytes(),
        )
        .expect("seals");
        let body = alice_client
            .request(Request::Send(proto::Send {
                message_id: vec![i as u8; 16],
                body: env.body.to_bytes(),
                recipients: vec![proto::Recipient {
                    device_key: bob.public().as_bytes().to_vec(),
                    slot: env.slot.to_vec(),
                }],
                expected: Vec::new(),
            }))
            .await
            .expect("sends");
        assert!(matches!(body, Body::Sent(_)));
    }
    // Half are read and acked; half stay queued (still on disk).
    let Body::Page(_) = bob_client
        .request(Request::FetchPage(proto::FetchPage {
            after_seq: 10,
            max_envelopes: 0,
        }))
        .await
        .expect("pages")
    else {
        panic!("page expected")
    };
    relay.stop();
    let mut files = vec![relay.log.clone()];
    for entry in std::fs::read_dir(&relay.data).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            files.push(path);
        }
    }
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().ends_with("relay.sqlite"))
    );
    let needles: Vec<(String, Vec<u8>)> = texts
        .iter()
        .map(|t| (format!("text {t:?}"), t.as_bytes().to_vec()))
        .chain([
            (
                "alice's identity key".to_string(),
                alice.public().as_bytes().to_vec(),
            ),
            (
                "alice's identity key (X25519 form)".to_string(),
                alice.public().x25519().to_vec(),
            ),
            (
                "alice's identity key (hex)".to_string(),
                hex::encode(alice.public().as_bytes()).into_bytes(),
            ),
        ])
        .collect();
    for file in &files {
        let bytes = std::fs::read(file).expect("reads");
        for (what, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{} contains {what}",
                file.display()
            );
        }
    }
    // Bob's key is a queue id and is stored (in the database or its
    // write-ahead log): the scan does find what is there.
    let bob_key = bob.public().as_bytes();
    assert!(
        files
            .iter()
            .any(|f| std::fs::read(f).is_ok_and(|bytes| bytes.windows(32).any(|w| w == bob_key))),
        "scan sanity check: the queue id is present"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_connection_and_lose_nothing() {
    let relay = RelayProcess::start("malformed");
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let client = relay.client().await;
    let bob = common::new_device(&client, &mut rng, 0).await;
    let body = client
        .request(Request::Send(proto::Send {
            message_id: vec![1; 16],
            body: b"kept".to_vec(),
            recipients: vec![proto::Recipient {
                device_key: bob.public().as_bytes().to_vec(),
                slot: vec![0; 48],
            }],
            expected: Vec::new(),
        }))
        .await
        .expect("sends");
    assert!(matches!(body, Body::Sent(_)));

    // Raw QUIC: garbage frame, then an oversized length.
    for bytes in [
        vec![0, 0, 0, 3, 0xff, 0xff, 0xff],
        vec![0xff, 0xff, 0xff, 0xff],
    ] {
        let (_endpoint, raw) = hush_relay::client::handshake(relay.addr, relay.fingerprint)
            .await
            .expect("handshake");
        let (mut send, _recv) = raw.open_bi().await.expect("stream");
        tokio::io::AsyncWriteExt::write_all(&mut send, &bytes)
            .await
            .expect("writes");
        let reason = tokio::time::timeout(Duration::from_secs(10), raw.closed())
            .await
            .expect("closed");
        match reason {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(
                    c.error_code,
                    quinn::VarInt::from_u32(hush_relay::server::close::PROTOCOL)
                );
            }
            other => panic!("unexpected close: {other:?}"),
        }
    }
    // The relay still serves, and nothing stored was lost.
    let bob_client = relay.client().await;
    assert_eq!(bob_client.authenticate(&bob).await.expect("auth"), 1);
    assert_eq!(bob_client.drain().await.expect("drains").len(), 1);
}
