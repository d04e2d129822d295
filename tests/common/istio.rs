//! Tests: what an Istio 1.22 control plane serves a pod — the pod's node (pilot-agent's
//! rendering of Istio's golden bootstrap), and xDS resources shaped as the real 1.22.3
//! sidecar and gateway dumps have them (virtual listeners, HTTP chains with Istio's filters,
//! EDS clusters with auto mTLS, inbound clusters, SDS secrets) — for the namespace mesh tests.
use std::{fs, path::Path};

use serde_json::{json, Value};

use super::http::{HCM, ROUTER};
use super::tls::{tls_certificate_inline, CertKey, DOWNSTREAM_TLS, TLS_INSPECTOR, UPSTREAM_TLS};
use super::{skip, Missing, TCP_PROXY};

pub const TYPED_STRUCT: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";
const HTTP_OPTIONS_URL: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const HTTP_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
const ISTIO_HTTP_ALPNS: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];
/// The ports Istio's sidecar injection keeps out of inbound capture (agent, health, stats).
pub const INBOUND_EXCLUDED: &[u16] = &[15020, 15021, 15090];

// ---------------------------------------------------------------------------------------------
// Pods

/// What a pod's proxy is: a sidecar, or a gateway (`router` in its node id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Sidecar,
    Router,
}

/// One pod: its proxy's kind, its workload (app and version labels, deployment and service
/// account names, namespace) and address.
pub struct Pod {
    pub kind: ProxyKind,
    pub app: &'static str,
    pub version: &'static str,
    pub workload: &'static str,
    pub sa: &'static str,
    pub namespace: &'static str,
    pub ip: &'static str,
}

impl Pod {
    /// A sidecar-injected pod of workload, app and service account `app`, version v1, in
    /// namespace `default`.
    pub const fn sidecar(app: &'static str, ip: &'static str) -> Pod {
        Pod {
            kind: ProxyKind::Sidecar,
            app,
            version: "v1",
            workload: app,
            sa: app,
            namespace: "default",
            ip,
        }
    }

    pub fn node_id(&self) -> String {
        let kind = match self.kind {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
        };
        format!(
            "{kind}~{}~{}.{ns}~{ns}.svc.cluster.local",
            self.ip,
            self.pod_name(),
            ns = self.namespace
        )
    }

    fn pod_name(&self) -> String {
        format!("{}-7c9d8f-x2kq", self.workload)
    }

    /// The pod's labels: app, version (not on a gateway, which has `istio: ingressgateway`)
    /// and Istio's canonical service and revision.
    fn labels(&self) -> Value {
        let mut labels = json!({
            "app": self.app,
            "service.istio.io/canonical-name": self.app,
            "service.istio.io/canonical-revision": self.version,
        });
        match self.kind {
            ProxyKind::Sidecar => labels["version"] = json!(self.version),
            ProxyKind::Router => labels["istio"] = json!("ingressgateway"),
        }
        labels
    }

    /// The `node` pilot-agent writes into the bootstrap for this pod.
    pub fn node(&self) -> Value {
        let mut node = json!({
            "id": self.node_id(),
            "cluster": format!("{}.{}", self.app, self.namespace),
            "metadata": {
                "NAME": self.pod_name(),
                "NAMESPACE": self.namespace,
                "WORKLOAD_NAME": self.workload,
                "SERVICE_ACCOUNT": self.sa,
                "OWNER": format!("kubernetes://apis/apps/v1/namespaces/{}/deployments/{}",
                                 self.namespace, self.workload),
                "CLUSTER_ID": "Kubernetes",
                "MESH_ID": "cluster.local",
                "INSTANCE_IPS": self.ip,
                "ISTIO_VERSION": "1.22.3",
                "LABELS": self.labels(),
                "ANNOTATIONS": {
                    "sidecar.istio.io/statsInclusionPrefixes": STATS_INCLUSION_PREFIXES.join(","),
                },
                "ENVOY_PROMETHEUS_PORT": 15090,
                "ENVOY_STATUS_PORT": 15021,
            },
        });
        if self.kind == ProxyKind::Sidecar {
            node["metadata"]["ANNOTATIONS"] = json!({
                "sidecar.istio.io/statsInclusionPrefixes": STATS_INCLUSION_PREFIXES.join(","),
            });
            node["metadata"]["INTERCEPTION_MODE"] = json!("REDIRECT");
            node["metadata"]["APP_CONTAINERS"] = json!(self.app);
        }
        node
    }

