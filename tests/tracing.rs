//! Tests: tracing with the Zipkin tracer end to end — the B3 headers that reach a real
//! upstream (a new trace, a continued one, one not sampled), the `x-request-id` trace reason,
//! the decorator's operation, and the spans a real collector peer receives (kind, name,
//! tags, ids linked to the propagated headers), compared with Envoy 1.40 on one bootstrap.
mod common;

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use common::{
    http::{
        echoed_header, have_python, http_listener, proxies, request, EchoUpstreams, HttpConn,
        HttpProxy, Kind, PeerServer,
    },
    *,
};
use serde_json::{json, Value};

const ZIPKIN: &str = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// A traced connection manager: every request sampled, two custom tags, a decorated route.
fn traced_hcm(prefix: &str) -> Value {
    json!({
        "@type": HCM,
        "stat_prefix": prefix,
        "tracing": {
            "random_sampling": {"value": 100},
            "custom_tags": [
                {"tag": "istio.mesh_id", "literal": {"value": "cluster.local"}},
                {"tag": "from-header", "request_header": {"name": "x-tag", "default_value": "none"}},
            ],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        "route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/dec"}, "route": {"cluster": "up"}, "decorator": {"operation": "my-op"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "up"}},
        ]}]},
    })
}

/// What one run saw: per request, the trace headers the upstream got; and the spans.
struct Run {
    upstream: Vec<BTreeMap<String, String>>,
    spans: Vec<Value>,
    stats: BTreeMap<String, i64>,
}

const TRACE_HEADERS: &[&str] = &[
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "b3",
    "x-envoy-decorator-operation",
    "x-request-id",
];

/// A request: the listener's port, the path, extra headers.
type Case<'a> = (u16, &'a str, &'a [(&'a str, &'a str)]);

