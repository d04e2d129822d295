//! Tests: the router and upstream pools end to end — keep-alive reuse, per-connection request
//! limits, idle timeouts, retries (`retry_on` kinds, `previous_hosts`), timeouts, circuit
//! breakers, upstream failures and their response flags, and the route actions (weighted and
//! header-named clusters, host and path rewrites, redirects, direct responses); key outcomes
//! are compared with Envoy on the same bootstrap.
mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::{http_e2e::*, *};
use serde_json::{json, Value};

// Protocols (issue 10): each `same_as_envoy` scenario about routing semantics runs once per
// `Proto::ALL` — the raw-socket HTTP/1.1 client, then h2c with prior knowledge (the scenes'
// connection manager has the default codec, AUTO) — and each run is compared with Envoy on the
// same bootstrap; the expectations are the same for both protocols. These stay HTTP/1.1-only:
// - `hop_by_hop_headers_are_not_forwarded`: its subject is connection-specific request headers
//   (`connection`, `keep-alive`, `proxy-connection`), which HTTP/2 forbids (RFC 9113 §8.2.2).
// - `upstream_body_until_close_and_head_and_204`: HTTP/1.1 response framing (read until close,
//   chunked, HEAD and 204 lengths) relayed on one kept-alive HTTP/1.1 client connection.
// - `client_gone_before_the_response_is_logged_dc`: a raw socket closed mid-exchange.
// - `early_upstream_response_before_the_request_body`: a `content-length` body streamed on a raw
//   socket while the response arrives.

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// Pools

#[test]
fn keep_alive_reuses_one_upstream_connection() {
    let up = HttpUpstream::named("a");
    let s = Scene::ours(
        "reuse",
        to_a(json!({})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    let mut c = Client::connect(s.port);
    for _ in 0..10 {
        let r = c.get("/keep");
        assert_eq!((r.status, r.text().as_str()), (200, "a"));
    }
    for _ in 0..20 {
        let r = get(s.port, "/fresh");
        assert_eq!((r.status, r.text().as_str()), (200, "a"));
    }
    assert_eq!(up.count(), 30);
    assert_eq!(
        up.accepted(),
        1,
        "30 sequential requests on one shard must reuse one upstream connection"
    );
    let p = s.proxy();
    p.wait_stat("http.ingress.downstream_rq_2xx", "30", |v| v == 30);
    let stats = p.stats();
    assert_eq!(stats["http.ingress.downstream_rq_total"], 30);
    assert_eq!(stats["cluster.a.upstream_cx_total"], 1);
    assert_eq!(stats["cluster.a.upstream_rq_total"], 30);
    assert_eq!(stats["cluster.a.upstream_cx_active"], 1);
}

#[test]
fn max_requests_per_connection_opens_a_new_upstream_connection() {
    let up = HttpUpstream::named("a");
    let options = upstream_http_options(json!({"max_requests_per_connection": 3}));
    let s = Scene::ours(
        "max_requests",
        to_a(json!({})),
        vec![cluster("a", &[(up.port, 1)], options)],
    );
    let mut c = Client::connect(s.port);
    for _ in 0..9 {
        assert_eq!(c.get("/").status, 200);
    }
    assert_eq!(up.accepted(), 3, "3 requests per upstream connection");
    let per_conn: Vec<usize> = (0..3)
        .map(|i| up.requests().iter().filter(|r| r.conn == i).count())
        .collect();
    assert_eq!(per_conn, vec![3, 3, 3]);
    // The used-up connections are closed by the proxy, not left open.
    wait_for(SOON, "3 upstream connections closed", || {
        (up.closed() == 3).then_some(())
    });
    let stats = s.proxy().stats();
    assert_eq!(stats["cluster.a.upstream_cx_max_requests"], 3);
    assert_eq!(stats["cluster.a.upstream_cx_total"], 3);
}

#[test]
fn upstream_idle_timeout_closes_the_pooled_connection() {
    let up = HttpUpstream::named("a");
    let options = upstream_http_options(json!({"idle_timeout": "0.4s"}));
    let s = Scene::ours(
        "upstream_idle",
        to_a(json!({})),
        vec![cluster("a", &[(up.port, 1)], options)],
    );
    assert_eq!(get(s.port, "/").status, 200);
    assert_eq!(up.accepted(), 1);
    // Envoy closes an idle upstream connection when its idle timer fires, not on next use.
    let start = Instant::now();
    wait_for(
        Duration::from_secs(5),
        "the idle upstream connection closed",
        || (up.closed() == 1).then_some(()),
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        start.elapsed()
    );
    assert_eq!(get(s.port, "/").status, 200);
    assert_eq!(
        up.accepted(),
        2,
        "a new connection after the idle one closed"
    );
    assert_eq!(s.proxy().stats()["cluster.a.upstream_cx_idle_timeout"], 1);
}

#[test]
fn pooled_connection_closed_by_the_upstream_is_not_reused() {
    // The upstream closes after each response (without saying so): the next request must go
    // on a new connection and succeed, never fail on the dead one.
    let up = HttpUpstream::start(|_| {
        Reply::RawClose(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec())
    });
    let s = Scene::ours(
        "upstream_closes",
        to_a(json!({})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    let mut c = Client::connect(s.port);
    for i in 0..5 {
        let r = c.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
        thread::sleep(ms(100));
    }
    assert_eq!(up.accepted(), 5);
}

// ---------------------------------------------------------------------------------------------
// Retries

/// `(status, body, flags, upstream requests)` of one GET through a route with `retry_policy`
/// to an upstream answering `script`.
fn retry_outcome(
    peer: Peer,
    proto: Proto,
    tag: &str,
    policy: Value,
    script: Vec<Reply>,
) -> Option<(u16, String, String, usize)> {
    let up = HttpUpstream::script(script);
    let s = Scene::start(
        peer,
        tag,
        to_a(json!({"retry_policy": policy})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    )?;
    let r = get_with(proto, s.port, "/retry");
    let flags = s.flags(0);
    Some((r.status, r.text(), flags, up.count()))
}

fn policy(retry_on: &str, num_retries: u32) -> Value {
    json!({"retry_on": retry_on, "num_retries": num_retries})
}

#[test]
fn retry_on_5xx_until_success() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            retry_outcome(
                peer,
                proto,
                "retry_5xx",
                policy("5xx", 3),
                vec![
                    Reply::status(503, "no"),
                    Reply::status(500, "no"),
                    Reply::ok("yes"),
                ],
            )
        });
        assert_eq!(out, (200, "yes".into(), "-".into(), 3));
    }
}

#[test]
fn retry_on_5xx_exhausted_passes_the_last_response_with_urx() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            retry_outcome(
                peer,
                proto,
                "retry_5xx_limit",
                policy("5xx", 2),
                vec![Reply::status(503, "still down")],
            )
        });
        assert_eq!(out, (503, "still down".into(), "URX".into(), 3));
    }
}

