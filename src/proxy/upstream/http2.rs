//! Upstream stream over HTTP/2: requests multiplexed on a host's HTTP/2 connections (opened as
//! needed within the cluster's breakers, each driven by its own task on the shard, used up to
//! the peer's concurrent-stream limit), the request body sent as the stream's window allows
//! while the response is awaited, then the response read off the stream; or a stream opened as
//! a tunnel (tcp_proxy's CONNECT), its DATA frames the tunnel's bytes.
use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_lite::future;
use h2::{client::SendRequest, Reason, RecvStream, SendStream};
use http::Request;
use model::{
    stats::{inc, ClusterCells},
    tls_info::{Negotiated, UriSans},
};

use super::{Outgoing, ResponseFailure, TryFailure, UpstreamHead};
use crate::proxy::open_as::{OpenAs, OpenedAs};
use crate::{
    context::ShardContext,
    net::tokio_io::TokioIo,
    protocol::{
        http1::{Framing, ResponseError},
        http2::{self, keepalive, tunnel::Tunnel, Received},
    },
    proxy::{
        cluster_manager::{Host, ShardCluster},
        pool::{self, Acquire, Lease},
        router::deadline::{Deadlines, Expiry},
    },
    rt::{self, timer},
    stream::{
        body::{BodyFailure, RequestBody},
        headers::{Headers, RequestHead, ResponseHead},
    },
};

/// One HTTP/2 connection to a host.
pub struct Http2Conn {
    send: SendRequest<Bytes>,
    /// Streams open on it now.
    active: Cell<u32>,
    /// Streams it has carried.
    requests: Cell<u32>,
    /// Ended, or going away (GOAWAY): no new stream goes on it.
    closed: Cell<bool>,
    /// When its last stream ended (or it opened).
    idle_since: Cell<Instant>,
    opened_as: OpenedAs,
    negotiated: Option<Negotiated>,
    /// Its TLS certificates' first URI SANs (Istio's client principals).
    uri_sans: Option<Rc<UriSans>>,
    lease: Lease,
}

/// A host's HTTP/2 connections.
#[derive(Default)]
pub struct Http2Pool {
    conns: RefCell<Vec<Rc<Http2Conn>>>,
}

impl Http2Pool {
    /// A connection opened as `wanted` that can take one more stream.
    fn with_room(&self, wanted: OpenAs<'_>, max_requests: Option<u32>) -> Option<Rc<Http2Conn>> {
        self.conns
            .borrow()
            .iter()
            .find(|c| {
                !c.closed.get()
                    && c.opened_as.serves(wanted)
                    && (c.active.get() as usize) < c.send.current_max_send_streams()
                    && max_requests.is_none_or(|max| c.requests.get() < max)
            })
            .cloned()
    }
}

/// A stream of an HTTP/2 connection.
pub struct Http2Stream {
    conn: Rc<Http2Conn>,
    recv: Option<RecvStream>,
    /// Window taken by the last chunk handed out, given back when the next is asked for.
    unreleased: usize,
    trailers: Option<Headers>,
}

