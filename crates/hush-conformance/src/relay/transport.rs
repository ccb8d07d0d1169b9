//! Transport, framing and closing checks (`spec/relay.md`, "Transport",
//! "Connection", "Framing", "Request ids and pipelining", "Closing").

use anyhow::{Context, Result, bail, ensure};
use hush_proto::relay as proto;
use prost::Message;
use proto::ErrorCode;
use proto::client_frame::Request;

use super::net::{ALPN, Close, Conn, MAX_FRAME, SERVER_NAME, frame, framed, negotiated_alpn};
use super::queue::go_live;
use super::session::{Outcome, Outgoing, Session, Verdict, error, prekey_count, random, sent};

/// Close codes (`spec/relay.md`, "Closing").
const NORMAL: u64 = 0;
const PROTOCOL: u64 = 2;

/// The answer to a `PrekeyCount` on a connection that has not
/// authenticated: a cheap request with a known answer.
async fn unauthenticated_count(conn: &mut Conn) -> Result<()> {
    error(
        conn.request(prekey_count()).await?,
        ErrorCode::Unauthenticated,
    )?;
    Ok(())
}

/// Checks that the relay closed with `code`.
fn closed_with(close: &Close, code: u64, name: &str) -> Result<()> {
    ensure!(
        close.code == code,
        "expected the connection closed with {name} ({code}), got code {} ({:?})",
        close.code,
        close.reason
    );
    Ok(())
}

/// `transport.handshake`: QUIC and TLS 1.3 with ALPN `hush/1` and the
/// pinned certificate; the relay agrees on `hush/1`.
pub(crate) async fn handshake(s: &mut Session) -> Outcome {
    let connection = s.target.handshake(&[ALPN], SERVER_NAME).await?;
    let alpn = negotiated_alpn(&connection);
    ensure!(
        alpn.as_deref() == Some(ALPN),
        "expected ALPN hush/1 agreed on, got {:?}",
        alpn.map(|p| String::from_utf8_lossy(&p).into_owned())
    );
    connection.close(0u32.into(), b"done");
    Ok(Verdict::Pass)
}

/// `transport.alpn`: a handshake without `hush/1` fails, whether the
/// client offers another protocol or none.
pub(crate) async fn alpn(s: &mut Session) -> Outcome {
    for (offered, what) in [(&[&b"hush/0"[..]][..], "only hush/0"), (&[][..], "no ALPN")] {
        if let Ok(connection) = s.target.handshake(offered, SERVER_NAME).await {
            connection.close(0u32.into(), b"done");
            bail!("expected the handshake offering {what} to fail, got a connection");
        }
    }
    Ok(Verdict::Pass)
}

/// `transport.server_name`: the relay serves its one certificate whatever
/// the server name.
pub(crate) async fn server_name(s: &mut Session) -> Outcome {
    let connection = s
        .target
        .handshake(&[ALPN], "conformance.invalid")
        .await
        .context("a handshake naming conformance.invalid")?;
    connection.close(0u32.into(), b"done");
    Ok(Verdict::Pass)
}

/// `transport.streams`: one bidirectional stream at a time and no
/// unidirectional stream (`initial_max_streams_bidi` 1, `_uni` 0).
pub(crate) async fn streams(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    unauthenticated_count(&mut conn).await?;
    let quiet = s.quiet();
    match tokio::time::timeout(quiet, conn.connection().open_bi()).await {
        Err(_) => {}
        Ok(Ok(_)) => bail!("expected no credit for a second bidirectional stream, got one"),
        Ok(Err(e)) => bail!("expected the connection to stay open, got {e}"),
    }
    match tokio::time::timeout(quiet, conn.connection().open_uni()).await {
        Err(_) => {}
        Ok(Ok(_)) => bail!("expected no credit for a unidirectional stream, got one"),
        Ok(Err(e)) => bail!("expected the connection to stay open, got {e}"),
    }
    Ok(Verdict::Pass)
}

