//! Tests: upstream failures — refused, connect timeout, reset mid-stream, no hosts, retries
//! over max_connect_attempts; the proxy keeps serving afterwards.
mod common;

use std::{
    io::Write,
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;

/// Asserts the echo listener still relays (the proxy survived whatever came before).
fn assert_still_serving(echo_listener: u16) {
    let mut s = connect(echo_listener);
    s.write_all(b"still there?").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s).unwrap(), b"still there?");
}

#[test]
fn refused_upstream_closes_downstream() {
    let echo = Upstream::echo();
    let b = bootstrap(
        0,
        vec![
            listener("dead", 0, tcp_proxy("dead", "dead", json!(null))),
            listener("echo", 0, tcp_proxy("echo", "echo", json!(null))),
        ],
        vec![
            cluster("dead", &[(refused_port(), 1)], json!(null)),
            cluster("echo", &[(echo.port, 1)], json!(null)),
        ],
    );
    let proxy = Proxy::start("refused", &b);
    let (dead_l, echo_l) = (proxy.port("dead"), proxy.port("echo"));
    for i in 0..3 {
        let mut s = connect(dead_l);
        let start = Instant::now();
        let out = next_outcome(&mut s, SOON);
        assert!(
            matches!(out, Outcome::Eof),
            "connection {i} to a refused upstream: expected a clean EOF, got {out:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "closed soon, took {:?}",
            start.elapsed()
        );
    }
    proxy.wait_stat("cluster.dead.upstream_cx_connect_fail", ">= 3", |v| v >= 3);
    proxy.wait_stat("tcp.dead.downstream_cx_total", ">= 3", |v| v >= 3);
    assert_still_serving(echo_l);
}

#[test]
fn connect_timeout_closes_downstream_after_timeout() {
    let hole = Blackhole::new();
    let echo = Upstream::echo();
    let b = bootstrap(
        0,
        vec![
            listener("hole", 0, tcp_proxy("hole", "hole", json!(null))),
            listener("echo", 0, tcp_proxy("echo", "echo", json!(null))),
        ],
        vec![
            cluster(
                "hole",
                &[(hole.port, 1)],
                json!({"connect_timeout": "1.5s"}),
            ),
            cluster("echo", &[(echo.port, 1)], json!(null)),
        ],
    );
    let proxy = Proxy::start("ctimeout", &b);
    let (hole_l, echo_l) = (proxy.port("hole"), proxy.port("echo"));
    let mut s = connect(hole_l);
    let start = Instant::now();
    let out = next_outcome(&mut s, SOON);
    let took = start.elapsed();
    assert!(
        matches!(out, Outcome::Eof),
        "expected EOF after the connect timeout, got {out:?} after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_secs(8),
        "closed after {took:?}, expected ~1.5s (connect_timeout)"
    );
    proxy.wait_stat("cluster.hole.upstream_cx_connect_timeout", ">= 1", |v| {
        v >= 1
    });
    assert_still_serving(echo_l);
}

