//! `decoding.json`: truncated and malformed encodings of every wire
//! message, of addresses and of scannable safety numbers, each with the
//! error a decoder must return (`spec/index.md`, "Decode errors";
//! `spec/identity.md`, "Parsing").
//!
//! Every case breaks exactly one rule, so the error does not depend on
//! the order in which a decoder checks its fields.

use anyhow::{Result, anyhow, ensure};
use hush_crypto::envelope::{self, ContentType};
use hush_crypto::prekey::ExtraPreKey;
use hush_crypto::{
    Address, DecodeError, IdentityKeyPair, PreKeyBundle, PreKeyMessage, RatchetMessage,
    SafetyNumber, ScannableSafetyNumber, SealedEnvelope, SenderKeyDistribution, SenderKeyMessage,
    SenderKeyRecord, Session, SessionMessage,
};
use hush_proto::{Message, wire};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Extra, Fields, fields, h, setup};
use crate::{VectorRng, error_name};

/// An Ed25519 encoding of the neutral point: decodes, but has small order.
const SMALL_ORDER_KEY: [u8; 32] = {
    let mut key = [0u8; 32];
    key[0] = 1;
    key
};

/// The cases of one decoder, each checked to give the error it is named
/// for.
struct Cases {
    decode: fn(&[u8]) -> Result<(), String>,
    cases: Vec<Value>,
}

impl Cases {
    /// Cases for the protobuf message `T`.
    fn of<T>() -> Self
    where
        for<'a> T: TryFrom<&'a [u8], Error = DecodeError>,
    {
        Self {
            decode: |bytes| T::try_from(bytes).map(drop).map_err(|e| error_name(&e)),
            cases: Vec::new(),
        }
    }

    /// Records `bytes` under `case`; `error` is the variant the decoder
    /// must return, `None` if it must accept.
    fn case(&mut self, case: &str, bytes: &[u8], error: Option<&str>) -> Result<()> {
        let got = (self.decode)(bytes).err();
        ensure!(
            got.as_deref() == error,
            "case {case}: the decoder returned {got:?}, expected {error:?}"
        );
        self.cases
            .push(json!({"case": case, "input": h(bytes), "error": error}));
        Ok(())
    }

    /// The genuine encoding, then two truncations every protobuf decoder
    /// rejects as such: the last byte missing (the last field overruns
    /// the input) and only the first byte left (a tag without its value).
    fn genuine(&mut self, bytes: &[u8]) -> Result<()> {
        ensure!(bytes.len() > 1, "the genuine encoding is too short to cut");
        self.case("valid", bytes, None)?;
        self.case(
            "truncated_last_byte",
            &bytes[..bytes.len() - 1],
            Some("Protobuf"),
        )?;
        self.case("truncated_to_one_byte", &bytes[..1], Some("Protobuf"))
    }

    fn finish(self, type_name: &str) -> Fields {
        Ok(fields(json!({"type": type_name, "cases": self.cases})))
    }
}

/// `proto` encoded after `edit`.
fn edited<M: Message + Clone>(proto: &M, edit: impl FnOnce(&mut M)) -> Vec<u8> {
    let mut proto = proto.clone();
    edit(&mut proto);
    proto.encode_to_vec()
}

/// `genuine` cut at a field boundary: the encoding of `proto` after
/// `edit` removed its last fields, checked to be a prefix of `genuine`.
fn cut<M: Message + Clone>(
    genuine: &[u8],
    proto: &M,
    edit: impl FnOnce(&mut M),
) -> Result<Vec<u8>> {
    let bytes = edited(proto, edit);
    ensure!(
        bytes.len() < genuine.len() && genuine.starts_with(&bytes),
        "not a truncation of the genuine encoding"
    );
    Ok(bytes)
}

/// Drops the last byte of a fixed-size field.
fn shorten(field: &mut Vec<u8>) {
    field.pop();
}

