//! Tests: a two-pod mesh with real interception — each pod a network namespace (joined by a
//! veth pair) with an app, a shardproxy sidecar running as uid 1337 from Istio's own bootstrap,
//! and the nat rules Istio's init container installs; one control plane serving both sidecars
//! Delta ADS and SDS (SPIFFE certificates from the test CA) over per-pod unix sockets, with
//! resources shaped like a real Istio 1.22 sidecar's. The client app's plain requests cross
//! both sidecars with mTLS; the server app sees Istio's XFCC, no peer-metadata headers, and
//! connections from 127.0.0.6.
//!
//! Needs root (namespaces, iptables), `ip`, `iptables`, `setpriv`, `curl`, the test venv
//! (tests/peers/xds_server.py) and Istio's golden bootstrap under ../shared/fixtures.
mod common;

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
};

use common::{http::*, netns::*, tls::*, xds::*, *};
use serde_json::{json, Value};

const CLIENT_IP: &str = "10.44.0.1";
const SERVER_IP: &str = "10.44.0.2";
const HTTP_PORT: u16 = 9080;
const TCP_PORT: u16 = 9090;
const HTTP_SERVICE: &str = "server.default.svc.cluster.local";
const TCP_SERVICE: &str = "tcp-echo.default.svc.cluster.local";
/// The ports Istio's sidecar injection keeps out of inbound capture (agent, health, stats).
const INBOUND_EXCLUDED: &[u16] = &[15020, 15021, 15090];

const TYPED_STRUCT: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";
const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const HTTP_OPTIONS_URL: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const ISTIO_HTTP_ALPNS: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];

// ---------------------------------------------------------------------------------------------
// Pods

/// One pod: its workload (the app and service account names), address and namespace.
struct Pod {
    app: &'static str,
    ip: &'static str,
}

impl Pod {
    fn node_id(&self) -> String {
        format!(
            "sidecar~{}~{}-7c9d8f-x2kq.default~default.svc.cluster.local",
            self.ip, self.app
        )
    }

    /// The `node` pilot-agent writes into the bootstrap for this pod.
    fn node(&self) -> Value {
        json!({
            "id": self.node_id(),
            "cluster": format!("{}.default", self.app),
            "metadata": {
                "NAME": format!("{}-7c9d8f-x2kq", self.app),
                "NAMESPACE": "default",
                "WORKLOAD_NAME": self.app,
                "SERVICE_ACCOUNT": self.app,
                "OWNER": format!("kubernetes://apis/apps/v1/namespaces/default/deployments/{}", self.app),
                "CLUSTER_ID": "Kubernetes",
                "MESH_ID": "cluster.local",
                "INSTANCE_IPS": self.ip,
                "INTERCEPTION_MODE": "REDIRECT",
                "ISTIO_VERSION": "1.22.3",
                "APP_CONTAINERS": self.app,
                "LABELS": {
                    "app": self.app,
                    "version": "v1",
                    "service.istio.io/canonical-name": self.app,
                    "service.istio.io/canonical-revision": "v1",
                },
                "ENVOY_PROMETHEUS_PORT": 15090,
                "ENVOY_STATUS_PORT": 15021,
            },
        })
    }

    /// The `istio` workload label of its endpoints (`name;namespace;canonical name;revision;
    /// cluster`).
    fn workload(&self) -> String {
        format!("{0};default;{0};v1;Kubernetes", self.app)
    }
}

const CLIENT: Pod = Pod {
    app: "client",
    ip: CLIENT_IP,
};
const SERVER: Pod = Pod {
    app: "server",
    ip: SERVER_IP,
};

/// Istio's golden bootstrap (pilot-agent's rendering), or `None` after saying why not.
fn golden_bootstrap(test: &str) -> Option<Value> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/istio-bootstrap/golden_default.json");
    match fs::read_to_string(&file) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap()),
        Err(e) => {
            skip(
                test,
                &format!("Istio's bootstrap {} is absent: {e}", file.display()),
                Missing::Peer,
            );
            None
        }
    }
}

