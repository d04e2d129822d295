//! Protocol layer: HTTP/1 field lines. Records where httparse found each name and value,
//! lower-cases names in place before the head is frozen, then slices `Headers` out of the
//! frozen block while pulling out the framing and connection-management fields.
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::Framing;
use crate::stream::headers::{Headers, Version};

/// Field slots kept on the stack; larger `max_headers` settings use the heap.
const INLINE_FIELDS: usize = 128;

/// More Connection tokens than this is refused (as Envoy does: 10 or more).
const MAX_CONNECTION_TOKENS: usize = 9;

/// httparse's output slots for one parse, on the stack when they fit.
pub(super) struct Slots<'b> {
    inline: [MaybeUninit<httparse::Header<'b>>; INLINE_FIELDS],
    len: usize,
    heap: Vec<MaybeUninit<httparse::Header<'b>>>,
}

impl<'b> Slots<'b> {
    /// Room for `n` fields; a head with more is refused by httparse (`TooManyHeaders`).
    pub(super) fn new(n: usize) -> Self {
        Self {
            inline: [const { MaybeUninit::uninit() }; INLINE_FIELDS],
            len: n,
            heap: if n <= INLINE_FIELDS {
                Vec::new()
            } else {
                vec![MaybeUninit::uninit(); n]
            },
        }
    }

    pub(super) fn as_mut(&mut self) -> &mut [MaybeUninit<httparse::Header<'b>>] {
        if self.len <= INLINE_FIELDS {
            &mut self.inline[..self.len]
        } else {
            &mut self.heap
        }
    }
}

/// Byte offsets of one field line's name and value inside the block being parsed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FieldSpan {
    name: (u32, u32),
    value: (u32, u32),
}

/// Offsets of a sub-slice of `base` (httparse hands out sub-slices of the input; heads are
/// bounded by `Limits::max_head_bytes`, below 4 GiB).
pub(super) fn range_in(base: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    debug_assert!(start + part.len() <= base.len() && base.len() <= u32::MAX as usize);
    (start as u32, (start + part.len()) as u32)
}

/// Spans kept inline: most heads have far fewer fields than `INLINE_FIELDS`, and `Spans` is
/// built and moved once per head (a 2 KB array there was a measured memset and memcpy per
/// request); larger heads use the heap.
const INLINE_SPANS: usize = 32;

/// The spans of one head's fields, inline when they fit.
pub(super) struct Spans {
    inline: [FieldSpan; INLINE_SPANS],
    len: usize,
    heap: Vec<FieldSpan>,
}

impl Spans {
    /// Records where httparse found each field of `fields` inside `base`.
    pub(super) fn record(base: &[u8], fields: &[httparse::Header<'_>]) -> Self {
        let mut spans = Spans {
            inline: [FieldSpan::default(); INLINE_SPANS],
            len: fields.len(),
            heap: Vec::new(),
        };
        let span = |h: &httparse::Header<'_>| FieldSpan {
            name: range_in(base, h.name.as_bytes()),
            value: range_in(base, h.value),
        };
        if fields.len() <= INLINE_SPANS {
            for (slot, h) in spans.inline.iter_mut().zip(fields) {
                *slot = span(h);
            }
        } else {
            spans.heap = fields.iter().map(span).collect();
        }
        spans
    }

    pub(super) fn as_slice(&self) -> &[FieldSpan] {
        if self.len <= INLINE_SPANS {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }

    /// Lower-cases every name in place (and the Upgrade value, reported lower-cased), before
    /// the block is frozen.
    pub(super) fn lower_case_names(&self, block: &mut BytesMut) {
        for span in self.as_slice() {
            let name = &mut block[span.name.0 as usize..span.name.1 as usize];
            name.make_ascii_lowercase();
            if name == b"upgrade" {
                block[span.value.0 as usize..span.value.1 as usize].make_ascii_lowercase();
            }
        }
    }
}

fn name_of(head: &Bytes, span: &FieldSpan) -> Bytes {
    head.slice(span.name.0 as usize..span.name.1 as usize)
}

fn value_of(head: &Bytes, span: &FieldSpan) -> Bytes {
    head.slice(span.value.0 as usize..span.value.1 as usize)
}

/// The fields the codec interprets rather than passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Te,
    Upgrade,
    Expect,
    /// keep-alive, proxy-connection: hop-by-hop, dropped.
    HopByHop,
}