/// A first message: the x3dh.json setup draws, then `EK_A` and the first
/// ratchet secret.
fn first_message(rng: &mut VectorRng) -> Result<PreKeyMessage> {
    let s = setup(rng, Extra::OneTime)?;
    let verified = s.bundle.verify().map_err(|e| anyhow!("{e}"))?;
    let mut alice = Session::initiate(rng, &s.alice, &verified).map_err(|e| anyhow!("{e}"))?;
    match alice.encrypt(rng, b"hello bob")? {
        SessionMessage::PreKey(m) => Ok(*m),
        SessionMessage::Ratchet(_) => Err(anyhow!("first message is not a prekey message")),
    }
}

pub(super) fn pre_key_bundle(rng: &mut VectorRng) -> Fields {
    let s = setup(rng, Extra::OneTime)?;
    let genuine = s.bundle.to_bytes();
    let proto = wire::PreKeyBundle::decode(genuine.as_slice())?;
    let mut last_resort = s.bundle.clone();
    last_resort.extra = Some(ExtraPreKey::LastResort(s.keys.last_resort.public()));
    let last_resort_proto = wire::PreKeyBundle::decode(last_resort.to_bytes().as_slice())?;

    let mut c = Cases::of::<PreKeyBundle>();
    c.genuine(&genuine)?;
    c.case("valid_last_resort", &last_resort.to_bytes(), None)?;
    let only_identity = cut(&genuine, &proto, |p| {
        p.signed_prekey = None;
        p.extra = None;
    })?;
    c.case(
        "truncated_after_identity_key",
        &only_identity,
        Some("MissingField"),
    )?;
    let bytes = edited(&proto, |p| shorten(&mut p.identity_key));
    c.case("identity_key_truncated", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| p.identity_key = SMALL_ORDER_KEY.to_vec());
    c.case("identity_key_small_order", &bytes, Some("InvalidKey"))?;
    let bytes = edited(&proto, |p| {
        if let Some(k) = &mut p.signed_prekey {
            shorten(&mut k.public_key);
        }
    });
    c.case("signed_prekey_public_truncated", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| {
        if let Some(k) = &mut p.signed_prekey {
            shorten(&mut k.signature);
        }
    });
    c.case(
        "signed_prekey_signature_truncated",
        &bytes,
        Some("BadLength"),
    )?;
    let bytes = edited(&proto, |p| {
        if let Some(wire::pre_key_bundle::Extra::OneTimePrekey(k)) = &mut p.extra {
            shorten(&mut k.public_key);
        }
    });
    c.case(
        "one_time_prekey_public_truncated",
        &bytes,
        Some("BadLength"),
    )?;
    let bytes = edited(&last_resort_proto, |p| {
        if let Some(wire::pre_key_bundle::Extra::LastResortPrekey(k)) = &mut p.extra {
            shorten(&mut k.signature);
        }
    });
    c.case(
        "last_resort_prekey_signature_truncated",
        &bytes,
        Some("BadLength"),
    )?;
    c.finish("PreKeyBundle")
}

pub(super) fn pre_key_message(rng: &mut VectorRng) -> Fields {
    let genuine = first_message(rng)?.to_bytes();
    let proto = wire::PreKeyMessage::decode(genuine.as_slice())?;
    let mut c = Cases::of::<PreKeyMessage>();
    c.genuine(&genuine)?;
    let bytes = cut(&genuine, &proto, |p| p.message = None)?;
    c.case("truncated_before_message", &bytes, Some("MissingField"))?;
    let bytes = edited(&proto, |p| shorten(&mut p.identity_key));
    c.case("identity_key_truncated", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| p.identity_key = SMALL_ORDER_KEY.to_vec());
    c.case("identity_key_small_order", &bytes, Some("InvalidKey"))?;
    let bytes = edited(&proto, |p| shorten(&mut p.base_key));
    c.case("base_key_truncated", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| {
        if let Some(m) = &mut p.message {
            shorten(&mut m.ratchet_key);
        }
    });
    c.case("ratchet_key_truncated", &bytes, Some("BadLength"))?;
    c.finish("PreKeyMessage")
}

