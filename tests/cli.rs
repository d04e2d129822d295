//! Tests: command line — --config-yaml alone and merged over -c, -l debug, DNS cluster types
//! resolved by the agent, --concurrency 0 refused and more shards than CPUs warned about,
//! --drain-strategy limited to Envoy's values.
mod common;

use std::io::{Read, Write};

use common::*;
use serde_json::json;

fn echo_ok(port: u16) {
    let mut s = connect(port);
    s.write_all(b"ping").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ping", "echo through 127.0.0.1:{port}");
}

#[test]
fn config_yaml_alone() {
    let echo = Upstream::echo();
    let b = bootstrap(
        0,
        vec![listener(
            "inline",
            0,
            tcp_proxy("inline", "echo", json!(null)),
        )],
        vec![cluster("echo", &[(echo.port, 1)], json!(null))],
    );
    let inline = serde_json::to_string(&b).unwrap();
    let proxy = Proxy::builder_raw("config_yaml", None, 0)
        .args(&["--config-yaml", &inline])
        .start();
    echo_ok(proxy.port("inline"));
}

#[test]
fn config_yaml_merged_over_file() {
    let echo = Upstream::echo();
    let b = bootstrap(
        0,
        vec![listener(
            "from_file",
            0,
            tcp_proxy("f", "echo", json!(null)),
        )],
        vec![cluster("echo", &[(echo.port, 1)], json!(null))],
    );
    // Repeated fields append: the inline listener is added to the file's.
    let extra = json!({"static_resources": {"listeners": [listener("inline", 0, tcp_proxy("i", "echo", json!(null)))]}});
    let proxy = Proxy::builder("config_yaml_merge", &b)
        .args(&["--config-yaml", &serde_json::to_string(&extra).unwrap()])
        .start();
    echo_ok(proxy.port("from_file"));
    echo_ok(proxy.port("inline"));
    let listeners = proxy.get("/listeners").body;
    assert!(
        listeners.contains("from_file") && listeners.contains("inline"),
        "{listeners}"
    );
}

#[test]
fn log_level_debug_logs_more() {
    // A failed upstream connect is logged at debug level: seen with -l debug, not at info.
    let b = || {
        bootstrap(
            0,
            vec![listener("l", 0, tcp_proxy("l", "dead", json!(null)))],
            vec![cluster("dead", &[(refused_port(), 1)], json!(null))],
        )
    };
    let fail_once = |port: u16| {
        let mut s = connect(port);
        assert_eq!(next_outcome(&mut s, SOON), Outcome::Eof);
    };
    let debug = Proxy::builder("debug_log", &b())
        .args(&["-l", "debug"])
        .start();
    fail_once(debug.port("l"));
    wait_for(SOON, "DEBUG lines on stderr with -l debug", || {
        debug
            .stderr()
            .lines()
            .any(|l| l.contains("DEBUG"))
            .then_some(())
    });
    let info = Proxy::builder("info_log", &b())
        .args(&["-l", "info"])
        .start();
    fail_once(info.port("l"));
    info.wait_stat("cluster.dead.upstream_cx_connect_fail", ">= 1", |v| v >= 1);
    assert!(
        !info.stderr().contains("DEBUG"),
        "DEBUG lines at -l info:\n{}",
        info.stderr()
    );
    // An unknown level is refused at startup.
    let (status, _out, err) = run_to_end(
        &["-l", "loud", "--mode", "validate"],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(
        status.code(),
        Some(1),
        "unknown log level accepted; stderr:\n{err}"
    );
    assert!(
        err.contains("loud"),
        "the message names the bad level: {err}"
    );
}

#[test]
fn dns_clusters_resolve_localhost() {
    let (a, b) = (Upstream::hello("strict"), Upstream::hello("logical"));
    let dns = |name: &str, kind: &str, port: u16| {
        json!({
            "name": name,
            "type": kind,
            "connect_timeout": "2s",
            "dns_lookup_family": "V4_ONLY",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "localhost", "port_value": port}}}}
            ]}]},
        })
    };
    let bs = bootstrap(
        0,
        vec![
            listener("l1", 0, tcp_proxy("l1", "strict", json!(null))),
            listener("l2", 0, tcp_proxy("l2", "logical", json!(null))),
        ],
        vec![
            dns("strict", "STRICT_DNS", a.port),
            dns("logical", "LOGICAL_DNS", b.port),
        ],
    );
    let proxy = Proxy::start("dns", &bs);
    let (l1, l2) = (proxy.port("l1"), proxy.port("l2"));
    for (port, id) in [(l1, "strict"), (l2, "logical")] {
        let got = wait_for(SOON, &format!("{id} cluster to resolve localhost"), || {
            let mut s = try_connect(port).ok()?;
            let line = read_line(&mut s).ok()?;
            (!line.is_empty()).then_some(line)
        });
        assert_eq!(got, id);
    }
    let clusters = proxy.get("/clusters").body;
    assert!(
        clusters.contains(&format!("strict::127.0.0.1:{}", a.port)),
        "{clusters}"
    );
}

