//! Stream layer: gRPC as the proxy's own replies need it — a local reply to a gRPC request is
//! a trailers-only response (HTTP 200, `grpc-status`, `grpc-message`), as Envoy sends it.
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::headers::{Headers, RequestHead};

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
