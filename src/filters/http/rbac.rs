//! HTTP filters: `envoy.filters.http.rbac` — the route's rules (`RBACPerRoute`), else the
//! filter's, judge the request on its connection; shadow rules are only counted; a denied
//! request gets Envoy's 403 `RBAC: access denied`, with the policy that decided in its
//! response code details (no response flag, as Envoy 1.40).
use std::net::SocketAddr;

use model::{
    filters::{HttpFilter, PerRouteFilter},
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
    match config.check(rules, cx.shard.id, &Request { cx, request }) {
        Ok(()) => FilterResult::Continue,
        Err(denied) => FilterResult::Respond(LocalReply::new(403, BODY).detailed(denied.details())),
    }
}

/// A request as the rules read it.
struct Request<'a> {
    cx: &'a StreamContext<'a>,
    request: &'a RequestHead,
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

    fn request(&self) -> Option<&dyn RouteRequest> {
        Some(self.request)
    }
}
