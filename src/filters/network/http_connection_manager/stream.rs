//! HTTP connection manager: one request/response exchange from start to end — admission and
//! routing (`routing`), the upstream request through the router, the answer (a local reply
//! here, an upstream response in `upstream_response`), stats and access log last.
use std::{
    borrow::Cow,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use model::{
    access_log::ResponseFlags,
    filters::AlpnOverrides,
    http::HttpConnectionManager,
    metadata::DynamicMetadata,
    overload::ActionKind,
    route::{
        ClientCertificateState, Forward, HeaderMutations, HostRewrite, RetryPolicy, RouteConfig,
        RouteRequest,
    },
    stats::{add, dec, inc, record_duration, HttpCells},
    tls_info::{Negotiated, UriSans},
    OriginalDst,
};

use super::{
    downstream::Downstream,
    local_reply,
    log::Values,
    respond,
    routes::Table,
    routing::{admit, choose, needs_tls, Chosen},
    tunnel,
    upstream_response::{proxy_response, respond_with, Relay},
    Connection,
};
use crate::{
    filters::{
        http::{grpc_stats::GrpcCall, on_response},
        istio::peer::Peer,
    },
    net::buffered::deadline,
    protocol::http1::{reason_phrase, Framing, ParsedRequest},
    proxy::{
        cluster_manager::ShardCluster,
        pool::UpstreamConn,
        request_hash::{request_hash, RequestHash},
        router::{
            self,
            deadline::{Deadlines, Expiry},
            Forwarding, Routed, RouterRecord,
        },
    },
    stream::{
        body::{BodyFailure, RequestBody},
        grpc,
        grpc_web::{GrpcWebMode, TextDecoder},
        headers::{RequestHead, ResponseHead, Version},
        mutations, LocalReply, StreamContext, StreamNotes,
    },
    tracing::{begin, Finished, Span},
};

/// What the access log and stats learn about an exchange.
pub struct Exchange {
    pub started: Instant,
    pub start_wall: SystemTime,
    pub status: u16,
    pub flags: ResponseFlags,
    pub upstream_host: Option<std::net::SocketAddr>,
    pub upstream_cluster: Option<String>,
    /// What the upstream connection that answered negotiated (TLS clusters).
    pub upstream_tls: Option<Negotiated>,
    /// Its certificates' first URI SANs, when an `istio.stats` filter reports as the client.
    pub upstream_sans: Option<Rc<UriSans>>,
    /// What the filters wrote (`%DYNAMIC_METADATA%`).
    pub metadata: DynamicMetadata,
    pub bytes_sent: u64,
    /// The response head as sent downstream.
    pub response: Option<ResponseHead>,
    /// `%RESPONSE_CODE_DETAILS%` (empty: unset).
    pub details: Cow<'static, str>,
    pub route_name: Option<String>,
    /// Since `started`: the request was read in full, the upstream's head arrived, the
    /// response was sent in full.
    pub request_done: Option<Duration>,
    pub first_upstream_byte: Option<Duration>,
    pub response_done: Option<Duration>,
    /// The request body was read to its end.
    pub body_done: bool,
    /// Request body bytes received (`%BYTES_RECEIVED%`).
    pub bytes_received: u64,
    /// The gRPC call `envoy.filters.http.grpc_stats` tracks.
    pub grpc: Option<Rc<GrpcCall>>,
    /// `envoy.filters.http.grpc_web` took the request.
    pub grpc_web: Option<GrpcWebMode>,
    /// Istio's `istio.alpn` ran on the request.
    pub alpn: Option<Arc<AlpnOverrides>>,
    /// The request's span, when the connection manager traces.
    pub span: Option<Span>,
    /// The `grpc-status` of the upstream's trailers.
    pub grpc_status: Option<u32>,
    /// The cluster the request was routed to.
    pub cluster: Option<Rc<ShardCluster>>,
    /// The workloads Istio's metadata exchange found on either side.
    pub downstream_peer: Option<Rc<Peer>>,
    pub upstream_peer: Option<Rc<Peer>>,
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
            upstream_tls: None,
            upstream_sans: None,
            metadata: DynamicMetadata::new(),
            bytes_sent: 0,
            response: None,
            details: Cow::Borrowed(""),
            route_name: None,
            request_done: None,
            first_upstream_byte: None,
            response_done: None,
            body_done: false,
            bytes_received: 0,
            grpc: None,
            grpc_web: None,
            alpn: None,
            span: None,
            grpc_status: None,
            cluster: None,
            downstream_peer: None,
            upstream_peer: None,
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

/// Holds `downstream_rq_active` for a request, also when its connection is closed under it
/// (the end of a listener drain drops the request mid-way).
struct ActiveRequest<'a>(&'a HttpCells);

impl<'a> ActiveRequest<'a> {
    fn count(stats: &'a HttpCells) -> Self {
        inc(&stats.downstream_rq_active);
        Self(stats)
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        dec(&self.0.downstream_rq_active);
    }
}

/// What the codec said of a request besides its head.
struct Incoming {
    framing: Framing,
    /// The connection may carry another request after this one.
    keep_alive: bool,
    expect_continue: bool,
    /// The protocol an `upgrade` request asks for.
    upgrade: Option<Bytes>,
    connect: bool,
}

/// One stream being served: its connection, the route table it started with (an RDS update
/// reaches the next stream), and its client.
pub struct Stream<'s, 'c> {
    pub c: &'s Connection<'c>,
    pub table: Table<'c>,
    pub downstream: Downstream<'s>,
}

/// Serves one request; what the connection does next.
pub async fn serve(
    c: &Connection<'_>,
    downstream: Downstream<'_>,
    parsed: ParsedRequest,
    last: bool,
) -> Next {
    let hcm = c.hcm;
    let stats = c.stats;
    let mut s = Stream {
        c,
        table: c.routes.current(),
        downstream,
    };
    inc(&stats.downstream_rq_total);
    match &s.downstream {
        Downstream::Http1(_) => inc(&stats.downstream_rq_http1_total),
        Downstream::Http2 { .. } => inc(&stats.downstream_rq_http2_total),
    }
    let active = ActiveRequest::count(stats);
    let mut exchange = Exchange::start();
    let ParsedRequest {
        head: mut request,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
        connect,
    } = parsed;
    exchange.body_done = matches!(framing, Framing::Empty);
    // A CONNECT's connection is the tunnel's, or closes with a refusal (as Envoy).
    let keep_alive = keep_alive && !last && !connect;
    let incoming = Incoming {
        framing,
        keep_alive: keep_alive && !overload_closes(c, &s.downstream),
        expect_continue,
        upgrade,
        connect,
    };
    let keep = exchange_request(&mut s, &mut request, incoming, &mut exchange).await;
    drop(active);
    inc(&stats.downstream_rq_completed);
    record_duration(&stats.downstream_rq_time, exchange.started.elapsed());
    if exchange.body_done {
        exchange.request_done = Some(exchange.started.elapsed());
    }
    if !hcm.access_logs.is_empty() {
        super::log::write(c, &request, &exchange);
    }
    if let (Some(tracing), Some(span)) = (&hcm.tracing, exchange.span.take()) {
        let end = Finished {
            request: &request,
            scheme: c.scheme,
            status: exchange.response.as_ref().map_or(0, |r| r.status),
            upstream_cluster: exchange.upstream_cluster.as_deref(),
            flags: exchange.flags,
            bytes_received: exchange.bytes_received,
            bytes_sent: exchange.bytes_sent,
            remote: c.remote.ip(),
            duration_us: exchange.started.elapsed().as_micros() as u64,
        };
        crate::tracing::finish(c.ctx, tracing, span, &end);
    }
    super::istio_stats::record(c, &request, &exchange);
    match keep {
        Next::KeepAlive if !exchange.body_done => Next::Close,
        next => next,
    }
}

/// Whether `disable_http_keepalive` closes this HTTP/1 connection after its response
/// (counted); HTTP/2 connections are not drained by it.
fn overload_closes(c: &Connection<'_>, downstream: &Downstream<'_>) -> bool {
    let closes = matches!(downstream, Downstream::Http1(_))
        && !c.listener.bypasses_overload
        && c.ctx.overload.applies(ActionKind::DisableHttpKeepalive);
    if closes {
        inc(&c.stats.downstream_cx_overload_disable_keepalive);
    }
    closes
}

/// The phases of one exchange: admission, `100 Continue`, route match, filters and the
/// route's action, the upstream request's headers, the router, the answer.
async fn exchange_request(
    s: &mut Stream<'_, '_>,
    request: &mut RequestHead,
    incoming: Incoming,
    exchange: &mut Exchange,
) -> Next {
    // A local answer keeps the connection when the client's body is done (nothing unread).
    let may_keep = incoming.keep_alive && exchange.body_done;
    let c = s.c;
    if !c.listener.bypasses_overload && c.ctx.overload.applies(ActionKind::StopAcceptingRequests) {
        inc(&c.stats.downstream_rq_overload_close);
        let mut reply = LocalReply::new(503, "envoy overloaded");
        reply.flags.set(ResponseFlags::OVERLOAD_MANAGER);
        exchange.details = "overload".into();
        return local(s, None, request, reply, 0, may_keep, exchange).await;
    }
    if let Err(refused) = admit(c, &s.table, request) {
        let keep = refused.keep && may_keep;
        return local(s, None, request, refused.reply, 0, keep, exchange).await;
    }
    if incoming.expect_continue && !c.hcm.proxy_100_continue {
        request.headers.remove("expect");
        if s.downstream.send_continue().await.is_err() {
            exchange
                .flags
                .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            return Next::Close;
        }
    }
    let table = s.table.clone();
    let cx = match match_route(c, &table, request, exchange) {
        Ok(cx) => cx,
        Err(reply) => return local(s, None, request, reply, 0, may_keep, exchange).await,
    };
    if let Some(tracing) = &c.hcm.tracing {
        let egress = c.listener.outbound;
        exchange.span = begin(tracing, egress, cx.route, request, exchange.start_wall);
    }
    let next = routed(s, &table, &cx, request, incoming, exchange).await;
    exchange.downstream_peer = cx.notes.downstream_peer();
    exchange.upstream_peer = cx.notes.upstream_peer();
    exchange.metadata = cx.notes.take_metadata();
    next
}

/// The phases after the route match: filters and the route's action, the upstream request's
/// headers, the router, the answer.
async fn routed(
    s: &mut Stream<'_, '_>,
    table: &Table<'_>,
    cx: &StreamContext<'_>,
    request: &mut RequestHead,
    incoming: Incoming,
    exchange: &mut Exchange,
) -> Next {
    let c = s.c;
    let mut ran = 0;
    // A CONNECT is routed as an upgrade of its own type, as Envoy routes it.
    let upgrade = match incoming.connect {
        true => Some(Bytes::from_static(b"connect")),
        false => incoming.upgrade,
    };
    // The body, which filters may read before the router (a CONNECT's stream is its tunnel).
    let mut body = (!incoming.connect).then(|| {
        s.downstream
            .request_body(&incoming.framing, &c.limits, c.listener.buffer_limit)
    });
    let chosen = choose(c, cx, request, upgrade, &mut ran, exchange, body.as_mut()).await;
    let chosen = match chosen {
        Ok(chosen) => chosen,
        Err(refused) => {
            if let Some(body) = body.take() {
                note_body(exchange, &body);
            }
            let keep = refused.keep && incoming.keep_alive && exchange.body_done;
            return local(s, Some(cx), request, refused.reply, ran, keep, exchange).await;
        }
    };
    inc(&c.stats.rq_total);
    exchange.cluster = Some(chosen.cluster.clone());
    exchange.grpc = GrpcCall::start(&c.hcm.filters, cx, request, &chosen.cluster.config.stats);
    exchange.grpc_web = cx.notes.grpc_web();
    exchange.alpn = cx.notes.take_alpn();
    let levels = table.header_mutations(chosen.virtual_host, chosen.route, chosen.weighted_headers);
    // Hashed before the route's rewrites, as Envoy picks the host before applying them.
    let hashed = match chosen.cluster.config.lb_policy.hashes() {
        true => request_hash(&chosen.forward.hash_policy, request, c.remote, c.local),
        false => RequestHash::default(),
    };
    let relay = |attempts, keep_alive| Relay {
        set_cookie: hashed.set_cookie.clone(),
        attempts,
        levels,
        ran,
        keep_alive,
        upgrading: chosen.upgrade.is_some(),
        upstream_http: &chosen.cluster.config.http,
        upstream_buffer_limit: chosen.cluster.config.buffer_limit,
    };
    if incoming.connect {
        return match chosen.forward.terminates_connect {
            true => {
                let relay = relay(None, false);
                tunnel::terminate(s, cx, request, &chosen, relay, hashed.hash, exchange).await
            }
            // Envoy would forward the CONNECT upstream, which is not supported.
            false => {
                exchange.details = "upgrade_failed".into();
                let reply = LocalReply::new(403, "");
                local(s, Some(cx), request, reply, ran, false, exchange).await
            }
        };
    }
    let retry = upstream_headers(request, &chosen, levels, &Values { c, exchange });
    let body = body.expect("made for every request but a CONNECT");
    let upstream = Upstream {
        chosen: &chosen,
        retry,
        hash: hashed.hash,
    };
    let (routed, record) = forward(c, body, request, upstream, &incoming.framing, exchange).await;
    exchange.flags.set(record.flags);
    exchange.upstream_host = record.upstream_host;
    match record.downstream_timeout {
        Some(Expiry::Request) => inc(&c.stats.downstream_rq_timeout),
        Some(Expiry::StreamIdle) => inc(&c.stats.downstream_rq_idle_timeout),
        _ => {}
    }
    let keep_alive = incoming.keep_alive;
    match routed {
        Routed::Failed(reply) => {
            exchange.details = record
                .details
                .unwrap_or("upstream_reset_before_response_started")
                .into();
            let keep = keep_alive && exchange.body_done;
            local(s, Some(cx), request, reply, ran, keep, exchange).await
        }
        Routed::Downstream(failure) => {
            downstream_failed(s, cx, request, failure, ran, exchange).await
        }
        Routed::Response(response) => {
            let attempts = chosen
                .virtual_host
                .attempt_count_in_response
                .then_some(record.attempts);
            let relay = relay(attempts, keep_alive);
            proxy_response(s, cx, request, response, relay, exchange).await
        }
    }
}

/// Matches the request's virtual host and route; a plain-HTTP request to a virtual host that
/// requires TLS is redirected to https instead.
fn match_route<'t>(
    c: &'t Connection<'t>,
    table: &'t RouteConfig,
    request: &RequestHead,
    exchange: &mut Exchange,
) -> Result<StreamContext<'t>, LocalReply> {
    let virtual_host = table.virtual_host(request.authority());
    let routed = OnConnection {
        head: request,
        client_certificate: c.client_certificate,
    };
    let route = virtual_host.and_then(|v| v.route(&routed));
    if let Some(route) = route.filter(|r| !r.name.is_empty()) {
        exchange.route_name = Some(route.name.clone());
    }
    if virtual_host.is_some_and(|v| needs_tls(v.require_tls, c.hcm, c.remote)) {
        let mut location = b"https://".to_vec();
        location.extend_from_slice(request.authority());
        location.extend_from_slice(&request.path);
        let mut reply = LocalReply::new(301, "");
        reply.headers.append("location", location);
        return Err(reply);
    }
    Ok(StreamContext {
        shard: c.ctx,
        hcm: c.hcm,
        virtual_host,
        route,
        started: exchange.started,
        filter_state: c.filter_state,
        downstream: c.downstream(),
        notes: StreamNotes::default(),
    })
}

