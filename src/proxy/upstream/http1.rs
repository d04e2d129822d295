//! Upstream stream over HTTP/1.1: the request head and body written in HTTP/1 framing while
//! watching for an early response, the response head read (interim 100s skipped) while
//! watching for the client going away, then the response body decoded off the connection.
use std::{future::pending, rc::Rc, time::Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::future;
use model::{
    stats::{inc, ClusterCells},
    tls_info::{Negotiated, UriSans},
};

use super::{Outgoing, ResponseFailure, TryFailure, UpstreamHead};
use crate::{
    net::buffered::{Buffered, IoFailure, Shared},
    protocol::http1::{
        self, encode_chunk, encode_last_chunk, encode_request_head, BodyDecoder, BodyEvent,
        Framing, Limits, ParsedResponse,
    },
    proxy::{
        pool::UpstreamConn,
        router::deadline::{Deadlines, Expiry},
    },
    stream::{
        body::{BodyFailure, RequestBody},
        headers::{Headers, RequestHead},
    },
};

/// Upstream response heads may be as large as Envoy takes (80 KiB) with up to 100 headers.
pub const RESPONSE_LIMITS: Limits = Limits {
    max_head_bytes: 80 << 10,
    max_headers: 100,
};

/// An HTTP/1 connection carrying one exchange.
pub struct Http1Stream {
    conn: UpstreamConn,
    /// The response body's decoder, once its head has arrived.
    decoder: Option<BodyDecoder>,
    /// The response allows another request on the connection.
    keep_alive: bool,
    trailers: Option<Headers>,
}

/// How sending the request ended.
enum Sent {
    Complete,
    /// A final response head arrived while the body was still going out.
    EarlyResponse,
}

impl Http1Stream {
    pub fn new(mut conn: UpstreamConn) -> Self {
        conn.requests += 1;
        Self {
            conn,
            decoder: None,
            keep_alive: false,
            trailers: None,
        }
    }

    pub fn reused(&self) -> bool {
        self.conn.reused()
    }

    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    pub fn negotiated(&self) -> Option<Negotiated> {
        self.conn
            .conn
            .io
            .tls()
            .map(|t| Negotiated::of(t.connection()))
    }

    pub fn uri_sans(&self) -> Option<Rc<UriSans>> {
        self.conn.conn.io.tls().map(|t| t.uri_sans())
    }

    pub async fn exchange(
        &mut self,
        request: &Outgoing<'_>,
        body: &mut RequestBody<'_>,
        deadlines: &Deadlines,
        per_try: Option<Instant>,
        cells: &ClusterCells,
    ) -> Result<UpstreamHead, TryFailure> {
        let reused = self.reused();
        let head = first_bytes(request, body);
        let mut early = BytesMut::new();
        let sent = {
            let io = Shared::new(&mut self.conn.conn.io);
            let sending = send(request, &io, head, body, deadlines, per_try);
            let answered = early_response(&io, &mut early, request.is_head_request);
            future::or(sending, answered).await
        };
        self.conn.conn.buf = early;
        let early = match sent {
            Ok(Sent::Complete) => false,
            Ok(Sent::EarlyResponse) => true,
            // A write failure may still have left a response (e.g. 413 before closing): read it.
            Err(TryFailure::Reset { .. }) if !self.conn.conn.buf.is_empty() => true,
            Err(TryFailure::Reset { .. }) => {
                return Err(TryFailure::Reset {
                    reused,
                    sent_nothing_back: true,
                })
            }
            Err(failure) => return Err(failure),
        };
        let wait = deadlines.next(per_try, false);
        let response = {
            let head = response_head(&mut self.conn.conn, request.is_head_request, wait, cells);
            let gone = body.client_gone();
            future::or(head, async {
                gone.await;
                Err(TryFailure::Downstream(BodyFailure::Disconnected))
            })
            .await
        };
        let response = match response {
            Ok(response) => response,
            Err(TryFailure::Reset {
                sent_nothing_back, ..
            }) => {
                return Err(TryFailure::Reset {
                    reused,
                    sent_nothing_back,
                })
            }
            Err(failure) => return Err(failure),
        };
        let ParsedResponse {
            head,
            framing,
            keep_alive,
            upgrade,
        } = response;
        self.keep_alive = keep_alive;
        self.decoder = Some(BodyDecoder::new(&framing, &RESPONSE_LIMITS));
        Ok(UpstreamHead {
            head,
            framing,
            upgrade,
            early,
        })
    }

    /// Opens a tunnel on the connection: writes `head` alone (a CONNECT, or a POST whose
    /// `framing`-delimited body is the tunnel), then reads the response head (interim 100s
    /// skipped). The connection then carries the tunnel ([`Self::finish`]).
    pub async fn tunnel(
        &mut self,
        head: &RequestHead,
        framing: &Framing,
        cells: &ClusterCells,
    ) -> Result<ParsedResponse, TryFailure> {
        let mut out = Vec::new();
        encode_request_head(head, framing, &mut out);
        if self.conn.conn.write_all(&out).await.is_err() {
            return Err(TryFailure::Reset {
                reused: self.reused(),
                sent_nothing_back: true,
            });
        }
        response_head(&mut self.conn.conn, false, None, cells).await
    }

    /// The next chunk of the response body; `None` at its end.
    pub async fn next_chunk(
        &mut self,
        deadline: Option<(Instant, Expiry)>,
    ) -> Result<Option<Bytes>, ResponseFailure> {
        let decoder = self.decoder.as_mut().expect("a response head was read");
        let conn = &mut self.conn.conn;
        loop {
            match decoder.decode(&mut conn.buf) {
                Ok(BodyEvent::Data(chunk)) => return Ok(Some(chunk)),
                Ok(BodyEvent::Done { trailers }) => {
                    self.trailers = trailers;
                    return Ok(None);
                }
                Ok(BodyEvent::NeedMore) => {}
                Err(_) => return Err(ResponseFailure::Protocol),
            }
            match conn.fill_until(deadline.map(|d| d.0)).await {
                // Envoy calls a body cut short by the upstream a protocol error.
                Ok(0) => {
                    return decoder
                        .at_eof()
                        .map(|()| None)
                        .map_err(|_| ResponseFailure::Reset)
                }
                Ok(_) => {}
                Err(IoFailure::Broken) => return Err(ResponseFailure::Reset),
                Err(IoFailure::TimedOut) => {
                    return Err(ResponseFailure::TimedOut(
                        deadline.map_or(Expiry::Route, |d| d.1),
                    ))
                }
            }
        }
    }

    /// The connection and the body's trailers, once the body has ended.
    pub fn finish(self) -> (UpstreamConn, Option<Headers>) {
        (self.conn, self.trailers)
    }
}

fn expired(deadline: Option<(Instant, Expiry)>, receiving: bool) -> TryFailure {
    TryFailure::TimedOut {
        expiry: deadline.map_or(Expiry::Route, |d| d.1),
        receiving,
    }
}

/// The request head and the body read so far.
fn first_bytes(request: &Outgoing<'_>, body: &RequestBody<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    encode_request_head(request.head, request.framing, &mut out);
    let chunked = matches!(request.framing, Framing::Chunked);
    for chunk in body.replay().unwrap_or_default() {
        frame(chunked, chunk, &mut out);
    }
    out
}

/// Writes the head and the body as it arrives from the client.
async fn send(
    request: &Outgoing<'_>,
    io: &Shared<'_>,
    mut out: Vec<u8>,
    body: &mut RequestBody<'_>,
    deadlines: &Deadlines,
    per_try: Option<Instant>,
) -> Result<Sent, TryFailure> {
    let reset = || TryFailure::Reset {
        reused: false,
        sent_nothing_back: true,
    };
    let chunked = matches!(request.framing, Framing::Chunked);
    loop {
        if body.is_done() {
            if chunked {
                let trailers = body.trailers.as_ref().filter(|_| request.trailers);
                encode_last_chunk(trailers, &mut out);
            }
            io.write_all(&out).await.map_err(|_| reset())?;
            return Ok(Sent::Complete);
        }
        io.write_all(&out).await.map_err(|_| reset())?;
        out.clear();
        let next = deadlines.next(per_try, true);
        match body.next(next.map(|d| d.0)).await {
            Ok(Some(chunk)) => frame(chunked, &chunk, &mut out),
            Ok(None) => {}
            Err(BodyFailure::TimedOut) => return Err(expired(next, true)),
            Err(other) => return Err(TryFailure::Downstream(other)),
        }
    }
}

/// Completes when a final response head has arrived (read into `early`) while the request
/// is still being sent; never completes if the upstream stays quiet or closes (the sender
/// then sees the failure).
async fn early_response(
    io: &Shared<'_>,
    early: &mut BytesMut,
    is_head_request: bool,
) -> Result<Sent, TryFailure> {
    loop {
        match io.fill(early).await {
            Ok(0) | Err(_) => return pending().await,
            Ok(_) if has_final_head(early, is_head_request) => return Ok(Sent::EarlyResponse),
            Ok(_) => {}
        }
    }
}

/// Whether `buf` starts with interim (1xx) heads followed by a complete final head.
fn has_final_head(buf: &BytesMut, is_head_request: bool) -> bool {
    let mut probe = buf.clone();
    loop {
        match http1::parse_response(&mut probe, is_head_request, &RESPONSE_LIMITS) {
            Ok(Some(r)) if r.head.status < 200 && r.head.status != 101 => {}
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => return false,
        }
    }
}

/// Reads until a final response head (interim `100 Continue`s are skipped).
async fn response_head(
    conn: &mut Buffered,
    is_head_request: bool,
    deadline: Option<(Instant, Expiry)>,
    cells: &ClusterCells,
) -> Result<ParsedResponse, TryFailure> {
    loop {
        match http1::parse_response(&mut conn.buf, is_head_request, &RESPONSE_LIMITS) {
            Ok(Some(response)) if response.head.status == 100 => continue,
            Ok(Some(response)) => return Ok(response),
            Ok(None) => {}
            Err(error) => return Err(TryFailure::Protocol(error)),
        }
        let received = !conn.buf.is_empty();
        match conn.fill_until(deadline.map(|d| d.0)).await {
            Ok(0) | Err(IoFailure::Broken) => {
                inc(&cells.upstream_cx_destroy_remote);
                inc(&cells.upstream_rq_rx_reset);
                return Err(TryFailure::Reset {
                    reused: false,
                    sent_nothing_back: !received,
                });
            }
            Ok(_) => {}
            Err(IoFailure::TimedOut) => return Err(expired(deadline, false)),
        }
    }
}

/// Writes one body chunk in the upstream framing.
fn frame(chunked: bool, chunk: &Bytes, out: &mut Vec<u8>) {
    match chunked {
        true => encode_chunk(chunk, out),
        false => out.extend_from_slice(chunk),
    }
}
