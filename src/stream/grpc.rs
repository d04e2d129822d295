//! Stream layer: gRPC as the proxy's own replies need it — a local reply to a gRPC request is
//! a trailers-only response (HTTP 200, `grpc-status`, `grpc-message`), as Envoy sends it.
use std::time::Duration;

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
    request.headers.get("content-type").is_some_and(|v| {
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
    let value = head.headers.get("grpc-status")?;
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
