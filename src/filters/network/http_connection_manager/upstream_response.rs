//! HTTP connection manager: an upstream response on its way to the client — response header
//! policy, the body streamed in the client's framing, upstream connections parked for reuse,
//! and upgrades switched to a byte relay.

use bytes::Bytes;
use model::{
    access_log::ResponseFlags,
    route::{Forward, HeaderMutations},
    stats::{add, inc, record_duration, ClusterStats},
    UpstreamHttpOptions,
};

use super::{
    respond::{self, Outgoing},
    stream::{local, Exchange, Next},
    Connection,
};
use crate::{
    filters::http::on_response,
    net::buffered::{deadline, IoFailure},
    protocol::http1::{
        encode_chunk, encode_last_chunk, encode_response_head, BodyDecoder, BodyEvent, Framing,
    },
    proxy::{
        pool::{self, UpstreamConn},
        router::{
            deadline::{Deadlines, Expiry},
            UpstreamResponse, RESPONSE_LIMITS,
        },
    },
    stream::{
        body::RequestBody,
        headers::{RequestHead, ResponseHead, Version},
        mutations, LocalReply, StreamContext,
    },
};

/// Largest response chunk batched before it is written (bounds per-stream memory).
const FLUSH_BYTES: usize = 64 << 10;

/// Records the status the client is answered with; its class is counted now, as Envoy counts
/// it when the response head goes out.
pub(super) fn respond_with(c: &Connection<'_>, exchange: &mut Exchange, status: u16) {
    exchange.status = status;
    let stats = c.stats;
    match status {
        100..=199 => inc(&stats.downstream_rq_1xx),
        200..=299 => inc(&stats.downstream_rq_2xx),
        300..=399 => inc(&stats.downstream_rq_3xx),
        400..=499 => inc(&stats.downstream_rq_4xx),
        _ => inc(&stats.downstream_rq_5xx),
    }
}

/// How an upstream response is relayed to the client.
pub(super) struct Relay<'r> {
    /// Tries made, when the response reports them (`include_attempt_count_in_response`).
    pub attempts: Option<u32>,
    /// Route-table header mutations, in application order (`RouteConfig::header_mutations`).
    pub levels: [Option<&'r HeaderMutations>; 4],
    /// How many filters ran on the request (they see the response, in reverse).
    pub ran: usize,
    pub keep_alive: bool,
    pub upgrading: bool,
    pub forward: &'r Forward,
    pub upstream_http: &'r UpstreamHttpOptions,
    pub upstream_buffer_limit: usize,
    pub cluster_stats: &'r ClusterStats,
}

