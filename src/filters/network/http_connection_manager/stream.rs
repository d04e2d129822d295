//! HTTP connection manager: one request/response exchange — path policy, forwarding headers,
//! route lookup, HTTP filters, then the route's action (forward through the router, redirect,
//! direct response) and the response back to the client, stats and access log last.
use std::{
    rc::Rc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use xds_agent::{
    access_log::ResponseFlags,
    model::{
        http::{HttpConnectionManager, UnderscoreHeaders},
        route::{
            ClusterSpecifier, Forward, HeaderMutations, HostRewrite, Route, RouteAction,
            RouteConfig, TlsRequirement, VirtualHost,
        },
        UpstreamHttpOptions,
    },
    stats::{add, dec, inc, record_duration, ClusterStats},
};

use super::{
    forwarding, path,
    respond::{self, Outgoing},
    Connection,
};
use crate::{
    filters::http::{on_request, on_response},
    net::buffered::{deadline, IoFailure},
    protocol::http1::{
        encode_chunk, encode_last_chunk, encode_response_head, reason_phrase, BodyDecoder,
        BodyEvent, Framing, ParsedRequest,
    },
    proxy::{
        cluster_manager::ShardCluster,
        pool::{self, UpstreamConn},
        router::{
            self,
            deadline::{Deadlines, Expiry},
            Forwarding, Routed, RouterRecord, UpstreamResponse, RESPONSE_LIMITS,
        },
    },
    stream::{
        body::{BodyFailure, RequestBody},
        headers::{RequestHead, ResponseHead, Version},
        mutations, FilterResult, LocalReply, StreamContext, StreamNotes,
    },
};

/// Largest response chunk batched before it is written (bounds per-stream memory).
const FLUSH_BYTES: usize = 64 << 10;

/// What the access log and stats learn about an exchange.
pub struct Exchange {
    pub started: Instant,
    pub start_wall: SystemTime,
    pub status: u16,
    pub flags: ResponseFlags,
    pub upstream_host: Option<std::net::SocketAddr>,
    pub upstream_cluster: Option<String>,
    pub bytes_sent: u64,
    /// The response head as sent downstream.
    pub response: Option<ResponseHead>,
    pub details: &'static str,
    pub route_name: Option<String>,
    /// Since `started`: the request was read in full, the upstream's head arrived, the
    /// response was sent in full.
    pub request_done: Option<Duration>,
    pub first_upstream_byte: Option<Duration>,
    pub response_done: Option<Duration>,
}

impl Exchange {
    /// An exchange starting now.
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            start_wall: SystemTime::now(),
            status: 0,
            flags: ResponseFlags::default(),
            upstream_host: None,
            upstream_cluster: None,
            bytes_sent: 0,
            response: None,
            details: "",
            route_name: None,
            request_done: None,
            first_upstream_byte: None,
            response_done: None,
        }
    }
}

/// What the connection does after an exchange.
pub enum Next {
    KeepAlive,
    Close,
    /// The upstream accepted an upgrade (101): relay raw bytes from now on, reading at most
    /// `buffer_limit` ahead of the client (the cluster's limit).
    Upgrade {
        upstream: UpstreamConn,
        buffer_limit: usize,
    },
}

/// Serves one request; what the connection does next.
pub async fn serve(c: &mut Connection<'_>, parsed: ParsedRequest, last: bool) -> Next {
    let hcm = c.hcm;
    let stats = c.stats;
    inc(&stats.downstream_rq_total);
    inc(&stats.downstream_rq_http1_total);
    inc(&stats.downstream_rq_active);
    let mut exchange = Exchange::start();
    let ParsedRequest {
        head: mut request,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
        connect,
    } = parsed;
    let mut body = RequestBody::new(&framing, &c.limits, c.listener.buffer_limit);
    let keep_alive = keep_alive && !last;
    let keep = exchange_request(
        c,
        &mut request,
        &framing,
        &mut body,
        keep_alive,
        expect_continue,
        upgrade,
        connect,
        &mut exchange,
    )
    .await;
    dec(&stats.downstream_rq_active);
    inc(&stats.downstream_rq_completed);
    record_duration(&stats.downstream_rq_time, exchange.started.elapsed());
    if body.is_done() {
        exchange.request_done = Some(exchange.started.elapsed());
    }
    if !hcm.access_logs.is_empty() {
        super::log::write(c, &request, body.received, &exchange);
    }
    match keep {
        Next::KeepAlive if !body.is_done() => Next::Close,
        next => next,
    }
}

