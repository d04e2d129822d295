//! Domain model: the validated, compiled config that shards run and what shards and agent
//! share — the Snapshot and its domain types, route matching, stats cells, access-log
//! formatting, the shard↔agent channels. Built only by the agent's translator; nothing here
//! can be invalid, and nothing here is a proto type.
pub mod access_log;
pub mod balancing;
pub mod cluster_ref;
pub mod connection_limit;
pub mod ext_authz;
pub mod filter_chain_match;
pub mod filter_stats;
pub mod filters;
pub mod hash_policy;
pub mod health;
pub mod http;
pub mod istio;
pub mod listener_filters;
pub mod local_reply;
pub mod matchers;
pub mod metadata;
pub mod overload;
pub mod publish;
pub mod rbac;
pub mod route;
pub mod route_match;
pub mod stats;
pub mod subset;
pub mod tcp_tunnel;
pub mod tls;
pub mod tls_info;
pub mod tracing;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

pub use cluster_ref::{ClusterId, ClusterRef};

use crate::{
    access_log::AccessLog,
    stats::{ClusterStats, ListenerStats, TcpProxyStats},
};

/// Envoy's default `per_connection_buffer_limit_bytes` (listeners and clusters): 1 MiB.
pub const DEFAULT_BUFFER_LIMIT: usize = 1024 * 1024;

/// Connections a listener accepts before its shard serves other work, when
/// `max_connections_to_accept_per_socket_event` is unset. Envoy accepts the whole backlog by
/// default; on a shard whose one loop also serves every open connection, a flood would then
/// stall those connections for as long as the backlog refills (a 10,000-connection flood took
/// keep-alive p99 from 1.2 ms to 49 ms in bench/flood.py).
pub const DEFAULT_ACCEPTS_PER_EVENT: usize = 32;

/// Clusters by name.
pub type ClusterMap = imbl::HashMap<String, Arc<Cluster>>;

/// One immutable generation of the whole config. Unchanged parts are shared (`Arc`) with the
/// previous generation so shards can tell what changed by pointer.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub generation: u64,
    pub listeners: Vec<Arc<Listener>>,
    /// A persistent map: a generation shares it with the previous one and copies only what
    /// changed, so a one-cluster change costs the same in a 10,000-cluster mesh.
    pub clusters: ClusterMap,
    /// The clusters added, changed or removed since generation `generation - 1`, when the
    /// agent knows them (xDS updates); `None`: compare every cluster.
    pub cluster_changes: Option<Vec<String>>,
    /// Route tables from RDS, by name: every table an `Routes::Rds` listener names is here.
    pub routes: HashMap<String, Arc<route::RouteConfig>>,
    /// This proxy's identity for Istio's metadata exchange (from the bootstrap's node).
    pub local_peer: Arc<istio::LocalPeer>,
    /// How the admin interface names and shows stats (the bootstrap's `stats_config`).
    pub stat_naming: Arc<stats::naming::StatNaming>,
    /// Bytes an in-process connection to an internal listener buffers per direction (the
    /// bootstrap's `envoy.bootstrap.internal_listener` `buffer_size_kb`).
    pub internal_buffer: usize,
    /// `filesystem.*`: the access-log lines shards hand over and drop (`None` before the
    /// bootstrap is translated).
    pub log_stats: Option<Arc<stats::FilesystemStats>>,
    /// The overload manager's global downstream connection limit, if configured.
    pub connection_limit: Option<Arc<connection_limit::ConnectionLimit>>,
    /// The overload manager's monitors and actions (the agent evaluates them), if configured.
    pub overload: Option<Arc<overload::OverloadConfig>>,
    /// The local cluster and locality zone-aware routing goes by, if configured.
    pub local_zone: Option<Arc<balancing::LocalZone>>,
}

/// What stands for the address of an internal listener or endpoint, which have none.
pub const NO_ADDRESS: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// Envoy's default internal connection buffer (`buffer_size_kb` unset): 1 MiB.
pub const DEFAULT_INTERNAL_BUFFER: usize = 1024 * 1024;

