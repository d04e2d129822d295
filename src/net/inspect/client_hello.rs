//! NET/IO layer: the TLS ClientHello parser behind envoy.filters.listener.tls_inspector.
//!
//! [`detect`] looks at the first bytes of a connection (peeked, so they stay in the socket) and
//! says whether they are a TLS ClientHello, and if so which server name (SNI) and application
//! protocols (ALPN) it asks for. It never allocates and never panics, whatever the input.
//!
//! Envoy's tls_inspector runs BoringSSL's server handshake over the peeked bytes and stops it in
//! the server-name callback; this parser checks what BoringSSL has checked by then:
//! - the record layer: every record up to the end of the hello is a handshake record (type 22)
//!   with version major 3, non-empty, at most 2^14 bytes; the hello may span several records
//!   (RFC 8446 §5.1) and is only complete once the record holding its last byte is;
//! - the first handshake message is a ClientHello; its session id is at most 32 bytes, its
//!   cipher suite list is non-empty and even, its compression list non-empty; the extension
//!   block, when present, fills the rest of the message exactly, and no extension type appears
//!   twice (GREASE types, RFC 8701, are unknown extensions like any other and are skipped);
//! - server_name: one entry, of type host_name, 1..=255 bytes, no NUL (else the hello is
//!   [`Invalid::Malformed`], as BoringSSL fails the handshake there).
//!
//! What BoringSSL checks later (after Envoy has what it wants) is left to the real handshake: a
//! malformed ALPN extension only means "no ALPN" (Envoy ignores it too), a malformed
//! supported_versions only means "no TLS 1.3". Version negotiation and the contents of the
//! other extensions are not checked here.
//!
//! Envoy's outcomes, for the caller: `Hello` → transport protocol [`TRANSPORT_PROTOCOL`],
//! requested server name and application protocols set; `NotTls` and `Invalid(Malformed)` →
//! tls_not_found (or a close with `close_connection_on_client_hello_parsing_errors`);
//! `Invalid(TooLarge)` → client_hello_too_large and a close; `NeedMore` → peek again. A hello
//! announcing a body over 16 KiB is `Malformed` (BoringSSL refuses it at its header, so Envoy
//! reports no TLS), one that fits but whose records need more than `max_hello` bytes is
//! `TooLarge`.
//!
//! SSLv2-compatible hellos (RFC 5246 appendix E.2): BoringSSL still accepts them from a server
//! whose range includes TLS 1.0–1.2 (Envoy's inspector allows TLS 1.0–1.3), so they are a
//! `Hello` here too, with no extensions: no server name, no ALPN, no TLS 1.3.

/// Envoy's default, and its upper bound, for tls_inspector `max_client_hello_size`:
/// `SSL3_RT_MAX_PLAIN_LENGTH`, 16 KiB of bytes read from the socket (record headers included).
pub const MAX_CLIENT_HELLO_SIZE: usize = 16 * 1024;

/// The transport protocol Envoy's tls_inspector sets when it sees a ClientHello.
pub const TRANSPORT_PROTOCOL: &str = "tls";

const RECORD_HEADER: usize = 5;
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u32 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const TLS13: u16 = 0x0304;
/// BoringSSL's cap on a ClientHello message body.
const MAX_HELLO_MESSAGE: usize = 16 * 1024;
/// BoringSSL's cap on an SSLv2-compatible hello.
const MAX_V2_HELLO: usize = 4096;

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detect<'a> {
    /// A prefix of something that may still be a ClientHello: peek more.
    NeedMore,
    /// Cannot be a TLS handshake.
    NotTls,
    /// A complete ClientHello.
    Hello(ClientHello<'a>),
    /// Started as a TLS handshake, but is not a usable ClientHello.
    Invalid(Invalid),
}

/// Why bytes that started as a TLS handshake are not a usable ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The hello cannot be complete within `max_hello` bytes.
    TooLarge,
    /// Structurally broken; the text says where.
    Malformed(&'static str),
}

/// A complete ClientHello. Borrows from the buffer given to [`detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHello<'a> {
    server_name: Option<&'a str>,
    /// The ALPN protocol_name_list, already checked to be well formed; empty if none.
    alpn: &'a [u8],
    tls13: bool,
    sslv2: bool,
    wire_len: usize,
}

