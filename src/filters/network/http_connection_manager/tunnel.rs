//! HTTP connection manager: tunnels — a CONNECT terminated here (a TCP connection to a host of
//! the route's cluster, then `200` to the client), and the byte relay every tunnel ends in (an
//! upgraded HTTP/1 connection, or an HTTP/2 stream's DATA frames).
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};
use h2::Reason;
use model::{
    access_log::ResponseFlags,
    stats::{add, dec, inc, HttpCells},
};

use super::{
    routing::Chosen,
    stream::{local, Exchange, Next, Stream},
    upstream_response::{open_tunnel, respond_with, upstream_head, Relay},
    Connection,
};
use crate::{
    filters::network::filter_state::{FilterState, SharedState},
    net::{
        buffered::Buffered,
        relay::{relay, RelayEnd, RelayLimits, RelayObserver},
    },
    protocol::http2::tunnel::Tunnel,
    proxy::{
        cluster_manager::ActiveHost,
        lb::PickKey,
        open_as::OpenAs,
        pool::{self, open_transport, Acquire, Lease, UpstreamConn},
        router::{overflow_reply, reset_reply},
    },
    stream::{
        headers::{Headers, RequestHead, ResponseHead},
        LocalReply, StreamContext,
    },
};

/// What a terminated CONNECT's connection carries: the downstream connection's shared state,
/// and what Istio's `connect_authority` and `connect_baggage` found on the request.
fn tunnel_shared(state: &FilterState, cx: &StreamContext<'_>) -> SharedState {
    SharedState {
        authority: cx.notes.tunnel_authority(),
        downstream_peer: cx.notes.downstream_peer(),
        ..state.shared()
    }
}

/// Terminates a CONNECT on a route whose CONNECT upgrade has a `connect_config`: connects to
/// a host of the cluster (its transport socket, within its breakers), answers `200`, then
/// relays; a failed connect is answered `503` as Envoy answers it.
pub(super) async fn terminate(
    s: &mut Stream<'_, '_>,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    chosen: &Chosen<'_>,
    relay: Relay<'_>,
    hash: Option<u64>,
    exchange: &mut Exchange,
) -> Next {
    let c = s.c;
    let ctx = c.ctx;
    let cluster = &chosen.cluster;
    let config = &cluster.config;
    let cells = config.stats.shard(ctx.id);
    let try_started = Instant::now();
    // Held for the tunnel's life: a CONNECT is a request of its cluster (`max_requests`).
    let request_slot = cluster.breakers.request();
    let opened = match cluster.pick(PickKey { hash, attempt: 0 }, chosen.metadata_match) {
        _ if request_slot.is_none() => {
            inc(&cells.upstream_rq_pending_overflow);
            Err(overflow_reply().flagged(ResponseFlags::UPSTREAM_OVERFLOW))
        }
        None => {
            inc(&cells.upstream_cx_none_healthy);
            let reply = LocalReply::new(503, "no healthy upstream");
            Err(reply.flagged(ResponseFlags::NO_HEALTHY_UPSTREAM))
        }
        Some(host) => {
            let host = ActiveHost::new(host);
            exchange.upstream_host = Some(host.address());
            inc(&cells.upstream_rq_total);
            let shared = tunnel_shared(c.filter_state, cx);
            let as_ = OpenAs {
                shared: Some(&shared),
                ..OpenAs::default()
            };
            let open = async |slot| {
                let stream = open_transport(ctx, cluster, host.host(), as_).await?;
                let lease = Lease::new(slot, config.stats.clone(), ctx.id, false);
                Ok(UpstreamConn::new(
                    Buffered::new(stream),
                    OpenAs::default(),
                    lease,
                ))
            };
            match pool::within_breakers(ctx, cluster, None, || None, open).await {
                Ok(upstream) => Ok((upstream, host)),
                Err(Acquire::Overflow) => {
                    Err(overflow_reply().flagged(ResponseFlags::UPSTREAM_OVERFLOW))
                }
                Err(Acquire::Failed | Acquire::TimedOut) => {
                    let reply = reset_reply(0, "remote connection failure");
                    Err(reply.flagged(ResponseFlags::UPSTREAM_CONNECTION_FAILURE))
                }
            }
        }
    };
    let (upstream, host) = match opened {
        Ok(opened) => opened,
        Err(reply) => {
            if exchange.upstream_host.is_some() {
                cells.record_status(reply.status);
                inc(&cells.upstream_rq_completed);
            }
            exchange.details = "upstream_reset_before_response_started".into();
            let next = local(s, Some(cx), request, reply, relay.ran, false, exchange).await;
            // RFC 9113 §8.5: a tunnel that could not be opened ends with CONNECT_ERROR.
            s.downstream.reset_after_answer(Reason::CONNECT_ERROR).await;
            return next;
        }
    };
    cells.record_status(200);
    let mut head = ResponseHead {
        status: 200,
        version: request.version,
        headers: Headers::default(),
    };
    exchange.first_upstream_byte = Some(exchange.started.elapsed());
    exchange.details = "via_upstream".into();
    respond_with(c, exchange, 200);
    upstream_head(c, cx, request, &mut head, &relay, try_started, exchange);
    let next = open_tunnel(
        s,
        head,
        None,
        upstream,
        relay.upstream_buffer_limit,
        exchange,
    )
    .await;
    inc(&cells.upstream_rq_completed);
    drop((host, request_slot));
    next
}

