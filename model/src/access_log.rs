//! Envoy's `%COMMAND%` formats (access logs, and anything formatted like them): compiled on the agent, rendered on shards.
//!
//! Compiling checks every command once; rendering only appends to the caller's buffer (no
//! allocation, no parsing), so shards can log every closed connection and every HTTP request
//! cheaply. One compiled format renders both: a TCP connection is a [`ConnectionRecord`]
//! without `http`; an HTTP request is one whose `http` view reads the shard's own request,
//! response and timing state in place (see [`HttpLogView`]).
use std::{
    fmt,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use crate::tls_info::{DownstreamTls, Negotiated};

pub mod filter;
mod json;

pub use json::{write_string as write_json_string, JsonFormat, JsonFormatError, JsonTemplate};

/// Envoy's format when an access log sets none (the same for HTTP and TCP; the HTTP-only
/// commands render `-`, and `%RESPONSE_CODE%` renders `0`, for TCP connections).
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// A compiled access log: where lines go and how each is formatted.
#[derive(Debug, Clone)]
pub struct AccessLog {
    pub sink: LogSink,
    pub format: SubstitutionFormat,
    /// `filter`: which connections or requests are logged (`None`: all).
    pub filter: Option<filter::LogFilter>,
}

/// A compiled `SubstitutionFormatString`: the text or JSON form of an access log line or a
/// local reply body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstitutionFormat {
    Text(Format),
    Json(JsonFormat),
}

impl SubstitutionFormat {
    /// Whether a command reads the downstream connection's TLS.
    pub fn reads_tls(&self) -> bool {
        match self {
            SubstitutionFormat::Text(format) => format.reads_tls(),
            SubstitutionFormat::Json(format) => format.reads_tls(),
        }
    }

    /// Appends the format rendered for `record` to `out`.
    pub fn render(&self, record: &ConnectionRecord, out: &mut Vec<u8>) {
        match self {
            SubstitutionFormat::Text(format) => format.render(record, out),
            SubstitutionFormat::Json(format) => format.render(record, out),
        }
    }
}

/// A compiled `%COMMAND%` string: an access log's line, and anything else Envoy formats the
/// same way (header values, local reply bodies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    parts: Vec<Part>,
    /// A command reads the downstream connection's TLS.
    reads_tls: bool,
    /// A command without a value renders nothing (Envoy's `omit_empty_values`, always on for
    /// header values), not `-`.
    omit_empty: bool,
}

/// Where an access log writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogSink {
    Path(PathBuf),
    Stdout,
    Stderr,
}

/// Why a format string does not compile. `position` is the byte offset of the `%` that opens
/// the offending command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unknown command %{command}% at position {position}")]
    UnknownCommand { command: String, position: usize },
    #[error("no valid command at position {position} (a literal `%` is written `%%`)")]
    Malformed { position: usize },
    #[error("command %{command}% at position {position} needs an argument in parentheses")]
    MissingArgument { command: String, position: usize },
    #[error("command %{command}% at position {position} takes no argument")]
    UnexpectedArgument { command: String, position: usize },
    #[error(
        "%{command}({format})% at position {position}: custom time formats are not supported yet"
    )]
    TimeFormat {
        command: String,
        format: String,
        position: usize,
    },
    #[error(
        "command %{command}% at position {position}: header {argument:?} is not `NAME` or `NAME?ALTERNATIVE`"
    )]
    HeaderArgument {
        command: String,
        argument: String,
        position: usize,
    },
}

/// What a shard knows about a closed TCP connection or a finished HTTP request.
///
/// For HTTP, `start` and `duration` are the request's (first request byte to last response
/// byte), `bytes_received` and `bytes_sent` count body bytes (as Envoy), and `http` reads the
/// rest from the stream.
#[derive(Debug, Clone)]
pub struct ConnectionRecord<'a> {
    pub start: SystemTime,
    pub duration: Duration,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub downstream_remote: SocketAddr,
    pub downstream_local: SocketAddr,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_local: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    pub response_flags: ResponseFlags,
    pub connection_id: u64,
    /// The downstream connection's TLS; `None` on a plaintext connection, and when no format
    /// of the log reads it ([`AccessLog::reads_tls`]).
    pub tls: Option<&'a DownstreamTls>,
    /// The server name (SNI) the tls_inspector read (`%REQUESTED_SERVER_NAME%`).
    pub requested_server_name: Option<&'a str>,
    /// What the upstream connection's handshake negotiated.
    pub upstream_tls: Option<Negotiated>,
    /// Why a network filter closed the connection (`%CONNECTION_TERMINATION_DETAILS%`), e.g.
    /// the network RBAC filter's `rbac_access_denied_matched_policy[…]`.
    pub termination_details: Option<&'a str>,
    /// The HTTP request this record logs; `None` for a TCP connection.
    pub http: Option<&'a dyn HttpLogView>,
}

/// What an access log reads of one HTTP request, in place. The connection manager's stream
/// implements it over its own heads and timestamps, so logging copies nothing.
pub trait HttpLogView {
    /// A request header by lower-case name; `:method`, `:path`, `:authority` and `:scheme`
    /// name the request line's parts (HTTP/1's `host` is the authority).
    fn request_header(&self, name: &str) -> Option<&[u8]>;
    /// A response header by lower-case name, as sent downstream.
    fn response_header(&self, name: &str) -> Option<&[u8]>;
    /// A response trailer by lower-case name.
    fn response_trailer(&self, name: &str) -> Option<&[u8]>;
    /// `HTTP/1.1`, `HTTP/1.0`, …
    fn protocol(&self) -> &str;
    /// The status sent downstream; 0 when none was (`%RESPONSE_CODE%` renders `0`).
    fn response_code(&self) -> u16;
    /// Envoy's response code details: `via_upstream`, `route_not_found`, `direct_response`, …
    fn response_code_details(&self) -> Option<&str> {
        None
    }
    /// The matched route's `name`, when it has one.
    fn route_name(&self) -> Option<&str> {
        None
    }
    /// Why the upstream connection failed at the transport level (TLS later).
    fn upstream_transport_failure_reason(&self) -> Option<&str> {
        None
    }
    /// The body of the local reply being made (`%LOCAL_REPLY_BODY%`), before its body format.
    fn local_reply_body(&self) -> Option<&[u8]> {
        None
    }
    /// Milestones since the request's start.
    fn timings(&self) -> HttpTimings {
        HttpTimings::default()
    }
    /// The value at `path` in a filter `namespace` of the stream's dynamic metadata.
    fn dynamic_metadata(&self, _namespace: &str, _path: &[Box<str>]) -> Option<&Value> {
        None
    }
}

