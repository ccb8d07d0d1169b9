use super::*;
use crate::store::sqlite::SqliteStore;
use hush_crypto::devices::DeviceList;
use hush_crypto::{IdentityKeyPair, OneTimePreKeyPair, SignedPreKeyPair};
use proto::client_frame::Request;
use proto::relay_frame::Body;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

async fn relay(name: &str, limits: Limits) -> Relay<SqliteStore> {
    let path = crate::store::sqlite::tests::temp_db(name);
    Relay::new(SqliteStore::open(&path).await.expect("opens"), limits)
}

async fn call(
    relay: &Relay<SqliteStore>,
    conn: &mut Connection,
    id: u64,
    request: Request,
) -> Body {
    let frames = relay
        .handle(
            conn,
            proto::ClientFrame {
                request_id: id,
                request: Some(request),
            },
            Instant::now(),
            1_000,
        )
        .await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].request_id, id);
    frames[0].body.clone().expect("body")
}

fn code(body: &Body) -> Option<proto::ErrorCode> {
    match body {
        Body::Error(e) => proto::ErrorCode::try_from(e.code).ok(),
        _ => None,
    }
}

struct Device {
    identity: IdentityKeyPair,
    signed: SignedPreKeyPair,
    last_resort: SignedPreKeyPair,
    one_time: Vec<OneTimePreKeyPair>,
}

fn device(seed: u8) -> Device {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let identity = IdentityKeyPair::generate(&mut rng);
    Device {
        signed: SignedPreKeyPair::generate(&mut rng, &identity, 1),
        last_resort: SignedPreKeyPair::generate_last_resort(&mut rng, &identity, 2),
        one_time: (10..13)
            .map(|i| OneTimePreKeyPair::generate(&mut rng, i))
            .collect(),
        identity,
    }
}

fn key(d: &Device) -> Vec<u8> {
    d.identity.public().as_bytes().to_vec()
}

fn auth(d: &Device, exporter: &[u8; 32]) -> Request {
    Request::Authenticate(proto::Authenticate {
        device_key: key(d),
        signature: d
            .identity
            .sign(&[AUTH_CONTEXT, &exporter[..]].concat())
            .to_vec(),
    })
}

fn wire_signed(k: &SignedPreKeyPair) -> wire::SignedPreKey {
    let p = k.public();
    wire::SignedPreKey {
        id: p.id,
        public_key: p.public.to_vec(),
        signature: p.signature.to_vec(),
    }
}

fn register(d: &Device) -> Request {
    Request::RegisterPrekeys(proto::RegisterPrekeys {
        signed_prekey: Some(wire_signed(&d.signed)),
        last_resort_prekey: Some(wire_signed(&d.last_resort)),
        one_time_prekeys: d
            .one_time
            .iter()
            .map(|k| wire::OneTimePreKey {
                id: k.id(),
                public_key: k.public().public.to_vec(),
            })
            .collect(),
    })
}

fn send(id: u8, body: &[u8], to: &[&Device]) -> Request {
    Request::Send(proto::Send {
        message_id: vec![id; 16],
        body: body.to_vec(),
        recipients: to
            .iter()
            .map(|d| proto::Recipient {
                device_key: key(d),
                slot: vec![id; 48],
            })
            .collect(),
        expected: Vec::new(),
    })
}

async fn online(relay: &Relay<SqliteStore>, d: &Device, exporter: u8) -> Connection {
    let exporter = [exporter; 32];
    let mut conn = relay.connect(exporter, Instant::now());
    assert!(matches!(
        call(relay, &mut conn, 1, auth(d, &exporter)).await,
        Body::Authenticated(_)
    ));
    conn
}

/// Pages a connection's queue after `after` (which acknowledges up to it).
async fn fetch_page(
    relay: &Relay<SqliteStore>,
    conn: &mut Connection,
    id: u64,
    after: u64,
    max: u32,
) -> proto::Page {
    let request = Request::FetchPage(proto::FetchPage {
        after_seq: after,
        max_envelopes: max,
    });
    match call(relay, conn, id, request).await {
        Body::Page(page) => page,
        other => panic!("page expected, got {other:?}"),
    }
}

