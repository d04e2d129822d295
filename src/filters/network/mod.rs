//! Network (L4) filters.
pub mod tcp_proxy;
