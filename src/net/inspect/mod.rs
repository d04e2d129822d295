//! NET/IO layer: listener-filter inspection of a new connection's first bytes (peeked):
//! tls_inspector's ClientHello parser and http_inspector's protocol sniffing.
pub mod client_hello;
pub mod http;
