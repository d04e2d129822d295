//! Tests: the xDS test control plane as a child process (tests/peers/xds_server.py), ADS
//! bootstraps, and the real Istio config dumps converted into its resource sets — shared by
//! the tests that drive Envoy and shardproxy from it.
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
};

use serde_json::{json, Value};

use super::http::{
    catch_all_routes, envoy_bin, hcm, http_listener, peer_script, python, HttpProxy, Kind,
};
use super::{addr, cluster, http_get, read_http_response, socket_address, wait_for, TempDir, SOON};

// Each test binary uses some of these (`common` is compiled into every one).
#[allow(unused_imports)]
pub use xds_agent::names::type_urls::{
    ASSIGNMENT as ENDPOINT, CLUSTER, EXTENSION as ECDS, LISTENER, ROUTE, SECRET,
};
pub const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The control plane as a child process; killed by PID when dropped (closing its stdin too).
pub struct XdsServer {
    child: Child,
    _stdin: ChildStdin,
    pub ads_port: u16,
    pub control: SocketAddr,
}

impl XdsServer {
    /// Starts tests/peers/xds_server.py serving the resource set in `script`.
    pub fn start(script: &Path) -> XdsServer {
        Self::start_on(script, 0)
    }

    /// As `start`, with the ADS port fixed (`0`: any), so a restarted server is found again.
    pub fn start_on(script: &Path, ads_port: u16) -> XdsServer {
        Self::start_with(script, ads_port, &[])
    }

