//! Translator: the bootstrap's `dynamic_resources` — the ADS stream (`ads_config`) and the
//! LDS/CDS sources on it — and the static clusters gRPC services (ADS, SDS streams) name,
//! reached over TCP or a unix socket (`pipe`), as Istio's `xds-grpc` and `sds-grpc` are.
use std::{collections::HashMap, path::PathBuf, time::Duration};

use envoy_types::pb::envoy::config::{
    bootstrap::v3::Bootstrap,
    cluster::v3::Cluster as ClusterProto,
    core::v3::{address::Address as AddressKind, Node},
    endpoint::v3::lb_endpoint::HostIdentifier,
};

use super::{
    address,
    cluster::DEFAULT_CONNECT_TIMEOUT,
    config_source::{ads_source, grpc_service, AdsSource},
    positive_duration, TranslateError,
};
use crate::xds::{GrpcTarget, Service, StreamSettings};

/// The dynamic part of a bootstrap.
#[derive(Debug, Clone)]
pub struct DynamicSources {
    pub ads: StreamSettings,
    /// The static cluster that names the control plane: the agent's own, not published.
    pub grpc_cluster: String,
    pub cds: Option<AdsSource>,
    pub lds: Option<AdsSource>,
}

const AT: &str = "dynamic_resources";

/// The bootstrap's dynamic sources (`None` when it has none), or every problem found.
pub fn dynamic_sources(
    bootstrap: &Bootstrap,
    errors: &mut Vec<TranslateError>,
) -> Option<DynamicSources> {
    let dynamic = bootstrap.dynamic_resources.as_ref()?;
    let before = errors.len();
    let at = |field: &str| format!("{AT}.{field}");
    let cds = dynamic
        .cds_config
        .as_ref()
        .and_then(|c| ads_source(Some(c), &at("cds_config"), errors));
    let lds = dynamic
        .lds_config
        .as_ref()
        .and_then(|c| ads_source(Some(c), &at("lds_config"), errors));
    let Some(ads) = &dynamic.ads_config else {
        errors.push(TranslateError::new(
            at("ads_config"),
            None,
            "ads_config is required: lds_config and cds_config are served over ADS only",
        ));
        return None;
    };
    let (cluster_name, delta) = grpc_service(ads, &at("ads_config"), errors)?;
    let cluster = bootstrap
        .static_resources
        .as_ref()
        .and_then(|s| s.clusters.iter().position(|c| c.name == cluster_name));
    let Some(index) = cluster else {
        errors.push(TranslateError::new(
            at("ads_config.grpc_services[0].envoy_grpc.cluster_name"),
            None,
            format!("no static cluster named {cluster_name:?}"),
        ));
        return None;
    };
    let proto = &bootstrap.static_resources.as_ref()?.clusters[index];
    let (target, connect_timeout) = grpc_target(
        proto,
        &format!("static_resources.clusters[{index}]"),
        errors,
    )?;
    (errors.len() == before).then(|| DynamicSources {
        ads: StreamSettings {
            service: Service::Aggregated,
            target,
            delta,
            node: bootstrap.node.clone().unwrap_or_default(),
            set_node_on_first_message_only: ads.set_node_on_first_message_only,
            connect_timeout,
        },
        grpc_cluster: cluster_name,
        cds,
        lds,
    })
}

/// The static clusters a gRPC config source (ADS, an SDS stream) may name: those with exactly
/// one endpoint, a socket address or a pipe; with where each points.
pub fn grpc_clusters(bootstrap: &Bootstrap) -> HashMap<String, (GrpcTarget, Duration)> {
    let clusters = bootstrap.static_resources.iter().flat_map(|s| &s.clusters);
    clusters
        .filter_map(|c| Some((c.name.clone(), grpc_target(c, "", &mut Vec::new())?)))
        .collect()
}

/// Whether a static cluster's one endpoint is a unix socket (`pipe`), as Istio's `xds-grpc`
/// and `sds-grpc`: only the agent's gRPC streams can reach it (shards have no unix-socket
/// upstreams), so it is not published.
pub fn is_pipe_cluster(proto: &ClusterProto) -> bool {
    matches!(
        grpc_target(proto, "", &mut Vec::new()),
        Some((GrpcTarget::Unix(_), _))
    )
}

/// Where a control-plane cluster points: its one endpoint, a socket address or a pipe. Only
/// `connect_timeout` and the endpoint are read: the agent's gRPC client (tonic, HTTP/2)
/// brings its own connection handling, so the cluster's other options do not apply.
fn grpc_target(
    proto: &ClusterProto,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<(GrpcTarget, Duration)> {
    let connect_timeout = positive_duration(
        proto.connect_timeout.as_ref(),
        DEFAULT_CONNECT_TIMEOUT,
        &format!("{path}.connect_timeout"),
        errors,
    );
    let endpoints: Vec<_> = proto
        .load_assignment
        .iter()
        .flat_map(|a| &a.endpoints)
        .flat_map(|l| &l.lb_endpoints)
        .collect();
    let at = format!("{path}.load_assignment");
    let [endpoint] = endpoints.as_slice() else {
        errors.push(TranslateError::new(
            at,
            None,
            "a control-plane cluster must have exactly one endpoint",
        ));
        return None;
    };
    let address = match &endpoint.host_identifier {
        Some(HostIdentifier::Endpoint(e)) => e.address.as_ref(),
        _ => None,
    };
    let at = format!("{at}.endpoints[0].lb_endpoints[0].endpoint.address");
    let target = match address.and_then(|a| a.address.as_ref()) {
        Some(AddressKind::Pipe(pipe)) if !pipe.path.is_empty() => {
            GrpcTarget::Unix(PathBuf::from(&pipe.path))
        }
        Some(AddressKind::SocketAddress(_)) => {
            GrpcTarget::Tcp(address::socket_address(address?, &at, errors)?)
        }
        _ => {
            errors.push(TranslateError::new(
                at,
                None,
                "a socket address or a pipe path is required",
            ));
            return None;
        }
    };
    Some((target, connect_timeout))
}

/// The node sent to control planes: the bootstrap's, with the user agent Envoy reports (so
/// control planes that gate features on it treat this proxy as the Envoy API level it
/// implements) and this build in the metadata.
pub fn node_identity(node: &Node) -> Node {
    use envoy_types::pb::{
        envoy::config::core::v3::{node::UserAgentVersionType, BuildVersion},
        envoy::r#type::v3::SemanticVersion,
        google::protobuf::{value::Kind, Struct, Value},
    };
    let mut node = node.clone();
    node.user_agent_name = "envoy".into();
    let metadata = Struct {
        fields: [(
            "shardproxy.version".to_string(),
            Value {
                kind: Some(Kind::StringValue(env!("CARGO_PKG_VERSION").into())),
            },
        )]
        .into(),
    };
    node.user_agent_version_type =
        Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
            version: Some(SemanticVersion {
                major_number: ENVOY_API_LEVEL.0,
                minor_number: ENVOY_API_LEVEL.1,
                patch: ENVOY_API_LEVEL.2,
            }),
            metadata: Some(metadata),
        }));
    node
}

/// The Envoy release whose API and behaviour this proxy follows (its reference in tests).
pub const ENVOY_API_LEVEL: (u32, u32, u32) = (1, 40, 0);