/// Streams an upstream response to the client.
pub(super) async fn proxy_response(
    c: &mut Connection<'_>,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    upstream: UpstreamResponse,
    relay: Relay<'_>,
    body: &RequestBody,
    exchange: &mut Exchange,
) -> Next {
    let hcm = c.hcm;
    let Relay {
        attempts,
        levels,
        ran,
        keep_alive,
        upgrading,
        forward,
        upstream_http,
        upstream_buffer_limit,
        cluster_stats,
    } = relay;
    let UpstreamResponse {
        response,
        mut conn,
        host,
        try_started,
        early,
    } = upstream;
    // An upstream that answered before taking the whole body ends the exchange: the client's
    // unread body cannot be skipped, so its connection closes after this response.
    let keep_alive = keep_alive && !early && !c.drain.is_draining();
    exchange.first_upstream_byte = Some(exchange.started.elapsed());
    exchange.flags.set(cx.notes.flags());
    let cells = cluster_stats.shard(c.ctx.id);
    let mut head: ResponseHead = response.head;
    head.version = request.version; // answered in the client's version, as Envoy
    respond_with(c, exchange, head.status);
    exchange.details = "via_upstream";
    for level in levels.into_iter().flatten() {
        mutations::remove(&mut head.headers, &level.response_remove);
        mutations::add(&mut head.headers, &level.response_add);
    }
    for filter in hcm.filters[..ran].iter().rev() {
        on_response(filter, cx, request, &mut head);
    }
    if let Some(n) = attempts {
        head.headers.set("x-envoy-attempt-count", n.to_string());
    }
    head.headers.set(
        "x-envoy-upstream-service-time",
        try_started.elapsed().as_millis().to_string(),
    );
    respond::finish_head(hcm, &c.ctx.date, &mut head);
    cells.record_status(head.status);
    if upgrading && head.status == 101 {
        let token = response.upgrade.clone();
        return switch_protocols(c, head, token, conn, upstream_buffer_limit, exchange).await;
    }
    if head.status == 101 {
        // Not asked for: the upstream is broken.
        inc(&cells.upstream_cx_protocol_error);
        exchange.flags.set(ResponseFlags::UPSTREAM_PROTOCOL_ERROR);
        let reply = LocalReply::new(502, "upstream connect error or disconnect/reset before headers. reset reason: protocol error");
        return local(c, Some(cx), request, reply, ran, false, exchange).await;
    }
    // The client's framing: an until-close body is re-chunked for HTTP/1.1 keep-alive clients.
    let client_framing = match (response.framing, request.version) {
        (Framing::UntilClose, Version::Http11) if keep_alive => Framing::Chunked,
        // HTTP/1.0 has no chunked coding: the body runs until the connection closes.
        (Framing::Chunked, Version::Http10) => Framing::UntilClose,
        (other, _) => other,
    };
    let keep_alive = keep_alive && !matches!(client_framing, Framing::UntilClose);
    let chunked = matches!(client_framing, Framing::Chunked);
    let mut out = Outgoing::default();
    encode_response_head(&head, &client_framing, keep_alive, out.bytes());
    exchange.response = Some(head);
    let mut decoder = BodyDecoder::new(&response.framing, &RESPONSE_LIMITS);
    let stream_idle = forward.idle_timeout.unwrap_or(hcm.timeouts.stream_idle);
    let deadlines = Deadlines {
        route: deadline(forward.timeout).map(|d| d.max(try_started)),
        request: None,
        stream_idle,
    };
    let complete = loop {
        match decoder.decode(&mut conn.conn.buf) {
            Ok(BodyEvent::Data(chunk)) => {
                exchange.bytes_sent += chunk.len() as u64;
                match chunked {
                    true => encode_chunk(&chunk, out.bytes()),
                    false => out.push_chunk(chunk),
                }
                if out.len() >= FLUSH_BYTES && !flush(c, &mut out).await {
                    exchange
                        .flags
                        .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
                    return Next::Close;
                }
                continue;
            }
            Ok(BodyEvent::Done { trailers }) => {
                if chunked {
                    let pass = hcm.http1.enable_trailers && upstream_http.enable_trailers;
                    encode_last_chunk(trailers.as_ref().filter(|_| pass), out.bytes());
                }
                break true;
            }
            Ok(BodyEvent::NeedMore) => {}
            Err(_) => {
                inc(&cells.upstream_cx_protocol_error);
                exchange.flags.set(ResponseFlags::UPSTREAM_PROTOCOL_ERROR);
                break false;
            }
        }
        if !out.is_empty() && !flush(c, &mut out).await {
            exchange
                .flags
                .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            return Next::Close;
        }
        let next = deadlines.next(None, false);
        match conn.conn.fill_until(next.map(|d| d.0)).await {
            Ok(0) => match decoder.at_eof() {
                Ok(()) => {
                    if chunked {
                        encode_last_chunk(None, out.bytes());
                    }
                    break true;
                }
                // Envoy calls a body cut short by the upstream a protocol error.
                Err(_) => {
                    inc(&cells.upstream_rq_rx_reset);
                    exchange.flags.set(ResponseFlags::UPSTREAM_PROTOCOL_ERROR);
                    break false;
                }
            },
            Ok(_) => {}
            Err(IoFailure::Broken) => {
                inc(&cells.upstream_rq_rx_reset);
                exchange.flags.set(ResponseFlags::UPSTREAM_PROTOCOL_ERROR);
                break false;
            }
            Err(IoFailure::TimedOut) if next.is_some_and(|d| d.1 == Expiry::StreamIdle) => {
                inc(&c.stats.downstream_rq_idle_timeout);
                exchange.flags.set(ResponseFlags::STREAM_IDLE_TIMEOUT);
                break false;
            }
            Err(IoFailure::TimedOut) => {
                inc(&cells.upstream_rq_timeout);
                exchange.flags.set(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
                break false;
            }
        }
    };
    if !complete {
        inc(&c.stats.rq_reset_after_downstream_response_started);
    }
    if !out.is_empty() && !flush(c, &mut out).await {
        exchange
            .flags
            .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        return Next::Close;
    }
    exchange.response_done = Some(exchange.started.elapsed());
    inc(&cells.upstream_rq_completed);
    record_duration(&cells.upstream_rq_time, try_started.elapsed());
    if complete && response.keep_alive && body.is_done() {
        pool::park(host.host(), conn, upstream_http);
    }
    match complete && keep_alive {
        true => Next::KeepAlive,
        false => Next::Close,
    }
}

/// Writes what is queued for the client; `false` when the client is gone.
pub(super) async fn flush(c: &mut Connection<'_>, out: &mut Outgoing) -> bool {
    match out.write_to(&mut c.conn).await {
        Ok(n) => {
            add(&c.stats.downstream_cx_tx_bytes_total, n as u64);
            true
        }
        Err(_) => false,
    }
}

/// A `101 Switching Protocols` from upstream: forward it; the connection then relays.
async fn switch_protocols(
    c: &mut Connection<'_>,
    mut head: ResponseHead,
    token: Option<Bytes>,
    upstream: UpstreamConn,
    buffer_limit: usize,
    exchange: &mut Exchange,
) -> Next {
    head.headers
        .set("connection", Bytes::from_static(b"upgrade"));
    if let Some(token) = token {
        head.headers.set("upgrade", token);
    }
    let mut out = Outgoing::default();
    encode_response_head(&head, &Framing::Empty, true, out.bytes());
    exchange.response = Some(head);
    if !flush(c, &mut out).await {
        exchange
            .flags
            .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        return Next::Close;
    }
    Next::Upgrade {
        upstream,
        buffer_limit,
    }
}
