//! What changed between two generations, as Envoy's listener_manager / cluster_manager stats.
use std::{collections::HashMap, sync::Arc};

use model::{health::CoarseHealth, stats::StatsRegistry, Listener, Snapshot};

/// The clusters that may differ between two generations: the change list when `new` carries
/// one relative to `old`, else every name in either.
pub(super) fn changed_clusters<'a>(old: &'a Snapshot, new: &'a Snapshot) -> Vec<&'a str> {
    match &new.cluster_changes {
        Some(changes) if new.generation == old.generation + 1 => {
            changes.iter().map(String::as_str).collect()
        }
        _ => {
            let mut names: Vec<&str> = old
                .clusters
                .keys()
                .chain(new.clusters.keys())
                .map(String::as_str)
                .collect();
            names.sort_unstable();
            names.dedup();
            names
        }
    }
}

/// Whether two generations run the same listeners, clusters and route tables (by pointer).
pub(super) fn same_config(old: &Snapshot, new: &Snapshot) -> bool {
    old.listeners.len() == new.listeners.len()
        && old
            .listeners
            .iter()
            .zip(&new.listeners)
            .all(|(a, b)| Arc::ptr_eq(a, b))
        && changed_clusters(old, new).into_iter().all(|name| {
            match (old.clusters.get(name), new.clusters.get(name)) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        })
        && old.routes.len() == new.routes.len()
        && new
            .routes
            .iter()
            .all(|(name, r)| old.routes.get(name).is_some_and(|o| Arc::ptr_eq(o, r)))
        && match (&old.overload, &new.overload) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        }
}

/// Envoy's listener_manager / cluster_manager change counters and gauges.
pub(super) fn record_changes(stats: &StatsRegistry, old: &Snapshot, new: &Snapshot) {
    use model::stats::{add, set};
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
    for name in changed_clusters(old, new) {
        let cluster = match (old.clusters.get(name), new.clusters.get(name)) {
            (None, Some(cluster)) => {
                add(&cm.cluster_added, 1);
                cluster
            }
            (Some(o), Some(cluster)) if !Arc::ptr_eq(o, cluster) => {
                add(&cm.cluster_modified, 1);
                cluster
            }
            (Some(_), None) => {
                add(&cm.cluster_removed, 1);
                continue;
            }
            _ => continue,
        };
        let cells = cluster.stats.shard(0);
        set(&cells.membership_total, cluster.endpoints.len() as i64);
        let healthy = cluster
            .endpoints
            .iter()
            .filter(|e| e.eds_health.coarse() == CoarseHealth::Healthy)
            .count();
        set(&cells.membership_healthy, healthy as i64);
    }
    set(&cm.active_clusters, new.clusters.len() as i64);
}