impl Snapshot {
    /// Generation 0: nothing configured yet.
    pub fn empty() -> Self {
        Self {
            generation: 0,
            listeners: Vec::new(),
            clusters: ClusterMap::new(),
            cluster_changes: None,
            routes: HashMap::new(),
            local_peer: Default::default(),
            stat_naming: Default::default(),
            internal_buffer: DEFAULT_INTERNAL_BUFFER,
            log_stats: None,
            connection_limit: None,
            overload: None,
            local_zone: None,
        }
    }
}

#[derive(Debug)]
pub struct Listener {
    pub name: String,
    /// Hash of the source config: equal hashes mean the translator reused the previous `Arc`.
    pub config_hash: u64,
    /// Hash of the config without its filter chains: equal across an update that changed
    /// only chains (whose unchanged chains' connections then keep running, as in Envoy).
    pub listener_hash: u64,
    /// `NO_ADDRESS` for an internal listener.
    pub address: SocketAddr,
    /// `internal_listener`: never bound; takes the in-process connections of
    /// `envoy_internal_address` endpoints that name it.
    pub internal: bool,
    /// Back-pressure limit per connection and direction (`per_connection_buffer_limit_bytes`).
    pub buffer_limit: usize,
    /// `max_connections_to_accept_per_socket_event`: connections accepted in a row before the
    /// shard runs its other ready work (default [`DEFAULT_ACCEPTS_PER_EVENT`]).
    pub accepts_per_event: usize,
    /// The chains, `filter_chains` in order, then the `default_filter_chain` if any.
    pub filter_chains: Vec<FilterChain>,
    /// Picks a chain of `filter_chains` for a connection.
    pub chain_index: filter_chain_match::FilterChainIndex,
    /// The index of `default_filter_chain`: taken when no chain matches.
    pub default_chain: Option<usize>,
    pub listener_filters: listener_filters::ListenerFilters,
    /// `bind_to_port` (default true): false for a listener that only takes connections
    /// handed over by a `use_original_dst` listener (Istio's per-service listeners).
    pub bind_to_port: bool,
    /// `use_original_dst`: a connection whose original destination (the `original_dst`
    /// listener filter) is another listener's address is handed over to that listener.
    pub use_original_dst: bool,
    /// `access_log`: written for connections that end before a filter chain takes them (no
    /// chain matched: `NR`; a listener filter closed or timed out).
    pub access_logs: Vec<Arc<AccessLog>>,
    /// Whether `/drain_listeners?inboundonly` drains it (`traffic_direction: INBOUND`).
    pub inbound: bool,
    /// `ignore_global_conn_limit`: its connections are not counted against (nor refused by)
    /// the global connection limit.
    pub ignores_connection_limit: bool,
    /// `bypass_overload_manager`: overload actions leave its connections and requests alone.
    pub bypasses_overload: bool,
    /// `traffic_direction: OUTBOUND`: its spans are client (egress) spans; any other
    /// direction makes server (ingress) spans, as Envoy's tracing.
    pub outbound: bool,
    pub drain_type: DrainType,
    pub stats: Arc<ListenerStats>,
}

impl Cluster {
    /// The EDS assignment the cluster's endpoints come from, if it is an EDS cluster.
    pub fn eds_name(&self) -> Option<&str> {
        self.eds.as_ref().map(|e| e.name.as_str())
    }
}

/// A resource discovered over ADS by name (an EDS assignment, an RDS table), and how long
/// what needs it waits for it (`initial_fetch_timeout`; `None`: forever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredBy {
    pub name: String,
    pub initial_fetch_timeout: Option<Duration>,
}

/// When a listener's connections drain (`drain_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrainType {
    /// On modification or removal, and on server drain (`/drain_listeners`, shutdown).
    #[default]
    Default,
    /// Only when the listener is modified or removed.
    ModifyOnly,
}

