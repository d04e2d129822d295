//! HTTP connection manager: the client side of one stream, whatever codec carries it — where
//! its request body comes from, and where its response goes (heads, body chunks, trailers),
//! in the client's own framing.
use std::io;

use bytes::Bytes;

use super::respond::{self, Outgoing};
use crate::{
    net::buffered::Buffered,
    protocol::http1::{self, encode_chunk, encode_last_chunk, encode_response_head, Framing},
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
}

impl Downstream<'_> {
    /// Tells the client to send its body (`Expect: 100-continue`).
    pub async fn send_continue(&mut self) -> io::Result<()> {
        match self {
            Downstream::Http1(conn) => conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await,
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
        }
    }

    /// Starts a response whose body follows from upstream (delimited there as
    /// `upstream_framing`). Whether the connection may carry another request after it.
    pub fn start_response(
        &mut self,
        head: &ResponseHead,
        upstream_framing: Framing,
        keep_alive: bool,
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
                encode_response_head(head, &framing, keep_alive, out.bytes());
                let chunked = matches!(framing, Framing::Chunked);
                (ResponseWriter::Http1 { conn, out, chunked }, keep_alive)
            }
        }
    }

    /// Sends a `101 Switching Protocols` head: the connection then relays the upgraded
    /// protocol.
    pub async fn switch_protocols(&mut self, head: &ResponseHead) -> io::Result<usize> {
        match self {
            Downstream::Http1(conn) => {
                let mut out = Vec::with_capacity(256);
                encode_response_head(head, &Framing::Empty, true, &mut out);
                conn.write_all(&out).await.map(|()| out.len())
            }
        }
    }
}

/// A response body on its way to the client.
pub enum ResponseWriter<'a> {
    Http1 {
        conn: &'a mut Buffered,
        out: Outgoing,
        chunked: bool,
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
        }
    }

    /// Writes what is queued; the bytes written.
    pub async fn flush(&mut self) -> io::Result<usize> {
        match self {
            ResponseWriter::Http1 { conn, out, .. } => match out.is_empty() {
                true => Ok(0),
                false => out.write_to(conn).await,
            },
        }
    }
}
