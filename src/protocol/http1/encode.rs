//! Protocol layer: writing HTTP/1.1 — request and response heads with the framing fields the
//! body needs, chunks and the last chunk with trailers — appended to an output buffer.
use super::Framing;
use crate::stream::headers::{Headers, RequestHead, ResponseHead, Version};

/// Appends a request head. The target is `head.path`, or the authority for CONNECT (empty
/// path). Framing fields come from `framing`, not from `head.headers` (which carry none after
/// parsing): `content-length` or `transfer-encoding: chunked`; an `Empty` body gets
/// `content-length: 0` (servers may otherwise answer 411) except for methods whose requests
/// carry no body by convention (GET, HEAD, DELETE, CONNECT, TRACE), as Envoy. Hop-by-hop fields for an
/// upgrade (`connection: upgrade`, `upgrade: …`) are the caller's to add to the head.
pub fn encode_request_head(head: &RequestHead, framing: &Framing, out: &mut Vec<u8>) {
    let target: &[u8] = if head.path.is_empty() {
        head.authority()
    } else {
        &head.path
    };
    out.reserve(head.method.len() + target.len() + fields_len(&head.headers) + 64);
    out.extend_from_slice(&head.method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.push(b' ');
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(&head.headers, out);
    match framing {
        Framing::Length(n) => write_content_length(*n, out),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty
            if !matches!(
                &head.method[..],
                b"GET" | b"HEAD" | b"DELETE" | b"CONNECT" | b"TRACE"
            ) =>
        {
            out.extend_from_slice(b"content-length: 0\r\n")
        }
        Framing::Empty | Framing::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a response head with the standard reason phrase. Framing: `content-length`,
/// `transfer-encoding: chunked`, nothing for `UntilClose`, and for `Empty`
/// `content-length: 0` unless the status has no body (1xx, 204, 304), the response answers a
/// HEAD request (`request_was_head`: its Content-Length, if any, describes the GET response
/// and is in the head already, as Envoy passes it on; none is made up), or the head already
/// carries Content-Length or Transfer-Encoding. `!keep_alive` (or `UntilClose`) adds
/// `connection: close`; a kept-alive HTTP/1.0 response gets `connection: keep-alive`. For 1xx
/// pass `keep_alive = true`; a 101's `connection: upgrade` and `upgrade` fields are the
/// caller's to add.
pub fn encode_response_head(
    head: &ResponseHead,
    framing: &Framing,
    keep_alive: bool,
    request_was_head: bool,
    out: &mut Vec<u8>,
) {
    status_line_and_fields(head, out);
    let bodiless =
        request_was_head || head.status < 200 || head.status == 204 || head.status == 304;
    match framing {
        Framing::Length(n) => write_content_length(*n, out),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty
            if !bodiless
                && !head.headers.contains("content-length")
                && !head.headers.contains("transfer-encoding") =>
        {
            out.extend_from_slice(b"content-length: 0\r\n")
        }
        Framing::Empty | Framing::UntilClose => {}
    }
    if !keep_alive || *framing == Framing::UntilClose {
        out.extend_from_slice(b"connection: close\r\n");
    } else if head.version == Version::Http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the head of a response that turns the connection into a tunnel (a 101, or a 200
/// to a CONNECT): no framing fields, since the bytes after it are the tunnel's.
pub fn encode_tunnel_head(head: &ResponseHead, out: &mut Vec<u8>) {
    status_line_and_fields(head, out);
    out.extend_from_slice(b"\r\n");
}

fn status_line_and_fields(head: &ResponseHead, out: &mut Vec<u8>) {
    let reason = reason_phrase(head.status);
    out.reserve(reason.len() + fields_len(&head.headers) + 96);
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.push(b' ');
    write_decimal(u64::from(head.status), out);
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(&head.headers, out);
}

/// Appends one chunk of a chunked body; nothing for empty `data` (an empty chunk would end
/// the body).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    out.reserve(data.len() + 20);
    encode_chunk_header(data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends only the size line of a `len`-byte chunk (`len` > 0), for callers that write the
/// data itself from its own buffer (vectored writes) followed by CRLF.
fn encode_chunk_header(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len > 0, "a zero-size chunk ends the body");
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends the last chunk, the trailer fields if any, and the final CRLF.
pub fn encode_last_chunk(trailers: Option<&Headers>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        write_fields(trailers, out);
    }
    out.extend_from_slice(b"\r\n");
}

fn fields_len(headers: &Headers) -> usize {
    headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum()
}

fn write_fields(headers: &Headers, out: &mut Vec<u8>) {
    for h in headers.iter() {
        out.extend_from_slice(&h.name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
}

fn write_content_length(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"content-length: ");
    write_decimal(n, out);
    out.extend_from_slice(b"\r\n");
}

fn write_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The IANA registry's reason phrases (RFC 9110 §15); empty for unregistered codes.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn headers(pairs: &[(&'static str, &'static str)]) -> Headers {
        let mut h = Headers::default();
        for (n, v) in pairs {
            h.append(*n, *v);
        }
        h
    }

    fn request(method: &'static str, path: &'static str) -> RequestHead {
        RequestHead {
            method: Bytes::from_static(method.as_bytes()),
            path: Bytes::from_static(path.as_bytes()),
            version: Version::Http11,
            headers: headers(&[("host", "a.example")]),
        }
    }

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn request_heads() {
        let mut out = Vec::new();
        encode_request_head(&request("GET", "/x"), &Framing::Empty, &mut out);
        assert_eq!(text(&out), "GET /x HTTP/1.1\r\nhost: a.example\r\n\r\n");
        out.clear();
        encode_request_head(&request("POST", "/"), &Framing::Empty, &mut out);
        assert_eq!(
            text(&out),
            "POST / HTTP/1.1\r\nhost: a.example\r\ncontent-length: 0\r\n\r\n"
        );
        out.clear();
        encode_request_head(&request("PUT", "/"), &Framing::Length(1234567), &mut out);
        assert!(text(&out).ends_with("content-length: 1234567\r\n\r\n"));
        out.clear();
        encode_request_head(&request("POST", "/"), &Framing::Chunked, &mut out);
        assert!(text(&out).ends_with("transfer-encoding: chunked\r\n\r\n"));
        out.clear();
        encode_request_head(&request("CONNECT", ""), &Framing::Empty, &mut out);
        assert!(text(&out).starts_with("CONNECT a.example HTTP/1.1\r\n"));
    }

    fn response(status: u16, version: Version, h: &[(&'static str, &'static str)]) -> ResponseHead {
        ResponseHead {
            status,
            version,
            headers: headers(h),
        }
    }

    #[test]
    fn response_heads() {
        let cases = [
            (
                response(200, Version::Http11, &[("x", "1")]),
                Framing::Length(12),
                true,
                "HTTP/1.1 200 OK\r\nx: 1\r\ncontent-length: 12\r\n\r\n",
            ),
            (
                response(404, Version::Http11, &[]),
                Framing::Empty,
                false,
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            ),
            (
                response(204, Version::Http11, &[]),
                Framing::Empty,
                true,
                "HTTP/1.1 204 No Content\r\n\r\n",
            ),
            (
                response(200, Version::Http11, &[("content-length", "99")]),
                Framing::Empty,
                true,
                "HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n",
            ),
            (
                response(200, Version::Http11, &[]),
                Framing::UntilClose,
                true,
                "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
            ),
            (
                response(200, Version::Http10, &[]),
                Framing::Length(1),
                true,
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\n",
            ),
            (
                response(299, Version::Http11, &[]),
                Framing::Chunked,
                true,
                "HTTP/1.1 299 \r\ntransfer-encoding: chunked\r\n\r\n",
            ),
            (
                response(100, Version::Http11, &[]),
                Framing::Empty,
                true,
                "HTTP/1.1 100 Continue\r\n\r\n",
            ),
        ];
        for (head, framing, keep_alive, expected) in cases {
            let mut out = Vec::new();
            encode_response_head(&head, &framing, keep_alive, false, &mut out);
            assert_eq!(text(&out), expected);
        }
    }

    /// fuzz/http1_codec's round trip: a HEAD response without Content-Length was written with
    /// `content-length: 0`, telling the client the GET response would be empty. Envoy adds
    /// no length to a HEAD response; one the upstream sent passes unchanged.
    #[test]
    fn head_responses_get_no_made_up_length() {
        let mut out = Vec::new();
        let head = response(200, Version::Http11, &[]);
        encode_response_head(&head, &Framing::Empty, true, true, &mut out);
        assert_eq!(text(&out), "HTTP/1.1 200 OK\r\n\r\n");
        out.clear();
        let head = response(200, Version::Http11, &[("content-length", "512")]);
        encode_response_head(&head, &Framing::Empty, true, true, &mut out);
        assert_eq!(text(&out), "HTTP/1.1 200 OK\r\ncontent-length: 512\r\n\r\n");
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        encode_chunk(b"", &mut out);
        assert!(out.is_empty());
        encode_chunk(&[b'x'; 26], &mut out);
        encode_chunk(b"hello", &mut out);
        encode_last_chunk(Some(&headers(&[("grpc-status", "0")])), &mut out);
        let mut expected = b"1a\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 26]);
        expected.extend_from_slice(b"\r\n5\r\nhello\r\n0\r\ngrpc-status: 0\r\n\r\n");
        assert_eq!(out, expected);
        out.clear();
        encode_last_chunk(None, &mut out);
        assert_eq!(out, b"0\r\n\r\n");
    }

    #[test]
    fn every_listed_status_has_its_phrase() {
        assert_eq!(reason_phrase(503), "Service Unavailable");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(599), "");
    }
}
