//! Proxy layer: request mirroring (`request_mirror_policies`) — for each sampled policy a copy
//! of the forwarded request goes through the router to the mirror cluster with its `host`
//! suffixed `-shadow`, as Envoy's shadowing; fire and forget on the shard, the response read
//! and dropped, never delaying or failing the client's request.
use std::{
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use model::{http::HttpConnectionManager, route::Forward, stats::inc};

use super::{
    cluster_manager::ShardCluster,
    router::{self, deadline::Deadlines, Forwarding, Routed, RouterRecord},
};
use crate::{
    context::ShardContext,
    protocol::http1::Framing,
    rt,
    stream::{
        body::RequestBody,
        headers::{RequestHead, Version},
    },
};

/// A shadow's deadline when the route's `timeout` is disabled (`0s`): Envoy's default route
/// timeout, so a hung mirror host cannot hold a connection forever.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends a copy of `request` to every mirror cluster of `forward` whose sample hits. Called
/// once the router has forwarded the request: the copy carries the whole body, so it is sent
/// only when the body was read in full and kept for replay; a body too large to keep abandons
/// the shadows, counted as Envoy's `retry_or_shadow_abandoned` on the route's cluster.
#[inline]
pub fn shadow(
    ctx: &Rc<ShardContext>,
    hcm: &HttpConnectionManager,
    forward: &Forward,
    routed: &ShardCluster,
    request: &RequestHead,
    framing: &Framing,
    body: &RequestBody<'_>,
) {
    if !forward.mirrors.is_empty() {
        shadow_sampled(ctx, hcm, forward, routed, request, framing, body);
    }
}

fn shadow_sampled(
    ctx: &Rc<ShardContext>,
    hcm: &HttpConnectionManager,
    forward: &Forward,
    routed: &ShardCluster,
    request: &RequestHead,
    framing: &Framing,
    body: &RequestBody<'_>,
) {
    let mut kept: Option<&[Bytes]> = None;
    for mirror in &forward.mirrors {
        if !sampled(mirror.per_million) {
            continue;
        }
        let chunks = match kept {
            Some(chunks) => chunks,
            None => match whole_body(request, body) {
                Ok(chunks) => *kept.insert(chunks),
                Err(skip) => {
                    if skip == Skip::BodyNotKept {
                        inc(&routed.config.stats.shard(ctx.id).retry_or_shadow_abandoned);
                    }
                    tracing::debug!(reason = skip.reason(), "request not mirrored");
                    return;
                }
            },
        };
        let Some(cluster) = ctx.clusters.borrow().resolve(&mirror.cluster) else {
            tracing::debug!(cluster = %mirror.cluster.name, "mirror cluster not found");
            continue;
        };
        let trailers = body
            .trailers
            .clone()
            .filter(|_| hcm.http1.enable_trailers && cluster.config.http.enable_trailers);
        let copy = Shadow {
            head: shadow_head(request),
            framing: *framing,
            body: RequestBody::complete(chunks.to_vec(), trailers),
            deadline: Instant::now() + forward.timeout.unwrap_or(DEFAULT_TIMEOUT),
        };
        rt::spawn_local(send(ctx.clone(), cluster, copy)).detach();
    }
}

/// Whether a policy's share (in millionths) takes this request.
fn sampled(per_million: u32) -> bool {
    per_million >= 1_000_000 || fastrand::u32(0..1_000_000) < per_million
}

/// Why a request is not mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// The body was larger than the buffer limit: its start is gone.
    BodyNotKept,
    /// The body was not read to its end (the client left, or the upstream answered first).
    BodyIncomplete,
    /// An upgrade (WebSocket) is a conversation, not a request to copy.
    Upgrade,
}

impl Skip {
    fn reason(self) -> &'static str {
        match self {
            Skip::BodyNotKept => "body larger than the buffer limit",
            Skip::BodyIncomplete => "body not read in full",
            Skip::Upgrade => "upgrade request",
        }
    }
}

/// The request body's chunks, if a copy of the request can carry all of it.
fn whole_body<'b>(request: &RequestHead, body: &'b RequestBody) -> Result<&'b [Bytes], Skip> {
    if request.headers.contains("upgrade") {
        return Err(Skip::Upgrade);
    }
    if !body.is_done() {
        return Err(Skip::BodyIncomplete);
    }
    body.replay().ok_or(Skip::BodyNotKept)
}

/// The shadow request's head: the forwarded head with Envoy's shadow changes.
fn shadow_head(request: &RequestHead) -> RequestHead {
    let mut head = request.clone();
    head.version = Version::Http11;
    if let Some(host) = head.headers.get("host") {
        let shadowed = shadow_host(host);
        head.headers.set("host", shadowed);
    }
    // Envoy sends shadows as internal requests.
    head.headers
        .set("x-envoy-internal", Bytes::from_static(b"true"));
    head
}

