//! Tests: SIGTERM drain — open connections keep working, new ones are refused, exit 0 as soon
//! as the last connection closes, or at --drain-time-s with a long-lived connection.
mod common;

use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;

fn echo_proxy(tag: &str, drain_time_s: &str) -> (Proxy, u16, Upstream) {
    let echo = Upstream::echo();
    let b = bootstrap(
        0,
        vec![listener("l", 0, tcp_proxy("l", "echo", json!(null)))],
        vec![cluster("echo", &[(echo.port, 1)], json!(null))],
    );
    let proxy = Proxy::builder(tag, &b)
        .args(&["--drain-time-s", drain_time_s])
        .start();
    let l = proxy.port("l");
    (proxy, l, echo)
}

fn ping(s: &mut std::net::TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)
        .expect("echo through the draining proxy");
    assert_eq!(got, msg);
}

#[test]
fn sigterm_drains_open_connection_then_exits_when_it_closes() {
    let (mut proxy, l, _echo) = echo_proxy("drain_close", "60");
    let mut open = connect(l);
    ping(&mut open, b"before SIGTERM");
    let t0 = Instant::now();
    proxy.signal("TERM");
    wait_for(SOON, "new connections to be refused after SIGTERM", || {
        try_connect(l).err()
    });
    // The open connection still relays during the drain.
    ping(&mut open, b"during the drain");
    ping(&mut open, &vec![b'z'; 200_000]);
    assert!(
        proxy.try_exit().is_none(),
        "exited while a connection was open"
    );
    drop(open);
    let status = proxy.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!("still running 30s after the last connection closed (drain time 60s)")
    });
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        proxy.stderr()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(45),
        "exit took {:?}, well before drain time expected",
        t0.elapsed()
    );
}

#[test]
fn sigterm_with_long_lived_connection_exits_at_drain_time() {
    let (mut proxy, l, _echo) = echo_proxy("drain_timeout", "3");
    let mut open = connect(l);
    ping(&mut open, b"hold me");
    let t0 = Instant::now();
    proxy.signal("TERM");
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running 30s after SIGTERM with --drain-time-s 3"));
    let took = t0.elapsed();
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        proxy.stderr()
    );
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(15),
        "exited {took:?} after SIGTERM; expected ~3s (--drain-time-s)"
    );
    // The held connection is closed with the process.
    let out = next_outcome(&mut open, SOON);
    assert!(
        matches!(out, Outcome::Eof | Outcome::Reset),
        "held connection after exit: {out:?}"
    );
}

#[test]
fn sigterm_without_connections_exits_promptly() {
    let (mut proxy, _l, _echo) = echo_proxy("drain_idle", "60");
    let t0 = Instant::now();
    proxy.signal("TERM");
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("idle proxy still running 20s after SIGTERM"));
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        proxy.stderr()
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
}

#[test]
fn sigterm_closes_idle_http_connections_and_tells_busy_ones_to_close() {
    use common::http_e2e::{any_host, hcm, http_listener, route_to, Client, HttpUpstream, Reply};
    let up = HttpUpstream::start(|req| match req.path.as_str() {
        "/slow" => Reply::after(800, Reply::ok("slow")),
        _ => Reply::ok("ok"),
    });
    let routes = any_host(json!([route_to("/", "up", json!({}))]));
    let b = bootstrap(
        0,
        vec![http_listener("http", 0, hcm("http", routes, json!({})))],
        vec![cluster("up", &[(up.port, 1)], json!(null))],
    );
    let mut proxy = Proxy::builder("drain_http", &b)
        .args(&["--drain-time-s", "60", "--concurrency", "1"])
        .start();
    let l = proxy.port("http");
    let mut idle = Client::connect(l);
    assert_eq!(idle.get("/").status, 200);
    let mut busy = Client::connect(l);
    busy.send(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    proxy.signal("TERM");
    // The request in flight is answered, and told the connection ends with it.
    let r = busy.read_response(false).expect("the in-flight response");
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    // The idle keep-alive connection is closed instead of holding the drain for 60 s.
    assert!(
        idle.closed_within(Duration::from_secs(10)),
        "idle connection kept open"
    );
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .expect("exits once its HTTP connections are closed");
    assert!(status.success(), "stderr:\n{}", proxy.stderr());
    assert!(t0.elapsed() < Duration::from_secs(20));
}
