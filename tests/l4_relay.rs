//! Tests: L4 relay — exact bytes both directions (SHA-256) and TCP half-close both ways.
mod common;

use std::{
    io::{Read, Write},
    net::Shutdown,
    thread,
};

use common::*;
use serde_json::json;

/// A proxy with three listeners: to a sink, from a source of `len` bytes, and to an echo.
struct Relay {
    proxy: Proxy,
    sink_port: u16,
    source_port: u16,
    echo_port: u16,
    sink_rx: std::sync::mpsc::Receiver<(u64, String)>,
    _upstreams: Vec<Upstream>,
}

fn relay(tag: &str, seed: u64, len: usize) -> Relay {
    let (sink, sink_rx) = Upstream::sink();
    let source = Upstream::source(seed, len);
    let echo = Upstream::echo();
    let (sink_port, source_port, echo_port, admin) =
        (free_port(), free_port(), free_port(), free_port());
    let b = bootstrap(
        admin,
        vec![
            listener("to_sink", sink_port, tcp_proxy("sink", "sink", json!(null))),
            listener(
                "from_source",
                source_port,
                tcp_proxy("source", "source", json!(null)),
            ),
            listener("echo", echo_port, tcp_proxy("echo", "echo", json!(null))),
        ],
        vec![
            cluster("sink", &[(sink.port, 1)], json!(null)),
            cluster("source", &[(source.port, 1)], json!(null)),
            cluster("echo", &[(echo.port, 1)], json!(null)),
        ],
    );
    let proxy = Proxy::start(tag, &b);
    Relay {
        proxy,
        sink_port,
        source_port,
        echo_port,
        sink_rx,
        _upstreams: vec![sink, source, echo],
    }
}

/// Client → upstream: the sink's hash of what it received equals what the client sent.
fn check_upstream_direction(r: &Relay, seed: u64, len: usize) {
    let mut s = connect(r.sink_port);
    let sent = send_pattern(&mut s, seed, len).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let reply = read_line(&mut s).unwrap();
    assert_eq!(
        reply,
        format!("{len} {sent}"),
        "sink reply (count and SHA-256 of what it received)"
    );
    let (n, h) = r
        .sink_rx
        .recv_timeout(SOON)
        .expect("sink saw the connection end");
    assert_eq!((n, h), (len as u64, sent));
    assert_eq!(
        next_outcome(&mut s, SOON),
        Outcome::Eof,
        "clean close after the reply"
    );
}

/// Upstream → client: the client's hash of what it received equals what the source sent.
fn check_downstream_direction(r: &Relay, seed: u64, len: usize) {
    let mut s = connect(r.source_port);
    let (n, h) = hash_to_eof(&mut s).unwrap();
    assert_eq!(n, len as u64, "byte count from the source");
    assert_eq!(
        h,
        pattern_hash(seed, len),
        "SHA-256 of what the source sent"
    );
}

/// Both directions at once through an echo: send and receive concurrently, compare hashes.
fn check_echo(r: &Relay, seed: u64, len: usize) {
    let mut s = connect(r.echo_port);
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let h = send_pattern(&mut w, seed, len).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
        h
    });
    let (n, got) = hash_to_eof(&mut s).unwrap();
    let sent = writer.join().unwrap();
    assert_eq!(n, len as u64, "echoed byte count");
    assert_eq!(got, sent, "SHA-256 of echoed bytes");
}

fn relay_size(tag: &str, len: usize) {
    let seed = 0x5eed ^ len as u64;
    let r = relay(tag, seed.wrapping_add(1), len);
    check_upstream_direction(&r, seed, len);
    check_downstream_direction(&r, seed.wrapping_add(1), len);
    check_echo(&r, seed.wrapping_add(2), len);
    // The byte counters saw at least the payload in each direction.
    r.proxy.wait_stat(
        "tcp.sink.downstream_cx_rx_bytes_total",
        &format!(">= {len}"),
        |v| v >= len as i64,
    );
    r.proxy.wait_stat(
        "tcp.source.downstream_cx_tx_bytes_total",
        &format!(">= {len}"),
        |v| v >= len as i64,
    );
}

