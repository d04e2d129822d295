//! Tests: HTTP/2 end to end with real clients and peers, each case on Envoy, then shardproxy.
//!
//! Every test plays one bootstrap on Envoy 1.40, then on shardproxy, and asserts the same
//! outcome (tests/common/tls.rs `on_both`): h2c with prior knowledge and h2 over TLS (ALPN) to
//! an HTTP/1.1 upstream, a bounded h2load run, nginx and tests/peers/h2_peer.py as HTTP/2
//! upstreams (`explicit_http_config.http2_protocol_options` and
//! `use_downstream_protocol_config`), Envoy as the HTTP/2 peer on either side of the proxy,
//! trailers both ways, and GOAWAY on `/drain_listeners?graceful` with a request in flight.
//! A missing client or peer skips the test (`Missing::Peer`: fails under `CI=true`).
mod common;

use std::{
    collections::BTreeMap,
    fs,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{
    http::*,
    http_e2e::{UPSTREAM_HTTP_OPTIONS, UPSTREAM_HTTP_OPTIONS_KEY},
    tls::*,
    *,
};
use serde_json::{json, Value};

/// Every client process is killed after this.
const CLIENT_BOUND: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Bootstrap pieces

/// Cluster options: the upstream speaks HTTP/2 (prior knowledge on plaintext).
fn h2_upstream() -> Value {
    upstream_protocol(json!({"explicit_http_config": {"http2_protocol_options": {}}}))
}

/// Cluster options: the upstream hop speaks the downstream's protocol.
fn downstream_protocol_upstream() -> Value {
    upstream_protocol(json!({"use_downstream_protocol_config": {
        "http_protocol_options": {}, "http2_protocol_options": {},
    }}))
}

fn upstream_protocol(config: Value) -> Value {
    let mut options = json!({"@type": UPSTREAM_HTTP_OPTIONS});
    merge(&mut options, config);
    json!({"typed_extension_protocol_options": {UPSTREAM_HTTP_OPTIONS_KEY: options}})
}

/// A connection manager (codec AUTO: HTTP/1.1, or HTTP/2 by preface or ALPN) routing
/// everything to `cluster`.
fn auto_hcm(stat_prefix: &str, cluster: &str) -> Value {
    hcm(
        stat_prefix,
        catch_all_routes(cluster, json!({})),
        vec![],
        json!({"codec_type": "AUTO"}),
    )
}

/// A plaintext listener (h2c by prior knowledge, or HTTP/1.1) to `cluster`; stats under
/// `http.<stat_prefix>.`.
fn plain_listener(stat_prefix: &str, port: u16, cluster: &str) -> Value {
    http_listener(stat_prefix, port, auto_hcm(stat_prefix, cluster))
}

/// A TLS listener serving the ECDSA localhost certificate with ALPN `h2, http/1.1`.
fn alpn_listener(stat_prefix: &str, port: u16, cluster: &str) -> Value {
    let tls = downstream_tls(
        common_tls(
            vec![tls_certificate(&pki().server_ecdsa)],
            json!({"alpn_protocols": ["h2", "http/1.1"]}),
        ),
        json!({}),
    );
    listener_with(
        stat_prefix,
        port,
        vec![],
        vec![filter_chain(
            Value::Null,
            vec![hcm_filter(auto_hcm(stat_prefix, cluster))],
            Some(tls),
        )],
    )
}

/// A proxy with an h2c listener (`plain`) and an ALPN TLS listener (`tls`), both on port 0
/// and routing to the HTTP/1.1 echo upstream.
struct Front {
    bootstrap: Value,
    _echo: EchoUpstreams,
}

fn front_to_echo() -> Front {
    let echo = EchoUpstreams::start(&["echo"], None);
    let bootstrap = bootstrap(
        0,
        vec![
            plain_listener("plain", 0, "echo"),
            alpn_listener("tls", 0, "echo"),
        ],
        vec![cluster("echo", &[(echo.port("echo"), 1)], json!({}))],
    );
    Front {
        bootstrap,
        _echo: echo,
    }
}

/// The `downstream_cx_*` / `downstream_rq_*` HTTP/1 and HTTP/2 counters under `http.<prefix>.`,
/// once settled with at least `requests` HTTP/2 requests counted.
fn protocol_stats(proxy: &HttpProxy, prefix: &str, requests: i64) -> BTreeMap<String, i64> {
    settled_stats(
        proxy,
        &format!("http.{prefix}."),
        &[
            "downstream_cx_http1_total",
            "downstream_cx_http2_total",
            "downstream_rq_http1_total",
            "downstream_rq_http2_total",
        ],
        |s| s["downstream_rq_http2_total"] >= requests,
    )
}

// ---------------------------------------------------------------------------------------------
// Peers and clients

/// Whether `cmd` is on PATH; skips `test` (fails under CI) when not.
fn have(test: &str, cmd: &str) -> bool {
    if have_command(cmd) {
        return true;
    }
    skip(test, &format!("no `{cmd}` on PATH"), Missing::Peer);
    false
}

/// Runs a command to completion, killed by PID after [`CLIENT_BOUND`]; (success, stdout,
/// stderr).
fn run_bounded(program: &str, args: &[String]) -> (bool, String, String) {
    let dir = TempDir::new("h2-client");
    let (out, err) = (dir.file("stdout"), dir.file("stderr"));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > CLIENT_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} ran longer than {CLIENT_BOUND:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    (
        status.success(),
        fs::read_to_string(&out).unwrap_or_default(),
        fs::read_to_string(&err).unwrap_or_default(),
    )
}

/// What `curl -i` printed: the protocol of the status line (`HTTP/2`, `HTTP/1.1`), the
/// status, headers (names lower-cased) and body.
#[derive(Debug)]
struct CurlOut {
    version: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl CurlOut {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn echo(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.body))
    }
}

