//! Tests: HTTP/1.1 end to end with real clients (raw sockets, curl) through each proxy to the
//! Python echo upstream — pipelining, chunked bodies with trailers both ways, Expect:
//! 100-continue, WebSocket through upgrade_configs, 1 GiB up and down with bounded proxy
//! memory, keep-alive reuse on both sides, HTTP/1.0.
mod common;

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{http::*, *};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const GIB: u64 = 1 << 30;

/// A proxy with one listener routing everything to the echo upstream `echo`; `hcm_extra` is
/// merged into the connection manager, `cluster_extra` into the cluster.
struct EchoProxy {
    proxy: HttpProxy,
    port: u16,
    _upstream: EchoUpstreams,
}

fn echo_proxy(kind: Kind, tag: &str, hcm_extra: Value, cluster_extra: Value) -> EchoProxy {
    let upstream = EchoUpstreams::start(&["echo"], None);
    let b = bootstrap(
        0,
        vec![http_listener(
            "clients",
            0,
            hcm(
                tag,
                catch_all_routes("echo", json!(null)),
                vec![],
                hcm_extra,
            ),
        )],
        vec![cluster(
            "echo",
            &[(upstream.port("echo"), 1)],
            cluster_extra,
        )],
    );
    let proxy = HttpProxy::start(kind, tag, &b);
    EchoProxy {
        port: proxy.port("clients"),
        proxy,
        _upstream: upstream,
    }
}

/// The connection manager and cluster options that let HTTP/1 trailers through (both codecs
/// drop them by default).
fn trailers_enabled() -> (Value, Value) {
    (
        json!({"http_protocol_options": {"enable_trailers": true}}),
        json!({"typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {"enable_trailers": true}},
            }
        }}),
    )
}

fn get(target: &str) -> Vec<u8> {
    request("GET", target, &[("host", "clients.test")], b"")
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for kind in proxies() {
        let p = echo_proxy(kind, "pipelining", json!(null), json!(null));
        let mut batch = Vec::new();
        let mut methods = Vec::new();
        for i in 0..12 {
            let target = format!("/p/{i}");
            let (method, req) = match i % 3 {
                0 => ("GET", get(&target)),
                1 => (
                    "POST",
                    request(
                        "POST",
                        &target,
                        &[("host", "clients.test")],
                        format!("body {i}").as_bytes(),
                    ),
                ),
                _ => (
                    "HEAD",
                    request("HEAD", &target, &[("host", "clients.test")], b""),
                ),
            };
            batch.extend_from_slice(&req);
            methods.push((method, target));
        }
        let mut c = HttpConn::open(p.port);
        c.send(&batch).unwrap(); // all twelve in one write
        for (i, (method, target)) in methods.iter().enumerate() {
            let r = c.read_response(method).unwrap();
            assert_eq!(r.status(), 200, "{}: response {i}", kind.name());
            if *method != "HEAD" {
                let echo = r.echo();
                assert_eq!(
                    echo["target"],
                    *target,
                    "{}: response {i} out of order",
                    kind.name()
                );
                assert_eq!(echo["method"], *method, "{}", kind.name());
                if *method == "POST" {
                    assert_eq!(echo["body"], format!("body {i}"), "{}", kind.name());
                }
            } else {
                assert!(
                    r.body.is_empty(),
                    "{}: HEAD answered with a body",
                    kind.name()
                );
            }
        }
        let r = c.exchange("GET", &get("/after")).unwrap();
        assert_eq!(
            r.echo()["target"],
            "/after",
            "{}: connection still in step",
            kind.name()
        );
    }
}

