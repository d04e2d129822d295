//! Protocol layer: HTTP/1 request heads — the request line and target forms (RFC 9112 §3),
//! Host rules, request framing (§6.3) and persistence, checked before anything is routed.
use bytes::{Buf, Bytes, BytesMut};

use super::{
    fields::{head_fields, range_in, Slots, Spans},
    syntax::{authority_port, has_bare_lf, is_known_method, other_version, OtherVersion},
    Framing, Limits, RequestError,
};
use crate::stream::headers::{RequestHead, Version};

/// A request head taken off the connection, and what the connection manager needs to know
/// about the message it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    /// Hop-by-hop fields removed; `host` set from the target for absolute and authority forms.
    pub head: RequestHead,
    /// How the body that follows in the buffer is delimited (never `UntilClose`).
    pub framing: Framing,
    /// Whether the connection may carry another request after this one (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request; the field itself is removed from the
    /// head (the proxy answers the expectation, as Envoy does by default).
    pub expect_continue: bool,
    /// The lower-cased Upgrade value when the request asks to switch protocols
    /// (`Connection: upgrade` on HTTP/1.1). `h2c` is ignored, as in Envoy.
    pub upgrade: Option<Bytes>,
    /// A CONNECT request: `head.path` is empty and `host` holds the authority-form target; the
    /// bytes after the head belong to the tunnel once it is established.
    pub connect: bool,
}

/// Takes one request head off the front of `buf`.
///
/// `Ok(None)`: the head is not complete yet (leading empty lines, which RFC 9112 §2.2 says to
/// ignore, are consumed). `Ok(Some)`: the head's bytes are consumed and the body, if any,
/// stays in `buf`. `Err`: refuse with `status()` and close. Only the first
/// `limits.max_head_bytes` bytes are ever examined, so the outcome does not depend on how the
/// bytes arrived.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<ParsedRequest>, RequestError> {
    skip_empty_lines(buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    let window = buf.len().min(limits.max_head_bytes);
    let (line, spans, head_len) = loop {
        let minor_at = {
            let base = &buf[..window];
            let mut slots = Slots::new(limits.max_headers);
            let mut req = httparse::Request::new(&mut []);
            match req.parse_with_uninit_headers(base, slots.as_mut()) {
                Ok(httparse::Status::Complete(len)) => {
                    let (Some(method), Some(target), Some(minor)) =
                        (req.method, req.path, req.version)
                    else {
                        return Err(RequestError::BadRequestLine);
                    };
                    // RFC 9112 §2.2 lets a recipient take a bare LF for a line end; a proxy
                    // that does, in front of a server that does not, reads other messages
                    // than the server (a smuggling vector), so request heads need CRLF.
                    if has_bare_lf(&base[..len]) {
                        return Err(RequestError::InvalidLineEnding);
                    }
                    let line = RequestLine {
                        method: range_in(base, method.as_bytes()),
                        target: range_in(base, target.as_bytes()),
                        version: if minor == 1 {
                            Version::Http11
                        } else {
                            Version::Http10
                        },
                    };
                    break (line, Spans::record(base, req.headers), len);
                }
                Ok(httparse::Status::Partial) => return incomplete(buf, limits),
                Err(httparse::Error::Version) => match version_error(base)? {
                    Some(at) => at,
                    None => return incomplete(buf, limits),
                },
                Err(e) => return Err(syntax_error(e)),
            }
        };
        // RFC 9110 §2.5, §6.2: HTTP/1.x with x > 1 is served as HTTP/1.1, the highest minor
        // version here. The digit is rewritten in place (the head is not copied, and the
        // version is not kept as bytes) so that httparse takes the line on the next pass.
        buf[minor_at] = b'1';
    };
    spans.lower_case_names(buf);
    let head = buf.split_to(head_len).freeze();
    interpret(&head, &line, &spans).map(Some)
}

/// Where the request line's parts sit in the head.
struct RequestLine {
    method: (u32, u32),
    target: (u32, u32),
    version: Version,
}

