//! Domain model: the HTTP connection manager (`envoy.filters.network.http_connection_manager`)
//! as shards run it — codec limits, header policy, timeouts, the HTTP filter chain.
use std::{sync::Arc, time::Duration};

use super::{
    filters::{HttpFilter, HttpFilterKind},
    route::{Forward, RouteConfig},
};
use crate::{
    access_log::AccessLog, local_reply::LocalReplyConfig, stats::HttpStats, tracing::HttpTracing,
};

/// Where a connection manager's route table comes from.
#[derive(Debug)]
pub enum Routes {
    /// Inline `route_config`: fixed for the listener's life.
    Static(Arc<RouteConfig>),
    /// `rds`: the table of this name in the current snapshot (`Snapshot::routes`). Updates
    /// reach open connections from their next stream on, as in Envoy.
    Rds(super::DiscoveredBy),
}

impl Routes {
    /// The inline table, if the routes are not from RDS.
    pub fn inline(&self) -> Option<&Arc<RouteConfig>> {
        match self {
            Routes::Static(table) => Some(table),
            Routes::Rds(_) => None,
        }
    }
}

#[derive(Debug)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub routes: Routes,
    /// The decoder/encoder filters before the router, in config order. The router is implied
    /// (the translator requires it to be last).
    pub filters: Vec<HttpFilter>,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    pub skip_xff_append: bool,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    /// `server_name`, default `envoy`.
    pub server_name: String,
    pub server_header: ServerHeader,
    pub timeouts: HcmTimeouts,
    /// `max_request_headers_kb` in bytes (Envoy's default 60 KiB): request line + headers.
    pub max_request_headers_bytes: usize,
    /// `common_http_protocol_options.max_requests_per_connection`; `None` = unlimited.
    pub max_requests_per_connection: Option<u32>,
    /// `common_http_protocol_options.max_headers_count` (default 100).
    pub max_headers_count: usize,
    /// `common_http_protocol_options.headers_with_underscores_action`.
    pub headers_with_underscores: UnderscoreHeaders,
    pub http1: Http1Options,
    /// `codec_type`.
    pub codec: Codec,
    /// `http2_protocol_options`.
    pub http2: Http2Options,
    pub path: PathPolicy,
    /// `upgrade_configs`: each lower-cased `upgrade_type` (e.g. `websocket`) and whether it is
    /// enabled unless a route says otherwise. Types not listed are never upgraded.
    pub upgrades: Vec<(String, bool)>,
    /// `proxy_100_continue`: forward `Expect: 100-continue` upstream instead of answering it.
    pub proxy_100_continue: bool,
    /// `forward_client_cert_details`: what becomes of a request's `x-forwarded-client-cert`.
    pub forward_client_cert: ForwardClientCert,
    /// `set_current_client_cert_details`: what this proxy's own XFCC element carries.
    pub client_cert_details: ClientCertDetails,
    pub access_logs: Vec<Arc<AccessLog>>,
    /// `local_reply_config`.
    pub local_reply: LocalReplyConfig,
    /// `tracing`: requests sampled, spans reported, B3 headers sent upstream.
    pub tracing: Option<HttpTracing>,
    pub stats: Arc<HttpStats>,
}

impl HttpConnectionManager {
    /// Whether an access log reads the connection's TLS.
    pub fn logs_read_tls(&self) -> bool {
        self.access_logs.iter().any(|l| l.reads_tls())
    }

    /// Whether an `istio.stats` filter runs here.
    pub fn has_istio_stats(&self) -> bool {
        self.filters
            .iter()
            .any(|f| matches!(f.kind, HttpFilterKind::IstioStats(_)))
    }

    /// Whether a filter here reads the connection's addresses and TLS (`rbac`, Istio's
    /// `istio_authn`, `ext_authz`).
    pub fn filters_read_connection(&self) -> bool {
        self.filters.iter().any(|f| {
            matches!(
                f.kind,
                HttpFilterKind::Rbac(_)
                    | HttpFilterKind::IstioAuthnPolicy(_)
                    | HttpFilterKind::ExtAuthz(_)
            )
        })
    }

    /// Whether a request asking for `Upgrade: <upgrade_type>` may be upgraded on `route`
    /// (as Envoy: a route's own `upgrade_configs` entry decides; else the connection manager's
    /// entry; a type neither lists is refused).
    pub fn upgrade_allowed(&self, route: Option<&Forward>, upgrade_type: &[u8]) -> bool {
        let named =
            |(name, _): &&(String, bool)| name.as_bytes().eq_ignore_ascii_case(upgrade_type);
        route
            .and_then(|r| r.upgrades.iter().find(named))
            .or_else(|| self.upgrades.iter().find(named))
            .is_some_and(|(_, on)| *on)
    }
}