impl Http2Stream {
    /// A stream on one of `host`'s HTTP/2 connections (opened `as_`), or on a new one.
    pub async fn open(
        ctx: &ShardContext,
        cluster: &ShardCluster,
        host: &Rc<Host>,
        as_: OpenAs<'_>,
        deadline: Option<Instant>,
    ) -> Result<Self, Acquire> {
        let options = &cluster.config.http;
        let max_requests = options.max_requests_per_connection;
        let reuse = || host.pool().http2.with_room(as_, max_requests);
        let open = async |slot| {
            let transport = pool::open_transport(ctx, cluster, host, as_).await?;
            let negotiated = transport.tls().map(|t| Negotiated::of(t.connection()));
            let uri_sans = transport.tls().map(|t| t.uri_sans());
            let lease = Lease::new(slot, cluster.config.stats.clone(), ctx.id, true);
            let h2 = &options.http2;
            let mut builder = h2::client::Builder::new();
            builder
                .initial_window_size(h2.initial_stream_window_size)
                .initial_connection_window_size(h2.initial_connection_window_size)
                .header_table_size(h2.hpack_table_size)
                .max_concurrent_streams(h2.max_concurrent_streams)
                .max_send_buffer_size(cluster.config.buffer_limit)
                .enable_push(false);
            let io = TokioIo::new(crate::net::buffered::Buffered::new(transport));
            let handshake = builder.handshake::<_, Bytes>(io);
            let (send, mut connection) = match handshake.await {
                Ok(pair) => pair,
                Err(_) => {
                    inc(&lease.cells().upstream_cx_protocol_error);
                    return Err(Acquire::Failed);
                }
            };
            let conn = Rc::new(Http2Conn {
                send,
                active: Cell::new(0),
                requests: Cell::new(0),
                closed: Cell::new(false),
                idle_since: Cell::new(Instant::now()),
                opened_as: as_.kept(),
                negotiated,
                uri_sans,
                lease,
            });
            host.pool().http2.conns.borrow_mut().push(conn.clone());
            let idle = options.idle_timeout;
            let keepalive = keepalive::peer_unresponsive(connection.ping_pong(), h2.keepalive);
            let driven = drive(host.clone(), conn.clone(), connection, idle, keepalive);
            rt::spawn_local(driven).detach();
            Ok(conn)
        };
        let conn = pool::within_breakers(ctx, cluster, deadline, reuse, open).await?;
        conn.active.set(conn.active.get() + 1);
        conn.requests.set(conn.requests.get() + 1);
        Ok(Self {
            conn,
            recv: None,
            unreleased: 0,
            trailers: None,
        })
    }

    pub fn negotiated(&self) -> Option<Negotiated> {
        self.conn.negotiated
    }

    pub fn uri_sans(&self) -> Option<Rc<UriSans>> {
        self.conn.uri_sans.clone()
    }

