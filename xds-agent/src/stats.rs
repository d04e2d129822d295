//! Stats with Envoy's names: each shard writes only its own cache-line-padded cells (no
//! contended atomics), and readers (admin) sum the shards.
use std::{
    any::{Any, TypeId},
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

        impl Scope for $scope {
            fn new(prefix: String, shards: usize) -> Self {
                Self { prefix, shards: (0..shards.max(1)).map(|_| Padded::default()).collect() }
            }

            fn read(&self, out: &mut Vec<StatValue>) {
                $scope::read(self, out)
            }
        }

        impl $scope {
            pub fn new(prefix: String, shards: usize) -> Self {
                <Self as Scope>::new(prefix, shards)
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

/// Other modules declare their scopes (filter stats) with the same macro.
pub(crate) use stat_scope;

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
        upstream_cx_http1_total: Counter,
        upstream_cx_idle_timeout: Counter,
        upstream_cx_max_requests: Counter,
        upstream_cx_overflow: Counter,
        upstream_cx_protocol_error: Counter,
        upstream_rq_total: Counter,
        upstream_rq_active: Gauge,
        upstream_rq_completed: Counter,
        upstream_rq_1xx: Counter,
        upstream_rq_2xx: Counter,
        upstream_rq_3xx: Counter,
        upstream_rq_4xx: Counter,
        upstream_rq_5xx: Counter,
        upstream_rq_pending_total: Counter,
        upstream_rq_pending_active: Gauge,
        upstream_rq_pending_overflow: Counter,
        upstream_rq_timeout: Counter,
        upstream_rq_per_try_timeout: Counter,
        upstream_rq_rx_reset: Counter,
        upstream_rq_tx_reset: Counter,
        upstream_rq_retry: Counter,
        upstream_rq_retry_success: Counter,
        upstream_rq_retry_overflow: Counter,
        upstream_rq_retry_limit_exceeded: Counter,
        membership_total: Gauge,
        membership_healthy: Gauge,
    }
);

stat_scope!(
    HttpStats,
    HttpCells {
        downstream_cx_total: Counter,
        downstream_cx_http1_total: Counter,
        downstream_cx_active: Gauge,
        downstream_cx_http1_active: Gauge,
        downstream_cx_destroy: Counter,
        downstream_cx_destroy_remote: Counter,
        downstream_cx_destroy_local: Counter,
        downstream_cx_protocol_error: Counter,
        downstream_cx_idle_timeout: Counter,
        downstream_cx_max_requests_reached: Counter,
        downstream_cx_rx_bytes_total: Counter,
        downstream_cx_tx_bytes_total: Counter,
        downstream_cx_upgrades_total: Counter,
        downstream_cx_upgrades_active: Gauge,
        downstream_rq_total: Counter,
        downstream_rq_http1_total: Counter,
        downstream_rq_active: Gauge,
        downstream_rq_completed: Counter,
        downstream_rq_1xx: Counter,
        downstream_rq_2xx: Counter,
        downstream_rq_3xx: Counter,
        downstream_rq_4xx: Counter,
        downstream_rq_5xx: Counter,
        downstream_rq_timeout: Counter,
        downstream_rq_header_timeout: Counter,
        downstream_rq_idle_timeout: Counter,
        downstream_rq_rx_reset: Counter,
        downstream_rq_tx_reset: Counter,
        downstream_rq_too_large: Counter,
        downstream_rq_ws_on_non_ws_route: Counter,
        downstream_rq_non_relative_path: Counter,
        downstream_rq_failed_path_normalization: Counter,
        no_route: Counter,
        no_cluster: Counter,
        rq_total: Counter,
        rq_direct_response: Counter,
        rq_redirect: Counter,
        rq_reset_after_downstream_response_started: Counter,
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

/// A stats scope: per-shard cells under one name prefix (declared with `stat_scope!`).
pub trait Scope: Send + Sync + 'static {
    fn new(prefix: String, shards: usize) -> Self
    where
        Self: Sized;
    /// Appends every stat, summed over shards.
    fn read(&self, out: &mut Vec<StatValue>);
}

/// A registered scope, readable without knowing its type and recoverable as its type.
trait Registered: Send + Sync {
    fn read(&self, out: &mut Vec<StatValue>);
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<S: Scope> Registered for S {
    fn read(&self, out: &mut Vec<StatValue>) {
        Scope::read(self, out)
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// Every stats scope of the process, keyed by type and name so a scope survives config
/// generations. Owned by the agent; shards hold `Arc`s to the scopes their config points at.
pub struct StatsRegistry {
    shards: usize,
    pub server: ServerStats,
    pub listener_manager: ListenerManagerStats,
    pub cluster_manager: ClusterManagerStats,
    pub bootstrap_reload: ConfigReloadStats,
    scopes: HashMap<(TypeId, String), Arc<dyn Registered>>,
}

impl std::fmt::Debug for StatsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsRegistry")
            .field("shards", &self.shards)
            .field("scopes", &self.scopes.len())
            .finish()
    }
}

impl StatsRegistry {
    pub fn new(shards: usize) -> Self {
        Self {
            shards,
            server: ServerStats::new("server".into(), 1),
            listener_manager: ListenerManagerStats::new("listener_manager".into(), 1),
            cluster_manager: ClusterManagerStats::new("cluster_manager".into(), 1),
            bootstrap_reload: ConfigReloadStats::new("server.bootstrap_reload".into(), 1),
            scopes: HashMap::new(),
        }
    }

    /// The scope of type `S` named `prefix`, created on first use.
    pub fn scope<S: Scope>(&mut self, prefix: String) -> Arc<S> {
        let key = (TypeId::of::<S>(), prefix);
        if let Some(existing) = self.scopes.get(&key) {
            return existing
                .clone()
                .into_any()
                .downcast::<S>()
                .expect("keyed by type");
        }
        let scope = Arc::new(S::new(key.1.clone(), self.shards));
        self.scopes.insert(key, scope.clone());
        scope
    }

    /// `listener.<stat_prefix>.*`
    pub fn listener(&mut self, stat_prefix: &str) -> Arc<ListenerStats> {
        self.scope(format!("listener.{stat_prefix}"))
    }

    /// `tcp.<stat_prefix>.*`
    pub fn tcp_proxy(&mut self, stat_prefix: &str) -> Arc<TcpProxyStats> {
        self.scope(format!("tcp.{stat_prefix}"))
    }

    /// `http.<stat_prefix>.*`
    pub fn http(&mut self, stat_prefix: &str) -> Arc<HttpStats> {
        self.scope(format!("http.{stat_prefix}"))
    }

    /// `cluster.<name>.*`
    pub fn cluster(&mut self, name: &str) -> Arc<ClusterStats> {
        self.scope(format!("cluster.{name}"))
    }

    /// Forgets scopes no config and no connection holds any more.
    pub fn prune(&mut self) {
        self.scopes.retain(|_, s| Arc::strong_count(s) > 1);
    }

    /// Every stat, summed over shards, sorted by name.
    pub fn read_all(&self) -> Vec<StatValue> {
        let mut out = Vec::new();
        self.server.read(&mut out);
        self.listener_manager.read(&mut out);
        self.cluster_manager.read(&mut out);
        self.bootstrap_reload.read(&mut out);
        self.scopes.values().for_each(|s| s.read(&mut out));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Sum of `downstream_cx_active` over every listener: what draining waits for.
    pub fn active_downstream_connections(&self) -> i64 {
        let mut out = Vec::new();
        self.scopes
            .iter()
            .filter(|((kind, _), _)| *kind == TypeId::of::<ListenerStats>())
            .for_each(|(_, s)| s.read(&mut out));
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