    /// The `istio` workload label of its endpoints (`name;namespace;canonical name;revision;
    /// cluster`).
    pub fn workload_label(&self) -> String {
        format!(
            "{};{};{};{};Kubernetes",
            self.workload, self.namespace, self.app, self.version
        )
    }

    /// Its SPIFFE identity.
    pub fn principal(&self) -> String {
        super::tls::spiffe_in(self.namespace, self.sa)
    }
}

/// Istio's golden bootstrap (pilot-agent's rendering), or `None` after saying why not.
pub fn golden_bootstrap(test: &str) -> Option<Value> {
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

/// What the pods' `sidecar.istio.io/statsInclusionPrefixes` annotation asks for: the
/// clusters' and listeners' counters the tests read, which Istio's default stats matcher
/// leaves out.
const STATS_INCLUSION_PREFIXES: [&str; 3] = ["cluster.outbound|", "cluster.inbound|", "listener."];

/// The pod's bootstrap: Istio's golden with this pod's node, its `xds-grpc` and `sds-grpc`
/// pipes at `xds` and `sds`, and its stats inclusion prefixes where pilot-agent renders them
/// (after `reporter=` in the stats matcher's inclusion list).
pub fn pod_bootstrap(golden: &Value, pod: &Pod, xds: &Path, sds: &Path) -> Value {
    let mut b = golden.clone();
    let patterns = b["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"]
        .as_array_mut()
        .expect("Istio's stats inclusion list");
    let prefixes = STATS_INCLUSION_PREFIXES.map(|p| json!({"prefix": p}));
    patterns.splice(1..1, prefixes);
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
// Filters

pub fn typed_struct(type_url: &str, value: Value) -> Value {
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

/// Istio's `istio.stats` (its standard metrics), as an HTTP or a network filter; inbound and
/// gateway ones do not fall back to the Host header.
pub fn istio_stats(no_host_fallback: bool) -> Value {
    let mut config = json!({"@type": "type.googleapis.com/stats.PluginConfig"});
    if no_host_fallback {
        config["disable_host_header_fallback"] = json!(true);
    }
    json!({"name": "istio.stats", "typed_config": config})
}

pub fn tcp_proxy_to(cluster: &str) -> Value {
    json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": TCP_PROXY, "stat_prefix": cluster, "cluster": cluster}})
}

fn http_filter(name: &str, typed_config: Value) -> Value {
    json!({"name": name, "typed_config": typed_config})
}

/// Which side of a pod an HTTP connection manager serves: a sidecar's outbound or inbound
/// listener, or a gateway's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Outbound,
    Inbound,
    Gateway,
}

/// The HTTP filters of an Istio proxy's connection managers: peer metadata (discovery and
/// propagation upstream, or downstream inbound), `authz` (Istio's RBAC filters, inbound),
/// istio.alpn (not inbound), fault, cors, stats, router.
fn istio_http_filters(side: Side, authz: Vec<Value>) -> Vec<Value> {
    let peers = match side {
        Side::Inbound => "downstream",
        Side::Outbound | Side::Gateway => "upstream",
    };
    let peer = typed_struct(
        "io.istio.http.peer_metadata.Config",
        json!({
            format!("{peers}_discovery"): [{"istio_headers": {}}, {"workload_discovery": {}}],
            format!("{peers}_propagation"): [{"istio_headers": {}}],
        }),
    );
    let mut filters = vec![http_filter("istio.metadata_exchange", peer)];
    filters.extend(authz);
    if side != Side::Inbound {
        filters.push(istio_alpn());
    }
    filters.extend([
        http_filter(
            "envoy.filters.http.fault",
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}),
        ),
        http_filter(
            "envoy.filters.http.cors",
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}),
        ),
        istio_stats(side != Side::Outbound),
        http_filter("envoy.filters.http.router", json!({"@type": ROUTER})),
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

/// An AuthorizationPolicy with `action: DENY` as Istio renders it on inbound HTTP chains:
/// policy `name` (`ns[..]-policy[..]-rule[0]`) denies requests whose path is `path` from
/// `principal` (the peer's SPIFFE id, as `istio_authn` records it).
pub fn rbac_deny(name: &str, principal: &str, path: &str) -> Value {
    let one_of = |key: &str, inner: Value| json!({key: {"rules": [inner]}});
    let permission = json!({"and_rules": {"rules": [
        one_of("or_rules", json!({"url_path": {"path": {"exact": path}}})),
    ]}});
    let peer = json!({"filter_state": {"key": "io.istio.peer_principal",
                                       "string_match": {"exact": principal}}});
    let id = json!({"and_ids": {"ids": [{"or_ids": {"ids": [peer]}}]}});
    http_filter(
        "envoy.filters.http.rbac",
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "DENY", "policies": {name: {
                "permissions": [permission], "principals": [id]}}},
            "shadow_rules_stat_prefix": "istio_dry_run_deny_",
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Listeners

/// `virtualOutbound`: every redirected connection, handed to the listener of its original
/// destination, else relayed where it was going.
pub fn virtual_outbound() -> Value {
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

/// An HTTP connection manager of `side` routed by RDS `route`.
fn rds_manager(side: Side, stat_prefix: &str, route: &str) -> Value {
    let mut manager = json!({
        "@type": HCM,
        "stat_prefix": stat_prefix,
        "rds": {"config_source": {"ads": {}, "initial_fetch_timeout": "0s",
                                  "resource_api_version": "V3"},
                "route_config_name": route},
        "http_filters": istio_http_filters(side, vec![]),
        "use_remote_address": false,
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        "normalize_path": true,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
    });
    if side == Side::Gateway {
        let gateway = json!({
            "http_protocol_options": {},
            "server_name": "istio-envoy",
            "use_remote_address": true,
            "forward_client_cert_details": "SANITIZE_SET",
            "set_current_client_cert_details": {"subject": true, "cert": true, "dns": true,
                                                "uri": true},
            "request_id_extension": {"typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                "use_request_id_for_trace_sampling": true}},
        });
        manager
            .as_object_mut()
            .unwrap()
            .extend(gateway.as_object().unwrap().clone());
    }
    manager
}

/// `0.0.0.0_<port>`: a sidecar's HTTP service port, routed by RDS `<port>`.
pub fn outbound_http_listener(port: u16) -> Value {
    let manager = rds_manager(
        Side::Outbound,
        &format!("outbound_0.0.0.0_{port}"),
        &port.to_string(),
    );
    json!({
        "name": format!("0.0.0.0_{port}"),
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
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
            {"name": "envoy.filters.listener.http_inspector", "typed_config": {"@type": HTTP_INSPECTOR}},
        ],
        "listener_filters_timeout": "0s",
        "continue_on_listener_filters_timeout": true,
        "traffic_direction": "OUTBOUND",
        "bind_to_port": false,
    })
}

/// A gateway's `0.0.0.0_<port>` (a Gateway server on that port): bound, routed by RDS
/// `http.<port>`, as the 1.22.3 ingress gateway dump has it.
pub fn gateway_http_listener(port: u16) -> Value {
    let manager = rds_manager(
        Side::Gateway,
        &format!("outbound_0.0.0.0_{port}"),
        &format!("http.{port}"),
    );
    json!({
        "name": format!("0.0.0.0_{port}"),
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": manager}]}],
        "listener_filters_timeout": "0s",
        "traffic_direction": "OUTBOUND",
    })
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

/// A PeerAuthentication's mode: whether a pod's inbound chains take plaintext too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAuthn {
    /// mTLS from the mesh, and plaintext from anywhere: each port has a TLS and a raw_buffer
    /// chain, and `virtualInbound`'s catch-all passes plaintext through.
    Permissive,
    /// Only mTLS: a plaintext connection finds no chain.
    Strict,
}

/// The inbound HTTP chains of `port` to `inbound|port||`, each connection manager running
/// `authz` (Istio's RBAC filters) after the peer metadata: mTLS with Istio's HTTP ALPNs, and
/// under PERMISSIVE plaintext HTTP too.
pub fn inbound_http_chains(
    port: u16,
    service: &str,
    authz: Vec<Value>,
    mode: PeerAuthn,
) -> Vec<Value> {
    let manager = json!({"name": "envoy.filters.network.http_connection_manager",
                         "typed_config": inbound_http_manager(port, service, authz)});
    let mut chains = vec![json!({
        "name": format!("0.0.0.0_{port}"),
        "filter_chain_match": {"destination_port": port, "transport_protocol": "tls",
                               "application_protocols": ISTIO_HTTP_ALPNS},
        "filters": [istio_authn(), tcp_exchange(), manager],
        "transport_socket": downstream_mtls(&["h2", "http/1.1"]),
    })];
    if mode == PeerAuthn::Permissive {
        chains.push(json!({
            "name": format!("0.0.0.0_{port}"),
            "filter_chain_match": {"destination_port": port, "transport_protocol": "raw_buffer",
                                   "application_protocols": ["http/1.1", "h2c"]},
            "filters": [istio_authn(), tcp_exchange(), manager],
        }));
    }
    chains
}

/// The connection manager of an inbound HTTP chain.
fn inbound_http_manager(port: u16, service: &str, authz: Vec<Value>) -> Value {
    let cluster = inbound_name(port);
    json!({
        "@type": HCM,
        "stat_prefix": format!("inbound_0.0.0.0_{port}"),
        "route_config": {"name": cluster, "virtual_hosts": [{
            "name": format!("inbound|http|{port}"),
            "domains": ["*"],
            "routes": [{"name": "default", "match": {"prefix": "/"},
                        "route": {"cluster": cluster, "timeout": "0s"},
                        "decorator": {"operation": format!("{service}:{port}/*")}}],
        }], "validate_clusters": false},
        "http_filters": istio_http_filters(Side::Inbound, authz),
        "server_name": "istio-envoy",
        "use_remote_address": false,
        "forward_client_cert_details": "APPEND_FORWARD",
        "set_current_client_cert_details": {"subject": true, "dns": true, "uri": true},
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        "normalize_path": true,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
    })
}

/// The inbound TCP chains of `port` to `inbound|port||`: mTLS with the exchange ALPN, and
/// under PERMISSIVE plaintext too.
pub fn inbound_tcp_chains(port: u16, mode: PeerAuthn) -> Vec<Value> {
    let filters = json!([
        istio_authn(),
        tcp_exchange(),
        istio_stats(true),
        tcp_proxy_to(&inbound_name(port))
    ]);
    let mut chains = vec![json!({
        "name": format!("0.0.0.0_{port}"),
        "filter_chain_match": {"destination_port": port, "transport_protocol": "tls",
                               "application_protocols": ["istio-peer-exchange", "istio"]},
        "filters": filters,
        "transport_socket": downstream_mtls(&["istio-peer-exchange", "h2", "http/1.1"]),
    })];
    if mode == PeerAuthn::Permissive {
        chains.push(json!({
            "name": format!("0.0.0.0_{port}"),
            "filter_chain_match": {"destination_port": port, "transport_protocol": "raw_buffer"},
            "filters": filters,
        }));
    }
    chains
}

/// `virtualInbound` with `chains` for the pod's ports, then Istio's catch-alls: what is sent
/// to 15006 itself is dropped, anything to a port without chains passes through (plaintext
/// only under PERMISSIVE). (Chains that name a port are the only ones tried for it.)
pub fn virtual_inbound(chains: Vec<Value>, mode: PeerAuthn) -> Value {
    let mut all = vec![json!({
        "name": "virtualInbound-blackhole",
        "filter_chain_match": {"destination_port": 15006},
        "filters": [istio_stats(true), tcp_proxy_to("BlackHoleCluster")],
    })];
    all.extend(chains);
    let any = json!([{"address_prefix": "0.0.0.0", "prefix_len": 0}]);
    all.push(match mode {
        PeerAuthn::Permissive => json!({
            "name": "virtualInbound",
            "filter_chain_match": {"prefix_ranges": any, "transport_protocol": "raw_buffer"},
            "filters": [istio_stats(true), tcp_proxy_to("InboundPassthroughClusterIpv4")],
        }),
        PeerAuthn::Strict => json!({
            "name": "virtualInbound",
            "filter_chain_match": {"prefix_ranges": any, "transport_protocol": "tls"},
            "filters": [istio_authn(), tcp_exchange(), istio_stats(true),
                        tcp_proxy_to("InboundPassthroughClusterIpv4")],
            "transport_socket": downstream_mtls(&["istio-peer-exchange", "h2", "http/1.1"]),
        }),
    });
    let disabled = json!({"destination_port_range": {"start": 15006, "end": 15007}});
    json!({
        "name": "virtualInbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "listener_filters": [
            {"name": "envoy.filters.listener.original_dst", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}},
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR},
             "filter_disabled": disabled},
            {"name": "envoy.filters.listener.http_inspector", "typed_config": {"@type": HTTP_INSPECTOR},
             "filter_disabled": disabled},
        ],
        "listener_filters_timeout": "0s",
        "continue_on_listener_filters_timeout": true,
        "traffic_direction": "INBOUND",
        "filter_chains": all,
    })
}

