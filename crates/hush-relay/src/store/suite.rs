//! The storage test suite, run against every backend (SQLite here,
//! PostgreSQL in `postgres`): each test takes a fresh, empty store.
#![allow(clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use super::*;

pub(crate) fn key(id: u32, fill: u8) -> SignedKey {
    SignedKey {
        id,
        public: [fill; 32],
        signature: [fill; 64],
    }
}

pub(crate) fn upload(opks: u32) -> PrekeyUpload {
    PrekeyUpload {
        signed: key(1, 1),
        last_resort: key(2, 2),
        one_time: (0..opks).map(|i| (100 + i, [i as u8; 32])).collect(),
    }
}

pub(crate) const LIMITS: QueueLimits = QueueLimits {
    max_envelopes: 100,
    max_bytes: 1 << 20,
};

pub(crate) fn envelope(id: u8, body: &[u8], to: &[DeviceKey]) -> NewEnvelope {
    NewEnvelope {
        message_id: [id; 16],
        body: Arc::new(body.to_vec()),
        recipients: to.iter().map(|d| (*d, [d[0]; 48])).collect(),
        expires_at: 1_000,
        expected: Vec::new(),
    }
}

pub(crate) async fn bundles_take_each_one_time_key_once_then_last_resort<S: Store + Clone>(
    store: S,
) {
    let device = [7; 32];
    assert_eq!(store.take_bundle(device).await, Ok(None));
    assert_eq!(store.prekey_count(device).await, Ok(None));
    assert_eq!(store.register(device, upload(3)).await, Ok(3));
    let mut seen = HashSet::new();
    for _ in 0..3 {
        let b = store.take_bundle(device).await.expect("ok").expect("known");
        assert_eq!(b.signed, key(1, 1));
        assert!(seen.insert(b.one_time.expect("one-time key left").0));
    }
    let b = store.take_bundle(device).await.expect("ok").expect("known");
    assert_eq!(b.one_time, None);
    assert_eq!(b.last_resort, key(2, 2));
    assert_eq!(store.prekey_count(device).await, Ok(Some(0)));
    // A refresh without one-time keys keeps the stock; with, replaces it.
    assert_eq!(store.register(device, upload(0)).await, Ok(0));
    assert_eq!(store.register(device, upload(5)).await, Ok(5));
}

pub(crate) async fn concurrent_takes_never_share_a_key<S: Store + Clone>(store: S) {
    let device = [8; 32];
    store
        .register(device, upload(100))
        .await
        .expect("registers");
    let mut tasks = Vec::new();
    for _ in 0..150 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.take_bundle(device).await }));
    }
    let mut taken = Vec::new();
    let mut last_resort = 0;
    for task in tasks {
        match task
            .await
            .expect("joins")
            .expect("ok")
            .expect("known")
            .one_time
        {
            Some((id, _)) => taken.push(id),
            None => last_resort += 1,
        }
    }
    let unique: HashSet<_> = taken.iter().collect();
    assert_eq!(taken.len(), 100);
    assert_eq!(unique.len(), 100);
    assert_eq!(last_resort, 50);
}

pub(crate) async fn multi_recipient_body_is_stored_once_and_freed_by_the_last_ack<
    S: Store + Clone,
