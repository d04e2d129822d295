//! Connection filter state: what a chain's network filters learned about a connection, read
//! by the filters after them and by every stream on it (Envoy's connection-lifetime filter
//! state, with the keys shardproxy's filters set).
use std::rc::Rc;

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
}

impl FilterState {
    /// The value under `key` as a string, as RBAC's `filter_state` matcher reads it.
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            PEER_PRINCIPAL => self.peer_principal.as_deref(),
            LOCAL_PRINCIPAL => self.local_principal.as_deref(),
            _ => None,
        }
    }
}
