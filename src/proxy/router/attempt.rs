//! Router: one try — a stream to the chosen host (a pooled or new connection), this try's
//! request head (`auto_host_rewrite`, attempt count, `auto_sni`), then the exchange up to the
//! response head.
use std::borrow::Cow;

use model::{
    stats::{inc, ClusterCells},
    UpstreamProtocol,
};

use super::Forwarding;
use crate::{
    context::ShardContext,
    proxy::{
        cluster_manager::ActiveHost,
        open_as::OpenAs,
        pool::Acquire,
        upstream::{Outgoing, TryFailure, UpstreamHead, UpstreamStream},
    },
    rt::timer,
    stream::{
        body::RequestBody,
        headers::{RequestHead, Version},
    },
};

/// A response head and the stream it came on.
pub struct Answer {
    pub head: UpstreamHead,
    pub stream: UpstreamStream,
}

pub async fn try_once(
    ctx: &ShardContext,
    request: &Forwarding<'_>,
    attempt: u32,
    host: &ActiveHost,
    body: &mut RequestBody<'_>,
    cells: &ClusterCells,
) -> Result<Answer, TryFailure> {
    let per_try = request
        .retry
        .and_then(|p| p.per_try_timeout)
        .map(|t| timer::turn_time() + t);
    let deadlines = &request.deadlines;
    let connect_by = deadlines.next(per_try, !body.is_done());
    let sni = auto_sni(request, host);
    let options = &request.cluster.config.http;
    let client_http2 = request.client_version == Version::Http2;
    let http2 = options.uses_http2(client_http2);
    let http10 = request.client_version == Version::Http10
        && options.protocol == UpstreamProtocol::Downstream;
    let as_ = OpenAs {
        sni: sni.as_deref(),
        alpn: request
            .alpn
            .as_ref()
            .and_then(|o| o.for_upstream(http2, http10)),
        // Pooled: shares no filter state (an internal listener gets the endpoint's metadata).
        shared: None,
    };
    let mut stream = UpstreamStream::open(
        ctx,
        &request.cluster,
        host,
        as_,
        connect_by.map(|d| d.0),
        http2,
    )
    .await
    .map_err(|e| match e {
        Acquire::TimedOut => TryFailure::TimedOut {
            expiry: connect_by.map_or(super::deadline::Expiry::Route, |d| d.1),
            receiving: !body.is_done(),
        },
        Acquire::Failed => TryFailure::Connect,
        Acquire::Overflow => TryFailure::Overflow,
    })?;
    inc(&cells.upstream_rq_total);
    let head = head_for_try(request, attempt, host);
    let outgoing = Outgoing {
        head: &head,
        framing: request.framing,
        trailers: request.trailers,
        is_head_request: request.is_head_request,
    };
    let head = stream
        .exchange(&outgoing, body, deadlines, per_try, cells)
        .await?;
    Ok(Answer { head, stream })
}

/// The request head for this try: the chosen host's name under `auto_host_rewrite` (the
/// original kept in `x-envoy-original-host`), `x-envoy-attempt-count` when asked for.
fn head_for_try<'r>(
    request: &Forwarding<'r>,
    attempt: u32,
    host: &ActiveHost,
) -> Cow<'r, RequestHead> {
    let hostname = host
        .host()
        .endpoint
        .hostname
        .as_deref()
        .filter(|_| request.auto_host_rewrite);
    if hostname.is_none() && !request.attempt_count {
        return Cow::Borrowed(request.head);
    }
    let mut head = request.head.clone();
    if let Some(name) = hostname {
        if let Some(original) = head.headers.get("host").cloned() {
            head.headers.set("x-envoy-original-host", original);
        }
        head.headers.set("host", name.to_string());
    }
    if request.attempt_count {
        head.headers
            .set("x-envoy-attempt-count", attempt.to_string());
    }
    Cow::Owned(head)
}

/// The SNI for this try under `auto_sni`: the host the request goes to (after
/// `auto_host_rewrite`), without its port; `None` without `auto_sni` or TLS.
fn auto_sni(request: &Forwarding<'_>, host: &ActiveHost) -> Option<String> {
    let cluster = &request.cluster.config;
    let endpoint = &host.host().endpoint;
    if !cluster.http.auto_sni || cluster.tls_for(endpoint).is_none() {
        return None;
    }
    let authority = match endpoint.hostname.as_deref() {
        Some(name) if request.auto_host_rewrite => name.as_bytes(),
        _ => request.head.authority(),
    };
    let authority = std::str::from_utf8(authority).ok()?;
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
    )
    .filter(|h| !h.is_empty())
}
