//! Tests: the HTTP connection manager end to end — header, idle and stream timeouts, header
//! limits, HTTP/1.0, forwarding headers and request ids, `server_name`, path normalization,
//! underscores in header names, pipelining, `Expect: 100-continue`, chunked uploads with
//! trailers, WebSocket upgrades, access logs and stats; key outcomes compared with Envoy.
mod common;

use std::{
    io::{Read, Write},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{http_e2e::*, *};
use serde_json::{json, Value};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A scene whose route `/` goes to cluster `a` = `up`, with `hcm_extra` on the connection
/// manager.
fn scene(peer: Peer, tag: &str, hcm_extra: Value, up: &HttpUpstream) -> Option<Scene> {
    Scene::with(
        peer,
        tag,
        hcm_extra,
        to_a(json!({})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    )
}

/// What a client sees next on a connection: `"closed"`, `"timeout"`, or the status line and
/// body of a response.
fn next_thing(c: &mut Client, within: Duration) -> String {
    c.r.get_ref().set_read_timeout(Some(within)).unwrap();
    let out = match c.read_response(false) {
        Ok(r) => format!("{} {}", r.status, r.text()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            "timeout".into()
        }
        Err(_) => "closed".into(),
    };
    c.r.get_ref().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// Timeouts

#[test]
fn request_headers_timeout_cuts_a_client_that_never_finishes_its_headers() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = scene(
            peer,
            "headers_timeout",
            json!({"request_headers_timeout": "0.5s"}),
            &up,
        )?;
        let mut c = Client::connect(s.port);
        let start = Instant::now();
        c.send(b"GET / HTTP/1.1\r\nhost: example.com\r\n");
        // A slow loris: one more header byte every 100 ms must not extend the deadline.
        let mut writer = c.w.try_clone().unwrap();
        let trickle = thread::spawn(move || {
            for _ in 0..40 {
                thread::sleep(ms(100));
                if writer.write_all(b"x").is_err() {
                    break;
                }
            }
        });
        let seen = next_thing(&mut c, Duration::from_secs(8));
        let took = start.elapsed();
        assert!(
            took >= ms(450) && took < Duration::from_secs(3),
            "cut after {took:?}"
        );
        trickle.join().unwrap();
        if let Running::Shardproxy(p) = &s.running {
            p.wait_stat("http.ingress.downstream_rq_header_timeout", "1", |v| v == 1);
        }
        Some((seen, up.count()))
    });
    assert_eq!(out.1, 0, "nothing reaches the upstream");
}

#[test]
fn connection_idle_timeout_closes_an_idle_keep_alive_connection() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = scene(
            peer,
            "idle_timeout",
            // Envoy drains an idle HTTP/1 connection for drain_timeout before closing it.
            json!({"common_http_protocol_options": {"idle_timeout": "0.5s"}, "drain_timeout": "0.2s"}),
            &up,
        )?;
        let mut c = Client::connect(s.port);
        assert_eq!(c.get("/").status, 200);
        let start = Instant::now();
        let seen = next_thing(&mut c, Duration::from_secs(8));
        let took = start.elapsed();
        assert!(
            took >= ms(400) && took < Duration::from_secs(3),
            "closed after {took:?}"
        );
        if let Running::Shardproxy(p) = &s.running {
            p.wait_stat("http.ingress.downstream_cx_idle_timeout", "1", |v| v == 1);
        }
        Some(seen)
    });
    assert_eq!(out, "closed");
}

#[test]
fn stream_idle_timeout_while_waiting_for_the_upstream_is_504() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::script(vec![Reply::after(4000, Reply::ok("late"))]);
        let s = scene(
            peer,
            "stream_idle_upstream",
            json!({"stream_idle_timeout": "0.5s"}),
            &up,
        )?;
        let start = Instant::now();
        let r = get(s.port, "/");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "answered after {took:?}");
        Some((r.status, r.text(), s.flags(0)))
    });
    // Envoy: 504 before the upstream answered (408 only while the request is still coming).
    assert_eq!(out, (504, "stream timeout".into(), "SI".into()));
}

