//! Protocol layer: HTTP/2 through the `h2` crate, which does the framing, HPACK, stream states
//! and flow control. Here: the heads the crate hands over (`http` types) as the stream
//! layer's codec-neutral heads and back, with the rules of RFC 9113 §8 the crate leaves to
//! its user (cookie crumbs joined, connection-specific fields never sent, `:authority` as the
//! `host` the rest of the proxy reads).
pub mod keepalive;
pub mod tunnel;

use std::future::poll_fn;

use bytes::{Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use http::{header::HeaderName, HeaderMap, HeaderValue, Request, Response};
use model::http::Http2Options;

use super::http1::Framing;
use crate::stream::headers::{Headers, RequestHead, ResponseHead, Version};

/// Fields that only mean something on one HTTP/1 connection (RFC 9113 §8.2.2): never sent on
/// an HTTP/2 stream (the `h2` crate refuses them); `te` only as `trailers`, and `host`, which
/// HTTP/2 carries as `:authority`.
const CONNECTION_SPECIFIC: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The HTTP/2 server side as the connection manager sets it up: `options`' SETTINGS, windows
/// no larger than `buffer_limit` (what a client may send ahead is what the proxy is willing
/// to hold; Envoy bounds it with watermarks instead), the header list within
/// `max_header_bytes`.
pub fn server(
    options: &Http2Options,
    buffer_limit: usize,
    max_header_bytes: usize,
) -> h2::server::Builder {
    let window_cap = u32::try_from(buffer_limit).unwrap_or(u32::MAX).max(65_535);
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(options.initial_stream_window_size.min(window_cap))
        .initial_connection_window_size(options.initial_connection_window_size.min(window_cap))
        .max_concurrent_streams(options.max_concurrent_streams)
        .header_table_size(options.hpack_table_size)
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .max_send_buffer_size(buffer_limit);
    if options.allow_connect {
        // SETTINGS_ENABLE_CONNECT_PROTOCOL: clients may send extended CONNECT (RFC 8441).
        builder.enable_connect_protocol();
    }
    builder
}

/// A request as the connection manager serves it.
pub struct IncomingRequest {
    pub head: RequestHead,
    /// `Empty` when the HEADERS frame ended the stream, `Length` with a `content-length`,
    /// else `Chunked` (the body's end is the stream's end).
    pub framing: Framing,
    pub body: RecvStream,
    pub expect_continue: bool,
    /// A plain CONNECT (no `:protocol`): its DATA frames are the tunnel's bytes.
    pub connect: bool,
    /// The `:protocol` of an extended CONNECT (RFC 8441), served as an HTTP/1.1 upgrade to
    /// that protocol (a GET), as Envoy normalizes it.
    pub upgrade: Option<Bytes>,
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
    let upgrade = parts
        .extensions
        .get::<h2::ext::Protocol>()
        .map(|protocol| Bytes::copy_from_slice(protocol.as_str().as_bytes()));
    let connect = parts.method == http::Method::CONNECT && upgrade.is_none();
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
                // Kept as the framing (as HTTP/1 keeps it), not as a field: each codec
                // writes it out again.
                match (parsed, length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => return Err(RequestError::BadContentLength),
                }
                continue;
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
    // A tunnel's DATA frames are not a body: its request has none.
    let tunnel = connect || upgrade.is_some();
    let framing = match (body.is_end_stream() || tunnel, length) {
        (true, _) => Framing::Empty,
        (false, Some(n)) => Framing::of_length(n),
        (false, None) => Framing::Chunked,
    };
    let method = match upgrade {
        Some(_) => Bytes::from_static(b"GET"),
        None => Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
    };
    let head = RequestHead {
        method,
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
        upgrade,
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
    // The values are copied into one buffer of their own and sliced from it: HPACK's table
    // keeps values, and a slice of the read buffer they came from would pin all of it (32 KiB
    // per connection); one copy per head instead of one allocation per value.
    let size = headers.iter().map(|h| h.value.len()).sum();
    let mut copied = BytesMut::with_capacity(size);
    headers
        .iter()
        .for_each(|h| copied.extend_from_slice(&h.value));
    let mut copied = copied.freeze();
    let mut map = HeaderMap::with_capacity(headers.len());
    for header in headers.iter() {
        let value = copied.split_to(header.value.len());
        let name = match HeaderName::from_bytes(&header.name) {
            Ok(name) if !CONNECTION_SPECIFIC.contains(&name.as_str()) => name,
            _ => continue,
        };
        if name == http::header::TE && header.value != "trailers" {
            continue;
        }
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            map.append(name, value);
        }
    }
    map
}

/// Fields (trailers, or a response's head) from an HTTP/2 stream as the stream layer's
/// headers.
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

/// The HTTP/2 request for an upstream: `:scheme`, `:authority` (from `host`) and `:path` from
/// the head, its fields as HTTP/2 carries them, and `content-length` when `framing` has one.
/// A CONNECT (no path) has only `:authority` (RFC 9113 §8.5).
pub fn request(
    head: &RequestHead,
    scheme: &str,
    framing: &Framing,
) -> Result<Request<()>, http::Error> {
    let mut uri = http::Uri::builder();
    if let Some(authority) = head.headers.get("host") {
        if !head.path.is_empty() {
            uri = uri.scheme(scheme);
        }
        uri = uri.authority(authority.as_ref());
    }
    if !head.path.is_empty() {
        uri = uri.path_and_query(head.path.as_ref());
    }
    let mut request = Request::builder()
        .method(head.method.as_ref())
        .uri(uri.build()?)
        .version(http::Version::HTTP_2)
        .body(())?;
    *request.headers_mut() = header_map(&head.headers);
    if let Framing::Length(n) = framing {
        let length = HeaderValue::from(*n);
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, length);
    }
    Ok(request)
}

