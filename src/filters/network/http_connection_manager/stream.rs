//! HTTP connection manager: one request/response exchange from start to end — admission and
//! routing (`routing`), the upstream request through the router, the answer (a local reply
//! here, an upstream response in `upstream_response`), stats and access log last.
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use model::{
    access_log::ResponseFlags,
    route::{ClientCertificateState, HostRewrite, RouteConfig, RouteRequest},
    stats::{add, dec, inc, record_duration, HttpCells},
    tls_info::Negotiated,
};

use super::{
    respond,
    routing::{admit, choose, needs_tls, Chosen},
    upstream_response::{proxy_response, respond_with, Relay},
    Connection,
};
use crate::{
    filters::http::on_response,
    net::buffered::deadline,
    protocol::http1::{reason_phrase, Framing, ParsedRequest},
    proxy::{
        pool::UpstreamConn,
        router::{
            self,
            deadline::{Deadlines, Expiry},
            Forwarding, Routed, RouterRecord,
        },
    },
    stream::{
        body::{BodyFailure, RequestBody},
        headers::{RequestHead, ResponseHead, Version},
        mutations, LocalReply, StreamContext, StreamNotes,
    },
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
            upstream_tls: None,
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

/// Serves one request; what the connection does next.
pub async fn serve(c: &mut Connection<'_>, parsed: ParsedRequest, last: bool) -> Next {
    let hcm = c.hcm;
    let stats = c.stats;
    c.table = c.routes.current();
    inc(&stats.downstream_rq_total);
    inc(&stats.downstream_rq_http1_total);
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
    drop(active);
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
    let table = c.table.clone();
    let config: &RouteConfig = &table;
    let virtual_host = config.virtual_host(request.authority());
    let routed = OnConnection {
        head: request,
        client_certificate: c.client_certificate,
    };
    let route = virtual_host.and_then(|v| v.route(&routed));
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
        virtual_host: vhost,
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
    let levels = config.header_mutations(vhost, route, weighted_headers);
    for level in levels.into_iter().flatten() {
        mutations::remove(&mut request.headers, &level.request_remove);
        mutations::add(&mut request.headers, &level.request_add);
    }
    let retry = forward
        .retry_policy
        .as_deref()
        .or(vhost.retry_policy.as_deref());
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
            attempt_count: vhost.attempt_count_to_upstream,
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
            if !hcm.access_logs.is_empty() {
                let upstream = response.conn.conn.io.tls();
                exchange.upstream_tls = upstream.map(|t| Negotiated::of(t.connection()));
            }
            let relay = Relay {
                attempts: vhost.attempt_count_in_response.then_some(record.attempts),
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

/// Answers with a local reply: route response mutations and the filters that ran see it.
pub(super) async fn local(
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
    let keep_alive = keep_alive && !c.drain.is_draining();
    exchange.flags.set(reply.flags);
    respond_with(c, exchange, reply.status);
    let mut head = respond::local_head(&reply);
    head.version = request.version;
    if let Some(cx) = cx {
        exchange.flags.set(cx.notes.flags());
        if let (Some(host), Some(route)) = (cx.virtual_host, cx.route) {
            let levels = c.table.header_mutations(host, route, None);
            for level in levels.into_iter().flatten() {
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
