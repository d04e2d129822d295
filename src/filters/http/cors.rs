//! HTTP filters: `envoy.filters.http.cors` — answers preflights locally, adds CORS headers to
//! responses of allowed origins, with the route's and virtual host's `CorsPolicy` (each field
//! from the most specific policy that sets it, as Envoy).
use bytes::Bytes;
use model::{
    filter_stats::CorsStats,
    filters::{CorsPolicy, HttpFilter, PerRouteFilter},
    route::RouteAction,
    stats::inc,
};

use super::{per_route_levels, position, sampled};
use crate::stream::{
    headers::{RequestHead, ResponseHead},
    FilterResult, LocalReply, StreamContext,
};

/// The policies in force on a stream, most specific first.
struct Policies<'a>([Option<&'a CorsPolicy>; 2]);

impl<'a> Policies<'a> {
    fn of(filter: &HttpFilter, cx: &StreamContext<'a>) -> Self {
        Self(per_route_levels(filter, cx).map(|level| match level {
            Some(PerRouteFilter::Cors(policy)) => Some(&**policy),
            _ => None,
        }))
    }

    fn iter(&self) -> impl Iterator<Item = &'a CorsPolicy> + '_ {
        self.0.iter().flatten().copied()
    }

    /// The most specific policy that sets a field.
    fn first<T>(&self, field: impl Fn(&'a CorsPolicy) -> Option<T>) -> Option<T> {
        self.iter().find_map(field)
    }

    fn text(&self, field: impl Fn(&'a CorsPolicy) -> &'a str) -> &'a str {
        self.first(|p| Some(field(p)).filter(|s| !s.is_empty()))
            .unwrap_or("")
    }

    fn allow_credentials(&self) -> bool {
        self.first(|p| p.allow_credentials).unwrap_or(false)
    }

    /// Envoy: a matcher that matches `*` allows every origin.
    fn origin_allowed(&self, origin: &[u8]) -> bool {
        self.first(|p| Some(&p.allow_origins).filter(|o| !o.is_empty()))
            .is_some_and(|matchers| {
                matchers
                    .iter()
                    .any(|m| m.matches(b"*") || m.matches(origin))
            })
    }
}

pub(super) fn on_request(
    filter: &HttpFilter,
    stats: &CorsStats,
    cx: &StreamContext<'_>,
    request: &RequestHead,
) -> FilterResult {
    // Envoy applies CORS on forwarding routes only (not redirects or direct responses).
    if !matches!(cx.route.map(|r| &r.action), Some(RouteAction::Forward(_))) {
        return FilterResult::Continue;
    }
    let policies = Policies::of(filter, cx);
    // Only the most specific policy says whether CORS is on (Envoy).
    let Some(policy) = policies.iter().next() else {
        return FilterResult::Continue;
    };
    let enabled = policy.filter_enabled.is_none_or(sampled);
    let shadow = policy.shadow_enabled.is_some_and(sampled);
    if !enabled && !shadow {
        return FilterResult::Continue;
    }
    let Some(origin) = request.headers.get("origin").filter(|o| !o.is_empty()) else {
        return FilterResult::Continue;
    };
    let allowed = policies.origin_allowed(origin);
    let cells = stats.shard(cx.shard.id);
    inc(if allowed {
        &cells.origin_valid
    } else {
        &cells.origin_invalid
    });
    if !enabled {
        return FilterResult::Continue;
    }
    if allowed {
        cx.notes.mark(position(filter, cx));
    }
    if request.method != "OPTIONS" {
        return FilterResult::Continue;
    }
    let Some(requested_method) = request
        .headers
        .get("access-control-request-method")
        .filter(|m| !m.is_empty())
    else {
        return FilterResult::Continue;
    };
    let forward_unmatched = policies
        .first(|p| p.forward_not_matching_preflights)
        .unwrap_or(true);
    if !allowed && forward_unmatched {
        return FilterResult::Continue;
    }
    FilterResult::Respond(preflight(
        &policies,
        request,
        allowed.then_some(origin),
        requested_method,
    ))
}

/// The local 200 answering a preflight, with the access-control-* headers.
fn preflight(
    policies: &Policies<'_>,
    request: &RequestHead,
    origin: Option<&Bytes>,
    requested_method: &Bytes,
) -> LocalReply {
    let mut reply = LocalReply::new(200, Bytes::new());
    let h = &mut reply.headers;
    if let Some(origin) = origin {
        h.append("access-control-allow-origin", origin.clone());
    }
    if policies.allow_credentials() {
        h.append("access-control-allow-credentials", "true");
    }
    let copy = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    match policies.text(|p| &p.allow_methods) {
        "" => {}
        "*" => h.append("access-control-allow-methods", requested_method.clone()),
        methods => h.append("access-control-allow-methods", copy(methods)),
    }
    match policies.text(|p| &p.allow_headers) {
        "" => {}
        "*" => {
            if let Some(requested) = request.headers.get("access-control-request-headers") {
                h.append("access-control-allow-headers", requested.clone());
            }
        }
        headers => h.append("access-control-allow-headers", copy(headers)),
    }
    match policies.text(|p| &p.max_age) {
        "" => {}
        max_age => h.append("access-control-max-age", copy(max_age)),
    }
    let private_network = request
        .headers
        .get("access-control-request-private-network")
        .is_some_and(|v| v == "true");
    if private_network
        && policies
            .first(|p| p.allow_private_network_access)
            .unwrap_or(false)
    {
        h.append("access-control-allow-private-network", "true");
    }
    reply
}

/// A response to an allowed CORS request gets the origin (and credentials, exposed headers).
pub(super) fn on_response(
    filter: &HttpFilter,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    response: &mut ResponseHead,
) {
    if !cx.notes.is_marked(position(filter, cx)) {
        return;
    }
    let Some(origin) = request.headers.get("origin") else {
        return;
    };
    let h = &mut response.headers;
    h.set("access-control-allow-origin", origin.clone());
    let policies = Policies::of(filter, cx);
    if policies.allow_credentials() {
        h.set("access-control-allow-credentials", "true");
    }
    match policies.text(|p| &p.expose_headers) {
        "" => {}
        expose => h.set(
            "access-control-expose-headers",
            Bytes::copy_from_slice(expose.as_bytes()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use model::filters::{FractionalPercent, HttpFilterKind};
    use model::matchers::{StringMatcher, StringPattern};

    use super::{
        super::{on_request as run_request, on_response as run_response, test_support::*},
        *,
    };
    use crate::stream::headers::Headers;

    fn exact(origin: &str) -> StringMatcher {
        StringMatcher::new(StringPattern::Exact(origin.as_bytes().into()), false)
    }

    fn policy() -> CorsPolicy {
        CorsPolicy {
            allow_origins: vec![exact("https://a.example")],
            allow_methods: "GET, PUT".into(),
            allow_headers: "x-custom".into(),
            expose_headers: "x-exposed".into(),
            max_age: "600".into(),
            allow_credentials: Some(true),
            ..Default::default()
        }
    }

    fn world(route: Option<CorsPolicy>, vhost: Option<CorsPolicy>) -> World {
        let entry = |p: Option<CorsPolicy>| {
            p.map(|p| ("cors".to_string(), PerRouteFilter::Cors(Arc::new(p))))
                .into_iter()
                .collect()
        };
        let filter = HttpFilter {
            name: "cors".into(),
            disabled: false,
            kind: HttpFilterKind::Cors(Arc::new(CorsStats::new("http.test.cors".into(), 1))),
        };
        World::new(vec![filter], entry(route), entry(vhost))
    }

    /// Runs the filter on `req`; the preflight reply if it answered, else the response it
    /// decorated.
    fn exchange(world: &World, mut req: RequestHead) -> Result<Headers, LocalReply> {
        let cx = world.cx();
        let result = futures_lite::future::block_on(run_request(
            world.filter(),
            &cx,
            &mut req,
            &TestValues,
            None,
        ));
        if let FilterResult::Respond(reply) = result {
            return Err(reply);
        }
        let mut resp = response(200, &[]);
        run_response(world.filter(), &cx, &req, &mut resp, &TestValues);
        Ok(resp.headers)
    }

    fn counts(world: &World) -> (u64, u64) {
        let HttpFilterKind::Cors(stats) = &world.filter().kind else {
            unreachable!()
        };
        let c = stats.shard(0);
        use std::sync::atomic::Ordering::Relaxed;
        (c.origin_valid.load(Relaxed), c.origin_invalid.load(Relaxed))
    }

    fn preflight_request(origin: &str) -> RequestHead {
        request(
            "OPTIONS",
            "/",
            &[
                ("origin", origin),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-a, x-b"),
            ],
        )
    }

    #[test]
    fn preflight_is_answered_locally() {
        let world = world(Some(policy()), None);
        let reply = exchange(&world, preflight_request("https://a.example")).unwrap_err();
        assert_eq!(reply.status, 200);
        assert!(reply.body.is_empty());
        let h = &reply.headers;
        assert_eq!(
            header(h, "access-control-allow-origin"),
            Some("https://a.example")
        );
        assert_eq!(header(h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(h, "access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(header(h, "access-control-allow-headers"), Some("x-custom"));
        assert_eq!(header(h, "access-control-max-age"), Some("600"));
        assert_eq!(header(h, "access-control-expose-headers"), None);
        assert_eq!(counts(&world), (1, 0));
    }

    #[test]
    fn wildcards_echo_the_request() {
        let world = world(
            Some(CorsPolicy {
                allow_origins: vec![exact("*")],
                allow_methods: "*".into(),
                allow_headers: "*".into(),
                allow_private_network_access: Some(true),
                ..Default::default()
            }),
            None,
        );
        let mut req = preflight_request("https://any.example");
        req.headers
            .append("access-control-request-private-network", "true");
        let reply = exchange(&world, req).unwrap_err();
        let h = &reply.headers;
        assert_eq!(
            header(h, "access-control-allow-origin"),
            Some("https://any.example")
        );
        assert_eq!(header(h, "access-control-allow-methods"), Some("PUT"));
        assert_eq!(header(h, "access-control-allow-headers"), Some("x-a, x-b"));
        assert_eq!(
            header(h, "access-control-allow-private-network"),
            Some("true")
        );
        assert_eq!(header(h, "access-control-allow-credentials"), None);
    }

    #[test]
    fn simple_requests_get_headers_on_the_response() {
        let world = world(Some(policy()), None);
        let req = request("GET", "/", &[("origin", "https://a.example")]);
        let h = exchange(&world, req).unwrap();
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("https://a.example")
        );
        assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            header(&h, "access-control-expose-headers"),
            Some("x-exposed")
        );
        // An OPTIONS without access-control-request-method is not a preflight.
        let req = request("OPTIONS", "/", &[("origin", "https://a.example")]);
        assert!(exchange(&world, req).is_ok());
    }

    #[test]
    fn invalid_origins_pass_through_without_cors_headers() {
        let world = world(Some(policy()), None);
        let h = exchange(
            &world,
            request("GET", "/", &[("origin", "https://evil.example")]),
        )
        .unwrap();
        assert!(h.is_empty());
        // A preflight from it goes upstream by default...
        assert!(exchange(&world, preflight_request("https://evil.example")).is_ok());
        assert_eq!(counts(&world), (0, 2));
        // ...or is answered without allow-origin when forwarding is off.
        let world = self::world(
            Some(CorsPolicy {
                forward_not_matching_preflights: Some(false),
                ..policy()
            }),
            None,
        );
        let reply = exchange(&world, preflight_request("https://evil.example")).unwrap_err();
        assert_eq!(header(&reply.headers, "access-control-allow-origin"), None);
        // No origin header: not a CORS request at all.
        assert!(exchange(&world, request("GET", "/", &[]))
            .unwrap()
            .is_empty());
        assert_eq!(counts(&world), (0, 1));
    }

    #[test]
    fn fields_fall_back_to_the_virtual_host() {
        let route = CorsPolicy {
            allow_origins: vec![],
            allow_methods: String::new(),
            max_age: "5".into(),
            ..Default::default()
        };
        let world = world(Some(route), Some(policy()));
        let reply = exchange(&world, preflight_request("https://a.example")).unwrap_err();
        let h = &reply.headers;
        assert_eq!(
            header(h, "access-control-allow-origin"),
            Some("https://a.example")
        );
        assert_eq!(header(h, "access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(header(h, "access-control-max-age"), Some("5"));
    }

    #[test]
    fn disabled_and_shadow_policies() {
        let off = CorsPolicy {
            filter_enabled: Some(FractionalPercent::NONE),
            ..policy()
        };
        let world = world(Some(off), None);
        let h = exchange(
            &world,
            request("GET", "/", &[("origin", "https://a.example")]),
        )
        .unwrap();
        assert!(h.is_empty());
        assert_eq!(counts(&world), (0, 0));
        let shadow = CorsPolicy {
            filter_enabled: Some(FractionalPercent::NONE),
            shadow_enabled: Some(FractionalPercent::ALL),
            ..policy()
        };
        let world = self::world(Some(shadow), None);
        assert!(exchange(&world, preflight_request("https://a.example")).is_ok());
        let h = exchange(
            &world,
            request("GET", "/", &[("origin", "https://a.example")]),
        )
        .unwrap();
        assert!(h.is_empty(), "shadow mode only counts");
        assert_eq!(counts(&world), (2, 0));
        // Without any policy the filter does nothing.
        let world = self::world(None, None);
        assert!(exchange(&world, preflight_request("https://a.example")).is_ok());
    }

    #[test]
    fn routes_that_do_not_forward_get_no_cors() {
        let world = world(Some(policy()), None).answering_directly();
        assert!(exchange(&world, preflight_request("https://a.example")).is_ok());
        let h = exchange(
            &world,
            request("GET", "/", &[("origin", "https://a.example")]),
        )
        .unwrap();
        assert!(h.is_empty());
        assert_eq!(counts(&world), (0, 0));
    }
}
