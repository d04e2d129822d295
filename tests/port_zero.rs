//! Tests: port 0 — an admin and listeners configured on port 0 get their port from the kernel,
//! as in Envoy: the admin's is written to --admin-address-path, each listener's is shown by
//! /listeners and is one port that every shard listens on; an update of the listener keeps it.
mod common;

use std::{
    fs,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use common::{tls::on_both, *};
use serde_json::{json, Value};

/// Whether `ping` comes back through the echo behind `address`.
fn echoes(address: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&address, Duration::from_secs(5)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    s.write_all(b"ping").is_ok()
        && s.shutdown(Shutdown::Write).is_ok()
        && s.read_to_end(&mut got).is_ok()
        && got == b"ping"
}

/// Listening sockets on `port` (`ss`): one per shard or worker sharing it through SO_REUSEPORT.
fn listening_sockets(port: u16) -> usize {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn two_echo_listeners(echo: u16) -> Value {
    bootstrap(
        0,
        vec![
            listener("a", 0, tcp_proxy("a", "echo", json!(null))),
            listener("b", 0, tcp_proxy("b", "echo", json!(null))),
        ],
        vec![cluster("echo", &[(echo, 1)], json!(null))],
    )
}

#[test]
fn listeners_and_admin_on_port_zero_as_in_envoy() {
    let echo = Upstream::echo();
    on_both("port_zero", &two_echo_listeners(echo.port), |proxy| {
        assert_ne!(proxy.admin.port(), 0, "admin port read back");
        let (a, b) = (proxy.listener_address("a"), proxy.listener_address("b"));
        let answered = (0..40).filter(|_| echoes(a) && echoes(b)).count();
        (
            a.ip().to_string(),
            a.port() != 0 && b.port() != 0,
            a != b,
            // Two shards (two workers): both listen on the one port.
            listening_sockets(a.port()),
            answered,
        )
    });
}

#[test]
fn an_updated_listener_keeps_its_port() {
    let echo = Upstream::echo();
    let mut b = two_echo_listeners(echo.port);
    let proxy = Proxy::start("port_zero_update", &b);
    let before = proxy.listener_address("a");
    assert!(echoes(before));
    // A new stat prefix rebuilds listener `a` (same name, same configured address).
    b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["stat_prefix"] = json!("a2");
    fs::write(&proxy.config_path, to_yaml(&b)).unwrap();
    proxy.wait_stat("listener_manager.listener_modified", ">= 1", |v| v >= 1);
    assert_eq!(proxy.listener_address("a"), before);
    wait_for(Duration::from_secs(10), "the new chain serving", || {
        (echoes(before) && proxy.stats().get("tcp.a2.downstream_cx_total") >= Some(&1))
            .then_some(())
    });
    assert_eq!(listening_sockets(before.port()), 2);
}
