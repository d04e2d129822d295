//! Translator: HTTP filters — a registry keyed by type URL from each filter's config (and its
//! per-route config) to its model, and each filter's supported surface.
//!
//! Envoy semantics kept here: an unsupported filter type is an error unless the entry is
//! `is_optional` (then it is skipped, with a warning); a `disabled` filter runs only where a
//! route or virtual host enables it; a per-route config is looked up by its own type (as
//! Envoy's factories are), and `FilterConfig` wraps one to disable, enable or mark it optional.
mod common;
mod connect;
mod cors;
mod ext_authz;
mod fault;
mod grpc_stats;
mod header_mutation;
mod istio_alpn;
mod istio_authn;
mod local_ratelimit;
mod peer_metadata;
mod rbac;
mod wasm;

use envoy_types::pb::{
    envoy::{
        config::{core::v3::ExtensionConfigSource, route::v3::FilterConfig},
        extensions::filters::{
            http::grpc_web::v3::GrpcWeb,
            network::http_connection_manager::v3::{
                http_filter::ConfigType, HttpFilter as HttpFilterProto,
            },
        },
    },
    google::protobuf::Any,
};

use self::common::Site;
use super::{
    config_source::ads_source,
    support::unsupported_fields,
    surface::{AnySlot, Surface},
    TranslateContext, TranslateError,
};
use crate::names;
use model::filters::{HttpFilter, HttpFilterKind, PerRouteFilter};

/// Builds a filter from its `typed_config`; the `&str` is the connection manager's
/// `stat_prefix` (for `http.<prefix>.*` stats).
type BuildFilter = fn(
    &Any,
    &Site,
    &str,
    &mut TranslateContext,
    &mut Vec<TranslateError>,
) -> Option<HttpFilterKind>;

/// Builds a per-route config.
type BuildPerRoute =
    fn(&Any, &Site, &mut TranslateContext, &mut Vec<TranslateError>) -> Option<PerRouteFilter>;

