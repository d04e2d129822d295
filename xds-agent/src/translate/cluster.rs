//! Translator: clusters (STATIC, STRICT_DNS, LOGICAL_DNS), their endpoints and load balancing.
use std::{collections::HashMap, sync::Arc, time::Duration};

use envoy_types::pb::envoy::config::{
    bootstrap::v3::Bootstrap,
    cluster::v3::{
        cluster::{
            common_lb_config::LocalityConfigSpecifier, ring_hash_lb_config::HashFunction,
            ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy as LbPolicyProto,
        },
        Cluster as ClusterProto,
    },
    core::v3::{transport_socket::ConfigType, HealthStatus, Metadata, TransportSocket},
    endpoint::v3::{lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint as EndpointProto},
};
use envoy_types::pb::{
    envoy::{
        extensions::transport_sockets::internal_upstream::v3::InternalUpstreamTransport,
        r#type::metadata::v3::metadata_kind,
    },
    google::protobuf::{value, Any},
};

use super::{
    address, buffer_limit, cluster_http, config_hash,
    config_source::ads_source,
    health, istio, positive_duration,
    subset::{self, lb_fields},
    TranslateContext, TranslateError,
};
use crate::names;
use model::{
    balancing::{LocalZone, LocalityName, SlowStart, ZoneAware},
    health::{EndpointCheck, HealthFlags},
    istio::MetadataExchange,
    metadata::Metadata as ModelMetadata,
    subset::SubsetLb,
    tls::ClientTls,
    Cluster, ClusterId, DiscoveredBy, DnsHost, DnsTarget, Endpoint, InternalEndpoint, LbPolicy,
    Locality, MetadataSource, OriginalDst, PassthroughMetadata, RingHash, RingHashFunction,
    SocketLabel, SocketMatch, UpstreamProtocol, NO_ADDRESS,
};

/// Envoy's default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Envoy's default `dns_refresh_rate`.
pub const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);
/// Envoy's default least-request `choice_count`.
pub const DEFAULT_CHOICE_COUNT: u32 = 2;