#[test]
fn chunked_bodies_with_trailers_both_ways() {
    let (hcm_extra, cluster_extra) = trailers_enabled();
    for kind in proxies() {
        let p = echo_proxy(kind, "trailers", hcm_extra.clone(), cluster_extra.clone());
        let mut c = HttpConn::open(p.port);
        let head = request(
            "POST",
            "/chunked",
            &[
                ("host", "clients.test"),
                ("transfer-encoding", "chunked"),
                ("x-echo-chunked", "1"),
                ("x-echo-trailer", "x-upstream-trailer: from-upstream"),
            ],
            b"",
        );
        c.send(&head).unwrap();
        // Chunks in separate writes, then a trailer section.
        for piece in [
            &b"5\r\nhello\r\n"[..],
            b"6\r\n world\r\n",
            b"0\r\nx-client-trailer: from-client\r\n\r\n",
        ] {
            c.send(piece).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
        let r = c.read_response("POST").unwrap();
        assert_eq!(r.status(), 200, "{}: {}", kind.name(), r.text());
        assert_eq!(
            r.header("transfer-encoding"),
            Some("chunked"),
            "{}",
            kind.name()
        );
        assert_eq!(
            r.trailers,
            vec![(
                "x-upstream-trailer".to_string(),
                "from-upstream".to_string()
            )],
            "{}: response trailers",
            kind.name()
        );
        let echo = r.echo();
        assert_eq!(echo["body"], "hello world", "{}", kind.name());
        assert_eq!(
            echo["trailers"],
            json!([["x-client-trailer", "from-client"]]),
            "{}",
            kind.name()
        );
        assert_eq!(
            echoed_header(&echo, "transfer-encoding"),
            Some("chunked"),
            "{}",
            kind.name()
        );
    }
}

#[test]
fn expect_100_continue() {
    for kind in proxies() {
        let p = echo_proxy(kind, "expect", json!(null), json!(null));
        // curl sends the head, waits for 100 Continue, then the body.
        let dir = TempDir::new("expect-body");
        let body: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.file("body"), &body).unwrap();
        let r = curl(&[
            "-v",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "20",
            "--data-binary",
            &format!("@{}", dir.file("body").display()),
            &format!("http://127.0.0.1:{}/upload", p.port),
        ]);
        assert!(
            r.stderr.contains("< HTTP/1.1 100 Continue"),
            "{}: {}",
            kind.name(),
            r.stderr
        );
        assert_eq!(r.status, 200, "{}: {}", kind.name(), r.body);
        let echo: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(echo["body_len"], 65536, "{}", kind.name());
        assert_eq!(
            echo["body_sha256"],
            hex(&Sha256::digest(&body)),
            "{}",
            kind.name()
        );
        // On a raw socket: the 100 comes before any body byte is sent.
        let mut c = HttpConn::open(p.port);
        c.send(b"POST /raw HTTP/1.1\r\nhost: clients.test\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
            .unwrap();
        assert_eq!(
            c.read_head().unwrap().status,
            100,
            "{}: 100 before the body",
            kind.name()
        );
        c.send(b"hello").unwrap();
        let r = c.read_response("POST").unwrap();
        assert_eq!(
            (r.status(), r.echo()["body"].clone()),
            (200, json!("hello")),
            "{}",
            kind.name()
        );
    }
}

#[test]
fn websocket_echo_through_upgrade_configs() {
    let upgrades = json!({"upgrade_configs": [{"upgrade_type": "websocket"}]});
    for kind in proxies() {
        let p = echo_proxy(kind, "websocket", upgrades.clone(), json!(null));
        let mut ws = HttpConn::open(p.port);
        let r = ws.websocket_handshake("/chat", "clients.test").unwrap();
        assert_eq!(r.status(), 101, "{}: {:?}", kind.name(), r.head);
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
        for (opcode, payload) in [
            (1u8, b"hello".to_vec()),
            (2, big),
            (9, b"ping".to_vec()),
            (1, vec![]),
        ] {
            ws.ws_send(opcode, &payload).unwrap();
            let (op, got) = ws.ws_recv().unwrap();
            assert_eq!((op, got.len()), (opcode, payload.len()), "{}", kind.name());
            assert!(
                got == payload,
                "{}: payload of opcode {opcode} changed",
                kind.name()
            );
        }
        ws.ws_send(8, &1000u16.to_be_bytes()).unwrap();
        assert_eq!(ws.ws_recv().unwrap().0, 8, "{}: close echoed", kind.name());
        assert!(
            ws.closed_within(SOON),
            "{}: closed after the close handshake",
            kind.name()
        );
        // Without the upgrade headers the same route is plain HTTP.
        let r = HttpConn::open(p.port)
            .exchange("GET", &get("/chat"))
            .unwrap();
        assert_eq!(r.echo()["target"], "/chat", "{}", kind.name());
    }
}

/// Samples the proxy's RSS every 50 ms until dropped; `peak()` is the highest seen.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                p.fetch_max(rss_kib(pid), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }
    fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How much a proxy's RSS may grow while 1 GiB streams through one request: far below the
/// body (it must not be buffered), with room for buffers, pools and allocator slack. (Envoy
/// 1.40 grows by about 3 MiB.)
const STREAMING_RSS_ALLOWANCE_KIB: u64 = 32 << 10;

/// Deterministic upload content: one 1 MiB block of pattern bytes, repeated.
fn upload_block() -> Vec<u8> {
    let mut block = vec![0u8; 1 << 20];
    Pattern::new(7).fill(&mut block);
    block
}

#[test]
fn upload_1gib_streams_with_bounded_memory() {
    let block = upload_block();
    for kind in proxies() {
        let p = echo_proxy(kind, "upload", json!(null), json!(null));
        let before = p.proxy.rss_kib();
        let rss = RssSampler::start(p.proxy.pid());
        let mut c = HttpConn::open(p.port);
        let head =
            format!("POST /upload HTTP/1.1\r\nhost: clients.test\r\ncontent-length: {GIB}\r\n\r\n");
        c.send(head.as_bytes()).unwrap();
        let start = Instant::now();
        let mut hash = Sha256::new();
        for _ in 0..(GIB >> 20) {
            c.stream().write_all(&block).unwrap();
            hash.update(&block);
        }
        let r = c.read_response("POST").unwrap();
        let secs = start.elapsed().as_secs_f64();
        let peak = rss.peak();
        drop(rss);
        let echo = r.echo();
        assert_eq!(echo["body_len"], GIB, "{}", kind.name());
        assert_eq!(
            echo["body_sha256"],
            hex(&hash.finalize()),
            "{}: body changed",
            kind.name()
        );
        eprintln!(
            "{}: 1 GiB up in {secs:.1} s ({:.0} MB/s); RSS {before} KiB -> peak {peak} KiB",
            kind.name(),
            GIB as f64 / secs / 1e6
        );
        assert!(
            peak < before + STREAMING_RSS_ALLOWANCE_KIB,
            "{}: RSS grew from {before} KiB to {peak} KiB during a 1 GiB upload",
            kind.name()
        );
    }
}

/// Checks the upstream's download body (tests/peers/upstream.py `x-echo-download`) as it
/// streams: 64 KiB blocks, block i the SHA-256 of i (8 bytes LE) repeated.
struct DownloadCheck {
    block: Vec<u8>,
    index: u64,
    total: u64,
    bad: Option<u64>,
}

impl DownloadCheck {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = data.len().min((64 << 10) - self.block.len());
            self.block.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.total += n as u64;
            if self.block.len() == 64 << 10 {
                let digest = Sha256::digest(self.index.to_le_bytes());
                if self.bad.is_none() && self.block.chunks(32).any(|c| c != digest.as_slice()) {
                    self.bad = Some(self.index);
                }
                self.block.clear();
                self.index += 1;
            }
        }
    }
}

