//! Translator: Envoy v3 protos → validated domain model (`model`). The one path both the
//! bootstrap file and (later) xDS take.
//!
//! Two passes, both collecting every problem: the reflective walker (`support`) rejects each set
//! field outside the supported surface (`surface`); the semantic pass (`listener`, `tcp_proxy`,
//! `cluster`) checks values and references and builds the model. A part the walker rejected is
//! skipped silently by the semantic pass, so each problem is reported once.
mod access_log;
mod address;
mod bootstrap_surface;
mod cluster;
mod cluster_http;
pub mod config_source;
mod connection_limit;
mod data_source;
pub mod dynamic_resources;
mod ext_authz;
mod filter_chain_match;
mod health;
mod http_connection_manager;
mod http_filters;
mod http_surface;
pub mod istio;
mod istio_stats;
mod listener;
mod listener_filters;
mod local_reply;
mod matchers;
mod network_filters;
mod null_vm;
mod overload;
mod rbac;
pub mod resources;
mod route;
pub mod secret;
mod stats_config;
mod subset;
pub mod support;
pub mod surface;
mod tcp_proxy;
pub mod tls;
mod tls_surface;
pub mod tracing;

use std::{
    borrow::Cow,
    collections::{hash_map::DefaultHasher, HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use envoy_types::pb::{
    envoy::config::{
        bootstrap::v3::{bootstrap::StaticResources, Bootstrap},
        cluster::v3::Cluster as ClusterProto,
    },
    google::protobuf::{self, Any},
};

use model::{istio::LocalPeer, stats::StatsRegistry, Endpoint, Snapshot};

use crate::port_zero::PortReservations;

pub use cluster::cluster_tls;
pub use listener::listener_tls;

pub use model::DEFAULT_BUFFER_LIMIT;

/// A rejected input: where (field path from the bootstrap root), for typed configs the type
/// URL, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{path}{}: {message}", type_url.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
pub struct TranslateError {
    pub path: String,
    pub type_url: Option<String>,
    pub message: String,
}

impl TranslateError {
    pub(crate) fn new(
        path: impl Into<String>,
        type_url: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            type_url: type_url.map(str::to_string),
            message: message.into(),
        }
    }
}

/// Inputs a translation reads besides the bootstrap.
pub struct TranslateContext<'a> {
    pub generation: u64,
    pub stats: &'a mut StatsRegistry,
    /// The generation being replaced: unchanged listeners and clusters are shared with it.
    pub previous: Option<&'a Snapshot>,
    /// Resolved addresses of DNS clusters, by cluster name.
    pub dns: &'a HashMap<String, Arc<[Endpoint]>>,
    /// ECDS configs (`TypedExtensionConfig.typed_config`) by name, for HTTP filters whose
    /// config is discovered (`config_discovery`).
    pub extensions: &'a HashMap<String, Any>,
    /// What TLS contexts' `sds_secret_config`s resolve against: the bootstrap's part is
    /// filled by `translate`, the SDS secrets held are the caller's.
    pub secrets: Arc<tls::Secrets>,
    /// This proxy's identity for Istio's metadata exchange: set by `translate` from the
    /// bootstrap's node (xDS resources take the static snapshot's).
    pub local_peer: Arc<LocalPeer>,
    /// Where a listener on port 0 gets its port (the serving agent's); `None` (validation,
    /// tests) leaves port 0 in the address.
    pub ports: Option<&'a PortReservations>,
}