/// One registered filter type.
struct Factory {
    /// The type of its `typed_config`.
    config_type: &'static str,
    /// `None` for the router, which the connection manager runs itself.
    build: Option<BuildFilter>,
    /// The type of its `typed_per_filter_config`, if it takes one, and how to build it.
    per_route: Option<(&'static str, BuildPerRoute)>,
}

/// The registry, keyed by config type.
const REGISTRY: &[Factory] = &[
    Factory {
        config_type: names::ROUTER,
        build: None,
        per_route: None,
    },
    Factory {
        config_type: names::FAULT,
        build: Some(fault::filter),
        per_route: Some((names::FAULT, fault::per_route)),
    },
    Factory {
        config_type: names::CORS,
        build: Some(cors::filter),
        per_route: Some((names::CORS_POLICY, cors::per_route)),
    },
    Factory {
        config_type: names::LOCAL_RATELIMIT,
        build: Some(local_ratelimit::filter),
        per_route: Some((names::LOCAL_RATELIMIT, local_ratelimit::per_route)),
    },
    Factory {
        config_type: names::HEADER_MUTATION,
        build: Some(header_mutation::filter),
        per_route: Some((names::HEADER_MUTATION_PER_ROUTE, header_mutation::per_route)),
    },
    Factory {
        config_type: names::GRPC_STATS,
        build: Some(grpc_stats::filter),
        per_route: None,
    },
    Factory {
        config_type: names::GRPC_WEB,
        build: Some(grpc_web),
        per_route: None,
    },
    Factory {
        config_type: names::ISTIO_ALPN,
        build: Some(istio_alpn::filter),
        per_route: None,
    },
    Factory {
        config_type: names::PEER_METADATA,
        build: Some(peer_metadata::filter),
        per_route: None,
    },
    Factory {
        config_type: names::ISTIO_AUTHN_POLICY,
        build: Some(istio_authn::filter),
        per_route: None,
    },
    Factory {
        config_type: names::HTTP_WASM,
        build: Some(wasm::filter),
        per_route: None,
    },
    Factory {
        config_type: names::STATS,
        build: Some(istio_stats),
        per_route: None,
    },
    Factory {
        config_type: names::HTTP_RBAC,
        build: Some(rbac::filter),
        per_route: Some((names::HTTP_RBAC_PER_ROUTE, rbac::per_route)),
    },
    Factory {
        config_type: names::HTTP_EXT_AUTHZ,
        build: Some(ext_authz::filter),
        per_route: Some((names::HTTP_EXT_AUTHZ_PER_ROUTE, ext_authz::per_route)),
    },
    Factory {
        config_type: names::CONNECT_AUTHORITY,
        build: Some(connect::authority),
        per_route: Some((names::CONNECT_AUTHORITY, connect::authority_per_route)),
    },
    Factory {
        config_type: names::CONNECT_BAGGAGE,
        build: Some(connect::baggage),
        per_route: None,
    },
];

/// Filter types accepted and not run: a response leaves uncompressed (`identity`), which
/// Envoy's compressor also sends whenever the client or the content type does not qualify.
const NOT_RUN: &[&str] = &[names::COMPRESSOR];

/// Why the compressor's settings are ignored.
const NOT_COMPRESSED: &str = "the compressor is not run: responses leave uncompressed";

/// `typed_config` types of `http_filters` entries (the registry's config types, and those
/// accepted and not run).
const FILTER_TYPES: &[&str] = &[
    names::ROUTER,
    names::FAULT,
    names::CORS,
    names::LOCAL_RATELIMIT,
    names::HEADER_MUTATION,
    names::GRPC_STATS,
    names::GRPC_WEB,
    names::ISTIO_ALPN,
    names::PEER_METADATA,
    names::ISTIO_AUTHN_POLICY,
    names::HTTP_WASM,
    names::STATS,
    names::HTTP_RBAC,
    names::HTTP_EXT_AUTHZ,
    names::CONNECT_AUTHORITY,
    names::CONNECT_BAGGAGE,
    names::COMPRESSOR,
];

/// Per-route config types (the registry's per-route types).
const PER_ROUTE_CONFIG_TYPES: &[&str] = &[
    names::FAULT,
    names::CORS_POLICY,
    names::LOCAL_RATELIMIT,
    names::HEADER_MUTATION_PER_ROUTE,
    names::HTTP_RBAC_PER_ROUTE,
    names::HTTP_EXT_AUTHZ_PER_ROUTE,
    names::CONNECT_AUTHORITY,
];

/// What a `typed_per_filter_config` value (route, virtual host, weighted cluster) may hold:
/// a per-route config or a `FilterConfig` wrapping one. For the route tables' `Any` slots.
pub const PER_ROUTE_TYPES: &[&str] = &[
    names::FAULT,
    names::CORS_POLICY,
    names::LOCAL_RATELIMIT,
    names::HEADER_MUTATION_PER_ROUTE,
    names::HTTP_RBAC_PER_ROUTE,
    names::HTTP_EXT_AUTHZ_PER_ROUTE,
    names::CONNECT_AUTHORITY,
    names::FILTER_CONFIG,
];

/// Why runtime keys are ignored.
const NO_RUNTIME: &str = "no runtime: the configured value applies";
/// Why descriptor-only settings are ignored.
const NO_DESCRIPTORS: &str = "only read with descriptors, which are not supported";

/// The supported surface of the HTTP filters' messages (see `surface.rs`).
pub const SURFACE: &[Surface] = &[
    Surface {
        message: names::HTTP_FILTER,
        supported: &[
            "name",
            "typed_config",
            "config_discovery",
            "is_optional",
            "disabled",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.ExtensionConfigSource",
        supported: &[
            "config_source",
            "default_config",
            "apply_default_config_without_warming",
            "type_urls",
        ],
        ignored: &[],
    },
    Surface {
        message: names::FILTER_CONFIG,
        supported: &["config", "is_optional", "disabled"],
        ignored: &[],
    },
    Surface {
        message: names::COMPRESSOR,
        supported: &[],
        ignored: &[
            ("compressor_library", NOT_COMPRESSED),
            ("response_direction_config", NOT_COMPRESSED),
            ("request_direction_config", NOT_COMPRESSED),
        ],
    },
    Surface {
        message: names::FAULT,
        supported: &[
            "delay",
            "abort",
            "upstream_cluster",
            "headers",
            "downstream_nodes",
            "max_active_faults",
            "filter_metadata",
        ],
        ignored: &[
            ("delay_percent_runtime", NO_RUNTIME),
            ("abort_percent_runtime", NO_RUNTIME),
            ("delay_duration_runtime", NO_RUNTIME),
            ("abort_http_status_runtime", NO_RUNTIME),
            ("abort_grpc_status_runtime", NO_RUNTIME),
            ("max_active_faults_runtime", NO_RUNTIME),
            ("response_rate_limit_percent_runtime", NO_RUNTIME),
            (
                "disable_downstream_cluster_stats",
                "per-downstream-cluster fault stats are never emitted",
            ),
        ],
    },
    Surface {
        message: "envoy.extensions.filters.http.fault.v3.FaultAbort",
        supported: &[
            "http_status",
            "grpc_status",
            "header_abort",
            "percentage",
            "response_body",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.common.fault.v3.FaultDelay",
        supported: &["fixed_delay", "header_delay", "percentage"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: names::CORS,
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: names::CORS_POLICY,
        supported: &[
            "allow_origin_string_match",
            "allow_methods",
            "allow_headers",
            "expose_headers",
            "max_age",
            "allow_credentials",
            "filter_enabled",
            "shadow_enabled",
            "allow_private_network_access",
            "forward_not_matching_preflights",
        ],
        ignored: &[],
    },
    Surface {
        message: names::LOCAL_RATELIMIT,
        supported: &[
            "stat_prefix",
            "status",
            "token_bucket",
            "filter_enabled",
            "filter_enforced",
            "request_headers_to_add_when_not_enforced",
            "response_headers_to_add",
            "enable_retry_after_header",
        ],
        ignored: &[
            ("stage", NO_DESCRIPTORS),
            ("always_consume_default_token_bucket", NO_DESCRIPTORS),
            ("max_dynamic_descriptors", NO_DESCRIPTORS),
            ("vh_rate_limits", NO_DESCRIPTORS),
        ],
    },
    Surface {
        message: "envoy.type.v3.TokenBucket",
        supported: &["max_tokens", "tokens_per_fill", "fill_interval"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.v3.HttpStatus",
        supported: &["code"],
        ignored: &[],
    },
    Surface {
        message: names::HEADER_MUTATION,
        supported: &["mutations", "most_specific_header_mutations_wins"],
        ignored: &[],
    },
    Surface {
        message: names::HEADER_MUTATION_PER_ROUTE,
        supported: &["mutations"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.http.header_mutation.v3.Mutations",
        supported: &["request_mutations", "response_mutations"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.common.mutation_rules.v3.HeaderMutation",
        supported: &["remove", "append", "remove_on_match"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.common.mutation_rules.v3.HeaderMutation.RemoveOnMatch",
        supported: &["key_matcher"],
        ignored: &[],
    },
    Surface {
        message: names::GRPC_STATS,
        supported: &[
            "individual_method_stats_allowlist",
            "stats_for_all_methods",
            "enable_upstream_stats",
            "replace_dots_in_grpc_service_name",
        ],
        ignored: &[(
            "emit_filter_state",
            "nothing reads filter state yet (no %FILTER_STATE% command; the message counts \
             are in the cluster's grpc.*_message_count stats)",
        )],
    },
    Surface {
        message: names::GRPC_WEB,
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: names::HTTP_WASM,
        supported: &["config"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.wasm.v3.PluginConfig",
        supported: &[
            "name",
            "root_id",
            "vm_config",
            "configuration",
            "fail_open",
            "failure_policy",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.wasm.v3.VmConfig",
        supported: &[
            "vm_id",
            "runtime",
            "code",
            "configuration",
            "allow_precompiled",
            "nack_on_code_cache_miss",
            "environment_variables",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.wasm.v3.EnvironmentVariables",
        supported: &["host_env_keys", "key_values"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.AsyncDataSource",
        supported: &["local"],
        ignored: &[],
    },
    Surface {
        message: names::ISTIO_ALPN,
        supported: &["alpn_override"],
        ignored: &[],
    },
    Surface {
        message: names::PEER_METADATA,
        supported: &[
            "downstream_discovery",
            "upstream_discovery",
            "downstream_propagation",
            "upstream_propagation",
            "additional_labels",
        ],
        ignored: &[(
            "shared_with_upstream",
            "the peers found are read by this proxy's own filters only",
        )],
    },
    Surface {
        message: "io.istio.http.peer_metadata.Config.DiscoveryMethod",
        supported: &["baggage", "workload_discovery", "istio_headers"],
        ignored: &[],
    },
    Surface {
        message: "io.istio.http.peer_metadata.Config.PropagationMethod",
        supported: &["istio_headers"],
        ignored: &[],
    },
    Surface {
        message: "io.istio.http.peer_metadata.Config.IstioHeaders",
        supported: &["skip_external_clusters"],
        ignored: &[],
    },
    Surface {
        message: "io.istio.http.peer_metadata.Config.Baggage",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "io.istio.http.peer_metadata.Config.WorkloadDiscovery",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: names::ISTIO_AUTHN_POLICY,
        supported: &[
            "policy",
            "skip_validate_trust_domain",
            "allowed_trust_domains",
        ],
        ignored: &[(
            "jwt_output_payload_locations",
            "read only by JWT methods, which are refused",
        )],
    },
    Surface {
        message: "istio.authentication.v1alpha1.Policy",
        supported: &["peers", "peer_is_optional", "principal_binding"],
        ignored: &[
            (
                "targets",
                "istiod has chosen the workloads; the filter ignores them",
            ),
            (
                "origin_is_optional",
                "applies to origins (JWT), which are refused",
            ),
        ],
    },
    Surface {
        message: "istio.authentication.v1alpha1.PeerAuthenticationMethod",
        supported: &["mtls"],
        ignored: &[],
    },
    Surface {
        message: "istio.authentication.v1alpha1.MutualTls",
        supported: &["allow_tls", "mode"],
        ignored: &[],
    },
    Surface {
        message: "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig.AlpnOverride",
        supported: &["upstream_protocol", "alpn_override"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.GrpcMethodList",
        supported: &["services"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.GrpcMethodList.Service",
        supported: &["name", "method_names"],
        ignored: &[],
    },
    Surface {
        message: names::HTTP_RBAC,
        supported: &[
            "rules",
            "shadow_rules",
            "rules_stat_prefix",
            "shadow_rules_stat_prefix",
        ],
        ignored: &[],
    },
    Surface {
        message: names::HTTP_RBAC_PER_ROUTE,
        supported: &["rbac"],
        ignored: &[],
    },
    Surface {
        message: names::CONNECT_AUTHORITY,
        supported: &["enabled", "port"],
        ignored: &[],
    },
    Surface {
        message: names::CONNECT_BAGGAGE,
        supported: &[],
        ignored: &[],
    },
    // Shared building blocks (route tables may use them too).
];

/// `Any` slots: an HTTP filter's `typed_config`, a `FilterConfig`'s `config`.
pub const ANY_SLOTS: &[AnySlot] = &[
    (names::HTTP_FILTER, "HTTP filter", FILTER_TYPES),
    (
        "envoy.config.core.v3.ExtensionConfigSource",
        "HTTP filter",
        FILTER_TYPES,
    ),
    (
        names::FILTER_CONFIG,
        "per-route filter config",
        PER_ROUTE_CONFIG_TYPES,
    ),
    (
        "envoy.extensions.wasm.v3.PluginConfig",
        "Wasm plugin configuration",
        WASM_CONFIGURATION_TYPES,
    ),
    (
        "envoy.extensions.wasm.v3.VmConfig",
        "Wasm VM configuration",
        WASM_CONFIGURATION_TYPES,
    ),
];

/// What a Wasm plugin's `configuration` holds: JSON in a string (Istio 1.5–1.9), Istio 1.19's
/// typed metadata exchange config, or nothing (an empty `Any`).
const WASM_CONFIGURATION_TYPES: &[&str] =
    &["google.protobuf.StringValue", names::METADATA_EXCHANGE, ""];

/// `envoy.filters.http.grpc_web`: no settings.
fn grpc_web(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let _: GrpcWeb = decode(any, site, errors)?;
    Some(HttpFilterKind::GrpcWeb)
}

/// Whether an `http_filters` entry is the router (which the connection manager requires last
/// and runs itself).
pub fn is_router(proto: &HttpFilterProto) -> bool {
    matches!(
        &proto.config_type,
        Some(ConfigType::TypedConfig(any)) if names::type_name(&any.type_url) == names::ROUTER
    )
}

/// One entry of `http_filters` (at `path`), the router excluded; `stat_prefix` is the
/// connection manager's. `None` when the entry is skipped (an `is_optional` filter of an
/// unsupported type, or one of `NOT_RUN`) or after reporting why it is rejected (unsupported types and fields are
/// reported by the walker).
pub(super) fn http_filter(
    proto: &HttpFilterProto,
    path: &str,
    stat_prefix: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilter> {
    let discovered;
    let any = match &proto.config_type {
        Some(ConfigType::TypedConfig(any)) => any,
        Some(ConfigType::ConfigDiscovery(source)) => {
            discovered = discovered_config(proto, source, path, ctx, errors)?;
            &discovered
        }
        None => {
            errors.push(TranslateError::new(path, None, "typed_config is required"));
            return None;
        }
    };
    let type_name = names::type_name(&any.type_url);
    if NOT_RUN.contains(&type_name) {
        return None;
    }
    let Some(factory) = REGISTRY.iter().find(|f| f.config_type == type_name) else {
        if proto.is_optional {
            tracing::warn!(
                filter = %proto.name, type_url = %any.type_url,
                "skipping optional HTTP filter of an unsupported type"
            );
        }
        return None;
    };
    let site = Site {
        path: &format!("{path}.typed_config"),
        type_url: &any.type_url,
    };
    let Some(build) = factory.build else {
        errors.push(site.error("", "the router must be the last HTTP filter"));
        return None;
    };
    if proto.name.is_empty() {
        errors.push(TranslateError::new(
            format!("{path}.name"),
            None,
            "name is required",
        ));
        return None;
    }
    Some(HttpFilter {
        name: proto.name.clone(),
        disabled: proto.disabled,
        kind: build(any, &site, stat_prefix, ctx, errors)?,
    })
}

/// The config of a `config_discovery` filter: the ECDS resource named like the filter, else
/// its `default_config`; of one of its `type_urls`, and walked like an inline config.
fn discovered_config(
    proto: &HttpFilterProto,
    source: &ExtensionConfigSource,
    path: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<Any> {
    let at = format!("{path}.config_discovery");
    let before = errors.len();
    ads_source(
        source.config_source.as_ref(),
        &format!("{at}.config_source"),
        errors,
    );
    if source.type_urls.is_empty() {
        errors.push(TranslateError::new(
            format!("{at}.type_urls"),
            None,
            "at least one type URL is required",
        ));
    }
    let Some(config) = ctx
        .extensions
        .get(&proto.name)
        .or(source.default_config.as_ref())
        .cloned()
    else {
        errors.push(TranslateError::new(
            at,
            None,
            format!(
                "no ECDS config named {:?} (and no default_config): configs are discovered \
                 over ADS only",
                proto.name
            ),
        ));
        return None;
    };
    if !source.type_urls.contains(&config.type_url) {
        errors.push(TranslateError::new(
            at,
            Some(&config.type_url),
            format!(
                "the config's type is not one of type_urls {:?}",
                source.type_urls
            ),
        ));
    }
    let inline = HttpFilterProto {
        name: proto.name.clone(),
        config_type: Some(ConfigType::TypedConfig(config.clone())),
        ..Default::default()
    };
    errors.extend(unsupported_fields(
        &inline,
        &format!("{path}.config_discovery[ECDS {:?}]", proto.name),
        None,
    ));
    (errors.len() == before).then_some(config)
}

/// A `typed_per_filter_config` entry for the filter named `filter_name` (at `path`). As in
/// Envoy, the config's own type picks how it is read; a `FilterConfig` may disable the filter
/// here, enable a `disabled` one, or hold an optional config. `None` after reporting why (types
/// outside `PER_ROUTE_TYPES` are reported by the walker).
pub(super) fn per_route(
    filter_name: &str,
    any: &Any,
    path: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<PerRouteFilter> {
    if names::type_name(&any.type_url) != names::FILTER_CONFIG {
        return per_route_config(filter_name, any, path, false, ctx, errors);
    }
    let site = Site {
        path,
        type_url: &any.type_url,
    };
    let wrapper: FilterConfig = decode(any, &site, errors)?;
    if wrapper.disabled {
        return Some(PerRouteFilter::Disabled);
    }
    match &wrapper.config {
        None => {
            errors.push(site.error("config", "config is required unless disabled"));
            None
        }
        Some(config) if config.type_url.is_empty() => Some(PerRouteFilter::Enabled),
        Some(config) => per_route_config(
            filter_name,
            config,
            &site.path_of("config"),
            wrapper.is_optional,
            ctx,
            errors,
        ),
    }
}

/// A per-route config by its type; an optional one of an unsupported type enables the filter
/// with its own config (Envoy keeps the entry without a config).
fn per_route_config(
    filter_name: &str,
    any: &Any,
    path: &str,
    optional: bool,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<PerRouteFilter> {
    let type_name = names::type_name(&any.type_url);
    let build = REGISTRY
        .iter()
        .filter_map(|f| f.per_route)
        .find(|(t, _)| *t == type_name)
        .map(|(_, build)| build);
    let Some(build) = build else {
        if optional {
            tracing::warn!(
                filter = %filter_name, type_url = %any.type_url,
                "ignoring optional per-route config of an unsupported type"
            );
            return Some(PerRouteFilter::Enabled);
        }
        return None;
    };
    let site = Site {
        path,
        type_url: &any.type_url,
    };
    build(any, &site, ctx, errors)
}

/// Decodes a typed config, reporting a failure at its site.
/// Istio's `istio.stats` (translated as for the network filter).
fn istio_stats(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    crate::translate::istio_stats::stats_config(any, site.path, ctx, errors)
        .map(HttpFilterKind::IstioStats)
}

fn decode<M: prost::Message + Default + prost::Name>(
    any: &Any,
    site: &Site,
    errors: &mut Vec<TranslateError>,
) -> Option<M> {
    proto::decode_any(any)
        .map_err(|e| errors.push(site.error("", e.to_string())))
        .ok()
}

#[cfg(test)]
pub(super) mod tests;