#[test]
fn retry_stats_count_retries_and_success() {
    let up = HttpUpstream::script(vec![Reply::status(502, "x"), Reply::ok("y")]);
    let s = Scene::ours(
        "retry_stats",
        to_a(json!({"retry_policy": policy("gateway-error", 2)})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    assert_eq!(get(s.port, "/").status, 200);
    let stats = s.proxy().stats();
    assert_eq!(stats["cluster.a.upstream_rq_retry"], 1);
    assert_eq!(stats["cluster.a.upstream_rq_retry_success"], 1);
    assert_eq!(stats["cluster.a.upstream_rq_total"], 2);
}

#[test]
fn retry_limit_on_responses_is_counted() {
    let up = HttpUpstream::script(vec![Reply::status(503, "down")]);
    let s = Scene::ours(
        "retry_limit_stat",
        to_a(json!({"retry_policy": policy("5xx", 2)})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    assert_eq!(get(s.port, "/").status, 503);
    let stats = s.proxy().stats();
    assert_eq!(stats["cluster.a.upstream_rq_retry"], 2);
    assert_eq!(stats["cluster.a.upstream_rq_retry_limit_exceeded"], 1);
}

#[test]
fn retry_on_reset() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            retry_outcome(
                peer,
                proto,
                "retry_reset",
                policy("reset", 1),
                vec![Reply::Reset, Reply::ok("after reset")],
            )
        });
        assert_eq!(out, (200, "after reset".into(), "-".into(), 2));
    }
}

#[test]
fn reset_without_retry_policy_is_503_uc() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let up = HttpUpstream::script(vec![Reply::Reset]);
            let s = Scene::start(
                peer,
                "reset_no_retry",
                to_a(json!({})),
                vec![cluster("a", &[(up.port, 1)], json!(null))],
            )?;
            let r = get_with(proto, s.port, "/");
            Some((r.status, r.text(), s.flags(0), up.count()))
        });
        assert_eq!(out.0, 503);
        assert_eq!(out.2, "UC");
    }
}

#[test]
fn retry_on_reset_does_not_retry_5xx() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            retry_outcome(
                peer,
                proto,
                "reset_not_5xx",
                policy("reset", 2),
                vec![Reply::status(503, "five"), Reply::ok("no")],
            )
        });
        assert_eq!(out, (503, "five".into(), "-".into(), 1));
    }
}

#[test]
fn retry_on_gateway_error_only_502_to_504() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            retry_outcome(
                peer,
                proto,
                "gateway_error",
                policy("gateway-error", 3),
                vec![
                    Reply::status(502, "a"),
                    Reply::status(504, "b"),
                    Reply::status(500, "not retried"),
                    Reply::ok("no"),
                ],
            )
        });
        assert_eq!(out, (500, "not retried".into(), "-".into(), 3));
    }
}

#[test]
fn retry_on_retriable_status_codes() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let mut p = policy("retriable-status-codes", 2);
            p["retriable_status_codes"] = json!([418]);
            retry_outcome(
                peer,
                proto,
                "status_codes",
                p,
                vec![
                    Reply::status(418, "teapot"),
                    Reply::status(503, "not listed"),
                    Reply::ok("no"),
                ],
            )
        });
        assert_eq!(out, (503, "not listed".into(), "-".into(), 2));
    }
}

#[test]
fn retry_on_retriable_4xx_is_409_only() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            retry_outcome(
                peer,
                proto,
                "retriable_4xx",
                policy("retriable-4xx", 2),
                vec![
                    Reply::status(409, "conflict"),
                    Reply::status(404, "missing"),
                    Reply::ok("no"),
                ],
            )
        });
        assert_eq!(out, (404, "missing".into(), "-".into(), 2));
    }
}

#[test]
fn connect_failure_is_retried_to_another_host() {
    let up = HttpUpstream::named("good");
    let dead = refused_port();
    let s = Scene::ours(
        "connect_failure",
        to_a(json!({"retry_policy": policy("connect-failure", 1)})),
        vec![cluster("a", &[(dead, 1), (up.port, 1)], json!(null))],
    );
    for i in 0..6 {
        let r = get(s.port, "/");
        assert_eq!((r.status, r.text().as_str()), (200, "good"), "request {i}");
    }
    let stats = s.proxy().stats();
    assert!(stats["cluster.a.upstream_cx_connect_fail"] >= 1);
    assert_eq!(
        stats["cluster.a.upstream_rq_retry"],
        stats["cluster.a.upstream_cx_connect_fail"]
    );
}

#[test]
fn connection_refused_is_503_uf() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let s = Scene::start(
                peer,
                "refused",
                to_a(json!({})),
                vec![cluster("a", &[(refused_port(), 1)], json!(null))],
            )?;
            let r = get_with(proto, s.port, "/");
            Some((r.status, s.flags(0)))
        });
        assert_eq!(out, (503, "UF".into()));
    }
}

#[test]
fn connection_refused_retries_exhausted_is_uf_urx() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let s = Scene::start(
                peer,
                "refused_retries",
                to_a(json!({"retry_policy": policy("connect-failure", 2)})),
                vec![cluster("a", &[(refused_port(), 1)], json!(null))],
            )?;
            let r = get_with(proto, s.port, "/");
            Some((r.status, s.flags(0)))
        });
        assert_eq!(out, (503, "UF,URX".into()));
    }
}

#[test]
fn response_flags_print_in_the_order_envoy_sets_them() {
    for proto in Proto::ALL {
        // Envoy 1.40 prints flags in the order they were set: the retry limit (URX) is noted
        // before the failure that ends the request (UF, UT).
        let out = same_as_envoy(|peer| {
            let mut p = policy("connect-failure,5xx", 1);
            p["per_try_timeout"] = json!("0.2s");
            let slow = HttpUpstream::script(vec![Reply::after(2000, Reply::ok("late"))]);
            let routes = json!([
                route_to("/refused", "dead", json!({"retry_policy": p.clone()})),
                route_to("/slow", "slow", json!({"retry_policy": p})),
            ]);
            let s = Scene::start(
                peer,
                "flag_order",
                routes,
                vec![
                    cluster("dead", &[(refused_port(), 1)], json!(null)),
                    cluster("slow", &[(slow.port, 1)], json!(null)),
                ],
            )?;
            assert_eq!(get_with(proto, s.port, "/refused").status, 503);
            let refused = s.raw_flags(0);
            assert_eq!(get_with(proto, s.port, "/slow").status, 504);
            Some((refused, s.raw_flags(1)))
        });
        assert_eq!(out, ("URX,UF".into(), "URX,UT".into()));
    }
}

