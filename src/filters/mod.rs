//! Filters by layer: network filters terminate a listener's filter chain; HTTP filters run on
//! each stream before the router.
pub mod http;
pub mod istio;
pub mod network;
