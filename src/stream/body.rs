//! Stream layer: a request body read from the downstream connection as it arrives, decoded
//! from its HTTP/1.1 framing; kept for replay (retries) while it fits the buffer limit.
use std::time::Instant;

use bytes::Bytes;

use super::headers::Headers;
use crate::{
    net::buffered::{Buffered, IoFailure},
    protocol::http1::{BodyDecoder, BodyError, BodyEvent, Framing, Limits},
};

/// Why the request body could not be read.
#[derive(Debug)]
pub enum BodyFailure {
    /// Bad chunked framing: an error reply (400, or 431 for oversized trailers) and close.
    Malformed(BodyError),
    /// The client closed or reset mid-body.
    Disconnected,
    TimedOut,
}

pub struct RequestBody {
    decoder: BodyDecoder,
    done: bool,
    pub trailers: Option<Headers>,
    /// Chunks read so far, for a retry to resend; `None` once they exceeded `replay_limit`.
    replay: Option<Vec<Bytes>>,
    replay_bytes: usize,
    replay_limit: usize,
    /// Body bytes received (for `%BYTES_RECEIVED%`).
    pub received: u64,
}

impl RequestBody {
    pub fn new(framing: &Framing, limits: &Limits, replay_limit: usize) -> Self {
        Self {
            decoder: BodyDecoder::new(framing, limits),
            done: matches!(framing, Framing::Empty),
            trailers: None,
            replay: Some(Vec::new()),
            replay_bytes: 0,
            replay_limit,
            received: 0,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The chunks read so far, if all of them were kept.
    pub fn replay(&self) -> Option<&[Bytes]> {
        self.replay.as_deref()
    }

    /// The next chunk from the client, `None` at the end of the body.
    pub async fn next(
        &mut self,
        downstream: &mut Buffered,
        deadline: Option<Instant>,
    ) -> Result<Option<Bytes>, BodyFailure> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.decoder.decode(&mut downstream.buf) {
                Ok(BodyEvent::Data(chunk)) => {
                    self.keep(&chunk);
                    return Ok(Some(chunk));
                }
                Ok(BodyEvent::Done { trailers }) => {
                    self.done = true;
                    self.trailers = trailers;
                    return Ok(None);
                }
                Ok(BodyEvent::NeedMore) => {}
                Err(e) => return Err(BodyFailure::Malformed(e)),
            }
            match downstream.fill_until(deadline).await {
                Ok(0) | Err(IoFailure::Broken) => return Err(BodyFailure::Disconnected),
                Ok(_) => {}
                Err(IoFailure::TimedOut) => return Err(BodyFailure::TimedOut),
            }
        }
    }

    fn keep(&mut self, chunk: &Bytes) {
        self.received += chunk.len() as u64;
        let Some(replay) = &mut self.replay else {
            return;
        };
        self.replay_bytes += chunk.len();
        if self.replay_bytes > self.replay_limit {
            self.replay = None; // too big to keep: this request can no longer be retried
        } else {
            replay.push(chunk.clone());
        }
    }
}