/// The upstream request's headers: path and host rewrites, the route table's header
/// mutations, the router's own headers. Returns the retry policy in force.
fn upstream_headers<'a>(
    request: &mut RequestHead,
    chosen: &Chosen<'a>,
    levels: [Option<&HeaderMutations>; 4],
    values: &Values<'_, '_>,
) -> Option<&'a RetryPolicy> {
    let (route, forward, vhost) = (chosen.route, chosen.forward, chosen.virtual_host);
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
    for level in levels.into_iter().flatten() {
        mutations::remove(&mut request.headers, &level.request_remove);
        mutations::add_to_request(request, &level.request_add, values);
    }
    let retry = forward
        .retry_policy
        .as_deref()
        .or(vhost.retry_policy.as_deref());
    let expected = retry
        .and_then(|r| r.per_try_timeout)
        .or(route_timeout(forward, request));
    if let Some(timeout) = expected {
        request.headers.set(
            "x-envoy-expected-rq-timeout-ms",
            timeout.as_millis().to_string(),
        );
    }
    if let Some(token) = &chosen.upgrade {
        request
            .headers
            .set("connection", Bytes::from_static(b"upgrade"));
        request.headers.set("upgrade", token.clone());
    }
    retry
}

/// Where the router sends a request: the route's choice, its retry policy, and the request's
/// hash for a consistent-hash cluster.
struct Upstream<'a, 'c> {
    chosen: &'a Chosen<'c>,
    retry: Option<&'a RetryPolicy>,
    hash: Option<u64>,
}

