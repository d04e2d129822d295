//! Tests: listener lifecycle at run time (bootstrap rewrites; xDS updates take the same path
//! on the shards) — modified and removed listeners drain their old connections while new ones
//! get the new config, MODIFY_ONLY listeners skip server drain, the drain time closes what is
//! left, and failed binds leave the rest of the config serving.
mod common;

use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

use common::http_e2e::{hcm, http_listener, Client};
use common::*;
use serde_json::{json, Value};

/// An HTTP listener answering every request itself with `body`.
fn answering(name: &str, port: u16, body: &str) -> Value {
    let routes = json!([{"name": "any", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}},
    ]}]);
    http_listener(name, port, hcm(name, routes, json!({})))
}

fn config(listeners: Vec<Value>) -> Value {
    bootstrap(0, listeners, vec![])
}

/// Waits until a new connection to `port` gets `body`.
fn wait_body(port: u16, body: &str) {
    wait_for(
        SOON,
        &format!("127.0.0.1:{port} to answer {body:?}"),
        || {
            let mut c = Client::try_connect(port).ok()?;
            c.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
            let r = c.read_response(false).ok()?;
            (r.text() == body).then_some(())
        },
    );
}

/// A keep-alive request on `c`: its body and its `connection` header.
fn get(c: &mut Client) -> (String, Option<String>) {
    let r = c.get("/");
    assert_eq!(r.status, 200);
    (r.text(), r.header("connection").map(str::to_string))
}

#[test]
fn modified_listener_drains_old_connections_and_serves_new_config() {
    let proxy = Proxy::builder("ldrain_modify", &config(vec![answering("l", 0, "v1")]))
        .args(&["--drain-time-s", "60"])
        .start();
    let l = proxy.port("l");
    let mut idle = Client::connect(l);
    assert_eq!(get(&mut idle), ("v1".into(), None));
    let mut busy = Client::connect(l);
    assert_eq!(get(&mut busy), ("v1".into(), None));
    // A request under way when the listener changes: its head is half sent.
    busy.send(b"GET / HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(100));

    proxy.rewrite(&to_yaml(&config(vec![answering("l", 0, "v2")])));
    wait_body(l, "v2");
    assert_eq!(proxy.stat("listener_manager.listener_modified"), Some(1));
    proxy.wait_stat(
        "listener_manager.total_listeners_draining",
        "== 1: the old generation drains",
        |v| v == 1,
    );
    // The idle connection of the old config is closed at once.
    assert!(
        idle.closed_within(Duration::from_secs(10)),
        "idle old connection kept open"
    );
    // The request under way gets the old config's answer, and its connection closes after it.
    busy.send(b"host: x\r\n\r\n");
    let r = busy
        .read_response(false)
        .expect("the old connection's answer");
    assert_eq!(
        (r.text(), r.header("connection")),
        ("v1".into(), Some("close"))
    );
    assert!(busy.closed_within(Duration::from_secs(10)));
    // New connections: the new config, kept alive.
    let mut fresh = Client::connect(l);
    assert_eq!(get(&mut fresh), ("v2".into(), None));
    assert_eq!(get(&mut fresh), ("v2".into(), None));
    proxy.wait_stat(
        "listener_manager.total_listeners_draining",
        "== 0 once the old connections closed",
        |v| v == 0,
    );
}

#[test]
fn modify_only_listener_keeps_serving_through_server_drain() {
    let mut modify_only = answering("m", 0, "m");
    modify_only["drain_type"] = json!("MODIFY_ONLY");
    let proxy = Proxy::builder(
        "ldrain_modify_only",
        &config(vec![answering("d", 0, "d"), modify_only]),
    )
    .args(&["--drain-time-s", "3"])
    .start();
    let (d, m) = (proxy.port("d"), proxy.port("m"));
    let mut on_default = Client::connect(d);
    assert_eq!(get(&mut on_default), ("d".into(), None));
    let mut on_modify_only = Client::connect(m);
    assert_eq!(get(&mut on_modify_only), ("m".into(), None));

    assert_eq!(proxy.post("/drain_listeners?graceful").status, 200);
    // The graceful period: DEFAULT listeners' connections drain at once (an idle one closes, a
    // new one gets `connection: close`) while the sockets still accept, as in Envoy.
    assert!(
        on_default.closed_within(Duration::from_secs(2)),
        "the DEFAULT listener's idle keep-alive connection was not drained at once"
    );
    let mut during = Client::connect(d);
    assert_eq!(get(&mut during), ("d".into(), Some("close".into())));
    let mut modify_only_during = Client::connect(m);
    assert_eq!(get(&mut modify_only_during), ("m".into(), None));
    // After the period (3 s) the sockets close.
    wait_for(SOON, "the listeners to stop accepting", || {
        (try_connect(d).is_err() && try_connect(m).is_err()).then_some(())
    });
    // The MODIFY_ONLY one keeps serving keep-alive requests, past the drain time too.
    assert_eq!(get(&mut on_modify_only), ("m".into(), None));
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(get(&mut on_modify_only), ("m".into(), None));
}

#[test]
fn tcp_proxy_connection_of_old_config_closes_at_drain_time() {
    let echo = Upstream::echo();
    let version = |prefix: &str| {
        bootstrap(
            0,
            vec![listener("l", 0, tcp_proxy(prefix, "echo", json!(null)))],
            vec![cluster("echo", &[(echo.port, 1)], json!(null))],
        )
    };
    let proxy = Proxy::builder("ldrain_tcp", &version("v1"))
        .args(&["--drain-time-s", "1"])
        .start();
    let l = proxy.port("l");
    let mut old = connect(l);
    ping(&mut old, b"before the change");

    proxy.rewrite(&to_yaml(&version("v2")));
    proxy.wait_stat("listener_manager.listener_modified", ">= 1", |v| v >= 1);
    let changed = Instant::now();
    // While it drains, the old config's stats stay, its connection counted.
    assert_eq!(proxy.stat("tcp.v1.downstream_cx_total"), Some(1));
    let mut fresh = connect(l);
    ping(&mut fresh, b"new connection, new config");
    // The old connection is closed at the end of the drain time, not before.
    let out = next_outcome(&mut old, SOON);
    let took = changed.elapsed();
    assert!(
        matches!(out, Outcome::Eof | Outcome::Reset),
        "old connection after the drain time: {out:?}"
    );
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(10),
        "old connection closed {took:?} after the change; drain time is 1s"
    );
    ping(&mut fresh, b"still relaying");
    // Drained, the old config's stats go, as Envoy's with the old listener.
    wait_for(SOON, "tcp.v1.* to leave /stats", || {
        let stats = proxy.stats();
        stats
            .keys()
            .all(|name| !name.starts_with("tcp.v1."))
            .then_some(())
    });
    assert_eq!(proxy.stat("tcp.v2.downstream_cx_total"), Some(1));
    assert_eq!(
        proxy.stat("listener_manager.total_listeners_draining"),
        Some(0)
    );
}

