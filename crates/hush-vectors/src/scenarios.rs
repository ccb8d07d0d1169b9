//! The scenarios behind each vector file.

use anyhow::{Result, anyhow, ensure};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hush_crypto::envelope::{self, ContentType, SealedEnvelope};
use hush_crypto::prekey::ExtraPreKey;
use hush_crypto::{
    Address, IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, PreKeyMessage, RatchetMessage,
    SafetyNumber, SenderKeyDistribution, SenderKeyMessage, SenderKeyRecord, Session,
    SessionMessage, SignedPreKeyPair, kat,
};
use rand_core::Rng;
use serde_json::{Map, Value, json};

use crate::{PreKeys, VectorFile, VectorRng, error_name};

mod decoding;
mod devices;

type Fields = Result<Map<String, Value>>;

fn h(bytes: impl AsRef<[u8]>) -> Value {
    json!(hex::encode(bytes))
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn draw32(rng: &mut VectorRng) -> [u8; 32] {
    let mut out = [0u8; 32];
    rng.fill_bytes(&mut out);
    out
}

fn last_draw(rng: &VectorRng) -> Result<[u8; 32]> {
    rng.draws()
        .last()
        .and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok())
        .ok_or_else(|| anyhow!("expected a 32-byte draw"))
}

/// Independent AEAD check that intermediates match what the API did.
fn aead_open(key: &[u8; 32], nonce: &[u8; 12], ad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
    ChaCha20Poly1305::new(&Key::from(*key))
        .decrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .map_err(|_| anyhow!("intermediate key/nonce do not open the API's ciphertext"))
}

pub(crate) fn files() -> Vec<VectorFile> {
    vec![
        VectorFile {
            file: "primitives.json",
            spec: "spec/index.md",
            description: "KDF building blocks: X25519, X3DH SK, KDF_RK, KDF_CK, message-key expansion, padding buckets",
            scenarios: vec![("kdf_steps", 1, primitives)],
        },
        VectorFile {
            file: "identity.json",
            spec: "spec/identity.md",
            description: "Identity key derivation, X25519 form, signatures and addresses, with rejected addresses",
            scenarios: vec![
                ("identity_1", 10, identity),
                ("identity_2", 11, identity),
                ("address_errors", 12, address_errors),
            ],
        },
        VectorFile {
            file: "x3dh.json",
            spec: "spec/x3dh.md",
            description: "X3DH with a one-time prekey, with the last-resort prekey and with the signed prekey only; rejected handshakes",
            scenarios: vec![
                ("one_time_prekey", 20, x3dh_one_time),
                ("last_resort_prekey", 21, x3dh_last_resort),
                ("signed_prekey_only", 22, x3dh_signed_only),
                ("rejections", 23, x3dh_rejections),
            ],
        },
        VectorFile {
            file: "ratchet.json",
            spec: "spec/ratchet.md",
            description: "A Double Ratchet conversation with out-of-order delivery, ratchet steps, a replay, a forgery and an over-limit skip",
            scenarios: vec![("conversation", 30, ratchet_conversation)],
        },
        VectorFile {
            file: "sender-keys.json",
            spec: "spec/sender-keys.md",
            description: "Sender-key distribution, group messages out of order, rejected forgeries and replays, rotation",
            scenarios: vec![("group", 40, sender_keys)],
        },
        VectorFile {
            file: "envelope.json",
            spec: "spec/envelope.md",
            description: "Sealed envelopes for one and for three recipients, with rejected tampering",
            scenarios: vec![
                ("one_recipient", 50, envelope_one),
                ("three_recipients", 51, envelope_many),
            ],
        },
        VectorFile {
            file: "safety-numbers.json",
            spec: "spec/safety-numbers.md",
            description: "Safety numbers and scannable forms for pairs of identities",
            scenarios: vec![("pair_1", 60, safety), ("pair_2", 61, safety)],
        },
        VectorFile {
            file: "decoding.json",
            spec: "spec/index.md",
            description: "Truncated and malformed encodings of every wire message, of addresses and of scannable safety numbers, each with the error a decoder must return",
            scenarios: vec![
                ("pre_key_bundle", 70, decoding::pre_key_bundle),
                ("pre_key_message", 71, decoding::pre_key_message),
                ("ratchet_message", 72, decoding::ratchet_message),
                ("sender_key_message", 73, decoding::sender_key_message),
                (
                    "sender_key_distribution",
                    74,
                    decoding::sender_key_distribution,
                ),
                ("sealed_envelope", 75, decoding::sealed_envelope),
                ("address", 76, decoding::address),
                (
                    "scannable_safety_number",
                    77,
                    decoding::scannable_safety_number,
                ),
            ],
        },
        VectorFile {
            file: "devices.json",
            spec: "spec/devices.md",
            description: "A multi-device account's signed device list as its primary links and unlinks devices, the lists every device must refuse, and a link code with its mailbox, key and typed variants",
            scenarios: vec![
                ("linked_and_unlinked", 80, devices::linked_and_unlinked),
                ("link_code", 81, devices::link_code),
            ],
        },
    ]
}

