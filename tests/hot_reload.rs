//! Tests: hot reload of the watched bootstrap — added listener/cluster served live, open
//! connections kept, invalid rewrites rejected (counted, logged) while the old config serves,
//! an added listener on an address another process holds refused (not shared).
mod common;

use std::{io::Write, net::TcpStream};

use common::*;
use serde_json::json;

fn ping(s: &mut TcpStream, msg: &str) {
    s.write_all(msg.as_bytes()).unwrap();
    let mut got = vec![0u8; msg.len()];
    std::io::Read::read_exact(s, &mut got)
        .unwrap_or_else(|e| panic!("echo of {msg:?} on the open connection: {e}"));
    assert_eq!(got, msg.as_bytes());
}

/// Waits until a new connection to `port` is answered with `id` (hello upstream).
fn wait_answer(port: u16, id: &str) {
    wait_for(SOON, &format!("127.0.0.1:{port} to answer {id:?}"), || {
        let mut s = try_connect(port).ok()?;
        let got = read_line(&mut s).ok()?;
        (got == id).then_some(())
    });
}

#[test]
fn reload_adds_listener_and_cluster_keeps_connections_rejects_invalid() {
    let echo = Upstream::echo();
    let added = Upstream::hello("added");
    let v1 = bootstrap(
        0,
        vec![listener("l1", 0, tcp_proxy("l1", "echo", json!(null)))],
        vec![cluster("echo", &[(echo.port, 1)], json!(null))],
    );
    let proxy = Proxy::start("reload", &v1);
    let l1 = proxy.port("l1");
    let mut open = connect(l1);
    ping(&mut open, "before reload");

    // v2: a second listener and a second cluster.
    let v2 = bootstrap(
        0,
        vec![
            listener("l1", 0, tcp_proxy("l1", "echo", json!(null))),
            listener("l2", 0, tcp_proxy("l2", "added", json!(null))),
        ],
        vec![
            cluster("echo", &[(echo.port, 1)], json!(null)),
            cluster("added", &[(added.port, 1)], json!(null)),
        ],
    );
    proxy.rewrite(&to_yaml(&v2));
    let l2 = proxy.wait_port("l2");
    wait_answer(l2, "added");
    ping(&mut open, "after reload");
    let mut fresh = connect(l1);
    ping(&mut fresh, "new connection on l1");
    drop(fresh);
    proxy.wait_stat("server.bootstrap_reload.update_success", ">= 1", |v| v >= 1);
    let listeners = proxy.get("/listeners").body;
    assert!(
        listeners.contains("l2"),
        "/listeners after reload lacks l2: {listeners}"
    );
    let clusters = proxy.get("/clusters").body;
    assert!(
        clusters.contains("added::"),
        "/clusters after reload lacks the added cluster: {clusters}"
    );

    // v3: an unknown field — rejected, logged, counted; the running config keeps serving.
    let mut bad = v2.clone();
    bad["static_resources"]["listeners"][1]["bogus_reload_field"] = json!(1);
    proxy.rewrite(&to_yaml(&bad));
    proxy.wait_stat("server.bootstrap_reload.update_rejected", ">= 1", |v| {
        v >= 1
    });
    wait_for(
        SOON,
        "the rejected reload to be logged naming the field",
        || proxy.stderr().contains("bogus_reload_field").then_some(()),
    );
    ping(&mut open, "after rejected reload");
    wait_answer(l2, "added");
    let mut fresh = connect(l1);
    ping(&mut fresh, "l1 after rejected reload");
    drop(fresh);

    // v4: not even YAML — rejected too.
    proxy.rewrite("static_resources: [unclosed\n  - {");
    proxy.wait_stat("server.bootstrap_reload.update_rejected", ">= 2", |v| {
        v >= 2
    });
    ping(&mut open, "after unparsable reload");
    wait_answer(l2, "added");
    assert!(
        proxy.try_exit_is_running(),
        "proxy exited after a bad reload:\n{}",
        proxy.stderr()
    );
}

