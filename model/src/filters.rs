//! Domain model: HTTP filter configs (the chain before the router) and per-route overrides
//! (`typed_per_filter_config`), as shards run them.
//!
//! Strings that shards put on the wire are `String`s, copied into a stream's heads when used
//! (a shard-local allocation): a `Bytes` shared by every shard would bounce its reference
//! count between cores on each clone.
pub mod token_bucket;

use std::{sync::Arc, time::Duration};

use self::{
    super::matchers::{HeaderMatcher, StringMatcher},
    token_bucket::TokenBucket,
};
use super::route::HeaderAdd;
use crate::{
    filter_stats::{CorsStats, FaultStats, LocalRateLimitStats},
    rbac::{RbacFilter, RbacRules},
};

/// One configured HTTP filter: its config name (what `typed_per_filter_config` keys on) and
/// what it does.
#[derive(Debug)]
pub struct HttpFilter {
    pub name: String,
    /// `disabled`: the filter runs only where a route or virtual host enables it (any
    /// `typed_per_filter_config` entry for it that is not `FilterConfig { disabled: true }`).
    pub disabled: bool,
    pub kind: HttpFilterKind,
}

#[derive(Debug)]
pub enum HttpFilterKind {
    Fault(FaultFilter),
    /// The CORS filter has no config of its own: policies come per route / virtual host.
    Cors(Arc<CorsStats>),
    LocalRateLimit(Arc<LocalRateLimitConfig>),
    HeaderMutation(Arc<HeaderMutationConfig>),
    GrpcStats(Arc<GrpcStatsConfig>),
    /// `envoy.filters.http.grpc_web` (no settings).
    GrpcWeb,
    /// Istio's `istio.alpn`.
    IstioAlpn(Arc<AlpnOverrides>),
    /// Istio's HTTP metadata exchange (`io.istio.http.peer_metadata`).
    PeerMetadata(Arc<PeerMetadataConfig>),
    /// Istio's standard metrics (`istio.stats`), recorded when an exchange ends.
    IstioStats(Arc<crate::istio::StatsConfig>),
    Rbac(Arc<RbacFilter>),
    /// Istio ≤ 1.9's authentication policy filter (`istio_authn`, `authn.v2alpha1`).
    IstioAuthnPolicy(Arc<AuthnPolicy>),
    /// `envoy.filters.http.ext_authz`.
    ExtAuthz(Arc<crate::ext_authz::HttpExtAuthz>),
    /// Istio's `connect_authority`: where a route enables it (`PerRouteFilter::
    /// ConnectAuthority`), a CONNECT's authority is shared with the tunnel's connection.
    ConnectAuthority,
    /// Istio's `connect_baggage`: a request's `baggage` header names the downstream workload,
    /// shared with the tunnel's connection.
    ConnectBaggage,
}

/// Istio ≤ 1.9's `istio_authn` HTTP filter as shards run it: the peer authenticated by its
/// certificate (the first method that succeeds names it), a request refused `401` when none
/// does and the peer is not optional, the outcome written as `istio_authn` dynamic metadata.
#[derive(Debug)]
pub struct AuthnPolicy {
    /// Tried in order; empty: no peer authentication (every request passes, naming no peer).
    pub peers: Vec<PeerMethod>,
    pub peer_is_optional: bool,
    /// `principal_binding: USE_PEER`: the peer is also the request's principal.
    pub principal_is_peer: bool,
    pub trust_domains: TrustDomains,
}

/// One peer authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMethod {
    /// mTLS, `STRICT`: the peer must present a certificate with a URI SAN.
    MtlsStrict,
    /// mTLS, `PERMISSIVE`: a peer certificate names the peer when there is one.
    MtlsPermissive,
    /// A method without parameters: succeeds, naming no peer.
    Unnamed,
}

/// Which trust domains a peer certificate's SPIFFE id may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustDomains {
    /// `skip_validate_trust_domain`.
    Any,
    /// This proxy's own (its certificate's SPIFFE id's).
    Local,
    /// `allowed_trust_domains`.
    OneOf(Vec<String>),
}