>(
    store: S,
) {
    let (a, b) = ([1; 32], [2; 32]);
    for d in [a, b] {
        store.register(d, upload(0)).await.expect("registers");
    }
    assert_eq!(
        store.enqueue(envelope(1, b"body", &[a, b]), LIMITS).await,
        Ok(Enqueued::Stored(vec![1, 1]))
    );
    assert_eq!(
        store.enqueue(envelope(2, b"second", &[a]), LIMITS).await,
        Ok(Enqueued::Stored(vec![2]))
    );
    // A resend of the same message id stores nothing.
    assert_eq!(
        store.enqueue(envelope(1, b"body", &[a, b]), LIMITS).await,
        Ok(Enqueued::Duplicate)
    );
    assert_eq!(store.queue_len(a).await, Ok(2));
    let page = store.page(a, 0, 10).await.expect("pages");
    assert!(page.queue_empty);
    assert_eq!(page.envelopes.len(), 2);
    assert_eq!(page.envelopes[0].body, b"body");
    assert_eq!(page.envelopes[0].slot, [1; 48]);
    // Reading deletes nothing; paging past deletes, ack deletes.
    assert_eq!(store.read(a, 0, 10).await.map(|p| p.envelopes.len()), Ok(2));
    assert_eq!(store.queue_len(a).await, Ok(2));
    assert_eq!(store.ack(a, vec![1, 99]).await, Ok(1));
    // "body" still referenced by b's queue; "second" by a's.
    assert_eq!(store.stats().await.expect("stats").bodies, 2);
    store.page(b, 1, 10).await.expect("acks by paging");
    assert_eq!(store.stats().await.expect("stats").bodies, 1);
    assert_eq!(store.ack(a, vec![2]).await, Ok(1));
    assert_eq!(store.stats().await.expect("stats").bodies, 0);
    assert_eq!(store.queue_len(a).await, Ok(0));
}

pub(crate) async fn unknown_devices_and_quotas_store_nothing<S: Store + Clone>(store: S) {
    let (a, b) = ([1; 32], [2; 32]);
    store.register(a, upload(0)).await.expect("registers");
    assert_eq!(
        store.enqueue(envelope(1, b"x", &[a, b]), LIMITS).await,
        Err(StoreError::UnknownDevices(vec![b]))
    );
    let tight = QueueLimits {
        max_envelopes: 2,
        max_bytes: 1 << 20,
    };
    store
        .enqueue(envelope(2, b"x", &[a]), tight)
        .await
        .expect("fits");
    store
        .enqueue(envelope(3, b"x", &[a]), tight)
        .await
        .expect("fits");
    assert_eq!(
        store.enqueue(envelope(4, b"x", &[a]), tight).await,
        Err(StoreError::Quota(vec![a]))
    );
    let bytes = QueueLimits {
        max_envelopes: 100,
        max_bytes: 2 * (49 + 48),
    };
    assert_eq!(
        store.enqueue(envelope(5, &[0; 49], &[a]), bytes).await,
        Err(StoreError::Quota(vec![a]))
    );
    assert_eq!(store.queue_len(a).await, Ok(2));
    // The rejected ids were not recorded: a retry after room is made works.
    store.ack(a, vec![1]).await.expect("acks");
    assert_eq!(
        store.enqueue(envelope(4, b"x", &[a]), tight).await,
        Ok(Enqueued::Stored(vec![3]))
    );
}

pub(crate) async fn paging_is_bounded_and_ordered<S: Store + Clone>(store: S) {
    let a = [1; 32];
    store.register(a, upload(0)).await.expect("registers");
    for i in 0..25u8 {
        store
            .enqueue(envelope(i, &[i], &[a]), LIMITS)
            .await
            .expect("stores");
    }
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.page(a, after, 10).await.expect("pages");
        if page.envelopes.is_empty() {
            assert!(page.queue_empty);
            break;
        }
        for e in &page.envelopes {
            assert!(e.seq > after);
            after = e.seq;
            seen.push(e.body[0]);
        }
        assert_eq!(page.queue_empty, seen.len() == 25);
    }
    assert_eq!(seen, (0..25).collect::<Vec<u8>>());
    assert_eq!(store.queue_len(a).await, Ok(0));
}

