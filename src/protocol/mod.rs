//! Protocol layer: codecs that turn bytes into streams and back (HTTP/1.1, HTTP/2).
pub mod http1;
pub mod http2;
