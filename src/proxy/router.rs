//! Proxy layer: the router — sends a request to a host of its cluster through the host's pool
//! and reads the response head, with Envoy's per-try and overall timeouts, circuit breakers,
//! and retries (`retry_on`, back-off, `previous_hosts`).
use std::{
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_lite::future;
use xds_agent::{
    access_log::ResponseFlags,
    model::route::{RetryOn, RetryPolicy},
    stats::{inc, ClusterCells},
};

use super::{
    cluster_manager::{ActiveHost, Host, ShardCluster},
    pool::{Slot, UpstreamConn},
};
use crate::{
    context::ShardContext,
    net::buffered::{earliest, Buffered, IoFailure},
    protocol::http1::{
        self, encode_chunk, encode_last_chunk, encode_request_head, Framing, Limits, ParsedResponse,
    },
    rt::{net::TcpStream, timer},
    stream::{
        body::{BodyFailure, RequestBody},
        headers::RequestHead,
        LocalReply,
    },
};

/// Upstream response heads may be as large as Envoy allows (60 KiB) with up to 100 headers.
pub const RESPONSE_LIMITS: Limits = Limits {
    max_head_bytes: 60 << 10,
    max_headers: 100,
};

/// What the router needs for one request.
pub struct Forwarding<'a> {
    pub cluster: Rc<ShardCluster>,
    /// The request head to send (HTTP/1.1, rewrites applied).
    pub head: &'a RequestHead,
    /// `auto_host_rewrite`: each try's `host` is the chosen host's name, when it has one.
    pub auto_host_rewrite: bool,
    /// `include_request_attempt_count`: each try carries `x-envoy-attempt-count`.
    pub attempt_count: bool,
    /// Request trailers go upstream (both sides' HTTP/1 options `enable_trailers`).
    pub trailers: bool,
    /// How the body goes upstream (`Chunked` or `Length`, as it came).
    pub framing: &'a Framing,
    pub is_head_request: bool,
    pub retry: Option<&'a RetryPolicy>,
    /// Overall deadline (route `timeout`), if any.
    pub deadline: Option<Instant>,
}

/// A response head from upstream, its connection, and what the log needs.
pub struct UpstreamResponse {
    pub response: ParsedResponse,
    pub conn: UpstreamConn,
    pub host: ActiveHost,
    /// When the last try started (for `x-envoy-upstream-service-time`).
    pub try_started: Instant,
}

/// The outcome of routing one request upstream.
pub enum Routed {
    Response(UpstreamResponse),
    /// No response from upstream: answer locally (503/504/502 with flags).
    Failed(LocalReply),
    /// The client went away or sent a bad body: nothing to answer.
    Downstream(BodyFailure),
}

/// Where a try failed.
enum TryFailure {
    /// No connection (refused, timed out): safe to retry.
    Connect,
    /// Reset or closed before a full response head. `sent_nothing_back` = not a byte arrived.
    Reset {
        reused: bool,
        sent_nothing_back: bool,
    },
    PerTryTimeout,
    GlobalTimeout,
    Protocol(http1::ResponseError),
    Overflow,
    Downstream(BodyFailure),
}