#[allow(clippy::too_many_arguments)]
async fn exchange_request(
    c: &mut Connection<'_>,
    request: &mut RequestHead,
    framing: &Framing,
    body: &mut RequestBody,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: Option<Bytes>,
    connect: bool,
    exchange: &mut Exchange,
) -> Next {
    let hcm = c.hcm;
    let is_head = request.is_head();
    if let Err(refused) = admit(c, request, connect) {
        let keep = refused.keep && keep_alive && body.is_done();
        return local(c, None, request, refused.reply, 0, keep, exchange).await;
    }
    if expect_continue && !hcm.proxy_100_continue {
        request.headers.remove("expect");
        let continued = c.conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        if continued.is_err() {
            exchange
                .flags
                .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            return Next::Close;
        }
    }
    let config: &RouteConfig = &hcm.route_config;
    let virtual_host = config.virtual_host(request.authority());
    let route = virtual_host.and_then(|v| v.route(&*request));
    if let Some(route) = route.filter(|r| !r.name.is_empty()) {
        exchange.route_name = Some(route.name.clone());
    }
    if virtual_host.is_some_and(|v| needs_tls(v.require_tls, hcm, c.remote)) {
        let mut location = b"https://".to_vec();
        location.extend_from_slice(request.authority());
        location.extend_from_slice(&request.path);
        let mut reply = LocalReply::new(301, "");
        reply.headers.append("location", location);
        let keep = keep_alive && body.is_done();
        return local(c, None, request, reply, 0, keep, exchange).await;
    }
    let cx = StreamContext {
        shard: c.ctx,
        hcm,
        virtual_host,
        route,
        started: exchange.started,
        notes: StreamNotes::default(),
    };
    let mut ran = 0;
    let chosen = choose(c, &cx, request, upgrade, &mut ran, exchange).await;
    let Chosen {
        route,
        forward,
        upgrade,
        cluster,
        weighted_headers,
    } = match chosen {
        Ok(chosen) => chosen,
        Err(refused) => {
            let keep = refused.keep && keep_alive && body.is_done();
            return local(c, Some(&cx), request, refused.reply, ran, keep, exchange).await;
        }
    };
    inc(&c.stats.rq_total);
    // The upstream request: rewrites, route header mutations, router headers.
    if let Some(new_path) = route.rewritten_path(&request.path) {
        let original = std::mem::replace(&mut request.path, Bytes::from(new_path));
        request.headers.set("x-envoy-original-path", original);
    }
    match &forward.host_rewrite {
        HostRewrite::None | HostRewrite::Auto => {}
        HostRewrite::Literal(host) => {
            let original = request.headers.get("host").cloned();
            request.headers.set("host", host.clone());
            if let Some(original) = original {
                request.headers.set("x-envoy-original-host", original);
            }
        }
    }
    let levels = levels(config, virtual_host, route, weighted_headers);
    for level in &levels {
        mutations::remove(&mut request.headers, &level.request_remove);
        mutations::add(&mut request.headers, &level.request_add);
    }
    let retry = forward
        .retry_policy
        .as_deref()
        .or_else(|| virtual_host.and_then(|v| v.retry_policy.as_deref()));
    let expected = retry.and_then(|r| r.per_try_timeout).or(forward.timeout);
    if let Some(timeout) = expected {
        request.headers.set(
            "x-envoy-expected-rq-timeout-ms",
            timeout.as_millis().to_string(),
        );
    }
    if let Some(token) = &upgrade {
        request
            .headers
            .set("connection", Bytes::from_static(b"upgrade"));
        request.headers.set("upgrade", token.clone());
    }
    let version = std::mem::replace(&mut request.version, Version::Http11);
    let mut record = RouterRecord::default();
    let routed = router::forward(
        c.ctx,
        Forwarding {
            cluster: cluster.clone(),
            head: request,
            auto_host_rewrite: forward.host_rewrite == HostRewrite::Auto,
            attempt_count: virtual_host.is_some_and(|v| v.attempt_count_to_upstream),
            trailers: hcm.http1.enable_trailers && cluster.config.http.enable_trailers,
            framing,
            is_head_request: is_head,
            retry,
            deadlines: Deadlines {
                route: deadline(forward.timeout),
                request: hcm.timeouts.request.map(|t| exchange.started + t),
                stream_idle: forward.idle_timeout.unwrap_or(hcm.timeouts.stream_idle),
            },
        },
        body,
        &mut c.conn,
        &mut record,
    )
    .await;
    crate::proxy::mirror::shadow(c.ctx, hcm, forward, &cluster, request, framing, body);
    request.version = version;
    exchange.flags.set(record.flags);
    exchange.upstream_host = record.upstream_host;
    match record.downstream_timeout {
        Some(Expiry::Request) => inc(&c.stats.downstream_rq_timeout),
        Some(Expiry::StreamIdle) => inc(&c.stats.downstream_rq_idle_timeout),
        _ => {}
    }
    match routed {
        Routed::Failed(reply) => {
            exchange.details = record
                .details
                .unwrap_or("upstream_reset_before_response_started");
            if record.upstream_host.is_some() {
                // A host was tried: Envoy counts the local answer as that upstream's.
                let cells = cluster.config.stats.shard(c.ctx.id);
                cells.record_status(reply.status);
                inc(&cells.upstream_rq_completed);
            }
            local(
                c,
                Some(&cx),
                request,
                reply,
                ran,
                keep_alive && body.is_done(),
                exchange,
            )
            .await
        }
        Routed::Downstream(BodyFailure::Malformed(error)) => {
            inc(&c.stats.downstream_cx_protocol_error);
            exchange.details = error.details();
            exchange.flags.set(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
            let status = error.status();
            let reply = LocalReply::new(status, reason_phrase(status));
            local(c, Some(&cx), request, reply, ran, false, exchange).await
        }
        Routed::Downstream(BodyFailure::TimedOut) => {
            inc(&c.stats.downstream_rq_timeout);
            exchange.details = "request_overall_timeout";
            let reply = LocalReply::new(408, "request timeout");
            local(c, Some(&cx), request, reply, ran, false, exchange).await
        }
        Routed::Downstream(BodyFailure::Disconnected) => {
            inc(&c.stats.downstream_rq_rx_reset);
            exchange
                .flags
                .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            Next::Close
        }
        Routed::Response(response) => {
            let relay = Relay {
                attempts: virtual_host
                    .filter(|v| v.attempt_count_in_response)
                    .map(|_| record.attempts),
                levels,
                ran,
                keep_alive,
                upgrading: upgrade.is_some(),
                forward,
                upstream_http: &cluster.config.http,
                upstream_buffer_limit: cluster.config.buffer_limit,
                cluster_stats: &cluster.config.stats,
            };
            proxy_response(c, &cx, request, response, relay, body, exchange).await
        }
    }
}

/// A request answered locally before it reaches an upstream, and whether its connection may
/// stay open (when the client's body was read, which the caller checks).
struct Refusal {
    reply: LocalReply,
    keep: bool,
}

impl Refusal {
    fn keep(reply: LocalReply) -> Self {
        Self { reply, keep: true }
    }

    fn close(reply: LocalReply) -> Self {
        Self { reply, keep: false }
    }
}

/// The connection manager's checks and rewrites before routing: CONNECT, HTTP/1.0,
/// underscores in header names, the path policy, then the forwarding headers.
fn admit(c: &Connection<'_>, request: &mut RequestHead, connect: bool) -> Result<(), Refusal> {
    let hcm = c.hcm;
    if connect {
        return Err(Refusal::close(LocalReply::new(404, "")));
    }
    if request.version == Version::Http10 {
        if !hcm.http1.accept_http_10 {
            // The codec's refusal, so in the codec's own version.
            request.version = Version::Http11;
            return Err(Refusal::close(LocalReply::new(426, "Upgrade Required")));
        }
        if let (false, Some(host)) = (
            request.headers.contains("host"),
            &hcm.http1.default_host_for_http_10,
        ) {
            request.headers.append("host", host.clone());
        }
    }
    match hcm.headers_with_underscores {
        UnderscoreHeaders::Allow => {}
        UnderscoreHeaders::DropHeader => request.headers.retain(|h| !h.name.contains(&b'_')),
        UnderscoreHeaders::RejectRequest => {
            if request.headers.iter().any(|h| h.name.contains(&b'_')) {
                return Err(Refusal::close(LocalReply::new(400, "Bad Request")));
            }
        }
    }
    match path::apply(&hcm.path, &request.path) {
        path::PathVerdict::Forward(None) => {}
        path::PathVerdict::Forward(Some(p)) => request.path = Bytes::from(p),
        path::PathVerdict::Reject => {
            inc(&c.stats.downstream_rq_failed_path_normalization);
            return Err(Refusal::close(LocalReply::new(400, "Bad Request")));
        }
        path::PathVerdict::Redirect(p) => {
            let mut reply = LocalReply::new(307, "");
            reply.headers.append("location", p);
            return Err(Refusal::keep(reply));
        }
    }
    forwarding::prepare(hcm, request, c.remote);
    Ok(())
}

/// Where a request goes once the filters let it through.
struct Chosen<'a> {
    route: &'a Route,
    forward: &'a Forward,
    upgrade: Option<Bytes>,
    cluster: Rc<ShardCluster>,
    weighted_headers: Option<&'a HeaderMutations>,
}