pub(crate) async fn concurrent_enqueues_batch_correctly<S: Store + Clone>(store: S) {
    let (a, b, stranger) = ([1; 32], [2; 32], [9; 32]);
    for d in [a, b] {
        store.register(d, upload(0)).await.expect("registers");
    }
    let limits = QueueLimits {
        max_envelopes: 200,
        max_bytes: 1 << 30,
    };
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let store = store.clone();
        // ids repeat every 250: the last 50 are resends of the first 50.
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&(i % 250).to_be_bytes());
        let to: Vec<DeviceKey> = if i % 97 == 5 {
            vec![a, stranger]
        } else {
            vec![a, b]
        };
        let envelope = NewEnvelope {
            message_id: id,
            body: Arc::new(i.to_be_bytes().to_vec()),
            recipients: to.iter().map(|d| (*d, [0; 48])).collect(),
            expires_at: 1_000,
            expected: Vec::new(),
        };
        tasks.push(tokio::spawn(async move {
            store.enqueue(envelope, limits).await
        }));
    }
    let (mut stored, mut duplicate, mut unknown, mut quota) = (0, 0, 0, 0);
    for t in tasks {
        match t.await.expect("joins") {
            Ok(Enqueued::Stored(seqs)) => {
                assert_eq!(seqs.len(), 2);
                stored += 1;
            }
            Ok(Enqueued::Duplicate) => duplicate += 1,
            Err(StoreError::UnknownDevices(d)) => {
                assert_eq!(d, vec![stranger]);
                unknown += 1;
            }
            Err(StoreError::Quota(_)) => quota += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(stored, 200, "the quota stops at 200");
    assert_eq!(stored + duplicate + unknown + quota, 300);
    assert!(unknown >= 2);
    // Sequence numbers are contiguous and bodies match in both queues.
    for d in [a, b] {
        let page = store.read(d, 0, 1_000).await.expect("reads");
        let seqs: Vec<u64> = page.envelopes.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    }
    let (pa, pb) = (
        store.read(a, 0, 1_000).await.expect("reads"),
        store.read(b, 0, 1_000).await.expect("reads"),
    );
    for (x, y) in pa.envelopes.iter().zip(&pb.envelopes) {
        assert_eq!(
            x.body, y.body,
            "one body shared by both queues, in the same order"
        );
    }
}

pub(crate) async fn pages_are_bounded_by_bytes_but_never_empty<S: Store + Clone>(store: S) {
    let a = [1; 32];
    store.register(a, upload(0)).await.expect("registers");
    let big = QueueLimits {
        max_envelopes: 100,
        max_bytes: 1 << 30,
    };
    for i in 0..3u8 {
        store
            .enqueue(envelope(i, &vec![i; 600 * 1024], &[a]), big)
            .await
            .expect("stores");
    }
    let page = store.page(a, 0, 100).await.expect("pages");
    assert_eq!(
        page.envelopes.len(),
        1,
        "600 KiB + 600 KiB is over the page budget"
    );
    assert!(!page.queue_empty, "a page cut short by size is not the end");
    let page = store.page(a, 1, 100).await.expect("pages");
    assert_eq!(page.envelopes.len(), 1);
    let page = store.page(a, 2, 100).await.expect("pages");
    assert_eq!((page.envelopes.len(), page.queue_empty), (1, true));
}

pub(crate) async fn expiry_sweeps_envelopes_and_ids<S: Store + Clone>(store: S) {
    let (a, b) = ([1; 32], [2; 32]);
    for d in [a, b] {
        store.register(d, upload(0)).await.expect("registers");
    }
    let mut early = envelope(1, b"early", &[a, b]);
    early.expires_at = 10;
    store.enqueue(early.clone(), LIMITS).await.expect("stores");
    store
        .enqueue(envelope(2, b"late", &[a]), LIMITS)
        .await
        .expect("stores");
    assert_eq!(store.sweep(9).await, Ok(0));
    assert_eq!(store.sweep(10).await, Ok(2));
    assert_eq!(store.queue_len(a).await, Ok(1));
    assert_eq!(store.queue_len(b).await, Ok(0));
    // The expired message id is forgotten too; sequence numbers are
    // never reused.
    assert_eq!(
        store.enqueue(early, LIMITS).await,
        Ok(Enqueued::Stored(vec![3, 2]))
    );
}

/// A burst (`enqueue_many`) of bodies of every size, alone or shared,
/// empty ones included, with a duplicate and an unknown recipient among
/// them: each gets its own outcome, and the bodies come back byte for
/// byte.
pub(crate) async fn a_burst_of_bodies_comes_back_exactly<S: Store + Clone>(store: S) {
    let (a, b, stranger) = ([1; 32], [2; 32], [9; 32]);
    for d in [a, b] {
        store.register(d, upload(0)).await.expect("registers");
    }
    let limits = QueueLimits {
        max_envelopes: 1_000,
        max_bytes: 1 << 30,
    };
    let sizes = [0usize, 1, 47, 256, 0, 4096, 65_536, 3];
    let mut envelopes: Vec<NewEnvelope> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| {
            let body: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
            let to: &[DeviceKey] = if i % 3 == 0 { &[a, b] } else { &[a] };
            envelope(i as u8, &body, to)
        })
        .collect();
    let accepted = envelopes.clone();
    envelopes.push(envelope(1, b"same id as the second", &[a]));
    envelopes.push(envelope(100, b"to nobody", &[a, stranger]));
    let results = store.enqueue_many(envelopes, limits).await;
    assert_eq!(results.len(), sizes.len() + 2);
    assert!(
        results[..sizes.len()]
            .iter()
            .all(|r| matches!(r, Ok(Enqueued::Stored(_))))
    );
    assert_eq!(results[sizes.len()], Ok(Enqueued::Duplicate));
    assert_eq!(
        results[sizes.len() + 1],
        Err(StoreError::UnknownDevices(vec![stranger]))
    );
    let page = store.read(a, 0, 100).await.expect("reads");
    let got: Vec<&Vec<u8>> = page.envelopes.iter().map(|e| &e.body).collect();
    let sent: Vec<&Vec<u8>> = accepted.iter().map(|e| e.body.as_ref()).collect();
    assert_eq!(got, sent);
    let seqs: Vec<u64> = page.envelopes.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=sizes.len() as u64).collect::<Vec<_>>());
    assert!(page.envelopes.iter().all(|e| e.slot == [1; 48]));
    let shared: u64 = [0, 3, 6].iter().map(|i| sizes[*i] as u64 + 48).sum();
    let all: u64 = sizes.iter().map(|s| *s as u64 + 48).sum();
    assert_eq!(
        store.stats().await.map(|s| s.queued_bytes),
        Ok(all + shared)
    );
    // The rejected id was not recorded.
    assert_eq!(
        store
            .enqueue(envelope(100, b"to nobody", &[a]), limits)
            .await,
        Ok(Enqueued::Stored(vec![9]))
    );
}