/// `framing.request_ids`: pipelined requests, any non-zero ids (up to
/// 2^64 − 1), each answered once with its id, in request order.
pub(crate) async fn request_ids(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    let ids = [1, 300, u64::MAX, 1 << 32, 7];
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&id| frame(id, Some(prekey_count())))
        .collect();
    conn.write_raw(&bytes, &ids).await?;
    let mut order = Vec::new();
    for _ in ids {
        let (id, body) = conn.next_answer().await?;
        error(body, ErrorCode::Unauthenticated).with_context(|| format!("request {id}"))?;
        order.push(id);
    }
    ensure!(
        order == ids,
        "expected answers in request order {ids:?}, got {order:?}"
    );
    Ok(Verdict::Pass)
}

/// `framing.unknown_fields`: unknown fields, in the frame and in the
/// request, are skipped.
pub(crate) async fn unknown_fields(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    let id = conn.next_id();
    let mut inner = Vec::new();
    prost::encoding::uint64::encode(15, &1, &mut inner);
    let mut message = Vec::new();
    prost::encoding::uint64::encode(1, &id, &mut message);
    prost::encoding::bytes::encode(5, &inner, &mut message); // prekey_count
    prost::encoding::uint64::encode(99, &1, &mut message);
    conn.write_raw(&framed(&message), &[id]).await?;
    error(conn.answer(id).await?, ErrorCode::Unauthenticated)
        .context("PrekeyCount with unknown fields")?;
    Ok(Verdict::Pass)
}

/// `framing.empty_request`: a frame with a request id and no request is
/// answered `MALFORMED`, and the connection goes on.
pub(crate) async fn empty_request(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    let id = conn.next_id();
    conn.write_raw(&frame(id, None), &[id]).await?;
    error(conn.answer(id).await?, ErrorCode::Malformed)?;
    unauthenticated_count(&mut conn)
        .await
        .context("the next request")?;
    Ok(Verdict::Pass)
}

/// `framing.unknown_request`: a `oneof` member the relay does not know
/// is answered `MALFORMED` ("empty request"), and the connection goes on.
pub(crate) async fn unknown_request(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    let id = conn.next_id();
    let mut message = Vec::new();
    prost::encoding::uint64::encode(1, &id, &mut message);
    prost::encoding::bytes::encode(15, &Vec::<u8>::new(), &mut message);
    conn.write_raw(&framed(&message), &[id]).await?;
    error(conn.answer(id).await?, ErrorCode::Malformed).context("request field 15")?;
    unauthenticated_count(&mut conn)
        .await
        .context("the next request")?;
    Ok(Verdict::Pass)
}

/// Writes a `Send` to a registered device, then `bad`, then (unless the
/// stream is to end after `bad`) another `Send` to it; checks that the
/// first is answered and stored, the second neither, and that the
/// connection is closed with `PROTOCOL`.
async fn protocol_error(s: &Session, bad: &[u8], finish: bool) -> Outcome {
    let mut r = s.registered(&[]).await?;
    let before = Outgoing::random(10, &[&r.device.key])?;
    let after = Outgoing::random(11, &[&r.device.key])?;
    let mut conn = s.connect().await?;
    let first = conn.next_id();
    let mut bytes = frame(first, Some(before.request()));
    bytes.extend_from_slice(bad);
    if !finish {
        bytes.extend(frame(conn.next_id(), Some(after.request())));
    }
    conn.write_raw(&bytes, &[first]).await?;
    if finish {
        conn.finish()?;
    }
    sent(conn.answer(first).await?, &before.send.message_id, false)
        .context("the Send before the bad frame")?;
    let close = conn.end().await?;
    closed_with(&close, PROTOCOL, "PROTOCOL")?;
    let stored = go_live(&mut r.conn).await?;
    ensure!(
        stored.len() == 1,
        "expected the Send before the bad frame stored and the one after it not, got {} envelopes",
        stored.len()
    );
    before.matches(&stored[0], 0)?;
    Ok(Verdict::Pass)
}