/// Istio's `io.istio.http.peer_metadata` as shards run it: which sides' peers are read from
/// the `x-envoy-peer-metadata(-id)` headers (and those headers removed), and which sides get
/// this proxy's own.
#[derive(Debug)]
pub struct PeerMetadataConfig {
    /// The downstream peer is read from request headers.
    pub downstream_discovery: bool,
    /// The upstream peer is read from response headers.
    pub upstream_discovery: bool,
    /// Requests going upstream carry this proxy's metadata.
    pub upstream_propagation: bool,
    /// Responses carry this proxy's metadata back when the request carried the peer's.
    pub downstream_propagation: bool,
    /// `skip_external_clusters`: requests to `PassthroughCluster` or a cluster whose `istio`
    /// metadata says `external: true` carry none.
    pub skip_external_clusters: bool,
    pub local: Arc<crate::istio::LocalPeer>,
}

/// An ALPN protocol list as a TLS client offers it.
pub type Alpn = Arc<[Vec<u8>]>;

/// Istio's `istio.alpn`: the ALPN list a request's upstream TLS connection offers instead of
/// its cluster's, by the HTTP version the request goes upstream in (none: the cluster's).
#[derive(Debug, Default, PartialEq)]
pub struct AlpnOverrides {
    pub http10: Option<Alpn>,
    pub http11: Option<Alpn>,
    pub http2: Option<Alpn>,
}

impl AlpnOverrides {
    /// The list for a request going upstream over HTTP/2 (`http2`; `None`, ALPN decides,
    /// counts as HTTP/2, Envoy's first choice then) or HTTP/1.x (`http10`: 1.0).
    pub fn for_upstream(&self, http2: Option<bool>, http10: bool) -> Option<&Alpn> {
        match (http2.unwrap_or(true), http10) {
            (true, _) => self.http2.as_ref(),
            (false, true) => self.http10.as_ref(),
            (false, false) => self.http11.as_ref(),
        }
    }
}

/// A share of requests: `numerator` out of `denominator` (100, 10 000 or 1 000 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FractionalPercent {
    pub numerator: u32,
    pub denominator: u32,
}

impl FractionalPercent {
    pub const NONE: Self = Self {
        numerator: 0,
        denominator: 100,
    };
    pub const ALL: Self = Self {
        numerator: 100,
        denominator: 100,
    };

    /// Whether a uniform draw from `0..denominator` is inside the share (a numerator above
    /// the denominator is 100 %).
    pub fn contains(self, draw: u32) -> bool {
        draw < self.numerator
    }

    /// Every request (no draw needed).
    pub fn is_all(self) -> bool {
        self.numerator >= self.denominator
    }

    /// The same denominator with the numerator lowered to at most `numerator` (Envoy's
    /// `x-envoy-fault-*-percentage` headers can only lower the configured share).
    pub fn capped(self, numerator: u32) -> Self {
        Self {
            numerator: self.numerator.min(numerator),
            denominator: self.denominator,
        }
    }
}

/// `envoy.filters.http.fault` as configured in the chain: its settings and its stats
/// (`http.<prefix>.fault.*`). A per-route `HTTPFault` replaces the settings, not the stats.
#[derive(Debug)]
pub struct FaultFilter {
    pub config: Arc<FaultConfig>,
    pub stats: Arc<FaultStats>,
}

/// `HTTPFault` settings.
#[derive(Debug, Default)]
pub struct FaultConfig {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// Faults apply only to requests routed to this cluster.
    pub upstream_cluster: Option<String>,
    /// Faults apply only to requests matching every matcher.
    pub headers: Vec<HeaderMatcher>,
    /// Faults apply only to requests whose `x-envoy-downstream-service-node` is one of these
    /// (empty: every request).
    pub downstream_nodes: Vec<String>,
    /// No new fault while this many are active process-wide (`None`: unlimited).
    pub max_active_faults: Option<u64>,
    /// Written into the stream's dynamic metadata, under the filter's name, when a fault is
    /// injected.
    pub filter_metadata: Option<crate::metadata::Value>,
}

