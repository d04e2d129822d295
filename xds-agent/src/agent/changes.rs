//! What changed between two generations, as Envoy's listener_manager / cluster_manager stats.
use std::{collections::HashMap, sync::Arc};

use crate::{
    model::{Listener, Snapshot},
    stats::StatsRegistry,
};

/// Whether two generations run the same listeners, clusters and route tables (by pointer).
pub(super) fn same_config(old: &Snapshot, new: &Snapshot) -> bool {
    old.listeners.len() == new.listeners.len()
        && old
            .listeners
            .iter()
            .zip(&new.listeners)
            .all(|(a, b)| Arc::ptr_eq(a, b))
        && old.clusters.len() == new.clusters.len()
        && new
            .clusters
            .iter()
            .all(|(name, c)| old.clusters.get(name).is_some_and(|o| Arc::ptr_eq(o, c)))
        && old.routes.len() == new.routes.len()
        && new
            .routes
            .iter()
            .all(|(name, r)| old.routes.get(name).is_some_and(|o| Arc::ptr_eq(o, r)))
}

/// Envoy's listener_manager / cluster_manager change counters and gauges.
pub(super) fn record_changes(stats: &StatsRegistry, old: &Snapshot, new: &Snapshot) {
    use crate::stats::{add, set};
    let lm = stats.listener_manager.shard(0);
    let old_listeners: HashMap<&str, &Arc<Listener>> =
        old.listeners.iter().map(|l| (l.name.as_str(), l)).collect();
    for listener in &new.listeners {
        match old_listeners.get(listener.name.as_str()) {
            None => add(&lm.listener_added, 1),
            Some(o) if !Arc::ptr_eq(o, listener) => add(&lm.listener_modified, 1),
            Some(_) => {}
        }
    }
    let removed = old
        .listeners
        .iter()
        .filter(|o| !new.listeners.iter().any(|n| n.name == o.name))
        .count();
    add(&lm.listener_removed, removed as u64);
    set(&lm.total_listeners_active, new.listeners.len() as i64);
    let cm = stats.cluster_manager.shard(0);
    for (name, cluster) in &new.clusters {
        match old.clusters.get(name) {
            None => add(&cm.cluster_added, 1),
            Some(o) if !Arc::ptr_eq(o, cluster) => add(&cm.cluster_modified, 1),
            Some(_) => continue,
        }
        let cells = cluster.stats.shard(0);
        set(&cells.membership_total, cluster.endpoints.len() as i64);
        set(&cells.membership_healthy, cluster.endpoints.len() as i64);
    }
    let removed = old
        .clusters
        .keys()
        .filter(|name| !new.clusters.contains_key(*name))
        .count();
    add(&cm.cluster_removed, removed as u64);
    set(&cm.active_clusters, new.clusters.len() as i64);
}
