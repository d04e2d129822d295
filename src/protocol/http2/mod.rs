//! Protocol layer: HTTP/2 through the `h2` crate, which does the framing, HPACK, stream states
//! and flow control. Here: the heads the crate hands over (`http` types) as the stream
//! layer's codec-neutral heads and back, with the rules of RFC 9113 §8 the crate leaves to
//! its user (cookie crumbs joined, connection-specific fields never sent, `:authority` as the
//! `host` the rest of the proxy reads).
use bytes::Bytes;
use h2::RecvStream;
use http::{header::HeaderName, HeaderMap, HeaderValue, Request, Response};

use super::http1::Framing;
use crate::stream::headers::{Headers, RequestHead, ResponseHead, Version};

/// Fields that only mean something on one HTTP/1 connection (RFC 9113 §8.2.2): never sent on
/// an HTTP/2 stream (the `h2` crate refuses them).
const CONNECTION_SPECIFIC: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// A request as the connection manager serves it.
pub struct IncomingRequest {
    pub head: RequestHead,
    /// `Empty` when the HEADERS frame ended the stream, `Length` with a `content-length`,
    /// else `Chunked` (the body's end is the stream's end).
    pub framing: Framing,
    pub body: RecvStream,
    pub expect_continue: bool,
    pub connect: bool,
}

/// Why a request cannot be served (answered with RST_STREAM or a 400 by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// A `content-length` that is not one decimal number.
    BadContentLength,
    /// A field value with leading or trailing whitespace (RFC 9113 §8.2.1).
    BadFieldValue,
}

/// The codec-neutral request of an HTTP/2 stream.
pub fn incoming(request: Request<RecvStream>) -> Result<IncomingRequest, RequestError> {
    let (parts, body) = request.into_parts();
    let connect = parts.method == http::Method::CONNECT;
    let mut headers = Headers::with_capacity(parts.headers.len() + 1);
    if let Some(authority) = parts.uri.authority() {
        headers.append(
            Bytes::from_static(b"host"),
            Bytes::copy_from_slice(authority.as_str().as_bytes()),
        );
    }
    let mut cookies: Vec<&HeaderValue> = Vec::new();
    let mut length = None;
    let mut expect_continue = false;
    for (name, value) in parts.headers.iter() {
        let bytes = value.as_bytes();
        if bytes.first().is_some_and(|b| *b == b' ' || *b == b'\t')
            || bytes.last().is_some_and(|b| *b == b' ' || *b == b'\t')
        {
            return Err(RequestError::BadFieldValue);
        }
        match name.as_str() {
            "cookie" => {
                cookies.push(value);
                continue;
            }
            "content-length" => {
                let parsed = std::str::from_utf8(bytes).ok().and_then(|v| v.parse().ok());
                match (parsed, length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => continue,
                    _ => return Err(RequestError::BadContentLength),
                }
            }
            "expect" if bytes.eq_ignore_ascii_case(b"100-continue") => {
                expect_continue = true;
                continue;
            }
            "host" if parts.uri.authority().is_some() => continue,
            _ => {}
        }
        headers.append(
            Bytes::copy_from_slice(name.as_str().as_bytes()),
            Bytes::copy_from_slice(bytes),
        );
    }
    if !cookies.is_empty() {
        // RFC 9113 §8.2.3: crumbs are joined with "; " before going to HTTP/1.
        let mut joined = Vec::new();
        for (i, cookie) in cookies.iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(cookie.as_bytes());
        }
        headers.append(Bytes::from_static(b"cookie"), joined);
    }
    let path = match parts.uri.path_and_query() {
        Some(path) if !connect => Bytes::copy_from_slice(path.as_str().as_bytes()),
        _ => Bytes::new(),
    };
    let framing = match (body.is_end_stream(), length) {
        (true, _) => Framing::Empty,
        (false, Some(n)) => Framing::of_length(n),
        (false, None) => Framing::Chunked,
    };
    let head = RequestHead {
        method: Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
        path,
        version: Version::Http2,
        headers,
    };
    Ok(IncomingRequest {
        head,
        framing,
        body,
        expect_continue,
        connect,
    })
}

/// An HTTP/2 response head from the stream layer's (connection-specific fields dropped), with
/// the body's `content-length` when it is known (HTTP/1 carried it as framing).
pub fn response(head: &ResponseHead, content_length: Option<u64>) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() =
        http::StatusCode::from_u16(head.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let mut headers = header_map(&head.headers);
    if let Some(length) = content_length {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    *response.headers_mut() = headers;
    response
}

/// Headers (or trailers) as an HTTP/2 field block; connection-specific fields and names or
/// values HTTP/2 cannot carry are left out.
pub fn header_map(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for header in headers.iter() {
        let name = match HeaderName::from_bytes(&header.name) {
            Ok(name) if !CONNECTION_SPECIFIC.contains(&name.as_str()) => name,
            _ => continue,
        };
        if let Ok(value) = HeaderValue::from_maybe_shared(header.value.clone()) {
            map.append(name, value);
        }
    }
    map
}

/// Trailers from an HTTP/2 stream as the stream layer's headers.
pub fn trailers(map: &HeaderMap) -> Headers {
    let mut headers = Headers::with_capacity(map.len());
    for (name, value) in map {
        headers.append(
            Bytes::copy_from_slice(name.as_str().as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        );
    }
    headers
}
