//! Translator: route actions — `route` (`RouteAction` with weighted clusters, rewrites,
//! timeouts, `RetryPolicy`, mirrors, upgrades), `redirect` and `direct_response`.
use std::{sync::Arc, time::Duration};

use envoy_types::pb::envoy::{
    config::{
        core::v3::{data_source, RuntimeFractionalPercent},
        route::v3::{
            redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
            retry_policy::retry_host_predicate,
            route_action::{
                ClusterNotFoundResponseCode, ClusterSpecifier as ClusterSpecifierProto,
                HostRewriteSpecifier, RequestMirrorPolicy,
            },
            weighted_cluster::RandomValueSpecifier,
            DirectResponseAction, RedirectAction, RetryPolicy as RetryPolicyProto, RouteAction,
            WeightedCluster,
        },
    },
    r#type::{matcher::v3::RegexMatchAndSubstitute, v3::fractional_percent::DenominatorType},
};

use super::{
    super::subset::lb_fields,
    header_ops::{self, header_value_problem, is_token_byte},
    Problems,
};
use crate::names;
use model::{
    route::{
        ClusterSpecifier, DirectResponse, Forward, GrpcTimeout, HostRewrite, Mirror, Redirect,
        RedirectPath, RetryOn, RetryPolicy, WeightedRoute,
    },
    route_match::RegexRewrite,
    subset::MetadataMatch,
    ClusterRef, WeightedClusters,
};

/// Envoy's defaults.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_BACK_OFF_BASE: Duration = Duration::from_millis(25);

/// What a route inherits from its virtual host and route table.
pub(super) struct Defaults {
    /// The virtual host's retry policy.
    pub retry_policy: Option<Arc<RetryPolicy>>,
    /// The virtual host's mirror policies, else the table's.
    pub mirrors: Vec<Mirror>,
    /// `max_direct_response_body_size_bytes`.
    pub max_body: usize,
}