pub(super) fn ratchet_message(rng: &mut VectorRng) -> Fields {
    let genuine = first_message(rng)?.message.to_bytes();
    let proto = wire::RatchetMessage::decode(genuine.as_slice())?;
    let mut c = Cases::of::<RatchetMessage>();
    c.genuine(&genuine)?;
    c.case("empty", &[], Some("BadLength"))?;
    let bytes = edited(&proto, |p| shorten(&mut p.ratchet_key));
    c.case("ratchet_key_truncated", &bytes, Some("BadLength"))?;
    c.finish("RatchetMessage")
}

/// The sender-keys.json group id and a sender's record (draws: key id,
/// chain key, signing seed).
fn sender_record(rng: &mut VectorRng) -> SenderKeyRecord {
    SenderKeyRecord::generate(rng, [0x67; 16])
}

pub(super) fn sender_key_message(rng: &mut VectorRng) -> Fields {
    let genuine = sender_record(rng).encrypt(b"g0")?.to_bytes();
    let proto = wire::SenderKeyMessage::decode(genuine.as_slice())?;
    let mut c = Cases::of::<SenderKeyMessage>();
    c.genuine(&genuine)?;
    c.case("empty", &[], Some("BadLength"))?;
    let bytes = cut(&genuine, &proto, |p| p.group_id.clear())?;
    c.case("truncated_before_group_id", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| shorten(&mut p.signature));
    c.case("signature_truncated", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| shorten(&mut p.group_id));
    c.case("group_id_truncated", &bytes, Some("BadLength"))?;
    c.finish("SenderKeyMessage")
}

pub(super) fn sender_key_distribution(rng: &mut VectorRng) -> Fields {
    let genuine = sender_record(rng)
        .distribution()
        .ok_or_else(|| anyhow!("no own chain"))?
        .to_bytes();
    let proto = wire::SenderKeyDistribution::decode(genuine.as_slice())?;
    let mut c = Cases::of::<SenderKeyDistribution>();
    c.genuine(&genuine)?;
    let bytes = cut(&genuine, &proto, |p| p.group_id.clear())?;
    c.case("truncated_before_group_id", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| shorten(&mut p.chain_key));
    c.case("chain_key_truncated", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| shorten(&mut p.signing_key));
    c.case("signing_key_truncated", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| p.signing_key = SMALL_ORDER_KEY.to_vec());
    c.case("signing_key_small_order", &bytes, Some("InvalidKey"))?;
    let bytes = edited(&proto, |p| shorten(&mut p.group_id));
    c.case("group_id_truncated", &bytes, Some("BadLength"))?;
    c.finish("SenderKeyDistribution")
}

pub(super) fn sealed_envelope(rng: &mut VectorRng) -> Fields {
    let sender = IdentityKeyPair::generate(rng);
    let recipient = IdentityKeyPair::generate(rng);
    let content = b"a ratchet message would go here";
    let genuine = envelope::seal(
        rng,
        &sender,
        1,
        recipient.public(),
        ContentType::Ratchet,
        content,
    )?
    .to_bytes();
    let proto = wire::SealedEnvelope::decode(genuine.as_slice())?;
    let mut c = Cases::of::<SealedEnvelope>();
    c.genuine(&genuine)?;
    let bytes = cut(&genuine, &proto, |p| p.slot.clear())?;
    c.case("truncated_before_slot", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| shorten(&mut p.slot));
    c.case("slot_truncated", &bytes, Some("BadLength"))?;
    let bytes = edited(&proto, |p| p.body = None);
    c.case("body_missing", &bytes, Some("MissingField"))?;
    let body = |edit: fn(&mut wire::SealedBody)| {
        edited(&proto, |p| {
            if let Some(b) = &mut p.body {
                edit(b);
            }
        })
    };
    let bytes = body(|b| shorten(&mut b.ephemeral_key));
    c.case("ephemeral_key_truncated", &bytes, Some("BadLength"))?;
    c.case(
        "version_missing",
        &body(|b| b.version = 0),
        Some("UnsupportedVersion"),
    )?;
    c.case(
        "version_2",
        &body(|b| b.version = 2),
        Some("UnsupportedVersion"),
    )?;
    c.finish("SealedEnvelope")
}