#[test]
fn stream_idle_timeout_on_a_stalled_request_body_is_408() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = scene(
            peer,
            "stream_idle_body",
            json!({"stream_idle_timeout": "0.5s"}),
            &up,
        )?;
        let mut c = Client::connect(s.port);
        c.send(b"POST / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 10\r\n\r\n12345");
        let start = Instant::now();
        let seen = next_thing(&mut c, Duration::from_secs(8));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "answered after {took:?}");
        Some((seen, s.flags(0)))
    });
    assert_eq!(out, ("408 stream timeout".into(), "SI".into()));
}

#[test]
fn stream_idle_timeout_mid_response_cuts_the_client() {
    // Head and half the body, then silence: the client's response is cut.
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::script(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345".to_vec(),
        )]);
        let s = scene(
            peer,
            "stream_idle_response",
            json!({"stream_idle_timeout": "0.5s"}),
            &up,
        )?;
        let mut c = Client::connect(s.port);
        c.send(&request_bytes("GET", "/", &[], b""));
        let start = Instant::now();
        let seen = next_thing(&mut c, Duration::from_secs(8));
        assert!(start.elapsed() < Duration::from_secs(3));
        Some((seen, s.flags(0)))
    });
    assert_eq!(out, ("closed".into(), "SI".into()));
}

// ---------------------------------------------------------------------------------------------
// Limits and versions

#[test]
fn max_request_headers_kb_is_431() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = scene(
            peer,
            "headers_kb",
            json!({"max_request_headers_kb": 2}),
            &up,
        )?;
        let big = "v".repeat(3000);
        let mut c = Client::connect(s.port);
        c.send(&request_bytes("GET", "/", &[("x-big", &big)], b""));
        let r = c.read_response(false).unwrap();
        let closed = c.closed_within(Duration::from_secs(3));
        let small = fetch(s.port, "GET", "/", &[("x-small", &"v".repeat(1000))], b"");
        Some((r.status, closed, small.status, up.count()))
    });
    assert_eq!(out, (431, true, 200, 1));
}

#[test]
fn http_10_is_426_unless_accepted() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let refused = scene(peer, "http10_refused", json!({}), &up)?;
        let mut c = Client::connect(refused.port);
        c.send(b"GET / HTTP/1.0\r\nhost: example.com\r\n\r\n");
        let r = c.read_response(false).unwrap();
        let first = (r.status, r.text());
        drop(refused);
        let accepted = scene(
            peer,
            "http10_accepted",
            json!({"http_protocol_options": {"accept_http_10": true, "default_host_for_http_10": "default.example"}}),
            &up,
        )?;
        let mut c = Client::connect(accepted.port);
        c.send(b"GET /ten HTTP/1.0\r\n\r\n");
        let r = c.read_response(false).unwrap();
        let closed = c.closed_within(Duration::from_secs(3));
        let seen = up.last();
        Some((
            first,
            r.status,
            r.version.clone(),
            r.text(),
            closed,
            seen.header("host").map(str::to_string),
        ))
    });
    assert_eq!(out.0 .0, 426);
    assert_eq!(out.1, 200);
    assert_eq!(out.3, "a");
    assert!(
        out.4,
        "an HTTP/1.0 client without keep-alive is closed after its response"
    );
    assert_eq!(out.5.as_deref(), Some("default.example"));
}

// ---------------------------------------------------------------------------------------------
// Request headers the connection manager sets