/// What the exchange learns of the request body: whether it was read to its end, and how
/// much of it arrived.
fn note_body(exchange: &mut Exchange, body: &RequestBody<'_>) {
    exchange.body_done = body.is_done();
    exchange.bytes_received = body.received;
}

/// Hands the request to the router (reading its body from the client as it goes upstream,
/// after what filters read of it), then to the mirrors; what the exchange learns of the body
/// is noted in `exchange`.
async fn forward(
    c: &Connection<'_>,
    mut body: RequestBody<'_>,
    request: &mut RequestHead,
    upstream: Upstream<'_, '_>,
    framing: &Framing,
    exchange: &mut Exchange,
) -> (Routed, RouterRecord) {
    let Upstream {
        chosen,
        retry,
        hash,
    } = upstream;
    let hcm = c.hcm;
    let cluster = &chosen.cluster;
    let version = std::mem::replace(&mut request.version, Version::Http11);
    if let Some(call) = exchange.grpc.clone() {
        // What a filter read ahead is counted too.
        for chunk in body.replay().unwrap_or_default() {
            call.request_data(chunk);
        }
        body.observer = Some(Rc::new(move |chunk: &[u8]| call.request_data(chunk)));
    }
    // A decoded text body is shorter than the client's: its length is unknown upstream.
    let text_length = Framing::Chunked;
    let mut framing = framing;
    if exchange.grpc_web.is_some_and(|mode| mode.text_request) {
        body.grpc_web_text = Some(TextDecoder::default());
        if matches!(framing, Framing::Length(_)) {
            framing = &text_length;
        }
    }
    let mut record = RouterRecord::default();
    let forwarding = Forwarding {
        cluster: cluster.clone(),
        head: request,
        auto_host_rewrite: chosen.forward.host_rewrite == HostRewrite::Auto,
        attempt_count: chosen.virtual_host.attempt_count_to_upstream,
        trailers: client_trailers(hcm, version)
            && cluster
                .config
                .http
                .passes_trailers(version == Version::Http2),
        framing,
        is_head_request: request.is_head(),
        retry,
        client_version: version,
        alpn: exchange.alpn.clone(),
        hash,
        metadata_match: chosen.metadata_match,
        destination: cluster
            .config
            .original_dst
            .as_ref()
            .and_then(|o| header_destination(o, request).or(c.destination)),
        deadlines: Deadlines {
            route: deadline(route_timeout(chosen.forward, request)),
            request: hcm.timeouts.request.map(|t| exchange.started + t),
            stream_idle: chosen
                .forward
                .idle_timeout
                .unwrap_or(hcm.timeouts.stream_idle),
        },
    };
    let routed = router::forward(c.ctx, forwarding, &mut body, &mut record).await;
    crate::proxy::mirror::shadow(c.ctx, hcm, chosen.forward, cluster, request, framing, &body);
    request.version = version;
    note_body(exchange, &body);
    (routed, record)
}

