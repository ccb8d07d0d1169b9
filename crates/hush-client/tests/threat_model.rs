//! The claims of `audit/THREAT_MODEL.md` about whole clients: each test
//! plays one adversary (the relay operator, a malicious contact, a
//! malicious or removed group member, a thief of the profile directory)
//! against real profiles and the real `hush-relay` binary on loopback.
//!
//! The relay operator is played without changing the relay: it reads and
//! acknowledges a queue as the device would (authenticating a second
//! connection as it, which a relay needs no key for since it serves the
//! queue anyway), stores envelopes again, or is replaced by a fake relay
//! that serves whatever bundle it likes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Relay, temp_dir};
use hush_client::client::Event;
use hush_client::content::{Body, Content, GroupState, ReceiptKind};
use hush_client::profile::{ProfileError, Status};
use hush_client::vault::VaultError;
use hush_client::{Client, ClientError, Options, Unlock};
use hush_crypto::prekey::{ExtraPreKey, OneTimePreKeyPair, PreKeyBundle, SignedPreKeyPair};
use hush_crypto::{
    ContentType, IdentityKey, IdentityKeyPair, SenderKeyRecord, Session, seal, seal_many,
};
use hush_proto::Message;
use hush_proto::relay as proto;
use hush_relay::client::RelayClient;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use zeroize::Zeroizing;

fn pin(relay: &Relay) -> [u8; 32] {
    hush_relay::client::parse_fingerprint(&relay.fingerprint).unwrap()
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

/// Makes each of `clients` a contact of every other, under its name.
async fn introduce(clients: &mut [(&str, &mut Client)]) {
    let addresses: Vec<(String, String)> = clients
        .iter()
        .map(|(name, c)| (name.to_string(), c.address().to_string()))
        .collect();
    for (name, client) in clients.iter_mut() {
        for (other, address) in &addresses {
            if other != name {
                client.add_contact(other, address).await.unwrap();
            }
        }
    }
}

async fn identity(client: &Client) -> IdentityKeyPair {
    client.profile().identity().await.unwrap()
}

/// A connection of the relay operator's, authenticated as `device` (the
/// relay serves that queue; it needs no device key to read it).
async fn as_operator_on_queue_of(relay: &Relay, device: &IdentityKeyPair) -> RelayClient {
    let conn = RelayClient::connect(relay.addr, pin(relay)).await.unwrap();
    conn.authenticate(device).await.unwrap();
    conn
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Relay operator: after real clients exchange pairwise and group
/// messages (some still queued), the relay's database, write-ahead log,
/// TLS directory and log hold no message text, no group name and no
/// group id, in any encoding. (The sender is not stored either:
/// `hush-relay/tests/durability.rs`; here every sender is also a
/// registered device, so its key is in the directory by right.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_keeps_no_text_group_name_or_group_id() {
    let mut relay = Relay::start("tm-zero");
    let mut alice = common::client(&relay, "tm-zero-alice").await;
    let mut bob = common::client(&relay, "tm-zero-bob").await;
    let mut carol = common::client(&relay, "tm-zero-carol").await;
    introduce(&mut [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ])
    .await;
    let secret_texts = [
        "the pairwise secret is marmalade",
        "and the answer is quince",
        "the group secret is gooseberry",
        "still queued: elderflower",
    ];
    let group_name = "the rhubarb society";
    alice.send_text("bob", secret_texts[0]).await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), [secret_texts[0]]);
    bob.send_text("alice", secret_texts[1]).await.unwrap();
    assert_eq!(texts(&alice.sync().await.unwrap()), [secret_texts[1]]);
    let group = alice
        .create_group(group_name, &["bob".into(), "carol".into()])
        .await
        .unwrap();
    bob.sync().await.unwrap();
    alice
        .send_group_text(group_name, secret_texts[2])
        .await
        .unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), [secret_texts[2]]);
    // Carol reads nothing: her queue still holds the group's state, the
    // key and two group messages.
    alice
        .send_group_text(group_name, secret_texts[3])
        .await
        .unwrap();
    let bob_key = *identity(&bob).await.public().as_bytes();
    relay.kill9();

    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for text in secret_texts.iter().chain([&group_name]) {
        needles.push((format!("{text:?}"), text.as_bytes().to_vec()));
        needles.push((format!("{text:?} (hex)"), hex::encode(text).into_bytes()));
    }
    needles.push(("the group id".into(), group.id.to_vec()));
    needles.push((
        "the group id (hex)".into(),
        hex::encode(group.id).into_bytes(),
    ));
    let files = files_under(&relay.data);
    assert!(files.iter().any(|f| f.ends_with("relay.sqlite")));
    assert!(files.iter().any(|f| f == &relay.log));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for (what, needle) in &needles {
            assert!(!contains(&bytes, needle), "{} holds {what}", file.display());
        }
    }
    // The scan finds what is there: a recipient's key is its queue id.
    assert!(
        files
            .iter()
            .any(|f| contains(&std::fs::read(f).unwrap(), &bob_key)),
        "scan sanity check"
    );
}