/// The pod's bootstrap: Istio's golden with this pod's node, its `xds-grpc` and `sds-grpc`
/// pipes at `xds` and `sds`.
fn pod_bootstrap(golden: &Value, pod: &Pod, xds: &Path, sds: &Path) -> Value {
    let mut b = golden.clone();
    let mut node = pod.node();
    for (k, v) in golden["node"]["metadata"].as_object().unwrap() {
        node["metadata"]
            .as_object_mut()
            .unwrap()
            .entry(k.clone())
            .or_insert(v.clone());
    }
    b["node"] = node;
    for cluster in b["static_resources"]["clusters"].as_array_mut().unwrap() {
        let path = match cluster["name"].as_str() {
            Some("xds-grpc") => xds,
            Some("sds-grpc") => sds,
            _ => continue,
        };
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] =
            json!({"pipe": {"path": path}});
    }
    b
}

// ---------------------------------------------------------------------------------------------
// Istio's resources (shaped as istio-1.22.3_app1_sidecar.json has them)

fn typed_struct(type_url: &str, value: Value) -> Value {
    json!({"@type": TYPED_STRUCT, "type_url": format!("type.googleapis.com/{type_url}"),
           "value": value})
}

/// An SDS reference to secret `name` over the `sds-grpc` cluster.
fn sds(name: &str) -> Value {
    json!({"name": name, "sds_config": {
        "api_config_source": {
            "api_type": "GRPC",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
            "set_node_on_first_message_only": true,
            "transport_api_version": "V3",
        },
        "initial_fetch_timeout": "0s",
        "resource_api_version": "V3",
    }})
}

/// The mesh's TLS context: the workload certificate `default`, peers checked against `ROOTCA`
/// and `san`.
fn mesh_tls(alpn: &[&str], san: Value) -> Value {
    json!({
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                       "tls_maximum_protocol_version": "TLSv1_3"},
        "alpn_protocols": alpn,
        "tls_certificate_sds_secret_configs": [sds("default")],
        "combined_validation_context": {
            "default_validation_context": {"match_subject_alt_names": [san]},
            "validation_context_sds_secret_config": sds("ROOTCA"),
        },
    })
}

/// The TCP metadata exchange (`istio-peer-exchange`), on inbound chains and outbound clusters.
fn tcp_exchange() -> Value {
    json!({"name": "istio.metadata_exchange", "typed_config": typed_struct(
        "envoy.tcp.metadataexchange.config.MetadataExchange",
        json!({"protocol": "istio-peer-exchange", "enable_discovery": true}))})
}

/// Istio's `istio.stats` (its standard metrics), as an HTTP or a network filter; inbound ones
/// do not fall back to the Host header.
fn istio_stats(inbound: bool) -> Value {
    let mut config = json!({"@type": "type.googleapis.com/stats.PluginConfig"});
    if inbound {
        config["disable_host_header_fallback"] = json!(true);
    }
    json!({"name": "istio.stats", "typed_config": config})
}

fn tcp_proxy_to(cluster: &str) -> Value {
    json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": TCP_PROXY, "stat_prefix": cluster, "cluster": cluster}})
}

fn http_filter(name: &str, typed_config: Value) -> Value {
    json!({"name": name, "typed_config": typed_config})
}

/// The HTTP filters of an Istio sidecar's connection managers: peer metadata (discovery and
/// propagation on `side`), `extra` (istio.alpn outbound), fault, cors, stats, router.
fn sidecar_http_filters(side: &str, extra: Vec<Value>) -> Vec<Value> {
    let peer = typed_struct(
        "io.istio.http.peer_metadata.Config",
        json!({
            format!("{side}_discovery"): [{"istio_headers": {}}, {"workload_discovery": {}}],
            format!("{side}_propagation"): [{"istio_headers": {}}],
        }),
    );
    let mut filters = vec![http_filter("istio.metadata_exchange", peer)];
    filters.extend(extra);
    filters.extend([
        http_filter(
            "envoy.filters.http.fault",
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}),
        ),
        http_filter(
            "envoy.filters.http.cors",
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}),
        ),
        istio_stats(side == "downstream"),
        http_filter(
            "envoy.filters.http.router",
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}),
        ),
    ]);
    filters
}

fn istio_alpn() -> Value {
    http_filter(
        "istio.alpn",
        json!({
            "@type": "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
            "alpn_override": [
                {"alpn_override": ["istio-http/1.0", "istio", "http/1.0"]},
                {"upstream_protocol": "HTTP11", "alpn_override": ["istio-http/1.1", "istio", "http/1.1"]},
                {"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2", "istio", "h2"]},
            ],
        }),
    )
}