#[derive(Debug)]
pub struct FaultDelay {
    pub source: DelaySource,
    /// Unset in the config: 0 %, as Envoy.
    pub percentage: FractionalPercent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelaySource {
    Fixed(Duration),
    /// `header_delay`: milliseconds from `x-envoy-fault-delay-request`.
    Header,
}

#[derive(Debug)]
pub struct FaultAbort {
    pub source: AbortSource,
    pub percentage: FractionalPercent,
    /// `response_body` (Envoy's default: `fault filter abort`).
    pub body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortSource {
    Http(u16),
    /// A gRPC status (the HTTP status is then 200).
    Grpc(u32),
    /// `header_abort`: `x-envoy-fault-abort-request` (HTTP status) or
    /// `x-envoy-fault-abort-grpc-request` (gRPC status).
    Header,
}

/// `envoy.extensions.filters.http.cors.v3.CorsPolicy` (per route or virtual host). Empty
/// strings and `None` mean unset: the next less specific policy's value applies, as Envoy.
#[derive(Debug, Default)]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatcher>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    pub max_age: String,
    pub allow_credentials: Option<bool>,
    pub allow_private_network_access: Option<bool>,
    pub forward_not_matching_preflights: Option<bool>,
    /// `None`: enabled for every request.
    pub filter_enabled: Option<FractionalPercent>,
    /// `None`: no shadow evaluation.
    pub shadow_enabled: Option<FractionalPercent>,
}

/// `envoy.filters.http.local_ratelimit` (in the chain or per route).
#[derive(Debug)]
pub struct LocalRateLimitConfig {
    /// `None` (allowed only in the chain): nothing is limited unless a route brings a bucket.
    pub bucket: Option<TokenBucket>,
    /// Status of a limited request's reply (429 unless configured at 400 or above).
    pub status: u16,
    /// Share of requests checked against the bucket (default 0 %, as Envoy).
    pub filter_enabled: FractionalPercent,
    /// Share of checked requests a limit is enforced on (default 0 %).
    pub filter_enforced: FractionalPercent,
    pub response_headers_to_add: Vec<HeaderAdd>,
    pub request_headers_to_add_when_not_enforced: Vec<HeaderAdd>,
    /// `enable_retry_after_header`: a 429 reply says when the next token comes
    /// (`retry-after`, in seconds, at least 1) unless `response_headers_to_add` sets one.
    pub enable_retry_after: bool,
    /// `<stat_prefix>.http_local_rate_limit.*`
    pub stats: Arc<LocalRateLimitStats>,
}

/// `envoy.filters.http.grpc_stats`: gRPC calls counted per route cluster, under
/// `cluster.<name>.grpc.` — per service and method for the calls `methods` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcStatsConfig {
    pub methods: GrpcMethodStats,
    /// `replace_dots_in_grpc_service_name`: `.` in a service name becomes `_` in stat names.
    pub replace_dots_in_service: bool,
}

/// Which calls get stats of their own (`<service>.<method>.success`); the others share
/// `grpc.success`, `grpc.total`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcMethodStats {
    /// `stats_for_all_methods: true`.
    All,
    /// `individual_method_stats_allowlist`: `(service, method)` pairs.
    Allowlist(Vec<(String, String)>),
    /// `stats_for_all_methods: false`, or neither set (Envoy's default).
    None,
}

impl GrpcMethodStats {
    /// Whether `service`'s `method` gets stats of its own.
    pub fn names(&self, service: &str, method: &str) -> bool {
        match self {
            Self::All => true,
            Self::Allowlist(list) => list.iter().any(|(s, m)| s == service && m == method),
            Self::None => false,
        }
    }
}

/// `envoy.filters.http.header_mutation` in the chain.
#[derive(Debug)]
pub struct HeaderMutationConfig {
    pub mutations: Mutations,
    /// Per-route mutations run least specific first (so the most specific wins) instead of
    /// most specific first.
    pub most_specific_wins: bool,
}