fn slice(head: &Bytes, (start, end): (u32, u32)) -> Bytes {
    head.slice(start as usize..end as usize)
}

/// Applies the request rules to a complete, syntactically valid head.
fn interpret(
    head: &Bytes,
    line: &RequestLine,
    spans: &Spans,
) -> Result<ParsedRequest, RequestError> {
    let method = &head[line.method.0 as usize..line.method.1 as usize];
    let target = &head[line.target.0 as usize..line.target.1 as usize];
    if !is_known_method(method) {
        return Err(RequestError::UnknownMethod);
    }
    let connect = method == b"CONNECT";
    let form = target_form(method, target)?;
    let mut fields = head_fields(head, spans, false);
    if fields.connection.rejected {
        return Err(RequestError::ConnectionHeaderRejected);
    }
    // RFC 9112 §3.2: exactly one valid Host on HTTP/1.1; never more than one.
    if fields.host_lines > 1 {
        return Err(RequestError::DuplicateHost);
    }
    let path = match form {
        TargetForm::Origin => slice(head, line.target),
        TargetForm::Absolute { authority, path } => {
            // RFC 9112 §3.2.2: the target's authority replaces any Host field.
            let at = line.target.0;
            let authority = (at + authority.0, at + authority.1);
            fields.headers.set("host", slice(head, authority));
            origin_path(slice(head, (at + path.0, at + path.1)))
        }
        TargetForm::Authority => {
            fields.headers.set("host", slice(head, line.target));
            Bytes::new()
        }
    };
    match fields.headers.get("host") {
        None if line.version == Version::Http11 => return Err(RequestError::MissingHost),
        // RFC 9112 §3.2: an invalid Host value is a 400 (an empty one is allowed).
        Some(host) if !host.is_empty() && authority_port(host).is_none() => {
            return Err(RequestError::InvalidHost)
        }
        _ => {}
    }
    if fields.transfer_encoding_on(line.version) {
        return Err(RequestError::TransferEncodingOnHttp10);
    }
    let framing = match fields.declared_framing()? {
        None => Framing::Empty,
        // RFC 9110 §9.3.6: CONNECT content has no defined meaning; Envoy refuses it.
        Some(Framing::Chunked) if connect => return Err(RequestError::UnsupportedTransferCoding),
        Some(Framing::Length(_)) if connect => return Err(RequestError::ConnectWithBody),
        Some(framing) => framing,
    };
    let http11 = line.version == Version::Http11;
    let upgrade = fields
        .upgrade
        .take()
        .filter(|u| http11 && fields.connection.upgrade && !u.is_empty() && *u != "h2c");
    Ok(ParsedRequest {
        keep_alive: fields.connection.keep_alive(line.version),
        expect_continue: http11 && fields.expect_continue,
        upgrade,
        connect,
        framing,
        head: RequestHead {
            method: slice(head, line.method),
            path,
            version: line.version,
            headers: fields.headers,
        },
    })
}

/// The request-target forms of RFC 9112 §3.2, with offsets relative to the target.
#[derive(Debug, PartialEq, Eq)]
enum TargetForm {
    /// `/path?query`, or `*` for OPTIONS (kept as the path).
    Origin,
    /// `http://authority/path?query`.
    Absolute {
        authority: (u32, u32),
        path: (u32, u32),
    },
    /// `host:port`, CONNECT only.
    Authority,
}

fn target_form(method: &[u8], target: &[u8]) -> Result<TargetForm, RequestError> {
    // httparse admits obs-text and `#` in the target; a request target is ASCII without a
    // fragment (RFC 9112 §3.2; Envoy rejects fragments too).
    if target.iter().any(|&b| b >= 0x80 || b == b'#') {
        return Err(RequestError::InvalidTarget);
    }
    if method == b"CONNECT" {
        // RFC 9112 §3.2.3: `uri-host ":" port`, the port required.
        let port = authority_port(target).unwrap_or_default();
        return if !port.is_empty() && port.len() <= 5 {
            Ok(TargetForm::Authority)
        } else {
            Err(RequestError::InvalidTarget)
        };
    }
    match target {
        [b'/', ..] => Ok(TargetForm::Origin),
        b"*" if method == b"OPTIONS" => Ok(TargetForm::Origin),
        _ => absolute_form(target).ok_or(RequestError::InvalidTarget),
    }
}