fn primitives(rng: &mut VectorRng) -> Fields {
    let a = draw32(rng);
    let b = draw32(rng);
    let shared = kat::x25519(&a, &kat::x25519_public(&b)).ok_or_else(|| anyhow!("zero DH"))?;
    let root = draw32(rng);
    let dh_out = draw32(rng);
    let (rk, ck) = kat::kdf_rk(&root, &dh_out);
    let chain = draw32(rng);
    let (mk, next) = kat::kdf_ck(&chain);
    let (rkey, rnonce) = kat::message_key_expansion(b"hush-ratchet-v1 message", &mk);
    let (skey, snonce) = kat::message_key_expansion(b"hush-sender-key-v1 message", &mk);
    let dhs = [draw32(rng), draw32(rng), draw32(rng), draw32(rng)];
    let padding: Vec<Value> = [0usize, 255, 256, 1000, 40_000, 65_023, 65_024]
        .iter()
        .map(|&len| json!({"content_len": len, "padded_len": kat::padded_len(len)}))
        .collect();
    Ok(fields(json!({
        "x25519": {"secret_a": h(a), "secret_b": h(b), "public_a": h(kat::x25519_public(&a)),
                   "public_b": h(kat::x25519_public(&b)), "shared": h(shared)},
        "kdf_rk": {"root_key": h(root), "dh_output": h(dh_out), "new_root_key": h(rk), "chain_key": h(ck)},
        "kdf_ck": {"chain_key": h(chain), "message_key": h(mk), "next_chain_key": h(next)},
        "message_keys": [
            {"info": "hush-ratchet-v1 message", "message_key": h(mk), "key": h(rkey), "nonce": h(rnonce)},
            {"info": "hush-sender-key-v1 message", "message_key": h(mk), "key": h(skey), "nonce": h(snonce)},
        ],
        "x3dh_secret": [
            {"dh": [h(dhs[0]), h(dhs[1]), h(dhs[2])], "sk": h(kat::x3dh_secret(&dhs[..3]))},
            {"dh": [h(dhs[0]), h(dhs[1]), h(dhs[2]), h(dhs[3])], "sk": h(kat::x3dh_secret(&dhs))},
        ],
        "padding": padding,
    })))
}

fn identity(rng: &mut VectorRng) -> Fields {
    let id = IdentityKeyPair::generate(rng);
    let seed = last_draw(rng)?;
    let x_secret = kat::identity_x25519_secret(&seed);
    ensure!(
        kat::x25519_public(&x_secret) == *id.public().x25519(),
        "X25519 form mismatch"
    );
    let message = b"hush identity vector";
    let address = Address::from(id.public()).to_string();
    ensure!(
        address.parse::<Address>().is_ok(),
        "address does not parse back"
    );
    Ok(fields(json!({
        "seed": h(seed),
        "ed25519_public": h(id.public().as_bytes()),
        "x25519_secret": h(x_secret),
        "x25519_public": h(id.public().x25519()),
        "address": address,
        "message": h(message),
        "signature": h(id.sign(message)),
    })))
}