/// A registered device, online and paged to the end (live), and then
/// `sends` envelopes sent to it by another connection.
async fn live_with_sends(relay: &Relay<SqliteStore>, seed: u8, sends: u8) -> (Device, Connection) {
    let bob = device(seed);
    let mut conn = online(relay, &bob, 1).await;
    call(relay, &mut conn, 2, register(&bob)).await;
    let page = Request::FetchPage(proto::FetchPage {
        after_seq: 0,
        max_envelopes: 0,
    });
    assert!(matches!(
        call(relay, &mut conn, 3, page).await,
        Body::Page(proto::Page {
            queue_empty: true,
            ..
        })
    ));
    let mut sender = relay.connect([3; 32], Instant::now());
    for i in 1..=sends {
        call(relay, &mut sender, u64::from(i), send(i, &[i], &[&bob])).await;
    }
    (bob, conn)
}

#[tokio::test]
async fn auth_is_bound_to_the_connection() {
    let relay = relay("auth", Limits::default()).await;
    let alice = device(1);
    let mut conn = relay.connect([1; 32], Instant::now());
    // A proof made for another connection's exporter does not verify here.
    assert_eq!(
        code(&call(&relay, &mut conn, 1, auth(&alice, &[2; 32])).await),
        Some(proto::ErrorCode::BadSignature)
    );
    assert_eq!(conn.device(), None);
    assert_eq!(
        code(&call(&relay, &mut conn, 2, register(&alice)).await),
        Some(proto::ErrorCode::Unauthenticated)
    );
    assert!(matches!(
        call(&relay, &mut conn, 3, auth(&alice, &[1; 32])).await,
        Body::Authenticated(_)
    ));
    assert_eq!(conn.device(), Some(alice.identity.public().as_bytes()));
}

#[tokio::test]
async fn register_verifies_signatures_and_bundles_hand_out_each_key_once() {
    let relay = relay("directory", Limits::default()).await;
    let bob = device(2);
    let mut conn = online(&relay, &bob, 1).await;
    let mut bad = register(&bob);
    if let Request::RegisterPrekeys(r) = &mut bad
        && let Some(s) = r.signed_prekey.as_mut()
    {
        s.signature[0] ^= 1;
    }
    assert_eq!(
        code(&call(&relay, &mut conn, 2, bad).await),
        Some(proto::ErrorCode::BadSignature)
    );
    assert!(matches!(
        call(&relay, &mut conn, 3, register(&bob)).await,
        Body::Registered(proto::Registered {
            one_time_prekeys: 3
        })
    ));
    let mut stranger = relay.connect([9; 32], Instant::now());
    let mut ids = Vec::new();
    for i in 0..4 {
        let body = call(
            &relay,
            &mut stranger,
            10 + i,
            Request::FetchBundle(proto::FetchBundle {
                device_key: key(&bob),
            }),
        )
        .await;
        let Body::Bundle(proto::Bundle { bundle: Some(b) }) = body else {
            panic!("expected a bundle, got {body:?}")
        };
        let bundle =
            PreKeyBundle::try_from(prost::Message::encode_to_vec(&b).as_slice()).expect("decodes");
        let verified = bundle.verify().expect("signatures hold");
        ids.push(verified.bundle().extra.as_ref().map(|e| e.reference()));
    }
    use hush_crypto::PreKeyRef;
    assert_eq!(
        ids,
        vec![
            Some(PreKeyRef::OneTime(10)),
            Some(PreKeyRef::OneTime(11)),
            Some(PreKeyRef::OneTime(12)),
            Some(PreKeyRef::LastResort(2))
        ]
    );
    assert!(matches!(
        call(
            &relay,
            &mut conn,
            20,
            Request::PrekeyCount(proto::PrekeyCount {})
        )
        .await,
        Body::PrekeyStock(proto::PrekeyStock {
            one_time_prekeys: 0
        })
    ));
    let unknown = call(
        &relay,
        &mut stranger,
        30,
        Request::FetchBundle(proto::FetchBundle {
            device_key: vec![5; 32],
        }),
    )
    .await;
    assert_eq!(code(&unknown), Some(proto::ErrorCode::UnknownDevice));
}