#[test]
fn download_1gib_streams_with_bounded_memory() {
    for kind in proxies() {
        let p = echo_proxy(kind, "download", json!(null), json!(null));
        let before = p.proxy.rss_kib();
        let rss = RssSampler::start(p.proxy.pid());
        let mut c = HttpConn::open(p.port);
        let len = GIB.to_string();
        c.send(&request(
            "GET",
            "/download",
            &[("host", "clients.test"), ("x-echo-download", &len)],
            b"",
        ))
        .unwrap();
        let start = Instant::now();
        let head = c.read_head().unwrap();
        assert_eq!(head.status, 200, "{}", kind.name());
        let mut check = DownloadCheck {
            block: Vec::with_capacity(64 << 10),
            index: 0,
            total: 0,
            bad: None,
        };
        c.read_body("GET", &head, |b| check.feed(b)).unwrap();
        let secs = start.elapsed().as_secs_f64();
        let peak = rss.peak();
        drop(rss);
        assert_eq!(check.total, GIB, "{}", kind.name());
        assert_eq!(
            check.bad,
            None,
            "{}: first corrupted 64 KiB block",
            kind.name()
        );
        eprintln!(
            "{}: 1 GiB down in {secs:.1} s ({:.0} MB/s); RSS {before} KiB -> peak {peak} KiB",
            kind.name(),
            GIB as f64 / secs / 1e6
        );
        assert!(
            peak < before + STREAMING_RSS_ALLOWANCE_KIB,
            "{}: RSS grew from {before} KiB to {peak} KiB during a 1 GiB download",
            kind.name()
        );
    }
}