#[test]
fn x_forwarded_for_and_proto() {
    // From 127.0.0.2: Envoy appends its own address, not the peer's, for a 127.0.0.1 peer.
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let mut seen = Vec::new();
        for (tag, extra) in [
            ("xff_remote", json!({"use_remote_address": true})),
            ("xff_plain", json!({})),
        ] {
            let s = scene(peer, tag, extra, &up)?;
            Client::connect_from(s.port, [127, 0, 0, 2]).get("/");
            Client::connect_from(s.port, [127, 0, 0, 2]).request(
                "GET",
                "/",
                &[("x-forwarded-for", "203.0.113.7")],
                b"",
            );
            for req in &up.requests()[up.count() - 2..] {
                seen.push((
                    req.header("x-forwarded-for").map(str::to_string),
                    req.header("x-forwarded-proto").map(str::to_string),
                ));
            }
        }
        Some(seen)
    });
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        out,
        vec![
            (s("127.0.0.2"), s("http")),
            (s("203.0.113.7,127.0.0.2"), s("http")),
            (None, s("http")),
            (s("203.0.113.7"), s("http")),
        ]
    );
}

#[test]
fn loopback_peers_are_external_without_internal_address_config() {
    // Envoy 1.40 treats no address as internal unless `internal_address_config` says so:
    // a loopback client is external (x-envoy-external-address, a fresh x-request-id).
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = scene(peer, "external", json!({"use_remote_address": true}), &up)?;
        Client::connect_from(s.port, [127, 0, 0, 2]).request(
            "GET",
            "/",
            &[("x-request-id", "abc")],
            b"",
        );
        let req = up.last();
        Some((
            req.header("x-envoy-external-address").map(str::to_string),
            req.header("x-request-id") == Some("abc"),
        ))
    });
    assert_eq!(out, (Some("127.0.0.2".into()), false));
}

#[test]
fn x_request_id_generated_and_preserved() {
    let up = HttpUpstream::named("a");
    let s = scene(Peer::Shardproxy, "request_id", json!({}), &up).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = get(s.port, "/");
        assert_eq!(r.status, 200);
        let id = up
            .last()
            .header("x-request-id")
            .expect("generated")
            .to_string();
        let uuid = regex_like_uuid_v4(&id);
        assert!(uuid, "not a UUID v4: {id:?}");
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct ids: {ids:?}");
    fetch(
        s.port,
        "GET",
        "/",
        &[("x-request-id", "client-chosen-1")],
        b"",
    );
    assert_eq!(up.last().header("x-request-id"), Some("client-chosen-1"));
    assert_eq!(up.last().header_all("x-request-id").len(), 1);
}

/// xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx, lower-case hex.
fn regex_like_uuid_v4(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && hex(p))
        && parts[2].starts_with('4')
        && matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b')
}

#[test]
fn server_name_overwrites_the_upstream_server_header() {
    let out = same_as_envoy(|peer| {
        let up =
            HttpUpstream::start(|_| Reply::with_headers(200, &[("server", "backend/1.0")], "x"));
        let named = scene(peer, "server_named", json!({"server_name": "shardy"}), &up)?;
        let a = get(named.port, "/").header("server").map(str::to_string);
        let local = get(named.port, "/nowhere-else");
        drop(named);
        let default = scene(peer, "server_default", json!({}), &up)?;
        let b = get(default.port, "/").header("server").map(str::to_string);
        Some((a, local.header("server").map(str::to_string), b))
    });
    let s = |v: &str| Some(v.to_string());
    assert_eq!(out, (s("shardy"), s("shardy"), s("envoy")));
}

// ---------------------------------------------------------------------------------------------
// Paths

/// For each path: the status, and the path the upstream saw (or the redirect location).
fn path_outcomes(
    peer: Peer,
    tag: &str,
    extra: Value,
    paths: &[&str],
) -> Option<Vec<(u16, String)>> {
    let up = HttpUpstream::named("a");
    let s = scene(peer, tag, extra, &up)?;
    let mut out = Vec::new();
    for path in paths {
        let before = up.count();
        let r = get(s.port, path);
        let seen = match (up.count() > before, r.header("location")) {
            (true, _) => up.last().path,
            (false, Some(l)) => format!("location {l}"),
            (false, None) => "-".into(),
        };
        out.push((r.status, seen));
    }
    Some(out)
}

