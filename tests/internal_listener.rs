//! Tests: internal listeners (`internal_listener`) and `envoy_internal_address` endpoints, the
//! in-process connections Istio's ambient (HBONE) configs route through. The Envoy-native
//! pieces — a terminated CONNECT and an HTTP route into internal listeners, a missing
//! internal listener — run on Envoy 1.40 and on shardproxy with the same bootstrap and the
//! same outcome asserted (tests/common/tls.rs `on_both`). Istio's own filters on that path,
//! which Envoy 1.40 lacks (`istio_authn` with `shared`, `connect_authority`, `connect_baggage`,
//! `istio.set_internal_dst_address`), run on shardproxy in Istio 1.19's `connect_terminate` →
//! `main_internal` shape: mTLS CONNECT on an HBONE listener, the tunnel's destination restored
//! from its authority and matched by port on the internal listener, the peer's SPIFFE id and
//! its baggage carried into it (RBAC and istio.stats read them), the ORIGINAL_DST cluster
//! sending the request to the authority.
mod common;

use std::collections::BTreeMap;

use common::{http::*, tls::*, *};
use serde_json::{json, Value};

const TYPED_STRUCT: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";
const RAW_BUFFER: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// The bootstrap extension Envoy needs before it takes internal listeners (as Istio's
/// bootstrap writes it).
fn internal_listener_extension() -> Value {
    json!([{
        "name": "envoy.bootstrap.internal_listener",
        "typed_config": {
            "@type": TYPED_STRUCT,
            "type_url": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener",
            "value": {"buffer_size_kb": 64},
        },
    }])
}

/// A STATIC cluster whose one endpoint is the internal listener `listener`, through an
/// `internal_upstream` socket passing the endpoint's `tunnel` metadata.
fn internal_cluster(name: &str, listener: &str) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"envoy_internal_address": {"server_listener_name": listener}}},
            "metadata": {"filter_metadata": {"tunnel": {"note": name}}},
        }]}]},
        "transport_socket": {"name": "internal_upstream", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport",
            "passthrough_metadata": [{"kind": {"host": {}}, "name": "tunnel"}],
            "transport_socket": {"name": "raw", "typed_config": {"@type": RAW_BUFFER}},
        }},
    })
}

/// An internal listener named `name` with `chains`.
fn internal_listener(name: &str, chains: Vec<Value>, extra: Value) -> Value {
    let mut listener = json!({"name": name, "internal_listener": {}, "filter_chains": chains});
    merge(&mut listener, extra);
    listener
}

/// An HTTP/2 connection manager terminating CONNECT (`connect_matcher` → `cluster`).
fn hbone_hcm(stat_prefix: &str, cluster: &str, filters: Vec<Value>, route_extra: Value) -> Value {
    let mut route = json!({"match": {"connect_matcher": {}}, "route": {
        "cluster": cluster,
        "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}],
    }});
    merge(&mut route, route_extra);
    hcm(
        stat_prefix,
        json!({"name": "hbone", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]}),
        filters,
        json!({
            "codec_type": "HTTP2",
            "http2_protocol_options": {"allow_connect": true},
            "upgrade_configs": [{"upgrade_type": "CONNECT"}],
        }),
    )
}

#[derive(Debug, PartialEq)]
struct Outcome {
    tunnels: Value,
    through_http: (u16, Option<String>, Option<String>),
    missing: u16,
    stats: BTreeMap<String, i64>,
}