/// Routes the request: picks hosts, sends, reads the response head; retries by policy.
pub async fn forward(
    ctx: &ShardContext,
    request: Forwarding<'_>,
    body: &mut RequestBody,
    downstream: &mut Buffered,
    record: &mut RouterRecord,
) -> Routed {
    let cluster = &request.cluster;
    let cells = cluster.config.stats.shard(ctx.id);
    let Some(_request_slot) = cluster.breakers.request() else {
        inc(&cells.upstream_rq_pending_overflow);
        record.flags.set(ResponseFlags::UPSTREAM_OVERFLOW);
        return Routed::Failed(overflow_reply());
    };
    let policy = request.retry;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retries_done = 0u32;
    let mut _retry_slot: Option<Slot> = None;
    loop {
        let avoid_previous = policy.is_some_and(|p| p.previous_hosts) && !tried.is_empty();
        let attempts = policy.map_or(1, |p| p.host_selection_retry_max_attempts.max(1));
        let host = match avoid_previous {
            true => cluster.pick_where(attempts, |h| !tried.contains(&h.address())),
            false => cluster.pick(),
        };
        let Some(host) = host else {
            inc(&cells.upstream_cx_none_healthy);
            record.flags.set(ResponseFlags::NO_HEALTHY_UPSTREAM);
            return Routed::Failed(LocalReply::new(503, "no healthy upstream"));
        };
        tried.push(host.address());
        record.upstream_host = Some(host.address());
        let host = ActiveHost::new(host);
        let try_started = Instant::now();
        record.attempts += 1;
        let outcome = try_once(
            ctx,
            &request,
            record.attempts,
            &host,
            body,
            downstream,
            cells,
        )
        .await;
        let failure = match outcome {
            Ok((response, conn)) => {
                let status = response.head.status;
                if retries_done < policy.map_or(0, |p| p.num_retries)
                    && policy.is_some_and(|p| retriable_status(p, status))
                    && body.replay().is_some()
                {
                    if let Some(slot) = cluster.breakers.retry() {
                        _retry_slot = Some(slot);
                        drop(conn); // its response body is not wanted
                        retries_done += 1;
                        inc(&cells.upstream_rq_retry);
                        back_off(policy.expect("checked"), retries_done, request.deadline).await;
                        continue;
                    }
                    inc(&cells.upstream_rq_retry_overflow);
                }
                if retries_done > 0 {
                    inc(&cells.upstream_rq_retry_success);
                }
                return Routed::Response(UpstreamResponse {
                    response,
                    conn,
                    host,
                    try_started,
                });
            }
            Err(failure) => failure,
        };
        let failure = match failure {
            TryFailure::Downstream(f) => return Routed::Downstream(f),
            other => other,
        };
        let (flag, reply) = match &failure {
            TryFailure::Downstream(_) => unreachable!("returned above"),
            TryFailure::Overflow => {
                record.flags.set(ResponseFlags::UPSTREAM_OVERFLOW);
                return Routed::Failed(overflow_reply());
            }
            TryFailure::GlobalTimeout => {
                inc(&cells.upstream_rq_timeout);
                record.flags.set(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
                return Routed::Failed(LocalReply::new(504, "upstream request timeout"));
            }
            // A keep-alive connection the upstream had just closed: resend once on a fresh one,
            // as the request never reached it.
            TryFailure::Reset {
                reused: true,
                sent_nothing_back: true,
            } if body.replay().is_some() && tried.len() <= 1 + retries_done as usize => {
                tried.pop();
                continue;
            }
            TryFailure::Connect => (
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
                reset_reply(retries_done, "remote connection failure"),
            ),
            TryFailure::Reset { .. } => (
                ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
                reset_reply(retries_done, "connection termination"),
            ),
            TryFailure::PerTryTimeout => {
                inc(&cells.upstream_rq_per_try_timeout);
                (
                    ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                    LocalReply::new(504, "upstream request timeout"),
                )
            }
            TryFailure::Protocol(error) => {
                inc(&cells.upstream_cx_protocol_error);
                record.details = Some(error.details());
                (
                    ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
                    LocalReply::new(502, "upstream connect error or disconnect/reset before headers. reset reason: protocol error"),
                )
            }
        };
        let can_retry = policy.is_some_and(|p| retriable_failure(p, &failure))
            && retries_done < policy.map_or(0, |p| p.num_retries)
            && body.replay().is_some();
        if can_retry {
            if let Some(slot) = cluster.breakers.retry() {
                _retry_slot = Some(slot);
                retries_done += 1;
                inc(&cells.upstream_rq_retry);
                back_off(policy.expect("checked"), retries_done, request.deadline).await;
                continue;
            }
            inc(&cells.upstream_rq_retry_overflow);
        } else if retries_done > 0 && retries_done >= policy.map_or(0, |p| p.num_retries) {
            inc(&cells.upstream_rq_retry_limit_exceeded);
            record
                .flags
                .set(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        }
        record.flags.set(flag);
        return Routed::Failed(reply);
    }
}

/// What the access log and stats need from the router.
#[derive(Default)]
pub struct RouterRecord {
    pub flags: ResponseFlags,
    pub upstream_host: Option<SocketAddr>,
    /// Tries made (the first one included).
    pub attempts: u32,
    /// Why the last try failed, when the codec knows (`%RESPONSE_CODE_DETAILS%`).
    pub details: Option<&'static str>,
}

fn overflow_reply() -> LocalReply {
    reset_reply(0, "overflow")
}

/// Envoy's local reply when no response head arrived (it says when tries were retried).
fn reset_reply(retries: u32, reason: &str) -> LocalReply {
    let retried = if retries > 0 {
        "retried and the latest "
    } else {
        ""
    };
    LocalReply::new(
        503,
        format!(
            "upstream connect error or disconnect/reset before headers. {retried}reset reason: {reason}"
        ),
    )
}

fn retriable_status(policy: &RetryPolicy, status: u16) -> bool {
    let on = policy.retry_on;
    (on.contains(RetryOn::FIVE_XX) && status >= 500)
        || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
        || (on.contains(RetryOn::RETRIABLE_4XX) && status == 409)
        || (on.contains(RetryOn::RETRIABLE_STATUS_CODES)
            && policy.retriable_status_codes.contains(&status))
}

fn retriable_failure(policy: &RetryPolicy, failure: &TryFailure) -> bool {
    let on = policy.retry_on;
    let any = |flags: &[RetryOn]| flags.iter().any(|f| on.contains(*f));
    match failure {
        TryFailure::Connect => any(&[
            RetryOn::CONNECT_FAILURE,
            RetryOn::FIVE_XX,
            RetryOn::GATEWAY_ERROR,
            RetryOn::RESET,
        ]),
        TryFailure::Reset { .. } => {
            any(&[RetryOn::RESET, RetryOn::FIVE_XX, RetryOn::GATEWAY_ERROR])
        }
        TryFailure::PerTryTimeout => {
            any(&[RetryOn::FIVE_XX, RetryOn::GATEWAY_ERROR, RetryOn::RESET])
        }
        TryFailure::Protocol(_) => any(&[RetryOn::FIVE_XX, RetryOn::RESET]),
        TryFailure::GlobalTimeout | TryFailure::Overflow | TryFailure::Downstream(_) => false,
    }
}

/// Envoy's fully jittered exponential back-off: a random wait in `[0, base * 2^(n-1))`,
/// capped at the maximum, and never past the overall deadline.
async fn back_off(policy: &RetryPolicy, retry: u32, deadline: Option<Instant>) {
    let base = policy.back_off_base.as_micros() as u64;
    let ceiling = base
        .saturating_mul(1 << (retry - 1).min(20))
        .min(policy.back_off_max.as_micros() as u64)
        .max(1);
    let wait = Duration::from_micros(fastrand::u64(0..ceiling));
    let until = earliest(Some(Instant::now() + wait), deadline).expect("some");
    timer::sleep_until(until).await;
}

/// One try: a connection (pooled or new), the request, the response head.
async fn try_once(
    ctx: &ShardContext,
    request: &Forwarding<'_>,
    attempt: u32,
    host: &ActiveHost,
    body: &mut RequestBody,
    downstream: &mut Buffered,
    cells: &ClusterCells,
) -> Result<(ParsedResponse, UpstreamConn), TryFailure> {
    let cluster = &request.cluster;
    let per_try = request
        .retry
        .and_then(|p| p.per_try_timeout)
        .map(|t| Instant::now() + t);
    let deadline = earliest(per_try, request.deadline);
    let timed_out = |at: Option<Instant>| match (per_try, request.deadline) {
        (Some(p), _) if at == Some(p) && Some(p) != request.deadline => TryFailure::PerTryTimeout,
        _ => TryFailure::GlobalTimeout,
    };
    let mut conn = acquire(ctx, cluster, host.host(), deadline)
        .await
        .map_err(|e| match e {
            Acquire::TimedOut => timed_out(deadline),
            Acquire::Failed => TryFailure::Connect,
            Acquire::Overflow => TryFailure::Overflow,
        })?;
    conn.requests += 1;
    inc(&cells.upstream_rq_total);
    let reused = conn.reused();
    let reset = |received: bool| TryFailure::Reset {
        reused,
        sent_nothing_back: !received,
    };
    // Head and whatever body is already here in one write; then the rest as it arrives.
    let mut out = Vec::with_capacity(1024);
    let hostname = host
        .host()
        .endpoint
        .hostname
        .as_deref()
        .filter(|_| request.auto_host_rewrite);
    if hostname.is_some() || request.attempt_count {
        let mut head = request.head.clone();
        if let Some(name) = hostname {
            if let Some(original) = head.headers.get("host").cloned() {
                head.headers.set("x-envoy-original-host", original);
            }
            head.headers.set("host", name.to_string());
        }
        if request.attempt_count {
            head.headers
                .set("x-envoy-attempt-count", attempt.to_string());
        }
        encode_request_head(&head, request.framing, &mut out);
    } else {
        encode_request_head(request.head, request.framing, &mut out);
    }
    let chunked = matches!(request.framing, Framing::Chunked);
    if let Some(replay) = body.replay() {
        for chunk in replay {
            frame(chunked, chunk, &mut out);
        }
    }
    let send = async {
        conn.conn.write_all(&out).await.map_err(|_| reset(false))?;
        loop {
            out.clear();
            let chunk = body
                .next(downstream, &ctx.scratch, deadline)
                .await
                .map_err(|f| match f {
                    BodyFailure::TimedOut => timed_out(deadline),
                    other => TryFailure::Downstream(other),
                })?;
            match chunk {
                Some(chunk) => frame(chunked, &chunk, &mut out),
                None => {
                    if chunked {
                        let trailers = body.trailers.as_ref().filter(|_| request.trailers);
                        encode_last_chunk(trailers, &mut out);
                    }
                    conn.conn.write_all(&out).await.map_err(|_| reset(false))?;
                    return Ok(());
                }
            }
            conn.conn.write_all(&out).await.map_err(|_| reset(false))?;
        }
    };
    let sent: Result<(), TryFailure> = match deadline {
        None => send.await,
        Some(at) => {
            future::or(send, async {
                timer::sleep_until(at).await;
                Err(timed_out(deadline))
            })
            .await
        }
    };
    // A write failure may still have left a response (e.g. 413 before closing): read it.
    if let Err(failure) = sent {
        if !matches!(failure, TryFailure::Reset { .. }) || conn.conn.buf.is_empty() {
            return Err(failure);
        }
    }
    loop {
        match http1::parse_response(
            &mut conn.conn.buf,
            request.is_head_request,
            &RESPONSE_LIMITS,
        ) {
            Ok(Some(response)) if response.head.status == 100 => continue, // interim
            Ok(Some(response)) => return Ok((response, conn)),
            Ok(None) => {}
            Err(error) => return Err(TryFailure::Protocol(error)),
        }
        let received = !conn.conn.buf.is_empty();
        match conn.conn.fill_until(&ctx.scratch, deadline).await {
            Ok(0) | Err(IoFailure::Broken) => {
                inc(&cells.upstream_cx_destroy_remote);
                inc(&cells.upstream_rq_rx_reset);
                return Err(reset(received));
            }
            Ok(_) => {}
            Err(IoFailure::TimedOut) => return Err(timed_out(deadline)),
        }
    }
}

/// Writes one body chunk in the upstream framing.
fn frame(chunked: bool, chunk: &Bytes, out: &mut Vec<u8>) {
    match chunked {
        true => encode_chunk(chunk, out),
        false => out.extend_from_slice(chunk),
    }
}

pub(super) enum Acquire {
    Failed,
    TimedOut,
    Overflow,
}

/// A pooled connection to `host`, or a new one within the cluster's breakers (waiting as a
/// pending request while `max_connections` is reached).
pub(super) async fn acquire(
    ctx: &ShardContext,
    cluster: &ShardCluster,
    host: &Rc<Host>,
    deadline: Option<Instant>,
) -> Result<UpstreamConn, Acquire> {
    let config = &cluster.config;
    let cells = config.stats.shard(ctx.id);
    loop {
        if let Some(conn) = host.pool.take(&config.http) {
            return Ok(conn);
        }
        if let Some(slot) = cluster.breakers.connection() {
            let started = Instant::now();
            let timeout = config.connect_timeout;
            return match TcpStream::connect_timeout(host.address(), timeout).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    xds_agent::stats::record_duration(
                        &cells.upstream_cx_connect_ms,
                        started.elapsed(),
                    );
                    Ok(UpstreamConn::new(
                        Buffered::new(stream),
                        slot,
                        config.stats.clone(),
                        ctx.id,
                    ))
                }
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::TimedOut {
                        inc(&cells.upstream_cx_connect_timeout);
                    }
                    inc(&cells.upstream_cx_connect_fail);
                    Err(Acquire::Failed)
                }
            };
        }
        inc(&cells.upstream_cx_overflow);
        let Some(_pending) = cluster.breakers.pending() else {
            inc(&cells.upstream_rq_pending_overflow);
            return Err(Acquire::Overflow);
        };
        inc(&cells.upstream_rq_pending_total);
        let released = cluster.breakers.released();
        match deadline {
            None => released.await,
            Some(at) => {
                let expired = future::or(
                    async {
                        released.await;
                        false
                    },
                    async {
                        timer::sleep_until(at).await;
                        true
                    },
                )
                .await;
                if expired {
                    return Err(Acquire::TimedOut);
                }
            }
        }
    }
}
