//! HTTP connection manager: what happens to a request before it goes upstream — the
//! connection manager's admission checks and rewrites, then the HTTP filters and the route's
//! action, down to the cluster (or the local answer).
use std::{borrow::Cow, rc::Rc};

use bytes::Bytes;
use model::{
    access_log::ResponseFlags,
    http::{HttpConnectionManager, UnderscoreHeaders},
    route::{
        ClusterSpecifier, Forward, HeaderMutations, Route, RouteAction, RouteConfig,
        TlsRequirement, VirtualHost, WeightedRoute,
    },
    stats::inc,
    subset::MetadataMatch,
    ClusterRef,
};

use super::{forwarding, log::Values, path, stream::Exchange, Connection};
use crate::{
    filters::http::on_request,
    proxy::cluster_manager::ShardCluster,
    stream::{
        body::RequestBody,
        headers::{RequestHead, Version},
        FilterResult, LocalReply, StreamContext,
    },
};

/// A request answered locally before it reaches an upstream, and whether its connection may
/// stay open (when the client's body was read, which the caller checks).
pub(super) struct Refusal {
    pub reply: LocalReply,
    pub keep: bool,
}

impl Refusal {
    fn keep(reply: LocalReply) -> Self {
        Self { reply, keep: true }
    }

    fn close(reply: LocalReply) -> Self {
        Self { reply, keep: false }
    }
}

/// The connection manager's checks and rewrites before routing: HTTP/1.0,
/// underscores in header names, the path policy, then the forwarding headers.
pub(super) fn admit(
    c: &Connection<'_>,
    table: &RouteConfig,
    request: &mut RequestHead,
) -> Result<(), Refusal> {
    let hcm = c.hcm;
    if request.version == Version::Http10 {
        if !hcm.http1.accept_http_10 {
            // The codec's refusal, so in the codec's own version.
            request.version = Version::Http11;
            return Err(Refusal::close(LocalReply::new(426, "Upgrade Required")));
        }
        if let (false, Some(host)) = (
            request.headers.contains("host"),
            &hcm.http1.default_host_for_http_10,
        ) {
            request.headers.append("host", host.clone());
        }
    }
    match hcm.headers_with_underscores {
        UnderscoreHeaders::Allow => {}
        UnderscoreHeaders::DropHeader => request.headers.retain(|h| !h.name.contains(&b'_')),
        UnderscoreHeaders::RejectRequest => {
            if request.headers.iter().any(|h| h.name.contains(&b'_')) {
                return Err(Refusal::close(LocalReply::new(400, "Bad Request")));
            }
        }
    }
    match path::apply(&hcm.path, &request.path) {
        path::PathVerdict::Forward(None) => {}
        path::PathVerdict::Forward(Some(p)) => request.path = Bytes::from(p),
        path::PathVerdict::Reject => {
            inc(&c.stats.downstream_rq_failed_path_normalization);
            return Err(Refusal::close(LocalReply::new(400, "Bad Request")));
        }
        path::PathVerdict::Redirect(p) => {
            let mut reply = LocalReply::new(307, "");
            reply.headers.append("location", p);
            return Err(Refusal::keep(reply));
        }
    }
    forwarding::prepare(hcm, table, request, c.remote, c.scheme);
    let presented = c.client_certificate.presented;
    forwarding::client_cert(hcm, &mut request.headers, presented, || c.xfcc_element());
    Ok(())
}

/// Where a request goes once the filters let it through.
pub(super) struct Chosen<'a> {
    pub virtual_host: &'a VirtualHost,
    pub route: &'a Route,
    pub forward: &'a Forward,
    pub upgrade: Option<Bytes>,
    pub cluster: Rc<ShardCluster>,
    pub weighted_headers: Option<&'a HeaderMutations>,
    /// The route's `metadata_match` (a weighted cluster's own, merged).
    pub metadata_match: Option<&'a MetadataMatch>,
}