pub(super) fn forward(
    proto: &RouteAction,
    path: &str,
    defaults: &Defaults,
    p: &mut Problems,
) -> Option<Forward> {
    let before = p.count();
    let at = |field: &str| format!("{path}.{field}");
    let metadata_match =
        lb_fields(proto.metadata_match.as_ref()).map(|fields| Arc::new(MetadataMatch::of(&fields)));
    let cluster = match &proto.cluster_specifier {
        Some(ClusterSpecifierProto::Cluster(name)) => required(name, at("cluster"), p)
            .map(|_| ClusterSpecifier::Name(ClusterRef::named(name.clone()))),
        Some(ClusterSpecifierProto::ClusterHeader(header)) => {
            if header.is_empty() || !header.bytes().all(is_token_byte) {
                p.add(at("cluster_header"), "must be a header name");
            }
            Some(ClusterSpecifier::Header(header.to_ascii_lowercase()))
        }
        Some(ClusterSpecifierProto::WeightedClusters(w)) => {
            weighted(w, &at("weighted_clusters"), metadata_match.as_ref(), p)
                .map(ClusterSpecifier::Weighted)
        }
        // Cluster specifier plugins are rejected by the walker.
        Some(_) => None,
        None => {
            p.add(
                path,
                "one of cluster, cluster_header or weighted_clusters is required",
            );
            None
        }
    };
    let prefix_rewrite = Some(&proto.prefix_rewrite)
        .filter(|r| !r.is_empty())
        .and_then(|r| checked_value(r, at("prefix_rewrite"), p));
    let regex_rewrite = proto
        .regex_rewrite
        .as_ref()
        .and_then(|r| regex_rewrite(r, &at("regex_rewrite"), p));
    if prefix_rewrite.is_some() && proto.regex_rewrite.is_some() {
        p.add(path, "specify only one of prefix_rewrite and regex_rewrite");
    }
    let host_rewrite = match &proto.host_rewrite_specifier {
        Some(HostRewriteSpecifier::HostRewriteLiteral(host)) => {
            checked_value(host, at("host_rewrite_literal"), p)
                .map_or(HostRewrite::None, HostRewrite::Literal)
        }
        Some(HostRewriteSpecifier::AutoHostRewrite(auto)) if auto.value => HostRewrite::Auto,
        // Other host rewrites are rejected by the walker.
        _ => HostRewrite::None,
    };
    let timeout = p.timeout(
        proto.timeout.as_ref(),
        Some(DEFAULT_ROUTE_TIMEOUT),
        at("timeout"),
    );
    let idle_timeout = proto
        .idle_timeout
        .as_ref()
        .map(|d| p.duration(d, at("idle_timeout")).filter(|d| !d.is_zero()));
    let grpc_timeout = grpc_timeout(proto, &at, p);
    let retry_policy = match &proto.retry_policy {
        Some(r) => retry_policy(r, &at("retry_policy"), p).map(Arc::new),
        None => defaults.retry_policy.clone(),
    };
    let own_mirrors = mirrors(
        &proto.request_mirror_policies,
        &at("request_mirror_policies"),
        p,
    );
    let mut upgrades: Vec<(String, bool)> = Vec::new();
    let mut terminates_connect = false;
    for (i, u) in proto.upgrade_configs.iter().enumerate() {
        let kind = u.upgrade_type.to_ascii_lowercase();
        let type_at = at(&format!("upgrade_configs[{i}].upgrade_type"));
        if kind.is_empty() {
            p.add(type_at, "upgrade_type is required");
        } else if upgrades.iter().any(|(k, _)| *k == kind) {
            p.add(type_at, format!("duplicate upgrade type {kind:?}"));
        } else {
            upgrades.push((kind, u.enabled.is_none_or(|v| v.value)));
        }
        if u.connect_config.is_some() {
            match u.upgrade_type.eq_ignore_ascii_case("CONNECT") {
                true => terminates_connect = true,
                false => p.add(
                    at(&format!("upgrade_configs[{i}].connect_config")),
                    format!(
                        "only a CONNECT upgrade has a connect_config, not {:?}",
                        u.upgrade_type
                    ),
                ),
            }
        }
    }
    let hash_policy = super::hash_policy::hash_policies(&proto.hash_policy, &at("hash_policy"), p);
    if p.count() > before {
        return None;
    }
    Some(Forward {
        cluster: cluster?,
        cluster_not_found_status: match proto.cluster_not_found_response_code() {
            ClusterNotFoundResponseCode::ServiceUnavailable => 503,
            ClusterNotFoundResponseCode::NotFound => 404,
            ClusterNotFoundResponseCode::InternalServerError => 500,
        },
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
        timeout,
        idle_timeout,
        grpc_timeout,
        retry_policy,
        mirrors: if own_mirrors.is_empty() {
            defaults.mirrors.clone()
        } else {
            own_mirrors
        },
        upgrades,
        terminates_connect,
        hash_policy,
        metadata_match,
    })
}

