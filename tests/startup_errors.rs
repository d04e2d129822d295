//! Tests: startup errors — a taken listener or admin port (also by a second shardproxy, which
//! SO_REUSEPORT would otherwise let share the listener), or a bad config, exits 1 with one
//! clear message on stderr that names what failed; a bad config is found before any shard
//! starts.
mod common;

use std::{
    io::{Read, Write},
    net::TcpListener,
    time::Duration,
};

use common::*;
use serde_json::json;

fn run_config(tag: &str, b: &serde_json::Value) -> (i32, String) {
    let dir = TempDir::new(tag);
    let path = dir.file("bootstrap.yaml");
    std::fs::write(&path, to_yaml(b)).unwrap();
    let (status, _stdout, stderr) = run_to_end(
        &["-c", path.to_str().unwrap(), "--concurrency", "2"],
        Duration::from_secs(60),
    );
    let code = status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {status}; stderr:\n{stderr}"));
    (code, stderr)
}

#[test]
fn listener_port_in_use() {
    // A plain std listener: no SO_REUSEPORT, so the proxy's bind must fail.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let b = bootstrap(
        0,
        vec![listener(
            "busy_listener",
            port,
            tcp_proxy("busy", "c", json!(null)),
        )],
        vec![cluster("c", &[(refused_port(), 1)], json!(null))],
    );
    let (code, stderr) = run_config("port_in_use", &b);
    assert_eq!(
        code, 1,
        "exit code with the listener port taken; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("busy_listener"),
        "stderr does not name the listener:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "stderr does not name the address:\n{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("in use"),
        "stderr does not say the address is in use:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "a panic is not a clear message:\n{stderr}"
    );
    drop(taken);
}

#[test]
fn admin_port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let b = bootstrap(
        port,
        vec![listener("l", 0, tcp_proxy("l", "c", json!(null)))],
        vec![cluster("c", &[(refused_port(), 1)], json!(null))],
    );
    let (code, stderr) = run_config("admin_in_use", &b);
    assert_eq!(
        code, 1,
        "exit code with the admin port taken; stderr:\n{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("admin"),
        "stderr does not say admin:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "stderr does not name the address:\n{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("in use"),
        "stderr does not say in use:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "a panic is not a clear message:\n{stderr}"
    );
    drop(taken);
}

#[test]
fn bad_config_at_startup() {
    let mut b = bootstrap(
        0,
        vec![listener("l", 0, tcp_proxy("l", "c", json!(null)))],
        vec![cluster("c", &[(refused_port(), 1)], json!(null))],
    );
    b["static_resources"]["clusters"][0]["not_a_real_field"] = json!(3);
    let (code, stderr) = run_config("bad_config", &b);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    assert_eq!(
        stderr.matches("not_a_real_field").count(),
        1,
        "the field is named exactly once:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "one message:\n{stderr}"
    );
    assert_nothing_started(&stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The config is read and checked before any io_uring ring or shard exists.
fn assert_nothing_started(stderr: &str) {
    assert!(
        !stderr.contains("shards started") && !stderr.contains("ring created"),
        "shards started before the config was checked:\n{stderr}"
    );
}

#[test]
fn missing_config_file() {
    let (status, _out, stderr) = run_to_end(
        &["-c", "/nonexistent/shardproxy-e2e.yaml"],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert_eq!(
        stderr.matches("/nonexistent/shardproxy-e2e.yaml").count(),
        1,
        "the file is named exactly once:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file").count(),
        1,
        "the reason is given once:\n{stderr}"
    );
    assert_nothing_started(&stderr);
}

fn echo_ok(port: u16) {
    let mut s = connect(port);
    s.write_all(b"ping").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ping", "echo through 127.0.0.1:{port}");
}

#[test]
fn second_proxy_on_the_same_listener_address_is_refused() {
    let echo = Upstream::echo();
    let config = |port: u16, name: &str| {
        bootstrap(
            0,
            vec![listener(name, port, tcp_proxy(name, "echo", json!(null)))],
            vec![cluster("echo", &[(echo.port, 1)], json!(null))],
        )
    };
    let first = Proxy::start("first_proxy", &config(0, "first_listener"));
    let port = first.port("first_listener");
    echo_ok(port);
    let (code, stderr) = run_config("second_proxy", &config(port, "second_listener"));
    assert_eq!(
        code, 1,
        "a second proxy on a listener address in use; stderr:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "one message:\n{stderr}"
    );
    for needle in ["second_listener", &format!("127.0.0.1:{port}"), "in use"] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    // The first keeps serving, every connection (nothing of the second is left bound).
    for _ in 0..8 {
        echo_ok(port);
    }
    first.wait_stat("tcp.first_listener.downstream_cx_total", "9", |v| v == 9);
}

#[test]
fn second_proxy_on_the_same_admin_address_is_refused() {
    let config = |admin: u16| {
        bootstrap(
            admin,
            vec![listener("l", 0, tcp_proxy("l", "c", json!(null)))],
            vec![cluster("c", &[(refused_port(), 1)], json!(null))],
        )
    };
    let first = Proxy::start("first_admin", &config(0));
    let admin = first.admin.port();
    let (code, stderr) = run_config("second_admin", &config(admin));
    assert_eq!(
        code, 1,
        "a second proxy on an admin address in use; stderr:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "one message:\n{stderr}"
    );
    for needle in ["admin", &format!("127.0.0.1:{admin}"), "in use"] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    assert_eq!(
        first.get("/ready").status,
        200,
        "the first proxy stops answering /ready"
    );
}