#[test]
fn normalize_path_and_merge_slashes() {
    let out = same_as_envoy(|peer| {
        path_outcomes(
            peer,
            "normalize",
            json!({"normalize_path": true, "merge_slashes": true}),
            &[
                "/a/../b/./c",
                "//x///y",
                "/p/%2e%2e/q",
                "/../../etc",
                "/keep?q=/../x",
            ],
        )
    });
    let want: Vec<(u16, String)> = [
        (200, "/b/c"),
        (200, "/x/y"),
        (200, "/q"),
        (200, "/etc"),
        (200, "/keep?q=/../x"),
    ]
    .iter()
    .map(|(s, p)| (*s, p.to_string()))
    .collect();
    assert_eq!(out, want);
}

#[test]
fn paths_are_unchanged_without_normalization() {
    let out = same_as_envoy(|peer| {
        path_outcomes(
            peer,
            "no_normalize",
            json!({}),
            &["/a/../b", "//x//y", "/a%2Fb"],
        )
    });
    let want: Vec<(u16, String)> = [(200, "/a/../b"), (200, "//x//y"), (200, "/a%2Fb")]
        .iter()
        .map(|(s, p)| (*s, p.to_string()))
        .collect();
    assert_eq!(out, want);
}

#[test]
fn escaped_slashes_actions() {
    let out = same_as_envoy(|peer| {
        let mut all = Vec::new();
        for action in [
            "KEEP_UNCHANGED",
            "REJECT_REQUEST",
            "UNESCAPE_AND_REDIRECT",
            "UNESCAPE_AND_FORWARD",
        ] {
            let extra = json!({"path_with_escaped_slashes_action": action});
            let tag = format!("escaped_{}", action.to_lowercase());
            all.push((
                action,
                path_outcomes(peer, &tag, extra, &["/a%2Fb%5cc?x=%2F", "/plain"])?,
            ));
        }
        Some(all)
    });
    let o = |s: u16, p: &str| (s, p.to_string());
    assert_eq!(
        out,
        vec![
            (
                "KEEP_UNCHANGED",
                vec![o(200, "/a%2Fb%5cc?x=%2F"), o(200, "/plain")]
            ),
            ("REJECT_REQUEST", vec![o(400, "-"), o(200, "/plain")]),
            (
                "UNESCAPE_AND_REDIRECT",
                vec![o(307, "location /a/b\\c?x=%2F"), o(200, "/plain")]
            ),
            (
                "UNESCAPE_AND_FORWARD",
                vec![o(200, "/a/b\\c?x=%2F"), o(200, "/plain")]
            ),
        ]
    );
}

#[test]
fn headers_with_underscores_actions() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let mut all = Vec::new();
        for action in ["ALLOW", "DROP_HEADER", "REJECT_REQUEST"] {
            let extra = json!({"common_http_protocol_options": {"headers_with_underscores_action": action}});
            let s = scene(
                peer,
                &format!("underscores_{}", action.to_lowercase()),
                extra,
                &up,
            )?;
            let before = up.count();
            let mut c = Client::connect(s.port);
            let r = c.request("GET", "/", &[("x_under", "1"), ("x-dash", "2")], b"");
            let seen = (up.count() > before).then(|| {
                let req = up.last();
                (
                    req.header("x_under").map(str::to_string),
                    req.header("x-dash").map(str::to_string),
                )
            });
            let closed = r.status == 400 && c.closed_within(Duration::from_secs(3));
            all.push((action, r.status, seen, closed));
        }
        Some(all)
    });
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        out,
        vec![
            ("ALLOW", 200, Some((s("1"), s("2"))), false),
            ("DROP_HEADER", 200, Some((None, s("2"))), false),
            ("REJECT_REQUEST", 400, None, true),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Message handling

#[test]
fn pipelined_requests_are_answered_in_order() {
    // The first request is the slowest: responses must still come back in request order.
    let up = HttpUpstream::start(|req| {
        let wait = match req.path.as_str() {
            "/0" => 400,
            "/1" => 200,
            _ => 0,
        };
        Reply::after(wait, Reply::ok(&format!("body of {}", req.path)))
    });
    let s = scene(Peer::Shardproxy, "pipelined", json!({}), &up).unwrap();
    let mut c = Client::connect(s.port);
    let mut all = Vec::new();
    for i in 0..6 {
        let body = if i == 3 {
            b"posted".to_vec()
        } else {
            Vec::new()
        };
        let method = if i == 3 { "POST" } else { "GET" };
        all.extend(request_bytes(method, &format!("/{i}"), &[], &body));
    }
    c.send(&all);
    for i in 0..6 {
        let r = c.read_response(false).unwrap();
        assert_eq!((r.status, r.text()), (200, format!("body of /{i}")));
    }
    let bodies: Vec<_> = up
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.body.clone()))
        .collect();
    assert_eq!(bodies[3], ("/3".to_string(), b"posted".to_vec()));
}

