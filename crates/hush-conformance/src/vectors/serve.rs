//! `hush-conformance serve`: hush's own implementation of the vector
//! protocol (`spec/conformance.md`), on hush-crypto's public API.
//!
//! Every output is computed from the request's inputs, as a second
//! implementation would compute it: the operations run with a random
//! source that serves the request's `draws`, and the intermediates the
//! API keeps to itself come from `hush_crypto::kat`.

use std::fmt::Debug;
use std::io::{BufRead, Write};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hush_crypto::envelope::{self, ContentType};
use hush_crypto::prekey::ExtraPreKey;
use hush_crypto::{
    Address, DecodeError, DecryptError, Device, DeviceList, IdentityKey, IdentityKeyPair, LinkCode,
    OneTimePreKeyPair, OpenError, PreKeyBundle, PreKeyMessage, RatchetMessage, SafetyNumber,
    ScannableSafetyNumber, SealedEnvelope, SenderKeyDistribution, SenderKeyMessage,
    SenderKeyRecord, Session, SessionMessage, SignedPreKeyPair, kat,
};
use hush_vectors::{PreKeys, VectorRng, error_name};
use serde_json::{Value, json};

/// Answers requests from stdin, one line each, until stdin closes.
pub(crate) fn run() -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading a request")?;
        if line.trim().is_empty() {
            continue;
        }
        writeln!(stdout, "{}", answer(&line))?;
        stdout.flush()?;
    }
    Ok(())
}

/// The answer to one request line.
fn answer(line: &str) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(e) => return json!({"id": null, "error": format!("the request is not JSON: {e}")}),
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let field = |key: &str| request.get(key).and_then(Value::as_str);
    let (Some(mechanism), Some(kind), Some(vector)) =
        (field("mechanism"), field("kind"), request.get("vector"))
    else {
        return json!({"id": id, "error": "a request needs `mechanism`, `kind` and `vector`"});
    };
    let Some(operation) = operation(mechanism, kind) else {
        return json!({"id": id, "unsupported": true});
    };
    match operation(vector) {
        Ok(outputs) => json!({"id": id, "outputs": outputs}),
        Err(e) => json!({"id": id, "error": format!("{e:#}")}),
    }
}

/// Computes a kind's outputs from its inputs.
type Operation = fn(&Value) -> Result<Value>;

fn operation(mechanism: &str, kind: &str) -> Option<Operation> {
    Some(match (mechanism, kind) {
        ("primitives", "kdf_steps") => kdf_steps,
        ("identity", "identity") => identity,
        ("identity", "address_parse") => address_parse,
        ("x3dh", "handshake") => handshake,
        ("x3dh", "rejections") => rejections,
        ("ratchet", "conversation") => conversation,
        ("sender-keys", "group") => group,
        ("envelope", "seal_one") => seal_one,
        ("envelope", "seal_many") => seal_many,
        ("safety-numbers", "pair") => pair,
        ("decoding", "decode") => decode,
        ("devices", "device_lists") => device_lists,
        ("devices", "link_code") => link_code,
        _ => return None,
    })
}

// Reading inputs.

fn get<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    v.get(key).ok_or_else(|| anyhow!("missing input `{key}`"))
}

fn text_of<'a>(value: &'a Value, what: &str) -> Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| anyhow!("`{what}` is not a string"))
}

fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    text_of(get(v, key)?, key)
}

fn bytes_of(value: &Value, what: &str) -> Result<Vec<u8>> {
    hex::decode(text_of(value, what)?).with_context(|| format!("`{what}` is not hex"))
}

fn bytes(v: &Value, key: &str) -> Result<Vec<u8>> {
    bytes_of(get(v, key)?, key)
}

fn fixed_of<const N: usize>(value: &Value, what: &str) -> Result<[u8; N]> {
    let bytes = bytes_of(value, what)?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow!("`{what}` is {} bytes, expected {N}", bytes.len()))
}

fn fixed<const N: usize>(v: &Value, key: &str) -> Result<[u8; N]> {
    fixed_of(get(v, key)?, key)
}

fn number(v: &Value, key: &str) -> Result<u64> {
    get(v, key)?
        .as_u64()
        .ok_or_else(|| anyhow!("`{key}` is not a non-negative integer"))
}

