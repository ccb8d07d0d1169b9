//! What clients say to each other (`spec/client.md`, "Content"), parsed
//! from `proto/client.proto` into checked types at the boundary.

use hush_proto::Message as _;
use hush_proto::client as proto;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// A message id: 16 random bytes chosen by the sender.
pub type MessageId = [u8; 16];

/// The longest text a message carries, bytes of UTF-8. A sealed envelope
/// holds at most 65,024 bytes of content, headers included.
pub const MAX_TEXT: usize = 60_000;

/// The most message ids one receipt names.
pub const MAX_RECEIPT_IDS: usize = 1_000;

/// The most members a group has, admins included: a group message goes
/// to the others in one `Send`, and a relay takes at most 1,000
/// recipients by default (`spec/relay.md`).
pub const MAX_GROUP_MEMBERS: usize = 1_000;

/// The longest group name, bytes of UTF-8.
pub const MAX_GROUP_NAME: usize = 128;

/// A group id: 16 random bytes chosen by its creator.
pub type GroupId = [u8; 16];

/// The state of a group as an admin announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    /// The group.
    pub id: GroupId,
    /// 1 at creation, higher with every change.
    pub version: u64,
    /// Its name.
    pub name: String,
    /// Identity keys of the members, admins included, each once.
    pub members: Vec<[u8; 32]>,
    /// Identity keys of the admins, each a member.
    pub admins: Vec<[u8; 32]>,
}

/// A sender-key distribution as it travels (`spec/sender-keys.md`).
/// Secret: it holds a chain key. Compared in constant time; `Debug`
/// shows nothing of it.
#[derive(Clone)]
pub struct SenderKeyBytes(pub Zeroizing<Vec<u8>>);

impl PartialEq for SenderKeyBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl Eq for SenderKeyBytes {}

impl core::fmt::Debug for SenderKeyBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SenderKeyBytes(..)")
    }
}

/// Why content did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ContentError {
    /// Not a `Content` protobuf.
    #[error("content is not a valid message")]
    Malformed,
    /// A field has the wrong size or is missing.
    #[error("content field {0} is invalid")]
    Field(&'static str),
}

/// Delivery or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptKind {
    /// Stored by the recipient.
    Delivered,
    /// Shown to the recipient.
    Read,
}

/// What a message carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A chat message.
    Text(String),
    /// These messages were delivered or read.
    Receipt(ReceiptKind, Vec<MessageId>),
    /// The sender started or stopped typing.
    Typing(bool),
    /// The sender withdraws one of its messages.
    Recall(MessageId),
    /// A group's new state, from an admin.
    GroupUpdate(GroupState),
    /// The sender's sender key for a group.
    SenderKey(SenderKeyBytes),
    /// The sender asks for the recipient's sender key of a group.
    SenderKeyRequest(GroupId),
}

/// One message between two devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// Chosen before the first attempt; a resend reuses it.
    pub id: MessageId,
    /// The sender's clock (shown only).
    pub sent_at_ms: u64,
    /// The sender's counter in this conversation (orders its messages).
    pub counter: u64,
    /// What it says.
    pub body: Body,
}