/// Request and response header operations, applied in order.
#[derive(Debug, Default)]
pub struct Mutations {
    pub request: Vec<HeaderOp>,
    pub response: Vec<HeaderOp>,
}

#[derive(Debug)]
pub enum HeaderOp {
    /// Removes every value of the (lower-case) header.
    Remove(String),
    /// Removes every header whose name matches.
    RemoveMatching(StringMatcher),
    Add(HeaderAdd),
}

/// One `typed_per_filter_config` entry.
#[derive(Debug)]
pub enum PerRouteFilter {
    /// `FilterConfig { disabled: true }`: the filter does not run here.
    Disabled,
    /// `FilterConfig` with an empty `config` (or the config of an optional filter type that is
    /// not supported): the filter runs here with its own config.
    Enabled,
    Fault(Arc<FaultConfig>),
    Cors(Arc<CorsPolicy>),
    LocalRateLimit(Arc<LocalRateLimitConfig>),
    /// `HeaderMutationPerRoute`.
    HeaderMutation(Arc<Mutations>),
    /// `RBACPerRoute`: these rules instead of the filter's (none: everything is allowed).
    Rbac(Arc<RbacRules>),
    /// `ExtAuthzPerRoute.check_settings` (`disabled: true` is `Disabled`).
    ExtAuthz(Arc<crate::ext_authz::ExtAuthzPerRoute>),
    /// `connect_authority` with `enabled: true` (`false` is `Disabled`).
    ConnectAuthority(ConnectAuthority),
}

/// Where `connect_authority` is enabled: the tunnel address's port in place of the
/// authority's, when set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectAuthority {
    pub port: Option<u16>,
}

/// `typed_per_filter_config`, keyed by filter config name.
#[derive(Debug, Default)]
pub struct PerRouteFilters(pub Vec<(String, PerRouteFilter)>);

impl PerRouteFilters {
    /// The per-route config for `filter_name`, if any (never `Disabled` / `Enabled`).
    pub fn get(&self, filter_name: &str) -> Option<&PerRouteFilter> {
        self.entry(filter_name)
            .filter(|f| !matches!(f, PerRouteFilter::Disabled | PerRouteFilter::Enabled))
    }

    /// Whether this level disables (`Some(true)`) or enables (`Some(false)`) the filter;
    /// `None` when it says nothing about it.
    pub fn disabled(&self, filter_name: &str) -> Option<bool> {
        self.entry(filter_name)
            .map(|f| matches!(f, PerRouteFilter::Disabled))
    }

    fn entry(&self, filter_name: &str) -> Option<&PerRouteFilter> {
        self.0
            .iter()
            .find(|(name, _)| name == filter_name)
            .map(|(_, f)| f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_route_entries_separate_configs_from_switches() {
        let filters = PerRouteFilters(vec![
            ("off".into(), PerRouteFilter::Disabled),
            ("on".into(), PerRouteFilter::Enabled),
            (
                "fault".into(),
                PerRouteFilter::Fault(Arc::new(FaultConfig::default())),
            ),
        ]);
        assert!(filters.get("off").is_none() && filters.get("on").is_none());
        assert!(matches!(
            filters.get("fault"),
            Some(PerRouteFilter::Fault(_))
        ));
        assert_eq!(filters.disabled("off"), Some(true));
        assert_eq!(filters.disabled("on"), Some(false));
        assert_eq!(filters.disabled("fault"), Some(false));
        assert_eq!(filters.disabled("other"), None);
    }

    #[test]
    fn fractional_percent() {
        let p = FractionalPercent {
            numerator: 25,
            denominator: 100,
        };
        assert!(p.contains(24) && !p.contains(25));
        assert!(!p.is_all() && FractionalPercent::ALL.is_all());
        assert_eq!(p.capped(10).numerator, 10);
        assert_eq!(p.capped(50).numerator, 25);
        let over = FractionalPercent {
            numerator: 200,
            denominator: 100,
        };
        assert!(over.is_all() && over.contains(99));
    }
}
