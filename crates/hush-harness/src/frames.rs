//! The relay frame reader (`hush_relay::frame`) on an arbitrary byte
//! stream, read in chunks of arbitrary size: requests as the relay reads
//! them and answers as a client reads them. No panic; a frame that
//! decodes re-encodes to a frame that decodes to the same message.

use hush_crypto::harness::Violation;
use hush_proto::relay::{ClientFrame, RelayFrame};
use hush_relay::frame::{self, FrameError, Reader};
use prost::Message;

/// The first byte is the chunk size; the rest is the stream.
pub(crate) fn check_relay_frames(data: &[u8]) -> Result<(), Violation> {
    let Some((&chunk, stream)) = data.split_first() else {
        return Ok(());
    };
    let chunk = usize::from(chunk).max(1);
    for message in read_all::<ClientFrame>(stream, chunk) {
        round_trip(&message)?;
    }
    for message in read_all::<RelayFrame>(stream, chunk) {
        round_trip(&message)?;
    }
    Ok(())
}

/// Feeds `stream` to a reader `chunk` bytes at a time; the frames read
/// before the end or the first error.
fn read_all<M: Message + Default>(stream: &[u8], chunk: usize) -> Vec<M> {
    let mut reader = Reader::new();
    let mut messages = Vec::new();
    for piece in stream.chunks(chunk) {
        if fill(&mut reader, piece).is_err() {
            break;
        }
        loop {
            match reader.decode::<M>() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(_) => return messages,
            }
        }
    }
    messages
}

/// Hands all of `piece` to the reader (reading from a slice never waits).
fn fill(reader: &mut Reader, mut piece: &[u8]) -> Result<(), FrameError> {
    while !piece.is_empty() {
        crate::runtime().block_on(reader.fill(&mut piece))?;
    }
    Ok(())
}

fn round_trip<M: Message + Default + PartialEq>(message: &M) -> Result<(), Violation> {
    let mut bytes = Vec::new();
    frame::encode(message, &mut bytes);
    let mut reader = Reader::new();
    let again = fill(&mut reader, &bytes)
        .ok()
        .and_then(|()| reader.decode::<M>().ok().flatten());
    if again.as_ref() == Some(message) {
        Ok(())
    } else {
        Err(Violation("a relay frame does not round-trip".into()))
    }
}