/// Translates `clusters` (at `path`), checking names are unique.
pub(super) fn clusters(
    clusters: &[ClusterProto],
    path: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> HashMap<String, Arc<Cluster>> {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    let mut out = HashMap::new();
    for (j, proto) in clusters.iter().enumerate() {
        let path = format!("{path}[{j}]");
        if proto.name.is_empty() {
            errors.push(TranslateError::new(
                format!("{path}.name"),
                None,
                "name is required",
            ));
            continue;
        }
        if let Some(first) = first_index.insert(&proto.name, j) {
            errors.push(TranslateError::new(
                format!("{path}.name"),
                None,
                format!(
                    "duplicate cluster name {:?} (also clusters[{first}])",
                    proto.name
                ),
            ));
            continue;
        }
        if let Some(cluster) = cluster(proto, &path, ctx, errors) {
            out.insert(proto.name.clone(), cluster);
        }
    }
    out
}

/// What a cluster's endpoints are: addresses, names to resolve, or an EDS assignment.
enum Kind {
    Static,
    Dns {
        logical: bool,
    },
    Eds(DiscoveredBy),
    /// `ORIGINAL_DST`: no endpoints; hosts are the downstreams' original destinations.
    OriginalDst,
}

// `dns_refresh_rate` is deprecated in Envoy in favour of a typed DNS resolver config, which
// Envoy still falls back from; it is what bootstraps use.
#[allow(deprecated)]
pub(super) fn cluster(
    proto: &ClusterProto,
    path: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<Cluster>> {
    let before = errors.len();
    let kind = match proto.cluster_discovery_type {
        None => Some(Kind::Static),
        Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(t) {
            Ok(DiscoveryType::Static) => Some(Kind::Static),
            Ok(DiscoveryType::StrictDns) => Some(Kind::Dns { logical: false }),
            Ok(DiscoveryType::LogicalDns) => Some(Kind::Dns { logical: true }),
            Ok(DiscoveryType::Eds) => eds(proto, path, errors),
            Ok(DiscoveryType::OriginalDst) => Some(Kind::OriginalDst),
            Err(_) => {
                errors.push(TranslateError::new(
                    format!("{path}.type"),
                    None,
                    format!("unknown cluster type {t}"),
                ));
                None
            }
        },
        // A custom `cluster_type` is rejected by the walker.
        Some(ClusterDiscoveryType::ClusterType(_)) => None,
    };
    let connect_timeout = positive_duration(
        proto.connect_timeout.as_ref(),
        DEFAULT_CONNECT_TIMEOUT,
        &format!("{path}.connect_timeout"),
        errors,
    );
    let lb_policy = lb_policy(proto, path, errors);
    let subset_config = subset::subset_config(proto, lb_policy, path, errors);
    let http = cluster_http::upstream_http(proto, path, errors);
    let alpn = cluster_http::default_alpn(&http);
    let tls = upstream_socket(
        proto.transport_socket.as_ref(),
        path,
        proto,
        alpn,
        ctx,
        errors,
    );
    let passthrough_metadata = passthrough_metadata(proto, path, errors);
    let health_check = health::health_check(proto, path, ctx, errors);
    let outlier_detection = health::outlier_detection(proto, path, ctx, errors);
    let original_dst = original_dst(proto, kind.as_ref(), lb_policy, path, errors);
    let metadata_exchange = upstream_filters(proto, path, ctx, errors);
    let source_address = proto
        .upstream_bind_config
        .as_ref()
        .and_then(|b| b.source_address.as_ref())
        .and_then(|a| {
            let at = format!("{path}.upstream_bind_config.source_address");
            address::bind_address(a, &at, errors)
        });
    let (hosts, endpoints) = match (&proto.load_assignment, &kind) {
        (_, Some(Kind::Eds(_) | Kind::OriginalDst)) | (None, _) => (Vec::new(), Vec::new()),
        (Some(assignment), kind) => hosts(
            assignment,
            &format!("{path}.load_assignment"),
            kind.as_ref(),
            errors,
        ),
    };
    if let (Some(Kind::Dns { logical: true }), Some(assignment)) = (&kind, &proto.load_assignment) {
        let single =
            assignment.endpoints.len() == 1 && assignment.endpoints[0].lb_endpoints.len() == 1;
        if !single {
            errors.push(TranslateError::new(
                format!("{path}.load_assignment"),
                None,
                "LOGICAL_DNS clusters must have exactly one endpoint",
            ));
        }
    }
    let socket_matches = socket_matches(proto, path, alpn, ctx, errors);
    let plaintext = tls.as_ref().is_ok_and(|t| t.is_none()) && socket_matches.is_empty();
    if http.protocol == UpstreamProtocol::Negotiated && plaintext {
        errors.push(TranslateError::new(
            format!("{path}.typed_extension_protocol_options"),
            None,
            "auto_config picks the protocol by TLS ALPN: the cluster needs a TLS transport_socket",
        ));
    }
    let kind = kind?;
    let tls = tls.ok()?;
    if errors.len() > before {
        return None;
    }
    let mut eds = None;
    let dns = match kind {
        Kind::Static | Kind::OriginalDst => None,
        Kind::Eds(source) => {
            eds = Some(source);
            None
        }
        Kind::Dns { logical } => Some(DnsTarget {
            hosts,
            refresh_rate: positive_duration(
                proto.dns_refresh_rate.as_ref(),
                DEFAULT_DNS_REFRESH_RATE,
                &format!("{path}.dns_refresh_rate"),
                errors,
            ),
            logical,
        }),
    };
    if errors.len() > before {
        return None;
    }
    let endpoints: Arc<[Endpoint]> = match (&dns, &eds) {
        // An EDS cluster's endpoints are attached by the agent as assignments arrive.
        (None, Some(_)) => Arc::from([]),
        (None, None) => endpoints.into(),
        (Some(_), _) => ctx
            .dns
            .get(&proto.name)
            .cloned()
            .unwrap_or_else(|| Arc::from([])),
    };
    // Endpoints are excluded from the hash: DNS (and later EDS) replace them alone.
    let mut without_endpoints = proto.clone();
    without_endpoints.load_assignment = None;
    let config_hash = socket_matches
        .iter()
        .filter_map(|m| m.tls.as_ref())
        .chain(&tls)
        .fold(config_hash(&without_endpoints), |h, t| h ^ t.material_hash);
    if let Some(previous) = ctx.previous.and_then(|p| p.clusters.get(&proto.name)) {
        if previous.config_hash == config_hash
            && previous.dns == dns
            && previous.eds == eds
            && (eds.is_some() || previous.endpoints == endpoints)
        {
            return Some(previous.clone());
        }
    }
    let subset = subset_config.map(|config| SubsetLb::new(config, &endpoints));
    Some(Arc::new(Cluster {
        name: proto.name.clone(),
        id: ClusterId::of(&proto.name),
        config_hash,
        dns,
        eds,
        connect_timeout,
        lb_policy,
        endpoints,
        buffer_limit: buffer_limit(proto.per_connection_buffer_limit_bytes.as_ref()),
        circuit_breakers: cluster_http::circuit_breakers(proto),
        http,
        tls,
        socket_matches,
        original_dst,
        source_address,
        locality_weighted: proto.common_lb_config.as_ref().is_some_and(|c| {
            matches!(
                c.locality_config_specifier,
                Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
            )
        }),
        metadata: metadata(proto.metadata.as_ref()),
        metadata_exchange,
        passthrough_metadata,
        health_check,
        outlier_detection,
        panic_threshold: panic_threshold(proto, path, errors),
        slow_start: slow_start(proto, lb_policy, path, errors),
        zone_aware: zone_aware(proto, path, errors),
        subset,
        stats: ctx.stats.cluster(&proto.name),
    }))
}

/// `common_lb_config.healthy_panic_threshold` in percent (Envoy's default 50).
fn panic_threshold(proto: &ClusterProto, path: &str, errors: &mut Vec<TranslateError>) -> f64 {
    let Some(percent) = proto
        .common_lb_config
        .as_ref()
        .and_then(|c| c.healthy_panic_threshold.as_ref())
    else {
        return 50.0;
    };
    if !(0.0..=100.0).contains(&percent.value) {
        errors.push(TranslateError::new(
            format!("{path}.common_lb_config.healthy_panic_threshold"),
            None,
            format!("{} is not a percentage in [0, 100]", percent.value),
        ));
        return 50.0;
    }
    percent.value
}

/// `slow_start_config` of `round_robin_lb_config` or `least_request_lb_config`, which only
/// their own policy reads (a window of zero, or none, turns slow start off as in Envoy).
fn slow_start(
    proto: &ClusterProto,
    lb_policy: LbPolicy,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<SlowStart> {
    let (config, field, applies) = match &proto.lb_config {
        Some(LbConfig::RoundRobinLbConfig(c)) => (
            c.slow_start_config.as_ref()?,
            "round_robin_lb_config",
            lb_policy == LbPolicy::RoundRobin,
        ),
        Some(LbConfig::LeastRequestLbConfig(c)) => (
            c.slow_start_config.as_ref()?,
            "least_request_lb_config",
            matches!(lb_policy, LbPolicy::LeastRequest { .. }),
        ),
        _ => return None,
    };
    let path = format!("{path}.{field}.slow_start_config");
    if !applies {
        errors.push(TranslateError::new(
            path,
            None,
            format!("{field} is only read by its own lb_policy, not {lb_policy:?}"),
        ));
        return None;
    }
    let window = match &config.slow_start_window {
        Some(w) => super::duration(w, &format!("{path}.slow_start_window"), None, errors)?,
        None => Duration::ZERO,
    };
    let min_weight = match &config.min_weight_percent {
        Some(p) if !(0.0..=100.0).contains(&p.value) => {
            errors.push(TranslateError::new(
                format!("{path}.min_weight_percent"),
                None,
                format!("{} is not a percentage in [0, 100]", p.value),
            ));
            return None;
        }
        Some(p) => p.value / 100.0,
        None => 0.1,
    };
    // Envoy reads `aggression` through the runtime at each pick; without a runtime its
    // default applies.
    let aggression = config.aggression.as_ref().map_or(1.0, |a| a.default_value);
    (window.as_millis() > 0).then_some(SlowStart {
        window,
        aggression,
        min_weight,
    })
}

/// `cluster_manager.local_cluster_name` with the node's locality. As in Envoy, the local
/// cluster is one of `statics` (the bootstrap's clusters) and has only priority 0.
pub(super) fn local_zone(
    bootstrap: &Bootstrap,
    statics: &[ClusterProto],
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<LocalZone>> {
    let name = bootstrap
        .cluster_manager
        .as_ref()
        .map(|c| c.local_cluster_name.as_str())
        .filter(|n| !n.is_empty())?;
    let Some((i, local)) = statics.iter().enumerate().find(|(_, c)| c.name == name) else {
        errors.push(TranslateError::new(
            "cluster_manager.local_cluster_name",
            None,
            format!("local cluster '{name}' must be defined"),
        ));
        return None;
    };
    let mut groups = local.load_assignment.iter().flat_map(|a| &a.endpoints);
    if let Some(l) = groups.position(|g| g.priority > 0) {
        errors.push(TranslateError::new(
            format!("static_resources.clusters[{i}].load_assignment.endpoints[{l}].priority"),
            None,
            local_priority_error(name),
        ));
    }
    let locality = bootstrap.node.as_ref().and_then(|n| n.locality.as_ref());
    Some(Arc::new(LocalZone {
        cluster: name.to_string(),
        locality: locality.map_or_else(LocalityName::default, |l| LocalityName {
            region: l.region.clone(),
            zone: l.zone.clone(),
            sub_zone: l.sub_zone.clone(),
        }),
    }))
}

/// Envoy's error for a local cluster with a host of priority above 0.
pub fn local_priority_error(cluster: &str) -> String {
    format!("Unexpected non-zero priority for local cluster '{cluster}'.")
}

/// `common_lb_config.zone_aware_lb_config`, Envoy's defaults where unset.
fn zone_aware(proto: &ClusterProto, path: &str, errors: &mut Vec<TranslateError>) -> ZoneAware {
    let config = match proto
        .common_lb_config
        .as_ref()
        .and_then(|c| c.locality_config_specifier.as_ref())
    {
        Some(LocalityConfigSpecifier::ZoneAwareLbConfig(config)) => config,
        _ => return ZoneAware::default(),
    };
    let mut zone_aware = ZoneAware {
        fail_traffic_on_panic: config.fail_traffic_on_panic,
        ..ZoneAware::default()
    };
    if let Some(percent) = &config.routing_enabled {
        if !(0.0..=100.0).contains(&percent.value) {
            errors.push(TranslateError::new(
                format!("{path}.common_lb_config.zone_aware_lb_config.routing_enabled"),
                None,
                format!("{} is not a percentage in [0, 100]", percent.value),
            ));
        }
        zone_aware.routing_enabled = percent.value.clamp(0.0, 100.0).round() as u32;
    }
    if let Some(size) = &config.min_cluster_size {
        zone_aware.min_cluster_size = size.value;
    }
    zone_aware
}

/// Envoy's default `cleanup_interval` of an `ORIGINAL_DST` cluster.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5);

/// An `ORIGINAL_DST` cluster's settings (`None` for other kinds), checked as Envoy does: the
/// type and `CLUSTER_PROVIDED` go together, and such a cluster lists no endpoints.
fn original_dst(
    proto: &ClusterProto,
    kind: Option<&Kind>,
    lb_policy: LbPolicy,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<OriginalDst> {
    let is_original = matches!(kind, Some(Kind::OriginalDst));
    let provided = lb_policy == LbPolicy::ClusterProvided;
    if provided != is_original {
        let message = match is_original {
            true => "ORIGINAL_DST clusters need lb_policy CLUSTER_PROVIDED",
            false => "lb_policy CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters",
        };
        errors.push(TranslateError::new(
            format!("{path}.lb_policy"),
            None,
            message,
        ));
    }
    if !is_original {
        return None;
    }
    if proto.load_assignment.is_some() {
        errors.push(TranslateError::new(
            format!("{path}.load_assignment"),
            None,
            "ORIGINAL_DST clusters have no endpoints: each host is a connection's original destination",
        ));
    }
    let config = match &proto.lb_config {
        Some(LbConfig::OriginalDstLbConfig(config)) => config.clone(),
        _ => Default::default(),
    };
    let header = config
        .use_http_header
        .then(|| match config.http_header_name.as_str() {
            "" => "x-envoy-original-dst-host".to_string(),
            name => name.to_ascii_lowercase(),
        });
    let port_override = config.upstream_port_override.map(|p| p.value);
    if port_override.is_some_and(|p| p == 0 || p > u32::from(u16::MAX)) {
        errors.push(TranslateError::new(
            format!("{path}.original_dst_lb_config.upstream_port_override"),
            None,
            "must be a port (1 to 65535)",
        ));
    }
    Some(OriginalDst {
        header,
        port_override: port_override.and_then(|p| u16::try_from(p).ok()),
        cleanup_interval: positive_duration(
            proto.cleanup_interval.as_ref(),
            DEFAULT_CLEANUP_INTERVAL,
            &format!("{path}.cleanup_interval"),
            errors,
        ),
    })
}

fn lb_policy(proto: &ClusterProto, path: &str, errors: &mut Vec<TranslateError>) -> LbPolicy {
    match LbPolicyProto::try_from(proto.lb_policy) {
        Ok(LbPolicyProto::RoundRobin) => LbPolicy::RoundRobin,
        Ok(LbPolicyProto::Random) => LbPolicy::Random,
        Ok(LbPolicyProto::LeastRequest) => {
            let choice_count = match &proto.lb_config {
                Some(LbConfig::LeastRequestLbConfig(c)) => {
                    c.choice_count.map_or(DEFAULT_CHOICE_COUNT, |v| v.value)
                }
                _ => DEFAULT_CHOICE_COUNT,
            };
            if choice_count < 2 {
                errors.push(TranslateError::new(
                    format!("{path}.least_request_lb_config.choice_count"),
                    None,
                    "choice_count must be at least 2",
                ));
            }
            LbPolicy::LeastRequest { choice_count }
        }
        Ok(LbPolicyProto::ClusterProvided) => LbPolicy::ClusterProvided,
        Ok(LbPolicyProto::RingHash) => {
            let config = match &proto.lb_config {
                Some(LbConfig::RingHashLbConfig(c)) => *c,
                _ => Default::default(),
            };
            let minimum_ring_size = config.minimum_ring_size.map_or(1024, |v| v.value);
            let maximum_ring_size = config.maximum_ring_size.map_or(MAX_RING_SIZE, |v| v.value);
            let at = format!("{path}.ring_hash_lb_config");
            for (field, size) in [
                ("minimum_ring_size", minimum_ring_size),
                ("maximum_ring_size", maximum_ring_size),
            ] {
                if !(1..=MAX_RING_SIZE).contains(&size) {
                    let message = format!("{size} is not in [1, {MAX_RING_SIZE}]");
                    errors.push(TranslateError::new(format!("{at}.{field}"), None, message));
                }
            }
            if minimum_ring_size > maximum_ring_size {
                errors.push(TranslateError::new(
                    format!("{at}.minimum_ring_size"),
                    None,
                    format!("minimum_ring_size ({minimum_ring_size}) > maximum_ring_size ({maximum_ring_size})"),
                ));
            }
            LbPolicy::RingHash(RingHash {
                minimum_ring_size,
                maximum_ring_size,
                hash_function: match config.hash_function() {
                    HashFunction::XxHash => RingHashFunction::XxHash,
                    HashFunction::MurmurHash2 => RingHashFunction::MurmurHash2,
                },
                use_hostname: use_hostname(proto, path, errors),
            })
        }
        Ok(LbPolicyProto::Maglev) => {
            let table_size = match &proto.lb_config {
                Some(LbConfig::MaglevLbConfig(c)) => c.table_size.map_or(65537, |v| v.value),
                _ => 65537,
            };
            if table_size > MAX_MAGLEV_TABLE || !is_prime(table_size) {
                errors.push(TranslateError::new(
                    format!("{path}.maglev_lb_config.table_size"),
                    None,
                    format!("{table_size} is not a prime of at most {MAX_MAGLEV_TABLE}"),
                ));
            }
            LbPolicy::Maglev {
                table_size,
                use_hostname: use_hostname(proto, path, errors),
            }
        }
        Ok(other) => {
            errors.push(TranslateError::new(
                format!("{path}.lb_policy"),
                None,
                format!("lb_policy {} is not supported yet", other.as_str_name()),
            ));
            LbPolicy::RoundRobin
        }
        Err(_) => {
            errors.push(TranslateError::new(
                format!("{path}.lb_policy"),
                None,
                format!("unknown lb_policy {}", proto.lb_policy),
            ));
            LbPolicy::RoundRobin
        }
    }
}

/// The largest ring Envoy builds (8M points), and the largest Maglev table it accepts.
const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
const MAX_MAGLEV_TABLE: u64 = 5_000_011;

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// `common_lb_config.consistent_hashing_lb_config` of a RING_HASH or MAGLEV cluster: whether
/// hosts are hashed by hostname. Bounded load (`hash_balance_factor`) is refused.
fn use_hostname(proto: &ClusterProto, path: &str, errors: &mut Vec<TranslateError>) -> bool {
    let Some(config) = proto
        .common_lb_config
        .as_ref()
        .and_then(|c| c.consistent_hashing_lb_config.as_ref())
    else {
        return false;
    };
    if config.hash_balance_factor.is_some() {
        errors.push(TranslateError::new(
            format!("{path}.common_lb_config.consistent_hashing_lb_config.hash_balance_factor"),
            None,
            "bounded-load consistent hashing is not supported: a pick would read every host's \
             active requests across shards",
        ));
    }
    config.use_hostname_for_hashing
}

/// The EDS settings of an `EDS` cluster: its assignment's name, fetched over ADS.
fn eds(proto: &ClusterProto, path: &str, errors: &mut Vec<TranslateError>) -> Option<Kind> {
    let at = format!("{path}.eds_cluster_config");
    let Some(config) = &proto.eds_cluster_config else {
        errors.push(TranslateError::new(
            at,
            None,
            "eds_cluster_config is required for an EDS cluster",
        ));
        return None;
    };
    let source = ads_source(
        config.eds_config.as_ref(),
        &format!("{at}.eds_config"),
        errors,
    )?;
    Some(Kind::Eds(DiscoveredBy {
        name: match config.service_name.is_empty() {
            true => proto.name.clone(),
            false => config.service_name.clone(),
        },
        initial_fetch_timeout: source.initial_fetch_timeout,
    }))
}

/// The endpoints of an EDS `ClusterLoadAssignment` (addresses only, as for STATIC clusters).
pub(super) fn assignment_endpoints(
    assignment: &ClusterLoadAssignment,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Vec<Endpoint> {
    hosts(assignment, path, Some(&Kind::Static), errors).1
}

/// The endpoints of a load assignment at `path`: names to resolve for DNS clusters, addresses
/// for the others (which must be IP literals, as in Envoy). An endpoint's `health_status` sets
/// its EDS health flags as Envoy's: UNHEALTHY and TIMEOUT fail it (it still counts for the
/// panic threshold), DEGRADED degrades it, DRAINING excludes it.
fn hosts(
    assignment: &ClusterLoadAssignment,
    path: &str,
    kind: Option<&Kind>,
    errors: &mut Vec<TranslateError>,
) -> (Vec<DnsHost>, Vec<Endpoint>) {
    let (mut hosts, mut endpoints) = (Vec::new(), Vec::new());
    for (l, group) in assignment.endpoints.iter().enumerate() {
        let locality = Locality {
            index: l as u32,
            weight: group.load_balancing_weight.map_or(0, |w| w.value),
        };
        let locality_name = group.locality.as_ref().map(|l| {
            Arc::new(LocalityName {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            })
        });
        for (e, lb_endpoint) in group.lb_endpoints.iter().enumerate() {
            let path = format!("{path}.endpoints[{l}].lb_endpoints[{e}]");
            let weight = lb_endpoint.load_balancing_weight.map_or(1, |w| w.value);
            if weight == 0 {
                errors.push(TranslateError::new(
                    format!("{path}.load_balancing_weight"),
                    None,
                    "load_balancing_weight must be at least 1",
                ));
            }
            let Some(HostIdentifier::Endpoint(endpoint)) = &lb_endpoint.host_identifier else {
                // `endpoint_name` is rejected by the walker.
                if lb_endpoint.host_identifier.is_none() {
                    errors.push(TranslateError::new(
                        format!("{path}.endpoint.address"),
                        None,
                        "address is required",
                    ));
                }
                continue;
            };
            let template = Endpoint {
                weight,
                hostname: Some(endpoint.hostname.as_str())
                    .filter(|h| !h.is_empty())
                    .map(Arc::from),
                socket_labels: socket_labels(lb_endpoint.metadata.as_ref()),
                hash_key: hash_key(lb_endpoint.metadata.as_ref()),
                lb_metadata: lb_fields(lb_endpoint.metadata.as_ref()).map(Arc::new),
                locality,
                locality_name: locality_name.clone(),
                priority: group.priority,
                eds_health: eds_health(lb_endpoint.health_status()),
                check: endpoint_check(endpoint, &path, errors),
                ..Endpoint::new(NO_ADDRESS)
            };
            let path = format!("{path}.endpoint.address");
            let Some(address) = endpoint.address.as_ref() else {
                errors.push(TranslateError::new(path, None, "address is required"));
                continue;
            };
            match kind {
                Some(Kind::Static) => {
                    let (address, internal) =
                        match address::internal_listener_name(address, &path, errors) {
                            None => continue,
                            Some(Some((listener, endpoint_id))) => {
                                let internal = InternalEndpoint {
                                    listener: listener.into(),
                                    endpoint_id: endpoint_id.into(),
                                    metadata: metadata(lb_endpoint.metadata.as_ref()),
                                };
                                (NO_ADDRESS, Some(Arc::new(internal)))
                            }
                            Some(None) => match address::socket_address(address, &path, errors) {
                                Some(address) => (address, None),
                                None => continue,
                            },
                        };
                    endpoints.push(Endpoint {
                        address,
                        internal,
                        ..template
                    });
                }
                Some(Kind::Dns { .. }) => {
                    if let Some((host, port)) = address::host_port(address, &path, errors) {
                        hosts.push(DnsHost {
                            hostname: host.to_string(),
                            port,
                            template,
                        });
                    }
                }
                Some(Kind::Eds(_) | Kind::OriginalDst) | None => {}
            }
        }
    }
    (hosts, endpoints)
}

/// An endpoint's `health_check_config`: where its active checks go and what they name.
fn endpoint_check(
    endpoint: &EndpointProto,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<EndpointCheck>> {
    let config = endpoint.health_check_config.as_ref()?;
    let path = format!("{path}.endpoint.health_check_config");
    let port = match config.port_value {
        0 => None,
        port => match u16::try_from(port) {
            Ok(port) => Some(port),
            Err(_) => {
                errors.push(TranslateError::new(
                    format!("{path}.port_value"),
                    None,
                    format!("port {port} is out of range"),
                ));
                None
            }
        },
    };
    let address = config
        .address
        .as_ref()
        .and_then(|address| address::socket_address(address, &format!("{path}.address"), errors));
    Some(Arc::new(EndpointCheck {
        address,
        port,
        hostname: Some(config.hostname.clone()).filter(|h| !h.is_empty()),
        disabled: config.disable_active_health_check,
    }))
}

/// The `internal_upstream` config in `socket`, if it is one.
fn internal_upstream(socket: &TransportSocket) -> Option<&Any> {
    match &socket.config_type {
        Some(ConfigType::TypedConfig(any))
            if names::type_name(&any.type_url) == names::INTERNAL_UPSTREAM =>
        {
            Some(any)
        }
        _ => None,
    }
}

/// The `passthrough_metadata` of the cluster's `internal_upstream` transport socket (none for
/// another socket). The socket it wraps must be plaintext: connections to internal listeners
/// are in-process, and TLS over them is not supported.
fn passthrough_metadata(
    proto: &ClusterProto,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Vec<PassthroughMetadata> {
    let Some(any) = proto.transport_socket.as_ref().and_then(internal_upstream) else {
        return Vec::new();
    };
    let path = format!("{path}.transport_socket.typed_config");
    let config: InternalUpstreamTransport = match proto::decode_any(any) {
        Ok(config) => config,
        Err(e) => {
            errors.push(TranslateError::new(
                path,
                Some(&any.type_url),
                e.to_string(),
            ));
            return Vec::new();
        }
    };
    let wrapped = config
        .transport_socket
        .as_ref()
        .and_then(|s| match &s.config_type {
            Some(ConfigType::TypedConfig(any)) => Some(names::type_name(&any.type_url)),
            _ => None,
        });
    if wrapped.is_some_and(|t| t != names::RAW_BUFFER) {
        errors.push(TranslateError::new(
            format!("{path}.transport_socket"),
            Some(&any.type_url),
            "only a plaintext (raw_buffer) socket may be wrapped: TLS to an internal listener \
             is not supported",
        ));
    }
    let mut out = Vec::new();
    for (i, source) in config.passthrough_metadata.iter().enumerate() {
        let at = format!("{path}.passthrough_metadata[{i}]");
        let source_kind = match source.kind.as_ref().and_then(|k| k.kind.as_ref()) {
            Some(metadata_kind::Kind::Host(_)) => MetadataSource::Host,
            Some(metadata_kind::Kind::Cluster(_)) => MetadataSource::Cluster,
            // What Envoy passes through: a request or route has no connection to pass to.
            _ => {
                errors.push(TranslateError::new(
                    format!("{at}.kind"),
                    Some(&any.type_url),
                    "host or cluster is required",
                ));
                continue;
            }
        };
        if source.name.is_empty() {
            errors.push(TranslateError::new(
                format!("{at}.name"),
                Some(&any.type_url),
                "the metadata namespace is required",
            ));
            continue;
        }
        out.push(PassthroughMetadata {
            source: source_kind,
            namespace: source.name.clone(),
        });
    }
    out
}

/// A cluster's upstream network `filters`: Istio's metadata exchange is the one supported
/// (other types are refused by the walker), at most once.
fn upstream_filters(
    proto: &ClusterProto,
    path: &str,
    ctx: &TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<MetadataExchange>> {
    let mut found = None;
    for (i, filter) in proto.filters.iter().enumerate() {
        let at = format!("{path}.filters[{i}].typed_config");
        let Some(any) = &filter.typed_config else {
            errors.push(TranslateError::new(at, None, "typed_config is required"));
            continue;
        };
        if names::type_name(&any.type_url) != names::METADATA_EXCHANGE {
            continue;
        }
        if found.is_some() {
            errors.push(TranslateError::new(
                at,
                Some(&any.type_url),
                "the metadata exchange is configured twice",
            ));
            continue;
        }
        found = istio::metadata_exchange(any, &at, &ctx.local_peer, errors);
    }
    found
}

/// A resource's `filter_metadata`, kept for the filters that read it.
pub(super) fn metadata(metadata: Option<&Metadata>) -> ModelMetadata {
    ModelMetadata::new(
        metadata
            .into_iter()
            .flat_map(|m| &m.filter_metadata)
            .map(|(namespace, fields)| (namespace.clone(), proto::to_json(fields)))
            .collect(),
    )
}

/// An endpoint's `envoy.transport_socket_match` metadata as sorted labels.
/// The `envoy.lb` metadata's string `hash_key`, which consistent hashing hashes instead of
/// the address (Envoy ignores a key of another type, as here).
fn hash_key(metadata: Option<&Metadata>) -> Option<Arc<str>> {
    let value = metadata?
        .filter_metadata
        .get(names::ENVOY_LB)?
        .fields
        .get("hash_key")?;
    match &value.kind {
        Some(value::Kind::StringValue(key)) if !key.is_empty() => Some(key.as_str().into()),
        _ => None,
    }
}

fn socket_labels(metadata: Option<&Metadata>) -> Option<Arc<[SocketLabel]>> {
    let fields = &metadata?
        .filter_metadata
        .get(names::TRANSPORT_SOCKET_MATCH)?
        .fields;
    let mut labels: Vec<SocketLabel> = fields
        .iter()
        .map(|(key, value)| (key.clone(), proto::to_json(value).to_string()))
        .collect();
    labels.sort();
    Some(labels.into())
}

/// The TLS contexts of cluster `proto` (at `path`, accepted before) translated again with
/// `ctx`'s secrets: its `transport_socket`'s, then each `transport_socket_matches` entry's
/// (`None`: raw, or not `wanted`). Only the transport sockets are read (see
/// `listener::listener_tls`).
pub fn cluster_tls(
    proto: &ClusterProto,
    path: &str,
    wanted: impl Fn(usize) -> bool,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Vec<Option<Arc<ClientTls>>> {
    let matches = proto
        .transport_socket_matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                format!("{path}.transport_socket_matches[{i}]"),
                &m.transport_socket,
            )
        });
    // Accepted before: its HTTP options translate without error.
    let http = cluster_http::upstream_http(proto, path, &mut Vec::new());
    let alpn = cluster_http::default_alpn(&http);
    std::iter::once((path.to_string(), &proto.transport_socket))
        .chain(matches)
        .enumerate()
        .map(|(i, (path, socket))| {
            let socket = socket.as_ref().filter(|_| wanted(i))?;
            upstream_socket(Some(socket), &path, proto, alpn, ctx, errors)
                .ok()
                .flatten()
        })
        .collect()
}

/// A transport socket of the cluster (its own, at `path`.transport_socket, or a match's):
/// `Ok(None)` for none or a raw one.
fn upstream_socket(
    socket: Option<&TransportSocket>,
    path: &str,
    proto: &ClusterProto,
    default_alpn: &[&str],
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Result<Option<Arc<ClientTls>>, ()> {
    // An internal_upstream socket is plaintext (`passthrough_metadata` checks what it wraps).
    let Some(socket) = socket.filter(|s| internal_upstream(s).is_none()) else {
        return Ok(None);
    };
    let peer = super::tls::Peer {
        cluster: &proto.name,
        verify_sni: cluster_http::auto_san_validation(proto),
        default_alpn,
    };
    super::tls::upstream(
        socket,
        &format!("{path}.transport_socket"),
        &peer,
        &ctx.secrets,
        ctx.stats,
        errors,
    )
}

/// `transport_socket_matches`: each entry's labels and transport socket.
fn socket_matches(
    proto: &ClusterProto,
    path: &str,
    default_alpn: &[&str],
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Vec<SocketMatch> {
    let mut out = Vec::new();
    for (i, m) in proto.transport_socket_matches.iter().enumerate() {
        let path = format!("{path}.transport_socket_matches[{i}]");
        let socket = m.transport_socket.as_ref();
        let tls = upstream_socket(socket, &path, proto, default_alpn, ctx, errors);
        let mut criteria: Vec<SocketLabel> = m
            .r#match
            .iter()
            .flat_map(|s| &s.fields)
            .map(|(key, value)| (key.clone(), proto::to_json(value).to_string()))
            .collect();
        criteria.sort();
        if let Ok(tls) = tls {
            out.push(SocketMatch {
                name: m.name.clone(),
                criteria,
                tls,
            });
        }
    }
    out
}

/// The health flags EDS gives an endpoint of this `health_status` (UNKNOWN and HEALTHY: none).
fn eds_health(status: HealthStatus) -> HealthFlags {
    match status {
        HealthStatus::Unhealthy | HealthStatus::Timeout => HealthFlags::FAILED_EDS_HEALTH,
        HealthStatus::Draining => HealthFlags::EDS_STATUS_DRAINING,
        HealthStatus::Degraded => HealthFlags::DEGRADED_EDS_HEALTH,
        HealthStatus::Unknown | HealthStatus::Healthy => HealthFlags::NONE,
    }
}