/// Answers a request whose client sent a bad body, timed out sending it, or went away.
async fn downstream_failed(
    s: &mut Stream<'_, '_>,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    failure: BodyFailure,
    ran: usize,
    exchange: &mut Exchange,
) -> Next {
    match failure {
        BodyFailure::Malformed(error) => {
            inc(&s.c.stats.downstream_cx_protocol_error);
            exchange.details = error.details().into();
            exchange.flags.set(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
            let status = error.status();
            let reply = LocalReply::new(status, reason_phrase(status));
            local(s, Some(cx), request, reply, ran, false, exchange).await
        }
        BodyFailure::TimedOut => {
            inc(&s.c.stats.downstream_rq_timeout);
            exchange.details = "request_overall_timeout".into();
            let reply = LocalReply::new(408, "request timeout");
            local(s, Some(cx), request, reply, ran, false, exchange).await
        }
        BodyFailure::BadGrpcWebText => {
            exchange.details = "grpc_web_bad_request".into();
            let mut reply = LocalReply::new(400, "Bad gRPC-web request, invalid base64 data.");
            reply.keeps_http_status = true;
            local(s, Some(cx), request, reply, ran, false, exchange).await
        }
        BodyFailure::Disconnected => {
            inc(&s.c.stats.downstream_rq_rx_reset);
            exchange
                .flags
                .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            Next::Close
        }
    }
}

/// A request as route matching reads it: its head, and its connection's client certificate.
struct OnConnection<'a> {
    head: &'a RequestHead,
    client_certificate: ClientCertificateState,
}

