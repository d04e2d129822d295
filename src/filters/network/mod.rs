//! Network (L4) filters: the terminal filter of a listener's chain.
pub mod http_connection_manager;
pub mod tcp_proxy;
