//! Router: one try — a pooled or new connection to the chosen host, the request head and body
//! out while watching for an early response, then the response head in, while watching for
//! the client going away.
use std::{future::pending, time::Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::future;
use model::stats::{inc, ClusterCells};

use super::{
    deadline::{Deadlines, Expiry},
    Forwarding, RESPONSE_LIMITS,
};
use crate::{
    context::ShardContext,
    net::buffered::{Buffered, IoFailure, Shared},
    protocol::http1::{
        self, encode_chunk, encode_last_chunk, encode_request_head, Framing, ParsedResponse,
    },
    proxy::{
        cluster_manager::ActiveHost,
        pool::{self, Acquire, UpstreamConn},
    },
    stream::body::{BodyFailure, RequestBody},
};

/// Most pipelined bytes buffered from a client while its response is awaited.
const CLIENT_READ_AHEAD: usize = 64 << 10;

/// Where a try failed.
pub enum TryFailure {
    /// No connection (refused, timed out): safe to retry.
    Connect,
    /// Reset or closed before a full response head. `sent_nothing_back` = not a byte arrived.
    Reset {
        reused: bool,
        sent_nothing_back: bool,
    },
    /// A deadline expired; `receiving` = the request was still arriving.
    TimedOut {
        expiry: Expiry,
        receiving: bool,
    },
    Protocol(http1::ResponseError),
    Overflow,
    Downstream(BodyFailure),
}

/// A response head and the connection it came on.
pub struct Answer {
    pub response: ParsedResponse,
    pub conn: UpstreamConn,
    /// The upstream answered before the whole request body was sent: the connection cannot
    /// be reused (and the client's body was not read in full).
    pub early: bool,
}

/// How sending the request ended.
enum Sent {
    Complete,
    /// A final response head arrived while the body was still going out.
    EarlyResponse,
}

pub async fn try_once(
    ctx: &ShardContext,
    request: &Forwarding<'_>,
    attempt: u32,
    host: &ActiveHost,
    body: &mut RequestBody,
    downstream: &mut Buffered,
    cells: &ClusterCells,
) -> Result<Answer, TryFailure> {
    let per_try = request
        .retry
        .and_then(|p| p.per_try_timeout)
        .map(|t| Instant::now() + t);
    let deadlines = &request.deadlines;
    let connect_by = deadlines.next(per_try, !body.is_done());
    let sni = auto_sni(request, host);
    let mut conn = pool::acquire(
        ctx,
        &request.cluster,
        host.host(),
        sni.as_deref(),
        connect_by.map(|d| d.0),
    )
    .await
    .map_err(|e| match e {
        Acquire::TimedOut => expired(connect_by, !body.is_done()),
        Acquire::Failed => TryFailure::Connect,
        Acquire::Overflow => TryFailure::Overflow,
    })?;
    conn.requests += 1;
    inc(&cells.upstream_rq_total);
    let reused = conn.reused();
    let head = first_bytes(request, attempt, host, body);
    let mut early = BytesMut::new();
    let sent = {
        let io = Shared::new(&mut conn.conn.io);
        let sending = send(request, &io, head, body, downstream, deadlines, per_try);
        let answered = early_response(&io, &mut early, request.is_head_request);
        future::or(sending, answered).await
    };
    conn.conn.buf = early;
    let early = match sent {
        Ok(Sent::Complete) => false,
        Ok(Sent::EarlyResponse) => true,
        // A write failure may still have left a response (e.g. 413 before closing): read it.
        Err(TryFailure::Reset { .. }) if !conn.conn.buf.is_empty() => true,
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
        let head = response_head(&mut conn.conn, request.is_head_request, wait, cells);
        let gone = client_gone(downstream);
        future::or(head, async {
            gone.await;
            Err(TryFailure::Downstream(BodyFailure::Disconnected))
        })
        .await
    };
    match response {
        Ok(response) => Ok(Answer {
            response,
            conn,
            early,
        }),
        Err(TryFailure::Reset {
            sent_nothing_back, ..
        }) => Err(TryFailure::Reset {
            reused,
            sent_nothing_back,
        }),
        Err(failure) => Err(failure),
    }
}

fn expired(deadline: Option<(Instant, Expiry)>, receiving: bool) -> TryFailure {
    TryFailure::TimedOut {
        expiry: deadline.map_or(Expiry::Route, |d| d.1),
        receiving,
    }
}

/// The request head (with this try's host and attempt headers) and the body read so far.
/// The SNI for this try under `auto_sni`: the host the request goes to (after
/// `auto_host_rewrite`), without its port; `None` without `auto_sni` or TLS.
fn auto_sni(request: &Forwarding<'_>, host: &ActiveHost) -> Option<String> {
    let cluster = &request.cluster.config;
    let endpoint = &host.host().endpoint;
    if !cluster.http.auto_sni || cluster.tls_for(endpoint).is_none() {
        return None;
    }
    let authority = match endpoint.hostname.as_deref() {
        Some(name) if request.auto_host_rewrite => name.as_bytes(),
        _ => request.head.authority(),
    };
    let authority = std::str::from_utf8(authority).ok()?;
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
    )
    .filter(|h| !h.is_empty())
}

fn first_bytes(
    request: &Forwarding<'_>,
    attempt: u32,
    host: &ActiveHost,
    body: &RequestBody,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let hostname = host
        .host()
        .endpoint
        .hostname
        .as_deref()
        .filter(|_| request.auto_host_rewrite);
    if hostname.is_some() || request.attempt_count {
        let mut head = request.head.clone();
        if let Some(name) = hostname {
            if let Some(original) = head.headers.get("host").cloned() {
                head.headers.set("x-envoy-original-host", original);
            }
            head.headers.set("host", name.to_string());
        }
        if request.attempt_count {
            head.headers
                .set("x-envoy-attempt-count", attempt.to_string());
        }
        encode_request_head(&head, request.framing, &mut out);
    } else {
        encode_request_head(request.head, request.framing, &mut out);
    }
    let chunked = matches!(request.framing, Framing::Chunked);
    for chunk in body.replay().unwrap_or_default() {
        frame(chunked, chunk, &mut out);
    }
    out
}

/// Writes the head and the body as it arrives from the client.
#[allow(clippy::too_many_arguments)]
async fn send(
    request: &Forwarding<'_>,
    io: &Shared<'_>,
    mut out: Vec<u8>,
    body: &mut RequestBody,
    downstream: &mut Buffered,
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
        match body.next(downstream, next.map(|d| d.0)).await {
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

/// Completes when the client closes (or resets) its connection; what it pipelines meanwhile
/// is kept for later, up to a bound.
async fn client_gone(downstream: &mut Buffered) {
    while downstream.buf.len() < CLIENT_READ_AHEAD {
        match downstream.fill().await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    pending().await
}

/// Writes one body chunk in the upstream framing.
fn frame(chunked: bool, chunk: &Bytes, out: &mut Vec<u8>) {
    match chunked {
        true => encode_chunk(chunk, out),
        false => out.extend_from_slice(chunk),
    }
}