#[test]
fn expect_100_continue_with_curl() {
    let up = HttpUpstream::start(|req| Reply::ok(&format!("got {} bytes", req.body.len())));
    let s = scene(Peer::Shardproxy, "expect_curl", json!({}), &up).unwrap();
    let file = s.dir.file("upload.bin");
    std::fs::write(&file, vec![b'z'; 200_000]).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-v",
            "--max-time",
            "15",
            "-H",
            "Expect: 100-continue",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://127.0.0.1:{}/upload", s.port))
        .output()
        .expect("run curl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got 200000 bytes");
    assert!(
        stderr.contains("HTTP/1.1 100 Continue"),
        "no 100 Continue seen by curl:\n{stderr}"
    );
    assert_eq!(
        up.last().header("expect"),
        None,
        "the proxy answers the expectation itself"
    );
}

#[test]
fn expect_100_continue_raw_interim_before_body() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::start(|req| Reply::ok(&String::from_utf8_lossy(&req.body)));
        let s = scene(peer, "expect_raw", json!({}), &up)?;
        let mut c = Client::connect(s.port);
        c.send(b"PUT /x HTTP/1.1\r\nhost: example.com\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n");
        let interim = c.read_one(false).unwrap();
        c.send(b"hello");
        let r = c.read_response(false).unwrap();
        Some((interim.status, r.status, r.text()))
    });
    assert_eq!(out, (100, 200, "hello".into()));
}

#[test]
fn chunked_upload_with_trailers() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::start(|req| Reply::ok(&format!("{} bytes", req.body.len())));
        let s = scene(peer, "chunked_upload", json!({}), &up)?;
        let mut c = Client::connect(s.port);
        c.send(b"POST /up HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n");
        let mut expected = Vec::new();
        for (i, n) in [1usize, 100, 5000, 70_000].iter().enumerate() {
            let chunk = vec![b'a' + i as u8; *n];
            c.send(format!("{n:x}\r\n").as_bytes());
            c.send(&chunk);
            c.send(b"\r\n");
            expected.extend(chunk);
        }
        c.send(b"0\r\nx-checksum: 42\r\n\r\n");
        let r = c.read_response(false).unwrap();
        let req = up.last();
        assert_eq!(req.body, expected, "the body arrives intact");
        // The connection stays usable.
        let again = c.get("/after");
        Some((
            r.status,
            r.text(),
            req.chunked,
            req.trailers.clone(),
            again.status,
        ))
    });
    // Envoy's HTTP/1 codec drops request trailers unless `enable_trailers` is set.
    assert_eq!(out, (200, "75101 bytes".into(), true, vec![], 200));
}

