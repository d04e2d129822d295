//! Proxy layer: the router — the whole upstream exchange of a request: picks a host of its
//! cluster, sends the request on an upstream stream and reads the response head, with Envoy's
//! timeouts, circuit breakers and retries (`retry_on`, back-off, `previous_hosts`), then hands
//! the response (head, and a body that returns its connection to the pool when read) to the
//! caller: the connection manager, or a shadow. One try is in `attempt`, the deadlines in
//! `deadline`.
mod attempt;
pub mod deadline;

use std::{
    net::SocketAddr,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use model::{
    access_log::ResponseFlags,
    filters::AlpnOverrides,
    health::Outcome,
    route::{RetryOn, RetryPolicy},
    stats::{inc, ClusterCells},
    subset::MetadataMatch,
};

use self::{
    attempt::{try_once, Answer},
    deadline::{Deadlines, Expiry},
};
use super::{
    cluster_manager::{ActiveHost, ShardCluster},
    pool::Slot,
    upstream::{ResponseBody, TryFailure, UpstreamHead},
};
use crate::{
    context::ShardContext,
    net::buffered::earliest,
    protocol::http1::Framing,
    rt::timer,
    stream::grpc::GRPC_DEADLINE_EXCEEDED,
    stream::{
        body::{BodyFailure, RequestBody},
        grpc,
        headers::{RequestHead, ResponseHead, Version},
        LocalReply,
    },
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
    pub deadlines: Deadlines,
    /// The version the client speaks (`use_downstream_protocol_config` follows it).
    pub client_version: Version,
    /// Istio's `istio.alpn` ran: each try's new connection offers its list.
    pub alpn: Option<Arc<AlpnOverrides>>,
    /// Where an `ORIGINAL_DST` cluster sends the request: the downstream's original
    /// destination, or the address its `use_http_header` header names.
    pub destination: Option<std::net::SocketAddr>,
    /// The request's hash for a consistent-hash cluster (`None`: a random host).
    pub hash: Option<u64>,
    /// The route's `metadata_match`: the subset of a subset-balanced cluster.
    pub metadata_match: Option<&'a MetadataMatch>,
}

/// A response from upstream: its head, and its body still to read.
pub struct UpstreamResponse {
    pub head: UpstreamHead,
    pub body: ResponseBody,
    /// When the last try started (for `x-envoy-upstream-service-time`).
    pub try_started: Instant,
}

/// The outcome of routing one request upstream. Returned once per request and moved once:
/// boxing the large variant would cost an allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Routed {
    Response(UpstreamResponse),
    /// No response from upstream: answer locally (503/504/502/408 with flags).
    Failed(LocalReply),
    /// The client went away or sent a bad body: nothing to answer.
    Downstream(BodyFailure),
}

/// What the access log and stats need from the router.
#[derive(Default)]
pub struct RouterRecord {
    pub flags: ResponseFlags,
    pub upstream_host: Option<SocketAddr>,
    /// Tries made (the first one included).
    pub attempts: u32,
    /// Why the request failed, when more precise than the default (`%RESPONSE_CODE_DETAILS%`).
    pub details: Option<&'static str>,
    /// The connection manager's own deadline expired (`request_timeout`, idle stream).
    pub downstream_timeout: Option<Expiry>,
}

/// Routes the request: picks hosts, sends, reads the response head; retries by policy. The
/// response's status is counted in the cluster's stats, and so is a local answer after a host
/// was tried, as Envoy counts it.
pub async fn forward(
    ctx: &ShardContext,
    request: Forwarding<'_>,
    body: &mut RequestBody<'_>,
    record: &mut RouterRecord,
) -> Routed {
    let cluster = request.cluster.clone();
    let routed = route(ctx, request, body, record).await;
    let cells = cluster.config.stats.shard(ctx.id);
    match &routed {
        Routed::Response(response) => cells.record_status(response.head.head.status),
        Routed::Failed(reply) if record.upstream_host.is_some() => {
            cells.record_status(reply.status);
            inc(&cells.upstream_rq_completed);
        }
        Routed::Failed(_) | Routed::Downstream(_) => {}
    }
    routed
}

