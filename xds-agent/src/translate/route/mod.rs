//! Translator: an inline `RouteConfiguration` → `model::route::RouteConfig` — virtual hosts
//! and their domain index, routes and their index, cluster references, per-filter configs.
//! An unchanged table keeps the previous generation's `Arc`.
mod action;
mod hash_policy;
mod header_ops;
mod matcher;

pub(super) use hash_policy::NO_HASHABLE_FILTER_STATE;
pub(super) use header_ops::adds as header_adds;

pub(super) use header_ops::is_token_byte;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use envoy_types::pb::{
    envoy::config::route::v3::{
        route::Action, route_action::ClusterSpecifier as ClusterSpecifierProto,
        route_action::RequestMirrorPolicy, virtual_host::TlsRequirementType, Route as RouteProto,
        RouteConfiguration, VirtualHost as VirtualHostProto,
    },
    google::protobuf::Any,
};

use super::{config_hash, http_connection_manager::Problems, http_filters, TranslateContext};
use model::{
    filters::PerRouteFilters,
    http::Routes,
    route::{Decorator, Route, RouteAction, RouteConfig, TlsRequirement, VirtualHost},
    route_match::{PathMatch, RouteIndex, VirtualHostIndex},
    NetworkFilter, Snapshot,
};

/// Envoy's default `max_direct_response_body_size_bytes`.
pub const DEFAULT_MAX_DIRECT_RESPONSE_BODY: usize = 4096;

/// Translates the route table at `path`. Cluster names must be in `clusters` when
/// `validate_clusters` says so; unset, it is `inline` (Envoy: true for a table inside its
/// listener, false for one from RDS).
pub(super) fn route_config(
    proto: &RouteConfiguration,
    path: &str,
    clusters: &HashSet<&str>,
    inline: bool,
    ctx: &mut TranslateContext,
    p: &mut Problems,
) -> Option<Arc<RouteConfig>> {
    let before = p.count();
    if proto.validate_clusters.map_or(inline, |v| v.value) {
        check_clusters(proto, path, clusters, p);
    }
    let hash = config_hash(proto);
    if p.count() == before {
        if let Some(previous) = ctx
            .previous
            .and_then(|s| previous_table(s, &proto.name, hash))
        {
            return Some(previous);
        }
    }
    let at = |field: &str| format!("{path}.{field}");
    let headers = header_ops::level_mutations!(proto, path, p);
    let defaults = action::Defaults {
        retry_policy: None,
        mirrors: action::mirrors(
            &proto.request_mirror_policies,
            &at("request_mirror_policies"),
            p,
        ),
        max_body: proto
            .max_direct_response_body_size_bytes
            .map_or(DEFAULT_MAX_DIRECT_RESPONSE_BODY, |v| v.value as usize),
    };
    let mut vhost_index = VirtualHostIndex::new(proto.ignore_port_in_host_matching);
    let mut virtual_hosts = Vec::with_capacity(proto.virtual_hosts.len());
    for (i, vh) in proto.virtual_hosts.iter().enumerate() {
        let vh_path = format!("{path}.virtual_hosts[{i}]");
        for (j, domain) in vh.domains.iter().enumerate() {
            let domain_path = format!("{vh_path}.domains[{j}]");
            if domain.is_empty() || domain.bytes().any(|b| b.is_ascii_control()) {
                p.add(
                    domain_path,
                    "a domain must be non-empty, without control characters",
                );
            } else if let Err(e) = vhost_index.insert(domain, i) {
                p.add(domain_path, e.to_string());
            }
        }
        if vh.domains.is_empty() {
            p.add(
                format!("{vh_path}.domains"),
                "at least one domain is required",
            );
        }
        let ignore_parameters = proto.ignore_path_parameters_in_path_matching;
        if let Some(vh) = virtual_host(vh, &vh_path, &defaults, ignore_parameters, ctx, p) {
            virtual_hosts.push(vh);
        }
    }
    if p.count() > before {
        return None;
    }
    Some(Arc::new(RouteConfig {
        name: proto.name.clone(),
        config_hash: hash,
        virtual_hosts,
        vhost_index,
        headers,
        most_specific_header_mutations_wins: proto.most_specific_header_mutations_wins,
        internal_only_headers: proto
            .internal_only_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    }))
}

/// The previous generation's table with this name and source hash, if any listener has one.
fn previous_table(snapshot: &Snapshot, name: &str, hash: u64) -> Option<Arc<RouteConfig>> {
    snapshot
        .listeners
        .iter()
        .flat_map(|l| l.filter_chains.iter())
        .find_map(|chain| match &chain.network {
            NetworkFilter::HttpConnectionManager(hcm) => match &hcm.routes {
                Routes::Static(table) if table.config_hash == hash && table.name == name => {
                    Some(table.clone())
                }
                _ => None,
            },
            _ => None,
        })
}

