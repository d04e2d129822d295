//! HTTP filters: `envoy.filters.http.fault` — delays (fixed or `x-envoy-fault-delay-request`)
//! and aborts (HTTP or gRPC status, or `x-envoy-fault-abort-request`), each on a share of the
//! requests that match, with Envoy's order: a delay first, then perhaps an abort.
use std::{sync::atomic::AtomicU64, time::Duration};

use bytes::Bytes;
use model::{
    access_log::ResponseFlags,
    filter_stats::FaultStats,
    filters::{
        AbortSource, DelaySource, FaultConfig, FaultFilter, FractionalPercent, HttpFilter,
        PerRouteFilter,
    },
    matchers::all_match,
    route::{ClusterSpecifier, RouteAction},
    stats::{dec, inc},
};

use super::sampled;
use crate::{
    rt::timer,
    stream::{headers::RequestHead, FilterResult, LocalReply, StreamContext},
};

const DELAY_REQUEST: &str = "x-envoy-fault-delay-request";
const DELAY_PERCENTAGE: &str = "x-envoy-fault-delay-request-percentage";
const ABORT_REQUEST: &str = "x-envoy-fault-abort-request";
const ABORT_GRPC_REQUEST: &str = "x-envoy-fault-abort-grpc-request";
const ABORT_PERCENTAGE: &str = "x-envoy-fault-abort-request-percentage";
const DOWNSTREAM_NODE: &str = "x-envoy-downstream-service-node";

pub(super) async fn on_request(
    filter: &HttpFilter,
    fault: &FaultFilter,
    cx: &StreamContext<'_>,
    request: &RequestHead,
) -> FilterResult {
    // A route's settings replace the chain's; the stats stay the chain's.
    let settings: &FaultConfig = match cx.per_filter(&filter.name) {
        Some(PerRouteFilter::Fault(route)) => route,
        _ => &fault.config,
    };
    if !applies(settings, cx, request) {
        return FilterResult::Continue;
    }
    let mut active = ActiveFault::new(&fault.stats, cx.shard.id, settings.max_active_faults);
    let cells = fault.stats.shard(cx.shard.id);
    if let Some(delay) = delay(settings, request) {
        if active.start() {
            inc(&cells.delays_injected);
            cx.notes.flag(ResponseFlags::DELAY_INJECTED);
            record_metadata(filter, settings, cx);
            timer::sleep(delay).await;
            // Delays can be followed by aborts (no second overflow check: already active).
            return match abort(settings, request) {
                Some(reply) => {
                    inc(&cells.aborts_injected);
                    FilterResult::Respond(reply)
                }
                None => FilterResult::Continue,
            };
        }
    }
    match abort(settings, request) {
        Some(reply) if active.start() => {
            inc(&cells.aborts_injected);
            record_metadata(filter, settings, cx);
            FilterResult::Respond(reply)
        }
        _ => FilterResult::Continue,
    }
}

/// `filter_metadata` into the stream's dynamic metadata, under the filter's name: a fault was
/// injected.
fn record_metadata(filter: &HttpFilter, settings: &FaultConfig, cx: &StreamContext<'_>) {
    let Some(fields) = settings
        .filter_metadata
        .as_ref()
        .and_then(|m| m.as_object())
    else {
        return;
    };
    let mut metadata = cx.notes.metadata_mut();
    for (key, value) in fields {
        metadata.set(&filter.name, key, value.clone());
    }
}

/// `upstream_cluster`, `downstream_nodes` and `headers` all match.
fn applies(settings: &FaultConfig, cx: &StreamContext<'_>, request: &RequestHead) -> bool {
    if let Some(cluster) = &settings.upstream_cluster {
        if !routes_to(cx, request, cluster) {
            return false;
        }
    }
    if !settings.downstream_nodes.is_empty() {
        let Some(node) = request.headers.get(DOWNSTREAM_NODE) else {
            return false;
        };
        if !settings
            .downstream_nodes
            .iter()
            .any(|n| n.as_bytes() == node)
        {
            return false;
        }
    }
    all_match(&settings.headers, request)
}