fn special(name: &[u8]) -> Option<Special> {
    Some(match name {
        b"host" => Special::Host,
        b"content-length" => Special::ContentLength,
        b"transfer-encoding" => Special::TransferEncoding,
        b"connection" => Special::Connection,
        b"te" => Special::Te,
        b"upgrade" => Special::Upgrade,
        b"expect" => Special::Expect,
        b"keep-alive" | b"proxy-connection" => Special::HopByHop,
        _ => return None,
    })
}

/// Why a head's framing fields cannot be honoured; the request and response parsers map these
/// to their own errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldError {
    InvalidContentLength,
    /// More than one Content-Length line, even with equal values (Envoy configures Balsa with
    /// `disallow_multiple_content_length`).
    DuplicateContentLength,
    ContentLengthWithTransferEncoding,
    ChunkedNotFinal,
    ChunkedTwice,
    EmptyTransferEncoding,
    UnsupportedTransferCoding,
}

/// Connection header tokens (RFC 9112 §9.6, RFC 9110 §7.6.1).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Tokens naming other fields, which are removed as hop-by-hop.
    pub nominated: usize,
    /// Too many tokens, or one nominating X-Forwarded-* or a pseudo-header (removing those
    /// would hide where a request came from): requests with this are refused, as Envoy does.
    pub rejected: bool,
    total: usize,
}

impl ConnectionTokens {
    fn add(&mut self, value: &[u8]) {
        for token in list_elements(value) {
            self.total += 1;
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else {
                self.nominated += 1;
                self.rejected |= token.starts_with(b":")
                    || [
                        &b"x-forwarded-for"[..],
                        b"x-forwarded-host",
                        b"x-forwarded-proto",
                    ]
                    .iter()
                    .any(|f| token.eq_ignore_ascii_case(f));
            }
        }
        self.rejected |= self.total > MAX_CONNECTION_TOKENS;
    }

    /// Persistence (RFC 9112 §9.3): `close` wins; 1.1 defaults to persistent, 1.0 only with
    /// `keep-alive`.
    pub(super) fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::Http11 || self.keep_alive)
    }
}

/// Transfer-Encoding codings across every field line (RFC 9112 §6.1).
#[derive(Debug, Default, Clone, Copy)]
struct TransferCodings {
    present: bool,
    any: bool,
    chunked: usize,
    last_is_chunked: bool,
    unsupported: bool,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list_elements(value) {
            self.any = true;
            self.last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if self.last_is_chunked {
                self.chunked += 1;
            } else {
                self.unsupported = true;
            }
        }
    }

    /// Ok when the codings are exactly one final `chunked`. A chunked that is not final is
    /// reported first (the framing conflict RFC 9112 §6.3 makes a 400), then a repeated one.
    fn resolve(&self) -> Result<(), FieldError> {
        if !self.any {
            return Err(FieldError::EmptyTransferEncoding);
        }
        if self.chunked > 0 && !self.last_is_chunked {
            return Err(FieldError::ChunkedNotFinal);
        }
        if self.chunked > 1 {
            return Err(FieldError::ChunkedTwice);
        }
        if self.unsupported {
            return Err(FieldError::UnsupportedTransferCoding);
        }
        Ok(())
    }
}

/// The non-empty, OWS-trimmed elements of a comma-separated field value (RFC 9110 §5.6.1).
pub(super) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `1*DIGIT` without sign, spaces or list syntax, within u64.
fn parse_content_length(value: &[u8]) -> Result<u64, FieldError> {
    if value.is_empty() {
        return Err(FieldError::InvalidContentLength);
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(FieldError::InvalidContentLength);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(FieldError::InvalidContentLength)
    })
}

/// What the codec learnt from a head's fields, with the end-to-end ones in `headers`.
#[derive(Debug)]
pub(super) struct HeadFields {
    /// End-to-end fields in arrival order (hop-by-hop and framing fields removed).
    pub headers: Headers,
    pub connection: ConnectionTokens,
    /// The Upgrade value, lower-cased (only meaningful with a `Connection: upgrade` token).
    pub upgrade: Option<Bytes>,
    pub expect_continue: bool,
    pub host_lines: usize,
    content_length: Option<u64>,
    content_length_error: Option<FieldError>,
    codings: TransferCodings,
}

