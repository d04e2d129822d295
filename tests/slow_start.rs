//! Tests: slow start (`slow_start_config`), on Envoy 1.40 and shardproxy with the same
//! bootstrap and the same outcome: a host that an active health check brings back to health
//! takes a growing share of requests over the window, clearly below its steady share at first,
//! and its full share once the window is over (ROUND_ROBIN and LEAST_REQUEST).
mod common;

use std::{
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    http::{request, HttpConn, HttpProxy},
    http_e2e::*,
    tls::*,
    *,
};
use serde_json::{json, Value};

/// The slow-start window of the tests.
const WINDOW: Duration = Duration::from_secs(3);

/// An upstream answering `/healthz` with the status in `health` and anything else 200 with
/// body `name`.
fn checked_upstream(name: &str, health: Arc<AtomicU16>) -> HttpUpstream {
    let name = name.to_string();
    HttpUpstream::start(move |req| match req.path.as_str() {
        "/healthz" => Reply::status(health.load(Ordering::SeqCst), "health"),
        _ => Reply::ok(&name),
    })
}

/// Whether `/clusters` shows `port` of `cluster` healthy.
fn healthy(proxy: &HttpProxy, cluster: &str, port: u16) -> bool {
    let body = http_get(proxy.admin, "/clusters")
        .expect("GET /clusters")
        .body;
    body.lines()
        .any(|line| line == format!("{cluster}::127.0.0.1:{port}::health_flags::healthy"))
}

fn wait_health(proxy: &HttpProxy, port: u16, want: bool) {
    wait_for(Duration::from_secs(10), "host health", || {
        (healthy(proxy, "backend", port) == want).then_some(())
    });
}

/// Requests on one keep-alive connection (one worker, one shard) for `span`: how many reached
/// `b`, of how many.
fn share_of_b(port: u16, span: Duration) -> (usize, usize) {
    let mut conn = HttpConn::open(port);
    let start = Instant::now();
    let (mut to_b, mut total) = (0, 0);
    while start.elapsed() < span {
        let response = conn
            .exchange("GET", &request("GET", "/", &[("host", "slow.test")], b""))
            .expect("a response");
        assert_eq!(response.status(), 200, "{}", response.text());
        total += 1;
        if response.text() == "b" {
            to_b += 1;
        }
    }
    (to_b, total)
}

fn ratio((part, total): (usize, usize)) -> f64 {
    part as f64 / total.max(1) as f64
}

/// Hosts `a` and `b` of equal weight; `b` fails its health check until the window after `a`
/// became healthy is over, then passes. Outcome: whether `b`'s share of the first 40 % of its
/// window was clearly below half and rising, and whether after the window it is half.
fn ramps(tag: &str, lb: Value) {
    let health = [Arc::new(AtomicU16::new(200)), Arc::new(AtomicU16::new(503))];
    let ups = [
        checked_upstream("a", health[0].clone()),
        checked_upstream("b", health[1].clone()),
    ];
    let b_port = ups[1].port;
    let mut extra = json!({"health_checks": [{
        "timeout": "1s", "interval": "0.1s", "no_traffic_interval": "0.1s",
        "unhealthy_threshold": 1, "healthy_threshold": 1,
        "http_health_check": {"path": "/healthz"},
    }]});
    merge(&mut extra, lb);
    let b = bootstrap(
        0,
        vec![http_listener(
            "slow",
            0,
            hcm(
                "slow",
                any_host(json!([route_to("/", "backend", json!({}))])),
                json!({}),
            ),
        )],
        vec![cluster(
            "backend",
            &[(ups[0].port, 1), (ups[1].port, 1)],
            extra,
        )],
    );
    let outcome = on_both(tag, &b, |proxy| {
        let port = proxy.port("slow");
        health[1].store(503, Ordering::SeqCst);
        wait_health(proxy, b_port, false);
        // `a`'s own window (it became healthy at start) ends before `b` comes back.
        thread::sleep(WINDOW + Duration::from_millis(200));
        health[1].store(200, Ordering::SeqCst);
        wait_health(proxy, b_port, true);
        let back = Instant::now();
        let early = share_of_b(port, WINDOW / 5);
        let later = share_of_b(port, WINDOW / 5);
        thread::sleep(
            (back + WINDOW + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
        );
        let after = share_of_b(port, Duration::from_millis(600));
        eprintln!(
            "{tag}: b's share {:.3} ({early:?}) then {:.3} ({later:?}) in the window, {:.3} ({after:?}) after",
            ratio(early),
            ratio(later),
            ratio(after)
        );
        health[1].store(503, Ordering::SeqCst);
        assert!(
            early.1 >= 100 && later.1 >= 100 && after.1 >= 100,
            "too few requests"
        );
        // Weight factors 0.1 to 0.2, then 0.2 to 0.4 of the window: shares near 0.13 and 0.23
        // of the requests (steady: 0.5).
        (
            ratio(early) < 0.25,
            ratio(early) > 0.03,
            ratio(later) > ratio(early),
            ratio(later) < 0.35,
            (0.42..0.58).contains(&ratio(after)),
        )
    });
    if let Some(outcome) = outcome {
        assert_eq!(outcome, (true, true, true, true, true));
    }
}

#[test]
fn round_robin_ramps_a_host_back_to_health() {
    ramps(
        "slow_start_rr",
        json!({"lb_policy": "ROUND_ROBIN", "round_robin_lb_config": {"slow_start_config": {
            "slow_start_window": "3s", "min_weight_percent": {"value": 10},
        }}}),
    );
}

#[test]
fn least_request_ramps_a_host_back_to_health() {
    ramps(
        "slow_start_lr",
        json!({"lb_policy": "LEAST_REQUEST", "least_request_lb_config": {"slow_start_config": {
            "slow_start_window": "3s", "aggression": {"default_value": 1.0, "runtime_key": "a"},
        }}}),
    );
}