/// `virtualOutbound`: every redirected connection, handed to the listener of its original
/// destination, else relayed where it was going.
fn virtual_outbound() -> Value {
    json!({
        "name": "virtualOutbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
        "filter_chains": [
            {"name": "virtualOutbound-blackhole", "filter_chain_match": {"destination_port": 15001},
             "filters": [istio_stats(false), tcp_proxy_to("BlackHoleCluster")]},
            {"name": "virtualOutbound-catchall-tcp",
             "filters": [istio_stats(false), tcp_proxy_to("PassthroughCluster")]},
        ],
        "use_original_dst": true,
        "traffic_direction": "OUTBOUND",
    })
}

/// `0.0.0.0_9080`: the HTTP service port, routed by RDS `9080`.
fn outbound_http_listener() -> Value {
    let manager = json!({
        "@type": HCM,
        "stat_prefix": format!("outbound_0.0.0.0_{HTTP_PORT}"),
        "rds": {"config_source": {"ads": {}, "initial_fetch_timeout": "0s",
                                  "resource_api_version": "V3"},
                "route_config_name": HTTP_PORT.to_string()},
        "http_filters": sidecar_http_filters("upstream", vec![istio_alpn()]),
        "use_remote_address": false,
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        "normalize_path": true,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
    });
    json!({
        "name": format!("0.0.0.0_{HTTP_PORT}"),
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": HTTP_PORT}},
        "filter_chains": [{
            "filter_chain_match": {"transport_protocol": "raw_buffer",
                                   "application_protocols": ["http/1.1", "h2c"]},
            "filters": [{"name": "envoy.filters.network.http_connection_manager",
                         "typed_config": manager}],
        }],
        "default_filter_chain": {"name": "PassthroughFilterChain", "filter_chain_match": {},
                                 "filters": [istio_stats(false), tcp_proxy_to("PassthroughCluster")]},
        "listener_filters": [
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR}},
            {"name": "envoy.filters.listener.http_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}},
        ],
        "listener_filters_timeout": "0s",
        "continue_on_listener_filters_timeout": true,
        "traffic_direction": "OUTBOUND",
        "bind_to_port": false,
    })
}

/// `<ip>_9090`: the TCP service, relayed to its cluster.
fn outbound_tcp_listener() -> Value {
    let cluster = outbound_name(TCP_PORT, TCP_SERVICE);
    json!({
        "name": format!("{SERVER_IP}_{TCP_PORT}"),
        "address": {"socket_address": {"address": SERVER_IP, "port_value": TCP_PORT}},
        "filter_chains": [{"filters": [istio_stats(false), tcp_proxy_to(&cluster)]}],
        "traffic_direction": "OUTBOUND",
        "bind_to_port": false,
    })
}

/// RDS `9080`: the service's virtual host by its names, and Istio's `allow_any`.
fn outbound_routes() -> Value {
    let host = format!("{HTTP_SERVICE}:{HTTP_PORT}");
    let domains = json!([
        HTTP_SERVICE,
        "server",
        "server.default.svc",
        "server.default",
        SERVER_IP,
        format!("{SERVER_IP}:{HTTP_PORT}"),
    ]);
    json!({
        "name": HTTP_PORT.to_string(),
        "virtual_hosts": [
            {"name": host, "domains": domains, "routes": [{
                "name": "default",
                "match": {"prefix": "/"},
                "route": {"cluster": outbound_name(HTTP_PORT, HTTP_SERVICE), "timeout": "0s",
                          "retry_policy": {"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                                           "num_retries": 2}},
                "decorator": {"operation": format!("{HTTP_SERVICE}:{HTTP_PORT}/*")},
            }]},
            {"name": "allow_any", "domains": ["*"], "routes": [{
                "name": "allow_any",
                "match": {"prefix": "/"},
                "route": {"cluster": "PassthroughCluster", "timeout": "0s"},
            }]},
        ],
        "validate_clusters": false,
    })
}

fn outbound_name(port: u16, service: &str) -> String {
    format!("outbound|{port}||{service}")
}

/// An outbound EDS cluster to `service`, whose `tlsMode: istio` endpoints get mTLS to
/// workload `sa`, with the TCP metadata exchange as its upstream filter.
fn outbound_cluster(port: u16, service: &str, sa: &str) -> Value {
    let name = outbound_name(port, service);
    let short = service.split('.').next().unwrap();
    json!({
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}, "initial_fetch_timeout": "0s",
                                              "resource_api_version": "V3"},
                               "service_name": name},
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": {"thresholds": [{"max_connections": 4294967295u64,
            "max_pending_requests": 4294967295u64, "max_requests": 4294967295u64,
            "max_retries": 4294967295u64, "track_remaining": true}]},
        "metadata": {"filter_metadata": {"istio": {"services": [
            {"namespace": "default", "name": short, "host": service}]}}},
        "common_lb_config": {"locality_weighted_lb_config": {}},
        "filters": [tcp_exchange()],
        "transport_socket_matches": [
            {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": UPSTREAM_TLS,
                    "common_tls_context": mesh_tls(&["istio-peer-exchange", "istio"],
                                                   json!({"exact": spiffe(sa)})),
                    "sni": format!("outbound_.{port}_._.{service}"),
                },
            }},
            {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
            }},
        ],
    })
}

