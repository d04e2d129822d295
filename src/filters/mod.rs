//! Filters by layer: network filters terminate a listener's filter chain.
pub mod network;