impl Listener {
    /// A listener without filter chains (nothing it accepts is served): for tests and admin
    /// fixtures that only need a listener to exist.
    pub fn without_chains(name: &str, address: SocketAddr, stats: Arc<ListenerStats>) -> Self {
        Self {
            name: name.into(),
            config_hash: 0,
            listener_hash: 0,
            address,
            internal: false,
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            accepts_per_event: DEFAULT_ACCEPTS_PER_EVENT,
            filter_chains: Vec::new(),
            chain_index: filter_chain_match::FilterChainIndex::build(&[])
                .expect("no chains, no duplicates"),
            default_chain: None,
            listener_filters: Default::default(),
            bind_to_port: true,
            use_original_dst: false,
            access_logs: Vec::new(),
            inbound: false,
            ignores_connection_limit: false,
            bypasses_overload: false,
            outbound: false,
            drain_type: DrainType::Default,
            stats,
        }
    }

    /// The index (in `filter_chains`) of the chain for a connection: the matching one, else
    /// the default chain.
    pub fn chain_for(&self, facts: &filter_chain_match::ConnectionFacts<'_>) -> Option<usize> {
        self.chain_index.select(facts).or(self.default_chain)
    }
}

#[derive(Debug)]
pub struct FilterChain {
    pub name: String,
    /// Hash of the chain's config (with the certificates it read).
    pub config_hash: u64,
    /// The network filters before the terminal one, in order.
    pub connection_filters: Vec<ConnectionFilter>,
    pub network: NetworkFilter,
    /// `transport_socket`: `None` = raw bytes.
    pub tls: Option<Arc<tls::ServerTls>>,
}

/// A network filter that runs before its chain's terminal one, once the transport socket is
/// up, and may record what it learns in the connection's filter state.
#[derive(Debug)]
pub enum ConnectionFilter {
    /// Istio's `istio.metadata_exchange`: the peer's identity becomes the filter state
    /// `downstream_peer`.
    MetadataExchange(Arc<istio::MetadataExchange>),
    /// Istio's `istio_authn` (`io.istio.network.authn.Config`): the peer's and this proxy's
    /// SPIFFE identities (their certificates' first `spiffe://` URI SANs) become the filter
    /// state `io.istio.peer_principal` and `io.istio.local_principal`; with `shared`, the
    /// connection's upstream connections (to internal listeners) carry them too.
    IstioAuthn { shared: bool },
    /// Istio's `istio.stats` on a TCP chain: the connection's `istio_tcp_*` metrics, recorded
    /// by tcp_proxy.
    IstioStats(Arc<istio::StatsConfig>),
    /// `envoy.filters.network.rbac`: judges the connection once its transport is up (the
    /// first byte's verdict: nothing it reads changes later) and closes a denied one, after
    /// `delay_deny`.
    Rbac {
        filter: rbac::RbacFilter,
        delay_deny: Duration,
    },
    /// `envoy.filters.network.ext_authz`: one check of the connection by an authorization
    /// service before the terminal filter runs; a denied (or, unless `failure_mode_allow`,
    /// failed) connection is closed.
    ExtAuthz(Arc<ext_authz::NetworkExtAuthz>),
    /// `envoy.filters.network.connection_limit`: counts the connection when its chain is
    /// picked (before the transport socket, as Envoy's `onNewConnection`) and closes one past
    /// the limit.
    ConnectionLimit(Arc<connection_limit::ConnectionLimitFilter>),
}

/// The terminal network filter of a chain.
#[derive(Debug)]
pub enum NetworkFilter {
    TcpProxy(TcpProxy),
    HttpConnectionManager(Arc<http::HttpConnectionManager>),
}