#[test]
fn upstream_reset_mid_stream_closes_downstream() {
    let reset = Upstream::reset_after_first_read();
    let echo = Upstream::echo();
    // A fixed port: the test reads the listener's stats, named after its configured address.
    let reset_l = free_port();
    let b = bootstrap(
        0,
        vec![
            listener("reset", reset_l, tcp_proxy("reset", "reset", json!(null))),
            listener("echo", 0, tcp_proxy("echo", "echo", json!(null))),
        ],
        vec![
            cluster("reset", &[(reset.port, 1)], json!(null)),
            cluster("echo", &[(echo.port, 1)], json!(null)),
        ],
    );
    let proxy = Proxy::start("reset", &b);
    let echo_l = proxy.port("echo");
    let mut s = connect(reset_l);
    s.write_all(b"hello").unwrap();
    let start = Instant::now();
    // Data that arrived before the reset may be relayed; then the connection must end.
    let end = loop {
        match next_outcome(&mut s, SOON) {
            Outcome::Data(_) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(end, Outcome::Eof | Outcome::Reset),
        "downstream not closed after the upstream reset: {end:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        start.elapsed()
    );
    proxy.wait_stat(
        "cluster.reset.upstream_cx_active",
        "0 after the reset",
        |v| v == 0,
    );
    proxy.wait_stat(
        &format!("listener.127.0.0.1_{reset_l}.downstream_cx_active"),
        "0",
        |v| v == 0,
    );
    assert_still_serving(echo_l);
}

#[test]
fn no_endpoints_counts_none_healthy() {
    let echo = Upstream::echo();
    let b = bootstrap(
        0,
        vec![
            listener("empty", 0, tcp_proxy("empty", "empty", json!(null))),
            listener("echo", 0, tcp_proxy("echo", "echo", json!(null))),
        ],
        vec![
            cluster("empty", &[], json!(null)),
            cluster("echo", &[(echo.port, 1)], json!(null)),
        ],
    );
    let proxy = Proxy::start("nonehealthy", &b);
    let (empty_l, echo_l) = (proxy.port("empty"), proxy.port("echo"));
    let mut s = connect(empty_l);
    let out = next_outcome(&mut s, SOON);
    assert!(
        matches!(out, Outcome::Eof),
        "expected EOF with no hosts, got {out:?}"
    );
    proxy.wait_stat("cluster.empty.upstream_cx_none_healthy", ">= 1", |v| v >= 1);
    assert_still_serving(echo_l);
}

/// One dead and one live host, max_connect_attempts 2: every connection reaches the live
/// host; the dead one is tried (connect_fail counted) and skipped.
#[test]
fn max_connect_attempts_retries_next_host() {
    let live = Upstream::hello("live");
    let b = bootstrap(
        0,
        vec![listener(
            "retry",
            0,
            tcp_proxy("retry", "mixed", json!({"max_connect_attempts": 2})),
        )],
        vec![cluster(
            "mixed",
            &[(refused_port(), 1), (live.port, 1)],
            json!({"lb_policy": "ROUND_ROBIN"}),
        )],
    );
    let proxy = Proxy::builder("retry", &b)
        .args(&["--concurrency", "1"])
        .start();
    let l = proxy.port("retry");
    for i in 0..6 {
        let mut s = connect(l);
        assert_eq!(
            read_line(&mut s).unwrap(),
            "live",
            "connection {i} reached the live host"
        );
    }
    assert_eq!(live.accepted(), 6);
    // Round robin over two hosts: about half the connections tried the dead host first.
    let fails = proxy.wait_stat("cluster.mixed.upstream_cx_connect_fail", ">= 2", |v| v >= 2);
    assert!(fails <= 6, "connect_fail {fails} > connections");
    let attempts_exceeded = proxy
        .stat("cluster.mixed.upstream_cx_connect_attempts_exceeded")
        .unwrap_or(0);
    assert_eq!(attempts_exceeded, 0, "no connection ran out of attempts");
}

/// Every host dead, max_connect_attempts 2: the downstream is closed and the cluster counts
/// the exhausted attempts.
#[test]
fn max_connect_attempts_exceeded() {
    let echo = Upstream::echo();
    let b = bootstrap(
        0,
        vec![
            listener(
                "retry",
                0,
                tcp_proxy("retry", "alldead", json!({"max_connect_attempts": 2})),
            ),
            listener("echo", 0, tcp_proxy("echo", "echo", json!(null))),
        ],
        vec![
            cluster(
                "alldead",
                &[(refused_port(), 1), (refused_port(), 1)],
                json!(null),
            ),
            cluster("echo", &[(echo.port, 1)], json!(null)),
        ],
    );
    let proxy = Proxy::start("attempts", &b);
    let (l, echo_l) = (proxy.port("retry"), proxy.port("echo"));
    let mut s = connect(l);
    let out = next_outcome(&mut s, SOON);
    assert!(matches!(out, Outcome::Eof), "expected EOF, got {out:?}");
    proxy.wait_stat(
        "cluster.alldead.upstream_cx_connect_fail",
        ">= 2 (two attempts)",
        |v| v >= 2,
    );
    proxy.wait_stat(
        "cluster.alldead.upstream_cx_connect_attempts_exceeded",
        ">= 1",
        |v| v >= 1,
    );
    assert_still_serving(echo_l);
}

/// idle_timeout closes a silent connection and counts tcp.<prefix>.idle_timeout.
#[test]
fn idle_timeout_closes_silent_connection() {
    let echo = Upstream::echo();
    let b = bootstrap(
        0,
        vec![listener(
            "idle",
            0,
            tcp_proxy("idle", "echo", json!({"idle_timeout": "1s"})),
        )],
        vec![cluster("echo", &[(echo.port, 1)], json!(null))],
    );
    let proxy = Proxy::start("idle", &b);
    let l = proxy.port("idle");
    let mut s = connect(l);
    s.write_all(b"x").unwrap();
    assert_eq!(next_outcome(&mut s, SOON), Outcome::Data(1));
    let start = Instant::now();
    let out = next_outcome(&mut s, SOON);
    let took = start.elapsed();
    assert!(
        matches!(out, Outcome::Eof | Outcome::Reset),
        "idle connection not closed: {out:?}"
    );
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(8),
        "closed after {took:?}, idle_timeout is 1s"
    );
    proxy.wait_stat("tcp.idle.idle_timeout", ">= 1", |v| v >= 1);
}