fn address_errors(rng: &mut VectorRng) -> Fields {
    let id = IdentityKeyPair::generate(rng);
    let good = Address::from(id.public()).to_string();
    let typo = {
        let mut chars: Vec<char> = good.chars().collect();
        chars[20] = if chars[20] == 'a' { 'b' } else { 'a' };
        chars.into_iter().collect::<String>()
    };
    let grouped: String = good
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            if i > 4 && i % 4 == 0 {
                vec!['-', c]
            } else {
                vec![c]
            }
        })
        .collect();
    let cases = [
        ("valid", good.clone()),
        ("upper_case", good.to_uppercase()),
        ("grouped_with_dashes", grouped),
        ("typo", typo),
        ("bad_prefix", format!("hish{}", &good[4..])),
        ("truncated", good[..good.len() - 2].to_string()),
        ("bad_character", format!("{}1{}", &good[..10], &good[11..])),
    ];
    let results: Vec<Value> = cases
        .iter()
        .map(|(case, text)| {
            let result = match text.parse::<Address>() {
                Ok(a) => json!({"ed25519_public": h(a.identity().as_bytes())}),
                Err(e) => json!({"error": error_name(&e)}),
            };
            json!({"case": case, "input": text, "result": result})
        })
        .collect();
    Ok(fields(json!({"cases": results})))
}

#[derive(Clone, Copy, PartialEq)]
enum Extra {
    OneTime,
    LastResort,
    None,
}

struct Setup {
    alice: IdentityKeyPair,
    bob: IdentityKeyPair,
    keys: PreKeys,
    bundle: PreKeyBundle,
    secrets: Vec<[u8; 32]>,
}

/// Draws: Alice's seed, Bob's seed, signed prekey (id 1), last-resort
/// prekey (id 2), one-time prekey (id 3).
fn setup(rng: &mut VectorRng, extra: Extra) -> Result<Setup> {
    let alice = IdentityKeyPair::generate(rng);
    let bob = IdentityKeyPair::generate(rng);
    let signed = SignedPreKeyPair::generate(rng, &bob, 1);
    let last_resort = SignedPreKeyPair::generate_last_resort(rng, &bob, 2);
    let one_time = OneTimePreKeyPair::generate(rng, 3);
    let secrets = rng
        .draws()
        .iter()
        .map(|d| <[u8; 32]>::try_from(d.as_slice()).map_err(|_| anyhow!("draw size")))
        .collect::<Result<Vec<_>>>()?;
    let bundle = PreKeyBundle {
        identity: bob.public().clone(),
        signed_prekey: signed.public(),
        extra: match extra {
            Extra::OneTime => Some(ExtraPreKey::OneTime(one_time.public())),
            Extra::LastResort => Some(ExtraPreKey::LastResort(last_resort.public())),
            Extra::None => None,
        },
    };
    Ok(Setup {
        alice,
        bob,
        keys: PreKeys {
            signed,
            last_resort,
            one_time: Some(one_time),
        },
        bundle,
        secrets,
    })
}

/// The inputs of a [`setup`]: both identity seeds, Bob's prekey secrets
/// and the bundle he publishes.
fn setup_fields(s: &Setup) -> Map<String, Value> {
    fields(json!({
        "alice_identity_seed": h(s.secrets[0]),
        "bob_identity_seed": h(s.secrets[1]),
        "bob_signed_prekey": {"id": 1, "secret": h(s.secrets[2])},
        "bob_last_resort_prekey": {"id": 2, "secret": h(s.secrets[3])},
        "bob_one_time_prekey": {"id": 3, "secret": h(s.secrets[4])},
        "bundle": h(s.bundle.to_bytes()),
    }))
}

