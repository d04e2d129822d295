//! Tests: tunnels over HTTP/2, each case on Envoy 1.40, then shardproxy, with the same
//! bootstrap and the same outcome asserted (tests/common/tls.rs `on_both`): Istio ambient's
//! HBONE shape (CONNECT terminated to a TCP echo upstream through `connect_matcher` and
//! `connect_config`: two concurrent streams on one connection, bytes both ways, half-close,
//! 503 from a cluster that refuses connections, plain CONNECT without `allow_connect`), and a
//! WebSocket over RFC 8441 extended CONNECT to an HTTP/1.1 WebSocket upstream (the message
//! round-trips; a non-101 answer passes through; no extended CONNECT without `allow_connect`).
//! CONNECT is also terminated over h2 on TLS (ALPN) and over HTTP/1.1.
//! The clients and the WebSocket upstream are tests/peers/h2_tunnel.py.
mod common;

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    time::Duration,
};

use common::{http::*, tls::*, *};
use serde_json::{json, Value};

/// Routes: CONNECT to `dead.test:443` goes to a cluster nothing listens on, any other CONNECT
/// to the TCP echo; `/bad` to a WebSocket upstream that refuses upgrades, the rest to the
/// WebSocket echo.
fn tunnel_routes() -> Value {
    let terminate = |cluster: &str| {
        json!({"match": {"connect_matcher": {}}, "route": {
            "cluster": cluster,
            "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}],
        }})
    };
    json!({"name": "tunnels", "virtual_hosts": [
        {"name": "dead", "domains": ["dead.test:443"], "routes": [terminate("dead")]},
        {"name": "all", "domains": ["*"], "routes": [
            terminate("echo"),
            {"match": {"prefix": "/bad"}, "route": {"cluster": "ws_refusing"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "ws"}},
        ]},
    ]})
}

/// An HTTP/2 connection manager as Istio's HBONE listener has it (`allow_connect`, CONNECT
/// and WebSocket upgrades enabled on the connection manager), or without `allow_connect`.
fn tunnel_hcm(stat_prefix: &str, allow_connect: bool) -> Value {
    hcm(
        stat_prefix,
        tunnel_routes(),
        vec![],
        json!({
            "codec_type": "HTTP2",
            "http2_protocol_options": {"allow_connect": allow_connect},
            "upgrade_configs": [{"upgrade_type": "CONNECT"}, {"upgrade_type": "websocket"}],
        }),
    )
}

/// A TLS listener on port 0 (ECDSA localhost certificate, ALPN `h2, http/1.1`) with the HBONE
/// connection manager, as Istio's HBONE listener terminates mTLS first.
fn tls_hbone_listener() -> Value {
    let tls = downstream_tls(
        common_tls(
            vec![tls_certificate(&pki().server_ecdsa)],
            json!({"alpn_protocols": ["h2", "http/1.1"]}),
        ),
        json!({}),
    );
    let mut hcm = tunnel_hcm("tls_hbone", true);
    hcm["codec_type"] = json!("AUTO");
    listener_with(
        "tls_hbone",
        0,
        vec![],
        vec![filter_chain(Value::Null, vec![hcm_filter(hcm)], Some(tls))],
    )
}

/// The HBONE connection manager's access log line: what Envoy writes for a tunnel's stream.
const LOG_FORMAT: &str = "%REQ(:METHOD)% %REQ(:AUTHORITY)% %PROTOCOL% %RESPONSE_CODE% \
                          %RESPONSE_FLAGS% rx=%BYTES_RECEIVED% tx=%BYTES_SENT% \
                          cluster=%UPSTREAM_CLUSTER%\n";

struct Setup {
    log: std::path::PathBuf,
    _dir: TempDir,
    bootstrap: Value,
    _echo: Upstream,
    _ws: PeerServer,
    _ws_refusing: PeerServer,
}

