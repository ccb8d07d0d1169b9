// A developer tool: a failed step should stop it.
#![allow(clippy::expect_used, clippy::panic)]

//! Writes the seed corpora, `fuzz/corpus/TARGET/seed-N`: valid
//! encodings of what each decoder reads, and short scripted runs for the
//! stateful targets, so the fuzzers start from inputs that go deep.
//!
//! `cargo run -p hush-harness --example seeds` (from the repository root).

use std::path::Path;

use hush_client::content::{Body, Content, GroupState, ReceiptKind, SenderKeyBytes};
use hush_client::vault::Vault;
use hush_crypto::prekey::ExtraPreKey;
use hush_crypto::{
    Address, ContentType, IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, SenderKeyRecord,
    Session, SessionMessage, SignedPreKeyPair, envelope,
};
use hush_proto::relay as proto;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::Zeroizing;

fn main() {
    let mut rng = ChaCha20Rng::from_seed([0x11; 32]);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPreKeyPair::generate(&mut rng, &bob, 1);
    let opk = OneTimePreKeyPair::generate(&mut rng, 2);
    let bundle = PreKeyBundle {
        identity: bob.public().clone(),
        signed_prekey: spk.public(),
        extra: Some(ExtraPreKey::OneTime(opk.public())),
    };
    let mut session = Session::initiate(&mut rng, &alice, &bundle.clone().verify().expect("valid"))
        .expect("initiates");
    let SessionMessage::PreKey(first) = session.encrypt(&mut rng, b"hello").expect("encrypts")
    else {
        panic!("a first message is a prekey message")
    };
    let mut group = SenderKeyRecord::generate(&mut rng, [1; 16]);
    let group_message = group.encrypt(b"group").expect("encrypts");
    let sealed = envelope::seal(
        &mut rng,
        &alice,
        1,
        bob.public(),
        ContentType::PreKey,
        &first.to_bytes(),
    )
    .expect("seals");

    write(
        "address",
        &[Address::from(alice.public()).to_string().into_bytes()],
    );
    write("bundle", &[bundle.to_bytes()]);
    write("prekey_message", &[first.to_bytes()]);
    write("ratchet_message", &[first.message.to_bytes()]);
    write(
        "sender_key_message",
        &[
            group_message.to_bytes(),
            group.distribution().expect("own chain").to_bytes().to_vec(),
        ],
    );
    write("sealed_envelope", &[sealed.to_bytes()]);
    let laptop = hush_crypto::Device::consent(&bob, alice.public(), "laptop").expect("consent");
    let devices = hush_crypto::DeviceList::first(&alice, "phone")
        .and_then(|list| list.with_device(&alice, laptop))
        .expect("device list");
    write("device_list", &[devices.to_bytes()]);
    write(
        "crypto_state",
        &[
            session.to_bytes().to_vec(),
            group.to_bytes().to_vec(),
            alice.to_bytes().to_vec(),
            spk.to_bytes().to_vec(),
            opk.to_bytes().to_vec(),
        ],
    );

    let contents: Vec<Vec<u8>> = [
        Body::Text("hello, world".into()),
        Body::Receipt(ReceiptKind::Read, vec![[3; 16], [4; 16]]),
        Body::Typing(true),
        Body::Recall([4; 16]),
        Body::GroupUpdate(GroupState {
            id: [5; 16],
            version: 3,
            name: "friends".into(),
            members: vec![[1; 32], [2; 32]],
            admins: vec![[2; 32]],
        }),
        Body::SenderKey(SenderKeyBytes(Zeroizing::new(
            group.distribution().expect("own chain").to_bytes().to_vec(),
        ))),
        Body::SenderKeyRequest([6; 16]),
    ]
    .into_iter()
    .map(|body| {
        Content {
            id: [9; 16],
            sent_at_ms: 1_700_000_000_000,
            counter: 42,
            body,
        }
        .to_bytes()
    })
    .collect();
    write("client_content", &contents);

    let dir = std::env::temp_dir().join(format!("hush-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let vault = Vault::create_key_file(&mut rng, &dir.join("key")).expect("key file");
    write(
        "client_state",
        &[
            vault.seal(&mut rng, "session:1", &session.to_bytes()),
            Vec::new(),
        ],
    );
    std::fs::remove_dir_all(&dir).expect("temp dir removed");

    // A chunk size, then a request and a push.
    let mut stream = vec![7u8];
    hush_relay::frame::encode(
        &proto::ClientFrame {
            request_id: 1,
            request: Some(proto::client_frame::Request::FetchPage(proto::FetchPage {
                after_seq: 3,
                max_envelopes: 10,
            })),
        },
        &mut stream,
    );
    hush_relay::frame::encode(
        &proto::RelayFrame {
            request_id: 0,
            body: Some(proto::relay_frame::Body::Deliver(proto::Envelope {
                seq: 4,
                body: vec![1; 40],
                slot: vec![2; 48],
                expires_at: 1_700_000_000,
            })),
        },
        &mut stream,
    );
    write("relay_frame", &[stream]);

    // Stateful targets: a seed, then actions of three bytes.
    let script = |seed: u8, actions: &[[u8; 3]]| {
        let mut input = vec![seed; 32];
        input.extend(actions.iter().flatten());
        input
    };
    write(
        "ratchet_actions",
        &[script(
            1,
            &[
                [0, 0, 10],
                [0, 0, 20],
                [2, 1, 0],
                [2, 0, 0],
                [0, 1, 5],
                [5, 0, 0],
                [6, 3, 9],
                [7, 0, 0],
                [7, 3, 0],
            ],
        )],
    );
    write(
        "group_actions",
        &[script(
            2,
            &[
                [0, 0, 10],
                [1, 1, 3],
                [3, 0, 0],
                [6, 2, 0],
                [7, 1, 77],
                [8, 0, 0],
                [9, 1, 1],
                [9, 2, 0],
                [2, 2, 1],
                [4, 5, 0],
            ],
        )],
    );
    // Connect, register and fetch; send to devices 0 and 1 (and a resend
    // and an unknown device); take the push; page with ack; ack; sweep.
    write(
        "relay_actions",
        &[
            [
                [0, 0, 0],
                [1, 0, 3],
                [0, 1, 0],
                [1, 1, 2],
                [7, 0, 0],
                [2, 0, 0],
                [3, 0, 0],
                [4, 3, 20],
                [4, 0x83, 0],
                [4, 0x13, 4],
                [6, 0, 0],
                [7, 0x81, 2],
                [8, 1, 0xff],
                [9, 0, 200],
                [10, 0, 0],
            ]
            .concat(),
            // Devices 1 and 2 linked to device 0's account (version 1);
            // sends expecting the right devices, then a stale set; the list
            // fetched by a device of it; device 2 unlinked (version 2), its
            // reconnection refused; a resend of the list, a forged one; an
            // unregistration.
            [
                [0, 0, 0],
                [0, 1, 0],
                [0, 2, 0],
                [1, 0, 2],
                [1, 1, 2],
                [1, 2, 2],
                [7, 2, 0],
                [12, 1, 0x26],
                [4, 0x27, 10],
                [4, 0x23, 10],
                [13, 1, 0],
                [12, 0, 0x22],
                [0, 2, 0],
                [12, 0, 0x12],
                [12, 0, 0xe2],
                [14, 1, 0],
            ]
            .concat(),
        ],
    );
}

fn write(target: &str, inputs: &[Vec<u8>]) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    for (i, input) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), input).expect("seed written");
    }
}
