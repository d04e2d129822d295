//! Translator: `envoy.filters.http.ext_authz` (`ExtAuthz` with a `grpc_service` or an
//! `http_service`) and its per-route `ExtAuthzPerRoute`; the gRPC service and the surface are
//! `translate::ext_authz`'s, the HTTP service `http_service`'s.
use std::sync::Arc;

use envoy_types::pb::{
    envoy::{
        extensions::filters::http::ext_authz::v3::{
            ext_authz::Services, ext_authz_per_route::Override, BufferSettings as BufferProto,
            ExtAuthz, ExtAuthzPerRoute as PerRouteProto,
        },
        r#type::matcher::v3::ListStringMatcher,
    },
    google::protobuf::Any,
};

use super::common::{fractional_percent, status_code, Site};
use crate::translate::{
    ext_authz::{grpc_service, transport_v3},
    matchers::{metadata_matcher, string_matcher},
    TranslateContext, TranslateError,
};
use model::{
    ext_authz::{
        AuthzService, BodyOverride, BodySettings, ExtAuthzPerRoute, HeaderSelection, HttpExtAuthz,
    },
    filter_stats::ExtAuthzStats,
    filters::{HttpFilterKind, PerRouteFilter},
    matchers::StringMatcher,
};

/// The filter in the chain: stats under `http.<stat_prefix>.ext_authz[.<its stat_prefix>]`.
pub(super) fn filter(
    any: &Any,
    site: &Site,
    stat_prefix: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let proto: ExtAuthz = super::decode(any, site, errors)?;
    let before = errors.len();
    let path = site.path_of("");
    let at = site.at(&path);
    transport_v3(proto.transport_api_version, at, errors);
    // A gRPC check carries every header unless `allowed_headers` says.
    let (service, allowed) = match &proto.services {
        Some(Services::HttpService(http)) => (
            http_service::http_service(http, site, errors).map(AuthzService::Http),
            Some(http_service::allowed_headers(&proto, http, site, errors)),
        ),
        grpc => {
            let grpc = match grpc {
                Some(Services::GrpcService(grpc)) => Some(grpc),
                _ => None,
            };
            let service_path = site.path_of("grpc_service");
            let service = grpc_service(grpc, site.at(&service_path), errors);
            let allowed = proto
                .allowed_headers
                .as_ref()
                .map(|l| string_list(l, site, "allowed_headers", errors));
            (service.map(AuthzService::Grpc), allowed)
        }
    };
    let headers = HeaderSelection {
        allowed,
        disallowed: proto
            .disallowed_headers
            .as_ref()
            .map(|l| string_list(l, site, "disallowed_headers", errors))
            .unwrap_or_default(),
    };
    let status_on_error = match &proto.status_on_error {
        None => Some(403),
        Some(s) => status_code(s.code, site, "status_on_error.code", errors),
    };
    let with_request_body = proto
        .with_request_body
        .as_ref()
        .and_then(|b| body_settings(b, site, "with_request_body", errors));
    let filter_enabled = proto.filter_enabled.as_ref().map(|f| {
        let share = f.default_value.unwrap_or_default();
        fractional_percent(&share, site, "filter_enabled.default_value", errors)
    });
    let metadata_path = site.path_of("filter_enabled_metadata");
    let filter_enabled_metadata = proto
        .filter_enabled_metadata
        .as_ref()
        .map(|m| metadata_matcher(m, site.at(&metadata_path), errors));
    if errors.len() != before {
        return None;
    }
    let sub = match proto.stat_prefix.as_str() {
        "" => String::new(),
        sub => format!(".{sub}"),
    };
    let stats = ctx
        .stats
        .scope::<ExtAuthzStats>(format!("http.{stat_prefix}.ext_authz{sub}"));
    Some(HttpFilterKind::ExtAuthz(Arc::new(HttpExtAuthz {
        service: service?,
        failure_mode_allow: proto.failure_mode_allow,
        failure_mode_allow_header_add: proto.failure_mode_allow_header_add,
        status_on_error: status_on_error?,
        with_request_body,
        include_peer_certificate: proto.include_peer_certificate,
        include_tls_session: proto.include_tls_session,
        filter_enabled,
        filter_enabled_metadata: filter_enabled_metadata.flatten(),
        ingest_metadata: proto
            .enable_dynamic_metadata_ingestion
            .is_none_or(|b| b.value),
        deny_at_disable: proto
            .deny_at_disable
            .is_some_and(|f| f.default_value.is_some_and(|v| v.value)),
        headers,
        max_denied_body: (proto.max_denied_response_body_bytes > 0)
            .then_some(proto.max_denied_response_body_bytes as usize),
        stats,
    })))
}

/// `ExtAuthzPerRoute`: `disabled: true` turns the filter off here; `check_settings` carries
/// context extensions and a body buffering override (and enables a `disabled` filter).
pub(super) fn per_route(
    any: &Any,
    site: &Site,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<PerRouteFilter> {
    let proto: PerRouteProto = super::decode(any, site, errors)?;
    let settings = match proto.r#override {
        None => {
            errors.push(site.error("", "one of disabled or check_settings is required"));
            return None;
        }
        Some(Override::Disabled(true)) => return Some(PerRouteFilter::Disabled),
        Some(Override::Disabled(false)) => Default::default(),
        Some(Override::CheckSettings(settings)) => settings,
    };
    let body = match (
        settings.disable_request_body_buffering,
        &settings.with_request_body,
    ) {
        (true, Some(_)) => {
            errors.push(site.error(
                "check_settings",
                "only one of disable_request_body_buffering and with_request_body may be set",
            ));
            return None;
        }
        (true, None) => BodyOverride::Disabled,
        (false, Some(b)) => BodyOverride::Settings(body_settings(
            b,
            site,
            "check_settings.with_request_body",
            errors,
        )?),
        (false, None) => BodyOverride::Inherit,
    };
    let mut context_extensions: Vec<_> = settings.context_extensions.into_iter().collect();
    context_extensions.sort();
    Some(PerRouteFilter::ExtAuthz(Arc::new(ExtAuthzPerRoute {
        context_extensions,
        body,
    })))
}

/// `BufferSettings` (at `field`): `max_request_bytes` must be positive (Envoy's rule).
fn body_settings(
    proto: &BufferProto,
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<BodySettings> {
    if proto.max_request_bytes == 0 {
        let field = format!("{field}.max_request_bytes");
        errors.push(site.error(&field, "must be greater than 0"));
        return None;
    }
    Some(BodySettings {
        max_request_bytes: proto.max_request_bytes,
        allow_partial_message: proto.allow_partial_message,
        pack_as_bytes: proto.pack_as_bytes,
    })
}

/// A `ListStringMatcher`'s patterns (header names, matched lower-case).
fn string_list(
    proto: &ListStringMatcher,
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> Vec<StringMatcher> {
    proto
        .patterns
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let path = site.path_of(&format!("{field}.patterns[{i}]"));
            string_matcher(p, site.at(&path), errors)
        })
        .collect()
}

mod http_service;
#[cfg(test)]
mod tests;