    /// Sends the request head and body (the body as the stream's window allows) while
    /// waiting for the response head; a body still coming when the head arrives keeps going
    /// up from a task of its own when it can (an HTTP/2 client's, as gRPC streams need).
    pub async fn exchange(
        &mut self,
        request: &Outgoing<'_>,
        body: &mut RequestBody<'_>,
        deadlines: &Deadlines,
        per_try: Option<Instant>,
        cells: &ClusterCells,
    ) -> Result<UpstreamHead, TryFailure> {
        let reused = self.conn.requests.get() > 1;
        let head = self.request(request.head, request.framing)?;
        let ready = deadlines.next(per_try, !body.is_done());
        let mut sender = self.sender(ready, !body.is_done()).await?;
        let replay: Vec<Bytes> = body.replay().unwrap_or_default().to_vec();
        let nothing_to_send = body.is_done() && replay.is_empty() && body.trailers.is_none();
        let (response, mut send) = match sender.send_request(head, nothing_to_send) {
            Ok(pair) => pair,
            Err(_) => {
                self.conn.closed.set(true);
                return Err(unsent());
            }
        };
        let mut early = false;
        let response = {
            let sending = async {
                if !nothing_to_send {
                    send_body(
                        &mut send,
                        replay,
                        body,
                        request.trailers,
                        deadlines,
                        per_try,
                    )
                    .await?;
                }
                std::future::pending::<Result<http::Response<RecvStream>, TryFailure>>().await
            };
            let wait = deadlines.next(per_try, false);
            let answered = async {
                match within(wait, response).await {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(error)) => {
                        inc(&cells.upstream_rq_rx_reset);
                        Err(reset(&error, reused))
                    }
                    Err(expiry) => Err(TryFailure::TimedOut {
                        expiry,
                        receiving: false,
                    }),
                }
            };
            future::or(answered, sending).await?
        };
        if !body.is_done() {
            early = true;
            if let Some(rest) = body.detach() {
                let trailers = request.trailers;
                rt::spawn_local(pump(rest, send, trailers)).detach();
            }
        }
        let (head, framing) = http2::response_head(&response);
        self.recv = Some(response.into_body());
        Ok(UpstreamHead {
            head,
            framing,
            upgrade: None,
            early,
        })
    }

    /// Opens a tunnel on the stream: sends `head` (a CONNECT, or a POST whose body is the
    /// tunnel) without ending the stream, then waits for the response head. The head, and
    /// both directions of the stream as a byte stream (reset when dropped before both ended).
    pub async fn tunnel(
        &mut self,
        head: &RequestHead,
    ) -> Result<(ResponseHead, Tunnel), TryFailure> {
        let request = self.request(head, &Framing::Chunked)?;
        let mut sender = self.sender(None, false).await?;
        let Ok((response, send)) = sender.send_request(request, false) else {
            self.conn.closed.set(true);
            return Err(unsent());
        };
        match response.await {
            Ok(response) => {
                let (head, _) = http2::response_head(&response);
                Ok((head, Tunnel::new(send, response.into_body())))
            }
            Err(error) => Err(reset(&error, self.conn.requests.get() > 1)),
        }
    }

    /// `head` as this connection's HTTP/2 request (`:scheme` as its transport).
    fn request(&self, head: &RequestHead, framing: &Framing) -> Result<Request<()>, TryFailure> {
        let scheme = match self.conn.negotiated {
            Some(_) => "https",
            None => "http",
        };
        http2::request(head, scheme, framing)
            .map_err(|_| TryFailure::Protocol(ResponseError::InvalidHeaderValue))
    }

    /// The connection's sender once it can take a new stream (by `deadline`; `receiving`:
    /// the request is still arriving, for the timeout's kind).
    async fn sender(
        &self,
        deadline: Option<(Instant, Expiry)>,
        receiving: bool,
    ) -> Result<SendRequest<Bytes>, TryFailure> {
        let mut sender = self.conn.send.clone();
        match within(deadline, poll_fn(|cx| sender.poll_ready(cx))).await {
            Ok(Ok(())) => Ok(sender),
            Ok(Err(_)) => {
                self.conn.closed.set(true);
                Err(unsent())
            }
            Err(expiry) => Err(TryFailure::TimedOut { expiry, receiving }),
        }
    }

    /// The next chunk of the response body; `None` at its end (then its trailers are kept).
    pub async fn next_chunk(
        &mut self,
        deadline: Option<(Instant, Expiry)>,
    ) -> Result<Option<Bytes>, ResponseFailure> {
        let recv = self.recv.as_mut().expect("a response head was read");
        let received = http2::receive(recv, &mut self.unreleased);
        match within(deadline, received).await {
            Err(expiry) => Err(ResponseFailure::TimedOut(expiry)),
            Ok(Err(_)) => Err(ResponseFailure::Reset),
            Ok(Ok(Received::Data(chunk))) => Ok(Some(chunk)),
            Ok(Ok(Received::End(trailers))) => {
                self.trailers = trailers;
                Ok(None)
            }
        }
    }

    /// The response's trailers, once its body has ended.
    pub fn take_trailers(&mut self) -> Option<Headers> {
        self.trailers.take()
    }
}

impl Drop for Http2Stream {
    fn drop(&mut self) {
        let active = self.conn.active.get() - 1;
        self.conn.active.set(active);
        if active == 0 {
            self.conn.idle_since.set(Instant::now());
        }
        self.conn.lease.breakers().wake_one();
    }
}

/// A stream refused before it was sent (GOAWAY, stream limit): the router may resend it.
fn unsent() -> TryFailure {
    TryFailure::Reset {
        reused: true,
        sent_nothing_back: true,
    }
}

/// What a failed response wait means to the router: a stream the upstream refused before
/// reading it (REFUSED_STREAM, GOAWAY) may be resent; anything else is a reset.
fn reset(error: &h2::Error, reused: bool) -> TryFailure {
    let refused = error.reason() == Some(Reason::REFUSED_STREAM) || error.is_go_away();
    TryFailure::Reset {
        reused: reused || refused,
        sent_nothing_back: true,
    }
}

