//! Dynamic config: assembling a generation — the bootstrap's static resources plus every
//! dynamic one that finished warming (an EDS cluster once its assignment arrived, a listener
//! once the RDS tables it names arrived, either once its SDS secrets arrived, or when
//! `initial_fetch_timeout` ran out). A static listener waits for its SDS secrets too.
use std::{sync::Arc, time::Instant};

use super::{
    cluster_secrets, listener_secrets, rds_sources, DynamicConfig, Wanted, ASSIGNMENT, ROUTE,
};
use model::{Cluster, ClusterMap, Listener, Snapshot};

impl DynamicConfig {
    /// Starts the `initial_fetch_timeout` clock for wanted names not held yet (`None`: wait
    /// forever).
    pub fn wait_for(&mut self, type_url: &'static str, wanted: &Wanted, now: Instant) {
        for (name, timeout) in wanted {
            if !self.holds(type_url, name) {
                self.waiting
                    .entry((type_url, name.clone()))
                    .or_insert_with(|| timeout.map(|t| now + t));
            }
        }
    }

    /// The earliest pending `initial_fetch_timeout` deadline.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let waiting = self.waiting.values().flatten().filter(|d| **d > now).min();
        waiting
            .copied()
            .into_iter()
            .chain(self.next_secret_deadline(now))
            .min()
    }

    /// Whether an EDS assignment or RDS table (by `type_url`) is held.
    fn holds(&self, type_url: &str, name: &str) -> bool {
        match type_url {
            ASSIGNMENT => self.assignments.contains_key(name),
            _ => self.routes.contains_key(name),
        }
    }

    /// Whether a wanted resource is held or gave up on (its timeout passed).
    fn settled(&self, type_url: &'static str, name: &str, now: Instant) -> bool {
        self.holds(type_url, name)
            || self
                .waiting
                .get(&(type_url, name.to_string()))
                .is_some_and(|deadline| deadline.is_some_and(|d| d <= now))
    }

    /// Whether anything held is still warming, or an SDS secret still awaited.
    pub fn warming(&self, now: Instant) -> bool {
        self.warming_clusters(now).next().is_some()
            || self.warming_listeners(now).next().is_some()
            || self.any_secret_pending(now)
    }

    /// Clusters waiting for their EDS assignment or SDS secrets.
    pub fn warming_clusters(&self, now: Instant) -> impl Iterator<Item = &str> {
        self.clusters
            .iter()
            .filter(move |(_, held)| self.cluster_pending(&held.model, now))
            .map(|(name, _)| name.as_str())
    }

    fn cluster_pending(&self, cluster: &Cluster, now: Instant) -> bool {
        cluster
            .eds_name()
            .is_some_and(|eds| !self.settled(ASSIGNMENT, eds, now))
            || self.secrets_pending(cluster_secrets(cluster), now)
    }

    /// Listeners waiting for their RDS tables, SDS secrets or ECDS configs (a waiting update
    /// of a listener whose previous version serves counts too).
    pub fn warming_listeners(&self, now: Instant) -> impl Iterator<Item = &str> {
        let pending = self
            .listeners
            .iter()
            .filter(move |(_, held)| self.listener_pending(&held.model, now))
            .map(|(name, _)| name.as_str());
        pending.chain(self.awaiting.keys().map(String::as_str))
    }

    /// Whether a listener still waits for an RDS table or SDS secret it names.
    fn listener_pending(&self, listener: &Listener, now: Instant) -> bool {
        rds_sources(listener).any(|table| !self.settled(ROUTE, &table.name, now))
            || self.secrets_pending(listener_secrets(listener), now)
    }

    /// Generation `generation`: `statics` plus the dynamic resources that are active. The
    /// cluster map is the previous generation's with only the changed clusters replaced
    /// (rebuilt when `statics` is new).
    pub fn assemble(&mut self, statics: &Arc<Snapshot>, generation: u64, now: Instant) -> Snapshot {
        let (mut clusters, rebased) = match self.assembled.take() {
            Some((base, clusters)) if Arc::ptr_eq(&base, statics) => (clusters, false),
            previous => (rebase(previous, statics), true),
        };
        let changed = self.publish_clusters(&mut clusters, now);
        self.assembled = Some((statics.clone(), clusters.clone()));
        let mut routes = statics.routes.clone();
        routes.extend(
            self.routes
                .iter()
                .map(|(n, r)| (n.clone(), r.model.clone())),
        );
        let listeners = statics
            .listeners
            .iter()
            .filter(|listener| !self.secrets_pending(listener_secrets(listener), now))
            .cloned()
            .chain(
                self.listeners
                    .values()
                    .filter(|held| !self.listener_pending(&held.model, now))
                    .map(|held| held.model.clone()),
            )
            .collect();
        Snapshot {
            generation,
            listeners,
            clusters,
            cluster_changes: (!rebased).then_some(changed),
            routes,
            local_peer: statics.local_peer.clone(),
            stat_naming: statics.stat_naming.clone(),
            internal_buffer: statics.internal_buffer,
            log_stats: statics.log_stats.clone(),
            connection_limit: statics.connection_limit.clone(),
            overload: statics.overload.clone(),
            local_zone: statics.local_zone.clone(),
        }
    }

    /// Brings the dynamic clusters of `clusters` up to date for those marked dirty and those
    /// still warming (their timeout may have passed); the names whose published form changed.
    fn publish_clusters(&mut self, clusters: &mut ClusterMap, now: Instant) -> Vec<String> {
        let mut names: Vec<String> = self.dirty.drain().collect();
        names.extend(self.unpublished.iter().cloned());
        names.sort();
        names.dedup();
        let mut changed = Vec::new();
        for name in names {
            let form = self.published_form(&name, now);
            if form.is_none() && self.clusters.contains_key(&name) {
                self.unpublished.insert(name.clone());
            } else {
                self.unpublished.remove(&name);
            }
            let same = match (&form, clusters.get(&name)) {
                (Some(new), Some(old)) => Arc::ptr_eq(new, old),
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            match form {
                Some(cluster) => clusters.insert(name.clone(), cluster),
                None => clusters.remove(&name),
            };
            changed.push(name);
        }
        changed
    }

    /// A cluster as shards get it: with its EDS endpoints; `None` while warming or removed.
    fn published_form(&self, name: &str, now: Instant) -> Option<Arc<Cluster>> {
        let held = self.clusters.get(name)?;
        if self.secrets_pending(cluster_secrets(&held.model), now) {
            return None;
        }
        let Some(eds) = held.model.eds_name() else {
            return Some(held.model.clone());
        };
        match self.assignments.get(eds) {
            Some(assignment) => Some(Arc::new(
                held.model.with_endpoints(assignment.model.clone()),
            )),
            None if self.settled(ASSIGNMENT, eds, now) => Some(held.model.clone()),
            None => None,
        }
    }
}

/// `statics`' clusters plus the dynamic ones of the `previous` assembly (those not from its
/// own statics: CDS may not shadow a static cluster).
fn rebase(previous: Option<(Arc<Snapshot>, ClusterMap)>, statics: &Snapshot) -> ClusterMap {
    let mut clusters = statics.clusters.clone();
    if let Some((base, old)) = previous {
        clusters.extend(
            old.into_iter()
                .filter(|(name, _)| !base.clusters.contains_key(name)),
        );
    }
    clusters
}
