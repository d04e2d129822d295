//! HTTP connection manager over HTTP/2: the `h2` crate's server connection on the shard's own
//! loop; each request stream is served as a stream of this connection (all of them polled by
//! this one task), and the connection ends with GOAWAY when draining, idle or used up.
use std::{
    cell::RefCell,
    future::{poll_fn, Future},
    pin::{pin, Pin},
    rc::Rc,
    task::Poll,
    time::Instant,
};

use bytes::Bytes;
use futures_util::{stream::FuturesUnordered, StreamExt};
use h2::{server::SendResponse, Reason, RecvStream};
use http::Request;
use model::stats::inc;

use super::{downstream::Downstream, stream, Connection, Ended};
use crate::{
    net::{buffered::Buffered, tokio_io::TokioIo},
    protocol::{
        http1::ParsedRequest,
        http2::{self, keepalive},
    },
    rt::timer,
};

/// What woke the connection's task. Made and matched once per wake-up: boxing the large
/// variant would cost an allocation per stream for nothing.
#[allow(clippy::large_enum_variant)]
enum Event {
    Stream(Request<RecvStream>, SendResponse<Bytes>),
    StreamDone,
    /// The client's connection ended (GOAWAY done, closed, or a connection error).
    Closed(Option<h2::Error>),
    Draining,
    Idle,
    /// A keepalive PING went unanswered.
    Unresponsive,
}

/// Serves the connection's streams until it closes.
pub(super) async fn serve(c: &Connection<'_>, conn: Buffered) -> Ended {
    let builder = http2::server(
        &c.hcm.http2,
        c.listener.buffer_limit,
        c.hcm.max_request_headers_bytes,
    );
    let handshake = builder.handshake::<_, Bytes>(TokioIo::new(conn));
    let idle = c.hcm.timeouts.idle;
    let handshake = timer::within(idle.map(|t| Instant::now() + t), handshake).await;
    let mut h2 = match handshake {
        Some(Ok(h2)) => h2,
        Some(Err(_)) => {
            inc(&c.stats.downstream_cx_protocol_error);
            inc(&c.stats.downstream_cx_destroy_remote);
            return Ended::Closed;
        }
        None => {
            inc(&c.stats.downstream_cx_idle_timeout);
            inc(&c.stats.downstream_cx_destroy_local);
            return Ended::Closed;
        }
    };
    // Boxed: the set keeps a placeholder of its element type for as long as the connection
    // lives, and a stream's future is ~7 KB (a box is a pointer).
    let mut streams: FuturesUnordered<Pin<Box<dyn Future<Output = ()> + '_>>> =
        FuturesUnordered::new();
    let mut served = 0u32;
    let mut going_away = false;
    let mut draining = pin!(c.drain.started());
    // Runs while the connection has no stream (set again each time it becomes idle).
    let idle_from = |since: Instant| idle.map(|timeout| timer::sleep_until(since + timeout));
    let mut idle_timer = idle_from(Instant::now());
    let mut unresponsive = pin!(keepalive::peer_unresponsive(
        h2.ping_pong(),
        c.hcm.http2.keepalive
    ));
    loop {
        let event = poll_fn(|cx| {
            if unresponsive.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Unresponsive);
            }
            if let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {
                return Poll::Ready(Event::StreamDone);
            }
            if !going_away && draining.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Draining);
            }
            if let Some(timer) = idle_timer.as_mut() {
                if streams.is_empty() && Pin::new(timer).poll(cx).is_ready() {
                    return Poll::Ready(Event::Idle);
                }
            }
            match h2.poll_accept(cx) {
                Poll::Ready(Some(Ok((request, respond)))) => {
                    Poll::Ready(Event::Stream(request, respond))
                }
                Poll::Ready(Some(Err(error))) => Poll::Ready(Event::Closed(Some(error))),
                Poll::Ready(None) if streams.is_empty() => Poll::Ready(Event::Closed(None)),
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match event {
            Event::Stream(request, respond) => {
                served += 1;
                idle_timer = None;
                streams.push(Box::pin(serve_stream(c, request, respond)));
                let used_up = c
                    .hcm
                    .max_requests_per_connection
                    .is_some_and(|max| served >= max);
                if used_up && !going_away {
                    inc(&c.stats.downstream_cx_max_requests_reached);
                    going_away = true;
                    h2.graceful_shutdown();
                }
            }
            Event::StreamDone => {}
            Event::Draining => {
                going_away = true;
                h2.graceful_shutdown();
            }
            Event::Idle => {
                inc(&c.stats.downstream_cx_idle_timeout);
                inc(&c.stats.downstream_cx_destroy_local);
                going_away = true;
                h2.graceful_shutdown();
                idle_timer = None;
            }
            Event::Unresponsive => {
                // Envoy's keepalive timeout: the connection is closed without a GOAWAY.
                inc(&c.stats.downstream_cx_destroy_local);
                return Ended::Closed;
            }
            Event::Closed(error) => {
                if error
                    .as_ref()
                    .is_some_and(|e| e.is_go_away() || e.is_library())
                {
                    inc(&c.stats.downstream_cx_protocol_error);
                }
                match going_away {
                    true => inc(&c.stats.downstream_cx_destroy_local),
                    false => inc(&c.stats.downstream_cx_destroy_remote),
                }
                // Streams still open end with their connection.
                return Ended::Closed;
            }
        }
        if streams.is_empty() && idle_timer.is_none() && !going_away {
            idle_timer = idle_from(Instant::now());
        }
    }
}

/// Serves one request stream.
async fn serve_stream(
    c: &Connection<'_>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let incoming = match http2::incoming(request) {
        Ok(incoming) => incoming,
        Err(_) => {
            inc(&c.stats.downstream_rq_total);
            inc(&c.stats.downstream_rq_http2_total);
            inc(&c.stats.downstream_cx_protocol_error);
            respond.send_reset(Reason::PROTOCOL_ERROR);
            return;
        }
    };
    let parsed = ParsedRequest {
        head: incoming.head,
        framing: incoming.framing,
        keep_alive: true,
        expect_continue: incoming.expect_continue,
        upgrade: incoming.upgrade,
        connect: incoming.connect,
    };
    let downstream = Downstream::Http2 {
        respond: Rc::new(RefCell::new(respond)),
        body: Some(incoming.body),
    };
    stream::serve(c, downstream, parsed, false).await;
}
