//! Filters by layer: network filters terminate a listener's filter chain; HTTP filters run on
//! each stream before the router; `ext_authz` is what the two external authorization filters
//! share.
pub mod ext_authz;
pub mod http;
pub mod istio;
pub mod network;
