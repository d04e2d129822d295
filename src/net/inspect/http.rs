//! NET/IO layer: the protocol sniffing behind envoy.filters.listener.http_inspector.
//!
//! [`detect_http`] looks at the first bytes of a plaintext connection (peeked) and tells
//! HTTP/1.0, HTTP/1.1 and prior-knowledge HTTP/2 (h2c) apart, as Envoy's http_inspector does:
//! - bytes that are a prefix of the HTTP/2 connection preface (RFC 9113 §3.4) wait for all 24
//!   of its bytes, which mean h2c;
//! - anything else is read as an HTTP/1 request line, up to the first LF (Envoy feeds only that
//!   line to its parser, BalsaParser with custom methods allowed): a method token, a request
//!   target as Envoy's `isUrlValid` accepts it, and a version `HTTP/d.d` or none (HTTP/0.9).
//!   A version of exactly `HTTP/1.1` is HTTP/1.1; any other version (or none) is reported as
//!   HTTP/1.0, as Envoy does. Tokens are separated by runs of SP or HTAB, which may also lead
//!   and trail the line; a CR may only end it. A first byte CR or LF is not HTTP.
//! - a line still without LF after [`MAX_INSPECT_SIZE`] bytes: Envoy closes the connection
//!   (http_inspector.read_error); that is [`HttpDetect::TooLong`].
//!
//! Unlike Envoy, which waits for the LF whatever came before it, a prefix that no request line
//! can start with is `NotHttp` at once (a binary protocol does not sit out the listener-filter
//! timeout). The answer never changes as bytes are added: `NeedMore` is the only non-final one.
//!
//! Envoy runs the http_inspector only when no transport protocol other than raw_buffer was
//! detected (so not after tls_inspector found "tls"); that choice is the caller's.

/// Envoy's http_inspector reads at most this many bytes (its buffer starts at 8 KiB and
/// doubles up to this).
pub const MAX_INSPECT_SIZE: usize = 64 * 1024;

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What protocol the first bytes of a plaintext connection speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpDetect {
    /// A prefix of something that may still be HTTP: peek more.
    NeedMore,
    /// An HTTP/1 request line whose version is not HTTP/1.1.
    Http10,
    /// An HTTP/1.1 request line.
    Http11,
    /// The HTTP/2 connection preface (prior knowledge).
    H2c,
    /// Not HTTP.
    NotHttp,
    /// No end of the request line within [`MAX_INSPECT_SIZE`] bytes: Envoy closes the connection.
    TooLong,
}

impl HttpDetect {
    /// The application protocol Envoy's http_inspector sets for this outcome.
    pub fn application_protocol(self) -> Option<&'static str> {
        match self {
            HttpDetect::Http10 => Some("http/1.0"),
            HttpDetect::Http11 => Some("http/1.1"),
            HttpDetect::H2c => Some("h2c"),
            _ => None,
        }
    }
}

/// Sniffs the first bytes of a plaintext connection; `buf` is what was peeked so far.
pub fn detect_http(buf: &[u8]) -> HttpDetect {
    let n = buf.len().min(H2_PREFACE.len());
    if buf.get(..n) == H2_PREFACE.get(..n) {
        return if n == H2_PREFACE.len() {
            HttpDetect::H2c
        } else {
            HttpDetect::NeedMore
        };
    }
    let buf = buf.get(..MAX_INSPECT_SIZE).unwrap_or(buf);
    match buf.iter().position(|&b| b == b'\n') {
        Some(lf) => request_line(buf.get(..lf).unwrap_or_default(), true),
        None => match request_line(buf, false) {
            HttpDetect::NeedMore if buf.len() >= MAX_INSPECT_SIZE => HttpDetect::TooLong,
            other => other,
        },
    }
}

/// Checks a request line (without its LF); `complete` when the LF was seen, else `line` is
/// all that has arrived and the answer is `NeedMore` if some continuation would be valid.
fn request_line(line: &[u8], complete: bool) -> HttpDetect {
    if line.first() == Some(&b'\r') || (complete && line.is_empty()) {
        return HttpDetect::NotHttp;
    }
    // A CR may only end the line.
    let (line, cr) = match line.strip_suffix(b"\r") {
        Some(line) => (line, true),
        None => (line, false),
    };
    if line.contains(&b'\r') {
        return HttpDetect::NotHttp;
    }
    if cr && !complete {
        // Only the LF may come: decide as if it had.
        return match tokens(line, true) {
            HttpDetect::NotHttp => HttpDetect::NotHttp,
            _ => HttpDetect::NeedMore,
        };
    }
    tokens(line, complete)
}