fn number32(v: &Value, key: &str) -> Result<u32> {
    u32::try_from(number(v, key)?).with_context(|| format!("`{key}` does not fit 32 bits"))
}

fn list<'a>(v: &'a Value, key: &str) -> Result<&'a [Value]> {
    get(v, key)?
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| anyhow!("`{key}` is not an array"))
}

/// The request's `draws`, in order.
fn draws(v: &Value) -> Result<Vec<Vec<u8>>> {
    list(v, "draws")?
        .iter()
        .map(|d| bytes_of(d, "draws"))
        .collect()
}

/// Fails if the operations asked for other draws than those served.
fn all_drawn(rng: &VectorRng) -> Result<()> {
    match rng.error() {
        Some(problem) => bail!("draws: {problem}"),
        None => Ok(()),
    }
}

// Writing outputs.

fn h(bytes: impl AsRef<[u8]>) -> Value {
    json!(hex::encode(bytes))
}

/// `null` if accepted, else the error's variant name.
fn error_of<T, E: Debug>(result: Result<T, E>) -> Value {
    match result {
        Ok(_) => Value::Null,
        Err(e) => json!(error_name(&e)),
    }
}

/// `{plaintext}` or `{error}`.
fn decrypted<E: Debug>(result: Result<Vec<u8>, E>) -> Value {
    match result {
        Ok(plaintext) => json!({"plaintext": h(plaintext)}),
        Err(e) => json!({"error": error_name(&e)}),
    }
}

fn dh(secret: &[u8; 32], public: &[u8; 32]) -> Result<[u8; 32]> {
    kat::x25519(secret, public).ok_or_else(|| anyhow!("a DH output is all zero"))
}

// The kinds, in the order of spec/conformance.md.

fn kdf_steps(v: &Value) -> Result<Value> {
    let x = get(v, "x25519")?;
    let (a, b) = (fixed(x, "secret_a")?, fixed(x, "secret_b")?);
    let (public_a, public_b) = (kat::x25519_public(&a), kat::x25519_public(&b));
    let rk = get(v, "kdf_rk")?;
    let (new_root_key, chain_key) = kat::kdf_rk(&fixed(rk, "root_key")?, &fixed(rk, "dh_output")?);
    let (message_key, next_chain_key) = kat::kdf_ck(&fixed(get(v, "kdf_ck")?, "chain_key")?);
    let message_keys = list(v, "message_keys")?
        .iter()
        .map(|m| {
            let info = text(m, "info")?.as_bytes();
            let (key, nonce) = kat::message_key_expansion(info, &fixed(m, "message_key")?);
            Ok(json!({"key": h(key), "nonce": h(nonce)}))
        })
        .collect::<Result<Vec<_>>>()?;
    let x3dh_secret = list(v, "x3dh_secret")?
        .iter()
        .map(|s| {
            let dhs = list(s, "dh")?
                .iter()
                .map(|d| fixed_of(d, "dh"))
                .collect::<Result<Vec<_>>>()?;
            Ok(json!({"sk": h(kat::x3dh_secret(&dhs))}))
        })
        .collect::<Result<Vec<_>>>()?;
    let padding = list(v, "padding")?
        .iter()
        .map(|p| {
            let len = usize::try_from(number(p, "content_len")?)?;
            Ok(json!({"padded_len": kat::padded_len(len)}))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "x25519": {"public_a": h(public_a), "public_b": h(public_b), "shared": h(dh(&a, &public_b)?)},
        "kdf_rk": {"new_root_key": h(new_root_key), "chain_key": h(chain_key)},
        "kdf_ck": {"message_key": h(message_key), "next_chain_key": h(next_chain_key)},
        "message_keys": message_keys,
        "x3dh_secret": x3dh_secret,
        "padding": padding,
    }))
}

fn identity(v: &Value) -> Result<Value> {
    let mut rng = VectorRng::replay(draws(v)?);
    let id = IdentityKeyPair::generate(&mut rng);
    all_drawn(&rng)?;
    Ok(json!({
        "ed25519_public": h(id.public().as_bytes()),
        "x25519_secret": h(kat::identity_x25519_secret(&fixed(v, "seed")?)),
        "x25519_public": h(id.public().x25519()),
        "address": Address::from(id.public()).to_string(),
        "signature": h(id.sign(&bytes(v, "message")?)),
    }))
}