// ---------------------------------------------------------------------------------------------
// Routes

/// Istio's retry policy on every outbound route.
fn retry_policy() -> Value {
    json!({
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": "5",
        "retriable_status_codes": [503],
    })
}

/// A route to `cluster` (a name, or `[(name, weight)]` for weighted clusters) as Istio writes
/// one: its timeout, retry policy and decorator; `matched` is its `match`.
pub fn istio_route(matched: Value, to: RouteTo, operation: &str) -> Value {
    let mut action = json!({"timeout": "0s", "retry_policy": retry_policy(),
                            "max_grpc_timeout": "0s"});
    match to {
        RouteTo::Cluster(name) => action["cluster"] = json!(name),
        RouteTo::Weighted(clusters) => {
            let clusters: Vec<Value> = clusters
                .iter()
                .map(|(name, weight)| json!({"name": name, "weight": weight}))
                .collect();
            action["weighted_clusters"] = json!({"clusters": clusters});
        }
    }
    json!({"match": matched, "route": action, "decorator": {"operation": operation}})
}

/// Where a route goes: one cluster, or clusters by weight.
pub enum RouteTo {
    Cluster(String),
    Weighted(Vec<(String, u32)>),
}

/// A VirtualService route's `match` on the path prefix `/` and request headers
/// (`[(name, string_match)]`), as Istio writes it.
pub fn headers_match(headers: &[(&str, Value)]) -> Value {
    let headers: Vec<Value> = headers
        .iter()
        .map(|(name, m)| json!({"name": name, "string_match": m}))
        .collect();
    json!({"prefix": "/", "case_sensitive": true, "headers": headers})
}