fn curl_h(args: &[&str]) -> CurlOut {
    let mut all: Vec<String> = ["-sS", "-i", "--max-time", "20"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    let (ok, out, err) = run_bounded("curl", &all);
    assert!(ok, "curl {args:?}: {err}");
    let (head, body) = out
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("curl output without a head: {out:?}"));
    let mut lines = head.lines();
    let mut status_line = lines.next().unwrap().split_whitespace();
    let version = status_line.next().unwrap().to_string();
    let status = status_line.next().unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    CurlOut {
        version,
        status,
        headers,
        body: body.to_string(),
    }
}

/// The CA and name-to-address pin curl needs for `https://localhost:port`.
fn curl_tls(port: u16) -> Vec<String> {
    vec![
        "--cacert".into(),
        pki().ca.display().to_string(),
        "--resolve".into(),
        format!("localhost:{port}:127.0.0.1"),
    ]
}

/// Runs tests/peers/h2_peer.py `args` and parses the JSON it prints.
fn h2_peer(args: &[String]) -> Value {
    let run = run_peer("h2_peer.py", args, CLIENT_BOUND);
    assert!(
        run.status.success(),
        "h2_peer.py {args:?}: {}{}",
        run.stdout,
        run.stderr
    );
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("h2_peer.py {args:?} output ({e}): {}", run.stdout))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The names of the headers the echo upstream received, sorted and deduplicated (values such
/// as x-request-id differ run to run; how many `content-length` fields arrive is
/// `content_length_crosses_protocols_once`'s business).
fn header_names(echo: &Value) -> Vec<String> {
    let mut names: Vec<String> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// tests/peers/h2_peer.py `serve`: an h2c and HTTP/1.1 echo upstream.
fn echo_h2_peer() -> PeerServer {
    PeerServer::start("h2_peer.py", &["serve"])
}

/// nginx serving h2c (prior knowledge) on 127.0.0.1, answering every request with
/// `<$server_protocol> <method> <uri> len=<body length> proto=<x-forwarded-proto>` and an
/// `x-upstream-protocol: $server_protocol` header; stopped by PID when dropped.
struct Nginx {
    port: u16,
    child: Child,
    dir: TempDir,
}

impl Nginx {
    fn start_h2c() -> Nginx {
        let dir = TempDir::new("nginx-h2c");
        let (port, inner) = (free_port(), free_port());
        // The h2c server passes each request (its body read whole first: a `return` there
        // would answer before the body and reset the stream, racing the proxy) to an inner
        // HTTP/1.x server that says what the h2c one saw.
        let conf = r#"daemon off;
master_process off;
worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log warn;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path DIR/body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
  server {
    listen 127.0.0.1:PORT http2;
    location / {
      proxy_pass http://127.0.0.1:INNER;
      proxy_set_header x-outer-protocol $server_protocol;
      add_header x-upstream-protocol $server_protocol always;
    }
  }
  server {
    listen 127.0.0.1:INNER;
    location / {
      return 200 "$http_x_outer_protocol $request_method $request_uri len=$content_length proto=$http_x_forwarded_proto";
    }
  }
}
"#
        .replace("DIR", &dir.path.display().to_string())
        .replace("PORT", &port.to_string())
        .replace("INNER", &inner.to_string());
        let conf_path = dir.file("nginx.conf");
        fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir.path)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.file("stderr.log")).unwrap())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { port, child, dir };
        wait_for(SOON, "nginx to listen", || {
            (try_connect(port).is_ok() && try_connect(inner).is_ok()).then_some(())
        });
        nginx
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.dir.file("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill(); // by PID (master_process off: one process)
        let _ = self.child.wait();
    }
}

