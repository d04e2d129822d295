//! `envoy.filters.network.http_connection_manager` over HTTP/1.1: reads requests off a
//! downstream connection one at a time (pipelined requests wait in the buffer, so responses
//! go out in order), runs each through filters and the router, and keeps the connection
//! alive between them within the configured timeouts.
mod forwarding;
mod log;
mod path;
mod respond;
mod routes;
mod routing;
mod stream;
mod upstream_response;

use bytes::Bytes;
use futures_lite::future;
pub use routes::RdsTables;
use routes::{RouteSource, Table};
use stream::{Exchange, Next};

use std::{cell::OnceCell, net::SocketAddr, rc::Rc, sync::Arc, time::Instant};

use model::{
    access_log::ResponseFlags,
    http::HttpConnectionManager,
    route::ClientCertificateState,
    stats::{add, dec, inc, HttpCells},
    tls_info::DownstreamTls,
    Listener,
};

use crate::{
    context::ShardContext,
    net::{
        buffered::{deadline, earliest, Buffered, IoFailure},
        connection::Accepted,
        drain::DrainSignal,
        relay::{relay, RelayLimits, RelayObserver},
    },
    protocol::http1::{self, Limits, ParsedRequest},
    proxy::pool::UpstreamConn,
    stream::{
        headers::{Headers, RequestHead, Version},
        LocalReply,
    },
};

/// One downstream connection's shared state.
pub struct Connection<'a> {
    pub ctx: &'a Rc<ShardContext>,
    pub listener: &'a Listener,
    /// The drain of the listener generation this connection was accepted under.
    pub drain: &'a DrainSignal,
    pub hcm: &'a HttpConnectionManager,
    /// Where each new stream finds its route table.
    pub routes: RouteSource<'a>,
    /// The table of the stream being served (taken from `routes` when it starts).
    pub table: Table<'a>,
    pub stats: &'a HttpCells,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub conn: Buffered,
    pub limits: Limits,
    pub connection_id: u64,
    /// The server name (SNI) the tls_inspector read; empty without one.
    pub requested_server_name: &'a str,
    /// What `tls_context` route matches read.
    pub client_certificate: ClientCertificateState,
    /// The connection's TLS as access logs and XFCC read it, taken on first use.
    tls: OnceCell<Option<DownstreamTls>>,
    /// This connection's own `x-forwarded-client-cert` element, made on first use.
    xfcc: OnceCell<Bytes>,
}

impl Connection<'_> {
    /// `https` on a TLS connection, else `http`.
    pub fn scheme(&self) -> &'static str {
        match self.conn.io.tls() {
            Some(_) => "https",
            None => "http",
        }
    }

    /// The connection's TLS; `None` on plaintext.
    pub fn tls(&self) -> Option<&DownstreamTls> {
        self.tls
            .get_or_init(|| self.conn.io.tls().map(|t| t.info()))
            .as_ref()
    }

    /// This connection's XFCC element (its client presented a certificate).
    pub fn xfcc_element(&self) -> Bytes {
        self.xfcc
            .get_or_init(|| match self.tls() {
                Some(tls) => forwarding::client_cert_element(self.hcm, tls),
                None => Bytes::new(),
            })
            .clone()
    }
}

/// How waiting for the next request ended, when no request came.
enum NoRequest {
    /// Closed by the client (or a socket error).
    Closed,
    IdleTimeout,
    HeadersTimeout,
    Malformed(http1::RequestError),
}

/// How serving requests on a connection ended.
enum Ended {
    /// The connection closes (as counted by the request loop).
    Closed,
    /// The listener's drain time ended with a request still in progress.
    DrainClosed,
    /// The upstream accepted an upgrade (101): relay raw bytes from now on.
    Upgrade {
        upstream: UpstreamConn,
        buffer_limit: usize,
    },
}

