//! Tests: file access log — one line per connection in the configured format, with the
//! right byte counts, upstream host and response flags; examples/tcp-proxy-lb.yaml logs what
//! its comment says.
mod common;

use std::{collections::HashMap, io::Write, net::Shutdown};

use common::*;
use serde_json::{json, Value};

#[test]
fn file_access_log_one_line_per_connection() {
    let (sink, _rx) = Upstream::sink();
    let dir = TempDir::new("access_log_files");
    let log = dir.file("access.log");
    let format = "conn %UPSTREAM_HOST% rx=%BYTES_RECEIVED% tx=%BYTES_SENT% flags=%RESPONSE_FLAGS% cluster=%UPSTREAM_CLUSTER%\n";
    let access_log = json!({"access_log": [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_LOG,
            "path": log.to_str().unwrap(),
            "log_format": {"text_format_source": {"inline_string": format}},
        },
    }]});
    let dead = refused_port();
    let b = bootstrap(
        0,
        vec![
            listener("logged", 0, tcp_proxy("logged", "sink", access_log.clone())),
            listener("dead", 0, tcp_proxy("dead", "dead", access_log)),
        ],
        vec![
            cluster("sink", &[(sink.port, 1)], json!(null)),
            cluster("dead", &[(dead, 1)], json!(null)),
        ],
    );
    let proxy = Proxy::start("access_log", &b);
    let (l, dead_l) = (proxy.port("logged"), proxy.port("dead"));
    let sizes = [1usize, 1000, 123_456];
    for (i, n) in sizes.iter().enumerate() {
        let mut s = connect(l);
        send_pattern(&mut s, i as u64, *n).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let reply = read_line(&mut s).unwrap();
        assert!(reply.starts_with(&format!("{n} ")));
        assert_eq!(next_outcome(&mut s, SOON), Outcome::Eof);
    }
    let mut s = connect(dead_l);
    s.write_all(b"x").ok();
    assert!(matches!(
        next_outcome(&mut s, SOON),
        Outcome::Eof | Outcome::Reset
    ));

    let lines = wait_for(SOON, "4 access log lines", || {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= 4).then_some(lines)
    });
    eprintln!("access log:\n{}", lines.join("\n"));
    assert_eq!(
        lines.len(),
        4,
        "one line per connection:\n{}",
        lines.join("\n")
    );
    for n in sizes {
        // The sink replies "<n> <64 hex>\n".
        let tx = n.to_string().len() + 1 + 64 + 1;
        let want = format!(
            "conn 127.0.0.1:{} rx={n} tx={tx} flags=- cluster=sink",
            sink.port
        );
        assert!(
            lines.contains(&want),
            "no line {want:?} in:\n{}",
            lines.join("\n")
        );
    }
    // The failed connect is logged too, flagged UF and URX (its one attempt ran out), as Envoy.
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" tx=0 flags=UF,URX cluster=dead")),
        "no UF,URX line for the failed connection in:\n{}",
        lines.join("\n")
    );
}

/// As Envoy: the access log line of a failed connect names the host that was tried.
#[test]
fn failed_connect_logs_the_upstream_host_tried() {
    let dir = TempDir::new("access_log_uf");
    let log = dir.file("access.log");
    let access_log = json!({"access_log": [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_LOG,
            "path": log.to_str().unwrap(),
            "log_format": {"text_format_source": {"inline_string": "%UPSTREAM_HOST% %RESPONSE_FLAGS%\n"}},
        },
    }]});
    let dead = refused_port();
    let b = bootstrap(
        0,
        vec![listener("dead", 0, tcp_proxy("dead", "dead", access_log))],
        vec![cluster("dead", &[(dead, 1)], json!(null))],
    );
    let proxy = Proxy::start("access_log_uf", &b);
    let l = proxy.port("dead");
    let mut s = connect(l);
    assert_eq!(next_outcome(&mut s, SOON), Outcome::Eof);
    let line = wait_for(SOON, "the access log line", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().next().map(str::to_string)
    });
    assert_eq!(
        line,
        format!("127.0.0.1:{dead} UF,URX"),
        "%UPSTREAM_HOST% of a failed connect"
    );
}