/// Envoy's shadow authority: `-shadow` after the host, before any port
/// (`example.com:8080` → `example.com-shadow:8080`, `[::1]:80` → `[::1]-shadow:80`).
fn shadow_host(authority: &[u8]) -> Vec<u8> {
    let host_end = match authority.iter().rposition(|b| *b == b':') {
        // A colon inside an IPv6 literal is not a port separator.
        Some(colon) if !authority[colon..].contains(&b']') => colon,
        _ => authority.len(),
    };
    let mut out = Vec::with_capacity(authority.len() + 7);
    out.extend_from_slice(&authority[..host_end]);
    out.extend_from_slice(b"-shadow");
    out.extend_from_slice(&authority[host_end..]);
    out
}

/// One request with its whole body, owned by its task.
pub struct Shadow {
    pub head: RequestHead,
    pub framing: Framing,
    pub body: RequestBody<'static>,
    pub deadline: Instant,
}

/// Sends one shadow request through the router (no retries, within its deadline) and reads
/// its response to the end.
async fn send(ctx: Rc<ShardContext>, cluster: Rc<ShardCluster>, shadow: Shadow) {
    let name = cluster.config.name.clone();
    if let Err(reason) = send_complete(&ctx, cluster, shadow).await {
        tracing::debug!(cluster = %name, reason, "shadow request failed");
    }
}

/// Sends a request whose body is complete through the router to `cluster` (no retries,
/// within its deadline) and reads its response to the end: its status, or why none came.
/// Shadows and trace reports go out this way.
pub async fn send_complete(
    ctx: &Rc<ShardContext>,
    cluster: Rc<ShardCluster>,
    shadow: Shadow,
) -> Result<u16, &'static str> {
    let Shadow {
        head,
        framing,
        mut body,
        deadline,
    } = shadow;
    let forwarding = Forwarding {
        cluster: cluster.clone(),
        head: &head,
        auto_host_rewrite: false,
        attempt_count: false,
        trailers: true,
        framing: &framing,
        is_head_request: head.is_head(),
        retry: None,
        client_version: Version::Http11,
        alpn: None,
        // Shadows of an ORIGINAL_DST cluster find no host (none is named by a destination).
        destination: None,
        hash: None,
        metadata_match: None,
        deadlines: Deadlines {
            route: Some(deadline),
            request: None,
            stream_idle: None,
        },
    };
    let mut record = RouterRecord::default();
    match router::forward(ctx, forwarding, &mut body, &mut record).await {
        Routed::Response(response) if response.head.head.status == 101 => {
            // Not asked for (upgrades are not sent): the connection is the upstream's now.
            inc(&cluster
                .config
                .stats
                .shard(ctx.id)
                .upstream_cx_protocol_error);
            Err("answered 101")
        }
        Routed::Response(mut response) => loop {
            match response.body.next().await {
                Ok(Some(_)) => {}
                Ok(None) => break Ok(response.head.head.status),
                Err(_) => break Err("response body failed"),
            }
        },
        Routed::Failed(_) => Err("no response"),
        Routed::Downstream(_) => unreachable!("the body is complete"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::headers::Headers;

    fn head(method: &str, host: Option<&str>) -> RequestHead {
        let mut headers = Headers::with_capacity(4);
        if let Some(host) = host {
            headers.append("host", host.to_string());
        }
        headers.append("x-request-id", "abc");
        RequestHead {
            method: Bytes::from(method.to_string()),
            path: Bytes::from_static(b"/copy?q=1"),
            version: Version::Http10,
            headers,
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_shadow_suffix_goes_on_the_host_before_the_port() {
        for (authority, shadowed) in [
            ("example.com", "example.com-shadow"),
            ("example.com:8080", "example.com-shadow:8080"),
            ("10.0.0.1:80", "10.0.0.1-shadow:80"),
            ("[::1]", "[::1]-shadow"),
            ("[::1]:80", "[::1]-shadow:80"),
            ("", "-shadow"),
        ] {
            assert_eq!(text(&shadow_host(authority.as_bytes())), shadowed);
        }
    }

    #[test]
    fn a_shadow_is_the_forwarded_request_as_internal_with_the_shadow_host() {
        let shadow = shadow_head(&head("POST", Some("example.com")));
        assert_eq!(shadow.version, Version::Http11);
        let headers: Vec<_> = shadow
            .headers
            .iter()
            .map(|h| (text(&h.name), text(&h.value)))
            .collect();
        assert_eq!(
            headers,
            [
                ("host", "example.com-shadow"),
                ("x-request-id", "abc"),
                ("x-envoy-internal", "true")
            ]
        );
        let without = shadow_head(&head("PUT", None));
        assert!(!without.headers.contains("host"), "no host stays no host");
    }

    #[test]
    fn sampling_takes_all_none_or_about_the_share() {
        assert!((0..1000).all(|_| sampled(1_000_000)));
        assert!((0..1000).all(|_| !sampled(0)));
        let hits = (0..100_000).filter(|_| sampled(250_000)).count();
        assert!((22_000..28_000).contains(&hits), "{hits}");
    }

    #[test]
    fn upgrades_are_not_mirrored() {
        let mut request = head("GET", Some("a"));
        request.headers.set("upgrade", "websocket");
        let body = RequestBody::complete(Vec::new(), None);
        assert_eq!(whole_body(&request, &body), Err(Skip::Upgrade));
        assert_eq!(whole_body(&head("GET", Some("a")), &body), Ok(&[][..]));
    }
}
