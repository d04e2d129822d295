//! Tests: gRPC through the proxy end to end — unary, the three streaming kinds, deadlines,
//! cancellation, 4 MiB messages, 1,000 concurrent streams on one connection, statuses and
//! metadata both ways, and a gRPC-shaped UNAVAILABLE when no upstream answers; the client and
//! the HTTP/2 upstream are tests/peers/grpc_peer.py (grpcio).
mod common;

use std::{collections::BTreeMap, time::Instant};

use common::{
    grpc::{grpc_call, grpc_server, have_grpcio},
    http::*,
    http_e2e::{UPSTREAM_HTTP_OPTIONS, UPSTREAM_HTTP_OPTIONS_KEY},
    *,
};
use serde_json::{json, Value};

/// The proxies every gRPC test runs against: Envoy (the reference), then shardproxy.
const KINDS: &[Kind] = &[Kind::Envoy, Kind::Shardproxy];

/// The `:authority` the client sends (checked on the upstream side).
const AUTHORITY: &str = "grpc.echo.test";

/// The kinds of [`KINDS`] whose binary is there (a missing Envoy skips, or fails under CI).
fn kinds(test: &str) -> Vec<Kind> {
    KINDS
        .iter()
        .copied()
        .filter(|&k| match k {
            Kind::Envoy if envoy_bin().is_none() => {
                skip(&format!("{test} (envoy)"), NO_ENVOY, Missing::Peer);
                false
            }
            _ => true,
        })
        .collect()
}

/// Cluster options: the upstream speaks HTTP/2 (gRPC needs it). `max_requests` is raised
/// from Envoy's 1024: shardproxy gives each shard its share of a threshold (docs/
/// http-differences.md), and the 1,000 concurrent calls of one connection all land on one.
fn h2_upstream() -> Value {
    json!({
        "typed_extension_protocol_options": {UPSTREAM_HTTP_OPTIONS_KEY: {
            "@type": UPSTREAM_HTTP_OPTIONS,
            "explicit_http_config": {"http2_protocol_options": {}},
        }},
        "circuit_breakers": {"thresholds": [{"max_requests": 4096}]},
    })
}

/// A listener named `name` on `port` whose connection manager detects the codec (h2 prior
/// knowledge here) and routes everything to the cluster `name`.
fn grpc_listener(name: &str, port: u16) -> Value {
    http_listener(
        name,
        port,
        hcm(
            name,
            catch_all_routes(name, json!({})),
            vec![],
            json!({"codec_type": "AUTO"}),
        ),
    )
}

/// Runs `grpc_peer.py call` with `scenarios` against 127.0.0.1:`port`.
fn call(port: u16, scenarios: &str) -> BTreeMap<String, Value> {
    grpc_call(port, AUTHORITY, scenarios)
}

/// The result of scenario `name` (which must have run without an error) through proxy `k`.
fn scenario<'a>(runs: &'a BTreeMap<String, Value>, k: &str, name: &str) -> &'a Value {
    let v = runs
        .get(name)
        .unwrap_or_else(|| panic!("{k}: no result for {name}"));
    assert!(v.get("error").is_none(), "{k}: {name} failed: {v}");
    v
}