/// Replaces every `port_value` of `v` by its entry in `ports` (each must have one).
fn remap_ports(v: &mut Value, ports: &HashMap<u64, u16>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match (key.as_str(), value.as_u64()) {
                    ("port_value", Some(port)) => {
                        let to = ports
                            .get(&port)
                            .unwrap_or_else(|| panic!("port {port} unmapped"));
                        *value = json!(to);
                    }
                    _ => remap_ports(value, ports),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| remap_ports(i, ports)),
        _ => {}
    }
}

/// examples/tcp-proxy-lb.yaml as shipped (its admin and listeners moved to port 0, its
/// backends to the test's): each of its listeners
/// logs one line per connection to stdout, starting with the listener's name.
#[test]
fn example_tcp_proxy_lb_logs_a_line_per_connection_on_each_listener() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tcp-proxy-lb.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut example = proto::json::parse_document(&text).unwrap();
    let backends: Vec<Upstream> = ["b1", "b2", "b3"]
        .into_iter()
        .map(Upstream::hello)
        .collect();
    let ports = HashMap::from([
        (9902, 0),
        (10001, 0),
        (10002, 0),
        (9001, backends[0].port),
        (9002, backends[1].port),
        (9003, backends[2].port),
    ]);
    remap_ports(&mut example, &ports);
    let proxy = Proxy::start("example_lb", &example);
    let (rr, split) = (proxy.port("weighted_rr"), proxy.port("canary_split"));
    for port in [rr, rr, rr, split, split, split] {
        let mut s = connect(port);
        let id = read_line(&mut s).unwrap();
        assert!(id.starts_with('b'), "no backend answered on {port}: {id:?}");
    }
    let lines = wait_for(SOON, "6 access log lines on stdout", || {
        let lines: Vec<String> = proxy.stdout().lines().map(str::to_string).collect();
        (lines.len() >= 6).then_some(lines)
    });
    for listener in ["weighted_rr", "canary_split"] {
        let logged = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{listener} [")))
            .count();
        assert_eq!(
            logged,
            3,
            "{listener}: one line per connection in:\n{}",
            lines.join("\n")
        );
    }
}

/// A listener's own `access_log` (Istio puts one on its virtual listeners, filtered to `NR`)
/// logs a connection no filter chain took, with the `NR` flag; a log filtered to other flags
/// stays empty. Envoy 1.40 and shardproxy write the same lines.
#[test]
fn listener_access_log_records_connections_no_chain_took() {
    // A fixed port: the compared log lines carry it (`%DOWNSTREAM_LOCAL_ADDRESS%`).
    let port = free_port();
    let dir = TempDir::new("listener_access_log");
    let (nr, uh) = (dir.file("nr.log"), dir.file("uh.log"));
    let log = |path: &std::path::Path, flag: &str| {
        json!({
            "name": "envoy.access_loggers.file",
            "filter": {"response_flag_filter": {"flags": [flag]}},
            "typed_config": {
                "@type": FILE_LOG,
                "path": path.to_str().unwrap(),
                "log_format": {"text_format_source": {"inline_string":
                    "flags=%RESPONSE_FLAGS% local=%DOWNSTREAM_LOCAL_ADDRESS% upstream=%UPSTREAM_HOST%\n"}},
            },
        })
    };
    let mut unmatched = listener("unmatched", port, tcp_proxy("unmatched", "sink", json!({})));
    unmatched["filter_chains"][0]["filter_chain_match"] = json!({"destination_port": 1});
    unmatched["access_log"] = json!([log(&nr, "NR"), log(&uh, "UH")]);
    let b = bootstrap(
        0,
        vec![unmatched],
        vec![cluster("sink", &[(refused_port(), 1)], json!(null))],
    );
    // Both proxies append to the same files (Envoy holds them open): each reads its own line.
    let length = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len() as usize);
    common::tls::on_both("listener-access-log", &b, |_| {
        let (nr_before, uh_before) = (length(&nr), length(&uh));
        let mut s = connect(port);
        s.write_all(b"x").ok();
        let outcome = next_outcome(&mut s, SOON);
        let line = wait_for(SOON, "the NR line", || {
            let text = std::fs::read_to_string(&nr).ok()?;
            Some(text[nr_before..].to_string()).filter(|t| t.ends_with('\n'))
        });
        let uh_lines = std::fs::read_to_string(&uh).unwrap_or_default()[uh_before..].to_string();
        (
            matches!(outcome, Outcome::Eof | Outcome::Reset),
            line,
            uh_lines,
        )
    });
}