fn address_parse(v: &Value) -> Result<Value> {
    let cases = list(v, "cases")?
        .iter()
        .map(|c| {
            let result = match text(c, "input")?.parse::<Address>() {
                Ok(address) => json!({"ed25519_public": h(address.identity().as_bytes())}),
                Err(e) => json!({"error": error_name(&e)}),
            };
            Ok(json!({"result": result}))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({ "cases": cases }))
}

/// Both parties of `x3dh.json` and `ratchet.json`.
struct Parties {
    alice: IdentityKeyPair,
    bob: IdentityKeyPair,
    prekeys: PreKeys,
}

/// Generates both identities and Bob's prekeys (with the vector's ids)
/// from the first five draws.
fn parties(v: &Value, rng: &mut VectorRng) -> Result<Parties> {
    let id = |key| number32(get(v, key)?, "id");
    let alice = IdentityKeyPair::generate(rng);
    let bob = IdentityKeyPair::generate(rng);
    let signed = SignedPreKeyPair::generate(rng, &bob, id("bob_signed_prekey")?);
    let last_resort =
        SignedPreKeyPair::generate_last_resort(rng, &bob, id("bob_last_resort_prekey")?);
    let one_time = OneTimePreKeyPair::generate(rng, id("bob_one_time_prekey")?);
    Ok(Parties {
        alice,
        bob,
        prekeys: PreKeys {
            signed,
            last_resort,
            one_time: Some(one_time),
        },
    })
}

fn handshake(v: &Value) -> Result<Value> {
    let mut rng = VectorRng::replay(draws(v)?);
    let p = parties(v, &mut rng)?;
    let bundle = PreKeyBundle::try_from(bytes(v, "bundle")?.as_slice())?;
    let mut alice = Session::initiate(&mut rng, &p.alice, &bundle.clone().verify()?)?;
    let plaintext = bytes(v, "plaintext")?;
    let SessionMessage::PreKey(message) = alice.encrypt(&mut rng, &plaintext)? else {
        bail!("the first message is not a prekey message");
    };
    all_drawn(&rng)?;
    let received = PreKeyMessage::try_from(message.to_bytes().as_slice())?;
    let (_, opened) = Session::respond(&p.bob, &p.prekeys, &received)?;
    ensure!(
        opened == plaintext,
        "Bob's respond returned another plaintext"
    );

    // The intermediates, step by step (spec/x3dh.md, spec/ratchet.md).
    let ek = fixed(v, "alice_ephemeral_secret")?;
    let alice_x = kat::identity_x25519_secret(&fixed(v, "alice_identity_seed")?);
    let spk = bundle.signed_prekey.public;
    let mut dhs = vec![
        dh(&alice_x, &spk)?,
        dh(&ek, bundle.identity.x25519())?,
        dh(&ek, &spk)?,
    ];
    match &bundle.extra {
        Some(ExtraPreKey::OneTime(k)) => dhs.push(dh(&ek, &k.public)?),
        Some(ExtraPreKey::LastResort(k)) => dhs.push(dh(&ek, &k.public)?),
        None => {}
    }
    let sk = kat::x3dh_secret(&dhs);
    let ad = [&p.alice.public().as_bytes()[..], bundle.identity.as_bytes()].concat();
    let first_ratchet = fixed(v, "alice_first_ratchet_secret")?;
    let (root, chain) = kat::kdf_rk(&sk, &dh(&first_ratchet, &spk)?);
    let (message_key, next_chain_key) = kat::kdf_ck(&chain);
    let (key, nonce) = kat::message_key_expansion(b"hush-ratchet-v1 message", &message_key);
    let public = |k: &[u8; 32]| json!({ "public": h(k) });
    let one_time = p
        .prekeys
        .one_time
        .as_ref()
        .ok_or_else(|| anyhow!("no one-time prekey"))?;
    Ok(json!({
        "bob_signed_prekey": public(&p.prekeys.signed.public().public),
        "bob_last_resort_prekey": public(&p.prekeys.last_resort.public().public),
        "bob_one_time_prekey": public(&one_time.public().public),
        "alice_ephemeral_public": h(message.base_key),
        "dh": dhs.iter().map(h).collect::<Vec<_>>(),
        "sk": h(sk),
        "ad": h(ad),
        "alice_first_ratchet_public": h(message.message.ratchet_key),
        "root_key_after_first_step": h(root),
        "sending_chain_key": h(chain),
        "message_key": h(message_key),
        "next_chain_key": h(next_chain_key),
        "aead_key": h(key),
        "aead_nonce": h(nonce),
        "header": h(message.message.header()),
        "prekey_message": h(message.to_bytes()),
    }))
}

fn rejections(v: &Value) -> Result<Value> {
    // Bob needs the five setup draws; the last two made the genuine first
    // message the prekey-message cases were altered from.
    let mut rng = VectorRng::replay(draws(v)?.into_iter().take(5).collect());
    let mut p = parties(v, &mut rng)?;
    all_drawn(&rng)?;
    let mut cases = Vec::new();
    for c in list(v, "cases")? {
        let error = if let Some(bundle) = c.get("bundle") {
            match PreKeyBundle::try_from(bytes_of(bundle, "bundle")?.as_slice()) {
                Ok(bundle) => error_of(bundle.verify()),
                Err(e) => json!(error_name(&e)),
            }
        } else {
            if text(c, "case")? == "replay_after_one_time_prekey_deleted" {
                p.prekeys.one_time = None;
            }
            match PreKeyMessage::try_from(bytes(c, "prekey_message")?.as_slice()) {
                Ok(message) => error_of(Session::respond(&p.bob, &p.prekeys, &message)),
                Err(e) => json!(error_name(&e)),
            }
        };
        cases.push(json!({ "error": error }));
    }
    Ok(json!({ "cases": cases }))
}

fn conversation(v: &Value) -> Result<Value> {
    let mut rng = VectorRng::replay(draws(v)?);
    let p = parties(v, &mut rng)?;
    let bundle = PreKeyBundle::try_from(bytes(v, "bundle")?.as_slice())?.verify()?;
    let mut alice = Session::initiate(&mut rng, &p.alice, &bundle)?;
    // Bob's session starts with the first prekey message he reads.
    let mut bob: Option<Session> = None;
    let mut steps = Vec::new();
    for step in list(v, "steps")? {
        let party = text(step, "party")?;
        let session = match party {
            "alice" => Some(&mut alice),
            "bob" => bob.as_mut(),
            other => bail!("unknown party {other:?}"),
        };
        let output = match (text(step, "op")?, session) {
            ("encrypt", Some(session)) => {
                let before = rng.draws().len();
                let message = session.encrypt(&mut rng, &bytes(step, "plaintext")?)?;
                json!({
                    "draws": rng.draws().len() - before,
                    "type": message_type(&message),
                    "message": h(message.to_bytes()),
                })
            }
            ("decrypt", session) => {
                let result = match (session_message(step)?, session) {
                    (Err(e), _) => json!({ "error": error_name(&DecryptError::Malformed(e)) }),
                    (Ok(message), Some(session)) => decrypted(session.decrypt(&message)),
                    (Ok(SessionMessage::PreKey(message)), None) => {
                        match Session::respond(&p.bob, &p.prekeys, &message) {
                            Ok((session, plaintext)) => {
                                bob = Some(session);
                                json!({ "plaintext": h(plaintext) })
                            }
                            Err(e) => json!({ "error": error_name(&e) }),
                        }
                    }
                    (Ok(SessionMessage::Ratchet(_)), None) => {
                        bail!("{party} has no session for a ratchet message")
                    }
                };
                json!({ "result": result })
            }
            ("encrypt", None) => bail!("{party} has no session to encrypt with"),
            (other, _) => bail!("unknown op {other:?}"),
        };
        steps.push(output);
    }
    all_drawn(&rng)?;
    Ok(json!({ "steps": steps }))
}

fn message_type(message: &SessionMessage) -> &'static str {
    match message {
        SessionMessage::PreKey(_) => "prekey",
        SessionMessage::Ratchet(_) => "ratchet",
    }
}