fn x3dh_case(rng: &mut VectorRng, extra: Extra) -> Fields {
    let s = setup(rng, extra)?;
    let bundle_bytes = s.bundle.to_bytes();
    let verified = PreKeyBundle::try_from(bundle_bytes.as_slice())?
        .verify()
        .map_err(|e| anyhow!("{e}"))?;
    let mut alice = Session::initiate(rng, &s.alice, &verified).map_err(|e| anyhow!("{e}"))?;
    let draws = rng.draws();
    let ek = <[u8; 32]>::try_from(draws[5].as_slice())?;
    let ratchet = <[u8; 32]>::try_from(draws[6].as_slice())?;
    let plaintext = b"hello bob";
    let message = match alice.encrypt(rng, plaintext)? {
        SessionMessage::PreKey(m) => *m,
        SessionMessage::Ratchet(_) => return Err(anyhow!("first message is not a prekey message")),
    };

    // Intermediates, computed step by step.
    let alice_x = kat::identity_x25519_secret(&s.secrets[0]);
    let spk_pub = s.keys.signed.public().public;
    let dh = |a: &[u8; 32], b: &[u8; 32]| kat::x25519(a, b).ok_or_else(|| anyhow!("zero DH"));
    let mut dhs = vec![
        dh(&alice_x, &spk_pub)?,
        dh(&ek, s.bob.public().x25519())?,
        dh(&ek, &spk_pub)?,
    ];
    let extra_pub = match extra {
        Extra::OneTime => Some(
            s.keys
                .one_time
                .as_ref()
                .map(|k| k.public().public)
                .ok_or_else(|| anyhow!("opk"))?,
        ),
        Extra::LastResort => Some(s.keys.last_resort.public().public),
        Extra::None => None,
    };
    if let Some(p) = &extra_pub {
        dhs.push(dh(&ek, p)?);
    }
    let sk = kat::x3dh_secret(&dhs);
    let ad = [
        &s.alice.public().as_bytes()[..],
        &s.bob.public().as_bytes()[..],
    ]
    .concat();
    let ratchet_pub = kat::x25519_public(&ratchet);
    let (root1, ck0) = kat::kdf_rk(&sk, &dh(&ratchet, &spk_pub)?);
    let (mk0, ck1) = kat::kdf_ck(&ck0);
    let (key, nonce) = kat::message_key_expansion(b"hush-ratchet-v1 message", &mk0);
    let header = message.message.header();
    ensure!(
        message.base_key == kat::x25519_public(&ek),
        "base key mismatch"
    );
    ensure!(
        message.message.ratchet_key == ratchet_pub,
        "ratchet key mismatch"
    );
    let opened = aead_open(
        &key,
        &nonce,
        &[&ad[..], &header[..]].concat(),
        &message.message.ciphertext,
    )?;
    ensure!(opened == plaintext, "intermediates disagree with the API");

    let decoded = PreKeyMessage::try_from(message.to_bytes().as_slice())?;
    let (bob_session, received) =
        Session::respond(&s.bob, &s.keys, &decoded).map_err(|e| anyhow!("{e}"))?;
    ensure!(received == plaintext, "responder got another plaintext");
    ensure!(
        bob_session.base_key() == alice.base_key(),
        "base keys differ"
    );

    Ok(fields(json!({
        "alice_identity_seed": h(s.secrets[0]),
        "bob_identity_seed": h(s.secrets[1]),
        "bob_signed_prekey": {"id": 1, "secret": h(s.secrets[2]), "public": h(spk_pub)},
        "bob_last_resort_prekey": {"id": 2, "secret": h(s.secrets[3]), "public": h(s.keys.last_resort.public().public)},
        "bob_one_time_prekey": {"id": 3, "secret": h(s.secrets[4]), "public": h(kat::x25519_public(&s.secrets[4]))},
        "bundle": h(&bundle_bytes),
        "alice_ephemeral_secret": h(ek),
        "alice_ephemeral_public": h(kat::x25519_public(&ek)),
        "dh": dhs.iter().map(h).collect::<Vec<_>>(),
        "sk": h(sk),
        "ad": h(&ad),
        "alice_first_ratchet_secret": h(ratchet),
        "alice_first_ratchet_public": h(ratchet_pub),
        "root_key_after_first_step": h(root1),
        "sending_chain_key": h(ck0),
        "message_key": h(mk0),
        "next_chain_key": h(ck1),
        "aead_key": h(key),
        "aead_nonce": h(nonce),
        "header": h(header),
        "plaintext": h(plaintext),
        "prekey_message": h(message.to_bytes()),
    })))
}

fn x3dh_one_time(rng: &mut VectorRng) -> Fields {
    x3dh_case(rng, Extra::OneTime)
}

fn x3dh_last_resort(rng: &mut VectorRng) -> Fields {
    x3dh_case(rng, Extra::LastResort)
}

fn x3dh_signed_only(rng: &mut VectorRng) -> Fields {
    x3dh_case(rng, Extra::None)
}

