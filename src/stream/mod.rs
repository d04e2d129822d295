//! Stream layer: one HTTP request/response exchange as filters see it — the heads, the matched
//! route, and what a filter may decide (continue, or answer locally).
pub mod body;
pub mod date;
pub mod grpc;
pub mod grpc_web;
pub mod headers;
pub mod mutations;

use std::{
    cell::{Cell, Ref, RefCell, RefMut},
    net::SocketAddr,
    rc::Rc,
    sync::Arc,
    time::Instant,
};

use bytes::Bytes;
use model::{
    access_log::ResponseFlags,
    filters::{AlpnOverrides, PerRouteFilter},
    http::HttpConnectionManager,
    metadata::DynamicMetadata,
    route::{HeaderAdd, Route, VirtualHost},
    tls_info::DownstreamTls,
};

use crate::{
    context::ShardContext,
    filters::{istio::peer::Peer, network::filter_state::FilterState},
};
use grpc_web::GrpcWebMode;
use headers::Headers;

/// What a filter sees of the stream besides the heads.
pub struct StreamContext<'a> {
    pub shard: &'a ShardContext,
    pub hcm: &'a HttpConnectionManager,
    pub virtual_host: Option<&'a VirtualHost>,
    pub route: Option<&'a Route>,
    pub started: Instant,
    /// What the connection's network filters learned.
    pub filter_state: &'a FilterState,
    pub downstream: Downstream<'a>,
    /// What filters note on the stream as it runs.
    pub notes: StreamNotes,
}

/// What filters read of the stream's downstream connection (RBAC).
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    pub remote: SocketAddr,
    /// Its original destination when one was restored, else its local address (exact when
    /// access logs or an RBAC filter read it; the listener's address otherwise).
    pub local: SocketAddr,
    /// The SNI; empty without one.
    pub requested_server_name: &'a str,
    /// The connection's TLS when access logs, XFCC, an RBAC or ext_authz filter read it;
    /// else `None`.
    pub tls: Option<&'a DownstreamTls>,
    /// `https` on a TLS connection, else `http`.
    pub scheme: &'static str,
}

/// What HTTP filters record on a stream: response flags of a request that still goes on (a
/// fault delay's `DI`; the connection manager logs them with its own), and marks a filter's
/// request side leaves for its response side (one bit per position in the filter chain).
#[derive(Debug, Default)]
pub struct StreamNotes {
    flags: Cell<ResponseFlags>,
    marks: Cell<u64>,
    grpc_web: Cell<Option<GrpcWebMode>>,
    alpn: RefCell<Option<Arc<AlpnOverrides>>>,
    downstream_peer: RefCell<Option<Rc<Peer>>>,
    upstream_peer: RefCell<Option<Rc<Peer>>>,
    /// The request carried the downstream peer's id and metadata headers.
    peer_headers: Cell<(bool, bool)>,
    /// What filters wrote for the filters after them (RBAC's shadow verdict).
    metadata: RefCell<DynamicMetadata>,
    /// Headers an allowed ext_authz check adds to the response.
    response_headers: RefCell<Vec<HeaderAdd>>,
    /// `connect_authority`'s: the authority, and the tunnel port in place of its own.
    tunnel_authority: RefCell<Option<(Box<str>, Option<u16>)>>,
}

impl StreamNotes {
    pub fn flag(&self, flag: ResponseFlags) {
        let mut flags = self.flags.get();
        flags.set(flag);
        self.flags.set(flags);
    }

    pub fn flags(&self) -> ResponseFlags {
        self.flags.get()
    }

    /// Marks the stream for the filter at `position` (positions past 63 share the last bit).
    pub fn mark(&self, position: usize) {
        self.marks.set(self.marks.get() | 1 << position.min(63));
    }

    pub fn is_marked(&self, position: usize) -> bool {
        self.marks.get() & 1 << position.min(63) != 0
    }

