//! HTTP connection manager: the client side of one stream, whatever codec carries it — where
//! its request body comes from, and where its response goes (heads, body chunks, trailers),
//! in the client's own framing.
use std::{cell::RefCell, io, rc::Rc};

use bytes::Bytes;
use h2::{server::SendResponse, RecvStream, SendStream};
use http::HeaderMap;

use super::respond::{self, Outgoing};
use crate::{
    net::buffered::Buffered,
    protocol::{
        http1::{
            self, encode_chunk, encode_last_chunk, encode_response_head, encode_tunnel_head,
            Framing,
        },
        http2::{self, tunnel::Tunnel},
    },
    stream::{
        body::RequestBody,
        headers::{Headers, ResponseHead, Version},
    },
};

/// Largest response chunk batched before it is written (bounds per-stream memory).
const FLUSH_BYTES: usize = 64 << 10;

/// One stream's client.
pub enum Downstream<'a> {
    /// An HTTP/1 connection, which carries one stream at a time.
    Http1(&'a mut Buffered),
    /// An HTTP/2 stream.
    Http2 {
        /// Shared with the request body, which watches it for a reset.
        respond: Rc<RefCell<SendResponse<Bytes>>>,
        /// The request body, until the router takes it.
        body: Option<RecvStream>,
    },
}

impl Downstream<'_> {
    /// Tells the client to send its body (`Expect: 100-continue`).
    pub async fn send_continue(&mut self) -> io::Result<()> {
        match self {
            Downstream::Http1(conn) => conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await,
            Downstream::Http2 { respond, .. } => {
                let mut interim = http::Response::new(());
                *interim.status_mut() = http::StatusCode::CONTINUE;
                respond
                    .borrow_mut()
                    .send_informational(interim)
                    .map_err(h2_error)
            }
        }
    }

    /// The request's body, framed as `framing`, kept for replay up to `replay_limit`.
    pub fn request_body(
        &mut self,
        framing: &Framing,
        limits: &http1::Limits,
        replay_limit: usize,
    ) -> RequestBody<'_> {
        match self {
            Downstream::Http1(conn) => RequestBody::http1(conn, framing, limits, replay_limit),
            // A tunnel's stream stays open after a head without a body: its DATA is the
            // tunnel's, kept for `open_tunnel`.
            Downstream::Http2 { respond, body }
                if *framing == Framing::Empty
                    && body.as_ref().is_some_and(|b| !b.is_end_stream()) =>
            {
                RequestBody::tunnel(respond.clone())
            }
            Downstream::Http2 { respond, body } => {
                let recv = body.take().expect("one request body per stream");
                RequestBody::http2(recv, respond.clone(), replay_limit)
            }
        }
    }

    /// Sends a whole response whose body is known (a local reply); the bytes written.
    pub async fn send_complete(
        &mut self,
        head: &ResponseHead,
        body: &[u8],
        keep_alive: bool,
        is_head: bool,
    ) -> io::Result<usize> {
        match self {
            Downstream::Http1(conn) => {
                let mut out = Vec::with_capacity(256 + body.len());
                respond::encode_complete(head, body, keep_alive, is_head, &mut out);
                conn.write_all(&out).await.map(|()| out.len())
            }
            Downstream::Http2 { respond, .. } => {
                let no_body = matches!(head.status, 204 | 304);
                let empty = is_head || body.is_empty() || no_body;
                // Envoy's HTTP/2 local replies give a length only to a body.
                let length = (!no_body && !body.is_empty()).then_some(body.len() as u64);
                let mut send = respond
                    .borrow_mut()
                    .send_response(http2::response(head, length), empty)
                    .map_err(h2_error)?;
                match empty {
                    true => Ok(0),
                    false => http2::send_all(&mut send, Bytes::copy_from_slice(body), true)
                        .await
                        .map_err(h2_error),
                }
            }
        }
    }

    /// Starts a response whose body follows from upstream (delimited there as
    /// `upstream_framing`; `is_head`: it answers a HEAD request). Whether the connection may
    /// carry another request after it.
    pub fn start_response(
        &mut self,
        head: &ResponseHead,
        upstream_framing: Framing,
        keep_alive: bool,
        is_head: bool,
    ) -> (ResponseWriter<'_>, bool) {
        match self {
            Downstream::Http1(conn) => {
                // The client's framing: an until-close body is re-chunked for HTTP/1.1
                // keep-alive clients; HTTP/1.0 has no chunked coding, so its body runs until
                // the connection closes.
                let framing = match (upstream_framing, head.version) {
                    (Framing::UntilClose, Version::Http11) if keep_alive => Framing::Chunked,
                    (Framing::Chunked, Version::Http10) => Framing::UntilClose,
                    (other, _) => other,
                };
                let keep_alive = keep_alive && !matches!(framing, Framing::UntilClose);
                let mut out = Outgoing::default();
                encode_response_head(head, &framing, keep_alive, is_head, out.bytes());
                let chunked = matches!(framing, Framing::Chunked);
                (ResponseWriter::Http1 { conn, out, chunked }, keep_alive)
            }
            Downstream::Http2 { respond, .. } => {
                let empty = matches!(upstream_framing, Framing::Empty);
                let length = match upstream_framing {
                    Framing::Length(n) => Some(n),
                    _ => None,
                };
                let send = respond
                    .borrow_mut()
                    .send_response(http2::response(head, length), empty);
                let writer = ResponseWriter::Http2 {
                    // A stream the client already reset fails at the first flush.
                    send: send.ok().filter(|_| !empty),
                    queue: Vec::new(),
                    end: None,
                };
                (writer, true)
            }
        }
    }

    /// Resets an HTTP/2 stream with `reason` after its answer; an HTTP/1 connection closes
    /// after its answer anyway.
    pub async fn reset_after_answer(&mut self, reason: h2::Reason) {
        if let Downstream::Http2 { respond, .. } = self {
            // A reset drops the stream's frames still queued: first the connection's task
            // (polled by this same task) takes the answer's frames.
            futures_lite::future::yield_now().await;
            respond.borrow_mut().send_reset(reason);
        }
    }

    /// Sends the head that opens a tunnel (a 101 to an HTTP/1.1 upgrade, a 200 to a CONNECT
    /// or to an HTTP/2 extended CONNECT) and returns the client's end of it.
    pub async fn open_tunnel(&mut self, head: &ResponseHead) -> io::Result<ClientEnd> {
        match self {
            Downstream::Http1(conn) => {
                let mut out = Vec::with_capacity(256);
                encode_tunnel_head(head, &mut out);
                conn.write_all(&out)
                    .await
                    .map(|()| ClientEnd::Connection(out.len()))
            }
            Downstream::Http2 { respond, body } => {
                let recv = body
                    .take()
                    .expect("a tunnel's stream is not read as a body");
                let send = respond
                    .borrow_mut()
                    .send_response(http2::response(head, None), false)
                    .map_err(h2_error)?;
                Ok(ClientEnd::Stream(Tunnel::new(send, recv)))
            }
        }
    }
}