/// A decrypt step's message, decoded by its `type`.
fn session_message(step: &Value) -> Result<Result<SessionMessage, DecodeError>> {
    let bytes = bytes(step, "message")?;
    Ok(match text(step, "type")? {
        "prekey" => {
            PreKeyMessage::try_from(bytes.as_slice()).map(|m| SessionMessage::PreKey(Box::new(m)))
        }
        "ratchet" => RatchetMessage::try_from(bytes.as_slice()).map(SessionMessage::Ratchet),
        other => bail!("unknown message type {other:?}"),
    })
}

fn group(v: &Value) -> Result<Value> {
    let mut rng = VectorRng::replay(draws(v)?);
    let group_id = fixed(v, "group_id")?;
    let mut own = SenderKeyRecord::generate(&mut rng, group_id);
    let no_chain = || anyhow!("the sender's record has no own chain");
    let distribution = own.distribution().ok_or_else(no_chain)?;
    let messages = list(v, "messages")?
        .iter()
        .map(|m| Ok(json!({"message": h(own.encrypt(&bytes(m, "plaintext")?)?.to_bytes())})))
        .collect::<Result<Vec<_>>>()?;
    own.rotate(&mut rng);
    let rotated = own.distribution().ok_or_else(no_chain)?;
    all_drawn(&rng)?;

    let (first_message_key, _) = kat::kdf_ck(&fixed(v, "chain_key")?);
    let (first_aead_key, first_aead_nonce) =
        kat::message_key_expansion(b"hush-sender-key-v1 message", &first_message_key);

    // A member reads the messages with the distribution it received, and
    // the rotated one from the step that follows it.
    let mut member = SenderKeyRecord::new(group_id);
    member.process(&SenderKeyDistribution::try_from(
        distribution.to_bytes().as_slice(),
    )?)?;
    let mut receiver_steps = Vec::new();
    for step in list(v, "receiver_steps")? {
        if text(step, "case")? == "after_new_distribution" {
            member.process(&SenderKeyDistribution::try_from(
                rotated.to_bytes().as_slice(),
            )?)?;
        }
        let result = match SenderKeyMessage::try_from(bytes(step, "message")?.as_slice()) {
            Ok(message) => decrypted(member.decrypt(&message)),
            Err(e) => json!({ "error": error_name(&DecryptError::Malformed(e)) }),
        };
        receiver_steps.push(json!({ "result": result }));
    }
    Ok(json!({
        "key_id": distribution.key_id,
        "signing_public": h(distribution.signing_key.as_bytes()),
        "distribution": h(distribution.to_bytes().as_slice()),
        "first_message_key": h(first_message_key),
        "first_aead_key": h(first_aead_key),
        "first_aead_nonce": h(first_aead_nonce),
        "messages": messages,
        "receiver_steps": receiver_steps,
        "rotated_distribution": h(rotated.to_bytes().as_slice()),
    }))
}