fn metrics_of(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// Relay operator, sender identity: a client hands envelopes over on a
/// connection that never authenticates, apart from the one its queue is
/// read on; the relay counts two connections and one device online.
/// (Both come from the same IP address: `THREAT_MODEL.md`, N3.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_go_over_a_connection_that_never_authenticates() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let relay = Relay::start_with("tm-anon", &format!("metrics = \"{metrics}\"\n"));
    let mut bob = common::client(&relay, "tm-anon-bob").await;
    let mut alice = common::client(&relay, "tm-anon-alice").await;
    introduce(&mut [("alice", &mut alice), ("bob", &mut bob)]).await;
    bob.close().await;
    alice.sync().await.unwrap();
    for i in 0..3 {
        alice.send_text("bob", &format!("m{i}")).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = tokio::task::spawn_blocking(move || metrics_of(metrics))
            .await
            .unwrap();
        let (connections, online) = (
            metric(&text, "hush_relay_connections"),
            metric(&text, "hush_relay_devices_online"),
        );
        if connections == 2 && online == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{connections} connections, {online} devices online"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still both: the sending connection did not take the reading one over.
    assert!(alice.sync().await.is_ok());
}

/// Relay operator, replay and tampering: an envelope the relay stores
/// again (under a new id, so its own duplicate check does not stop it),
/// or alters in its body or its slot, shows nothing; the conversation
/// goes on unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_altered_envelope_shows_nothing() {
    let relay = Relay::start("tm-replay");
    let mut alice = common::client(&relay, "tm-replay-alice").await;
    let mut bob = common::client(&relay, "tm-replay-bob").await;
    introduce(&mut [("alice", &mut alice), ("bob", &mut bob)]).await;
    let bob_identity = identity(&bob).await;
    let bob_key = *bob_identity.public().as_bytes();

    for (round, text) in ["first (prekey message)", "second (ratchet message)"]
        .into_iter()
        .enumerate()
    {
        alice.send_text("bob", text).await.unwrap();
        // The operator copies the envelope as stored, without taking it.
        let operator = as_operator_on_queue_of(&relay, &bob_identity).await;
        let page = operator.fetch_page(0).await.unwrap();
        let envelope: proto::Envelope = page.envelopes.last().cloned().unwrap();
        operator.close().await;
        bob.disconnect();
        assert_eq!(texts(&bob.sync().await.unwrap()), [text], "round {round}");

        let sender = RelayClient::connect(relay.addr, pin(&relay)).await.unwrap();
        let slot: [u8; 48] = envelope.slot.as_slice().try_into().unwrap();
        let mut altered_body = envelope.body.clone();
        let last = altered_body.len() - 1;
        altered_body[last] ^= 1;
        let mut altered_slot = slot;
        altered_slot[40] ^= 1;
        for (n, (body, slot)) in [
            (envelope.body.clone(), slot),
            (altered_body, slot),
            (envelope.body.clone(), altered_slot),
        ]
        .into_iter()
        .enumerate()
        {
            let mut id = [0u8; 16];
            id[0] = 0xee;
            id[1] = round as u8;
            id[2] = n as u8;
            sender
                .send(id, body, &[(bob_key, slot)], &[])
                .await
                .unwrap();
        }
        let events = bob.sync().await.unwrap();
        assert!(texts(&events).is_empty(), "round {round}: {events:?}");
    }
    alice.send_text("bob", "third").await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), ["third"]);
    let (_, history) = bob.history("alice", 100).await.unwrap();
    assert_eq!(history.len(), 3);
}

/// Relay operator, dropping: an envelope the relay deletes unread is
/// never shown, and the only sign of it is at the sender, whose message
/// stays `sent` and never becomes `delivered` (receipts are end-to-end:
/// the relay cannot make one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_envelope_leaves_its_sender_without_a_receipt() {
    let relay = Relay::start("tm-drop");
    let mut alice = common::client(&relay, "tm-drop-alice").await;
    let mut bob = common::client(&relay, "tm-drop-bob").await;
    introduce(&mut [("alice", &mut alice), ("bob", &mut bob)]).await;
    alice.send_text("bob", "kept").await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), ["kept"]);

    let dropped = alice.send_text("bob", "dropped").await.unwrap();
    let operator = as_operator_on_queue_of(&relay, &identity(&bob).await).await;
    let page = operator.fetch_page(0).await.unwrap();
    let seqs: Vec<u64> = page.envelopes.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), 1);
    assert_eq!(operator.ack(seqs).await.unwrap(), 1);
    operator.close().await;
    bob.disconnect();
    assert!(texts(&bob.sync().await.unwrap()).is_empty());

    let after = alice.send_text("bob", "after").await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), ["after"]);
    alice.sync().await.unwrap();
    let (_, history) = alice.history("bob", 100).await.unwrap();
    let status = |id| history.iter().find(|m| m.id == id).unwrap().status;
    assert_eq!(status(dropped), Status::Sent);
    assert_eq!(status(after), Status::Delivered);
}

