//! Dynamic config: the xDS resources the agent holds (the accepted version of each), their
//! translations, which ones are still warming, and the snapshot they assemble into with the
//! bootstrap's static resources. Only what an update touches is translated again.
mod apply;
mod assemble;
mod extensions;
mod secrets;

pub(crate) use apply::join;
pub use apply::Applied;
pub use secrets::SecretStore;

use secrets::{cluster_secrets, listener_secrets};

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use envoy_types::pb::google::protobuf::Any;

use crate::{
    port_zero::PortReservations,
    translate::{tls::Secrets, TranslateContext},
};

use model::{
    http::Routes, istio::LocalPeer, route::RouteConfig, stats::StatsRegistry, Cluster, ClusterMap,
    DiscoveredBy, Endpoint, Listener, NetworkFilter, Snapshot,
};

pub use crate::names::type_urls::{ASSIGNMENT, CLUSTER, EXTENSION, LISTENER, ROUTE, SECRET};

/// The stats scope of each type's updates: Envoy's names for CDS and LDS; EDS and RDS
/// totals (Envoy keeps those per cluster and per route table) under `xds.*`.
pub fn stats_prefix(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER => "cluster_manager.cds",
        LISTENER => "listener_manager.lds",
        ASSIGNMENT => "xds.eds",
        EXTENSION => "xds.ecds",
        _ => "xds.rds",
    }
}

/// An accepted resource: its version, when it was accepted, what it was (for `/config_dump`),
/// and its translation.
#[derive(Debug, Clone)]
pub struct Held<T> {
    pub version: String,
    pub last_updated: SystemTime,
    pub body: Any,
    pub model: T,
}

impl<T> Held<T> {
    /// The same resource with another model.
    pub fn with<U>(&self, model: U) -> Held<U> {
        Held {
            version: self.version.clone(),
            last_updated: self.last_updated,
            body: self.body.clone(),
            model,
        }
    }
}

/// What translating a resource reads besides the resource (see `TranslateContext`); the
/// ECDS configs come from the dynamic config itself.
pub struct Inputs<'a> {
    pub generation: u64,
    pub stats: &'a mut StatsRegistry,
    pub previous: Option<&'a Snapshot>,
    pub dns: &'a HashMap<String, Arc<[Endpoint]>>,
    pub ports: Option<&'a PortReservations>,
}

impl Inputs<'_> {
    fn context<'b>(
        &'b mut self,
        extensions: &'b HashMap<String, Any>,
        secrets: &Arc<Secrets>,
        local_peer: &Arc<LocalPeer>,
    ) -> TranslateContext<'b> {
        TranslateContext {
            generation: self.generation,
            stats: self.stats,
            previous: self.previous,
            dns: self.dns,
            extensions,
            secrets: secrets.clone(),
            local_peer: local_peer.clone(),
            ports: self.ports,
        }
    }
}

/// A resource that was rejected: the reason, and the version offered.
#[derive(Debug, Clone)]
pub struct Failed {
    pub version: String,
    pub reason: String,
    pub at: SystemTime,
}

/// Per type: the last accepted `version_info`, and whether any response came.
#[derive(Debug, Clone, Default)]
pub struct TypeStatus {
    pub version_info: String,
    /// Any response seen (the initial fetch is over for this type).
    pub received: bool,
}

