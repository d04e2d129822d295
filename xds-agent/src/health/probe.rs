//! One active health check of one host: an HTTP/1.1 or HTTP/2 request, TCP payloads, or a gRPC
//! `grpc.health.v1.Health/Check` call, judged as Envoy judges them; over TLS when the host's
//! transport socket is (as Envoy's checks use the cluster's transport socket).
use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{client::conn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use model::{
    health::{CheckKind, HttpCheck},
    tls::ClientTls,
};

/// How many response body bytes `receive` payloads are looked for in (Envoy's default
/// `response_buffer_size`).
const RESPONSE_BUFFER: usize = 1024;

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass {
        degraded: bool,
    },
    /// The host answered, wrongly: the host fails at once, unless `retriable` (a
    /// `retriable_statuses` status), which counts toward `unhealthy_threshold`.
    Fail {
        retriable: bool,
    },
    /// No answer (connect failure, reset, bad protocol): counts toward `unhealthy_threshold`.
    Network,
}

/// A connection kept between checks (`reuse_connection`).
pub enum Kept {
    Http1(conn::http1::SendRequest<Full<Bytes>>),
    Http2(conn::http2::SendRequest<Full<Bytes>>),
}

/// Where a check goes, the name it gives (`host` / `:authority`), and the host's TLS.
pub struct Target {
    pub address: SocketAddr,
    pub authority: String,
    /// The transport socket's TLS context for this host, if any.
    pub tls: Option<Arc<ClientTls>>,
}

/// A check's connection: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to `target`, with the TLS handshake when it has TLS (SNI as the context sets it,
/// else none, as the shards connect); `None` on any failure, a missing SDS secret included.
async fn open(target: &Target) -> Option<Box<dyn Stream>> {
    let stream = TcpStream::connect(target.address).await.ok()?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = &target.tls else {
        return Some(Box::new(stream));
    };
    let name = tls
        .sni
        .clone()
        .unwrap_or_else(|| ServerName::IpAddress(target.address.ip().into()));
    let stream = TlsConnector::from(tls.config()?)
        .connect(name, stream)
        .await
        .ok()?;
    Some(Box::new(stream))
}

/// Runs one check of `kind` against `target`, reusing `kept` when it is open (and keeping the
/// connection there when `reuse`).
pub async fn check(
    kind: &CheckKind,
    target: &Target,
    kept: &mut Option<Kept>,
    reuse: bool,
) -> Verdict {
    match kind {
        CheckKind::Tcp { send, receive } => tcp(target, send, receive).await,
        CheckKind::Http(http) => {
            let request = http_request(http, target);
            let Some(response) = send(request, target, http.http2, kept, reuse).await else {
                return Verdict::Network;
            };
            judge_http(http, response).await
        }
        CheckKind::Grpc {
            service_name,
            initial_metadata,
            ..
        } => {
            let request = grpc_request(service_name, initial_metadata, target);
            let Some(response) = send(request, target, true, kept, reuse).await else {
                return Verdict::Network;
            };
            judge_grpc(response).await
        }
    }
}

async fn tcp(target: &Target, send: &[u8], receive: &[Vec<u8>]) -> Verdict {
    let Some(mut stream) = open(target).await else {
        return Verdict::Network;
    };
    if !send.is_empty() && stream.write_all(send).await.is_err() {
        return Verdict::Network;
    }
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !contains_in_order(&seen, receive) {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return Verdict::Network,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
    Verdict::Pass { degraded: false }
}

/// Whether every payload is in `data`, in order (not necessarily adjacent), as Envoy matches.
fn contains_in_order(data: &[u8], payloads: &[Vec<u8>]) -> bool {
    let mut from = 0;
    for payload in payloads {
        match data[from..]
            .windows(payload.len().max(1))
            .position(|w| w == payload.as_slice())
        {
            Some(at) => from += at + payload.len(),
            None => return false,
        }
    }
    true
}

fn http_request(http: &HttpCheck, target: &Target) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(http.method.as_str())
        .uri(&http.path)
        .header("host", &target.authority)
        .header("user-agent", "Envoy/HC");
    for (name, value) in &http.headers {
        builder = builder.header(name, value);
    }
    let mut request = builder
        .body(Full::new(Bytes::from(http.send.clone())))
        .unwrap_or_else(|_| Request::new(Full::default()));
    for name in &http.remove_headers {
        request.headers_mut().remove(name);
    }
    request
}