#[test]
fn websocket_upgrade_with_upgrade_configs() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::start(|_| Reply::UpgradeEcho);
        let s = scene(
            peer,
            "websocket",
            json!({"upgrade_configs": [{"upgrade_type": "websocket"}]}),
            &up,
        )?;
        let mut c = Client::connect(s.port);
        c.send(b"GET /chat HTTP/1.1\r\nhost: example.com\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
        let r = c.read_response(false).unwrap();
        let seen = up.last();
        let mut echoed = Vec::new();
        for msg in [
            &b"frame one"[..],
            &[0u8, 1, 2, 255, 254][..],
            &vec![b'q'; 100_000][..],
        ] {
            c.send(msg);
            let mut buf = vec![0u8; msg.len()];
            c.r.read_exact(&mut buf).unwrap();
            echoed.push(buf == msg);
        }
        c.w.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = c.r.read_to_end(&mut rest);
        Some((
            r.status,
            r.header("upgrade").map(str::to_ascii_lowercase),
            seen.header("upgrade").map(str::to_ascii_lowercase),
            seen.header("connection").map(str::to_ascii_lowercase),
            echoed,
            rest.len(),
        ))
    });
    assert_eq!(out.0, 101);
    assert_eq!(out.1.as_deref(), Some("websocket"));
    assert_eq!(out.2.as_deref(), Some("websocket"));
    assert_eq!(out.4, vec![true, true, true]);
    assert_eq!(out.5, 0);
}

#[test]
fn websocket_upgrade_without_upgrade_configs_is_403() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::start(|_| Reply::UpgradeEcho);
        let s = scene(peer, "websocket_403", json!({}), &up)?;
        let mut c = Client::connect(s.port);
        c.send(b"GET /chat HTTP/1.1\r\nhost: example.com\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n");
        let r = c.read_response(false).unwrap();
        Some((r.status, up.count()))
    });
    assert_eq!(out, (403, 0));
}

// ---------------------------------------------------------------------------------------------
// Access log and stats

#[test]
fn access_log_default_format_matches_envoy() {
    // Envoy's default line, with the parts that vary per run (time, durations, request id,
    // ports) masked.
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::script(vec![Reply::ok("hello")]);
        let dir = TempDir::new("default_log");
        let log = dir.file("default.log");
        let s = scene(
            peer,
            "default_log",
            json!({"access_log": file_access_log(&log, None)}),
            &up,
        )?;
        let r = fetch(
            s.port,
            "POST",
            "/logged?q=1",
            &[("user-agent", "e2e-agent"), ("x-request-id", "rid-1")],
            b"12345678",
        );
        assert_eq!(r.status, 200);
        get(s.port, "/second");
        let lines = log_lines(&log, 2);
        Some(
            lines
                .iter()
                .map(|l| mask_default_line(l, up.port))
                .collect::<Vec<_>>(),
        )
    });
    assert_eq!(
        out,
        vec![
            "[T] \"POST /logged?q=1 HTTP/1.1\" 200 - 8 5 D D \"-\" \"e2e-agent\" \"rid-1\" \"example.com\" \"127.0.0.1:UP\"",
            "[T] \"GET /second HTTP/1.1\" 200 - 0 5 D D \"-\" \"-\" \"RID\" \"example.com\" \"127.0.0.1:UP\"",
        ]
    );
}

/// Masks the start time, the two durations and the upstream port of a default-format line.
fn mask_default_line(line: &str, up_port: u16) -> String {
    let rest = line.split_once("] ").map_or(line, |(_, r)| r);
    let mut words: Vec<String> = rest.split(' ').map(str::to_string).collect();
    // Fields after the quoted request line: code flags rx tx duration service-time ...
    if words.len() > 8 {
        words[7] = "D".into();
        words[8] = "D".into();
    }
    if words.len() > 11 && words[11].len() == 38 {
        words[11] = "\"RID\"".into(); // a generated x-request-id
    }
    format!("[T] {}", words.join(" ")).replace(&format!("127.0.0.1:{up_port}"), "127.0.0.1:UP")
}