/// A counter of `proxy`'s /stats (0 when absent).
fn stat(proxy: &HttpProxy, name: &str) -> i64 {
    proxy.stats().get(name).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// 1. curl: h2c with prior knowledge and h2 over TLS (ALPN) to an HTTP/1.1 upstream

/// What one curl exchange through the front's listener on `port` showed: curl's protocol,
/// status, and what the HTTP/1.1 echo upstream received (method, target, version, body,
/// x-forwarded-proto, the host with the listener's port, which differs by run, as `PORT`,
/// the header names).
fn curl_outcome(label: &str, r: &CurlOut, port: u16) -> Value {
    let echo = r.echo();
    let host = echoed_header(&echo, "host").map(|h| h.replace(&format!(":{port}"), ":PORT"));
    json!({
        "label": label,
        "client_version": r.version,
        "status": r.status,
        "method": echo["method"],
        "target": echo["target"],
        "upstream_version": echo["version"],
        "body_len": echo["body_len"],
        "body": echo["body"],
        "x-forwarded-proto": echoed_header(&echo, "x-forwarded-proto"),
        "host": host,
        "header_names": header_names(&echo),
    })
}

#[test]
fn curl_h2c_and_alpn_h2_reach_an_http1_upstream() {
    let test = "curl_h2c_and_alpn_h2_reach_an_http1_upstream";
    if !have(test, "curl") {
        return;
    }
    let f = front_to_echo();
    let body = "a request body sent over HTTP/2";
    on_both("h2-curl", &f.bootstrap, |proxy| {
        let who = proxy.kind.name();
        let (plain, tls) = (proxy.port("plain"), proxy.port("tls"));
        let h2c = format!("http://127.0.0.1:{plain}");
        let https = format!("https://localhost:{tls}");
        let tls_args = curl_tls(tls);
        let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
        let runs = [
            (
                "h2c GET",
                curl_h(&["--http2-prior-knowledge", &format!("{h2c}/get?q=1")]),
            ),
            (
                "h2c POST",
                curl_h(&[
                    "--http2-prior-knowledge",
                    "--data-binary",
                    body,
                    &format!("{h2c}/post"),
                ]),
            ),
            (
                "alpn h2 GET",
                curl_h(&[&tls_args[..], &["--http2", &format!("{https}/get?q=2")]].concat()),
            ),
            (
                "alpn h2 POST",
                curl_h(
                    &[
                        &tls_args[..],
                        &["--http2", "--data-binary", body, &format!("{https}/post")],
                    ]
                    .concat(),
                ),
            ),
        ];
        let mut outcome = Vec::new();
        for (label, r) in &runs {
            assert_eq!(r.version, "HTTP/2", "{who} {label}: {r:?}");
            assert_eq!(r.status, 200, "{who} {label}: {r:?}");
            let (proto, port) = if label.starts_with("h2c") {
                ("http", plain)
            } else {
                ("https", tls)
            };
            let o = curl_outcome(label, r, port);
            assert_eq!(o["upstream_version"], "HTTP/1.1", "{who} {label}");
            assert_eq!(o["x-forwarded-proto"], proto, "{who} {label}");
            if label.ends_with("POST") {
                assert_eq!(o["body"], body, "{who} {label}");
                assert_eq!(o["body_len"], body.len(), "{who} {label}");
            }
            outcome.push(o);
        }
        let plain_stats = protocol_stats(proxy, "plain", 2);
        let tls_stats = protocol_stats(proxy, "tls", 2);
        for s in [&plain_stats, &tls_stats] {
            assert_eq!(s["downstream_cx_http2_total"], 2, "{who}: {s:?}");
            assert_eq!(s["downstream_rq_http2_total"], 2, "{who}: {s:?}");
            assert_eq!(s["downstream_rq_http1_total"], 0, "{who}: {s:?}");
        }
        (outcome, plain_stats, tls_stats)
    });
}

// ---------------------------------------------------------------------------------------------
// 2. httpx (http2=True) and nghttp

/// The echo JSON line nghttp printed among its frame log, and the `:status` it logged.
fn nghttp(args: &[&str]) -> (Option<String>, u16, Value) {
    let (ok, out, err) = run_bounded("nghttp", &strings(&[&["-v"], args].concat()));
    assert!(ok, "nghttp {args:?}: {out}{err}");
    let alpn = out
        .lines()
        .find_map(|l| l.strip_prefix("The negotiated protocol: "))
        .map(str::to_string);
    let status = out
        .lines()
        .find_map(|l| l.split_once(") :status: "))
        .and_then(|(_, s)| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no :status in nghttp output:\n{out}"));
    let echo = out
        .lines()
        .find_map(|l| {
            let start = l.find("{\"upstream\"")?;
            serde_json::from_str(&l[start..]).ok()
        })
        .unwrap_or_else(|| panic!("no echo in nghttp output:\n{out}"));
    (alpn, status, echo)
}

#[test]
fn httpx_and_nghttp_over_h2c_and_alpn_h2() {
    let test = "httpx_and_nghttp_over_h2c_and_alpn_h2";
    let with_httpx = have_python(test, "httpx, h2");
    let with_nghttp = have(test, "nghttp");
    if !with_httpx && !with_nghttp {
        return;
    }
    let f = front_to_echo();
    let dir = TempDir::new("nghttp-body");
    let body_file = dir.file("body");
    let body = "x".repeat(100_000); // more than one frame and the initial window
    fs::write(&body_file, &body).unwrap();
    on_both("h2-httpx-nghttp", &f.bootstrap, |proxy| {
        let who = proxy.kind.name();
        let (plain, tls) = (proxy.port("plain"), proxy.port("tls"));
        let mut outcome = Vec::new();
        let mut requests = 0;
        if with_httpx {
            let ca = pki().ca.display().to_string();
            let cases = [
                (
                    "httpx h2c GET",
                    strings(&[
                        "httpx",
                        "--h2-only",
                        "--url",
                        &format!("http://127.0.0.1:{plain}/httpx"),
                    ]),
                    "http",
                ),
                (
                    "httpx alpn POST",
                    strings(&[
                        "httpx",
                        "--ca",
                        &ca,
                        "--method",
                        "POST",
                        "--body",
                        "httpx body",
                        "--url",
                        &format!("https://localhost:{tls}/httpx"),
                    ]),
                    "https",
                ),
            ];
            for (label, args, proto) in cases {
                let r = h2_peer(&args);
                assert_eq!(r["http_version"], "HTTP/2", "{who} {label}: {r}");
                assert_eq!(r["status"], 200, "{who} {label}: {r}");
                let echo: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
                assert_eq!(
                    echoed_header(&echo, "x-forwarded-proto"),
                    Some(proto),
                    "{who} {label}"
                );
                assert_eq!(echo["version"], "HTTP/1.1", "{who} {label}");
                outcome.push(json!({"label": label, "status": r["status"],
                    "method": echo["method"], "body": echo["body"], "body_len": echo["body_len"]}));
            }
            requests += 1; // the h2c one
        }
        if with_nghttp {
            let file = body_file.display().to_string();
            let cases = [
                (
                    "nghttp h2c GET",
                    vec![format!("http://127.0.0.1:{plain}/nghttp")],
                    None,
                ),
                (
                    "nghttp h2c POST 100 kB",
                    vec![
                        "-d".to_string(),
                        file.clone(),
                        format!("http://127.0.0.1:{plain}/nghttp"),
                    ],
                    None,
                ),
                (
                    "nghttp alpn POST 100 kB",
                    vec![
                        "-d".to_string(),
                        file,
                        format!("https://127.0.0.1:{tls}/nghttp"),
                    ],
                    Some("h2"),
                ),
            ];
            for (label, args, alpn) in cases {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let (negotiated, status, echo) = nghttp(&args);
                assert_eq!(negotiated.as_deref(), alpn, "{who} {label}");
                assert_eq!(status, 200, "{who} {label}");
                if label.contains("POST") {
                    assert_eq!(echo["body_len"], body.len(), "{who} {label}");
                }
                outcome.push(json!({"label": label, "alpn": negotiated, "status": status,
                    "method": echo["method"], "body_len": echo["body_len"],
                    "sha": echo["body_sha256"],
                    "x-forwarded-proto": echoed_header(&echo, "x-forwarded-proto")}));
            }
            requests += 2; // the h2c ones
        }
        let plain_stats = protocol_stats(proxy, "plain", requests);
        (outcome, plain_stats)
    });
}

// ---------------------------------------------------------------------------------------------
// 3. h2load

/// `h2load` counts: (requests done, succeeded, 2xx).
fn h2load(args: &[&str]) -> (u64, u64, u64) {
    let (ok, out, err) = run_bounded("h2load", &strings(args));
    assert!(ok, "h2load {args:?}: {out}{err}");
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in h2load output:\n{out}"))
            .to_string()
    };
    let count = |line: &str, what: &str| -> u64 {
        line.split(',')
            .find_map(|part| part.trim().strip_suffix(what))
            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no `{what}` in {line:?}"))
    };
    let requests = line("requests:");
    let codes = line("status codes:");
    (
        count(&requests, "done"),
        count(&requests, "succeeded"),
        count(&codes, "2xx"),
    )
}

#[test]
fn h2load_bounded_run_is_all_2xx() {
    let test = "h2load_bounded_run_is_all_2xx";
    if !have(test, "h2load") {
        return;
    }
    let f = front_to_echo();
    on_both("h2-h2load", &f.bootstrap, |proxy| {
        let who = proxy.kind.name();
        let (plain, tls) = (proxy.port("plain"), proxy.port("tls"));
        let h2c = h2load(&[
            "-n",
            "2000",
            "-c",
            "10",
            "-m",
            "10",
            "-T",
            "20",
            &format!("http://127.0.0.1:{plain}/load"),
        ]);
        assert_eq!(h2c, (2000, 2000, 2000), "{who}: h2c (done, ok, 2xx)");
        let alpn = h2load(&[
            "-n",
            "300",
            "-c",
            "3",
            "-m",
            "10",
            "-T",
            "20",
            &format!("https://127.0.0.1:{tls}/load"),
        ]);
        assert_eq!(alpn, (300, 300, 300), "{who}: TLS (done, ok, 2xx)");
        let plain_stats = protocol_stats(proxy, "plain", 2000);
        let tls_stats = protocol_stats(proxy, "tls", 300);
        assert_eq!(plain_stats["downstream_cx_http2_total"], 10, "{who}");
        assert_eq!(tls_stats["downstream_cx_http2_total"], 3, "{who}");
        (h2c, alpn, plain_stats, tls_stats)
    });
}

// ---------------------------------------------------------------------------------------------
// 4. nginx as an h2c upstream

#[test]
fn nginx_h2c_upstream_gets_http2() {
    let test = "nginx_h2c_upstream_gets_http2";
    if !have(test, "nginx") || !have(test, "curl") {
        return;
    }
    let nginx = Nginx::start_h2c();
    let b = bootstrap(
        0,
        vec![plain_listener("front", 0, "nginx")],
        vec![cluster("nginx", &[(nginx.port, 1)], h2_upstream())],
    );
    on_both("h2-nginx", &b, |proxy| {
        let who = proxy.kind.name();
        let base = format!("http://127.0.0.1:{}", proxy.port("front"));
        let runs = [
            ("h1 GET", curl_h(&["--http1.1", &format!("{base}/a?x=1")])),
            (
                "h1 POST",
                curl_h(&["--http1.1", "--data-binary", "12345", &format!("{base}/b")]),
            ),
            (
                "h2c GET",
                curl_h(&["--http2-prior-knowledge", &format!("{base}/c")]),
            ),
            (
                "h2c POST",
                curl_h(&[
                    "--http2-prior-knowledge",
                    "--data-binary",
                    "12345",
                    &format!("{base}/d"),
                ]),
            ),
        ];
        let mut outcome = Vec::new();
        for (label, r) in &runs {
            assert_eq!(r.status, 200, "{who} {label}: {r:?}\n{}", nginx.error_log());
            let method = label.split(' ').nth(1).unwrap();
            assert!(
                r.body.contains(&format!(" {method} /")) && r.body.ends_with(" proto=http"),
                "{who} {label}: {r:?}"
            );
            let len = if method == "POST" { "5" } else { "" };
            assert!(
                r.body.contains(&format!(" len={len} ")),
                "{who} {label}: the body nginx read: {r:?}"
            );
            assert_eq!(
                r.header("x-upstream-protocol"),
                Some("HTTP/2.0"),
                "{who} {label}: {r:?}"
            );
            assert!(r.body.starts_with("HTTP/2.0 "), "{who} {label}: {r:?}");
            outcome.push((
                label.to_string(),
                r.version.clone(),
                r.status,
                r.body.clone(),
            ));
        }
        let h2_cx = stat(proxy, "cluster.nginx.upstream_cx_http2_total");
        let h1_cx = stat(proxy, "cluster.nginx.upstream_cx_http1_total");
        assert!(h2_cx >= 1, "{who}: upstream_cx_http2_total {h2_cx}");
        assert_eq!(h1_cx, 0, "{who}: upstream_cx_http1_total");
        (outcome, h2_cx >= 1, h1_cx)
    });
}

// ---------------------------------------------------------------------------------------------
// 5. Envoy as the HTTP/2 peer on either side

/// An Envoy (the peer, not under test) whose listener (codec AUTO) routes to the echo
/// upstream; its stats under `http.back.`.
fn envoy_back(echo_port: u16) -> (HttpProxy, u16) {
    let b = bootstrap(
        0,
        vec![plain_listener("back", 0, "echo")],
        vec![cluster("echo", &[(echo_port, 1)], json!({}))],
    );
    let back = HttpProxy::start(Kind::Envoy, "h2-envoy-back", &b);
    let port = back.port("back");
    (back, port)
}

#[test]
fn proxy_speaks_h2_to_an_envoy_upstream() {
    let test = "proxy_speaks_h2_to_an_envoy_upstream";
    if !envoy_available() || !have(test, "curl") {
        return;
    }
    let echo = EchoUpstreams::start(&["echo"], None);
    let (back, back_port) = envoy_back(echo.port("echo"));
    let b = bootstrap(
        0,
        vec![plain_listener("front", 0, "back")],
        vec![cluster("back", &[(back_port, 1)], h2_upstream())],
    );
    on_both("h2-to-envoy", &b, |proxy| {
        let who = proxy.kind.name();
        let before = back.stats();
        let base = format!("http://127.0.0.1:{}", proxy.port("front"));
        let runs = [
            ("h1 GET", curl_h(&["--http1.1", &format!("{base}/one")])),
            (
                "h1 POST",
                curl_h(&[
                    "--http1.1",
                    "--data-binary",
                    "via envoy",
                    &format!("{base}/two"),
                ]),
            ),
            (
                "h2c GET",
                curl_h(&["--http2-prior-knowledge", &format!("{base}/three")]),
            ),
        ];
        let mut outcome = Vec::new();
        for (label, r) in &runs {
            assert_eq!(r.status, 200, "{who} {label}: {r:?}");
            let echo = r.echo();
            outcome.push(
                json!({"label": label, "status": r.status, "target": echo["target"],
                "body": echo["body"], "version": echo["version"]}),
            );
        }
        let after = back.stats();
        let delta = |n: &str| {
            let k = format!("http.back.{n}");
            after.get(&k).copied().unwrap_or(0) - before.get(&k).copied().unwrap_or(0)
        };
        let hop = (
            delta("downstream_rq_http2_total"),
            delta("downstream_rq_http1_total"),
        );
        assert_eq!(hop, (3, 0), "{who}: requests Envoy (back) got as (h2, h1)");
        let h2_cx = stat(proxy, "cluster.back.upstream_cx_http2_total");
        assert!(h2_cx >= 1, "{who}: upstream_cx_http2_total {h2_cx}");
        (outcome, hop)
    });
}

#[test]
fn envoy_speaks_h2_to_the_proxy() {
    let test = "envoy_speaks_h2_to_the_proxy";
    if !envoy_available() || !have(test, "curl") {
        return;
    }
    let echo = EchoUpstreams::start(&["echo"], None);
    let mut h2_only = auto_hcm("h2only", "echo");
    h2_only["codec_type"] = json!("HTTP2");
    // Under test: the back proxy, one listener with codec AUTO and one with codec HTTP2.
    let b = bootstrap(
        0,
        vec![
            plain_listener("auto", 0, "echo"),
            http_listener("h2only", 0, h2_only),
        ],
        vec![cluster("echo", &[(echo.port("echo"), 1)], json!({}))],
    );
    on_both("h2-from-envoy", &b, |proxy| {
        let who = proxy.kind.name();
        // The peer: a fresh Envoy in front, each listener to one of the back's over h2.
        let front_b = bootstrap(
            0,
            vec![
                plain_listener("to_auto", 0, "auto"),
                plain_listener("to_h2", 0, "h2only"),
            ],
            vec![
                cluster("auto", &[(proxy.port("auto"), 1)], h2_upstream()),
                cluster("h2only", &[(proxy.port("h2only"), 1)], h2_upstream()),
            ],
        );
        let front = HttpProxy::start(Kind::Envoy, "h2-envoy-front", &front_b);
        let mut outcome = Vec::new();
        for (label, port) in [
            ("auto", front.port("to_auto")),
            ("h2only", front.port("to_h2")),
        ] {
            let base = format!("http://127.0.0.1:{port}");
            let get = curl_h(&["--http1.1", &format!("{base}/{label}/get")]);
            let post = curl_h(&[
                "--http2-prior-knowledge",
                "--data-binary",
                "from envoy",
                &format!("{base}/{label}/post"),
            ]);
            for r in [&get, &post] {
                assert_eq!(r.status, 200, "{who} {label}: {r:?}");
            }
            assert_eq!(post.echo()["body"], "from envoy", "{who} {label}");
            let mut stats = protocol_stats(proxy, label, 2);
            // How many connections Envoy opens depends on which of its workers took each
            // client: only whether there was one is compared.
            assert!(stats["downstream_cx_http2_total"] >= 1, "{who} {label}");
            stats.insert("downstream_cx_http2_total".into(), 1);
            assert_eq!(stats["downstream_rq_http2_total"], 2, "{who} {label}");
            assert_eq!(stats["downstream_rq_http1_total"], 0, "{who} {label}");
            let front_h2 = stat(&front, &format!("cluster.{label}.upstream_cx_http2_total"));
            assert!(
                front_h2 >= 1,
                "{who} {label}: Envoy opened no h2 connection"
            );
            outcome.push((
                label,
                get.echo()["target"].clone(),
                post.echo()["body"].clone(),
                stats,
            ));
        }
        outcome
    });
}

// ---------------------------------------------------------------------------------------------
// 6. use_downstream_protocol_config

#[test]
fn downstream_protocol_picks_the_upstream_protocol() {
    let test = "downstream_protocol_picks_the_upstream_protocol";
    if !have(test, "curl") || !have_python(test, "h2") {
        return;
    }
    let up = echo_h2_peer();
    let b = bootstrap(
        0,
        vec![
            plain_listener("plain", 0, "dual"),
            alpn_listener("tls", 0, "dual"),
        ],
        vec![cluster(
            "dual",
            &[(up.port, 1)],
            downstream_protocol_upstream(),
        )],
    );
    on_both("h2-downstream-protocol", &b, |proxy| {
        let who = proxy.kind.name();
        let (plain, tls) = (proxy.port("plain"), proxy.port("tls"));
        let h2c = format!("http://127.0.0.1:{plain}/p");
        let https = format!("https://localhost:{tls}/t");
        let tls_args = curl_tls(tls);
        let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
        let cases = [
            ("h1", "HTTP/1.1", curl_h(&["--http1.1", &h2c])),
            (
                "h2c",
                "HTTP/2.0",
                curl_h(&["--http2-prior-knowledge", &h2c]),
            ),
            (
                "h1 over TLS",
                "HTTP/1.1",
                curl_h(&[&tls_args[..], &["--http1.1", &https]].concat()),
            ),
            (
                "h2 over TLS",
                "HTTP/2.0",
                curl_h(&[&tls_args[..], &["--http2", &https]].concat()),
            ),
            (
                "h2c POST",
                "HTTP/2.0",
                curl_h(&["--http2-prior-knowledge", "--data-binary", "dual", &h2c]),
            ),
        ];
        let mut outcome = Vec::new();
        for (label, want, r) in &cases {
            assert_eq!(r.status, 200, "{who} {label}: {r:?}");
            assert_eq!(
                r.header("x-upstream-protocol"),
                Some(*want),
                "{who} {label}"
            );
            let echo = r.echo();
            assert_eq!(echo["protocol"], *want, "{who} {label}");
            outcome.push(json!({"label": label, "client": r.version,
                "upstream": echo["protocol"], "method": echo["method"], "path": echo["path"],
                "body": echo["body"]}));
        }
        let h1 = stat(proxy, "cluster.dual.upstream_cx_http1_total") >= 1;
        let h2 = stat(proxy, "cluster.dual.upstream_cx_http2_total") >= 1;
        assert!(h1 && h2, "{who}: upstream connections h1 {h1}, h2 {h2}");
        outcome
    });
}

// ---------------------------------------------------------------------------------------------
// 7. Trailers both ways

#[test]
fn trailers_cross_h2_both_ways() {
    let test = "trailers_cross_h2_both_ways";
    if !have_python(test, "h2") {
        return;
    }
    let up = echo_h2_peer();
    let b = bootstrap(
        0,
        vec![plain_listener("front", 0, "h2up")],
        vec![cluster("h2up", &[(up.port, 1)], h2_upstream())],
    );
    on_both("h2-trailers", &b, |proxy| {
        let who = proxy.kind.name();
        let p = proxy.port("front").to_string();
        let with_body = h2_peer(&strings(&[
            "request",
            "--port",
            &p,
            "--method",
            "POST",
            "--path",
            "/trailers",
            "--header",
            "x-want-trailers: 1",
            "--body",
            "twelve bytes",
            "--trailer",
            "x-request-trailer: sent last",
            "--trailer",
            "x-checksum: 42",
        ]));
        let no_body = h2_peer(&strings(&[
            "request",
            "--port",
            &p,
            "--path",
            "/trailers-only-response",
            "--header",
            "x-want-trailers: 1",
        ]));
        let mut outcome = Vec::new();
        for (label, r) in [("with body", &with_body), ("no body", &no_body)] {
            assert_eq!(r["status"], 200, "{who} {label}: {r}");
            assert!(r["reset"].is_null(), "{who} {label}: {r}");
            let echo: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            assert_eq!(echo["protocol"], "HTTP/2.0", "{who} {label}");
            outcome.push(json!({"label": label, "response_trailers": r["trailers"],
                "request_trailers": echo["trailers"], "body": echo["body"]}));
        }
        assert_eq!(
            with_body["trailers"],
            json!([["x-trailer-one", "one"], ["x-trailer-body-len", "12"]]),
            "{who}: response trailers"
        );
        assert_eq!(
            outcome[0]["request_trailers"],
            json!([["x-request-trailer", "sent last"], ["x-checksum", "42"]]),
            "{who}: request trailers the upstream got"
        );
        assert_eq!(
            no_body["trailers"],
            json!([["x-trailer-one", "one"], ["x-trailer-body-len", "0"]]),
            "{who}: response trailers"
        );
        outcome
    });
}

// ---------------------------------------------------------------------------------------------
// 8. GOAWAY on drain

/// A front (codec AUTO, HCM `drain_timeout` 1 s: Envoy's second GOAWAY comes 1 s after the
/// first) to the echo upstream.
fn drain_bootstrap(echo_port: u16) -> Value {
    let mut manager = auto_hcm("front", "echo");
    manager["drain_timeout"] = json!("1s");
    bootstrap(
        0,
        vec![http_listener("front", 0, manager)],
        vec![cluster("echo", &[(echo_port, 1)], json!({}))],
    )
}

/// Runs h2_peer.py `drain`: a GET that the echo upstream answers after `delay_ms`, and the
/// admin's `/drain_listeners?graceful` 300 ms after it was sent, on `proxy`'s `front`.
fn drain_run(proxy: &HttpProxy, delay_ms: u64) -> Value {
    h2_peer(&strings(&[
        "drain",
        "--port",
        &proxy.port("front").to_string(),
        "--admin",
        &proxy.admin.port().to_string(),
        "--path",
        "/slow",
        "--header",
        &format!("x-echo-delay-ms: {delay_ms}"),
        "--drain-after-ms",
        "300",
        "--wait-s",
        "12",
    ]))
}

/// What a drain run showed, as compared between the proxies: GOAWAY before the response, the
/// first GOAWAY's stream id (2^31-1: a shutdown notice), the last one's (1: the stream in
/// flight is processed), every error code, the response and its end, and whether the
/// connection then closed.
fn drain_outcome(who: &str, r: &Value) -> Value {
    let goaways = r["goaways"].as_array().unwrap();
    let order: Vec<&str> = r["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    let response_at = order.iter().position(|o| *o == "response");
    let goaway_at = order.iter().position(|o| *o == "goaway");
    assert_eq!(r["drain_status"], 200, "{who}: {r}");
    let mut goaway_errors: Vec<u64> = goaways
        .iter()
        .map(|g| g["error_code"].as_u64().unwrap())
        .collect();
    goaway_errors.dedup();
    json!({
        "goaway_before_response": goaway_at.is_some() && goaway_at < response_at,
        "first_goaway_stream": goaways.first().map(|g| g["last_stream_id"].clone()),
        "last_goaway_stream": goaways.last().map(|g| g["last_stream_id"].clone()),
        "goaway_errors": goaway_errors,
        "status": r["status"],
        "ended": r["ended"],
        "got_body": r["body_len"].as_u64().unwrap_or(0) > 0,
        "reset": r["reset"],
        "closed": r["closed"],
    })
}

#[test]
fn graceful_drain_sends_goaway_and_finishes_the_request_in_flight() {
    let test = "graceful_drain_sends_goaway_and_finishes_the_request_in_flight";
    if !have_python(test, "h2") || !have(test, "curl") {
        return;
    }
    let echo = EchoUpstreams::start(&["echo"], None);
    let b = drain_bootstrap(echo.port("echo"));
    // Immediate: Envoy's gradual strategy spreads the GOAWAYs over the drain time (600 s).
    let flags = ["--drain-strategy", "immediate"];
    on_both_with_flags("h2-drain", &b, &flags, |proxy| {
        let who = proxy.kind.name();
        let port = proxy.port("front");
        let r = drain_run(proxy, 1500);
        let o = drain_outcome(who, &r);
        assert_eq!(o["goaway_before_response"], true, "{who}: {r}");
        assert_eq!(o["first_goaway_stream"], (1u64 << 31) - 1, "{who}: {r}");
        assert_eq!(o["last_goaway_stream"], 1, "{who}: {r}");
        assert_eq!(o["goaway_errors"], json!([0]), "{who}: NO_ERROR: {r}");
        assert_eq!(o["status"], 200, "{who}: the request in flight: {r}");
        assert_eq!(o["ended"], true, "{who}: the request in flight: {r}");
        assert_eq!(o["got_body"], true, "{who}: {r}");
        assert_eq!(o["closed"], true, "{who}: the connection stays open: {r}");
        // The listener still takes (and answers) new connections during the drain time.
        let after = curl_h(&[
            "--http2-prior-knowledge",
            &format!("http://127.0.0.1:{port}/after"),
        ]);
        assert_eq!(
            (after.version.as_str(), after.status),
            ("HTTP/2", 200),
            "{who}"
        );
        (o, after.status)
    });
}

#[test]
fn request_in_flight_outlives_the_drain_time() {
    let test = "request_in_flight_outlives_the_drain_time";
    if !have_python(test, "h2") {
        return;
    }
    let echo = EchoUpstreams::start(&["echo"], None);
    let b = drain_bootstrap(echo.port("echo"));
    // The drain time (1 s) ends while the request (2.5 s) is in flight.
    let flags = ["--drain-strategy", "immediate", "--drain-time-s", "1"];
    on_both_with_flags("h2-drain-time", &b, &flags, |proxy| {
        let who = proxy.kind.name();
        let r = drain_run(proxy, 2500);
        let o = drain_outcome(who, &r);
        assert_eq!(o["status"], 200, "{who}: the request in flight: {r}");
        assert_eq!(o["ended"], true, "{who}: the request in flight: {r}");
        assert_eq!(o["got_body"], true, "{who}: {r}");
        o
    });
}

// ---------------------------------------------------------------------------------------------
// Content-Length across protocols

/// The values of every `content-length` field an echo (upstream.py's or h2_peer.py's) shows.
fn content_lengths(echo: &Value) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            h[0].as_str()
                .unwrap()
                .eq_ignore_ascii_case("content-length")
        })
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn content_length_crosses_protocols_once() {
    let test = "content_length_crosses_protocols_once";
    if !have(test, "curl") || !have_python(test, "h2") {
        return;
    }
    let echo = EchoUpstreams::start(&["echo"], None);
    let h2up = echo_h2_peer();
    let b = bootstrap(
        0,
        vec![
            plain_listener("toh1", 0, "echo"),
            plain_listener("toh2", 0, "h2up"),
        ],
        vec![
            cluster("echo", &[(echo.port("echo"), 1)], json!({})),
            cluster("h2up", &[(h2up.port, 1)], h2_upstream()),
        ],
    );
    on_both("h2-content-length", &b, |proxy| {
        let who = proxy.kind.name();
        let (to_h1, to_h2) = (proxy.port("toh1"), proxy.port("toh2"));
        let post = |flag: &str, port: u16| {
            curl_h(&[
                flag,
                "--data-binary",
                "12345",
                &format!("http://127.0.0.1:{port}/cl"),
            ])
        };
        let cases = [
            ("h2c -> h1", post("--http2-prior-knowledge", to_h1)),
            ("h1 -> h2", post("--http1.1", to_h2)),
            ("h2c -> h2", post("--http2-prior-knowledge", to_h2)),
        ];
        let mut outcome = Vec::new();
        for (label, r) in &cases {
            assert_eq!(r.status, 200, "{who} {label}: {r:?}");
            outcome.push((label.to_string(), content_lengths(&r.echo())));
        }
        let five = || vec!["5".to_string()];
        let want = vec![
            ("h2c -> h1".to_string(), five()),
            ("h1 -> h2".to_string(), five()),
            ("h2c -> h2".to_string(), five()),
        ];
        assert_eq!(
            outcome, want,
            "{who}: content-length fields the upstreams got"
        );
        outcome
    });
}

