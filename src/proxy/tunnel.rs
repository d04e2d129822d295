//! Proxy layer: a TCP connection's tunnel to an upstream host through HTTP (tcp_proxy's
//! `tunneling_config`): a CONNECT (or a POST) on a stream of one of the host's HTTP/2
//! connections, or on one of its HTTP/1.1 connections, as the cluster's protocol options say.
//! The answer Envoy accepts (HTTP/2: 200; HTTP/1.1: any 2xx) opens the tunnel; then the
//! stream's DATA frames (or the connection itself) carry the bytes.
use std::{
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use model::{
    access_log::{ConnectionRecord, Format},
    stats::inc,
    tcp_tunnel::{TunnelMethod, TunnelingConfig},
    tls_info::{Negotiated, UriSans},
};

use super::{
    cluster_manager::{ActiveHost, ShardCluster},
    open_as::OpenAs,
    pool::{Lease, UpstreamConn},
    upstream::{Http2Stream, UpstreamStream, RESPONSE_LIMITS},
};
use crate::{
    context::ShardContext,
    protocol::{
        http1::{tunnel::Http1Tunnel, Framing},
        http2::tunnel::Tunnel,
    },
    stream::{
        headers::{Headers, RequestHead, ResponseHead, Version},
        mutations::{add_to_request, Formatter},
    },
};

/// An open tunnel's byte stream.
pub enum TunnelIo {
    /// A stream's DATA frames; the stream counts as open on its connection while held.
    Http2 {
        tunnel: Tunnel,
        _stream: Http2Stream,
    },
    /// An HTTP/1.1 connection, counted in its cluster while held.
    Http1 { tunnel: Http1Tunnel, _lease: Lease },
}

/// An open tunnel, and what its connection's TLS negotiated (TLS clusters).
pub struct OpenedTunnel {
    pub io: TunnelIo,
    pub negotiated: Option<Negotiated>,
    pub uri_sans: Option<Rc<UriSans>>,
}

/// The request that opens a connection's tunnel: CONNECT to the formatted `hostname` (or a
/// POST to `post_path` with it as the authority), then `headers_to_add`, every value formatted
/// for the connection `record` describes.
pub fn request(config: &TunnelingConfig, record: &ConnectionRecord) -> RequestHead {
    let mut authority = Vec::new();
    config.hostname.render(record, &mut authority);
    let (method, path) = match &config.method {
        TunnelMethod::Connect => (Bytes::from_static(b"CONNECT"), Bytes::new()),
        TunnelMethod::Post(path) => (Bytes::from_static(b"POST"), path.clone()),
    };
    let mut headers = Headers::with_capacity(config.headers_to_add.len() + 1);
    headers.append(Bytes::from_static(b"host"), authority);
    let mut head = RequestHead {
        method,
        path,
        version: Version::Http11,
        headers,
    };
    add_to_request(&mut head, &config.headers_to_add, &OfConnection(record));
    head
}

/// Renders header values for a TCP connection (no HTTP request: `%REQ(…)%` has no value).
struct OfConnection<'a, 'r>(&'a ConnectionRecord<'r>);

impl Formatter for OfConnection<'_, '_> {
    fn render(
        &self,
        format: &Format,
        _: &RequestHead,
        _: Option<&ResponseHead>,
        out: &mut Vec<u8>,
    ) {
        format.render(self.0, out)
    }
}

/// Opens a tunnel to `host` with `request`; `None` when it was not opened (no connection, a
/// reset, or another answer), counted in the cluster's stats.
pub async fn open(
    ctx: &ShardContext,
    cluster: &ShardCluster,
    host: &ActiveHost,
    request: &RequestHead,
) -> Option<OpenedTunnel> {
    let config = &cluster.config;
    let cells = config.stats.shard(ctx.id);
    // A TCP connection has no HTTP version of its own: HTTP/2 when the options name it.
    let http2 = config.http.uses_http2(false);
    // A failed connect is counted by the pool.
    let stream = UpstreamStream::open(ctx, cluster, host, OpenAs::default(), None, http2)
        .await
        .ok()?;
    inc(&cells.upstream_rq_total);
    let (negotiated, uri_sans) = (stream.negotiated(), stream.uri_sans());
    let (status, io) = match stream {
        UpstreamStream::Http2(mut stream) => {
            let Ok((head, tunnel)) = stream.tunnel(request).await else {
                inc(&cells.upstream_rq_rx_reset);
                return None;
            };
            let opened = head.status == 200;
            (
                head.status,
                opened.then_some(TunnelIo::Http2 {
                    tunnel,
                    _stream: stream,
                }),
            )
        }
        UpstreamStream::Http1(mut stream) => {
            // A POST's body is the tunnel: chunked, as Envoy sends it.
            let post = !request.path.is_empty();
            let framing = if post {
                Framing::Chunked
            } else {
                Framing::Empty
            };
            let answer = stream.tunnel(request, &framing, cells).await.ok()?;
            let status = answer.head.status;
            let opened = (200..300).contains(&status).then(|| {
                let UpstreamConn { conn, lease, .. } = stream.finish().0;
                let tunnel = match post {
                    true => Http1Tunnel::post(conn, &answer.framing, &RESPONSE_LIMITS),
                    false => Http1Tunnel::connect(conn),
                };
                TunnelIo::Http1 {
                    tunnel,
                    _lease: lease,
                }
            });
            (status, opened)
        }
    };
    // Envoy counts the request, not its status (the tunnel is no routed request).
    if io.is_none() {
        tracing::debug!(cluster = %config.name, host = %host.address(), status, "upstream refused the tunnel");
    }
    Some(OpenedTunnel {
        io: io?,
        negotiated,
        uri_sans,
    })
}

impl AsyncRead for TunnelIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelIo::Http2 { tunnel, .. } => Pin::new(tunnel).poll_read(cx, buf),
            TunnelIo::Http1 { tunnel, .. } => Pin::new(tunnel).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelIo::Http2 { tunnel, .. } => Pin::new(tunnel).poll_write(cx, buf),
            TunnelIo::Http1 { tunnel, .. } => Pin::new(tunnel).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelIo::Http2 { tunnel, .. } => Pin::new(tunnel).poll_flush(cx),
            TunnelIo::Http1 { tunnel, .. } => Pin::new(tunnel).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelIo::Http2 { tunnel, .. } => Pin::new(tunnel).poll_close(cx),
            TunnelIo::Http1 { tunnel, .. } => Pin::new(tunnel).poll_close(cx),
        }
    }
}