impl fmt::Debug for dyn HttpLogView + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpLogView")
            .field("protocol", &self.protocol())
            .field("response_code", &self.response_code())
            .finish_non_exhaustive()
    }
}

/// When a request reached its milestones, measured from its start; `None` when it did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpTimings {
    /// The last request byte was received (`%REQUEST_DURATION%`).
    pub last_request_byte_received: Option<Duration>,
    /// The first response byte came from upstream (`%RESPONSE_DURATION%`).
    pub first_upstream_byte_received: Option<Duration>,
    /// The last response byte was sent downstream (with the above: `%RESPONSE_TX_DURATION%`).
    pub last_response_byte_sent: Option<Duration>,
}

/// Envoy's response flags: the bits and short names of `%RESPONSE_FLAGS%`. Bit `n` is Envoy's
/// flag `n`. Envoy 1.40 renders flags in the order they were set, so that order is kept too
/// (equality looks at the set only). Envoy sets no flag for a tcp_proxy idle timeout; that is
/// only counted (`tcp.<stat_prefix>.idle_timeout`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseFlags {
    bits: u32,
    /// Bit numbers plus one, five bits each, in the order they were set (room for 12).
    order: u64,
}

impl PartialEq for ResponseFlags {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}

impl Eq for ResponseFlags {}

impl ResponseFlags {
    /// LH: the local health check failed (`/healthcheck/fail`).
    pub const FAILED_LOCAL_HEALTH_CHECK: Self = Self::bit(0);
    /// UH: no healthy upstream host in the cluster.
    pub const NO_HEALTHY_UPSTREAM: Self = Self::bit(1);
    /// UT: the upstream request timed out.
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self::bit(2);
    /// LR: the connection was reset locally.
    pub const LOCAL_RESET: Self = Self::bit(3);
    /// UR: the upstream reset the stream.
    pub const UPSTREAM_REMOTE_RESET: Self = Self::bit(4);
    /// UF: the upstream connection failed.
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self::bit(5);
    /// UC: the upstream closed the connection.
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self::bit(6);
    /// UO: upstream overflow (circuit breaking).
    pub const UPSTREAM_OVERFLOW: Self = Self::bit(7);
    /// NR: no route (no matching filter chain or route, or no cluster to pick).
    pub const NO_ROUTE_FOUND: Self = Self::bit(8);
    /// DI: the fault filter delayed the request.
    pub const DELAY_INJECTED: Self = Self::bit(9);
    /// FI: the fault filter aborted the request.
    pub const FAULT_INJECTED: Self = Self::bit(10);
    /// RL: rate limited locally (429).
    pub const RATE_LIMITED: Self = Self::bit(11);
    /// UAEX: an external authorization service denied the request.
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: Self = Self::bit(12);
    /// RLSE: the rate limit service failed.
    pub const RATE_LIMIT_SERVICE_ERROR: Self = Self::bit(13);
    /// DC: the downstream closed the connection.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self::bit(14);
    /// URX: retries (`num_retries`) or connect attempts (`max_connect_attempts`) ran out.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self::bit(15);
    /// SI: `stream_idle_timeout` fired.
    pub const STREAM_IDLE_TIMEOUT: Self = Self::bit(16);
    /// IH: an `x-envoy-*` request header had an invalid value.
    pub const INVALID_ENVOY_REQUEST_HEADERS: Self = Self::bit(17);
    /// DPE: the downstream request broke the HTTP protocol.
    pub const DOWNSTREAM_PROTOCOL_ERROR: Self = Self::bit(18);
    /// UMSDR: the upstream request reached its `max_stream_duration`.
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: Self = Self::bit(19);
    /// RFCF: the response came from the cache filter.
    pub const RESPONSE_FROM_CACHE_FILTER: Self = Self::bit(20);
    /// NFCF: a filter's config (ECDS) was not found.
    pub const NO_FILTER_CONFIG_FOUND: Self = Self::bit(21);
    /// DT: `max_downstream_connection_duration` (or a stream's max duration) reached.
    pub const DURATION_TIMEOUT: Self = Self::bit(22);
    /// UPE: the upstream response broke the HTTP protocol.
    pub const UPSTREAM_PROTOCOL_ERROR: Self = Self::bit(23);
    /// NC: the cluster named by the config does not exist (yet).
    pub const NO_CLUSTER_FOUND: Self = Self::bit(24);
    /// OM: the overload manager ended the request.
    pub const OVERLOAD_MANAGER: Self = Self::bit(25);
    /// DF: DNS resolution of the upstream failed.
    pub const DNS_RESOLUTION_FAILED: Self = Self::bit(26);
    /// DO: dropped by the cluster's drop_overload.
    pub const DROP_OVERLOAD: Self = Self::bit(27);
    /// DR: the downstream reset the stream (HTTP/2 RST_STREAM and later protocols).
    pub const DOWNSTREAM_REMOTE_RESET: Self = Self::bit(28);
    /// UDO: dropped unconditionally by drop_overload.
    pub const UNCONDITIONAL_DROP_OVERLOAD: Self = Self::bit(29);

    /// Short names by bit, in Envoy's rendering order.
    const NAMES: [&'static str; 30] = [
        "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
        "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF",
        "DO", "DR", "UDO",
    ];