fn int(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .or_else(|| v[key].as_f64().map(|f| f as i64))
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// Every client scenario through one proxy, on one client connection, to one gRPC upstream.
#[test]
fn grpc_scenarios_through_the_proxy() {
    const TEST: &str = "grpc_scenarios_through_the_proxy";
    if !have_grpcio(TEST) {
        return;
    }
    for kind in kinds(TEST) {
        let started = Instant::now();
        let server = grpc_server();
        let boot = bootstrap(
            0,
            vec![grpc_listener("grpc", 0)],
            vec![cluster("grpc", &[(server.port, 1)], h2_upstream())],
        );
        let proxy = HttpProxy::start(kind, "grpc", &boot);
        let port = proxy.port("grpc");
        let runs = call(port, "all");
        let k = kind.name();
        let at = |name: &str| scenario(&runs, k, name);

        let v = at("unary");
        assert_eq!(v["code"], "OK", "{k}: {v}");
        assert_eq!(v["equal"], true, "{k}: echo differs from the request: {v}");
        assert_eq!(v["response_bytes"], v["request_bytes"], "{k}: {v}");
        assert_eq!(v["sized_equal"], true, "{k}: generated answer differs: {v}");
        assert_eq!(v["seen"]["authority"], AUTHORITY, "{k}: :authority: {v}");
        let left = int(&v["seen"], "time_remaining_ms");
        assert!(
            (1..=10_500).contains(&left),
            "{k}: the 10 s deadline (grpc-timeout) did not reach the server: {v}"
        );

        let v = at("server_stream");
        assert_eq!(v["code"], "OK", "{k}: {v}");
        assert_eq!(v["count"], v["expected"], "{k}: {v}");
        assert_eq!(v["count"], 100, "{k}: {v}");
        assert_eq!(v["in_order"], true, "{k}: {v}");

        let v = at("client_stream");
        assert_eq!(v["code"], "OK", "{k}: {v}");
        assert_eq!(v["count"], v["sent"], "{k}: {v}");
        assert_eq!(v["sum"], v["sent_sum"], "{k}: {v}");
        assert_eq!(v["bytes"], v["sent_bytes"], "{k}: {v}");
        assert_eq!(v["sha256_equal"], true, "{k}: {v}");

        let v = at("bidi");
        assert_eq!(v["code"], "OK", "{k}: {v}");
        assert_eq!((int(v, "echoed"), int(v, "sent")), (50, 50), "{k}: {v}");
        assert_eq!(v["equal"], true, "{k}: {v}");
        assert_eq!(v["extra_after_close"], 0, "{k}: {v}");

        // The server sleeps 3 s past a 500 ms deadline: the client gives up on time, the
        // deadline reached the server (grpc-timeout), and the proxy's reset ended the server's
        // call early (it never finished its sleep).
        let v = at("deadline");
        assert_eq!(v["code"], "DEADLINE_EXCEEDED", "{k}: {v}");
        let elapsed = int(v, "elapsed_ms");
        assert!(
            (450..2000).contains(&elapsed),
            "{k}: DEADLINE_EXCEEDED after {elapsed} ms for a 500 ms deadline: {v}"
        );
        let left = int(v, "server_time_remaining_ms");
        assert!((1..=600).contains(&left), "{k}: grpc-timeout: {v}");
        assert_eq!(v["server_saw_end"], true, "{k}: {v}");
        assert_eq!(v["server_finished"], false, "{k}: {v}");
        assert!(int(v, "server_run_ms") < 2500, "{k}: {v}");

        let v = at("cancel");
        assert_eq!(v["code"], "CANCELLED", "{k}: {v}");
        assert_eq!(v["received_before_cancel"], 3, "{k}: {v}");
        assert_eq!(
            v["server_observed_cancel"], true,
            "{k}: the client's cancel did not reach the server: {v}"
        );
        assert_eq!(v["server_finished"], false, "{k}: {v}");

        let v = at("big");
        assert_eq!(v["code"], "OK", "{k}: {v}");
        assert_eq!(
            (int(v, "request_bytes"), int(v, "response_bytes")),
            (4 << 20, 4 << 20),
            "{k}: {v}"
        );
        assert_eq!(v["equal"], true, "{k}: 4 MiB echo differs: {v}");
        assert_eq!(int(v, "download_bytes"), 4 << 20, "{k}: {v}");
        assert_eq!(v["download_equal"], true, "{k}: {v}");

        // The server answers none of the 1,000 calls before all are in flight at once.
        let v = at("concurrent");
        assert_eq!(v["ok"], 1000, "{k}: {v}");
        assert_eq!(
            v["peak_in_flight"], 1000,
            "{k}: the 1,000 calls were not all in flight at the upstream together: {v}"
        );

        let v = at("status");
        for case in v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&v["midstream"]])
        {
            assert_eq!(case["code"], case["want_code"], "{k}: status: {case}");
            assert_eq!(
                case["message"], case["want_message"],
                "{k}: message: {case}"
            );
        }
        assert_eq!(v["midstream"]["messages"], 2, "{k}: {v}");
        assert_eq!(v["all_match"], true, "{k}: {v}");

        let v = at("metadata");
        assert_eq!(v["code"], "OK", "{k}: {v}");
        let got = &v["server_received"];
        assert_eq!(got["x-custom"], json!(["hello metadata"]), "{k}: {v}");
        assert_eq!(got["x-multi"], json!(["one", "two"]), "{k}: {v}");
        assert_eq!(got["x-blob-bin"], json!([v["blob_sent"]]), "{k}: {v}");
        assert_eq!(v["server_authority"], AUTHORITY, "{k}: {v}");
        let left = int(v, "server_time_remaining_ms");
        assert!((25_000..=31_000).contains(&left), "{k}: grpc-timeout: {v}");
        assert_eq!(
            v["initial"]["x-initial"],
            json!(["from server"]),
            "{k}: {v}"
        );
        assert_eq!(
            v["initial"]["x-echo-x-custom"],
            json!(["hello metadata"]),
            "{k}: {v}"
        );
        assert_eq!(v["trailing"]["x-trailer"], "bye", "{k}: {v}");
        assert_eq!(v["trailing"]["x-count"], "3", "{k}: {v}");

        // Everything above ran on the client's one channel: one downstream connection.
        let stats = proxy.stats();
        assert_eq!(
            stats.get("http.grpc.downstream_cx_total"),
            Some(&1),
            "{k}: the client's one channel should be one connection"
        );
        assert!(
            stats
                .get("http.grpc.downstream_rq_total")
                .is_some_and(|&n| n >= 1000),
            "{k}: downstream_rq_total {:?}",
            stats.get("http.grpc.downstream_rq_total")
        );
        eprintln!("{k}: every gRPC scenario passed in {:?}", started.elapsed());
    }
}

