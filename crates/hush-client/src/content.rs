//! What clients say to each other (`spec/client.md`, "Content"), parsed
//! from `proto/client.proto` into checked types at the boundary.

use hush_proto::Message as _;
use hush_proto::client as proto;
use thiserror::Error;

/// A message id: 16 random bytes chosen by the sender.
pub type MessageId = [u8; 16];

/// The longest text a message carries, bytes of UTF-8. A sealed envelope
/// holds at most 65,024 bytes of content, headers included.
pub const MAX_TEXT: usize = 60_000;

/// The most message ids one receipt names.
pub const MAX_RECEIPT_IDS: usize = 1_000;

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
    /// Encodes as a `hush.client.v1.Content`. The result holds the text.
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
        };
        proto::Content {
            message_id: self.id.to_vec(),
            sent_at_ms: self.sent_at_ms,
            counter: self.counter,
            body: Some(body),
        }
        .encode_to_vec()
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
}