/// Runs the HTTP filters (`ran` counts those that saw the request; `body` is there for those
/// that read it first), then the route's action: a forwarding route's cluster, or the local
/// answer (refused upgrade, no route, direct response, redirect, unknown cluster).
pub(super) async fn choose<'a>(
    c: &Connection<'a>,
    cx: &StreamContext<'a>,
    request: &mut RequestHead,
    upgrade: Option<Bytes>,
    ran: &mut usize,
    exchange: &mut Exchange,
    mut body: Option<&mut RequestBody<'_>>,
) -> Result<Chosen<'a>, Refusal> {
    let hcm = c.hcm;
    // As Envoy, an upgrade neither the route nor the connection manager allows is refused
    // before any filter runs, whatever the route does (forward, direct response, redirect,
    // or no route at all, CONNECT excepted).
    // A CONNECT without a route is Envoy's 404 (below), not a refused upgrade.
    let routeless_connect = cx.route.is_none() && upgrade.as_deref() == Some(&b"connect"[..]);
    if let Some(token) = upgrade.as_ref().filter(|_| !routeless_connect) {
        let forward = cx.route.and_then(|route| match &route.action {
            RouteAction::Forward(forward) => Some(forward),
            _ => None,
        });
        if !hcm.upgrade_allowed(forward, token) {
            inc(&c.stats.downstream_rq_ws_on_non_ws_route);
            exchange.details = "upgrade_failed".into();
            return Err(Refusal::close(LocalReply::new(403, "")));
        }
    }
    for filter in &hcm.filters {
        *ran += 1;
        let values = Values { c, exchange };
        let body = body.as_deref_mut();
        if let FilterResult::Respond(mut reply) =
            on_request(filter, cx, request, &values, body).await
        {
            exchange.details = reply.details.take().map_or("filter".into(), Cow::Owned);
            // Envoy's stream info holds the route's cluster from the route match on, so a
            // filter's answer (a fault abort, an RBAC denial) is counted against it: Istio's
            // metrics name the destination service from its metadata.
            exchange.cluster = route_cluster(c, cx, request);
            return Err(Refusal::keep(reply));
        }
    }
    let (Some(virtual_host), Some(route)) = (cx.virtual_host, cx.route) else {
        inc(&c.stats.no_route);
        exchange.details = "route_not_found".into();
        let reply = LocalReply::new(404, "").flagged(ResponseFlags::NO_ROUTE_FOUND);
        return Err(Refusal::keep(reply));
    };
    let forward = match &route.action {
        RouteAction::DirectResponse(direct) => {
            inc(&c.stats.rq_direct_response);
            exchange.details = "direct_response".into();
            let body = direct.body.clone().unwrap_or_default();
            return Err(Refusal::keep(LocalReply::new(direct.status, body)));
        }
        RouteAction::Redirect(redirect) => {
            inc(&c.stats.rq_redirect);
            exchange.details = "direct_response".into();
            let mut reply = LocalReply::new(redirect.status, "");
            let location =
                route.redirect_location(c.scheme.as_bytes(), request.authority(), &request.path);
            reply
                .headers
                .append("location", location.unwrap_or_default());
            return Err(Refusal::keep(reply));
        }
        RouteAction::Forward(forward) => forward,
    };
    // Envoy counts an upgrade (CONNECT too) once its route accepts it (refused ones were
    // answered above), whatever the upstream answers.
    if upgrade.is_some() {
        inc(&c.stats.downstream_cx_upgrades_total);
    }
    let (named, weighted) = cluster_for(forward, request);
    let (weighted_headers, metadata_match) = match weighted {
        Some((weighted, index)) => (
            weighted.headers.get(index),
            weighted
                .metadata_match
                .get(index)
                .and_then(Option::as_deref),
        ),
        None => (None, forward.metadata_match.as_deref()),
    };
    // Only access logs and spans read it.
    if !hcm.access_logs.is_empty() || hcm.tracing.is_some() {
        exchange.upstream_cluster = named.as_ref().map(|n| n.name().to_owned());
    }
    let Some(cluster) = named.as_ref().and_then(|named| resolve(c, named)) else {
        inc(&c.stats.no_cluster);
        exchange.details = "cluster_not_found".into();
        let reply = LocalReply::new(forward.cluster_not_found_status, "")
            .flagged(ResponseFlags::NO_CLUSTER_FOUND);
        return Err(Refusal::keep(reply));
    };
    // An upgrade to an HTTP/2 upstream would go as an extended CONNECT, which is not
    // supported: refused as an upgrade the route does not take.
    let client_http2 = request.version == Version::Http2;
    if upgrade.as_ref().is_some_and(|token| token != "connect")
        && cluster.config.http.uses_http2(client_http2) == Some(true)
    {
        exchange.details = "upgrade_failed".into();
        return Err(Refusal::close(LocalReply::new(403, "")));
    }
    Ok(Chosen {
        virtual_host,
        route,
        forward,
        upgrade,
        cluster,
        weighted_headers,
        metadata_match,
    })
}

