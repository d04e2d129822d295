//! Translator: the supported config surface — for each Envoy message type, the fields the
//! translator implements and the fields it accepts and ignores (with the reason). Any other set
//! field is rejected by the walker in `support.rs`.
use crate::names;

/// One message type's surface.
pub struct Surface {
    /// Full proto name, e.g. `envoy.config.listener.v3.Listener`.
    pub message: &'static str,
    /// Fields the translator implements (the walker descends into message-typed ones).
    pub supported: &'static [&'static str],
    /// Fields accepted without effect: `(field, why ignoring it changes no traffic)`.
    pub ignored: &'static [(&'static str, &'static str)],
}

/// Message types taken whole: scalar wrappers and durations have no sub-fields to check.
pub const LEAF_TYPES: &[&str] = &[
    "google.protobuf.Duration",
    "google.protobuf.BoolValue",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int64Value",
    "google.protobuf.StringValue",
    "google.protobuf.Struct",
    "google.protobuf.DoubleValue",
];

/// Why a tunnel's response headers and trailers are not kept.
const TUNNEL_FILTER_STATE: &str = "they only go into the connection's filter state, which \
     nothing in shardproxy reads (no %FILTER_STATE% command, no filter after tcp_proxy)";

/// Why node identity fields are ignored.
const NODE_ID: &str = "identity for a management server";

