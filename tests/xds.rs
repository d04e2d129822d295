//! Tests: shardproxy driven over ADS by the test control plane (tests/peers/xds_server.py),
//! state of the world and Delta — LDS, RDS, CDS and EDS applied, ACKed and NACKed with reasons
//! while the last good config serves; the same control plane drives Envoy, and both route the
//! same requests the same way (ECDS filter configs too); control-plane restarts and a thousand
//! rapid updates under load lose no request; a listener that cannot bind is NACKed, a changed
//! one drains its old connections, a host removed over EDS has its idle upstream connections
//! closed while one whose weight, health or metadata changes keeps its connection, the stats of
//! a renamed stat_prefix or removed cluster go once drained; readiness waits for the initial fetch, listeners for the clusters an SDS stream
//! warms; the real Istio dumps are reported feature by feature.

mod common;

use std::{
    fs,
    net::TcpListener,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::http::{catch_all_routes, hcm, http_listener, EchoUpstreams, HttpProxy, Kind};
use common::xds::*;
use common::{addr, free_port, http_get, poll_for, socket_address, wait_for, Proxy, TempDir, SOON};
use serde_json::{json, Value};

/// The LDS listener on `port`: its routes come from RDS table `table`.
fn rds_listener(name: &str, port: u16, table: &str) -> Value {
    let rds = json!({"route_config_name": table, "config_source": {"ads": {}, "resource_api_version": "V3"}});
    let mut manager = hcm("ingress", json!({}), vec![], json!({}));
    let config = manager.as_object_mut().unwrap();
    config.remove("route_config");
    config.insert("rds".into(), rds);
    http_listener(name, port, manager)
}

/// RDS table `name`: everything to cluster `svc`, tagged `x-route-version: version`.
fn route_table(name: &str, version: &str) -> Value {
    let mut table = catch_all_routes("svc", json!({}));
    table["name"] = json!(name);
    table["response_headers_to_add"] =
        json!([{"header": {"key": "x-route-version", "value": version}}]);
    table
}

/// The EDS assignment of `svc`: one endpoint on 127.0.0.1:`port`.
fn assignment(port: u16) -> Value {
    json!({"cluster_name": "svc", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": socket_address(port)}}]}]})
}

/// Listener (RDS) + table + EDS cluster + its assignment pointing at `upstream_port`. The
/// listener's port is fixed (`free_port`): it is in the control plane's script before the
/// proxy starts, and the tests probe it across pushes, removals and re-adds.
fn mesh(listen: u16, upstream_port: u16) -> Value {
    json!({"resources": {
        LISTENER: [rds_listener("main", listen, "routes")],
        ROUTE: [route_table("routes", "1")],
        CLUSTER: [eds_cluster("svc")],
        ENDPOINT: [assignment(upstream_port)],
    }})
}

/// The proxies to compare: shardproxy, and Envoy when its binary is installed.
fn kinds(test: &str) -> Vec<Kind> {
    let mut kinds = vec![Kind::Shardproxy];
    if have_envoy(test) {
        kinds.push(Kind::Envoy);
    }
    kinds
}

fn start(kind: Kind, node: &str, xds: &XdsServer, api_type: &str) -> HttpProxy {
    let bootstrap = ads_bootstrap(0, node, xds.ads_port, api_type);
    HttpProxy::start(kind, node, &bootstrap)
}

/// What one proxy did through a scripted sequence of pushes: the observations to compare.
fn follow(kind: Kind, api_type: &str) -> Vec<String> {
    let upstreams = EchoUpstreams::start(&["one", "two"], None);
    let listen = free_port();
    let dir = TempDir::new("xds-follow");
    let script = dir.file("resources.json");
    fs::write(&script, mesh(listen, upstreams.port("one")).to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let node = format!("{}-{api_type}", kind.name());
    // HttpProxy::start waits for /ready: LIVE only once the initial fetch is done.
    let proxy = start(kind, &node, &xds, api_type);
    let mut seen = Vec::new();
    for type_url in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        xds.wait_ack(&node, type_url, &json!("1"));
    }
    let first = wait_for(SOON, "traffic through the xDS listener", || through(listen));
    seen.push(format!("initial: {first:?}"));
    // The node as the control plane sees it: identity, user agent and release, as Envoy's.
    let stream = xds.streams().pop().expect("the proxy's stream");
    let reported = &stream["node"];
    let release = &reported["user_agent_build_version"]["version"];
    seen.push(format!(
        "node cluster {}, user agent {}, release {}.{}",
        reported["cluster"],
        reported["user_agent_name"],
        release["major_number"],
        release["minor_number"]
    ));
    assert_eq!(reported["id"], node.as_str());
    if kind == Kind::Shardproxy {
        let metadata = &reported["user_agent_build_version"]["metadata"];
        assert!(metadata.get("shardproxy.version").is_some(), "{reported}");
    }

    // A keep-alive connection stays open across the RDS update: its next request must see it.
    let mut conn = common::http::HttpConn::open(listen);
    let before = conn
        .exchange(
            "GET",
            &common::http::request("GET", "/", &[("host", "x")], b""),
        )
        .unwrap();
    seen.push(format!(
        "keep-alive before: {:?}",
        before.header("x-route-version")
    ));
    xds.push(&json!({"resources": {ROUTE: [route_table("routes", "2")]}}));
    xds.wait_ack(&node, ROUTE, &json!("2"));
    let after = wait_for(SOON, "the RDS update on the open connection", || {
        let r = conn
            .exchange(
                "GET",
                &common::http::request("GET", "/", &[("host", "x")], b""),
            )
            .ok()?;
        (r.header("x-route-version") == Some("2")).then_some(r)
    });
    seen.push(format!(
        "keep-alive after: {:?}",
        after.header("x-route-version")
    ));

    // EDS moves the cluster to the other upstream.
    xds.push(&json!({"resources": {ENDPOINT: [assignment(upstreams.port("two"))]}}));
    xds.wait_ack(&node, ENDPOINT, &json!("2"));
    let moved = wait_for(SOON, "the EDS change", || {
        through(listen).filter(|(upstream, _)| upstream == "two")
    });
    seen.push(format!("after EDS: {moved:?}"));

    // An invalid cluster is NACKed with a reason; the last good one keeps serving.
    let mut bad = eds_cluster("svc");
    bad["connect_timeout"] = json!("-1s");
    xds.push(&json!({"resources": {CLUSTER: [bad]}}));
    let nack = wait_for(SOON, "the NACK of the invalid cluster", || {
        xds.record(&node, CLUSTER)["nacked"]
            .as_array()?
            .first()
            .cloned()
    });
    seen.push(format!("NACK version {}", nack["version"]));
    let reason = nack["error_detail"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if kind == Kind::Shardproxy {
        assert!(
            reason.contains("clusters[\"svc\"].connect_timeout"),
            "the NACK names the resource and field: {reason}"
        );
        let dump = http_get(proxy.admin, "/config_dump").unwrap().json();
        let clusters = dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["@type"].as_str().unwrap().ends_with("ClustersConfigDump"))
            .unwrap()
            .clone();
        assert_eq!(clusters["version_info"], "1", "{clusters}");
        let active = &clusters["dynamic_active_clusters"][0];
        // The accepted version keeps serving; the rejected one is only in error_state.
        assert_ne!(
            active["version_info"], active["error_state"]["version_info"],
            "{active}"
        );
        assert!(
            active["error_state"]["details"]
                .as_str()
                .unwrap_or_default()
                .contains("connect_timeout"),
            "config_dump shows the last NACK reason: {active}"
        );
        let stats = proxy.stats();
        assert_eq!(stats["cluster_manager.cds.update_rejected"], 1);
        assert_eq!(stats["control_plane.connected_state"], 1);
        assert_eq!(stats["listener_manager.workers_started"], 1);
    }
    seen.push(format!("after NACK: {:?}", through(listen)));

    // The listener removed: the port stops accepting.
    xds.push(&json!({"remove": {LISTENER: ["main"]}}));
    wait_for(SOON, "the removed listener to stop", || {
        (!listening(listen)).then_some(())
    });
    seen.push("listener removed".into());
    drop(proxy);
    seen
}

#[test]
fn both_proxies_follow_the_control_plane_the_same_way_state_of_the_world() {
    same_on_both("GRPC");
}

#[test]
fn both_proxies_follow_the_control_plane_the_same_way_delta() {
    same_on_both("DELTA_GRPC");
}

fn same_on_both(api_type: &str) {
    let runs: Vec<(Kind, Vec<String>)> = kinds("xds follow")
        .into_iter()
        .map(|kind| (kind, follow(kind, api_type)))
        .collect();
    for (kind, seen) in &runs {
        eprintln!("{}: {seen:#?}", kind.name());
    }
    if let [(_, ours), (_, envoy)] = runs.as_slice() {
        assert_eq!(ours, envoy, "shardproxy and Envoy differ");
    }
}

/// Counts failed requests from a client thread hitting `port` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match http_get(addr(port), "/") {
                    Ok(r) if r.status == 200 => o.fetch_add(1, Ordering::Relaxed),
                    _ => f.fetch_add(1, Ordering::Relaxed),
                };
                thread::sleep(Duration::from_millis(5));
            }
        });
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the client; (succeeded, failed).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn a_control_plane_restart_loses_no_request_and_updates_resume() {
    let upstreams = EchoUpstreams::start(&["one", "two"], None);
    let listen = free_port();
    let dir = TempDir::new("xds-restart");
    let script = dir.file("resources.json");
    fs::write(&script, mesh(listen, upstreams.port("one")).to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let ads_port = xds.ads_port;
    let node = "restart";
    let proxy = start(Kind::Shardproxy, node, &xds, "DELTA_GRPC");
    wait_for(SOON, "traffic", || through(listen));
    let load = Load::start(listen);
    drop(xds); // SIGKILL: the stream breaks
    wait_for(SOON, "the proxy to see the control plane gone", || {
        (proxy.stats()["control_plane.connected_state"] == 0).then_some(())
    });
    thread::sleep(Duration::from_millis(500));
    fs::write(&script, mesh(listen, upstreams.port("two")).to_string()).unwrap();
    let xds = XdsServer::start_on(&script, ads_port);
    wait_for(
        Duration::from_secs(60),
        "reconnect and the new endpoints",
        || through(listen).filter(|(upstream, _)| upstream == "two"),
    );
    assert_eq!(proxy.stats()["control_plane.connected_state"], 1);
    let (ok, failed) = load.finish();
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert_eq!(
        failed, 0,
        "requests failed across the control-plane restart"
    );
    // Delta resumed with what the proxy held: the new server saw initial_resource_versions.
    let held = xds.record(node, CLUSTER)["initial_resource_versions"].clone();
    assert!(
        held.get("svc").is_some(),
        "initial_resource_versions on reconnect: {held}"
    );
}

#[test]
fn a_thousand_rapid_route_updates_under_load_fail_no_request() {
    let upstreams = EchoUpstreams::start(&["one"], None);
    let listen = free_port();
    let dir = TempDir::new("xds-churn");
    let script = dir.file("resources.json");
    fs::write(&script, mesh(listen, upstreams.port("one")).to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let node = "churn";
    let proxy = start(Kind::Shardproxy, node, &xds, "GRPC");
    wait_for(SOON, "traffic", || through(listen));
    let wrk = thread::spawn(move || {
        Command::new("wrk")
            .args(["-t1", "-c8", "-d10s", "--latency"])
            .arg(format!("http://127.0.0.1:{listen}/"))
            .output()
            .expect("wrk (tests/run.sh installs it)")
    });
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let churn = xds.post(
        "/churn",
        &json!({"type_url": ROUTE, "template": route_table("routes", "v{{n}}"), "count": 1000, "interval_ms": 5}),
    );
    let took = started.elapsed();
    let output = wrk.join().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).to_string();
    eprintln!("churn {churn} in {took:?}\n{report}");
    assert!(output.status.success(), "wrk failed: {report}");
    assert!(
        !report.contains("Non-2xx"),
        "failed requests during the updates:\n{report}"
    );
    assert!(
        !report.contains("Socket errors"),
        "socket errors during the updates:\n{report}"
    );
    let last = churn["version"].clone();
    xds.wait_ack(node, ROUTE, &last);
    let stats = proxy.stats();
    assert!(
        stats["xds.rds.update_success"] >= 100,
        "{:?}",
        stats.get("xds.rds.update_success")
    );
    assert_eq!(stats["xds.rds.update_rejected"], 0);
    assert_eq!(through(listen).map(|(_, v)| v), Some("v1000".to_string()));
}

#[test]
fn a_listener_that_cannot_bind_is_nacked_and_the_others_serve() {
    let upstreams = EchoUpstreams::start(&["one"], None);
    let listen = free_port();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("xds-bind");
    let script = dir.file("resources.json");
    fs::write(&script, mesh(listen, upstreams.port("one")).to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let node = "bind";
    let proxy = start(Kind::Shardproxy, node, &xds, "GRPC");
    xds.push(&json!({"resources": {LISTENER: [
        rds_listener("main", listen, "routes"),
        rds_listener("clash", taken_port, "routes"),
    ]}}));
    let nack = wait_for(SOON, "the NACK of the listener that cannot bind", || {
        xds.record(node, LISTENER)["nacked"]
            .as_array()?
            .first()
            .cloned()
    });
    let reason = nack["error_detail"]["message"].as_str().unwrap_or_default();
    assert!(reason.contains("listeners[\"clash\"]"), "{nack}");
    assert_eq!(through(listen).map(|(u, _)| u), Some("one".to_string()));
    assert!(proxy.stats()["listener_manager.listener_create_failure"] >= 1);
    drop(taken);
}

#[test]
fn ready_waits_for_the_initial_fetch_until_its_timeout() {
    let listen = free_port();
    let dir = TempDir::new("xds-init-timeout");
    let script = dir.file("resources.json");
    // The cluster's endpoints never come (the server has none), and SotW says nothing about
    // absent names: the cluster warms until its eds_config's initial_fetch_timeout (1 s).
    let mut set = mesh(listen, 1);
    set["resources"].as_object_mut().unwrap().remove(ENDPOINT);
    set["resources"][CLUSTER][0]["eds_cluster_config"]["eds_config"]["initial_fetch_timeout"] =
        json!("1s");
    fs::write(&script, set.to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let bootstrap = ads_bootstrap(0, "init", xds.ads_port, "GRPC");
    let started = Instant::now();
    let proxy = HttpProxy::start(Kind::Shardproxy, "init", &bootstrap);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "ready before the timeout"
    );
    let status = wait_for(SOON, "the listener", || {
        http_get(addr(listen), "/").ok().map(|r| r.status)
    });
    assert_eq!(status, 503, "a cluster without endpoints answers 503");
    drop(proxy);
}

/// A cluster whose client certificate comes over an SDS stream of its own (Istio's
/// `sds-grpc`) after the cluster's endpoints: the cluster is warm only then, and the listeners
/// are asked for then (they once never were, and the proxy never went live).
#[test]
fn listeners_follow_clusters_warmed_by_secrets_from_an_sds_stream() {
    use common::tls::{pki, tls_certificate_inline, UPSTREAM_TLS};
    let node = "sds-warm";
    let listen = free_port();
    let dir = TempDir::new("xds-sds-warm");
    let script = dir.file("resources.json");
    let mut set = mesh(listen, 1);
    let sds = json!({"resource_api_version": "V3", "initial_fetch_timeout": "0s",
        "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]}});
    set["resources"][CLUSTER][0]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": UPSTREAM_TLS, "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "cert", "sds_config": sds}]}},
    });
    fs::write(&script, set.to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let mut bootstrap = istio_ads_bootstrap(0, node, xds.ads_port);
    // As Istio's bootstrap: the initial fetches never time out (a timeout would hide the wait).
    for source in ["lds_config", "cds_config"] {
        bootstrap["dynamic_resources"][source]["initial_fetch_timeout"] = json!("0s");
    }
    let mut proxy = Proxy::builder(node, &bootstrap).no_wait().start();
    xds.wait_ack(node, ENDPOINT, &json!("1"));
    let secret = json!({"name": "cert", "tls_certificate": tls_certificate_inline(&pki().client)});
    let versions = xds.push(&json!({"resources": {SECRET: [secret]}}));
    xds.wait_ack(node, SECRET, &versions[SECRET]);
    for type_url in [LISTENER, ROUTE] {
        xds.wait_ack(node, type_url, &json!("1"));
    }
    // The admin (port 0) is read back, then /ready polled until LIVE.
    proxy.wait_ready();
}