#[test]
fn previous_hosts_predicate_retries_on_a_different_host() {
    // Host "bad" resets every request and weighs 9 times "good": without the predicate most
    // retries would land on "bad" again.
    let bad = HttpUpstream::start(|_| Reply::Reset);
    let good = HttpUpstream::named("good");
    let mut p = policy("reset", 1);
    p["retry_host_predicate"] = json!([{
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {"@type": PREVIOUS_HOSTS},
    }]);
    p["host_selection_retry_max_attempts"] = json!(20);
    let s = Scene::ours(
        "previous_hosts",
        to_a(json!({"retry_policy": p})),
        vec![cluster("a", &[(bad.port, 9), (good.port, 1)], json!(null))],
    );
    for i in 0..12 {
        let r = get(s.port, "/");
        assert_eq!((r.status, r.text().as_str()), (200, "good"), "request {i}");
    }
    assert!(bad.count() >= 6, "bad got {} requests", bad.count());
    assert_eq!(good.count(), 12);
}

#[test]
fn per_try_timeout_retries_then_succeeds() {
    let up = HttpUpstream::script(vec![
        Reply::after(3000, Reply::ok("late")),
        Reply::ok("fast"),
    ]);
    let mut p = policy("5xx", 1);
    p["per_try_timeout"] = json!("0.3s");
    let s = Scene::ours(
        "per_try_ok",
        to_a(json!({"retry_policy": p})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    let start = Instant::now();
    let r = get(s.port, "/");
    assert_eq!((r.status, r.text().as_str()), (200, "fast"));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let stats = s.proxy().stats();
    assert_eq!(stats["cluster.a.upstream_rq_per_try_timeout"], 1);
    assert_eq!(stats["cluster.a.upstream_rq_retry"], 1);
}

#[test]
fn per_try_timeout_exhausted_is_504() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let mut p = policy("5xx", 1);
            p["per_try_timeout"] = json!("0.3s");
            let up = HttpUpstream::script(vec![Reply::after(2000, Reply::ok("late"))]);
            let s = Scene::start(
                peer,
                "per_try_504",
                to_a(json!({"retry_policy": p})),
                vec![cluster("a", &[(up.port, 1)], json!(null))],
            )?;
            let start = Instant::now();
            let r = get_with(proto, s.port, "/");
            let took = start.elapsed();
            assert!(took >= ms(550) && took < ms(1900), "took {took:?}");
            Some((r.status, r.text(), s.flags(0), up.count()))
        });
        assert_eq!(out.0, 504);
        assert_eq!(out.1, "upstream request timeout");
        assert_eq!(out.3, 2);
    }
}

#[test]
fn route_timeout_is_504_ut() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let up = HttpUpstream::script(vec![Reply::after(3000, Reply::ok("late"))]);
            let s = Scene::start(
                peer,
                "route_timeout",
                to_a(json!({"timeout": "0.4s"})),
                vec![cluster("a", &[(up.port, 1)], json!(null))],
            )?;
            let start = Instant::now();
            let r = get_with(proto, s.port, "/");
            let took = start.elapsed();
            assert!(took >= ms(380) && took < ms(2500), "took {took:?}");
            Some((
                r.status,
                r.text(),
                r.header("content-type").map(str::to_string),
                s.flags(0),
            ))
        });
        assert_eq!(
            out,
            (
                504,
                "upstream request timeout".into(),
                Some("text/plain".into()),
                "UT".into()
            )
        );
    }
}

#[test]
fn route_timeout_counts_upstream_rq_timeout() {
    let up = HttpUpstream::script(vec![Reply::after(2000, Reply::ok("late"))]);
    let s = Scene::ours(
        "timeout_stat",
        to_a(json!({"timeout": "0.3s"})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    assert_eq!(get(s.port, "/").status, 504);
    // Shards publish counters with relaxed stores that the admin thread sums: wait for them.
    let proxy = s.proxy();
    proxy.wait_stat("cluster.a.upstream_rq_timeout", "== 1", |v| v == 1);
    proxy.wait_stat("http.ingress.downstream_rq_5xx", "== 1", |v| v == 1);
}

#[test]
fn expected_timeout_header_and_zero_timeout_disables() {
    let up = HttpUpstream::script(vec![Reply::after(1500, Reply::ok("slow but fine"))]);
    let routes = json!([
        route_to("/default", "a", json!({})),
        route_to("/set", "a", json!({"timeout": "7s"})),
        route_to(
            "/per-try",
            "a",
            json!({"timeout": "7s", "retry_policy": {"retry_on": "5xx", "per_try_timeout": "3s"}})
        ),
        route_to("/off", "a", json!({"timeout": "0s"})),
    ]);
    let s = Scene::ours(
        "expected_timeout",
        routes,
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    let mut c = Client::connect(s.port);
    let mut expected = Vec::new();
    for path in ["/default", "/set", "/per-try", "/off"] {
        let r = c.get(path);
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "slow but fine"),
            "{path}"
        );
        expected.push(
            up.last()
                .header("x-envoy-expected-rq-timeout-ms")
                .map(str::to_string),
        );
    }
    assert_eq!(
        expected,
        vec![
            Some("15000".to_string()),
            Some("7000".to_string()),
            Some("3000".to_string()),
            None
        ]
    );
}

#[test]
fn upstream_service_time_header() {
    let up = HttpUpstream::script(vec![Reply::after(200, Reply::ok("x"))]);
    let s = Scene::ours(
        "service_time",
        to_a(json!({})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    let r = get(s.port, "/");
    let t: u64 = r
        .header("x-envoy-upstream-service-time")
        .expect("x-envoy-upstream-service-time")
        .parse()
        .unwrap();
    assert!((150..5000).contains(&t), "service time {t}");
}

// ---------------------------------------------------------------------------------------------
// Circuit breakers

/// Three requests to an upstream that takes 1.5 s, with `thresholds`: the first two are sent
/// (a connection, a pending request), the third overflows. Returns the third's outcome.
fn overflow_outcome(
    peer: Peer,
    proto: Proto,
    tag: &str,
    thresholds: Value,
) -> Option<(u16, String, Option<String>, String)> {
    let up = HttpUpstream::script(vec![Reply::after(1500, Reply::ok("slow"))]);
    let breakers = json!({"circuit_breakers": {"thresholds": [thresholds]}});
    // A route timeout bounds the test if a queued request is never served.
    let s = Scene::start(
        peer,
        tag,
        to_a(json!({"timeout": "5s"})),
        vec![cluster("a", &[(up.port, 1)], breakers)],
    )?;
    let port = s.port;
    let first = thread::spawn(move || get_with(proto, port, "/1").status);
    thread::sleep(ms(400));
    let second = thread::spawn(move || get_with(proto, port, "/2").status);
    thread::sleep(ms(400));
    let start = Instant::now();
    let r = get_with(proto, port, "/3");
    assert!(start.elapsed() < ms(1000), "the overflow must not wait");
    let flags = s.flags(0);
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(second.join().unwrap(), 200);
    Some((
        r.status,
        r.text(),
        r.header("x-envoy-overloaded").map(str::to_string),
        flags,
    ))
}

#[test]
fn max_pending_requests_overflow_is_503_uo() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            overflow_outcome(
                peer,
                proto,
                "pending_overflow",
                json!({"max_connections": 1, "max_pending_requests": 1}),
            )
        });
        assert_eq!(out.0, 503);
        assert_eq!(out.3, "UO");
    }
}

