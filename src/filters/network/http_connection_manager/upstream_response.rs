//! HTTP connection manager: an upstream response on its way to the client — response header
//! policy, the body streamed in the client's framing as the router's response body yields
//! it, and upgrades switched to a byte relay.
use std::time::Instant;

use bytes::Bytes;
use model::{
    access_log::ResponseFlags,
    route::HeaderMutations,
    stats::{add, inc},
    UpstreamHttpOptions,
};

use super::{
    downstream::{ClientEnd, ResponseWriter},
    log::Values,
    respond,
    stream::{client_trailers, local, Exchange, Next, Stream},
    tunnel::relay_stream,
    Connection,
};
use crate::{
    filters::http::on_response,
    protocol::http1::Framing,
    proxy::{
        pool::UpstreamConn,
        router::{deadline::Expiry, UpstreamResponse},
        upstream::ResponseFailure,
    },
    stream::{
        grpc,
        grpc_web::{self, ResponseEncoder},
        headers::{RequestHead, ResponseHead, Version},
        mutations, LocalReply, StreamContext,
    },
};

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
    pub upstream_http: &'r UpstreamHttpOptions,
    pub upstream_buffer_limit: usize,
    /// The cookie a `hash_policy` made for this request, set on the response.
    pub set_cookie: Option<Bytes>,
}

/// The response policy on an upstream's head (or a terminated CONNECT's 200): the route
/// table's mutations, the filters' response side in reverse, the router's headers, then the
/// connection manager's.
pub(super) fn upstream_head(
    c: &Connection<'_>,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    head: &mut ResponseHead,
    relay: &Relay<'_>,
    try_started: Instant,
    exchange: &Exchange,
) {
    let values = Values { c, exchange };
    for level in relay.levels.into_iter().flatten() {
        mutations::remove(&mut head.headers, &level.response_remove);
        mutations::add_to_response(request, head, &level.response_add, &values);
    }
    for filter in c.hcm.filters[..relay.ran].iter().rev() {
        on_response(filter, cx, request, head, &values);
    }
    if let Some(n) = relay.attempts {
        head.headers.set("x-envoy-attempt-count", n.to_string());
    }
    head.headers.set(
        "x-envoy-upstream-service-time",
        // u64: u128's formatting showed in the request profile; u64 ms is 584 million years.
        (try_started.elapsed().as_millis() as u64).to_string(),
    );
    respond::finish_head(c.hcm, &c.ctx.date, head);
}