/// `forward_client_cert_details`, Envoy's rules: the header is forwarded as it came only with
/// `ALWAYS_FORWARD_ONLY`, or with `FORWARD_ONLY` on a connection whose client presented a
/// certificate; the two setting modes add this proxy's element on such connections; every
/// other case removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardClientCert {
    Sanitize,
    ForwardOnly,
    /// Appends this proxy's element (after a `,`).
    AppendForward,
    /// Replaces the header with this proxy's element.
    SanitizeSet,
    AlwaysForwardOnly,
}

/// `set_current_client_cert_details`: the element always has `By=` (each URI SAN of the
/// served certificate) and `Hash=`, then these in Envoy's order: `Cert`, `Chain`, `Subject`,
/// `URI`, `DNS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCertDetails {
    pub cert: bool,
    pub chain: bool,
    pub subject: bool,
    pub uri: bool,
    pub dns: bool,
}

/// `codec_type`: which codec serves a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/2 when TLS negotiated `h2` or the connection opens with the HTTP/2 preface, else
    /// HTTP/1.1.
    Auto,
    Http1,
    Http2,
}

/// HTTP/2 codec options (`http2_protocol_options`), Envoy's defaults where unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Options {
    /// SETTINGS_HEADER_TABLE_SIZE (`hpack_table_size`, default 4096).
    pub hpack_table_size: u32,
    /// SETTINGS_MAX_CONCURRENT_STREAMS (default 2^31 - 1).
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE (default 256 MiB; shards cap it at the listener's buffer
    /// limit, so no stream holds more than that unforwarded).
    pub initial_stream_window_size: u32,
    /// The connection's window (default 256 MiB; capped the same way).
    pub initial_connection_window_size: u32,
    /// `connection_keepalive`: PINGs that find a dead peer (`None` without an interval).
    pub keepalive: Option<Keepalive>,
    /// `allow_connect`: CONNECT and extended CONNECT (RFC 8441) requests are served.
    pub allow_connect: bool,
}

/// HTTP/2 `connection_keepalive`: a PING every `interval` (plus up to `jitter` of it, at
/// random); a connection whose peer has not answered one within `timeout` is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
    /// `interval_jitter` in parts per million of the interval (Envoy's default 15 %).
    pub jitter_ppm: u32,
}

impl Default for Http2Options {
    fn default() -> Self {
        Self {
            hpack_table_size: 4096,
            max_concurrent_streams: (1 << 31) - 1,
            initial_stream_window_size: 256 << 20,
            initial_connection_window_size: 256 << 20,
            keepalive: None,
            allow_connect: false,
        }
    }
}

/// HTTP/1 codec options (`http_protocol_options`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Http1Options {
    /// `accept_http_10`: serve HTTP/1.0 requests (otherwise answered 426 as Envoy does).
    pub accept_http_10: bool,
    /// `default_host_for_http_10`: the authority of HTTP/1.0 requests without `Host`.
    pub default_host_for_http_10: Option<String>,
    /// `enable_trailers`: request trailers are passed on, response trailers sent (else both
    /// are dropped, as Envoy's HTTP/1 codec does by default).
    pub enable_trailers: bool,
}

/// `headers_with_underscores_action` for request headers whose name contains `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    Allow,
    /// 400 and close.
    RejectRequest,
    /// Removed before filters and routing.
    DropHeader,
}

/// Timeouts; `None` = disabled (`0s`).
#[derive(Debug, Clone, Copy)]
pub struct HcmTimeouts {
    /// Whole request received (headers and body); default disabled.
    pub request: Option<Duration>,
    /// Request headers received, from the first byte; default disabled.
    pub request_headers: Option<Duration>,
    /// No activity on a stream; default 5 minutes.
    pub stream_idle: Option<Duration>,
    /// Connection with no active stream; default 1 hour.
    pub idle: Option<Duration>,
}

/// What to do with the `server` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

/// Path handling before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    /// RFC 3986 normalisation (dot segments, percent-decoding of unreserved characters).
    pub normalize: bool,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

/// `path_with_escaped_slashes_action` (`%2F`, `%5C` in the path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    KeepUnchanged,
    RejectRequest,
    UnescapeAndRedirect,
    UnescapeAndForward,
}