impl<'a> ClientHello<'a> {
    /// The host_name from the server_name extension, as sent (DNS names are case-insensitive:
    /// compare ignoring ASCII case). `None` when there is none, or when it is not a DNS-style
    /// name (labels of 1..=63 ASCII letters, digits, `-` or `_`, joined by single dots, no
    /// trailing dot, as RFC 6066 §3 asks): BoringSSL would accept such a name, but it can match
    /// no `server_names` entry, so the filter-chain match treats it as no SNI.
    pub fn server_name(&self) -> Option<&'a str> {
        self.server_name
    }

    /// The ALPN protocol names in the client's order (GREASE values included, as Envoy passes
    /// them on). Empty when there is no ALPN extension or it is malformed.
    pub fn alpn(&self) -> Alpn<'a> {
        Alpn(self.alpn)
    }

    /// The supported_versions extension offers TLS 1.3.
    #[cfg(any(test, fuzzing))] // read by the tests and fuzz targets only
    #[cfg_attr(fuzzing, allow(dead_code))] // not by the library the http2 target builds
    pub fn supports_tls13(&self) -> bool {
        self.tls13
    }

    /// An SSLv2-compatible hello (no extensions).
    #[cfg(any(test, fuzzing))] // read by the tests and fuzz targets only
    #[cfg_attr(fuzzing, allow(dead_code))] // not by the library the http2 target builds
    pub fn is_sslv2(&self) -> bool {
        self.sslv2
    }

    /// Bytes of the connection the hello occupies, record headers included (Envoy's
    /// tls_inspector.bytes_processed).
    #[cfg(any(test, fuzzing))] // read by the tests and fuzz targets only
    #[cfg_attr(fuzzing, allow(dead_code))] // not by the library the http2 target builds
    pub fn wire_len(&self) -> usize {
        self.wire_len
    }
}

/// ALPN protocol names, in the client's order.
#[derive(Clone, Debug)]
pub struct Alpn<'a>(&'a [u8]);

impl<'a> Iterator for Alpn<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let mut r = Reader(self.0);
        let name = r.vec8()?.0;
        self.0 = r.0;
        Some(name)
    }
}

/// Detects a ClientHello at the start of `buf`, the bytes peeked from a new connection.
///
/// `max_hello` is Envoy's `max_client_hello_size` ([`MAX_CLIENT_HELLO_SIZE`] by default): a
/// hello whose records do not all fit in the first `max_hello` bytes is `TooLarge`, as soon as
/// the record and handshake lengths show it.
///
/// A hello split over several records is joined in place: the record headers inside it are
/// overwritten by the payloads that follow them, so the hello's fields are contiguous and can
/// be borrowed. This happens only once the hello is complete; pass freshly peeked bytes on
/// every call (the socket still holds the original ones).
pub fn detect(buf: &mut [u8], max_hello: usize) -> Detect<'_> {
    match buf.first() {
        None => Detect::NeedMore,
        Some(&CONTENT_HANDSHAKE) => detect_records(buf, max_hello),
        Some(b) if b & 0x80 != 0 => detect_sslv2(buf, max_hello),
        Some(_) => Detect::NotTls,
    }
}

fn detect_records(buf: &mut [u8], max_hello: usize) -> Detect<'_> {
    let framing = match frame(buf, max_hello) {
        Ok(framing) => framing,
        Err(stop) => return stop,
    };
    if framing.records > 1 {
        join_records(buf, framing.message_len);
    }
    let buf: &[u8] = buf;
    let message = buf
        .get(RECORD_HEADER + 4..RECORD_HEADER + framing.message_len)
        .unwrap_or_default();
    match parse_hello(message, framing.wire_len) {
        Ok(hello) => Detect::Hello(hello),
        Err(invalid) => Detect::Invalid(invalid),
    }
}

/// Where a complete ClientHello lies in the buffer.
struct Framing {
    /// Records the hello spans.
    records: usize,
    /// The handshake message's length, its 4-byte header included.
    message_len: usize,
    /// The end of the last record holding part of the hello.
    wire_len: usize,
}

/// Walks the records until the ClientHello is complete, without touching the bytes.
fn frame(buf: &[u8], max_hello: usize) -> Result<Framing, Detect<'static>> {
    if buf.get(1).is_some_and(|&major| major != 3) {
        return Err(Detect::NotTls);
    }
    let mut pos = 0; // start of the current record
    let mut records = 0;
    let mut seen = 0; // handshake bytes seen so far
    let mut header = 0u32; // the 4-byte handshake header, gathered as it arrives
    let mut message_len = None;
    loop {
        let Some(&[kind, major, _, hi, lo]) = buf.get(pos..pos + RECORD_HEADER) else {
            // Another record must come, of at least one byte.
            let left = message_len.map_or(1, |len: usize| len - seen);
            return Err(need(pos + RECORD_HEADER + left, max_hello));
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if kind != CONTENT_HANDSHAKE || major != 3 {
            return Err(malformed(
                "record before the end of the hello is not a handshake record",
            ));
        }
        if len == 0 {
            return Err(malformed("empty handshake record"));
        }
        if len > MAX_RECORD_PAYLOAD {
            return Err(malformed("record longer than 2^14 bytes"));
        }
        let end = pos + RECORD_HEADER + len;
        if end > max_hello {
            return Err(Detect::Invalid(Invalid::TooLarge));
        }
        let Some(mut payload) = buf.get(pos + RECORD_HEADER..end) else {
            return Err(Detect::NeedMore);
        };
        while seen < 4 {
            let Some((&b, rest)) = payload.split_first() else {
                break;
            };
            header = header << 8 | u32::from(b);
            seen += 1;
            payload = rest;
        }
        if message_len.is_none() && seen == 4 {
            if header >> 24 != HANDSHAKE_CLIENT_HELLO {
                return Err(malformed("first handshake message is not a ClientHello"));
            }
            let body = (header & 0xff_ffff) as usize;
            if body > MAX_HELLO_MESSAGE {
                // BoringSSL refuses such a hello as it reads its header: Envoy then finds no
                // TLS (tls_not_found), not a hello too large.
                return Err(malformed("ClientHello longer than 16 KiB"));
            }
            message_len = Some(4 + body);
        }
        records += 1;
        if let Some(message_len) = message_len {
            seen += payload.len().min(message_len - seen);
            if seen == message_len {
                return Ok(Framing {
                    records,
                    message_len,
                    wire_len: end,
                });
            }
            // The rest needs at least one more record.
            if end + RECORD_HEADER + (message_len - seen) > max_hello {
                return Err(Detect::Invalid(Invalid::TooLarge));
            }
        }
        pos = end;
    }
}