#[test]
fn tunnels_and_requests_reach_internal_listeners_as_in_envoy() {
    let test = "tunnels_and_requests_reach_internal_listeners_as_in_envoy";
    if !have_python(test, "h2") {
        return;
    }
    let echo = Upstream::echo();
    let apps = EchoUpstreams::start(&["app"], None);
    let tcp_chain = json!({"filters": [{
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": tcp_proxy("inner_tcp", "echo", json!({})),
    }]});
    let http_chain = filter_chain(
        Value::Null,
        vec![hcm_filter(hcm(
            "inner_http",
            catch_all_routes("app", json!({})),
            vec![],
            json!({}),
        ))],
        None,
    );
    let front_routes = json!({"name": "front", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/missing"}, "route": {"cluster": "to_missing"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "to_http"}},
    ]}]});
    let mut bootstrap = bootstrap(
        0,
        vec![
            http_listener("hbone", 0, hbone_hcm("hbone", "to_tcp", vec![], json!({}))),
            http_listener("front", 0, hcm("front", front_routes, vec![], json!({}))),
            internal_listener("inner_tcp", vec![tcp_chain], json!({})),
            internal_listener("inner_http", vec![http_chain], json!({})),
        ],
        vec![
            cluster("echo", &[(echo.port, 1)], json!({})),
            cluster("app", &[(apps.port("app"), 1)], json!({})),
            internal_cluster("to_tcp", "inner_tcp"),
            internal_cluster("to_http", "inner_http"),
            internal_cluster("to_missing", "nowhere"),
        ],
    );
    bootstrap["bootstrap_extensions"] = internal_listener_extension();
    let outcome = on_both(test, &bootstrap, |proxy| {
        let (hbone, front) = (proxy.port("hbone"), proxy.port("front"));
        let port = hbone.to_string();
        let tunnels = peer_json(
            "h2_tunnel.py",
            &["connect", "--port", &port, "--streams", "2"].map(String::from),
        );
        let response = HttpConn::open(front)
            .exchange(
                "GET",
                &request("GET", "/through", &[("host", "app.test")], b""),
            )
            .expect("a response through the internal listener");
        let echoed = response.echo();
        let through_http = (
            response.status(),
            echoed["upstream"].as_str().map(String::from),
            echoed["target"].as_str().map(String::from),
        );
        let missing = HttpConn::open(front)
            .exchange(
                "GET",
                &request("GET", "/missing", &[("host", "app.test")], b""),
            )
            .expect("an answer for a missing internal listener")
            .status();
        let stats = settled_stats(
            proxy,
            "",
            &[
                "tcp.inner_tcp.downstream_cx_total",
                "http.inner_http.downstream_rq_completed",
                "cluster.to_tcp.upstream_cx_total",
                "cluster.to_http.upstream_rq_total",
            ],
            |s| s["tcp.inner_tcp.downstream_cx_total"] >= 2,
        );
        Outcome {
            tunnels,
            through_http,
            missing,
            stats,
        }
    })
    .expect("shardproxy ran");
    for stream in outcome.tunnels["streams"].as_array().unwrap() {
        assert_eq!(stream["status"], 200, "{outcome:?}");
        assert!(
            stream["echo"].as_str().unwrap().starts_with("tunnel-"),
            "{outcome:?}"
        );
        assert_eq!(stream["ended"], true, "{outcome:?}");
    }
    let app = (200, Some("app".to_string()), Some("/through".to_string()));
    assert_eq!(outcome.through_http, app, "{outcome:?}");
    assert_eq!(outcome.missing, 503, "{outcome:?}");
}

/// The filters of Istio 1.19's `connect_terminate` listener, as istiod sends them
/// (`TypedStruct`-wrapped).
fn istio_typed(type_url: &str, value: Value) -> Value {
    json!({"@type": TYPED_STRUCT, "type_url": format!("type.googleapis.com/{type_url}"), "value": value})
}

