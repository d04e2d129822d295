//! Istio's own filters' runtime: the peer identity its metadata exchange carries, the
//! exchange itself on a TLS connection (both directions), and the standard metrics' labels.
pub mod exchange;
pub mod peer;
pub mod stats;