#[test]
fn removed_listener_closes_its_socket_and_drains_its_connections() {
    let proxy = Proxy::builder(
        "ldrain_remove",
        &config(vec![
            answering("keep", 0, "keep"),
            answering("gone", 0, "gone"),
        ]),
    )
    .args(&["--drain-time-s", "60"])
    .start();
    let (keep, gone) = (proxy.port("keep"), proxy.port("gone"));
    let mut busy = Client::connect(gone);
    assert_eq!(get(&mut busy), ("gone".into(), None));
    busy.send(b"GET / HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(100));

    proxy.rewrite(&to_yaml(&config(vec![answering("keep", 0, "keep")])));
    wait_for(SOON, "the removed listener's port to refuse", || {
        try_connect(gone).is_err().then_some(())
    });
    assert_eq!(proxy.stat("listener_manager.listener_removed"), Some(1));
    busy.send(b"host: x\r\n\r\n");
    let r = busy
        .read_response(false)
        .expect("the answer under the removed listener");
    assert_eq!(
        (r.text(), r.header("connection")),
        ("gone".into(), Some("close"))
    );
    assert!(busy.closed_within(Duration::from_secs(10)));
    let mut other = Client::connect(keep);
    assert_eq!(get(&mut other), ("keep".into(), None));
}

#[test]
fn failed_binds_leave_the_rest_serving() {
    // Plain sockets (no SO_REUSEPORT) hold these ports: the proxy cannot bind them.
    let taken: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap())
        .collect();
    let taken_port = |i: usize| taken[i].local_addr().unwrap().port();
    let proxy = Proxy::builder("ldrain_bind", &config(vec![answering("l", 0, "v1")]))
        .args(&["--drain-time-s", "60", "--concurrency", "2"])
        .start();
    let l = proxy.port("l");
    let mut open = Client::connect(l);
    assert_eq!(get(&mut open), ("v1".into(), None));

    // `l` moves to a taken port; `blocked` is new on a taken port; `added` is new and free.
    proxy.rewrite(&to_yaml(&config(vec![
        answering("l", taken_port(0), "v2"),
        answering("blocked", taken_port(1), "blocked"),
        answering("added", 0, "added"),
    ])));
    let added = proxy.wait_port("added");
    wait_body(added, "added");
    // Both taken ports are refused by the agent's probe before any shard tries them (counted
    // once per listener; a bind that still fails on a shard counts once per shard).
    proxy.wait_stat(
        "listener_manager.listener_create_failure",
        "2 refused listeners",
        |v| v >= 2,
    );
    // The moved listener keeps serving its old config on the old socket.
    assert_eq!(get(&mut open), ("v1".into(), None));
    let mut fresh = Client::connect(l);
    assert_eq!(get(&mut fresh), ("v1".into(), None));
    drop(taken);
}

fn ping(s: &mut std::net::TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).expect("echo through the proxy");
    assert_eq!(got, msg);
}