/// The `connect_terminate` → `main_internal` pair on shardproxy (admin on port 0): mTLS HBONE
/// listener on `hbone`; the internal listener's chains: HTTP for destination port `app_port` (RBAC
/// allowing only `CLIENT_SPIFFE` as the shared peer principal, istio.stats, access log),
/// tcp_proxy for `echo_port`, each to an ORIGINAL_DST cluster.
fn hbone_inbound(hbone: u16, app_port: u16, echo_port: u16, log: &str) -> Value {
    let authn = json!({"name": "istio_authn", "typed_config": istio_typed("io.istio.network.authn.Config", json!({"shared": true}))});
    let filters = vec![
        json!({"name": "connect_baggage", "typed_config": istio_typed("io.istio.http.connect_baggage.Config", json!({}))}),
        json!({"name": "connect_authority", "typed_config": istio_typed("io.istio.http.connect_authority.Config", json!({}))}),
    ];
    let per_route = json!({"typed_per_filter_config": {"connect_authority":
        istio_typed("io.istio.http.connect_authority.Config", json!({"enabled": true}))}});
    let tls = downstream_tls(
        common_tls(
            vec![tls_certificate(&pki().server_ecdsa)],
            json!({"alpn_protocols": ["h2"], "validation_context": validation(&pki().ca, json!({}))}),
        ),
        json!({"require_client_certificate": true}),
    );
    let terminate = listener_with(
        "connect_terminate",
        hbone,
        vec![],
        vec![filter_chain(
            Value::Null,
            vec![
                authn,
                hcm_filter(hbone_hcm(
                    "connect_terminate",
                    "main_internal",
                    filters,
                    per_route,
                )),
            ],
            Some(tls),
        )],
    );
    let rbac = json!({"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"policies": {"sleep-only": {
            "permissions": [{"any": true}],
            "principals": [{"filter_state": {"key": "io.istio.peer_principal", "string_match": {"exact": CLIENT_SPIFFE}}}],
        }}},
    }});
    let stats = json!({"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}});
    let access_log = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_LOG,
            "path": log,
            "log_format": {"text_format_source": {"inline_string":
                "%DOWNSTREAM_LOCAL_ADDRESS% %UPSTREAM_HOST% %RESPONSE_CODE%\n"}},
        },
    }]);
    let inbound_http = hcm(
        "inbound_app",
        catch_all_routes("inbound_app", json!({})),
        vec![rbac, stats],
        json!({"access_log": access_log}),
    );
    let chain = |port: u16, filter: Value| json!({"filter_chain_match": {"destination_port": port}, "filters": [filter]});
    let main_internal = internal_listener(
        "main_internal",
        vec![
            chain(app_port, hcm_filter(inbound_http)),
            chain(
                echo_port,
                json!({"name": "envoy.filters.network.tcp_proxy",
                       "typed_config": tcp_proxy("inbound_tcp", "inbound_tcp", json!({}))}),
            ),
        ],
        json!({
            "traffic_direction": "INBOUND",
            "listener_filters": [{"name": "set_dst_address", "typed_config":
                istio_typed("istio.set_internal_dst_address.v1.Config", json!({}))}],
        }),
    );
    let original_dst = |name: &str| json!({"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"});
    let main_internal_cluster = json!({
        "name": "main_internal",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "main_internal", "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"envoy_internal_address": {"server_listener_name": "main_internal"}}},
        }]}]},
    });
    let mut bootstrap = bootstrap(
        0,
        vec![terminate, main_internal],
        vec![
            main_internal_cluster,
            original_dst("inbound_app"),
            original_dst("inbound_tcp"),
        ],
    );
    bootstrap["bootstrap_extensions"] = internal_listener_extension();
    bootstrap
}

/// One HBONE CONNECT to `authority` with the client certificate `client`, sending `send`
/// through the tunnel (tests/peers/h2_tunnel.py `hbone`).
fn hbone(port: u16, client: &CertKey, authority: &str, send: &str, half_close: bool) -> Value {
    let mut args: Vec<String> = [
        "hbone",
        "--port",
        &port.to_string(),
        "--authority",
        authority,
        "--header",
        "baggage=k8s.cluster.name=c1,k8s.namespace.name=default,k8s.deployment.name=sleep,service.name=sleep-svc,service.version=v7",
        "--send",
        send,
        "--tls-ca",
        &pki().ca.to_string_lossy(),
        "--tls-cert",
        &client.cert.to_string_lossy(),
        "--tls-key",
        &client.key.to_string_lossy(),
    ]
    .map(String::from)
    .to_vec();
    if half_close {
        args.push("--half-close".into());
    }
    peer_json("h2_tunnel.py", &args)
}