/// The endpoints of an outbound cluster: `pod` on `port`, labelled as Istio labels a
/// sidecar-injected workload.
fn endpoints(port: u16, service: &str, pod: &Pod) -> Value {
    json!({
        "cluster_name": outbound_name(port, service),
        "endpoints": [{"locality": {}, "lb_endpoints": [{
            "endpoint": {"address": {"socket_address": {"address": pod.ip, "port_value": port}}},
            "health_status": "HEALTHY",
            "metadata": {"filter_metadata": {
                "envoy.transport_socket_match": {"tlsMode": "istio"},
                "istio": {"workload": pod.workload()},
            }},
            "load_balancing_weight": 1,
        }]}],
    })
}

/// An `ORIGINAL_DST` cluster (`PassthroughCluster`, the inbound ones).
fn original_dst(name: &str, extra: Value) -> Value {
    let mut c = json!({
        "name": name,
        "type": "ORIGINAL_DST",
        "connect_timeout": "10s",
        "lb_policy": "CLUSTER_PROVIDED",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTIONS_URL,
            "use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}},
        }},
    });
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

/// The inbound passthrough: connections to the app come from 127.0.0.6.
fn from_inbound_passthrough() -> Value {
    json!({"upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}}})
}

fn inbound_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// The clusters every sidecar gets.
fn shared_clusters() -> Vec<Value> {
    vec![
        original_dst("PassthroughCluster", json!({"filters": [tcp_exchange()]})),
        json!({"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"}),
        original_dst("InboundPassthroughClusterIpv4", from_inbound_passthrough()),
        outbound_cluster(HTTP_PORT, HTTP_SERVICE, SERVER.app),
        outbound_cluster(TCP_PORT, TCP_SERVICE, SERVER.app),
    ]
}

/// The server pod's inbound clusters, one per service port.
fn inbound_clusters() -> Vec<Value> {
    [(HTTP_PORT, HTTP_SERVICE), (TCP_PORT, TCP_SERVICE)]
        .iter()
        .map(|(port, service)| {
            let mut extra = from_inbound_passthrough();
            extra["metadata"] = json!({"filter_metadata": {"istio": {"services": [
                {"namespace": "default", "host": service,
                 "name": service.split('.').next().unwrap()}]}}});
            original_dst(&inbound_name(*port), extra)
        })
        .collect()
}

/// STRICT mTLS: the workload certificate, a client certificate required, any mesh identity.
fn downstream_mtls(alpn: &[&str]) -> Value {
    json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": DOWNSTREAM_TLS,
        "common_tls_context": mesh_tls(alpn, json!({"prefix": "spiffe://cluster.local/"})),
        "require_client_certificate": true,
    }})
}

fn istio_authn() -> Value {
    json!({"name": "istio_authn",
           "typed_config": typed_struct("io.istio.network.authn.Config", json!({}))})
}