#[test]
fn max_requests_overflow_is_503_uo() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            overflow_outcome(peer, proto, "requests_overflow", json!({"max_requests": 2}))
        });
        assert_eq!(out.0, 503);
        assert_eq!(out.3, "UO");
    }
}

#[test]
fn pending_overflow_is_counted() {
    let up = HttpUpstream::script(vec![Reply::after(1500, Reply::ok("slow"))]);
    let breakers = json!({"circuit_breakers": {"thresholds": [{"max_connections": 1, "max_pending_requests": 1}]}});
    let s = Scene::ours(
        "pending_stat",
        to_a(json!({"timeout": "5s"})),
        vec![cluster("a", &[(up.port, 1)], breakers)],
    );
    let port = s.port;
    let first = thread::spawn(move || get(port, "/").status);
    thread::sleep(ms(400));
    let second = thread::spawn(move || get(port, "/").status);
    thread::sleep(ms(400));
    assert_eq!(get(port, "/").status, 503);
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(second.join().unwrap(), 200);
    assert_eq!(
        up.accepted(),
        1,
        "the pending request waited for the one connection"
    );
    let stats = s.proxy().stats();
    assert_eq!(stats["cluster.a.upstream_rq_pending_overflow"], 1);
    assert_eq!(stats["cluster.a.upstream_rq_pending_total"], 1);
}

#[test]
fn max_connections_queues_requests_for_the_pooled_connection() {
    for proto in Proto::ALL {
        // One connection allowed: concurrent requests wait as pending requests and are served one
        // after another on that connection as it comes back to the pool.
        let out = same_as_envoy(|peer| {
            let up = HttpUpstream::script(vec![Reply::after(300, Reply::ok("served"))]);
            let breakers = json!({"circuit_breakers": {"thresholds": [{"max_connections": 1, "max_pending_requests": 10}]}});
            let s = Scene::start(
                peer,
                "queued",
                to_a(json!({"timeout": "6s"})),
                vec![cluster("a", &[(up.port, 1)], breakers)],
            )?;
            let port = s.port;
            let start = Instant::now();
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    thread::sleep(ms(20));
                    thread::spawn(move || get_with(proto, port, &format!("/{i}")).status)
                })
                .collect();
            let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let took = start.elapsed();
            assert!(took < Duration::from_secs(4), "4 × 300 ms took {took:?}");
            Some((statuses, up.accepted()))
        });
        assert_eq!(out, (vec![200; 4], 1));
    }
}

#[test]
fn max_retries_overflow_passes_the_response() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let up = HttpUpstream::script(vec![Reply::status(503, "down")]);
            let breakers = json!({"circuit_breakers": {"thresholds": [{"max_retries": 0}]}});
            let s = Scene::start(
                peer,
                "retry_overflow",
                to_a(json!({"retry_policy": policy("5xx", 3)})),
                vec![cluster("a", &[(up.port, 1)], breakers)],
            )?;
            let r = get_with(proto, s.port, "/");
            Some((r.status, r.text(), s.flags(0), up.count()))
        });
        assert_eq!(out, (503, "down".into(), "UO".into(), 1));
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream failures

#[test]
fn no_healthy_host_is_503_uh() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let s = Scene::start(
                peer,
                "no_host",
                to_a(json!({})),
                vec![cluster("a", &[], json!(null))],
            )?;
            let r = get_with(proto, s.port, "/");
            Some((r.status, r.text(), s.flags(0)))
        });
        assert_eq!(out, (503, "no healthy upstream".into(), "UH".into()));
    }
}

#[test]
fn unknown_cluster_is_503_nc() {
    for proto in Proto::ALL {
        let up = HttpUpstream::named("b");
        let out = same_as_envoy(|peer| {
            let routes =
                json!([{"match": {"prefix": "/"}, "route": {"cluster_header": "x-cluster"}}]);
            let s = Scene::start(
                peer,
                "no_cluster",
                routes,
                vec![cluster("b", &[(up.port, 1)], json!(null))],
            )?;
            let r = fetch_with(proto, s.port, "GET", "/", &[("x-cluster", "nope")], b"");
            let missing = get_with(proto, s.port, "/");
            Some((r.status, r.text(), s.flags(0), missing.status))
        });
        assert_eq!(out, (503, "".into(), "NC".into(), 503));
    }
}

#[test]
fn malformed_upstream_response_is_502_upe_and_counted() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let up = HttpUpstream::script(vec![Reply::RawClose(
                b"HTTP/1.1 2x0 Nope\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            )]);
            let s = Scene::start(
                peer,
                "malformed_upstream",
                to_a(json!({})),
                vec![cluster("a", &[(up.port, 1)], json!(null))],
            )?;
            let r = get_with(proto, s.port, "/");
            let flags = s.flags(0);
            if let Running::Shardproxy(p) = &s.running {
                assert_eq!(p.stats()["cluster.a.upstream_cx_protocol_error"], 1);
            }
            Some((r.status, flags))
        });
        assert_eq!(out, (502, "UPE".into()));
    }
}

/// An upstream that sends half of a 100-byte body, then `cut`s (reset or close): the client
/// never sees a complete body, and the access log shows the 200 that had started.
fn cut_mid_body(tag: &str, cut: fn(Vec<u8>) -> Reply) {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let partial = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec();
            let up = HttpUpstream::script(vec![cut(partial)]);
            let cluster = vec![cluster("a", &[(up.port, 1)], json!(null))];
            let s = Scene::start(peer, tag, to_a(json!({})), cluster)?;
            let truncated = try_fetch_with(proto, s.port, "GET", "/", &[], b"").is_err();
            let line = s.log_lines(1)[0].clone();
            let mut parts = line.split(' ');
            Some((
                truncated,
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            ))
        });
        assert!(out.0, "the client must not see a complete 100-byte body");
        assert_eq!(out.1, "200");
    }
}

#[test]
fn upstream_reset_mid_body_cuts_the_client() {
    cut_mid_body("reset_mid_body", Reply::RawReset);
}

#[test]
fn upstream_close_mid_body_cuts_the_client() {
    cut_mid_body("close_mid_body", Reply::RawClose);
}

// ---------------------------------------------------------------------------------------------
// Route actions