/// Relays a tunnel between the client (`early` is what it sent past the request head) and
/// its upstream connection until both sides close; the bytes are counted in the connection
/// manager's stats and in `exchange` (when the stream's log comes after the relay).
pub(super) async fn relay_tunnel(
    c: &Connection<'_>,
    client: impl AsyncRead + AsyncWrite + Unpin,
    early: &[u8],
    upstream: UpstreamConn,
    upstream_limit: usize,
    exchange: Option<&mut Exchange>,
) -> RelayEnd {
    let stats = c.stats;
    let UpstreamConn {
        conn: mut upstream,
        lease,
        ..
    } = upstream;
    inc(&stats.downstream_cx_upgrades_active);
    let mut client = client;
    let early_up = std::mem::take(&mut upstream.buf);
    let observer = TunnelBytes {
        stats,
        received: Default::default(),
        sent: Default::default(),
    };
    let flushed = upstream.write_all(early).await.is_ok()
        && futures_lite::AsyncWriteExt::write_all(&mut client, &early_up)
            .await
            .is_ok();
    let end = match flushed {
        true => {
            observer.downstream_to_upstream(early.len());
            observer.upstream_to_downstream(early_up.len());
            let limits = RelayLimits {
                downstream: c.listener.buffer_limit,
                upstream: upstream_limit,
                idle_timeout: c.hcm.timeouts.stream_idle,
            };
            let scratch = &c.ctx.scratch;
            relay(client, upstream.io, &limits, scratch, &observer, c.drain).await
        }
        false => RelayEnd::DownstreamError,
    };
    dec(&stats.downstream_cx_upgrades_active);
    drop(lease);
    if let Some(exchange) = exchange {
        exchange.bytes_received += observer.received.get();
        exchange.bytes_sent += observer.sent.get();
        exchange.response_done = Some(exchange.started.elapsed());
        if end == RelayEnd::IdleTimeout {
            exchange.flags.set(ResponseFlags::STREAM_IDLE_TIMEOUT);
        }
    }
    end
}

/// Relays an HTTP/2 stream's tunnel; a failed upstream resets the stream with CONNECT_ERROR
/// (RFC 9113 §8.5).
pub(super) async fn relay_stream(
    c: &Connection<'_>,
    mut tunnel: Tunnel,
    upstream: UpstreamConn,
    upstream_limit: usize,
    exchange: &mut Exchange,
) {
    let end = relay_tunnel(
        c,
        &mut tunnel,
        &[],
        upstream,
        upstream_limit,
        Some(exchange),
    )
    .await;
    match end {
        RelayEnd::UpstreamError => tunnel.reset(Reason::CONNECT_ERROR),
        RelayEnd::DownstreamError => exchange
            .flags
            .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION),
        RelayEnd::Closed | RelayEnd::IdleTimeout | RelayEnd::Drained => {}
    }
}

/// Counts a tunnel's bytes.
struct TunnelBytes<'a> {
    stats: &'a HttpCells,
    received: std::cell::Cell<u64>,
    sent: std::cell::Cell<u64>,
}

impl RelayObserver for TunnelBytes<'_> {
    fn downstream_to_upstream(&self, bytes: usize) {
        add(&self.stats.downstream_cx_rx_bytes_total, bytes as u64);
        self.received.set(self.received.get() + bytes as u64);
    }
    fn upstream_to_downstream(&self, bytes: usize) {
        add(&self.stats.downstream_cx_tx_bytes_total, bytes as u64);
        self.sent.set(self.sent.get() + bytes as u64);
    }
}