pub async fn run(
    ctx: &Rc<ShardContext>,
    listener: &Arc<Listener>,
    drain: &DrainSignal,
    hcm: &Arc<HttpConnectionManager>,
    accepted: Accepted<'_>,
) {
    let stream = accepted.transport;
    let stats = hcm.stats.shard(ctx.id);
    inc(&stats.downstream_cx_total);
    inc(&stats.downstream_cx_http1_total);
    inc(&stats.downstream_cx_active);
    inc(&stats.downstream_cx_http1_active);
    let opened = Instant::now();
    let remote = stream.peer_addr().unwrap_or(listener.address);
    // The local address costs a syscall; only access logs read it.
    let local = match hcm.access_logs.is_empty() {
        true => listener.address,
        false => stream.local_addr().unwrap_or(listener.address),
    };
    let routes = ctx.routes.source(&hcm.routes);
    let presented = stream
        .tls()
        .is_some_and(|t| t.connection().peer_certificates().is_some());
    let mut connection = Connection {
        ctx,
        listener,
        drain,
        hcm,
        table: routes.current(),
        routes,
        stats,
        remote,
        local,
        conn: Buffered::new(stream),
        connection_id: ctx.connection_id(),
        limits: Limits {
            max_head_bytes: hcm.max_request_headers_bytes,
            max_headers: hcm.max_headers_count,
        },
        requested_server_name: accepted.server_name,
        client_certificate: ClientCertificateState {
            presented,
            validated: presented,
        },
        tls: OnceCell::new(),
        xfcc: OnceCell::new(),
    };
    // At the end of the drain time a request still in progress ends with its connection.
    let drained = async {
        drain.closed().await;
        Ended::DrainClosed
    };
    match future::or(connection.serve_requests(), drained).await {
        Ended::Closed => {}
        Ended::DrainClosed => inc(&stats.downstream_cx_destroy_local),
        Ended::Upgrade {
            upstream,
            buffer_limit,
        } => upgraded(connection, upstream, buffer_limit).await,
    }
    model::stats::record_duration(&stats.downstream_cx_length_ms, opened.elapsed());
    dec(&stats.downstream_cx_http1_active);
    dec(&stats.downstream_cx_active);
    inc(&stats.downstream_cx_destroy);
}

/// Relays an upgraded (101) connection until both sides close: bytes already buffered on
/// either side go first.
async fn upgraded(connection: Connection<'_>, upstream: UpstreamConn, upstream_limit: usize) {
    let Connection {
        ctx,
        listener,
        drain,
        hcm,
        stats,
        conn: mut downstream,
        ..
    } = connection;
    let UpstreamConn {
        conn: mut upstream,
        lease,
        ..
    } = upstream;
    inc(&stats.downstream_cx_upgrades_total);
    inc(&stats.downstream_cx_upgrades_active);
    let early_down = std::mem::take(&mut downstream.buf);
    let early_up = std::mem::take(&mut upstream.buf);
    let flushed = upstream.write_all(&early_down).await.is_ok()
        && downstream.write_all(&early_up).await.is_ok();
    if flushed {
        let limits = RelayLimits {
            downstream: listener.buffer_limit,
            upstream: upstream_limit,
            idle_timeout: hcm.timeouts.stream_idle,
        };
        let observer = UpgradeBytes(stats);
        relay(
            downstream.io,
            upstream.io,
            &limits,
            &ctx.scratch,
            &observer,
            drain,
        )
        .await;
    }
    dec(&stats.downstream_cx_upgrades_active);
    drop(lease);
}

/// Counts relayed bytes of an upgraded connection.
struct UpgradeBytes<'a>(&'a HttpCells);

impl RelayObserver for UpgradeBytes<'_> {
    fn downstream_to_upstream(&self, bytes: usize) {
        add(&self.0.downstream_cx_rx_bytes_total, bytes as u64);
    }
    fn upstream_to_downstream(&self, bytes: usize) {
        add(&self.0.downstream_cx_tx_bytes_total, bytes as u64);
    }
}

