//! Tests: file access log — one line per connection in the configured format, with the
//! right byte counts, upstream host and response flags.
mod common;

use std::{io::Write, net::Shutdown};

use common::*;
use serde_json::json;

#[test]
fn file_access_log_one_line_per_connection() {
    let (sink, _rx) = Upstream::sink();
    let (l, dead_l, admin) = (free_port(), free_port(), free_port());
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
        admin,
        vec![
            listener("logged", l, tcp_proxy("logged", "sink", access_log.clone())),
            listener("dead", dead_l, tcp_proxy("dead", "dead", access_log)),
        ],
        vec![
            cluster("sink", &[(sink.port, 1)], json!(null)),
            cluster("dead", &[(dead, 1)], json!(null)),
        ],
    );
    let _proxy = Proxy::start("access_log", &b);
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
    // The failed connect is logged too, flagged UF.
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" tx=0 flags=UF cluster=dead")),
        "no UF line for the failed connection in:\n{}",
        lines.join("\n")
    );
}

/// As Envoy: the access log line of a failed connect names the host that was tried.
#[test]
fn failed_connect_logs_the_upstream_host_tried() {
    let (l, admin) = (free_port(), free_port());
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
        admin,
        vec![listener("dead", l, tcp_proxy("dead", "dead", access_log))],
        vec![cluster("dead", &[(dead, 1)], json!(null))],
    );
    let _proxy = Proxy::start("access_log_uf", &b);
    let mut s = connect(l);
    assert_eq!(next_outcome(&mut s, SOON), Outcome::Eof);
    let line = wait_for(SOON, "the access log line", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().next().map(str::to_string)
    });
    assert_eq!(
        line,
        format!("127.0.0.1:{dead} UF"),
        "%UPSTREAM_HOST% of a failed connect"
    );
}
