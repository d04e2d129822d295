//! Dynamic config: the xDS resources the agent holds (the accepted version of each), their
//! translations, which ones are still warming, and the snapshot they assemble into with the
//! bootstrap's static resources. Only what an update touches is translated again.
mod apply;
mod assemble;

pub use apply::Applied;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Instant, SystemTime},
};

use envoy_types::pb::google::protobuf::Any;

use crate::model::{http::Routes, route::RouteConfig, Cluster, Endpoint, Listener, NetworkFilter};

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const ASSIGNMENT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The resource types the agent subscribes to, in Envoy's order.
pub const TYPES: [&str; 4] = [CLUSTER, ASSIGNMENT, LISTENER, ROUTE];

/// An accepted resource: its version, when it was accepted, what it was (for `/config_dump`),
/// and its translation.
#[derive(Debug, Clone)]
pub struct Held<T> {
    pub version: String,
    pub last_updated: SystemTime,
    pub body: Any,
    pub model: T,
}

/// A resource that was rejected: the reason, and the version offered.
#[derive(Debug, Clone)]
pub struct Failed {
    pub version: String,
    pub reason: String,
    pub at: SystemTime,
}

/// Per type: the last accepted `version_info`, and the last rejection.
#[derive(Debug, Clone, Default)]
pub struct TypeStatus {
    pub version_info: String,
    pub last_updated: Option<SystemTime>,
    /// Any response seen (the initial fetch is over for this type).
    pub received: bool,
    pub last_rejection: Option<Failed>,
}

#[derive(Debug, Default)]
pub struct DynamicConfig {
    pub clusters: BTreeMap<String, Held<Arc<Cluster>>>,
    pub assignments: BTreeMap<String, Held<Arc<[Endpoint]>>>,
    pub listeners: BTreeMap<String, Held<Arc<Listener>>>,
    pub routes: BTreeMap<String, Held<Arc<RouteConfig>>>,
    /// Rejected resources by (type URL, name): the NACK reasons `/config_dump` reports.
    pub failed: BTreeMap<(String, String), Failed>,
    pub status: HashMap<String, TypeStatus>,
    /// Clusters as published (EDS ones with their endpoints attached), kept between
    /// generations so an EDS change rebuilds only its cluster.
    published: HashMap<String, Arc<Cluster>>,
    /// Names whose published form must be rebuilt (a cluster or its assignment changed).
    dirty: HashSet<String>,
    /// Held clusters by the EDS assignment they take their endpoints from, so an assignment
    /// update finds its clusters without scanning them all.
    eds_users: HashMap<String, HashSet<String>>,
    /// When a wanted EDS assignment or RDS table stops holding its dependants back
    /// (`initial_fetch_timeout`); absent once it arrived or timed out.
    pub waiting: HashMap<(&'static str, String), Option<Instant>>,
}

impl DynamicConfig {
    /// EDS assignment names the held clusters need.
    pub fn wanted_assignments(&self) -> Vec<String> {
        let names: HashSet<&str> = self
            .clusters
            .values()
            .filter_map(|c| c.model.eds.as_deref())
            .collect();
        sorted(names)
    }

    /// RDS table names the held listeners need.
    pub fn wanted_routes(&self) -> Vec<String> {
        let names: HashSet<&str> = self
            .listeners
            .values()
            .flat_map(|l| rds_names(&l.model))
            .collect();
        sorted(names)
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
            let new = held.model.eds.clone();
            self.index_eds(name, old.eds.as_deref(), new.as_deref());
            self.dirty.insert(name.to_string());
        }
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

    pub fn status(&mut self, type_url: &str) -> &mut TypeStatus {
        self.status.entry(type_url.to_string()).or_default()
    }
}

fn sorted(names: HashSet<&str>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().map(str::to_string).collect();
    names.sort();
    names
}

/// The RDS tables a listener's connection managers name.
pub fn rds_names(listener: &Listener) -> impl Iterator<Item = &str> {
    listener
        .filter_chains
        .iter()
        .filter_map(|chain| match &chain.network {
            NetworkFilter::HttpConnectionManager(hcm) => match &hcm.routes {
                Routes::Rds(name) => Some(name.as_str()),
                Routes::Static(_) => None,
            },
            NetworkFilter::TcpProxy(_) => None,
        })
}

#[cfg(test)]
mod tests;
