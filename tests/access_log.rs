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
    let want = format!("conn 127.0.0.1:{dead} rx=1 tx=0 flags=UF cluster=dead");
    let alt = format!("conn 127.0.0.1:{dead} rx=0 tx=0 flags=UF cluster=dead");
    let alt2 = "conn - rx=0 tx=0 flags=UF cluster=dead".to_string();
    let alt3 = "conn - rx=1 tx=0 flags=UF cluster=dead".to_string();
    assert!(
        [want.clone(), alt, alt2, alt3]
            .iter()
            .any(|w| lines.contains(w)),
        "no line for the failed connection like {want:?} in:\n{}",
        lines.join("\n")
    );
}