fn content_type(v: &Value) -> Result<ContentType> {
    Ok(match text(v, "content_type")? {
        "PREKEY" => ContentType::PreKey,
        "RATCHET" => ContentType::Ratchet,
        "SENDER_KEY" => ContentType::SenderKey,
        other => bail!("unknown content type {other:?}"),
    })
}

fn seal_one(v: &Value) -> Result<Value> {
    let mut rng = VectorRng::replay(draws(v)?);
    let sender = IdentityKeyPair::generate(&mut rng);
    let recipient = IdentityKeyPair::generate(&mut rng);
    let other = IdentityKeyPair::generate(&mut rng);
    let sealed = envelope::seal(
        &mut rng,
        &sender,
        number32(v, "sender_device")?,
        recipient.public(),
        content_type(v)?,
        &bytes(v, "content")?,
    )?;
    all_drawn(&rng)?;

    // The intermediates (spec/envelope.md).
    let (ephemeral, body_key, _) = kat::seal_message_secret(&fixed(v, "message_secret")?);
    let ephemeral_public = sealed.body.ephemeral_key;
    let padded = ChaCha20Poly1305::new(&Key::from(body_key))
        .decrypt(
            &Nonce::from([0u8; 12]),
            Payload {
                msg: &sealed.body.ciphertext,
                aad: &[&b"hush-seal-v1"[..], &ephemeral_public].concat(),
            },
        )
        .map_err(|_| anyhow!("the body does not open with the body key"))?;
    let recipient_x = recipient.public().x25519();
    let mask = kat::seal_slot_mask(
        &dh(&ephemeral, recipient_x)?,
        &ephemeral_public,
        recipient_x,
    );
    let encoded = sealed.to_bytes();
    let opened = SealedEnvelope::try_from(encoded.as_slice())?.open(&recipient)?;

    let rejections = list(v, "rejections")?
        .iter()
        .map(|r| {
            let opener = if text(r, "case")? == "wrong_recipient" {
                &other
            } else {
                &recipient
            };
            let error = match SealedEnvelope::try_from(bytes(r, "envelope")?.as_slice()) {
                Ok(envelope) => error_of(envelope.open(opener)),
                Err(e) => json!(error_name(&OpenError::Malformed(e))),
            };
            Ok(json!({ "error": error }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "ephemeral_secret": h(ephemeral),
        "body_key": h(body_key),
        "ephemeral_public": h(ephemeral_public),
        "padded_content": h(padded),
        "slot_mask": h(mask),
        "envelope": h(&encoded),
        "opened": {
            "sender": h(opened.sender.as_bytes()),
            "sender_device": opened.sender_device,
            "content": h(&opened.content),
        },
        "rejections": rejections,
    }))
}

fn seal_many(v: &Value) -> Result<Value> {
    let mut rng = VectorRng::replay(draws(v)?);
    let count = list(get(v, "identity_seeds")?, "recipients")?.len();
    let sender = IdentityKeyPair::generate(&mut rng);
    let recipients: Vec<IdentityKeyPair> = (0..count)
        .map(|_| IdentityKeyPair::generate(&mut rng))
        .collect();
    let keys: Vec<IdentityKey> = recipients.iter().map(|r| r.public().clone()).collect();
    let (body, slots) = envelope::seal_many(
        &mut rng,
        &sender,
        number32(v, "sender_device")?,
        &keys,
        content_type(v)?,
        &bytes(v, "content")?,
    )?;
    all_drawn(&rng)?;
    let per_recipient = recipients
        .iter()
        .zip(&slots)
        .map(|(recipient, slot)| {
            let encoded = SealedEnvelope {
                body: body.clone(),
                slot: *slot,
            }
            .to_bytes();
            let opened = SealedEnvelope::try_from(encoded.as_slice())?.open(recipient)?;
            Ok(json!({"envelope": h(&encoded), "content": h(&opened.content)}))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "body": h(body.to_bytes()),
        "slots": slots.iter().map(h).collect::<Vec<_>>(),
        "per_recipient": per_recipient,
    }))
}

