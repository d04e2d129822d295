//! HTTP connection manager over HTTP/1.1: reads requests off a downstream connection one at a
//! time (pipelined requests wait in the buffer, so responses go out in order), serves each as
//! a stream, and keeps the connection alive between them within the configured timeouts.
use bytes::Bytes;
use futures_lite::future;
use model::{
    access_log::ResponseFlags,
    stats::{add, inc},
};

use super::{
    downstream::Downstream,
    respond,
    stream::{self, Exchange, Next},
    Connection, Ended,
};
use crate::{
    net::buffered::{deadline, earliest, Buffered, IoFailure},
    protocol::http1::{self, ParsedRequest},
    stream::{
        headers::{Headers, RequestHead, Version},
        LocalReply,
    },
};

/// How waiting for the next request ended, when no request came.
enum NoRequest {
    /// Closed by the client (or a socket error).
    Closed,
    IdleTimeout,
    HeadersTimeout,
    Malformed(http1::RequestError),
}

/// Serves requests one after another until the connection closes or is upgraded.
pub(super) async fn serve(c: &Connection<'_>, conn: &mut Buffered) -> Ended {
    let mut served = 0u32;
    loop {
        let request = match next_request(c, conn, served == 0).await {
            Ok(request) => request,
            Err(NoRequest::Closed) => {
                inc(&c.stats.downstream_cx_destroy_remote);
                break;
            }
            Err(NoRequest::IdleTimeout) => {
                inc(&c.stats.downstream_cx_idle_timeout);
                inc(&c.stats.downstream_cx_destroy_local);
                break;
            }
            Err(NoRequest::HeadersTimeout) => {
                inc(&c.stats.downstream_rq_header_timeout);
                inc(&c.stats.downstream_cx_destroy_local);
                header_timeout(c, conn).await;
                break;
            }
            Err(NoRequest::Malformed(error)) => {
                inc(&c.stats.downstream_cx_protocol_error);
                inc(&c.stats.downstream_cx_destroy_local);
                reject(c, conn, &error).await;
                break;
            }
        };
        served += 1;
        let last = c
            .hcm
            .max_requests_per_connection
            .is_some_and(|max| served >= max);
        if last {
            inc(&c.stats.downstream_cx_max_requests_reached);
        }
        match stream::serve(c, Downstream::Http1(conn), request, last).await {
            Next::KeepAlive if !last => {}
            Next::KeepAlive | Next::Close => {
                inc(&c.stats.downstream_cx_destroy_local);
                break;
            }
            Next::Upgrade {
                upstream,
                buffer_limit,
            } => {
                return Ended::Upgrade {
                    upstream,
                    buffer_limit,
                }
            }
        }
    }
    // Its next reads (if any) are the close's: the next connection's first read can take the
    // buffer instead of allocating one.
    conn.release_idle_buffer();
    Ended::Closed
}

/// Reads until a complete request head is buffered: idle timeout before its first byte,
/// `request_headers_timeout` from its first byte. While draining, a connection that
/// served a request closes once idle; a `first` one (accepted during a graceful drain)
/// still gets its request answered, with `connection: close`, as in Envoy.
async fn next_request(
    c: &Connection<'_>,
    conn: &mut Buffered,
    first: bool,
) -> Result<ParsedRequest, NoRequest> {
    let timeouts = &c.hcm.timeouts;
    let idle_deadline = deadline(timeouts.idle);
    conn.release_idle_buffer();
    if !first && c.drain.is_draining() && conn.buf.is_empty() {
        return Err(NoRequest::Closed); // draining: no new request on this connection
    }
    let mut headers_deadline = None;
    loop {
        if !conn.buf.is_empty() {
            match http1::parse_request(&mut conn.buf, &c.limits) {
                Ok(Some(request)) => return Ok(request),
                Ok(None) => {}
                Err(error) => return Err(NoRequest::Malformed(error)),
            }
            if headers_deadline.is_none() {
                headers_deadline = Some(deadline(timeouts.request_headers));
            }
        }
        let until = match headers_deadline {
            None => idle_deadline,
            Some(headers) => earliest(headers, deadline(timeouts.request)),
        };
        // An idle connection (nothing of a next request yet) closes when draining starts.
        let read = match headers_deadline {
            None if !first => {
                let drain = c.drain;
                let drained = async {
                    drain.started().await;
                    Err(IoFailure::Broken)
                };
                future::or(conn.fill_until(until), drained).await
            }
            _ => conn.fill_until(until).await,
        };
        match read {
            Ok(0) if conn.buf.is_empty() => return Err(NoRequest::Closed),
            Ok(0) | Err(IoFailure::Broken) => return Err(NoRequest::Closed),
            Ok(n) => {
                add(&c.stats.downstream_cx_rx_bytes_total, n as u64);
            }
            Err(IoFailure::TimedOut) if headers_deadline.is_some() => {
                return Err(NoRequest::HeadersTimeout)
            }
            Err(IoFailure::TimedOut) => return Err(NoRequest::IdleTimeout),
        }
    }
}

/// Answers a client that did not finish its request head in `request_headers_timeout`.
async fn header_timeout(c: &Connection<'_>, conn: &mut Buffered) {
    let reply = LocalReply::new(408, "request header timeout");
    let mut out = Vec::new();
    respond::encode_local_reply(c.hcm, &c.ctx.date, &reply, false, false, &mut out);
    let _ = conn.write_all(&out).await;
}

/// Answers a request the codec rejected (its reply rewritten by `local_reply_config`, as
/// Envoy's, and logged with what is known: nothing of the request), then the connection
/// closes.
async fn reject(c: &Connection<'_>, conn: &mut Buffered, error: &http1::RequestError) {
    let mut exchange = Exchange::start();
    exchange.status = error.status();
    exchange.details = error.details().into();
    exchange.flags.set(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
    // Envoy's body for codec errors is the reason phrase; a missing Host is caught after
    // the codec and answered without a body.
    let body = match error {
        http1::RequestError::MissingHost => "",
        _ => http1::reason_phrase(error.status()),
    };
    let unparsed = RequestHead {
        method: Bytes::new(),
        path: Bytes::new(),
        version: Version::Http11,
        headers: Headers::default(),
    };
    let mut reply = LocalReply::new(error.status(), body);
    super::local_reply::rewrite(c, &unparsed, &exchange, &mut reply);
    exchange.status = reply.status;
    let mut out = Vec::new();
    respond::encode_local_reply(c.hcm, &c.ctx.date, &reply, false, false, &mut out);
    let _ = conn.write_all(&out).await;
    exchange.bytes_sent = reply.body.len() as u64;
    if !c.hcm.access_logs.is_empty() {
        super::log::write(c, &unparsed, &exchange);
    }
}