#[derive(Debug, Default)]
pub struct DynamicConfig {
    pub clusters: BTreeMap<String, Held<Arc<Cluster>>>,
    pub assignments: BTreeMap<String, Held<Arc<[Endpoint]>>>,
    pub listeners: BTreeMap<String, Held<Arc<Listener>>>,
    pub routes: BTreeMap<String, Held<Arc<RouteConfig>>>,
    /// ECDS resources held (their configs are in `extension_configs`).
    pub extensions: BTreeMap<String, Held<()>>,
    pub extension_configs: HashMap<String, Any>,
    /// Listeners accepted but waiting for ECDS configs they name (a previous version of one
    /// may still be in `listeners`, serving).
    pub awaiting: BTreeMap<String, Held<()>>,
    /// The ECDS names each listener (held or waiting) needs.
    listener_extensions: HashMap<String, Vec<String>>,
    /// Rejected resources by (type URL, name): the NACK reasons `/config_dump` reports.
    pub failed: BTreeMap<(String, String), Failed>,
    pub status: HashMap<String, TypeStatus>,
    /// Names whose published form must be rebuilt (a cluster or its assignment changed).
    dirty: HashSet<String>,
    /// Held clusters not published yet (warming): looked at again at each assembly.
    unpublished: BTreeSet<String>,
    /// The last assembled cluster map (static clusters, and dynamic ones as published: EDS
    /// ones with their endpoints) and the static translation it was built on.
    assembled: Option<(Arc<Snapshot>, ClusterMap)>,
    /// Held clusters by the EDS assignment they take their endpoints from, so an assignment
    /// update finds its clusters without scanning them all.
    eds_users: HashMap<String, HashSet<String>>,
    /// When a wanted EDS assignment or RDS table stops holding its dependants back
    /// (`initial_fetch_timeout`); absent once it arrived or timed out.
    pub waiting: HashMap<(&'static str, String), Option<Instant>>,
    /// SDS secrets (from any source: ADS, SDS streams, files).
    pub secrets: SecretStore,
}

impl DynamicConfig {
    /// EDS assignments the held clusters need, with how long they wait for each.
    pub fn wanted_assignments(&self) -> Wanted {
        wanted(self.clusters.values().filter_map(|c| c.model.eds.as_ref()))
    }

    /// RDS tables the held listeners need, with how long they wait for each.
    pub fn wanted_routes(&self) -> Wanted {
        wanted(self.listeners.values().flat_map(|l| rds_sources(&l.model)))
    }

    /// Every cluster name a listener or route table may name: the bootstrap's and CDS's.
    fn known_clusters<'a>(&'a self, statics: &'a Snapshot) -> HashSet<&'a str> {
        statics
            .clusters
            .keys()
            .chain(self.clusters.keys())
            .map(String::as_str)
            .collect()
    }

    /// Replaces a held cluster's model (its DNS endpoints changed).
    pub fn replace_cluster(
        &mut self,
        name: &str,
        with: impl FnOnce(&Arc<Cluster>) -> Arc<Cluster>,
    ) {
        if let Some(held) = self.clusters.get_mut(name) {
            let model = with(&held.model);
            let old = std::mem::replace(&mut held.model, model);
            let new = held.model.eds_name().map(str::to_string);
            self.index_eds(name, old.eds_name(), new.as_deref());
            self.dirty.insert(name.to_string());
        }
    }

    /// `<scope>.version_text` of every type that got an update: the last accepted version.
    pub fn version_texts(&self) -> Vec<(String, String)> {
        let mut texts: Vec<(String, String)> = self
            .status
            .iter()
            .map(|(type_url, s)| {
                (
                    format!("{}.version_text", stats_prefix(type_url)),
                    s.version_info.clone(),
                )
            })
            .collect();
        texts.extend(self.secrets.version_texts());
        texts.sort();
        texts
    }

    /// Moves cluster `cluster` in `eds_users` from assignment `old` to `new`.
    fn index_eds(&mut self, cluster: &str, old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            if let Some(users) = self.eds_users.get_mut(old) {
                users.remove(cluster);
                if users.is_empty() {
                    self.eds_users.remove(old);
                }
            }
        }
        if let Some(new) = new {
            self.eds_users
                .entry(new.to_string())
                .or_default()
                .insert(cluster.to_string());
        }
    }
}

/// Names wanted, each with the longest wait any of its users allows (`None`: forever).
pub type Wanted = BTreeMap<String, Option<Duration>>;

fn wanted<'a>(sources: impl Iterator<Item = &'a DiscoveredBy>) -> Wanted {
    let mut out = Wanted::new();
    for source in sources {
        let wait = out
            .entry(source.name.clone())
            .or_insert(source.initial_fetch_timeout);
        *wait = match (*wait, source.initial_fetch_timeout) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    out
}

pub(super) fn sorted(names: HashSet<&str>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().map(str::to_string).collect();
    names.sort();
    names
}

/// The RDS tables a listener's connection managers name.
pub fn rds_sources(listener: &Listener) -> impl Iterator<Item = &DiscoveredBy> {
    listener
        .filter_chains
        .iter()
        .filter_map(|chain| match &chain.network {
            NetworkFilter::HttpConnectionManager(hcm) => match &hcm.routes {
                Routes::Rds(rds) => Some(rds),
                Routes::Static(_) => None,
            },
            NetworkFilter::TcpProxy(_) => None,
        })
}

#[cfg(test)]
mod tests;