    /// The flag with this short name (`UH`, `NR`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        let n = Self::NAMES.iter().position(|known| *known == name)?;
        Some(Self::bit(n as u32))
    }

    const fn bit(n: u32) -> Self {
        Self {
            bits: 1 << n,
            order: n as u64 + 1,
        }
    }

    /// Adds `flag`'s flags not set yet, after those already set.
    pub fn set(&mut self, flag: Self) {
        for n in flag.in_order() {
            if self.bits & (1 << n) == 0 {
                self.bits |= 1 << n;
                let used = self.in_order().count();
                if used < 12 {
                    self.order |= (n as u64 + 1) << (5 * used);
                }
            }
        }
    }

    /// Whether any of `flags` is set.
    pub fn intersects(self, flags: Self) -> bool {
        self.bits & flags.bits != 0
    }

    pub fn contains(self, flag: Self) -> bool {
        self.bits & flag.bits == flag.bits
    }

    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// The bit numbers set, in the order they were set.
    fn in_order(self) -> impl Iterator<Item = u32> {
        (0..12)
            .map(move |slot| ((self.order >> (5 * slot)) & 0x1f) as u32)
            .take_while(|n| *n != 0)
            .map(|n| n - 1)
    }

    /// `-` when empty, else the short names joined with `,` in the order they were set
    /// (Envoy's `%RESPONSE_FLAGS%`; past 12 flags the rest follow in bit order).
    pub fn render(self, out: &mut Vec<u8>) {
        if self.is_empty() {
            out.push(b'-');
            return;
        }
        let ordered = self.in_order().fold(0u32, |seen, n| seen | 1 << n);
        let rest = (0..32).filter(|n| (self.bits & !ordered) & (1 << n) != 0);
        for (i, n) in self.in_order().chain(rest).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(Self::NAMES[n as usize].as_bytes());
        }
    }
}

/// One piece of a compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A command and its `:N` length limit.
    Command(Command, Option<usize>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    StartTime,
    Duration,
    RequestDuration,
    ResponseDuration,
    ResponseTxDuration,
    BytesReceived,
    BytesSent,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    UpstreamTransportFailureReason,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamRemotePort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamLocalPort,
    ResponseFlags,
    ConnectionId,
    /// `-` unless a network filter closed the connection.
    ConnectionTerminationDetails,
    /// `-` without one.
    RequestedServerName,
    /// `%DOWNSTREAM_TLS_*%`, `%DOWNSTREAM_PEER_*%`, `%DOWNSTREAM_LOCAL_*%`: `-` on a plaintext
    /// connection.
    DownstreamTls(TlsField),
    UpstreamTlsVersion,
    UpstreamTlsCipher,
    /// `-` for TCP.
    Protocol,
    /// `0` for TCP, as Envoy.
    ResponseCode,
    ResponseCodeDetails,
    RouteName,
    /// Empty outside a local reply's body format.
    LocalReplyBody,
    /// `REQ`, `REQ_WITHOUT_QUERY`, `RESP`, `TRAILER`: `-` for TCP.
    Header(HeaderSource, HeaderName),
    /// `DYNAMIC_METADATA(NAMESPACE[:KEY…])`: a string as it is, anything else as JSON; `-`
    /// when absent (and for TCP).
    DynamicMetadata {
        namespace: Box<str>,
        path: Box<[Box<str>]>,
    },
}

impl Command {
    /// Whether the value is a number (typed as one in a JSON format, as Envoy's).
    fn is_number(&self) -> bool {
        matches!(
            self,
            Command::Duration
                | Command::RequestDuration
                | Command::ResponseDuration
                | Command::ResponseTxDuration
                | Command::BytesReceived
                | Command::BytesSent
                | Command::ConnectionId
                | Command::ResponseCode
                | Command::DownstreamRemotePort
                | Command::DownstreamLocalPort
        )
    }
}

/// What a downstream TLS command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsField {
    Version,
    Cipher,
    /// Always `-`: rustls does not expose a TLS 1.2 session ID (TLS 1.3 has none in Envoy
    /// either).
    SessionId,
    PeerUriSan,
    PeerDnsSan,
    PeerSubject,
    PeerIssuer,
    PeerSerial,
    PeerFingerprint256,
    PeerCertValidFrom,
    PeerCertValidTo,
    LocalUriSan,
    LocalSubject,
}

/// Where a header command looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderSource {
    Request,
    /// A request header cut at its first `?` (`%REQ_WITHOUT_QUERY(:PATH)%`).
    RequestWithoutQuery,
    Response,
    Trailer,
}

/// A lower-case header name, and the one to use when it is absent (`NAME?ALTERNATIVE`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeaderName {
    name: Box<str>,
    alternative: Option<Box<str>>,
}

impl HeaderName {
    fn parse(argument: &str) -> Option<Self> {
        // A second `?` fails the alternative's token check.
        let (name, alternative) = match argument.split_once('?') {
            Some((name, alternative)) => (name, Some(valid_header_name(alternative)?)),
            None => (argument, None),
        };
        Some(Self {
            name: valid_header_name(name)?,
            alternative,
        })
    }

    fn lookup<'v>(&self, get: impl Fn(&str) -> Option<&'v [u8]>) -> Option<&'v [u8]> {
        get(&self.name).or_else(|| self.alternative.as_deref().and_then(get))
    }
}

/// A header name (token characters, or a pseudo-header `:name`), lower-cased.
fn valid_header_name(name: &str) -> Option<Box<str>> {
    let token = name.strip_prefix(':').unwrap_or(name);
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    (!token.is_empty() && token.chars().all(is_token_char))
        .then(|| name.to_ascii_lowercase().into_boxed_str())
}

/// What a command name compiles to, by the argument it takes.
enum Spec {
    /// No argument.
    Plain(Command),
    /// A time, with an optional format (only the default is supported).
    Time(Command),
    /// A required `NAME?ALTERNATIVE` header argument.
    Header(HeaderSource),
    /// A required `NAMESPACE:KEY:…` argument.
    Metadata,
}