/// Whether the route forwards to `cluster`. The router picks among weighted clusters after the
/// filters run, so a weighted route matches when `cluster` is one of its clusters.
fn routes_to(cx: &StreamContext<'_>, request: &RequestHead, cluster: &str) -> bool {
    let Some(RouteAction::Forward(forward)) = cx.route.map(|r| &r.action) else {
        return false;
    };
    match &forward.cluster {
        ClusterSpecifier::Name(name) => name.name == cluster,
        ClusterSpecifier::Weighted(weighted) => weighted
            .clusters
            .clusters
            .iter()
            .any(|(n, _)| n.name == cluster),
        ClusterSpecifier::Header(header) => request
            .headers
            .get(header)
            .is_some_and(|v| v == cluster.as_bytes()),
    }
}

/// The first value of `name` as a base-10 integer.
fn number(request: &RequestHead, name: &str) -> Option<u64> {
    std::str::from_utf8(request.headers.get(name)?)
        .ok()?
        .parse()
        .ok()
}

/// A header-controlled fault's share: the configured one, lowered by the percentage header.
fn header_share(
    configured: FractionalPercent,
    request: &RequestHead,
    name: &str,
) -> FractionalPercent {
    match number(request, name).and_then(|n| u32::try_from(n).ok()) {
        Some(n) => configured.capped(n),
        None => configured,
    }
}

/// The delay to inject, if this request is delayed.
fn delay(settings: &FaultConfig, request: &RequestHead) -> Option<Duration> {
    let delay = settings.delay.as_ref()?;
    let share = match delay.source {
        DelaySource::Fixed(_) => delay.percentage,
        DelaySource::Header => header_share(delay.percentage, request, DELAY_PERCENTAGE),
    };
    if !sampled(share) {
        return None;
    }
    let duration = match delay.source {
        DelaySource::Fixed(d) => d,
        DelaySource::Header => Duration::from_millis(number(request, DELAY_REQUEST)?),
    };
    (!duration.is_zero()).then_some(duration)
}

/// The abort reply, if this request is aborted.
fn abort(settings: &FaultConfig, request: &RequestHead) -> Option<LocalReply> {
    let abort = settings.abort.as_ref()?;
    let share = match abort.source {
        AbortSource::Header => header_share(abort.percentage, request, ABORT_PERCENTAGE),
        _ => abort.percentage,
    };
    if !sampled(share) {
        return None;
    }
    let grpc = match abort.source {
        AbortSource::Http(status) => return Some(http_abort(status, &abort.body)),
        AbortSource::Grpc(status) => status,
        AbortSource::Header => {
            let http = number(request, ABORT_REQUEST).filter(|s| (200..600).contains(s));
            if let Some(status) = http {
                return Some(http_abort(status as u16, &abort.body));
            }
            u32::try_from(number(request, ABORT_GRPC_REQUEST)?).ok()?
        }
    };
    Some(grpc_abort(grpc, &abort.body, request))
}

fn http_abort(status: u16, body: &str) -> LocalReply {
    LocalReply::new(status, Bytes::copy_from_slice(body.as_bytes()))
        .flagged(ResponseFlags::FAULT_INJECTED)
}

/// A gRPC abort: to a gRPC request, a trailers-only 200 with `grpc-status` and `grpc-message`;
/// to any other, a 200 with the body (as Envoy's local replies).
fn grpc_abort(status: u32, body: &str, request: &RequestHead) -> LocalReply {
    let is_grpc = request
        .headers
        .get("content-type")
        .is_some_and(|t| t.starts_with(b"application/grpc"));
    if !is_grpc {
        return http_abort(200, body);
    }
    let mut reply = LocalReply::new(200, Bytes::new()).flagged(ResponseFlags::FAULT_INJECTED);
    reply.headers.append("content-type", "application/grpc");
    reply
        .headers
        .append("grpc-status", Bytes::from(status.to_string()));
    reply
        .headers
        .append("grpc-message", Bytes::from(grpc_message(body)));
    reply
}

/// gRPC's percent-encoding of a status message (printable ASCII except `%` stays).
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One active fault of this stream in `http.<prefix>.fault.active_faults`, counted once and
/// released when the filter is done with the request (dropped with the stream's future if the
/// client goes away mid-delay).
struct ActiveFault<'a> {
    stats: &'a FaultStats,
    shard: usize,
    max: Option<u64>,
    counted: Option<&'a AtomicU64>,
}

