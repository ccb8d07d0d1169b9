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

/// Reads frames from a stream through its own buffer. Every method is
/// cancel-safe: a read abandoned half-way (say, in a `select!`) loses
/// nothing, and the next call goes on where it stopped. One read from
/// the stream usually yields many frames.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// Bytes before this are consumed.
    start: usize,
}

/// Bytes asked of the stream per read inside a frame or a burst.
const READ_CHUNK: usize = 64 * 1024;

/// Buffer kept while waiting between frames.
const IDLE_CAPACITY: usize = 2 * 1024;

impl Reader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next whole frame from the buffer, if one is there;
    /// reads nothing from the stream.
    pub fn decode<M: Message + Default>(&mut self) -> Result<Option<M>, FrameError> {
        let waiting = &self.buf[self.start..];
        let Some(prefix) = waiting.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let Some(body) = waiting.get(4..4 + len) else {
            return Ok(None);
        };
        let message = M::decode(body).map_err(|_| FrameError::Malformed)?;
        self.start += 4 + len;
        if self.start == self.buf.len() {
            // Nothing left: an idle connection keeps no large buffer.
            if self.buf.capacity() > IDLE_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.start = 0;
        }
        Ok(Some(message))
    }

    /// Reads more bytes from `reader` into the buffer. `Ok(false)` when
    /// the stream has ended between frames; `Truncated` when it ended
    /// inside one.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> Result<bool, FrameError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // Between frames, a small read; inside one (a burst), a large one.
        self.buf.reserve(if self.buf.is_empty() {
            IDLE_CAPACITY
        } else {
            READ_CHUNK
        });
        // `read_buf` is cancel-safe: the buffer grows only by what was read.
        match reader.read_buf(&mut self.buf).await? {
            0 if self.buf.is_empty() => Ok(false),
            0 => Err(FrameError::Truncated),
            _ => Ok(true),
        }
    }

    /// The next frame, reading as needed; `Ok(None)` when the stream
    /// ends cleanly between frames.
    pub async fn next<M: Message + Default, R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Option<M>, FrameError> {
        loop {
            if let Some(message) = self.decode()? {
                return Ok(Some(message));
            }
            if !self.fill(reader).await? {
                return Ok(None);
            }
        }
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
    #![allow(clippy::panic)]
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
        let mut stream = bytes.as_slice();
        let mut reader = Reader::new();
        assert_eq!(
            reader
                .next::<ClientFrame, _>(&mut stream)
                .await
                .expect("reads"),
            Some(frame.clone())
        );
        assert_eq!(
            reader
                .next::<ClientFrame, _>(&mut stream)
                .await
                .expect("reads"),
            Some(frame.clone())
        );
        assert_eq!(
            reader
                .next::<ClientFrame, _>(&mut stream)
                .await
                .expect("clean end"),
            None
        );

        let mut truncated = &bytes[..bytes.len() - 1];
        let mut reader = Reader::new();
        reader
            .next::<ClientFrame, _>(&mut truncated)
            .await
            .expect("first frame");
        assert!(matches!(
            reader.next::<ClientFrame, _>(&mut truncated).await,
            Err(FrameError::Truncated)
        ));

        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            Reader::new().next::<ClientFrame, _>(&mut &huge[..]).await,
            Err(FrameError::TooLarge(_))
        ));

        let garbage = [0, 0, 0, 2, 0xff, 0xff];
        assert!(matches!(
            Reader::new()
                .next::<ClientFrame, _>(&mut &garbage[..])
                .await,
            Err(FrameError::Malformed)
        ));

        // Fed a byte at a time, with a read abandoned while it waits
        // before each byte: nothing is lost or repeated.
        let (mut tx, mut rx) = tokio::io::duplex(64);
        let mut reader = Reader::new();
        let mut got = Vec::new();
        for byte in &bytes {
            tokio::select! {
                biased;
                filled = reader.fill(&mut rx) => panic!("nothing to read yet: {filled:?}"),
                () = std::future::ready(()) => {}
            }
            tx.write_all(std::slice::from_ref(byte))
                .await
                .expect("writes");
            assert!(reader.fill(&mut rx).await.expect("fills"));
            while let Some(f) = reader.decode::<ClientFrame>().expect("decodes") {
                got.push(f);
            }
        }
        assert_eq!(got, vec![frame.clone(), frame]);
    }
}