// ------------------------------------------------------------------------------------------
// Real Istio config dumps (docs/istio-gap-list.md, shardproxy's column)

/// One rejected resource's reasons, generalised: resource names and list indexes dropped, so
/// the same missing feature in many resources counts as one line.
fn feature(reason: &str) -> Vec<String> {
    let name = regex::Regex::new(r#"\["[^"]*"\]"#).unwrap();
    let index = regex::Regex::new(r"\[\d+\]").unwrap();
    reason
        .lines()
        .map(|line| {
            index
                .replace_all(&name.replace_all(line, "[*]"), "[]")
                .to_string()
        })
        .collect()
}

/// Serves the dynamic resources of Istio dump `file` to shardproxy over Delta ADS and reports
/// per type what it accepted and, grouped by feature, why it rejected the rest (from
/// /config_dump's per-resource error_state). Asserts the proxy stays up, connected and ready,
/// and that every reason is one of the dump's `known_gaps` (substrings; the gap list in
/// docs/istio-gap-list.md): a resource refused for anything else fails the test. A reason
/// that follows from another resource's refusal (`cluster "..." does not exist`) is allowed.
fn shardproxy_on_istio_dump(file: &str, known_gaps: &[&str]) {
    let dump = istio_dump(file);
    let dir = TempDir::new("xds-istio-dump");
    let script = dir.file("resources.json");
    convert_dump(&dump, &script);
    let xds = XdsServer::start(&script);
    let node = "sidecar~127.0.0.1~app1-0.default~default.svc.cluster.local";
    let bootstrap = istio_ads_bootstrap(0, node, xds.ads_port);
    // HttpProxy::start waits for /ready: the initial fetch must finish despite the NACKs.
    let proxy = HttpProxy::start(Kind::Shardproxy, "istio-dump", &bootstrap);
    thread::sleep(Duration::from_secs(1));
    let served: Value = serde_json::from_str(&fs::read_to_string(&script).unwrap()).unwrap();
    let dumped = http_get(proxy.admin, "/config_dump?include_eds")
        .unwrap()
        .json();
    eprintln!("==== shardproxy on {file}");
    let mut unknown = Vec::new();
    let sections = [
        (CLUSTER, "ClustersConfigDump", "dynamic_active_clusters"),
        (CLUSTER, "ClustersConfigDump", "dynamic_warming_clusters"),
        (LISTENER, "ListenersConfigDump", "dynamic_listeners"),
        (ROUTE, "RoutesConfigDump", "dynamic_route_configs"),
        (ENDPOINT, "EndpointsConfigDump", "dynamic_endpoint_configs"),
    ];
    for (type_url, dump_type, field) in sections {
        let entries: Vec<Value> = dumped["configs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["@type"].as_str().unwrap().ends_with(dump_type))
            .flat_map(|c| c[field].as_array().cloned().unwrap_or_default())
            .collect();
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        let mut rejected = 0;
        for entry in &entries {
            if let Some(details) = entry["error_state"]["details"].as_str() {
                rejected += 1;
                let mut seen: Vec<String> = feature(details);
                seen.sort();
                seen.dedup();
                for line in seen {
                    *reasons.entry(line).or_default() += 1;
                }
            }
        }
        let count = served["resources"][type_url]
            .as_array()
            .map_or(0, |r| r.len());
        eprintln!(
            "{field}: served {count}; {} accepted, {rejected} rejected",
            entries.len() - rejected
        );
        let mut reasons: Vec<_> = reasons.into_iter().collect();
        reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
        for (reason, n) in reasons {
            eprintln!("  {n:>3} × {reason}");
            let known = reason.contains("does not exist")
                || known_gaps.iter().any(|gap| reason.contains(gap));
            unknown.extend((!known).then_some(reason));
        }
    }
    assert!(
        unknown.is_empty(),
        "{file}: resources refused for reasons outside its known gaps:\n{}",
        unknown.join("\n")
    );
    let stats = proxy.stats();
    for name in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
        "listener_manager.total_listeners_active",
        "cluster_manager.active_clusters",
    ] {
        eprintln!("{name}: {:?}", stats.get(name));
    }
    assert_eq!(stats["control_plane.connected_state"], 1);
    assert_eq!(http_get(proxy.admin, "/ready").unwrap().status, 200);
}

/// The gap no proxy without a Wasm runtime closes: the user's own WasmPlugin (a v8 module)
/// that the 1.22 dumps' listeners name over ECDS. Refused by design (docs/istio-gap-list.md).
const USER_WASM: &str = "a Wasm module is refused";

#[test]
fn shardproxy_on_istio_1_22_3_sidecar() {
    shardproxy_on_istio_dump("istio-1.22.3_app1_sidecar.json", &[USER_WASM]);
}

#[test]
fn shardproxy_on_istio_1_22_3_ingressgateway() {
    shardproxy_on_istio_dump("istio-1.22.3_ingressgateway.json", &[USER_WASM]);
}

#[test]
fn shardproxy_on_istio_1_9_1_productpage_sidecar() {
    shardproxy_on_istio_dump("istio-1.9.1_bookinfo_productpage_sidecar.json", &[]);
}

#[test]
fn shardproxy_on_istio_1_19_authz_listeners() {
    shardproxy_on_istio_dump("istio-1.19dev_sidecar_listeners_with_authz.json", &[]);
}

/// What a proxy answers while its HTTP filter's config comes over ECDS: a fault filter that
/// aborts everything with 418, then one that aborts nothing.
fn ecds_follow(kind: Kind) -> Vec<String> {
    let upstreams = EchoUpstreams::start(&["one"], None);
    let listen = free_port();
    let dir = TempDir::new("xds-ecds");
    let script = dir.file("resources.json");
    let mut manager = hcm(
        "ingress",
        catch_all_routes("svc", json!({})),
        vec![],
        json!({}),
    );
    manager["http_filters"] = json!([
        {"name": "faults", "config_discovery": {
            "config_source": {"ads": {}, "resource_api_version": "V3"},
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"]}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]);
    let fault = |percent: u32| {
        json!({"name": "faults", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "abort": {"http_status": 418, "percentage": {"numerator": percent}}}})
    };
    let set = json!({"resources": {
        LISTENER: [http_listener("main", listen, manager)],
        CLUSTER: [eds_cluster("svc")],
        ENDPOINT: [assignment(upstreams.port("one"))],
        ECDS: [fault(100)],
    }});
    fs::write(&script, set.to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let node = format!("{}-ecds", kind.name());
    let proxy = start(kind, &node, &xds, "DELTA_GRPC");
    let status = || http_get(addr(listen), "/").ok().map(|r| r.status);
    let mut seen = vec![format!(
        "first: {:?}",
        wait_for(SOON, "the listener", status)
    )];
    let versions = xds.push(&json!({"resources": {ECDS: [fault(0)]}}));
    let after = wait_for(SOON, "the new filter config", || {
        status().filter(|s| *s == 200)
    });
    seen.push(format!("after the ECDS update: {after}"));
    // A proxy applies the config before it ACKs: the ACK may trail the first 200 a little.
    let acked = poll_for(SOON, || {
        let acked = xds.record(&node, ECDS)["acked"].clone();
        acked.as_array()?.contains(&versions[ECDS]).then_some(())
    });
    seen.push(format!("ECDS update ACKed: {}", acked.is_some()));
    drop(proxy);
    seen
}

#[test]
fn both_proxies_take_http_filter_configs_from_ecds() {
    let runs: Vec<(Kind, Vec<String>)> = kinds("xds ecds")
        .into_iter()
        .map(|kind| (kind, ecds_follow(kind)))
        .collect();
    for (kind, seen) in &runs {
        eprintln!("{}: {seen:#?}", kind.name());
    }
    assert_eq!(runs[0].1[0], "first: 418", "the ECDS config applied");
    if let [(_, ours), (_, envoy)] = runs.as_slice() {
        assert_eq!(ours, envoy, "shardproxy and Envoy differ");
    }
}

#[test]
fn a_listener_changed_over_lds_drains_its_old_connections() {
    let upstreams = EchoUpstreams::start(&["one"], None);
    let listen = free_port();
    let dir = TempDir::new("xds-lds-drain");
    let script = dir.file("resources.json");
    fs::write(&script, mesh(listen, upstreams.port("one")).to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let proxy = start(Kind::Shardproxy, "lds-drain", &xds, "DELTA_GRPC");
    wait_for(SOON, "traffic", || through(listen));
    let request = || common::http::request("GET", "/", &[("host", "x")], b"");
    let mut idle = common::http::HttpConn::open(listen);
    let first = idle.exchange("GET", &request()).unwrap();
    assert_eq!(first.header("connection"), None);
    // A request half sent when the listener changes.
    let mut busy = common::http::HttpConn::open(listen);
    let whole = request();
    let (head, rest) = whole.split_at(whole.len() - 2);
    busy.send(head).unwrap();
    // The same listener with another stat prefix: a modified listener.
    let mut changed = rds_listener("main", listen, "routes");
    let manager = &mut changed["filter_chains"][0]["filters"][0]["typed_config"];
    manager["stat_prefix"] = json!("changed");
    xds.push(&json!({"resources": {LISTENER: [changed]}}));
    wait_for(SOON, "the listener change", || {
        (proxy.stats()["listener_manager.listener_modified"] >= 1).then_some(())
    });
    // Old connections drain: the idle one closes, the busy one is answered and closed; a new
    // connection is served under the new config.
    assert!(idle.closed_within(SOON), "the idle old connection closes");
    busy.send(rest).unwrap();
    let last = busy.read_response("GET").unwrap();
    assert_eq!(
        (last.status(), last.header("connection")),
        (200, Some("close"))
    );
    assert!(busy.closed_within(SOON));
    let mut new = common::http::HttpConn::open(listen);
    let fresh = new.exchange("GET", &request()).unwrap();
    assert_eq!((fresh.status(), fresh.header("connection")), (200, None));
    wait_for(
        SOON,
        "the new connection counted under the new config",
        || (proxy.stats().get("http.changed.downstream_rq_total") >= Some(&1)).then_some(()),
    );
}

#[test]
fn a_host_removed_over_eds_has_its_idle_upstream_connections_closed() {
    let test = "a_host_removed_over_eds_has_its_idle_upstream_connections_closed";
    for kind in kinds(test) {
        let upstreams = EchoUpstreams::start(&["one", "two"], None);
        let listen = free_port();
        let dir = TempDir::new("xds-host-removed");
        let script = dir.file("resources.json");
        fs::write(&script, mesh(listen, upstreams.port("one")).to_string()).unwrap();
        let xds = XdsServer::start(&script);
        let proxy = start(kind, "host-removed", &xds, "DELTA_GRPC");
        wait_for(SOON, "traffic", || through(listen));
        let active = || proxy.stats().get("cluster.svc.upstream_cx_active").copied();
        assert!(
            active() >= Some(1),
            "{kind:?}: a pooled connection to `one`"
        );
        // `one` leaves the cluster: its idle keep-alive connection closes now, not after the
        // upstream idle timeout (an hour), which under EDS churn ran the process out of file
        // descriptors (bench/soak.py).
        xds.push(&json!({"resources": {ENDPOINT: [assignment(upstreams.port("two"))]}}));
        wait_for(SOON, "the removed host's idle connection to close", || {
            (active() == Some(0)).then_some(())
        });
        wait_for(SOON, "traffic to `two`", || {
            through(listen).filter(|(upstream, _)| upstream == "two")
        });
    }
}

/// Listener `main` on `port` (routes from RDS `routes`) counting its listener and HTTP stats
/// under `prefix` (`listener.<prefix>.*`, `http.<prefix>.*`).
fn prefixed_listener(port: u16, prefix: &str) -> Value {
    let mut listener = rds_listener("main", port, "routes");
    listener["stat_prefix"] = json!(prefix);
    listener["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"] = json!(prefix);
    listener
}

#[test]
fn stats_of_a_replaced_stat_prefix_and_a_removed_cluster_go_once_drained() {
    let test = "stats_of_a_replaced_stat_prefix_and_a_removed_cluster_go_once_drained";
    for kind in kinds(test) {
        let upstreams = EchoUpstreams::start(&["one"], None);
        let listen = free_port();
        let dir = TempDir::new("xds-stats-gone");
        let script = dir.file("resources.json");
        let mut resources = mesh(listen, upstreams.port("one"));
        resources["resources"][LISTENER] = json!([prefixed_listener(listen, "first")]);
        resources["resources"][CLUSTER] = json!([eds_cluster("svc"), eds_cluster("spare")]);
        let mut spare = assignment(upstreams.port("one"));
        spare["cluster_name"] = json!("spare");
        resources["resources"][ENDPOINT] = json!([assignment(upstreams.port("one")), spare]);
        fs::write(&script, resources.to_string()).unwrap();
        let xds = XdsServer::start(&script);
        let bootstrap = ads_bootstrap(0, "stats-gone", xds.ads_port, "DELTA_GRPC");
        let flags = ["--drain-time-s", "1"];
        let proxy = HttpProxy::start_with_flags(kind, "stats-gone", &bootstrap, &flags);
        wait_for(SOON, "traffic", || through(listen));
        let request = || common::http::request("GET", "/", &[("host", "x")], b"");
        // A keep-alive connection of the first version: its stats live while it drains.
        let mut old = common::http::HttpConn::open(listen);
        assert_eq!(old.exchange("GET", &request()).unwrap().status(), 200);
        let stats = proxy.stats();
        let named = |stats: &std::collections::BTreeMap<String, i64>, prefixes: &[&str]| {
            let of = |name: &&String| prefixes.iter().any(|p| name.starts_with(p));
            stats.keys().filter(of).cloned().collect::<Vec<_>>()
        };
        for prefix in ["listener.first.", "http.first.", "cluster.spare."] {
            assert!(
                !named(&stats, &[prefix]).is_empty(),
                "{kind:?}: {prefix}* listed"
            );
        }
        let served = stats["cluster.svc.upstream_rq_total"];

        // The listener with another stat prefix, and `spare` removed.
        xds.push(&json!({
            "resources": {LISTENER: [prefixed_listener(listen, "second")]},
            "remove": {CLUSTER: ["spare"]},
        }));
        wait_for(SOON, "traffic under the new prefix", || {
            through(listen)?;
            (proxy.stats().get("http.second.downstream_rq_total") >= Some(&1)).then_some(())
        });
        // Drained (the old connection is closed at the end of the drain time at the latest):
        // nothing refers to the old prefix or the removed cluster any more.
        // Envoy's RDS subscription stats (`http.<prefix>.rds.<table>.*`, which shardproxy does
        // not make) belong to the subscription, which every HCM of the table shares and which
        // the first HCM named: they stay while `routes` is in use.
        let mut left = Vec::new();
        let gone = poll_for(SOON, || {
            left = named(
                &proxy.stats(),
                &["listener.first.", "http.first.", "cluster.spare."],
            );
            left.retain(|name| !name.starts_with("http.first.rds.routes."));
            left.is_empty().then_some(())
        });
        assert!(
            gone.is_some(),
            "{kind:?}: still listed after the drain: {left:?}"
        );
        let stats = proxy.stats();
        assert!(
            stats["listener.second.downstream_cx_total"] >= 1,
            "{kind:?}"
        );
        // The cluster that stays keeps counting from where it was.
        assert!(stats["cluster.svc.upstream_rq_total"] > served, "{kind:?}");
    }
}

/// The EDS assignment of `svc`: one endpoint on 127.0.0.1:`port`, with its weight, health
/// status and metadata as given.
fn weighted_assignment(port: u16, weight: u32, health: &str, zone: &str) -> Value {
    json!({"cluster_name": "svc", "endpoints": [{"lb_endpoints": [{
        "endpoint": {"address": socket_address(port)},
        "load_balancing_weight": weight,
        "health_status": health,
        "metadata": {"filter_metadata": {"test": {"zone": zone}}},
    }]}]})
}

#[test]
fn an_eds_update_of_weight_health_or_metadata_keeps_the_host_and_its_connection() {
    let test = "an_eds_update_of_weight_health_or_metadata_keeps_the_host_and_its_connection";
    for kind in kinds(test) {
        let upstreams = EchoUpstreams::start(&["one"], None);
        let port = upstreams.port("one");
        let listen = free_port();
        let dir = TempDir::new("xds-eds-weight");
        let script = dir.file("resources.json");
        let mut resources = mesh(listen, port);
        resources["resources"][ENDPOINT] = json!([weighted_assignment(port, 1, "HEALTHY", "a")]);
        fs::write(&script, resources.to_string()).unwrap();
        let xds = XdsServer::start(&script);
        let node = "eds-weight";
        let proxy = start(kind, node, &xds, "DELTA_GRPC");
        wait_for(SOON, "traffic", || through(listen));
        let request = || common::http::request("GET", "/", &[("host", "x")], b"");
        let mut client = common::http::HttpConn::open(listen);
        let upstream_conn = |client: &mut common::http::HttpConn| {
            let r = client.exchange("GET", &request()).unwrap();
            assert_eq!(r.status(), 200, "{kind:?}");
            r.echo()["conn"].clone()
        };
        let first = upstream_conn(&mut client);
        let opened = proxy.stats()["cluster.svc.upstream_cx_total"];
        for (weight, health, zone) in [
            (5, "HEALTHY", "a"),
            (5, "UNKNOWN", "a"),
            (7, "UNKNOWN", "b"),
        ] {
            let versions = xds.push(&json!({"resources": {
                ENDPOINT: [weighted_assignment(port, weight, health, zone)]}}));
            xds.wait_ack(node, ENDPOINT, &versions[ENDPOINT]);
            // The update reached the hosts /clusters lists (and, by then, the shards).
            wait_for(SOON, "the new weight in /clusters", || {
                let clusters = http_get(proxy.admin, "/clusters").ok()?.body;
                let line = format!("svc::127.0.0.1:{port}::weight::{weight}");
                clusters.lines().any(|l| l == line).then_some(())
            });
            thread::sleep(Duration::from_millis(200));
            for _ in 0..3 {
                assert_eq!(
                    upstream_conn(&mut client),
                    first,
                    "{kind:?}: after weight {weight}, {health}, zone {zone}: the same upstream connection"
                );
            }
        }
        assert_eq!(
            proxy.stats()["cluster.svc.upstream_cx_total"],
            opened,
            "{kind:?}: no upstream connection opened"
        );
    }
}