fn virtual_host(
    proto: &VirtualHostProto,
    path: &str,
    table: &action::Defaults,
    ignore_path_parameters: bool,
    ctx: &mut TranslateContext,
    p: &mut Problems,
) -> Option<VirtualHost> {
    let before = p.count();
    let at = |field: &str| format!("{path}.{field}");
    let retry_policy = proto
        .retry_policy
        .as_ref()
        .and_then(|r| action::retry_policy(r, &at("retry_policy"), p))
        .map(Arc::new);
    let own_mirrors = action::mirrors(
        &proto.request_mirror_policies,
        &at("request_mirror_policies"),
        p,
    );
    let defaults = action::Defaults {
        retry_policy: retry_policy.clone(),
        mirrors: if own_mirrors.is_empty() {
            table.mirrors.clone()
        } else {
            own_mirrors
        },
        max_body: table.max_body,
    };
    let mut routes = Vec::with_capacity(proto.routes.len());
    for (i, r) in proto.routes.iter().enumerate() {
        if let Some(route) = route(r, &format!("{path}.routes[{i}]"), &defaults, ctx, p) {
            routes.push(route);
        }
    }
    let headers = header_ops::level_mutations!(proto, path, p);
    let per_filter = per_filter(&proto.typed_per_filter_config, path, ctx, p);
    if p.count() > before {
        return None;
    }
    Some(VirtualHost {
        name: proto.name.clone(),
        domains: proto.domains.clone(),
        route_index: RouteIndex::build(&routes, ignore_path_parameters),
        routes,
        headers,
        retry_policy,
        per_filter,
        require_tls: match proto.require_tls() {
            TlsRequirementType::None => TlsRequirement::None,
            TlsRequirementType::ExternalOnly => TlsRequirement::ExternalOnly,
            TlsRequirementType::All => TlsRequirement::All,
        },
        attempt_count_to_upstream: proto.include_request_attempt_count,
        attempt_count_in_response: proto.include_attempt_count_in_response,
    })
}

fn route(
    proto: &RouteProto,
    path: &str,
    defaults: &action::Defaults,
    ctx: &mut TranslateContext,
    p: &mut Problems,
) -> Option<Route> {
    let before = p.count();
    let matcher = matcher::route_match(proto.r#match.as_ref(), &format!("{path}.match"), p);
    let action = match &proto.action {
        Some(Action::Route(a)) => {
            action::forward(a, &format!("{path}.route"), defaults, p).map(RouteAction::Forward)
        }
        Some(Action::Redirect(r)) => {
            action::redirect(r, &format!("{path}.redirect"), p).map(RouteAction::Redirect)
        }
        Some(Action::DirectResponse(d)) => {
            action::direct_response(d, &format!("{path}.direct_response"), defaults.max_body, p)
                .map(RouteAction::DirectResponse)
        }
        // Filter and non-forwarding actions are rejected by the walker.
        Some(_) => None,
        None => {
            p.add(
                path,
                "one of route, redirect or direct_response is required",
            );
            None
        }
    };
    let headers = header_ops::level_mutations!(proto, path, p);
    let per_filter = per_filter(&proto.typed_per_filter_config, path, ctx, p);
    if let (Some(matcher), Some(RouteAction::Forward(forward))) = (&matcher, &action) {
        if matches!(matcher.path, PathMatch::Connect) && !forward.terminates_connect {
            p.add(
                format!("{path}.route.upgrade_configs"),
                "a connect_matcher route must terminate CONNECT (an upgrade_configs entry \
                 {upgrade_type: CONNECT, connect_config: {}}): forwarding CONNECT upstream is \
                 not supported",
            );
        }
    }
    if p.count() > before {
        return None;
    }
    Some(Route {
        name: proto.name.clone(),
        matcher: matcher?,
        action: action?,
        headers,
        per_filter,
        decorator: proto.decorator.as_ref().map(|d| Decorator {
            operation: d.operation.clone(),
            propagate: d.propagate.is_none_or(|p| p.value),
        }),
    })
}

/// `typed_per_filter_config`, sorted by filter name.
fn per_filter(
    configs: &HashMap<String, Any>,
    path: &str,
    ctx: &mut TranslateContext,
    p: &mut Problems,
) -> PerRouteFilters {
    let mut names: Vec<&String> = configs.keys().collect();
    names.sort();
    PerRouteFilters(
        names
            .into_iter()
            .filter_map(|name| {
                let at = format!("{path}.typed_per_filter_config[{name}]");
                http_filters::per_route(name, &configs[name], &at, ctx, p.errors)
                    .map(|f| (name.clone(), f))
            })
            .collect(),
    )
}

/// Every cluster the table names (route clusters, weighted clusters, mirrors) must exist.
fn check_clusters(
    proto: &RouteConfiguration,
    path: &str,
    clusters: &HashSet<&str>,
    p: &mut Problems,
) {
    check_mirrors(&proto.request_mirror_policies, path, clusters, p);
    for (i, vh) in proto.virtual_hosts.iter().enumerate() {
        let vh_path = format!("{path}.virtual_hosts[{i}]");
        check_mirrors(&vh.request_mirror_policies, &vh_path, clusters, p);
        for (j, r) in vh.routes.iter().enumerate() {
            let Some(Action::Route(a)) = &r.action else {
                continue;
            };
            let at = format!("{vh_path}.routes[{j}].route");
            check_mirrors(&a.request_mirror_policies, &at, clusters, p);
            match &a.cluster_specifier {
                Some(ClusterSpecifierProto::Cluster(name)) => {
                    check_cluster(name, format!("{at}.cluster"), clusters, p)
                }
                Some(ClusterSpecifierProto::WeightedClusters(w)) => {
                    for (k, c) in w.clusters.iter().enumerate() {
                        let at = format!("{at}.weighted_clusters.clusters[{k}].name");
                        check_cluster(&c.name, at, clusters, p);
                    }
                }
                _ => {}
            }
        }
    }
}

fn check_mirrors(
    list: &[RequestMirrorPolicy],
    path: &str,
    clusters: &HashSet<&str>,
    p: &mut Problems,
) {
    for (i, m) in list.iter().enumerate() {
        let at = format!("{path}.request_mirror_policies[{i}].cluster");
        check_cluster(&m.cluster, at, clusters, p);
    }
}

/// Empty names are reported where the name is required (`action`).
fn check_cluster(name: &str, path: String, clusters: &HashSet<&str>, p: &mut Problems) {
    if !name.is_empty() && !clusters.contains(name) {
        p.add(path, format!("cluster {name:?} does not exist"));
    }
}
