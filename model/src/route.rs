//! Domain model: route tables (`RouteConfiguration`) — virtual hosts, routes, actions, header
//! mutations and retry policies, compiled (regexes built, indexes made) by the translator.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use super::{
    access_log::{Format, FormatError},
    filters::PerRouteFilters,
    subset::MetadataMatch,
    ClusterRef, WeightedClusters,
};

pub use crate::route_match::{
    PathMatch, QueryParameterMatcher, RegexRewrite, RouteIndex, RouteMatcher, VirtualHostIndex,
};

/// What route matching reads from a request. Names are lower-case; a header with several
/// values matches on its first.
pub trait RouteRequest {
    fn method(&self) -> &[u8];
    /// Path with query, after the connection manager's normalisation.
    fn path(&self) -> &[u8];
    fn header(&self, lowercase_name: &str) -> Option<&[u8]>;
    /// The connection's client certificate (`tls_context` matches); a request read without
    /// its connection has none.
    fn client_certificate(&self) -> ClientCertificateState {
        ClientCertificateState::default()
    }
}

/// Whether a connection's client presented a certificate, and whether it was validated. A
/// plaintext connection has neither. (rustls asks for a certificate only to validate it, and
/// refuses the handshake when it does not validate, so here a presented one is validated.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCertificateState {
    pub presented: bool,
    pub validated: bool,
}

#[derive(Debug)]
pub struct RouteConfig {
    pub name: String,
    pub config_hash: u64,
    pub virtual_hosts: Vec<VirtualHost>,
    /// Domain index over `virtual_hosts` (exact, suffix, prefix wildcards, `*`).
    pub vhost_index: VirtualHostIndex,
    /// Route-config level header mutations (applied last, i.e. least specific first unless
    /// `most_specific_header_mutations_wins`).
    pub headers: HeaderMutations,
    pub most_specific_header_mutations_wins: bool,
    /// `internal_only_headers`: removed from requests from external clients.
    pub internal_only_headers: Vec<String>,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    /// Index over `routes`: plain `path`/`prefix` routes looked up without a scan, the rest
    /// in order; the first route in config order that matches wins.
    pub route_index: RouteIndex,
    pub headers: HeaderMutations,
    /// The virtual host's `retry_policy` (already copied into each route that has none).
    pub retry_policy: Option<Arc<RetryPolicy>>,
    pub per_filter: PerRouteFilters,
    /// `require_tls`: plain-HTTP requests get a 301 to `https://` (see
    /// `route_match::https_redirect_location`) instead of a route.
    pub require_tls: TlsRequirement,
    /// `include_request_attempt_count`: upstream requests carry `x-envoy-attempt-count`.
    pub attempt_count_to_upstream: bool,
    /// `include_attempt_count_in_response`: so do responses to the client.
    pub attempt_count_in_response: bool,
}

/// `VirtualHost.require_tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRequirement {
    None,
    /// Only requests without `x-envoy-internal: true` are redirected.
    ExternalOnly,
    All,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatcher,
    pub action: RouteAction,
    pub headers: HeaderMutations,
    pub per_filter: PerRouteFilters,
    /// `decorator`: the name of the spans of requests on this route.
    pub decorator: Option<Decorator>,
}

/// A route's `decorator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decorator {
    pub operation: String,
    /// `propagate` (default true): egress requests carry the operation upstream in
    /// `x-envoy-decorator-operation`, ingress responses back downstream.
    pub propagate: bool,
}

/// Routes are built once per table and read in place on every request: boxing the large
/// variant would add a pointer chase per request to save memory of a few hundred routes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RouteAction {
    Forward(Forward),
    Redirect(Redirect),
    DirectResponse(DirectResponse),
}

#[derive(Debug)]
pub enum ClusterSpecifier {
    Name(ClusterRef),
    Weighted(WeightedRoute),
    /// Cluster named by this request header (lower-case); missing header → 503 (NC).
    Header(String),
}