/// The virtual host of `service` (its FQDN) on `port` with `routes`, reached by the service's
/// names and its cluster IP (port-less: the route configuration ignores ports).
pub fn service_virtual_host(
    service: &str,
    port: u16,
    cluster_ip: &str,
    routes: Vec<Value>,
) -> Value {
    let short = service.split('.').next().unwrap();
    let namespace = service.split('.').nth(1).unwrap();
    json!({
        "name": format!("{service}:{port}"),
        "domains": [service, short, format!("{short}.{namespace}.svc"),
                    format!("{short}.{namespace}"), cluster_ip],
        "routes": routes,
        "include_request_attempt_count": true,
    })
}

/// The default route of a service without a VirtualService: to `outbound|port||service`.
pub fn default_service_route(port: u16, service: &str) -> Value {
    let mut route = istio_route(
        json!({"prefix": "/"}),
        RouteTo::Cluster(outbound_name(port, "", service)),
        &format!("{service}:{port}/*"),
    );
    route["name"] = json!("default");
    route
}

/// RDS `name`: `virtual_hosts`, then Istio's `allow_any` when `allow_any` (sidecars; a
/// gateway has none), in the 1.22 shape (`ignore_port_in_host_matching`).
pub fn route_configuration(name: &str, mut virtual_hosts: Vec<Value>, allow_any: bool) -> Value {
    if allow_any {
        virtual_hosts.push(json!({"name": "allow_any", "domains": ["*"], "routes": [{
            "name": "allow_any",
            "match": {"prefix": "/"},
            "route": {"cluster": "PassthroughCluster", "timeout": "0s",
                      "max_grpc_timeout": "0s"},
        }], "include_request_attempt_count": true}));
    }
    json!({
        "name": name,
        "virtual_hosts": virtual_hosts,
        "validate_clusters": false,
        "max_direct_response_body_size_bytes": 1048576,
        "ignore_port_in_host_matching": true,
    })
}