fn grpc_request(
    service: &str,
    metadata: &[(String, String)],
    target: &Target,
) -> Request<Full<Bytes>> {
    // `HealthCheckRequest { service = 1 }` in a gRPC frame (uncompressed, 4-byte length).
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut builder = Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/grpc.health.v1.Health/Check",
            target.authority
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "Envoy/HC");
    for (name, value) in metadata {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(frame)))
        .unwrap_or_else(|_| Request::new(Full::default()))
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Sends `request` on the kept connection, or a new one; `None` on a network failure (the kept
/// connection is then dropped).
async fn send(
    mut request: Request<Full<Bytes>>,
    target: &Target,
    http2: bool,
    kept: &mut Option<Kept>,
    reuse: bool,
) -> Option<Response<hyper::body::Incoming>> {
    if http2 && request.uri().authority().is_none() {
        let uri = format!("http://{}{}", target.authority, request.uri());
        *request.uri_mut() = uri.parse().ok()?;
    }
    let connection = match kept.take() {
        Some(open) if is_ready(&open) => open,
        _ => connect(target, http2).await?,
    };
    let (response, connection) = match connection {
        Kept::Http1(mut send) => (send.send_request(request).await, Kept::Http1(send)),
        Kept::Http2(mut send) => (send.send_request(request).await, Kept::Http2(send)),
    };
    let response = response.ok()?;
    let closes = response
        .headers()
        .get("connection")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if reuse && !closes {
        *kept = Some(connection);
    }
    Some(response)
}

fn is_ready(kept: &Kept) -> bool {
    match kept {
        Kept::Http1(send) => send.is_ready(),
        Kept::Http2(send) => send.is_ready(),
    }
}

async fn connect(target: &Target, http2: bool) -> Option<Kept> {
    let io = TokioIo::new(open(target).await?);
    if http2 {
        let (send, connection) = conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .ok()?;
        tokio::spawn(connection);
        Some(Kept::Http2(send))
    } else {
        let (send, connection) = conn::http1::handshake(io).await.ok()?;
        tokio::spawn(connection);
        Some(Kept::Http1(send))
    }
}

async fn judge_http(http: &HttpCheck, response: Response<hyper::body::Incoming>) -> Verdict {
    let status = response.status().as_u16();
    let degraded = response.headers().contains_key("x-envoy-degraded");
    let expected = http.expected.iter().any(|r| r.contains(&status));
    if !expected {
        let retriable = http.retriable.iter().any(|r| r.contains(&status));
        return Verdict::Fail { retriable };
    }
    if http.receive.is_empty() {
        return Verdict::Pass { degraded };
    }
    let Ok(body) = response.into_body().collect().await else {
        return Verdict::Network;
    };
    let body = body.to_bytes();
    match contains_in_order(&body[..body.len().min(RESPONSE_BUFFER)], &http.receive) {
        true => Verdict::Pass { degraded },
        false => Verdict::Fail { retriable: false },
    }
}

/// SERVING (1) in a `HealthCheckResponse`, with `grpc-status: 0`, passes.
async fn judge_grpc(response: Response<hyper::body::Incoming>) -> Verdict {
    if response.status() != 200 {
        return Verdict::Fail { retriable: false };
    }
    let Ok(collected) = response.into_body().collect().await else {
        return Verdict::Network;
    };
    let grpc_ok = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .is_some_and(|s| s == "0");
    let body = collected.to_bytes();
    let serving = body.len() >= 5 && serving(&body[5..]);
    match grpc_ok && serving {
        true => Verdict::Pass { degraded: false },
        false => Verdict::Fail { retriable: false },
    }
}

/// Whether a `HealthCheckResponse` says SERVING (field 1, varint 1).
fn serving(message: &[u8]) -> bool {
    message.starts_with(&[0x08, 0x01])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_match_in_order_not_adjacent() {
        let payloads = [b"ab".to_vec(), b"cd".to_vec()];
        assert!(contains_in_order(b"xxabyycdzz", &payloads));
        assert!(!contains_in_order(b"cdab", &payloads));
        assert!(contains_in_order(b"", &[]));
    }

    #[test]
    fn serving_is_field_one_value_one() {
        assert!(serving(&[0x08, 0x01]));
        assert!(!serving(&[0x08, 0x02]));
        assert!(!serving(&[]));
    }
}