/// `http(s)://authority[path-abempty][?query]` without userinfo (RFC 9110 §4.2.4).
fn absolute_form(target: &[u8]) -> Option<TargetForm> {
    let scheme_len = target.iter().position(|b| *b == b':')?;
    let scheme = &target[..scheme_len];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return None;
    }
    let rest = target[scheme_len..].strip_prefix(b"://")?;
    let start = scheme_len + 3;
    let authority_len = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    authority_port(authority)?;
    let path_start = start + authority_len;
    Some(TargetForm::Absolute {
        authority: (start as u32, path_start as u32),
        path: (path_start as u32, target.len() as u32),
    })
}

/// The origin-form path of an absolute target's `path-abempty[?query]`: `/` when empty; a
/// query with no path gets a leading `/` (the one copy, rare).
fn origin_path(path: Bytes) -> Bytes {
    match path.first() {
        None => Bytes::from_static(b"/"),
        Some(b'/') => path,
        Some(_) => [&b"/"[..], &path[..]].concat().into(),
    }
}

/// Drops CRLF / LF lines before a request line (RFC 9112 §2.2); a CR followed by anything but
/// LF is malformed.
fn skip_empty_lines(buf: &mut BytesMut) -> Result<(), RequestError> {
    let mut n = 0;
    loop {
        match (buf.get(n), buf.get(n + 1)) {
            (Some(b'\n'), _) => n += 1,
            (Some(b'\r'), Some(b'\n')) => n += 2,
            (Some(b'\r'), Some(_)) => return Err(RequestError::InvalidLineEnding),
            _ => break,
        }
    }
    buf.advance(n);
    Ok(())
}

/// A head still incomplete: wait, unless it can no longer fit the limit — 414 when not even
/// the request line ended within it, 431 otherwise.
fn incomplete(buf: &BytesMut, limits: &Limits) -> Result<Option<ParsedRequest>, RequestError> {
    if buf.len() < limits.max_head_bytes {
        return Ok(None);
    }
    if buf[..limits.max_head_bytes].contains(&b'\n') {
        Err(RequestError::HeadTooLarge)
    } else {
        Err(RequestError::RequestLineTooLong)
    }
}

/// httparse refuses every version but 1.0 and 1.1. Once the request line has ended (`Ok(None)`
/// until then: the answer could still change): the offset of the minor digit of a higher
/// `HTTP/1.x`, to be served as 1.1; a 505 for another `HTTP/d.d` in a well-formed line; a 400
/// for anything else. The method is checked first, as Envoy does (so the HTTP/2 preface,
/// `PRI * HTTP/2.0`, is a 400).
fn version_error(base: &[u8]) -> Result<Option<usize>, RequestError> {
    let Some(end) = base.iter().position(|b| *b == b'\n') else {
        return Ok(None);
    };
    let line = base[..end].strip_suffix(b"\r").unwrap_or(&base[..end]);
    let method = line.split(|b| *b == b' ').next().unwrap_or_default();
    if !is_known_method(method) {
        return Err(RequestError::UnknownMethod);
    }
    match other_version(line) {
        Some(OtherVersion::HigherMinor(at)) => Ok(Some(at)),
        Some(OtherVersion::Unsupported) => Err(RequestError::UnsupportedVersion),
        None => Err(RequestError::BadRequestLine),
    }
}