/// How `grpc-timeout` replaces the route timeout: `max_stream_duration`'s header settings, or
/// the deprecated `max_grpc_timeout` / `grpc_timeout_offset` (Envoy's precedence).
fn grpc_timeout(
    proto: &RouteAction,
    at: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<GrpcTimeout> {
    let cap = |d: Option<Duration>| d.filter(|d| !d.is_zero());
    if let Some(stream) = &proto.max_stream_duration {
        // `0s` is the default (no limit), as Istio writes on every route.
        let limit = stream.max_stream_duration.as_ref();
        if limit.is_some_and(|d| d.seconds != 0 || d.nanos != 0) {
            p.add(
                at("max_stream_duration.max_stream_duration"),
                "a stream duration limit is not supported yet (only 0s, no limit)",
            );
        }
        if let Some(max) = &stream.grpc_timeout_header_max {
            let max = p.duration(max, at("max_stream_duration.grpc_timeout_header_max"));
            let offset = stream
                .grpc_timeout_header_offset
                .as_ref()
                .and_then(|d| p.duration(d, at("max_stream_duration.grpc_timeout_header_offset")));
            return Some(GrpcTimeout {
                max: cap(max),
                offset: offset.unwrap_or_default(),
            });
        }
    }
    #[allow(deprecated)]
    let legacy = proto.max_grpc_timeout.as_ref()?;
    let max = p.duration(legacy, at("max_grpc_timeout"));
    #[allow(deprecated)]
    let offset = proto
        .grpc_timeout_offset
        .as_ref()
        .and_then(|d| p.duration(d, at("grpc_timeout_offset")));
    Some(GrpcTimeout {
        max: cap(max),
        offset: offset.unwrap_or_default(),
    })
}

/// `weighted_clusters`: weights may be 0 but must sum to more than 0 (`total_weight` is
/// deprecated in Envoy, which uses the sum).
fn weighted(
    proto: &WeightedCluster,
    path: &str,
    route_match: Option<&Arc<MetadataMatch>>,
    p: &mut Problems,
) -> Option<WeightedRoute> {
    let before = p.count();
    let mut total: u32 = 0;
    for (i, c) in proto.clusters.iter().enumerate() {
        required(&c.name, format!("{path}.clusters[{i}].name"), p);
        let weight = c.weight.map_or(0, |w| w.value);
        match total.checked_add(weight) {
            Some(sum) => total = sum,
            None => p.add(
                format!("{path}.clusters[{i}].weight"),
                "total weight overflows 32 bits",
            ),
        }
    }
    if proto.clusters.is_empty() {
        p.add(
            format!("{path}.clusters"),
            "at least one cluster is required",
        );
    } else if total == 0 {
        p.add(
            format!("{path}.clusters"),
            "the sum of the weights must be greater than 0",
        );
    }
    let headers = proto
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| header_ops::level_mutations!(c, &format!("{path}.clusters[{i}]"), p))
        .collect();
    (p.count() == before).then(|| WeightedRoute {
        clusters: WeightedClusters {
            clusters: proto
                .clusters
                .iter()
                .map(|c| {
                    (
                        ClusterRef::named(c.name.clone()),
                        c.weight.map_or(0, |w| w.value),
                    )
                })
                .collect(),
            total_weight: total,
        },
        headers,
        random_header: match &proto.random_value_specifier {
            Some(RandomValueSpecifier::HeaderName(name)) => Some(name.to_ascii_lowercase()),
            _ => None,
        },
        // Envoy merges a cluster's own criteria over its route's.
        metadata_match: proto
            .clusters
            .iter()
            .map(|c| match lb_fields(c.metadata_match.as_ref()) {
                Some(own) => Some(Arc::new(match route_match {
                    Some(route) => route.merged(&own),
                    None => MetadataMatch::of(&own),
                })),
                None => route_match.cloned(),
            })
            .collect(),
    })
}

pub(super) fn redirect(proto: &RedirectAction, path: &str, p: &mut Problems) -> Option<Redirect> {
    let before = p.count();
    let at = |field: &str| format!("{path}.{field}");
    let scheme = match &proto.scheme_rewrite_specifier {
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) if !s.is_empty() => {
            let valid = s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if !valid {
                p.add(at("scheme_redirect"), format!("{s:?} is not a URI scheme"));
            }
            Some(s.to_ascii_lowercase())
        }
        _ => None,
    };
    let host = Some(&proto.host_redirect)
        .filter(|h| !h.is_empty())
        .and_then(|h| checked_value(h, at("host_redirect"), p));
    let port = match proto.port_redirect {
        0 => None,
        port => u16::try_from(port).ok().or_else(|| {
            p.add(at("port_redirect"), "must be a port (1-65535)");
            None
        }),
    };
    let path_rewrite = match &proto.path_rewrite_specifier {
        Some(PathRewriteSpecifier::PathRedirect(new)) if !new.is_empty() => {
            checked_value(new, at("path_redirect"), p).map(RedirectPath::Path)
        }
        Some(PathRewriteSpecifier::PrefixRewrite(new)) if !new.is_empty() => {
            checked_value(new, at("prefix_rewrite"), p).map(RedirectPath::Prefix)
        }
        Some(PathRewriteSpecifier::RegexRewrite(r)) => {
            regex_rewrite(r, &at("regex_rewrite"), p).map(RedirectPath::Regex)
        }
        // Path templates are rejected by the walker; empty strings mean "not set".
        _ => Some(RedirectPath::Keep),
    };
    let status = match proto.response_code() {
        RedirectResponseCode::MovedPermanently => 301,
        RedirectResponseCode::Found => 302,
        RedirectResponseCode::SeeOther => 303,
        RedirectResponseCode::TemporaryRedirect => 307,
        RedirectResponseCode::PermanentRedirect => 308,
    };
    if p.count() > before {
        return None;
    }
    Some(Redirect {
        scheme,
        host,
        port,
        path: path_rewrite?,
        status,
        strip_query: proto.strip_query,
    })
}