    /// The gRPC-Web filter took the request: how its call is carried.
    pub fn set_grpc_web(&self, mode: GrpcWebMode) {
        self.grpc_web.set(Some(mode));
    }

    pub fn grpc_web(&self) -> Option<GrpcWebMode> {
        self.grpc_web.get()
    }

    /// Istio's `istio.alpn` ran: upstream TLS offers its list for the request's protocol.
    pub fn set_alpn(&self, overrides: Arc<AlpnOverrides>) {
        *self.alpn.borrow_mut() = Some(overrides);
    }

    pub fn take_alpn(&self) -> Option<Arc<AlpnOverrides>> {
        self.alpn.borrow_mut().take()
    }

    /// The downstream workload, from Istio's HTTP metadata exchange.
    pub fn set_downstream_peer(&self, peer: Rc<Peer>) {
        *self.downstream_peer.borrow_mut() = Some(peer);
    }

    pub fn downstream_peer(&self) -> Option<Rc<Peer>> {
        self.downstream_peer.borrow().clone()
    }

    /// The upstream workload, from Istio's HTTP metadata exchange.
    pub fn set_upstream_peer(&self, peer: Rc<Peer>) {
        *self.upstream_peer.borrow_mut() = Some(peer);
    }

    pub fn upstream_peer(&self) -> Option<Rc<Peer>> {
        self.upstream_peer.borrow().clone()
    }

    pub fn peer_headers_received(&self, id: bool, metadata: bool) {
        self.peer_headers.set((id, metadata));
    }

    pub fn received_peer_headers(&self) -> (bool, bool) {
        self.peer_headers.get()
    }

    /// The stream's dynamic metadata, to read.
    pub fn metadata(&self) -> Ref<'_, DynamicMetadata> {
        self.metadata.borrow()
    }

    /// The stream's dynamic metadata, to write.
    pub fn metadata_mut(&self) -> RefMut<'_, DynamicMetadata> {
        self.metadata.borrow_mut()
    }

    /// The stream's dynamic metadata, taken once the filters are done (for its access log).
    pub fn take_metadata(&self) -> DynamicMetadata {
        self.metadata.take()
    }

    /// Headers the response gets (ext_authz's `response_headers_to_add`), added to any noted
    /// before.
    pub fn set_tunnel_authority(&self, authority: Box<str>, port: Option<u16>) {
        *self.tunnel_authority.borrow_mut() = Some((authority, port));
    }

    pub fn tunnel_authority(&self) -> Option<(Box<str>, Option<u16>)> {
        self.tunnel_authority.borrow().clone()
    }

    pub fn set_response_headers(&self, mut adds: Vec<HeaderAdd>) {
        self.response_headers.borrow_mut().append(&mut adds);
    }

    pub fn take_response_headers(&self) -> Vec<HeaderAdd> {
        std::mem::take(&mut *self.response_headers.borrow_mut())
    }
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
    /// The gRPC status a gRPC client gets (else the one its HTTP status maps to).
    pub grpc_status: Option<u32>,
    /// A gRPC client gets this HTTP status too (with `grpc-status` in the head), not 200.
    pub keeps_http_status: bool,
    /// `%RESPONSE_CODE_DETAILS%` when a filter says more than `filter`.
    pub details: Option<String>,
}

impl LocalReply {
    pub fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: Headers::default(),
            flags: ResponseFlags::default(),
            grpc_status: None,
            keeps_http_status: false,
            details: None,
        }
    }

    /// With these response code details.
    pub fn detailed(mut self, details: String) -> Self {
        self.details = Some(details);
        self
    }

    /// Answers a gRPC client with this gRPC status.
    pub fn grpc(mut self, status: u32) -> Self {
        self.grpc_status = Some(status);
        self
    }

    pub fn flagged(mut self, flag: ResponseFlags) -> Self {
        self.flags.set(flag);
        self
    }
}
