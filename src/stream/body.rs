//! Stream layer: a request body as the router reads it, whatever codec it came from — chunks
//! as they arrive, then trailers; kept for replay (retries, shadows) while it fits the buffer
//! limit.
use std::{
    cell::RefCell,
    future::{pending, poll_fn},
    rc::Rc,
    time::Instant,
};

use bytes::Bytes;
use h2::{server::SendResponse, RecvStream};

use super::{grpc_web::TextDecoder, headers::Headers};
use crate::{
    net::buffered::{Buffered, IoFailure},
    protocol::{
        http1::{BodyDecoder, BodyError, BodyEvent, Framing, Limits},
        http2::{self, Received},
    },
    rt::timer,
};

/// Most pipelined bytes buffered from an HTTP/1 client while its response is awaited.
const CLIENT_READ_AHEAD: usize = 64 << 10;

/// Why the request body could not be read.
#[derive(Debug)]
pub enum BodyFailure {
    /// Bad framing: an error reply (400, or 431 for oversized trailers) and close.
    Malformed(BodyError),
    /// The client closed or reset mid-body.
    Disconnected,
    TimedOut,
    /// A `grpc-web-text` body that is not base64 (Envoy's 400 "Bad gRPC-web request").
    BadGrpcWebText,
}

/// Where the body's bytes come from.
enum Source<'d> {
    /// HTTP/1: decoded off the downstream connection's buffer as it arrives.
    Http1 {
        conn: &'d mut Buffered,
        decoder: BodyDecoder,
    },
    /// HTTP/2: the stream's DATA frames. The flow-control window a chunk took is given back
    /// when the next one is asked for (the router has sent it on by then), so a client can
    /// never have more than a window in flight here.
    Http2 {
        recv: RecvStream,
        /// Where a reset of the stream by the client shows (shared with the response side).
        respond: Rc<RefCell<SendResponse<Bytes>>>,
        /// Bytes handed out and not yet given back to the window.
        unreleased: usize,
    },
    /// Read in full already (a shadow's copy): everything is in `replay`.
    Complete,
    /// An HTTP/2 stream whose DATA frames are a tunnel's (CONNECT): no body; only a reset
    /// by the client is watched.
    Tunnel {
        respond: Rc<RefCell<SendResponse<Bytes>>>,
    },
}

/// What sees a request body's chunks as they are read.
pub type BodyObserver = Rc<dyn Fn(&[u8])>;

pub struct RequestBody<'d> {
    source: Source<'d>,
    done: bool,
    pub trailers: Option<Headers>,
    /// Chunks read so far, for a retry to resend; `None` once they exceeded `replay_limit`.
    replay: Option<Vec<Bytes>>,
    replay_bytes: usize,
    replay_limit: usize,
    /// Body bytes received (for `%BYTES_RECEIVED%`).
    pub received: u64,
    /// Sees every chunk as it is read from the client (gRPC message counts).
    pub observer: Option<BodyObserver>,
    /// Decodes a `grpc-web-text` body (base64) as it is read.
    pub grpc_web_text: Option<TextDecoder>,
    /// An HTTP/1 request's `content-length` (which its codec takes out of the head).
    pub declared_length: Option<u64>,
}

impl<'d> RequestBody<'d> {
    /// The body of an HTTP/1 request framed as `framing`, read off `conn`.
    pub fn http1(
        conn: &'d mut Buffered,
        framing: &Framing,
        limits: &Limits,
        replay_limit: usize,
    ) -> Self {
        let source = Source::Http1 {
            conn,
            decoder: BodyDecoder::new(framing, limits),
        };
        let mut body = Self::new(source, matches!(framing, Framing::Empty), replay_limit);
        if let Framing::Length(n) = framing {
            body.declared_length = Some(*n);
        }
        body
    }

    /// The body of an HTTP/2 request stream (`respond` answers it).
    pub fn http2(
        recv: RecvStream,
        respond: Rc<RefCell<SendResponse<Bytes>>>,
        replay_limit: usize,
    ) -> Self {
        let done = recv.is_end_stream();
        let source = Source::Http2 {
            recv,
            respond,
            unreleased: 0,
        };
        Self::new(source, done, replay_limit)
    }

    /// The (empty) body of an HTTP/2 tunnel request, whose stream `respond` answers.
    pub fn tunnel(respond: Rc<RefCell<SendResponse<Bytes>>>) -> Self {
        Self::new(Source::Tunnel { respond }, true, 0)
    }

    /// A body known in full: `chunks`, then `trailers`.
    pub fn complete(chunks: Vec<Bytes>, trailers: Option<Headers>) -> Self {
        let mut body = Self::new(Source::Complete, true, usize::MAX);
        body.received = chunks.iter().map(|c| c.len() as u64).sum();
        body.replay_bytes = body.received as usize;
        body.replay = Some(chunks);
        body.trailers = trailers;
        body
    }