/// A relay that does not run the reference code: it answers every bundle
/// fetch with the next of `bundles`.
async fn fake_relay(bundles: Vec<Vec<u8>>) -> (std::net::SocketAddr, [u8; 32]) {
    let dir = temp_dir("tm-fake-relay");
    let tls = hush_relay::tls::load_or_create(&dir).unwrap();
    let pin = hush_relay::client::parse_fingerprint(&tls.fingerprint()).unwrap();
    let options = hush_relay::server::TransportOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        keep_alive: Duration::from_secs(15),
        idle_timeout: Duration::from_secs(60),
        max_streams: 1,
        udp_buffer: 1 << 20,
    };
    let (endpoint, _) = hush_relay::server::bind(&options, tls).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        let mut bundles = bundles.into_iter();
        while let Some(incoming) = endpoint.accept().await {
            let Ok(connection) = incoming.await else {
                continue;
            };
            let Ok((mut send, mut recv)) = connection.accept_bi().await else {
                continue;
            };
            let mut reader = hush_relay::frame::Reader::new();
            while let Ok(Some(frame)) = reader.next::<proto::ClientFrame, _>(&mut recv).await {
                let Some(proto::client_frame::Request::FetchBundle(_)) = frame.request else {
                    continue;
                };
                let Some(bundle) = bundles.next() else {
                    return;
                };
                let answer = proto::RelayFrame {
                    request_id: frame.request_id,
                    body: Some(proto::relay_frame::Body::Bundle(proto::Bundle {
                        bundle: Some(
                            hush_proto::wire::PreKeyBundle::decode(bundle.as_slice()).unwrap(),
                        ),
                    })),
                };
                if hush_relay::frame::write(&mut send, &answer).await.is_err() {
                    break;
                }
            }
        }
    });
    (addr, pin)
}

/// Relay operator, substitution: asked for Bob's bundle, a relay that
/// serves Mallory's (her identity), or Bob's identity with Mallory's
/// signed or last-resort prekey, is refused: the client asks for the
/// identity its contact's address pins and checks every signature under
/// it. Bob's genuine bundle from the same fake relay is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cannot_substitute_an_identity_or_a_prekey() {
    let mut rng = ChaCha20Rng::from_seed([21; 32]);
    let bob = IdentityKeyPair::generate(&mut rng);
    let mallory = IdentityKeyPair::generate(&mut rng);
    let bob_signed = SignedPreKeyPair::generate(&mut rng, &bob, 1).public();
    let bob_last = SignedPreKeyPair::generate_last_resort(&mut rng, &bob, 2).public();
    let mallory_signed = SignedPreKeyPair::generate(&mut rng, &mallory, 1).public();
    let mallory_last = SignedPreKeyPair::generate_last_resort(&mut rng, &mallory, 2).public();
    let one_time = ExtraPreKey::OneTime(OneTimePreKeyPair::generate(&mut rng, 3).public());
    let bundle = |identity: &IdentityKey, signed, extra| {
        PreKeyBundle {
            identity: identity.clone(),
            signed_prekey: signed,
            extra: Some(extra),
        }
        .to_bytes()
    };
    let served = vec![
        bundle(mallory.public(), mallory_signed.clone(), one_time.clone()),
        bundle(bob.public(), mallory_signed, one_time.clone()),
        bundle(
            bob.public(),
            bob_signed.clone(),
            ExtraPreKey::LastResort(mallory_last),
        ),
        bundle(bob.public(), bob_signed, ExtraPreKey::LastResort(bob_last)),
    ];
    let (addr, pin) = fake_relay(served).await;
    let client = RelayClient::connect(addr, pin).await.unwrap();
    for (what, expected) in [
        ("mallory's identity", "another identity"),
        ("mallory's signed prekey", "signed prekey"),
        ("mallory's last-resort prekey", "last-resort"),
    ] {
        match client.fetch_bundle(bob.public()).await {
            Err(hush_relay::client::ClientError::BadBundle(why)) => {
                assert!(why.contains(expected), "{what}: {why}");
            }
            other => panic!("{what} was not refused: {other:?}"),
        }
    }
    let genuine = client.fetch_bundle(bob.public()).await.unwrap();
    assert_eq!(&genuine.bundle().identity, bob.public());
}

