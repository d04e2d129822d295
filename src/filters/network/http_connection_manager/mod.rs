//! `envoy.filters.network.http_connection_manager`: a downstream connection's streams, each
//! through admission, filters and the router (`stream`), answered through the codec that
//! carries it (`downstream`). The codec is the configured one, or under `AUTO` HTTP/2 when
//! TLS negotiated `h2` or the client opens with the HTTP/2 preface, else HTTP/1.1; their
//! connection loops are `http1` and `http2`.
mod downstream;
mod forwarding;
mod http1;
mod http2;
mod istio_stats;
mod local_reply;
mod log;
mod path;
mod respond;
mod routes;
mod routing;
mod stream;
mod tunnel;
mod upstream_response;

use std::{cell::OnceCell, net::SocketAddr, rc::Rc, sync::Arc, time::Instant};

use bytes::Bytes;
use futures_lite::future;
use model::{
    http::{Codec, ForwardClientCert, HttpConnectionManager},
    route::ClientCertificateState,
    stats::{dec, inc, HttpCells},
    tls_info::DownstreamTls,
    Listener,
};
pub use routes::RdsTables;
use routes::RouteSource;

use crate::{
    context::ShardContext,
    filters::network::filter_state::FilterState,
    net::{
        buffered::{deadline, Buffered},
        connection::Accepted,
        drain::DrainSignal,
    },
    protocol::http1::Limits,
    proxy::pool::UpstreamConn,
    stream::Downstream,
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
    pub stats: &'a HttpCells,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The original destination the `original_dst` listener filter restored, or the tunnel
    /// address of an internal connection (an `ORIGINAL_DST` cluster's host; without one,
    /// such a cluster has none, as in Envoy).
    pub destination: Option<SocketAddr>,
    pub limits: Limits,
    pub connection_id: u64,
    /// The server name (SNI) the tls_inspector read; empty without one.
    pub requested_server_name: &'a str,
    /// What `tls_context` route matches read.
    pub client_certificate: ClientCertificateState,
    /// `https` on a TLS connection, else `http`.
    pub scheme: &'static str,
    /// The connection's TLS as access logs and XFCC read it (when they do).
    tls: Option<DownstreamTls>,
    /// What the chain's filters before this one learned.
    pub filter_state: &'a FilterState,
    /// This connection's own `x-forwarded-client-cert` element, made on first use.
    xfcc: OnceCell<Bytes>,
}

impl Connection<'_> {
    /// The connection's TLS, when access logs or XFCC read it; `None` on plaintext.
    pub fn tls(&self) -> Option<&DownstreamTls> {
        self.tls.as_ref()
    }

    /// What filters read of this connection.
    pub fn downstream(&self) -> Downstream<'_> {
        Downstream {
            remote: self.remote,
            local: self.local,
            requested_server_name: self.requested_server_name,
            tls: self.tls(),
            scheme: self.scheme,
        }
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
    let filter_state = accepted.filter_state;
    let stats = hcm.stats.shard(ctx.id);
    inc(&stats.downstream_cx_total);
    inc(&stats.downstream_cx_active);
    let opened = Instant::now();
    let remote = stream.peer_addr().unwrap_or(listener.address);
    // The local address costs a syscall; only access logs and connection-reading filters
    // (RBAC, istio_authn, ext_authz) read it.
    let local = match (
        accepted.restored,
        hcm.access_logs.is_empty() && !hcm.filters_read_connection(),
    ) {
        (Some(restored), _) => restored,
        (None, true) => listener.address,
        (None, false) => stream.local_addr().unwrap_or(listener.address),
    };
    // An internal connection's tunnel address first, as Envoy's ORIGINAL_DST reads it.
    let destination = filter_state.tunnel_destination.or(accepted.restored);
    let tls = stream.tls();
    let presented = tls.is_some_and(|t| t.connection().peer_certificates().is_some());
    // This proxy's XFCC element is made only by the modes that set it.
    let sets_xfcc = matches!(
        hcm.forward_client_cert,
        ForwardClientCert::AppendForward | ForwardClientCert::SanitizeSet
    );
    let reads_tls =
        hcm.logs_read_tls() || hcm.filters_read_connection() || (presented && sets_xfcc);
    let connection = Connection {
        ctx,
        listener,
        drain,
        hcm,
        routes: ctx.routes.source(&hcm.routes),
        stats,
        remote,
        local,
        destination,
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
        scheme: if tls.is_some() { "https" } else { "http" },
        tls: tls.filter(|_| reads_tls).map(|t| t.info()),
        filter_state: &filter_state,
        xfcc: OnceCell::new(),
    };
    let negotiated_h2 = tls.is_some_and(|t| t.connection().alpn_protocol() == Some(b"h2"));
    let mut conn = Buffered::new(stream);
    let codec = match hcm.codec {
        Codec::Http1 => Codec::Http1,
        Codec::Http2 => Codec::Http2,
        Codec::Auto if negotiated_h2 => Codec::Http2,
        Codec::Auto => sniff(&mut conn, hcm).await,
    };
    let (total, active) = match codec {
        Codec::Http2 => (
            &stats.downstream_cx_http2_total,
            &stats.downstream_cx_http2_active,
        ),
        _ => (
            &stats.downstream_cx_http1_total,
            &stats.downstream_cx_http1_active,
        ),
    };
    inc(total);
    inc(active);
    // At the end of the drain time a request still in progress ends with its connection.
    let drained = async {
        drain.closed().await;
        Ended::DrainClosed
    };
    let ended = match codec {
        Codec::Http2 => future::or(http2::serve(&connection, conn), drained).await,
        _ => {
            let served = future::or(http1::serve(&connection, &mut conn), drained).await;
            if let Ended::Upgrade {
                upstream,
                buffer_limit,
            } = served
            {
                upgraded(&connection, conn, upstream, buffer_limit).await;
                Ended::Closed
            } else {
                served
            }
        }
    };
    if let Ended::DrainClosed = ended {
        inc(&stats.downstream_cx_destroy_local);
    }
    model::stats::record_duration(&stats.downstream_cx_length_ms, opened.elapsed());
    dec(active);
    dec(&stats.downstream_cx_active);
    inc(&stats.downstream_cx_destroy);
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `AUTO` on a connection without ALPN: HTTP/2 when its first bytes are the HTTP/2 preface,
/// read until they are all there or one differs (what is read stays for the codec).
async fn sniff(conn: &mut Buffered, hcm: &HttpConnectionManager) -> Codec {
    let deadline = deadline(hcm.timeouts.idle);
    loop {
        let seen = conn.buf.len().min(PREFACE.len());
        if conn.buf[..seen] != PREFACE[..seen] {
            return Codec::Http1;
        }
        if seen == PREFACE.len() {
            return Codec::Http2;
        }
        // A close or a timeout is the HTTP/1 loop's to report.
        if !matches!(conn.fill_until(deadline).await, Ok(n) if n > 0) {
            return Codec::Http1;
        }
    }
}

/// Relays an upgraded connection (a 101, or a terminated CONNECT's 200) until both sides
/// close: bytes already buffered on either side go first.
async fn upgraded(
    c: &Connection<'_>,
    mut downstream: Buffered,
    upstream: UpstreamConn,
    upstream_limit: usize,
) {
    let early = std::mem::take(&mut downstream.buf);
    tunnel::relay_tunnel(c, downstream.io, &early, upstream, upstream_limit, None).await;
}