fn run(kind: Kind, collector: &PeerServer, upstreams: &EchoUpstreams) -> Run {
    let mut out = http_listener("out", 0, traced_hcm("out"));
    out["traffic_direction"] = json!("OUTBOUND");
    let mut inbound = http_listener("in", 0, traced_hcm("in"));
    inbound["traffic_direction"] = json!("INBOUND");
    let mut config = bootstrap(
        0,
        vec![out, inbound],
        vec![
            cluster("up", &[(upstreams.port("up"), 1)], json!(null)),
            cluster("zipkin", &[(collector.port, 1)], json!(null)),
        ],
    );
    merge(
        &mut config,
        json!({
            "node": {"id": "node-1", "cluster": "svc-a", "locality": {"zone": "zone-z"}},
            "tracing": {"http": {"name": "envoy.tracers.zipkin", "typed_config": {
                "@type": ZIPKIN,
                "collector_cluster": "zipkin",
                "collector_endpoint": "/api/v2/spans",
                "collector_endpoint_version": "HTTP_JSON",
                "trace_id_128bit": true,
                "shared_span_context": false,
            }}},
        }),
    );
    let proxy = HttpProxy::start(kind, "tracing", &config);
    let (out_port, in_port) = (proxy.port("out"), proxy.port("in"));
    let continued = [
        ("x-b3-traceid", "0000000000000001000000000000000a"),
        ("x-b3-spanid", "000000000000000b"),
        ("x-b3-sampled", "1"),
    ];
    let unsampled = [
        ("x-b3-traceid", "000000000000000a"),
        ("x-b3-spanid", "000000000000000b"),
        ("x-b3-parentspanid", "000000000000000c"),
        ("x-b3-sampled", "0"),
    ];
    let single = [(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    )];
    let cases: [Case; 5] = [
        (out_port, "/new?q=1", &[("x-tag", "T")]),
        (in_port, "/continued", &continued),
        (out_port, "/dec/unsampled", &unsampled),
        (out_port, "/dec/single", &single),
        (
            in_port,
            "/fail",
            &[
                ("x-echo-status", "503"),
                ("x-envoy-decorator-operation", "op-in"),
            ],
        ),
    ];
    let mut upstream = Vec::new();
    for (port, path, headers) in cases {
        let mut all = vec![("host", "svc.local"), ("user-agent", "tracing-test")];
        all.extend_from_slice(headers);
        let mut conn = HttpConn::open(port);
        let response = conn
            .exchange("GET", &request("GET", path, &all, b""))
            .unwrap();
        let echo = response.echo();
        let seen = TRACE_HEADERS
            .iter()
            .filter_map(|h| echoed_header(&echo, h).map(|v| (h.to_string(), v.to_string())))
            .collect();
        upstream.push(seen);
    }
    // Four sampled spans: the timer flush (5 s) sends them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans: Vec<Value> =
            serde_json::from_str(&http_get(addr(collector.port), "/spans").unwrap().body).unwrap();
        let ours: Vec<Value> = spans
            .into_iter()
            .filter(|s| s["tags"]["guid:x-request-id"].is_string())
            .collect();
        if ours.len() >= 4 || Instant::now() > deadline {
            break ours;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let stats = proxy
        .stats()
        .into_iter()
        .filter(|(k, _)| k.starts_with("tracing.zipkin."))
        .collect();
    Run {
        upstream,
        spans,
        stats,
    }
}

/// A span as both proxies must make it: ids replaced by where they come from.
fn shape(span: &Value, run: &Run) -> Value {
    let find = |id: &Value| -> String {
        let id = id.as_str().unwrap_or("");
        for (i, seen) in run.upstream.iter().enumerate() {
            for (name, value) in seen {
                if value == id || (name == "b3" && value.split('-').any(|part| part == id)) {
                    return format!("req{i}:{name}");
                }
            }
        }
        if id.is_empty() {
            "-".into()
        } else {
            format!("literal:{id}")
        }
    };
    let mut tags = span["tags"].as_object().unwrap().clone();
    for volatile in ["guid:x-request-id", "request_size", "response_size"] {
        assert!(tags.remove(volatile).is_some(), "{volatile} in {span}");
    }
    json!({
        "kind": span["kind"],
        "name": span["name"],
        "traceId": find(&span["traceId"]),
        "id": find(&span["id"]),
        "parentId": find(&span["parentId"]),
        "shared": span["shared"],
        "serviceName": span["localEndpoint"]["serviceName"],
        "annotations": span["annotations"].as_array().unwrap().iter().map(|a| a["value"].clone()).collect::<Vec<_>>(),
        "tags": tags,
    })
}

/// The upstream's trace headers with ids replaced by their relation to the request's own.
fn header_shape(seen: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    seen.iter()
        .map(|(name, value)| {
            let v = match name.as_str() {
                "x-request-id" => format!("reason {}", &value[14..15]),
                "x-b3-traceid" | "x-b3-spanid" | "x-b3-parentspanid" => match value.as_str() {
                    "0000000000000001000000000000000a"
                    | "000000000000000a"
                    | "000000000000000b"
                    | "000000000000000c" => value.clone(),
                    v if name == "x-b3-spanid" && seen["x-b3-traceid"].ends_with(v) => {
                        "low half of the trace id".into()
                    }
                    v => format!("new, {} digits", v.len()),
                },
                "b3" => {
                    let parts: Vec<&str> = value.split('-').collect();
                    format!(
                        "{} new {} {}",
                        parts[0],
                        parts[2],
                        parts.get(3).unwrap_or(&"-")
                    )
                }
                _ => value.clone(),
            };
            (name.clone(), v)
        })
        .collect()
}

#[test]
fn zipkin_spans_and_b3_headers_same_as_envoy() {
    let test = "zipkin_spans_and_b3_headers_same_as_envoy";
    if !have_python(test, "json") {
        return;
    }
    let mut outcomes = Vec::new();
    for kind in proxies() {
        let collector = PeerServer::start("zipkin_collector.py", &[]);
        let upstreams = EchoUpstreams::start(&["up"], None);
        let run = run(kind, &collector, &upstreams);
        let headers: Vec<_> = run.upstream.iter().map(header_shape).collect();
        let mut spans: Vec<Value> = run.spans.iter().map(|s| shape(s, &run)).collect();
        spans.sort_by_key(|s| s["tags"]["http.url"].as_str().unwrap_or("").to_string());
        let stats = run.stats.clone();
        // What both must do, whatever the reference says: a new sampled trace is marked in
        // the request id, and the unsampled one is passed on unsampled.
        assert_eq!(headers[0]["x-request-id"], "reason 9", "{headers:?}");
        assert_eq!(headers[2]["x-b3-sampled"], "0", "{headers:?}");
        outcomes.push((kind, headers, spans, stats));
    }
    for (kind, headers, spans, stats) in &outcomes {
        eprintln!(
            "{}: headers {headers:#?}\nspans {}\nstats {stats:?}",
            kind.name(),
            serde_json::to_string_pretty(spans).unwrap(),
        );
        assert_eq!(spans.len(), 4, "{}: four sampled spans", kind.name());
        assert_eq!(stats["tracing.zipkin.spans_sent"], 4, "{}", kind.name());
        assert!(stats["tracing.zipkin.reports_sent"] >= 1, "{}", kind.name());
    }
    if let [(_, envoy_headers, envoy_spans, _), (_, ours_headers, ours_spans, _)] = &outcomes[..] {
        assert_eq!(
            ours_headers, envoy_headers,
            "upstream trace headers differ from Envoy's"
        );
        assert_eq!(ours_spans, envoy_spans, "spans differ from Envoy's");
    }
}