#[test]
fn weighted_clusters_split_by_weight() {
    let a = HttpUpstream::named("a");
    let b = HttpUpstream::named("b");
    let routes = json!([{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
        {"name": "a", "weight": 3}, {"name": "b", "weight": 1},
    ]}}}]);
    let s = Scene::ours(
        "weighted",
        routes,
        vec![
            cluster("a", &[(a.port, 1)], json!(null)),
            cluster("b", &[(b.port, 1)], json!(null)),
        ],
    );
    let mut c = Client::connect(s.port);
    let mut to_a = 0;
    for _ in 0..400 {
        let r = c.get("/");
        assert_eq!(r.status, 200);
        if r.text() == "a" {
            to_a += 1;
        }
    }
    assert!((240..=360).contains(&to_a), "{to_a} of 400 went to a (3:1)");
    assert_eq!(a.count() + b.count(), 400);
}

#[test]
fn weighted_clusters_follow_the_random_value_header() {
    for proto in Proto::ALL {
        // `header_name`: the request's own number picks (value % total weight), as a chain of
        // proxies needs to pick alike; without it a random one.
        let picks = same_as_envoy(|peer| {
            let a = HttpUpstream::named("a");
            let b = HttpUpstream::named("b");
            let routes = json!([{"match": {"prefix": "/"}, "route": {"weighted_clusters": {
                "header_name": "x-pick",
                "clusters": [{"name": "a", "weight": 3}, {"name": "b", "weight": 1}],
            }}}]);
            let clusters = vec![
                cluster("a", &[(a.port, 1)], json!(null)),
                cluster("b", &[(b.port, 1)], json!(null)),
            ];
            let s = Scene::start(peer, "weighted_header", routes, clusters)?;
            let picks: Vec<String> = ["0", "2", "3", "7", "11", "400"]
                .iter()
                .map(|n| fetch_with(proto, s.port, "GET", "/", &[("x-pick", n)], b"").text())
                .collect();
            Some(picks)
        });
        assert_eq!(picks, ["a", "a", "b", "b", "b", "a"]);
    }
}

#[test]
fn cluster_header_picks_the_cluster() {
    let a = HttpUpstream::named("a");
    let b = HttpUpstream::named("b");
    let routes = json!([{"match": {"prefix": "/"}, "route": {"cluster_header": "x-cluster"}}]);
    let s = Scene::ours(
        "cluster_header",
        routes,
        vec![
            cluster("a", &[(a.port, 1)], json!(null)),
            cluster("b", &[(b.port, 1)], json!(null)),
        ],
    );
    let mut c = Client::connect(s.port);
    for name in ["b", "a", "b"] {
        let r = c.request("GET", "/", &[("x-cluster", name)], b"");
        assert_eq!((r.status, r.text()), (200, name.to_string()));
    }
}

#[test]
fn auto_host_rewrite_uses_the_dns_name() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let up = HttpUpstream::named("dns");
            let dns = json!({
                "name": "dns",
                "type": "STRICT_DNS",
                "dns_lookup_family": "V4_ONLY",
                "connect_timeout": "2s",
                "load_assignment": {"cluster_name": "dns", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "localhost", "port_value": up.port}}}},
                ]}]},
            });
            let routes = json!([
                route_to("/auto", "dns", json!({"auto_host_rewrite": true})),
                route_to(
                    "/literal",
                    "dns",
                    json!({"host_rewrite_literal": "rewritten.example"})
                ),
                route_to("/", "dns", json!({})),
            ]);
            let s = Scene::start(peer, "auto_host", routes, vec![dns])?;
            // The first request may race the first resolution.
            wait_for(SOON, "the DNS cluster serves", || {
                (get_with(proto, s.port, "/").status == 200).then_some(())
            });
            let mut hosts = Vec::new();
            for path in ["/auto", "/literal", "/"] {
                let r = fetch_with(
                    proto,
                    s.port,
                    "GET",
                    path,
                    &[("host", "original.example")],
                    b"",
                );
                assert_eq!(r.status, 200, "{path}");
                hosts.push(up.last().header("host").unwrap_or("").to_string());
            }
            Some(hosts)
        });
        assert_eq!(
            out,
            vec!["localhost", "rewritten.example", "original.example"]
        );
    }
}

#[test]
fn prefix_rewrite_sets_original_path() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let up = HttpUpstream::named("a");
            let routes = json!([
                {"match": {"prefix": "/api/"}, "route": {"cluster": "a", "prefix_rewrite": "/v2/"}},
                {"match": {"prefix": "/strip"}, "route": {"cluster": "a", "prefix_rewrite": "/"}},
                {"match": {"prefix": "/regex/"}, "route": {"cluster": "a", "regex_rewrite": {
                    "pattern": {"regex": "^/regex/(\\w+)/(\\w+)$"}, "substitution": "/\\2/\\1"}}},
            ]);
            let s = Scene::start(
                peer,
                "prefix_rewrite",
                routes,
                vec![cluster("a", &[(up.port, 1)], json!(null))],
            )?;
            let mut seen = Vec::new();
            for path in ["/api/items?q=1", "/strip/x", "/regex/one/two"] {
                assert_eq!(get_with(proto, s.port, path).status, 200, "{path}");
                let req = up.last();
                seen.push((
                    req.path.clone(),
                    req.header("x-envoy-original-path").map(str::to_string),
                ));
            }
            Some(seen)
        });
        assert_eq!(
            out,
            vec![
                (
                    "/v2/items?q=1".to_string(),
                    Some("/api/items?q=1".to_string())
                ),
                ("//x".to_string(), Some("/strip/x".to_string())),
                ("/two/one".to_string(), Some("/regex/one/two".to_string())),
            ]
        );
    }
}