/// Malicious contact: Mallory seals, as herself, a first message made
/// with another identity of hers. Before the fix (`REVIEW.md`, C2) Bob
/// made a session with the second identity and filed it, and the
/// message, under the first; now the message is dropped. The same first
/// message sealed by the identity that made it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_must_come_from_the_identity_that_made_it() {
    let relay = Relay::start("tm-bind");
    let mut bob = common::client(&relay, "tm-bind-bob").await;
    let bob_public = identity(&bob).await.public().clone();
    let mut rng = ChaCha20Rng::from_seed([22; 32]);
    let sealer = IdentityKeyPair::generate(&mut rng);
    let maker = IdentityKeyPair::generate(&mut rng);
    let mallory = RelayClient::connect(relay.addr, pin(&relay)).await.unwrap();
    for (n, (envelope_sender, text)) in [
        (&sealer, "sealed by one identity, made by another"),
        (&maker, "sealed by the identity that made it"),
    ]
    .into_iter()
    .enumerate()
    {
        let bundle = mallory.fetch_bundle(&bob_public).await.unwrap();
        let Some(ExtraPreKey::OneTime(one_time)) = &bundle.bundle().extra else {
            panic!("Bob has one-time prekeys")
        };
        let one_time = one_time.id;
        let mut session = Session::initiate(&mut rng, &maker, &bundle).unwrap();
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let content = Content {
            id,
            sent_at_ms: 1,
            counter: 1,
            body: Body::Text(text.into()),
        };
        let message = session.encrypt(&mut rng, &content.to_bytes()).unwrap();
        assert_eq!(message.content_type(), ContentType::PreKey);
        let envelope = seal(
            &mut rng,
            envelope_sender,
            1,
            &bob_public,
            message.content_type(),
            &message.to_bytes(),
        )
        .unwrap();
        mallory
            .send(
                id,
                envelope.body.to_bytes(),
                &[(*bob_public.as_bytes(), envelope.slot)],
                &[],
            )
            .await
            .unwrap();
        let shown = texts(&bob.sync().await.unwrap());
        let (_, _, kept) = bob.profile().prekeys(None).await.unwrap();
        let still_held = kept.iter().any(|k| k.id() == one_time);
        if n == 0 {
            assert!(shown.is_empty(), "{shown:?}");
            assert!(still_held, "a dropped message uses up no prekey");
        } else {
            assert_eq!(shown, [text]);
            // Forward secrecy of the handshake: the one-time prekey's
            // secret is deleted with the message that used it.
            assert!(!still_held, "one-time prekey {one_time} is still held");
        }
    }
    let contacts = bob.contacts().await.unwrap();
    assert!(contacts.iter().all(|c| c.identity != *sealer.public()));
    assert!(contacts.iter().any(|c| c.identity == *maker.public()));
}

/// Trust on first use, never silently changed: a message from a new
/// identity is never shown under a known contact's name; giving a
/// contact a new identity marks it changed and unverified, changes its
/// safety number, and sending waits until the user accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_identity_is_never_accepted_silently() {
    let relay = Relay::start("tm-tofu");
    let mut alice = common::client(&relay, "tm-tofu-alice").await;
    let mut bob = common::client(&relay, "tm-tofu-bob").await;
    let mut stranger = common::client(&relay, "tm-tofu-stranger").await;
    let mut new_bob = common::client(&relay, "tm-tofu-new-bob").await;
    introduce(&mut [("alice", &mut alice), ("bob", &mut bob)]).await;
    alice.send_text("bob", "hello bob").await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), ["hello bob"]);

    // A stranger claiming to be Bob is shown as what it is.
    stranger
        .add_contact("alice", &alice.address().to_string())
        .await
        .unwrap();
    stranger.send_text("alice", "it is me, bob").await.unwrap();
    let events = alice.sync().await.unwrap();
    let Some(Event::Message(m)) = events.iter().find(|e| matches!(e, Event::Message(_))) else {
        panic!("no message: {events:?}")
    };
    assert!(m.from.starts_with("unknown-"), "shown as {}", m.from);
    assert_eq!(m.address, stranger.address().to_string());

    // Bob's new identity (a reinstall, or a relay's substitute) replaces
    // the old one only once the user accepts it.
    let (_, before) = alice.safety_number("bob").await.unwrap();
    let (contact, changed) = alice
        .add_contact("bob", &new_bob.address().to_string())
        .await
        .unwrap();
    assert!(changed && contact.changed && !contact.verified);
    let (_, after) = alice.safety_number("bob").await.unwrap();
    assert_ne!(before.digits(), after.digits());
    assert!(matches!(
        alice.send_text("bob", "x").await,
        Err(ClientError::IdentityChanged(_))
    ));
    assert!(matches!(
        alice.create_group("g", &["bob".into()]).await,
        Err(ClientError::IdentityChanged(_))
    ));
    assert!(texts(&new_bob.sync().await.unwrap()).is_empty());
    alice.verify("bob").await.unwrap();
    alice.send_text("bob", "accepted").await.unwrap();
    assert_eq!(texts(&new_bob.sync().await.unwrap()), ["accepted"]);
}

