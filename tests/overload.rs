//! Tests: the overload manager, on Envoy 1.40 and shardproxy with the same bootstrap and the
//! same outcome: the global connection limit refuses the same connections; a fixed-heap
//! monitor whose maximum the heap already exceeds saturates its actions, so
//! `stop_accepting_requests` answers 503 `envoy overloaded`, `disable_http_keepalive` closes
//! connections, `reject_incoming_connections` closes them at accept and
//! `stop_accepting_connections` leaves them in the backlog, each counted in Envoy's stats; and
//! (shardproxy only, Envoy does not reload its bootstrap) the paused listener accepts again
//! once the action ends.
mod common;

use std::time::Duration;

use common::{http::*, tls::*, *};
use serde_json::{json, Value};

const HEAP: &str =
    "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig";
const CONNECTIONS: &str = "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig";
const FIXED_HEAP: &str = "envoy.resource_monitors.fixed_heap";

/// A bootstrap (admin on port 0) with one HTTP listener `h` on `port` answering 200 `ok`
/// itself.
fn direct_bootstrap(port: u16) -> Value {
    let routes = json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}},
    ]}]});
    bootstrap(
        0,
        vec![http_listener(
            "h",
            port,
            hcm("h", routes, vec![], json!({})),
        )],
        vec![],
    )
}

/// An overload manager with the fixed-heap monitor at `max_heap` bytes and `actions`, each
/// triggered at half of it.
fn heap_overload(max_heap: u64, actions: &[&str]) -> Value {
    let actions: Vec<Value> = actions
        .iter()
        .map(|a| {
            json!({"name": format!("envoy.overload_actions.{a}"),
                   "triggers": [{"name": FIXED_HEAP, "threshold": {"value": 0.5}}]})
        })
        .collect();
    json!({
        "refresh_interval": "0.1s",
        "resource_monitors": [{"name": FIXED_HEAP,
            "typed_config": {"@type": HEAP, "max_heap_size_bytes": max_heap}}],
        "actions": actions,
    })
}

/// Waits until `action`'s `active` gauge reads 1 (the first refresh has run).
fn wait_active(proxy: &HttpProxy, action: &str) {
    let prefix = format!("overload.envoy.overload_actions.{action}.");
    settled_stats(proxy, &prefix, &["active"], |s| s["active"] == 1);
}

/// One request on a new connection: status, body, and whether the response closes it.
fn get(port: u16) -> (u16, String, bool) {
    let mut conn = HttpConn::open(port);
    let r = conn
        .exchange("GET", &request("GET", "/", &[("host", "x")], b""))
        .expect("a response");
    let closes = r.head.header("connection") == Some("close");
    (
        r.head.status,
        String::from_utf8_lossy(&r.body).into(),
        closes,
    )
}

/// `connections` opened at once to a listener under a global limit of 3 whose accept loop takes
/// `per_event` in a row (unset: the default): three are served, the rest closed at accept. The
/// same on both proxies: how many were served and the listener's stats.
fn burst_at_the_global_limit(name: &str, connections: i64, per_event: Option<u32>) {
    // A fixed port: the overflow is counted in stats named after the listener's address.
    let port = free_port();
    let mut b = direct_bootstrap(port);
    if let Some(n) = per_event {
        b["static_resources"]["listeners"][0]["max_connections_to_accept_per_socket_event"] =
            json!(n);
    }
    b["overload_manager"] = json!({"resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {"@type": CONNECTIONS, "max_active_downstream_connections": 3},
    }]});
    on_both(name, &b, |proxy| {
        let mut conns: Vec<HttpConn> = (0..connections).map(|_| HttpConn::open(port)).collect();
        let served = conns
            .iter_mut()
            .filter_map(|c| {
                c.exchange("GET", &request("GET", "/", &[("host", "x")], b""))
                    .ok()
            })
            .count();
        let stats = settled_stats(
            proxy,
            &listener_stats(port),
            &["downstream_global_cx_overflow", "downstream_cx_active"],
            |s| s["downstream_global_cx_overflow"] == connections - 3,
        );
        assert_eq!(served, 3);
        (served, stats)
    });
}

#[test]
fn the_global_connection_limit_refuses_the_same_count_as_envoy() {
    burst_at_the_global_limit("global_limit", 5, None);
}

#[test]
fn one_accept_per_socket_event_still_takes_a_whole_burst() {
    // The accept loop gives way after each connection: the burst is still accepted in full,
    // only over several loop turns.
    burst_at_the_global_limit("one_accept_per_event", 8, Some(1));
}