#[test]
fn redirects_and_direct_responses() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let routes = json!([
                {"match": {"prefix": "/old"}, "redirect": {"path_redirect": "/new", "response_code": "PERMANENT_REDIRECT"}},
                {"match": {"prefix": "/secure"}, "redirect": {"https_redirect": true}},
                {"match": {"prefix": "/moved/"}, "redirect": {"prefix_rewrite": "/here/", "host_redirect": "other.example", "strip_query": true}},
                {"match": {"prefix": "/found"}, "redirect": {"scheme_redirect": "https", "port_redirect": 8443, "response_code": "FOUND"}},
                {"match": {"path": "/health"}, "direct_response": {"status": 200, "body": {"inline_string": "healthy"}}},
                {"match": {"path": "/gone"}, "direct_response": {"status": 410}},
            ]);
            let s = Scene::start(peer, "redirects", routes, vec![])?;
            let mut out = Vec::new();
            for path in [
                "/old/page?x=1",
                "/secure/a",
                "/moved/b?drop=1",
                "/found",
                "/health",
                "/gone",
            ] {
                let r = get_with(proto, s.port, path);
                out.push((
                    path,
                    r.status,
                    r.header("location").map(str::to_string),
                    r.text(),
                    r.header("content-type").map(str::to_string),
                ));
            }
            Some(out)
        });
        let loc = |l: &str| Some(l.to_string());
        let summary: Vec<_> = out
            .iter()
            .map(|(p, s, l, b, _)| (*p, *s, l.clone(), b.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                // path_redirect without a query keeps the request's query.
                (
                    "/old/page?x=1",
                    308,
                    loc("http://example.com/new?x=1"),
                    "".into()
                ),
                (
                    "/secure/a",
                    301,
                    loc("https://example.com/secure/a"),
                    "".into()
                ),
                (
                    "/moved/b?drop=1",
                    301,
                    loc("http://other.example/here/b"),
                    "".into()
                ),
                (
                    "/found",
                    302,
                    loc("https://example.com:8443/found"),
                    "".into()
                ),
                ("/health", 200, None, "healthy".into()),
                ("/gone", 410, None, "".into()),
            ]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream message handling

#[test]
fn retried_request_body_is_sent_again() {
    let up = HttpUpstream::script(vec![Reply::status(503, "again"), Reply::ok("done")]);
    let s = Scene::ours(
        "retry_body",
        to_a(json!({"retry_policy": policy("5xx", 1)})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    let body = vec![b'p'; 50_000];
    let r = fetch(s.port, "POST", "/upload", &[], &body);
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs.iter().all(|r| r.body == body),
        "both tries carry the whole body"
    );
}

#[test]
fn upstream_connection_close_is_not_reused() {
    let up = HttpUpstream::start(|_| {
        Reply::RawClose(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        )
    });
    let s = Scene::ours(
        "upstream_conn_close",
        to_a(json!({})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    let mut c = Client::connect(s.port);
    for _ in 0..3 {
        let r = c.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert_ne!(
            r.header("connection"),
            Some("close"),
            "the client connection stays open"
        );
    }
    assert_eq!(up.accepted(), 3);
}

#[test]
fn upstream_body_until_close_and_head_and_204() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::start(|req| {
            match req.path.as_str() {
            "/until-close" => Reply::RawClose(b"HTTP/1.1 200 OK\r\n\r\nread until the end".to_vec()),
            "/empty" => Reply::Raw(b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n".to_vec()),
            "/chunked" => Reply::Raw(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
            ),
            _ => Reply::ok("sized body"),
        }
        });
        let s = Scene::start(
            peer,
            "framings",
            to_a(json!({})),
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut c = Client::connect(s.port);
        let mut out = Vec::new();
        for (method, path) in [
            ("GET", "/until-close"),
            ("HEAD", "/sized"),
            ("GET", "/empty"),
            ("GET", "/chunked"),
            ("GET", "/sized"),
        ] {
            let r = c.request(method, path, &[], b"");
            out.push((
                path,
                r.status,
                r.text(),
                r.header("content-length").map(str::to_string),
            ));
        }
        Some(out)
    });
    let o = |p: &'static str, s: u16, b: &str, cl: Option<&str>| {
        (p, s, b.to_string(), cl.map(str::to_string))
    };
    assert_eq!(
        out,
        vec![
            o("/until-close", 200, "read until the end", None),
            o("/sized", 200, "", Some("10")),
            o("/empty", 204, "", None),
            o("/chunked", 200, "hello world", None),
            o("/sized", 200, "sized body", Some("10")),
        ]
    );
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::start(|_| {
            Reply::with_headers(
                200,
                &[
                    ("connection", "x-up-private"),
                    ("x-up-private", "1"),
                    ("keep-alive", "timeout=5"),
                    ("proxy-connection", "keep-alive"),
                    ("x-up-public", "2"),
                ],
                "ok",
            )
        });
        let s = Scene::start(
            peer,
            "hop_by_hop",
            to_a(json!({})),
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let r = fetch(
            s.port,
            "GET",
            "/",
            &[
                ("connection", "keep-alive, x-private"),
                ("x-private", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("x-public", "2"),
            ],
            b"",
        );
        let req = up.last();
        let mut sent: Vec<String> = req
            .headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .filter(|k| {
                !k.starts_with("x-envoy-") && k != "x-request-id" && k != "x-forwarded-proto"
            })
            .collect();
        sent.sort();
        let mut got: Vec<String> = r
            .headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .filter(|k| k != "x-envoy-upstream-service-time")
            .collect();
        got.sort();
        // A response header its `Connection` names is hop-by-hop (RFC 9110 §7.6.1): shardproxy
        // drops it, Envoy passes it on (docs/http-differences.md); compare the rest.
        let private = got.iter().any(|k| k == "x-up-private");
        if matches!(peer, Peer::Shardproxy) {
            assert!(
                !private,
                "x-up-private is named by Connection: not forwarded"
            );
        }
        got.retain(|k| k != "x-up-private");
        Some((r.status, sent, req.header("te").map(str::to_string), got))
    });
    assert_eq!(out.0, 200);
}

#[test]
fn local_reply_headers_match_envoy() {
    for proto in Proto::ALL {
        // Header names (and the values that do not vary) of local replies: a direct response, no
        // route, no healthy upstream.
        let out = same_as_envoy(|peer| {
            let hosts = json!([{"name": "only", "domains": ["example.com"], "routes": [
                {"match": {"path": "/direct"}, "direct_response": {"status": 200, "body": {"inline_string": "hi"}}},
                {"match": {"path": "/empty"}, "direct_response": {"status": 200}},
                route_to("/dead", "dead", json!({})),
            ]}]);
            let s = Scene::with_hosts(
                peer,
                "local_headers",
                json!({}),
                hosts,
                vec![cluster("dead", &[], json!(null))],
            )?;
            let mut out = Vec::new();
            for (host, path) in [
                ("example.com", "/direct"),
                ("example.com", "/empty"),
                ("example.com", "/nope"),
                ("other.example", "/direct"),
                ("example.com", "/dead"),
            ] {
                let r = fetch_with(proto, s.port, "GET", path, &[("host", host)], b"");
                let mut headers: Vec<String> = r
                    .headers
                    .iter()
                    .map(|(k, v)| match k.to_ascii_lowercase().as_str() {
                        "date" => "date".to_string(),
                        k => format!("{k}: {v}"),
                    })
                    .collect();
                headers.sort();
                out.push((path, r.status, headers, r.text()));
            }
            Some(out)
        });
        assert_eq!(out[0].1, 200);
        assert_eq!(out[2].1, 404);
    }
}

#[test]
fn repeated_response_headers_are_kept() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let up = HttpUpstream::start(|_| {
                Reply::with_headers(
                    200,
                    &[
                        ("set-cookie", "a=1"),
                        ("x-multi", "one"),
                        ("set-cookie", "b=2"),
                        ("x-multi", "two"),
                    ],
                    "ok",
                )
            });
            let s = Scene::start(
                peer,
                "repeated_headers",
                to_a(json!({})),
                vec![cluster("a", &[(up.port, 1)], json!(null))],
            )?;
            let r = get_with(proto, s.port, "/");
            let all = |n: &str| -> Vec<String> {
                r.headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
                    .collect()
            };
            Some((all("set-cookie"), all("x-multi")))
        });
        assert_eq!(out.0, vec!["a=1".to_string(), "b=2".to_string()]);
    }
}

