//! Access log formats: compiled from Envoy's `%COMMAND%` strings on the agent, rendered on shards.
//!
//! Compiling checks every command once; rendering only appends to the caller's buffer (no
//! allocation, no parsing), so shards can log every closed connection cheaply.
use std::{
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Envoy's format when an access log sets none (the same for HTTP and TCP; the HTTP-only
/// commands render `-`, and `%RESPONSE_CODE%` renders `0`, for TCP connections).
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// A compiled access log: where lines go and how each is formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub sink: LogSink,
    format: Vec<Part>,
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
        "%START_TIME({format})% at position {position}: custom time formats are not supported yet"
    )]
    TimeFormat { format: String, position: usize },
}

/// What a shard knows about a closed TCP connection.
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
}

/// Envoy's response flags (the bits and short names of `%RESPONSE_FLAGS%`), limited to those a
/// TCP proxy sets. Envoy sets no flag for a tcp_proxy idle timeout; that is only counted
/// (`tcp.<stat_prefix>.idle_timeout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags(u32);

impl ResponseFlags {
    /// UH: no healthy upstream host in the cluster.
    pub const NO_HEALTHY_UPSTREAM: Self = Self(0x2);
    /// UF: the upstream connection failed.
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self(0x20);
    /// UC: the upstream closed the connection.
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(0x40);
    /// UO: upstream overflow (circuit breaking).
    pub const UPSTREAM_OVERFLOW: Self = Self(0x80);
    /// NR: no route (no matching filter chain, or no cluster to pick).
    pub const NO_ROUTE_FOUND: Self = Self(0x100);
    /// DI: the fault filter delayed the request.
    pub const DELAY_INJECTED: Self = Self(0x200);
    /// FI: the fault filter aborted the request.
    pub const FAULT_INJECTED: Self = Self(0x400);
    /// RL: the local rate limit filter refused the request.
    pub const RATE_LIMITED: Self = Self(0x800);
    /// DC: the downstream closed the connection.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self(0x4000);
    /// URX: `max_connect_attempts` reached.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self(0x8000);
    /// DT: `max_downstream_connection_duration` reached.
    pub const DURATION_TIMEOUT: Self = Self(0x40_0000);
    /// NC: the cluster named by the config does not exist (yet).
    pub const NO_CLUSTER_FOUND: Self = Self(0x100_0000);