// ---------------------------------------------------------------------------------------------
// Keepalive PINGs

/// `connection_keepalive` with a PING every 400 ms (no jitter) and 400 ms to answer it.
fn keepalive_settings() -> Value {
    json!({"connection_keepalive": {
        "interval": "0.4s", "timeout": "0.4s", "interval_jitter": {"value": 0},
    }})
}

fn keepalive_run(port: u16, wait_s: &str, silent: bool) -> Value {
    let mut args = strings(&["keepalive", "--port", &port.to_string(), "--wait-s", wait_s]);
    if silent {
        args.push("--silent".into());
    }
    h2_peer(&args)
}

#[test]
fn keepalive_pings_close_a_silent_client_and_keep_a_live_one() {
    let test = "keepalive_pings_close_a_silent_client_and_keep_a_live_one";
    if !have_python(test, "h2") {
        return;
    }
    let echo = EchoUpstreams::start(&["echo"], None);
    let mut manager = auto_hcm("ka", "echo");
    manager["http2_protocol_options"] = keepalive_settings();
    let b = bootstrap(
        0,
        vec![http_listener("ka", 0, manager)],
        vec![cluster("echo", &[(echo.port("echo"), 1)], json!({}))],
    );
    on_both("h2-keepalive", &b, |proxy| {
        let who = proxy.kind.name();
        let port = proxy.port("ka");
        // Answering: PINGs keep coming, the connection stays open.
        let live = keepalive_run(port, "2", false);
        assert!(live["pings"].as_u64().unwrap() >= 3, "{who}: {live}");
        assert_eq!(live["closed"], false, "{who}: {live}");
        // Silent: closed an interval and a timeout after it went quiet.
        let dead = keepalive_run(port, "6", true);
        assert_eq!(dead["pings"], 1, "{who}: {dead}");
        assert_eq!(dead["closed"], true, "{who}: {dead}");
        let after = dead["closed_after_ms"].as_u64().unwrap();
        assert!(
            (700..3000).contains(&after),
            "{who}: closed after {after} ms"
        );
        (
            live["closed"].clone(),
            dead["closed"].clone(),
            dead["goaway"].clone(),
        )
    });
}