/// Malicious contact, receipts and recalls: a contact who learns the id
/// of a message sent to someone else can neither mark it delivered or
/// read (`REVIEW.md`, C3) nor withdraw it; the real recipient's receipt
/// still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_cannot_mark_what_was_sent_to_someone_else() {
    let relay = Relay::start("tm-receipt");
    let mut alice = common::client(&relay, "tm-receipt-alice").await;
    let mut bob = common::client(&relay, "tm-receipt-bob").await;
    let mut mallory = common::client(&relay, "tm-receipt-mallory").await;
    introduce(&mut [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("mallory", &mut mallory),
    ])
    .await;
    let id = alice.send_text("bob", "for bob").await.unwrap();
    mallory
        .send_control("alice", Body::Receipt(ReceiptKind::Read, vec![id]))
        .await
        .unwrap();
    mallory
        .send_control("alice", Body::Recall(id))
        .await
        .unwrap();
    let events = alice.sync().await.unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Status { id: i, .. } if *i == id)),
        "{events:?}"
    );
    let status = |alice_history: &[hush_client::profile::StoredMessage]| {
        alice_history.iter().find(|m| m.id == id).unwrap().status
    };
    let (_, history) = alice.history("bob", 10).await.unwrap();
    assert_eq!(status(&history), Status::Sent);
    // Nor withdraw it.
    assert!(history.iter().all(|m| !m.recalled && m.text == "for bob"));
    bob.sync().await.unwrap();
    alice.sync().await.unwrap();
    assert_eq!(
        status(&alice.history("bob", 10).await.unwrap().1),
        Status::Delivered
    );
}

