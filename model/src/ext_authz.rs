//! Domain model: external authorization — `envoy.filters.http.ext_authz` and
//! `envoy.filters.network.ext_authz` as shards run them: the authorization service each calls
//! (`envoy.service.auth.v3.Authorization/Check` over gRPC, or for the HTTP filter a plain HTTP
//! service), what the check request carries and what a verdict does.
use std::{sync::Arc, time::Duration};

use crate::{
    filter_stats::{ExtAuthzStats, NetworkExtAuthzStats},
    filters::FractionalPercent,
    matchers::StringMatcher,
    metadata::MetadataMatcher,
};

/// Envoy's default `grpc_service.timeout` for a check.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

/// An `envoy_grpc` authorization service: the cluster its calls go to (over HTTP/2, through the
/// shard's own upstream pools), the `:authority` they carry, how long one may take and the
/// metadata (headers) every call carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcService {
    pub cluster: String,
    /// `envoy_grpc.authority`, else the cluster's name (Envoy's default).
    pub authority: String,
    /// `None`: no deadline (`timeout: 0s`).
    pub timeout: Option<Duration>,
    /// `initial_metadata`: lower-case names.
    pub initial_metadata: Vec<(String, String)>,
}

/// The service an HTTP filter asks.
#[derive(Debug, Clone)]
pub enum AuthzService {
    Grpc(GrpcService),
    Http(HttpService),
}

/// `http_service`: each check is the request's method and path (under `path_prefix`, or
/// `path_override`) sent to `server_uri.cluster` with the headers the filter selects and the
/// body it read; a 200 answer allows, a 5xx or no answer is an error, any other status denies.
/// Which of the answer's headers go where is chosen by name.
#[derive(Debug, Clone)]
pub struct HttpService {
    pub cluster: String,
    /// `server_uri.timeout` (`None`: `0s`, no deadline).
    pub timeout: Option<Duration>,
    pub path: CheckPath,
    /// `authorization_request.headers_to_add`: set on every check (lower-case names).
    pub headers_to_add: Vec<(String, String)>,
    /// `allowed_upstream_headers`: an allowing answer's headers set on the request.
    pub upstream: Vec<StringMatcher>,
    /// `allowed_upstream_headers_to_append`: ... added to the request (another line).
    pub upstream_to_append: Vec<StringMatcher>,
    /// `allowed_client_headers`: a denying answer's headers the client gets.
    pub client: ClientHeaders,
    /// `allowed_client_headers_on_success`: an allowing answer's headers added to the response.
    pub client_on_success: Vec<StringMatcher>,
    /// `dynamic_metadata_from_headers`: either answer's headers that become dynamic metadata.
    pub metadata: Vec<StringMatcher>,
}

/// The path a check asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckPath {
    /// `path_prefix` (maybe empty) before the request's path and query.
    Prefix(String),
    /// `path_override`: this path for every check.
    Override(String),
}

/// Which of a denying answer's headers reach the client.
#[derive(Debug, Clone)]
pub enum ClientHeaders {
    /// No `allowed_client_headers`: every header but `host`.
    AllButHost,
    /// The list, and `:status`, `content-length`, `www-authenticate` and `location` (Envoy's
    /// defaults, as exact names).
    Listed(Vec<StringMatcher>),
}

impl ClientHeaders {
    pub fn includes(&self, name: &[u8]) -> bool {
        match self {
            ClientHeaders::AllButHost => name != b"host",
            ClientHeaders::Listed(list) => list.iter().any(|m| m.matches(name)),
        }
    }
}

/// `with_request_body`: the request body goes into the check (buffered first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodySettings {
    pub max_request_bytes: u32,
    /// A body larger than `max_request_bytes` is checked by its first bytes; else it is
    /// answered 413.
    pub allow_partial_message: bool,
    /// The body goes as `raw_body` (bytes) instead of `body` (a string).
    pub pack_as_bytes: bool,
}

