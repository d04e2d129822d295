//! Translator: the supported surface of the HTTP connection manager and route configuration
//! (see `surface.rs` for how the walker uses it). Shared message types used inside route
//! tables and HTTP filters alike (`HeaderValueOption`, `StringMatcher`, `RegexMatcher`,
//! `FractionalPercent`, `RuntimeFractionalPercent`) are listed here once.
use super::{
    http_filters,
    surface::{AnySlot, Surface},
};
use crate::names;

/// Why the mirror policy's trace flag is ignored.
const NO_SHADOW_SPANS: &str = "shadow requests get no span of their own (docs/tracing.md)";
/// Why runtime keys are ignored.
const NO_RUNTIME: &str = "no runtime: the default value applies";
/// Why HTTP/2 flood limits are ignored.
const H2_FLOODS: &str = "the h2 crate applies its own flood limits";
/// Why the malformed-request policy is ignored.
const STREAM_ERRORS: &str = "a malformed HTTP/2 request always resets only its own stream (the \
     h2 crate rejects most itself, per stream); HTTP/1 answers 400 and closes";
/// Why metadata is ignored.
const METADATA: &str = "read only by filters that are not supported";

/// Accepted-and-ignored fields, and why each is harmless:
/// - `HttpConnectionManager.http3_protocol_options`: read only by the HTTP/3 codec;
///   `codec_type` HTTP3 is rejected.
/// - `Http2ProtocolOptions` flood limits (`max_outbound_frames`, `max_outbound_control_frames`,
///   `max_consecutive_inbound_frames_with_empty_payload`, `max_inbound_priority_frames_per_stream`,
///   `max_inbound_window_update_frames_per_data_frame_sent`): the `h2` crate applies its own
///   limits to these floods (reset and GOAWAY).
/// - `Router.dynamic_stats`: stats only.
/// - `RouteConfiguration.metadata`, `VirtualHost.metadata`, `Route.metadata`: opaque data only
///   unsupported filters read.
/// - `VirtualHost.virtual_clusters`: per-virtual-cluster stats only.
/// - `WeightedCluster.runtime_key_prefix`, `RuntimeFractionalPercent.runtime_key`: no runtime.
/// - `WeightedCluster.total_weight`: deprecated; Envoy uses the sum of the weights, as here.
/// - `RequestMirrorPolicy.trace_sampled`: shadows are not traced (docs/tracing.md).
/// - `RegexMatcher.google_re2` (and its deprecated `max_program_size`): selects RE2, which the
///   `regex` crate's syntax matches; its own size limit applies.
pub const SURFACE: &[Surface] = &[
    Surface {
        message: "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        supported: &[
            "codec_type",
            "stat_prefix",
            "route_config",
            "rds",
            "http_filters",
            "use_remote_address",
            "xff_num_trusted_hops",
            "skip_xff_append",
            "generate_request_id",
            "preserve_external_request_id",
            "server_name",
            "server_header_transformation",
            "request_timeout",
            "request_headers_timeout",
            "stream_idle_timeout",
            "common_http_protocol_options",
            "http_protocol_options",
            "max_request_headers_kb",
            "normalize_path",
            "merge_slashes",
            "path_with_escaped_slashes_action",
            "upgrade_configs",
            "proxy_100_continue",
            "forward_client_cert_details",
            "set_current_client_cert_details",
            "access_log",
            "http2_protocol_options",
            "local_reply_config",
            "request_id_extension",
            "tracing",
        ],
        ignored: &[
            ("http3_protocol_options", "read only by the HTTP/3 codec (not served)"),
            ("stream_error_on_invalid_http_message", STREAM_ERRORS),
            (
                "drain_timeout",
                "HTTP/1.1 connections close on drain at once when idle or after their response",
            ),
        ],
    },
    Surface {
        message: "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing",
        supported: &[
            "client_sampling",
            "random_sampling",
            "overall_sampling",
            "max_path_tag_length",
            "custom_tags",
            "provider",
            "verbose",
            "spawn_upstream_span",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.tracing.v3.CustomTag",
        supported: &["tag", "literal", "environment", "request_header", "metadata"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.tracing.v3.CustomTag.Literal",
        supported: &["value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.tracing.v3.CustomTag.Environment",
        supported: &["name", "default_value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.tracing.v3.CustomTag.Header",
        supported: &["name", "default_value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.tracing.v3.CustomTag.Metadata",
        supported: &["kind", "metadata_key", "default_value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.metadata.v3.MetadataKind",
        supported: &["request", "route", "cluster", "host"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.metadata.v3.MetadataKind.Request",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.metadata.v3.MetadataKey",
        supported: &["key", "path"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.metadata.v3.MetadataKey.PathSegment",
        supported: &["key"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.network.http_connection_manager.v3.LocalReplyConfig",
        supported: &["mappers", "body_format"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.network.http_connection_manager.v3.ResponseMapper",
        supported: &[
            "filter",
            "status_code",
            "headers_to_add",
            "body",
            "body_format_override",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.accesslog.v3.AccessLogFilter",
        supported: &[
            "status_code_filter",
            "duration_filter",
            "not_health_check_filter",
            "and_filter",
            "or_filter",
            "header_filter",
            "response_flag_filter",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.accesslog.v3.StatusCodeFilter",
        supported: &["comparison"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.accesslog.v3.DurationFilter",
        supported: &["comparison"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.accesslog.v3.ComparisonFilter",
        supported: &["op", "value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.RuntimeUInt32",
        supported: &["default_value"],
        ignored: &[("runtime_key", "no runtime: the default value applies")],
    },
    Surface {
        message: "envoy.config.accesslog.v3.NotHealthCheckFilter",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.accesslog.v3.AndFilter",
        supported: &["filters"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.accesslog.v3.OrFilter",
        supported: &["filters"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.accesslog.v3.HeaderFilter",
        supported: &["header"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.accesslog.v3.ResponseFlagFilter",
        supported: &["flags"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.Http2ProtocolOptions",
        supported: &[
            "hpack_table_size",
            "max_concurrent_streams",
            "initial_stream_window_size",
            "initial_connection_window_size",
            "connection_keepalive",
            "allow_connect",
        ],
        ignored: &[
            ("override_stream_error_on_invalid_http_message", STREAM_ERRORS),
            ("stream_error_on_invalid_http_messaging", STREAM_ERRORS),
            ("max_outbound_frames", H2_FLOODS),
            ("max_outbound_control_frames", H2_FLOODS),
            ("max_consecutive_inbound_frames_with_empty_payload", H2_FLOODS),
            ("max_inbound_priority_frames_per_stream", H2_FLOODS),
            ("max_inbound_window_update_frames_per_data_frame_sent", H2_FLOODS),
        ],
    },
    Surface {
        message: "envoy.extensions.filters.network.http_connection_manager.v3.RequestIDExtension",
        supported: &["typed_config"],
        ignored: &[],
    },
    // The UUID extension is what the connection manager does anyway (`x-request-id`, a
    // version 4 UUID); its two settings only steer trace sampling.
    Surface {
        message: names::UUID_REQUEST_ID,
        supported: &[],
        ignored: &[
            ("pack_trace_reason", "read by the connection manager's tracing"),
            (
                "use_request_id_for_trace_sampling",
                "read by the connection manager's tracing",
            ),
        ],
    },
    Surface {
        message: "envoy.config.core.v3.KeepaliveSettings",
        supported: &["interval", "timeout", "interval_jitter"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.v3.Percent",
        supported: &["value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.SetCurrentClientCertDetails",
        supported: &["subject", "cert", "chain", "dns", "uri"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.network.http_connection_manager.v3.Rds",
        supported: &["config_source", "route_config_name"],
        ignored: &[],
    },
    Surface {
        message:
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig",
        supported: &["upgrade_type", "enabled"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.HttpProtocolOptions",
        supported: &[
            "idle_timeout",
            "max_requests_per_connection",
            "max_headers_count",
            "headers_with_underscores_action",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.Http1ProtocolOptions",
        supported: &["accept_http_10", "default_host_for_http_10", "enable_trailers"],
        ignored: &[],
    },
    Surface {
        message: names::ROUTER,
        supported: &[],
        ignored: &[
            ("dynamic_stats", "stats only"),
        ],
    },
    Surface {
        message: "envoy.config.route.v3.RouteConfiguration",
        supported: &[
            "name",
            "virtual_hosts",
            "internal_only_headers",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "most_specific_header_mutations_wins",
            "validate_clusters",
            "max_direct_response_body_size_bytes",
            "request_mirror_policies",
            "ignore_port_in_host_matching",
            "ignore_path_parameters_in_path_matching",
        ],
        ignored: &[("metadata", METADATA)],
    },
    Surface {
        message: "envoy.config.route.v3.VirtualHost",
        supported: &[
            "name",
            "domains",
            "routes",
            "require_tls",
            "include_request_attempt_count",
            "include_attempt_count_in_response",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "typed_per_filter_config",
            "retry_policy",
            "request_mirror_policies",
        ],
        ignored: &[
            ("metadata", METADATA),
            ("virtual_clusters", "per-virtual-cluster stats only"),
        ],
    },
    Surface {
        message: "envoy.config.route.v3.Route",
        supported: &[
            "name",
            "match",
            "route",
            "redirect",
            "direct_response",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "typed_per_filter_config",
            "decorator",
        ],
        ignored: &[("metadata", METADATA)],
    },
    Surface {
        message: "envoy.config.route.v3.Decorator",
        supported: &["operation", "propagate"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteMatch",
        supported: &[
            "prefix",
            "path",
            "safe_regex",
            "path_separated_prefix",
            "connect_matcher",
            "case_sensitive",
            "headers",
            "query_parameters",
            "grpc",
            "tls_context",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteMatch.ConnectMatcher",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteMatch.TlsContextMatchOptions",
        supported: &["presented", "validated"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.HeaderMatcher",
        supported: &[
            "name",
            "exact_match",
            "safe_regex_match",
            "range_match",
            "present_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "string_match",
            "invert_match",
            "treat_missing_header_as_empty",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.v3.Int64Range",
        supported: &["start", "end"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.QueryParameterMatcher",
        supported: &["name", "string_match", "present_match"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.StringMatcher",
        supported: &[
            "exact",
            "prefix",
            "suffix",
            "contains",
            "safe_regex",
            "ignore_case",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.RegexMatcher",
        supported: &["regex"],
        ignored: &[(
            "google_re2",
            "selects RE2, whose syntax the regex crate follows",
        )],
    },
    Surface {
        message: "envoy.type.matcher.v3.RegexMatchAndSubstitute",
        supported: &["pattern", "substitution"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction",
        supported: &[
            "cluster",
            "cluster_header",
            "weighted_clusters",
            "cluster_not_found_response_code",
            "prefix_rewrite",
            "regex_rewrite",
            "host_rewrite_literal",
            "auto_host_rewrite",
            "timeout",
            "idle_timeout",
            "retry_policy",
            "request_mirror_policies",
            "upgrade_configs",
            "max_stream_duration",
            "max_grpc_timeout",
            "grpc_timeout_offset",
            "hash_policy",
            "metadata_match",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction.HashPolicy",
        // `filter_state` is refused by route/hash_policy.rs with the reason.
        supported: &[
            "header",
            "cookie",
            "connection_properties",
            "query_parameter",
            "filter_state",
            "terminal",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction.HashPolicy.Header",
        supported: &["header_name", "regex_rewrite"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction.HashPolicy.Cookie",
        supported: &["name", "ttl", "path", "attributes"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction.HashPolicy.CookieAttribute",
        supported: &["name", "value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties",
        supported: &["source_ip"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter",
        supported: &["name"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction.HashPolicy.FilterState",
        supported: &["key"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction.MaxStreamDuration",
        supported: &[
            "max_stream_duration",
            "grpc_timeout_header_max",
            "grpc_timeout_header_offset",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.WeightedCluster",
        supported: &["clusters", "header_name"],
        ignored: &[
            ("runtime_key_prefix", NO_RUNTIME),
            (
                "total_weight",
                "deprecated: the sum of the weights is used, as Envoy does",
            ),
        ],
    },
    Surface {
        message: "envoy.config.route.v3.WeightedCluster.ClusterWeight",
        supported: &[
            "name",
            "weight",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "metadata_match",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction.UpgradeConfig",
        supported: &["upgrade_type", "enabled", "connect_config"],
        ignored: &[],
    },
    // Terminating CONNECT as Envoy does with an empty `connect_config`; its PROXY protocol
    // header and POST tunnels are not implemented.
    Surface {
        message: "envoy.config.route.v3.RouteAction.UpgradeConfig.ConnectConfig",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RouteAction.RequestMirrorPolicy",
        supported: &["cluster", "runtime_fraction"],
        ignored: &[("trace_sampled", NO_SHADOW_SPANS)],
    },
    Surface {
        message: "envoy.config.core.v3.RuntimeFractionalPercent",
        supported: &["default_value"],
        ignored: &[("runtime_key", NO_RUNTIME)],
    },
    Surface {
        message: "envoy.type.v3.FractionalPercent",
        supported: &["numerator", "denominator"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RetryPolicy",
        supported: &[
            "retry_on",
            "num_retries",
            "per_try_timeout",
            "retriable_status_codes",
            "retry_back_off",
            "retry_host_predicate",
            "host_selection_retry_max_attempts",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RetryPolicy.RetryBackOff",
        supported: &["base_interval", "max_interval"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RetryPolicy.RetryHostPredicate",
        supported: &["name", "typed_config"],
        ignored: &[],
    },
    Surface {
        message: names::PREVIOUS_HOSTS,
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.RedirectAction",
        supported: &[
            "https_redirect",
            "scheme_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "regex_rewrite",
            "response_code",
            "strip_query",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.route.v3.DirectResponseAction",
        supported: &["status", "body"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.HeaderValueOption",
        supported: &["header", "append", "append_action", "keep_empty_value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.HeaderValue",
        supported: &["key", "value"],
        ignored: &[],
    },
];

/// `http_filters` entries (`HttpFilter`, its slot and `FilterConfig`) belong to the HTTP
/// filters' tables; the route tables' per-filter maps take what those filters define.
pub const ANY_SLOTS: &[AnySlot] = &[
    (
        "envoy.config.route.v3.VirtualHost",
        "per-filter config",
        http_filters::PER_ROUTE_TYPES,
    ),
    (
        "envoy.config.route.v3.Route",
        "per-filter config",
        http_filters::PER_ROUTE_TYPES,
    ),
    (
        "envoy.config.route.v3.RetryPolicy.RetryHostPredicate",
        "retry host predicate",
        &[names::PREVIOUS_HOSTS],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.RequestIDExtension",
        "request ID extension",
        &[names::UUID_REQUEST_ID],
    ),
];