impl Content {
    /// Encodes as a `hush.client.v1.Content`. The result holds the text
    /// (and, for a sender key, the chain key: keep it in a `Zeroizing`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = match &self.body {
            Body::Text(text) => proto::content::Body::Text(proto::Text { text: text.clone() }),
            Body::Receipt(kind, ids) => proto::content::Body::Receipt(proto::Receipt {
                kind: match kind {
                    ReceiptKind::Delivered => proto::receipt::Kind::Delivered as i32,
                    ReceiptKind::Read => proto::receipt::Kind::Read as i32,
                },
                message_ids: ids.iter().map(|id| id.to_vec()).collect(),
            }),
            Body::Typing(typing) => proto::content::Body::Typing(proto::Typing { typing: *typing }),
            Body::Recall(id) => proto::content::Body::Recall(proto::Recall {
                message_id: id.to_vec(),
            }),
            Body::GroupUpdate(g) => proto::content::Body::GroupUpdate(proto::GroupUpdate {
                group_id: g.id.to_vec(),
                version: g.version,
                name: g.name.clone(),
                members: g.members.iter().map(|m| m.to_vec()).collect(),
                admins: g.admins.iter().map(|a| a.to_vec()).collect(),
            }),
            Body::SenderKey(key) => proto::content::Body::SenderKey(proto::SenderKey {
                distribution: key.0.to_vec(),
            }),
            Body::SenderKeyRequest(group) => {
                proto::content::Body::SenderKeyRequest(proto::SenderKeyRequest {
                    group_id: group.to_vec(),
                })
            }
        };
        let mut content = proto::Content {
            message_id: self.id.to_vec(),
            sent_at_ms: self.sent_at_ms,
            counter: self.counter,
            body: Some(body),
        };
        let bytes = content.encode_to_vec();
        // The copy of a chain key made for encoding is wiped, not just freed.
        if let Some(proto::content::Body::SenderKey(key)) = content.body.as_mut() {
            key.distribution.zeroize();
        }
        bytes
    }
}

fn id(field: &'static str, bytes: &[u8]) -> Result<MessageId, ContentError> {
    bytes.try_into().map_err(|_| ContentError::Field(field))
}

impl TryFrom<&[u8]> for Content {
    type Error = ContentError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        let raw = proto::Content::decode(bytes).map_err(|_| ContentError::Malformed)?;
        let body = match raw.body.ok_or(ContentError::Field("body"))? {
            proto::content::Body::Text(t) => {
                if t.text.len() > MAX_TEXT {
                    return Err(ContentError::Field("text"));
                }
                Body::Text(t.text)
            }
            proto::content::Body::Receipt(r) => {
                let kind = match proto::receipt::Kind::try_from(r.kind) {
                    Ok(proto::receipt::Kind::Delivered) => ReceiptKind::Delivered,
                    Ok(proto::receipt::Kind::Read) => ReceiptKind::Read,
                    Err(_) => return Err(ContentError::Field("receipt.kind")),
                };
                if r.message_ids.is_empty() || r.message_ids.len() > MAX_RECEIPT_IDS {
                    return Err(ContentError::Field("receipt.message_ids"));
                }
                let ids = r
                    .message_ids
                    .iter()
                    .map(|m| id("receipt.message_ids", m))
                    .collect::<Result<_, _>>()?;
                Body::Receipt(kind, ids)
            }
            proto::content::Body::Typing(t) => Body::Typing(t.typing),
            proto::content::Body::Recall(r) => {
                Body::Recall(id("recall.message_id", &r.message_id)?)
            }
            proto::content::Body::GroupUpdate(g) => Body::GroupUpdate(group_state(g)?),
            proto::content::Body::SenderKey(mut k) => {
                let bytes = Zeroizing::new(std::mem::take(&mut k.distribution));
                if bytes.is_empty() {
                    return Err(ContentError::Field("sender_key.distribution"));
                }
                Body::SenderKey(SenderKeyBytes(bytes))
            }
            proto::content::Body::SenderKeyRequest(r) => Body::SenderKeyRequest(
                r.group_id
                    .as_slice()
                    .try_into()
                    .map_err(|_| ContentError::Field("sender_key_request.group_id"))?,
            ),
        };
        if raw.counter == 0 {
            return Err(ContentError::Field("counter"));
        }
        Ok(Self {
            id: id("message_id", &raw.message_id)?,
            sent_at_ms: raw.sent_at_ms,
            counter: raw.counter,
            body,
        })
    }
}