/// The request body: what was read already, then the rest as it arrives, then trailers.
async fn send_body(
    send: &mut SendStream<Bytes>,
    replay: Vec<Bytes>,
    body: &mut RequestBody<'_>,
    trailers: bool,
    deadlines: &Deadlines,
    per_try: Option<Instant>,
) -> Result<(), TryFailure> {
    let broken = |_| TryFailure::Reset {
        reused: false,
        sent_nothing_back: true,
    };
    for chunk in replay {
        http2::send_all(send, chunk, false).await.map_err(broken)?;
    }
    loop {
        let next = deadlines.next(per_try, true);
        match body.next(next.map(|d| d.0)).await {
            Ok(Some(chunk)) => {
                http2::send_all(send, chunk, false).await.map_err(broken)?;
            }
            Ok(None) => break,
            Err(BodyFailure::TimedOut) => {
                return Err(TryFailure::TimedOut {
                    expiry: next.map_or(Expiry::Route, |d| d.1),
                    receiving: true,
                })
            }
            Err(other) => {
                send.send_reset(Reason::CANCEL);
                return Err(TryFailure::Downstream(other));
            }
        }
    }
    end_stream(send, body.trailers.as_ref().filter(|_| trailers)).map_err(broken)
}

/// Ends the request stream, with trailers when there are some.
fn end_stream(send: &mut SendStream<Bytes>, trailers: Option<&Headers>) -> Result<(), h2::Error> {
    match trailers {
        Some(trailers) => send.send_trailers(http2::header_map(trailers)),
        None => send.send_data(Bytes::new(), true),
    }
}

/// Sends the rest of a request body that was still arriving when the response came (an
/// HTTP/2 client's own task: both directions of a gRPC stream flow at once).
async fn pump(mut body: RequestBody<'static>, mut send: SendStream<Bytes>, trailers: bool) {
    loop {
        match body.next(None).await {
            Ok(Some(chunk)) => {
                if http2::send_all(&mut send, chunk, false).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = end_stream(&mut send, body.trailers.as_ref().filter(|_| trailers));
                return;
            }
            Err(_) => {
                send.send_reset(Reason::CANCEL);
                return;
            }
        }
    }
}

/// How often a connection to a host that left its cluster looks whether its last stream ended.
const RETIRED_RECHECK: Duration = Duration::from_secs(1);

/// Runs a connection until it ends, or until it has carried no stream for `idle` (then it
/// is closed, as Envoy's upstream idle timeout does) or carries none after its host left its
/// cluster; then it leaves its host's pool.
async fn drive(
    host: Rc<Host>,
    conn: Rc<Http2Conn>,
    connection: h2::client::Connection<TokioIo, Bytes>,
    idle: Option<Duration>,
    unresponsive: impl std::future::Future<Output = ()>,
) {
    let ended = async {
        let _ = connection.await;
    };
    let unresponsive = async {
        unresponsive.await;
        inc(&conn.lease.cells().upstream_cx_destroy_local);
    };
    let idled = async {
        loop {
            let quiet = conn.active.get() == 0;
            let retired = host.pool().retired.is_draining();
            if quiet && retired {
                return;
            }
            if quiet && idle.is_some_and(|idle| conn.idle_since.get() + idle <= Instant::now()) {
                inc(&conn.lease.cells().upstream_cx_idle_timeout);
                return;
            }
            if retired {
                // A retired host's busy connection: looked at again until its streams end.
                timer::sleep_until(Instant::now() + RETIRED_RECHECK).await;
                continue;
            }
            // Checked again when the idle period ends, or (busy) an idle period later at the
            // earliest, or when the host leaves its cluster.
            let recheck = match idle {
                Some(idle) if quiet => Some(conn.idle_since.get() + idle),
                idle => idle.map(|idle| Instant::now() + idle),
            };
            let rechecked = async {
                match recheck {
                    Some(at) => timer::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            future::or(rechecked, host.pool().retired.started()).await;
        }
    };
    future::or(ended, future::or(idled, unresponsive)).await;
    conn.closed.set(true);
    host.pool()
        .http2
        .conns
        .borrow_mut()
        .retain(|c| !Rc::ptr_eq(c, &conn));
    conn.lease.breakers().wake_one();
}

/// Runs `work` until `deadline`; the deadline's kind when it expires first.
async fn within<T>(
    deadline: Option<(Instant, Expiry)>,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Expiry> {
    let expiry = deadline.map_or(Expiry::Route, |d| d.1);
    timer::within(deadline.map(|d| d.0), work)
        .await
        .ok_or(expiry)
}
