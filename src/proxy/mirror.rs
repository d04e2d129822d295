//! Proxy layer: request mirroring (`request_mirror_policies`) — for each sampled policy a copy
//! of the forwarded request goes to a host of the mirror cluster with its `host` suffixed
//! `-shadow`, as Envoy's shadowing; fire and forget on the shard, the response read and
//! dropped, never delaying or failing the client's request.
use std::{
    future::Future,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_lite::future;
use model::{
    stats::{inc, record_duration, ClusterCells},
    {http::HttpConnectionManager, route::Forward},
};

use super::{
    cluster_manager::{ActiveHost, ShardCluster},
    pool::{self, Acquire},
    router::RESPONSE_LIMITS,
};
use crate::{
    context::ShardContext,
    net::buffered::{Buffered, IoFailure},
    protocol::http1::{
        self, encode_chunk, encode_last_chunk, encode_request_head, BodyDecoder, BodyEvent, Framing,
    },
    rt::{self, timer},
    stream::{
        body::RequestBody,
        headers::{Headers, RequestHead, Version},
    },
};

/// A shadow's deadline when the route's `timeout` is disabled (`0s`): Envoy's default route
/// timeout, so a hung mirror host cannot hold a connection forever.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends a copy of `request` to every mirror cluster of `forward` whose sample hits. Called
/// once the router has forwarded the request: the copy carries the whole body, so it is sent
/// only when the body was read in full and kept for replay; a body too large to keep abandons
/// the shadows, counted as Envoy's `retry_or_shadow_abandoned` on the route's cluster.
#[inline]
pub fn shadow(
    ctx: &Rc<ShardContext>,
    hcm: &HttpConnectionManager,
    forward: &Forward,
    routed: &ShardCluster,
    request: &RequestHead,
    framing: &Framing,
    body: &RequestBody,
) {
    if !forward.mirrors.is_empty() {
        shadow_sampled(ctx, hcm, forward, routed, request, framing, body);
    }
}

fn shadow_sampled(
    ctx: &Rc<ShardContext>,
    hcm: &HttpConnectionManager,
    forward: &Forward,
    routed: &ShardCluster,
    request: &RequestHead,
    framing: &Framing,
    body: &RequestBody,
) {
    let mut kept: Option<&[Bytes]> = None;
    for mirror in &forward.mirrors {
        if !sampled(mirror.per_million) {
            continue;
        }
        let chunks = match kept {
            Some(chunks) => chunks,
            None => match whole_body(request, body) {
                Ok(chunks) => *kept.insert(chunks),
                Err(skip) => {
                    if skip == Skip::BodyNotKept {
                        inc(&routed.config.stats.shard(ctx.id).retry_or_shadow_abandoned);
                    }
                    tracing::debug!(reason = skip.reason(), "request not mirrored");
                    return;
                }
            },
        };
        let Some(cluster) = ctx.clusters.borrow().get(&mirror.cluster) else {
            tracing::debug!(cluster = %mirror.cluster, "mirror cluster not found");
            continue;
        };
        let trailers = body
            .trailers
            .as_ref()
            .filter(|_| hcm.http1.enable_trailers && cluster.config.http.enable_trailers);
        let bytes = encode_shadow(request, framing, chunks, trailers);
        let deadline = Instant::now() + forward.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let task = send(ctx.clone(), cluster, bytes, request.is_head(), deadline);
        rt::spawn_local(task).detach();
    }
}

/// Whether a policy's share (in millionths) takes this request.
fn sampled(per_million: u32) -> bool {
    per_million >= 1_000_000 || fastrand::u32(0..1_000_000) < per_million
}

/// Why a request is not mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// The body was larger than the buffer limit: its start is gone.
    BodyNotKept,
    /// The body was not read to its end (the client left, or the upstream answered first).
    BodyIncomplete,
    /// An upgrade (WebSocket) is a conversation, not a request to copy.
    Upgrade,
}

impl Skip {
    fn reason(self) -> &'static str {
        match self {
            Skip::BodyNotKept => "body larger than the buffer limit",
            Skip::BodyIncomplete => "body not read in full",
            Skip::Upgrade => "upgrade request",
        }
    }
}

/// The request body's chunks, if a copy of the request can carry all of it.
fn whole_body<'b>(request: &RequestHead, body: &'b RequestBody) -> Result<&'b [Bytes], Skip> {
    if request.headers.contains("upgrade") {
        return Err(Skip::Upgrade);
    }
    if !body.is_done() {
        return Err(Skip::BodyIncomplete);
    }
    body.replay().ok_or(Skip::BodyNotKept)
}