#[test]
fn access_log_custom_format_with_response_flags() {
    let up = HttpUpstream::named("a");
    let dir = TempDir::new("custom_log");
    let log = dir.file("custom.log");
    let format = "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %BYTES_RECEIVED% %REQ(X-MISSING)% %RESP(X-UPSTREAM)% %PROTOCOL%\n";
    let routes = json!([
        {"match": {"path": "/direct"}, "direct_response": {"status": 204}},
        route_to("/dead", "dead", json!({})),
        route_to("/", "a", json!({})),
    ]);
    let s = Scene::with(
        Peer::Shardproxy,
        "custom_log",
        json!({"access_log": file_access_log(&log, Some(format))}),
        routes,
        vec![
            cluster("a", &[(up.port, 1)], json!(null)),
            cluster("dead", &[], json!(null)),
        ],
    )
    .unwrap();
    fetch(s.port, "PUT", "/ok", &[], b"abc");
    get(s.port, "/dead");
    get(s.port, "/direct");
    let lines = log_lines(&log, 3);
    assert_eq!(
        lines,
        vec![
            "PUT /ok 200 - a 3 - a HTTP/1.1",
            "GET /dead 503 UH dead 0 - - HTTP/1.1",
            "GET /direct 204 - - 0 - - HTTP/1.1",
        ]
    );
}

#[test]
fn stats_count_requests_and_histograms() {
    let up = HttpUpstream::start(|req| match req.path.as_str() {
        "/missing" => Reply::status(404, "no"),
        _ => Reply::ok("yes"),
    });
    let s = scene(Peer::Shardproxy, "stats", json!({}), &up).unwrap();
    let mut c = Client::connect(s.port);
    for _ in 0..5 {
        assert_eq!(c.get("/").status, 200);
    }
    assert_eq!(c.get("/missing").status, 404);
    let p = s.proxy();
    p.wait_stat("http.ingress.downstream_rq_total", "6", |v| v == 6);
    // `downstream_rq_completed` is counted once the last response went out: wait for it.
    p.wait_stat("http.ingress.downstream_rq_completed", "== 6", |v| v == 6);
    let stats = p.stats();
    assert_eq!(stats["http.ingress.downstream_rq_2xx"], 5);
    assert_eq!(stats["http.ingress.downstream_rq_4xx"], 1);
    assert_eq!(stats["http.ingress.downstream_rq_completed"], 6);
    assert_eq!(stats["http.ingress.downstream_cx_total"], 1);
    assert_eq!(stats["cluster.a.upstream_rq_total"], 6);
    assert_eq!(stats["cluster.a.upstream_rq_2xx"], 5);
    assert_eq!(stats["cluster.a.upstream_rq_completed"], 6);
    // Histograms: percentiles in /stats, buckets in /stats/prometheus.
    let text = wait_for(SOON, "upstream_rq_time with samples in /stats", || {
        let body = p.get("/stats").body;
        body.lines()
            .find(|l| l.starts_with("cluster.a.upstream_rq_time: P0("))
            .map(str::to_string)
    });
    assert!(text.contains("P50(") && text.contains("P99("), "{text}");
    let body = p.get("/stats").body;
    assert!(
        body.lines()
            .any(|l| l.starts_with("http.ingress.downstream_rq_time: P0(")),
        "no downstream_rq_time histogram in /stats"
    );
    let prom = p.get("/stats/prometheus").body;
    let count = prom
        .lines()
        .find(|l| l.starts_with("envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"a\"}"))
        .unwrap_or_else(|| panic!("no upstream_rq_time_count:\n{prom}"));
    assert!(count.ends_with(" 6"), "{count}");
    let inf = prom
        .lines()
        .find(|l| {
            l.starts_with(
                "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"a\",le=\"+Inf\"}",
            )
        })
        .unwrap_or_else(|| panic!("no +Inf bucket:\n{prom}"));
    assert!(inf.ends_with(" 6"), "{inf}");
    assert!(prom.lines().any(|l| l.starts_with(
        "envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix=\"ingress\""
    )));
    assert!(prom.contains("envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"ingress\"} 5"), "no downstream_rq_xx 2 in:\n{prom}");
}