#[test]
fn concurrency_zero_is_refused() {
    let (status, _out, err) = run_to_end(
        &["--concurrency", "0", "--mode", "validate"],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(
        status.code(),
        Some(2),
        "--concurrency 0 accepted; stderr:\n{err}"
    );
    assert!(
        err.contains("--concurrency") && err.contains("1 or more"),
        "the message names the flag and what it takes: {err}"
    );
    let (status, out, err) = run_to_end(
        &["--concurrency", "1", "--mode", "validate"],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(0), "--concurrency 1: {out}{err}");
}

/// The first CPU this process may run on (`Cpus_allowed_list`, e.g. `0-1,4`).
fn first_allowed_cpu() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    let first = list.trim().split([',', '-']).next()?;
    (!first.is_empty()).then(|| first.to_string())
}

#[test]
fn more_shards_than_cpus_warns() {
    let (Some(cpu), true) = (first_allowed_cpu(), have_command("taskset")) else {
        skip(
            "more_shards_than_cpus_warns",
            "no taskset (util-linux) or no Cpus_allowed_list",
            Missing::Environment,
        );
        return;
    };
    let b = bootstrap(
        0,
        vec![listener("l", 0, tcp_proxy("l", "c", json!(null)))],
        vec![cluster("c", &[(refused_port(), 1)], json!(null))],
    );
    // Pinned to one CPU, two shards: the proxy runs, and says so.
    let proxy = Proxy::builder("more_shards", &b)
        .under(&["taskset", "-c", &cpu])
        .args(&["--concurrency", "2"])
        .start();
    let stderr = proxy.stderr();
    let warning = stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains("--concurrency 2"))
        .unwrap_or_else(|| panic!("no warning about 2 shards:\n{stderr}"));
    assert!(
        warning.contains("the 1 CPU"),
        "the warning names both numbers: {warning}"
    );
    assert_eq!(proxy.stat("server.concurrency"), Some(2));
}

#[test]
fn drain_strategy_takes_envoys_values_only() {
    for strategy in ["gradual", "immediate"] {
        let (status, out, err) = run_to_end(
            &["--drain-strategy", strategy, "--mode", "validate"],
            std::time::Duration::from_secs(30),
        );
        assert_eq!(
            status.code(),
            Some(0),
            "--drain-strategy {strategy}: {out}{err}"
        );
    }
    let (status, _out, err) = run_to_end(
        &["--drain-strategy", "fast", "--mode", "validate"],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(
        status.code(),
        Some(2),
        "--drain-strategy fast accepted; stderr:\n{err}"
    );
    assert!(
        err.contains("'fast'") && err.contains("gradual") && err.contains("immediate"),
        "the message names the bad value and the allowed ones: {err}"
    );
}

/// Every flag a pilot-agent of Istio 1.10 to current master may pass (some only when their
/// setting is on) is taken; the v2 bootstrap is refused.
#[test]
fn flags_istio_agents_pass_are_taken() {
    let (status, out, err) = run_to_end(
        &[
            "--mode",
            "validate",
            "--restart-epoch",
            "0",
            "--parent-shutdown-time-s",
            "60",
            "--bootstrap-version",
            "3",
            "--enable-core-dump",
            "--skip-deprecated-logs",
            "--file-flush-min-size-kb",
            "64",
            "--file-flush-interval-msec",
            "1000",
            "--local-address-ip-version",
            "v4",
            "--disable-hot-restart",
            "--allow-unknown-static-fields",
        ],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(0), "{out}{err}");
    let (status, _out, err) = run_to_end(
        &["--mode", "validate", "--bootstrap-version", "2"],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(
        status.code(),
        Some(2),
        "--bootstrap-version 2 accepted: {err}"
    );
    assert!(err.contains("version 3"), "{err}");
}