fn syntax_error(e: httparse::Error) -> RequestError {
    match e {
        httparse::Error::HeaderName => RequestError::InvalidHeaderName,
        httparse::Error::HeaderValue => RequestError::InvalidHeaderValue,
        httparse::Error::NewLine => RequestError::InvalidLineEnding,
        httparse::Error::TooManyHeaders => RequestError::TooManyHeaders,
        httparse::Error::Token | httparse::Error::Version | httparse::Error::Status => {
            RequestError::BadRequestLine
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<Option<ParsedRequest>, RequestError> {
        parse_request(&mut BytesMut::from(input), &Limits::default())
    }

    fn parsed(input: &str) -> ParsedRequest {
        parse(input).unwrap().unwrap()
    }

    #[test]
    fn simple_get_is_zero_copy_and_lower_cased() {
        let mut buf = BytesMut::from(
            "GET /a?b=1 HTTP/1.1\r\nHost: Example.com\r\nX-Mixed-Case: V a l\r\n\r\nrest",
        );
        let req = parse_request(&mut buf, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..], b"rest");
        assert_eq!(req.head.method, "GET");
        assert_eq!(req.head.path, "/a?b=1");
        assert_eq!(req.head.version, Version::Http11);
        assert_eq!(req.head.authority(), b"Example.com");
        assert_eq!(req.head.headers.get("x-mixed-case").unwrap(), "V a l");
        assert_eq!(req.framing, Framing::Empty);
        assert!(req.keep_alive && !req.expect_continue && !req.connect);
        assert_eq!(req.upgrade, None);
    }

    #[test]
    fn incomplete_heads_wait() {
        for prefix in [
            "",
            "\r\n",
            "GET",
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\r",
        ] {
            let mut buf = BytesMut::from(prefix);
            assert_eq!(
                parse_request(&mut buf, &Limits::default()),
                Ok(None),
                "{prefix:?}"
            );
        }
    }

    #[test]
    fn keep_alive_rules() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, Close\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            (
                "GET / HTTP/1.0\r\nConnection: foo\r\nConnection: Keep-Alive\r\n\r\n",
                true,
            ),
        ];
        for (input, keep_alive) in cases {
            assert_eq!(parsed(input).keep_alive, keep_alive, "{input:?}");
        }
    }

    #[test]
    fn hop_by_hop_fields_are_removed() {
        let req = parsed(
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, Host, TE\r\n\
             Keep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers, deflate\r\nx-secret: 1\r\n\
             Upgrade: foo\r\nContent-Length: 3\r\nEnd: 1\r\n\r\nabc",
        );
        let names: Vec<_> = req.head.headers.iter().map(|h| h.name.clone()).collect();
        assert_eq!(names, ["host", "te", "end"]);
        assert_eq!(req.head.headers.get("te").unwrap(), "trailers");
        assert_eq!(req.framing, Framing::Length(3));
        assert_eq!(req.upgrade, None, "upgrade needs Connection: upgrade");
        let req = parsed("GET / HTTP/1.1\r\nHost: a\r\nTE: gzip\r\n\r\n");
        assert!(!req.head.headers.contains("te"));
    }

    #[test]
    fn upgrade_is_reported_lower_cased() {
        let req = parsed(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n",
        );
        assert_eq!(req.upgrade.as_deref(), Some(&b"websocket"[..]));
        assert!(!req.head.headers.contains("upgrade") && !req.head.headers.contains("connection"));
        let h2c = parsed(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
             HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        );
        assert_eq!(h2c.upgrade, None);
        assert!(!h2c.head.headers.contains("http2-settings"));
        let old = parsed("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(old.upgrade, None, "RFC 9110 §7.8: ignored on HTTP/1.0");
    }

    #[test]
    fn expect_continue() {
        let req = parsed(
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 10\r\n\r\n",
        );
        assert!(req.expect_continue);
        assert!(!req.head.headers.contains("expect"));
        let old = parsed("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!old.expect_continue);
        let other = parsed("PUT / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n");
        assert!(!other.expect_continue);
        assert_eq!(other.head.headers.get("expect").unwrap(), "something");
    }

    #[test]
    fn absolute_form_sets_host() {
        let req = parsed("GET http://Example.com:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(req.head.path, "/p?q=1");
        assert_eq!(req.head.authority(), b"Example.com:8080");
        assert_eq!(req.head.headers.len(), 1);
        let req = parsed("GET HTTPS://a.b HTTP/1.1\r\n\r\n");
        assert_eq!(req.head.path, "/");
        assert_eq!(req.head.authority(), b"a.b");
        let req = parsed("GET http://a.b?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!(req.head.path, "/?x=1");
        for bad in [
            "GET ftp://a/ HTTP/1.1\r\n\r\n",
            "GET http:/a/ HTTP/1.1\r\n\r\n",
            "GET http:///p HTTP/1.1\r\n\r\n",
            "GET http://user@a/ HTTP/1.1\r\n\r\n",
            "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Err(RequestError::InvalidTarget), "{bad:?}");
        }
    }

    #[test]
    fn asterisk_form_only_for_options() {
        assert_eq!(
            parsed("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").head.path,
            "*"
        );
        assert_eq!(
            parse("GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(RequestError::InvalidTarget)
        );
    }

    #[test]
    fn connect_is_flagged() {
        let req =
            parsed("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03");
        assert!(req.connect);
        assert_eq!(req.head.path, "");
        assert_eq!(req.head.authority(), b"example.com:443");
        assert_eq!(req.framing, Framing::Empty);
        let zero = parsed("CONNECT [::1]:443 HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(zero.head.authority(), b"[::1]:443");
        for (bad, err) in [
            (
                "CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
                RequestError::InvalidTarget,
            ),
            (
                "CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n",
                RequestError::InvalidTarget,
            ),
            (
                "CONNECT a:b HTTP/1.1\r\nHost: a\r\n\r\n",
                RequestError::InvalidTarget,
            ),
            (
                "CONNECT a:1 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
                RequestError::ConnectWithBody,
            ),
            (
                "CONNECT a:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                RequestError::UnsupportedTransferCoding,
            ),
        ] {
            assert_eq!(parse(bad), Err(err), "{bad:?}");
        }
    }

    #[test]
    fn host_rules() {
        assert!(parse("GET / HTTP/1.0\r\n\r\n").is_ok(), "1.0 may omit Host");
        assert_eq!(
            parse("GET / HTTP/1.1\r\n\r\n"),
            Err(RequestError::MissingHost)
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            Err(RequestError::DuplicateHost)
        );
        for bad in ["a/b", "a:abc", ":80", "[::1", "a b"] {
            assert_eq!(
                parse(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")),
                Err(RequestError::InvalidHost),
                "{bad:?}"
            );
        }
        assert_eq!(
            parsed("GET / HTTP/1.1\r\nHost: a:\r\n\r\n")
                .head
                .authority(),
            b"a:"
        );
        assert_eq!(
            parsed("GET / HTTP/1.1\r\nHost:\r\n\r\n").head.authority(),
            b""
        );
    }

    #[test]
    fn framing() {
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n").framing,
            Framing::Length(42)
        );
    }

    #[test]
    fn higher_minor_versions_are_served_as_http11_in_place() {
        let mut buf = BytesMut::from("GET /p HTTP/1.2\r\nHost: a\r\n\r\nnext");
        let start = buf.as_ptr();
        let req = parse_request(&mut buf, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(req.head.version, Version::Http11);
        assert!(req.keep_alive);
        assert_eq!(req.head.path.as_ptr(), start.wrapping_add(4), "not copied");
        assert_eq!(&buf[..], b"next");
        let mut buf = BytesMut::from("GET / HTTP/1.9\r\n");
        assert_eq!(parse_request(&mut buf, &Limits::default()), Ok(None));
        buf.extend_from_slice(b"Host: a\r\n\r\n");
        let req = parse_request(&mut buf, &Limits::default()).unwrap();
        assert_eq!(req.unwrap().head.version, Version::Http11);
    }

    #[test]
    fn methods_come_from_envoys_list() {
        for bad in ["get", "BREW", "PRI", "M-SEARCH"] {
            assert_eq!(
                parse(&format!("{bad} / HTTP/1.1\r\nHost: a\r\n\r\n")),
                Err(RequestError::UnknownMethod),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(RequestError::UnknownMethod),
            "the method is checked before the version"
        );
        assert_eq!(
            parsed("MKCOL /d HTTP/1.1\r\nHost: a\r\n\r\n").head.method,
            "MKCOL"
        );
    }

    #[test]
    fn request_heads_need_crlf() {
        for bad in [
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\n",
        ] {
            assert_eq!(parse(bad), Err(RequestError::InvalidLineEnding), "{bad:?}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            Err(RequestError::UnsupportedVersion)
        );
        assert_eq!(
            parse("GET / HTTP/1.10\r\nHost: a\r\n\r\n"),
            Err(RequestError::InvalidLineEnding),
            "httparse reads HTTP/1.1 then a stray byte"
        );
        assert_eq!(
            parse("GET / HTTP/2"),
            Ok(None),
            "undecided until the line ends"
        );
        assert_eq!(
            parse("GET / HTTP/1.1x\r\n\r\n"),
            Err(RequestError::InvalidLineEnding)
        );
        assert_eq!(
            parse("GET / HTTQ/1.1\r\n\r\n"),
            Err(RequestError::BadRequestLine)
        );
        assert_eq!(parse("GET /\r\n\r\n"), Err(RequestError::BadRequestLine));
        assert_eq!(
            parse("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(RequestError::BadRequestLine)
        );
    }

    #[test]
    fn limits_distinguish_414_and_431() {
        let limits = Limits {
            max_head_bytes: 64,
            max_headers: 2,
        };
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(80));
        let mut buf = BytesMut::from(&long_line[..40]);
        assert_eq!(parse_request(&mut buf, &limits), Ok(None));
        let mut buf = BytesMut::from(long_line.as_str());
        assert_eq!(
            parse_request(&mut buf, &limits),
            Err(RequestError::RequestLineTooLong)
        );
        let big_head = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "b".repeat(60));
        let mut buf = BytesMut::from(big_head.as_str());
        assert_eq!(
            parse_request(&mut buf, &limits),
            Err(RequestError::HeadTooLarge)
        );
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n");
        assert_eq!(
            parse_request(&mut buf, &limits),
            Err(RequestError::TooManyHeaders)
        );
        let exact = "GET / HTTP/1.1\r\nHost: a\r\nB: 2\r\n\r\n";
        let limits = Limits {
            max_head_bytes: exact.len(),
            max_headers: 2,
        };
        assert!(parse_request(&mut BytesMut::from(exact), &limits)
            .unwrap()
            .is_some());
    }

    #[test]
    fn many_headers_past_the_inline_slots() {
        // Around the inline spans (32) and the inline httparse slots (128).
        for n in [30, 31, 32, 33, 100, 127, 128, 300] {
            let mut input = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
            for i in 0..n {
                input.push_str(&format!("X-{i}: {i}\r\n"));
            }
            input.push_str("\r\n");
            let limits = Limits {
                max_head_bytes: 1 << 20,
                max_headers: 400,
            };
            let req = parse_request(&mut BytesMut::from(input.as_str()), &limits)
                .unwrap()
                .unwrap();
            assert_eq!(req.head.headers.len(), n + 1);
            let last = n - 1;
            assert_eq!(
                req.head.headers.get(&format!("x-{last}")).unwrap(),
                &*format!("{last}")
            );
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let mut buf = BytesMut::from("\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(parse_request(&mut buf, &Limits::default())
            .unwrap()
            .is_some());
        assert!(buf.is_empty());
        assert_eq!(
            parse_request(&mut BytesMut::from("\rX"), &Limits::default()),
            Err(RequestError::InvalidLineEnding)
        );
    }

    #[test]
    fn target_bytes() {
        for bad in [
            "GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a#frag HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Err(RequestError::InvalidTarget), "{bad:?}");
        }
    }

    #[test]
    fn transfer_encoding_on_http10_is_faulty() {
        assert_eq!(
            parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Err(RequestError::TransferEncodingOnHttp10)
        );
    }
}