/// The shadow request on the wire: the forwarded head with Envoy's shadow changes, then the
/// body in the framing it came with.
fn encode_shadow(
    request: &RequestHead,
    framing: &Framing,
    chunks: &[Bytes],
    trailers: Option<&Headers>,
) -> Vec<u8> {
    let mut head = request.clone();
    head.version = Version::Http11;
    if let Some(host) = head.headers.get("host") {
        let shadowed = shadow_host(host);
        head.headers.set("host", shadowed);
    }
    // Envoy sends shadows as internal requests.
    head.headers
        .set("x-envoy-internal", Bytes::from_static(b"true"));
    let body_len: usize = chunks.iter().map(|c| c.len() + 16).sum();
    let mut out = Vec::with_capacity(512 + body_len);
    encode_request_head(&head, framing, &mut out);
    let chunked = matches!(framing, Framing::Chunked);
    for chunk in chunks {
        match chunked {
            true => encode_chunk(chunk, &mut out),
            false => out.extend_from_slice(chunk),
        }
    }
    if chunked {
        encode_last_chunk(trailers, &mut out);
    }
    out
}

/// Envoy's shadow authority: `-shadow` after the host, before any port
/// (`example.com:8080` → `example.com-shadow:8080`, `[::1]:80` → `[::1]-shadow:80`).
fn shadow_host(authority: &[u8]) -> Vec<u8> {
    let host_end = match authority.iter().rposition(|b| *b == b':') {
        // A colon inside an IPv6 literal is not a port separator.
        Some(colon) if !authority[colon..].contains(&b']') => colon,
        _ => authority.len(),
    };
    let mut out = Vec::with_capacity(authority.len() + 7);
    out.extend_from_slice(&authority[..host_end]);
    out.extend_from_slice(b"-shadow");
    out.extend_from_slice(&authority[host_end..]);
    out
}