#[derive(Debug)]
pub struct TcpProxy {
    pub upstream: WeightedClusters,
    /// `None` = disabled (`idle_timeout: 0s`); Envoy's default is one hour.
    pub idle_timeout: Option<Duration>,
    pub max_connect_attempts: u32,
    pub access_logs: Vec<Arc<AccessLog>>,
    pub stats: Arc<TcpProxyStats>,
    /// `tunneling_config`: the connection goes to its host inside an HTTP request.
    pub tunneling: Option<Box<tcp_tunnel::TunnelingConfig>>,
    /// `hash_policy` `source_ip`: a consistent-hash cluster's balancer hashes the
    /// connection's source address.
    pub hashes_source_ip: bool,
}

impl TcpProxy {
    /// Whether connections are access-logged.
    pub fn logs_connections(&self) -> bool {
        !self.access_logs.is_empty()
    }

    /// Whether the connection's addresses are read: for access logs, and for the tunnel's
    /// formatted hostname and headers.
    pub fn reads_addresses(&self) -> bool {
        self.logs_connections() || self.tunneling.is_some()
    }

    /// Whether an access log or a tunnel format reads the downstream connection's TLS.
    pub fn logs_read_tls(&self) -> bool {
        self.access_logs.iter().any(|l| l.reads_tls())
            || self.tunneling.as_ref().is_some_and(|t| t.reads_tls())
    }
}

/// One or more clusters with weights; a single cluster has one entry.
#[derive(Debug)]
pub struct WeightedClusters {
    pub clusters: Vec<(ClusterRef, u32)>,
    pub total_weight: u32,
}

impl WeightedClusters {
    /// The cluster for a point in `0..total_weight`.
    pub fn pick(&self, point: u32) -> &ClusterRef {
        &self.clusters[self.index_of(point)].0
    }

    /// The index of the cluster for a point in `0..total_weight`.
    pub fn index_of(&self, point: u32) -> usize {
        let mut point = point;
        for (i, (_, weight)) in self.clusters.iter().enumerate() {
            if point < *weight {
                return i;
            }
            point -= weight;
        }
        self.clusters.len() - 1
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    /// The number routes and tcp_proxy know this cluster by (`ClusterId::of(name)`).
    pub id: ClusterId,
    /// Hash of the source config (endpoints excluded: DNS and EDS replace those alone).
    pub config_hash: u64,
    /// Set for STRICT_DNS / LOGICAL_DNS clusters: the agent resolves these names and publishes
    /// the addresses as `endpoints`.
    pub dns: Option<DnsTarget>,
    /// Set for EDS clusters: the assignment whose endpoints the agent publishes as
    /// `endpoints`.
    pub eds: Option<DiscoveredBy>,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    pub endpoints: Arc<[Endpoint]>,
    /// Buffer limit per upstream connection and direction.
    pub buffer_limit: usize,
    pub circuit_breakers: CircuitBreakers,
    pub http: UpstreamHttpOptions,
    /// `transport_socket`: `None` = raw bytes.
    pub tls: Option<Arc<tls::ClientTls>>,
    /// `transport_socket_matches`, in order: an endpoint whose transport-socket metadata
    /// satisfies one uses its socket instead of `tls` (Istio's auto mTLS).
    pub socket_matches: Vec<SocketMatch>,
    /// Set for `ORIGINAL_DST` clusters (no `endpoints`; `lb_policy` `ClusterProvided`).
    pub original_dst: Option<OriginalDst>,
    /// `upstream_bind_config.source_address`: upstream connections come from this address
    /// (Istio's inbound passthrough clusters use 127.0.0.6).
    pub source_address: Option<SocketAddr>,
    /// `common_lb_config.locality_weighted_lb_config`: each locality takes its
    /// `load_balancing_weight`'s share of requests (a locality without one takes none), split
    /// among its hosts by their weights.
    pub locality_weighted: bool,
    /// `metadata.filter_metadata`.
    pub metadata: metadata::Metadata,
    /// `filters`: Istio's `istio.metadata_exchange` on upstream connections.
    pub metadata_exchange: Option<Arc<istio::MetadataExchange>>,
    /// An `internal_upstream` transport socket's `passthrough_metadata`: what connections to
    /// internal endpoints carry to the internal listener as dynamic metadata.
    pub passthrough_metadata: Vec<PassthroughMetadata>,
    /// `health_checks` (Envoy runs at most one): the agent checks every host.
    pub health_check: Option<Arc<health::HealthCheck>>,
    pub outlier_detection: Option<Arc<health::OutlierDetection>>,
    /// `common_lb_config.healthy_panic_threshold` (percent, default 50): below this share of
    /// available hosts a priority balances over all of its hosts.
    pub panic_threshold: f64,
    /// `slow_start_config` of `round_robin_lb_config` / `least_request_lb_config`.
    pub slow_start: Option<balancing::SlowStart>,
    /// `common_lb_config.zone_aware_lb_config` (read when the snapshot has a local zone).
    pub zone_aware: balancing::ZoneAware,
    /// `lb_subset_config`, with the subsets of the current endpoints.
    pub subset: Option<subset::SubsetLb>,
    pub stats: Arc<ClusterStats>,
}

/// A namespace of a host's or the cluster's metadata passed to an internal listener's
/// connection (`internal_upstream`'s `passthrough_metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughMetadata {
    pub source: MetadataSource,
    pub namespace: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataSource {
    Host,
    Cluster,
}

impl Cluster {
    /// The cluster with `endpoints` (from DNS or EDS), its subsets partitioned again.
    pub fn with_endpoints(&self, endpoints: Arc<[Endpoint]>) -> Self {
        let subset = self
            .subset
            .as_ref()
            .map(|s| subset::SubsetLb::new(s.config.clone(), &endpoints));
        Self {
            endpoints,
            subset,
            ..self.clone()
        }
    }

