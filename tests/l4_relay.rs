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
    // A fixed port for `echo`: tests read its listener stats, named after its configured address.
    let echo_port = free_port();
    let b = bootstrap(
        0,
        vec![
            listener("to_sink", 0, tcp_proxy("sink", "sink", json!(null))),
            listener("from_source", 0, tcp_proxy("source", "source", json!(null))),
            listener("echo", echo_port, tcp_proxy("echo", "echo", json!(null))),
        ],
        vec![
            cluster("sink", &[(sink.port, 1)], json!(null)),
            cluster("source", &[(source.port, 1)], json!(null)),
            cluster("echo", &[(echo.port, 1)], json!(null)),
        ],
    );
    let proxy = Proxy::start(tag, &b);
    let (sink_port, source_port) = (proxy.port("to_sink"), proxy.port("from_source"));
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
    // A fixed port: the test reads the listener's stats, named after its configured address.
    let port = free_port();
    let b = bootstrap(
        0,
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

/// A tiny per-connection buffer limit (listener and cluster) still relays every byte exactly.
#[test]
fn small_buffer_limit_relays_exactly() {
    let echo = Upstream::echo();
    let mut lst = listener("small", 0, tcp_proxy("small", "echo", json!(null)));
    lst["per_connection_buffer_limit_bytes"] = json!(4096);
    let b = bootstrap(
        0,
        vec![lst],
        vec![cluster(
            "echo",
            &[(echo.port, 1)],
            json!({"per_connection_buffer_limit_bytes": 4096}),
        )],
    );
    let proxy = Proxy::start("smallbuf", &b);
    let l = proxy.port("small");
    let mut s = connect(l);
    let mut w = s.try_clone().unwrap();
    let len = 10_000_000;
    let writer = thread::spawn(move || {
        let h = send_pattern(&mut w, 4096, len).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
        h
    });
    let (n, got) = hash_to_eof(&mut s).unwrap();
    assert_eq!((n, got), (len as u64, writer.join().unwrap()));
}

/// Gauges while a connection is open, and back to zero after it closes.
#[test]
fn active_gauges_follow_open_connections() {
    let r = relay("gauges", 1, 1);
    let listener_active = format!("listener.127.0.0.1_{}.downstream_cx_active", r.echo_port);
    let mut open: Vec<_> = (0..3).map(|_| connect(r.echo_port)).collect();
    for s in &mut open {
        s.write_all(b"x").unwrap();
        assert_eq!(next_outcome(s, SOON), Outcome::Data(1));
    }
    r.proxy.wait_stat(&listener_active, "3 open", |v| v == 3);
    r.proxy
        .wait_stat("cluster.echo.upstream_cx_active", "3 open", |v| v == 3);
    open.clear();
    r.proxy
        .wait_stat(&listener_active, "0 after close", |v| v == 0);
    r.proxy
        .wait_stat("cluster.echo.upstream_cx_active", "0 after close", |v| {
            v == 0
        });
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// An upstream that stops reading: the proxy applies back-pressure (the client's writes stall
/// after a bounded amount, the proxy's memory stays flat); once the upstream reads again,
/// every byte arrives in order.
#[test]
fn backpressure_bounds_buffering_and_loses_nothing() {
    use sha2::{Digest, Sha256};
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    };
    let release = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let rel = release.clone();
    let stalled = Upstream::start(move |mut s| {
        while !rel.load(Ordering::SeqCst) {
            thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = tx
            .lock()
            .unwrap()
            .send(hash_to_eof(&mut s).map_err(|e| e.to_string()));
    });
    let b = bootstrap(
        0,
        vec![listener("bp", 0, tcp_proxy("bp", "stalled", json!(null)))],
        vec![cluster("stalled", &[(stalled.port, 1)], json!(null))],
    );
    let proxy = Proxy::start("backpressure", &b);
    let l = proxy.port("bp");
    let rss_before = rss_kib(proxy.pid());
    let mut s = connect(l);
    s.set_nonblocking(true).unwrap();
    let mut pattern = Pattern::new(77);
    let mut hash = Sha256::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut pending: &[u8] = &[];
    let mut written: u64 = 0;
    let cap: u64 = 256 << 20;
    let mut last_progress = std::time::Instant::now();
    // Write until the proxy stops taking data for 2 s (or an absurd amount got through).
    while last_progress.elapsed() < std::time::Duration::from_secs(2) && written < cap {
        if pending.is_empty() {
            pattern.fill(&mut chunk);
            hash.update(&chunk);
            pending = &chunk[..];
        }
        match s.write(pending) {
            Ok(n) => {
                written += n as u64;
                pending = &pending[n..];
                last_progress = std::time::Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(e) => panic!("write while the upstream is stalled: {e}"),
        }
    }
    let rss_stalled = rss_kib(proxy.pid());
    eprintln!(
        "stalled upstream: {written} bytes accepted; proxy RSS {rss_before} -> {rss_stalled} KiB"
    );
    assert!(
        written < 64 << 20,
        "{written} bytes accepted while the upstream read nothing: the proxy buffers without bound"
    );
    assert!(
        rss_stalled < rss_before + (48 << 10),
        "proxy RSS grew from {rss_before} KiB to {rss_stalled} KiB while the upstream was stalled"
    );
    // Release the upstream; finish the bytes in flight plus 1 MiB more, then compare hashes.
    release.store(true, Ordering::SeqCst);
    s.set_nonblocking(false).unwrap();
    s.write_all(pending).unwrap();
    let pending_len = pending.len() as u64;
    let mut extra = vec![0u8; 1 << 20];
    pattern.fill(&mut extra);
    hash.update(&extra);
    s.write_all(&extra).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let total = written + pending_len + extra.len() as u64;
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("upstream finished reading");
    assert_eq!(
        got,
        Ok((total, hex(&hash.finalize()))),
        "bytes after back-pressure"
    );
}

/// Hundreds of connections open at once, each relaying; all gauges return to zero.
#[test]
fn hundreds_of_concurrent_connections() {
    let r = relay("concurrent", 1, 1);
    let n = 300;
    let mut open: Vec<_> = (0..n).map(|_| connect(r.echo_port)).collect();
    for (i, s) in open.iter_mut().enumerate() {
        s.write_all(format!("{i}\n").as_bytes()).unwrap();
    }
    for (i, s) in open.iter_mut().enumerate() {
        assert_eq!(read_line(s).unwrap(), i.to_string(), "connection {i}");
    }
    let active = format!("listener.127.0.0.1_{}.downstream_cx_active", r.echo_port);
    r.proxy
        .wait_stat(&active, &format!("{n} open"), |v| v == n as i64);
    r.proxy.wait_stat(
        "cluster.echo.upstream_cx_active",
        &format!("{n} open"),
        |v| v == n as i64,
    );
    open.clear();
    r.proxy.wait_stat(&active, "0 after close", |v| v == 0);
    r.proxy
        .wait_stat("cluster.echo.upstream_cx_active", "0 after close", |v| {
            v == 0
        });
}