/// A cluster whose only endpoint refuses connections: the proxy answers the gRPC call itself,
/// gRPC-shaped (HTTP 200, grpc-status 14), so the client sees UNAVAILABLE with a message.
#[test]
fn grpc_without_a_healthy_upstream_is_unavailable() {
    const TEST: &str = "grpc_without_a_healthy_upstream_is_unavailable";
    if !have_grpcio(TEST) {
        return;
    }
    for kind in kinds(TEST) {
        let boot = bootstrap(
            0,
            vec![grpc_listener("dead", 0)],
            vec![cluster("dead", &[(refused_port(), 1)], h2_upstream())],
        );
        let proxy = HttpProxy::start(kind, "grpc-dead", &boot);
        let port = proxy.port("dead");
        let k = kind.name();
        let v = &call(port, "ping")["ping"];
        assert_eq!(v["code"], "UNAVAILABLE", "{k}: {v}");
        assert!(
            !v["message"].as_str().unwrap_or_default().is_empty(),
            "{k}: UNAVAILABLE without a message: {v}"
        );
        assert!(int(v, "elapsed_ms") < 5000, "{k}: {v}");
        // The answer came from the proxy (it took the request and failed to connect), not from
        // a client that never reached it.
        let stats = proxy.stats();
        assert!(
            stats
                .get("http.dead.downstream_rq_total")
                .is_some_and(|&n| n >= 1),
            "{k}: the proxy saw no request"
        );
        assert!(
            stats
                .get("cluster.dead.upstream_cx_connect_fail")
                .is_some_and(|&n| n >= 1),
            "{k}: no failed upstream connect counted"
        );
    }
}

