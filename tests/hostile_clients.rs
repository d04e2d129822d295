//! Tests: clients that try to exhaust the proxy. A slowloris (a request head trickled a byte
//! at a time) is cut by `request_headers_timeout` with a 408, as Envoy cuts it; slow readers
//! of large responses make the proxy push back on the upstream instead of buffering (RSS
//! bounded by `per_connection_buffer_limit_bytes`), on Envoy and shardproxy alike; and when
//! the proxy runs out of file descriptors (a low RLIMIT_NOFILE), its listener backs off
//! instead of spinning on accept (CPU near idle, one log line) and serves again once
//! descriptors are free.
mod common;

use std::{
    fs,
    io::{self, Read, Write},
    net::TcpStream,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{http::*, tls::*, *};
use serde_json::{json, Value};

fn direct_routes() -> Value {
    json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}},
    ]}]})
}

/// Trickles a request head one byte every 100 ms until the proxy answers or closes (at most
/// `limit`); returns what it answered and how long the connection lasted.
fn trickle(port: u16, limit: Duration) -> (String, Duration) {
    let mut s = connect(port);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let head = b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for byte in head {
        let _ = s.write_all(&[*byte]);
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if start.elapsed() > limit {
            break;
        }
    }
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    (status_line, start.elapsed())
}

#[test]
fn a_slowloris_is_cut_by_the_request_headers_timeout() {
    let extra = json!({"request_headers_timeout": "1s"});
    let b = bootstrap(
        0,
        vec![http_listener(
            "h",
            0,
            hcm("h", direct_routes(), vec![], extra),
        )],
        vec![],
    );
    on_both("slowloris", &b, |proxy| {
        let (answer, lasted) = trickle(proxy.port("h"), Duration::from_secs(10));
        let cut = lasted < Duration::from_secs(5);
        let stats = settled_stats(proxy, "http.h.", &["downstream_rq_header_timeout"], |s| {
            s["downstream_rq_header_timeout"] == 1
        });
        assert!(cut, "still open after {lasted:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        (answer, cut, stats)
    });
}

/// Reads `s` to EOF after a response head, returning the body's byte count.
fn read_body_len(s: &mut TcpStream) -> usize {
    let mut all = Vec::new();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = s.read_to_end(&mut all);
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    all.len() - end - 4
}

#[test]
fn slow_readers_push_back_on_the_upstream_instead_of_filling_memory() {
    const BODY: usize = 32 << 20;
    const CLIENTS: usize = 6;
    // Each response is BODY bytes of zeros, written as fast as the proxy takes them.
    let upstream = Upstream::start(|mut s| {
        let mut head = [0u8; 1024];
        let _ = s.read(&mut head);
        let start = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY}\r\n\r\n");
        if s.write_all(start.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![0u8; 64 << 10];
        for _ in 0..BODY / chunk.len() {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let limit = json!({"per_connection_buffer_limit_bytes": 65536});
    let mut l = http_listener(
        "h",
        0,
        hcm("h", catch_all_routes("big", json!({})), vec![], json!({})),
    );
    merge(&mut l, limit.clone());
    let b = bootstrap(
        0,
        vec![l],
        vec![cluster("big", &[(upstream.port, 1)], limit)],
    );
    on_both("slow_reader", &b, |proxy| {
        let port = proxy.port("h");
        let before = proxy.rss_kib();
        let mut clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|_| {
                let mut s = connect(port);
                s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    .unwrap();
                s
            })
            .collect();
        // Nobody reads for 3 s: what the proxy holds is its buffers, not the responses.
        thread::sleep(Duration::from_secs(3));
        let grown_mib = proxy.rss_kib().saturating_sub(before) / 1024;
        eprintln!(
            "{}: RSS grew {grown_mib} MiB with {CLIENTS} stalled {} MiB responses",
            proxy.kind.name(),
            BODY >> 20
        );
        let bounded = grown_mib < 48;
        let complete = clients.iter_mut().all(|s| read_body_len(s) == BODY);
        assert!(bounded, "RSS grew {grown_mib} MiB");
        assert!(complete, "every body arrives whole once read");
        (bounded, complete)
    });
}

/// CPU time (user + system, clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based over the whole line).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn out_of_descriptors_the_listener_backs_off_and_recovers() {
    if !have_command("prlimit") {
        skip(
            "fd_exhaustion",
            "prlimit (util-linux) is missing",
            Missing::Peer,
        );
        return;
    }
    // A fixed port: the back-offs are counted in stats named after the listener's address.
    let port = free_port();
    let b = bootstrap(
        0,
        vec![http_listener(
            "h",
            port,
            hcm("h", direct_routes(), vec![], json!({})),
        )],
        vec![],
    );
    let proxy = Proxy::builder("fd_exhaustion", &b)
        .args(&["--concurrency", "1"])
        .start();
    let pid = proxy.pid();
    // Room for 8 more descriptors: the 9th connection cannot be accepted.
    let room = open_fds(pid) + 8;
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={room}:{room}"),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let held: Vec<TcpStream> = (0..40).map(|_| connect(port)).collect();
    thread::sleep(Duration::from_millis(500)); // the accepts and the first failures
    let ticks = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(pid) - ticks;
    eprintln!("out of descriptors: {spent} ticks of CPU in 3 s");
    // A listener spinning on EMFILE burns the whole 3 s (300 ticks at 100 Hz).
    assert!(spent < 60, "{spent} ticks of CPU in 3 s out of descriptors");
    drop(held);
    // Descriptors free again: the next connections are served.
    let served = poll_for(SOON, || {
        let mut conn = HttpConn::open(port);
        let r = conn.exchange("GET", &request("GET", "/", &[("host", "x")], b""));
        r.ok().filter(|r| r.head.status == 200)
    });
    assert!(served.is_some(), "serving again after the burst");
    let backoffs = proxy.wait_stat(
        &format!("{}downstream_cx_accept_backoff", listener_stats(port)),
        "back-off counted",
        |v| v > 0,
    );
    let log = proxy.stderr();
    assert_eq!(
        log.matches("backing off").count(),
        1,
        "logged once for the burst of {backoffs} back-offs:\n{log}"
    );
}