    /// The TLS context connections to `endpoint` use (`None`: raw bytes).
    pub fn tls_for(&self, endpoint: &Endpoint) -> Option<&Arc<tls::ClientTls>> {
        let labels = endpoint.socket_labels.as_deref().unwrap_or_default();
        self.socket_matches
            .iter()
            .find(|m| m.criteria.iter().all(|c| labels.contains(c)))
            .map_or(self.tls.as_ref(), |m| m.tls.as_ref())
    }

    /// Every TLS context of the cluster: its `transport_socket`'s, then each
    /// `transport_socket_matches` entry's, in order.
    pub fn tls_contexts(&self) -> impl Iterator<Item = &Arc<tls::ClientTls>> {
        self.tls
            .iter()
            .chain(self.socket_matches.iter().filter_map(|m| m.tls.as_ref()))
    }
}

/// One `transport_socket_matches` entry.
#[derive(Debug, Clone)]
pub struct SocketMatch {
    pub name: String,
    /// `match`: labels the endpoint's metadata must all have (none: every endpoint).
    pub criteria: Vec<SocketLabel>,
    /// Its transport socket: `None` = raw bytes.
    pub tls: Option<Arc<tls::ClientTls>>,
}

/// A `key: value` of `envoy.transport_socket_match` metadata, the value in its JSON form.
pub type SocketLabel = (String, String);

/// `circuit_breakers.thresholds` (default priority): limits for the whole process, which
/// shards enforce as equal shares (no cross-core counter on the request path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakers {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl CircuitBreakers {
    /// Envoy's defaults.
    pub const DEFAULT: Self = Self {
        max_connections: 1024,
        max_pending_requests: 1024,
        max_requests: 1024,
        max_retries: 3,
    };

    /// One shard's share of each limit: `ceil(limit / shards)` (a limit of 0 stays 0).
    pub fn per_shard(&self, shards: usize) -> Self {
        let share = |limit: u32| limit.div_ceil(shards.max(1) as u32);
        Self {
            max_connections: share(self.max_connections),
            max_pending_requests: share(self.max_pending_requests),
            max_requests: share(self.max_requests),
            max_retries: share(self.max_retries),
        }
    }
}