    /// As `start_on`, also serving ADS and SDS on each unix socket in `unix`.
    pub fn start_with(script: &Path, ads_port: u16, unix: &[&Path]) -> XdsServer {
        let mut command = Command::new(python());
        command.arg(peer_script("xds_server.py"));
        for path in unix {
            command.arg("--unix").arg(path);
        }
        let mut child = command
            .arg("--script")
            .arg(script)
            .arg("--port")
            .arg(ads_port.to_string())
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

    /// POSTs `body` to control endpoint `path`; the JSON answer (status 200 required).
    pub fn post(&self, path: &str, body: &Value) -> Value {
        let body = body.to_string();
        let mut s = TcpStream::connect(self.control).unwrap();
        s.set_read_timeout(Some(SOON)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: xds\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let r = read_http_response(s).unwrap();
        assert_eq!(r.status, 200, "POST {path} rejected: {}", r.body);
        r.json()
    }

    /// Applies a resource set (`resources` and/or `remove`); returns the new versions.
    pub fn push(&self, set: &Value) -> Value {
        self.post("/push", set)["versions"].clone()
    }

    /// The open streams, as GET /streams lists them.
    pub fn streams(&self) -> Vec<Value> {
        let r = http_get(self.control, "/streams").unwrap().json();
        r["streams"].as_array().cloned().unwrap_or_default()
    }

    /// What node `node` ACKed and NACKed for `type_url`.
    pub fn record(&self, node: &str, type_url: &str) -> Value {
        let acks = http_get(self.control, "/acks").unwrap().json();
        acks["clients"][node][type_url].clone()
    }

    /// Waits until `node` ACKed `version` of `type_url`.
    pub fn wait_ack(&self, node: &str, type_url: &str, version: &Value) {
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
pub fn resource_set(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({"resources": {LISTENER: listeners, CLUSTER: clusters}})
}

/// The LDS listener: 127.0.0.1:`port`, every request routed to cluster `svc`, responses
/// tagged with `x-route-version: route_version`.
pub fn svc_listener(port: u16, route_version: &str) -> Value {
    let mut routes = catch_all_routes("svc", json!({}));
    routes["response_headers_to_add"] =
        json!([{"header": {"key": "x-route-version", "value": route_version}}]);
    http_listener("main", port, hcm("ingress", routes, vec![], json!({})))
}

/// An Envoy bootstrap whose listeners and clusters all come over ADS from `ads_port`, with
/// `api_type` GRPC (state of the world) or DELTA_GRPC.
pub fn ads_bootstrap(admin_port: u16, node: &str, ads_port: u16, api_type: &str) -> Value {
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

/// An Istio-shaped ADS bootstrap: Delta ADS, plus the `sds-grpc` cluster Istio's bootstrap
/// has, which SDS configs in Istio's resources name (here the same control plane).
pub fn istio_ads_bootstrap(admin_port: u16, node: &str, ads_port: u16) -> Value {
    let mut bootstrap = ads_bootstrap(admin_port, node, ads_port, "DELTA_GRPC");
    let mut sds = bootstrap["static_resources"]["clusters"][0].clone();
    sds["name"] = json!("sds-grpc");
    sds["load_assignment"]["cluster_name"] = json!("sds-grpc");
    bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(sds);
    bootstrap
}

/// GET / through Envoy's listener: (upstream name, x-route-version).
pub fn through(port: u16) -> Option<(String, String)> {
    let r = http_get(addr(port), "/").ok()?;
    if r.status != 200 {
        return None;
    }
    let route_version = r.header("x-route-version")?.to_string();
    Some((r.json()["upstream"].as_str()?.to_string(), route_version))
}

pub fn have_envoy(test: &str) -> bool {
    let found = envoy_bin().is_some();
    if !found {
        super::skip(test, super::http::NO_ENVOY, super::Missing::Peer);
    }
    found
}

/// The control plane serving `set`, and Envoy on ADS `api_type` with node id `node`.
pub fn envoy_on(set: &Value, node: &str, api_type: &str, dir: &TempDir) -> (XdsServer, HttpProxy) {
    let script = dir.file("resources.json");
    fs::write(&script, set.to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let bootstrap = ads_bootstrap(0, node, xds.ads_port, api_type);
    let envoy = HttpProxy::start(Kind::Envoy, node, &bootstrap);
    (xds, envoy)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect(addr(port)).is_ok()
}

/// A cluster `name` whose endpoints come over EDS (ADS), waited for forever.
pub fn eds_cluster(name: &str) -> Value {
    json!({
        "name": name,
        "type": "EDS",
        "connect_timeout": "2s",
        "eds_cluster_config": {"eds_config": {
            "ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}},
    })
}

/// The Istio config dumps: `$SHARDPROXY_ISTIO_DUMPS`, else ../shared/fixtures/istio-config-dumps
/// beside the repository. Panics naming the path when the fixture is absent.
pub fn istio_dump(file: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("SHARDPROXY_ISTIO_DUMPS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/istio-config-dumps")
        });
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "this test needs the Istio config dump fixture {} (set SHARDPROXY_ISTIO_DUMPS to the \
         directory holding it)",
        path.display()
    );
    path
}

/// Converts `dump` with tests/peers/istio_resources.py (empty EDS for EDS clusters, free ports
/// for binding listeners) into `out`; returns the converter's report lines.
pub fn convert_dump(dump: &Path, out: &Path) -> Vec<String> {
    let output = Command::new(python())
        .arg(peer_script("istio_resources.py"))
        .arg(dump)
        .arg("-o")
        .arg(out)
        .args(["--empty-eds", "--rebind-ports"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run tests/peers/istio_resources.py");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "istio_resources.py failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

/// Envoy's verdict on one type: what it ACKed and NACKed, with the first NACK's message (which
/// Envoy itself cuts at 4 KiB).
pub fn verdict(record: &Value) -> Option<String> {
    let acked = record["acked"].as_array().cloned().unwrap_or_default();
    let nacked = record["nacked"].as_array().cloned().unwrap_or_default();
    if acked.is_empty() && nacked.is_empty() {
        return None;
    }
    let mut out = format!("ACKed {acked:?}, NACKed {}", nacked.len());
    if let Some(first) = nacked.first() {
        let msg = first["error_detail"]["message"]
            .as_str()
            .unwrap_or_default();
        out.push_str(&format!(": {msg}"));
    }
    Some(out)
}