#[test]
fn relay_1_byte() {
    relay_size("relay1", 1);
}

#[test]
fn relay_64_kib() {
    relay_size("relay64k", 64 << 10);
}

#[test]
fn relay_10_mb() {
    relay_size("relay10m", 10_000_000);
}

#[test]
fn relay_100_mb() {
    relay_size("relay100m", 100_000_000);
}

#[test]
fn many_concurrent_connections_each_exact() {
    let r = relay("relaymany", 7, 1);
    let port = r.echo_port;
    let workers: Vec<_> = (0..32u64)
        .map(|i| {
            thread::spawn(move || {
                let mut s = connect(port);
                let mut w = s.try_clone().unwrap();
                let len = 100_000 + i as usize * 777;
                let writer = thread::spawn(move || {
                    let h = send_pattern(&mut w, i, len).unwrap();
                    w.shutdown(Shutdown::Write).unwrap();
                    h
                });
                let (n, got) = hash_to_eof(&mut s).unwrap();
                assert_eq!(
                    (n, got),
                    (len as u64, writer.join().unwrap()),
                    "connection {i}"
                );
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    r.proxy
        .wait_stat("tcp.echo.downstream_cx_total", ">= 32", |v| v >= 32);
    r.proxy
        .wait_stat("cluster.echo.upstream_cx_total", ">= 32", |v| v >= 32);
}

/// The client shuts down its write side first and still receives the upstream's reply.
#[test]
fn half_close_from_client() {
    let r = relay("halfclient", 1, 1);
    let mut s = connect(r.sink_port);
    s.write_all(b"hello upstream").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let reply = read_line(&mut s).unwrap();
    let (n, h) = r
        .sink_rx
        .recv_timeout(SOON)
        .expect("the sink saw EOF (the half-close was relayed)");
    assert_eq!(n, 14);
    assert_eq!(
        reply,
        format!("14 {h}"),
        "reply after the client's half-close"
    );
    assert_eq!(next_outcome(&mut s, SOON), Outcome::Eof);
}

/// The upstream shuts down its write side first; the client sees EOF, keeps sending, and the
/// upstream receives every byte.
#[test]
fn half_close_from_upstream() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let upstream = Upstream::start(move |mut s| {
        s.write_all(b"bye\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let got = hash_to_eof(&mut s);
        let _ = tx.lock().unwrap().send(got.map_err(|e| e.to_string()));
    });
    let (port, admin) = (free_port(), free_port());
    let b = bootstrap(
        admin,
        vec![listener("l", port, tcp_proxy("half", "up", json!(null)))],
        vec![cluster("up", &[(upstream.port, 1)], json!(null))],
    );
    let proxy = Proxy::start("halfupstream", &b);
    let mut s = connect(port);
    let mut first = Vec::new();
    s.read_to_end(&mut first).unwrap();
    assert_eq!(first, b"bye\n", "upstream's data then EOF");
    // The downstream may still send after the upstream's half-close.
    let len = 300_000;
    let sent = send_pattern(&mut s, 99, len).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = rx
        .recv_timeout(SOON)
        .expect("upstream saw EOF after the client's data");
    assert_eq!(
        got,
        Ok((len as u64, sent)),
        "bytes sent after the upstream's half-close"
    );
    // Both sides closed: the proxy ends the connection.
    assert!(matches!(
        next_outcome(&mut s, SOON),
        Outcome::Eof | Outcome::Reset
    ));
    proxy.wait_stat(
        &format!("listener.127.0.0.1_{port}.downstream_cx_active"),
        "0 after both sides closed",
        |v| v == 0,
    );
    proxy.wait_stat(
        "cluster.up.upstream_cx_active",
        "0 after both sides closed",
        |v| v == 0,
    );
}
