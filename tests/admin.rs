//! Tests: the admin interface — Envoy's paths, status codes and output shapes; counters that
//! move with traffic; mutating endpoints (healthcheck, drain_listeners, quitquitquit).
mod common;

use std::{
    io::{Read, Write},
    net::Shutdown,
    time::Duration,
};

use common::*;
use serde_json::{json, Value};

struct Setup {
    proxy: Proxy,
    l: u16,
    echo: Upstream,
}

/// Listener "front" (stat_prefix "front") → cluster "echo"; cluster "unused" has no traffic.
fn setup(tag: &str) -> Setup {
    let echo = Upstream::echo();
    let spare = Upstream::echo();
    // A fixed port: the test reads the listener's stats, named after its configured address.
    let l = free_port();
    let b = bootstrap(
        0,
        vec![listener(
            "front",
            l,
            tcp_proxy("front", "echo", json!(null)),
        )],
        vec![
            cluster("echo", &[(echo.port, 1)], json!(null)),
            cluster("unused", &[(spare.port, 1)], json!(null)),
        ],
    );
    let proxy = Proxy::start(tag, &b);
    Setup { proxy, l, echo }
}

fn echo_once(port: u16, payload: &[u8]) {
    let mut s = connect(port);
    s.write_all(payload).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, payload);
}

fn content_type(r: &HttpResponse) -> String {
    r.header("content-type").unwrap_or("").to_ascii_lowercase()
}

#[test]
fn ready_server_info_help_and_unknown_path() {
    let s = setup("admin_basic");
    let p = &s.proxy;
    let r = p.get("/ready");
    assert_eq!((r.status, r.body.trim()), (200, "LIVE"));

    let r = p.get("/server_info");
    assert_eq!(r.status, 200);
    assert!(
        content_type(&r).contains("json"),
        "content-type {:?}",
        r.header("content-type")
    );
    let info = r.json();
    assert_eq!(info["state"], "LIVE", "{info:#}");
    assert!(
        info["version"].as_str().is_some_and(|v| !v.is_empty()),
        "version: {info:#}"
    );
    assert!(
        info.get("uptime_current_epoch").is_some(),
        "uptime_current_epoch: {info:#}"
    );
    assert!(
        info["command_line_options"].is_object(),
        "command_line_options: {info:#}"
    );
    assert_eq!(
        info["command_line_options"]["concurrency"],
        json!(2),
        "{info:#}"
    );

    let r = p.get("/help");
    assert_eq!(r.status, 200);
    for path in [
        "/stats",
        "/config_dump",
        "/clusters",
        "/listeners",
        "/quitquitquit",
        "/ready",
    ] {
        assert!(r.body.contains(path), "/help lacks {path}: {}", r.body);
    }
    assert_eq!(p.get("/no/such/path").status, 404);
    // Mutating endpoints refuse GET and change nothing.
    assert_eq!(p.get("/quitquitquit").status, 405);
    assert_eq!(p.get("/healthcheck/fail").status, 405);
    assert_eq!(p.get("/ready").status, 200);
}

