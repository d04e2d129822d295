//! Domain model: HTTP tracing as shards run it — a connection manager's sampling and span
//! tags (`tracing`) and the Zipkin tracer its spans are reported to.
use std::sync::Arc;

use crate::stats::ZipkinStats;

/// Sampling shares are kept in parts per ten thousand, Envoy's `FractionalPercent` for them.
pub const SAMPLING_DENOMINATOR: u32 = 10_000;

/// A connection manager's `tracing`.
#[derive(Debug)]
pub struct HttpTracing {
    /// `client_sampling`: share of requests with `x-client-trace-id` forced into a trace.
    pub client_sampling: u32,
    /// `random_sampling`: share of other requests traced, by their `x-request-id`.
    pub random_sampling: u32,
    /// `overall_sampling`: cap applied after the two above.
    pub overall_sampling: u32,
    /// `max_path_tag_length` (Envoy's default 256): where `http.url` is cut.
    pub max_path_tag_length: usize,
    pub custom_tags: Vec<CustomTag>,
    /// The tracer: the connection manager's `provider`, else the bootstrap's `tracing.http`.
    /// Without one, only the `x-request-id` trace decision is made (no span, no headers).
    pub zipkin: Option<Arc<Zipkin>>,
    /// The UUID request-id extension's `pack_trace_reason`: the decision is written into
    /// `x-request-id` (its 15th character), so the next Envoy-like proxy keeps it.
    pub pack_trace_reason: bool,
    /// Its `use_request_id_for_trace_sampling`: `random_sampling` reads the `x-request-id`
    /// (every proxy of a request decides alike), else a random number.
    pub request_id_sampling: bool,
}

/// One `custom_tags` entry: a tag every span of the connection manager carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomTag {
    pub tag: String,
    pub value: TagValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagValue {
    /// `literal`, and `environment` (read once, when the config was translated).
    Literal(String),
    /// `request_header`: the request's header (lower-case name), else the default.
    RequestHeader {
        name: String,
        default: Option<String>,
    },
    /// `metadata` of kind `request`: no filter here writes dynamic metadata, so what Envoy
    /// tags when the key is absent — the default, or no tag.
    AbsentMetadata { default: Option<String> },
}

/// `envoy.tracers.zipkin` (`ZipkinConfig`), and this process's identity in its spans.
#[derive(Debug)]
pub struct Zipkin {
    pub collector_cluster: String,
    /// `collector_endpoint`: the path reports are POSTed to.
    pub collector_endpoint: String,
    /// `collector_hostname` (default: the cluster's name): the reports' `host`.
    pub collector_hostname: String,
    /// `trace_id_128bit`: new traces get 128-bit ids.
    pub trace_id_128bit: bool,
    /// `shared_span_context` (default true): an ingress span continuing a trace reuses the
    /// caller's span id instead of making a child.
    pub shared_span_context: bool,
    pub node: LocalNode,
    pub stats: Arc<ZipkinStats>,
}

/// The bootstrap's `node` as spans name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalNode {
    /// `node.id`: the `node_id` tag.
    pub id: String,
    /// `node.cluster`: the spans' `localEndpoint.serviceName`.
    pub cluster: String,
    /// `node.locality.zone`: the `zone` tag.
    pub zone: String,
}