/// HTTP options for upstream connections (`HttpProtocolOptions` in
/// `typed_extension_protocol_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamHttpOptions {
    /// Idle pooled connections are closed after this; `None` = never. Envoy's default: 1 h.
    pub idle_timeout: Option<Duration>,
    /// Requests per upstream connection before it is closed; `None` = unlimited.
    pub max_requests_per_connection: Option<u32>,
    /// `http_protocol_options.enable_trailers`: trailers are exchanged with the upstream.
    pub enable_trailers: bool,
    /// `upstream_http_protocol_options.auto_sni`: a TLS connection's SNI is the request's
    /// host (pooled connections are kept apart by SNI).
    pub auto_sni: bool,
    /// Which HTTP version requests go upstream in.
    pub protocol: UpstreamProtocol,
    /// The HTTP/2 settings of HTTP/2 upstream connections.
    pub http2: http::Http2Options,
}

/// `HttpProtocolOptions.upstream_protocol_options` (and the legacy cluster
/// `http2_protocol_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// `explicit_http_config.http2_protocol_options`.
    Http2,
    /// `use_downstream_protocol_config`: HTTP/2 for HTTP/2 clients, else HTTP/1.1.
    Downstream,
    /// `auto_config`: what TLS's ALPN negotiates with each host (`h2`, else HTTP/1.1).
    Negotiated,
}

impl UpstreamHttpOptions {
    /// Whether a request from a client speaking HTTP/2 (`client_http2`) or not goes upstream
    /// over HTTP/2; `None` when the host's ALPN answer decides.
    pub fn uses_http2(&self, client_http2: bool) -> Option<bool> {
        match self.protocol {
            UpstreamProtocol::Http1 => Some(false),
            UpstreamProtocol::Http2 => Some(true),
            UpstreamProtocol::Downstream => Some(client_http2),
            UpstreamProtocol::Negotiated => None,
        }
    }

    /// Whether trailers cross to or from the upstream: always over HTTP/2, over HTTP/1.1 only
    /// with `enable_trailers` (also under `auto_config`, where the host may pick HTTP/1.1).
    pub fn passes_trailers(&self, client_http2: bool) -> bool {
        self.uses_http2(client_http2).unwrap_or(false) || self.enable_trailers
    }
}

impl Default for UpstreamHttpOptions {
    /// Envoy's defaults: idle for at most an hour, unlimited requests.
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(3600)),
            max_requests_per_connection: None,
            enable_trailers: false,
            auto_sni: false,
            protocol: UpstreamProtocol::Http1,
            http2: http::Http2Options::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    Random,
    /// Power of two choices among hosts, by active requests; `choice_count` candidates.
    LeastRequest {
        choice_count: u32,
    },
    /// `CLUSTER_PROVIDED`: the cluster picks (an `ORIGINAL_DST` cluster: the destination).
    ClusterProvided,
    /// `RING_HASH`: the request's hash finds the next of each host's points on a ring.
    RingHash(RingHash),
    /// `MAGLEV`: the request's hash indexes Maglev's lookup table of `table_size` (a prime)
    /// entries; `use_hostname`: hosts are hashed by hostname (`consistent_hashing_lb_config`).
    Maglev {
        table_size: u64,
        use_hostname: bool,
    },
}

impl LbPolicy {
    /// Whether hosts are picked by the request's hash (`hash_policy`).
    pub fn hashes(&self) -> bool {
        matches!(self, Self::RingHash(_) | Self::Maglev { .. })
    }
}

/// `ring_hash_lb_config`: the ring's bounds and how host points are hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingHash {
    pub minimum_ring_size: u64,
    pub maximum_ring_size: u64,
    pub hash_function: RingHashFunction,
    /// Hosts are hashed by hostname (`consistent_hashing_lb_config.use_hostname_for_hashing`).
    pub use_hostname: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingHashFunction {
    XxHash,
    /// libstdc++'s 64-bit MurmurHash2 (`MURMUR_HASH_2`).
    MurmurHash2,
}