#[test]
fn grpc_timeout_header_with_an_offset() {
    const TEST: &str = "grpc_timeout_header_with_an_offset";
    if !have_grpcio(TEST) {
        return;
    }
    for kind in kinds(TEST) {
        let server = grpc_server();
        // The call's own grpc-timeout (2 s) less a 1.5 s offset, uncapped: the proxy gives up
        // after 0.5 s, though the route's timeout is 10 s.
        let route = json!({
            "timeout": "10s",
            "max_grpc_timeout": "0s",
            "grpc_timeout_offset": "1.5s",
        });
        let listener = http_listener(
            "grpc",
            0,
            hcm(
                "grpc",
                catch_all_routes("grpc", route),
                vec![],
                json!({"codec_type": "AUTO"}),
            ),
        );
        let boot = bootstrap(
            0,
            vec![listener],
            vec![cluster("grpc", &[(server.port, 1)], h2_upstream())],
        );
        let proxy = HttpProxy::start(kind, "grpc-timeouts", &boot);
        let port = proxy.port("grpc");
        let k = kind.name();
        let runs = call(port, "slow");
        let slow = scenario(&runs, k, "slow");
        // DEADLINE_EXCEEDED (trailers-only) when the upstream has not answered yet; when its
        // response head (the server's initial metadata) is already out, the proxy can only
        // reset the stream (RST_STREAM INTERNAL_ERROR, which grpcio reports as INTERNAL).
        let code = slow["code"].as_str().unwrap_or_default();
        assert!(
            ["DEADLINE_EXCEEDED", "INTERNAL"].contains(&code),
            "{k}: {slow}"
        );
        let elapsed = int(slow, "elapsed_ms");
        assert!(
            (400..1500).contains(&elapsed),
            "{k}: the proxy's 0.5 s limit, not the client's 2 s deadline, ended the call: {slow}"
        );
        // Envoy does not always count it (not when it resets a started response).
        if kind == Kind::Shardproxy {
            let timeouts = proxy
                .stats()
                .get("cluster.grpc.upstream_rq_timeout")
                .copied();
            assert_eq!(timeouts, Some(1), "{k}: the proxy's timeout");
        }
    }
}

/// `envoy.filters.http.grpc_stats` as Istio configures it (`stats_for_all_methods: false`:
/// one set of `cluster.<name>.grpc.*` counters) and per method; every counter the calls made
/// (outcomes by status, message counts both ways) is compared between the proxies.
#[test]
fn grpc_stats_counts_calls_statuses_and_messages() {
    const TEST: &str = "grpc_stats_counts_calls_statuses_and_messages";
    if !have_grpcio(TEST) {
        return;
    }
    let grpc_stats = |per_method: bool| {
        json!({"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": true,
            "stats_for_all_methods": per_method,
        }})
    };
    let listener = |name: &str, per_method: bool| {
        http_listener(
            name,
            0,
            hcm(
                name,
                catch_all_routes(name, json!({})),
                vec![grpc_stats(per_method)],
                json!({"codec_type": "AUTO"}),
            ),
        )
    };
    let mut outcomes = Vec::new();
    for kind in kinds(TEST) {
        let server = grpc_server();
        let boot = bootstrap(
            0,
            vec![listener("shared", false), listener("methods", true)],
            vec![
                cluster("shared", &[(server.port, 1)], h2_upstream()),
                cluster("methods", &[(server.port, 1)], h2_upstream()),
            ],
        );
        let proxy = HttpProxy::start(kind, "grpc-stats", &boot);
        let k = kind.name();
        for port in [proxy.port("shared"), proxy.port("methods")] {
            let runs = call(port, "unary,server_stream,client_stream,bidi,status");
            for name in ["unary", "server_stream", "client_stream", "bidi", "status"] {
                scenario(&runs, k, name);
            }
        }
        let stats = proxy.stats();
        let grpc: BTreeMap<String, i64> = stats
            .into_iter()
            .filter(|(name, _)| name.contains(".grpc."))
            .collect();
        let at = |name: &str| grpc.get(name).copied().unwrap_or(0);
        assert!(at("cluster.shared.grpc.total") > 5, "{k}: {grpc:?}");
        assert_eq!(
            at("cluster.shared.grpc.total"),
            at("cluster.shared.grpc.success") + at("cluster.shared.grpc.failure"),
            "{k}: {grpc:?}"
        );
        assert_eq!(
            at("cluster.shared.grpc.0"),
            at("cluster.shared.grpc.success"),
            "{k}: {grpc:?}"
        );
        assert!(
            at("cluster.shared.grpc.10") >= 1,
            "{k}: ABORTED midstream: {grpc:?}"
        );
        // server_stream answers 100 messages to one; bidi echoes 50.
        assert!(
            at("cluster.shared.grpc.response_message_count") >= 150,
            "{k}: {grpc:?}"
        );
        assert!(
            at("cluster.methods.grpc.shardproxy.test.Echo.ServerStream.total") >= 1,
            "{k}: {grpc:?}"
        );
        assert!(
            !grpc
                .keys()
                .any(|n| n.starts_with("cluster.shared.grpc.shardproxy")),
            "{k}: per-method names with stats_for_all_methods false: {grpc:?}"
        );
        eprintln!("{k}: {grpc:?}");
        outcomes.push((k, grpc));
        drop(proxy);
    }
    if let [(_, envoy), (_, ours)] = outcomes.as_slice() {
        assert_eq!(ours, envoy, "shardproxy (left) and Envoy (right) differ");
    }
}