#[test]
fn reload_changes_endpoints_for_new_connections_only() {
    let (old, new) = (Upstream::hello("old"), Upstream::hello("new"));
    let with = |port: u16| {
        bootstrap(
            0,
            vec![listener("l", 0, tcp_proxy("l", "c", json!(null)))],
            vec![cluster("c", &[(port, 1)], json!(null))],
        )
    };
    let proxy = Proxy::start("reload_eps", &with(old.port));
    let l = proxy.port("l");
    let mut held = connect(l);
    assert_eq!(read_line(&mut held).unwrap(), "old");
    proxy.rewrite(&to_yaml(&with(new.port)));
    wait_answer(l, "new");
    // The connection opened before the reload is still up, on the old upstream.
    held.write_all(b"still here").unwrap();
    assert_eq!(
        next_outcome(&mut held, std::time::Duration::from_millis(500)),
        Outcome::Timeout
    );
    proxy.wait_stat(
        "cluster.c.upstream_cx_active",
        ">= 1 (the held connection)",
        |v| v >= 1,
    );
}

#[test]
fn reload_removing_listener_stops_accepting_keeps_open_connection() {
    let echo = Upstream::echo();
    let both = bootstrap(
        0,
        vec![
            listener("l1", 0, tcp_proxy("l1", "echo", json!(null))),
            listener("l2", 0, tcp_proxy("l2", "echo", json!(null))),
        ],
        vec![cluster("echo", &[(echo.port, 1)], json!(null))],
    );
    let proxy = Proxy::start("reload_remove", &both);
    let (l1, l2) = (proxy.port("l1"), proxy.port("l2"));
    let mut open = connect(l2);
    ping(&mut open, "on l2");
    let only_l1 = bootstrap(
        0,
        vec![listener("l1", 0, tcp_proxy("l1", "echo", json!(null)))],
        vec![cluster("echo", &[(echo.port, 1)], json!(null))],
    );
    proxy.rewrite(&to_yaml(&only_l1));
    wait_for(
        SOON,
        "the removed listener l2 to refuse connections",
        || try_connect(l2).err(),
    );
    ping(&mut open, "l2 connection after its listener was removed");
    let mut fresh = connect(l1);
    ping(&mut fresh, "l1 still serves");
}

trait Running {
    fn try_exit_is_running(&self) -> bool;
}

impl Running for Proxy {
    fn try_exit_is_running(&self) -> bool {
        http_get(self.admin, "/ready").is_ok_and(|r| r.status == 200)
    }
}

/// A bulk transfer that spans a reload completes with every byte intact.
#[test]
fn reload_during_bulk_transfer_loses_nothing() {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let echo = Upstream::echo();
    let added = Upstream::hello("added");
    let v1 = bootstrap(
        0,
        vec![listener("l1", 0, tcp_proxy("l1", "echo", json!(null)))],
        vec![cluster("echo", &[(echo.port, 1)], json!(null))],
    );
    let proxy = Proxy::start("reload_bulk", &v1);
    let l1 = proxy.port("l1");
    let mut s = connect(l1);
    let mut w = s.try_clone().unwrap();
    let reloaded = Arc::new(AtomicBool::new(false));
    let done = reloaded.clone();
    // Keep sending until the reload has been applied, then 2 MB more.
    let writer = std::thread::spawn(move || {
        use sha2::{Digest, Sha256};
        let mut p = Pattern::new(5);
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 16 << 10];
        let (mut total, mut after) = (0u64, 0u64);
        while after < 2_000_000 {
            p.fill(&mut buf);
            w.write_all(&buf).unwrap();
            h.update(&buf);
            total += buf.len() as u64;
            if done.load(Ordering::SeqCst) {
                after += buf.len() as u64;
            } else {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            assert!(total < 2_000_000_000, "reload never applied");
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
        (total, hex(&h.finalize()))
    });
    let v2 = bootstrap(
        0,
        vec![
            listener("l1", 0, tcp_proxy("l1", "echo", json!(null))),
            listener("l2", 0, tcp_proxy("l2", "added", json!(null))),
        ],
        vec![
            cluster("echo", &[(echo.port, 1)], json!(null)),
            cluster("added", &[(added.port, 1)], json!(null)),
        ],
    );
    let reader = std::thread::spawn(move || hash_to_eof(&mut s).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(200));
    proxy.rewrite(&to_yaml(&v2));
    let l2 = proxy.wait_port("l2");
    wait_answer(l2, "added");
    reloaded.store(true, Ordering::SeqCst);
    let sent = writer.join().unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got, sent, "echoed bytes across the reload");
}