/// Which request headers go into the check (`allowed_headers` / `disallowed_headers`).
#[derive(Debug, Default)]
pub struct HeaderSelection {
    /// `None`: every header.
    pub allowed: Option<Vec<StringMatcher>>,
    pub disallowed: Vec<StringMatcher>,
}

impl HeaderSelection {
    /// Whether the (lower-case) header `name` goes into the check.
    pub fn includes(&self, name: &[u8]) -> bool {
        let allowed = self
            .allowed
            .as_ref()
            .is_none_or(|list| list.iter().any(|m| m.matches(name)));
        allowed && !self.disallowed.iter().any(|m| m.matches(name))
    }
}

/// `envoy.filters.http.ext_authz` in a chain.
#[derive(Debug)]
pub struct HttpExtAuthz {
    pub service: AuthzService,
    /// An error (no answer, a failed call) lets the request through.
    pub failure_mode_allow: bool,
    /// ... and marks it `x-envoy-auth-failure-mode-allowed: true`.
    pub failure_mode_allow_header_add: bool,
    /// The status of a request refused on an error (default 403).
    pub status_on_error: u16,
    pub with_request_body: Option<BodySettings>,
    pub include_peer_certificate: bool,
    /// The connection's SNI goes into the check (`tls_session`).
    pub include_tls_session: bool,
    /// `filter_enabled`: the share of requests checked (`None`: all).
    pub filter_enabled: Option<FractionalPercent>,
    /// `filter_enabled_metadata`: only requests whose dynamic metadata (what filters before
    /// this one wrote) matches are checked.
    pub filter_enabled_metadata: Option<MetadataMatcher>,
    /// `enable_dynamic_metadata_ingestion`: the service's `dynamic_metadata` becomes the
    /// stream's (namespace `envoy.filters.http.ext_authz`).
    pub ingest_metadata: bool,
    /// `deny_at_disable`: a request the filter is not enabled for is refused.
    pub deny_at_disable: bool,
    pub headers: HeaderSelection,
    /// `max_denied_response_body_bytes`: a denied response's body is cut to this (`None`: kept).
    pub max_denied_body: Option<usize>,
    /// `http.<prefix>.ext_authz[.<stat_prefix>].*`
    pub stats: Arc<ExtAuthzStats>,
}

/// `ExtAuthzPerRoute.check_settings` (its `disabled: true` is `PerRouteFilter::Disabled`).
#[derive(Debug, Default)]
pub struct ExtAuthzPerRoute {
    /// `context_extensions`, merged over the less specific level's.
    pub context_extensions: Vec<(String, String)>,
    pub body: BodyOverride,
}

/// What a route says of request body buffering.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum BodyOverride {
    /// The filter's `with_request_body`.
    #[default]
    Inherit,
    /// `disable_request_body_buffering`.
    Disabled,
    /// `check_settings.with_request_body`.
    Settings(BodySettings),
}

/// `envoy.filters.network.ext_authz`: one check per connection, before its terminal filter.
#[derive(Debug)]
pub struct NetworkExtAuthz {
    pub service: GrpcService,
    pub failure_mode_allow: bool,
    pub include_peer_certificate: bool,
    pub include_tls_session: bool,
    /// `<stat_prefix>.ext_authz.*`
    pub stats: Arc<NetworkExtAuthzStats>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::StringPattern;

    #[test]
    fn headers_are_selected_by_both_lists() {
        let m = |p: &str| StringMatcher::new(StringPattern::Prefix(p.as_bytes().into()), false);
        let all = HeaderSelection::default();
        assert!(all.includes(b"x-a"));
        let some = HeaderSelection {
            allowed: Some(vec![m("x-")]),
            disallowed: vec![m("x-secret")],
        };
        assert!(some.includes(b"x-a"));
        assert!(!some.includes(b"x-secret-key"));
        assert!(!some.includes(b"cookie"));
    }
}
