//! Tests: request smuggling and malformed HTTP/1.1 on raw sockets — the corpus in
//! tests/peers/smuggling.py, each case's statuses and connection fate (answered probe, close,
//! stall) checked per proxy: Envoy against its recorded behaviour, shardproxy against the
//! expected one (the two differ where docs/http-differences.md says why). No smuggled request
//! may reach the upstream, whichever the proxy.
mod common;

use std::time::Duration;

use common::{http::*, *};

#[test]
fn smuggling_and_malformed_corpus() {
    let kinds = proxies();
    if kinds.is_empty() {
        skip(
            "smuggling_and_malformed_corpus",
            "no proxy serves HTTP here (see above)",
            Missing::Peer,
        );
        return;
    }
    for kind in kinds {
        let dir = TempDir::new("smuggling-log");
        let log = dir.file("upstream.jsonl");
        let upstream = EchoUpstreams::start(&["echo"], Some(&log));
        let bootstrap = peer_json(
            "smuggling.py",
            &[
                "bootstrap".into(),
                "--listen-port=0".into(),
                "--admin-port=0".into(),
                format!("--upstream={}", upstream.port("echo")),
            ],
        );
        let proxy = HttpProxy::start(kind, "smuggling", &bootstrap);
        let port = proxy.port("smuggling");
        let run = run_peer(
            "smuggling.py",
            &[
                "run".into(),
                format!("--port={port}"),
                format!("--proxy={}", kind.name()),
                format!("--log={}", log.display()),
            ],
            Duration::from_secs(120),
        );
        eprintln!("---- {} ----\n{}{}", kind.name(), run.stdout, run.stderr);
        assert!(
            run.status.success(),
            "{}: smuggling corpus outcomes differ from the expected ones (FAIL lines above)",
            kind.name()
        );
        let (_, total) = summary_counts(&run.stdout, "cases as expected");
        assert!(total >= 50, "the smuggling corpus has only {total} cases");
    }
}
