//! Stream layer: one HTTP request/response exchange as filters see it — the heads, the matched
//! route, and what a filter may decide (continue, or answer locally).
pub mod body;
pub mod headers;
pub mod mutations;

use std::{net::SocketAddr, time::Instant};

use bytes::Bytes;
use xds_agent::{
    access_log::ResponseFlags,
    model::{
        filters::PerRouteFilter,
        http::HttpConnectionManager,
        route::{Route, VirtualHost},
    },
};

use crate::context::ShardContext;
use headers::Headers;

/// What a filter sees of the stream besides the heads.
pub struct StreamContext<'a> {
    pub shard: &'a ShardContext,
    pub hcm: &'a HttpConnectionManager,
    pub virtual_host: Option<&'a VirtualHost>,
    pub route: Option<&'a Route>,
    pub downstream_remote: SocketAddr,
    pub started: Instant,
}

impl StreamContext<'_> {
    /// The most specific `typed_per_filter_config` for `filter_name`: route, then virtual host.
    pub fn per_filter(&self, filter_name: &str) -> Option<&PerRouteFilter> {
        self.route
            .and_then(|r| r.per_filter.get(filter_name))
            .or_else(|| {
                self.virtual_host
                    .and_then(|v| v.per_filter.get(filter_name))
            })
    }
}

/// A filter's decision on the request.
pub enum FilterResult {
    Continue,
    /// Stop the chain and answer with this (encoder filters that already ran still see it).
    Respond(LocalReply),
}

/// A response the proxy makes itself (filters, router errors, direct responses).
#[derive(Debug, Clone)]
pub struct LocalReply {
    pub status: u16,
    pub body: Bytes,
    /// Extra response headers (lower-case names).
    pub headers: Headers,
    pub flags: ResponseFlags,
}

impl LocalReply {
    pub fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: Headers::default(),
            flags: ResponseFlags::default(),
        }
    }

    pub fn flagged(mut self, flag: ResponseFlags) -> Self {
        self.flags.set(flag);
        self
    }
}