fn x3dh_rejections(rng: &mut VectorRng) -> Fields {
    let mut s = setup(rng, Extra::OneTime)?;
    let mut cases = Vec::new();

    let mut bad = s.bundle.clone();
    bad.signed_prekey.signature[7] ^= 0x10;
    cases.push(
        json!({"case": "bundle_bad_signed_prekey_signature", "bundle": h(bad.to_bytes()),
        "error": error_name(&bad.verify().err().ok_or_else(|| anyhow!("accepted"))?)}),
    );
    let mut bad = s.bundle.clone();
    bad.extra = Some(ExtraPreKey::LastResort(s.bundle.signed_prekey.clone()));
    cases.push(
        json!({"case": "bundle_signed_prekey_as_last_resort", "bundle": h(bad.to_bytes()),
        "error": error_name(&bad.verify().err().ok_or_else(|| anyhow!("accepted"))?)}),
    );

    let verified = s.bundle.clone().verify().map_err(|e| anyhow!("{e}"))?;
    let mut alice = Session::initiate(rng, &s.alice, &verified).map_err(|e| anyhow!("{e}"))?;
    let SessionMessage::PreKey(message) = alice.encrypt(rng, b"x")? else {
        return Err(anyhow!("not a prekey message"));
    };
    let mut respond = |name: &str, m: &PreKeyMessage, keys: &PreKeys| -> Result<()> {
        let err = Session::respond(&s.bob, keys, m)
            .err()
            .ok_or_else(|| anyhow!("{name} accepted"))?;
        cases.push(
            json!({"case": name, "prekey_message": h(m.to_bytes()), "error": error_name(&err)}),
        );
        Ok(())
    };
    let mut m = message.clone();
    m.signed_prekey_id = 9;
    respond("unknown_signed_prekey", &m, &s.keys)?;
    let mut m = message.clone();
    m.base_key = [0u8; 32];
    respond("all_zero_base_key", &m, &s.keys)?;
    let mut m = message.clone();
    m.message.ciphertext[0] ^= 1;
    respond("forged_first_message", &m, &s.keys)?;
    // The one-time prekey was used and deleted: a replay finds no key.
    s.keys.one_time = None;
    respond("replay_after_one_time_prekey_deleted", &message, &s.keys)?;
    let mut out = setup_fields(&s);
    out.insert("cases".into(), json!(cases));
    Ok(out)
}

