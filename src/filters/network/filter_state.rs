//! Connection filter state: what a chain's network filters learned about a connection, read
//! by the filters after them and by every stream on it (Envoy's connection-lifetime filter
//! state, with the keys shardproxy's filters set).
use std::{net::SocketAddr, rc::Rc};

use crate::filters::istio::peer::Peer;

/// The key `istio_authn` sets to the peer's SPIFFE identity.
pub const PEER_PRINCIPAL: &str = "io.istio.peer_principal";
/// The key `istio_authn` sets to this proxy's SPIFFE identity.
pub const LOCAL_PRINCIPAL: &str = "io.istio.local_principal";

#[derive(Debug, Default)]
pub struct FilterState {
    pub peer_principal: Option<Box<str>>,
    pub local_principal: Option<Box<str>>,
    /// The downstream workload, as Istio's metadata exchange told it.
    pub downstream_peer: Option<Rc<Peer>>,
    /// Why a filter ended the connection (Envoy's connection termination details): the
    /// terminal filter then only logs it.
    pub denied: Option<Box<str>>,
    /// `istio_authn`'s `shared`: the principals go with the connection's upstream connections.
    pub shares_principals: bool,
    /// Where an `ORIGINAL_DST` cluster sends this connection's traffic, before its local
    /// address (Envoy's `envoy.network.transport_socket.original_dst_address`, which
    /// `istio.set_internal_dst_address` sets from the tunnel address).
    pub tunnel_destination: Option<SocketAddr>,
}

/// What a connection or stream shares with the upstream connection it opens (Envoy's filter
/// state `SharedWithUpstreamConnection`): an internal listener's connection starts with it.
#[derive(Debug, Default, Clone)]
pub struct SharedState {
    pub peer_principal: Option<Box<str>>,
    pub local_principal: Option<Box<str>>,
    /// The downstream workload (`connect_baggage`).
    pub downstream_peer: Option<Rc<Peer>>,
    /// The CONNECT authority (`connect_authority`), and the tunnel port in place of its own.
    pub authority: Option<(Box<str>, Option<u16>)>,
}

impl FilterState {
    /// The state an internal listener's connection starts with: what its opener shared, and
    /// where `istio.set_internal_dst_address` said to send its traffic.
    pub fn arriving(shared: Option<&SharedState>, tunnel_destination: Option<SocketAddr>) -> Self {
        let shared = shared.cloned().unwrap_or_default();
        Self {
            peer_principal: shared.peer_principal,
            local_principal: shared.local_principal,
            downstream_peer: shared.downstream_peer,
            tunnel_destination,
            ..Self::default()
        }
    }

    /// What this connection shares with its upstream connections.
    pub fn shared(&self) -> SharedState {
        let principals = |p: &Option<Box<str>>| p.clone().filter(|_| self.shares_principals);
        SharedState {
            peer_principal: principals(&self.peer_principal),
            local_principal: principals(&self.local_principal),
            ..SharedState::default()
        }
    }

    /// The value under `key` as a string, as RBAC's `filter_state` matcher reads it.
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            PEER_PRINCIPAL => self.peer_principal.as_deref(),
            LOCAL_PRINCIPAL => self.local_principal.as_deref(),
            _ => None,
        }
    }
}
