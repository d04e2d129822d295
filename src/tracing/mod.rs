//! Tracing (a connection manager's `tracing`, Envoy's Zipkin tracer): the trace decision, the
//! request's span and the B3 headers it sends upstream, and the span's report when the
//! exchange ends (`reporter`, per shard).
mod b3;
mod reporter;
mod sampling;
mod span;

use std::{net::IpAddr, rc::Rc, time::SystemTime};

use model::{
    access_log::ResponseFlags,
    route::Route,
    tracing::{HttpTracing, TagValue},
};
pub use reporter::Reporter;
pub use span::Span;

use crate::{context::ShardContext, rt::host, stream::headers::RequestHead};

/// Where Envoy carries a route decorator's operation between proxies.
const DECORATOR_OPERATION: &str = "x-envoy-decorator-operation";

/// Starts tracing a request that matched `route` (if any): makes the trace decision (written
/// into `x-request-id`), then the span, named by the route's decorator else the host, and sets
/// the headers that carry it upstream. `None` without a tracer or with a malformed caller
/// context (as Envoy, which then neither reports nor propagates).
pub fn begin(
    tracing: &HttpTracing,
    egress: bool,
    route: Option<&Route>,
    request: &mut RequestHead,
    start: SystemTime,
) -> Option<Span> {
    let decided = sampling::decide(tracing, &mut request.headers);
    let tracer = tracing.zipkin.as_ref()?;
    let sampled = b3::sampled(&request.headers).unwrap_or(decided);
    let parent = b3::extract(&request.headers, sampled).ok()?;
    let decorator = route.and_then(|r| r.decorator.as_ref());
    let mut name = match decorator {
        Some(d) => d.operation.clone(),
        None => String::from_utf8_lossy(request.authority()).into_owned(),
    };
    if egress {
        // The next proxy's ingress span takes the operation's name.
        if let Some(d) = decorator.filter(|d| d.propagate) {
            request
                .headers
                .set(DECORATOR_OPERATION, d.operation.clone());
        }
    } else if let Some(operation) = request.headers.get(DECORATOR_OPERATION) {
        if !operation.is_empty() {
            name = String::from_utf8_lossy(operation).into_owned();
        }
        request.headers.remove(DECORATOR_OPERATION);
    }
    let span = Span::start(tracer, parent, sampled, egress, name, start);
    b3::inject(&span.context, &mut request.headers);
    Some(span)
}

/// What a span's tags read of its finished exchange.
pub struct Finished<'a> {
    pub request: &'a RequestHead,
    /// `http` or `https`: the URL's scheme when no `x-forwarded-proto` says otherwise.
    pub scheme: &'a str,
    /// 0 when no response went out.
    pub status: u16,
    pub upstream_cluster: Option<&'a str>,
    pub flags: ResponseFlags,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub remote: IpAddr,
    pub duration_us: u64,
}

/// Tags a sampled span with Envoy's standard and custom tags and queues its report; a span
/// not sampled is dropped.
pub fn finish(ctx: &Rc<ShardContext>, tracing: &HttpTracing, span: Span, end: &Finished<'_>) {
    if !span.context.sampled {
        return;
    }
    let request = end.request;
    let header = |name: &str| request.headers.get(name).map(|v| &v[..]);
    let node = &span.tracer.node;
    let mut url = Vec::with_capacity(64);
    url.extend_from_slice(header("x-forwarded-proto").unwrap_or(end.scheme.as_bytes()));
    url.extend_from_slice(b"://");
    url.extend_from_slice(request.authority());
    let path = header("x-envoy-original-path").unwrap_or(&request.path);
    url.extend_from_slice(&path[..path.len().min(tracing.max_path_tag_length)]);
    let mut flags = Vec::new();
    end.flags.render(&mut flags);
    let numbers = [
        end.status.to_string(),
        end.bytes_received.to_string(),
        end.bytes_sent.to_string(),
        end.remote.to_string(),
    ];
    let mut tags: Vec<(&str, &[u8])> = vec![
        ("component", b"proxy"),
        ("node_id", node.id.as_bytes()),
        ("zone", node.zone.as_bytes()),
        ("http.url", &url),
        ("http.method", &request.method),
        ("http.protocol", request.version.as_str().as_bytes()),
        (
            "downstream_cluster",
            header("x-envoy-downstream-service-cluster").unwrap_or(b"-"),
        ),
        ("user_agent", header("user-agent").unwrap_or(b"-")),
        ("peer.address", numbers[3].as_bytes()),
        ("http.status_code", numbers[0].as_bytes()),
        ("request_size", numbers[1].as_bytes()),
        ("response_size", numbers[2].as_bytes()),
        ("response_flags", &flags),
    ];
    for (tag, name) in [
        ("guid:x-request-id", "x-request-id"),
        ("guid:x-client-trace-id", "x-client-trace-id"),
    ] {
        if let Some(value) = header(name) {
            tags.push((tag, value));
        }
    }
    if let Some(cluster) = end.upstream_cluster {
        tags.push(("upstream_cluster", cluster.as_bytes()));
        tags.push(("upstream_cluster.name", cluster.as_bytes()));
    }
    if end.status == 0 || end.status >= 500 {
        tags.push(("error", b"true"));
    }
    for custom in &tracing.custom_tags {
        let value = match &custom.value {
            TagValue::Literal(value) => Some(value.as_bytes()),
            TagValue::RequestHeader { name, default } => {
                header(name).or(default.as_deref().map(str::as_bytes))
            }
            TagValue::AbsentMetadata { default } => default.as_deref().map(str::as_bytes),
        };
        if let Some(value) = value {
            tags.push((&custom.tag, value));
        }
    }
    let tracer = span.tracer.clone();
    Reporter::report(ctx, &tracer, |out| {
        span.write_json(end.duration_us, &tags, host::local_address(), out)
    });
}