impl<'a> ActiveFault<'a> {
    fn new(stats: &'a FaultStats, shard: usize, max: Option<u64>) -> Self {
        Self {
            stats,
            shard,
            max,
            counted: None,
        }
    }

    /// Whether a fault may start: always once one has; else not when `max_active_faults` are
    /// active process-wide (a fuzzy limit, as Envoy's: shards read each other's counts).
    fn start(&mut self) -> bool {
        if self.counted.is_some() {
            return true;
        }
        let cells = self.stats.shard(self.shard);
        if self
            .max
            .is_some_and(|max| self.stats.active_faults() >= max)
        {
            inc(&cells.faults_overflow);
            return false;
        }
        inc(&cells.active_faults);
        self.counted = Some(&cells.active_faults);
        true
    }
}

impl Drop for ActiveFault<'_> {
    fn drop(&mut self) {
        if let Some(cell) = self.counted {
            dec(cell);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        cell::Cell,
        rc::Rc,
        sync::{atomic::Ordering::Relaxed, Arc},
        time::Instant,
    };

    use model::filters::{FaultAbort, FaultDelay, HttpFilterKind};
    use model::matchers::{HeaderMatcher, HeaderRule, HeaderSource};

    use super::{super::on_request as run_request, super::test_support::*, *};
    use crate::rt::executor::Executor;

    fn abort(source: AbortSource, percent: FractionalPercent) -> Option<FaultAbort> {
        Some(FaultAbort {
            source,
            percentage: percent,
            body: "fault filter abort".into(),
        })
    }

    fn delay(source: DelaySource, percent: FractionalPercent) -> Option<FaultDelay> {
        Some(FaultDelay {
            source,
            percentage: percent,
        })
    }

    fn world(chain: FaultConfig, route: Option<FaultConfig>) -> World {
        let filter = HttpFilter {
            name: "fault".into(),
            disabled: false,
            kind: HttpFilterKind::Fault(FaultFilter {
                config: Arc::new(chain),
                stats: Arc::new(FaultStats::new("http.test.fault".into(), 1)),
            }),
        };
        let route = route
            .map(|c| ("fault".to_string(), PerRouteFilter::Fault(Arc::new(c))))
            .into_iter()
            .collect();
        World::new(vec![filter], route, vec![])
    }

    fn stats(world: &World) -> &FaultStats {
        let HttpFilterKind::Fault(f) = &world.filter().kind else {
            unreachable!()
        };
        &f.stats
    }

    /// `(delays_injected, aborts_injected, faults_overflow, active_faults)`.
    fn counts(world: &World) -> [u64; 4] {
        let c = stats(world).shard(0);
        [
            &c.delays_injected,
            &c.aborts_injected,
            &c.faults_overflow,
            &c.active_faults,
        ]
        .map(|s| s.load(Relaxed))
    }

    /// Runs the filter without a delay (no timer needed).
    fn run(world: &World, req: RequestHead) -> FilterResult {
        let cx = world.cx();
        let mut req = req;
        futures_lite::future::block_on(run_request(
            world.filter(),
            &cx,
            &mut req,
            &TestValues,
            None,
        ))
    }

    fn status(result: FilterResult) -> Option<u16> {
        match result {
            FilterResult::Respond(reply) => Some(reply.status),
            FilterResult::Continue => None,
        }
    }

    #[test]
    fn fixed_abort_answers_with_the_status_and_body() {
        let world = world(
            FaultConfig {
                abort: abort(AbortSource::Http(503), FractionalPercent::ALL),
                ..Default::default()
            },
            None,
        );
        let FilterResult::Respond(reply) = run(&world, request("GET", "/", &[])) else {
            panic!("aborted")
        };
        assert_eq!(reply.status, 503);
        assert_eq!(&reply.body[..], b"fault filter abort");
        assert!(reply.flags.contains(ResponseFlags::FAULT_INJECTED));
        assert_eq!(
            counts(&world),
            [0, 1, 0, 0],
            "active only while the filter runs"
        );
    }

    #[test]
    fn percentages_pick_a_share() {
        let world = world(
            FaultConfig {
                abort: abort(
                    AbortSource::Http(500),
                    FractionalPercent {
                        numerator: 250_000,
                        denominator: 1_000_000,
                    },
                ),
                ..Default::default()
            },
            None,
        );
        let aborted = (0..4000)
            .filter(|_| status(run(&world, request("GET", "/", &[]))).is_some())
            .count();
        assert!((700..1300).contains(&aborted), "{aborted} of 4000 at 25 %");
        let none = self::world(
            FaultConfig {
                abort: abort(AbortSource::Http(500), FractionalPercent::NONE),
                ..Default::default()
            },
            None,
        );
        assert_eq!(status(run(&none, request("GET", "/", &[]))), None);
    }

    #[test]
    fn header_controlled_abort() {
        let world = world(
            FaultConfig {
                abort: abort(AbortSource::Header, FractionalPercent::ALL),
                ..Default::default()
            },
            None,
        );
        let with = |h: &[(&str, &str)]| status(run(&world, request("GET", "/", h)));
        assert_eq!(with(&[]), None, "no header, no abort");
        assert_eq!(with(&[(ABORT_REQUEST, "429")]), Some(429));
        assert_eq!(with(&[(ABORT_REQUEST, "700")]), None, "outside [200, 600)");
        assert_eq!(with(&[(ABORT_REQUEST, "x")]), None);
        assert_eq!(
            with(&[(ABORT_REQUEST, "503"), (ABORT_PERCENTAGE, "0")]),
            None,
            "the percentage header lowers the share"
        );
        assert_eq!(
            with(&[(ABORT_REQUEST, "503"), (ABORT_PERCENTAGE, "1000")]),
            Some(503),
            "but cannot raise it past the configured one"
        );
        // A gRPC status from its header, as a trailers-only reply to a gRPC request.
        let FilterResult::Respond(reply) = run(
            &world,
            request(
                "POST",
                "/svc/M",
                &[
                    (ABORT_GRPC_REQUEST, "14"),
                    ("content-type", "application/grpc"),
                ],
            ),
        ) else {
            panic!()
        };
        assert_eq!(reply.status, 200);
        assert_eq!(header(&reply.headers, "grpc-status"), Some("14"));
        assert_eq!(
            header(&reply.headers, "grpc-message"),
            Some("fault filter abort")
        );
        assert!(reply.body.is_empty());
        // The configured percentage caps header faults too.
        let capped = self::world(
            FaultConfig {
                abort: abort(AbortSource::Header, FractionalPercent::NONE),
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            status(run(&capped, request("GET", "/", &[(ABORT_REQUEST, "503")]))),
            None
        );
    }

    #[test]
    fn grpc_abort_to_a_plain_request_is_a_200_with_the_body() {
        let world = world(
            FaultConfig {
                abort: abort(AbortSource::Grpc(5), FractionalPercent::ALL),
                ..Default::default()
            },
            None,
        );
        let FilterResult::Respond(reply) = run(&world, request("GET", "/", &[])) else {
            panic!()
        };
        assert_eq!(reply.status, 200);
        assert_eq!(&reply.body[..], b"fault filter abort");
        assert_eq!(grpc_message("50% off\n"), "50%25 off%0A");
    }

    #[test]
    fn match_conditions_restrict_faults() {
        let matcher = HeaderMatcher {
            source: HeaderSource::Named("x-canary".into()),
            rule: HeaderRule::Present(true),
            invert: false,
            treat_missing_as_empty: false,
        };
        let base = || FaultConfig {
            abort: abort(AbortSource::Http(503), FractionalPercent::ALL),
            ..Default::default()
        };
        let world = world(
            FaultConfig {
                headers: vec![matcher],
                downstream_nodes: vec!["node-a".into()],
                upstream_cluster: Some(CLUSTER.into()),
                ..base()
            },
            None,
        );
        let all = [("x-canary", "1"), (DOWNSTREAM_NODE, "node-a")];
        assert_eq!(status(run(&world, request("GET", "/", &all))), Some(503));
        assert_eq!(status(run(&world, request("GET", "/", &all[..1]))), None);
        assert_eq!(status(run(&world, request("GET", "/", &all[1..]))), None);
        let other_node = [("x-canary", "1"), (DOWNSTREAM_NODE, "node-b")];
        assert_eq!(status(run(&world, request("GET", "/", &other_node))), None);
        let elsewhere = self::world(
            FaultConfig {
                upstream_cluster: Some("other".into()),
                ..base()
            },
            None,
        );
        assert_eq!(status(run(&elsewhere, request("GET", "/", &[]))), None);
    }

    #[test]
    fn a_route_config_replaces_the_chains() {
        let chain = FaultConfig {
            abort: abort(AbortSource::Http(500), FractionalPercent::ALL),
            ..Default::default()
        };
        let route = FaultConfig {
            abort: abort(AbortSource::Http(418), FractionalPercent::ALL),
            ..Default::default()
        };
        let world = world(chain, Some(route));
        assert_eq!(status(run(&world, request("GET", "/", &[]))), Some(418));
        assert_eq!(counts(&world)[1], 1, "counted in the chain's stats");
    }

    #[test]
    fn max_active_faults_overflows() {
        let world = world(
            FaultConfig {
                abort: abort(AbortSource::Http(503), FractionalPercent::ALL),
                max_active_faults: Some(1),
                ..Default::default()
            },
            None,
        );
        // Another stream's fault is active (as during its delay).
        inc(&stats(&world).shard(0).active_faults);
        assert_eq!(status(run(&world, request("GET", "/", &[]))), None);
        assert_eq!(counts(&world), [0, 0, 1, 1]);
        dec(&stats(&world).shard(0).active_faults);
        assert_eq!(status(run(&world, request("GET", "/", &[]))), Some(503));
    }

    /// Runs the filter on the shard runtime (delays sleep on its timers): the result, how long
    /// it took, and the active faults seen mid-delay.
    fn run_timed(
        chain: FaultConfig,
        headers: &'static [(&'static str, &'static str)],
    ) -> (Option<u16>, Duration, u64, [u64; 4], ResponseFlags) {
        let ex = Executor::new().unwrap();
        ex.run(async move {
            let world = Rc::new(world(chain, None));
            let seen = Rc::new(Cell::new(0));
            let (w, s) = (world.clone(), seen.clone());
            crate::rt::spawn_local(async move {
                timer::sleep(Duration::from_millis(20)).await;
                s.set(stats(&w).active_faults());
            })
            .detach();
            let cx = world.cx();
            let mut req = request("GET", "/", headers);
            let start = Instant::now();
            let result = run_request(world.filter(), &cx, &mut req, &TestValues, None).await;
            let took = start.elapsed();
            (
                status(result),
                took,
                seen.get(),
                counts(&world),
                cx.notes.flags(),
            )
        })
    }

    #[test]
    fn fixed_delay_then_continue() {
        let (status, took, active_mid_delay, counts, flags) = run_timed(
            FaultConfig {
                delay: delay(
                    DelaySource::Fixed(Duration::from_millis(60)),
                    FractionalPercent::ALL,
                ),
                ..Default::default()
            },
            &[],
        );
        assert_eq!(status, None);
        assert!(took >= Duration::from_millis(60), "{took:?}");
        assert_eq!(active_mid_delay, 1);
        assert_eq!(counts, [1, 0, 0, 0], "released after the delay");
        assert!(flags.contains(ResponseFlags::DELAY_INJECTED));
    }

    #[test]
    fn header_delay_then_abort() {
        let (status, took, _, counts, flags) = run_timed(
            FaultConfig {
                delay: delay(DelaySource::Header, FractionalPercent::ALL),
                abort: abort(AbortSource::Http(504), FractionalPercent::ALL),
                ..Default::default()
            },
            &[(DELAY_REQUEST, "40")],
        );
        assert_eq!(status, Some(504));
        assert!(took >= Duration::from_millis(40), "{took:?}");
        assert_eq!(counts, [1, 1, 0, 0]);
        assert!(flags.contains(ResponseFlags::DELAY_INJECTED));
        // Without the header (or with 0 ms) there is no delay.
        let (_, took, _, counts, _) = run_timed(
            FaultConfig {
                delay: delay(DelaySource::Header, FractionalPercent::ALL),
                ..Default::default()
            },
            &[(DELAY_REQUEST, "0")],
        );
        assert!(took < Duration::from_millis(40));
        assert_eq!(counts, [0, 0, 0, 0]);
    }
}
