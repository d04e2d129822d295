//! Tracing: one request's span on this proxy — started from the caller's B3 context or as a
//! new trace, named by the route's decorator or the request's host, tagged with Envoy's
//! standard tags when the exchange ends, and written as a Zipkin v2 JSON object.
use std::{
    fmt::Write as _,
    io::Write as _,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use model::{access_log::write_json_string, tracing::Zipkin};

use super::b3::SpanContext;

/// A span in progress.
#[derive(Debug)]
pub struct Span {
    pub context: SpanContext,
    /// CLIENT (egress) or SERVER (ingress).
    pub egress: bool,
    /// It reuses the caller's span id (`shared_span_context` on an ingress span).
    pub shared: bool,
    pub name: String,
    pub start: SystemTime,
    pub tracer: Arc<Zipkin>,
}

impl Span {
    /// The span of a request whose caller sent `parent` (or none: a new trace, sampled as
    /// `sampled` says), as Envoy's Zipkin tracer makes it.
    pub fn start(
        tracer: &Arc<Zipkin>,
        parent: Option<SpanContext>,
        sampled: bool,
        egress: bool,
        name: String,
        start: SystemTime,
    ) -> Span {
        let (context, shared) = match parent {
            None => {
                let id = fastrand::u64(..);
                let high = match tracer.trace_id_128bit {
                    true => fastrand::u64(..),
                    false => 0,
                };
                let context = SpanContext {
                    trace_high: high,
                    trace_low: id,
                    id,
                    parent: 0,
                    sampled,
                };
                (context, false)
            }
            Some(caller) if egress || !tracer.shared_span_context => {
                let child = SpanContext {
                    id: fastrand::u64(..),
                    parent: caller.id,
                    ..caller
                };
                (child, false)
            }
            Some(caller) => (caller, true),
        };
        Span {
            context,
            egress,
            shared,
            name,
            start,
            tracer: tracer.clone(),
        }
    }

    /// Writes the finished span as one Zipkin v2 JSON object: `duration_us` after its start,
    /// with `tags` (name, value) and this proxy as its local endpoint (`local_ip`).
    pub fn write_json(
        &self,
        duration_us: u64,
        tags: &[(&str, &[u8])],
        local_ip: Option<std::net::IpAddr>,
        out: &mut Vec<u8>,
    ) {
        let c = &self.context;
        let mut trace = String::with_capacity(32);
        c.trace_id(&mut trace);
        let start_us = self
            .start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut head = String::with_capacity(160);
        let _ = write!(head, "{{\"traceId\":\"{trace}\",\"id\":\"{:016x}\"", c.id);
        if c.parent != 0 {
            let _ = write!(head, ",\"parentId\":\"{:016x}\"", c.parent);
        }
        let kind = if self.egress { "CLIENT" } else { "SERVER" };
        let _ = write!(
            head,
            ",\"kind\":\"{kind}\",\"timestamp\":{start_us},\"duration\":{duration_us}"
        );
        if self.shared {
            head.push_str(",\"shared\":true");
        }
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(b",\"name\":");
        write_json_string(self.name.as_bytes(), out);
        out.extend_from_slice(b",\"localEndpoint\":{\"serviceName\":");
        write_json_string(self.tracer.node.cluster.as_bytes(), out);
        match local_ip {
            Some(std::net::IpAddr::V4(ip)) => {
                let _ = write!(out, ",\"ipv4\":\"{ip}\"");
            }
            Some(std::net::IpAddr::V6(ip)) => {
                let _ = write!(out, ",\"ipv6\":\"{ip}\"");
            }
            None => {}
        }
        // The end of the exchange as the annotation Envoy keeps: client or server "done".
        let end = if self.egress { "cr" } else { "ss" };
        let _ = write!(
            out,
            ",\"port\":0}},\"annotations\":[{{\"timestamp\":{},\"value\":\"{end}\"}}],\"tags\":{{",
            start_us + duration_us
        );
        for (i, (name, value)) in tags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(name.as_bytes(), out);
            out.push(b':');
            write_json_string(value, out);
        }
        out.extend_from_slice(b"}}");
    }
}

#[cfg(test)]
mod tests {
    use model::{stats::ZipkinStats, tracing::LocalNode};

    use super::*;

    fn tracer(shared: bool) -> Arc<Zipkin> {
        Arc::new(Zipkin {
            collector_cluster: "zipkin".into(),
            collector_endpoint: "/api/v2/spans".into(),
            collector_hostname: "zipkin".into(),
            trace_id_128bit: true,
            shared_span_context: shared,
            node: LocalNode {
                id: "n".into(),
                cluster: "svc".into(),
                zone: String::new(),
            },
            stats: Arc::new(ZipkinStats::new("tracing.zipkin".into(), 1)),
        })
    }

    const CALLER: SpanContext = SpanContext {
        trace_high: 0,
        trace_low: 10,
        id: 11,
        parent: 12,
        sampled: true,
    };

    #[test]
    fn spans_are_roots_children_or_shared_as_envoy_makes_them() {
        let root = Span::start(&tracer(true), None, true, false, "h".into(), UNIX_EPOCH);
        assert_eq!(root.context.trace_low, root.context.id);
        assert_ne!(root.context.trace_high, 0);
        assert_eq!(root.context.parent, 0);
        let child = Span::start(
            &tracer(true),
            Some(CALLER),
            true,
            true,
            "h".into(),
            UNIX_EPOCH,
        );
        assert_eq!((child.context.trace_low, child.context.parent), (10, 11));
        assert!(!child.shared);
        let shared = Span::start(
            &tracer(true),
            Some(CALLER),
            true,
            false,
            "h".into(),
            UNIX_EPOCH,
        );
        assert_eq!(
            (shared.context.id, shared.context.parent, shared.shared),
            (11, 12, true)
        );
        let unshared = Span::start(
            &tracer(false),
            Some(CALLER),
            true,
            false,
            "h".into(),
            UNIX_EPOCH,
        );
        assert_eq!(unshared.context.parent, 11);
    }

    #[test]
    fn json_is_zipkin_v2() {
        let start = UNIX_EPOCH + std::time::Duration::from_micros(1_000_000);
        let span = Span::start(
            &tracer(false),
            Some(CALLER),
            true,
            true,
            "op \"x\"".into(),
            start,
        );
        let mut out = Vec::new();
        span.write_json(
            5,
            &[("a", b"1"), ("b", b"q\"")],
            Some([10, 0, 0, 1].into()),
            &mut out,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["traceId"], "000000000000000a");
        assert_eq!(v["parentId"], "000000000000000b");
        assert_eq!(v["kind"], "CLIENT");
        assert_eq!(v["name"], "op \"x\"");
        assert_eq!(v["timestamp"], 1_000_000);
        assert_eq!(v["duration"], 5);
        assert_eq!(v["annotations"][0]["value"], "cr");
        assert_eq!(v["annotations"][0]["timestamp"], 1_000_005);
        assert_eq!(v["localEndpoint"]["serviceName"], "svc");
        assert_eq!(v["localEndpoint"]["ipv4"], "10.0.0.1");
        assert_eq!(v["tags"]["b"], "q\"");
    }
}
