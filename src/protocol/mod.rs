//! Protocol layer: codecs that turn bytes into streams and back (HTTP/1.1 now).
pub mod http1;