fn command(name: &str) -> Option<Spec> {
    use Command::*;
    let plain = match name {
        "START_TIME" => return Some(Spec::Time(StartTime)),
        "DOWNSTREAM_PEER_CERT_V_START" => {
            return Some(Spec::Time(DownstreamTls(TlsField::PeerCertValidFrom)))
        }
        "DOWNSTREAM_PEER_CERT_V_END" => {
            return Some(Spec::Time(DownstreamTls(TlsField::PeerCertValidTo)))
        }
        "REQ" => return Some(Spec::Header(HeaderSource::Request)),
        "REQ_WITHOUT_QUERY" => return Some(Spec::Header(HeaderSource::RequestWithoutQuery)),
        "RESP" => return Some(Spec::Header(HeaderSource::Response)),
        "TRAILER" => return Some(Spec::Header(HeaderSource::Trailer)),
        "DYNAMIC_METADATA" => return Some(Spec::Metadata),
        "DURATION" => Duration,
        "REQUEST_DURATION" => RequestDuration,
        "RESPONSE_DURATION" => ResponseDuration,
        "RESPONSE_TX_DURATION" => ResponseTxDuration,
        "BYTES_RECEIVED" => BytesReceived,
        "BYTES_SENT" => BytesSent,
        "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" => UpstreamHost,
        "UPSTREAM_CLUSTER" => UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => UpstreamLocalAddress,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => UpstreamTransportFailureReason,
        "DOWNSTREAM_REMOTE_ADDRESS" => DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => DownstreamRemoteAddressWithoutPort,
        "DOWNSTREAM_LOCAL_ADDRESS" => DownstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => DownstreamLocalAddressWithoutPort,
        "DOWNSTREAM_REMOTE_PORT" => DownstreamRemotePort,
        "DOWNSTREAM_LOCAL_PORT" => DownstreamLocalPort,
        "RESPONSE_FLAGS" => ResponseFlags,
        "CONNECTION_ID" => ConnectionId,
        "CONNECTION_TERMINATION_DETAILS" => ConnectionTerminationDetails,
        "PROTOCOL" => Protocol,
        "RESPONSE_CODE" => ResponseCode,
        "RESPONSE_CODE_DETAILS" => ResponseCodeDetails,
        "ROUTE_NAME" => RouteName,
        "LOCAL_REPLY_BODY" => LocalReplyBody,
        "REQUESTED_SERVER_NAME" => RequestedServerName,
        "DOWNSTREAM_TLS_VERSION" => DownstreamTls(TlsField::Version),
        "DOWNSTREAM_TLS_CIPHER" => DownstreamTls(TlsField::Cipher),
        "DOWNSTREAM_TLS_SESSION_ID" => DownstreamTls(TlsField::SessionId),
        "DOWNSTREAM_PEER_URI_SAN" => DownstreamTls(TlsField::PeerUriSan),
        "DOWNSTREAM_PEER_DNS_SAN" => DownstreamTls(TlsField::PeerDnsSan),
        "DOWNSTREAM_PEER_SUBJECT" => DownstreamTls(TlsField::PeerSubject),
        "DOWNSTREAM_PEER_ISSUER" => DownstreamTls(TlsField::PeerIssuer),
        "DOWNSTREAM_PEER_SERIAL" => DownstreamTls(TlsField::PeerSerial),
        "DOWNSTREAM_PEER_FINGERPRINT_256" => DownstreamTls(TlsField::PeerFingerprint256),
        "DOWNSTREAM_LOCAL_URI_SAN" => DownstreamTls(TlsField::LocalUriSan),
        "DOWNSTREAM_LOCAL_SUBJECT" => DownstreamTls(TlsField::LocalSubject),
        "UPSTREAM_TLS_VERSION" => UpstreamTlsVersion,
        "UPSTREAM_TLS_CIPHER" => UpstreamTlsCipher,
        _ => return None,
    };
    Some(Spec::Plain(plain))
}

impl AccessLog {
    /// Compiles the text `format` (Envoy's [`DEFAULT_FORMAT`] when `None`) for `sink`.
    pub fn compile(sink: LogSink, format: Option<&str>) -> Result<Self, FormatError> {
        let format = Format::compile(format.unwrap_or(DEFAULT_FORMAT))?;
        Ok(Self {
            sink,
            format: SubstitutionFormat::Text(format),
            filter: None,
        })
    }

    /// Whether the connection or request `record` describes is logged.
    pub fn logs(&self, record: &ConnectionRecord) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(record))
    }

    /// Whether a command reads the downstream connection's TLS (then the caller passes it in
    /// the record).
    pub fn reads_tls(&self) -> bool {
        self.format.reads_tls()
    }

    /// Appends one formatted line for `record` to `out`.
    pub fn render(&self, record: &ConnectionRecord, out: &mut Vec<u8>) {
        self.format.render(record, out)
    }
}

impl Format {
    /// Compiles `format`, checking every command.
    pub fn compile(format: &str) -> Result<Self, FormatError> {
        let parts = parse(format)?;
        let reads_tls = parts
            .iter()
            .any(|p| matches!(p, Part::Command(Command::DownstreamTls(_), _)));
        Ok(Self {
            parts,
            reads_tls,
            omit_empty: false,
        })
    }

    /// This format with commands that have no value rendering nothing instead of `-`.
    pub fn omitting_empty(self) -> Self {
        Self {
            omit_empty: true,
            ..self
        }
    }

    /// Whether a command reads the downstream connection's TLS.
    pub fn reads_tls(&self) -> bool {
        self.reads_tls
    }

    /// The text, when the format has no command (then it needs no record to render).
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// Appends the format rendered for `record` to `out`.
    pub fn render(&self, record: &ConnectionRecord, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.extend_from_slice(text.as_bytes()),
                Part::Command(command, limit) => {
                    let start = out.len();
                    if !render_command(command, record, out) && !self.omit_empty {
                        out.push(b'-');
                    }
                    if let Some(limit) = limit {
                        out.truncate(start + (out.len() - start).min(*limit));
                    }
                }
            }
        }
    }
}