/// Runs the HTTP filters (`ran` counts those that saw the request), then the route's action:
/// a forwarding route's cluster, or the local answer (no route, direct response, redirect,
/// refused upgrade, unknown cluster).
async fn choose<'a>(
    c: &Connection<'a>,
    cx: &StreamContext<'a>,
    request: &mut RequestHead,
    upgrade: Option<Bytes>,
    ran: &mut usize,
    exchange: &mut Exchange,
) -> Result<Chosen<'a>, Refusal> {
    let hcm = c.hcm;
    for filter in &hcm.filters {
        *ran += 1;
        if let FilterResult::Respond(reply) = on_request(filter, cx, request).await {
            exchange.details = "filter";
            return Err(Refusal::keep(reply));
        }
    }
    let Some(route) = cx.route else {
        inc(&c.stats.no_route);
        exchange.details = "route_not_found";
        let reply = LocalReply::new(404, "").flagged(ResponseFlags::NO_ROUTE_FOUND);
        return Err(Refusal::keep(reply));
    };
    let forward = match &route.action {
        RouteAction::DirectResponse(direct) => {
            inc(&c.stats.rq_direct_response);
            exchange.details = "direct_response";
            let body = direct.body.clone().unwrap_or_default();
            return Err(Refusal::keep(LocalReply::new(direct.status, body)));
        }
        RouteAction::Redirect(redirect) => {
            inc(&c.stats.rq_redirect);
            exchange.details = "direct_response";
            let mut reply = LocalReply::new(redirect.status, "");
            let location = route.redirect_location(b"http", request.authority(), &request.path);
            reply
                .headers
                .append("location", location.unwrap_or_default());
            return Err(Refusal::keep(reply));
        }
        RouteAction::Forward(forward) => forward,
    };
    let upgrade = match upgrade {
        Some(token) if !hcm.upgrade_allowed(Some(forward), &token) => {
            inc(&c.stats.downstream_rq_ws_on_non_ws_route);
            exchange.details = "upgrade_failed";
            return Err(Refusal::close(LocalReply::new(403, "")));
        }
        upgrade => upgrade,
    };
    let named = cluster_name(forward, request);
    exchange.upstream_cluster = named.as_ref().map(|(name, _)| name.clone());
    let cluster = named
        .as_ref()
        .and_then(|(name, _)| c.ctx.clusters.borrow().get(name));
    let (Some((_, weighted_headers)), Some(cluster)) = (named, cluster) else {
        inc(&c.stats.no_cluster);
        exchange.details = "cluster_not_found";
        let reply = LocalReply::new(forward.cluster_not_found_status, "")
            .flagged(ResponseFlags::NO_CLUSTER_FOUND);
        return Err(Refusal::keep(reply));
    };
    Ok(Chosen {
        route,
        forward,
        upgrade,
        cluster,
        weighted_headers,
    })
}