async fn route(
    ctx: &ShardContext,
    request: Forwarding<'_>,
    body: &mut RequestBody<'_>,
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
    let num_retries = policy.map_or(0, |p| p.num_retries);
    // Hosts already tried, kept only for `previous_hosts` (no allocation otherwise).
    let previous_hosts = policy.is_some_and(|p| p.previous_hosts);
    let mut tried: Vec<SocketAddr> = Vec::new();
    // A stale keep-alive connection is resent once, without counting as a retry.
    let mut resent_stale = false;
    let mut retries = Retries {
        done: 0,
        slot: None,
    };
    loop {
        let avoid_previous = previous_hosts && !tried.is_empty();
        let attempts = policy.map_or(1, |p| p.host_selection_retry_max_attempts.max(1));
        let host = match avoid_previous && cluster.config.original_dst.is_none() {
            true => cluster.pick_where(attempts, request.hash, request.metadata_match, |h| {
                !tried.contains(&h.address())
            }),
            false => cluster.pick_for(request.destination, request.hash, request.metadata_match),
        };
        let Some(host) = host else {
            inc(&cells.upstream_cx_none_healthy);
            record.flags.set(ResponseFlags::NO_HEALTHY_UPSTREAM);
            return Routed::Failed(LocalReply::new(503, "no healthy upstream"));
        };
        if previous_hosts {
            tried.push(host.address());
        }
        record.upstream_host = Some(host.address());
        let host = ActiveHost::new(host);
        let try_started = Instant::now();
        record.attempts += 1;
        let attempt = record.attempts;
        let outcome = try_once(ctx, &request, attempt, &host, body, cells).await;
        if let Some(result) = host_outcome(&outcome) {
            cluster.report(host.host(), result);
        }
        let failure = match outcome {
            Ok(Answer { head, stream }) => {
                let wanted = policy.is_some_and(|p| retriable_response(p, &head.head));
                let retry = wanted && retries.done < num_retries && body.replay().is_some();
                // Without a retry slot (`max_retries`) this response is the answer, as Envoy.
                if retry && retries.next(cluster, cells, record) {
                    drop(stream); // its response body is not wanted
                    back_off(policy, retries.done, request.deadlines.route).await;
                    continue;
                }
                if wanted && retries.done > 0 {
                    inc(&cells.upstream_rq_retry_limit_exceeded);
                    record
                        .flags
                        .set(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
                } else if retries.done > 0 {
                    inc(&cells.upstream_rq_retry_success);
                }
                let deadlines = Deadlines {
                    request: None,
                    ..request.deadlines
                };
                let body = ResponseBody::new(
                    stream,
                    head.early,
                    host,
                    cluster.clone(),
                    ctx.id,
                    deadlines,
                    try_started,
                );
                return Routed::Response(UpstreamResponse {
                    head,
                    body,
                    try_started,
                });
            }
            Err(TryFailure::Downstream(f)) => return Routed::Downstream(f),
            Err(failure) => failure,
        };
        let (flag, reply) = match &failure {
            TryFailure::Downstream(_) => unreachable!("returned above"),
            TryFailure::Overflow => {
                record.flags.set(ResponseFlags::UPSTREAM_OVERFLOW);
                return Routed::Failed(overflow_reply());
            }
            TryFailure::TimedOut { expiry, receiving } => match expiry {
                Expiry::Route => {
                    inc(&cells.upstream_rq_timeout);
                    record.flags.set(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
                    return Routed::Failed(
                        LocalReply::new(504, "upstream request timeout")
                            .grpc(GRPC_DEADLINE_EXCEEDED),
                    );
                }
                Expiry::PerTry => {
                    inc(&cells.upstream_rq_per_try_timeout);
                    (
                        ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                        LocalReply::new(504, "upstream request timeout")
                            .grpc(GRPC_DEADLINE_EXCEEDED),
                    )
                }
                Expiry::Request => {
                    record.downstream_timeout = Some(Expiry::Request);
                    record.details = Some("request_overall_timeout");
                    return Routed::Failed(LocalReply::new(408, "request timeout"));
                }
                Expiry::StreamIdle => {
                    record.downstream_timeout = Some(Expiry::StreamIdle);
                    record.details = Some("stream_idle_timeout");
                    record.flags.set(ResponseFlags::STREAM_IDLE_TIMEOUT);
                    let status = if *receiving { 408 } else { 504 };
                    return Routed::Failed(LocalReply::new(status, "stream timeout"));
                }
            },
            // A keep-alive connection the upstream had just closed: resend once on a fresh one,
            // as the request never reached it.
            TryFailure::Reset {
                reused: true,
                sent_nothing_back: true,
            } if body.replay().is_some() && !resent_stale => {
                resent_stale = true;
                tried.pop();
                continue;
            }
            TryFailure::Connect => (
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
                reset_reply(retries.done, "remote connection failure"),
            ),
            TryFailure::Reset { .. } => (
                ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
                reset_reply(retries.done, "connection termination"),
            ),
            TryFailure::Protocol(error) => {
                inc(&cells.upstream_cx_protocol_error);
                record.details = Some(error.details());
                (
                    ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
                    LocalReply::new(502, "upstream connect error or disconnect/reset before headers. reset reason: protocol error"),
                )
            }
        };
        let wanted = policy.is_some_and(|p| retriable_failure(p, &failure));
        if wanted && retries.done < num_retries && body.replay().is_some() {
            if retries.next(cluster, cells, record) {
                back_off(policy, retries.done, request.deadlines.route).await;
                continue;
            }
        } else if wanted && retries.done > 0 {
            inc(&cells.upstream_rq_retry_limit_exceeded);
            record
                .flags
                .set(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        }
        record.flags.set(flag);
        return Routed::Failed(reply);
    }
}

/// What a try says of the host, for outlier detection: its status, or a failure of its own
/// (a stale keep-alive connection the host closed is not one: the request is resent).
fn host_outcome(outcome: &Result<Answer, TryFailure>) -> Option<Outcome> {
    match outcome {
        Ok(answer) => Some(Outcome::Status(answer.head.head.status)),
        Err(TryFailure::TimedOut {
            expiry: Expiry::Route | Expiry::PerTry,
            ..
        }) => Some(Outcome::Timeout),
        Err(TryFailure::Reset {
            reused: true,
            sent_nothing_back: true,
        }) => None,
        Err(TryFailure::Connect | TryFailure::Reset { .. } | TryFailure::Protocol(_)) => {
            Some(Outcome::ConnectFailed)
        }
        Err(TryFailure::TimedOut { .. } | TryFailure::Downstream(_) | TryFailure::Overflow) => None,
    }
}

/// Retries made so far and the breaker slot the current one holds.
struct Retries {
    done: u32,
    slot: Option<Slot>,
}

impl Retries {
    /// Takes a retry within the cluster's `max_retries`; `false` (counted, flagged `UO`) when
    /// the breaker is full.
    fn next(
        &mut self,
        cluster: &ShardCluster,
        cells: &ClusterCells,
        record: &mut RouterRecord,
    ) -> bool {
        match cluster.breakers.retry() {
            Some(slot) => {
                self.slot = Some(slot);
                self.done += 1;
                inc(&cells.upstream_rq_retry);
                true
            }
            None => {
                inc(&cells.upstream_rq_retry_overflow);
                record.flags.set(ResponseFlags::UPSTREAM_OVERFLOW);
                false
            }
        }
    }
}

pub(crate) fn overflow_reply() -> LocalReply {
    let mut reply = reset_reply(0, "overflow");
    reply.headers.append("x-envoy-overloaded", "true");
    reply
}

/// Envoy's local reply when no response head arrived (it says when tries were retried).
pub(crate) fn reset_reply(retries: u32, reason: &str) -> LocalReply {
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

fn retriable_response(policy: &RetryPolicy, head: &ResponseHead) -> bool {
    let on = policy.retry_on;
    let status = head.status;
    let grpc = match grpc::status_of(head) {
        Some(1) => RetryOn::GRPC_CANCELLED,
        Some(4) => RetryOn::GRPC_DEADLINE_EXCEEDED,
        Some(8) => RetryOn::GRPC_RESOURCE_EXHAUSTED,
        Some(13) => RetryOn::GRPC_INTERNAL,
        Some(14) => RetryOn::GRPC_UNAVAILABLE,
        _ => RetryOn::default(),
    };
    (on.contains(RetryOn::FIVE_XX) && status >= 500)
        || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
        || (on.contains(RetryOn::RETRIABLE_4XX) && status == 409)
        || (on.contains(RetryOn::RETRIABLE_STATUS_CODES)
            && policy.retriable_status_codes.contains(&status))
        || (grpc != RetryOn::default() && on.contains(grpc))
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
        TryFailure::TimedOut {
            expiry: Expiry::PerTry,
            ..
        } => any(&[RetryOn::FIVE_XX, RetryOn::GATEWAY_ERROR, RetryOn::RESET]),
        TryFailure::Protocol(_) => any(&[RetryOn::FIVE_XX, RetryOn::RESET]),
        TryFailure::TimedOut { .. } | TryFailure::Overflow | TryFailure::Downstream(_) => false,
    }
}

/// Envoy's fully jittered exponential back-off: a random wait in `[0, base * 2^(n-1))`,
/// capped at the maximum, and never past the route deadline.
async fn back_off(policy: Option<&RetryPolicy>, retry: u32, deadline: Option<Instant>) {
    let Some(policy) = policy else { return };
    let base = policy.back_off_base.as_micros() as u64;
    let ceiling = base
        .saturating_mul(1 << (retry - 1).min(20))
        .min(policy.back_off_max.as_micros() as u64)
        .max(1);
    let wait = Duration::from_micros(fastrand::u64(0..ceiling));
    let until = earliest(Some(Instant::now() + wait), deadline).expect("some");
    timer::sleep_until(until).await;
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::stream::headers::Headers;

    fn head(status: u16, grpc_status: Option<&str>) -> ResponseHead {
        let mut headers = Headers::default();
        if let Some(code) = grpc_status {
            headers.append("grpc-status", Bytes::copy_from_slice(code.as_bytes()));
        }
        ResponseHead {
            status,
            version: Version::Http2,
            headers,
        }
    }

    fn policy(retry_on: RetryOn) -> RetryPolicy {
        RetryPolicy {
            retry_on,
            num_retries: 1,
            per_try_timeout: None,
            retriable_status_codes: Vec::new(),
            back_off_base: Duration::from_millis(25),
            back_off_max: Duration::from_millis(250),
            previous_hosts: false,
            host_selection_retry_max_attempts: 1,
        }
    }

    #[test]
    fn grpc_conditions_read_the_grpc_status_of_the_head() {
        let unavailable = policy(RetryOn::GRPC_UNAVAILABLE);
        assert!(retriable_response(&unavailable, &head(200, Some("14"))));
        assert!(!retriable_response(&unavailable, &head(200, Some("4"))));
        assert!(!retriable_response(&unavailable, &head(200, None)));
        assert!(!retriable_response(&unavailable, &head(503, None)));
        let deadline = policy(RetryOn::GRPC_DEADLINE_EXCEEDED);
        assert!(retriable_response(&deadline, &head(200, Some("4"))));
        assert!(retriable_response(
            &policy(RetryOn::FIVE_XX),
            &head(503, None)
        ));
    }
}