impl Connection<'_> {
    /// Serves requests one after another until the connection closes or is upgraded.
    async fn serve_requests(&mut self) -> Ended {
        let mut served = 0u32;
        loop {
            let request = match self.next_request(served == 0).await {
                Ok(request) => request,
                Err(NoRequest::Closed) => {
                    inc(&self.stats.downstream_cx_destroy_remote);
                    break;
                }
                Err(NoRequest::IdleTimeout) => {
                    inc(&self.stats.downstream_cx_idle_timeout);
                    inc(&self.stats.downstream_cx_destroy_local);
                    break;
                }
                Err(NoRequest::HeadersTimeout) => {
                    inc(&self.stats.downstream_rq_header_timeout);
                    inc(&self.stats.downstream_cx_destroy_local);
                    self.header_timeout().await;
                    break;
                }
                Err(NoRequest::Malformed(error)) => {
                    inc(&self.stats.downstream_cx_protocol_error);
                    inc(&self.stats.downstream_cx_destroy_local);
                    self.reject(&error).await;
                    break;
                }
            };
            served += 1;
            let last = self
                .hcm
                .max_requests_per_connection
                .is_some_and(|max| served >= max);
            if last {
                inc(&self.stats.downstream_cx_max_requests_reached);
            }
            match stream::serve(self, request, last).await {
                Next::KeepAlive if !last => {}
                Next::KeepAlive | Next::Close => {
                    inc(&self.stats.downstream_cx_destroy_local);
                    break;
                }
                Next::Upgrade {
                    upstream,
                    buffer_limit,
                } => {
                    return Ended::Upgrade {
                        upstream,
                        buffer_limit,
                    }
                }
            }
        }
        Ended::Closed
    }

    /// Reads until a complete request head is buffered: idle timeout before its first byte,
    /// `request_headers_timeout` from its first byte. While draining, a connection that
    /// served a request closes once idle; a `first` one (accepted during a graceful drain)
    /// still gets its request answered, with `connection: close`, as in Envoy.
    async fn next_request(&mut self, first: bool) -> Result<ParsedRequest, NoRequest> {
        let timeouts = &self.hcm.timeouts;
        let idle_deadline = deadline(timeouts.idle);
        self.conn.release_idle_buffer();
        if !first && self.drain.is_draining() && self.conn.buf.is_empty() {
            return Err(NoRequest::Closed); // draining: no new request on this connection
        }
        let mut headers_deadline = None;
        loop {
            if !self.conn.buf.is_empty() {
                match http1::parse_request(&mut self.conn.buf, &self.limits) {
                    Ok(Some(request)) => return Ok(request),
                    Ok(None) => {}
                    Err(error) => return Err(NoRequest::Malformed(error)),
                }
                if headers_deadline.is_none() {
                    headers_deadline = Some(deadline(timeouts.request_headers));
                }
            }
            let until = match headers_deadline {
                None => idle_deadline,
                Some(headers) => earliest(headers, deadline(timeouts.request)),
            };
            // An idle connection (nothing of a next request yet) closes when draining starts.
            let read = match headers_deadline {
                None if !first => {
                    let drain = self.drain;
                    let drained = async {
                        drain.started().await;
                        Err(IoFailure::Broken)
                    };
                    future::or(self.conn.fill_until(until), drained).await
                }
                _ => self.conn.fill_until(until).await,
            };
            match read {
                Ok(0) if self.conn.buf.is_empty() => return Err(NoRequest::Closed),
                Ok(0) | Err(IoFailure::Broken) => return Err(NoRequest::Closed),
                Ok(n) => {
                    add(&self.stats.downstream_cx_rx_bytes_total, n as u64);
                }
                Err(IoFailure::TimedOut) if headers_deadline.is_some() => {
                    return Err(NoRequest::HeadersTimeout)
                }
                Err(IoFailure::TimedOut) => return Err(NoRequest::IdleTimeout),
            }
        }
    }

    /// Answers a client that did not finish its request head in `request_headers_timeout`.
    async fn header_timeout(&mut self) {
        let reply = LocalReply::new(408, "request header timeout");
        let mut out = Vec::new();
        respond::encode_local_reply(self.hcm, &self.ctx.date, &reply, false, false, &mut out);
        let _ = self.conn.write_all(&out).await;
    }

    /// Answers a request the codec rejected (and logs it, with what is known: nothing of the
    /// request), then the connection closes.
    async fn reject(&mut self, error: &http1::RequestError) {
        let mut exchange = Exchange::start();
        exchange.status = error.status();
        exchange.details = error.details();
        exchange.flags.set(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
        // Envoy's body for codec errors is the reason phrase; a missing Host is caught after
        // the codec and answered without a body.
        let body = match error {
            http1::RequestError::MissingHost => "",
            _ => http1::reason_phrase(error.status()),
        };
        let reply = LocalReply::new(error.status(), body);
        let mut out = Vec::new();
        respond::encode_local_reply(self.hcm, &self.ctx.date, &reply, false, false, &mut out);
        let _ = self.conn.write_all(&out).await;
        exchange.bytes_sent = reply.body.len() as u64;
        if !self.hcm.access_logs.is_empty() {
            let unparsed = RequestHead {
                method: Bytes::new(),
                path: Bytes::new(),
                version: Version::Http11,
                headers: Headers::default(),
            };
            log::write(self, &unparsed, &exchange);
        }
    }
}