/// The message in `any` (a typed config at `path`), or `None` with why not in `errors`.
fn decode_typed<M: prost::Message + Default + prost::Name>(
    any: &Any,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<M> {
    proto::decode_any(any)
        .map_err(|e| {
            errors.push(TranslateError::new(
                path.to_string(),
                Some(&any.type_url),
                e.to_string(),
            ))
        })
        .ok()
}

/// Translates a bootstrap into a snapshot, or lists every problem found.
pub fn translate(
    bootstrap: &Bootstrap,
    ctx: &mut TranslateContext,
) -> Result<Snapshot, Vec<TranslateError>> {
    let mut errors = Vec::new();
    ctx.local_peer = Arc::new(istio::local_peer(bootstrap.node.as_ref()));
    let stat_naming = Arc::new(stats_config::stat_naming(
        bootstrap.stats_config.as_ref(),
        &mut errors,
    ));
    let internal_buffer = listener::internal_buffer(bootstrap, &mut errors);
    let connection_limit = overload::connection_limit(bootstrap, ctx.previous, &mut errors);
    let overload = overload::overload(bootstrap, ctx, &mut errors);
    let sources = dynamic_resources::dynamic_sources(bootstrap, &mut errors);
    // Control-plane clusters are the agent's own: the ADS cluster (read by
    // `dynamic_sources`) and unix-socket ones (Istio's `sds-grpc`) are not walked (their
    // connection options do not apply to the agent's gRPC client) nor published.
    let agents: HashSet<&str> = bootstrap
        .static_resources
        .iter()
        .flat_map(|s| &s.clusters)
        .filter(|c| dynamic_resources::is_pipe_cluster(c))
        .map(|c| c.name.as_str())
        .chain(sources.as_ref().map(|s| s.grpc_cluster.as_str()))
        .collect();
    let walked = without_clusters(bootstrap, &agents);
    errors.extend(support::unsupported_fields(walked.as_ref(), "", None));
    let empty = StaticResources::default();
    let statics = walked.static_resources.as_ref().unwrap_or(&empty);
    let local_zone = cluster::local_zone(bootstrap, &statics.clusters, &mut errors);
    ctx.secrets = Arc::new(tls::Secrets {
        statics: Arc::new(tls::static_secrets(
            &statics.secrets,
            "static_resources.secrets",
            &mut errors,
        )),
        grpc_clusters: Arc::new(dynamic_resources::grpc_clusters(bootstrap)),
        ads: sources.is_some(),
        held: ctx.secrets.held.clone(),
        tracing: Arc::new(tracing::bootstrap_tracing(
            bootstrap,
            ctx.stats,
            &mut errors,
        )),
    });
    let mut clusters = cluster::clusters(
        &statics.clusters,
        "static_resources.clusters",
        ctx,
        &mut errors,
    );
    clusters.retain(|name, _| !agents.contains(name.as_str()));
    // Names of every cluster given (translated or not: a broken cluster is reported once).
    let cluster_names: HashSet<&str> = statics
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .filter(|name| !agents.contains(name))
        .collect();
    let listeners = listener::listeners(
        &statics.listeners,
        "static_resources.listeners",
        &cluster_names,
        ctx,
        &mut errors,
    );
    if sources.is_none() {
        for (i, listener) in statics.listeners.iter().enumerate() {
            let uses_rds = listeners
                .iter()
                .find(|l| l.name == listener.name)
                .is_some_and(|l| crate::dynamic::rds_sources(l).next().is_some());
            if uses_rds {
                errors.push(TranslateError::new(
                    format!("static_resources.listeners[{i}]"),
                    None,
                    "rds needs an ADS stream: add dynamic_resources.ads_config",
                ));
            }
        }
    }
    if let Some(admin) = &bootstrap.admin {
        if let Some(address) = &admin.address {
            address::socket_address(address, "admin.address", &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(Snapshot {
            generation: ctx.generation,
            listeners,
            clusters: clusters.into_iter().collect(),
            cluster_changes: None,
            routes: HashMap::new(),
            local_peer: ctx.local_peer.clone(),
            stat_naming,
            internal_buffer,
            log_stats: Some(ctx.stats.lasting("filesystem".into())),
            connection_limit,
            overload,
            local_zone,
        })
    } else {
        let mut seen = HashSet::new();
        errors.retain(|e| seen.insert(e.clone()));
        Err(errors)
    }
}

/// The bootstrap with the clusters `names` reduced to their names (indexes, and so error
/// paths, stay those of the file).
fn without_clusters<'a>(bootstrap: &'a Bootstrap, names: &HashSet<&str>) -> Cow<'a, Bootstrap> {
    if names.is_empty() {
        return Cow::Borrowed(bootstrap);
    }
    let mut owned = bootstrap.clone();
    for cluster in owned
        .static_resources
        .iter_mut()
        .flat_map(|s| s.clusters.iter_mut())
        .filter(|c| names.contains(c.name.as_str()))
    {
        *cluster = ClusterProto {
            name: cluster.name.clone(),
            ..Default::default()
        };
    }
    Cow::Owned(owned)
}

/// Every problem `translate` would report for `bootstrap` (empty when it translates), without
/// touching any live state.
pub fn validate(bootstrap: &Bootstrap) -> Vec<TranslateError> {
    let mut stats = StatsRegistry::new(1);
    let dns = HashMap::new();
    let mut ctx = TranslateContext {
        generation: 0,
        stats: &mut stats,
        previous: None,
        dns: &dns,
        extensions: &Default::default(),
        secrets: Default::default(),
        local_peer: Default::default(),
        ports: None,
    };
    translate(bootstrap, &mut ctx).err().unwrap_or_default()
}

/// Hash of a message's canonical form: equal configs hash equal within a process. Not the
/// binary encoding, whose maps (metadata, `typed_per_filter_config`) come out in hash-map
/// order, different for two parses of the same text: the proto3 JSON rendering, which sorts
/// map keys and expands `Any`s. A message with an `Any` of a type outside the pool (possible
/// only from xDS) falls back to its encoding.
fn config_hash<M: prost::Message + prost::Name>(message: &M) -> u64 {
    let mut hasher = DefaultHasher::new();
    match proto::try_to_json(message) {
        Ok(json) => json.to_string().hash(&mut hasher),
        Err(_) => message.encode_to_vec().hash(&mut hasher),
    }
    hasher.finish()
}

/// A proto duration as a `Duration`; negative or malformed ones are errors.
fn duration(
    value: &protobuf::Duration,
    path: &str,
    type_url: Option<&str>,
    errors: &mut Vec<TranslateError>,
) -> Option<Duration> {
    if value.seconds < 0 || !(0..1_000_000_000).contains(&value.nanos) {
        errors.push(TranslateError::new(
            path,
            type_url,
            "must be a non-negative duration",
        ));
        return None;
    }
    Some(Duration::new(value.seconds as u64, value.nanos as u32))
}

/// A proto duration that must be positive (Envoy's `gt: {}` rule).
fn positive_duration(
    value: Option<&protobuf::Duration>,
    default: Duration,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Duration {
    match value.map(|v| duration(v, path, None, errors)) {
        None => default,
        Some(Some(d)) if !d.is_zero() => d,
        Some(Some(_)) => {
            errors.push(TranslateError::new(path, None, "must be greater than zero"));
            default
        }
        Some(None) => default,
    }
}

/// `per_connection_buffer_limit_bytes`, defaulting to Envoy's 1 MiB.
fn buffer_limit(value: Option<&protobuf::UInt32Value>) -> usize {
    value.map_or(DEFAULT_BUFFER_LIMIT, |v| v.value as usize)
}

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod sds_tests;
#[cfg(test)]
mod tests;