/// `NeedMore`, unless the hello cannot end before byte `min_len`, past `max_hello`.
fn need(min_len: usize, max_hello: usize) -> Detect<'static> {
    if min_len > max_hello {
        Detect::Invalid(Invalid::TooLarge)
    } else {
        Detect::NeedMore
    }
}

fn malformed(what: &'static str) -> Detect<'static> {
    Detect::Invalid(Invalid::Malformed(what))
}

/// Moves the hello's fragments together behind the first record header, so the handshake
/// message is `buf[5..5 + message_len]`. `frame` has checked every length it reads.
fn join_records(buf: &mut [u8], message_len: usize) {
    let mut write = RECORD_HEADER;
    let mut pos = 0;
    let mut left = message_len;
    while left > 0 {
        let Some(&[_, _, _, hi, lo]) = buf.get(pos..pos + RECORD_HEADER) else {
            return;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let take = len.min(left);
        let from = pos + RECORD_HEADER;
        if from + take > buf.len() {
            return;
        }
        buf.copy_within(from..from + take, write);
        write += take;
        left -= take;
        pos = from + len;
    }
}

/// Parses a ClientHello body (after the handshake header).
fn parse_hello(body: &[u8], wire_len: usize) -> Result<ClientHello<'_>, Invalid> {
    let mut r = Reader(body);
    r.take(2 + 32)
        .ok_or(Invalid::Malformed("truncated version or random"))?;
    let session_id = r.vec8().ok_or(Invalid::Malformed("truncated session id"))?;
    if session_id.0.len() > 32 {
        return Err(Invalid::Malformed("session id longer than 32 bytes"));
    }
    let suites = r
        .vec16()
        .ok_or(Invalid::Malformed("truncated cipher suites"))?;
    if suites.0.is_empty() || suites.0.len() % 2 != 0 {
        return Err(Invalid::Malformed("cipher suite list empty or odd"));
    }
    let compression = r
        .vec8()
        .ok_or(Invalid::Malformed("truncated compression methods"))?;
    if compression.0.is_empty() {
        return Err(Invalid::Malformed("no compression method"));
    }
    let mut hello = ClientHello {
        server_name: None,
        alpn: &[],
        tls13: false,
        sslv2: false,
        wire_len,
    };
    if r.0.is_empty() {
        return Ok(hello); // no extensions (TLS 1.2 and earlier allow that)
    }
    let mut extensions = r
        .vec16()
        .ok_or(Invalid::Malformed("truncated extensions"))?;
    if !r.0.is_empty() {
        return Err(Invalid::Malformed("bytes after the extensions"));
    }
    let mut seen = TypeSet::new();
    while !extensions.0.is_empty() {
        let (kind, data) = extensions
            .u16()
            .zip(extensions.vec16())
            .ok_or(Invalid::Malformed("truncated extension"))?;
        if !seen.insert(kind) {
            return Err(Invalid::Malformed("duplicate extension"));
        }
        match kind {
            EXT_SERVER_NAME => hello.server_name = host_name(data)?,
            EXT_ALPN => hello.alpn = alpn_list(data).unwrap_or_default(),
            EXT_SUPPORTED_VERSIONS => hello.tls13 = offers_tls13(data),
            _ => {}
        }
    }
    Ok(hello)
}

/// The server_name extension, checked as BoringSSL does; `None` if the name is not DNS-style.
fn host_name(data: Reader<'_>) -> Result<Option<&str>, Invalid> {
    let mut data = data;
    let mut list = data
        .vec16()
        .ok_or(Invalid::Malformed("truncated server_name"))?;
    let name_type = list
        .u8()
        .ok_or(Invalid::Malformed("truncated server_name"))?;
    let name = list
        .vec16()
        .ok_or(Invalid::Malformed("truncated server_name"))?
        .0;
    if !list.0.is_empty() || !data.0.is_empty() {
        return Err(Invalid::Malformed("server_name is not exactly one name"));
    }
    if name_type != 0 || name.is_empty() || name.len() > 255 || name.contains(&0) {
        return Err(Invalid::Malformed("server_name is not a host name"));
    }
    Ok(is_dns_name(name)
        .then(|| core::str::from_utf8(name).ok())
        .flatten())
}

/// Labels of 1..=63 ASCII letters, digits, `-` or `_`, joined by single dots.
fn is_dns_name(name: &[u8]) -> bool {
    name.split(|&b| b == b'.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The protocol_name_list of an ALPN extension if it is well formed (as Envoy checks it: one
/// list filling the extension, at least one name, no empty name).
fn alpn_list(data: Reader<'_>) -> Option<&[u8]> {
    let mut data = data;
    let list = data.vec16()?;
    if !data.0.is_empty() || list.0.is_empty() {
        return None;
    }
    let mut names = list;
    while !names.0.is_empty() {
        if names.vec8()?.0.is_empty() {
            return None;
        }
    }
    Some(list.0)
}

/// The supported_versions extension lists TLS 1.3 (GREASE and unknown versions are skipped).
fn offers_tls13(data: Reader<'_>) -> bool {
    let mut data = data;
    let Some(mut versions) = data.vec8() else {
        return false;
    };
    if !data.0.is_empty() || versions.0.len() % 2 != 0 {
        return false;
    }
    while let Some(version) = versions.u16() {
        if version == TLS13 {
            return true;
        }
    }
    false
}

/// An SSLv2-compatible ClientHello, checked as BoringSSL converts it: a 2-byte header with the
/// high bit set, message type 1, version major 3, then cipher specs, session id and challenge
/// of the lengths given, nothing after.
fn detect_sslv2(buf: &[u8], max_hello: usize) -> Detect<'_> {
    if buf.get(2).is_some_and(|&kind| kind != 1) || buf.get(3).is_some_and(|&major| major != 3) {
        return Detect::NotTls;
    }
    let Some(&[b0, b1, ..]) = buf.get(..5) else {
        return need(5, max_hello);
    };
    let len = usize::from(u16::from_be_bytes([b0 & 0x7f, b1]));
    if len > MAX_V2_HELLO {
        return malformed("SSLv2 hello longer than 4096 bytes");
    }
    let wire_len = 2 + len;
    if wire_len > max_hello {
        return Detect::Invalid(Invalid::TooLarge);
    }
    let Some(message) = buf.get(2..wire_len) else {
        return Detect::NeedMore;
    };
    let mut r = Reader(message);
    let lengths = r.take(3).and_then(|_| Some((r.u16()?, r.u16()?, r.u16()?)));
    let Some((specs, session_id, challenge)) = lengths else {
        return malformed("truncated SSLv2 hello");
    };
    let specs = usize::from(specs);
    if r.0.len() != specs + usize::from(session_id) + usize::from(challenge) || specs % 3 != 0 {
        return malformed("SSLv2 hello lengths do not add up");
    }
    Detect::Hello(ClientHello {
        server_name: None,
        alpn: &[],
        tls13: false,
        sslv2: true,
        wire_len,
    })
}

/// A bounds-checked reader over a byte slice: every read returns `None` instead of overrunning.
#[derive(Clone, Copy)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        let &[a, b] = self.take(2)? else { return None };
        Some(u16::from_be_bytes([a, b]))
    }

    /// A vector with a 1-byte length prefix.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let len = self.u8()?;
        self.take(usize::from(len)).map(Reader)
    }

    /// A vector with a 2-byte length prefix.
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let len = self.u16()?;
        self.take(usize::from(len)).map(Reader)
    }
}