fn parse(format: &str) -> Result<Vec<Part>, FormatError> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    let mut offset = 0;
    while let Some(at) = rest.find('%') {
        text.push_str(&rest[..at]);
        let position = offset + at;
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            text.push('%');
            offset = position + 2;
            rest = tail;
            continue;
        }
        let (part, used) = parse_command(after, position)?;
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(part);
        offset = position + 1 + used;
        rest = &after[used..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// Parses `NAME[(ARG)][:N]%` at the start of `s`; returns the part and the bytes consumed.
fn parse_command(s: &str, position: usize) -> Result<(Part, usize), FormatError> {
    let malformed = FormatError::Malformed { position };
    let name_len = s
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let name = &s[..name_len];
    if name.is_empty() {
        return Err(malformed);
    }
    let mut used = name_len;
    let mut argument = None;
    if s[used..].starts_with('(') {
        let close = s[used..].find(')').ok_or(malformed.clone())?;
        argument = Some(&s[used + 1..used + close]);
        used += close + 1;
    }
    let mut limit = None;
    if let Some(tail) = s[used..].strip_prefix(':') {
        let digits = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        limit = Some(
            tail[..digits]
                .parse::<usize>()
                .map_err(|_| malformed.clone())?,
        );
        used += 1 + digits;
    }
    if !s[used..].starts_with('%') {
        return Err(malformed);
    }
    used += 1;
    let spec = command(name).ok_or_else(|| FormatError::UnknownCommand {
        command: name.to_string(),
        position,
    })?;
    let command = match (spec, argument) {
        (Spec::Plain(command), None) => command,
        (Spec::Plain(_), Some(_)) => {
            return Err(FormatError::UnexpectedArgument {
                command: name.to_string(),
                position,
            })
        }
        (Spec::Time(_), Some(format)) if !format.is_empty() => {
            return Err(FormatError::TimeFormat {
                command: name.to_string(),
                format: format.to_string(),
                position,
            })
        }
        (Spec::Time(command), _) => command,
        (Spec::Header(_) | Spec::Metadata, None) => {
            return Err(FormatError::MissingArgument {
                command: name.to_string(),
                position,
            })
        }
        (Spec::Metadata, Some(argument)) => {
            let mut parts = argument.split(':');
            let namespace = parts.next().unwrap_or_default();
            if namespace.is_empty() {
                return Err(FormatError::MissingArgument {
                    command: name.to_string(),
                    position,
                });
            }
            Command::DynamicMetadata {
                namespace: namespace.into(),
                path: parts.map(Box::from).collect(),
            }
        }
        (Spec::Header(source), Some(argument)) => {
            let header =
                HeaderName::parse(argument).ok_or_else(|| FormatError::HeaderArgument {
                    command: name.to_string(),
                    argument: argument.to_string(),
                    position,
                })?;
            Command::Header(source, header)
        }
    };
    Ok((Part::Command(command, limit), used))
}

/// Appends `command`'s value for `r` to `out`; `false`, with nothing appended, when it has none.
fn render_command(command: &Command, r: &ConnectionRecord, out: &mut Vec<u8>) -> bool {
    // Writing into a Vec<u8> cannot fail; the results are ignored for that reason.
    let timings = || r.http.map(|h| h.timings()).unwrap_or_default();
    match command {
        Command::StartTime => render_time(r.start, out),
        Command::Duration => render_millis(Some(r.duration), out),
        Command::RequestDuration => render_millis(timings().last_request_byte_received, out),
        Command::ResponseDuration => render_millis(timings().first_upstream_byte_received, out),
        Command::ResponseTxDuration => {
            let timings = timings();
            let tx = timings
                .last_response_byte_sent
                .zip(timings.first_upstream_byte_received)
                .map(|(last, first)| last.saturating_sub(first));
            render_millis(tx, out)
        }
        Command::BytesReceived => render_display(r.bytes_received, out),
        Command::BytesSent => render_display(r.bytes_sent, out),
        Command::UpstreamHost => render_addr(r.upstream_host, out),
        Command::UpstreamLocalAddress => render_addr(r.upstream_local, out),
        Command::UpstreamCluster => render_str(r.upstream_cluster, out),
        Command::UpstreamTransportFailureReason => render_str(
            r.http.and_then(|h| h.upstream_transport_failure_reason()),
            out,
        ),
        Command::DownstreamRemoteAddress => render_display(r.downstream_remote, out),
        Command::DownstreamRemoteAddressWithoutPort => {
            render_display(r.downstream_remote.ip(), out)
        }
        Command::DownstreamLocalAddress => render_display(r.downstream_local, out),
        Command::DownstreamLocalAddressWithoutPort => render_display(r.downstream_local.ip(), out),
        Command::DownstreamRemotePort => render_display(r.downstream_remote.port(), out),
        Command::DownstreamLocalPort => render_display(r.downstream_local.port(), out),
        // `-` without a flag is a value (Envoy's), so header values and JSON formats get it too.
        Command::ResponseFlags => {
            r.response_flags.render(out);
            true
        }
        Command::ConnectionId => render_display(r.connection_id, out),
        Command::ConnectionTerminationDetails => render_str(r.termination_details, out),
        Command::RequestedServerName => render_str(r.requested_server_name, out),
        Command::DownstreamTls(field) => r.tls.is_some_and(|tls| render_tls(*field, tls, out)),
        Command::UpstreamTlsVersion => render_str(r.upstream_tls.and_then(|t| t.version), out),
        Command::UpstreamTlsCipher => render_str(r.upstream_tls.and_then(|t| t.cipher), out),
        Command::Protocol => render_str(r.http.map(|h| h.protocol()), out),
        Command::ResponseCode => render_display(r.http.map_or(0, |h| h.response_code()), out),
        Command::ResponseCodeDetails => {
            render_str(r.http.and_then(|h| h.response_code_details()), out)
        }
        Command::RouteName => render_str(r.http.and_then(|h| h.route_name()), out),
        Command::LocalReplyBody => {
            let body = r
                .http
                .and_then(|h| h.local_reply_body())
                .unwrap_or_default();
            out.extend_from_slice(body);
            true
        }
        Command::DynamicMetadata { namespace, path } => {
            let Some(value) = r.http.and_then(|h| h.dynamic_metadata(namespace, path)) else {
                return false;
            };
            match value {
                Value::String(s) => out.extend_from_slice(s.as_bytes()),
                other => out.extend_from_slice(other.to_string().as_bytes()),
            }
            true
        }
        Command::Header(source, header) => {
            let value = r.http.and_then(|http| {
                header.lookup(|name| match source {
                    HeaderSource::Request | HeaderSource::RequestWithoutQuery => {
                        http.request_header(name)
                    }
                    HeaderSource::Response => http.response_header(name),
                    HeaderSource::Trailer => http.response_trailer(name),
                })
            });
            match value {
                Some(value) if *source == HeaderSource::RequestWithoutQuery => {
                    let end = value.iter().position(|b| *b == b'?').unwrap_or(value.len());
                    out.extend_from_slice(&value[..end]);
                    true
                }
                Some(value) => {
                    out.extend_from_slice(value);
                    true
                }
                None => false,
            }
        }
    }
}

fn render_tls(field: TlsField, tls: &DownstreamTls, out: &mut Vec<u8>) -> bool {
    let peer = || tls.peer();
    let local = tls.local.as_deref();
    match field {
        TlsField::Version => render_str(tls.negotiated.version, out),
        TlsField::Cipher => render_str(tls.negotiated.cipher, out),
        TlsField::SessionId => false,
        TlsField::PeerUriSan => render_list(peer().map(|p| &p.sans.uri[..]), out),
        TlsField::PeerDnsSan => render_list(peer().map(|p| &p.sans.dns[..]), out),
        TlsField::PeerSubject => render_str(peer().map(|p| &p.subject[..]), out),
        TlsField::PeerIssuer => render_str(peer().map(|p| &p.issuer[..]), out),
        TlsField::PeerSerial => render_str(peer().map(|p| &p.serial[..]), out),
        TlsField::PeerFingerprint256 => render_str(peer().map(|p| &p.sha256[..]), out),
        TlsField::PeerCertValidFrom => peer().is_some_and(|p| render_time(p.not_before, out)),
        TlsField::PeerCertValidTo => peer().is_some_and(|p| render_time(p.not_after, out)),
        TlsField::LocalUriSan => render_list(local.map(|l| &l.sans.uri[..]), out),
        TlsField::LocalSubject => render_str(local.map(|l| &l.subject[..]), out),
    }
}

/// The items joined with `,`; `false` when there are none.
fn render_list(items: Option<&[String]>, out: &mut Vec<u8>) -> bool {
    let items = items.unwrap_or_default();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.as_bytes());
    }
    !items.is_empty()
}

