//! Protocol layer: HTTP/1 response heads from upstreams — status line, response framing
//! (RFC 9112 §6.3) and persistence. Anything malformed is refused; the router answers 502.
use bytes::{Bytes, BytesMut};

use super::{
    fields::{head_fields, Slots, Spans},
    Framing, Limits, ResponseError,
};
use crate::stream::headers::{ResponseHead, Version};

/// A response head taken off an upstream connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    /// Hop-by-hop fields removed. Content-Length and Transfer-Encoding stay only where they
    /// are not the framing but describe the GET response (responses to HEAD, 304), so they
    /// reach the client unchanged.
    pub head: ResponseHead,
    /// How the body that follows is delimited. 1xx are interim responses with `Empty`
    /// framing: another head follows, except after 101, where the bytes after the head belong
    /// to the upgraded protocol. A 2xx to CONNECT opens a tunnel whatever this says (the
    /// caller knows the request was CONNECT).
    pub framing: Framing,
    /// Whether the upstream connection may be reused after this response: false for
    /// `UntilClose`, 101, and per the Connection / version rules (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// On a 101, the lower-cased protocol the server switched to.
    pub upgrade: Option<Bytes>,
}

/// Takes one response head off the front of `buf`: `Ok(None)` until it is complete; on
/// success its bytes are consumed and the body stays in `buf`. `request_was_head`: the request
/// was HEAD, so the response has no body whatever its fields say.
pub fn parse_response(
    buf: &mut BytesMut,
    request_was_head: bool,
    limits: &Limits,
) -> Result<Option<ParsedResponse>, ResponseError> {
    let window = buf.len().min(limits.max_head_bytes);
    let (status, version, spans, head_len) = {
        let base = &buf[..window];
        let mut slots = Slots::new(limits.max_headers);
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            base,
            slots.as_mut(),
        );
        match parsed {
            Ok(httparse::Status::Complete(len)) => {
                let (Some(status), Some(minor)) = (resp.code, resp.version) else {
                    return Err(ResponseError::BadStatusLine);
                };
                let version = if minor == 1 {
                    Version::Http11
                } else {
                    Version::Http10
                };
                (status, version, Spans::record(base, resp.headers), len)
            }
            Ok(httparse::Status::Partial) if buf.len() < limits.max_head_bytes => return Ok(None),
            Ok(httparse::Status::Partial) => return Err(ResponseError::HeadTooLarge),
            Err(e) => return Err(syntax_error(e)),
        }
    };
    if !(100..=599).contains(&status) {
        return Err(ResponseError::InvalidStatus);
    }
    spans.lower_case_names(buf);
    let head = buf.split_to(head_len).freeze();
    let bodiless_get_description = request_was_head || status == 304;
    let mut fields = head_fields(&head, &spans, bodiless_get_description);
    if fields.transfer_encoding_on(version) {
        return Err(ResponseError::InvalidTransferEncoding);
    }
    let declared = fields.declared_framing()?;
    let framing = if status < 200 || status == 204 {
        // RFC 9112 §6.1, RFC 9110 §8.6: no Transfer-Encoding, no non-zero Content-Length.
        if declared.is_some_and(|f| f != Framing::Empty) {
            return Err(ResponseError::FramingNotAllowed);
        }
        Framing::Empty
    } else if bodiless_get_description {
        Framing::Empty
    } else {
        declared.unwrap_or(Framing::UntilClose)
    };
    let keep_alive =
        fields.connection.keep_alive(version) && framing != Framing::UntilClose && status != 101;
    let upgrade = fields.upgrade.take().filter(|_| status == 101);
    Ok(Some(ParsedResponse {
        head: ResponseHead {
            status,
            version,
            headers: fields.headers,
        },
        framing,
        keep_alive,
        upgrade,
    }))
}