#[test]
fn stats_text_json_filter_usedonly_and_counters_move() {
    let s = setup("admin_stats");
    let p = &s.proxy;
    let r = p.get("/stats");
    assert_eq!(r.status, 200);
    assert!(
        content_type(&r).starts_with("text/plain"),
        "content-type {:?}",
        r.header("content-type")
    );
    // Every line is `name: value`; counters and gauges are integers.
    let mut ints = 0;
    for line in r.body.lines().filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("not `name: value`: {line:?}"));
        assert!(
            !name.is_empty() && !name.contains(' '),
            "bad stat name in {line:?}"
        );
        if value.trim().parse::<i64>().is_ok() {
            ints += 1;
        } else {
            assert!(
                value.contains("P0(") || value.contains("No recorded values"),
                "non-integer, non-histogram stat line {line:?}"
            );
        }
    }
    let before = parse_stats(&r.body);
    assert!(ints >= 10, "only {ints} integer stats");
    for name in [
        "cluster.echo.upstream_cx_total",
        "cluster.echo.upstream_cx_active",
        "cluster.echo.upstream_cx_connect_fail",
        "cluster.echo.upstream_cx_connect_timeout",
        "cluster.echo.upstream_cx_none_healthy",
        "tcp.front.downstream_cx_total",
        "tcp.front.downstream_cx_rx_bytes_total",
        "tcp.front.downstream_cx_tx_bytes_total",
        "tcp.front.idle_timeout",
        "tcp.front.downstream_cx_no_route",
        "server.state",
        "listener_manager.workers_started",
    ] {
        assert!(before.contains_key(name), "/stats lacks {name}");
    }
    let listener_total = format!("listener.127.0.0.1_{}.downstream_cx_total", s.l);
    assert!(
        before.contains_key(&listener_total),
        "/stats lacks {listener_total}"
    );
    assert_eq!(before["server.state"], 0, "server.state LIVE is 0");
    assert_eq!(before["listener_manager.workers_started"], 1);
    assert_eq!(before["cluster.echo.upstream_cx_total"], 0);

    // Traffic moves the counters.
    for _ in 0..3 {
        echo_once(s.l, &[7u8; 1000]);
    }
    assert_eq!(s.echo.accepted(), 3);
    p.wait_stat("cluster.echo.upstream_cx_total", "3", |v| v == 3);
    p.wait_stat("tcp.front.downstream_cx_total", "3", |v| v == 3);
    p.wait_stat(&listener_total, "3", |v| v == 3);
    p.wait_stat("tcp.front.downstream_cx_rx_bytes_total", "3000", |v| {
        v == 3000
    });
    p.wait_stat("tcp.front.downstream_cx_tx_bytes_total", "3000", |v| {
        v == 3000
    });
    p.wait_stat("cluster.echo.upstream_cx_active", "0", |v| v == 0);

    // ?filter=<regex>
    let r = p.get("/stats?filter=%5Ecluster%5C.echo%5C.");
    assert_eq!(r.status, 200);
    let filtered = parse_stats(&r.body);
    assert!(!filtered.is_empty(), "filter matched nothing: {}", r.body);
    assert!(
        filtered.keys().all(|k| k.starts_with("cluster.echo.")),
        "filter leaked: {:?}",
        filtered.keys()
    );
    assert_eq!(filtered["cluster.echo.upstream_cx_total"], 3);
    let r = p.get("/stats?filter=upstream_cx_total");
    assert!(parse_stats(&r.body)
        .keys()
        .all(|k| k.contains("upstream_cx_total")));
    assert!(parse_stats(&r.body).contains_key("cluster.unused.upstream_cx_total"));

    // A bad regex is refused, not ignored.
    let r = p.get("/stats?filter=%28unclosed");
    assert_eq!(r.status, 400, "bad ?filter regex: {} {}", r.status, r.body);

    // ?usedonly: the untouched cluster's counters are gone, the used ones stay.
    let used = parse_stats(&p.get("/stats?usedonly").body);
    assert!(
        used.contains_key("cluster.echo.upstream_cx_total"),
        "usedonly dropped a used stat"
    );
    assert!(
        !used.contains_key("cluster.unused.upstream_cx_total"),
        "usedonly kept an unused stat"
    );

    // ?format=json: {"stats": [{"name", "value"}...]}
    let r = p.get("/stats?format=json");
    assert_eq!(r.status, 200);
    let v = r.json();
    let arr = v["stats"]
        .as_array()
        .unwrap_or_else(|| panic!("no stats array: {v:#}"));
    let found = arr
        .iter()
        .find(|e| e["name"] == "cluster.echo.upstream_cx_total")
        .unwrap_or_else(|| panic!("cluster.echo.upstream_cx_total not in JSON stats"));
    assert_eq!(found["value"], json!(3));
}

#[test]
fn listener_stat_prefix_names_listener_stats() {
    let echo = Upstream::echo();
    // A fixed port: the test reads the listener's stats, named after its configured address.
    let l = free_port();
    let mut lst = listener("named", l, tcp_proxy("named_tcp", "echo", json!(null)));
    lst["stat_prefix"] = json!("my_front");
    let b = bootstrap(
        0,
        vec![lst],
        vec![cluster("echo", &[(echo.port, 1)], json!(null))],
    );
    let p = Proxy::start("admin_prefix", &b);
    echo_once(l, b"x");
    p.wait_stat("listener.my_front.downstream_cx_total", "1", |v| v == 1);
    assert!(
        !p.stats()
            .contains_key(&format!("listener.127.0.0.1_{l}.downstream_cx_total")),
        "address-named listener stats despite stat_prefix"
    );
}

#[test]
fn prometheus_format() {
    let s = setup("admin_prom");
    echo_once(s.l, b"hello");
    let p = &s.proxy;
    p.wait_stat("cluster.echo.upstream_cx_total", "1", |v| v == 1);
    for path in ["/stats/prometheus", "/stats?format=prometheus"] {
        let r = p.get(path);
        assert_eq!(r.status, 200, "{path}");
        let body = &r.body;
        assert!(
            body.lines()
                .any(|l| l == "# TYPE envoy_cluster_upstream_cx_total counter"),
            "{path}: no `# TYPE envoy_cluster_upstream_cx_total counter`:\n{body}"
        );
        assert!(
            body.lines()
                .any(|l| l == "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"echo\"} 1"),
            "{path}: no envoy_cluster_upstream_cx_total{{envoy_cluster_name=\"echo\"}} 1:\n{body}"
        );
        assert!(
            body.lines()
                .any(|l| l.starts_with("# TYPE ") && l.ends_with(" gauge")),
            "{path}: no gauges"
        );
        // Every non-comment line is `name{labels} number`.
        for line in body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
            assert!(
                series.starts_with("envoy_"),
                "series without envoy_ prefix: {line:?}"
            );
        }
    }
    let filtered = p.get("/stats/prometheus?filter=upstream_cx_total").body;
    assert!(
        !filtered.contains("envoy_tcp_downstream_cx_total"),
        "prometheus ?filter ignored"
    );
}