// ---------------------------------------------------------------------------------------------
// Clusters and endpoints

/// Istio's `outbound|port|subset|service`.
pub fn outbound_name(port: u16, subset: &str, service: &str) -> String {
    format!("outbound|{port}|{subset}|{service}")
}

/// An outbound EDS cluster to `service` (its `subset` when not empty: a DestinationRule's),
/// whose `tlsMode: istio` endpoints get mTLS to workload identity `principal`, with the TCP
/// metadata exchange as its upstream filter.
pub fn outbound_cluster(port: u16, subset: &str, service: &str, principal: &str) -> Value {
    let name = outbound_name(port, subset, service);
    let short = service.split('.').next().unwrap();
    let namespace = service.split('.').nth(1).unwrap();
    let mut istio = json!({"services": [{"namespace": namespace, "name": short, "host": service}]});
    if !subset.is_empty() {
        istio["subset"] = json!(subset);
        istio["config"] = json!(format!(
            "/apis/networking.istio.io/v1alpha3/namespaces/{namespace}/destination-rule/{short}"
        ));
    }
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
        "metadata": {"filter_metadata": {"istio": istio}},
        "common_lb_config": {"locality_weighted_lb_config": {}},
        "filters": [tcp_exchange()],
        "transport_socket_matches": [
            {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": UPSTREAM_TLS,
                    "common_tls_context": mesh_tls(&["istio-peer-exchange", "istio"],
                                                   json!({"exact": principal})),
                    "sni": format!("outbound_.{port}_.{subset}_.{service}"),
                },
            }},
            {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
            }},
        ],
    })
}