fn syntax_error(e: httparse::Error) -> ResponseError {
    match e {
        httparse::Error::HeaderName => ResponseError::InvalidHeaderName,
        httparse::Error::HeaderValue => ResponseError::InvalidHeaderValue,
        httparse::Error::NewLine => ResponseError::InvalidLineEnding,
        httparse::Error::TooManyHeaders => ResponseError::TooManyHeaders,
        httparse::Error::Version => ResponseError::UnsupportedVersion,
        httparse::Error::Token | httparse::Error::Status => ResponseError::BadStatusLine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str, head: bool) -> Result<Option<ParsedResponse>, ResponseError> {
        parse_response(&mut BytesMut::from(input), head, &Limits::default())
    }

    fn parsed(input: &str) -> ParsedResponse {
        parse(input, false).unwrap().unwrap()
    }

    #[test]
    fn framing_table() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
            ("HTTP/1.1 204 No Content\r\n\r\n", Framing::Empty, true),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
                Framing::Empty,
                true,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", Framing::Empty, true),
            (
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                Framing::Length(1),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n",
                Framing::Length(2),
                true,
            ),
        ];
        for (input, framing, keep_alive) in cases {
            let r = parsed(input);
            assert_eq!(
                (r.framing, r.keep_alive),
                (framing, keep_alive),
                "{input:?}"
            );
        }
    }

    #[test]
    fn head_and_304_keep_framing_fields() {
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Empty);
        assert_eq!(r.head.headers.get("content-length").unwrap(), "1234");
        let r = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.framing, Framing::Empty);
        assert_eq!(r.head.headers.get("transfer-encoding").unwrap(), "chunked");
        let r = parsed("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
        assert!(!r.head.headers.contains("content-length"));
    }

    #[test]
    fn switching_protocols() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n\x81\x05"[..],
        );
        let r = parse_response(&mut buf, false, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(r.head.status, 101);
        assert_eq!(r.framing, Framing::Empty);
        assert!(!r.keep_alive);
        assert_eq!(r.upgrade.as_deref(), Some(&b"websocket"[..]));
        assert_eq!(&buf[..], b"\x81\x05", "upgraded bytes stay");
    }

    #[test]
    fn malformed_responses() {
        let cases = [
            ("HTTP/1.1 099 X\r\n\r\n", ResponseError::InvalidStatus),
            ("HTTP/1.1 600 X\r\n\r\n", ResponseError::InvalidStatus),
            ("HTTP/1.1 20 X\r\n\r\n", ResponseError::BadStatusLine),
            ("HTTP/2.0 200 OK\r\n\r\n", ResponseError::UnsupportedVersion),
            (
                "HTTP/1.1 200 OK\r\nA b: c\r\n\r\n",
                ResponseError::InvalidHeaderName,
            ),
            (
                "HTTP/1.1 200 OK\r\nA : c\r\n\r\n",
                ResponseError::InvalidHeaderName,
            ),
            (
                "HTTP/1.1 200 OK\r\nA: c\r\n folded\r\n\r\n",
                ResponseError::InvalidHeaderName,
            ),
            (
                "HTTP/1.1 200 OK\r\nA: c\x01\r\n\r\n",
                ResponseError::InvalidHeaderValue,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                ResponseError::DuplicateContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ResponseError::InvalidContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                ResponseError::ContentLengthWithTransferEncoding,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                ResponseError::InvalidTransferEncoding,
            ),
            (
                "HTTP/1.1 204 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                ResponseError::FramingNotAllowed,
            ),
            (
                "HTTP/1.1 100 OK\r\nContent-Length: 3\r\n\r\n",
                ResponseError::FramingNotAllowed,
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                ResponseError::InvalidTransferEncoding,
            ),
        ];
        for (input, err) in cases {
            assert_eq!(parse(input, false), Err(err), "{input:?}");
        }
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_head_bytes: 32,
            max_headers: 4,
        };
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nA: 1\r\n");
        assert_eq!(parse_response(&mut buf, false, &limits), Ok(None));
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
        assert_eq!(
            parse_response(&mut buf, false, &limits),
            Err(ResponseError::HeadTooLarge)
        );
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n");
        let limits = Limits {
            max_head_bytes: 1024,
            max_headers: 1,
        };
        assert_eq!(
            parse_response(&mut buf, false, &limits),
            Err(ResponseError::TooManyHeaders)
        );
    }
}