pub(super) fn direct_response(
    proto: &DirectResponseAction,
    path: &str,
    max_body: usize,
    p: &mut Problems,
) -> Option<DirectResponse> {
    let before = p.count();
    if !(200..600).contains(&proto.status) {
        p.add(format!("{path}.status"), "must be between 200 and 599");
    }
    let body = match proto.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        Some(data_source::Specifier::InlineString(text)) => {
            if text.len() > max_body {
                p.add(
                    format!("{path}.body"),
                    format!(
                        "body is {} bytes; max_direct_response_body_size_bytes allows {max_body}",
                        text.len()
                    ),
                );
            }
            Some(bytes::Bytes::from(text.clone()))
        }
        // Other data sources are rejected by the walker.
        _ => None,
    };
    (p.count() == before).then(|| DirectResponse {
        status: proto.status as u16,
        body,
    })
}

pub(super) fn retry_policy(
    proto: &RetryPolicyProto,
    path: &str,
    p: &mut Problems,
) -> Option<RetryPolicy> {
    let before = p.count();
    let at = |field: &str| format!("{path}.{field}");
    let retry_on = retry_on(&proto.retry_on, &at("retry_on"), p);
    let retriable_status_codes = proto
        .retriable_status_codes
        .iter()
        .enumerate()
        .filter_map(|(i, code)| {
            let code = u16::try_from(*code).ok().filter(|c| (100..600).contains(c));
            if code.is_none() {
                p.add(
                    at(&format!("retriable_status_codes[{i}]")),
                    "must be an HTTP status",
                );
            }
            code
        })
        .collect();
    let (back_off_base, back_off_max) = match &proto.retry_back_off {
        None => (DEFAULT_BACK_OFF_BASE, DEFAULT_BACK_OFF_BASE * 10),
        Some(b) => {
            let millis = Duration::from_millis(1);
            let base = match &b.base_interval {
                Some(d) => p.duration(d, at("retry_back_off.base_interval")),
                None => {
                    p.add(
                        at("retry_back_off.base_interval"),
                        "base_interval is required",
                    );
                    None
                }
            };
            let base = base.unwrap_or(DEFAULT_BACK_OFF_BASE).max(millis);
            let max = match &b.max_interval {
                Some(d) => p
                    .duration(d, at("retry_back_off.max_interval"))
                    .map_or(base * 10, |m| m.max(millis)),
                None => base * 10,
            };
            if max < base {
                p.add(
                    at("retry_back_off.max_interval"),
                    "must be greater than or equal to the base_interval",
                );
            }
            (base, max)
        }
    };
    let mut previous_hosts = false;
    for (i, predicate) in proto.retry_host_predicate.iter().enumerate() {
        match &predicate.config_type {
            Some(retry_host_predicate::ConfigType::TypedConfig(any)) => {
                // Other types are rejected by the walker.
                previous_hosts |= names::type_name(&any.type_url) == names::PREVIOUS_HOSTS;
            }
            None if predicate.name == names::PREVIOUS_HOSTS_PREDICATE => previous_hosts = true,
            None => p.add(
                at(&format!("retry_host_predicate[{i}]")),
                format!(
                    "retry host predicate {:?} is not supported yet",
                    predicate.name
                ),
            ),
        }
    }
    let per_try_timeout = p.timeout(proto.per_try_timeout.as_ref(), None, at("per_try_timeout"));
    let attempts = match proto.host_selection_retry_max_attempts {
        0 => Some(1),
        n => u32::try_from(n).ok(),
    };
    if attempts.is_none() {
        p.add(
            at("host_selection_retry_max_attempts"),
            "must be between 0 and 4294967295",
        );
    }
    (p.count() == before).then(|| RetryPolicy {
        retry_on,
        num_retries: proto.num_retries.map_or(1, |n| n.value),
        per_try_timeout,
        retriable_status_codes,
        back_off_base,
        back_off_max,
        previous_hosts,
        host_selection_retry_max_attempts: attempts.unwrap_or(1),
    })
}

