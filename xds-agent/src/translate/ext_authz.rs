//! Translator: what the `ext_authz` filters share — the gRPC authorization service
//! (`GrpcService` with `envoy_grpc`), the transport version (V3 only) — the network filter
//! (`envoy.filters.network.ext_authz`) itself, and both filters' surface (the HTTP filter's
//! `http_service` included). The HTTP filter is `http_filters::ext_authz`.
use std::sync::Arc;

use envoy_types::pb::envoy::{
    config::core::v3::{grpc_service::TargetSpecifier, ApiVersion, GrpcService as GrpcProto},
    extensions::filters::network::ext_authz::v3::ExtAuthz as NetworkProto,
};

use super::{duration, matchers::At, surface::Surface, TranslateError};
use crate::names;
use model::{
    ext_authz::{GrpcService, NetworkExtAuthz, DEFAULT_TIMEOUT},
    filter_stats::NetworkExtAuthzStats,
    stats::StatsRegistry,
    ConnectionFilter,
};

/// Why the route cluster's ext_authz stats are not charged.
const NOT_CHARGED: &str = "the routed cluster's ext_authz.* and upstream_rq_<code> counters are \
                           not charged for checks (the filter's own stats are)";

/// The surface of both filters' configs (what the walker lets through).
pub const SURFACE: &[Surface] = &[
    Surface {
        message: names::HTTP_EXT_AUTHZ,
        supported: &[
            "grpc_service",
            "http_service",
            "transport_api_version",
            "failure_mode_allow",
            "failure_mode_allow_header_add",
            "with_request_body",
            "status_on_error",
            "stat_prefix",
            "include_peer_certificate",
            "include_tls_session",
            "filter_enabled",
            "deny_at_disable",
            "allowed_headers",
            "disallowed_headers",
            "max_denied_response_body_bytes",
            "filter_enabled_metadata",
            "enable_dynamic_metadata_ingestion",
        ],
        ignored: &[("charge_cluster_response_stats", NOT_CHARGED)],
    },
    Surface {
        message: "envoy.extensions.filters.http.ext_authz.v3.HttpService",
        supported: &[
            "server_uri",
            "path_prefix",
            "path_override",
            "authorization_request",
            "authorization_response",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.HttpUri",
        supported: &["uri", "cluster", "timeout"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.http.ext_authz.v3.AuthorizationRequest",
        supported: &["allowed_headers", "headers_to_add"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.http.ext_authz.v3.AuthorizationResponse",
        supported: &[
            "allowed_upstream_headers",
            "allowed_upstream_headers_to_append",
            "allowed_client_headers",
            "allowed_client_headers_on_success",
            "dynamic_metadata_from_headers",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.http.ext_authz.v3.BufferSettings",
        supported: &[
            "max_request_bytes",
            "allow_partial_message",
            "pack_as_bytes",
        ],
        ignored: &[],
    },
    Surface {
        message: names::HTTP_EXT_AUTHZ_PER_ROUTE,
        supported: &["disabled", "check_settings"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.filters.http.ext_authz.v3.CheckSettings",
        supported: &[
            "context_extensions",
            "disable_request_body_buffering",
            "with_request_body",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.core.v3.RuntimeFeatureFlag",
        supported: &["default_value"],
        ignored: &[("runtime_key", "no runtime: the configured value applies")],
    },
    Surface {
        message: names::NETWORK_EXT_AUTHZ,
        supported: &[
            "stat_prefix",
            "grpc_service",
            "failure_mode_allow",
            "include_peer_certificate",
            "include_tls_session",
            "transport_api_version",
        ],
        ignored: &[],
    },
];

/// A filter's `grpc_service` (at `at`): its `envoy_grpc` cluster and authority, `timeout`
/// (Envoy's 200 ms when unset; `0s`: none) and `initial_metadata`.
pub(super) fn grpc_service(
    proto: Option<&GrpcProto>,
    at: At,
    errors: &mut Vec<TranslateError>,
) -> Option<GrpcService> {
    let Some(proto) = proto else {
        errors.push(at.error("", "grpc_service is required"));
        return None;
    };
    // google_grpc is refused by the walker.
    let Some(TargetSpecifier::EnvoyGrpc(grpc)) = &proto.target_specifier else {
        errors.push(at.error("envoy_grpc", "envoy_grpc is required"));
        return None;
    };
    if grpc.cluster_name.is_empty() {
        errors.push(at.error("envoy_grpc.cluster_name", "cluster_name is required"));
        return None;
    }
    let timeout = match &proto.timeout {
        None => Some(DEFAULT_TIMEOUT),
        Some(t) => Some(duration(t, &at.below("timeout"), at.type_url, errors)?),
    }
    .filter(|t| !t.is_zero());
    let before = errors.len();
    let initial_metadata = proto
        .initial_metadata
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let name = h.key.to_ascii_lowercase();
            let valid = !name.is_empty()
                && !name.starts_with(':')
                && name.bytes().all(super::route::is_token_byte)
                && !h.value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
            if !valid {
                let field = format!("initial_metadata[{i}]");
                errors.push(at.error(&field, "not a valid header name and value"));
            }
            valid.then(|| (name, h.value.clone()))
        })
        .collect();
    (errors.len() == before).then(|| GrpcService {
        authority: match grpc.authority.as_str() {
            "" => grpc.cluster_name.clone(),
            authority => authority.to_string(),
        },
        cluster: grpc.cluster_name.clone(),
        timeout,
        initial_metadata,
    })
}

/// `transport_api_version`: V3 (or unset, which Envoy reads as V3); V2 is gone from Envoy.
pub(super) fn transport_v3(version: i32, at: At, errors: &mut Vec<TranslateError>) {
    if !matches!(
        ApiVersion::try_from(version),
        Ok(ApiVersion::Auto | ApiVersion::V3)
    ) {
        errors.push(at.error(
            "transport_api_version",
            "only V3 is supported (envoy.service.auth.v3.Authorization)",
        ));
    }
}

/// `envoy.filters.network.ext_authz` (its `stat_prefix` checked by the caller): stats under
/// `ext_authz.<stat_prefix>.` (Envoy 1.40's names).
pub(super) fn network_filter(
    proto: NetworkProto,
    at: At,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Option<ConnectionFilter> {
    transport_v3(proto.transport_api_version, at, errors);
    let service = grpc_service(
        proto.grpc_service.as_ref(),
        At {
            path: &at.below("grpc_service"),
            ..at
        },
        errors,
    );
    Some(ConnectionFilter::ExtAuthz(Arc::new(NetworkExtAuthz {
        service: service?,
        failure_mode_allow: proto.failure_mode_allow,
        include_peer_certificate: proto.include_peer_certificate,
        include_tls_session: proto.include_tls_session,
        stats: stats.scope::<NetworkExtAuthzStats>(format!("ext_authz.{}", proto.stat_prefix)),
    })))
}

#[cfg(test)]
mod tests;