/// The inbound HTTP chain of `port` (mTLS with Istio's HTTP ALPNs) to `inbound|port||`.
fn inbound_http_chain(port: u16) -> Value {
    let cluster = inbound_name(port);
    let manager = json!({
        "@type": HCM,
        "stat_prefix": format!("inbound_0.0.0.0_{port}"),
        "route_config": {"name": cluster, "virtual_hosts": [{
            "name": format!("inbound|http|{port}"),
            "domains": ["*"],
            "routes": [{"name": "default", "match": {"prefix": "/"},
                        "route": {"cluster": cluster, "timeout": "0s"},
                        "decorator": {"operation": format!("{HTTP_SERVICE}:{port}/*")}}],
        }], "validate_clusters": false},
        "http_filters": sidecar_http_filters("downstream", vec![]),
        "server_name": "istio-envoy",
        "use_remote_address": false,
        "forward_client_cert_details": "APPEND_FORWARD",
        "set_current_client_cert_details": {"subject": true, "dns": true, "uri": true},
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        "normalize_path": true,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
    });
    json!({
        "name": format!("0.0.0.0_{port}"),
        "filter_chain_match": {"destination_port": port, "transport_protocol": "tls",
                               "application_protocols": ISTIO_HTTP_ALPNS},
        "filters": [
            istio_authn(),
            tcp_exchange(),
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager},
        ],
        "transport_socket": downstream_mtls(&["h2", "http/1.1"]),
    })
}

/// The inbound TCP chain of `port` (mTLS with the exchange ALPN) to `inbound|port||`.
fn inbound_tcp_chain(port: u16) -> Value {
    json!({
        "name": format!("0.0.0.0_{port}"),
        "filter_chain_match": {"destination_port": port, "transport_protocol": "tls",
                               "application_protocols": ["istio-peer-exchange", "istio"]},
        "filters": [istio_authn(), tcp_exchange(), istio_stats(true),
                    tcp_proxy_to(&inbound_name(port))],
        "transport_socket": downstream_mtls(&["istio-peer-exchange", "h2", "http/1.1"]),
    })
}

/// `virtualInbound` with `chains` for the pod's ports, then Istio's catch-alls: what is sent
/// to 15006 itself is dropped, plaintext to any other port passes through.
fn virtual_inbound(chains: Vec<Value>) -> Value {
    let mut all = vec![json!({
        "name": "virtualInbound-blackhole",
        "filter_chain_match": {"destination_port": 15006},
        "filters": [istio_stats(true), tcp_proxy_to("BlackHoleCluster")],
    })];
    all.extend(chains);
    all.push(json!({
        "name": "virtualInbound",
        "filter_chain_match": {"prefix_ranges": [{"address_prefix": "0.0.0.0", "prefix_len": 0}],
                               "transport_protocol": "raw_buffer"},
        "filters": [istio_stats(true), tcp_proxy_to("InboundPassthroughClusterIpv4")],
    }));
    let disabled = json!({"destination_port_range": {"start": 15006, "end": 15007}});
    json!({
        "name": "virtualInbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "listener_filters": [
            {"name": "envoy.filters.listener.original_dst", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}},
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR},
             "filter_disabled": disabled},
            {"name": "envoy.filters.listener.http_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"},
             "filter_disabled": disabled},
        ],
        "listener_filters_timeout": "0s",
        "continue_on_listener_filters_timeout": true,
        "traffic_direction": "INBOUND",
        "filter_chains": all,
    })
}

fn secret(name: &str, ck: &CertKey) -> Value {
    json!({"name": name, "tls_certificate": tls_certificate_inline(ck)})
}

