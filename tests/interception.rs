//! Tests: sidecar interception for real — a network namespace per run, with the iptables
//! REDIRECT Istio's init container installs for outbound traffic, a virtual outbound listener
//! (`use_original_dst`, the `original_dst` listener filter) and listeners that do not bind
//! (`bind_to_port: false`), on Envoy 1.40 and shardproxy with the same bootstrap.
//!
//! Needs root (namespaces, iptables) and the `ip` and `iptables` tools; tests/peers/
//! interception.py runs the pod's side inside the namespace.
mod common;

use common::{http::*, netns::*, *};
use serde_json::{json, Value};

const ORIGINAL_DST: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst";

/// A cluster whose one endpoint's port the peer fills in (`APP_PORT`).
fn placeholder_cluster(name: &str, port: &str) -> Value {
    json!({
        "name": name, "type": "STATIC", "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        }}]}]},
    })
}

/// An `ORIGINAL_DST` cluster (Istio's `PassthroughCluster`).
fn passthrough(name: &str) -> Value {
    json!({"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
           "connect_timeout": "2s"})
}

/// A listener that does not bind, on `ip:port`, whose connection manager answers with
/// `x-served-by: <name>` from `cluster`.
fn unbound(name: &str, ip: &str, port: u16, cluster: &str) -> Value {
    let mut manager = hcm(
        name,
        catch_all_routes(cluster, json!({})),
        vec![],
        json!({}),
    );
    manager["route_config"]["response_headers_to_add"] =
        json!([{"header": {"key": "x-served-by", "value": name}}]);
    json!({
        "name": name,
        "address": {"socket_address": {"address": ip, "port_value": port}},
        "bind_to_port": false,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": manager,
        }]}],
    })
}

/// Istio's outbound shape: `virtualOutbound` on 15001 (original_dst, use_original_dst, its
/// own chain relaying to `PassthroughCluster`), an HTTP listener for port 9080 on every
/// address, for 9091 one on every address and one on 127.0.0.1, for 9092 one routing to an
/// `ORIGINAL_DST` cluster too, and for 9093 one routing to such a cluster whose connections
/// come from 127.0.0.6 (`upstream_bind_config`, Istio's inbound passthrough).
fn outbound_bootstrap() -> Value {
    let virtual_outbound = json!({
        "name": "virtualOutbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
        "use_original_dst": true,
        "listener_filters": [{
            "name": "envoy.filters.listener.original_dst",
            "typed_config": {"@type": ORIGINAL_DST},
        }],
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": tcp_proxy("passthrough", "PassthroughCluster", json!({})),
        }]}],
    });
    // Istio's inbound passthrough: its connections come from 127.0.0.6.
    let mut inbound_passthrough = passthrough("InboundPassthrough");
    inbound_passthrough["upstream_bind_config"] =
        json!({"source_address": {"address": "127.0.0.6", "port_value": 0}});
    bootstrap(
        15000,
        vec![
            virtual_outbound,
            unbound("0.0.0.0_9080", "0.0.0.0", 9080, "app"),
            unbound("0.0.0.0_9091", "0.0.0.0", 9091, "app"),
            unbound("127.0.0.1_9091", "127.0.0.1", 9091, "app"),
            unbound("0.0.0.0_9092", "0.0.0.0", 9092, "PassthroughHttp"),
            unbound("0.0.0.0_9093", "0.0.0.0", 9093, "InboundPassthrough"),
        ],
        vec![
            placeholder_cluster("app", "APP_PORT"),
            passthrough("PassthroughCluster"),
            passthrough("PassthroughHttp"),
            inbound_passthrough,
        ],
    )
}

/// `flag port` for each port.
fn flags(flag: &str, ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .flat_map(|p| [flag.to_string(), p.to_string()])
        .collect()
}

/// Runs tests/peers/interception.py in a fresh namespace with `proxy` (its command line).
fn intercepted(tag: &str, bootstrap: &Value, proxy: &[String]) -> Value {
    let ns = Netns::new(tag);
    let dir = TempDir::new(tag);
    let template = dir.file("bootstrap.yaml");
    std::fs::write(&template, to_yaml(bootstrap)).unwrap();
    let out = ns
        .command("timeout")
        .arg("60")
        .arg(python())
        .arg(peer_script("interception.py"))
        .arg("--bootstrap")
        .arg(&template)
        .args(["--admin", "15000"])
        .args(flags("--redirect", &[9080, 9090, 9091, 9092, 9093]))
        .args(flags("--request", &[9080, 9090, 9091, 9092, 9093]))
        .args(flags("--direct", &[9090, 9092, 9093]))
        .arg("--")
        .args(proxy)
        .output();
    drop(ns);
    let out = out.expect("run interception.py");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{tag}: {e}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn redirected_connections_reach_the_listener_of_their_original_destination() {
    let test = "redirected_connections_reach_the_listener_of_their_original_destination";
    if !can_intercept(test) || !have_python(test, "json") {
        return;
    }
    let bootstrap = outbound_bootstrap();
    let mut runs = vec![(
        "shardproxy",
        vec![BIN.to_string(), "--concurrency".into(), "2".into()],
    )];
    match envoy_bin() {
        Some(envoy) => runs.insert(
            0,
            (
                "envoy",
                vec![
                    envoy.display().to_string(),
                    "--disable-hot-restart".into(),
                    "--concurrency".into(),
                    "2".into(),
                ],
            ),
        ),
        None => skip(&format!("{test} (envoy)"), NO_ENVOY, Missing::Peer),
    }
    let mut outcomes = Vec::new();
    for (who, proxy) in runs {
        let out = intercepted(who, &bootstrap, &proxy);
        assert_eq!(out["ready"], true, "{who}: {out}");
        let seen = |port: &str| {
            (
                out[port]["upstream"].clone(),
                out[port]["served_by"].clone(),
            )
        };
        // 9080: handed over to the listener on every address, which routes to the app.
        assert_eq!(
            seen("9080"),
            (json!("app"), json!("0.0.0.0_9080")),
            "{who}: {out}"
        );
        // 9090: no listener: the outbound listener's own chain relays it where it was going
        // (an ORIGINAL_DST cluster: the server on 9090 itself).
        assert_eq!(
            seen("9090"),
            (json!("direct:9090"), Value::Null),
            "{who}: {out}"
        );
        // 9091: the listener on the exact address wins over the one on every address.
        assert_eq!(
            seen("9091"),
            (json!("app"), json!("127.0.0.1_9091")),
            "{who}: {out}"
        );
        eprintln!("{who}: {out}");
        outcomes.push(out);
    }
    if let [envoy, ours] = outcomes.as_slice() {
        assert_eq!(ours, envoy, "shardproxy (left) and Envoy (right) differ");
    }
}
