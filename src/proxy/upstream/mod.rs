//! Proxy layer: an upstream stream — one request/response exchange with a host as the router
//! drives it, whatever protocol carries it (a pooled HTTP/1 connection, or a stream of a
//! multiplexed HTTP/2 connection):
//! send the request head and body, receive the response head, then stream the response body,
//! after which the connection goes back to its pool by itself.
mod http1;
mod http2;

use std::{rc::Rc, time::Instant};

use bytes::Bytes;
use model::{
    stats::{inc, record_duration, ClusterCells},
    tls_info::{Negotiated, UriSans},
};

use self::http1::Http1Stream;
use super::{
    cluster_manager::{ActiveHost, ShardCluster},
    pool::{self, Acquire, UpstreamConn},
    router::deadline::{Deadlines, Expiry},
};
use crate::{
    context::ShardContext,
    protocol::http1::{Framing, ResponseError},
    proxy::open_as::OpenAs,
    stream::{
        body::{BodyFailure, RequestBody},
        headers::{Headers, RequestHead, ResponseHead},
    },
};
pub use http1::RESPONSE_LIMITS;
pub use http2::{Http2Pool, Http2Stream};

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
    Protocol(ResponseError),
    Overflow,
    Downstream(BodyFailure),
}

/// How the request goes out: what the router decided besides the head.
pub struct Outgoing<'r> {
    pub head: &'r RequestHead,
    /// How the body is delimited (as it came from the client).
    pub framing: &'r Framing,
    /// Request trailers may go upstream.
    pub trailers: bool,
    pub is_head_request: bool,
}

/// A response head from upstream.
pub struct UpstreamHead {
    pub head: ResponseHead,
    /// How its body is delimited.
    pub framing: Framing,
    /// On a 101, the protocol the upstream switched to.
    pub upgrade: Option<Bytes>,
    /// The upstream answered before the request body was sent in full: the client's body was
    /// not read to its end.
    pub early: bool,
}

/// One exchange with a host. Made once per try and moved into the response body: boxing the
/// HTTP/1 variant would cost an allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum UpstreamStream {
    Http1(Http1Stream),
    Http2(Http2Stream),
}

impl UpstreamStream {
    /// A stream to `host` (`http2`: on an HTTP/2 connection; `None`: as the host's ALPN
    /// answer says): on a pooled connection opened `as_`, or a new one within the cluster's
    /// breakers.
    pub async fn open(
        ctx: &ShardContext,
        cluster: &ShardCluster,
        host: &ActiveHost,
        as_: OpenAs<'_>,
        deadline: Option<Instant>,
        http2: Option<bool>,
    ) -> Result<Self, Acquire> {
        let host = host.host();
        let http2 = match http2.or(host.pool().negotiated_http2.get()) {
            Some(http2) => http2,
            None => {
                // The shard's first connection to the host tells what its ALPN picks: kept
                // for HTTP/1.1; for `h2` it is closed and the HTTP/2 pool opens its own.
                let conn = pool::acquire(ctx, cluster, host, as_, deadline).await?;
                let http2 = conn.negotiated_http2();
                host.pool().negotiated_http2.set(Some(http2));
                if !http2 {
                    return Ok(UpstreamStream::Http1(Http1Stream::new(conn)));
                }
                true
            }
        };
        if http2 {
            let stream = Http2Stream::open(ctx, cluster, host, as_, deadline).await?;
            return Ok(UpstreamStream::Http2(stream));
        }
        let conn = pool::acquire(ctx, cluster, host, as_, deadline).await?;
        Ok(UpstreamStream::Http1(Http1Stream::new(conn)))
    }

    /// Sends the request (the body as the client sends it), then waits for the response head
    /// (interim 100s skipped) while watching for the client going away.
    pub async fn exchange(
        &mut self,
        request: &Outgoing<'_>,
        body: &mut RequestBody<'_>,
        deadlines: &Deadlines,
        per_try: Option<Instant>,
        cells: &ClusterCells,
    ) -> Result<UpstreamHead, TryFailure> {
        match self {
            UpstreamStream::Http1(s) => s.exchange(request, body, deadlines, per_try, cells).await,
            UpstreamStream::Http2(s) => s.exchange(request, body, deadlines, per_try, cells).await,
        }
    }

    /// What the connection's TLS negotiated (TLS clusters).
    pub fn negotiated(&self) -> Option<Negotiated> {
        match self {
            UpstreamStream::Http1(s) => s.negotiated(),
            UpstreamStream::Http2(s) => s.negotiated(),
        }
    }