/// The control plane's resource set: what every sidecar sees, and per node its inbound
/// listener, inbound clusters and workload certificate.
fn mesh_resources(client_cert: &CertKey, server_cert: &CertKey, ca: &Path) -> Value {
    let root = json!({"name": "ROOTCA", "validation_context": {
        "trusted_ca": {"inline_string": fs::read_to_string(ca).unwrap()}}});
    json!({
        "resources": {
            LISTENER: [virtual_outbound(), outbound_http_listener(), outbound_tcp_listener()],
            ROUTE: [outbound_routes()],
            CLUSTER: shared_clusters(),
            ENDPOINT: [endpoints(HTTP_PORT, HTTP_SERVICE, &SERVER),
                       endpoints(TCP_PORT, TCP_SERVICE, &SERVER)],
            SECRET: [root],
        },
        "nodes": {
            CLIENT.node_id(): {
                LISTENER: [virtual_inbound(vec![])],
                SECRET: [secret("default", client_cert)],
            },
            SERVER.node_id(): {
                LISTENER: [virtual_inbound(vec![inbound_http_chain(HTTP_PORT),
                                                inbound_tcp_chain(TCP_PORT)])],
                CLUSTER: inbound_clusters(),
                SECRET: [secret("default", server_cert)],
            },
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Processes in pods

/// A child process, killed by PID when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the app server in `ns` and waits (bounded) for its `READY`.
fn start_app(ns: &Netns) -> Running {
    let mut child = ns
        .command_as(APP_UID, &app_python())
        .arg(peer_script("mesh_app.py"))
        .args([
            "serve",
            "--http",
            &HTTP_PORT.to_string(),
            "--tcp",
            &TCP_PORT.to_string(),
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tests/peers/mesh_app.py");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "READY" {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(SOON).expect("mesh_app.py READY");
    running
}

/// An interpreter the app's uid can run (the venv's may sit where that uid cannot read).
fn app_python() -> String {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".into()
    } else {
        python().display().to_string()
    }
}

/// The sidecar of `ns` as uid 1337, its output in `log`.
fn start_sidecar(ns: &Netns, bootstrap: &Path, log: &Path) -> Running {
    let out = fs::File::create(log).unwrap();
    let child = ns
        .command_as(PROXY_UID, BIN)
        .arg("-c")
        .arg(bootstrap)
        .args(["--concurrency", "2", "--log-level", "info"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start shardproxy");
    Running(child)
}

/// What curl got: the status, the headers (names lowercased) and the body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// GET `url` with curl inside `ns` as `uid`, or curl's complaint.
fn curl(ns: &Netns, uid: u32, url: &str) -> Result<Answer, String> {
    let out = ns
        .command_as(uid, "curl")
        .args(["-sS", "-m", "10", "-i", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end: {text}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {text}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The sidecar's admin `path` (127.0.0.1:15000 inside the pod).
fn admin(ns: &Netns, path: &str) -> Option<String> {
    get_in(ns, 15000, path)
}

/// GET `path` from 127.0.0.1:`port` inside the pod: the body of a 200.
fn get_in(ns: &Netns, port: u16, path: &str) -> Option<String> {
    curl(ns, 0, &format!("http://127.0.0.1:{port}{path}"))
        .ok()
        .filter(|a| a.status == 200)
        .map(|a| a.body)
}

/// The series of Prometheus family `family` the pod's 15090 listener (Istio's
/// `prometheus_stats`) serves: each one's labels and value.
fn series(ns: &Netns, family: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let text = get_in(ns, 15090, "/stats/prometheus").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            Some((prometheus_labels(labels), value.trim().parse().ok()?))
        })
        .collect()
}

/// `k="v",k2="v2"` (values escaped as Prometheus escapes them) by name.
fn prometheus_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let (mut value, mut chars) = (String::new(), after.char_indices());
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| if c == 'n' { '\n' } else { c })),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Waits (bounded) until the pod's sidecar exports a series of `family` carrying every label
/// of `wanted`, with a value of at least 1.
fn expect_series(ns: &Netns, who: &str, family: &str, wanted: &[(&str, &str)]) {
    let matches = |labels: &BTreeMap<String, String>| {
        wanted
            .iter()
            .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
    };
    let found = poll_for(SOON, || {
        series(ns, family)
            .into_iter()
            .any(|(labels, value)| matches(&labels) && value >= 1.0)
            .then_some(())
    });
    if found.is_none() {
        panic!(
            "{who}'s sidecar has no {family} series with {wanted:?}; it has {:#?}",
            series(ns, family)
        );
    }
}

/// The sidecar's counters and gauges, by name.
fn stats(ns: &Netns) -> BTreeMap<String, u64> {
    admin(ns, "/stats")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Waits until `pod`'s sidecar has ACKed every resource type it is served (its certificates
/// among them) and is live.
fn wait_ready(ns: &Netns, xds: &XdsServer, pod: &Pod, log: &Path) {
    let ready = poll_for(SOON, || {
        let acked = [LISTENER, ROUTE, CLUSTER, ENDPOINT, SECRET]
            .iter()
            .all(|type_url| {
                xds.record(&pod.node_id(), type_url)["acked"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            });
        let live = admin(ns, "/ready").is_some_and(|b| b.trim() == "LIVE");
        (acked && live).then_some(())
    });
    if ready.is_none() {
        let records: Vec<_> = [LISTENER, ROUTE, CLUSTER, ENDPOINT, SECRET]
            .iter()
            .map(|t| (t.rsplit('.').next().unwrap(), xds.record(&pod.node_id(), t)))
            .collect();
        panic!(
            "{}'s sidecar not ready: /ready {:?}\nxDS: {records:?}\nlog:\n{}",
            pod.app,
            admin(ns, "/ready"),
            tail(log)
        );
    }
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    text[text.len().saturating_sub(4000)..].to_string()
}

/// Counter `name` (0 when absent).
fn counter(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn client_reaches_server_through_both_sidecars_with_mtls() {
    let test = "client_reaches_server_through_both_sidecars_with_mtls";
    if !can_intercept(test) || !have_python(test, "grpc, envoy.service.discovery.v3") {
        return;
    }
    if !Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        skip(test, "needs curl (the app's client)", Missing::Peer);
        return;
    }
    let Some(golden) = golden_bootstrap(test) else {
        return;
    };
    let pki = pki();
    let (client_cert, server_cert) = (pki.workload(CLIENT.app), pki.workload(SERVER.app));
    let dir = TempDir::new("mesh");
    let pod_dir = |pod: &Pod| -> PathBuf {
        let d = dir.file(pod.app);
        fs::create_dir_all(&d).unwrap();
        d
    };
    let (client_dir, server_dir) = (pod_dir(&CLIENT), pod_dir(&SERVER));
    let sockets: Vec<PathBuf> = [&client_dir, &server_dir]
        .iter()
        .flat_map(|d| [d.join("XDS"), d.join("sds.sock")])
        .collect();
    let script = dir.file("resources.json");
    fs::write(
        &script,
        mesh_resources(&client_cert, &server_cert, &pki.ca).to_string(),
    )
    .unwrap();
    let socket_refs: Vec<&Path> = sockets.iter().map(PathBuf::as_path).collect();
    let xds = XdsServer::start_with(&script, 0, &socket_refs);
    for socket in &sockets {
        // The sidecars run as uid 1337: they must be able to connect.
        fs::set_permissions(socket, fs::Permissions::from_mode(0o777)).unwrap();
    }

    let client_ns = Netns::new("mc");
    let server_ns = Netns::new("ms");
    client_ns.link(
        &format!("{CLIENT_IP}/24"),
        &server_ns,
        &format!("{SERVER_IP}/24"),
    );
    for ns in [&client_ns, &server_ns] {
        ns.istio_iptables(INBOUND_EXCLUDED);
    }
    let _app = start_app(&server_ns);

    let mut sidecars = Vec::new();
    for (pod, ns, d) in [
        (&CLIENT, &client_ns, &client_dir),
        (&SERVER, &server_ns, &server_dir),
    ] {
        let bootstrap = d.join("envoy-rev.json");
        let b = pod_bootstrap(&golden, pod, &d.join("XDS"), &d.join("sds.sock"));
        fs::write(&bootstrap, serde_json::to_string_pretty(&b).unwrap()).unwrap();
        let log = d.join("proxy.log");
        sidecars.push(start_sidecar(ns, &bootstrap, &log));
        wait_ready(ns, &xds, pod, &log);
    }
    for pod in [&CLIENT, &SERVER] {
        for type_url in [LISTENER, CLUSTER, SECRET] {
            let record = xds.record(&pod.node_id(), type_url);
            assert!(
                record["nacked"].as_array().is_none_or(|n| n.is_empty()),
                "{}'s sidecar NACKed {type_url}: {record}",
                pod.app
            );
        }
    }

    // HTTP: the client app's plain request to the server pod's address.
    let url = format!("http://{SERVER_IP}:{HTTP_PORT}/hello");
    let answer = curl(&client_ns, APP_UID, &url);
    let logs = || {
        format!(
            "client log:\n{}\nserver log:\n{}",
            tail(&client_dir.join("proxy.log")),
            tail(&server_dir.join("proxy.log"))
        )
    };
    let Answer {
        status,
        headers,
        body,
    } = answer.unwrap_or_else(|e| panic!("curl {url}: {e}\n{}", logs()));
    assert_eq!(status, 200, "{headers:?} {body}\n{}", logs());
    let seen: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let app_headers: Vec<(String, String)> = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    eprintln!("the server app saw: {seen}");
    eprintln!("the client app got headers: {headers:?}");
    let xfcc = app_headers
        .iter()
        .find(|(k, _)| k == "x-forwarded-client-cert")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no XFCC reached the app: {seen}"));
    assert!(
        xfcc.contains(&format!("URI={}", spiffe(CLIENT.app))),
        "XFCC without the client's identity: {xfcc}"
    );
    assert!(
        xfcc.contains(&format!("By={}", spiffe(SERVER.app))),
        "XFCC without the server's identity: {xfcc}"
    );
    for (who, list) in [("server app", &app_headers), ("client app", &headers)] {
        let leaked: Vec<_> = list
            .iter()
            .filter(|(k, _)| k.starts_with("x-envoy-peer-metadata"))
            .collect();
        assert!(leaked.is_empty(), "the {who} saw peer metadata: {leaked:?}");
    }
    assert_eq!(
        seen["from"], "127.0.0.6",
        "the inbound passthrough's source"
    );
    assert_eq!(seen["path"], "/hello");

    // TCP: bytes echoed through both sidecars.
    let message = "bytes through two sidecars";
    let out = client_ns
        .command_as(APP_UID, &app_python())
        .arg(peer_script("mesh_app.py"))
        .args(["tcp", SERVER_IP, &TCP_PORT.to_string(), message])
        .output()
        .expect("run mesh_app.py tcp");
    let echoed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(echoed["echo"], message, "{echoed}\n{}", logs());

    // Both sidecars saw both: the client's outbound clusters did mTLS, the server's inbound
    // listener accepted two TLS connections and relayed each to the app.
    let http_cluster = format!("cluster.{}", outbound_name(HTTP_PORT, HTTP_SERVICE));
    let tcp_cluster = format!("cluster.{}", outbound_name(TCP_PORT, TCP_SERVICE));
    let expect = |ns: &Netns, who: &str, wanted: &[(String, u64)]| {
        let s = poll_for(SOON, || {
            let s = stats(ns);
            wanted
                .iter()
                .all(|(name, at_least)| counter(&s, name) >= *at_least)
                .then_some(s)
        });
        if s.is_none() {
            let s = stats(ns);
            let got: Vec<_> = wanted.iter().map(|(n, _)| (n, counter(&s, n))).collect();
            panic!("{who}'s sidecar stats: {got:?}\n{}", logs());
        }
    };
    expect(
        &client_ns,
        "client",
        &[
            (format!("{http_cluster}.upstream_rq_total"), 1),
            (format!("{http_cluster}.ssl.handshake"), 1),
            (format!("{tcp_cluster}.upstream_cx_total"), 1),
            (format!("{tcp_cluster}.ssl.handshake"), 1),
            ("listener.0.0.0.0_15001.downstream_cx_total".into(), 2),
        ],
    );
    expect(
        &server_ns,
        "server",
        &[
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
        ],
    );

    // Istio's standard metrics name both workloads from the exchanged metadata: the client
    // learns the server's from the response's peer headers, the server the client's from the
    // request's (HTTP) and from the TCP exchange (TCP); the server knows both principals.
    let client_side = [
        ("reporter", "source"),
        ("source_workload", CLIENT.app),
        ("source_workload_namespace", "default"),
        ("source_app", CLIENT.app),
        ("destination_workload", SERVER.app),
        ("destination_workload_namespace", "default"),
        ("destination_app", SERVER.app),
        ("destination_version", "v1"),
    ];
    let client_principal = spiffe(CLIENT.app);
    let server_principal = spiffe(SERVER.app);
    let server_side = [
        ("reporter", "destination"),
        ("source_workload", CLIENT.app),
        ("source_workload_namespace", "default"),
        ("source_canonical_service", CLIENT.app),
        ("destination_workload", SERVER.app),
        ("destination_canonical_service", SERVER.app),
        ("source_principal", client_principal.as_str()),
        ("destination_principal", server_principal.as_str()),
        ("connection_security_policy", "mutual_tls"),
    ];
    let http = [
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("destination_service", HTTP_SERVICE),
    ];
    let tcp = [
        ("request_protocol", "tcp"),
        ("destination_service", TCP_SERVICE),
    ];
    for (ns, who, side) in [
        (&client_ns, "client", &client_side[..]),
        (&server_ns, "server", &server_side[..]),
    ] {
        let with = |more: &[(&'static str, &'static str)]| [side, more].concat();
        expect_series(ns, who, "istio_requests_total", &with(&http));
        expect_series(ns, who, "istio_tcp_connections_opened_total", &with(&tcp));
    }
    drop(sidecars);
}
