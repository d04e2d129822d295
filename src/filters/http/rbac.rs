//! HTTP filters: `envoy.filters.http.rbac` — the route's rules (`RBACPerRoute`), else the
//! filter's, judge the request on its connection; shadow rules are only counted (and their
//! verdict written as dynamic metadata for the filters after, as Envoy does); a denied
//! request gets Envoy's 403 `RBAC: access denied`, with the policy that decided in its
//! response code details (no response flag, as Envoy 1.40).
use std::{cell::Ref, net::SocketAddr};

use model::{
    filters::{HttpFilter, PerRouteFilter},
    metadata::DynamicMetadata,
    rbac::{RbacFilter, Subject},
    route::RouteRequest,
    tls_info::CertificateInfo,
};

use crate::stream::{headers::RequestHead, FilterResult, LocalReply, StreamContext};

/// Envoy's body for a denied request.
const BODY: &str = "RBAC: access denied";

pub(super) fn on_request(
    filter: &HttpFilter,
    config: &RbacFilter,
    cx: &StreamContext<'_>,
    request: &RequestHead,
) -> FilterResult {
    let rules = match cx.per_filter(&filter.name) {
        Some(PerRouteFilter::Rbac(route)) => route,
        _ => &config.rules,
    };
    let subject = Request {
        cx,
        request,
        metadata: cx.notes.metadata(),
    };
    let checked = config.check(rules, cx.shard.id, &subject);
    drop(subject);
    if let Some(shadow) = &checked.shadow {
        config.record_shadow(shadow, &mut cx.notes.metadata_mut());
    }
    match checked.verdict {
        Ok(()) => FilterResult::Continue,
        Err(denied) => FilterResult::Respond(LocalReply::new(403, BODY).detailed(denied.details())),
    }
}

/// A request as the rules read it.
struct Request<'a> {
    cx: &'a StreamContext<'a>,
    request: &'a RequestHead,
    metadata: Ref<'a, DynamicMetadata>,
}

impl Subject for Request<'_> {
    fn remote(&self) -> SocketAddr {
        self.cx.downstream.remote
    }

    fn local(&self) -> SocketAddr {
        self.cx.downstream.local
    }

    fn requested_server_name(&self) -> &str {
        self.cx.downstream.requested_server_name
    }

    fn peer_certificate(&self) -> Option<Option<&CertificateInfo>> {
        self.cx.downstream.tls.map(|tls| tls.peer())
    }

    fn filter_state(&self, key: &str) -> Option<&str> {
        self.cx.filter_state.get(key)
    }

    fn dynamic_metadata(&self) -> &DynamicMetadata {
        &self.metadata
    }

    fn request(&self) -> Option<&dyn RouteRequest> {
        Some(self.request)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{atomic::Ordering::Relaxed, Arc};

    use model::{
        filter_stats::{RbacShadowStats, RbacStats},
        filters::HttpFilterKind,
        matchers::{StringMatcher, StringPattern},
        rbac::{Action, Permission, Policy, Principal, RbacRules, Rules},
    };

    use super::{super::test_support::*, *};

    /// ALLOW rules: `GET` on paths under `/info` from the test connection's peer.
    fn allow_info() -> RbacRules {
        let prefix = StringMatcher::new(StringPattern::Prefix((*b"/info").into()), false);
        let peer = model::filter_chain_match::Cidr::new("10.0.0.1".parse().unwrap(), 32);
        RbacRules {
            enforced: Some(Rules {
                action: Action::Allow,
                policies: vec![Policy {
                    name: "info".into(),
                    permissions: vec![Permission::UrlPath(prefix)],
                    principals: vec![Principal::RemoteIp(peer.unwrap())],
                }],
            }),
            shadow: None,
        }
    }

    fn world(route: Option<RbacRules>) -> World {
        let filter = HttpFilter {
            name: "rbac".into(),
            disabled: false,
            kind: HttpFilterKind::Rbac(Arc::new(RbacFilter {
                rules: Arc::new(allow_info()),
                stats: Arc::new(RbacStats::new("http.test.rbac".into(), 1)),
                shadow_stats: Arc::new(RbacShadowStats::new("http.test.rbac".into(), 1)),
                shadow_keys: model::rbac::ShadowKeys::new(""),
            })),
        };
        let route = route
            .map(|r| ("rbac".to_string(), PerRouteFilter::Rbac(Arc::new(r))))
            .into_iter()
            .collect();
        World::new(vec![filter], route, vec![])
    }

    fn run(world: &World, path: &str) -> FilterResult {
        let HttpFilterKind::Rbac(config) = &world.filter().kind else {
            unreachable!()
        };
        on_request(
            world.filter(),
            config,
            &world.cx(),
            &request("GET", path, &[]),
        )
    }

    #[test]
    fn denied_requests_get_envoys_reply_and_are_counted() {
        let world = world(None);
        assert!(matches!(run(&world, "/info?q"), FilterResult::Continue));
        let FilterResult::Respond(reply) = run(&world, "/admin") else {
            panic!("denied")
        };
        assert_eq!(reply.status, 403);
        assert_eq!(&reply.body[..], b"RBAC: access denied");
        assert_eq!(
            reply.details.as_deref(),
            Some("rbac_access_denied_matched_policy[none]")
        );
        assert!(reply.flags.is_empty(), "Envoy 1.40 sets no response flag");
        let HttpFilterKind::Rbac(config) = &world.filter().kind else {
            unreachable!()
        };
        let cells = config.stats.shard(0);
        assert_eq!(
            (cells.allowed.load(Relaxed), cells.denied.load(Relaxed)),
            (1, 1)
        );
    }

    #[test]
    fn a_route_without_rules_allows_everything() {
        let world = world(Some(RbacRules::default()));
        assert!(matches!(run(&world, "/admin"), FilterResult::Continue));
        let HttpFilterKind::Rbac(config) = &world.filter().kind else {
            unreachable!()
        };
        assert_eq!(config.stats.shard(0).allowed.load(Relaxed), 0, "uncounted");
    }
}