impl HeadFields {
    /// The framing the Content-Length / Transfer-Encoding fields declare (RFC 9112 §6.3), or
    /// `None` when there are neither. Content-Length errors come first, then the CL+TE
    /// conflict, then the codings (Envoy's order).
    pub(super) fn declared_framing(&self) -> Result<Option<Framing>, FieldError> {
        if let Some(e) = self.content_length_error {
            return Err(e);
        }
        if self.codings.present {
            if self.content_length.is_some() {
                return Err(FieldError::ContentLengthWithTransferEncoding);
            }
            return self.codings.resolve().map(|()| Some(Framing::Chunked));
        }
        Ok(self.content_length.map(Framing::of_length))
    }

    /// RFC 9112 §6.1: a Transfer-Encoding in an HTTP/1.0 message means its framing is faulty.
    pub(super) fn transfer_encoding_on(&self, version: Version) -> bool {
        self.codings.present && version == Version::Http10
    }
}

const TE_TRAILERS: Bytes = Bytes::from_static(b"trailers");

/// Turns a frozen head's fields into `Headers`, removing the hop-by-hop ones (RFC 9110 §7.6.1:
/// Connection, the fields it nominates, Keep-Alive, Proxy-Connection, TE except `trailers`,
/// Transfer-Encoding, Upgrade) and Content-Length (carried by the framing).
/// `keep_framing_fields` keeps Content-Length and Transfer-Encoding in the headers too, for
/// responses without a body where they describe the GET response (HEAD, 304: RFC 9110 §8.6,
/// RFC 9112 §6.1). `Expect: 100-continue` is removed and reported.
pub(super) fn head_fields(head: &Bytes, spans: &Spans, keep_framing_fields: bool) -> HeadFields {
    let spans = spans.as_slice();
    let mut out = HeadFields {
        headers: Headers::with_capacity(spans.len()),
        connection: ConnectionTokens::default(),
        upgrade: None,
        expect_continue: false,
        host_lines: 0,
        content_length: None,
        content_length_error: None,
        codings: TransferCodings::default(),
    };
    for span in spans {
        let name = &head[span.name.0 as usize..span.name.1 as usize];
        let value = &head[span.value.0 as usize..span.value.1 as usize];
        match special(name) {
            None => out
                .headers
                .append(name_of(head, span), value_of(head, span)),
            Some(Special::Host) => {
                out.host_lines += 1;
                out.headers
                    .append(name_of(head, span), value_of(head, span));
            }
            Some(Special::ContentLength) => {
                let parsed = parse_content_length(value);
                if out.content_length.is_some() || out.content_length_error.is_some() {
                    out.content_length_error
                        .get_or_insert(FieldError::DuplicateContentLength);
                }
                match parsed {
                    Ok(n) => out.content_length = Some(n),
                    Err(e) => {
                        out.content_length_error.get_or_insert(e);
                    }
                }
                if keep_framing_fields {
                    out.headers
                        .append(name_of(head, span), value_of(head, span));
                }
            }
            Some(Special::TransferEncoding) => {
                out.codings.add(value);
                if keep_framing_fields {
                    out.headers
                        .append(name_of(head, span), value_of(head, span));
                }
            }
            Some(Special::Connection) => out.connection.add(value),
            Some(Special::Te) => {
                if list_elements(value).any(|t| t.eq_ignore_ascii_case(b"trailers")) {
                    out.headers.append(name_of(head, span), TE_TRAILERS);
                }
            }
            Some(Special::Upgrade) => {
                if out.upgrade.is_none() {
                    out.upgrade = Some(value_of(head, span));
                }
            }
            Some(Special::Expect) => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    out.expect_continue = true;
                } else {
                    out.headers
                        .append(name_of(head, span), value_of(head, span));
                }
            }
            Some(Special::HopByHop) => {}
        }
    }
    if out.connection.nominated > 0 {
        remove_nominated(head, spans, &mut out.headers);
    }
    out
}

