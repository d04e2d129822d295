//! Tests: Istio's own bootstraps (`../shared/fixtures/istio-bootstrap/`, rendered by
//! pilot-agent's golden tests) — each validates as Envoy 1.40 judges it, and each starts with
//! its ports moved to free ones: admin and the static 15021 / 15090 listeners serve while the
//! `xds-grpc` / `sds-grpc` unix sockets are absent.
mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{http::envoy_bin, *};
use serde_json::Value;

/// The ports Istio's bootstraps bind or point at on the pod (admin 15000 or the
/// `proxyAdminPort` 15005, agent 15020, health 15021, Prometheus 15090, and the sidecar's
/// 15001 / 15006): never bound by a test, moved to free ports in a temp copy.
const ISTIO_PORTS: &[u64] = &[15000, 15001, 15005, 15006, 15020, 15021, 15090];

/// The fixtures folder, or `None` after saying why the test cannot run. CI lays shared/ beside
/// its clone, so there the folder's absence fails the test.
fn fixtures(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/istio-bootstrap");
    if dir.is_dir() {
        return Some(dir);
    }
    skip(
        test,
        &format!(
            "the Istio bootstrap fixtures {} are absent (shared/ must be beside the checkout)",
            dir.display()
        ),
        Missing::Peer,
    );
    None
}