    /// Short names in Envoy's rendering order.
    const NAMES: [(Self, &'static str); 12] = [
        (Self::NO_HEALTHY_UPSTREAM, "UH"),
        (Self::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::UPSTREAM_OVERFLOW, "UO"),
        (Self::NO_ROUTE_FOUND, "NR"),
        (Self::DELAY_INJECTED, "DI"),
        (Self::FAULT_INJECTED, "FI"),
        (Self::RATE_LIMITED, "RL"),
        (Self::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Self::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (Self::DURATION_TIMEOUT, "DT"),
        (Self::NO_CLUSTER_FOUND, "NC"),
    ];

    pub fn set(&mut self, flag: Self) {
        self.0 |= flag.0;
    }

    pub fn contains(self, flag: Self) -> bool {
        self.0 & flag.0 == flag.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `-` when empty, else the short names joined with `,` (Envoy's `%RESPONSE_FLAGS%`).
    pub fn render(self, out: &mut Vec<u8>) {
        if self.is_empty() {
            out.push(b'-');
            return;
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    out.push(b',');
                }
                out.extend_from_slice(name.as_bytes());
                first = false;
            }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    StartTime,
    Duration,
    BytesReceived,
    BytesSent,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    ResponseFlags,
    ConnectionId,
    /// HTTP-only commands (`REQ`, `RESP`, `TRAILER`, `PROTOCOL`): `-` for TCP.
    Unset,
    /// `%RESPONSE_CODE%`: `0` for TCP, as Envoy.
    ResponseCode,
}

/// Whether a command takes a `(...)` argument.
#[derive(PartialEq, Eq)]
enum Argument {
    None,
    Required,
    /// `START_TIME` takes an optional time format.
    Optional,
}

fn command(name: &str) -> Option<(Command, Argument)> {
    use Command::*;
    Some(match name {
        "START_TIME" => (StartTime, Argument::Optional),
        "DURATION" => (Duration, Argument::None),
        "BYTES_RECEIVED" => (BytesReceived, Argument::None),
        "BYTES_SENT" => (BytesSent, Argument::None),
        "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" => (UpstreamHost, Argument::None),
        "UPSTREAM_CLUSTER" => (UpstreamCluster, Argument::None),
        "UPSTREAM_LOCAL_ADDRESS" => (UpstreamLocalAddress, Argument::None),
        "DOWNSTREAM_REMOTE_ADDRESS" => (DownstreamRemoteAddress, Argument::None),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            (DownstreamRemoteAddressWithoutPort, Argument::None)
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => (DownstreamLocalAddress, Argument::None),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => {
            (DownstreamLocalAddressWithoutPort, Argument::None)
        }
        "RESPONSE_FLAGS" => (ResponseFlags, Argument::None),
        "CONNECTION_ID" => (ConnectionId, Argument::None),
        "REQ" | "RESP" | "TRAILER" => (Unset, Argument::Required),
        "PROTOCOL" => (Unset, Argument::None),
        "RESPONSE_CODE" => (ResponseCode, Argument::None),
        _ => return None,
    })
}

impl AccessLog {
    /// Compiles `format` (Envoy's [`DEFAULT_FORMAT`] when `None`) for `sink`.
    pub fn compile(sink: LogSink, format: Option<&str>) -> Result<Self, FormatError> {
        Ok(Self {
            sink,
            format: parse(format.unwrap_or(DEFAULT_FORMAT))?,
        })
    }

    /// Appends one formatted line for `record` to `out`.
    pub fn render(&self, record: &ConnectionRecord, out: &mut Vec<u8>) {
        for part in &self.format {
            match part {
                Part::Text(text) => out.extend_from_slice(text.as_bytes()),
                Part::Command(command, limit) => {
                    let start = out.len();
                    render_command(*command, record, out);
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
    let (command, takes) = command(name).ok_or_else(|| FormatError::UnknownCommand {
        command: name.to_string(),
        position,
    })?;
    match (takes, argument) {
        (Argument::Required, None) => {
            return Err(FormatError::MissingArgument {
                command: name.to_string(),
                position,
            })
        }
        (Argument::None, Some(_)) => {
            return Err(FormatError::UnexpectedArgument {
                command: name.to_string(),
                position,
            })
        }
        (Argument::Optional, Some(format)) if !format.is_empty() => {
            return Err(FormatError::TimeFormat {
                format: format.to_string(),
                position,
            })
        }
        _ => {}
    }
    Ok((Part::Command(command, limit), used))
}

fn render_command(command: Command, r: &ConnectionRecord, out: &mut Vec<u8>) {
    // Writing into a Vec<u8> cannot fail; the results are ignored for that reason.
    match command {
        Command::StartTime => render_time(r.start, out),
        Command::Duration => {
            let _ = write!(out, "{}", r.duration.as_millis());
        }
        Command::BytesReceived => {
            let _ = write!(out, "{}", r.bytes_received);
        }
        Command::BytesSent => {
            let _ = write!(out, "{}", r.bytes_sent);
        }
        Command::UpstreamHost => render_addr(r.upstream_host, out),
        Command::UpstreamLocalAddress => render_addr(r.upstream_local, out),
        Command::UpstreamCluster => match r.upstream_cluster {
            Some(name) if !name.is_empty() => out.extend_from_slice(name.as_bytes()),
            _ => out.push(b'-'),
        },
        Command::DownstreamRemoteAddress => render_addr(Some(r.downstream_remote), out),
        Command::DownstreamRemoteAddressWithoutPort => {
            let _ = write!(out, "{}", r.downstream_remote.ip());
        }
        Command::DownstreamLocalAddress => render_addr(Some(r.downstream_local), out),
        Command::DownstreamLocalAddressWithoutPort => {
            let _ = write!(out, "{}", r.downstream_local.ip());
        }
        Command::ResponseFlags => r.response_flags.render(out),
        Command::ConnectionId => {
            let _ = write!(out, "{}", r.connection_id);
        }
        Command::Unset => out.push(b'-'),
        Command::ResponseCode => out.push(b'0'),
    }
}

fn render_addr(addr: Option<SocketAddr>, out: &mut Vec<u8>) {
    match addr {
        Some(addr) => {
            let _ = write!(out, "{addr}");
        }
        None => out.push(b'-'),
    }
}

/// Envoy's default `%START_TIME%`: UTC with milliseconds, `2024-01-02T03:04:05.678Z`.
fn render_time(time: SystemTime, out: &mut Vec<u8>) {
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

    fn record() -> ConnectionRecord<'static> {
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
                 %UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_CLUSTER% %CONNECTION_ID% %RESPONSE_FLAGS% \
                 %RESP(X):3% %PROTOCOL% 100%%",
                &r
            ),
            "10.0.0.1:5555 10.0.0.1 [::1]:80 ::1 - backend 7 UH,UF - - 100%"
        );
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
            err("%DURATION(x)%"),
            FormatError::UnexpectedArgument { .. }
        ));
        assert_eq!(
            err("%START_TIME(%s.%3f)%"),
            FormatError::TimeFormat {
                format: "%s.%3f".into(),
                position: 0
            }
        );
        assert_eq!(err("x%"), FormatError::Malformed { position: 1 });
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
        assert_eq!(out, b"- DC,NC");
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