#[test]
fn bad_upstream_responses_are_502() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let up = HttpUpstream::start(|req| {
                let head: Vec<u8> = match req.path.as_str() {
                "/cl-te" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
                "/two-cl" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok".to_vec(),
                "/bad-chunk" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n".to_vec(),
                "/many" => {
                    let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
                    for i in 0..150 {
                        h.extend(format!("x-h{i}: v\r\n").as_bytes());
                    }
                    h.extend(b"content-length: 2\r\n\r\nok");
                    h
                }
                p if p.starts_with("/huge") => {
                    let kb: usize = p[5..].parse().unwrap();
                    let mut h = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
                    h.extend(vec![b'v'; kb * 1024]);
                    h.extend(b"\r\ncontent-length: 2\r\n\r\nok");
                    h
                }
                _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            };
                Reply::RawClose(head)
            });
            let s = Scene::start(
                peer,
                "bad_upstream",
                to_a(json!({})),
                vec![cluster("a", &[(up.port, 1)], json!(null))],
            )?;
            let mut out = Vec::new();
            for path in [
                "/cl-te",
                "/two-cl",
                "/bad-chunk",
                "/many",
                "/huge59",
                "/huge70",
                "/huge90",
                "/huge200",
                "/fine",
            ] {
                let seen = match try_fetch_with(proto, s.port, "GET", path, &[], b"") {
                    Ok(r) => format!("{} {}", r.status, r.text()),
                    Err(_) => "cut".to_string(),
                };
                out.push((path, seen));
            }
            Some(out)
        });
        assert_eq!(out.last().unwrap().1, "200 ok");
    }
}

#[test]
fn request_mirror_policy_copies_requests_to_the_shadow_cluster() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let main = HttpUpstream::named("main");
            let shadow = HttpUpstream::named("shadow");
            let routes = json!([route_to(
                "/",
                "a",
                json!({"request_mirror_policies": [{"cluster": "shadow"}]})
            )]);
            let s = Scene::start(
                peer,
                "mirror",
                routes,
                vec![
                    cluster("a", &[(main.port, 1)], json!(null)),
                    cluster("shadow", &[(shadow.port, 1)], json!(null)),
                ],
            )?;
            let r = fetch_with(proto, s.port, "POST", "/copy", &[], b"payload");
            let copy = wait_for(Duration::from_secs(5), "the shadow's copy", || {
                shadow.requests().pop()
            });
            Some((
                r.text(),
                copy.path.clone(),
                copy.header("host").map(str::to_string),
                copy.body.clone(),
                main.count(),
            ))
        });
        assert_eq!(
            out,
            (
                "main".into(),
                "/copy".into(),
                Some("example.com-shadow".into()),
                b"payload".to_vec(),
                1
            )
        );
    }
}

#[test]
fn mirror_stats_and_an_unreachable_mirror_as_envoy() {
    for proto in Proto::ALL {
        // Two mirrors: one answers, one refuses connections. The client's request is not
        // affected; each mirror cluster counts its outcome as Envoy does (a refused shadow is a
        // completed 503), and the copy carries `-shadow` before the port and `x-envoy-internal`.
        let out = same_as_envoy(|peer| {
            let main = HttpUpstream::named("main");
            let shadow = HttpUpstream::named("shadow");
            let mirrors =
                json!({"request_mirror_policies": [{"cluster": "shadow"}, {"cluster": "dead"}]});
            let s = Scene::start(
                peer,
                "mirror_stats",
                json!([route_to("/", "a", mirrors)]),
                vec![
                    cluster("a", &[(main.port, 1)], json!(null)),
                    cluster("shadow", &[(shadow.port, 1)], json!(null)),
                    cluster("dead", &[(refused_port(), 1)], json!(null)),
                ],
            )?;
            let r = fetch_with(
                proto,
                s.port,
                "GET",
                "/x",
                &[("host", "example.com:8080")],
                b"",
            );
            let copy = wait_for(Duration::from_secs(5), "the shadow's copy", || {
                shadow.requests().pop()
            });
            let wanted = [
                "cluster.a.upstream_rq_200",
                "cluster.shadow.upstream_rq_200",
                "cluster.shadow.upstream_rq_completed",
                "cluster.dead.upstream_cx_connect_fail",
                "cluster.dead.upstream_rq_503",
                "cluster.dead.upstream_rq_completed",
            ];
            let stats = wait_for(Duration::from_secs(5), "both mirrors counted", || {
                let stats = parse_stats(&http_get(addr(s.admin), "/stats").ok()?.body);
                let done = |name: &str| stats.get(name) == Some(&1);
                (done("cluster.shadow.upstream_rq_completed")
                    && done("cluster.dead.upstream_rq_503"))
                .then_some(stats)
            });
            Some((
                r.status,
                r.text(),
                copy.header("host").map(str::to_string),
                copy.header("x-envoy-internal").map(str::to_string),
                wanted.map(|name| stats.get(name).copied()),
            ))
        });
        assert_eq!(
            out,
            (
                200,
                "main".into(),
                Some("example.com-shadow:8080".into()),
                Some("true".into()),
                [Some(1); 6]
            )
        );
    }
}

#[test]
fn a_slow_mirror_neither_delays_the_client_nor_outlives_the_route_timeout() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let main = HttpUpstream::named("main");
            let slow = HttpUpstream::script(vec![Reply::after(3000, Reply::ok("late"))]);
            let action =
                json!({"timeout": "0.5s", "request_mirror_policies": [{"cluster": "slow"}]});
            let s = Scene::start(
                peer,
                "mirror_slow",
                json!([route_to("/", "a", action)]),
                vec![
                    cluster("a", &[(main.port, 1)], json!(null)),
                    cluster("slow", &[(slow.port, 1)], json!(null)),
                ],
            )?;
            let started = Instant::now();
            let r = get_with(proto, s.port, "/");
            let fast = started.elapsed() < ms(400);
            let stats = wait_for(Duration::from_secs(5), "the shadow's timeout", || {
                let stats = parse_stats(&http_get(addr(s.admin), "/stats").ok()?.body);
                (stats.get("cluster.slow.upstream_rq_timeout") == Some(&1)).then_some(stats)
            });
            let timed_out_in = started.elapsed();
            Some((
                r.status,
                fast,
                timed_out_in < ms(2500),
                stats.get("cluster.slow.upstream_rq_504").copied(),
                stats.get("cluster.slow.upstream_rq_completed").copied(),
            ))
        });
        assert_eq!(out, (200, true, true, Some(1), Some(1)));
    }
}

