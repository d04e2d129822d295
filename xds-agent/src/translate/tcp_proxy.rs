//! Translator: the `envoy.filters.network.tcp_proxy` filter.
use std::{collections::HashSet, time::Duration};

use bytes::Bytes;
use envoy_types::pb::{
    envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy::{ClusterSpecifier, TunnelingConfig as TunnelingProto},
        TcpProxy as TcpProxyProto,
    },
    envoy::r#type::v3::hash_policy::PolicySpecifier,
    google::protobuf::Any,
};

use super::{
    access_log::access_logs,
    duration,
    http_connection_manager::Problems,
    route::{header_adds, NO_HASHABLE_FILTER_STATE},
    TranslateError,
};
use model::{
    access_log::Format,
    stats::StatsRegistry,
    tcp_tunnel::{TunnelMethod, TunnelingConfig},
    ClusterRef, TcpProxy, WeightedClusters,
};

/// Envoy's default tcp_proxy `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Translates a tcp_proxy `typed_config` at `path`; cluster names must be in `clusters`.
pub(super) fn tcp_proxy(
    any: &Any,
    path: &str,
    clusters: &HashSet<&str>,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Option<TcpProxy> {
    let url = Some(any.type_url.as_str());
    let config: TcpProxyProto = match proto::decode_any(any) {
        Ok(config) => config,
        Err(e) => {
            errors.push(TranslateError::new(path, url, e.to_string()));
            return None;
        }
    };
    let before = errors.len();
    let err =
        |field: &str, message: String| TranslateError::new(format!("{path}.{field}"), url, message);
    if config.stat_prefix.is_empty() {
        errors.push(err("stat_prefix", "stat_prefix is required".into()));
    }
    let upstream = upstream(&config, path, url, clusters, errors);
    let idle_timeout = match &config.idle_timeout {
        None => Some(DEFAULT_IDLE_TIMEOUT),
        Some(d) => {
            duration(d, &format!("{path}.idle_timeout"), url, errors).filter(|d| !d.is_zero())
        }
    };
    let max_connect_attempts = config.max_connect_attempts.map_or(1, |v| v.value);
    if max_connect_attempts < 1 {
        errors.push(err("max_connect_attempts", "must be at least 1".into()));
    }
    let access_logs = access_logs(&config.access_log, &format!("{path}.access_log"), errors);
    let tunneling = config.tunneling_config.as_ref().and_then(|t| {
        let mut p = Problems { url, errors };
        tunneling(t, &format!("{path}.tunneling_config"), &mut p).map(Box::new)
    });
    let hashes_source_ip = hashes_source_ip(&config, path, url, errors);
    if errors.len() > before {
        return None;
    }
    Some(TcpProxy {
        upstream: upstream?,
        idle_timeout,
        max_connect_attempts,
        access_logs,
        stats: stats.tcp_proxy(&config.stat_prefix),
        tunneling,
        hashes_source_ip,
    })
}

/// `hash_policy` (at most one, as Envoy): whether a consistent-hash cluster hashes the
/// connection's source IP; `filter_state` is refused.
fn hashes_source_ip(
    config: &TcpProxyProto,
    path: &str,
    url: Option<&str>,
    errors: &mut Vec<TranslateError>,
) -> bool {
    let at = format!("{path}.hash_policy");
    match config.hash_policy.as_slice() {
        [] => false,
        [policy] => match &policy.policy_specifier {
            Some(PolicySpecifier::SourceIp(_)) => true,
            Some(PolicySpecifier::FilterState(_)) => {
                errors.push(TranslateError::new(
                    format!("{at}[0].filter_state"),
                    url,
                    NO_HASHABLE_FILTER_STATE,
                ));
                false
            }
            None => {
                let message = "one of source_ip or filter_state is required";
                errors.push(TranslateError::new(format!("{at}[0]"), url, message));
                false
            }
        },
        _ => {
            errors.push(TranslateError::new(at, url, "at most one hash policy"));
            false
        }
    }
}

/// `tunneling_config` at `path`: the hostname and header values are substitution formats;
/// `post_path` only goes with `use_post` (Envoy refuses it otherwise).
fn tunneling(proto: &TunnelingProto, path: &str, p: &mut Problems) -> Option<TunnelingConfig> {
    let before = p.count();
    let hostname = match Format::compile(&proto.hostname) {
        _ if proto.hostname.is_empty() => {
            p.add(format!("{path}.hostname"), "hostname is required");
            None
        }
        Ok(format) => Some(format),
        Err(e) => {
            p.add(format!("{path}.hostname"), e.to_string());
            None
        }
    };
    let method = match (proto.use_post, proto.post_path.as_str()) {
        (false, "") => TunnelMethod::Connect,
        (false, _) => {
            p.add(
                format!("{path}.post_path"),
                "post_path is set but use_post is not (a path only goes with POST)",
            );
            TunnelMethod::Connect
        }
        (true, "") => TunnelMethod::Post(Bytes::from_static(b"/")),
        (true, post_path) if !post_path.starts_with('/') => {
            p.add(format!("{path}.post_path"), "post_path must start with '/'");
            TunnelMethod::Connect
        }
        (true, post_path) => TunnelMethod::Post(Bytes::copy_from_slice(post_path.as_bytes())),
    };
    let headers_to_add = header_adds(&proto.headers_to_add, &format!("{path}.headers_to_add"), p);
    (p.count() == before).then(|| TunnelingConfig {
        hostname: hostname.expect("reported when missing"),
        method,
        headers_to_add,
    })
}

fn upstream(
    config: &TcpProxyProto,
    path: &str,
    url: Option<&str>,
    clusters: &HashSet<&str>,
    errors: &mut Vec<TranslateError>,
) -> Option<WeightedClusters> {
    let check = |name: &str, path: String, errors: &mut Vec<TranslateError>| {
        let problem = if name.is_empty() {
            "cluster name is required".to_string()
        } else if !clusters.contains(name) {
            format!("cluster {name:?} does not exist")
        } else {
            return true;
        };
        errors.push(TranslateError::new(path, url, problem));
        false
    };
    match &config.cluster_specifier {
        None => {
            errors.push(TranslateError::new(
                path,
                url,
                "cluster or weighted_clusters is required",
            ));
            None
        }
        Some(ClusterSpecifier::Cluster(name)) => check(name, format!("{path}.cluster"), errors)
            .then(|| WeightedClusters {
                clusters: vec![(ClusterRef::named(name.clone()), 1)],
                total_weight: 1,
            }),
        Some(ClusterSpecifier::WeightedClusters(weighted)) => {
            let base = format!("{path}.weighted_clusters.clusters");
            let mut ok = true;
            let mut total: u32 = 0;
            for (i, c) in weighted.clusters.iter().enumerate() {
                ok &= check(&c.name, format!("{base}[{i}].name"), errors);
                if c.weight == 0 {
                    errors.push(TranslateError::new(
                        format!("{base}[{i}].weight"),
                        url,
                        "weight must be at least 1",
                    ));
                    ok = false;
                }
                match total.checked_add(c.weight) {
                    Some(sum) => total = sum,
                    None => {
                        errors.push(TranslateError::new(
                            format!("{base}[{i}].weight"),
                            url,
                            "total weight overflows 32 bits",
                        ));
                        ok = false;
                    }
                }
            }
            if weighted.clusters.is_empty() {
                errors.push(TranslateError::new(
                    base,
                    url,
                    "at least one cluster is required",
                ));
                ok = false;
            }
            ok.then(|| WeightedClusters {
                clusters: weighted
                    .clusters
                    .iter()
                    .map(|c| (ClusterRef::named(c.name.clone()), c.weight))
                    .collect(),
                total_weight: total,
            })
        }
    }
}