#[tokio::test]
async fn bundle_fetches_are_rate_limited() {
    let limits = Limits {
        bundle_burst: 2,
        bundle_refill: Duration::from_secs(600),
        ..Limits::default()
    };
    let relay = relay("ratelimit", limits).await;
    let bob = device(3);
    let mut conn = online(&relay, &bob, 1).await;
    call(&relay, &mut conn, 2, register(&bob)).await;
    let mut other = relay.connect([7; 32], Instant::now());
    let fetch = || {
        Request::FetchBundle(proto::FetchBundle {
            device_key: key(&bob),
        })
    };
    assert!(matches!(
        call(&relay, &mut other, 1, fetch()).await,
        Body::Bundle(_)
    ));
    assert!(matches!(
        call(&relay, &mut other, 2, fetch()).await,
        Body::Bundle(_)
    ));
    assert_eq!(
        code(&call(&relay, &mut other, 3, fetch()).await),
        Some(proto::ErrorCode::RateLimited)
    );
    // The per-target limit holds across connections too.
    let mut third = relay.connect([8; 32], Instant::now());
    assert_eq!(
        code(&call(&relay, &mut third, 1, fetch()).await),
        Some(proto::ErrorCode::RateLimited)
    );
    assert_eq!(relay.counters.rate_limited.load(Ordering::Relaxed), 2);
}

/// Buckets of targets nobody fetched for a refill period are dropped:
/// asking for many keys does not grow the relay's memory for good.
#[tokio::test]
async fn per_target_buckets_are_dropped_once_refilled() {
    let limits = Limits {
        bundle_burst: 1_000_000,
        bundle_refill: Duration::from_secs(1),
        ..Limits::default()
    };
    let relay = relay("target_buckets", limits).await;
    let start = Instant::now();
    let mut conn = relay.connect([7; 32], start);
    for i in 0..5_000u32 {
        let mut target = [0u8; 32];
        target[..4].copy_from_slice(&i.to_be_bytes());
        let frames = relay
            .handle(
                &mut conn,
                proto::ClientFrame {
                    request_id: u64::from(i) + 1,
                    request: Some(Request::FetchBundle(proto::FetchBundle {
                        device_key: target.to_vec(),
                    })),
                },
                start,
                1_000,
            )
            .await;
        assert_eq!(
            code(frames[0].body.as_ref().expect("body")),
            Some(proto::ErrorCode::UnknownDevice)
        );
    }
    assert!(relay.target_buckets() >= 4_000, "all recent: kept");
    // Later every one of those has refilled: when the table has doubled
    // (8,192), they are dropped and only the recent ones stay.
    let later = start + Duration::from_secs(2);
    for i in 0..4_000u32 {
        let mut target = [1u8; 32];
        target[..4].copy_from_slice(&i.to_be_bytes());
        relay
            .handle(
                &mut conn,
                proto::ClientFrame {
                    request_id: 10_000 + u64::from(i),
                    request: Some(Request::FetchBundle(proto::FetchBundle {
                        device_key: target.to_vec(),
                    })),
                },
                later,
                1_000,
            )
            .await;
    }
    assert_eq!(relay.target_buckets(), 4_000);
}

#[tokio::test]
async fn offline_send_then_page_then_live_push_in_order() {
    let relay = relay("delivery", Limits::default()).await;
    let (alice, bob) = (device(4), device(5));
    for d in [&alice, &bob] {
        let mut c = online(&relay, d, 1).await;
        call(&relay, &mut c, 2, register(d)).await;
        relay.disconnect(&c);
    }
    let mut sender = relay.connect([3; 32], Instant::now());
    for i in 1..=3u8 {
        let body = call(&relay, &mut sender, u64::from(i), send(i, &[i], &[&bob])).await;
        assert!(
            matches!(
                body,
                Body::Sent(proto::Sent {
                    duplicate: false,
                    ..
                })
            ),
            "{body:?}"
        );
    }
    // A resend is acknowledged again but not stored twice.
    assert!(matches!(
        call(&relay, &mut sender, 9, send(2, &[2], &[&bob])).await,
        Body::Sent(proto::Sent {
            duplicate: true,
            ..
        })
    ));

    let mut bob_conn = online(&relay, &bob, 4).await;
    let page = fetch_page(&relay, &mut bob_conn, 2, 0, 2).await;
    assert_eq!(
        page.envelopes.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(!page.queue_empty);
    // While bob pages, a new envelope arrives: it must not be lost.
    call(&relay, &mut sender, 10, send(4, &[4], &[&bob])).await;
    let page = fetch_page(&relay, &mut bob_conn, 3, 2, 2).await;
    assert_eq!(
        page.envelopes.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(page.queue_empty);
    // The notification for seq 4 was buffered; it is already delivered.
    let Event::Notified(n) = bob_conn.next_event().await else {
        panic!("notification expected")
    };
    assert!(relay.deliver(&mut bob_conn, n).await.is_empty());
    // Live now: new envelopes are pushed at once, in order.
    call(&relay, &mut sender, 11, send(5, &[5], &[&bob])).await;
    let Event::Notified(n) = bob_conn.next_event().await else {
        panic!("notification expected")
    };
    let pushed = relay.deliver(&mut bob_conn, n).await;
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].request_id, 0);
    let Some(Body::Deliver(e)) = &pushed[0].body else {
        panic!("deliver expected")
    };
    assert_eq!((e.seq, e.body.clone()), (5, vec![5]));
    // Acked envelopes are gone; unacked ones stay.
    assert!(matches!(
        call(
            &relay,
            &mut bob_conn,
            4,
            Request::Ack(proto::Ack { seqs: vec![5] })
        )
        .await,
        Body::Acked(proto::Acked { deleted: 1 })
    ));
    assert_eq!(
        relay
            .store()
            .queue_len(*bob.identity.public().as_bytes())
            .await,
        Ok(2)
    );
}