#[test]
fn a_mirror_of_a_body_over_the_buffer_limit_is_abandoned_and_counted() {
    // shardproxy sends a shadow once the request is forwarded, from the body kept for replay;
    // a body larger than the buffer limit is not kept, so its shadow is abandoned (counted as
    // Envoy's `retry_or_shadow_abandoned`). Envoy streams shadows and would send this one.
    let main = HttpUpstream::named("main");
    let shadow = HttpUpstream::named("shadow");
    let mirrors = json!({"request_mirror_policies": [{"cluster": "shadow"}]});
    let manager = hcm(
        "ingress",
        any_host(json!([route_to("/", "a", mirrors)])),
        json!({}),
    );
    let mut listener = http_listener("http", 0, manager);
    listener["per_connection_buffer_limit_bytes"] = json!(4096);
    let b = bootstrap(
        0,
        vec![listener],
        vec![
            cluster("a", &[(main.port, 1)], json!(null)),
            cluster("shadow", &[(shadow.port, 1)], json!(null)),
        ],
    );
    let p = Proxy::builder("mirror_abandoned", &b).start();
    let port = p.port("http");
    let big = vec![b'x'; 64 << 10];
    let r = fetch(port, "POST", "/big", &[], &big);
    assert_eq!((r.status, r.text().as_str()), (200, "main"));
    assert_eq!(main.last().body.len(), big.len());
    p.wait_stat("cluster.a.retry_or_shadow_abandoned", "1", |v| v == 1);
    // A body within the limit on the same route is mirrored.
    fetch(port, "POST", "/small", &[], b"tiny");
    let copy = wait_for(Duration::from_secs(5), "the shadow's copy", || {
        shadow.requests().pop()
    });
    assert_eq!(
        (copy.path.as_str(), copy.body.as_slice()),
        ("/small", &b"tiny"[..])
    );
    assert_eq!(shadow.count(), 1, "the big request was not mirrored");
    assert_eq!(p.stats()["cluster.a.retry_or_shadow_abandoned"], 1);
}

#[test]
fn client_gone_before_the_response_is_logged_dc() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::script(vec![Reply::after(800, Reply::ok("too late"))]);
        let s = Scene::start(
            peer,
            "client_gone",
            to_a(json!({})),
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut c = Client::connect(s.port);
        c.send(&request_bytes("GET", "/", &[], b""));
        thread::sleep(ms(200));
        drop(c);
        let line = s.log_lines(1)[0].clone();
        let mut parts = line.split(' ');
        Some((
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        ))
    });
    assert_eq!(out, ("0".into(), "DC".into()));
}

#[test]
fn cluster_not_found_response_code() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let routes = json!([{"match": {"prefix": "/"}, "route": {
            "cluster_header": "x-cluster", "cluster_not_found_response_code": "NOT_FOUND"}}]);
            let s = Scene::start(peer, "not_found_code", routes, vec![])?;
            let r = fetch_with(proto, s.port, "GET", "/", &[("x-cluster", "ghost")], b"");
            Some((r.status, s.flags(0)))
        });
        assert_eq!(out, (404, "NC".into()));
    }
}

#[test]
fn early_upstream_response_before_the_request_body() {
    // The upstream answers 413 after the head and closes without reading the body.
    let out = same_as_envoy(|peer| {
        let up = Upstream::start(|mut s| {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut s, &mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => return,
                }
            }
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big!",
            );
            let _ = s.shutdown(std::net::Shutdown::Write);
            thread::sleep(ms(300));
        });
        let s = Scene::start(
            peer,
            "early_response",
            to_a(json!({"timeout": "5s"})),
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut c = Client::connect(s.port);
        c.send(b"POST / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 2000000\r\n\r\n");
        let writer = {
            let mut w = c.w.try_clone().unwrap();
            thread::spawn(move || {
                let chunk = vec![b'b'; 64 << 10];
                for _ in 0..30 {
                    if std::io::Write::write_all(&mut w, &chunk).is_err() {
                        break;
                    }
                }
            })
        };
        let seen = match c.read_response(false) {
            Ok(r) => format!("{} {}", r.status, r.text()),
            Err(e) => format!("error {e}"),
        };
        let _ = c.w.shutdown(std::net::Shutdown::Both);
        let _ = writer.join();
        Some(seen)
    });
    assert_eq!(out, "413 too big!");
}

#[test]
fn head_request_to_a_direct_response() {
    for proto in Proto::ALL {
        let out = same_as_envoy(|peer| {
            let routes = json!([{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "twelve bytes"}}}]);
            let s = Scene::start(peer, "head_direct", routes, vec![])?;
            let head = fetch_with(proto, s.port, "HEAD", "/", &[], b"");
            let get = get_with(proto, s.port, "/");
            Some((
                head.status,
                head.header("content-length").map(str::to_string),
                get.text(),
            ))
        });
        assert_eq!(out, (200, Some("12".into()), "twelve bytes".into()));
    }
}

#[test]
fn client_router_headers_do_not_change_timeout_or_retries() {
    for proto in Proto::ALL {
        // Envoy 1.40 (loopback peers, no internal_address_config) ignores a client's
        // x-envoy-upstream-rq-timeout-ms, x-envoy-retry-on and x-envoy-max-retries.
        let out = same_as_envoy(|peer| {
            let up = HttpUpstream::start(|req| match req.path.as_str() {
                "/slow" => Reply::after(2000, Reply::ok("late")),
                _ => Reply::ok("fine"),
            });
            let flaky =
                HttpUpstream::script(vec![Reply::status(503, "x"), Reply::ok("second try")]);
            let routes = json!([
                route_to("/flaky", "flaky", json!({})),
                route_to("/", "a", json!({})),
            ]);
            let s = Scene::start(
                peer,
                "router_headers",
                routes,
                vec![
                    cluster("a", &[(up.port, 1)], json!(null)),
                    cluster("flaky", &[(flaky.port, 1)], json!(null)),
                ],
            )?;
            let start = Instant::now();
            let timed = fetch_with(
                proto,
                s.port,
                "GET",
                "/slow",
                &[("x-envoy-upstream-rq-timeout-ms", "300")],
                b"",
            );
            let took = start.elapsed();
            let retried = fetch_with(
                proto,
                s.port,
                "GET",
                "/flaky",
                &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "1")],
                b"",
            );
            Some((
                timed.status,
                took < ms(1500),
                retried.status,
                retried.text(),
            ))
        });
        assert_eq!(out, (200, false, 503, "x".into()));
    }
}