#[test]
fn keep_alive_reuses_client_and_upstream_connections() {
    for kind in proxies() {
        let p = echo_proxy(kind, "keepalive", json!(null), json!(null));
        // One client connection, five requests one after another: one upstream connection.
        let mut c = HttpConn::open(p.port);
        let mut upstream_conns = Vec::new();
        for i in 0..5 {
            let r = c.exchange("GET", &get(&format!("/k/{i}"))).unwrap();
            assert_eq!(r.header("connection"), None, "{}: no close", kind.name());
            let echo = r.echo();
            upstream_conns.push(echo["conn"].as_u64().unwrap());
            assert_eq!(
                echo["seq"],
                i + 1,
                "{}: request {i} on its upstream connection",
                kind.name()
            );
        }
        assert!(
            upstream_conns.iter().all(|&n| n == upstream_conns[0]),
            "{}: the upstream connection was not reused: {upstream_conns:?}",
            kind.name()
        );
        assert!(
            !c.closed_within(Duration::from_millis(300)),
            "{}: client connection closed",
            kind.name()
        );
        // curl with three URLs reuses its connection.
        let url = |i: u32| format!("http://127.0.0.1:{}/curl/{i}", p.port);
        let r = curl(&["-v", &url(1), &url(2), &url(3)]);
        assert_eq!(
            r.stderr.matches("Re-using existing connection").count(),
            2,
            "{}: {}",
            kind.name(),
            r.stderr
        );
    }
}

/// A cluster of a good host and one that resets every request: with `retry_on: reset` and the
/// `previous_hosts` predicate, each retry goes to the other host, so every request succeeds.
#[test]
fn retry_moves_to_another_host_after_a_reset() {
    let upstreams = EchoUpstreams::with_resetting(&["good"], &["broken"]);
    let retry = json!({
        "retry_policy": {
            "retry_on": "reset",
            "num_retries": 2,
            "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
            }],
            "host_selection_retry_max_attempts": 3,
        }
    });
    for kind in proxies() {
        let endpoints = [(upstreams.port("good"), 1), (upstreams.port("broken"), 1)];
        let b = bootstrap(
            0,
            vec![http_listener(
                "retry",
                0,
                hcm(
                    "retry",
                    catch_all_routes("pair", retry.clone()),
                    vec![],
                    json!(null),
                ),
            )],
            vec![cluster("pair", &endpoints, json!(null))],
        );
        let proxy = HttpProxy::start(kind, "retry-hosts", &b);
        let port = proxy.port("retry");
        for i in 0..20 {
            let r = HttpConn::open(port)
                .exchange("GET", &get(&format!("/r/{i}")))
                .unwrap();
            assert_eq!(
                r.status(),
                200,
                "{}: request {i}: {}",
                kind.name(),
                r.text()
            );
            assert_eq!(r.echo()["upstream"], "good", "{}", kind.name());
        }
        let retries = proxy
            .stats()
            .get("cluster.pair.upstream_rq_retry")
            .copied()
            .unwrap_or(0);
        assert!(
            retries >= 5,
            "{}: only {retries} retries: the broken host was hardly tried",
            kind.name()
        );
    }
}

#[test]
fn http10_clients() {
    let http10 = json!({"http_protocol_options": {
        "accept_http_10": true,
        "default_host_for_http_10": "default.test",
    }});
    for kind in proxies() {
        let p = echo_proxy(kind, "http10", http10.clone(), json!(null));
        // No Host, no keep-alive: answered, then closed; upstream gets the default host.
        let mut c = HttpConn::open(p.port);
        let r = c.exchange("GET", b"GET /old HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.status(), 200, "{}", kind.name());
        let echo = r.echo();
        assert_eq!(
            echoed_header(&echo, "host"),
            Some("default.test"),
            "{}",
            kind.name()
        );
        assert!(
            c.closed_within(SOON),
            "{}: HTTP/1.0 without keep-alive closes",
            kind.name()
        );
        // keep-alive: the connection stays for a second request.
        let mut c = HttpConn::open(p.port);
        let ka = b"GET /ka HTTP/1.0\r\nhost: clients.test\r\nconnection: keep-alive\r\n\r\n";
        for _ in 0..2 {
            let r = c.exchange("GET", ka).unwrap();
            assert_eq!(r.status(), 200, "{}", kind.name());
            assert_eq!(
                r.header("connection"),
                Some("keep-alive"),
                "{}",
                kind.name()
            );
            assert_eq!(r.echo()["target"], "/ka", "{}", kind.name());
        }
        // A chunked upstream answer reaches a 1.0 client unchunked (RFC 9112 §7: chunked is
        // HTTP/1.1 only), delimited by the close.
        let mut c = HttpConn::open(p.port);
        let r = c
            .exchange(
                "GET",
                b"GET /chunked HTTP/1.0\r\nhost: clients.test\r\nx-echo-chunked: 1\r\n\r\n",
            )
            .unwrap();
        assert_eq!(
            r.header("transfer-encoding"),
            None,
            "{}: {:?}",
            kind.name(),
            r.head
        );
        assert_eq!(r.echo()["target"], "/chunked", "{}", kind.name());
        assert!(c.closed_within(SOON), "{}", kind.name());
    }
}