/// Checks the tokens of a request line without CR or LF.
fn tokens(line: &[u8], complete: bool) -> HttpDetect {
    // The last token may still grow unless whitespace or the LF has ended it.
    let open = !complete && !line.last().is_some_and(|&b| is_space(b));
    let partial = |token: &[u8]| open && token.as_ptr_range().end == line.as_ptr_range().end;
    let mut words = line.split(|&b| is_space(b)).filter(|t| !t.is_empty());

    let Some(method) = words.next() else {
        return more_or_not(complete);
    };
    if !method.iter().all(|&b| is_tchar(b)) {
        return HttpDetect::NotHttp;
    }
    let Some(target) = words.next() else {
        return more_or_not(complete);
    };
    if !url_fits(target, method == b"CONNECT", partial(target)) {
        return HttpDetect::NotHttp;
    }
    let Some(version) = words.next() else {
        return if complete {
            HttpDetect::Http10 // HTTP/0.9: no version
        } else {
            HttpDetect::NeedMore
        };
    };
    if words.next().is_some() || !version_fits(version, partial(version)) {
        return HttpDetect::NotHttp;
    }
    match (complete, version) {
        (false, _) => HttpDetect::NeedMore,
        (true, b"HTTP/1.1") => HttpDetect::Http11,
        (true, _) => HttpDetect::Http10,
    }
}