/// Changing a listener's cluster: new connections go to the new cluster, the connection
/// accepted under the old config keeps its upstream; /config_dump shows the new config.
#[test]
fn reload_changing_listener_cluster_pins_old_connections() {
    let (a, b) = (Upstream::hello("a"), Upstream::echo());
    let to = |cluster: &str| {
        bootstrap(
            0,
            vec![listener("l", 0, tcp_proxy("l", cluster, json!(null)))],
            vec![cluster_cfg("ca", a.port), cluster_cfg("cb", b.port)],
        )
    };
    let proxy = Proxy::start("reload_switch", &to("ca"));
    let l = proxy.port("l");
    let mut old = connect(l);
    assert_eq!(read_line(&mut old).unwrap(), "a");
    proxy.rewrite(&to_yaml(&to("cb")));
    // New connections reach the echo (cb).
    wait_for(SOON, "new connections to reach cluster cb", || {
        let mut s = try_connect(l).ok()?;
        s.write_all(b"hi\n").ok()?;
        (read_line(&mut s).ok()? == "hi").then_some(())
    });
    // The old connection is still open to `a` (hello holds it until we close).
    assert_eq!(
        next_outcome(&mut old, std::time::Duration::from_millis(300)),
        Outcome::Timeout
    );
    let dump = proxy.get("/config_dump").body;
    assert!(dump.contains("\"cb\""), "config_dump after reload: {dump}");
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        v["configs"][0]["bootstrap"]["static_resources"]["listeners"][0]["filter_chains"][0]
            ["filters"][0]["typed_config"]["cluster"],
        "cb",
        "BootstrapConfigDump shows the reloaded bootstrap"
    );
}

fn cluster_cfg(name: &str, port: u16) -> serde_json::Value {
    cluster(name, &[(port, 1)], json!(null))
}