/// Malicious and removed group members. A member who is not an admin
/// cannot change the group. A removed member: is no longer a recipient;
/// forgets the group's keys; is given no key when it asks; holds old
/// chains that open nothing sent after (everyone left rotated); and its
/// own group messages are dropped by the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_cannot_overreach_and_removed_ones_read_nothing_after() {
    let relay = Relay::start("tm-group");
    let mut alice = common::client(&relay, "tm-group-alice").await;
    let mut bob = common::client(&relay, "tm-group-bob").await;
    let mut carol = common::client(&relay, "tm-group-carol").await;
    introduce(&mut [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ])
    .await;
    let club = alice
        .create_group("club", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    alice.send_group_text("club", "a1").await.unwrap();
    bob.sync().await.unwrap();
    bob.send_group_text("club", "b1").await.unwrap();
    carol.sync().await.unwrap();
    carol.send_group_text("club", "c1").await.unwrap();
    assert_eq!(texts(&alice.sync().await.unwrap()), ["b1", "c1"]);
    assert_eq!(texts(&bob.sync().await.unwrap()), ["c1"]);

    let ids: Vec<IdentityKeyPair> = vec![
        identity(&alice).await,
        identity(&bob).await,
        identity(&carol).await,
    ];
    let (alice_id, bob_id, carol_id) = (&ids[0], &ids[1], &ids[2]);

    // Bob is no admin: his update (a rename, Alice removed, himself admin)
    // changes nothing at Carol's or Alice's.
    let hijack = GroupState {
        id: club.id,
        version: 99,
        name: "bob's club".into(),
        members: vec![*bob_id.public().as_bytes(), *carol_id.public().as_bytes()],
        admins: vec![*bob_id.public().as_bytes()],
    };
    for victim in ["carol", "alice"] {
        bob.send_control(victim, Body::GroupUpdate(hijack.clone()))
            .await
            .unwrap();
    }
    for client in [&mut carol, &mut alice] {
        client.sync().await.unwrap();
        let groups = client.groups().await.unwrap();
        let held = groups.iter().find(|g| g.id == club.id).unwrap();
        assert_eq!(
            (held.name.as_str(), held.version),
            ("club", 1),
            "the update was applied"
        );
        assert_eq!(held.admins, [alice_id.public().clone()]);
        assert_eq!(held.members.len(), 3);
    }

    // What Carol holds before she is removed.
    let carol_has_of_alice = carol
        .profile()
        .sender_key(&club.id, alice_id.public())
        .await
        .unwrap()
        .unwrap();
    let carol_has_of_bob = carol
        .profile()
        .sender_key(&club.id, bob_id.public())
        .await
        .unwrap()
        .unwrap();
    let carol_own = carol
        .profile()
        .own_sender_key(&club.id)
        .await
        .unwrap()
        .unwrap();

    alice.group_remove("club", "carol").await.unwrap();
    bob.sync().await.unwrap();
    let events = carol.sync().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Group { member: false, .. })),
        "{events:?}"
    );
    alice.send_group_text("club", "a2").await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), ["a2"]);
    bob.send_group_text("club", "b2").await.unwrap();
    assert_eq!(texts(&alice.sync().await.unwrap()), ["b2"]);
    assert!(texts(&carol.sync().await.unwrap()).is_empty());

    // Carol's device forgot the group's keys, and asking gets her none.
    carol
        .send_control("alice", Body::SenderKeyRequest(club.id))
        .await
        .unwrap();
    alice.sync().await.unwrap();
    carol.sync().await.unwrap();
    for sender in [alice_id, bob_id] {
        assert!(
            carol
                .profile()
                .sender_key(&club.id, sender.public())
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(
        carol
            .profile()
            .own_sender_key(&club.id)
            .await
            .unwrap()
            .is_none()
    );
    // The others forgot hers.
    for client in [&alice, &bob] {
        assert!(
            client
                .profile()
                .sender_key(&club.id, carol_id.public())
                .await
                .unwrap()
                .is_none()
        );
    }

    // A Carol who kept her old chains still reads nothing sent now:
    // Alice's and Bob's current chains are new.
    for (client, carol_copy) in [(&alice, &carol_has_of_alice), (&bob, &carol_has_of_bob)] {
        let own = client
            .profile()
            .own_sender_key(&club.id)
            .await
            .unwrap()
            .unwrap();
        let mut current = SenderKeyRecord::from_bytes(&own).unwrap();
        let probe = current.encrypt(b"probe").unwrap();
        let mut old = SenderKeyRecord::from_bytes(carol_copy).unwrap();
        assert!(matches!(
            old.decrypt(&probe),
            Err(hush_crypto::DecryptError::UnknownSenderKey { .. })
        ));
    }

    // Her group message, made with her kept chain and sealed to both, is
    // dropped by both.
    let mut rng = ChaCha20Rng::from_seed([23; 32]);
    let mut record = SenderKeyRecord::from_bytes(&carol_own).unwrap();
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let content = Content {
        id,
        sent_at_ms: 1,
        counter: 50,
        body: Body::Text("carol after her removal".into()),
    };
    let message = record.encrypt(&Zeroizing::new(content.to_bytes())).unwrap();
    let recipients = [alice_id.public().clone(), bob_id.public().clone()];
    let (body, slots) = seal_many(
        &mut rng,
        carol_id,
        1,
        &recipients,
        ContentType::SenderKey,
        &message.to_bytes(),
    )
    .unwrap();
    let sender = RelayClient::connect(relay.addr, pin(&relay)).await.unwrap();
    let to: Vec<([u8; 32], [u8; 48])> = recipients
        .iter()
        .map(|r| *r.as_bytes())
        .zip(slots)
        .collect();
    sender.send(id, body.to_bytes(), &to, &[]).await.unwrap();
    assert!(texts(&alice.sync().await.unwrap()).is_empty());
    assert!(texts(&bob.sync().await.unwrap()).is_empty());
}

/// Stolen device, passphrase profile: nothing in the profile directory
/// opens without the passphrase. No key file is written; no message
/// text, identity seed, prekey secret, session key, sender key, the
/// passphrase or the profile key is in any file in the clear; a wrong or
/// missing passphrase is refused; the key is Argon2id (64 MiB, 3 passes,
/// 1 lane) over the passphrase and the stored salt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_passphrase_profile_gives_nothing_without_the_passphrase() {
    let relay = Relay::start("tm-stolen");
    let home = temp_dir("tm-stolen-alice");
    let passphrase = "tm: a long passphrase nobody guesses";
    let mut alice = Client::init(
        &home,
        &relay.address(),
        pin(&relay),
        Unlock::Passphrase(Zeroizing::new(passphrase.into())),
        Options::default(),
    )
    .await
    .unwrap();
    let mut bob = common::client(&relay, "tm-stolen-bob").await;
    introduce(&mut [("alice", &mut alice), ("bob", &mut bob)]).await;
    let secret_texts = ["alice writes damson", "bob writes medlar", "group: sloe"];
    alice.send_text("bob", secret_texts[0]).await.unwrap();
    bob.sync().await.unwrap();
    bob.send_text("alice", secret_texts[1]).await.unwrap();
    alice.sync().await.unwrap();
    let group = alice
        .create_group("orchard", &["bob".into()])
        .await
        .unwrap();
    bob.sync().await.unwrap();
    bob.send_group_text("orchard", secret_texts[2])
        .await
        .unwrap();
    assert_eq!(texts(&alice.sync().await.unwrap()), [secret_texts[2]]);

    // Everything secret Alice's profile holds, read through the profile.
    let profile = alice.profile();
    let mut needles: Vec<(String, Vec<u8>)> = secret_texts
        .iter()
        .map(|t| (format!("{t:?}"), t.as_bytes().to_vec()))
        .collect();
    needles.push(("the passphrase".into(), passphrase.as_bytes().to_vec()));
    let me = profile.identity().await.unwrap();
    let seed = hush_proto::state::IdentityRecord::decode(me.to_bytes().as_slice())
        .unwrap()
        .seed;
    needles.push(("the identity seed".into(), seed));
    let (signed, last_resort, one_time) = profile.prekeys(None).await.unwrap();
    for key in signed.iter().chain(&last_resort) {
        let record =
            hush_proto::state::SignedPreKeyRecord::decode(key.to_bytes().as_slice()).unwrap();
        needles.push((format!("signed prekey {}", key.id()), record.secret));
    }
    for key in one_time.iter().take(5) {
        let record =
            hush_proto::state::OneTimePreKeyRecord::decode(key.to_bytes().as_slice()).unwrap();
        needles.push((format!("one-time prekey {}", key.id()), record.secret));
    }
    let bob_contact = profile.contact("bob").await.unwrap().unwrap();
    let (devices, _) = profile.conversation(bob_contact.id).await.unwrap();
    let (device, sessions) = devices.first().unwrap();
    assert_eq!(device, bob_contact.identity.as_bytes());
    let mut rest = sessions.as_slice();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let (one, tail) = tail.split_at(u32::from_be_bytes(*len) as usize);
        let record = hush_proto::state::SessionRecord::decode(one).unwrap();
        needles.push(("a root key".into(), record.root_key));
        needles.push(("a ratchet secret".into(), record.ratchet_secret));
        for chain in record.receiving {
            needles.push((
                "a receiving chain key".into(),
                chain.chain.unwrap().chain_key,
            ));
        }
        rest = tail;
    }
    for record in [
        profile.own_sender_key(&group.id).await.unwrap().unwrap(),
        profile
            .sender_key(&group.id, &bob_contact.identity)
            .await
            .unwrap()
            .unwrap(),
    ] {
        let record = hush_proto::state::SenderKeyRecord::decode(record.as_slice()).unwrap();
        for state in record.states {
            needles.push(("a sender chain key".into(), state.chain.unwrap().chain_key));
            if !state.signing_secret.is_empty() {
                needles.push(("a sender signing seed".into(), state.signing_secret));
            }
        }
    }
    let salt: [u8; 16] = profile
        .meta("salt")
        .await
        .unwrap()
        .unwrap()
        .try_into()
        .unwrap();
    let check = profile.meta("check").await.unwrap().unwrap();
    let derive = |memory_kib: u32| {
        let params = argon2::Params::new(memory_kib, 3, 1, Some(32)).unwrap();
        let mut key = [0u8; 32];
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), &salt, &mut key)
            .unwrap();
        key
    };
    let key = derive(64 * 1024);
    needles.push(("the profile key".into(), key.to_vec()));
    let bob_key = *bob_contact.identity.as_bytes();
    alice.close().await;

    let files = files_under(&home);
    assert!(
        !home.join("key").exists(),
        "a passphrase profile has no key file"
    );
    assert!(files.iter().any(|f| f.ends_with("profile.sqlite")));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for (what, needle) in &needles {
            assert!(!contains(&bytes, needle), "{} holds {what}", file.display());
        }
    }
    assert!(
        files
            .iter()
            .any(|f| contains(&std::fs::read(f).unwrap(), &bob_key)),
        "scan sanity check: contacts' identities are stored as they are"
    );

    // The profile key is exactly Argon2id(passphrase, salt) with the
    // documented cost: it opens the stored check value; a cheaper
    // derivation does not.
    let open_check = |key: [u8; 32]| {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(&chacha20poly1305::Key::from(key));
        let nonce: [u8; 24] = check[1..25].try_into().unwrap();
        cipher
            .decrypt(
                &chacha20poly1305::XNonce::from(nonce),
                Payload {
                    msg: &check[25..],
                    aad: b"check",
                },
            )
            .ok()
    };
    assert_eq!(check[0], 1);
    assert_eq!(open_check(key).as_deref(), Some(&b"hush profile"[..]));
    assert_eq!(open_check(derive(32 * 1024)), None);

    for wrong in [Some("tm: a long passphrase nobody guesses!"), None] {
        match Client::open(&home, wrong, Options::default()).await {
            Err(ClientError::Profile(ProfileError::Vault(VaultError::WrongKey))) => {}
            other => panic!("{wrong:?} opened the profile: {other:?}"),
        }
    }
    let mut alice = Client::open(&home, Some(passphrase), Options::default())
        .await
        .unwrap();
    let (_, history) = alice.history("bob", 10).await.unwrap();
    assert_eq!(history.len(), 2);
}