/// The supported surface, by message type.
///
/// Accepted-and-ignored fields, and why each is harmless:
/// - `Bootstrap.layered_runtime`: runtime overrides; shardproxy has no runtime, so Envoy's
///   built-in defaults apply (most examples only declare an empty static layer).
/// - `StatsConfig.histogram_bucket_settings`: histograms keep Envoy's default buckets.
/// - `Bootstrap.stats_sinks`, `.application_log_config`, `.deferred_stat_options`: where stats
///   are pushed, the proxy's own log format, when stats appear.
/// - The Istio bootstrap's process-wide sections: `bootstrap_surface.rs`.
/// - `Node.*` except `id`, `cluster` and `locality`: node identity sent to a management
///   server.
/// - `Admin.access_log`, `Admin.access_log_path`, `Admin.profile_path`: admin-interface
///   logging and profiler output; the admin server does not log requests or profile.
/// - `Listener.metadata`, `FilterChain.metadata`: opaque metadata that only filters that are
///   not supported read.
/// - `ClusterLoadAssignment.cluster_name`: names the cluster the assignment belongs to, which
///   is implied for an inline `load_assignment`.
pub const SURFACE: &[Surface] = &[
    Surface {
        message: "envoy.config.bootstrap.v3.Bootstrap",
        supported: &[
            "node",
            "static_resources",
            "admin",
            "dynamic_resources",
            "bootstrap_extensions",
            "overload_manager",
            "tracing",
            "cluster_manager",
            "stats_config",
        ],
        ignored: &[
            (
                "layered_runtime",
                "no runtime: Envoy's built-in defaults apply",
            ),
            (
                "stats_sinks",
                "stats are not pushed: /stats and /stats/prometheus serve them",
            ),
            (
                "application_log_config",
                "the proxy's own log lines keep their format",
            ),
            (
                "deferred_stat_options",
                "stats are created with their owner; deferring only delays when they appear",
            ),
        ],
    },
    Surface {
        message: "envoy.config.metrics.v3.StatsConfig",
        supported: &["stats_tags", "use_all_default_tags", "stats_matcher"],
        ignored: &[(
            "histogram_bucket_settings",
            "histograms keep Envoy's default buckets",
        )],
    },
    Surface {
        message: "envoy.config.metrics.v3.TagSpecifier",
        supported: &["tag_name", "regex", "fixed_value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.metrics.v3.StatsMatcher",
        supported: &["reject_all", "exclusion_list", "inclusion_list"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.ListStringMatcher",
        supported: &["patterns"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.Node",
        supported: &["id", "cluster", "locality"],
        ignored: &[
            ("metadata", NODE_ID),
            ("dynamic_parameters", NODE_ID),
            ("user_agent_name", NODE_ID),
            ("user_agent_version", NODE_ID),
            ("user_agent_build_version", NODE_ID),
            ("extensions", NODE_ID),
            ("client_features", NODE_ID),
            ("listening_addresses", NODE_ID),
        ],
    },
    Surface {
        message: "envoy.config.bootstrap.v3.Bootstrap.DynamicResources",
        supported: &["lds_config", "cds_config", "ads_config"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.ApiConfigSource",
        supported: &[
            "api_type",
            "transport_api_version",
            "grpc_services",
            "set_node_on_first_message_only",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.GrpcService",
        // `timeout` and `initial_metadata` only on ext_authz's (config_source.rs refuses
        // them on xDS streams).
        supported: &["envoy_grpc", "timeout", "initial_metadata"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.GrpcService.EnvoyGrpc",
        supported: &["cluster_name", "authority"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.ConfigSource",
        // `api_config_source` and the paths are for SDS secrets only (`config_source.rs`).
        supported: &[
            "ads",
            "api_config_source",
            "path_config_source",
            "path",
            "resource_api_version",
            "initial_fetch_timeout",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.PathConfigSource",
        supported: &["path", "watched_directory"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.WatchedDirectory",
        supported: &["path"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.AggregatedConfigSource",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.bootstrap.v3.Admin",
        supported: &["address"],
        ignored: &[
            ("access_log", "the admin server writes no access log"),
            ("access_log_path", "the admin server writes no access log"),
            ("profile_path", "no CPU profiler"),
        ],
    },
    Surface {
        message: "envoy.config.bootstrap.v3.Bootstrap.StaticResources",
        supported: &["listeners", "clusters", "secrets"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.Address",
        supported: &["socket_address", "envoy_internal_address"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.EnvoyInternalAddress",
        supported: &["server_listener_name", "endpoint_id"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.listener.v3.Listener.InternalListenerConfig",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: names::SET_INTERNAL_DST_ADDRESS,
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.SocketAddress",
        supported: &["address", "port_value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.listener.v3.Listener",
        supported: &[
            "name",
            "address",
            "stat_prefix",
            "filter_chains",
            "per_connection_buffer_limit_bytes",
            "traffic_direction",
            "drain_type",
            "default_filter_chain",
            "listener_filters",
            "listener_filters_timeout",
            "continue_on_listener_filters_timeout",
            "bind_to_port",
            "deprecated_v1",
            "access_log",
            "use_original_dst",
            "internal_listener",
            "ignore_global_conn_limit",
            "bypass_overload_manager",
            "max_connections_to_accept_per_socket_event",
        ],
        ignored: &[("metadata", "read only by filters that are not supported")],
    },
    Surface {
        message: "envoy.config.listener.v3.FilterChain",
        supported: &["filters", "name", "filter_chain_match", "transport_socket"],
        ignored: &[("metadata", "read only by filters that are not supported")],
    },
    Surface {
        message: "envoy.config.listener.v3.FilterChainMatch",
        supported: &[
            "destination_port",
            "prefix_ranges",
            "direct_source_prefix_ranges",
            "source_type",
            "source_prefix_ranges",
            "source_ports",
            "server_names",
            "transport_protocol",
            "application_protocols",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.CidrRange",
        supported: &["address_prefix", "prefix_len"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.listener.v3.ListenerFilter",
        supported: &["name", "typed_config", "filter_disabled"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.listener.v3.ListenerFilterChainMatchPredicate",
        supported: &[
            "or_match",
            "and_match",
            "not_match",
            "any_match",
            "destination_port_range",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.listener.v3.ListenerFilterChainMatchPredicate.MatchSet",
        supported: &["rules"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.v3.Int32Range",
        supported: &["start", "end"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        supported: &["max_client_hello_size"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: names::ORIGINAL_DST,
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.listener.v3.Filter",
        supported: &["name", "typed_config"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        supported: &[
            "stat_prefix",
            "cluster",
            "weighted_clusters",
            "idle_timeout",
            "max_connect_attempts",
            "access_log",
            "tunneling_config",
            "hash_policy",
        ],
        ignored: &[],
    },
    Surface {
        message: names::NETWORK_CONNECTION_LIMIT,
        supported: &["stat_prefix", "max_connections", "delay", "runtime_enabled"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.v3.HashPolicy",
        // `filter_state` is refused by tcp_proxy.rs with the reason.
        supported: &["source_ip", "filter_state"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.v3.HashPolicy.SourceIp",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.v3.HashPolicy.FilterState",
        supported: &["key"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.TunnelingConfig",
        supported: &["hostname", "use_post", "post_path", "headers_to_add"],
        ignored: &[
            ("propagate_response_headers", TUNNEL_FILTER_STATE),
            ("propagate_response_trailers", TUNNEL_FILTER_STATE),
        ],
    },
    Surface {
        message: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster",
        supported: &["clusters"],
        ignored: &[],
    },
    Surface {
        message:
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight",
        supported: &["name", "weight"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.accesslog.v3.AccessLog",
        supported: &["name", "typed_config", "filter"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        supported: &["path", "format", "log_format"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        supported: &["log_format"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
        supported: &["log_format"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.SubstitutionFormatString",
        supported: &[
            "text_format",
            "text_format_source",
            "json_format",
            "content_type",
            "omit_empty_values",
            "json_format_options",
        ],
        ignored: &[],
    },
    Surface {
        // Envoy 1.40 sorts the keys either way.
        message: "envoy.config.core.v3.JsonFormatOptions",
        supported: &["sort_properties"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.DataSource",
        supported: &[
            "filename",
            "inline_bytes",
            "inline_string",
            "environment_variable",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster",
        supported: &[
            "name",
            "type",
            "connect_timeout",
            "lb_policy",
            "least_request_lb_config",
            "round_robin_lb_config",
            "ring_hash_lb_config",
            "maglev_lb_config",
            "load_assignment",
            "dns_refresh_rate",
            "dns_lookup_family",
            "per_connection_buffer_limit_bytes",
            "circuit_breakers",
            "typed_extension_protocol_options",
            "eds_cluster_config",
            "transport_socket",
            "transport_socket_matches",
            "original_dst_lb_config",
            "cleanup_interval",
            "upstream_bind_config",
            "http2_protocol_options",
            "common_lb_config",
            "metadata",
            "filters",
            "protocol_selection",
            "health_checks",
            "outlier_detection",
            "lb_subset_config",
        ],
        ignored: &[
            (
                "alt_stat_name",
                "cluster stats are named by the cluster's name",
            ),
            (
                "respect_dns_ttl",
                "DNS names are resolved again every dns_refresh_rate, whatever their TTL",
            ),
        ],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.LbSubsetConfig",
        supported: &[
            "fallback_policy",
            "default_subset",
            "subset_selectors",
            "locality_weight_aware",
            "scale_locality_weight",
            "panic_mode_any",
            "list_as_any",
            "metadata_fallback_policy",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.LbSubsetConfig.LbSubsetSelector",
        supported: &[
            "keys",
            "single_host_per_subset",
            "fallback_policy",
            "fallback_keys_subset",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.tcp.metadataexchange.config.MetadataExchange",
        supported: &["protocol", "additional_labels"],
        ignored: &[(
            "enable_discovery",
            "workload discovery (Istio's WDS, for ambient mode) is not supported: peers are \
             known from the exchange alone",
        )],
    },
    Surface {
        message: "stats.PluginConfig",
        supported: &[
            "disable_host_header_fallback",
            "metrics",
            "definitions",
            "reporter",
        ],
        ignored: &[
            (
                "tcp_reporting_duration",
                "TCP byte counts are added as bytes are relayed, not every reporting period",
            ),
            (
                "rotation_interval",
                "series are kept for the process's life (no scope rotation)",
            ),
            (
                "graceful_deletion_interval",
                "series are kept for the process's life (no scope rotation)",
            ),
        ],
    },
    Surface {
        message: "stats.MetricConfig",
        supported: &["name", "tags_to_remove", "drop", "dimensions", "match"],
        ignored: &[],
    },
    Surface {
        message: "stats.MetricDefinition",
        supported: &["name", "value", "type"],
        ignored: &[],
    },
    Surface {
        message: "io.istio.network.authn.Config",
        supported: &["shared"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.listener.v3.Listener.DeprecatedV1",
        supported: &["bind_to_port"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.network.wasm.v3.Wasm",
        supported: &["config"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Filter",
        supported: &["name", "typed_config"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.CommonLbConfig",
        supported: &[
            "locality_weighted_lb_config",
            "zone_aware_lb_config",
            "healthy_panic_threshold",
            "consistent_hashing_lb_config",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.CommonLbConfig.ConsistentHashingLbConfig",
        // `hash_balance_factor` (bounded load) is refused by cluster.rs with the reason.
        supported: &["use_hostname_for_hashing", "hash_balance_factor"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.RingHashLbConfig",
        supported: &["minimum_ring_size", "maximum_ring_size", "hash_function"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.MaglevLbConfig",
        supported: &["table_size"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.CommonLbConfig.ZoneAwareLbConfig",
        supported: &[
            "routing_enabled",
            "min_cluster_size",
            "fail_traffic_on_panic",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.Locality",
        supported: &["region", "zone", "sub_zone"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.CommonLbConfig.LocalityWeightedLbConfig",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.EdsClusterConfig",
        supported: &["eds_config", "service_name"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.CircuitBreakers",
        supported: &["thresholds"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.CircuitBreakers.Thresholds",
        supported: &[
            "priority",
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_retries",
        ],
        ignored: &[(
            "track_remaining",
            "only adds remaining_* gauges, which are not published",
        )],
    },
    Surface {
        message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        supported: &[
            "common_http_protocol_options",
            "explicit_http_config",
            "use_downstream_protocol_config",
            "auto_config",
            "upstream_http_protocol_options",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.UpstreamHttpProtocolOptions",
        supported: &["auto_sni", "auto_san_validation"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
        supported: &["http_protocol_options", "http2_protocol_options"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig",
        supported: &["http_protocol_options", "http2_protocol_options"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig",
        supported: &["http_protocol_options", "http2_protocol_options"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.BindConfig",
        supported: &["source_address"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.OriginalDstLbConfig",
        supported: &[
            "use_http_header",
            "http_header_name",
            "upstream_port_override",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig",
        supported: &["choice_count", "slow_start_config"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.RoundRobinLbConfig",
        supported: &["slow_start_config"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.SlowStartConfig",
        supported: &["slow_start_window", "aggression", "min_weight_percent"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.RuntimeDouble",
        supported: &["default_value"],
        ignored: &[(
            "runtime_key",
            "no runtime: the default value applies, as in Envoy without a runtime layer",
        )],
    },
    Surface {
        message: "envoy.config.endpoint.v3.ClusterLoadAssignment",
        supported: &["endpoints"],
        ignored: &[("cluster_name", "implied by the enclosing cluster")],
    },
    Surface {
        message: "envoy.config.endpoint.v3.LocalityLbEndpoints",
        supported: &[
            "lb_endpoints",
            "load_balancing_weight",
            "priority",
            "locality",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.endpoint.v3.LbEndpoint",
        supported: &[
            "endpoint",
            "load_balancing_weight",
            "health_status",
            "metadata",
        ],
        ignored: &[],
    },
    // Namespaces other than envoy.transport_socket_match and envoy.lb are kept unread (filters
    // that read them are not supported).
    Surface {
        message: "envoy.config.core.v3.Metadata",
        supported: &["filter_metadata"],
        ignored: &[(
            "typed_filter_metadata",
            "read only by filters that are not supported",
        )],
    },
    Surface {
        message: "envoy.config.cluster.v3.Cluster.TransportSocketMatch",
        supported: &["name", "match", "transport_socket"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.endpoint.v3.Endpoint",
        supported: &["address", "hostname", "health_check_config"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.endpoint.v3.Endpoint.HealthCheckConfig",
        supported: &[
            "port_value",
            "hostname",
            "address",
            "disable_active_health_check",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.HealthCheck",
        supported: &[
            "timeout",
            "interval",
            "initial_jitter",
            "interval_jitter",
            "interval_jitter_percent",
            "unhealthy_threshold",
            "healthy_threshold",
            "reuse_connection",
            "http_health_check",
            "tcp_health_check",
            "grpc_health_check",
            "no_traffic_interval",
            "no_traffic_healthy_interval",
            "unhealthy_interval",
            "unhealthy_edge_interval",
            "healthy_edge_interval",
        ],
        ignored: &[
            (
                "always_log_health_check_failures",
                "only chooses what a health check event logger writes; event loggers are not \
                 supported (event_logger is refused)",
            ),
            (
                "always_log_health_check_success",
                "only chooses what a health check event logger writes; event loggers are not \
                 supported (event_logger is refused)",
            ),
        ],
    },
    Surface {
        message: "envoy.config.core.v3.HealthCheck.HttpHealthCheck",
        supported: &[
            "host",
            "path",
            "send",
            "receive",
            "request_headers_to_add",
            "request_headers_to_remove",
            "expected_statuses",
            "retriable_statuses",
            "codec_client_type",
            "method",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.HealthCheck.TcpHealthCheck",
        supported: &["send", "receive"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.HealthCheck.GrpcHealthCheck",
        supported: &["service_name", "authority", "initial_metadata"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.HealthCheck.Payload",
        supported: &["text", "binary"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.cluster.v3.OutlierDetection",
        supported: &[
            "consecutive_5xx",
            "interval",
            "base_ejection_time",
            "max_ejection_percent",
            "enforcing_consecutive_5xx",
            "enforcing_success_rate",
            "success_rate_minimum_hosts",
            "success_rate_request_volume",
            "success_rate_stdev_factor",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            "split_external_local_origin_errors",
            "consecutive_local_origin_failure",
            "enforcing_consecutive_local_origin_failure",
            "enforcing_local_origin_success_rate",
            "failure_percentage_threshold",
            "enforcing_failure_percentage",
            "enforcing_failure_percentage_local_origin",
            "failure_percentage_minimum_hosts",
            "failure_percentage_request_volume",
            "max_ejection_time",
            "max_ejection_time_jitter",
            "successful_active_health_check_uneject_host",
            "always_eject_one_host",
        ],
        ignored: &[],
    },
];

/// Where an `Any` may appear, and which payload types it may hold there: `(parent message,
/// what the payload is, allowed type names)`. An `Any` anywhere else is rejected.
pub const ANY_SLOTS: &[AnySlot] = &[
    (
        "envoy.config.listener.v3.Filter",
        "network filter",
        &[
            names::TCP_PROXY,
            names::HTTP_CONNECTION_MANAGER,
            names::ISTIO_AUTHN,
            names::METADATA_EXCHANGE,
            names::STATS,
            names::NETWORK_RBAC,
            names::NETWORK_EXT_AUTHZ,
            names::NETWORK_CONNECTION_LIMIT,
            names::NETWORK_WASM,
        ],
    ),
    (
        "envoy.config.cluster.v3.Filter",
        "upstream network filter",
        &[names::METADATA_EXCHANGE],
    ),
    (
        "envoy.config.cluster.v3.Cluster",
        "upstream protocol options",
        &[names::UPSTREAM_HTTP_PROTOCOL_OPTIONS],
    ),
    (
        "envoy.config.listener.v3.ListenerFilter",
        "listener filter",
        &[
            names::TLS_INSPECTOR,
            names::HTTP_INSPECTOR,
            names::ORIGINAL_DST,
            names::SET_INTERNAL_DST_ADDRESS,
        ],
    ),
    (
        "envoy.config.accesslog.v3.AccessLog",
        "access logger",
        &[
            names::FILE_ACCESS_LOG,
            names::STDOUT_ACCESS_LOG,
            names::STDERR_ACCESS_LOG,
        ],
    ),
];

/// Every surface table: the core one here, HTTP (connection manager, routes), HTTP filters,
/// TLS, the bootstrap's process-wide sections and RBAC rules.
const TABLES: [&[Surface]; 7] = [
    SURFACE,
    super::http_surface::SURFACE,
    super::http_filters::SURFACE,
    super::tls_surface::SURFACE,
    super::bootstrap_surface::SURFACE,
    super::rbac::SURFACE,
    super::ext_authz::SURFACE,
];

/// Every `Any` slot table (split as `TABLES`; RBAC rules hold no `Any`).
const SLOT_TABLES: [&[AnySlot]; 5] = [
    ANY_SLOTS,
    super::http_surface::ANY_SLOTS,
    super::http_filters::ANY_SLOTS,
    super::tls_surface::ANY_SLOTS,
    super::bootstrap_surface::ANY_SLOTS,
];

/// `(parent message, what the payload is, allowed type names)`.
pub type AnySlot = (&'static str, &'static str, &'static [&'static str]);

/// The surface of a message type, if it is supported at all.
pub fn surface(message: &str) -> Option<&'static Surface> {
    TABLES
        .iter()
        .flat_map(|t| t.iter())
        .find(|s| s.message == message)
}

/// The `Any` slot in `parent`, if `Any` payloads are allowed there.
pub fn any_slot(parent: &str) -> Option<&'static AnySlot> {
    SLOT_TABLES
        .iter()
        .flat_map(|t| t.iter())
        .find(|(p, _, _)| *p == parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message type is described once: the first table listing it would hide the others.
    #[test]
    fn each_message_has_one_surface() {
        let mut seen = std::collections::HashSet::new();
        for s in TABLES.iter().flat_map(|t| t.iter()) {
            assert!(seen.insert(s.message), "{} is listed twice", s.message);
        }
    }

    /// Every listed type and field exists in Envoy's descriptors (guards against typos).
    #[test]
    fn every_listed_field_exists() {
        for s in TABLES.iter().flat_map(|t| t.iter()) {
            let message = proto::message(s.message)
                .unwrap_or_else(|| panic!("{} is not a message", s.message));
            let names = s.supported.iter().chain(s.ignored.iter().map(|(f, _)| f));
            for field in names {
                assert!(
                    message.get_field_by_name(field).is_some(),
                    "{}.{field} does not exist",
                    s.message
                );
            }
        }
        for (parent, _, types) in SLOT_TABLES.iter().flat_map(|t| t.iter()) {
            assert!(surface(parent).is_some(), "{parent}");
            types
                .iter()
                .filter(|t| !t.is_empty())
                .for_each(|t| assert!(surface(t).is_some() || LEAF_TYPES.contains(t), "{t}"));
        }
        for leaf in LEAF_TYPES {
            assert!(proto::message(leaf).is_some(), "{leaf}");
        }
    }
}