/// A listener added by a reload on an address another process holds (opened as a shard opens
/// its own, with SO_REUSEPORT, so the proxy's shards could join it) is refused, not shared;
/// the next reload after that address is free binds it.
#[test]
fn reload_refuses_a_listener_address_another_process_holds() {
    use socket2::{Domain, Protocol, Socket, Type};
    let echo = Upstream::echo();
    let other = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    other.set_reuse_address(true).unwrap();
    other.set_reuse_port(true).unwrap();
    other.bind(&addr(0).into()).unwrap();
    other.listen(64).unwrap();
    let other: std::net::TcpListener = other.into();
    let taken = other.local_addr().unwrap().port();
    let with = |ports: &[(&str, u16)]| {
        bootstrap(
            0,
            ports
                .iter()
                .map(|(name, port)| listener(name, *port, tcp_proxy(name, "echo", json!(null))))
                .collect(),
            vec![cluster("echo", &[(echo.port, 1)], json!(null))],
        )
    };
    let proxy = Proxy::start("reload_taken", &with(&[("l1", 0)]));
    let l1 = proxy.port("l1");
    proxy.rewrite(&to_yaml(&with(&[("l1", 0), ("clash", taken)])));
    proxy.wait_stat("listener_manager.listener_create_failure", ">= 1", |v| {
        v >= 1
    });
    let logged = wait_for(SOON, "the refusal to be logged", || {
        proxy
            .stderr()
            .lines()
            .find(|l| l.contains("listener refused") && l.contains("clash"))
            .map(str::to_string)
    });
    assert!(
        logged.contains(&format!("127.0.0.1:{taken}")) && logged.contains("in use"),
        "{logged}"
    );
    // Every connection to the taken address reaches the other process's socket.
    let clients: Vec<_> = (0..8).map(|_| connect(taken)).collect();
    other.set_nonblocking(true).unwrap();
    for i in 0..clients.len() {
        wait_for(SOON, &format!("connection {i} at the other socket"), || {
            other.accept().ok()
        });
    }
    let mut s = connect(l1);
    ping(&mut s, "l1 still served");
    // Freed, the address binds at the next reload (the refused listener was not kept).
    drop(clients);
    drop(other);
    proxy.rewrite(&to_yaml(&with(&[("l1", 0), ("clash", taken)])));
    wait_for(
        SOON,
        "the clash listener to serve once its port is free",
        || {
            let mut s = try_connect(taken).ok()?;
            s.write_all(b"x").ok()?;
            let mut got = [0u8; 1];
            std::io::Read::read_exact(&mut s, &mut got).ok()?;
            (got == *b"x").then_some(())
        },
    );
}

/// A connection from 127.0.0.`last` (loopback takes any 127/8 source).
fn connect_from(last: u8, port: u16) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source = std::net::SocketAddr::from(([127, 0, 0, last], 0));
    socket.bind(&source.into()).unwrap();
    socket.connect(&addr(port).into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s
}

/// Envoy's filter-chain-only update: when only some filter chains of a listener change, the
/// connections on the chains left as they were keep running; those on the changed chain drain
/// (here: closed at the end of a 1 s drain time).
#[test]
fn reload_changing_one_filter_chain_drains_only_its_connections() {
    let (a, b) = (Upstream::echo(), Upstream::echo());
    let with_b_prefix = |b_prefix: &str| {
        let filter = |prefix: &str, cluster: &str| json!({"name": "tcp", "typed_config": tcp_proxy(prefix, cluster, json!(null))});
        let chains = json!([
            {"filters": [filter("a", "ca")]},
            {
                "filter_chain_match": {"source_prefix_ranges": [{"address_prefix": "127.0.0.2", "prefix_len": 32}]},
                "filters": [filter(b_prefix, "cb")]
            },
        ]);
        let mut l = listener("l", 0, tcp_proxy("unused", "ca", json!(null)));
        l["filter_chains"] = chains;
        bootstrap(
            0,
            vec![l],
            vec![cluster_cfg("ca", a.port), cluster_cfg("cb", b.port)],
        )
    };
    let proxy = Proxy::builder("reload_chain_only", &with_b_prefix("b1"))
        .args(&["--drain-time-s", "1"])
        .start();
    let l = proxy.port("l");
    let (mut on_a, mut on_b) = (connect_from(1, l), connect_from(2, l));
    ping(&mut on_a, "chain a");
    ping(&mut on_b, "chain b");
    assert_eq!(proxy.stat("tcp.b1.downstream_cx_total"), Some(1));

    proxy.rewrite(&to_yaml(&with_b_prefix("b2")));
    proxy.wait_stat("server.bootstrap_reload.update_success", ">= 1", |v| v >= 1);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    ping(&mut on_a, "chain a, after the drain time");
    assert!(
        matches!(
            next_outcome(&mut on_b, std::time::Duration::from_secs(2)),
            Outcome::Eof | Outcome::Reset
        ),
        "the changed chain's connection is closed at the end of the drain time"
    );
    let mut fresh = connect_from(2, l);
    ping(&mut fresh, "new connection on the new chain b");
    assert_eq!(proxy.stat("tcp.b2.downstream_cx_total"), Some(1));
}