    /// The connection's certificates' first URI SANs (TLS clusters).
    pub fn uri_sans(&self) -> Option<Rc<UriSans>> {
        match self {
            UpstreamStream::Http1(s) => s.uri_sans(),
            UpstreamStream::Http2(s) => s.uri_sans(),
        }
    }
}

/// Why an upstream response body ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFailure {
    /// Malformed body framing.
    Protocol,
    /// The upstream closed or reset mid-body.
    Reset,
    TimedOut(Expiry),
}

/// A response body on its way from upstream; once read to its end the connection returns to
/// its host's pool (when it may carry another request).
pub struct ResponseBody {
    /// `None` once the body has ended.
    stream: Option<UpstreamStream>,
    host: ActiveHost,
    cluster: Rc<ShardCluster>,
    shard: usize,
    /// The connection may carry another request after this response.
    reusable: bool,
    deadlines: Deadlines,
    try_started: Instant,
    trailers: Option<Headers>,
}

impl ResponseBody {
    /// The body of the response whose head `stream` just received (`early`: before the
    /// request was sent in full), read within `deadlines`.
    pub fn new(
        stream: UpstreamStream,
        early: bool,
        host: ActiveHost,
        cluster: Rc<ShardCluster>,
        shard: usize,
        deadlines: Deadlines,
        try_started: Instant,
    ) -> Self {
        // An HTTP/2 connection is shared: only an HTTP/1 one is handed back.
        let reusable = !early
            && match &stream {
                UpstreamStream::Http1(s) => s.keep_alive(),
                UpstreamStream::Http2(_) => false,
            };
        Self {
            stream: Some(stream),
            host,
            cluster,
            shard,
            reusable,
            deadlines,
            try_started,
            trailers: None,
        }
    }

    fn cells(&self) -> &ClusterCells {
        self.cluster.config.stats.shard(self.shard)
    }

    /// The next chunk, `None` at the end of the body (then [`Self::trailers`]). A failure
    /// ends the body (and is counted in the cluster's stats).
    pub async fn next(&mut self) -> Result<Option<Bytes>, ResponseFailure> {
        let next = self.deadlines.next(None, false);
        let read = match &mut self.stream {
            None => return Ok(None),
            Some(UpstreamStream::Http1(s)) => s.next_chunk(next).await,
            Some(UpstreamStream::Http2(s)) => s.next_chunk(next).await,
        };
        match read {
            Ok(Some(chunk)) => Ok(Some(chunk)),
            Ok(None) => {
                self.finished();
                match self.stream.take() {
                    Some(UpstreamStream::Http1(s)) => {
                        let (conn, trailers) = s.finish();
                        self.trailers = trailers;
                        if self.reusable {
                            pool::park(self.host.host(), conn, &self.cluster.config.http);
                        }
                    }
                    Some(UpstreamStream::Http2(mut s)) => self.trailers = s.take_trailers(),
                    None => unreachable!("read above"),
                }
                Ok(None)
            }
            Err(failure) => {
                let cells = self.cells();
                match failure {
                    ResponseFailure::Protocol => inc(&cells.upstream_cx_protocol_error),
                    ResponseFailure::Reset => inc(&cells.upstream_rq_rx_reset),
                    ResponseFailure::TimedOut(Expiry::StreamIdle) => {}
                    ResponseFailure::TimedOut(_) => inc(&cells.upstream_rq_timeout),
                }
                self.stream = None;
                self.finished();
                Err(failure)
            }
        }
    }

    /// Counts the exchange as completed.
    fn finished(&self) {
        let cells = self.cells();
        inc(&cells.upstream_rq_completed);
        record_duration(&cells.upstream_rq_time, self.try_started.elapsed());
    }

    /// The response's trailers, once the body has ended.
    pub fn trailers(&mut self) -> Option<Headers> {
        self.trailers.take()
    }

    /// What the connection's TLS negotiated (TLS clusters).
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.stream.as_ref().and_then(UpstreamStream::negotiated)
    }

    /// The connection's certificates' first URI SANs (TLS clusters).
    pub fn uri_sans(&self) -> Option<Rc<UriSans>> {
        self.stream.as_ref().and_then(UpstreamStream::uri_sans)
    }

    /// The connection, for a 101 upgrade: from now on it carries the upgraded protocol.
    pub fn into_upgrade(mut self) -> Option<UpstreamConn> {
        match self.stream.take()? {
            UpstreamStream::Http1(s) => Some(s.finish().0),
            UpstreamStream::Http2(_) => None,
        }
    }
}