/// Envoy conditions that are not implemented.
const UNSUPPORTED_RETRY_ON: &[&str] = &[
    "envoy-ratelimited",
    "retriable-headers",
    "reset-before-request",
    "http3-post-connect-failure",
];

fn retry_on(value: &str, path: &str, p: &mut Problems) -> RetryOn {
    let mut bits = RetryOn::default();
    for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let bit = match token {
            "5xx" => RetryOn::FIVE_XX,
            "gateway-error" => RetryOn::GATEWAY_ERROR,
            "reset" => RetryOn::RESET,
            "connect-failure" => RetryOn::CONNECT_FAILURE,
            "retriable-4xx" => RetryOn::RETRIABLE_4XX,
            "refused-stream" => RetryOn::REFUSED_STREAM,
            "retriable-status-codes" => RetryOn::RETRIABLE_STATUS_CODES,
            "cancelled" => RetryOn::GRPC_CANCELLED,
            "deadline-exceeded" => RetryOn::GRPC_DEADLINE_EXCEEDED,
            "internal" => RetryOn::GRPC_INTERNAL,
            "resource-exhausted" => RetryOn::GRPC_RESOURCE_EXHAUSTED,
            "unavailable" => RetryOn::GRPC_UNAVAILABLE,
            t if UNSUPPORTED_RETRY_ON.contains(&t) => {
                p.add(
                    path,
                    format!("retry_on condition {t:?} is not supported yet"),
                );
                continue;
            }
            t => {
                p.add(path, format!("unknown retry_on condition {t:?}"));
                continue;
            }
        };
        bits.0 |= bit.0;
    }
    bits
}

/// `request_mirror_policies` at `path` (an empty list means "inherit").
pub(super) fn mirrors(
    policies: &[RequestMirrorPolicy],
    path: &str,
    p: &mut Problems,
) -> Vec<Mirror> {
    policies
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let at = format!("{path}[{i}]");
            required(&m.cluster, format!("{at}.cluster"), p)?;
            let per_million = match &m.runtime_fraction {
                None => Some(1_000_000),
                Some(f) => per_million(f, &format!("{at}.runtime_fraction"), p),
            }?;
            Some(Mirror {
                cluster: ClusterRef::named(m.cluster.clone()),
                per_million,
            })
        })
        .collect()
}

/// A `RuntimeFractionalPercent`'s default in millionths (no runtime: the default applies).
fn per_million(f: &RuntimeFractionalPercent, path: &str, p: &mut Problems) -> Option<u32> {
    let Some(default) = &f.default_value else {
        p.add(format!("{path}.default_value"), "default_value is required");
        return None;
    };
    let scale = match default.denominator() {
        DenominatorType::Hundred => 10_000,
        DenominatorType::TenThousand => 100,
        DenominatorType::Million => 1,
    };
    Some(default.numerator.saturating_mul(scale).min(1_000_000))
}

pub(super) fn regex_rewrite(
    proto: &RegexMatchAndSubstitute,
    path: &str,
    p: &mut Problems,
) -> Option<RegexRewrite> {
    let Some(pattern) = proto.pattern.as_ref().filter(|r| !r.regex.is_empty()) else {
        p.add(format!("{path}.pattern"), "pattern is required");
        return None;
    };
    checked_value(&proto.substitution, format!("{path}.substitution"), p)?;
    RegexRewrite::new(&pattern.regex, &proto.substitution)
        .map_err(|e| p.add(path, e.to_string()))
        .ok()
}

/// A non-empty name (reported at `path` when empty).
fn required(name: &str, path: String, p: &mut Problems) -> Option<()> {
    if name.is_empty() {
        p.add(path, "cluster name is required");
        return None;
    }
    Some(())
}

/// A string that ends up in a header (a path or host): no NUL, CR or LF.
pub(super) fn checked_value(value: &str, path: String, p: &mut Problems) -> Option<String> {
    match header_value_problem(value) {
        Some(problem) => {
            p.add(path, problem);
            None
        }
        None => Some(value.to_string()),
    }
}