/// Streams an upstream response to the client.
pub(super) async fn proxy_response(
    s: &mut Stream<'_, '_>,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    upstream: UpstreamResponse,
    relay: Relay<'_>,
    exchange: &mut Exchange,
) -> Next {
    let c = s.c;
    let hcm = c.hcm;
    let UpstreamResponse {
        head: response,
        mut body,
        try_started,
    } = upstream;
    // An upstream that answered before taking the whole body ends the exchange: the client's
    // unread body cannot be skipped, so its connection closes after this response.
    let keep_alive = relay.keep_alive && !response.early && !c.drain.is_draining();
    exchange.first_upstream_byte = Some(exchange.started.elapsed());
    exchange.flags.set(cx.notes.flags());
    if !hcm.access_logs.is_empty() {
        exchange.upstream_tls = body.negotiated();
    }
    // A client's `istio.stats` labels its principals from the upstream certificates.
    if !c.listener.inbound && hcm.has_istio_stats() {
        exchange.upstream_sans = body.uri_sans();
    }
    let mut head: ResponseHead = response.head;
    head.version = request.version; // answered in the client's version, as Envoy
    respond_with(c, exchange, head.status);
    exchange.details = "via_upstream".into();
    upstream_head(c, cx, request, &mut head, &relay, try_started, exchange);
    if let Some(cookie) = relay.set_cookie.clone() {
        head.headers.append("set-cookie", cookie);
    }
    if head.status == 101 {
        let upgraded = body.into_upgrade().filter(|_| relay.upgrading);
        return match upgraded {
            Some(upstream) => {
                let limit = relay.upstream_buffer_limit;
                open_tunnel(s, head, response.upgrade, upstream, limit, exchange).await
            }
            None => {
                // Not asked for: the upstream is broken.
                exchange.flags.set(ResponseFlags::UPSTREAM_PROTOCOL_ERROR);
                let reply = LocalReply::new(502, "upstream connect error or disconnect/reset before headers. reset reason: protocol error");
                local(s, Some(cx), request, reply, relay.ran, false, exchange).await
            }
        };
    }
    // A gRPC-Web client's body: the trailers join it, so its length is unknown.
    let mut web = exchange
        .grpc_web
        .filter(|_| grpc_web::is_grpc_web(&head))
        .map(|mode| ResponseEncoder::new(mode.text_response));
    let framing = match web {
        Some(_) => Framing::Chunked,
        None => response.framing,
    };
    let (mut writer, keep_alive) =
        s.downstream
            .start_response(&head, framing, keep_alive, request.is_head());
    let grpc = exchange.grpc.clone();
    if let Some(call) = &grpc {
        call.response_head(&head);
    }
    exchange.response = Some(head);
    let complete = loop {
        match body.next().await {
            Ok(Some(chunk)) => {
                if let Some(call) = &grpc {
                    call.response_data(&chunk);
                }
                let chunk = match &mut web {
                    Some(encoder) => encoder.data(chunk),
                    None => chunk,
                };
                if chunk.is_empty() {
                    continue; // all of it waits for a whole base64 group
                }
                exchange.bytes_sent += chunk.len() as u64;
                if !writer.push(chunk) {
                    continue;
                }
            }
            Ok(None) => {
                let trailers = body.trailers();
                exchange.grpc_status = trailers.as_ref().and_then(grpc::status_in);
                if let (Some(call), Some(trailers)) = (&grpc, &trailers) {
                    call.response_trailers(trailers);
                }
                if let Some(encoder) = &mut web {
                    // The trailers go as the body's last message.
                    let tail = encoder.finish(trailers.as_ref());
                    exchange.bytes_sent += tail.len() as u64;
                    if !tail.is_empty() {
                        writer.push(tail);
                    }
                    writer.finish(None);
                    break true;
                }
                let client_http2 = request.version == Version::Http2;
                let pass = client_trailers(hcm, request.version)
                    && relay.upstream_http.passes_trailers(client_http2);
                writer.finish(trailers.filter(|_| pass).as_ref());
                break true;
            }
            Err(failure) => {
                match failure {
                    ResponseFailure::TimedOut(Expiry::StreamIdle) => {
                        inc(&c.stats.downstream_rq_idle_timeout);
                        exchange.flags.set(ResponseFlags::STREAM_IDLE_TIMEOUT);
                    }
                    ResponseFailure::TimedOut(_) => {
                        exchange.flags.set(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT)
                    }
                    ResponseFailure::Protocol | ResponseFailure::Reset => {
                        exchange.flags.set(ResponseFlags::UPSTREAM_PROTOCOL_ERROR)
                    }
                }
                writer.abort();
                break false;
            }
        }
        if !flush(c, &mut writer, exchange).await {
            return Next::Close;
        }
    };
    if !complete {
        inc(&c.stats.rq_reset_after_downstream_response_started);
    }
    if !flush(c, &mut writer, exchange).await {
        return Next::Close;
    }
    exchange.response_done = Some(exchange.started.elapsed());
    match complete && keep_alive {
        true => Next::KeepAlive,
        false => Next::Close,
    }
}

/// Writes what is queued for the client; `false` (flagged) when the client is gone.
async fn flush(
    c: &Connection<'_>,
    writer: &mut ResponseWriter<'_>,
    exchange: &mut Exchange,
) -> bool {
    match writer.flush().await {
        Ok(n) => {
            add(&c.stats.downstream_cx_tx_bytes_total, n as u64);
            true
        }
        Err(_) => {
            exchange
                .flags
                .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            false
        }
    }
}

/// Opens a tunnel to the client: a `101` from upstream goes to an HTTP/1.1 client as it is
/// (the connection relays once the stream is done) and to an HTTP/2 client as `200` (RFC 8441,
/// the stream relays now); so does a terminated CONNECT's `200`.
pub(super) async fn open_tunnel(
    s: &mut Stream<'_, '_>,
    mut head: ResponseHead,
    token: Option<Bytes>,
    upstream: UpstreamConn,
    buffer_limit: usize,
    exchange: &mut Exchange,
) -> Next {
    let status = head.status;
    if status == 101 {
        match head.version {
            Version::Http2 => head.status = 200,
            _ => {
                head.headers
                    .set("connection", Bytes::from_static(b"upgrade"));
                if let Some(token) = token {
                    head.headers.set("upgrade", token);
                }
            }
        }
    }
    let opened = s.downstream.open_tunnel(&head).await;
    head.status = status; // logged as the upstream answered, as Envoy logs it
    exchange.response = Some(head);
    match opened {
        Ok(ClientEnd::Connection(n)) => {
            add(&s.c.stats.downstream_cx_tx_bytes_total, n as u64);
            Next::Upgrade {
                upstream,
                buffer_limit,
            }
        }
        Ok(ClientEnd::Stream(tunnel)) => {
            relay_stream(s.c, tunnel, upstream, buffer_limit, exchange).await;
            Next::Close
        }
        Err(_) => {
            exchange
                .flags
                .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            Next::Close
        }
    }
}
