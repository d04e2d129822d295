//! Stats with Envoy's names: each shard writes only its own cache-line-padded cells (no
//! contended atomics), and readers (admin) sum the shards. Counters and gauges are one cell;
//! histograms are bucket cells (`histogram.rs`) merged when read, with the last flush
//! interval's snapshot kept by the registry. Per-status-code counters (`status_codes.rs`) are
//! a table per shard, listed only for the codes that occurred.
mod histogram;
pub mod istio;
mod named;
pub mod naming;
mod ssl;
mod status_codes;

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

pub use histogram::{
    record, record_duration, HistogramCell, HistogramSnapshot, PROMETHEUS_BUCKETS_MS,
    SUPPORTED_QUANTILES,
};
pub use named::NamedCounters;
pub use ssl::{HandshakeFailure, SslCells, SslStats, CIPHERS, CURVES, VERSIONS};
pub use status_codes::{record_status, StatusCodeCell};

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

/// One histogram as read: merged over shards since start (`cumulative`) and over the last
/// completed flush interval (`interval`, empty before the first one), as Envoy reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramValue {
    pub name: String,
    pub cumulative: HistogramSnapshot,
    pub interval: HistogramSnapshot,
}

impl HistogramValue {
    pub fn cumulative(name: String, cumulative: HistogramSnapshot) -> Self {
        Self {
            name,
            cumulative,
            interval: HistogramSnapshot::default(),
        }
    }

    /// Envoy's `used()`: something was ever recorded.
    pub fn used(&self) -> bool {
        self.cumulative.count() != 0
    }
}

/// How `stat_scope!` reads a field of each kind.
#[doc(hidden)]
pub enum FieldKind {
    Scalar(StatKind),
    Histogram,
    StatusCodes,
    Named,
}

/// A stat field of any kind, as `stat_scope!` reads it.
pub trait StatCell {
    fn scalar(&self) -> Option<&AtomicU64> {
        None
    }
    fn histogram(&self) -> Option<&HistogramCell> {
        None
    }
    fn status_codes(&self) -> Option<&StatusCodeCell> {
        None
    }
    fn named(&self) -> Option<&NamedCounters> {
        None
    }
}

impl StatCell for AtomicU64 {
    fn scalar(&self) -> Option<&AtomicU64> {
        Some(self)
    }
}

impl StatCell for HistogramCell {
    fn histogram(&self) -> Option<&HistogramCell> {
        Some(self)
    }
}

impl StatCell for StatusCodeCell {
    fn status_codes(&self) -> Option<&StatusCodeCell> {
        Some(self)
    }
}

impl StatCell for NamedCounters {
    fn named(&self) -> Option<&NamedCounters> {
        Some(self)
    }
}

#[repr(align(64))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