fn ratchet_conversation(rng: &mut VectorRng) -> Fields {
    let s = setup(rng, Extra::OneTime)?;
    let verified = s.bundle.clone().verify().map_err(|e| anyhow!("{e}"))?;
    let mut alice = Session::initiate(rng, &s.alice, &verified).map_err(|e| anyhow!("{e}"))?;
    let mut steps = Vec::new();
    let mut sent: Vec<SessionMessage> = Vec::new();

    let kind = |m: &SessionMessage| match m {
        SessionMessage::PreKey(_) => "prekey",
        SessionMessage::Ratchet(_) => "ratchet",
    };
    let encrypt = |party: &str,
                   session: &mut Session,
                   text: &str,
                   rng: &mut VectorRng,
                   sent: &mut Vec<SessionMessage>,
                   steps: &mut Vec<Value>|
     -> Result<()> {
        let before = rng.draws().len();
        let m = session.encrypt(rng, text.as_bytes())?;
        steps.push(
            json!({"op": "encrypt", "party": party, "plaintext": h(text),
            "draws": rng.draws().len() - before, "type": kind(&m), "message": h(m.to_bytes())}),
        );
        sent.push(m);
        Ok(())
    };
    fn decode(m: &SessionMessage) -> Result<SessionMessage> {
        let bytes = m.to_bytes();
        Ok(match m {
            SessionMessage::PreKey(_) => {
                SessionMessage::PreKey(Box::new(PreKeyMessage::try_from(bytes.as_slice())?))
            }
            SessionMessage::Ratchet(_) => {
                SessionMessage::Ratchet(RatchetMessage::try_from(bytes.as_slice())?)
            }
        })
    }
    let record = |party: &str,
                  m: &SessionMessage,
                  result: Result<Vec<u8>, String>,
                  steps: &mut Vec<Value>| {
        let result = match result {
            Ok(p) => json!({"plaintext": h(p)}),
            Err(e) => json!({"error": e}),
        };
        steps.push(json!({"op": "decrypt", "party": party, "type": kind(m), "message": h(m.to_bytes()), "result": result}));
    };

    // Alice sends three prekey messages; Bob gets the third first.
    for text in ["a0", "a1", "a2"] {
        encrypt("alice", &mut alice, text, rng, &mut sent, &mut steps)?;
    }
    let SessionMessage::PreKey(first) = decode(&sent[2])? else {
        return Err(anyhow!("expected prekey"));
    };
    let (mut bob_session, plaintext) =
        Session::respond(&s.bob, &s.keys, &first).map_err(|e| anyhow!("{e}"))?;
    record("bob", &sent[2], Ok(plaintext), &mut steps);
    let bob = &mut bob_session;
    let m = decode(&sent[0])?;
    record(
        "bob",
        &m,
        bob.decrypt(&m).map_err(|e| error_name(&e)),
        &mut steps,
    );

    // Bob replies twice (one DH step); Alice reads them in reverse order.
    encrypt("bob", bob, "b0", rng, &mut sent, &mut steps)?;
    encrypt("bob", bob, "b1", rng, &mut sent, &mut steps)?;
    for i in [4, 3] {
        let m = decode(&sent[i])?;
        record(
            "alice",
            &m,
            alice.decrypt(&m).map_err(|e| error_name(&e)),
            &mut steps,
        );
    }
    // Alice's new chain; Bob reads a4 before a3, then the held a1.
    encrypt("alice", &mut alice, "a3", rng, &mut sent, &mut steps)?;
    encrypt("alice", &mut alice, "a4", rng, &mut sent, &mut steps)?;
    encrypt("alice", &mut alice, "a5", rng, &mut sent, &mut steps)?;
    for i in [6, 1, 5] {
        let m = decode(&sent[i])?;
        record(
            "bob",
            &m,
            bob.decrypt(&m).map_err(|e| error_name(&e)),
            &mut steps,
        );
    }
    // Replay of a3: Duplicate.
    let m = decode(&sent[5])?;
    record(
        "bob",
        &m,
        bob.decrypt(&m).map_err(|e| error_name(&e)),
        &mut steps,
    );
    // A forgery of a5 (one ciphertext bit): AuthenticationFailed, no change.
    let mut forged = sent[7].ratchet_message().clone();
    forged.ciphertext[3] ^= 0x01;
    let forged = SessionMessage::Ratchet(forged);
    record(
        "bob",
        &forged,
        bob.decrypt(&forged).map_err(|e| error_name(&e)),
        &mut steps,
    );
    // A message claiming to be 25,001 ahead: TooFarAhead, checked before any key is derived.
    let mut far = sent[7].ratchet_message().clone();
    far.counter += 25_001;
    let far = SessionMessage::Ratchet(far);
    record(
        "bob",
        &far,
        bob.decrypt(&far).map_err(|e| error_name(&e)),
        &mut steps,
    );
    // The genuine a5 still decrypts.
    let m = decode(&sent[7])?;
    record(
        "bob",
        &m,
        bob.decrypt(&m).map_err(|e| error_name(&e)),
        &mut steps,
    );
    // Bob answers on a new chain; Alice reads it.
    encrypt("bob", bob, "b2", rng, &mut sent, &mut steps)?;
    let m = decode(&sent[8])?;
    record(
        "alice",
        &m,
        alice.decrypt(&m).map_err(|e| error_name(&e)),
        &mut steps,
    );

    let mut out = setup_fields(&s);
    out.insert("steps".into(), json!(steps));
    Ok(out)
}