/// Why a shadow exchange failed (logged at debug; counted in the mirror cluster's stats).
#[derive(Debug, thiserror::Error)]
enum ShadowFailure {
    #[error("circuit breaker overflow")]
    Overflow,
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    #[error("connection failure")]
    Connect,
    #[error("timed out")]
    TimedOut,
    #[error("connection reset")]
    Reset,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// Sends one shadow request and reads its response to the end.
async fn send(
    ctx: Rc<ShardContext>,
    cluster: Rc<ShardCluster>,
    request: Vec<u8>,
    is_head: bool,
    deadline: Instant,
) {
    if let Err(failure) = exchange(&ctx, &cluster, &request, is_head, deadline).await {
        tracing::debug!(cluster = %cluster.config.name, %failure, "shadow request failed");
    }
}

async fn exchange(
    ctx: &ShardContext,
    cluster: &ShardCluster,
    request: &[u8],
    is_head: bool,
    deadline: Instant,
) -> Result<(), ShadowFailure> {
    let cells = cluster.config.stats.shard(ctx.id);
    let Some(_request_slot) = cluster.breakers.request() else {
        inc(&cells.upstream_rq_pending_overflow);
        return Err(ShadowFailure::Overflow);
    };
    let Some(host) = cluster.pick() else {
        inc(&cells.upstream_cx_none_healthy);
        return Err(ShadowFailure::NoHealthyUpstream);
    };
    let host = ActiveHost::new(host);
    let acquired = pool::acquire(ctx, cluster, host.host(), None, Some(deadline)).await;
    let mut conn = match acquired {
        Ok(conn) => conn,
        Err(Acquire::Overflow) => return Err(ShadowFailure::Overflow),
        Err(Acquire::Failed) => return Err(charged(cells, ShadowFailure::Connect)),
        Err(Acquire::TimedOut) => return Err(charged(cells, ShadowFailure::TimedOut)),
    };
    conn.requests += 1;
    inc(&cells.upstream_rq_total);
    let started = Instant::now();
    let head_failure = |failure| charged(cells, failure);
    within(deadline, conn.conn.write_all(request))
        .await
        .map_err(head_failure)?
        .map_err(|_| head_failure(ShadowFailure::Reset))?;
    let response = loop {
        match http1::parse_response(&mut conn.conn.buf, is_head, &RESPONSE_LIMITS) {
            Ok(Some(response)) if response.head.status == 100 => continue,
            Ok(Some(response)) => break response,
            Ok(None) => {}
            Err(error) => return Err(head_failure(ShadowFailure::Protocol(error.details()))),
        }
        fill(&mut conn.conn, deadline).await.map_err(head_failure)?;
    };
    cells.record_status(response.head.status);
    let read = if response.head.status == 101 {
        // Not asked for (upgrades are not mirrored): the connection is the upstream's now.
        Err(ShadowFailure::Protocol("unexpected 101"))
    } else {
        discard_body(&mut conn.conn, &response.framing, deadline).await
    };
    inc(&cells.upstream_rq_completed);
    record_duration(&cells.upstream_rq_time, started.elapsed());
    let read = read.map_err(|failure| counted(cells, failure));
    if read.is_ok() && response.keep_alive {
        pool::park(host.host(), conn, &cluster.config.http);
    }
    read
}

/// Reads a response body to its end and drops it.
async fn discard_body(
    conn: &mut Buffered,
    framing: &Framing,
    deadline: Instant,
) -> Result<(), ShadowFailure> {
    let mut decoder = BodyDecoder::new(framing, &RESPONSE_LIMITS);
    loop {
        match decoder.decode(&mut conn.buf) {
            Ok(BodyEvent::Data(_)) => continue,
            Ok(BodyEvent::Done { .. }) => return Ok(()),
            Ok(BodyEvent::NeedMore) => {}
            Err(error) => return Err(ShadowFailure::Protocol(error.details())),
        }
        match fill(conn, deadline).await {
            Ok(()) => {}
            Err(ShadowFailure::Reset) if decoder.at_eof().is_ok() => return Ok(()),
            Err(failure) => return Err(failure),
        }
    }
}

/// Reads more of the response; a close, a reset or the deadline ends the exchange.
async fn fill(conn: &mut Buffered, deadline: Instant) -> Result<(), ShadowFailure> {
    match conn.fill_until(Some(deadline)).await {
        Ok(0) | Err(IoFailure::Broken) => Err(ShadowFailure::Reset),
        Ok(_) => Ok(()),
        Err(IoFailure::TimedOut) => Err(ShadowFailure::TimedOut),
    }
}

/// Counts a failure before a response head as Envoy charges it: its own counter, and the
/// status of the local reply it stands for (504 for a timeout, 502 for a protocol error, else
/// 503) as a completed request.
fn charged(cells: &ClusterCells, failure: ShadowFailure) -> ShadowFailure {
    let status = match &failure {
        ShadowFailure::TimedOut => 504,
        ShadowFailure::Protocol(_) => 502,
        _ => 503,
    };
    cells.record_status(status);
    inc(&cells.upstream_rq_completed);
    counted(cells, failure)
}

/// Counts a failure in its own counter, if it has one.
fn counted(cells: &ClusterCells, failure: ShadowFailure) -> ShadowFailure {
    match &failure {
        ShadowFailure::TimedOut => inc(&cells.upstream_rq_timeout),
        ShadowFailure::Reset => inc(&cells.upstream_rq_rx_reset),
        ShadowFailure::Protocol(_) => inc(&cells.upstream_cx_protocol_error),
        ShadowFailure::Connect | ShadowFailure::Overflow | ShadowFailure::NoHealthyUpstream => {}
    }
    failure
}

/// Runs `work` until `deadline`.
async fn within<T>(deadline: Instant, work: impl Future<Output = T>) -> Result<T, ShadowFailure> {
    future::or(async { Ok(work.await) }, async {
        timer::sleep_until(deadline).await;
        Err(ShadowFailure::TimedOut)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, host: Option<&str>) -> RequestHead {
        let mut headers = Headers::with_capacity(4);
        if let Some(host) = host {
            headers.append("host", host.to_string());
        }
        headers.append("x-request-id", "abc");
        RequestHead {
            method: Bytes::from(method.to_string()),
            path: Bytes::from_static(b"/copy?q=1"),
            version: Version::Http10,
            headers,
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_shadow_suffix_goes_on_the_host_before_the_port() {
        for (authority, shadowed) in [
            ("example.com", "example.com-shadow"),
            ("example.com:8080", "example.com-shadow:8080"),
            ("10.0.0.1:80", "10.0.0.1-shadow:80"),
            ("[::1]", "[::1]-shadow"),
            ("[::1]:80", "[::1]-shadow:80"),
            ("", "-shadow"),
        ] {
            assert_eq!(text(&shadow_host(authority.as_bytes())), shadowed);
        }
    }

    #[test]
    fn a_shadow_is_the_forwarded_request_with_the_shadow_host_and_its_body() {
        let chunks = [Bytes::from_static(b"pay"), Bytes::from_static(b"load")];
        let out = encode_shadow(
            &head("POST", Some("example.com")),
            &Framing::Length(7),
            &chunks,
            None,
        );
        assert_eq!(
            text(&out),
            "POST /copy?q=1 HTTP/1.1\r\nhost: example.com-shadow\r\nx-request-id: abc\r\n\
             x-envoy-internal: true\r\ncontent-length: 7\r\n\r\npayload"
        );
    }

    #[test]
    fn a_chunked_body_stays_chunked_with_its_trailers() {
        let mut trailers = Headers::with_capacity(1);
        trailers.append("x-sum", "1");
        let chunks = [Bytes::from_static(b"abc")];
        let out = encode_shadow(
            &head("PUT", None),
            &Framing::Chunked,
            &chunks,
            Some(&trailers),
        );
        let text = text(&out);
        assert!(!text.contains("host:"), "no host stays no host: {text}");
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 1\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn sampling_takes_all_none_or_about_the_share() {
        assert!((0..1000).all(|_| sampled(1_000_000)));
        assert!((0..1000).all(|_| !sampled(0)));
        let hits = (0..100_000).filter(|_| sampled(250_000)).count();
        assert!((22_000..28_000).contains(&hits), "{hits}");
    }

    #[test]
    fn upgrades_are_not_mirrored() {
        let mut request = head("GET", Some("a"));
        request.headers.set("upgrade", "websocket");
        let body = RequestBody::new(
            &Framing::Empty,
            &crate::protocol::http1::Limits {
                max_head_bytes: 1024,
                max_headers: 10,
            },
            1024,
        );
        assert_eq!(whole_body(&request, &body), Err(Skip::Upgrade));
        assert_eq!(whole_body(&head("GET", Some("a")), &body), Ok(&[][..]));
    }
}
