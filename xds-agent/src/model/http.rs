//! Domain model: the HTTP connection manager (`envoy.filters.network.http_connection_manager`)
//! as shards run it — codec limits, header policy, timeouts, the HTTP filter chain.
use std::{sync::Arc, time::Duration};

use super::{filters::HttpFilter, route::RouteConfig};
use crate::{access_log::AccessLog, stats::HttpStats};

#[derive(Debug)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    /// Inline `route_config` (RDS arrives with xDS).
    pub route_config: Arc<RouteConfig>,
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
    pub path: PathPolicy,
    /// Lower-cased `upgrade_configs[].upgrade_type` values that are enabled (e.g. `websocket`).
    pub upgrades: Vec<String>,
    /// `proxy_100_continue`: forward `Expect: 100-continue` upstream instead of answering it.
    pub proxy_100_continue: bool,
    pub access_logs: Vec<Arc<AccessLog>>,
    pub stats: Arc<HttpStats>,
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
    /// `drain_timeout`: how long a draining connection may finish its stream (default 5 s).
    pub drain: Duration,
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