#[test]
fn hbone_inbound_restores_the_destination_and_the_peer_in_an_internal_listener() {
    let test = "hbone_inbound_restores_the_destination_and_the_peer_in_an_internal_listener";
    if !have_python(test, "h2") {
        return;
    }
    let apps = EchoUpstreams::start(&["app"], None);
    let echo = Upstream::echo();
    let dir = TempDir::new("hbone_inbound");
    let log = dir.file("access.log");
    let log_path = log.to_string_lossy().into_owned();
    let app = apps.port("app");
    let bootstrap = hbone_inbound(0, app, echo.port, &log_path);
    let proxy = HttpProxy::start(Kind::Shardproxy, test, &bootstrap);
    let port = proxy.port("connect_terminate");
    let request = "GET /hello HTTP/1.1\\r\\nHost: app.test\\r\\nConnection: close\\r\\n\\r\\n";
    let authority = format!("127.0.0.1:{app}");

    // The app is reached at the authority through the chain for its port; RBAC saw the
    // peer's SPIFFE id, shared from the HBONE connection into the internal one.
    let allowed = hbone(port, &pki().client, &authority, request, false);
    assert_eq!(allowed["status"], 200, "{allowed}");
    let received = allowed["received"].as_str().unwrap();
    assert!(received.starts_with("HTTP/1.1 200"), "{allowed}");
    assert!(received.contains("\"target\": \"/hello\""), "{allowed}");
    let line = &take_log_lines(&log, 1)[0];
    assert_eq!(
        line,
        &format!("{authority} {authority} 200"),
        "destination restored"
    );

    // Another workload's identity is denied by the same RBAC.
    let denied = hbone(port, &pki().client_other, &authority, request, false);
    let received = denied["received"].as_str().unwrap();
    assert!(received.starts_with("HTTP/1.1 403"), "{denied}");

    // The echo's port picks the tcp_proxy chain, whose ORIGINAL_DST cluster goes there.
    let tcp = hbone(
        port,
        &pki().client,
        &format!("127.0.0.1:{}", echo.port),
        "ping",
        true,
    );
    assert_eq!(
        (&tcp["status"], &tcp["received"]),
        (&json!(200), &json!("ping")),
        "{tcp}"
    );

    // A port no chain matches: the internal connection is closed, so is the tunnel.
    let unmatched = hbone(
        port,
        &pki().client,
        &format!("127.0.0.1:{}", refused_port()),
        "x",
        true,
    );
    assert_eq!(
        (&unmatched["received"], &unmatched["ended"]),
        (&json!(""), &json!(true))
    );
    proxy_stat_at_least(&proxy, "listener.main_internal.no_filter_chain_match", 1);

    // istio.stats named the downstream workload from the CONNECT's baggage.
    let text = http_get(proxy.admin, "/stats/prometheus").unwrap().body;
    let series = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap_or_else(|| panic!("no istio_requests_total for the 200:\n{text}"));
    for label in [
        "source_workload=\"sleep\"",
        "source_workload_namespace=\"default\"",
        "source_canonical_service=\"sleep-svc\"",
        "source_canonical_revision=\"v7\"",
        &format!("source_principal=\"{CLIENT_SPIFFE}\""),
    ] {
        assert!(series.contains(label), "{label} in {series}");
    }
}

/// Waits until `proxy`'s stat `name` is at least `min`.
fn proxy_stat_at_least(proxy: &HttpProxy, name: &str, min: i64) {
    wait_for(std::time::Duration::from_secs(10), name, || {
        (proxy.stats().get(name).copied().unwrap_or(0) >= min).then_some(())
    });
}

