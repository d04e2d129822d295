//! HTTP filters: dispatch from the configured filter kind to its implementation, and what the
//! filters share (whether a filter runs on a route, percentages).
//!
//! Filters never lock: their state is the stream's (`StreamContext`), their shard's stat cells,
//! and for the local rate limit the process-wide token bucket (one compare-and-swap per lease,
//! see `model::filters::token_bucket`), which the process-wide rate requires.
mod connect;
mod cors;
mod ext_authz;
mod fault;
pub mod grpc_stats;
mod grpc_web;
pub mod header_mutation;
mod istio_authn;
mod local_ratelimit;
mod peer_metadata;
mod rbac;

use model::filters::{FractionalPercent, HttpFilter, HttpFilterKind, PerRouteFilter};

use crate::stream::{
    body::RequestBody,
    headers::{RequestHead, ResponseHead},
    mutations::Formatter,
    FilterResult, StreamContext,
};

/// Runs `filter` on a request (after route selection, before the router); `values` renders the
/// `%COMMAND%` header values it adds; `body` is the request's body (not for a CONNECT), which
/// a filter may read ahead of the router.
pub async fn on_request(
    filter: &HttpFilter,
    cx: &StreamContext<'_>,
    request: &mut RequestHead,
    values: &dyn Formatter,
    body: Option<&mut RequestBody<'_>>,
) -> FilterResult {
    if !runs_here(filter, cx) {
        return FilterResult::Continue;
    }
    match &filter.kind {
        HttpFilterKind::Fault(fault) => fault::on_request(filter, fault, cx, request).await,
        HttpFilterKind::Cors(stats) => cors::on_request(filter, stats, cx, request),
        HttpFilterKind::LocalRateLimit(config) => {
            local_ratelimit::on_request(filter, config, cx, request, values)
        }
        HttpFilterKind::HeaderMutation(config) => {
            header_mutation::on_request(filter, config, cx, request, values);
            FilterResult::Continue
        }
        // Tracked by the stream once its cluster is known (`grpc_stats::GrpcCall`).
        HttpFilterKind::GrpcStats(_) => FilterResult::Continue,
        // Recorded by the connection manager when the exchange ends.
        HttpFilterKind::IstioStats(_) => FilterResult::Continue,
        HttpFilterKind::GrpcWeb => {
            grpc_web::on_request(cx, request);
            FilterResult::Continue
        }
        HttpFilterKind::IstioAlpn(overrides) => {
            cx.notes.set_alpn(overrides.clone());
            FilterResult::Continue
        }
        HttpFilterKind::PeerMetadata(config) => {
            peer_metadata::on_request(config, cx, request);
            FilterResult::Continue
        }
        HttpFilterKind::Rbac(config) => rbac::on_request(filter, config, cx, request),
        HttpFilterKind::IstioAuthnPolicy(policy) => istio_authn::on_request(policy, cx),
        HttpFilterKind::ExtAuthz(config) => {
            ext_authz::on_request(filter, config, cx, request, body).await
        }
        HttpFilterKind::ConnectAuthority => {
            connect::authority(filter, cx, request);
            FilterResult::Continue
        }
        HttpFilterKind::ConnectBaggage => {
            connect::baggage(cx, request);
            FilterResult::Continue
        }
    }
}

/// Runs `filter` on a response (upstream or local) to `request`.
pub fn on_response(
    filter: &HttpFilter,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    response: &mut ResponseHead,
    values: &dyn Formatter,
) {
    if !runs_here(filter, cx) {
        return;
    }
    match &filter.kind {
        HttpFilterKind::Fault(_)
        | HttpFilterKind::LocalRateLimit(_)
        | HttpFilterKind::GrpcStats(_)
        | HttpFilterKind::IstioStats(_)
        | HttpFilterKind::IstioAlpn(_)
        | HttpFilterKind::Rbac(_)
        | HttpFilterKind::IstioAuthnPolicy(_)
        | HttpFilterKind::ConnectAuthority
        | HttpFilterKind::ConnectBaggage => {}
        HttpFilterKind::ExtAuthz(_) => ext_authz::on_response(cx, response),
        HttpFilterKind::Cors(_) => cors::on_response(filter, cx, request, response),
        HttpFilterKind::HeaderMutation(config) => {
            header_mutation::on_response(filter, config, cx, request, response, values)
        }
        HttpFilterKind::GrpcWeb => grpc_web::on_response(cx, response),
        HttpFilterKind::PeerMetadata(config) => peer_metadata::on_response(config, cx, response),
    }
}