/// The endpoints of an outbound cluster: `pods` on `port`, labelled as Istio labels
/// sidecar-injected workloads.
pub fn endpoints(port: u16, subset: &str, service: &str, pods: &[&Pod]) -> Value {
    let lb_endpoints: Vec<Value> = pods
        .iter()
        .map(|pod| {
            json!({
                "endpoint": {"address": {"socket_address": {"address": pod.ip, "port_value": port}}},
                "health_status": "HEALTHY",
                "metadata": {"filter_metadata": {
                    "envoy.transport_socket_match": {"tlsMode": "istio"},
                    "istio": {"workload": pod.workload_label()},
                }},
                "load_balancing_weight": 1,
            })
        })
        .collect();
    json!({
        "cluster_name": outbound_name(port, subset, service),
        "endpoints": [{"locality": {}, "lb_endpoints": lb_endpoints}],
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

pub fn inbound_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// The clusters every proxy gets besides the services' (passthrough, blackhole, inbound
/// passthrough).
pub fn passthrough_clusters() -> Vec<Value> {
    vec![
        original_dst("PassthroughCluster", json!({"filters": [tcp_exchange()]})),
        json!({"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"}),
        original_dst("InboundPassthroughClusterIpv4", from_inbound_passthrough()),
    ]
}

/// A pod's inbound clusters, one per service port (`[(port, service FQDN)]`).
pub fn inbound_clusters(ports: &[(u16, &str)]) -> Vec<Value> {
    ports
        .iter()
        .map(|(port, service)| {
            let mut extra = from_inbound_passthrough();
            extra["metadata"] = json!({"filter_metadata": {"istio": {"services": [
                {"namespace": service.split('.').nth(1).unwrap(), "host": service,
                 "name": service.split('.').next().unwrap()}]}}});
            original_dst(&inbound_name(*port), extra)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// The workload certificate `default` (or any named secret) holding `ck`.
pub fn secret(name: &str, ck: &CertKey) -> Value {
    json!({"name": name, "tls_certificate": tls_certificate_inline(ck)})
}

/// `ROOTCA`: the mesh's trust anchor, the CA certificate in file `ca`.
pub fn root_ca(ca: &Path) -> Value {
    json!({"name": "ROOTCA", "validation_context": {
        "trusted_ca": {"inline_string": fs::read_to_string(ca).unwrap()}}})
}
