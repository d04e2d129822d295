//! Istio's own filters' runtime: the peer identity its metadata exchange carries, and the
//! exchange itself on a TLS connection (both directions).
pub mod exchange;
pub mod peer;