/// `weighted_clusters` with each cluster's own header mutations (`headers[i]` for the `i`th
/// cluster; applied before the route's).
#[derive(Debug)]
pub struct WeightedRoute {
    pub clusters: WeightedClusters,
    pub headers: Vec<HeaderMutations>,
    /// `header_name` (`random_value_specifier`): the request header (lower-case) whose value,
    /// an unsigned number, picks the cluster instead of a random one, so proxies in a chain
    /// pick alike; a missing or unreadable value falls back to a random one.
    pub random_header: Option<String>,
    /// `metadata_match[i]`: the `i`th cluster's subset criteria (its own merged over the
    /// route's, else the route's).
    pub metadata_match: Vec<Option<Arc<MetadataMatch>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    None,
    Literal(String),
    /// `auto_host_rewrite`: the upstream host's address (hostname for DNS clusters).
    Auto,
}

#[derive(Debug)]
pub struct Forward {
    pub cluster: ClusterSpecifier,
    /// `cluster_not_found_response_code`: the status when the named cluster does not exist at
    /// request time (only possible with `cluster_header` or `validate_clusters: false`);
    /// 503 by default, or 404 / 500.
    pub cluster_not_found_status: u16,
    /// `prefix_rewrite`: replaces the matched prefix (prefix / path_separated_prefix routes),
    /// the whole path (path routes) or the path before the query (regex routes).
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`: every match of the pattern in the path (not the query) → substitution.
    pub regex_rewrite: Option<RegexRewrite>,
    pub host_rewrite: HostRewrite,
    /// Whole-response timeout; `None` = disabled (`0s`). Envoy's default is 15 s.
    pub timeout: Option<Duration>,
    /// Per-stream idle timeout overriding the connection manager's `stream_idle_timeout`:
    /// `None` = not set, `Some(None)` = disabled (`0s`).
    pub idle_timeout: Option<Option<Duration>>,
    /// How a gRPC request's `grpc-timeout` replaces `timeout`, when the route says so.
    pub grpc_timeout: Option<GrpcTimeout>,
    /// The route's policy, else the virtual host's.
    pub retry_policy: Option<Arc<RetryPolicy>>,
    /// The route's mirror policies, else the virtual host's, else the route config's. A
    /// mirrored request's host gets Envoy's `-shadow` suffix.
    pub mirrors: Vec<Mirror>,
    /// Upgrade types (lower-case) enabled or disabled for this route, overriding the
    /// connection manager (see `HttpConnectionManager::upgrade_allowed`).
    pub upgrades: Vec<(String, bool)>,
    /// The route's CONNECT upgrade has a `connect_config`: a CONNECT request is terminated
    /// here (its stream's bytes relayed over a TCP connection to a host of the cluster)
    /// instead of forwarded.
    pub terminates_connect: bool,
    /// `hash_policy`: what a consistent-hash cluster's balancer hashes.
    pub hash_policy: crate::hash_policy::HashPolicies,
    /// `metadata_match` under `envoy.lb`: the subset a subset-balanced cluster picks from.
    pub metadata_match: Option<Arc<MetadataMatch>>,
}

/// `max_stream_duration.grpc_timeout_header_max` / `grpc_timeout_header_offset` (or the
/// deprecated `max_grpc_timeout` / `grpc_timeout_offset`): a gRPC request runs for its
/// `grpc-timeout` (none: no limit) less `offset`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcTimeout {
    /// `None`: no cap (`0s`).
    pub max: Option<Duration>,
    pub offset: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub cluster: ClusterRef,
    /// Share of requests mirrored, in millionths (`runtime_fraction`; default all).
    pub per_million: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// Default 1.
    pub num_retries: u32,
    /// `None` = the route's timeout bounds every try.
    pub per_try_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    /// Back-off base and cap (Envoy: 25 ms and 10× base).
    pub back_off_base: Duration,
    pub back_off_max: Duration,
    /// `envoy.retry_host_predicates.previous_hosts`: retries avoid hosts already tried.
    pub previous_hosts: bool,
    /// How many times host selection is retried to satisfy `previous_hosts` (default 1).
    pub host_selection_retry_max_attempts: u32,
}

/// `retry_on` conditions as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(pub u32);

impl RetryOn {
    pub const FIVE_XX: Self = Self(1);
    pub const GATEWAY_ERROR: Self = Self(1 << 1);
    pub const RESET: Self = Self(1 << 2);
    pub const CONNECT_FAILURE: Self = Self(1 << 3);
    pub const RETRIABLE_4XX: Self = Self(1 << 4);
    pub const REFUSED_STREAM: Self = Self(1 << 5);
    pub const RETRIABLE_STATUS_CODES: Self = Self(1 << 6);
    /// gRPC statuses in a (trailers-only) response head: `cancelled`, `deadline-exceeded`,
    /// `internal`, `resource-exhausted`, `unavailable`.
    pub const GRPC_CANCELLED: Self = Self(1 << 7);
    pub const GRPC_DEADLINE_EXCEEDED: Self = Self(1 << 8);
    pub const GRPC_INTERNAL: Self = Self(1 << 9);
    pub const GRPC_RESOURCE_EXHAUSTED: Self = Self(1 << 10);
    pub const GRPC_UNAVAILABLE: Self = Self(1 << 11);

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

#[derive(Debug)]
pub struct Redirect {
    /// `https_redirect` / `scheme_redirect`; `None` keeps the request's scheme.
    pub scheme: Option<String>,
    /// `host_redirect`; `None` keeps the request's authority.
    pub host: Option<String>,
    /// `port_redirect`; replaces the authority's port.
    pub port: Option<u16>,
    pub path: RedirectPath,
    /// 301 (default), 302, 303, 307, 308.
    pub status: u16,
    /// Drops the query (unless `path_redirect` carries its own).
    pub strip_query: bool,
}

#[derive(Debug)]
pub enum RedirectPath {
    Keep,
    /// `path_redirect`: replaces the path; the request's query is kept unless this has one.
    Path(String),
    /// `prefix_rewrite`: replaces the matched prefix.
    Prefix(String),
    /// `regex_rewrite` over the path before the query.
    Regex(RegexRewrite),
}

#[derive(Debug)]
pub struct DirectResponse {
    pub status: u16,
    pub body: Option<bytes::Bytes>,
}

/// Headers to add and remove at one level (route config, virtual host, route).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeaderMutations {
    pub request_add: Vec<HeaderAdd>,
    /// Lower-case.
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderAdd>,
    /// Lower-case.
    pub response_remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderAdd {
    /// Lower-case. `Bytes`, as the value: a request takes them without copying.
    pub name: Bytes,
    pub value: HeaderValue,
    pub action: AppendAction,
    /// `keep_empty_value`: add even when the value is empty.
    pub keep_empty: bool,
}

/// A header value to add: Envoy's `%COMMAND%` format, compiled once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// A value without a command (`%%` already turned into `%`): each request takes the
    /// snapshot's bytes without copying them.
    Literal(Bytes),
    /// A value with commands, rendered for each stream (a command without a value renders
    /// nothing, as Envoy's header formatters).
    Formatted(Arc<Format>),
}

impl HeaderValue {
    /// Compiles `value`, checking every command.
    pub fn compile(value: &str) -> Result<Self, FormatError> {
        let format = Format::compile(value)?;
        Ok(match format.literal() {
            Some(text) => Self::Literal(Bytes::copy_from_slice(text.as_bytes())),
            None => Self::Formatted(Arc::new(format.omitting_empty())),
        })
    }
}

impl From<&str> for HeaderValue {
    /// A literal value, as it is.
    fn from(value: &str) -> Self {
        Self::Literal(Bytes::copy_from_slice(value.as_bytes()))
    }
}

/// `HeaderValueOption.append_action` (and the deprecated `append` mapped onto it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}