/// Header mutation levels in Envoy's order of application: weighted cluster, route, virtual
/// host, route configuration (reversed with `most_specific_header_mutations_wins`).
fn levels<'r>(
    config: &'r RouteConfig,
    virtual_host: Option<&'r VirtualHost>,
    route: &'r Route,
    weighted: Option<&'r HeaderMutations>,
) -> Vec<&'r HeaderMutations> {
    let mut levels: Vec<&HeaderMutations> = weighted.into_iter().collect();
    levels.push(&route.headers);
    if let Some(v) = virtual_host {
        levels.push(&v.headers);
    }
    levels.push(&config.headers);
    if config.most_specific_header_mutations_wins {
        levels.reverse();
    }
    levels
}

/// Whether a plain-HTTP request must be redirected to https (`require_tls`).
fn needs_tls(
    requirement: TlsRequirement,
    hcm: &HttpConnectionManager,
    remote: std::net::SocketAddr,
) -> bool {
    match requirement {
        TlsRequirement::None => false,
        TlsRequirement::All => true,
        TlsRequirement::ExternalOnly => forwarding::is_external(hcm, remote),
    }
}

/// The cluster to forward to, and the header mutations of a weighted cluster's entry.
fn cluster_name<'f>(
    forward: &'f Forward,
    request: &RequestHead,
) -> Option<(String, Option<&'f HeaderMutations>)> {
    match &forward.cluster {
        ClusterSpecifier::Name(name) => Some((name.clone(), None)),
        ClusterSpecifier::Weighted(weighted) => {
            let clusters = &weighted.clusters;
            let index = clusters.index_of(fastrand::u32(0..clusters.total_weight.max(1)));
            Some((
                clusters.clusters[index].0.clone(),
                weighted.headers.get(index),
            ))
        }
        ClusterSpecifier::Header(header) => request
            .headers
            .get(header)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|name| (name.to_string(), None)),
    }
}