#[tokio::test]
async fn a_gap_is_filled_from_the_store() {
    let relay = relay("gap", Limits::default()).await;
    let (bob, mut bob_conn) = live_with_sends(&relay, 7, 3).await;
    // Drop the first two notifications: the third arrives with a gap.
    for _ in 0..2 {
        let _ = bob_conn.next_event().await;
    }
    let Event::Notified(n) = bob_conn.next_event().await else {
        panic!("notification expected")
    };
    let pushed = relay.deliver(&mut bob_conn, n).await;
    let seqs: Vec<u64> = pushed
        .iter()
        .filter_map(|f| match &f.body {
            Some(Body::Deliver(e)) => Some(e.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // Filling the gap deleted nothing.
    assert_eq!(
        relay
            .store()
            .queue_len(*bob.identity.public().as_bytes())
            .await,
        Ok(3)
    );
}

#[tokio::test]
async fn a_second_connection_takes_over() {
    let relay = relay("takeover", Limits::default()).await;
    let bob = device(8);
    let mut first = online(&relay, &bob, 1).await;
    let _second = online(&relay, &bob, 2).await;
    assert!(matches!(first.next_event().await, Event::TakenOver));
    // The old connection leaving does not unregister the new one.
    relay.disconnect(&first);
    assert_eq!(relay.online_devices(), 1);
}

#[tokio::test]
async fn bad_requests_get_their_error_codes() {
    let limits = Limits {
        max_body: 100,
        queue: QueueLimits {
            max_envelopes: 1,
            max_bytes: 1 << 20,
        },
        ..Limits::default()
    };
    let relay = relay("errors", limits).await;
    let bob = device(9);
    let mut conn = online(&relay, &bob, 1).await;
    call(&relay, &mut conn, 2, register(&bob)).await;
    assert_eq!(
        code(&call(&relay, &mut conn, 3, send(1, &[0; 101], &[&bob])).await),
        Some(proto::ErrorCode::TooLarge)
    );
    assert_eq!(
        code(&call(&relay, &mut conn, 4, send(1, &[0; 10], &[&bob, &bob])).await),
        Some(proto::ErrorCode::Malformed)
    );
    assert_eq!(
        code(&call(&relay, &mut conn, 5, send(1, &[0; 10], &[])).await),
        Some(proto::ErrorCode::Malformed)
    );
    assert_eq!(
        code(&call(&relay, &mut conn, 6, send(1, &[0; 10], &[&device(10)])).await),
        Some(proto::ErrorCode::UnknownDevice)
    );
    assert!(matches!(
        call(&relay, &mut conn, 7, send(2, &[0; 10], &[&bob])).await,
        Body::Sent(_)
    ));
    assert_eq!(
        code(&call(&relay, &mut conn, 8, send(3, &[0; 10], &[&bob])).await),
        Some(proto::ErrorCode::Quota)
    );
    let mut short_id = send(4, &[0; 10], &[&bob]);
    if let Request::Send(s) = &mut short_id {
        s.message_id.truncate(3);
    }
    assert_eq!(
        code(&call(&relay, &mut conn, 9, short_id).await),
        Some(proto::ErrorCode::Malformed)
    );
    let frames = relay
        .handle(
            &mut conn,
            proto::ClientFrame {
                request_id: 0,
                request: None,
            },
            Instant::now(),
            0,
        )
        .await;
    assert!(matches!(frames[0].body, Some(Body::Error(_))));
    let frames = relay
        .handle(
            &mut conn,
            proto::ClientFrame {
                request_id: 5,
                request: None,
            },
            Instant::now(),
            0,
        )
        .await;
    assert_eq!(
        code(frames[0].body.as_ref().expect("body")),
        Some(proto::ErrorCode::Malformed)
    );
    assert_eq!(relay.counters.quota_rejections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_far_behind_live_connection_is_caught_up_page_by_page() {
    let limits = Limits {
        page_size: 2,
        ..Limits::default()
    };
    let relay = relay("resync", limits).await;
    let (_bob, mut bob_conn) = live_with_sends(&relay, 11, 7).await;
    // Lose the first six notifications: the seventh finds a gap of six,
    // more than a page.
    for _ in 0..6 {
        let _ = bob_conn.next_event().await;
    }
    let mut seqs = Vec::new();
    let Event::Notified(n) = bob_conn.next_event().await else {
        panic!("notification expected")
    };
    let mut frames = relay.deliver(&mut bob_conn, n).await;
    loop {
        for f in &frames {
            if let Some(Body::Deliver(e)) = &f.body {
                seqs.push(e.seq);
            }
        }
        let next = tokio::time::timeout(Duration::from_millis(200), bob_conn.next_event()).await;
        match next {
            Ok(Event::Resync) => frames = relay.resync(&mut bob_conn).await,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    assert_eq!(seqs, (1..=7).collect::<Vec<u64>>());
}

#[tokio::test]
async fn acks_are_bounded() {
    let relay = relay("ackbound", Limits::default()).await;
    let bob = device(12);
    let mut conn = online(&relay, &bob, 1).await;
    let too_many = Request::Ack(proto::Ack {
        seqs: (0..=MAX_ACK as u64).collect(),
    });
    assert_eq!(
        code(&call(&relay, &mut conn, 2, too_many).await),
        Some(proto::ErrorCode::Malformed)
    );
}

fn publish(list: &DeviceList) -> Request {
    Request::PublishDevices(proto::PublishDevices {
        list: Some(prost::Message::decode(list.to_bytes().as_slice()).expect("decodes")),
    })
}

fn consent(d: &Device, account: &Device, name: &str) -> hush_crypto::devices::Device {
    hush_crypto::devices::Device::consent(&d.identity, account.identity.public(), name)
        .expect("consents")
}

#[tokio::test]
async fn device_lists_are_verified_kept_and_enforced() {
    let relay = relay("device_lists", Limits::default()).await;
    let (primary, laptop, phone) = (device(40), device(41), device(42));
    let mut p = online(&relay, &primary, 1).await;
    call(&relay, &mut p, 2, register(&primary)).await;
    let mut l = online(&relay, &laptop, 2).await;
    call(&relay, &mut l, 2, register(&laptop)).await;
    let mut anonymous = relay.connect([9; 32], Instant::now());

    let v1 = DeviceList::first(&primary.identity, "desk").expect("signs");
    let v2 = v1
        .with_device(&primary.identity, consent(&laptop, &primary, "laptop"))
        .expect("signs");
    // Only a device of the list may publish it, and it must verify.
    assert_eq!(
        code(&call(&relay, &mut anonymous, 1, publish(&v2)).await),
        Some(proto::ErrorCode::Unauthenticated)
    );
    let mut phone_conn = online(&relay, &phone, 3).await;
    assert_eq!(
        code(&call(&relay, &mut phone_conn, 2, publish(&v2)).await),
        Some(proto::ErrorCode::Unauthenticated)
    );
    let mut forged = v2.clone();
    forged.signature[0] ^= 1;
    assert_eq!(
        code(&call(&relay, &mut l, 3, publish(&forged)).await),
        Some(proto::ErrorCode::BadSignature)
    );
    let foreign = DeviceList::signed(
        &primary.identity,
        2,
        vec![
            consent(&primary, &primary, "desk"),
            consent(&phone, &laptop, "phone"),
        ],
    )
    .expect("signs");
    assert_eq!(
        code(&call(&relay, &mut p, 3, publish(&foreign)).await),
        Some(proto::ErrorCode::BadSignature)
    );
    // Published by the new device itself; a resend is answered alike.
    for id in 4..6 {
        assert_eq!(
            call(&relay, &mut l, id, publish(&v2)).await,
            Body::Published(proto::Published {
                version: 2,
                revoked: vec![]
            })
        );
    }
    assert_eq!(
        code(&call(&relay, &mut p, 6, publish(&v1)).await),
        Some(proto::ErrorCode::OldVersion)
    );

    // Anyone fetches the list; the account's own devices see their status.
    let fetch = || {
        Request::FetchDevices(proto::FetchDevices {
            account: key(&primary),
        })
    };
    let Body::Devices(seen) = call(&relay, &mut anonymous, 2, fetch()).await else {
        panic!("devices expected");
    };
    assert_eq!(
        prost::Message::encode_to_vec(&seen.list.expect("list")),
        v2.to_bytes()
    );
    assert!(seen.status.is_empty());
    let Body::Devices(own) = call(&relay, &mut l, 7, fetch()).await else {
        panic!("devices expected");
    };
    let days: Vec<(Vec<u8>, u64)> = own
        .status
        .iter()
        .map(|s| (s.device_key.clone(), s.last_seen_day))
        .collect();
    // `online` authenticates before registering: no day recorded yet (the
    // store suite checks the days themselves).
    assert_eq!(days, vec![(key(&primary), 0), (key(&laptop), 0)]);
    let stranger = Request::FetchDevices(proto::FetchDevices {
        account: key(&phone),
    });
    assert_eq!(
        code(&call(&relay, &mut anonymous, 3, stranger).await),
        Some(proto::ErrorCode::UnknownDevice)
    );

    // A sender with an old idea of the account is told what changed.
    let mut stale = send(7, b"hi", &[&primary]);
    if let Request::Send(s) = &mut stale {
        s.expected = vec![proto::ExpectedDevices {
            account: key(&primary),
            devices: vec![key(&primary), key(&phone)],
        }];
    }
    let Body::Error(e) = call(&relay, &mut anonymous, 4, stale).await else {
        panic!("error expected");
    };
    assert_eq!(e.code, proto::ErrorCode::StaleDevices as i32);
    assert_eq!(e.device_keys, vec![key(&laptop), key(&phone)]);
    assert_eq!(
        e.stale,
        vec![proto::StaleDevices {
            account: key(&primary),
            missing: vec![key(&laptop)],
            removed: vec![key(&phone)],
        }]
    );
    let mut bad = send(8, b"hi", &[&primary]);
    if let Request::Send(s) = &mut bad {
        s.expected = vec![proto::ExpectedDevices {
            account: key(&primary),
            devices: vec![key(&primary), key(&primary)],
        }];
    }
    assert_eq!(
        code(&call(&relay, &mut anonymous, 5, bad).await),
        Some(proto::ErrorCode::Malformed)
    );

    // Unlinking: the laptop's connection is closed, it cannot come back.
    let v3 = v2
        .without_device(&primary.identity, laptop.identity.public())
        .expect("signs");
    assert_eq!(
        call(&relay, &mut p, 8, publish(&v3)).await,
        Body::Published(proto::Published {
            version: 3,
            revoked: vec![key(&laptop)]
        })
    );
    let event = l.next_event().await;
    assert!(matches!(event, Event::Revoked), "{event:?}");
    let mut again = relay.connect([7; 32], Instant::now());
    assert_eq!(
        code(&call(&relay, &mut again, 1, auth(&laptop, &[7; 32])).await),
        Some(proto::ErrorCode::Revoked)
    );
    let v4 = v3
        .with_device(&primary.identity, consent(&laptop, &primary, "laptop"))
        .expect("signs");
    let Body::Error(e) = call(&relay, &mut p, 9, publish(&v4)).await else {
        panic!("error expected");
    };
    assert_eq!(e.code, proto::ErrorCode::Revoked as i32);
    assert_eq!(e.device_keys, vec![key(&laptop)]);
    assert_eq!(relay.counters.revoked_devices.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn unregistering_deletes_the_queue_and_ends_the_authentication() {
    let relay = relay("unregister", Limits::default()).await;
    let (mailbox, mut conn) = live_with_sends(&relay, 50, 3).await;
    let mut sender = relay.connect([4; 32], Instant::now());
    assert_eq!(
        call(
            &relay,
            &mut conn,
            10,
            Request::Unregister(proto::Unregister {})
        )
        .await,
        Body::Unregistered(proto::Unregistered { deleted: 3 })
    );
    assert_eq!(conn.device(), None);
    assert_eq!(
        code(
            &call(
                &relay,
                &mut conn,
                11,
                Request::PrekeyCount(proto::PrekeyCount {})
            )
            .await
        ),
        Some(proto::ErrorCode::Unauthenticated)
    );
    assert_eq!(
        code(&call(&relay, &mut sender, 1, send(9, b"late", &[&mailbox])).await),
        Some(proto::ErrorCode::UnknownDevice)
    );
    assert_eq!(relay.online_devices(), 0);
}