/// `envoy.filters.http.grpc_web`: HTTP/1.1 gRPC-Web clients (binary and base64 text) reach
/// the HTTP/2 gRPC upstream; answers, trailers in the body, statuses and a bad text body are
/// the same on both proxies.
#[test]
fn grpc_web_clients_reach_a_grpc_upstream() {
    const TEST: &str = "grpc_web_clients_reach_a_grpc_upstream";
    if !have_grpcio(TEST) {
        return;
    }
    let mut outcomes = Vec::new();
    for kind in kinds(TEST) {
        let server = grpc_server();
        let web = json!({"name": "envoy.filters.http.grpc_web", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
        }});
        let listener = http_listener(
            "web",
            0,
            hcm(
                "web",
                catch_all_routes("web", json!({})),
                vec![web],
                json!({"codec_type": "AUTO"}),
            ),
        );
        let boot = bootstrap(
            0,
            vec![listener],
            vec![cluster("web", &[(server.port, 1)], h2_upstream())],
        );
        let proxy = HttpProxy::start(kind, "grpc-web", &boot);
        let port = proxy.port("web");
        let k = kind.name();
        let run = run_peer(
            "grpc_peer.py",
            &["web".into(), "--port".into(), port.to_string()],
            std::time::Duration::from_secs(30),
        );
        assert!(run.status.success(), "{k}: {}{}", run.stdout, run.stderr);
        let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
        // (case, field path, expected): the answers as a gRPC-Web client reads them.
        let expected = [
            ("unary_binary", "/status", json!(200)),
            (
                "unary_binary",
                "/content_type",
                json!("application/grpc-web+proto"),
            ),
            ("unary_binary", "/messages", json!(["hello-web"])),
            ("unary_binary", "/trailers/grpc-status", json!("0")),
            (
                "unary_text",
                "/content_type",
                json!("application/grpc-web-text+proto"),
            ),
            ("unary_text", "/messages", json!(["hello-text"])),
            ("status", "/trailers/grpc-status", json!("5")),
            ("status", "/trailers/grpc-message", json!("nope")),
            // Not base64: Envoy's 400 "Bad gRPC-web request", with gRPC's INTERNAL.
            ("bad_text", "/status", json!(400)),
            ("bad_text", "/grpc_status_header", json!("13")),
        ];
        for (case, field, want) in expected {
            assert_eq!(
                v[case].pointer(field),
                Some(&want),
                "{k} {case}{field}: {v}"
            );
        }
        let messages = |case: &str| v[case]["messages"].as_array().map_or(0, Vec::len);
        assert_eq!(messages("server_stream"), 3, "{k}: {v}");
        assert_eq!(messages("server_stream_text"), 2, "{k}: {v}");
        eprintln!("{k}: {v}");
        outcomes.push(v);
        drop(proxy);
    }
    if let [envoy, ours] = outcomes.as_slice() {
        assert_eq!(ours, envoy, "shardproxy (left) and Envoy (right) differ");
    }
}
