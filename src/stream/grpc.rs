//! Stream layer: gRPC as the proxy's own replies need it — a local reply to a gRPC request is
//! a trailers-only response (HTTP 200, `grpc-status`, `grpc-message`), as Envoy sends it —
//! and as its stats read it: the messages of a body (length-prefixed frames).
use std::{cell::Cell, time::Duration};

use bytes::Bytes;
use model::route::GrpcTimeout;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::headers::{Headers, RequestHead, ResponseHead};

/// `DEADLINE_EXCEEDED`: what a timed-out gRPC request is answered with.
pub const GRPC_DEADLINE_EXCEEDED: u32 = 4;

/// Bytes `grpc-message` percent-encodes: outside printable ASCII, and `%` itself.
const MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Whether the request is gRPC (`content-type: application/grpc` or a `+suffix` of it).
pub fn is_grpc(request: &RequestHead) -> bool {
    grpc_content_type(&request.headers)
}

/// Whether a response head starts a gRPC body (its content type is gRPC's).
pub fn is_grpc_response(head: &ResponseHead) -> bool {
    grpc_content_type(&head.headers)
}

fn grpc_content_type(headers: &Headers) -> bool {
    headers.get("content-type").is_some_and(|v| {
        v.strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
    })
}

/// How long a gRPC request may run under the route's `grpc_timeout` settings: its
/// `grpc-timeout` (none or unreadable: no limit) less the offset, at most the cap.
pub fn timeout(request: &RequestHead, settings: &GrpcTimeout) -> Option<Duration> {
    let asked = request
        .headers
        .get("grpc-timeout")
        .and_then(|v| parse_timeout(v));
    let asked = asked.map(|t| t.saturating_sub(settings.offset));
    match (asked, settings.max) {
        (Some(asked), Some(max)) => Some(asked.min(max)),
        (asked, max) => asked.or(max),
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-status` of a response head (a trailers-only response carries it there).
pub fn status_of(head: &ResponseHead) -> Option<u32> {
    status_in(&head.headers)
}

/// The `grpc-status` among `fields` (a head's headers or the trailers).
pub fn status_in(fields: &Headers) -> Option<u32> {
    let value = fields.get("grpc-status")?;
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The gRPC status for an HTTP status the proxy answers with (Envoy's mapping).
pub fn status_for(http_status: u16) -> u32 {
    match http_status {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// The headers of a trailers-only gRPC response carrying `status` and `message`.
pub fn trailers_only(status: u32, message: &[u8], headers: &mut Headers) {
    headers.set("content-type", Bytes::from_static(b"application/grpc"));
    headers.set("grpc-status", status.to_string());
    if !message.is_empty() {
        let text = String::from_utf8_lossy(message);
        let encoded = utf8_percent_encode(&text, MESSAGE).to_string();
        headers.set("grpc-message", encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_across_any_chunking() {
        let frame = |len: u32| {
            let mut f = vec![0u8];
            f.extend_from_slice(&len.to_be_bytes());
            f.extend(std::iter::repeat_n(7u8, len as usize));
            f
        };
        let body: Vec<u8> = [frame(3), frame(0), frame(300), frame(1)].concat();
        for size in [1, 2, 4, 5, 6, 300, body.len()] {
            let counter = MessageCounter::default();
            let counted: u64 = body.chunks(size).map(|c| counter.inspect(c)).sum();
            assert_eq!(counted, 4, "chunks of {size}");
        }
    }
    use crate::stream::headers::Version;

    fn request(content_type: &str) -> RequestHead {
        let mut headers = Headers::default();
        headers.append("content-type", content_type.to_owned());
        RequestHead {
            method: Bytes::from_static(b"POST"),
            path: Bytes::from_static(b"/svc/Method"),
            version: Version::Http2,
            headers,
        }
    }

    #[test]
    fn grpc_requests_are_recognised_by_content_type() {
        assert!(is_grpc(&request("application/grpc")));
        assert!(is_grpc(&request("application/grpc+proto")));
        assert!(!is_grpc(&request("application/grpc-web")));
        assert!(!is_grpc(&request("application/json")));
    }

    #[test]
    fn grpc_timeouts_are_read_offset_and_capped() {
        let mut req = request("application/grpc");
        req.headers.append("grpc-timeout", "1500m");
        let uncapped = GrpcTimeout {
            max: None,
            offset: Duration::from_millis(500),
        };
        assert_eq!(timeout(&req, &uncapped), Some(Duration::from_secs(1)));
        let capped = GrpcTimeout {
            max: Some(Duration::from_millis(200)),
            offset: Duration::ZERO,
        };
        assert_eq!(timeout(&req, &capped), Some(Duration::from_millis(200)));
        let none = request("application/grpc");
        assert_eq!(
            timeout(&none, &uncapped),
            None,
            "no header, no cap: no limit"
        );
        assert_eq!(timeout(&none, &capped), Some(Duration::from_millis(200)));
        for bad in ["", "5", "123456789S", "5x", "-5S"] {
            assert_eq!(parse_timeout(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout(b"7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn statuses_map_as_envoy_maps_them_and_messages_are_percent_encoded() {
        assert_eq!(status_for(503), 14);
        assert_eq!(status_for(404), 12);
        assert_eq!(status_for(500), 2);
        let mut headers = Headers::default();
        trailers_only(14, "no healthy upstream 100%\n".as_bytes(), &mut headers);
        assert_eq!(headers.get("grpc-status").unwrap(), "14");
        assert_eq!(
            headers.get("grpc-message").unwrap(),
            "no healthy upstream 100%25%0A"
        );
    }
}

/// Counts the messages of a gRPC body as its chunks pass (each message is a 1-byte flag, a
/// 4-byte big-endian length, then that many bytes; chunks may split them anywhere).
#[derive(Debug, Default)]
pub struct MessageCounter {
    /// Bytes of the current message's 5-byte prefix read so far (0: at a message's start).
    prefix_read: Cell<u8>,
    /// The length being read from the prefix.
    length: Cell<u32>,
    /// Bytes of the current message's payload still to come.
    payload_left: Cell<u64>,
}

impl MessageCounter {
    /// How many messages start in `chunk`.
    pub fn inspect(&self, mut chunk: &[u8]) -> u64 {
        let mut started = 0;
        while !chunk.is_empty() {
            let left = self.payload_left.get();
            if left > 0 {
                let skip = left.min(chunk.len() as u64);
                self.payload_left.set(left - skip);
                chunk = &chunk[skip as usize..];
                continue;
            }
            let read = self.prefix_read.get();
            if read == 0 {
                started += 1;
                self.length.set(0);
            } else {
                self.length
                    .set(self.length.get() << 8 | u32::from(chunk[0]));
            }
            chunk = &chunk[1..];
            match read + 1 {
                5 => {
                    self.prefix_read.set(0);
                    self.payload_left.set(u64::from(self.length.get()));
                }
                next => self.prefix_read.set(next),
            }
        }
        started
    }
}