/// Whether a plain-HTTP request must be redirected to https (`require_tls`).
pub(super) fn needs_tls(
    requirement: TlsRequirement,
    hcm: &HttpConnectionManager,
    remote: std::net::SocketAddr,
) -> bool {
    match requirement {
        TlsRequirement::None => false,
        TlsRequirement::All => true,
        TlsRequirement::ExternalOnly => forwarding::is_external(hcm, remote),
    }
}

/// The shard's cluster `named`, if it has it.
fn resolve(c: &Connection<'_>, named: &Named<'_>) -> Option<Rc<ShardCluster>> {
    let clusters = c.ctx.clusters.borrow();
    match named {
        Named::Config(cluster) => clusters.resolve(cluster),
        Named::Header(name) => clusters.get(name),
    }
}

/// The cluster the matched route forwards `request` to (a weighted route's drawn as for a
/// forwarded request), if the route forwards and the shard has the cluster.
fn route_cluster(
    c: &Connection<'_>,
    cx: &StreamContext<'_>,
    request: &RequestHead,
) -> Option<Rc<ShardCluster>> {
    let RouteAction::Forward(forward) = &cx.route?.action else {
        return None;
    };
    resolve(c, &cluster_for(forward, request).0?)
}

/// A cluster a request goes to: named by config, or by a request header.
enum Named<'a> {
    Config(&'a ClusterRef),
    Header(&'a str),
}

impl Named<'_> {
    fn name(&self) -> &str {
        match self {
            Named::Config(cluster) => &cluster.name,
            Named::Header(name) => name,
        }
    }
}

/// The cluster to forward to, and for a weighted route, which of its clusters it is.
fn cluster_for<'f: 'r, 'r>(
    forward: &'f Forward,
    request: &'r RequestHead,
) -> (Option<Named<'r>>, Option<(&'f WeightedRoute, usize)>) {
    match &forward.cluster {
        ClusterSpecifier::Name(cluster) => (Some(Named::Config(cluster)), None),
        ClusterSpecifier::Weighted(weighted) => {
            let clusters = &weighted.clusters;
            let total = u64::from(clusters.total_weight.max(1));
            let given = weighted.random_header.as_deref().and_then(|name| {
                let value = request.headers.get(name)?;
                std::str::from_utf8(value).ok()?.parse::<u64>().ok()
            });
            let point = given.unwrap_or_else(|| fastrand::u64(0..total)) % total;
            let index = clusters.index_of(point as u32);
            let cluster = &clusters.clusters[index].0;
            (Some(Named::Config(cluster)), Some((weighted, index)))
        }
        ClusterSpecifier::Header(header) => {
            let name = request.headers.get(header);
            let name = name.and_then(|v| std::str::from_utf8(v).ok());
            (name.map(Named::Header), None)
        }
    }
}
