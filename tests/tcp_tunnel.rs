//! Tests: tcp_proxy's `tunneling_config` (a TCP connection carried to its upstream inside an
//! HTTP CONNECT or POST), each case on Envoy 1.40, then shardproxy, on the same bootstrap with
//! the same outcome asserted (tests/common/tls.rs `on_both`). A raw TCP client goes through the
//! tcp_proxy to tests/peers/tunnel_terminator.py, which records every tunnel request (method,
//! authority, path, scheme, fields) and echoes the bytes: HTTP/2 CONNECT over h2c and over TLS
//! with ALPN h2, HTTP/1.1 CONNECT, a POST tunnel, and a 403 answer (the connection closed, UF
//! in the access log, the attempt repeated per `max_connect_attempts`). Istio's ambient shape
//! runs too: the tunnel ends in the proxy's own CONNECT termination, in front of a TCP echo.
mod common;

use std::{
    io::{Read, Write},
    net::Shutdown,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{http::*, tls::*, *};
use serde_json::{json, Value};

/// The tunnels' access log line.
const LOG_FORMAT: &str = "%UPSTREAM_CLUSTER% %RESPONSE_FLAGS% %UPSTREAM_HOST% \
                          rx=%BYTES_RECEIVED% tx=%BYTES_SENT%\n";

/// An explicit HTTP/2 cluster option, as Istio's HBONE cluster has it.
fn http2_cluster(name: &str, port: u16, extra: Value) -> Value {
    let mut extra = extra;
    merge(
        &mut extra,
        json!({"typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        }}),
    );
    cluster(name, &[(port, 1)], extra)
}

/// A listener whose tcp_proxy tunnels to `cluster` with `tunneling` (the connection logged to
/// `log`); `extra` merged into the tcp_proxy.
fn tunnel_listener(
    name: &str,
    port: u16,
    cluster: &str,
    tunneling: Value,
    log: &Path,
    extra: Value,
) -> Value {
    let mut config = json!({
        "tunneling_config": tunneling,
        "access_log": [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": FILE_LOG,
                "path": log.to_str().unwrap(),
                "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}},
            },
        }],
    });
    merge(&mut config, extra);
    listener(name, port, tcp_proxy(name, cluster, config))
}

/// Istio's waypoint-bound shape: the original destination as the authority, baggage, and
/// values formatted for the connection; `append` as Envoy has it (a second `x-multi` value is
/// appended, `x-once` is overwritten, an empty value is left out).
fn istio_like_tunneling(hostname: &str) -> Value {
    json!({
        "hostname": hostname,
        "headers_to_add": [
            {"header": {"key": "baggage", "value": "k8s.cluster.name=c1,k8s.namespace.name=ns"}},
            {"header": {"key": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}},
            {"header": {"key": "x-port", "value": "%DOWNSTREAM_LOCAL_PORT%"}},
            {"header": {"key": "x-multi", "value": "one"}},
            {"header": {"key": "x-multi", "value": "two"}, "append": true},
            {"header": {"key": "x-once", "value": "first"}},
            {"header": {"key": "x-once", "value": "second"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-empty", "value": "%REQ(x-none)%"}},
        ],
    })
}

struct Setup {
    dir: TempDir,
    bootstrap: Value,
    record: PathBuf,
    ports: Ports,
    terminator: PeerServer,
    _echo: Upstream,
}

struct Ports {
    h2c: u16,
    tls: u16,
    h1: u16,
    post: u16,
    post_h1: u16,
    refused: u16,
    refused_h1: u16,
    silent: u16,
    ambient: u16,
}

fn setup() -> Setup {
    let dir = TempDir::new("tcp_tunnel");
    let record = dir.file("requests.jsonl");
    let server = &pki().server_ecdsa;
    let terminator = PeerServer::start(
        "tunnel_terminator.py",
        &[
            "--record",
            record.to_str().unwrap(),
            "--cert",
            server.cert.to_str().unwrap(),
            "--key",
            server.key.to_str().unwrap(),
        ],
    );
    let echo = Upstream::echo();
    let t = terminator.port;
    // Fixed ports: the tunnel requests compared between Envoy and shardproxy carry them
    // (%DOWNSTREAM_LOCAL_ADDRESS%, %DOWNSTREAM_LOCAL_PORT%), and the hbone cluster names
    // `hbone` in the same bootstrap.
    let ports = Ports {
        h2c: free_port(),
        tls: free_port(),
        h1: free_port(),
        post: free_port(),
        post_h1: free_port(),
        refused: free_port(),
        refused_h1: free_port(),
        silent: free_port(),
        ambient: free_port(),
    };
    let hbone = free_port();
    let log = |name: &str| dir.file(&format!("{name}.log"));
    let upstream_tls = upstream_tls(
        json!({
            "validation_context": validation(&pki().ca, json!({})),
            "alpn_protocols": ["h2"],
        }),
        json!({"sni": "localhost"}),
    );
    let terminate = json!({"match": {"connect_matcher": {}}, "route": {
        "cluster": "echo",
        "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}],
    }});
    let hbone_hcm = hcm(
        "hbone",
        json!({"name": "hbone", "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": [terminate]},
        ]}),
        vec![],
        json!({
            "codec_type": "HTTP2",
            "http2_protocol_options": {"allow_connect": true},
            "upgrade_configs": [{"upgrade_type": "CONNECT"}],
        }),
    );
    let bootstrap = bootstrap(
        0,
        vec![
            tunnel_listener(
                "h2c",
                ports.h2c,
                "h2c",
                istio_like_tunneling("%DOWNSTREAM_LOCAL_ADDRESS%"),
                &log("h2c"),
                json!({}),
            ),
            tunnel_listener(
                "tls",
                ports.tls,
                "tls",
                json!({"hostname": "svc.test:%DOWNSTREAM_LOCAL_PORT%"}),
                &log("tls"),
                json!({}),
            ),
            tunnel_listener(
                "h1",
                ports.h1,
                "h1",
                istio_like_tunneling("%DOWNSTREAM_LOCAL_ADDRESS%"),
                &log("h1"),
                json!({}),
            ),
            tunnel_listener(
                "post",
                ports.post,
                "post",
                json!({"hostname": "post.test:80", "use_post": true, "post_path": "/tunnel",
                       "headers_to_add": [{"header": {"key": "x-tunnel", "value": "post"}}]}),
                &log("post"),
                json!({}),
            ),
            tunnel_listener(
                "post_h1",
                ports.post_h1,
                "post_h1",
                json!({"hostname": "post.test:80", "use_post": true,
                       "headers_to_add": [{"header": {"key": "x-tunnel", "value": "post"}}]}),
                &log("post_h1"),
                json!({}),
            ),
            tunnel_listener(
                "refused",
                ports.refused,
                "refusing",
                json!({"hostname": "refuse.test:443"}),
                &log("refused"),
                json!({"max_connect_attempts": 2}),
            ),
            tunnel_listener(
                "refused_h1",
                ports.refused_h1,
                "refusing_h1",
                json!({"hostname": "refuse.test:443"}),
                &log("refused_h1"),
                json!({}),
            ),
            tunnel_listener(
                "silent",
                ports.silent,
                "h2c",
                json!({"hostname": "silent.test:443"}),
                &log("silent"),
                json!({"idle_timeout": "1s"}),
            ),
            tunnel_listener(
                "ambient",
                ports.ambient,
                "hbone",
                json!({"hostname": "%DOWNSTREAM_LOCAL_ADDRESS%"}),
                &log("ambient"),
                json!({}),
            ),
            http_listener("hbone", hbone, hbone_hcm),
        ],
        vec![
            http2_cluster("h2c", t, json!({})),
            http2_cluster("tls", t, json!({"transport_socket": upstream_tls})),
            cluster("h1", &[(t, 1)], json!({})),
            http2_cluster("post", t, json!({})),
            cluster("post_h1", &[(t, 1)], json!({})),
            http2_cluster("refusing", t, json!({})),
            cluster("refusing_h1", &[(t, 1)], json!({})),
            http2_cluster("hbone", hbone, json!({})),
            cluster("echo", &[(echo.port, 1)], json!({})),
        ],
    );
    Setup {
        dir,
        bootstrap,
        record,
        ports,
        terminator,
        _echo: echo,
    }
}

/// Through the tunnel and back: `payload` echoed, then after the client's half-close what the
/// far end still sent (`bye` from the terminator) before it closed too.
fn round_trip(port: u16, payload: &str) -> Value {
    let mut s = connect(port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(payload.as_bytes()).unwrap();
    let mut echo = vec![0u8; payload.len()];
    let echoed = s.read_exact(&mut echo).is_ok();
    s.shutdown(Shutdown::Write).unwrap();
    let rest = read_all(&mut s);
    json!({
        "echo": echoed.then(|| String::from_utf8_lossy(&echo).into_owned()),
        "after_half_close": rest.map(|r| String::from_utf8_lossy(&r).into_owned()).ok(),
    })
}

/// A connection whose tunnel is refused: what the client reads before the proxy closes it.
fn refused(port: u16) -> Value {
    let mut s = connect(port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    json!({"read_before_close": read_all(&mut s).map(|r| r.len()).ok()})
}

/// The tunnel requests the terminator recorded, in order, each request's fields ordered by
/// name (an HTTP/2 field block here groups a name's values, Envoy's keeps the order they were
/// added in; the order of one name's values is the same).
fn recorded(path: &Path, count: usize) -> Vec<Value> {
    log_lines(path, count)
        .iter()
        .map(|line| {
            let mut request: Value = serde_json::from_str(line).unwrap();
            let fields = request["fields"].as_array_mut().unwrap();
            fields.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
            request
        })
        .collect()
}

/// One listener's access log lines once there are `count`.
fn logged(dir: &TempDir, name: &str, count: usize) -> Vec<String> {
    log_lines(&dir.file(&format!("{name}.log")), count)
}

fn empty(path: &Path) {
    std::fs::File::create(path).unwrap();
}

#[test]
fn tcp_is_tunneled_over_http2_and_http1_connect() {
    let test = "tcp_is_tunneled_over_http2_and_http1_connect";
    if !have_python(test, "h2") {
        return;
    }
    let s = setup();
    let p = &s.ports;
    let outcome = on_both(test, &s.bootstrap, |proxy| {
        empty(&s.record);
        for name in ["h2c", "tls", "h1", "post", "post_h1"] {
            empty(&s.dir.file(&format!("{name}.log")));
        }
        let h2c = round_trip(p.h2c, "over h2c");
        let tls = round_trip(p.tls, "over h2 on TLS");
        let mut h1 = round_trip(p.h1, "over HTTP/1.1");
        let post = round_trip(p.post, "over POST");
        let mut post_h1 = round_trip(p.post_h1, "over POST on HTTP/1.1");
        // Envoy's HTTP/1 codec closes a tunnel's connection at the client's FIN (after a
        // POST's last chunk), so what the upstream sends after it is lost; shardproxy carries
        // the half-close over HTTP/1.1 as over HTTP/2 (docs/tcp-tunnel.md).
        let term = s.terminator.port;
        for (name, outcome, sent) in [("h1", &mut h1, 13), ("post_h1", &mut post_h1, 21)] {
            let after = outcome["after_half_close"].take();
            let (bye, tx) = match proxy.kind {
                Kind::Envoy => ("", sent),
                Kind::Shardproxy => ("bye", sent + 3),
            };
            let log = format!("{name} - 127.0.0.1:{term} rx={sent} tx={tx}");
            assert_eq!(
                (after.as_str(), logged(&s.dir, name, 1)),
                (Some(bye), vec![log]),
                "{name} on {}",
                proxy.kind.name()
            );
        }
        let clusters = settled_stats(
            proxy,
            "cluster.",
            &[
                "h2c.upstream_cx_http2_total",
                "tls.upstream_cx_http2_total",
                "h1.upstream_cx_http1_total",
                "post.upstream_cx_http2_total",
                "post_h1.upstream_cx_http1_total",
                "h2c.upstream_rq_total",
                "h2c.upstream_rq_200",
                "h2c.upstream_rq_completed",
                "h2c.upstream_rq_active",
                "h2c.upstream_cx_active",
                "h1.upstream_rq_total",
                "h1.upstream_cx_active",
                "h1.upstream_cx_destroy",
            ],
            |s| s["h1.upstream_cx_destroy"] > 0,
        );
        json!({
            "h2c": h2c,
            "tls": tls,
            "h1": h1,
            "post": post,
            "post_h1": post_h1,
            "requests": recorded(&s.record, 5),
            "logs": (["h2c", "tls", "post"].map(|n| logged(&s.dir, n, 1))),
            "clusters": clusters,
        })
    })
    .unwrap();
    for (case, payload) in [
        ("h2c", "over h2c"),
        ("tls", "over h2 on TLS"),
        ("h1", "over HTTP/1.1"),
        ("post", "over POST"),
        ("post_h1", "over POST on HTTP/1.1"),
    ] {
        assert_eq!(outcome[case]["echo"], payload, "{case}: {outcome:#}");
    }
    for case in ["h2c", "tls", "post"] {
        assert_eq!(
            outcome[case]["after_half_close"], "bye",
            "{case}: {outcome:#}"
        );
    }
    let requests = &outcome["requests"];
    let fields = |port: u16| {
        json!([
            ["baggage", "k8s.cluster.name=c1,k8s.namespace.name=ns"],
            ["x-client", "127.0.0.1"],
            ["x-multi", "one"],
            ["x-multi", "two"],
            ["x-once", "second"],
            ["x-once", "first"],
            ["x-port", port.to_string()],
        ])
    };
    let authority = format!("127.0.0.1:{}", p.h2c);
    assert_eq!(
        requests[0],
        json!({"protocol": "h2c", "method": "CONNECT", "authority": authority, "path": null,
               "scheme": null, "fields": fields(p.h2c)}),
        "{outcome:#}"
    );
    let authority = format!("svc.test:{}", p.tls);
    assert_eq!(
        requests[1],
        json!({"protocol": "h2", "method": "CONNECT", "authority": authority, "path": null,
               "scheme": null, "fields": []}),
        "{outcome:#}"
    );
    let authority = format!("127.0.0.1:{}", p.h1);
    let mut h1_fields = fields(p.h1);
    h1_fields
        .as_array_mut()
        .unwrap()
        .insert(1, json!(["host", authority]));
    assert_eq!(
        requests[2],
        json!({"protocol": "http/1.1", "method": "CONNECT", "authority": authority,
               "path": null, "scheme": null, "fields": h1_fields}),
        "{outcome:#}"
    );
    assert_eq!(
        requests[3],
        json!({"protocol": "h2c", "method": "POST", "authority": "post.test:80",
               "path": "/tunnel", "scheme": "http", "fields": [["x-tunnel", "post"]]}),
        "{outcome:#}"
    );
    assert_eq!(
        requests[4],
        json!({"protocol": "http/1.1", "method": "POST", "authority": null, "path": "/",
        "scheme": null, "fields": [
            ["host", "post.test:80"],
            ["transfer-encoding", "chunked"],
            ["x-tunnel", "post"],
        ]}),
        "{outcome:#}"
    );
}

#[test]
fn a_refused_tunnel_closes_the_connection_with_uf() {
    let test = "a_refused_tunnel_closes_the_connection_with_uf";
    if !have_python(test, "h2") {
        return;
    }
    let s = setup();
    let p = &s.ports;
    let outcome = on_both(test, &s.bootstrap, |proxy| {
        empty(&s.record);
        for name in ["refused", "refused_h1", "silent"] {
            empty(&s.dir.file(&format!("{name}.log")));
        }
        let h2 = refused(p.refused);
        let h1 = refused(p.refused_h1);
        // A tunnel never answered: the idle timeout (1 s) closes the connection.
        let started = std::time::Instant::now();
        let silent = refused(p.silent);
        let silent_closed_in_time = started.elapsed() < Duration::from_secs(5);
        let clusters = settled_stats(
            proxy,
            "cluster.",
            &[
                "refusing.upstream_cx_connect_attempts_exceeded",
                "refusing_h1.upstream_cx_connect_attempts_exceeded",
                "refusing.upstream_rq_total",
                "refusing.upstream_rq_403",
                "refusing.upstream_rq_4xx",
                "refusing_h1.upstream_rq_total",
                "refusing_h1.upstream_rq_403",
                "refusing.upstream_cx_total",
                "refusing_h1.upstream_cx_total",
                "refusing_h1.upstream_cx_destroy",
            ],
            |s| {
                s["refusing.upstream_cx_connect_attempts_exceeded"] > 0
                    && s["refusing_h1.upstream_cx_connect_attempts_exceeded"] > 0
            },
        );
        json!({
            "h2": h2,
            "h1": h1,
            "silent": silent,
            "silent_closed_in_time": silent_closed_in_time,
            "silent_log": logged(&s.dir, "silent", 1),
            "requests": recorded(&s.record, 4),
            "logs": (["refused", "refused_h1"].map(|n| logged(&s.dir, n, 1))),
            "clusters": clusters,
        })
    })
    .unwrap();
    eprintln!("{outcome:#}");
    assert_eq!(outcome["h2"]["read_before_close"], 0, "{outcome:#}");
    let term = s.terminator.port;
    assert_eq!(
        outcome["logs"],
        json!([
            [format!("refusing UF,URX 127.0.0.1:{term} rx=0 tx=0")],
            [format!("refusing_h1 UF,URX 127.0.0.1:{term} rx=0 tx=0")],
        ]),
        "the last host tried is logged: {outcome:#}"
    );
    assert_eq!(outcome["h1"]["read_before_close"], 0, "{outcome:#}");
    assert_eq!(outcome["silent"]["read_before_close"], 0, "{outcome:#}");
    assert_eq!(outcome["silent_closed_in_time"], true, "{outcome:#}");
    let authorities: Vec<_> = outcome["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["protocol"].as_str().unwrap(),
                r["authority"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        authorities,
        [
            ("h2c", "refuse.test:443"),
            ("h2c", "refuse.test:443"),
            ("http/1.1", "refuse.test:443"),
            ("h2c", "silent.test:443"),
        ],
        "max_connect_attempts: 2 tries twice: {outcome:#}"
    );
}

#[test]
fn an_ambient_tunnel_ends_in_connect_termination() {
    let test = "an_ambient_tunnel_ends_in_connect_termination";
    if !have_python(test, "h2") {
        return;
    }
    let s = setup();
    let outcome = on_both(test, &s.bootstrap, |proxy| {
        empty(&s.dir.file("ambient.log"));
        // Two connections at once, each a stream of an HTTP/2 connection of its worker.
        let (mut a, mut b) = (connect(s.ports.ambient), connect(s.ports.ambient));
        let mut echoes = Vec::new();
        for (s, text) in [(&mut a, "first"), (&mut b, "second")] {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(text.as_bytes()).unwrap();
            let mut echo = vec![0u8; text.len()];
            s.read_exact(&mut echo).unwrap();
            echoes.push(String::from_utf8(echo).unwrap());
        }
        for s in [&mut a, &mut b] {
            s.shutdown(Shutdown::Write).unwrap();
            assert_eq!(
                read_all(s).unwrap(),
                b"",
                "the echo closes after the half-close"
            );
        }
        let hbone = settled_stats(
            proxy,
            "cluster.hbone.",
            // (Not the connection count: it depends on which worker took each connection.)
            &["upstream_rq_total"],
            |s| s["upstream_rq_total"] == 2,
        );
        let mut log = logged(&s.dir, "ambient", 2);
        log.sort();
        json!({"echoes": echoes, "hbone": hbone, "log": log})
    })
    .unwrap();
    assert_eq!(outcome["echoes"], json!(["first", "second"]), "{outcome:#}");
    assert_eq!(outcome["hbone"]["upstream_rq_total"], 2, "{outcome:#}");
}
