//! HTTP filters: `envoy.filters.http.local_ratelimit` — a process-wide token bucket per config
//! (the route's, else the chain's); a limited request gets the configured status (Envoy 1.40
//! adds no `x-envoy-ratelimited`), or when not enforced goes on with the configured request
//! headers.
use std::sync::Arc;

use bytes::Bytes;
use model::{
    access_log::ResponseFlags,
    filters::{HttpFilter, LocalRateLimitConfig, PerRouteFilter},
    stats::inc,
};

use super::sampled;
use crate::stream::{
    headers::RequestHead,
    mutations::{add_header, Formatter},
    FilterResult, LocalReply, StreamContext,
};

/// Envoy's body for a limited request.
const BODY: &str = "local_rate_limited";

pub(super) fn on_request(
    filter: &HttpFilter,
    config: &Arc<LocalRateLimitConfig>,
    cx: &StreamContext<'_>,
    request: &mut RequestHead,
    values: &dyn Formatter,
) -> FilterResult {
    let config = match cx.per_filter(&filter.name) {
        Some(PerRouteFilter::LocalRateLimit(route)) => route,
        _ => config,
    };
    if !sampled(config.filter_enabled) {
        return FilterResult::Continue;
    }
    let cells = config.stats.shard(cx.shard.id);
    inc(&cells.enabled);
    // The stream's start time stands in for "now": read once by the connection manager.
    let allowed = config
        .bucket
        .as_ref()
        .is_none_or(|b| b.try_acquire(cx.shard.id, cx.started));
    if allowed {
        inc(&cells.ok);
        return FilterResult::Continue;
    }
    inc(&cells.rate_limited);
    if !sampled(config.filter_enforced) {
        for add in &config.request_headers_to_add_when_not_enforced {
            let value = values.value(&add.value, request, None);
            add_header(add, value, &mut request.headers);
        }
        return FilterResult::Continue;
    }
    inc(&cells.enforced);
    FilterResult::Respond(limited_reply(config, cx, request, values))
}

