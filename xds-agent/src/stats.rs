//! Stats with Envoy's names: each shard writes only its own cache-line-padded cells (no
//! contended atomics), and readers (admin) sum the shards.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

/// Adds one to a cell owned by the calling shard (single writer: no read-modify-write).
#[inline]
pub fn inc(cell: &AtomicU64) {
    add(cell, 1);
}

/// Adds `n` to a cell owned by the calling shard.
#[inline]
pub fn add(cell: &AtomicU64, n: u64) {
    cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Subtracts one from a gauge cell owned by the calling shard (may go below zero per shard;
/// the sum over shards is what is reported).
#[inline]
pub fn dec(cell: &AtomicU64) {
    cell.store(cell.load(Relaxed).wrapping_sub(1), Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    Counter,
    Gauge,
}

/// One stat as read: full name, kind, value summed over shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatValue {
    pub name: String,
    pub kind: StatKind,
    pub value: i64,
}

#[repr(align(64))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

/// Declares a stats scope: a struct of per-shard cells and the scope holding one per shard.
macro_rules! stat_scope {
    ($scope:ident, $cells:ident { $($field:ident : $kind:ident),* $(,)? }) => {
        #[derive(Debug, Default)]
        pub struct $cells { $(pub $field: AtomicU64),* }

        #[derive(Debug)]
        pub struct $scope {
            prefix: String,
            shards: Box<[Padded<$cells>]>,
        }

        impl $scope {
            pub fn new(prefix: String, shards: usize) -> Self {
                Self { prefix, shards: (0..shards.max(1)).map(|_| Padded::default()).collect() }
            }

            /// The cells the given shard writes.
            #[inline]
            pub fn shard(&self, shard: usize) -> &$cells {
                &self.shards[shard].0
            }

            pub fn read(&self, out: &mut Vec<StatValue>) {
                $(
                    let sum = self.shards.iter().fold(0u64, |acc, s| acc.wrapping_add(s.0.$field.load(Relaxed)));
                    out.push(StatValue {
                        name: format!("{}.{}", self.prefix, stringify!($field)),
                        kind: StatKind::$kind,
                        value: sum as i64,
                    });
                )*
            }
        }
    };
}

stat_scope!(
    ListenerStats,
    ListenerCells {
        downstream_cx_total: Counter,
        downstream_cx_destroy: Counter,
        downstream_cx_active: Gauge,
        no_filter_chain_match: Counter,
    }
);

stat_scope!(
    TcpProxyStats,
    TcpProxyCells {
        downstream_cx_total: Counter,
        downstream_cx_no_route: Counter,
        downstream_cx_rx_bytes_total: Counter,
        downstream_cx_tx_bytes_total: Counter,
        downstream_flow_control_paused_reading_total: Counter,
        downstream_flow_control_resumed_reading_total: Counter,
        idle_timeout: Counter,
        upstream_flush_total: Counter,
    }
);

stat_scope!(
    ClusterStats,
    ClusterCells {
        upstream_cx_total: Counter,
        upstream_cx_active: Gauge,
        upstream_cx_connect_fail: Counter,
        upstream_cx_connect_timeout: Counter,
        upstream_cx_connect_attempts_exceeded: Counter,
        upstream_cx_none_healthy: Counter,
        upstream_cx_destroy: Counter,
        upstream_cx_destroy_local: Counter,
        upstream_cx_destroy_remote: Counter,
        upstream_cx_rx_bytes_total: Counter,
        upstream_cx_tx_bytes_total: Counter,
        membership_total: Gauge,
        membership_healthy: Gauge,
    }
);

stat_scope!(
    ServerStats,
    ServerCells {
        state: Gauge,
        live: Gauge,
        uptime: Gauge,
        concurrency: Gauge,
        version: Gauge,
        total_connections: Gauge,
    }
);

stat_scope!(
    ListenerManagerStats,
    ListenerManagerCells {
        workers_started: Gauge,
        total_listeners_active: Gauge,
        listener_added: Counter,
        listener_modified: Counter,
        listener_removed: Counter,
        listener_create_failure: Counter,
    }
);

stat_scope!(
    ClusterManagerStats,
    ClusterManagerCells {
        active_clusters: Gauge,
        cluster_added: Counter,
        cluster_modified: Counter,
        cluster_removed: Counter,
    }
);

stat_scope!(
    ConfigReloadStats,
    ConfigReloadCells {
        update_attempt: Counter,
        update_success: Counter,
        update_rejected: Counter,
    }
);

/// Envoy's `server.state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Live = 0,
    Draining = 1,
    PreInitializing = 2,
    Initializing = 3,
}

/// Every stats scope of the process, keyed by name so a scope survives config generations.
/// Owned by the agent; shards hold `Arc`s to the scopes their config points at.
#[derive(Debug)]
pub struct StatsRegistry {
    shards: usize,
    pub server: ServerStats,
    pub listener_manager: ListenerManagerStats,
    pub cluster_manager: ClusterManagerStats,
    pub bootstrap_reload: ConfigReloadStats,
    listeners: HashMap<String, Arc<ListenerStats>>,
    tcp_proxies: HashMap<String, Arc<TcpProxyStats>>,
    clusters: HashMap<String, Arc<ClusterStats>>,
}

impl StatsRegistry {
    pub fn new(shards: usize) -> Self {
        Self {
            shards,
            server: ServerStats::new("server".into(), 1),
            listener_manager: ListenerManagerStats::new("listener_manager".into(), 1),
            cluster_manager: ClusterManagerStats::new("cluster_manager".into(), 1),
            bootstrap_reload: ConfigReloadStats::new("server.bootstrap_reload".into(), 1),
            listeners: HashMap::new(),
            tcp_proxies: HashMap::new(),
            clusters: HashMap::new(),
        }
    }

    /// `listener.<stat_prefix>.*`
    pub fn listener(&mut self, stat_prefix: &str) -> Arc<ListenerStats> {
        let shards = self.shards;
        let prefix = format!("listener.{stat_prefix}");
        self.listeners
            .entry(prefix.clone())
            .or_insert_with(|| Arc::new(ListenerStats::new(prefix, shards)))
            .clone()
    }

    /// `tcp.<stat_prefix>.*`
    pub fn tcp_proxy(&mut self, stat_prefix: &str) -> Arc<TcpProxyStats> {
        let shards = self.shards;
        let prefix = format!("tcp.{stat_prefix}");
        self.tcp_proxies
            .entry(prefix.clone())
            .or_insert_with(|| Arc::new(TcpProxyStats::new(prefix, shards)))
            .clone()
    }

    /// `cluster.<name>.*`
    pub fn cluster(&mut self, name: &str) -> Arc<ClusterStats> {
        let shards = self.shards;
        let prefix = format!("cluster.{name}");
        self.clusters
            .entry(prefix.clone())
            .or_insert_with(|| Arc::new(ClusterStats::new(prefix, shards)))
            .clone()
    }

    /// Forgets scopes no config and no connection holds any more.
    pub fn prune(&mut self) {
        self.listeners.retain(|_, s| Arc::strong_count(s) > 1);
        self.tcp_proxies.retain(|_, s| Arc::strong_count(s) > 1);
        self.clusters.retain(|_, s| Arc::strong_count(s) > 1);
    }

    /// Every stat, summed over shards, sorted by name.
    pub fn read_all(&self) -> Vec<StatValue> {
        let mut out = Vec::new();
        self.server.read(&mut out);
        self.listener_manager.read(&mut out);
        self.cluster_manager.read(&mut out);
        self.bootstrap_reload.read(&mut out);
        self.listeners.values().for_each(|s| s.read(&mut out));
        self.tcp_proxies.values().for_each(|s| s.read(&mut out));
        self.clusters.values().for_each(|s| s.read(&mut out));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Sum of `downstream_cx_active` over every listener: what draining waits for.
    pub fn active_downstream_connections(&self) -> i64 {
        let mut out = Vec::new();
        self.listeners.values().for_each(|s| s.read(&mut out));
        out.iter()
            .filter(|s| s.name.ends_with(".downstream_cx_active"))
            .map(|s| s.value)
            .sum()
    }
}

/// Sets an agent-owned gauge (shard 0 of a one-shard scope).
pub fn set(cell: &AtomicU64, value: i64) {
    cell.store(value as u64, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_sum_and_gauges_go_negative_per_shard() {
        let mut registry = StatsRegistry::new(2);
        let l = registry.listener("0.0.0.0_80");
        inc(&l.shard(0).downstream_cx_active);
        inc(&l.shard(0).downstream_cx_active);
        dec(&l.shard(1).downstream_cx_active);
        add(&l.shard(1).downstream_cx_total, 5);
        let all = registry.read_all();
        let get = |n: &str| all.iter().find(|s| s.name == n).unwrap().value;
        assert_eq!(get("listener.0.0.0.0_80.downstream_cx_active"), 1);
        assert_eq!(get("listener.0.0.0.0_80.downstream_cx_total"), 5);
        assert_eq!(registry.active_downstream_connections(), 1);
    }

    #[test]
    fn scopes_survive_by_name_until_unreferenced() {
        let mut registry = StatsRegistry::new(1);
        let a = registry.cluster("x");
        assert!(Arc::ptr_eq(&a, &registry.cluster("x")));
        drop(a);
        registry.prune();
        assert!(registry
            .read_all()
            .iter()
            .all(|s| !s.name.starts_with("cluster.x")));
    }
}