#[test]
fn keepalive_pings_fail_a_hung_http2_upstream_fast() {
    let test = "keepalive_pings_fail_a_hung_http2_upstream_fast";
    if !have_python(test, "h2") || !have(test, "curl") {
        return;
    }
    let hung = PeerServer::start("h2_peer.py", &["serve", "--silent"]);
    let options = upstream_protocol(json!({"explicit_http_config": {
        "http2_protocol_options": keepalive_settings(),
    }}));
    let b = bootstrap(
        0,
        vec![plain_listener("front", 0, "hung")],
        vec![cluster("hung", &[(hung.port, 1)], options)],
    );
    on_both("h2-upstream-keepalive", &b, |proxy| {
        let who = proxy.kind.name();
        let started = Instant::now();
        let port = proxy.port("front");
        let r = curl_h(&["--http1.1", &format!("http://127.0.0.1:{port}/hung")]);
        let took = started.elapsed();
        // The route's 15 s timeout would give 504; the dead connection gives 503 first.
        assert_eq!(r.status, 503, "{who}: {r:?}");
        assert!(took < Duration::from_secs(5), "{who}: took {took:?}");
        r.status
    });
}

// ---------------------------------------------------------------------------------------------
// Malformed requests: the stream or the connection

/// With `override_stream_error_on_invalid_http_message: true` both proxies reset only the
/// malformed stream. (Envoy's default closes the connection; shardproxy always resets the
/// stream: docs/http-differences.md.)
#[test]
fn malformed_request_resets_only_its_stream() {
    let test = "malformed_request_resets_only_its_stream";
    if !have_python(test, "h2") {
        return;
    }
    let echo = EchoUpstreams::start(&["echo"], None);
    let mut per_stream = auto_hcm("lenient", "echo");
    per_stream["http2_protocol_options"] =
        json!({"override_stream_error_on_invalid_http_message": true});
    let b = bootstrap(
        0,
        vec![http_listener("lenient", 0, per_stream)],
        vec![cluster("echo", &[(echo.port("echo"), 1)], json!({}))],
    );
    on_both("h2-malformed", &b, |proxy| {
        let who = proxy.kind.name();
        let port = proxy.port("lenient").to_string();
        let reset = h2_peer(&strings(&["malformed", "--port", &port]));
        assert_eq!(
            reset["streams"]["3"], "reset 1",
            "{who}: PROTOCOL_ERROR: {reset}"
        );
        assert_eq!(reset["streams"]["1"], 200, "{who}: {reset}");
        assert_eq!(reset["closed"], false, "{who}: {reset}");
        reset["streams"].clone()
    });
}