fn setup() -> Setup {
    let echo = Upstream::echo();
    let ws = PeerServer::start("h2_tunnel.py", &["ws-serve"]);
    let ws_refusing = PeerServer::start("h2_tunnel.py", &["ws-serve", "--status", "403"]);
    let dir = TempDir::new("tunnel_log");
    let log = dir.file("access.log");
    let mut hbone_hcm = tunnel_hcm("hbone", true);
    hbone_hcm["access_log"] = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_LOG,
            "path": log.to_str().unwrap(),
            "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}},
        },
    }]);
    let mut auto_hcm = tunnel_hcm("auto", true);
    auto_hcm["codec_type"] = json!("AUTO");
    let bootstrap = bootstrap(
        0,
        vec![
            http_listener("hbone", 0, hbone_hcm),
            http_listener("no_connect", 0, tunnel_hcm("no_connect", false)),
            http_listener("auto", 0, auto_hcm),
            tls_hbone_listener(),
        ],
        vec![
            cluster("echo", &[(echo.port, 1)], json!({})),
            cluster("dead", &[(refused_port(), 1)], json!({})),
            cluster("ws", &[(ws.port, 1)], json!({})),
            cluster("ws_refusing", &[(ws_refusing.port, 1)], json!({})),
        ],
    );
    Setup {
        log,
        _dir: dir,
        bootstrap,
        _echo: echo,
        _ws: ws,
        _ws_refusing: ws_refusing,
    }
}

/// Runs tests/peers/h2_tunnel.py `args` and parses the JSON it prints.
fn tunnel_peer(args: &[&str]) -> Value {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    peer_json("h2_tunnel.py", &args)
}

fn stats(proxy: &HttpProxy, prefix: &str, names: &[&str], ready: &str) -> BTreeMap<String, i64> {
    settled_stats(proxy, prefix, names, |s| s[ready] > 0)
}

/// The access log's lines once there are `count`, sorted.
fn sorted_log_lines(path: &std::path::Path, count: usize) -> Vec<String> {
    let mut lines = log_lines(path, count);
    lines.sort();
    lines
}