/// Declares a stats scope: a struct of per-shard cells and the scope holding one per shard.
/// Field kinds: `Counter` and `Gauge` (an `AtomicU64`, see [`inc`], [`add`], [`dec`]) and
/// `Histogram` (a [`HistogramCell`], see [`record`] and [`record_duration`]) and `StatusCodes`
/// (a [`StatusCodeCell`], see [`record_status`]: field `upstream_rq` lists `upstream_rq_200`…)
/// and `Named` (a [`NamedCounters`]: field `grpc` lists `grpc.<name>` for names made at run
/// time, e.g. by `envoy.filters.http.grpc_stats`).
macro_rules! stat_scope {
    (@cell Counter) => { ::std::sync::atomic::AtomicU64 };
    (@cell Gauge) => { ::std::sync::atomic::AtomicU64 };
    (@cell Histogram) => { $crate::stats::HistogramCell };
    (@cell StatusCodes) => { $crate::stats::StatusCodeCell };
    (@cell Named) => { $crate::stats::NamedCounters };
    (@kind Counter) => { $crate::stats::FieldKind::Scalar($crate::stats::StatKind::Counter) };
    (@kind Gauge) => { $crate::stats::FieldKind::Scalar($crate::stats::StatKind::Gauge) };
    (@kind Histogram) => { $crate::stats::FieldKind::Histogram };
    (@kind StatusCodes) => { $crate::stats::FieldKind::StatusCodes };
    (@kind Named) => { $crate::stats::FieldKind::Named };
    ($scope:ident, $cells:ident { $($field:ident : $kind:ident),* $(,)? }) => {
        #[derive(Debug, Default)]
        pub struct $cells { $(pub $field: $crate::stats::stat_scope!(@cell $kind)),* }

        #[derive(Debug)]
        pub struct $scope {
            prefix: String,
            shards: Box<[$crate::stats::Padded<$cells>]>,
        }

        impl $crate::stats::Scope for $scope {
            fn new(prefix: String, shards: usize) -> Self {
                Self {
                    prefix,
                    shards: (0..shards.max(1)).map(|_| Default::default()).collect(),
                }
            }

            fn read(&self, out: &mut Vec<$crate::stats::StatValue>) {
                $scope::read(self, out)
            }

            fn read_histograms(&self, out: &mut Vec<$crate::stats::HistogramValue>) {
                $scope::read_histograms(self, out)
            }
        }

        impl $scope {
            pub fn new(prefix: String, shards: usize) -> Self {
                <Self as $crate::stats::Scope>::new(prefix, shards)
            }

            /// The cells the given shard writes.
            #[inline]
            pub fn shard(&self, shard: usize) -> &$cells {
                &self.shards[shard].0
            }

            /// The sum over shards of the counter or gauge `field` picks.
            pub fn sum(&self, field: impl Fn(&$cells) -> &::std::sync::atomic::AtomicU64) -> u64 {
                self.shards
                    .iter()
                    .map(|s| field(&s.0).load(::std::sync::atomic::Ordering::Relaxed))
                    .fold(0, u64::wrapping_add)
            }

            /// Appends every counter and gauge, summed over shards.
            pub fn read(&self, out: &mut Vec<$crate::stats::StatValue>) {
                use ::std::sync::atomic::Ordering::Relaxed;
                $(
                    match $crate::stats::stat_scope!(@kind $kind) {
                        $crate::stats::FieldKind::Scalar(kind) => {
                            let sum = self
                                .shards
                                .iter()
                                .filter_map(|s| $crate::stats::StatCell::scalar(&s.0.$field))
                                .fold(0u64, |acc, cell| acc.wrapping_add(cell.load(Relaxed)));
                            out.push($crate::stats::StatValue {
                                name: format!("{}.{}", self.prefix, stringify!($field)),
                                kind,
                                value: sum as i64,
                            });
                        }
                        $crate::stats::FieldKind::StatusCodes => {
                            $crate::stats::StatusCodeCell::read_sum(
                                &format!("{}.{}", self.prefix, stringify!($field)),
                                self.shards
                                    .iter()
                                    .filter_map(|s| $crate::stats::StatCell::status_codes(&s.0.$field)),
                                out,
                            );
                        }
                        $crate::stats::FieldKind::Named => {
                            $crate::stats::NamedCounters::read_sum(
                                &format!("{}.{}", self.prefix, stringify!($field)),
                                self.shards
                                    .iter()
                                    .filter_map(|s| $crate::stats::StatCell::named(&s.0.$field)),
                                out,
                            );
                        }
                        $crate::stats::FieldKind::Histogram => {}
                    }
                )*
            }

            /// Appends every histogram, merged over shards (cumulative; no interval yet).
            pub fn read_histograms(&self, out: &mut Vec<$crate::stats::HistogramValue>) {
                $(
                    if matches!(
                        $crate::stats::stat_scope!(@kind $kind),
                        $crate::stats::FieldKind::Histogram
                    ) {
                        out.push($crate::stats::HistogramValue::cumulative(
                            format!("{}.{}", self.prefix, stringify!($field)),
                            $crate::stats::HistogramSnapshot::merge(
                                self.shards
                                    .iter()
                                    .filter_map(|s| $crate::stats::StatCell::histogram(&s.0.$field)),
                            ),
                        ));
                    }
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
        downstream_pre_cx_timeout: Counter,
        downstream_listener_filter_error: Counter,
        downstream_global_cx_overflow: Counter,
        downstream_cx_overload_reject: Counter,
        downstream_cx_accept_backoff: Counter,
    }
);

stat_scope!(
    TlsInspectorStats,
    TlsInspectorCells {
        tls_found: Counter,
        tls_not_found: Counter,
        client_hello_too_large: Counter,
        alpn_found: Counter,
        alpn_not_found: Counter,
        sni_found: Counter,
        sni_not_found: Counter,
    }
);

stat_scope!(
    HttpInspectorStats,
    HttpInspectorCells {
        http10_found: Counter,
        http11_found: Counter,
        http2_found: Counter,
        http_not_found: Counter,
        read_error: Counter,
    }
);

// `filesystem.*`: access-log lines shards handed to the log flusher (`write_buffered`), and
// lines dropped because it was behind, a slow pipe or disk (`write_dropped`).
stat_scope!(
    FilesystemStats,
    FilesystemCells {
        write_buffered: Counter,
        write_dropped: Counter,
    }
);

stat_scope!(
    ZipkinStats,
    ZipkinCells {
        spans_sent: Counter,
        timer_flushed: Counter,
        reports_skipped_no_cluster: Counter,
        reports_sent: Counter,
        reports_dropped: Counter,
        reports_failed: Counter,
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
        upstream_cx_http2_total: Counter,
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
        upstream_rq: StatusCodes,
        grpc: Named,
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
        retry_or_shadow_abandoned: Counter,
        membership_total: Gauge,
        membership_healthy: Gauge,
        lb_recalculate_zone_structures: Counter,
        lb_zone_cluster_too_small: Counter,
        lb_zone_no_capacity_left: Counter,
        lb_zone_number_differs: Counter,
        lb_zone_routing_all_directly: Counter,
        lb_zone_routing_sampled: Counter,
        lb_zone_routing_cross_zone: Counter,
        lb_local_cluster_not_ok: Counter,
        lb_subsets_active: Gauge,
        lb_subsets_created: Counter,
        lb_subsets_removed: Counter,
        lb_subsets_selected: Counter,
        lb_subsets_fallback: Counter,
        lb_subsets_fallback_panic: Counter,
        lb_subsets_single_host_per_subset_duplicate: Gauge,
        upstream_cx_connect_ms: Histogram,
        upstream_cx_length_ms: Histogram,
        upstream_rq_time: Histogram,
    }
);

// `cluster.<name>.health_check.*`: the agent's active health checks of the cluster.
stat_scope!(
    HealthCheckStats,
    HealthCheckCells {
        attempt: Counter,
        success: Counter,
        failure: Counter,
        passive_failure: Counter,
        network_failure: Counter,
        verify_cluster: Counter,
        healthy: Gauge,
        degraded: Gauge,
    }
);

// `cluster.<name>.outlier_detection.*`.
stat_scope!(
    OutlierStats,
    OutlierCells {
        ejections_active: Gauge,
        ejections_overflow: Counter,
        ejections_enforced_total: Counter,
        ejections_total: Counter,
        ejections_consecutive_5xx: Counter,
        ejections_success_rate: Counter,
        ejections_detected_consecutive_5xx: Counter,
        ejections_enforced_consecutive_5xx: Counter,
        ejections_detected_consecutive_gateway_failure: Counter,
        ejections_enforced_consecutive_gateway_failure: Counter,
        ejections_detected_consecutive_local_origin_failure: Counter,
        ejections_enforced_consecutive_local_origin_failure: Counter,
        ejections_detected_success_rate: Counter,
        ejections_enforced_success_rate: Counter,
        ejections_detected_local_origin_success_rate: Counter,
        ejections_enforced_local_origin_success_rate: Counter,
        ejections_detected_failure_percentage: Counter,
        ejections_enforced_failure_percentage: Counter,
        ejections_detected_local_origin_failure_percentage: Counter,
        ejections_enforced_local_origin_failure_percentage: Counter,
    }
);

stat_scope!(
    HttpStats,
    HttpCells {
        downstream_cx_total: Counter,
        downstream_cx_http1_total: Counter,
        downstream_cx_http2_total: Counter,
        downstream_cx_active: Gauge,
        downstream_cx_http1_active: Gauge,
        downstream_cx_http2_active: Gauge,
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
        downstream_rq_http2_total: Counter,
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
        downstream_rq_overload_close: Counter,
        downstream_cx_overload_disable_keepalive: Counter,
        no_route: Counter,
        no_cluster: Counter,
        rq_total: Counter,
        rq_direct_response: Counter,
        rq_redirect: Counter,
        rq_reset_after_downstream_response_started: Counter,
        downstream_cx_length_ms: Histogram,
        downstream_rq_time: Histogram,
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
        total_listeners_draining: Gauge,
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

// `version`: a hash of the last accepted `version_info` (Envoy's gauge); `update_time`: when
// the last update was accepted, in ms since the epoch; `update_duration`: the agent's time to
// apply an update (translate, assemble, publish).
stat_scope!(
    XdsStats,
    XdsCells {
        update_attempt: Counter,
        update_success: Counter,
        update_rejected: Counter,
        update_failure: Counter,
        init_fetch_timeout: Counter,
        version: Gauge,
        update_time: Gauge,
        update_duration: Histogram,
    }
);

// A TLS listener's or cluster's socket factory (`<listener>.server_ssl_socket_factory`,
// `cluster.<name>.client_ssl_socket_factory`): contexts an SDS update rebuilt, connections
// refused while a context's secrets are missing (Envoy lists both kinds on both sides).
stat_scope!(
    SslFactoryStats,
    SslFactoryCells {
        ssl_context_update_by_sds: Counter,
        downstream_context_secrets_not_ready: Counter,
        upstream_context_secrets_not_ready: Counter,
    }
);

stat_scope!(
    ControlPlaneStats,
    ControlPlaneCells {
        connected_state: Gauge,
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

impl ClusterCells {
    /// Counts an upstream response status: its class (`upstream_rq_2xx`…; anything outside
    /// 100–499 is 5xx) and its code (`upstream_rq_200`…).
    #[inline]
    pub fn record_status(&self, status: u16) {
        let class = match status {
            100..=199 => &self.upstream_rq_1xx,
            200..=299 => &self.upstream_rq_2xx,
            300..=399 => &self.upstream_rq_3xx,
            400..=499 => &self.upstream_rq_4xx,
            _ => &self.upstream_rq_5xx,
        };
        inc(class);
        record_status(&self.upstream_rq, status);
    }
}

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
    /// Appends every counter and gauge, summed over shards.
    fn read(&self, out: &mut Vec<StatValue>);
    /// Appends every histogram, merged over shards (cumulative only).
    fn read_histograms(&self, out: &mut Vec<HistogramValue>);
}

/// A registered scope, readable without knowing its type and recoverable as its type.
trait Registered: Send + Sync {
    fn read(&self, out: &mut Vec<StatValue>);
    fn read_histograms(&self, out: &mut Vec<HistogramValue>);
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<S: Scope> Registered for S {
    fn read(&self, out: &mut Vec<StatValue>) {
        Scope::read(self, out)
    }
    fn read_histograms(&self, out: &mut Vec<HistogramValue>) {
        Scope::read_histograms(self, out)
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
    /// Istio's standard metrics (`istio.stats` filters), one store for the process.
    pub istio: Arc<istio::IstioMetrics>,
    scopes: HashMap<(TypeId, String), Entry>,
    flushed: Mutex<HistogramFlush>,
}

/// A registered scope, and whether it lasts as long as the process.
struct Entry {
    scope: Arc<dyn Registered>,
    lasting: bool,
}

impl Entry {
    /// A lasting scope always is; any other while a config or a connection holds it (an
    /// `Arc` besides the registry's), as Envoy frees a listener's or cluster's stats scope
    /// with the listener or cluster once it is removed and drained.
    fn in_use(&self) -> bool {
        self.lasting || Arc::strong_count(&self.scope) > 1
    }
}

/// Envoy's default `stats_flush_interval`: the window of a histogram's `interval` values.
pub const HISTOGRAM_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// What the last histogram flush saw: when it ran, and per histogram the cumulative snapshot
/// then and what the interval before it recorded.
#[derive(Debug, Default)]
struct HistogramFlush {
    at: Option<Instant>,
    histograms: HashMap<String, FlushedHistogram>,
}

#[derive(Debug)]
struct FlushedHistogram {
    cumulative: HistogramSnapshot,
    interval: HistogramSnapshot,
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
            istio: Arc::new(istio::IstioMetrics::new(shards)),
            scopes: HashMap::new(),
            flushed: Mutex::default(),
        }
    }

    /// The scope of type `S` named `prefix`, created on first use. It is listed, and kept,
    /// while something holds it: the config that uses it or a connection of that config.
    pub fn scope<S: Scope>(&mut self, prefix: String) -> Arc<S> {
        self.entry(prefix, false)
    }

    /// The scope of type `S` named `prefix`, kept and listed for the life of the process
    /// whether held or not (Envoy's server-scope stats: xDS, `control_plane`, `filesystem`,
    /// `tracing.zipkin`).
    pub fn lasting<S: Scope>(&mut self, prefix: String) -> Arc<S> {
        self.entry(prefix, true)
    }

    fn entry<S: Scope>(&mut self, prefix: String, lasting: bool) -> Arc<S> {
        let key = (TypeId::of::<S>(), prefix);
        if let Some(existing) = self.scopes.get_mut(&key) {
            existing.lasting |= lasting;
            return existing
                .scope
                .clone()
                .into_any()
                .downcast::<S>()
                .expect("keyed by type");
        }
        let scope = Arc::new(S::new(key.1.clone(), self.shards));
        let entry = Entry {
            scope: scope.clone(),
            lasting,
        };
        self.scopes.insert(key, entry);
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

    /// `tracing.zipkin.*`: one scope for every Zipkin tracer, lasting, as Envoy's.
    pub fn zipkin(&mut self) -> Arc<ZipkinStats> {
        self.lasting("tracing.zipkin".into())
    }

    /// `cluster.<name>.*`
    pub fn cluster(&mut self, name: &str) -> Arc<ClusterStats> {
        self.scope(format!("cluster.{name}"))
    }

    /// `cluster.<name>.health_check.*`
    pub fn health_check(&mut self, cluster: &str) -> Arc<HealthCheckStats> {
        self.scope(format!("cluster.{cluster}.health_check"))
    }

    /// `cluster.<name>.outlier_detection.*`
    pub fn outlier_detection(&mut self, cluster: &str) -> Arc<OutlierStats> {
        self.scope(format!("cluster.{cluster}.outlier_detection"))
    }

    /// `<scope>.ssl.*` of a listener (`listener.<stat_prefix>`) or cluster (`cluster.<name>`).
    pub fn ssl(&mut self, scope: &str) -> Arc<SslStats> {
        self.scope(format!("{scope}.ssl"))
    }

    /// `<scope>.server_ssl_socket_factory.*` (`server`) or `<scope>.client_ssl_socket_factory.*`.
    pub fn ssl_socket_factory(&mut self, scope: &str, server: bool) -> Arc<SslFactoryStats> {
        let side = if server { "server" } else { "client" };
        self.scope(format!("{scope}.{side}_ssl_socket_factory"))
    }

    /// Frees the scopes no config and no connection holds any more (reading already skips
    /// them). The agent calls it once every shard runs a new generation and when a listener's
    /// drain ends.
    pub fn prune(&mut self) {
        self.scopes.retain(|_, entry| entry.in_use());
    }

    /// Every counter and gauge, summed over shards, sorted by name.
    pub fn read_all(&self) -> Vec<StatValue> {
        let mut out = Vec::new();
        self.each_scope(|s| s.read(&mut out));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn each_scope(&self, mut visit: impl FnMut(&dyn Registered)) {
        visit(&self.server);
        visit(&self.listener_manager);
        visit(&self.cluster_manager);
        visit(&self.bootstrap_reload);
        self.scopes
            .values()
            .filter(|entry| entry.in_use())
            .for_each(|entry| visit(entry.scope.as_ref()));
    }

    fn read_cumulative_histograms(&self) -> Vec<HistogramValue> {
        let mut out = Vec::new();
        self.each_scope(|s| s.read_histograms(&mut out));
        out
    }

    /// Every histogram, merged over shards, sorted by name; `interval` is what the last
    /// completed flush interval recorded.
    pub fn read_histograms(&self) -> Vec<HistogramValue> {
        let mut out = self.read_cumulative_histograms();
        let flushed = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
        for histogram in &mut out {
            if let Some(last) = flushed.histograms.get(&histogram.name) {
                histogram.interval = last.interval.clone();
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Ends a histogram flush interval (Envoy's `stats_flush_interval` tick): each histogram's
    /// interval becomes what was recorded since the previous flush.
    pub fn flush_histograms(&self, now: Instant) {
        let mut flushed = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
        let mut previous = std::mem::take(&mut flushed.histograms);
        for value in self.read_cumulative_histograms() {
            let interval = match previous.remove(&value.name) {
                Some(last) => value.cumulative.since(&last.cumulative),
                None => value.cumulative.clone(),
            };
            flushed.histograms.insert(
                value.name,
                FlushedHistogram {
                    cumulative: value.cumulative,
                    interval,
                },
            );
        }
        flushed.at = Some(now);
    }

    /// Flushes when [`HISTOGRAM_FLUSH_INTERVAL`] has passed since the last flush (or none ran
    /// yet). The agent may tick [`Self::flush_histograms`]; readers call this so intervals move
    /// even without a tick.
    pub fn flush_histograms_if_due(&self, now: Instant) {
        let due = {
            let flushed = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
            flushed
                .at
                .is_none_or(|at| now.duration_since(at) >= HISTOGRAM_FLUSH_INTERVAL)
        };
        if due {
            self.flush_histograms(now);
        }
    }

    /// Sum of `downstream_cx_active` over every listener: what draining waits for.
    pub fn active_downstream_connections(&self) -> i64 {
        let mut out = Vec::new();
        self.scopes
            .iter()
            .filter(|((kind, _), _)| *kind == TypeId::of::<ListenerStats>())
            .for_each(|(_, entry)| entry.scope.read(&mut out));
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
    fn histograms_merge_shards_and_report_the_last_flush_interval() {
        let mut registry = StatsRegistry::new(2);
        let c = registry.cluster("x");
        let name = "cluster.x.upstream_rq_time";
        let read = |registry: &StatsRegistry| {
            registry
                .read_histograms()
                .into_iter()
                .find(|h| h.name == name)
                .unwrap()
        };
        assert!(!read(&registry).used());
        record(&c.shard(0).upstream_rq_time, 1_000);
        record_duration(&c.shard(1).upstream_rq_time, Duration::from_millis(2));
        let before_flush = read(&registry);
        assert_eq!(before_flush.cumulative.count(), 2);
        assert_eq!(before_flush.interval.count(), 0);

        let start = Instant::now();
        registry.flush_histograms_if_due(start);
        assert_eq!(read(&registry).interval.count(), 2);
        record(&c.shard(1).upstream_rq_time, 5_000);
        // Not due yet: the interval stays the first one.
        registry.flush_histograms_if_due(start + Duration::from_secs(1));
        assert_eq!(read(&registry).interval.count(), 2);
        registry.flush_histograms_if_due(start + HISTOGRAM_FLUSH_INTERVAL);
        let h = read(&registry);
        assert_eq!(h.interval.count(), 1);
        assert_eq!(h.interval.sum_ms(), 5.0);
        assert_eq!(h.cumulative.count(), 3);
        // Counters and gauges do not list histograms, and vice versa.
        assert!(registry.read_all().iter().all(|s| s.name != name));
        assert!(registry
            .read_histograms()
            .iter()
            .all(|h| !h.name.ends_with("upstream_cx_total")));
    }

    #[test]
    fn cluster_status_codes_are_listed_per_code_and_class() {
        let mut registry = StatsRegistry::new(2);
        let c = registry.cluster("x");
        c.shard(0).record_status(200);
        c.shard(1).record_status(200);
        c.shard(1).record_status(404);
        c.shard(0).record_status(700); // not a status code: 5xx class only, as before
        let all = registry.read_all();
        let get = |n: &str| all.iter().find(|s| s.name == n).map(|s| (s.kind, s.value));
        assert_eq!(
            get("cluster.x.upstream_rq_200"),
            Some((StatKind::Counter, 2))
        );
        assert_eq!(
            get("cluster.x.upstream_rq_404"),
            Some((StatKind::Counter, 1))
        );
        assert_eq!(
            get("cluster.x.upstream_rq_2xx"),
            Some((StatKind::Counter, 2))
        );
        assert_eq!(
            get("cluster.x.upstream_rq_4xx"),
            Some((StatKind::Counter, 1))
        );
        assert_eq!(
            get("cluster.x.upstream_rq_5xx"),
            Some((StatKind::Counter, 1))
        );
        // Only codes that occurred, and no stat named after the table itself.
        let codes: Vec<&str> = all
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| n.starts_with("cluster.x.upstream_rq_") && n[22..].parse::<u16>().is_ok())
            .collect();
        assert_eq!(
            codes,
            ["cluster.x.upstream_rq_200", "cluster.x.upstream_rq_404"]
        );
        assert!(all.iter().all(|s| s.name != "cluster.x.upstream_rq"));
        assert!(registry
            .read_histograms()
            .iter()
            .all(|h| h.name != "cluster.x.upstream_rq"));
    }

    #[test]
    fn scopes_survive_by_name_until_unreferenced() {
        let mut registry = StatsRegistry::new(1);
        let names = |registry: &StatsRegistry, prefix: &str| {
            registry
                .read_all()
                .into_iter()
                .filter(|s| s.name.starts_with(prefix))
                .map(|s| (s.name, s.value))
                .collect::<Vec<_>>()
        };
        let a = registry.cluster("x");
        inc(&a.shard(0).upstream_rq_total);
        assert!(Arc::ptr_eq(&a, &registry.cluster("x")));
        let held = registry.cluster("x");
        drop(a);
        registry.prune();
        // Still held: listed and kept, its counts too.
        assert!(names(&registry, "cluster.x.").contains(&("cluster.x.upstream_rq_total".into(), 1)));
        drop(held);
        // Unheld: no longer listed, even before it is freed.
        assert!(names(&registry, "cluster.x.").is_empty());
        registry.prune();
        assert!(registry.scopes.is_empty());
        // A cluster of the same name made after starts from zero, as in Envoy.
        let again = registry.cluster("x");
        assert!(names(&registry, "cluster.x.").contains(&("cluster.x.upstream_rq_total".into(), 0)));
        drop(again);
    }

    #[test]
    fn lasting_scopes_are_listed_and_kept_unheld() {
        let mut registry = StatsRegistry::new(1);
        let cds: Arc<ConfigReloadStats> = registry.lasting("cluster_manager.cds".into());
        inc(&cds.shard(0).update_attempt);
        drop(cds);
        registry.prune();
        let all = registry.read_all();
        let attempts = all
            .iter()
            .find(|s| s.name == "cluster_manager.cds.update_attempt")
            .map(|s| s.value);
        assert_eq!(attempts, Some(1));
        // Asked for again as a plain scope, it stays lasting.
        let again: Arc<ConfigReloadStats> = registry.scope("cluster_manager.cds".into());
        assert_eq!(again.sum(|c| &c.update_attempt), 1);
    }
}