// ---------------------------------------------------------------------------------------------
// auto_config: the upstream protocol by ALPN

/// A cluster with `auto_config` over TLS (no ALPN listed: the proxy offers `h2,http/1.1`) to
/// one HTTPS upstream that takes h2 and one that only speaks HTTP/1.1: each request goes up
/// in what the host's ALPN picked, on both proxies.
#[test]
fn auto_config_speaks_what_alpn_picks() {
    let test = "auto_config_speaks_what_alpn_picks";
    if !have_python(test, "h2") || !have(test, "curl") {
        return;
    }
    let pki = pki();
    let both = TlsUpstream::start("both", &pki.upstream, &["--alpn", "h2,http/1.1"]);
    let h1 = TlsUpstream::start("h1only", &pki.upstream, &["--alpn", "http/1.1"]);
    let auto = || {
        let mut c = upstream_protocol(json!({"auto_config": {}}));
        c["transport_socket"] = upstream_tls(
            json!({"validation_context": validation(&pki.ca, json!({}))}),
            json!({"sni": "localhost"}),
        );
        c
    };
    let b = bootstrap(
        0,
        vec![
            plain_listener("toboth", 0, "both"),
            plain_listener("toh1", 0, "h1only"),
        ],
        vec![
            cluster("both", &[(both.port, 1)], auto()),
            cluster("h1only", &[(h1.port, 1)], auto()),
        ],
    );
    on_both("h2-auto-config", &b, |proxy| {
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        for (port, want) in [
            (proxy.port("toboth"), ("h2", "HTTP/2")),
            (proxy.port("toh1"), ("http/1.1", "HTTP/1.1")),
        ] {
            // Twice: the first request learns the host's pick, the second reuses it.
            for _ in 0..2 {
                let r = curl_h(&["--http1.1", &format!("http://127.0.0.1:{port}/auto")]);
                assert_eq!(r.status, 200, "{who}: {r:?}");
                let echo = r.echo();
                let got = (
                    echo["tls"]["alpn"].as_str().unwrap_or("-").to_string(),
                    echo["version"].as_str().unwrap_or("-").to_string(),
                );
                assert_eq!((got.0.as_str(), got.1.as_str()), want, "{who}: {echo}");
                seen.push(got);
            }
        }
        seen
    });
}
