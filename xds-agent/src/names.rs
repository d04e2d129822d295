//! Well-known names: type URLs and Envoy extension names the translator recognises.

pub const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub const FILE_ACCESS_LOG: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
pub const STDOUT_ACCESS_LOG: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
pub const STDERR_ACCESS_LOG: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// The type name inside a type URL (`type.googleapis.com/a.b.C` → `a.b.C`).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// The tcp_proxy network filter's well-known name.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