/// Removes the fields named in Connection, except Host (routing needs it; Envoy keeps its
/// authority too) and TE (already reduced to `trailers`, which Envoy keeps when nominated).
fn remove_nominated(head: &Bytes, spans: &[FieldSpan], headers: &mut Headers) {
    let connection_values = spans
        .iter()
        .filter(|s| &head[s.name.0 as usize..s.name.1 as usize] == b"connection")
        .map(|s| &head[s.value.0 as usize..s.value.1 as usize]);
    for value in connection_values {
        for token in list_elements(value) {
            if !token.eq_ignore_ascii_case(b"host") && !token.eq_ignore_ascii_case(b"te") {
                headers.retain(|h| !h.name.eq_ignore_ascii_case(token));
            }
        }
    }
}

/// Trailer fields as `Headers`: framing, routing and hop-by-hop fields are dropped (RFC 9110
/// §6.5.1: a trailer must not change how the message is framed or routed).
pub(super) fn trailer_fields(block: &Bytes, spans: &Spans) -> Headers {
    let spans = spans.as_slice();
    let mut headers = Headers::with_capacity(spans.len());
    for span in spans {
        let name = &block[span.name.0 as usize..span.name.1 as usize];
        let dropped = special(name).is_some() || name == b"trailer";
        if !dropped {
            headers.append(name_of(block, span), value_of(block, span));
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_strict_digits() {
        assert_eq!(parse_content_length(b"0"), Ok(0));
        assert_eq!(parse_content_length(b"007"), Ok(7));
        assert_eq!(parse_content_length(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b"5 5",
            b"5,5",
            b"0x5",
            b"18446744073709551616",
            b"5a",
        ] {
            assert_eq!(
                parse_content_length(bad),
                Err(FieldError::InvalidContentLength),
                "{bad:?}"
            );
        }
    }

    fn codings(values: &[&str]) -> Result<(), FieldError> {
        let mut c = TransferCodings::default();
        for v in values {
            c.add(v.as_bytes());
        }
        c.resolve()
    }

    #[test]
    fn transfer_codings_must_end_in_one_chunked() {
        assert_eq!(codings(&["chunked"]), Ok(()));
        assert_eq!(codings(&["ChUnKeD"]), Ok(()));
        assert_eq!(codings(&[" chunked , "]), Ok(()));
        assert_eq!(
            codings(&["gzip, chunked"]),
            Err(FieldError::UnsupportedTransferCoding)
        );
        assert_eq!(
            codings(&["gzip"]),
            Err(FieldError::UnsupportedTransferCoding)
        );
        assert_eq!(
            codings(&["chunked, gzip"]),
            Err(FieldError::ChunkedNotFinal)
        );
        assert_eq!(
            codings(&["chunked", "chunked"]),
            Err(FieldError::ChunkedTwice)
        );
        assert_eq!(
            codings(&["chunked, chunked"]),
            Err(FieldError::ChunkedTwice)
        );
        assert_eq!(
            codings(&["chunked, chunked, gzip"]),
            Err(FieldError::ChunkedNotFinal)
        );
        assert_eq!(
            codings(&["", " , "]),
            Err(FieldError::EmptyTransferEncoding)
        );
    }

    #[test]
    fn connection_tokens() {
        let tokens = |v: &[u8]| {
            let mut c = ConnectionTokens::default();
            c.add(v);
            c
        };
        let c = tokens(b"Keep-Alive, Upgrade, x-custom");
        assert!(c.keep_alive && c.upgrade && !c.close && !c.rejected);
        assert_eq!(c.nominated, 1);
        assert!(tokens(b"close, X-Forwarded-For").rejected);
        assert!(tokens(b":authority").rejected);
        assert!(tokens(b"a,b,c,d,e,f,g,h,i,j").rejected);
        assert!(!tokens(b"a,b,c,d,e,f,g,h,i").rejected);
        assert!(!tokens(b"close").keep_alive(Version::Http11));
        assert!(tokens(b"x").keep_alive(Version::Http11));
        assert!(!tokens(b"x").keep_alive(Version::Http10));
        assert!(tokens(b"keep-alive").keep_alive(Version::Http10));
        assert!(!tokens(b"keep-alive, close").keep_alive(Version::Http10));
    }
}