/// Istio's HBONE from both ends on one shardproxy: a plain TCP client of the `outbound`
/// listener reaches a service whose endpoint is the internal listener `connect_originate`
/// (its `tunnel` metadata passed through `internal_upstream`); `set_internal_dst_address`
/// restores the destination, and tcp_proxy's `tunneling_config` carries the connection in an
/// HTTP/2 CONNECT (authority `%DOWNSTREAM_LOCAL_ADDRESS%`, a baggage header) over mTLS to the
/// tunnel address, the `connect_terminate` listener of `hbone_inbound`, and on to the app.
#[test]
fn hbone_outbound_tunnels_through_connect_originate_to_the_inbound_side() {
    let test = "hbone_outbound_tunnels_through_connect_originate_to_the_inbound_side";
    let apps = EchoUpstreams::start(&["app"], None);
    let echo = Upstream::echo();
    // A fixed port: the outbound side's tunnel cluster names it in the same bootstrap.
    let hbone = free_port();
    let dir = TempDir::new("hbone_outbound");
    let log = dir.file("access.log");
    let app = apps.port("app");
    let mut b = hbone_inbound(hbone, app, echo.port, &log.to_string_lossy());
    let originate = internal_listener(
        "connect_originate",
        vec![json!({"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": tcp_proxy("connect_originate", "connect_originate", json!({
                "tunneling_config": {
                    "hostname": "%DOWNSTREAM_LOCAL_ADDRESS%",
                    "headers_to_add": [{"header": {"key": "baggage", "value":
                        "k8s.namespace.name=default,k8s.deployment.name=sleep,service.name=sleep-svc,service.version=v7"}}],
                },
            })),
        }]})],
        json!({"listener_filters": [{"name": "set_dst_address", "typed_config":
            istio_typed("istio.set_internal_dst_address.v1.Config", json!({}))}]}),
    );
    let client = listener("outbound", 0, tcp_proxy("outbound", "svc", json!(null)));
    let mut svc = internal_cluster("svc", "connect_originate");
    svc["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"] = json!({
        "filter_metadata": {"tunnel": {
            "destination": format!("127.0.0.1:{app}"),
            "address": format!("127.0.0.1:{hbone}"),
        }},
    });
    let tunnel_cluster = json!({
        "name": "connect_originate",
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
        "transport_socket": upstream_tls(
            json!({
                "tls_certificates": [tls_certificate(&pki().client)],
                "validation_context": validation(&pki().ca, json!({})),
                "alpn_protocols": ["h2"],
            }),
            json!({"sni": "localhost"}),
        ),
    });
    b["static_resources"]["listeners"]
        .as_array_mut()
        .unwrap()
        .extend([client, originate]);
    b["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .extend([svc, tunnel_cluster]);
    let proxy = HttpProxy::start(Kind::Shardproxy, test, &b);
    let response = HttpConn::open(proxy.port("outbound"))
        .exchange(
            "GET",
            &request("GET", "/through-hbone", &[("host", "app.test")], b""),
        )
        .expect("a response through both ends of HBONE");
    assert_eq!(response.status(), 200, "{}", response.text());
    assert_eq!(response.echo()["target"], "/through-hbone");
    // The inbound side saw the destination the outbound endpoint's metadata named.
    let line = &take_log_lines(&log, 1)[0];
    let authority = format!("127.0.0.1:{app}");
    assert_eq!(line, &format!("{authority} {authority} 200"));
    let stats = settled_stats(
        &proxy,
        "",
        &[
            "cluster.connect_originate.upstream_rq_total",
            "cluster.svc.upstream_cx_total",
        ],
        |s| s["cluster.connect_originate.upstream_rq_total"] >= 1,
    );
    assert_eq!(stats["cluster.svc.upstream_cx_total"], 1, "{stats:?}");
    // The peer's baggage from the tunnel request names the workload on the inbound side.
    let text = http_get(proxy.admin, "/stats/prometheus").unwrap().body;
    assert!(
        text.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("source_workload=\"sleep\"")
            && l.contains(&format!("source_principal=\"{CLIENT_SPIFFE}\""))),
        "{text}"
    );
}