/// A set of extension types: one bit per possible type (8 KiB, on the stack), so finding
/// duplicates stays linear however many extensions a hello carries.
struct TypeSet([u64; 1024]);

impl TypeSet {
    fn new() -> Self {
        TypeSet([0; 1024])
    }

    /// Adds `kind`; false if it was already there.
    fn insert(&mut self, kind: u16) -> bool {
        let (word, bit) = (usize::from(kind >> 6), 1u64 << (kind & 63));
        let Some(slot) = self.0.get_mut(word) else {
            return false;
        };
        let fresh = *slot & bit == 0;
        *slot |= bit;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A captured ClientHello: the bytes a real client sent first to a listener on 127.0.0.1.
    struct Capture {
        name: &'static str,
        hex: &'static str,
        server_name: Option<&'static str>,
        alpn: &'static [&'static [u8]],
        tls13: bool,
    }

    /// Captured with a Python socket listener that saved what each client sent (2026-12-06).
    const CAPTURES: &[Capture] = &[
        // `openssl s_client -tls1_2 -servername example.com` (OpenSSL 3.0.19).
        Capture {
            name: "openssl_tls12",
            hex: include_str!("testdata/openssl_tls12.hex"),
            server_name: Some("example.com"),
            alpn: &[],
            tls13: false,
        },
        // `openssl s_client -tls1_3 -servername api.example.com -alpn h2,http/1.1`.
        Capture {
            name: "openssl_tls13_sni_alpn",
            hex: include_str!("testdata/openssl_tls13_sni_alpn.hex"),
            server_name: Some("api.example.com"),
            alpn: &[b"h2", b"http/1.1"],
            tls13: true,
        },
        // `openssl s_client -noservername`: no SNI, no ALPN.
        Capture {
            name: "openssl_nosni",
            hex: include_str!("testdata/openssl_nosni.hex"),
            server_name: None,
            alpn: &[],
            tls13: true,
        },
        // `openssl s_client -tls1_3 -servername split.example.com -alpn h2,http/1.1,proto-01,
        // ..,proto-40 -max_send_frag 512`: a 629-byte hello in two records (512 + 112 bytes),
        // the ALPN list crossing the record boundary.
        Capture {
            name: "openssl_split",
            hex: include_str!("testdata/openssl_split.hex"),
            server_name: Some("split.example.com"),
            alpn: &[
                b"h2",
                b"http/1.1",
                b"proto-01",
                b"proto-02",
                b"proto-03",
                b"proto-04",
                b"proto-05",
                b"proto-06",
                b"proto-07",
                b"proto-08",
                b"proto-09",
                b"proto-10",
                b"proto-11",
                b"proto-12",
                b"proto-13",
                b"proto-14",
                b"proto-15",
                b"proto-16",
                b"proto-17",
                b"proto-18",
                b"proto-19",
                b"proto-20",
                b"proto-21",
                b"proto-22",
                b"proto-23",
                b"proto-24",
                b"proto-25",
                b"proto-26",
                b"proto-27",
                b"proto-28",
                b"proto-29",
                b"proto-30",
                b"proto-31",
                b"proto-32",
                b"proto-33",
                b"proto-34",
                b"proto-35",
                b"proto-36",
                b"proto-37",
                b"proto-38",
                b"proto-39",
                b"proto-40",
            ],
            tls13: true,
        },
        // `curl -k https://localhost:PORT/` (curl 7.88.1, OpenSSL 3.0.19, nghttp2): padded to 512.
        Capture {
            name: "curl_h2",
            hex: include_str!("testdata/curl_h2.hex"),
            server_name: Some("localhost"),
            alpn: &[b"h2", b"http/1.1"],
            tls13: true,
        },
        // Python 3.11 `ssl.create_default_context()`, ALPN h2,http/1.1, server_hostname
        // "Mixed-Case.Example.org" (SNI is passed on as sent).
        Capture {
            name: "python_default",
            hex: include_str!("testdata/python_default.hex"),
            server_name: Some("Mixed-Case.Example.org"),
            alpn: &[b"h2", b"http/1.1"],
            tls13: true,
        },
        // Node 20 `tls.connect({servername: 'node.example.net', ALPNProtocols: ['http/1.1']})`.
        Capture {
            name: "node_default",
            hex: include_str!("testdata/node_default.hex"),
            server_name: Some("node.example.net"),
            alpn: &[b"http/1.1"],
            tls13: true,
        },
        // Chromium 156 headless shell (BoringSSL) opening https://chrome.example.com:PORT/:
        // GREASE extensions 0x3a3a (first) and 0xcaca (last), GREASE version 0xdada in
        // supported_versions, a GREASE ECH extension, an X25519MLKEM768 key share (1263
        // bytes), ALPS; 1731 bytes in one record.
        Capture {
            name: "chrome",
            hex: include_str!("testdata/chrome.hex"),
            server_name: Some("chrome.example.com"),
            alpn: &[b"h2", b"http/1.1"],
            tls13: true,
        },
    ];