    fn new(source: Source<'d>, done: bool, replay_limit: usize) -> Self {
        Self {
            source,
            done,
            trailers: None,
            replay: Some(Vec::new()),
            replay_bytes: 0,
            replay_limit,
            received: 0,
            observer: None,
            grpc_web_text: None,
            declared_length: None,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether every byte of the body has been read (its end may still be unread: a
    /// `content-length` body's last bytes, a DATA frame with END_STREAM).
    pub fn all_received(&self) -> bool {
        self.done
            || match &self.source {
                Source::Http1 { .. } => self.declared_length == Some(self.received),
                Source::Http2 { recv, .. } => recv.is_end_stream(),
                Source::Complete | Source::Tunnel { .. } => true,
            }
    }

    /// Keeps at least `bytes` of the body for replay (a filter reads it ahead of the router,
    /// which then sends what was read).
    pub fn keep_at_least(&mut self, bytes: usize) {
        self.replay_limit = self.replay_limit.max(bytes);
    }

    /// The chunks read so far, if all of them were kept.
    pub fn replay(&self) -> Option<&[Bytes]> {
        self.replay.as_deref()
    }

    /// The next chunk from the client, `None` at the end of the body.
    pub async fn next(&mut self, deadline: Option<Instant>) -> Result<Option<Bytes>, BodyFailure> {
        loop {
            if self.done {
                return Ok(None);
            }
            let (conn, decoder) = match &mut self.source {
                Source::Http1 { conn, decoder } => (conn, decoder),
                Source::Http2 {
                    recv, unreleased, ..
                } => match timer::within(deadline, http2::receive(recv, unreleased)).await {
                    None => return Err(BodyFailure::TimedOut),
                    // The client reset the stream (or its connection failed).
                    Some(Err(_)) => return Err(BodyFailure::Disconnected),
                    Some(Ok(Received::Data(chunk))) => match self.take(chunk)? {
                        // All of it waits for the rest of a base64 group.
                        chunk if chunk.is_empty() => continue,
                        chunk => return Ok(Some(chunk)),
                    },
                    Some(Ok(Received::End(trailers))) => return self.end(trailers),
                },
                Source::Complete | Source::Tunnel { .. } => return Ok(None),
            };
            match decoder.decode(&mut conn.buf) {
                Ok(BodyEvent::Data(chunk)) => match self.take(chunk)? {
                    chunk if chunk.is_empty() => continue,
                    chunk => return Ok(Some(chunk)),
                },
                Ok(BodyEvent::Done { trailers }) => return self.end(trailers),
                Ok(BodyEvent::NeedMore) => {}
                Err(e) => return Err(BodyFailure::Malformed(e)),
            }
            match conn.fill_until(deadline).await {
                Ok(0) | Err(IoFailure::Broken) => return Err(BodyFailure::Disconnected),
                Ok(_) => {}
                Err(IoFailure::TimedOut) => return Err(BodyFailure::TimedOut),
            }
        }
    }

    /// Completes when the client goes away (closes or resets). An HTTP/1 client's pipelined
    /// next requests are kept meanwhile, up to a bound; a complete body has no client.
    pub async fn client_gone(&mut self) {
        let conn = match &mut self.source {
            Source::Http1 { conn, .. } => conn,
            Source::Http2 { respond, .. } | Source::Tunnel { respond } => {
                let _ = poll_fn(|cx| respond.borrow_mut().poll_reset(cx)).await;
                return;
            }
            Source::Complete => return pending().await,
        };
        while conn.buf.len() < CLIENT_READ_AHEAD {
            match conn.fill().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        pending().await
    }

    /// The rest of a body still arriving, to be read on by a task of its own (an HTTP/2
    /// client's: it borrows nothing); this one then reads as ended, and cannot be replayed.
    pub fn detach(&mut self) -> Option<RequestBody<'static>> {
        if self.done || !matches!(self.source, Source::Http2 { .. }) {
            return None;
        }
        let Source::Http2 {
            recv,
            respond,
            unreleased,
        } = std::mem::replace(&mut self.source, Source::Complete)
        else {
            unreachable!("checked above")
        };
        self.replay = None;
        let source = Source::Http2 {
            recv,
            respond,
            unreleased,
        };
        let mut rest = RequestBody::new(source, false, 0);
        rest.observer = self.observer.take();
        rest.grpc_web_text = self.grpc_web_text.take();
        Some(rest)
    }

    /// A chunk read from the client, as the router gets it (a text body decoded).
    fn take(&mut self, chunk: Bytes) -> Result<Bytes, BodyFailure> {
        self.received += chunk.len() as u64;
        let chunk = match &mut self.grpc_web_text {
            Some(decoder) => decoder
                .chunk(&chunk)
                .map_err(|_| BodyFailure::BadGrpcWebText)?,
            None => chunk,
        };
        self.keep(&chunk);
        Ok(chunk)
    }

    /// The end of the body (its trailers, if any).
    fn end(&mut self, trailers: Option<Headers>) -> Result<Option<Bytes>, BodyFailure> {
        if let Some(decoder) = &self.grpc_web_text {
            decoder.finish().map_err(|_| BodyFailure::BadGrpcWebText)?;
        }
        self.done = true;
        self.trailers = trailers;
        Ok(None)
    }

    fn keep(&mut self, chunk: &Bytes) {
        if let Some(observe) = &self.observer {
            observe(chunk);
        }
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