/// The stream layer's head of an HTTP/2 response, and its body's framing: `content-length`
/// (then taken out of the fields, as HTTP/1 framing is) or the stream's end.
pub fn response_head(response: &Response<RecvStream>) -> (ResponseHead, Framing) {
    let mut headers = trailers(response.headers());
    let length = headers
        .get("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
    let framing = match (response.body().is_end_stream(), length) {
        (true, _) => Framing::Empty,
        (false, Some(n)) => {
            headers.remove("content-length");
            Framing::of_length(n)
        }
        (false, None) => Framing::Chunked,
    };
    let head = ResponseHead {
        status: response.status().as_u16(),
        version: Version::Http2,
        headers,
    };
    (head, framing)
}

/// Sends `data` as the stream's window allows (waiting for WINDOW_UPDATEs: a slow peer slows
/// the sender, nothing piles up); `end` ends the stream with its last byte.
pub async fn send_all(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<usize, h2::Error> {
    let len = data.len();
    if data.is_empty() && end {
        send.send_data(data, true)?;
        return Ok(0);
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(granted) => granted?,
            None => return Err(h2::Reason::STREAM_CLOSED.into()),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        send.send_data(chunk, end && data.is_empty())?;
    }
    Ok(len)
}

/// What an HTTP/2 stream's body yields next.
pub enum Received {
    /// A DATA frame's bytes (never empty).
    Data(Bytes),
    /// The body ended, with these trailers.
    End(Option<Headers>),
}

/// The next DATA (or the end) of a stream's body, after giving back to the flow-control window
/// what the previous chunk took (`unreleased`, set again to this chunk's size): the window
/// reopens only as the reader passes chunks on.
pub async fn receive(recv: &mut RecvStream, unreleased: &mut usize) -> Result<Received, h2::Error> {
    if *unreleased > 0 {
        let _ = recv.flow_control().release_capacity(*unreleased);
        *unreleased = 0;
    }
    loop {
        match poll_fn(|cx| recv.poll_data(cx)).await {
            Some(Ok(chunk)) if chunk.is_empty() => continue,
            Some(Ok(chunk)) => {
                *unreleased = chunk.len();
                return Ok(Received::Data(chunk));
            }
            Some(Err(error)) => return Err(error),
            None => break,
        }
    }
    let trailers = poll_fn(|cx| recv.poll_trailers(cx)).await?;
    Ok(Received::End(trailers.as_ref().map(self::trailers)))
}