#[test]
fn stop_accepting_requests_answers_503_and_disable_keepalive_closes() {
    let mut b = direct_bootstrap(0);
    b["overload_manager"] = heap_overload(1000, &["stop_accepting_requests"]);
    on_both("stop_accepting_requests", &b, |proxy| {
        wait_active(proxy, "stop_accepting_requests");
        let port = proxy.port("h");
        let answers = (get(port), get(port));
        let stats = settled_stats(
            proxy,
            "",
            &[
                "http.h.downstream_rq_overload_close",
                "http.h.downstream_rq_5xx",
                "overload.envoy.overload_actions.stop_accepting_requests.active",
                "overload.envoy.overload_actions.stop_accepting_requests.scale_percent",
            ],
            |s| s["http.h.downstream_rq_overload_close"] == 2,
        );
        let pressure = proxy.stats()["overload.envoy.resource_monitors.fixed_heap.pressure"];
        assert!(pressure > 100, "the heap is over 1000 bytes: {pressure}");
        assert_eq!(answers.0, (503, "envoy overloaded".into(), false));
        (answers, stats)
    });

    b["overload_manager"] = heap_overload(1000, &["disable_http_keepalive"]);
    on_both("disable_http_keepalive", &b, |proxy| {
        wait_active(proxy, "disable_http_keepalive");
        let mut conn = HttpConn::open(proxy.port("h"));
        let r = conn
            .exchange("GET", &request("GET", "/", &[("host", "x")], b""))
            .unwrap();
        let outcome = (
            r.head.status,
            r.head.header("connection").map(str::to_string),
        );
        // Envoy 1.40 leaves the connection for the client to close; shardproxy closes it
        // after the response, as after any `connection: close` response.
        if proxy.kind == Kind::Shardproxy {
            assert!(conn.closed_within(Duration::from_secs(5)), "closed");
        }
        let stats = settled_stats(
            proxy,
            "http.h.",
            &["downstream_cx_overload_disable_keepalive"],
            |s| s["downstream_cx_overload_disable_keepalive"] == 1,
        );
        assert_eq!(outcome, (200, Some("close".into())));
        (outcome, stats)
    });

    // A heap maximum far above the heap in use: nothing is shed.
    b["overload_manager"] = heap_overload(
        1 << 40,
        &["stop_accepting_requests", "disable_http_keepalive"],
    );
    on_both("overload_inactive", &b, |proxy| {
        let prefix = "overload.envoy.overload_actions.stop_accepting_requests.";
        settled_stats(proxy, prefix, &["active"], |s| s["active"] == 0);
        let answer = get(proxy.port("h"));
        assert_eq!(answer, (200, "ok".into(), false));
        answer
    });
}

#[test]
fn reject_and_stop_accepting_connections_keep_new_connections_out() {
    // A fixed port: the rejections are counted in stats named after the listener's address.
    let port = free_port();
    let mut b = direct_bootstrap(port);
    b["overload_manager"] = heap_overload(1000, &["reject_incoming_connections"]);
    on_both("reject_incoming_connections", &b, |proxy| {
        wait_active(proxy, "reject_incoming_connections");
        let mut conn = HttpConn::open(port);
        let _ = conn.send(&request("GET", "/", &[("host", "x")], b""));
        let closed = conn.closed_within(Duration::from_secs(5));
        let stats = settled_stats(
            proxy,
            &listener_stats(port),
            &["downstream_cx_overload_reject"],
            |s| s["downstream_cx_overload_reject"] == 1,
        );
        assert!(closed, "closed at accept");
        (closed, stats)
    });

    b["overload_manager"] = heap_overload(1000, &["stop_accepting_connections"]);
    on_both("stop_accepting_connections", &b, |proxy| {
        wait_active(proxy, "stop_accepting_connections");
        // The kernel completes the handshake (backlog); the proxy never takes the connection.
        let mut conn = HttpConn::open(port);
        conn.send(&request("GET", "/", &[("host", "x")], b""))
            .unwrap();
        let waiting = !conn.closed_within(Duration::from_secs(2));
        let accepted = proxy.stats()[&format!("{}downstream_cx_total", listener_stats(port))];
        assert_eq!((waiting, accepted), (true, 0));
        (waiting, accepted)
    });
}

#[test]
fn a_paused_listener_accepts_its_backlog_once_the_action_ends() {
    let mut b = direct_bootstrap(0);
    b["overload_manager"] = heap_overload(1000, &["stop_accepting_connections"]);
    let proxy = Proxy::start("overload_resume", &b);
    proxy.wait_stat(
        "overload.envoy.overload_actions.stop_accepting_connections.active",
        "the action to start",
        |v| v == 1,
    );
    let mut conn = HttpConn::open(proxy.port("h"));
    conn.send(&request("GET", "/", &[("host", "x")], b""))
        .unwrap();
    assert!(!conn.closed_within(Duration::from_secs(1)), "paused");
    // The same monitor with room to spare: the action ends and the queued request is served.
    b["overload_manager"] = heap_overload(1 << 40, &["stop_accepting_connections"]);
    proxy.rewrite(&to_yaml(&b));
    conn.stream().set_read_timeout(Some(SOON)).unwrap();
    let r = conn.read_response("GET").expect("served after the pause");
    assert_eq!(r.head.status, 200);
    assert!(proxy.stderr().contains("became inactive"), "logged");
}
