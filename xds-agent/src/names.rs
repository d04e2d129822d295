//! Well-known names: type URLs and Envoy extension names the translator recognises.

pub const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub const FILE_ACCESS_LOG: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
pub const STDOUT_ACCESS_LOG: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
pub const STDERR_ACCESS_LOG: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// The type name inside a type URL (`type.googleapis.com/a.b.C` → `a.b.C`).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// The tcp_proxy network filter's well-known name.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// The HTTP connection manager's well-known name.
pub const HTTP_CONNECTION_MANAGER_FILTER: &str = "envoy.filters.network.http_connection_manager";
pub const HTTP_CONNECTION_MANAGER: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
/// An `http_filters` entry of the connection manager.
pub const HTTP_FILTER: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter";
/// The `typed_per_filter_config` wrapper (disable, enable, optional).
pub const FILTER_CONFIG: &str = "envoy.config.route.v3.FilterConfig";
pub const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
/// The router's well-known filter name (Envoy accepts it without a typed config).
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
pub const FAULT: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";
pub const ORIGINAL_DST: &str = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
pub const UUID_REQUEST_ID: &str = "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig";
pub const GRPC_WEB: &str = "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb";
pub const GRPC_STATS: &str = "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig";
pub const CORS: &str = "envoy.extensions.filters.http.cors.v3.Cors";
pub const CORS_POLICY: &str = "envoy.extensions.filters.http.cors.v3.CorsPolicy";
pub const LOCAL_RATELIMIT: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
pub const HEADER_MUTATION: &str = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";
pub const HEADER_MUTATION_PER_ROUTE: &str =
    "envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute";
pub const HTTP_RBAC: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";
pub const HTTP_RBAC_PER_ROUTE: &str = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute";
pub const NETWORK_WASM: &str = "envoy.extensions.filters.network.wasm.v3.Wasm";
pub const NETWORK_RBAC: &str = "envoy.extensions.filters.network.rbac.v3.RBAC";
pub const HTTP_EXT_AUTHZ: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
pub const HTTP_EXT_AUTHZ_PER_ROUTE: &str =
    "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";
pub const NETWORK_EXT_AUTHZ: &str = "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz";
pub const NETWORK_CONNECTION_LIMIT: &str =
    "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit";
pub const PREVIOUS_HOSTS: &str =
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";
pub const UPSTREAM_HTTP_PROTOCOL_OPTIONS: &str =
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// The previous-hosts predicate's well-known name (accepted without a typed config).
/// Transport sockets.
pub const DOWNSTREAM_TLS_CONTEXT: &str =
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
pub const UPSTREAM_TLS_CONTEXT: &str =
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
pub const RAW_BUFFER: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
pub const INTERNAL_UPSTREAM: &str =
    "envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport";
/// The endpoint metadata namespace `transport_socket_matches` look at.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// The endpoint metadata namespace of load balancing (`hash_key`).
pub const ENVOY_LB: &str = "envoy.lb";
/// Listener filters.
pub const TLS_INSPECTOR: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
pub const HTTP_INSPECTOR: &str =
    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
pub const TLS_INSPECTOR_FILTER: &str = "envoy.filters.listener.tls_inspector";
pub const PREVIOUS_HOSTS_PREDICATE: &str = "envoy.retry_host_predicates.previous_hosts";

/// The compressor HTTP filter (accepted, not run: `http_filters/mod.rs`).
pub const COMPRESSOR: &str = "envoy.extensions.filters.http.compressor.v3.Compressor";
/// Bootstrap, overload and tracing extensions Istio's bootstrap names.
pub const INTERNAL_LISTENER: &str =
    "envoy.extensions.bootstrap.internal_listener.v3.InternalListener";
pub const ISTIO_WORKLOAD_DISCOVERY: &str = "istio.workload.BootstrapExtension";
pub const ISTIO_AUTHN: &str = "io.istio.network.authn.Config";
pub const METADATA_EXCHANGE: &str = "envoy.tcp.metadataexchange.config.MetadataExchange";
pub const PEER_METADATA: &str = "io.istio.http.peer_metadata.Config";
pub const HTTP_WASM: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
pub const STATS: &str = "stats.PluginConfig";
pub const ISTIO_ALPN: &str = "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig";
pub const ISTIO_AUTHN_POLICY: &str = "istio.envoy.config.filter.http.authn.v2alpha1.FilterConfig";
pub const CONNECT_AUTHORITY: &str = "io.istio.http.connect_authority.Config";
pub const CONNECT_BAGGAGE: &str = "io.istio.http.connect_baggage.Config";
pub const SET_INTERNAL_DST_ADDRESS: &str = "istio.set_internal_dst_address.v1.Config";
pub const DOWNSTREAM_CONNECTIONS: &str =
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig";
pub const FIXED_HEAP: &str = "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig";
pub const ZIPKIN: &str = "envoy.config.trace.v3.ZipkinConfig";

/// The wrapper a state-of-the-world response may put around each resource (name, version).
pub const DISCOVERY_RESOURCE: &str = "envoy.service.discovery.v3.Resource";

/// The xDS resource types, as their type URLs.
pub mod type_urls {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const ASSIGNMENT: &str =
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const EXTENSION: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}