#[test]
fn config_dump_clusters_listeners() {
    let s = setup("admin_dump");
    let p = &s.proxy;
    let r = p.get("/config_dump");
    assert_eq!(r.status, 200);
    let dump = r.json();
    let configs = dump["configs"]
        .as_array()
        .unwrap_or_else(|| panic!("no configs[]: {dump:#}"));
    let types: Vec<&str> = configs
        .iter()
        .map(|c| c["@type"].as_str().unwrap_or(""))
        .collect();
    assert!(
        types[0].ends_with("BootstrapConfigDump"),
        "configs[0] is {:?}",
        types[0]
    );
    assert!(
        types.iter().any(|t| t.ends_with("ClustersConfigDump")),
        "{types:?}"
    );
    assert!(
        types.iter().any(|t| t.ends_with("ListenersConfigDump")),
        "{types:?}"
    );
    assert!(
        types
            .iter()
            .all(|t| t.starts_with("type.googleapis.com/envoy.admin.v3.")),
        "{types:?}"
    );
    let boot = &configs[0]["bootstrap"];
    assert_eq!(
        boot["static_resources"]["listeners"][0]["name"], "front",
        "bootstrap in the dump: {boot:#}"
    );
    let text = r.body.clone();
    assert!(
        text.contains("\"echo\"") && text.contains("\"unused\""),
        "clusters missing from config_dump"
    );

    // /clusters text: `<cluster>::<host>::<stat>::<value>` lines.
    let r = p.get("/clusters");
    assert_eq!(r.status, 200);
    let host = format!("echo::127.0.0.1:{}::", s.echo.port);
    assert!(
        r.body.lines().any(|l| l.starts_with(&host)),
        "/clusters lacks {host}…:\n{}",
        r.body
    );
    assert!(
        r.body.lines().any(|l| l.starts_with("unused::")),
        "/clusters lacks unused"
    );
    let r = p.get("/clusters?format=json");
    let v = r.json();
    let statuses = v["cluster_statuses"]
        .as_array()
        .unwrap_or_else(|| panic!("{v:#}"));
    let echo = statuses
        .iter()
        .find(|c| c["name"] == "echo")
        .expect("echo in cluster_statuses");
    assert_eq!(
        echo["host_statuses"][0]["address"]["socket_address"]["port_value"],
        json!(s.echo.port),
        "{echo:#}"
    );

    // /listeners text and JSON.
    let r = p.get("/listeners");
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .lines()
            .any(|l| l == format!("front::127.0.0.1:{}", s.l)),
        "/listeners lacks front::127.0.0.1:{}:\n{}",
        s.l,
        r.body
    );
    let v: Value = p.get("/listeners?format=json").json();
    let ls = v["listener_statuses"]
        .as_array()
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(ls[0]["name"], "front");
    assert_eq!(
        ls[0]["local_address"]["socket_address"]["port_value"],
        json!(s.l)
    );
}

#[test]
fn healthcheck_fail_ok_and_logging() {
    let s = setup("admin_hc");
    let p = &s.proxy;
    assert_eq!(p.post("/healthcheck/fail").status, 200);
    let r = p.get("/ready");
    assert_eq!(
        (r.status, r.body.trim()),
        (503, "DRAINING"),
        "/ready after /healthcheck/fail"
    );
    // Traffic still flows while health checks fail.
    echo_once(s.l, b"still relaying");
    assert_eq!(p.post("/healthcheck/ok").status, 200);
    let r = p.get("/ready");
    assert_eq!((r.status, r.body.trim()), (200, "LIVE"));

    let r = p.get("/logging");
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("info") || r.body.contains("debug"),
        "/logging lists levels: {}",
        r.body
    );
    assert_eq!(p.post("/logging?level=debug").status, 200);
    assert!(
        p.get("/logging").body.contains("debug"),
        "level not changed"
    );
    assert_ne!(
        p.post("/logging?level=nonsense").status,
        200,
        "bad level accepted"
    );
    assert_eq!(p.post("/logging?level=info").status, 200);
}

#[test]
fn drain_listeners_stops_accepting() {
    let s = setup("admin_drain");
    let p = &s.proxy;
    let mut open = connect(s.l);
    open.write_all(b"a").unwrap();
    assert_eq!(next_outcome(&mut open, SOON), Outcome::Data(1));
    assert_eq!(p.post("/drain_listeners").status, 200);
    wait_for(SOON, "listener to refuse after /drain_listeners", || {
        try_connect(s.l).err()
    });
    // The admin keeps answering and the open connection keeps relaying.
    assert_eq!(p.get("/stats").status, 200);
    open.write_all(b"b").unwrap();
    assert_eq!(next_outcome(&mut open, SOON), Outcome::Data(1));
}

#[test]
fn quitquitquit_exits_zero() {
    let mut s = setup("admin_quit");
    let r = s.proxy.post("/quitquitquit");
    assert_eq!(r.status, 200);
    let status = s
        .proxy
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running 30s after /quitquitquit"));
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        s.proxy.stderr()
    );
}