fn sender_keys(rng: &mut VectorRng) -> Fields {
    let group_id = [0x67u8; 16];
    let mut own = SenderKeyRecord::generate(rng, group_id);
    let draws: Vec<Vec<u8>> = rng.draws().to_vec();
    let distribution = own.distribution().ok_or_else(|| anyhow!("no own chain"))?;
    let dist_bytes = distribution.to_bytes();
    let received = SenderKeyDistribution::try_from(dist_bytes.as_slice())?;
    let mut member = SenderKeyRecord::new(group_id);
    member.process(&received)?;

    let chain_key = <[u8; 32]>::try_from(draws[1].as_slice())?;
    let (mk0, _) = kat::kdf_ck(&chain_key);
    let (key, nonce) = kat::message_key_expansion(b"hush-sender-key-v1 message", &mk0);

    let texts = ["g0", "g1", "g2", "g3", "g4"];
    let messages: Vec<SenderKeyMessage> = texts
        .iter()
        .map(|t| own.encrypt(t.as_bytes()))
        .collect::<Result<_, _>>()?;
    let header0 = [
        &b"hush-sender-key-v1"[..],
        &group_id,
        &messages[0].key_id.to_be_bytes(),
        &0u32.to_be_bytes(),
    ]
    .concat();
    ensure!(
        aead_open(&key, &nonce, &header0, &messages[0].ciphertext)? == b"g0",
        "intermediates disagree"
    );

    let mut steps = Vec::new();
    let mut decrypt =
        |label: &str, m: &SenderKeyMessage, member: &mut SenderKeyRecord| -> Result<()> {
            let decoded = SenderKeyMessage::try_from(m.to_bytes().as_slice())?;
            let result = match member.decrypt(&decoded) {
                Ok(p) => json!({"plaintext": h(p)}),
                Err(e) => json!({"error": error_name(&e)}),
            };
            steps.push(json!({"case": label, "message": h(m.to_bytes()), "result": result}));
            Ok(())
        };
    decrypt("in_order", &messages[0], &mut member)?;
    decrypt("skip_ahead", &messages[3], &mut member)?;
    decrypt("late", &messages[1], &mut member)?;
    decrypt("replay", &messages[1], &mut member)?;
    let mut forged = messages[2].clone();
    forged.ciphertext[0] ^= 1;
    decrypt("forged_ciphertext", &forged, &mut member)?;
    let mut forged = messages[2].clone();
    forged.signature[10] ^= 1;
    decrypt("forged_signature", &forged, &mut member)?;
    let mut unknown = messages[2].clone();
    unknown.key_id ^= 0xffff;
    decrypt("unknown_key_id", &unknown, &mut member)?;
    let mut moved = messages[2].clone();
    moved.group_id = [0x68; 16];
    decrypt("other_group", &moved, &mut member)?;
    decrypt("late_genuine", &messages[2], &mut member)?;
    decrypt("in_order_after_gap", &messages[4], &mut member)?;

    // Rotation (membership change): a new chain and distribution.
    own.rotate(rng);
    let rotated = own.distribution().ok_or_else(|| anyhow!("no own chain"))?;
    let after = own.encrypt(b"after rotation")?;
    decrypt("before_new_distribution", &after, &mut member)?;
    member.process(&SenderKeyDistribution::try_from(
        rotated.to_bytes().as_slice(),
    )?)?;
    decrypt("after_new_distribution", &after, &mut member)?;

    Ok(fields(json!({
        "group_id": h(group_id),
        "key_id": draws[0].iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)),
        "chain_key": h(chain_key),
        "signing_seed": h(&draws[2]),
        "signing_public": h(distribution.signing_key.as_bytes()),
        "distribution": h(dist_bytes.as_slice()),
        "first_message_key": h(mk0),
        "first_aead_key": h(key),
        "first_aead_nonce": h(nonce),
        "messages": messages.iter().zip(texts).map(|(m, t)| json!({"plaintext": h(t), "message": h(m.to_bytes())})).collect::<Vec<_>>(),
        "receiver_steps": steps,
        "rotated_distribution": h(rotated.to_bytes().as_slice()),
    })))
}

