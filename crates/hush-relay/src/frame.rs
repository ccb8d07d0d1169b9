//! Frames on the relay stream (`spec/relay.md`, "Framing"): a 4-byte
//! big-endian length, then a protobuf message of that many bytes.

use prost::Message;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side accepts: a page (at most
/// `store::PAGE_MAX_BYTES` of bodies plus one more envelope and framing)
/// and a send (a body of at most 128 KiB plus 2,000 recipients of 84
/// bytes) both fit inside.
pub const MAX_FRAME: usize = 2 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The length prefix is over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The bytes are not the expected protobuf message.
    #[error("malformed frame")]
    Malformed,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The transport failed.
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame; `Ok(None)` when the stream ends cleanly between frames.
pub async fn read<M: Message + Default, R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<M>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    reader.read_exact(&mut len[1..]).await.map_err(eof)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf.resize(len, 0);
    reader.read_exact(buf).await.map_err(eof)?;
    M::decode(buf.as_slice())
        .map(Some)
        .map_err(|_| FrameError::Malformed)
}

fn eof(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

/// Encodes one frame into `out` (appending).
pub fn encode(message: &impl Message, out: &mut Vec<u8>) {
    let len = message.encoded_len();
    out.reserve(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    // Encoding into a Vec cannot run out of space.
    let _ = message.encode(out);
}

/// Writes one frame.
pub async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &impl Message,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    encode(message, &mut out);
    writer.write_all(&out).await
}

/// Writes every frame from `frames` until the channel closes, putting
/// all frames already waiting into one write (up to about 1 MiB) so a
/// busy stream costs one write per batch, not per frame. Returns when
/// the channel is closed and everything is written, or on a write error.
pub async fn pump<M: Message, W: AsyncWrite + Unpin>(
    frames: &mut tokio::sync::mpsc::Receiver<M>,
    writer: &mut W,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(first) = frames.recv().await {
        buf.clear();
        encode(&first, &mut buf);
        while buf.len() < 1 << 20 {
            match frames.try_recv() {
                Ok(next) => encode(&next, &mut buf),
                Err(_) => break,
            }
        }
        writer.write_all(&buf).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_proto::relay::{Ack, ClientFrame, client_frame::Request};

    #[tokio::test]
    async fn round_trip_and_errors() {
        let frame = ClientFrame {
            request_id: 7,
            request: Some(Request::Ack(Ack {
                seqs: vec![1, 2, 3],
            })),
        };
        let mut bytes = Vec::new();
        encode(&frame, &mut bytes);
        encode(&frame, &mut bytes);
        let mut reader = bytes.as_slice();
        let mut buf = Vec::new();
        assert_eq!(
            read::<ClientFrame, _>(&mut reader, &mut buf)
                .await
                .expect("reads"),
            Some(frame.clone())
        );
        assert_eq!(
            read::<ClientFrame, _>(&mut reader, &mut buf)
                .await
                .expect("reads"),
            Some(frame)
        );
        assert_eq!(
            read::<ClientFrame, _>(&mut reader, &mut buf)
                .await
                .expect("clean end"),
            None
        );

        let mut truncated = &bytes[..bytes.len() - 1];
        read::<ClientFrame, _>(&mut truncated, &mut buf)
            .await
            .expect("first frame");
        assert!(matches!(
            read::<ClientFrame, _>(&mut truncated, &mut buf).await,
            Err(FrameError::Truncated)
        ));

        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read::<ClientFrame, _>(&mut &huge[..], &mut buf).await,
            Err(FrameError::TooLarge(_))
        ));

        let garbage = [0, 0, 0, 2, 0xff, 0xff];
        assert!(matches!(
            read::<ClientFrame, _>(&mut &garbage[..], &mut buf).await,
            Err(FrameError::Malformed)
        ));
    }
}