/// Checks a `GroupUpdate`: sizes, limits, members each once, admins
/// among them.
fn group_state(g: proto::GroupUpdate) -> Result<GroupState, ContentError> {
    let id = g
        .group_id
        .as_slice()
        .try_into()
        .map_err(|_| ContentError::Field("group_update.group_id"))?;
    if g.version == 0 {
        return Err(ContentError::Field("group_update.version"));
    }
    if g.name.is_empty() || g.name.len() > MAX_GROUP_NAME {
        return Err(ContentError::Field("group_update.name"));
    }
    let keys = |list: &[Vec<u8>], field| -> Result<Vec<[u8; 32]>, ContentError> {
        let keys: Vec<[u8; 32]> = list
            .iter()
            .map(|k| {
                k.as_slice()
                    .try_into()
                    .map_err(|_| ContentError::Field(field))
            })
            .collect::<Result<_, _>>()?;
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != keys.len() {
            return Err(ContentError::Field(field));
        }
        Ok(keys)
    };
    let members = keys(&g.members, "group_update.members")?;
    if members.is_empty() || members.len() > MAX_GROUP_MEMBERS {
        return Err(ContentError::Field("group_update.members"));
    }
    let admins = keys(&g.admins, "group_update.admins")?;
    if admins.is_empty() || admins.iter().any(|a| !members.contains(a)) {
        return Err(ContentError::Field("group_update.admins"));
    }
    Ok(GroupState {
        id,
        version: g.version,
        name: g.name,
        members,
        admins,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_body_round_trips() {
        for body in [
            Body::Text("hello, world".into()),
            Body::Text(String::new()),
            Body::Receipt(ReceiptKind::Delivered, vec![[1; 16], [2; 16]]),
            Body::Receipt(ReceiptKind::Read, vec![[3; 16]]),
            Body::Typing(true),
            Body::Typing(false),
            Body::Recall([4; 16]),
            Body::GroupUpdate(GroupState {
                id: [5; 16],
                version: 3,
                name: "friends".into(),
                members: vec![[1; 32], [2; 32], [3; 32]],
                admins: vec![[2; 32]],
            }),
            Body::SenderKey(SenderKeyBytes(Zeroizing::new(vec![1, 2, 3]))),
            Body::SenderKeyRequest([6; 16]),
        ] {
            let content = Content {
                id: [9; 16],
                sent_at_ms: 1_700_000_000_000,
                counter: 42,
                body,
            };
            assert_eq!(
                Content::try_from(content.to_bytes().as_slice()),
                Ok(content)
            );
        }
    }

    #[test]
    fn bad_fields_are_refused() {
        let good = proto::Content {
            message_id: vec![1; 16],
            sent_at_ms: 1,
            counter: 1,
            body: Some(proto::content::Body::Typing(proto::Typing { typing: true })),
        };
        let check = |mutate: &dyn Fn(&mut proto::Content), want: ContentError| {
            let mut c = good.clone();
            mutate(&mut c);
            assert_eq!(Content::try_from(c.encode_to_vec().as_slice()), Err(want));
        };
        check(
            &|c| c.message_id = vec![1; 15],
            ContentError::Field("message_id"),
        );
        check(&|c| c.body = None, ContentError::Field("body"));
        check(&|c| c.counter = 0, ContentError::Field("counter"));
        check(
            &|c| {
                c.body = Some(proto::content::Body::Recall(proto::Recall {
                    message_id: vec![0; 3],
                }))
            },
            ContentError::Field("recall.message_id"),
        );
        check(
            &|c| {
                c.body = Some(proto::content::Body::Receipt(proto::Receipt {
                    kind: 7,
                    message_ids: vec![vec![0; 16]],
                }))
            },
            ContentError::Field("receipt.kind"),
        );
        check(
            &|c| {
                c.body = Some(proto::content::Body::Receipt(proto::Receipt {
                    kind: 0,
                    message_ids: vec![],
                }))
            },
            ContentError::Field("receipt.message_ids"),
        );
        check(
            &|c| {
                c.body = Some(proto::content::Body::Text(proto::Text {
                    text: "x".repeat(MAX_TEXT + 1),
                }))
            },
            ContentError::Field("text"),
        );
        assert_eq!(
            Content::try_from(&[0xff, 0xff, 0xff][..]),
            Err(ContentError::Malformed)
        );
    }

    /// Random and mutated bytes never panic the decoder, and whatever it
    /// accepts encodes back to something it accepts the same.
    #[test]
    fn arbitrary_bytes_are_refused_or_round_trip() {
        let samples: Vec<Vec<u8>> = [
            Body::Text("hello".into()),
            Body::Receipt(ReceiptKind::Read, vec![[3; 16], [4; 16]]),
            Body::Recall([4; 16]),
            Body::GroupUpdate(GroupState {
                id: [5; 16],
                version: 2,
                name: "g".into(),
                members: vec![[1; 32], [2; 32]],
                admins: vec![[1; 32]],
            }),
            Body::SenderKey(SenderKeyBytes(Zeroizing::new(vec![9; 40]))),
            Body::SenderKeyRequest([6; 16]),
        ]
        .into_iter()
        .map(|body| {
            Content {
                id: [1; 16],
                sent_at_ms: 5,
                counter: 3,
                body,
            }
            .to_bytes()
        })
        .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut bytes = if round % 4 == 0 {
                (0..next() % 200).map(|_| next() as u8).collect()
            } else {
                samples[(next() % samples.len() as u64) as usize].clone()
            };
            for _ in 0..1 + next() % 4 {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[at] ^= 1 << (next() % 8),
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, next() as u8),
                }
            }
            if let Ok(content) = Content::try_from(bytes.as_slice()) {
                assert_eq!(
                    Content::try_from(content.to_bytes().as_slice()),
                    Ok(content)
                );
            }
        }
    }

    #[test]
    fn bad_group_updates_are_refused() {
        let good = proto::GroupUpdate {
            group_id: vec![1; 16],
            version: 1,
            name: "g".into(),
            members: vec![vec![1; 32], vec![2; 32]],
            admins: vec![vec![1; 32]],
        };
        assert!(group_state(good.clone()).is_ok());
        let check = |mutate: &dyn Fn(&mut proto::GroupUpdate), field: &'static str| {
            let mut g = good.clone();
            mutate(&mut g);
            assert_eq!(group_state(g), Err(ContentError::Field(field)));
        };
        check(&|g| g.group_id = vec![1; 15], "group_update.group_id");
        check(&|g| g.version = 0, "group_update.version");
        check(&|g| g.name = String::new(), "group_update.name");
        check(
            &|g| g.name = "x".repeat(MAX_GROUP_NAME + 1),
            "group_update.name",
        );
        check(&|g| g.members.clear(), "group_update.members");
        check(&|g| g.members.push(vec![1; 32]), "group_update.members");
        check(&|g| g.members.push(vec![1; 31]), "group_update.members");
        check(&|g| g.admins.clear(), "group_update.admins");
        check(&|g| g.admins = vec![vec![9; 32]], "group_update.admins");
        let mut too_many = good.clone();
        too_many.members = (0..=MAX_GROUP_MEMBERS)
            .map(|i| (i as u32).to_be_bytes().repeat(8))
            .collect();
        too_many.admins = vec![too_many.members[0].clone()];
        assert_eq!(
            group_state(too_many),
            Err(ContentError::Field("group_update.members"))
        );
        let content = |body| proto::Content {
            message_id: vec![1; 16],
            sent_at_ms: 1,
            counter: 1,
            body: Some(body),
        };
        assert_eq!(
            Content::try_from(
                content(proto::content::Body::SenderKey(proto::SenderKey {
                    distribution: vec![]
                }))
                .encode_to_vec()
                .as_slice()
            ),
            Err(ContentError::Field("sender_key.distribution"))
        );
        assert_eq!(
            Content::try_from(
                content(proto::content::Body::SenderKeyRequest(
                    proto::SenderKeyRequest {
                        group_id: vec![1; 3]
                    }
                ))
                .encode_to_vec()
                .as_slice()
            ),
            Err(ContentError::Field("sender_key_request.group_id"))
        );
        assert_eq!(
            format!("{:?}", SenderKeyBytes(Zeroizing::new(vec![7; 8]))),
            "SenderKeyBytes(..)"
        );
    }
}
