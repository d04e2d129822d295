//! Translator: `envoy.filters.http.ext_authz`'s `http_service` — the HTTP authorization service
//! (`server_uri`, the check's path, `authorization_request.headers_to_add`, which of the
//! answer's headers go where) and the request headers its checks carry.
use envoy_types::pb::envoy::{
    config::core::v3::http_uri::HttpUpstreamType,
    extensions::filters::http::ext_authz::v3::{ExtAuthz, HttpService as HttpServiceProto},
    r#type::matcher::v3::ListStringMatcher,
};

use super::string_list;
use crate::translate::{
    duration,
    http_filters::common::{header_value, modifiable_header_name, Site},
    TranslateError,
};
use model::{
    ext_authz::{CheckPath, ClientHeaders, HttpService},
    matchers::{StringMatcher, StringPattern},
    route::HeaderValue,
};

/// The request headers every HTTP check carries besides the allowed ones (Envoy's rule).
const ALWAYS_SENT: &[&str] = &["authorization", ":method", ":path", ":authority"];
/// The headers of a denying answer the client gets besides `allowed_client_headers`.
const ALWAYS_TO_CLIENT: &[&str] = &[":status", "content-length", "www-authenticate", "location"];

/// `http_service` (at `http_service`).
pub(super) fn http_service(
    proto: &HttpServiceProto,
    site: &Site,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpService> {
    let before = errors.len();
    let uri = proto.server_uri.as_ref();
    if uri.is_none_or(|u| u.uri.is_empty()) {
        errors.push(site.error("http_service.server_uri.uri", "uri is required"));
    }
    let cluster = match uri.and_then(|u| u.http_upstream_type.as_ref()) {
        Some(HttpUpstreamType::Cluster(name)) if !name.is_empty() => Some(name.clone()),
        _ => {
            errors.push(site.error("http_service.server_uri.cluster", "cluster is required"));
            None
        }
    };
    let timeout_path = site.path_of("http_service.server_uri.timeout");
    let timeout = match uri.and_then(|u| u.timeout.as_ref()) {
        Some(t) => duration(t, &timeout_path, Some(site.type_url), errors),
        None => {
            errors.push(site.error("http_service.server_uri.timeout", "timeout is required"));
            None
        }
    };
    let path = match (proto.path_prefix.as_str(), proto.path_override.as_str()) {
        (prefix, "") => Some(CheckPath::Prefix(prefix.to_string())),
        ("", path) => Some(CheckPath::Override(path.to_string())),
        _ => {
            let message = "only one of path_prefix and path_override may be set";
            errors.push(site.error("http_service.path_override", message));
            None
        }
    };
    let request = proto.authorization_request.as_ref();
    let headers_to_add = request.map_or(Some(Vec::new()), |r| {
        let before = errors.len();
        let adds: Vec<_> = r
            .headers_to_add
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let field = format!("http_service.authorization_request.headers_to_add[{i}]");
                header_to_add(&h.key, &h.value, site, &field, errors)
            })
            .collect();
        (errors.len() == before).then_some(adds)
    });
    let response = proto.authorization_response.clone().unwrap_or_default();
    let list = |list: &Option<ListStringMatcher>, field: &str, errors: &mut _| {
        let field = format!("http_service.authorization_response.{field}");
        list.as_ref()
            .map(|l| string_list(l, site, &field, errors))
            .unwrap_or_default()
    };
    let upstream = list(
        &response.allowed_upstream_headers,
        "allowed_upstream_headers",
        errors,
    );
    let upstream_to_append = list(
        &response.allowed_upstream_headers_to_append,
        "allowed_upstream_headers_to_append",
        errors,
    );
    let client = match &response.allowed_client_headers {
        None => ClientHeaders::AllButHost,
        Some(_) => {
            let mut listed = list(
                &response.allowed_client_headers,
                "allowed_client_headers",
                errors,
            );
            listed.extend(exact(ALWAYS_TO_CLIENT));
            ClientHeaders::Listed(listed)
        }
    };
    let client_on_success = list(
        &response.allowed_client_headers_on_success,
        "allowed_client_headers_on_success",
        errors,
    );
    let metadata = list(
        &response.dynamic_metadata_from_headers,
        "dynamic_metadata_from_headers",
        errors,
    );
    if errors.len() != before {
        return None;
    }
    Some(HttpService {
        cluster: cluster?,
        timeout: Some(timeout?).filter(|t| !t.is_zero()),
        path: path?,
        headers_to_add: headers_to_add?,
        upstream,
        upstream_to_append,
        client,
        client_on_success,
        metadata,
    })
}

/// The request headers an HTTP check may carry: `allowed_headers` (or the deprecated
/// `authorization_request.allowed_headers`; not both) and always `authorization` and the
/// method, path and authority; without either list only those.
pub(super) fn allowed_headers(
    proto: &ExtAuthz,
    http: &HttpServiceProto,
    site: &Site,
    errors: &mut Vec<TranslateError>,
) -> Vec<StringMatcher> {
    #[allow(deprecated)]
    let deprecated = http
        .authorization_request
        .as_ref()
        .and_then(|r| r.allowed_headers.as_ref());
    let listed = match (&proto.allowed_headers, deprecated) {
        (Some(_), Some(_)) => {
            let field = "http_service.authorization_request.allowed_headers";
            errors.push(site.error(field, "only one of it and allowed_headers may be set"));
            Vec::new()
        }
        (Some(list), None) => string_list(list, site, "allowed_headers", errors),
        (None, Some(list)) => string_list(
            list,
            site,
            "http_service.authorization_request.allowed_headers",
            errors,
        ),
        (None, None) => Vec::new(),
    };
    listed.into_iter().chain(exact(ALWAYS_SENT)).collect()
}

/// Exact matchers for `names`.
fn exact(names: &'static [&'static str]) -> impl Iterator<Item = StringMatcher> {
    names
        .iter()
        .map(|n| StringMatcher::new(StringPattern::Exact(n.as_bytes().into()), false))
}

/// One `authorization_request.headers_to_add` entry (at `field`): a header that may be
/// modified, with a literal value (`%COMMAND%` values are not implemented for checks).
fn header_to_add(
    key: &str,
    value: &str,
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<(String, String)> {
    let name = modifiable_header_name(key, site, &format!("{field}.key"), errors);
    let value_field = format!("{field}.value");
    let value = match header_value(value, site, &value_field, errors)? {
        HeaderValue::Literal(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        HeaderValue::Formatted(_) => {
            let message = "%COMMAND% values are not implemented for check requests";
            errors.push(site.error(&value_field, message));
            return None;
        }
    };
    Some((name?, value))
}
