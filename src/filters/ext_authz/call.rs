//! External authorization: one request to the authorization service's cluster — sent through
//! the router and the shard's own upstream pools (never leaving the shard), its whole answer
//! read back, bounded, within the service's timeout — what the gRPC and HTTP clients share.
use std::time::{Duration, Instant};

use crate::{
    context::ShardContext,
    protocol::http1::Framing,
    proxy::router::{self, deadline::Deadlines, Forwarding, Routed, RouterRecord},
    stream::{
        body::RequestBody,
        headers::{Headers, RequestHead, ResponseHead},
    },
};
use bytes::{Bytes, BytesMut};

/// The largest answer read (gRPC's default receive limit).
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The service's answer: its head, body and trailers, and how long it took.
pub struct Answer {
    pub head: ResponseHead,
    pub body: Bytes,
    pub trailers: Option<Headers>,
    /// Since the try that answered started (Envoy's `x-envoy-upstream-service-time`).
    pub took: Duration,
}

/// Sends `head` and `body` (framed by `framing`) to `cluster`, and reads the answer whole
/// within `timeout` (`None`: none); `Err` says why there is none.
pub async fn exchange(
    ctx: &ShardContext,
    cluster: &str,
    head: &RequestHead,
    body: Bytes,
    framing: Framing,
    timeout: Option<Duration>,
) -> Result<Answer, &'static str> {
    let cluster = ctx
        .clusters
        .borrow()
        .get(cluster)
        .ok_or("no such cluster")?;
    let mut body = RequestBody::complete(vec![body], None);
    let forwarding = Forwarding {
        cluster,
        head,
        auto_host_rewrite: false,
        attempt_count: false,
        trailers: true,
        framing: &framing,
        is_head_request: false,
        retry: None,
        client_version: head.version,
        alpn: None,
        destination: None,
        hash: None,
        metadata_match: None,
        deadlines: Deadlines {
            route: timeout.map(|t| Instant::now() + t),
            request: None,
            stream_idle: None,
        },
    };
    let mut record = RouterRecord::default();
    let mut response = match router::forward(ctx, forwarding, &mut body, &mut record).await {
        Routed::Response(response) => response,
        Routed::Failed(_) => return Err("no response"),
        Routed::Downstream(_) => unreachable!("the request body is complete"),
    };
    let took = response.try_started.elapsed();
    let mut received = BytesMut::new();
    while let Some(chunk) = response.body.next().await.map_err(|_| "body failed")? {
        if received.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err("answer too large");
        }
        received.extend_from_slice(&chunk);
    }
    Ok(Answer {
        head: response.head.head,
        body: received.freeze(),
        trailers: response.body.trailers(),
        took,
    })
}

/// Marks a call to the service as Envoy's clients do: internal, with the deadline the
/// service has (`x-envoy-expected-rq-timeout-ms`, in milliseconds, at least 1).
pub fn mark_internal(headers: &mut Headers, timeout: Option<Duration>) {
    if let Some(timeout) = timeout {
        let ms = timeout.as_millis().max(1);
        headers.append("x-envoy-expected-rq-timeout-ms", ms.to_string());
    }
    headers.append("x-envoy-internal", Bytes::from_static(b"true"));
}
