//! Tests: the differential test against Envoy — one bootstrap exercising issue 3's route
//! features (tests/peers/differential.py) run by Envoy, by a second Envoy (the twin: proves
//! the comparison does not flap) and by shardproxy, in front of the same echo upstreams; the
//! same corpus of requests (route cases and raw malformed inputs) goes to each. Envoy's answers
//! must meet every case's expectations; the others' must equal Envoy's after normalisation, or
//! differ only as a named exception listed in docs/http-differences.md.
mod common;

use std::{fs, path::Path, time::Duration};

use common::{http::*, *};

#[test]
fn differential_against_envoy() {
    if envoy_bin().is_none() {
        skip("differential_against_envoy", NO_ENVOY, Missing::Peer);
        return;
    }
    let upstreams = EchoUpstreams::start(&["alpha", "beta", "gamma"], None);
    let dead = refused_port();
    let targets = [
        ("envoy", Kind::Envoy),
        ("envoy-twin", Kind::Envoy),
        ("shardproxy", Kind::Shardproxy),
    ];
    let mut running = Vec::new();
    let mut args = vec!["run".to_string()];
    for (name, kind) in targets {
        let mut bootstrap_args = vec![
            "bootstrap".to_string(),
            "--listen-port=0".to_string(),
            "--admin-port=0".to_string(),
            format!("--dead-port={dead}"),
        ];
        for u in ["alpha", "beta", "gamma"] {
            bootstrap_args.push(format!("--upstream={u}={}", upstreams.port(u)));
        }
        let bootstrap = peer_json("differential.py", &bootstrap_args);
        let proxy = HttpProxy::start(kind, name, &bootstrap);
        args.push(format!("--target={name}={}", proxy.port("differential")));
        running.push(proxy);
    }
    let run = run_peer("differential.py", &args, Duration::from_secs(180));
    eprintln!("{}{}", run.stdout, run.stderr);
    assert!(
        run.status.success(),
        "the proxies disagree, or Envoy misses a case's expectation (FAIL lines above)"
    );
    let (_, total) = summary_counts(&run.stdout, "cases agree");
    assert!(
        total >= 100,
        "the differential corpus has only {total} cases"
    );
}

/// docs/http-differences.md carries the generated exception list and both corpora's tables;
/// `UPDATE_DOCS=1 cargo test --test http_differential docs` rewrites them. (No proxy needed.)
#[test]
fn docs_carry_the_generated_corpus_tables() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/http-differences.md");
    let mut doc = fs::read_to_string(&path).unwrap();
    let update = std::env::var_os("UPDATE_DOCS").is_some();
    let mut stale = Vec::new();
    for (script, cmd) in [
        ("differential.py", "exceptions"),
        ("smuggling.py", "table"),
        ("differential.py", "table"),
    ] {
        let run = run_peer(script, &[cmd.to_string()], Duration::from_secs(30));
        assert!(run.status.success(), "{script} {cmd}: {}", run.stderr);
        let begin = format!("<!-- BEGIN {script} {cmd} -->\n");
        let end = format!("<!-- END {script} {cmd} -->");
        let (head, rest) = doc
            .split_once(&begin)
            .unwrap_or_else(|| panic!("{} lacks {begin:?}", path.display()));
        let (current, tail) = rest
            .split_once(&end)
            .unwrap_or_else(|| panic!("{} lacks {end:?}", path.display()));
        if current != run.stdout {
            stale.push(format!("{script} {cmd}"));
            doc = format!("{head}{begin}{}{end}{tail}", run.stdout);
        }
    }
    if update {
        fs::write(&path, doc).unwrap();
    } else {
        assert!(
            stale.is_empty(),
            "{} is out of date for {stale:?}: UPDATE_DOCS=1 cargo test --test http_differential docs",
            path.display()
        );
    }
}