    fn unhex(hex: &str) -> Vec<u8> {
        let hex = hex.trim();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The handshake bytes carried by the records at the start of `wire`.
    fn handshake_bytes(wire: &[u8]) -> Vec<u8> {
        let (mut out, mut pos) = (Vec::new(), 0);
        while pos + 5 <= wire.len() {
            let len = usize::from(u16::from_be_bytes([wire[pos + 3], wire[pos + 4]]));
            out.extend_from_slice(&wire[pos + 5..pos + 5 + len]);
            pos += 5 + len;
        }
        out
    }

    /// `handshake` in handshake records of at most `size` bytes.
    fn records(handshake: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in handshake.chunks(size) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn check(name: &str, d: Detect<'_>, c: &Capture, wire_len: usize) {
        let Detect::Hello(h) = d else {
            panic!("{name}: {d:?}")
        };
        assert_eq!(h.server_name(), c.server_name, "{name}");
        assert_eq!(h.alpn().collect::<Vec<_>>(), c.alpn, "{name}");
        assert_eq!(h.supports_tls13(), c.tls13, "{name}");
        assert!(!h.is_sslv2(), "{name}");
        assert_eq!(h.wire_len(), wire_len, "{name}");
    }

    /// Every prefix shorter than `wire_len` needs more; the whole gives `expect`.
    fn check_prefixes(name: &str, wire: &[u8]) {
        let full_len = match detect(&mut wire.to_vec(), MAX_CLIENT_HELLO_SIZE) {
            Detect::Hello(h) => h.wire_len(),
            d => panic!("{name}: {d:?}"),
        };
        for n in 0..full_len {
            let mut prefix = wire[..n].to_vec();
            let d = detect(&mut prefix, MAX_CLIENT_HELLO_SIZE);
            assert_eq!(d, Detect::NeedMore, "{name}: prefix of {n} bytes");
        }
    }

    #[test]
    fn real_hellos() {
        for c in CAPTURES {
            let wire = unhex(c.hex);
            check(
                c.name,
                detect(&mut wire.clone(), MAX_CLIENT_HELLO_SIZE),
                c,
                wire.len(),
            );
            check_prefixes(c.name, &wire);
        }
    }

    #[test]
    fn real_hellos_refragmented() {
        for c in CAPTURES {
            let handshake = handshake_bytes(&unhex(c.hex));
            for size in [1, 2, 3, 4, 5, 7, 41, 256, 300, 1000] {
                let wire = records(&handshake, size);
                let name = format!("{} in records of {size}", c.name);
                let max = wire.len().max(MAX_CLIENT_HELLO_SIZE);
                check(&name, detect(&mut wire.clone(), max), c, wire.len());
                if size >= 41 || c.name == "openssl_tls12" {
                    check_prefixes(&name, &wire);
                }
            }
        }
    }

    #[test]
    fn bytes_after_the_hello_are_not_part_of_it() {
        let c = &CAPTURES[1];
        let hello = unhex(c.hex);
        // TLS 1.3 early data / a CCS record after the hello, and garbage.
        for tail in [
            &[20u8, 3, 3, 0, 1, 1][..],
            b"\x17\x03\x03\x00\x05hello",
            b"junk",
        ] {
            let mut wire = hello.clone();
            wire.extend_from_slice(tail);
            check(
                c.name,
                detect(&mut wire, MAX_CLIENT_HELLO_SIZE),
                c,
                hello.len(),
            );
        }
        // The last record may hold more handshake data after the hello: the record counts.
        let mut handshake = handshake_bytes(&hello);
        handshake.extend_from_slice(&[11, 0, 0, 0]);
        let wire = records(&handshake, handshake.len());
        check(
            c.name,
            detect(&mut wire.clone(), MAX_CLIENT_HELLO_SIZE),
            c,
            wire.len(),
        );
    }

    #[test]
    fn too_large() {
        let chrome = unhex(CAPTURES[7].hex); // 1736 bytes
        assert!(matches!(
            detect(&mut chrome.clone(), 1736),
            Detect::Hello(_)
        ));
        let too_large = Detect::Invalid(Invalid::TooLarge);
        assert_eq!(detect(&mut chrome.clone(), 1735), too_large);
        // Known from the record header alone.
        assert_eq!(detect(&mut chrome[..5].to_vec(), 1735), too_large);
        // In records of 100 bytes (1821 in all): known once the first record, holding the
        // handshake header, is complete.
        let wire = records(&handshake_bytes(&chrome), 100);
        assert_eq!(detect(&mut wire[..104].to_vec(), 1000), Detect::NeedMore);
        assert_eq!(detect(&mut wire[..105].to_vec(), 1000), too_large);
        assert!(matches!(detect(&mut wire.clone(), 1821), Detect::Hello(_)));
        // Never more than the limit is needed to decide.
        for max in [1, 5, 100, 1000, 1820] {
            let mut prefix = wire[..wire.len().min(max)].to_vec();
            let d = detect(&mut prefix, max);
            assert_eq!(d, too_large, "max {max}");
        }
        // A handshake message claiming 16 MiB, or just over 16 KiB: no TLS for BoringSSL
        // (Envoy: tls_not_found), whatever the byte limit.
        for body in [[0xff, 0xff, 0xff], [0x00, 0x40, 0x01]] {
            let mut huge = vec![22, 3, 1, 0, 4, 1, body[0], body[1], body[2]];
            assert!(
                matches!(
                    detect(&mut huge, MAX_CLIENT_HELLO_SIZE),
                    Detect::Invalid(Invalid::Malformed(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn not_tls() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"\x15\x03\x03\x00\x02\x02\x28", // an alert record
            b"\x17\x03\x03\x00\x01\x00",     // application data
            b"\x16\x02",                     // version major 2
            b"\x16\x04\x00\x00\x01",
            b"\x00",
        ] {
            assert_eq!(
                detect(&mut bytes.to_vec(), MAX_CLIENT_HELLO_SIZE),
                Detect::NotTls,
                "{bytes:?}"
            );
        }
        for bytes in [&b""[..], b"\x16", b"\x16\x03", b"\x16\x03\x01\x00"] {
            assert_eq!(
                detect(&mut bytes.to_vec(), MAX_CLIENT_HELLO_SIZE),
                Detect::NeedMore
            );
        }
    }

    /// An SSLv2-compatible ClientHello (RFC 5246 E.2), built by hand: no client sent one here
    /// (OpenSSL 3 and the others no longer do). TLS 1.0, three cipher specs, a 16-byte challenge.
    const SSLV2_HELLO: &[u8] = &[
        0x80, 0x22, // header: 34 bytes follow
        0x01, 0x03, 0x01, // CLIENT-HELLO, version 3.1
        0x00, 0x09, 0x00, 0x00, 0x00, 0x10, // cipher specs 9, session id 0, challenge 16
        0x00, 0x00, 0x2f, 0x00, 0x00, 0x35, 0x00, 0x00, 0xff, // AES128-SHA, AES256-SHA, SCSV
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
        0x00, // challenge
    ];

    #[test]
    fn sslv2_compatible_hello() {
        let mut wire = SSLV2_HELLO.to_vec();
        let Detect::Hello(h) = detect(&mut wire, MAX_CLIENT_HELLO_SIZE) else {
            panic!()
        };
        assert!(h.is_sslv2() && !h.supports_tls13());
        assert_eq!(
            (h.server_name(), h.alpn().count(), h.wire_len()),
            (None, 0, 36)
        );
        for n in 0..SSLV2_HELLO.len() {
            assert_eq!(
                detect(&mut SSLV2_HELLO[..n].to_vec(), 4096),
                Detect::NeedMore,
                "{n}"
            );
        }
        assert_eq!(
            detect(&mut SSLV2_HELLO.to_vec(), 35),
            Detect::Invalid(Invalid::TooLarge)
        );
        let mut other = SSLV2_HELLO.to_vec();
        other[2] = 4; // not CLIENT-HELLO
        assert_eq!(detect(&mut other, 4096), Detect::NotTls);
        let mut other = SSLV2_HELLO.to_vec();
        other[3] = 2; // SSL 2.0 itself
        assert_eq!(detect(&mut other[..4].to_vec(), 4096), Detect::NotTls);
        let mut other = SSLV2_HELLO.to_vec();
        other[10] = 0x0f; // challenge length 15: one byte left over
        assert!(matches!(
            detect(&mut other, 4096),
            Detect::Invalid(Invalid::Malformed(_))
        ));
    }

    /// A one-record ClientHello with these extensions (None: no extension block at all).
    fn build(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]); // one suite, null compression
        if let Some(extensions) = extensions {
            let mut block = Vec::new();
            for (kind, data) in extensions {
                block.extend_from_slice(&kind.to_be_bytes());
                block.extend_from_slice(&(data.len() as u16).to_be_bytes());
                block.extend_from_slice(data);
            }
            body.extend_from_slice(&(block.len() as u16).to_be_bytes());
            body.extend_from_slice(&block);
        }
        let mut handshake = vec![1];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        records(&handshake, handshake.len())
    }

    fn sni(names: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in names {
            list.push(*kind);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        data
    }

    fn alpn(names: &[&[u8]]) -> Vec<u8> {
        let list: Vec<u8> = names
            .iter()
            .flat_map(|n| [&[n.len() as u8][..], n].concat())
            .collect();
        [&(list.len() as u16).to_be_bytes()[..], &list].concat()
    }

    fn hello(wire: &mut [u8]) -> ClientHello<'_> {
        match detect(wire, MAX_CLIENT_HELLO_SIZE) {
            Detect::Hello(h) => h,
            d => panic!("{d:?}"),
        }
    }

    fn malformed_reason(mut wire: Vec<u8>) -> &'static str {
        match detect(&mut wire, MAX_CLIENT_HELLO_SIZE) {
            Detect::Invalid(Invalid::Malformed(why)) => why,
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn built_hellos() {
        let h = build(None);
        assert_eq!(hello(&mut h.clone()).server_name(), None);
        let mut h = build(Some(&[]));
        assert_eq!(hello(&mut h).alpn().count(), 0);
        // GREASE extension types, GREASE in supported_versions and ALPN.
        let grease = [
            (0x0a0a, vec![]),
            (EXT_SUPPORTED_VERSIONS, vec![4, 0x7a, 0x7a, 3, 4]),
            (EXT_ALPN, alpn(&[b"\x1a\x1a", b"h2"])),
            (0xfafa, vec![0]),
        ];
        let mut w = build(Some(&grease));
        let h = hello(&mut w);
        assert!(h.supports_tls13());
        assert_eq!(h.alpn().collect::<Vec<_>>(), [&b"\x1a\x1a"[..], b"h2"]);
        // A malformed ALPN or supported_versions is ignored, as Envoy and BoringSSL do then.
        for bad_alpn in [
            vec![],
            vec![0, 0],
            vec![0, 3, 3, b'h', b'2'],
            vec![0, 3, 0, 1, b'x'],
        ] {
            let mut w = build(Some(&[(EXT_ALPN, bad_alpn.clone())]));
            assert_eq!(hello(&mut w).alpn().count(), 0, "{bad_alpn:?}");
        }
        let mut w = build(Some(&[(EXT_SUPPORTED_VERSIONS, vec![3, 3, 4, 3])]));
        assert!(!hello(&mut w).supports_tls13());
    }

    #[test]
    fn server_names() {
        for (name, expect) in [
            (&b"example.com"[..], Some("example.com")),
            (b"EXAMPLE.com", Some("EXAMPLE.com")),
            (b"a-b_c.d1", Some("a-b_c.d1")),
            (b"localhost", Some("localhost")),
            (b"127.0.0.1", Some("127.0.0.1")),
            (b"example.com.", None),
            (b".example.com", None),
            (b"a..b", None),
            (b"*.example.com", None),
            (b"ex ample.com", None),
            (b"caf\xc3\xa9.fr", None),
            (&[b'a'; 64], None),
        ] {
            let mut w = build(Some(&[(EXT_SERVER_NAME, sni(&[(0, name)]))]));
            assert_eq!(hello(&mut w).server_name(), expect, "{name:?}");
        }
        let label = [b'a'; 63];
        let long = [&label[..], b".", &label, b".", &label, b".", &label].concat(); // 255
        let mut w = build(Some(&[(EXT_SERVER_NAME, sni(&[(0, &long)]))]));
        assert_eq!(hello(&mut w).server_name().map(str::len), Some(255));
    }

    #[test]
    fn malformed_hellos() {
        let ext = |kind, data: Vec<u8>| build(Some(&[(kind, data)]));
        for (wire, why) in [
            (
                ext(EXT_SERVER_NAME, sni(&[(0, b"a"), (0, b"b")])),
                "two names",
            ),
            (ext(EXT_SERVER_NAME, sni(&[(1, b"a")])), "name type 1"),
            (ext(EXT_SERVER_NAME, sni(&[(0, b"")])), "empty name"),
            (ext(EXT_SERVER_NAME, sni(&[(0, b"a\0b")])), "NUL in name"),
            (
                ext(EXT_SERVER_NAME, sni(&[(0, &[b'a'; 256])])),
                "name over 255",
            ),
            (ext(EXT_SERVER_NAME, vec![]), "empty server_name"),
            (
                ext(EXT_SERVER_NAME, [sni(&[(0, b"a")]), vec![0]].concat()),
                "byte after list",
            ),
            (build(Some(&[(5, vec![]), (5, vec![])])), "duplicate"),
            (
                build(Some(&[(0x2a2a, vec![]), (0x2a2a, vec![1])])),
                "duplicate GREASE",
            ),
        ] {
            let _ = malformed_reason(wire.clone());
            let _ = why;
        }
        // Edits of the built hello: (offset from the start of the wire, new byte).
        let base = build(Some(&[(5, vec![])]));
        let body = 9; // record header + handshake header
        for (at, byte, why) in [
            (body + 34, 33, "session id of 33"),
            (body + 36, 3, "odd suites"),
            (5, 2, "ServerHello"),
            (0, 22, "control"),
        ] {
            let mut wire = base.clone();
            wire[at] = byte;
            if why == "control" {
                assert!(matches!(
                    detect(&mut wire, MAX_CLIENT_HELLO_SIZE),
                    Detect::Hello(_)
                ));
            } else {
                assert!(
                    matches!(detect(&mut wire, MAX_CLIENT_HELLO_SIZE), Detect::Invalid(_)),
                    "{why}"
                );
            }
        }
        // Bytes after the extension block (message and record lengths grown to match).
        let mut wire = base.clone();
        wire.push(0);
        wire[4] += 1;
        wire[8] += 1;
        assert_eq!(malformed_reason(wire), "bytes after the extensions");
        // Record layer: a second record of another type, an empty record, an oversized one.
        let handshake = handshake_bytes(&unhex(CAPTURES[0].hex));
        let mut wire = records(&handshake, 100);
        wire[105] = 23;
        assert!(matches!(
            detect(&mut wire, MAX_CLIENT_HELLO_SIZE),
            Detect::Invalid(_)
        ));
        let wire = [&[22, 3, 1, 0, 0][..], &records(&handshake, 1000)].concat();
        assert_eq!(malformed_reason(wire), "empty handshake record");
        let mut wire = vec![22, 3, 1, 0x40, 0x01];
        assert_eq!(
            detect(&mut wire, usize::MAX),
            malformed("record longer than 2^14 bytes")
        );
    }

    /// Deterministic xorshift, so the mutation tests need no crate.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// What must hold whatever the bytes: no panic, borrowed slices inside the buffer.
    fn check_invariants(wire: &[u8], max: usize) {
        let mut buf = wire.to_vec();
        let range = buf.as_ptr_range();
        let inside = |s: &[u8]| {
            let r = s.as_ptr_range();
            range.start <= r.start && r.end <= range.end
        };
        if let Detect::Hello(h) = detect(&mut buf, max) {
            assert!(h.wire_len() <= wire.len() && h.wire_len() <= max);
            if let Some(name) = h.server_name() {
                assert!(inside(name.as_bytes()));
            }
            assert!(h.alpn().all(|p| inside(p) && !p.is_empty()));
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        for c in CAPTURES {
            let wire = unhex(c.hex);
            for frag in [wire.clone(), records(&handshake_bytes(&wire), 97)] {
                for i in 0..frag.len() {
                    for x in [0x01, 0x80, 0xff] {
                        let mut w = frag.clone();
                        w[i] ^= x;
                        check_invariants(&w, MAX_CLIENT_HELLO_SIZE);
                        check_invariants(&w[..i], MAX_CLIENT_HELLO_SIZE);
                    }
                }
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let base = unhex(CAPTURES[7].hex);
        for _ in 0..20_000 {
            let mut w = base.clone();
            for _ in 0..1 + rng(&mut seed) % 8 {
                let i = (rng(&mut seed) as usize) % w.len();
                w[i] = rng(&mut seed) as u8;
            }
            let len = (rng(&mut seed) as usize) % (w.len() + 1);
            check_invariants(&w[..len], MAX_CLIENT_HELLO_SIZE);
            check_invariants(&w, (rng(&mut seed) as usize) % 4000);
        }
    }
}