fn more_or_not(complete: bool) -> HttpDetect {
    if complete {
        HttpDetect::NotHttp
    } else {
        HttpDetect::NeedMore
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A token character (RFC 9110 §5.6.2), as Envoy checks methods.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `HTTP/` digit `.` digit, or (`partial`) a prefix of it.
fn version_fits(version: &[u8], partial: bool) -> bool {
    let fits = |(i, &b): (usize, &u8)| match i {
        0..=4 => b"HTTP/".get(i) == Some(&b),
        5 | 7 => b.is_ascii_digit(),
        6 => b == b'.',
        _ => false,
    };
    (partial || version.len() == 8) && version.iter().enumerate().all(fits)
}

/// Where a request target has got to, in the grammar Envoy's `isUrlValid` accepts:
/// origin form (`/…` or `*…`), absolute form `scheme://host[/…|?…]` and, for CONNECT,
/// authority form `host[/…|?…]`.
#[derive(Clone, Copy)]
enum Url {
    Start,
    Scheme,
    Colon,
    Slash,
    /// In the host; whether the last byte was `@` (two in a row are refused).
    Host {
        at: bool,
    },
    Path,
}

/// The target is valid, or (`partial`) can still become valid.
fn url_fits(target: &[u8], connect: bool, partial: bool) -> bool {
    let end = target
        .iter()
        .try_fold(Url::Start, |state, &b| url_step(state, b, connect));
    match end {
        None => false,
        Some(_) if partial => true,
        Some(state) => matches!(state, Url::Host { .. } | Url::Path),
    }
}

fn url_step(state: Url, b: u8, connect: bool) -> Option<Url> {
    let host = |b: u8, at: bool| match b {
        b'/' | b'?' => Some(Url::Path),
        b'@' if at => None,
        _ if is_host_char(b) => Some(Url::Host { at: b == b'@' }),
        _ => None,
    };
    match state {
        Url::Start if b == b'/' || b == b'*' => Some(Url::Path),
        Url::Start if connect => host(b, false),
        Url::Start if b.is_ascii_alphabetic() => Some(Url::Scheme),
        Url::Scheme if b.is_ascii_alphanumeric() || b"+-.".contains(&b) => Some(Url::Scheme),
        Url::Scheme if b == b':' => Some(Url::Colon),
        Url::Colon if b == b'/' => Some(Url::Slash),
        Url::Slash if b == b'/' => Some(Url::Host { at: false }),
        Url::Host { at } => host(b, at),
        Url::Path if b == b'\t' || b == 0x0c || (b'!'..=b'~').contains(&b) => Some(Url::Path),
        _ => None,
    }
}

fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=@[]_~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use HttpDetect::*;

    /// First bytes real clients sent to a Python listener on 127.0.0.1 (2026-12-06; curl
    /// 7.88.1, Python 3.11 http.client).
    const CAPTURES: &[(&str, &[u8], HttpDetect)] = &[
        (
            "curl --http1.0",
            b"GET /index.html HTTP/1.0\r\nHost: 127.0.0.1:37833\r\nUser-Agent: curl/7.88.1\r\n\
              Accept: */*\r\n\r\n",
            Http10,
        ),
        (
            "curl",
            b"GET /a/b?c=d HTTP/1.1\r\nHost: 127.0.0.1:33475\r\nUser-Agent: curl/7.88.1\r\n\
              Accept: */*\r\n\r\n",
            Http11,
        ),
        (
            "curl --http2 (h2c upgrade)",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:44065\r\nUser-Agent: curl/7.88.1\r\n\
              Accept: */*\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
              HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
            Http11,
        ),
        (
            "curl -p -x (CONNECT to a proxy)",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\
              User-Agent: curl/7.88.1\r\nProxy-Connection: Keep-Alive\r\n\r\n",
            Http11,
        ),
        (
            "python http.client POST",
            b"POST /submit HTTP/1.1\r\nHost: 127.0.0.1:48583\r\nAccept-Encoding: identity\r\n\
              Content-Length: 3\r\n\r\nx=1",
            Http11,
        ),
    ];

    /// `curl --http2-prior-knowledge`: the preface, SETTINGS, WINDOW_UPDATE, HEADERS.
    const CURL_H2C: &str = "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a00001204000000000000\
        030000006400040200000000020000000000000408000000000001ff000100001f010500000001828486418b\
        089d5c0b8170dc6dd69d6f7a8825b650c3abbcf2e153032a2f2a";

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The answer for `bytes`, and NeedMore for every prefix shorter than `decided_at`.
    fn check(bytes: &[u8], expect: HttpDetect, decided_at: usize) {
        assert_eq!(
            detect_http(bytes),
            expect,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        for n in 0..decided_at {
            assert_eq!(
                detect_http(&bytes[..n]),
                NeedMore,
                "{:?}",
                String::from_utf8_lossy(&bytes[..n])
            );
        }
        for n in decided_at..bytes.len() {
            assert_eq!(
                detect_http(&bytes[..n]),
                expect,
                "{:?}",
                String::from_utf8_lossy(&bytes[..n])
            );
        }
    }

    #[test]
    fn real_requests() {
        for &(name, bytes, expect) in CAPTURES {
            let lf = bytes.iter().position(|&b| b == b'\n').unwrap();
            check(bytes, expect, lf + 1);
            assert!(expect.application_protocol().is_some(), "{name}");
        }
        check(&unhex(CURL_H2C), H2c, 24);
        assert_eq!(H2c.application_protocol(), Some("h2c"));
        assert_eq!(Http10.application_protocol(), Some("http/1.0"));
        assert_eq!(Http11.application_protocol(), Some("http/1.1"));
    }

    #[test]
    fn request_lines() {
        for (line, expect) in [
            (&b"GET / HTTP/1.1\n"[..], Http11), // LF alone ends the line
            (b"GET / HTTP/1.0\r\n", Http10),
            (b"GET /\r\n", Http10),          // HTTP/0.9: no version
            (b"GET / HTTP/2.0\r\n", Http10), // any other version: HTTP/1.0
            (b"GET / HTTP/1.2\r\n", Http10),
            (b"PRI * HTTP/2.0\r\n\r\nXX", Http10), // a broken preface is an HTTP/1 line
            (b"BREW /pot HTTP/1.1\r\n", Http11),   // custom methods are tokens
            (b"M-SEARCH * HTTP/1.1\r\n", Http11),
            (b"GET  /   HTTP/1.1 \t\r\n", Http11), // runs of SP/HTAB
            (b" GET / HTTP/1.1\r\n", Http11),      // leading whitespace
            (b"OPTIONS * HTTP/1.1\r\n", Http11),
            (b"GET http://example.com/x?y HTTP/1.1\r\n", Http11),
            (b"GET h2+x.y-z://a@b@c:8/p HTTP/1.1\r\n", Http11),
            (b"GET http:// HTTP/1.1\r\n", Http11), // empty host, as isUrlValid allows
            (b"CONNECT [::1]:443 HTTP/1.1\r\n", Http11),
            (b"GET /\xff HTTP/1.1\r\n", NotHttp), // non-ASCII in the target
            (b"GET / HTTP/1.1 x\r\n", NotHttp),   // a fourth token
            (b"GET / HTTP/1.10\r\n", NotHttp),
            (b"GET / http/1.1\r\n", NotHttp),
            (b"GET\r\n", NotHttp),                      // no target
            (b"G(T / HTTP/1.1\r\n", NotHttp),           // not a token
            (b"GET example.com HTTP/1.1\r\n", NotHttp), // authority form is for CONNECT
            (b"GET http:/x HTTP/1.1\r\n", NotHttp),
            (b"GET 1http://x HTTP/1.1\r\n", NotHttp), // scheme starts with a letter
            (b"GET http://a@@b/ HTTP/1.1\r\n", NotHttp),
            (b"GET http://a b HTTP/1.1\r\n", NotHttp),
            (b"GET / HTTP/1.1\r\r\n", NotHttp), // a CR only ends the line
            (b"GET /\rx HTTP/1.1\r\n", NotHttp),
            (b"\r\nGET / HTTP/1.1\r\n", NotHttp), // Envoy refuses an empty first line
            (b"\nGET / HTTP/1.1\r\n", NotHttp),
            (b" \t\r\n", NotHttp),
        ] {
            assert_eq!(
                detect_http(line),
                expect,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn not_http_as_soon_as_it_shows() {
        for (bytes, decided_at) in [
            (&b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..], 1), // a TLS ClientHello
            (b"SSH-2.0-OpenSSH_9.2\r\n", 20),                          // a lone token, then CR
            (b"GET /\x00", 6),
            (b"GET / HTTP/1.1\rX", 16),
            (b"GET / HTTX", 10),
            (b"GET / HTTP/1.1 x", 16),
            (b"GET / HTT\r", 10),
            (b"GET\r", 4),
        ] {
            check(bytes, NotHttp, decided_at);
        }
        // A broken preface is decided when it breaks, as an HTTP/1 line.
        check(b"PRI * HTTP/2.0\r\n\r\nSMX", Http10, 21);
        // A token with whitespace after it is closed: `HTTP/1.1 ` may only be followed by
        // whitespace, CR and LF; a partial version with a space after it is wrong at once.
        check(b"GET / HTTP/1.1 \r\n", Http11, 17);
        check(b"GET / HTTP/1.", NeedMore, 13);
        assert_eq!(detect_http(b"GET / HTTP/1. "), NotHttp);
    }

    #[test]
    fn too_long() {
        let mut line = b"GET /".to_vec();
        line.resize(MAX_INSPECT_SIZE - 1, b'a');
        assert_eq!(detect_http(&line), NeedMore);
        line.push(b'\n');
        assert_eq!(detect_http(&line), Http10); // the LF is the 65536th byte
        line.pop();
        line.push(b'a');
        assert_eq!(detect_http(&line), TooLong);
        line.extend_from_slice(b" HTTP/1.1\r\n"); // past what Envoy reads
        assert_eq!(detect_http(&line), TooLong);
        line.truncate(5);
        line.resize(MAX_INSPECT_SIZE + 10, 0);
        assert_eq!(detect_http(&line), NotHttp);
    }

    /// Deterministic xorshift, so the mutation test needs no crate.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// A final answer never changes as bytes are added.
    #[test]
    fn answers_are_final() {
        let mut seed = 0x2545_f491_4f6c_dd1d;
        let alphabet = b"GET /HTP1.0\r\n \t:@?*CONNECTPRI2SMx\x00\xff";
        for &(_, base, _) in CAPTURES {
            for _ in 0..2_000 {
                let mut bytes = base.to_vec();
                for _ in 0..1 + rng(&mut seed) % 4 {
                    let i = (rng(&mut seed) as usize) % bytes.len();
                    bytes[i] = alphabet[(rng(&mut seed) as usize) % alphabet.len()];
                }
                let full = detect_http(&bytes);
                for n in 0..bytes.len() {
                    let d = detect_http(&bytes[..n]);
                    assert!(
                        d == NeedMore || d == full,
                        "{:?}: {d:?} then {full:?}",
                        &bytes[..n]
                    );
                }
            }
        }
    }
}