/// An address of any version and key, encoded as `spec/identity.md`
/// says: `"hush" || base32(version || key || checksum)`.
fn address_text(version: u8, key: &[u8; 32]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = Sha256::new()
        .chain_update(b"hush-address-v1")
        .chain_update([version])
        .chain_update(key)
        .finalize();
    let payload = [&[version][..], key, &digest[..4]].concat();
    let mut text = String::from("hush");
    let (mut acc, mut bits) = (0u32, 0);
    for byte in payload {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    text.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    text
}

pub(super) fn address(rng: &mut VectorRng) -> Fields {
    let id = IdentityKeyPair::generate(rng);
    let key = id.public().as_bytes();
    let good = address_text(1, key);
    ensure!(
        good == Address::from(id.public()).to_string(),
        "address encoding differs from hush-crypto's"
    );
    // The last character carries 1 payload bit and 4 zero bits.
    let last = good
        .chars()
        .last()
        .ok_or_else(|| anyhow!("empty address"))?;
    let odd_tail = if last == 'a' { 'b' } else { 'r' };
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xed;
    non_canonical[31] = 0x7f;
    let cases = [
        ("valid", good.clone(), None),
        ("empty", String::new(), Some("BadPrefix")),
        ("prefix_only", "hush".into(), Some("BadLength")),
        (
            "one_character_short",
            good[..good.len() - 1].into(),
            Some("BadLength"),
        ),
        ("one_character_long", format!("{good}a"), Some("BadLength")),
        (
            "nonzero_padding_bits",
            format!("{}{odd_tail}", &good[..good.len() - 1]),
            Some("BadChecksum"),
        ),
        (
            "unsupported_version",
            address_text(2, key),
            Some("UnsupportedVersion"),
        ),
        (
            "small_order_key",
            address_text(1, &SMALL_ORDER_KEY),
            Some("Key"),
        ),
        (
            "non_canonical_key",
            address_text(1, &non_canonical),
            Some("Key"),
        ),
    ];
    let mut out = Vec::new();
    for (case, text, error) in cases {
        let got = text.parse::<Address>().err().map(|e| error_name(&e));
        ensure!(
            got.as_deref() == error,
            "case {case}: the parser returned {got:?}, expected {error:?}"
        );
        out.push(json!({"case": case, "input": text, "error": error}));
    }
    Ok(fields(json!({"type": "Address", "cases": out})))
}

pub(super) fn scannable_safety_number(rng: &mut VectorRng) -> Fields {
    let local = IdentityKeyPair::generate(rng);
    let remote = IdentityKeyPair::generate(rng);
    let genuine = SafetyNumber::new(local.public(), remote.public())
        .scannable()
        .to_bytes();
    let mut c = Cases::of::<ScannableSafetyNumber>();
    c.case("valid", &genuine, None)?;
    c.case("empty", &[], Some("BadLength"))?;
    c.case("truncated_last_byte", &genuine[..64], Some("BadLength"))?;
    c.case(
        "one_byte_long",
        &[&genuine[..], &[0]].concat(),
        Some("BadLength"),
    )?;
    let mut version_1 = genuine;
    version_1[0] = 1;
    c.case("version_1", &version_1, Some("UnsupportedVersion"))?;
    c.finish("ScannableSafetyNumber")
}