/// Stolen device, key-file profile (the default): the key lies beside
/// the database, so whoever copies the directory opens the profile with
/// no secret at all. Only a passphrase (or disk encryption) protects a
/// stolen device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_profile_opens_for_whoever_copies_its_directory() {
    let relay = Relay::start("tm-keyfile");
    let mut alice = common::client(&relay, "tm-keyfile-alice").await;
    let mut bob = common::client(&relay, "tm-keyfile-bob").await;
    introduce(&mut [("alice", &mut alice), ("bob", &mut bob)]).await;
    bob.send_text("alice", "readable by a thief").await.unwrap();
    alice.sync().await.unwrap();
    let home = alice.profile().home().to_path_buf();
    alice.close().await;
    let copy = temp_dir("tm-keyfile-copy");
    for file in files_under(&home) {
        std::fs::copy(&file, copy.join(file.file_name().unwrap())).unwrap();
    }
    let mut thief = Client::open(&copy, None, Options::default()).await.unwrap();
    let (_, history) = thief.history("bob", 10).await.unwrap();
    assert_eq!(history[0].text, "readable by a thief");
}

/// A tmux server of this test's own (as in `tui.rs`).
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux is needed for the terminal test (.ci/test installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Stolen device, shoulder surfing: a passphrase typed at the terminal
/// is not shown (it used to be echoed, and stayed in the scrollback:
/// `REVIEW.md`, C4). Backspace corrects it; the profile opens with what
/// was meant.
#[test]
fn a_passphrase_typed_at_the_terminal_is_not_shown() {
    let relay = Relay::start("tm-echo");
    let home = temp_dir("tm-echo");
    let tmux = Tmux(format!("hush-tm-echo-{}", std::process::id()));
    let passphrase = "plum-tree-in-the-rain";
    let command = format!(
        "env -u HUSH_PASSPHRASE -u HUSH_HOME {} --home {} init --relay {} --pin {} --passphrase; echo INIT-EXITED-$?; sleep 60",
        env!("CARGO_BIN_EXE_hush"),
        home.display(),
        relay.address(),
        relay.fingerprint
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "200",
        "-y",
        "20",
        &command,
    ]);
    assert!(started.status.success(), "tmux: {started:?}");
    tmux.wait_for("new passphrase:");
    assert!(
        tmux.run(&["send-keys", "-t", "t", "-l", passphrase])
            .status
            .success()
    );
    assert!(
        tmux.run(&["send-keys", "-t", "t", "-l", "oops"])
            .status
            .success()
    );
    for _ in 0..4 {
        assert!(
            tmux.run(&["send-keys", "-t", "t", "BSpace"])
                .status
                .success()
        );
    }
    assert!(
        tmux.run(&["send-keys", "-t", "t", "Enter"])
            .status
            .success()
    );
    let screen = tmux.wait_for("INIT-EXITED-");
    assert!(screen.contains("INIT-EXITED-0"), "{screen}");
    for shown in [passphrase, "plum", "oops"] {
        assert!(
            !screen.contains(shown),
            "{shown:?} is on the screen:\n{screen}"
        );
    }
    let address = screen
        .split_whitespace()
        .find(|w| w.starts_with("husha"))
        .unwrap_or_else(|| panic!("no address on the screen:\n{screen}"))
        .to_string();
    let run = |passphrase: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hush"))
            .args(["--home", home.to_str().unwrap(), "address"])
            .env_remove("HUSH_HOME")
            .env("HUSH_PASSPHRASE", passphrase)
            .output()
            .unwrap()
    };
    let right = run(passphrase);
    assert!(right.status.success(), "{right:?}");
    assert_eq!(String::from_utf8_lossy(&right.stdout).trim(), address);
    assert!(!run(&format!("{passphrase}oops")).status.success());
}