#[test]
fn upstream_rq_per_status_code_stats() {
    let up = HttpUpstream::start(|req| match req.path.as_str() {
        "/missing" => Reply::status(404, "no"),
        _ => Reply::ok("yes"),
    });
    let s = scene(Peer::Shardproxy, "code_stats", json!({}), &up).unwrap();
    let mut c = Client::connect(s.port);
    assert_eq!(c.get("/").status, 200);
    assert_eq!(c.get("/missing").status, 404);
    let stats = s.proxy().stats();
    assert_eq!(stats.get("cluster.a.upstream_rq_200"), Some(&1));
    assert_eq!(stats.get("cluster.a.upstream_rq_404"), Some(&1));
}

// ---------------------------------------------------------------------------------------------
// Connection lifetime

#[test]
fn client_connection_close_is_honoured() {
    let up = HttpUpstream::named("a");
    let s = scene(Peer::Shardproxy, "client_close", json!({}), &up).unwrap();
    let mut c = Client::connect(s.port);
    let r = c.request("GET", "/", &[("connection", "close")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(3)));
}

#[test]
fn downstream_max_requests_per_connection() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = scene(
            peer,
            "downstream_max_requests",
            json!({"common_http_protocol_options": {"max_requests_per_connection": 2}}),
            &up,
        )?;
        let mut c = Client::connect(s.port);
        let first = c.get("/");
        let second = c.get("/");
        let closed = c.closed_within(Duration::from_secs(3));
        Some((
            first.header("connection").map(str::to_string),
            second.status,
            second.header("connection").map(str::to_string),
            closed,
        ))
    });
    assert_eq!(out, (None, 200, Some("close".into()), true));
}

#[test]
fn request_timeout_on_a_slow_body_is_408() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = scene(
            peer,
            "request_timeout",
            json!({"request_timeout": "0.6s"}),
            &up,
        )?;
        let mut c = Client::connect(s.port);
        c.send(b"POST / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 100\r\n\r\nabc");
        let start = Instant::now();
        let seen = next_thing(&mut c, Duration::from_secs(8));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "after {:?}",
            start.elapsed()
        );
        Some(seen)
    });
    assert_eq!(out, "408 request timeout");
}

#[test]
fn route_idle_timeout_overrides_stream_idle_timeout() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::script(vec![Reply::Raw(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345".to_vec(),
        )]);
        let routes = json!([route_to("/", "a", json!({"idle_timeout": "0.4s"}))]);
        let s = Scene::with(
            peer,
            "route_idle",
            json!({"stream_idle_timeout": "30s"}),
            routes,
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut c = Client::connect(s.port);
        c.send(&request_bytes("GET", "/", &[], b""));
        let start = Instant::now();
        let seen = next_thing(&mut c, Duration::from_secs(8));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "after {:?}",
            start.elapsed()
        );
        Some(seen)
    });
    assert_eq!(out, "closed");
}

#[test]
fn internal_only_headers_are_removed_from_edge_requests() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let mut seen = Vec::new();
        for (tag, remote) in [("internal_edge", true), ("internal_plain", false)] {
            let extra = json!({
                "use_remote_address": remote,
                "route_config": {"internal_only_headers": ["x-internal"]},
            });
            let s = scene(peer, tag, extra, &up)?;
            Client::connect_from(s.port, [127, 0, 0, 2]).request(
                "GET",
                "/",
                &[("x-internal", "1"), ("x-public", "2")],
                b"",
            );
            let req = up.last();
            seen.push((
                req.header("x-internal").map(str::to_string),
                req.header("x-public").map(str::to_string),
            ));
        }
        Some(seen)
    });
    let s = |v: &str| Some(v.to_string());
    // No peer is internal without an internal_address_config, edge or not.
    assert_eq!(out, vec![(None, s("2")), (None, s("2"))]);
}
