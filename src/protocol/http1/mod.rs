//! Protocol layer: the HTTP/1.1 codec (RFC 9112) over httparse. Pure functions over buffers;
//! the connection manager and the upstream pool do the I/O.
//!
//! Reading: [`parse_request`] / [`parse_response`] take one complete head off the front of a
//! `BytesMut` — zero-copy: names are lower-cased in place, then names and values are slices of
//! the frozen head — and say how the body is framed. A [`BodyDecoder`] then takes exactly that
//! body off the same buffer and never more, so a pipelined next message starts at its first
//! byte. Writing: the `encode_*` functions append heads and chunks to an output `Vec<u8>`.
//!
//! Strictness (RFC 9112, matching Envoy where it documents a choice): request smuggling forms
//! (CL+TE, repeated or malformed Content-Length, a Transfer-Encoding that is not one final
//! `chunked`, obs-fold, space before a colon, control bytes, malformed chunk lines, a bare LF
//! anywhere in a request head, chunk line or trailer section) are refused and the connection
//! must be closed. Requests also need a method from Envoy's list and a valid Host authority;
//! `HTTP/1.x` above 1.1 is served as 1.1. Response heads from upstreams may end lines with a
//! bare LF (RFC 9112 §2.2 allows a recipient to accept it), as may empty lines before a request.
mod body;
#[cfg(test)]
pub mod corpus;
mod encode;
mod errors;
mod fields;
mod request;
mod response;
mod syntax;
#[cfg(test)]
mod tests;
pub mod tunnel;

pub use body::{BodyDecoder, BodyEvent};
pub use encode::{
    encode_chunk, encode_last_chunk, encode_request_head, encode_response_head, encode_tunnel_head,
    reason_phrase,
};
pub use errors::{BodyError, RequestError, ResponseError};
pub use request::{parse_request, ParsedRequest};
pub use response::{parse_response, ParsedResponse};

/// Size limits on one head (and on one trailer section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the start line plus the header section, including line ends (Envoy's
    /// `max_request_headers_kb` × 1024 for requests; below 4 GiB, Envoy caps it at 8 MiB). A
    /// request line alone over this is a 414; any other head over it a 431.
    pub max_head_bytes: usize,
    /// Header (or trailer) field lines (Envoy's `max_headers_count`); more is a 431.
    pub max_headers: usize,
}

impl Default for Limits {
    /// Envoy's defaults: 60 KiB and 100 headers.
    fn default() -> Self {
        Self {
            max_head_bytes: 60 * 1024,
            max_headers: 100,
        }
    }
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (also `Content-Length: 0`, HEAD/204/304/1xx responses, CONNECT).
    Empty,
    /// Exactly this many bytes (never 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`, possibly with trailers.
    Chunked,
    /// Responses only: everything until the server closes.
    UntilClose,
}

impl Framing {
    /// `Length(n)`, or `Empty` for 0.
    pub fn of_length(n: u64) -> Self {
        if n == 0 {
            Framing::Empty
        } else {
            Framing::Length(n)
        }
    }
}
