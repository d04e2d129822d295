//! Domain model: tcp_proxy's `tunneling_config` — how a TCP connection is carried to its
//! upstream host inside an HTTP request (CONNECT, or POST to a path) instead of as raw bytes.
use bytes::Bytes;

use crate::{
    access_log::Format,
    route::{HeaderAdd, HeaderValue},
};

/// A tcp_proxy's `tunneling_config`, validated.
#[derive(Debug)]
pub struct TunnelingConfig {
    /// `hostname`: the request's authority, formatted for each connection (Envoy's
    /// substitution format: a command without a value renders `-`).
    pub hostname: Format,
    /// CONNECT, or POST to `post_path`.
    pub method: TunnelMethod,
    /// `headers_to_add`, with their append actions, rendered for each connection.
    pub headers_to_add: Vec<HeaderAdd>,
}

/// The request a tunnel opens with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelMethod {
    Connect,
    /// `use_post`: a POST to this path (`post_path`, `/` when unset).
    Post(Bytes),
}

impl TunnelingConfig {
    /// Whether a format reads the downstream connection's TLS.
    pub fn reads_tls(&self) -> bool {
        self.hostname.reads_tls()
            || self.headers_to_add.iter().any(|add| match &add.value {
                HeaderValue::Formatted(format) => format.reads_tls(),
                HeaderValue::Literal(_) => false,
            })
    }
}