fn envelope_one(rng: &mut VectorRng) -> Fields {
    let sender = IdentityKeyPair::generate(rng);
    let recipient = IdentityKeyPair::generate(rng);
    let other = IdentityKeyPair::generate(rng);
    let seeds: Vec<Value> = rng.draws().iter().map(h).collect();
    let content = b"a ratchet message would go here";
    let env = envelope::seal(
        rng,
        &sender,
        2,
        recipient.public(),
        ContentType::Ratchet,
        content,
    )?;
    let m = last_draw(rng)?;
    let (e, k, e_pub) = kat::seal_message_secret(&m);
    ensure!(e_pub == env.body.ephemeral_key, "E mismatch");
    let padded = aead_open(
        &k,
        &[0u8; 12],
        &[&b"hush-seal-v1"[..], &e_pub].concat(),
        &env.body.ciphertext,
    )?;
    let shared = kat::x25519(&e, recipient.public().x25519()).ok_or_else(|| anyhow!("zero DH"))?;
    let mask = kat::seal_slot_mask(&shared, &e_pub, recipient.public().x25519());
    let masked: Vec<u8> = m.iter().zip(mask).map(|(a, b)| a ^ b).collect();
    ensure!(masked == env.slot[..32], "slot mask mismatch");
    let bytes = env.to_bytes();
    let opened = SealedEnvelope::try_from(bytes.as_slice())?
        .open(&recipient)
        .map_err(|e| anyhow!("{e}"))?;
    ensure!(opened.content == content, "opened content differs");

    let mut rejections = Vec::new();
    let mut reject = |case: &str, env: &SealedEnvelope, who: &IdentityKeyPair| -> Result<()> {
        let err = env
            .open(who)
            .err()
            .ok_or_else(|| anyhow!("{case} accepted"))?;
        rejections
            .push(json!({"case": case, "envelope": h(env.to_bytes()), "error": error_name(&err)}));
        Ok(())
    };
    reject("wrong_recipient", &env, &other)?;
    let mut bad = env.clone();
    bad.body.ciphertext[5] ^= 1;
    reject("body_tampered", &bad, &recipient)?;
    let mut bad = env.clone();
    bad.slot[40] ^= 1;
    reject("sender_tag_tampered", &bad, &recipient)?;
    let mut bad = env.clone();
    bad.body.ephemeral_key = [0u8; 32];
    reject("zero_ephemeral_key", &bad, &recipient)?;

    Ok(fields(json!({
        "identity_seeds": {"sender": seeds[0], "recipient": seeds[1], "other": seeds[2]},
        "sender_device": 2,
        "content_type": "RATCHET",
        "content": h(content),
        "message_secret": h(m),
        "ephemeral_secret": h(e),
        "body_key": h(k),
        "ephemeral_public": h(e_pub),
        "padded_content": h(&padded),
        "slot_mask": h(mask),
        "envelope": h(&bytes),
        "opened": {"sender": h(opened.sender.as_bytes()), "sender_device": opened.sender_device, "content": h(&opened.content)},
        "rejections": rejections,
    })))
}

fn envelope_many(rng: &mut VectorRng) -> Fields {
    let sender = IdentityKeyPair::generate(rng);
    let recipients: Vec<IdentityKeyPair> = (0..3).map(|_| IdentityKeyPair::generate(rng)).collect();
    let seeds: Vec<Value> = rng.draws().iter().map(h).collect();
    let keys: Vec<_> = recipients.iter().map(|r| r.public().clone()).collect();
    let content = b"one sender-key message for the whole group";
    let (body, slots) =
        envelope::seal_many(rng, &sender, 1, &keys, ContentType::SenderKey, content)?;
    let mut opened = Vec::new();
    for (r, slot) in recipients.iter().zip(&slots) {
        let env = SealedEnvelope {
            body: body.clone(),
            slot: *slot,
        };
        let o = SealedEnvelope::try_from(env.to_bytes().as_slice())?
            .open(r)
            .map_err(|e| anyhow!("{e}"))?;
        ensure!(
            o.content == content && o.sender == *sender.public(),
            "open mismatch"
        );
        opened.push(json!({"envelope": h(env.to_bytes()), "content": h(&o.content)}));
    }
    Ok(fields(json!({
        "identity_seeds": {"sender": seeds[0], "recipients": seeds[1..].to_vec()},
        "sender_device": 1,
        "content_type": "SENDER_KEY",
        "content": h(content),
        "message_secret": h(last_draw(rng)?),
        "body": h(body.to_bytes()),
        "slots": slots.iter().map(h).collect::<Vec<_>>(),
        "per_recipient": opened,
    })))
}

fn safety(rng: &mut VectorRng) -> Fields {
    let a = IdentityKeyPair::generate(rng);
    let b = IdentityKeyPair::generate(rng);
    let ab = SafetyNumber::new(a.public(), b.public());
    let ba = SafetyNumber::new(b.public(), a.public());
    ensure!(
        ab.digits() == ba.digits() && ab.scannable().matches(ba.scannable()),
        "sides disagree"
    );
    Ok(fields(json!({
        "local_identity": h(a.public().as_bytes()),
        "remote_identity": h(b.public().as_bytes()),
        "digits": ab.digits(),
        "scannable_local": h(ab.scannable().to_bytes()),
        "scannable_remote": h(ba.scannable().to_bytes()),
    })))
}