/// `framing.zero_length`: a zero-length message is a `ClientFrame` with
/// every field absent, so its `request_id` is 0: a protocol error, as in
/// `framing.request_id_zero`.
pub(crate) async fn zero_length(s: &mut Session) -> Outcome {
    protocol_error(s, &framed(&[]), false).await
}

/// `framing.request_id_zero`: `request_id` 0 closes the connection with
/// `PROTOCOL`; frames before it are handled, it and later ones not.
pub(crate) async fn request_id_zero(s: &mut Session) -> Outcome {
    protocol_error(s, &frame(0, Some(prekey_count())), false).await
}

/// A `Send` frame of exactly `len` bytes of message (a large body), or
/// an error if no body length gives that.
fn send_frame_of(id: u64, len: usize) -> Result<Vec<u8>> {
    let mut send = proto::Send {
        message_id: random::<16>()?.to_vec(),
        body: Vec::new(),
        recipients: vec![proto::Recipient {
            device_key: random::<32>()?.to_vec(),
            slot: vec![0; 48],
        }],
        expected: Vec::new(),
    };
    let mut body = len.saturating_sub(64);
    for _ in 0..4 {
        send.body = vec![0; body];
        let message = proto::ClientFrame {
            request_id: id,
            request: Some(Request::Send(send.clone())),
        }
        .encode_to_vec();
        if message.len() == len {
            return Ok(framed(&message));
        }
        body = (body + len).saturating_sub(message.len());
    }
    bail!("cannot build a frame of exactly {len} bytes")
}

/// `framing.max_frame`: a frame of exactly `MAX_FRAME` bytes is read (the
/// `Send` in it is answered `TOO_LARGE`: its body is over the limit).
pub(crate) async fn max_frame(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    let id = conn.next_id();
    conn.write_raw(&send_frame_of(id, MAX_FRAME)?, &[id])
        .await?;
    error(conn.answer(id).await?, ErrorCode::TooLarge)
        .context("a Send frame of exactly MAX_FRAME bytes")?;
    unauthenticated_count(&mut conn)
        .await
        .context("the next request")?;
    Ok(Verdict::Pass)
}

/// `framing.oversized`: a frame of `MAX_FRAME + 1` bytes (a well-formed
/// `ClientFrame`) closes the connection with `PROTOCOL`, unanswered.
pub(crate) async fn oversized(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    let id = conn.next_id();
    let bytes = send_frame_of(id, MAX_FRAME + 1)?;
    // The relay may stop reading at the length: the write can fail.
    let _ = conn.write_raw(&bytes, &[]).await;
    let close = conn.end().await?;
    closed_with(&close, PROTOCOL, "PROTOCOL")?;
    Ok(Verdict::Pass)
}

/// `framing.malformed`: a message that is not protobuf closes the
/// connection with `PROTOCOL`; the frame before it is handled, the one
/// after it not.
pub(crate) async fn malformed(s: &mut Session) -> Outcome {
    protocol_error(s, &framed(&[0xff, 0xff]), false).await
}

/// `framing.truncated`: the stream ending inside a frame (in its body,
/// or in its length) closes the connection with `PROTOCOL`; the frame
/// before it is handled.
pub(crate) async fn truncated(s: &mut Session) -> Outcome {
    protocol_error(s, &[0, 0, 0, 10, 1, 2, 3], true)
        .await
        .context("the stream ending in a frame's body")?;
    protocol_error(s, &[0, 0], true)
        .await
        .context("the stream ending in a frame's length")
}

/// `closing.clean_end`: the stream ending between frames: every request
/// is answered, then the relay ends its stream and closes with `NORMAL`.
pub(crate) async fn clean_end(s: &mut Session) -> Outcome {
    let mut conn = s.connect().await?;
    let id = conn.start(prekey_count()).await?;
    conn.finish()?;
    error(conn.answer(id).await?, ErrorCode::Unauthenticated)
        .context("the request before the end of the stream")?;
    let close = conn.end().await?;
    closed_with(&close, NORMAL, "NORMAL")?;
    Ok(Verdict::Pass)
}