impl RouteRequest for OnConnection<'_> {
    fn method(&self) -> &[u8] {
        self.head.method()
    }
    fn path(&self) -> &[u8] {
        self.head.path()
    }
    fn header(&self, lowercase_name: &str) -> Option<&[u8]> {
        self.head.header(lowercase_name)
    }
    fn client_certificate(&self) -> ClientCertificateState {
        self.client_certificate
    }
}

/// Answers with a local reply: route response mutations and the filters that ran see it. A
/// gRPC client gets it as a trailers-only gRPC response.
pub(super) async fn local(
    s: &mut Stream<'_, '_>,
    cx: Option<&StreamContext<'_>>,
    request: &RequestHead,
    mut reply: LocalReply,
    ran: usize,
    keep_alive: bool,
    exchange: &mut Exchange,
) -> Next {
    let c = s.c;
    let hcm = c.hcm;
    // A drain that started while this request ran ends its connection with this response.
    let keep_alive = keep_alive && !c.drain.is_draining();
    exchange.flags.set(reply.flags);
    if let Some(cx) = cx {
        exchange.flags.set(cx.notes.flags());
    }
    local_reply::rewrite(c, request, exchange, &mut reply);
    if grpc::is_grpc(request) {
        let status = reply.grpc_status.unwrap_or(grpc::status_for(reply.status));
        grpc::trailers_only(status, &reply.body, &mut reply.headers);
        if !reply.keeps_http_status {
            reply.status = 200;
        }
        reply.body = Bytes::new();
    }
    respond_with(c, exchange, reply.status);
    let mut head = respond::local_head(&reply);
    head.version = request.version;
    if let Some(cx) = cx {
        if let (Some(host), Some(route)) = (cx.virtual_host, cx.route) {
            let levels = s.table.header_mutations(host, route, None);
            for level in levels.into_iter().flatten() {
                mutations::remove(&mut head.headers, &level.response_remove);
                let values = Values { c, exchange };
                mutations::add_to_response(request, &mut head, &level.response_add, &values);
            }
        }
        for filter in hcm.filters[..ran].iter().rev() {
            on_response(filter, cx, request, &mut head, &Values { c, exchange });
        }
    }
    if let Some(call) = &exchange.grpc {
        call.response_head(&head);
    }
    respond::finish_head(hcm, &c.ctx.date, &mut head);
    let written = s
        .downstream
        .send_complete(&head, &reply.body, keep_alive, request.is_head())
        .await;
    exchange.bytes_sent = reply.body.len() as u64;
    exchange.response = Some(head);
    exchange.response_done = Some(exchange.started.elapsed());
    let Ok(written) = written else {
        exchange
            .flags
            .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        return Next::Close;
    };
    add(&c.stats.downstream_cx_tx_bytes_total, written as u64);
    match keep_alive {
        true => Next::KeepAlive,
        false => Next::Close,
    }
}

/// `use_http_header`: the destination an `ORIGINAL_DST` cluster's header names (`ip:port`).
fn header_destination(
    original_dst: &OriginalDst,
    request: &RequestHead,
) -> Option<std::net::SocketAddr> {
    let value = request.headers.get(original_dst.header.as_deref()?)?;
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Whether trailers cross to or from the client: always over HTTP/2, over HTTP/1.1 only with
/// `http_protocol_options.enable_trailers`.
pub(super) fn client_trailers(hcm: &HttpConnectionManager, version: Version) -> bool {
    version == Version::Http2 || hcm.http1.enable_trailers
}

/// The route's timeout for this request: a gRPC request's own `grpc-timeout` where the route
/// says so (`grpc_timeout_header_max`, `max_grpc_timeout`), else `timeout`.
fn route_timeout(forward: &Forward, request: &RequestHead) -> Option<Duration> {
    match &forward.grpc_timeout {
        Some(settings) if grpc::is_grpc(request) => grpc::timeout(request, settings),
        _ => forward.timeout,
    }
}