/// Whole milliseconds (truncated, as Envoy).
fn render_millis(duration: Option<Duration>, out: &mut Vec<u8>) -> bool {
    duration.is_some_and(|d| render_display(d.as_millis(), out))
}

/// The text; `false` when absent or empty.
fn render_str(text: Option<&str>, out: &mut Vec<u8>) -> bool {
    let text = text.unwrap_or_default();
    out.extend_from_slice(text.as_bytes());
    !text.is_empty()
}

fn render_addr(addr: Option<SocketAddr>, out: &mut Vec<u8>) -> bool {
    addr.is_some_and(|addr| render_display(addr, out))
}

fn render_display(value: impl fmt::Display, out: &mut Vec<u8>) -> bool {
    let _ = write!(out, "{value}");
    true
}

/// Envoy's default `%START_TIME%`: UTC with milliseconds, `2024-01-02T03:04:05.678Z`.
fn render_time(time: SystemTime, out: &mut Vec<u8>) -> bool {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    );
    true
}

/// Days since 1970-01-01 → proleptic Gregorian (year, month, day). Counts in 400-year eras
/// (146097 days each), with years starting on 1 March so the leap day ends the year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn record() -> ConnectionRecord<'static> {
        ConnectionRecord {
            start: UNIX_EPOCH + Duration::from_millis(1_704_164_645_678),
            duration: Duration::from_micros(12_345_999),
            bytes_received: 10,
            bytes_sent: 20,
            downstream_remote: "10.0.0.1:5555".parse().unwrap(),
            downstream_local: "[::1]:80".parse().unwrap(),
            upstream_host: Some("10.0.0.2:8080".parse().unwrap()),
            upstream_local: None,
            upstream_cluster: Some("backend"),
            response_flags: ResponseFlags::default(),
            connection_id: 7,
            tls: None,
            requested_server_name: None,
            upstream_tls: None,
            termination_details: None,
            http: None,
        }
    }

    fn render(format: &str, record: &ConnectionRecord) -> String {
        let log = AccessLog::compile(LogSink::Stdout, Some(format)).unwrap();
        let mut out = Vec::new();
        log.render(record, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn default_format_renders_tcp_as_envoy() {
        let log = AccessLog::compile(LogSink::Stderr, None).unwrap();
        let mut out = b"prefix ".to_vec();
        log.render(&record(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "prefix [2024-01-02T03:04:05.678Z] \"- - -\" 0 - 10 20 12345 - \"-\" \"-\" \"-\" \"-\" \"10.0.0.2:8080\"\n"
        );
    }

    #[test]
    fn every_command() {
        let mut r = record();
        r.response_flags
            .set(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
        r.response_flags.set(ResponseFlags::NO_HEALTHY_UPSTREAM);
        assert_eq!(
            render(
                "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% \
                 %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% \
                 %DOWNSTREAM_REMOTE_PORT% %DOWNSTREAM_LOCAL_PORT% \
                 %UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_CLUSTER% %CONNECTION_ID% %RESPONSE_FLAGS% \
                 %RESP(X):3% %PROTOCOL% 100%%",
                &r
            ),
            "10.0.0.1:5555 10.0.0.1 [::1]:80 ::1 5555 80 - backend 7 UF,UH - - 100%"
        );
    }

    #[test]
    fn omitting_empty_renders_absent_commands_as_nothing() {
        let mut r = record();
        r.upstream_host = None;
        let format =
            Format::compile("[%UPSTREAM_HOST%|%RESP(X)%|%LOCAL_REPLY_BODY%|%UPSTREAM_CLUSTER%]");
        let mut out = Vec::new();
        format
            .clone()
            .unwrap()
            .omitting_empty()
            .render(&r, &mut out);
        assert_eq!(out, b"[|||backend]");
        out.clear();
        format.unwrap().render(&r, &mut out);
        assert_eq!(out, b"[-|-||backend]");
    }

    #[test]
    fn flags_by_name() {
        assert_eq!(
            ResponseFlags::from_name("NR"),
            Some(ResponseFlags::NO_ROUTE_FOUND)
        );
        assert_eq!(ResponseFlags::from_name("nr"), None);
        let mut flags = ResponseFlags::default();
        flags.set(ResponseFlags::NO_HEALTHY_UPSTREAM);
        assert!(flags.intersects(ResponseFlags::NO_HEALTHY_UPSTREAM));
        assert!(!flags.intersects(ResponseFlags::NO_ROUTE_FOUND));
    }

    #[test]
    fn length_limit_truncates() {
        assert_eq!(render("%UPSTREAM_CLUSTER:4%|", &record()), "back|");
    }

    #[test]
    fn unset_values_render_dash() {
        let mut r = record();
        r.upstream_host = None;
        r.upstream_cluster = None;
        assert_eq!(render("%UPSTREAM_HOST% %UPSTREAM_CLUSTER%", &r), "- -");
    }

    #[test]
    fn compile_errors_name_the_command() {
        let err = |f: &str| AccessLog::compile(LogSink::Stdout, Some(f)).unwrap_err();
        assert_eq!(
            err("ab %BOGUS% x"),
            FormatError::UnknownCommand {
                command: "BOGUS".into(),
                position: 3
            }
        );
        assert!(err("%BOGUS%").to_string().contains("%BOGUS%"));
        assert_eq!(err("50% off"), FormatError::Malformed { position: 2 });
        assert_eq!(err("%DURATION"), FormatError::Malformed { position: 0 });
        assert!(matches!(err("%REQ%"), FormatError::MissingArgument { .. }));
        assert!(matches!(
            err("%DYNAMIC_METADATA%"),
            FormatError::MissingArgument { .. }
        ));
        assert!(matches!(
            err("%DYNAMIC_METADATA(:k)%"),
            FormatError::MissingArgument { .. }
        ));
        assert!(matches!(
            err("%DURATION(x)%"),
            FormatError::UnexpectedArgument { .. }
        ));
        assert_eq!(
            err("%START_TIME(%s.%3f)%"),
            FormatError::TimeFormat {
                command: "START_TIME".into(),
                format: "%s.%3f".into(),
                position: 0
            }
        );
        assert_eq!(err("x%"), FormatError::Malformed { position: 1 });
    }

    /// A request as a connection manager would expose it.
    pub(super) struct Exchange {
        pub(super) request: Vec<(&'static str, &'static str)>,
        response: Vec<(&'static str, &'static str)>,
        trailers: Vec<(&'static str, &'static str)>,
        pub(super) code: u16,
        route: Option<&'static str>,
        timings: HttpTimings,
    }

    fn find<'a>(headers: &'a [(&str, &str)], name: &str) -> Option<&'a [u8]> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_bytes())
    }

    impl HttpLogView for Exchange {
        fn request_header(&self, name: &str) -> Option<&[u8]> {
            find(&self.request, name)
        }
        fn response_header(&self, name: &str) -> Option<&[u8]> {
            find(&self.response, name)
        }
        fn response_trailer(&self, name: &str) -> Option<&[u8]> {
            find(&self.trailers, name)
        }
        fn protocol(&self) -> &str {
            "HTTP/1.1"
        }
        fn response_code(&self) -> u16 {
            self.code
        }
        fn response_code_details(&self) -> Option<&str> {
            Some("via_upstream")
        }
        fn route_name(&self) -> Option<&str> {
            self.route
        }
        fn timings(&self) -> HttpTimings {
            self.timings
        }
    }

    pub(super) fn exchange() -> Exchange {
        Exchange {
            request: vec![
                (":method", "GET"),
                (":path", "/path?q=1"),
                (":authority", "example.com"),
                ("user-agent", "curl/8.5.0"),
                ("x-request-id", "6f1c2a9e-1b7d-4c55-9a51-2f8e0c3d4b6a"),
            ],
            response: vec![("x-envoy-upstream-service-time", "2")],
            trailers: vec![("grpc-status", "0")],
            code: 200,
            route: None,
            timings: HttpTimings {
                last_request_byte_received: Some(Duration::from_micros(150)),
                first_upstream_byte_received: Some(Duration::from_micros(2_900)),
                last_response_byte_sent: Some(Duration::from_micros(3_400)),
            },
        }
    }

    pub(super) fn http_record(exchange: &Exchange) -> ConnectionRecord<'_> {
        ConnectionRecord {
            duration: Duration::from_micros(3_400),
            bytes_received: 0,
            bytes_sent: 12,
            downstream_remote: "127.0.0.1:40000".parse().unwrap(),
            upstream_host: Some("127.0.0.1:8080".parse().unwrap()),
            http: Some(exchange),
            ..record()
        }
    }

    #[test]
    fn default_format_renders_http_as_envoy() {
        let exchange = exchange();
        let log = AccessLog::compile(LogSink::Stdout, None).unwrap();
        let mut out = Vec::new();
        log.render(&http_record(&exchange), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[2024-01-02T03:04:05.678Z] \"GET /path?q=1 HTTP/1.1\" 200 - 0 12 3 2 \"-\" \
             \"curl/8.5.0\" \"6f1c2a9e-1b7d-4c55-9a51-2f8e0c3d4b6a\" \"example.com\" \
             \"127.0.0.1:8080\"\n"
        );
    }

    #[test]
    fn http_commands() {
        let mut exchange = exchange();
        exchange
            .request
            .push(("x-envoy-original-path", "/original"));
        let mut r = http_record(&exchange);
        r.response_flags
            .set(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
        r.response_flags.set(ResponseFlags::NO_HEALTHY_UPSTREAM);
        assert_eq!(
            render(
                "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:PATH)% %REQ_WITHOUT_QUERY(:PATH)% \
                 %REQ(User-Agent):4% %REQ(X-MISSING)% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
                 %TRAILER(GRPC-STATUS)% %TRAILER(GRPC-MESSAGE)% %PROTOCOL% %RESPONSE_CODE% \
                 %RESPONSE_CODE_DETAILS% %RESPONSE_FLAGS% %ROUTE_NAME% \
                 %UPSTREAM_TRANSPORT_FAILURE_REASON% %DURATION% %REQUEST_DURATION% \
                 %RESPONSE_DURATION% %RESPONSE_TX_DURATION% %BYTES_RECEIVED% %BYTES_SENT% \
                 %UPSTREAM_CLUSTER% %DOWNSTREAM_REMOTE_ADDRESS%",
                &r
            ),
            "/original /path?q=1 /path curl - 2 0 - HTTP/1.1 200 via_upstream UT,UH - - 3 0 2 0 \
             0 12 backend 127.0.0.1:40000"
        );
        // The alternative header serves when the first is absent; a named route renders.
        exchange.request.pop();
        exchange.route = Some("catch_all");
        exchange.timings.first_upstream_byte_received = None;
        let r = http_record(&exchange);
        assert_eq!(
            render(
                "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %ROUTE_NAME% %RESPONSE_DURATION% \
                 %RESPONSE_TX_DURATION%",
                &r
            ),
            "/path?q=1 catch_all - -"
        );
    }

    #[test]
    fn http_commands_render_unset_for_tcp() {
        assert_eq!(
            render(
                "%REQ(:METHOD)% %RESP(A)% %TRAILER(B)% %PROTOCOL% %RESPONSE_CODE% \
                 %RESPONSE_CODE_DETAILS% %ROUTE_NAME% %REQUEST_DURATION% %RESPONSE_DURATION% \
                 %RESPONSE_TX_DURATION% %UPSTREAM_TRANSPORT_FAILURE_REASON% \
                 %REQ_WITHOUT_QUERY(:PATH)%",
                &record()
            ),
            "- - - - 0 - - - - - - -"
        );
    }

    #[test]
    fn tls_commands_on_a_plaintext_connection() {
        let mut r = record();
        r.requested_server_name = Some("example.com");
        r.upstream_tls = Some(Negotiated {
            version: Some("TLSv1.2"),
            cipher: Some("ECDHE-RSA-AES128-GCM-SHA256"),
        });
        let format = "%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_SUBJECT% \
                      %DOWNSTREAM_PEER_CERT_V_START()% %DOWNSTREAM_LOCAL_URI_SAN% \
                      %REQUESTED_SERVER_NAME% %UPSTREAM_TLS_VERSION% %UPSTREAM_TLS_CIPHER%";
        assert_eq!(
            render(format, &r),
            "- - - - example.com TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256"
        );
        let log = AccessLog::compile(LogSink::Stdout, Some(format)).unwrap();
        assert!(log.reads_tls());
        let without = AccessLog::compile(LogSink::Stdout, Some("%UPSTREAM_TLS_VERSION%"));
        assert!(!without.unwrap().reads_tls());
        assert!(
            AccessLog::compile(LogSink::Stdout, Some("%DOWNSTREAM_PEER_CERT_V_END(%s)%"))
                .unwrap_err()
                .to_string()
                .starts_with("%DOWNSTREAM_PEER_CERT_V_END(%s)% at position 0")
        );
    }

    #[test]
    fn header_arguments_are_checked() {
        let err = |f: &str| AccessLog::compile(LogSink::Stdout, Some(f)).unwrap_err();
        for bad in [
            "%REQ(A?B?C)%",
            "%REQ()%",
            "%REQ(?B)%",
            "%REQ(A?)%",
            "%RESP(a b)%",
            "%TRAILER(:)%",
        ] {
            assert!(
                matches!(err(bad), FormatError::HeaderArgument { .. }),
                "{bad}: {:?}",
                err(bad)
            );
        }
        assert!(err("x %REQ(A?B?C)%")
            .to_string()
            .contains("%REQ% at position 2"));
        assert!(matches!(
            err("%ROUTE_NAME(x)%"),
            FormatError::UnexpectedArgument { .. }
        ));
    }

    #[test]
    fn every_flag_renders_in_envoy_order() {
        let mut all = ResponseFlags::default();
        (0..30).for_each(|bit| all.set(ResponseFlags::bit(bit)));
        let mut out = Vec::new();
        all.render(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "LH,UH,UT,LR,UR,UF,UC,UO,NR,DI,FI,RL,UAEX,RLSE,DC,URX,SI,IH,DPE,UMSDR,RFCF,NFCF,DT,\
             UPE,NC,OM,DF,DO,DR,UDO"
        );
        assert!(all.contains(ResponseFlags::UNCONDITIONAL_DROP_OVERLOAD));
        assert!(all.contains(ResponseFlags::FAILED_LOCAL_HEALTH_CHECK));
    }

    #[test]
    fn flags_render_in_the_order_they_were_set() {
        let mut flags = ResponseFlags::default();
        flags.set(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        flags.set(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
        flags.set(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        let mut out = Vec::new();
        flags.render(&mut out);
        assert_eq!(out, b"URX,UF");
    }

    #[test]
    fn response_flags_render() {
        let mut flags = ResponseFlags::default();
        let mut out = Vec::new();
        flags.render(&mut out);
        flags.set(ResponseFlags::NO_CLUSTER_FOUND);
        flags.set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        assert!(!flags.is_empty());
        out.push(b' ');
        flags.render(&mut out);
        assert_eq!(out, b"- NC,DC");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let mut out = Vec::new();
        render_time(
            UNIX_EPOCH + Duration::from_millis(951_782_400_001),
            &mut out,
        );
        assert_eq!(out, b"2000-02-29T00:00:00.001Z");
    }
}