fn pair(v: &Value) -> Result<Value> {
    let local = IdentityKey::from_bytes(&fixed(v, "local_identity")?)?;
    let remote = IdentityKey::from_bytes(&fixed(v, "remote_identity")?)?;
    let ours = SafetyNumber::new(&local, &remote);
    let theirs = SafetyNumber::new(&remote, &local);
    Ok(json!({
        "digits": ours.digits(),
        "scannable_local": h(ours.scannable().to_bytes()),
        "scannable_remote": h(theirs.scannable().to_bytes()),
    }))
}

fn decode(v: &Value) -> Result<Value> {
    let decoder: fn(&Value) -> Result<Value> = match text(v, "type")? {
        "PreKeyBundle" => decode_as::<PreKeyBundle>,
        "PreKeyMessage" => decode_as::<PreKeyMessage>,
        "RatchetMessage" => decode_as::<RatchetMessage>,
        "SenderKeyMessage" => decode_as::<SenderKeyMessage>,
        "SenderKeyDistribution" => decode_as::<SenderKeyDistribution>,
        "SealedEnvelope" => decode_as::<SealedEnvelope>,
        "ScannableSafetyNumber" => decode_as::<ScannableSafetyNumber>,
        "Address" => |input| Ok(error_of(text_of(input, "input")?.parse::<Address>())),
        other => bail!("unknown type {other:?}"),
    };
    let cases = list(v, "cases")?
        .iter()
        .map(|c| Ok(json!({ "error": decoder(get(c, "input")?)? })))
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({ "cases": cases }))
}