/// A connection to an `original_dst` listener that no iptables rule redirected has no
/// original destination: an `ORIGINAL_DST` cluster has no host for it, as in Envoy — neither
/// tcp_proxy's (`UH`, closed) nor the router's (503 `UH`). It is not sent to the address it
/// reached, the listener itself, where it would loop.
#[test]
fn original_dst_without_a_redirect_has_no_host() {
    let dir = TempDir::new("original_dst_direct");
    let log = dir.file("access.log");
    let access_log = json!({"access_log": common::http_e2e::file_access_log(
        &log,
        Some("flags=%RESPONSE_FLAGS% upstream=%UPSTREAM_HOST% code=%RESPONSE_CODE%\n"),
    )});
    let original_dst = json!([{
        "name": "envoy.filters.listener.original_dst",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"},
    }]);
    let mut tcp = listener(
        "tcp",
        0,
        tcp_proxy("tcp", "passthrough", access_log.clone()),
    );
    tcp["listener_filters"] = original_dst.clone();
    let routes = common::http::catch_all_routes("passthrough", json!({}));
    let manager = common::http::hcm("http", routes, vec![], access_log);
    let mut http = common::http::http_listener("http", 0, manager);
    http["listener_filters"] = original_dst;
    let passthrough = json!({
        "name": "passthrough",
        "type": "ORIGINAL_DST",
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
    });
    let b = bootstrap(0, vec![tcp, http], vec![passthrough]);
    let length = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len() as usize);
    let next_line = |before: usize| {
        wait_for(SOON, "the access log line", || {
            let text = std::fs::read_to_string(&log).ok()?;
            Some(text[before..].to_string()).filter(|t| t.ends_with('\n'))
        })
    };
    common::tls::on_both("original-dst-direct", &b, |proxy| {
        let (tcp_port, http_port) = (proxy.port("tcp"), proxy.port("http"));
        let before = length(&log);
        let mut s = connect(tcp_port);
        s.write_all(b"hello").ok();
        let closed = matches!(next_outcome(&mut s, SOON), Outcome::Eof | Outcome::Reset);
        let tcp_line = next_line(before);
        let before = length(&log);
        let mut s = connect(http_port);
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let status = read_http_response(s).map(|r| r.status).ok();
        (closed, tcp_line, status, next_line(before))
    });
}

/// A log sink nobody reads (a FIFO without a reader: opening it for writing blocks) stalls
/// only the access-log flusher thread: connections keep being served, lines that do not fit
/// its queue are dropped and counted in `filesystem.write_dropped`, and once a reader comes
/// the queued lines reach it.
#[test]
fn a_stalled_log_sink_drops_lines_instead_of_stalling_traffic() {
    let echo = Upstream::echo();
    let dir = TempDir::new("access_log_fifo");
    let fifo = dir.file("access.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let access_log = json!({"access_log": [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_LOG,
            "path": fifo.to_str().unwrap(),
            "log_format": {"text_format_source": {"inline_string": "conn %BYTES_RECEIVED%\n"}},
        },
    }]});
    let b = bootstrap(
        0,
        vec![listener(
            "logged",
            0,
            tcp_proxy("logged", "echo", access_log),
        )],
        vec![cluster("echo", &[(echo.port, 1)], json!({}))],
    );
    let proxy = Proxy::start("access_log_fifo", &b);
    let port = proxy.port("logged");
    // Each connection closes in its own loop turn: one batch each, more than the queue holds.
    let connections = 1500;
    for i in 0..connections {
        let mut s = connect(port);
        s.write_all(b"ping").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let echoed = read_all(&mut s).unwrap();
        assert_eq!(
            echoed, b"ping",
            "connection {i} served while the log is stalled"
        );
    }
    let counted = |name: &str| proxy.stat(&format!("filesystem.{name}")).unwrap_or(0);
    let settled = poll_for(std::time::Duration::from_secs(10), || {
        let (buffered, dropped) = (counted("write_buffered"), counted("write_dropped"));
        (buffered + dropped == connections).then_some((buffered, dropped))
    });
    let (buffered, dropped) = settled.expect("every line handed over or dropped");
    assert!(
        dropped > 0 && buffered > 0,
        "buffered {buffered}, dropped {dropped}"
    );
    // A reader unblocks the flusher: the queued lines arrive.
    let mut reader = std::fs::File::open(&fifo).unwrap();
    let mut first = [0u8; 7];
    std::io::Read::read_exact(&mut reader, &mut first).unwrap();
    assert_eq!(&first, b"conn 4\n");
}