fn limited_reply(
    config: &LocalRateLimitConfig,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    values: &dyn Formatter,
) -> LocalReply {
    let mut reply = LocalReply::new(config.status, Bytes::from_static(BODY.as_bytes()))
        .flagged(ResponseFlags::RATE_LIMITED);
    for add in &config.response_headers_to_add {
        let value = values.value(&add.value, request, None);
        add_header(add, value, &mut reply.headers);
    }
    if config.enable_retry_after && config.status == 429 && !reply.headers.contains("retry-after") {
        if let Some(bucket) = &config.bucket {
            let wait = bucket.until_next_fill(cx.started);
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            reply
                .headers
                .append("retry-after", Bytes::from(seconds.max(1).to_string()));
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::Ordering::Relaxed,
        time::{Duration, Instant},
    };

    use model::{
        filter_stats::LocalRateLimitStats,
        filters::{token_bucket::TokenBucket, FractionalPercent, HttpFilterKind},
        route::{AppendAction, HeaderAdd},
    };

    use super::{super::on_request as run_request, super::test_support::*, *};

    fn config(
        max_tokens: u32,
        enabled: FractionalPercent,
        enforced: FractionalPercent,
    ) -> LocalRateLimitConfig {
        let header = |name: &str, value: &str| HeaderAdd {
            name: name.to_owned().into(),
            value: value.into(),
            action: AppendAction::AppendIfExistsOrAdd,
            keep_empty: false,
        };
        LocalRateLimitConfig {
            bucket: Some(TokenBucket::new(
                max_tokens,
                1,
                Duration::from_secs(60),
                1,
                Instant::now(),
            )),
            status: 429,
            filter_enabled: enabled,
            filter_enforced: enforced,
            response_headers_to_add: vec![header("x-local-rate-limit", "true")],
            request_headers_to_add_when_not_enforced: vec![header("x-would-limit", "1")],
            enable_retry_after: true,
            stats: Arc::new(LocalRateLimitStats::new(
                "rl.http_local_rate_limit".into(),
                1,
            )),
        }
    }

    fn world(chain: LocalRateLimitConfig, route: Option<LocalRateLimitConfig>) -> World {
        let filter = HttpFilter {
            name: "rl".into(),
            disabled: false,
            kind: HttpFilterKind::LocalRateLimit(Arc::new(chain)),
        };
        let route = route
            .map(|c| {
                (
                    "rl".to_string(),
                    PerRouteFilter::LocalRateLimit(Arc::new(c)),
                )
            })
            .into_iter()
            .collect();
        World::new(vec![filter], route, vec![])
    }

    fn run(world: &World) -> (FilterResult, RequestHead) {
        let cx = world.cx();
        let mut req = request("GET", "/", &[]);
        let result = futures_lite::future::block_on(run_request(
            world.filter(),
            &cx,
            &mut req,
            &TestValues,
            None,
        ));
        (result, req)
    }

    /// `(enabled, enforced, rate_limited, ok)`.
    fn counts(config: &LocalRateLimitConfig) -> [u64; 4] {
        let c = config.stats.shard(0);
        [&c.enabled, &c.enforced, &c.rate_limited, &c.ok].map(|s| s.load(Relaxed))
    }

    fn chain_config(world: &World) -> &LocalRateLimitConfig {
        let HttpFilterKind::LocalRateLimit(c) = &world.filter().kind else {
            unreachable!()
        };
        c
    }

    #[test]
    fn limits_to_the_bucket_and_answers_like_envoy() {
        let world = world(
            config(2, FractionalPercent::ALL, FractionalPercent::ALL),
            None,
        );
        assert!(matches!(run(&world).0, FilterResult::Continue));
        assert!(matches!(run(&world).0, FilterResult::Continue));
        let FilterResult::Respond(reply) = run(&world).0 else {
            panic!("third request is limited")
        };
        assert_eq!(reply.status, 429);
        assert_eq!(&reply.body[..], b"local_rate_limited");
        assert!(reply.flags.contains(ResponseFlags::RATE_LIMITED));
        assert_eq!(header(&reply.headers, "x-envoy-ratelimited"), None);
        assert_eq!(header(&reply.headers, "x-local-rate-limit"), Some("true"));
        let retry: u64 = header(&reply.headers, "retry-after")
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(counts(chain_config(&world)), [3, 1, 1, 2]);
    }

    #[test]
    fn not_enforced_goes_on_with_request_headers() {
        let world = world(
            config(1, FractionalPercent::ALL, FractionalPercent::NONE),
            None,
        );
        let (first, req) = run(&world);
        assert!(matches!(first, FilterResult::Continue));
        assert!(!req.headers.contains("x-would-limit"));
        let (second, req) = run(&world);
        assert!(matches!(second, FilterResult::Continue));
        assert_eq!(header(&req.headers, "x-would-limit"), Some("1"));
        assert_eq!(counts(chain_config(&world)), [2, 0, 1, 1]);
    }

    #[test]
    fn disabled_by_default_share() {
        let world = world(
            config(1, FractionalPercent::NONE, FractionalPercent::ALL),
            None,
        );
        for _ in 0..3 {
            assert!(matches!(run(&world).0, FilterResult::Continue));
        }
        assert_eq!(counts(chain_config(&world)), [0, 0, 0, 0]);
    }

    #[test]
    fn a_route_config_brings_its_own_bucket_and_stats() {
        let chain = LocalRateLimitConfig {
            bucket: None,
            ..config(1, FractionalPercent::ALL, FractionalPercent::ALL)
        };
        let route = config(1, FractionalPercent::ALL, FractionalPercent::ALL);
        let world = world(chain, Some(route));
        assert!(matches!(run(&world).0, FilterResult::Continue));
        assert!(matches!(run(&world).0, FilterResult::Respond(_)));
        assert_eq!(counts(chain_config(&world)), [0, 0, 0, 0]);
        // Without a route config, a chain config without a bucket limits nothing.
        let world = self::world(
            LocalRateLimitConfig {
                bucket: None,
                ..config(1, FractionalPercent::ALL, FractionalPercent::ALL)
            },
            None,
        );
        for _ in 0..3 {
            assert!(matches!(run(&world).0, FilterResult::Continue));
        }
        assert_eq!(counts(chain_config(&world)), [3, 0, 0, 3]);
    }

    #[test]
    fn a_configured_retry_after_is_kept() {
        let mut c = config(1, FractionalPercent::ALL, FractionalPercent::ALL);
        c.response_headers_to_add.push(HeaderAdd {
            name: "retry-after".into(),
            value: "120".into(),
            action: AppendAction::OverwriteIfExistsOrAdd,
            keep_empty: false,
        });
        let world = world(c, None);
        run(&world);
        let FilterResult::Respond(reply) = run(&world).0 else {
            panic!()
        };
        assert_eq!(all(&reply.headers, "retry-after"), ["120"]);
    }
}