/// The client's end of an open tunnel.
pub enum ClientEnd {
    /// The HTTP/1 connection, which relays once the stream is done (the head's bytes).
    Connection(usize),
    /// The HTTP/2 stream, which relays at once.
    Stream(Tunnel),
}

/// A response body on its way to the client.
pub enum ResponseWriter<'a> {
    Http1 {
        conn: &'a mut Buffered,
        out: Outgoing,
        chunked: bool,
    },
    Http2 {
        /// `None` when the head ended the stream (or the client reset it).
        send: Option<SendStream<Bytes>>,
        queue: Vec<Bytes>,
        /// Set by `finish`: the trailers to end the stream with (an empty block: none).
        end: Option<HeaderMap>,
    },
}

impl ResponseWriter<'_> {
    /// Queues a body chunk; whether enough is queued that it should be flushed now.
    pub fn push(&mut self, chunk: Bytes) -> bool {
        match self {
            ResponseWriter::Http1 { out, chunked, .. } => {
                match chunked {
                    true => encode_chunk(&chunk, out.bytes()),
                    false => out.push_chunk(chunk),
                }
                out.len() >= FLUSH_BYTES
            }
            // Each chunk goes out as the client's window allows before the next is read.
            ResponseWriter::Http2 { queue, .. } => {
                queue.push(chunk);
                true
            }
        }
    }

    /// Ends the body (with `trailers`, where the client's framing carries them).
    pub fn finish(&mut self, trailers: Option<&Headers>) {
        match self {
            ResponseWriter::Http1 { out, chunked, .. } => {
                if *chunked {
                    encode_last_chunk(trailers, out.bytes());
                }
            }
            ResponseWriter::Http2 { end, .. } => {
                *end = Some(trailers.map(http2::header_map).unwrap_or_default());
            }
        }
    }

    /// Ends a response that cannot be completed (the upstream failed mid-body): an HTTP/2
    /// stream is reset with INTERNAL_ERROR, as Envoy resets it; an HTTP/1 connection closes
    /// after it anyway.
    pub fn abort(&mut self) {
        if let ResponseWriter::Http2 {
            send: Some(stream), ..
        } = self
        {
            stream.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    }

    /// Writes what is queued; the bytes written.
    pub async fn flush(&mut self) -> io::Result<usize> {
        match self {
            ResponseWriter::Http1 { conn, out, .. } => match out.is_empty() {
                true => Ok(0),
                false => out.write_to(conn).await,
            },
            ResponseWriter::Http2 { send, queue, end } => {
                let Some(stream) = send else {
                    return match queue.is_empty() && end.is_none() {
                        true => Ok(0),
                        false => Err(io::ErrorKind::BrokenPipe.into()),
                    };
                };
                let mut written = 0;
                for chunk in queue.drain(..) {
                    written += http2::send_all(stream, chunk, false)
                        .await
                        .map_err(h2_error)?;
                }
                if let Some(trailers) = end.take() {
                    let ended = match trailers.is_empty() {
                        true => stream.send_data(Bytes::new(), true),
                        false => stream.send_trailers(trailers),
                    };
                    ended.map_err(h2_error)?;
                    *send = None;
                }
                Ok(written)
            }
        }
    }
}

fn h2_error(error: h2::Error) -> io::Error {
    io::Error::other(error)
}
