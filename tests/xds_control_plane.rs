//! Tests: the xDS test control plane (tests/peers/xds_server.py) proven against real Envoy —
//! ADS over gRPC (state of the world and delta) delivers LDS and CDS, Envoy ACKs them, a bad
//! listener is NACKed while the old one keeps serving, pushed route and cluster changes take
//! effect, removed listeners stop, Delta names the server lacks are "does not exist", dropped
//! streams reconnect; and Envoy's verdicts on the real Istio config dumps (the reference
//! column of docs/istio-gap-list.md).

mod common;

use std::fs;

use common::http::{envoy_bin, EchoUpstreams, HttpProxy, Kind, NO_ENVOY};
use common::xds::*;
use common::{
    addr, cluster, free_port, http_get, skip, socket_address, wait_for, Missing, TempDir, SOON,
};
use serde_json::{json, Value};

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
        skip(
            &format!("envoy_follows_the_control_plane ({mode})"),
            NO_ENVOY,
            Missing::Peer,
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
    let bootstrap = ads_bootstrap(0, node, xds.ads_port, api_type);
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

/// Whether the Envoy binary is there; says so on stderr when a test is skipped for lack of it.
#[test]
fn delta_names_the_server_lacks_are_removed_resources() {
    if !have_envoy("delta_names_the_server_lacks_are_removed_resources") {
        return;
    }
    let upstreams = EchoUpstreams::start(&["one"], None);
    let listen = free_port();
    let dir = TempDir::new("xds-delta-absent");
    let set = resource_set(vec![svc_listener(listen, "1")], vec![eds_cluster("svc")]);
    let node = "envoy-delta-absent";
    // Envoy subscribes to EDS `svc` by name and waits for it forever; the server has none and
    // says so in removed_resources, which ends the wait: Envoy gets ready (HttpProxy::start
    // waits for /ready) with the cluster active and empty, so requests find no upstream.
    let (xds, envoy) = envoy_on(&set, node, "DELTA_GRPC", &dir);
    let stream = xds.streams().pop().expect("Envoy's ADS stream");
    assert_eq!(stream["subscribed"][ENDPOINT]["names"], json!(["svc"]));
    assert_eq!(stream["subscribed"][ENDPOINT]["sent"], json!({}));
    assert_eq!(envoy.stats()["cluster_manager.warming_clusters"], 0);
    let status = wait_for(SOON, "the listener to answer", || {
        http_get(addr(listen), "/").ok().map(|r| r.status)
    });
    assert_eq!(
        status, 503,
        "a cluster whose endpoints do not exist has no hosts"
    );

    // The assignment appears later: it is sent, and traffic flows.
    let assignment = json!({"cluster_name": "svc", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": socket_address(upstreams.port("one"))}}]}]});
    xds.push(&json!({"resources": {ENDPOINT: [assignment]}}));
    let seen = wait_for(SOON, "the late endpoints to serve", || through(listen));
    assert_eq!(seen, ("one".to_string(), "1".to_string()));
}

#[test]
fn removed_listener_stops_state_of_the_world() {
    removed_listener_stops("GRPC", "sotw");
}

#[test]
fn removed_listener_stops_delta() {
    removed_listener_stops("DELTA_GRPC", "delta");
}

/// Two listeners; one removed by `remove`, re-added, then removed by a shorter set: each
/// removal is ACKed and stops that listener while the other keeps serving.
fn removed_listener_stops(api_type: &str, mode: &str) {
    if !have_envoy(&format!("removed_listener_stops ({mode})")) {
        return;
    }
    let upstreams = EchoUpstreams::start(&["one"], None);
    let (port_a, port_b) = (free_port(), free_port());
    let mut b = svc_listener(port_b, "b");
    b["name"] = json!("b");
    let a = svc_listener(port_a, "a");
    let clusters = vec![cluster("svc", &[(upstreams.port("one"), 1)], json!({}))];
    let dir = TempDir::new("xds-listener-removal");
    let node = format!("envoy-removal-{mode}");
    let set = resource_set(vec![a.clone(), b.clone()], clusters);
    let (xds, envoy) = envoy_on(&set, &node, api_type, &dir);
    xds.wait_ack(&node, LISTENER, &json!("1"));
    wait_for(SOON, "both listeners to serve", || {
        (through(port_a).is_some() && through(port_b).is_some()).then_some(())
    });

    let versions = xds.push(&json!({"remove": {LISTENER: ["b"]}}));
    xds.wait_ack(&node, LISTENER, &versions[LISTENER]);
    wait_for(SOON, "listener b to stop (remove)", || {
        (!listening(port_b)).then_some(())
    });
    assert!(through(port_a).is_some(), "listener a keeps serving");
    assert_eq!(envoy.stats()["listener_manager.total_listeners_active"], 1);

    xds.push(&json!({"resources": {LISTENER: [a.clone(), b]}}));
    wait_for(SOON, "listener b to serve again", || through(port_b));
    let versions = xds.push(&json!({"resources": {LISTENER: [a]}}));
    xds.wait_ack(&node, LISTENER, &versions[LISTENER]);
    wait_for(SOON, "listener b to stop (shorter set)", || {
        (!listening(port_b)).then_some(())
    });
    assert!(through(port_a).is_some(), "listener a keeps serving");
    assert!(xds.record(&node, LISTENER)["nacked"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn dropped_streams_reconnect() {
    if !have_envoy("dropped_streams_reconnect") {
        return;
    }
    let upstreams = EchoUpstreams::start(&["one", "two"], None);
    let listen = free_port();
    let dir = TempDir::new("xds-drop");
    let node = "envoy-drop";
    let svc = |name| cluster("svc", &[(upstreams.port(name), 1)], json!({}));
    let set = resource_set(vec![svc_listener(listen, "1")], vec![svc("one")]);
    let (xds, envoy) = envoy_on(&set, node, "DELTA_GRPC", &dir);
    xds.wait_ack(node, CLUSTER, &json!("1"));
    let before = xds.streams();
    assert_eq!(before.len(), 1, "one ADS stream: {before:?}");
    let old_id = before[0]["id"].clone();

    let dropped = xds.post("/drop", &json!({}));
    assert_eq!(dropped["dropped"], 1);
    // Envoy reconnects on its own: a new stream from the same node, connected_state back to 1.
    wait_for(SOON, "Envoy to open a new ADS stream", || {
        let streams = xds.streams();
        streams
            .iter()
            .find(|s| {
                s["id"] != old_id && s["node_id"] == node && s["subscribed"][CLUSTER].is_object()
            })
            .cloned()
    });
    wait_for(SOON, "control_plane.connected_state 1", || {
        (envoy.stats().get("control_plane.connected_state") == Some(&1)).then_some(())
    });
    assert_eq!(
        through(listen),
        Some(("one".to_string(), "1".to_string())),
        "traffic is not interrupted by the reconnect"
    );

    // A push after the reconnect applies.
    let versions = xds.push(&json!({"resources": {CLUSTER: [svc("two")]}}));
    xds.wait_ack(node, CLUSTER, &versions[CLUSTER]);
    wait_for(SOON, "the pushed cluster to serve", || {
        through(listen).filter(|(upstream, _)| upstream == "two")
    });
}

// ------------------------------------------------------------------------------------------
// Real Istio config dumps against Envoy (the reference for docs/istio-gap-list.md)

/// Serves the dynamic resources of Istio dump `file` to Envoy over Delta ADS (SDS on its own
/// `sds-grpc` stream, as Istio does) and reports Envoy's verdict per type plus what it runs.
/// Asserts only what must hold for any proxy: it stays up and gives every type it
/// subscribed to an ACK or a NACK.
fn envoy_on_istio_dump(file: &str) {
    let dump = istio_dump(file);
    if !have_envoy(&format!("envoy_on_istio_dump ({file})")) {
        return;
    }
    let dir = TempDir::new("xds-istio-dump");
    let script = dir.file("resources.json");
    let report = convert_dump(&dump, &script);
    let xds = XdsServer::start(&script);
    let node = "sidecar~127.0.0.1~app1-0.default~default.svc.cluster.local";
    let bootstrap = istio_ads_bootstrap(0, node, xds.ads_port);
    let envoy = HttpProxy::start(Kind::Envoy, "istio-dump", &bootstrap);

    // Every type Envoy asked for gets a verdict (LDS and CDS always; RDS, EDS, SDS, ECDS when
    // an accepted listener or cluster needs them).
    let served: Value = serde_json::from_str(&fs::read_to_string(&script).unwrap()).unwrap();
    let verdicts = wait_for(SOON, "Envoy's verdict on every type it requested", || {
        let acks = http_get(xds.control, "/acks").ok()?.json();
        let records = acks["clients"][node].as_object()?.clone();
        let mut out = Vec::new();
        for type_url in [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, ECDS] {
            match records.get(type_url) {
                Some(record) => out.push((type_url, Some(verdict(record)?))),
                None if type_url == CLUSTER || type_url == LISTENER => return None,
                None => out.push((type_url, None)),
            }
        }
        Some(out)
    });
    // Settle: later subscriptions (RDS after LDS, EDS after CDS) get their verdicts too.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let stats = envoy.stats();
    let clusters = http_get(envoy.admin, "/clusters?format=json")
        .unwrap()
        .json();
    let active_clusters = clusters["cluster_statuses"]
        .as_array()
        .map_or(0, |c| c.len());
    eprintln!("==== Envoy on {file}");
    for line in &report {
        eprintln!("converter: {line}");
    }
    let acks = http_get(xds.control, "/acks").unwrap().json();
    for (type_url, first) in verdicts {
        let count = served["resources"][type_url]
            .as_array()
            .map_or(0, |r| r.len());
        let now = verdict(&acks["clients"][node][type_url]);
        let shown = now.or(first).unwrap_or_else(|| "not requested".to_string());
        eprintln!(
            "{}: served {count}; {shown}",
            type_url.rsplit('.').next().unwrap()
        );
    }
    eprintln!(
        "Envoy runs {} dynamic listeners (+{} warming), {} clusters incl. 2 static (+{} warming); \
         control_plane.connected_state {}",
        stats["listener_manager.total_listeners_active"],
        stats["listener_manager.total_listeners_warming"],
        active_clusters,
        stats["cluster_manager.warming_clusters"],
        stats["control_plane.connected_state"],
    );
    assert_eq!(stats["control_plane.connected_state"], 1);
    assert!(
        http_get(envoy.admin, "/ready").is_ok(),
        "Envoy is still up after the Istio resources"
    );
}

#[test]
fn envoy_on_istio_1_22_3_sidecar() {
    envoy_on_istio_dump("istio-1.22.3_app1_sidecar.json");
}

#[test]
fn envoy_on_istio_1_22_3_ingressgateway() {
    envoy_on_istio_dump("istio-1.22.3_ingressgateway.json");
}

#[test]
fn envoy_on_istio_1_9_1_productpage_sidecar() {
    envoy_on_istio_dump("istio-1.9.1_bookinfo_productpage_sidecar.json");
}

#[test]
fn envoy_on_istio_1_19_authz_listeners() {
    envoy_on_istio_dump("istio-1.19dev_sidecar_listeners_with_authz.json");
}
