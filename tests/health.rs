//! Tests: host health, each on Envoy 1.40 and shardproxy with the same bootstrap and the same
//! outcome — active HTTP, TCP and gRPC health checks (over a host's TLS too) keep failing hosts
//! out of load balancing and bring them back (`/clusters` flags, `health_check.*` stats),
//! outlier detection ejects a host answering 503 (and `max_ejection_percent` holds one back),
//! EDS health and priorities spread requests as Envoy's priority loads and panic threshold do.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    grpc::have_grpcio,
    http::{HttpProxy, PeerServer},
    http_e2e::*,
    tls::*,
    *,
};
use serde_json::{json, Value};

/// `/clusters` health flags of `cluster`'s hosts, by port.
fn flags(proxy: &HttpProxy, cluster: &str) -> BTreeMap<u16, String> {
    let body = http_get(proxy.admin, "/clusters")
        .expect("GET /clusters")
        .body;
    body.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&format!("{cluster}::127.0.0.1:"))?;
            let (port, value) = rest.split_once("::health_flags::")?;
            Some((port.parse().ok()?, value.to_string()))
        })
        .collect()
}

/// Polls `/clusters` until `want` holds for `cluster`'s flags (at most 15 s); the last flags.
fn flags_when(
    proxy: &HttpProxy,
    cluster: &str,
    want: impl Fn(&BTreeMap<u16, String>) -> bool,
) -> BTreeMap<u16, String> {
    let start = Instant::now();
    loop {
        let now = flags(proxy, cluster);
        if want(&now) || start.elapsed() > Duration::from_secs(15) {
            return now;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Which upstream (the response body) answered each of `n` requests to `port` (new
/// connection each); failures are recorded by status.
fn served(port: u16, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| match http_get(addr(port), "/") {
            Ok(r) if r.status == 200 => r.body.trim().to_string(),
            Ok(r) => format!("status {}", r.status),
            Err(e) => format!("error {e}"),
        })
        .collect()
}

fn http_listener_to(name: &str, port: u16, cluster: &str) -> Value {
    http_listener(
        name,
        port,
        hcm(
            name,
            any_host(json!([route_to("/", cluster, json!({}))])),
            json!({}),
        ),
    )
}

/// An upstream answering `/healthz` with the status in `health` and anything else 200 with
/// body `name`.
fn checked_upstream(name: &str, health: Arc<AtomicU16>) -> HttpUpstream {
    let name = name.to_string();
    HttpUpstream::start(move |req| match req.path.as_str() {
        "/healthz" => Reply::status(health.load(Ordering::SeqCst), "health"),
        _ => Reply::ok(&name),
    })
}

#[test]
fn http_health_checks_keep_a_failing_host_out_and_bring_it_back() {
    let names = ["a", "b", "c", "d"];
    let health: Vec<Arc<AtomicU16>> = names
        .iter()
        .map(|_| Arc::new(AtomicU16::new(200)))
        .collect();
    let ups: Vec<HttpUpstream> = names
        .iter()
        .zip(&health)
        .map(|(n, h)| checked_upstream(n, h.clone()))
        .collect();
    let d = ups[3].port;
    let endpoints: Vec<(u16, u32)> = ups.iter().map(|u| (u.port, 1)).collect();
    let b = bootstrap(
        0,
        vec![http_listener_to("checked", 0, "backend")],
        vec![cluster(
            "backend",
            &endpoints,
            json!({"health_checks": [{
                "timeout": "1s", "interval": "0.2s", "no_traffic_interval": "0.2s",
                "unhealthy_threshold": 2, "healthy_threshold": 2,
                "http_health_check": {"path": "/healthz"},
            }]}),
        )],
    );
    on_both("health_http", &b, |proxy| {
        let port = proxy.port("checked");
        health[3].store(503, Ordering::SeqCst);
        let failed = flags_when(proxy, "backend", |f| {
            f.len() == 4
                && f[&d] != "healthy"
                && f.values().filter(|v| *v == "healthy").count() == 3
        });
        let while_failed: BTreeSet<String> = served(port, 40).into_iter().collect();
        // Passing again: back after `healthy_threshold` passes.
        health[3].store(200, Ordering::SeqCst);
        let back = flags_when(proxy, "backend", |f| {
            f.get(&d).is_some_and(|v| v == "healthy")
        });
        thread::sleep(Duration::from_secs(1));
        let after: BTreeSet<String> = served(port, 100).into_iter().collect();
        let stats = settled_stats(
            proxy,
            "cluster.backend.",
            &[
                "health_check.healthy",
                "membership_healthy",
                "membership_total",
            ],
            |s| s["health_check.healthy"] == 4,
        );
        let counted = proxy.stats();
        let failures = counted["cluster.backend.health_check.failure"];
        let attempts = counted["cluster.backend.health_check.attempt"];
        let successes = counted["cluster.backend.health_check.success"];
        assert!(
            failures >= 1 && successes >= 8 && attempts >= failures + successes - 4,
            "{counted:?}"
        );
        let checks = ups[0]
            .requests()
            .iter()
            .filter(|r| r.path == "/healthz")
            .count();
        let agent = ups[0]
            .requests()
            .iter()
            .find(|r| r.path == "/healthz")
            .and_then(|r| r.header("user-agent").map(String::from));
        (
            failed[&d].clone(),
            while_failed,
            back[&d].clone(),
            after,
            stats,
            checks >= 2,
            agent,
        )
    });
}

#[test]
fn tcp_health_checks_match_payloads() {
    // `good` answers PONG to PING; `bad` answers something else.
    let pong = |reply: &'static [u8]| {
        Upstream::start(move |mut s| {
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(reply).is_err() {
                    break;
                }
            }
        })
    };
    let (good, bad) = (pong(b"PONG"), pong(b"NOPE"));
    let b = bootstrap(
        0,
        vec![listener("l", 0, tcp_proxy("l", "pingers", json!(null)))],
        vec![cluster(
            "pingers",
            &[(good.port, 1), (bad.port, 1)],
            json!({"health_checks": [{
                "timeout": "0.5s", "interval": "0.2s", "no_traffic_interval": "0.2s",
                "unhealthy_threshold": 1, "healthy_threshold": 1,
                "tcp_health_check": {"send": {"text": "50494e47"}, "receive": [{"text": "504f4e47"}]},
            }]}),
        )],
    );
    on_both("health_tcp", &b, |proxy| {
        let flags = flags_when(proxy, "pingers", |f| {
            f.get(&good.port).is_some_and(|v| v == "healthy")
                && f.get(&bad.port)
                    .is_some_and(|v| v.contains("failed_active_hc"))
        });
        let stats = settled_stats(proxy, "cluster.pingers.health_check.", &["healthy"], |s| {
            s["healthy"] == 1
        });
        (
            flags[&good.port].clone(),
            flags[&bad.port].contains("/failed_active_hc"),
            stats,
        )
    });
}

#[test]
fn health_checks_go_over_the_hosts_tls() {
    // `secure` speaks TLS (its certificate verified against the test CA); `plain` does not, so
    // the handshake fails: a check over TLS passes the one and fails the other, where a
    // plaintext check would do the opposite.
    let secure = TlsUpstream::start("secure", &pki().upstream, &[]);
    let plain = HttpUpstream::start(|_| Reply::ok("plain"));
    let mut backend = cluster(
        "backend",
        &[(secure.port, 1), (plain.port, 1)],
        json!({"health_checks": [{
            "timeout": "1s", "interval": "0.2s", "no_traffic_interval": "0.2s",
            "unhealthy_threshold": 1, "healthy_threshold": 1,
            "http_health_check": {"path": "/healthz"},
        }]}),
    );
    backend["transport_socket"] = upstream_tls(
        json!({"validation_context": validation(&pki().ca, json!({}))}),
        json!({"sni": UPSTREAM_NAME}),
    );
    let b = bootstrap(
        0,
        vec![http_listener_to("checked", 0, "backend")],
        vec![backend],
    );
    on_both("health_tls", &b, |proxy| {
        let flags = flags_when(proxy, "backend", |f| {
            f.get(&secure.port).is_some_and(|v| v == "healthy")
                && f.get(&plain.port)
                    .is_some_and(|v| v.contains("failed_active_hc"))
        });
        thread::sleep(Duration::from_secs(1));
        let port = proxy.listener_address("checked").port();
        let statuses: BTreeSet<String> = served(port, 20)
            .into_iter()
            .map(|r| match r.starts_with('{') {
                true => "200 from secure".to_string(),
                false => r,
            })
            .collect();
        (
            flags[&secure.port].clone(),
            flags[&plain.port].contains("/failed_active_hc"),
            statuses,
        )
    });
}

#[test]
fn grpc_health_checks_read_the_serving_status() {
    if !have_grpcio("grpc_health_checks_read_the_serving_status") {
        return;
    }
    let serving = PeerServer::start(
        "grpc_health.py",
        &["--port", "0", "--status", "SERVING", "--stdin-eof"],
    );
    let not_serving = PeerServer::start(
        "grpc_health.py",
        &[
            "--port",
            "0",
            "--status",
            "SERVING",
            "--service",
            "shop=NOT_SERVING",
            "--stdin-eof",
        ],
    );
    let b = bootstrap(
        0,
        vec![http_listener_to("grpc", 0, "grpc")],
        vec![cluster(
            "grpc",
            &[(serving.port, 1), (not_serving.port, 1)],
            json!({
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "health_checks": [{
                    "timeout": "1s", "interval": "0.2s", "no_traffic_interval": "0.2s",
                    "unhealthy_threshold": 1, "healthy_threshold": 1,
                    "grpc_health_check": {"service_name": "shop"},
                }],
            }),
        )],
    );
    on_both("health_grpc", &b, |proxy| {
        let flags = flags_when(proxy, "grpc", |f| {
            f.get(&serving.port).is_some_and(|v| v == "healthy")
                && f.get(&not_serving.port).is_some_and(|v| v != "healthy")
        });
        (
            flags[&serving.port].clone(),
            flags[&not_serving.port].clone(),
        )
    });
}

#[test]
fn outlier_detection_ejects_a_host_answering_503() {
    let names = ["a", "b", "c", "d"];
    let ups: Vec<HttpUpstream> = names
        .iter()
        .map(|n| {
            let n = n.to_string();
            HttpUpstream::start(move |_| match n.as_str() {
                "d" => Reply::status(503, "d"),
                n => Reply::ok(n),
            })
        })
        .collect();
    let d = ups[3].port;
    let endpoints: Vec<(u16, u32)> = ups.iter().map(|u| (u.port, 1)).collect();
    let detection = |max: Option<u32>| {
        let mut od = json!({"consecutive_5xx": 3, "interval": "1s", "base_ejection_time": "30s"});
        if let Some(max) = max {
            od["max_ejection_percent"] = json!(max);
        }
        json!({"outlier_detection": od})
    };
    let b = bootstrap(
        0,
        vec![
            http_listener_to("ejecting", 0, "ejecting"),
            http_listener_to("capped", 0, "capped"),
        ],
        vec![
            cluster("ejecting", &endpoints, detection(Some(50))),
            // Envoy's default 10 %: one host of four is 25 %, so none may be ejected.
            cluster("capped", &endpoints, detection(None)),
        ],
    );
    on_both("outlier", &b, |proxy| {
        let (port, capped_port) = (proxy.port("ejecting"), proxy.port("capped"));
        let first = served(port, 60);
        let flags = flags_when(proxy, "ejecting", |f| {
            f.get(&d)
                .is_some_and(|v| v.contains("failed_outlier_check"))
        });
        let later = served(port, 100);
        let capped = served(capped_port, 60);
        let stats = settled_stats(
            proxy,
            "cluster.",
            &[
                "ejecting.outlier_detection.ejections_active",
                "ejecting.outlier_detection.ejections_enforced_consecutive_5xx",
                "ejecting.outlier_detection.ejections_enforced_total",
                "capped.outlier_detection.ejections_active",
            ],
            |s| s["ejecting.outlier_detection.ejections_active"] == 1,
        );
        let overflow = proxy.stats()["cluster.capped.outlier_detection.ejections_overflow"];
        let failures_before = first.iter().filter(|r| r.starts_with("status")).count();
        (
            flags[&d].clone(),
            failures_before > 0 && failures_before <= 15,
            later.iter().all(|r| r != "status 503"),
            capped.iter().any(|r| r == "status 503"),
            overflow > 0,
            stats,
        )
    });
}

#[test]
fn eds_health_and_priorities_spread_like_envoy() {
    let names = ["a", "b", "c", "e", "x", "y", "z"];
    let ups: Vec<HttpUpstream> = names.iter().map(|n| HttpUpstream::named(n)).collect();
    let port_of = |n: &str| ups[names.iter().position(|m| *m == n).unwrap()].port;
    let endpoint = |n: &str, health: &str| json!({"endpoint": {"address": socket_address(port_of(n))}, "health_status": health});
    let with_groups = |name: &str, groups: Value| {
        json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
               "load_assignment": {"cluster_name": name, "endpoints": groups}})
    };
    let b = bootstrap(
        0,
        vec![
            http_listener_to("spill", 0, "spill"),
            http_listener_to("panic", 0, "panic"),
        ],
        vec![
            // Priority 0 has 2 of 3 hosts healthy: 1.4 × 66 % = 93 % stays there, 7 % spills
            // to priority 1.
            with_groups(
                "spill",
                json!([
                    {"lb_endpoints": [endpoint("a", "HEALTHY"), endpoint("b", "UNKNOWN"), endpoint("c", "UNHEALTHY")]},
                    {"priority": 1, "lb_endpoints": [endpoint("e", "HEALTHY")]},
                ]),
            ),
            // 1 of 3 healthy is under the 50 % panic threshold: all three take requests.
            with_groups(
                "panic",
                json!([{"lb_endpoints": [endpoint("x", "HEALTHY"), endpoint("y", "DRAINING"), endpoint("z", "UNHEALTHY")]}]),
            ),
        ],
    );
    on_both("eds_health", &b, |proxy| {
        let (spill, panic) = (proxy.port("spill"), proxy.port("panic"));
        let spilled = served(spill, 400);
        let to_e = spilled.iter().filter(|r| *r == "e").count();
        let spill_set: BTreeSet<String> = spilled.into_iter().collect();
        let panic_set: BTreeSet<String> = served(panic, 60).into_iter().collect();
        let spill_flags = flags(proxy, "spill");
        let panic_flags = flags(proxy, "panic");
        (
            spill_set,
            (8..=60).contains(&to_e),
            panic_set,
            spill_flags[&port_of("c")].clone(),
            panic_flags.values().cloned().collect::<Vec<_>>(),
        )
    });
}