/// Every rendered golden bootstrap (`golden_*.json`), by name.
fn goldens(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("golden_") && name.ends_with(".json")
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no golden_*.json under {}",
        dir.display()
    );
    files
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// shardproxy's `--mode validate` verdict: (exit code, output).
fn shardproxy_validate(path: &Path) -> (i32, String) {
    let (status, stdout, stderr) = run_to_end(
        &["--mode", "validate", "-c", path.to_str().unwrap()],
        Duration::from_secs(60),
    );
    (status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// Envoy's `--mode validate` verdict: (accepted, last line of its output).
fn envoy_validate(envoy: &Path, path: &Path) -> (bool, String) {
    let mut child = Command::new(envoy)
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start envoy");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "envoy --mode validate {} did not exit in 60 s",
                path.display()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = text.trim().lines().last().unwrap_or_default().to_string();
    (out.status.success(), last)
}

/// Every golden validates on shardproxy; where Envoy 1.40 can judge the same file (it lacks
/// Istio's own extensions, which it refuses by name), the verdicts agree. The Istio 1.5.4
/// bootstrap is xDS v2 (`hosts`, `config` structs) and both refuse it.
#[test]
fn goldens_validate_as_envoy_judges_them() {
    let test = "goldens_validate_as_envoy_judges_them";
    let Some(dir) = fixtures(test) else { return };
    let envoy = envoy_bin();
    if envoy.is_none() {
        skip(test, http::NO_ENVOY, Missing::Peer);
    }
    let mut files = goldens(&dir);
    files.push(dir.join("istio-1.5.4_productpage_envoy-rev0.json"));
    let mut problems = Vec::new();
    for file in &files {
        let (code, out) = shardproxy_validate(file);
        let golden = name(file).starts_with("golden_");
        let envoy_verdict = envoy.as_deref().map(|e| envoy_validate(e, file));
        eprintln!(
            "{}: shardproxy exit {code}; envoy {:?}",
            name(file),
            envoy_verdict
        );
        if golden && code != 0 {
            problems.push(format!("{}: shardproxy refused it:\n{out}", name(file)));
        }
        if !golden && code != 1 {
            problems.push(format!(
                "{}: expected exit 1, got {code}:\n{out}",
                name(file)
            ));
        }
        match envoy_verdict {
            Some((true, _)) if code != 0 => problems.push(format!(
                "{}: Envoy accepts it, shardproxy does not",
                name(file)
            )),
            Some((false, why))
                if code == 0 && !why.contains("Didn't find a registered implementation") =>
            {
                problems.push(format!(
                    "{}: Envoy refuses it ({why}), shardproxy accepts it",
                    name(file)
                ))
            }
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The golden with its Istio ports moved to free ones (`ports`, filled as met), its listeners
/// on loopback, and its unix socket paths under `dir` (where nothing listens).
fn relocated(value: &mut Value, ports: &mut HashMap<u64, u16>, dir: &Path) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match (key.as_str(), &*item) {
                    ("port_value", Value::Number(n))
                        if ISTIO_PORTS.contains(&n.as_u64().unwrap_or(0)) =>
                    {
                        let port = *ports.entry(n.as_u64().unwrap()).or_insert_with(free_port);
                        *item = Value::from(port);
                    }
                    ("address", Value::String(a)) if a == "0.0.0.0" => {
                        *item = Value::from("127.0.0.1")
                    }
                    ("pipe", Value::Object(_)) => {
                        let path = item["path"].as_str().unwrap_or("sock").replace('/', "_");
                        *item = serde_json::json!({"path": dir.join(path)});
                    }
                    _ => relocated(item, ports, dir),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| relocated(item, ports, dir)),
        _ => {}
    }
}

/// Each golden starts with its addresses moved: the admin interface answers, the health
/// listener (15021) answers (503: no agent behind it, as on a pod before pilot-agent is up),
/// the Prometheus listener (15090) serves the proxy's stats through its `prometheus_stats`
/// cluster, and the process keeps running while the xDS socket it dials does not exist.
#[test]
fn goldens_start_without_a_control_plane() {
    let test = "goldens_start_without_a_control_plane";
    let Some(dir) = fixtures(test) else { return };
    for file in goldens(&dir) {
        let mut bootstrap: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let sockets = TempDir::new("istio-sockets");
        let mut ports = HashMap::new();
        relocated(&mut bootstrap, &mut ports, &sockets.path);
        let admin = bootstrap["admin"]["address"]["socket_address"]["port_value"]
            .as_u64()
            .unwrap() as u16;
        let text = serde_json::to_string_pretty(&bootstrap).unwrap();
        let mut proxy = Proxy::builder_raw(&name(&file), Some(&text), admin)
            .no_wait()
            .start();
        let health = addr(ports[&15021]);
        let prometheus = addr(ports[&15090]);
        let served = |to, path: &str| {
            wait_for(SOON, &format!("{} {path} on {to}", name(&file)), || {
                http_get(to, path).ok()
            })
        };
        let ready = served(proxy.admin, "/ready");
        assert!(
            ready.status == 200 || ready.status == 503,
            "{}: /ready {}",
            name(&file),
            ready.status
        );
        let health = served(health, "/healthz/ready");
        assert_eq!(health.status, 503, "{}: {:?}", name(&file), health.body);
        let stats = served(prometheus, "/stats/prometheus");
        assert_eq!(stats.status, 200, "{}: {}", name(&file), stats.body);
        assert!(
            stats.body.contains("# TYPE envoy_"),
            "{}: not Prometheus text: {:.500}",
            name(&file),
            stats.body
        );
        // Reconnect attempts go on (back-off from 500 ms) without ending the process.
        thread::sleep(Duration::from_secs(3));
        assert!(
            proxy.try_exit().is_none(),
            "{} exited without a control plane; stderr:\n{}",
            name(&file),
            proxy.stderr()
        );
        let stats = parse_stats(&proxy.get("/stats").body);
        // Istio's `stats_matcher` inclusion list leaves out what it does not name (Envoy
        // never makes those stats), here the ADS stream's own.
        assert_eq!(
            stats.get("control_plane.connected_state"),
            None,
            "{}",
            name(&file)
        );
        assert!(stats.contains_key("server.state"), "{}", name(&file));
        assert!(
            stats
                .get("listener_manager.lds.update_failure")
                .is_some_and(|n| *n >= 1)
                || stats
                    .get("cluster_manager.cds.update_failure")
                    .is_some_and(|n| *n >= 1),
            "{}: no failed xDS attempt counted: {stats:?}",
            name(&file)
        );
    }
}