/// Records the devices a store says were revoked.
#[derive(Default)]
pub(crate) struct Revocations(std::sync::Mutex<Vec<DeviceKey>>);

impl CommitListener for Revocations {
    fn committed(&self, _: &[Committed<'_>]) {}
    fn wake(&self, _: &DeviceKey) {}
    fn wake_all(&self) {}
    fn taken_over(&self, _: &DeviceKey) {}
    fn revoked(&self, device: &DeviceKey) {
        self.0.lock().expect("not poisoned").push(*device);
    }
}

fn list(account: DeviceKey, version: u64, devices: &[DeviceKey]) -> StoredList {
    StoredList {
        account,
        version,
        devices: devices.to_vec(),
        encoded: [&account[..], &version.to_be_bytes(), &devices.concat()].concat(),
    }
}

fn expecting(mut e: NewEnvelope, account: DeviceKey, devices: &[DeviceKey]) -> NewEnvelope {
    e.expected = vec![Expected {
        account,
        devices: devices.to_vec(),
    }];
    e
}

pub(crate) async fn device_lists_check_senders_and_revoke_devices<S: Store + Clone>(store: S) {
    let revocations = Arc::new(Revocations::default());
    store.set_listener(revocations.clone());
    let (a, b, c) = ([0xa1; 32], [0xb2; 32], [0xc3; 32]);
    for d in [a, b, c] {
        store.register(d, upload(2)).await.expect("registers");
    }
    // No list yet: the account is its primary alone.
    assert_eq!(store.device_list(a).await, Ok(None));
    let alone = store.enqueue(expecting(envelope(1, b"x", &[a]), a, &[a]), LIMITS);
    assert_eq!(alone.await, Ok(Enqueued::Stored(vec![1])));
    let stale = store.enqueue(expecting(envelope(2, b"x", &[a, b]), a, &[a, b]), LIMITS);
    assert_eq!(
        stale.await,
        Err(StoreError::StaleDevices(vec![Stale {
            account: a,
            missing: vec![],
            removed: vec![b],
        }]))
    );

    assert_eq!(
        store.publish_devices(list(a, 1, &[a, b, c])).await,
        Ok(Published::Stored(vec![]))
    );
    assert_eq!(store.device_list(a).await, Ok(Some(list(a, 1, &[a, b, c]))));
    // A stale sender stores nothing, a resend of its id is not a duplicate.
    let stale = store.enqueue(expecting(envelope(2, b"x", &[a, b]), a, &[a, b]), LIMITS);
    assert_eq!(
        stale.await,
        Err(StoreError::StaleDevices(vec![Stale {
            account: a,
            missing: vec![c],
            removed: vec![],
        }]))
    );
    let fresh = expecting(envelope(2, b"x", &[a, b, c]), a, &[c, b, a]);
    assert_eq!(
        store.enqueue(fresh, LIMITS).await,
        Ok(Enqueued::Stored(vec![2, 1, 1]))
    );
    assert_eq!(store.seen(b, 19_000).await, Ok(Seen::Queued(1)));
    assert_eq!(
        store.device_status(vec![a, b, [0xee; 32]]).await,
        Ok(vec![
            DeviceStatus {
                last_seen_day: 0,
                queued: 2
            },
            DeviceStatus {
                last_seen_day: 19_000,
                queued: 1
            },
            DeviceStatus::default(),
        ])
    );

    // Version 2 drops b: its queue, prekeys and registration go.
    assert_eq!(
        store.publish_devices(list(a, 2, &[a, c])).await,
        Ok(Published::Stored(vec![b]))
    );
    assert_eq!(*revocations.0.lock().expect("not poisoned"), vec![b]);
    assert_eq!(store.take_bundle(b).await, Ok(None));
    assert_eq!(store.queue_len(b).await, Ok(0));
    assert_eq!(store.seen(b, 19_001).await, Ok(Seen::Revoked));
    assert_eq!(store.register(b, upload(1)).await, Err(StoreError::Revoked));
    let to_b = store.enqueue(envelope(3, b"x", &[a, b]), LIMITS).await;
    assert_eq!(to_b, Err(StoreError::UnknownDevices(vec![b])));
    // Resends, rollbacks and lists naming revoked devices change nothing.
    assert_eq!(
        store.publish_devices(list(a, 2, &[a, c])).await,
        Ok(Published::Unchanged)
    );
    assert_eq!(
        store.publish_devices(list(a, 2, &[a])).await,
        Ok(Published::Old(2))
    );
    assert_eq!(
        store.publish_devices(list(a, 1, &[a])).await,
        Ok(Published::Old(2))
    );
    assert_eq!(
        store.publish_devices(list(a, 3, &[a, b])).await,
        Ok(Published::Revoked(vec![b]))
    );
    assert_eq!(store.device_list(a).await, Ok(Some(list(a, 2, &[a, c]))));

    // A device unregistering itself takes its queue with it; registering
    // again starts a new queue.
    assert_eq!(store.unregister(c).await, Ok(1));
    assert_eq!(store.unregister(c).await, Ok(0));
    assert_eq!(store.take_bundle(c).await, Ok(None));
    store.register(c, upload(0)).await.expect("registers again");
    assert_eq!(
        store.enqueue(envelope(4, b"y", &[c]), LIMITS).await,
        Ok(Enqueued::Stored(vec![1]))
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.devices, stats.queued_envelopes), (2, 3));
    // The shared body of message 2 lives on in a's queue alone.
    let page = store.page(a, 0, 10).await.expect("pages");
    assert_eq!(page.envelopes.len(), 2);
    assert_eq!(page.envelopes[1].body, b"x");
}