/// The primary (the first identity drawn) makes its list, links the
/// second and third identities and unlinks the second; each rejected
/// list gets its decoding or verification error.
fn device_lists(v: &Value) -> Result<Value> {
    let mut rng = VectorRng::replay(draws(v)?);
    let [primary, laptop, desktop, _other] =
        std::array::from_fn(|_| IdentityKeyPair::generate(&mut rng));
    all_drawn(&rng)?;
    let names = list(v, "names")?
        .iter()
        .map(|n| text_of(n, "names"))
        .collect::<Result<Vec<_>>>()?;
    let [phone, laptop_name, desktop_name] = names.as_slice() else {
        bail!("names: three names expected");
    };
    let account = primary.public();
    let v1 = DeviceList::first(&primary, phone)?;
    let v2 = v1.with_device(&primary, Device::consent(&laptop, account, laptop_name)?)?;
    let v3 = v2.with_device(&primary, Device::consent(&desktop, account, desktop_name)?)?;
    let v4 = v3.without_device(&primary, laptop.public())?;
    let rejections = list(v, "rejections")?
        .iter()
        .map(|c| {
            let bytes = bytes(c, "list")?;
            let error = match DeviceList::try_from(bytes.as_slice()) {
                Ok(list) => error_of(list.verify()),
                Err(e) => json!(error_name(&e)),
            };
            Ok(json!({ "error": error }))
        })
        .collect::<Result<Vec<_>>>()?;
    let lists: Vec<Value> = [v1, v2, v3, v4].iter().map(|l| h(l.to_bytes())).collect();
    Ok(json!({ "lists": lists, "rejections": rejections }))
}

/// A link code from its drawn bytes: its text, mailbox and key; each
/// typed input parsed to its mailbox, or its `LinkCodeError`.
fn link_code(v: &Value) -> Result<Value> {
    let mut rng = VectorRng::replay(draws(v)?);
    let code = LinkCode::generate(&mut rng);
    all_drawn(&rng)?;
    let cases = list(v, "cases")?
        .iter()
        .map(|c| {
            let result = match LinkCode::parse(text(c, "input")?) {
                Ok(parsed) => json!({ "mailbox": h(parsed.mailbox()) }),
                Err(e) => json!({ "error": error_name(&e) }),
            };
            Ok(json!({ "result": result }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "code": code.to_text().as_str(),
        "mailbox": h(code.mailbox()),
        "key": h(*code.key()),
        "cases": cases,
    }))
}

/// `null` if `input` decodes as `T`, else the `DecodeError` variant.
fn decode_as<T>(input: &Value) -> Result<Value>
where
    for<'a> T: TryFrom<&'a [u8], Error = DecodeError>,
{
    Ok(error_of(T::try_from(bytes_of(input, "input")?.as_slice())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_requests_get_an_error_answer() {
        let error = |answer: &Value, start: &str| {
            answer["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(start))
        };
        let not_json = answer("{not json");
        assert_eq!(not_json["id"], Value::Null);
        assert!(error(&not_json, "the request is not JSON"), "{not_json}");
        let incomplete = answer(r#"{"id": 4, "mechanism": "x3dh"}"#);
        assert_eq!(incomplete["id"], 4);
        assert!(error(&incomplete, "a request needs"), "{incomplete}");
        let bad_input = answer(
            r#"{"id": 5, "mechanism": "safety-numbers", "kind": "pair", "vector": {"local_identity": "zz"}}"#,
        );
        assert!(
            error(&bad_input, "`local_identity` is not hex"),
            "{bad_input}"
        );
    }

    #[test]
    fn unknown_kinds_are_unsupported() {
        assert_eq!(
            answer(r#"{"id": 1, "mechanism": "x3dh", "kind": "teleport", "vector": {}}"#),
            json!({"id": 1, "unsupported": true})
        );
    }

    #[test]
    fn missing_draws_are_an_error() {
        let answer = answer(
            r#"{"id": 2, "mechanism": "identity", "kind": "identity", "vector": {"draws": [], "seed": "00", "message": ""}}"#,
        );
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("draws: ")),
            "{answer}"
        );
    }
}