/// Envoy's rule: the route's `typed_per_filter_config`, else the virtual host's, may disable
/// the filter (`FilterConfig { disabled: true }`) or enable it (any other entry); without one,
/// the filter runs unless it is `disabled` in the chain.
fn runs_here(filter: &HttpFilter, cx: &StreamContext<'_>) -> bool {
    let says = cx
        .route
        .and_then(|r| r.per_filter.disabled(&filter.name))
        .or_else(|| {
            cx.virtual_host
                .and_then(|v| v.per_filter.disabled(&filter.name))
        });
    !says.unwrap_or(filter.disabled)
}

/// The route's and the virtual host's per-route configs for `filter`, most specific first
/// (filters that merge levels read both; the others take `StreamContext::per_filter`).
fn per_route_levels<'a>(
    filter: &HttpFilter,
    cx: &StreamContext<'a>,
) -> [Option<&'a PerRouteFilter>; 2] {
    [
        cx.route.and_then(|r| r.per_filter.get(&filter.name)),
        cx.virtual_host.and_then(|v| v.per_filter.get(&filter.name)),
    ]
}

/// A draw against a share of requests (no draw at 0 % or 100 %).
fn sampled(share: FractionalPercent) -> bool {
    if share.numerator == 0 {
        return false;
    }
    share.is_all() || share.contains(fastrand::u32(0..share.denominator))
}

/// The filter's position in its chain (a bit of `StreamNotes` marks).
fn position(filter: &HttpFilter, cx: &StreamContext<'_>) -> usize {
    cx.hcm
        .filters
        .iter()
        .position(|f| std::ptr::eq(f, filter))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use model::filters::{HeaderMutationConfig, Mutations};

    use super::{test_support::*, *};

    fn filter(disabled: bool) -> HttpFilter {
        HttpFilter {
            name: "hm".into(),
            disabled,
            kind: HttpFilterKind::HeaderMutation(Arc::new(HeaderMutationConfig {
                mutations: Mutations::default(),
                most_specific_wins: false,
            })),
        }
    }

    #[test]
    fn per_route_entries_disable_and_enable_filters() {
        let on = |disabled, route: Vec<_>, vhost: Vec<_>| {
            let world = World::new(vec![filter(disabled)], route, vhost);
            runs_here(&world.hcm.filters[0], &world.cx())
        };
        let entry = |f| vec![("hm".to_string(), f)];
        assert!(on(false, vec![], vec![]));
        assert!(!on(true, vec![], vec![]));
        assert!(on(true, vec![], entry(PerRouteFilter::Enabled)));
        assert!(!on(false, vec![], entry(PerRouteFilter::Disabled)));
        // The route's word wins over the virtual host's.
        assert!(on(
            true,
            entry(PerRouteFilter::Enabled),
            entry(PerRouteFilter::Disabled)
        ));
        assert!(!on(
            false,
            entry(PerRouteFilter::Disabled),
            entry(PerRouteFilter::Enabled)
        ));
        // A per-route config enables a disabled filter too.
        let config = PerRouteFilter::HeaderMutation(Arc::new(Mutations::default()));
        assert!(on(true, entry(config), vec![]));
    }

    #[test]
    fn sampling_edges_and_share() {
        assert!(!sampled(FractionalPercent::NONE));
        assert!(sampled(FractionalPercent::ALL));
        let half = FractionalPercent {
            numerator: 5_000,
            denominator: 10_000,
        };
        let hits = (0..10_000).filter(|_| sampled(half)).count();
        assert!((4_000..6_000).contains(&hits), "{hits}");
    }

    #[test]
    fn positions_follow_the_chain() {
        let world = World::new(vec![filter(false), filter(false)], vec![], vec![]);
        let cx = world.cx();
        assert_eq!(position(&world.hcm.filters[1], &cx), 1);
    }
}