/// Answers with a local reply: route response mutations and the filters that ran see it.
async fn local(
    c: &mut Connection<'_>,
    cx: Option<&StreamContext<'_>>,
    request: &RequestHead,
    reply: LocalReply,
    ran: usize,
    keep_alive: bool,
    exchange: &mut Exchange,
) -> Next {
    let hcm = c.hcm;
    // A drain that started while this request ran ends its connection with this response.
    let keep_alive = keep_alive && !c.ctx.drain.is_draining();
    exchange.flags.set(reply.flags);
    respond_with(c, exchange, reply.status);
    let mut head = respond::local_head(&reply);
    head.version = request.version;
    if let Some(cx) = cx {
        exchange.flags.set(cx.notes.flags());
        if let Some(route) = cx.route {
            for level in levels(&hcm.route_config, cx.virtual_host, route, None) {
                mutations::remove(&mut head.headers, &level.response_remove);
                mutations::add(&mut head.headers, &level.response_add);
            }
        }
        for filter in hcm.filters[..ran].iter().rev() {
            on_response(filter, cx, request, &mut head);
        }
    }
    respond::finish_head(hcm, &c.ctx.date, &mut head);
    let mut out = Vec::with_capacity(256 + reply.body.len());
    respond::encode_complete(&head, &reply.body, keep_alive, request.is_head(), &mut out);
    exchange.bytes_sent = reply.body.len() as u64;
    exchange.response = Some(head);
    let written = c.conn.write_all(&out).await;
    exchange.response_done = Some(exchange.started.elapsed());
    if written.is_err() {
        exchange
            .flags
            .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        return Next::Close;
    }
    add(&c.stats.downstream_cx_tx_bytes_total, out.len() as u64);
    match keep_alive {
        true => Next::KeepAlive,
        false => Next::Close,
    }
}

/// Records the status the client is answered with; its class is counted now, as Envoy counts
/// it when the response head goes out.
fn respond_with(c: &Connection<'_>, exchange: &mut Exchange, status: u16) {
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
struct Relay<'r> {
    /// Tries made, when the response reports them (`include_attempt_count_in_response`).
    attempts: Option<u32>,
    levels: Vec<&'r HeaderMutations>,
    /// How many filters ran on the request (they see the response, in reverse).
    ran: usize,
    keep_alive: bool,
    upgrading: bool,
    forward: &'r Forward,
    upstream_http: &'r UpstreamHttpOptions,
    upstream_buffer_limit: usize,
    cluster_stats: &'r ClusterStats,
}

/// Streams an upstream response to the client.
async fn proxy_response(
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
    let keep_alive = keep_alive && !early && !c.ctx.drain.is_draining();
    exchange.first_upstream_byte = Some(exchange.started.elapsed());
    exchange.flags.set(cx.notes.flags());
    let cells = cluster_stats.shard(c.ctx.id);
    let mut head: ResponseHead = response.head;
    head.version = request.version; // answered in the client's version, as Envoy
    respond_with(c, exchange, head.status);
    exchange.details = "via_upstream";
    for level in &levels {
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
async fn flush(c: &mut Connection<'_>, out: &mut Outgoing) -> bool {
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