/// An `ORIGINAL_DST` cluster: each connection or request goes where the downstream was going
/// (its original destination), a host made on first use and forgotten once unused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalDst {
    /// `use_http_header`: the request header naming the destination (`host:port`) instead,
    /// lower-case (`x-envoy-original-dst-host` unless `http_header_name`).
    pub header: Option<String>,
    /// `upstream_port_override`: the destination's port replaced.
    pub port_override: Option<u16>,
    /// `cleanup_interval`: how long a host may go unused before it is forgotten.
    pub cleanup_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
    /// The DNS name a DNS cluster resolved, or a static endpoint's `hostname`: what
    /// `auto_host_rewrite` puts in the `host` header.
    pub hostname: Option<Arc<str>>,
    /// The endpoint's `envoy.transport_socket_match` metadata (sorted), which picks its
    /// transport socket among the cluster's `transport_socket_matches`.
    pub socket_labels: Option<Arc<[SocketLabel]>>,
    /// Its locality's place in the assignment and `load_balancing_weight` (0: none).
    pub locality: Locality,
    /// Set for an `envoy_internal_address` endpoint (whose `address` is then `NO_ADDRESS`).
    pub internal: Option<Arc<InternalEndpoint>>,
    /// Its locality's `priority` (0 is the highest).
    pub priority: u32,
    /// What EDS says of it (`health_status`): `FAILED_EDS_HEALTH`, `DEGRADED_EDS_HEALTH` or
    /// nothing.
    pub eds_health: health::HealthFlags,
    /// Its `health_check_config`, when it has one.
    pub check: Option<Arc<health::EndpointCheck>>,
    /// Its `envoy.lb` metadata's `hash_key`: what consistent hashing hashes for it instead of
    /// its address.
    pub hash_key: Option<Arc<str>>,
    /// Its `envoy.lb` metadata's fields, when a subset-balanced cluster reads them.
    pub lb_metadata: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// When the agent first published it (where slow start counts from).
    pub first_published: balancing::FirstPublished,
    /// Its locality's name (`None`: the assignment names none).
    pub locality_name: Option<Arc<balancing::LocalityName>>,
}

impl Endpoint {
    /// A host at `address` with weight 1 and nothing else set.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            weight: 1,
            hostname: None,
            socket_labels: None,
            locality: Locality::default(),
            internal: None,
            priority: 0,
            eds_health: health::HealthFlags::NONE,
            check: None,
            hash_key: None,
            lb_metadata: None,
            first_published: balancing::FirstPublished::now(),
            locality_name: None,
        }
    }

    /// Whether `later`, from a later assignment, is the same upstream host: the same address
    /// (for an internal endpoint, the same listener and endpoint id) and health-check target.
    /// Envoy keeps such a host, and its connections, updating weight, health and metadata.
    pub fn same_host(&self, later: &Endpoint) -> bool {
        let internal = |e: &Endpoint| {
            e.internal
                .as_ref()
                .map(|i| (i.listener.clone(), i.endpoint_id.clone()))
        };
        self.address == later.address
            && internal(self) == internal(later)
            && self.check == later.check
    }
}

/// An `envoy_internal_address` endpoint: an in-process connection to the internal listener
/// named `listener` on the connecting shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalEndpoint {
    pub listener: Box<str>,
    pub endpoint_id: Box<str>,
    /// The endpoint's `metadata.filter_metadata` (what `passthrough_metadata` reads).
    pub metadata: metadata::Metadata,
}

/// An endpoint's locality as locality-weighted balancing reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Locality {
    pub index: u32,
    pub weight: u32,
}

/// Hostnames a DNS cluster resolves, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    pub hosts: Vec<DnsHost>,
    pub refresh_rate: Duration,
    /// LOGICAL_DNS: use only the first address of the first host.
    pub logical: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsHost {
    pub hostname: String,
    pub port: u16,
    /// What the endpoints resolved carry besides their address and hostname (weight,
    /// transport-socket labels, locality, priority, health).
    pub template: Endpoint,
}