/// An HTTP/1.1 CONNECT on a raw connection: the response's status line and framing fields,
/// then `h1-tunnel` through the tunnel and back, then a half-close and the echo's close.
fn http1_connect(port: u16) -> Value {
    let mut s = connect(port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"CONNECT echo.test:443 HTTP/1.1\r\nHost: echo.test:443\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    s.write_all(b"h1-tunnel").unwrap();
    let mut echo = [0u8; 9];
    let echoed = s.read_exact(&mut echo).is_ok();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let rest = read_all(&mut s).map(|r| r.len());
    json!({
        "status_line": head.lines().next(),
        "framing_fields": head.contains("content-length") || head.contains("transfer-encoding"),
        "echo": echoed.then(|| String::from_utf8_lossy(&echo).into_owned()),
        "closed_after_half_close": rest.ok(),
    })
}

#[test]
fn hbone_connect_is_terminated_to_a_tcp_upstream() {
    let test = "hbone_connect_is_terminated_to_a_tcp_upstream";
    if !have_python(test, "h2") {
        return;
    }
    let s = setup();
    let outcome = on_both(test, &s.bootstrap, |proxy| {
        std::fs::File::create(&s.log).unwrap(); // emptied: each proxy appends its own lines
        let hbone = proxy.port("hbone").to_string();
        let no_connect = proxy.port("no_connect").to_string();
        let two = tunnel_peer(&["connect", "--port", &hbone, "--streams", "2"]);
        let dead = tunnel_peer(&["connect", "--port", &hbone, "--authority", "dead.test:443"]);
        let without_allow_connect = tunnel_peer(&["connect", "--port", &no_connect]);
        let ca = pki().ca.to_string_lossy().into_owned();
        let tls = proxy.port("tls_hbone").to_string();
        let over_tls = tunnel_peer(&["connect", "--port", &tls, "--tls-ca", &ca]);
        let http1 = http1_connect(proxy.port("auto"));
        let http = stats(
            proxy,
            "http.hbone.",
            &[
                "downstream_rq_2xx",
                "downstream_rq_5xx",
                "rq_total",
                "downstream_cx_upgrades_total",
                "downstream_cx_upgrades_active",
            ],
            "downstream_rq_5xx",
        );
        let echo = stats(
            proxy,
            "cluster.echo.",
            &[
                "upstream_rq_200",
                "upstream_rq_total",
                "upstream_rq_completed",
            ],
            "upstream_rq_completed",
        );
        let dead_cluster = stats(
            proxy,
            "cluster.dead.",
            &["upstream_rq_503", "upstream_cx_connect_fail"],
            "upstream_rq_503",
        );
        json!({
            "log": sorted_log_lines(&s.log, 3),
            "two_streams": two,
            "dead": dead,
            "without_allow_connect": without_allow_connect,
            "over_tls": over_tls,
            "http1": http1,
            "http": http,
            "echo": echo,
            "dead_cluster": dead_cluster,
        })
    })
    .unwrap();
    for (i, stream) in outcome["two_streams"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(stream["status"], 200, "{outcome:#}");
        assert_eq!(stream["echo"], format!("tunnel-{i}"), "{outcome:#}");
        assert_eq!(stream["ended"], true, "half-closed both ways: {outcome:#}");
        assert_eq!(stream["reset"], Value::Null, "{outcome:#}");
    }
    assert_eq!(outcome["dead"]["streams"][0]["status"], 503, "{outcome:#}");
    assert_eq!(
        outcome["over_tls"]["streams"][0]["echo"], "tunnel-0",
        "{outcome:#}"
    );
    assert_eq!(outcome["http1"]["echo"], "h1-tunnel", "{outcome:#}");
    assert_eq!(
        outcome["without_allow_connect"]["streams"][0]["echo"], "tunnel-0",
        "plain CONNECT needs no allow_connect: {outcome:#}"
    );
}

#[test]
fn websocket_over_h2_reaches_an_http1_upstream() {
    let test = "websocket_over_h2_reaches_an_http1_upstream";
    if !have_python(test, "h2") {
        return;
    }
    let s = setup();
    let outcome = on_both(test, &s.bootstrap, |proxy| {
        std::fs::File::create(&s.log).unwrap();
        let hbone = proxy.port("hbone").to_string();
        let upgraded = tunnel_peer(&["websocket", "--port", &hbone]);
        let refused = tunnel_peer(&["websocket", "--port", &hbone, "--path", "/bad"]);
        let no_connect = proxy.port("no_connect").to_string();
        let without_allow_connect = tunnel_peer(&["websocket", "--port", &no_connect]);
        let http = stats(
            proxy,
            "http.hbone.",
            &[
                "downstream_rq_1xx",
                "downstream_rq_4xx",
                "downstream_cx_upgrades_total",
                "downstream_cx_upgrades_active",
            ],
            "downstream_rq_4xx",
        );
        json!({
            "log": sorted_log_lines(&s.log, 2),
            "upgraded": upgraded,
            "refused_by_upstream": refused,
            "without_allow_connect": without_allow_connect,
            "http": http,
        })
    })
    .unwrap();
    let upgraded = &outcome["upgraded"];
    assert_eq!(upgraded["status"], 200, "{outcome:#}");
    assert_eq!(upgraded["message"], "hello over h2", "{outcome:#}");
    assert_eq!(
        upgraded["upstream_saw"]["request_line"], "GET /ws HTTP/1.1",
        "{outcome:#}"
    );
    assert_eq!(outcome["refused_by_upstream"]["status"], 403, "{outcome:#}");
    assert_eq!(
        outcome["without_allow_connect"]["enable_connect_protocol"], false,
        "{outcome:#}"
    );
}
