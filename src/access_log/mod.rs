//! Access logs: the view through which a format reads an HTTP request's heads in place, the
//! shard's writers (`writer`) and the process's flusher thread that writes their lines
//! (`flusher`).
mod flusher;
mod writer;

pub use flusher::{Flusher, FlusherHandle};
pub use writer::LogWriters;

use model::{
    access_log::{HttpLogView, HttpTimings},
    metadata::{DynamicMetadata, Value},
};

use crate::stream::headers::{Headers, RequestHead, ResponseHead};

/// One HTTP request as an access log reads it, borrowed from the stream (nothing copied).
/// Log a request with `ConnectionRecord { http: Some(&exchange), .. }`.
#[derive(Debug, Clone, Copy)]
pub struct HttpExchange<'a> {
    /// The request as received (before route rewrites, so `:path` is the client's).
    pub request: &'a RequestHead,
    /// The response head as sent downstream; `None` when none went out.
    pub response: Option<&'a ResponseHead>,
    pub trailers: Option<&'a Headers>,
    /// `http` or `https`: what `%REQ(:SCHEME)%` renders.
    pub scheme: &'a str,
    pub response_code_details: Option<&'a str>,
    pub route_name: Option<&'a str>,
    /// The local reply's body, while its body format renders.
    pub local_reply_body: Option<&'a [u8]>,
    /// What the stream's filters wrote.
    pub metadata: Option<&'a DynamicMetadata>,
    pub timings: HttpTimings,
}

impl HttpLogView for HttpExchange<'_> {
    fn request_header(&self, name: &str) -> Option<&[u8]> {
        match name {
            // Empty for a request the codec rejected: rendered `-`, as Envoy.
            ":method" => Some(&self.request.method[..]).filter(|m| !m.is_empty()),
            ":path" => Some(&self.request.path[..]).filter(|p| !p.is_empty()),
            ":authority" => self.request.headers.get("host").map(|v| &v[..]),
            ":scheme" => Some(self.scheme.as_bytes()),
            _ => self.request.headers.get(name).map(|v| &v[..]),
        }
    }

    fn response_header(&self, name: &str) -> Option<&[u8]> {
        self.response?.headers.get(name).map(|v| &v[..])
    }

    fn response_trailer(&self, name: &str) -> Option<&[u8]> {
        self.trailers?.get(name).map(|v| &v[..])
    }

    fn protocol(&self) -> &str {
        self.request.version.as_str()
    }

    fn response_code(&self) -> u16 {
        self.response.map_or(0, |r| r.status)
    }

    fn response_code_details(&self) -> Option<&str> {
        self.response_code_details
    }

    fn route_name(&self) -> Option<&str> {
        self.route_name
    }

    fn local_reply_body(&self) -> Option<&[u8]> {
        self.local_reply_body
    }

    fn timings(&self) -> HttpTimings {
        self.timings
    }

    fn dynamic_metadata(&self, namespace: &str, path: &[Box<str>]) -> Option<&Value> {
        self.metadata?.get(namespace, path)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;
    use model::access_log::{AccessLog, ConnectionRecord, LogSink, ResponseFlags};

    use super::*;
    use crate::stream::headers::Version;

    #[test]
    fn default_format_reads_the_heads_in_place() {
        let mut request_headers = Headers::default();
        request_headers.append("host", "example.com");
        request_headers.append("user-agent", "curl/8.5.0");
        request_headers.append("x-request-id", "id-1");
        let request = RequestHead {
            method: Bytes::from_static(b"POST"),
            path: Bytes::from_static(b"/upload?x=1"),
            version: Version::Http10,
            headers: request_headers,
        };
        let mut response_headers = Headers::default();
        response_headers.append("x-envoy-upstream-service-time", "7");
        let response = ResponseHead {
            status: 503,
            version: Version::Http11,
            headers: response_headers,
        };
        let mut trailers = Headers::default();
        trailers.append("grpc-status", "14");
        let exchange = HttpExchange {
            request: &request,
            response: Some(&response),
            trailers: Some(&trailers),
            scheme: "http",
            response_code_details: Some(
                "upstream_reset_before_response_started{connection_failure}",
            ),
            route_name: Some("r1"),
            local_reply_body: None,
            metadata: None,
            timings: HttpTimings::default(),
        };
        let mut flags = ResponseFlags::default();
        flags.set(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
        let record = ConnectionRecord {
            start: UNIX_EPOCH + Duration::from_millis(1_767_225_600_123),
            duration: Duration::from_millis(9),
            bytes_received: 5,
            bytes_sent: 91,
            downstream_remote: "10.1.2.3:5000".parse().unwrap(),
            downstream_local: "10.1.2.4:80".parse().unwrap(),
            upstream_host: None,
            upstream_local: None,
            upstream_cluster: Some("backend"),
            response_flags: flags,
            connection_id: 3,
            tls: None,
            requested_server_name: None,
            upstream_tls: None,
            termination_details: None,
            http: Some(&exchange),
        };
        let render = |format: Option<&str>| {
            let log = AccessLog::compile(LogSink::Stdout, format).unwrap();
            let mut out = Vec::new();
            log.render(&record, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            render(None),
            "[2026-01-01T00:00:00.123Z] \"POST /upload?x=1 HTTP/1.0\" 503 UF 5 91 9 7 \"-\" \
             \"curl/8.5.0\" \"id-1\" \"example.com\" \"-\"\n"
        );
        assert_eq!(
            render(Some(
                "%REQ(:SCHEME)% %REQ(:AUTHORITY)% %REQ_WITHOUT_QUERY(:PATH)% %TRAILER(GRPC-STATUS)% \
                 %RESPONSE_CODE_DETAILS% %ROUTE_NAME%"
            )),
            "http example.com /upload 14 upstream_reset_before_response_started{connection_failure} r1"
        );
        // No response went out: code 0, response headers unset.
        let unanswered = HttpExchange {
            response: None,
            trailers: None,
            ..exchange
        };
        let record = ConnectionRecord {
            http: Some(&unanswered),
            ..record.clone()
        };
        let log = AccessLog::compile(
            LogSink::Stdout,
            Some("%RESPONSE_CODE% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% %TRAILER(GRPC-STATUS)%"),
        )
        .unwrap();
        let mut out = Vec::new();
        log.render(&record, &mut out);
        assert_eq!(out, b"0 - -");
        // A request the codec rejected has no method or path: `-`, as Envoy logs it.
        let unparsed = RequestHead {
            method: Bytes::new(),
            path: Bytes::new(),
            version: Version::Http11,
            headers: Headers::default(),
        };
        let rejected = HttpExchange {
            request: &unparsed,
            ..unanswered
        };
        let record = ConnectionRecord {
            http: Some(&rejected),
            ..record.clone()
        };
        let log = AccessLog::compile(LogSink::Stdout, Some("%REQ(:METHOD)% %REQ(:PATH)%")).unwrap();
        let mut out = Vec::new();
        log.render(&record, &mut out);
        assert_eq!(out, b"- -");
    }
}
