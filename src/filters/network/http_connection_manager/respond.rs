//! HTTP connection manager: writing responses — the headers Envoy sets on every response
//! (`server`, `x-envoy-upstream-service-time`), local replies, and upstream bodies streamed
//! to the client in its framing.
use std::io;

use bytes::Bytes;
use model::http::{HttpConnectionManager, ServerHeader};

use crate::{
    net::buffered::Buffered,
    protocol::http1::{encode_response_head, Framing},
    stream::{
        date::DateCache,
        headers::{Headers, ResponseHead, Version},
        LocalReply,
    },
};

/// The response head of a local reply (`content-type: text/plain` when it has a body).
pub fn local_head(reply: &LocalReply) -> ResponseHead {
    let mut headers = Headers::with_capacity(reply.headers.len() + 2);
    for h in reply.headers.iter() {
        headers.append(h.name.clone(), h.value.clone());
    }
    if !reply.body.is_empty() && !headers.contains("content-type") {
        headers.append("content-type", Bytes::from_static(b"text/plain"));
    }
    ResponseHead {
        status: reply.status,
        version: Version::Http11,
        headers,
    }
}

/// The headers Envoy sets on every response: `date`, and `server` by
/// `server_header_transformation`.
pub fn finish_head(hcm: &HttpConnectionManager, date: &DateCache, head: &mut ResponseHead) {
    head.headers.set("date", date.now());
    match hcm.server_header {
        ServerHeader::Overwrite => head.headers.set("server", hcm.server_name.clone()),
        ServerHeader::AppendIfAbsent if !head.headers.contains("server") => {
            head.headers.append("server", hcm.server_name.clone())
        }
        ServerHeader::AppendIfAbsent | ServerHeader::PassThrough => {}
    }
}

/// Encodes a complete local reply (head and body) into `out`.
pub fn encode_local_reply(
    hcm: &HttpConnectionManager,
    date: &DateCache,
    reply: &LocalReply,
    keep_alive: bool,
    is_head: bool,
    out: &mut Vec<u8>,
) {
    let mut head = local_head(reply);
    finish_head(hcm, date, &mut head);
    encode_complete(&head, &reply.body, keep_alive, is_head, out);
}

/// Encodes a head with a body known in full (`content-length` framing).
pub fn encode_complete(
    head: &ResponseHead,
    body: &[u8],
    keep_alive: bool,
    is_head: bool,
    out: &mut Vec<u8>,
) {
    let framing = match head.status {
        204 | 304 => Framing::Empty,
        // Envoy answers HEAD with an empty local reply as a chunked stream it never writes.
        _ if is_head && body.is_empty() => Framing::Chunked,
        _ => Framing::Length(body.len() as u64),
    };
    encode_response_head(head, &framing, keep_alive, is_head, out);
    if !is_head && !matches!(framing, Framing::Empty) {
        out.extend_from_slice(body);
    }
}

/// Response bytes on their way to the client: encoded heads and framing first, then body
/// chunks passed on as they came from upstream (no copy), all written with one `writev`.
#[derive(Default)]
pub struct Outgoing {
    bytes: Vec<u8>,
    chunks: Vec<Bytes>,
    chunk_bytes: usize,
}

impl Outgoing {
    /// The encoded part, to append to (before any chunk is queued).
    pub fn bytes(&mut self) -> &mut Vec<u8> {
        debug_assert!(self.chunks.is_empty(), "encoded bytes must precede chunks");
        &mut self.bytes
    }

    /// Queues a body chunk as it is.
    pub fn push_chunk(&mut self, chunk: Bytes) {
        self.chunk_bytes += chunk.len();
        self.chunks.push(chunk);
    }

    pub fn len(&self) -> usize {
        self.bytes.len() + self.chunk_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes everything queued, in `writev` batches built on the stack; how many bytes that
    /// was.
    pub async fn write_to(&mut self, conn: &mut Buffered) -> io::Result<usize> {
        const BATCH: usize = 8;
        let len = self.len();
        let mut parts = std::iter::once(&self.bytes[..])
            .chain(self.chunks.iter().map(|c| &c[..]))
            .filter(|part| !part.is_empty())
            .peekable();
        let mut written = Ok(());
        while written.is_ok() && parts.peek().is_some() {
            let mut batch = [io::IoSlice::new(&[]); BATCH];
            let mut n = 0;
            for (slot, part) in batch.iter_mut().zip(parts.by_ref()) {
                *slot = io::IoSlice::new(part);
                n += 1;
            }
            written = conn.write_all_vectored(&mut batch[..n]).await;
        }
        self.bytes.clear();
        self.chunks.clear();
        self.chunk_bytes = 0;
        written.map(|()| len)
    }
}
