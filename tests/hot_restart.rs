//! Tests: hot restart (`--restart-epoch`, `--base-id`) — a new process takes the listening
//! sockets (listeners and admin) over from the running one, which drains and exits once the
//! new one is live; a client opening connections all along is never refused.
mod common;

use std::{
    io::Read,
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use common::*;
use serde_json::json;

/// Opens connections to `port` one after another until `stop`; counts those the upstream
/// answered and those that failed (refused, reset, or no answer).
fn hammer(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<(usize, Vec<String>)> {
    thread::spawn(move || {
        let (mut served, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            let outcome = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut line = [0u8; 3];
                s.read_exact(&mut line)?;
                Ok(line)
            });
            match outcome {
                Ok(line) if &line == b"up\n" => served += 1,
                Ok(line) => failures.push(format!("answer {line:?}")),
                Err(e) => failures.push(e.to_string()),
            }
        }
        (served, failures)
    })
}

#[test]
fn a_new_epoch_takes_the_sockets_over_and_no_connection_is_refused() {
    let upstream = Upstream::hello("up");
    let (admin, port) = (free_port(), free_port());
    let b = bootstrap(
        admin,
        vec![listener("l", port, tcp_proxy("l", "up", json!(null)))],
        vec![cluster("up", &[(upstream.port, 1)], json!({}))],
    );
    // A base id of its own: other tests' proxies use the default one.
    let base_id = (std::process::id() % 100_000 + 1000).to_string();
    let common = ["--base-id", base_id.as_str(), "--drain-time-s", "1"];
    let mut first = Proxy::builder("hot_restart_0", &b)
        .args(&[&common[..], &["--restart-epoch", "0"]].concat())
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(port, stop.clone());
    thread::sleep(Duration::from_millis(300));
    let second = Proxy::builder("hot_restart_1", &b)
        .args(&[&common[..], &["--restart-epoch", "1"]].concat())
        .start();
    // The first process drains and exits once the second is live.
    let exit = first.wait_exit(Duration::from_secs(20));
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (served, failures) = client.join().unwrap();
    assert!(
        exit.is_some_and(|s| s.success()),
        "the first process did not exit cleanly after the hand-over: {exit:?}\n{}",
        first.stderr()
    );
    assert!(
        failures.is_empty(),
        "{} connection(s) failed during the hand-over, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(served > 20, "only {served} connections served");
    let log = second.stderr();
    assert!(
        log.contains("took") && log.contains("listening socket(s) over from epoch 0"),
        "{log}"
    );
    // The second process serves alone now, its admin on the taken-over socket.
    let stats = http_get(second.admin, "/stats").expect("admin after the hand-over");
    assert_eq!(stats.status, 200);
    let mut s = connect(port);
    assert_eq!(read_line(&mut s).unwrap(), "up");
    assert!(first
        .stderr()
        .contains("the next process is live; draining"));
}

#[test]
fn a_restart_epoch_without_a_previous_process_fails_clearly() {
    let (admin, port) = (free_port(), free_port());
    let b = bootstrap(
        admin,
        vec![listener("l", port, tcp_proxy("l", "up", json!(null)))],
        vec![cluster("up", &[(1, 1)], json!({}))],
    );
    let mut proxy = Proxy::builder("hot_restart_orphan", &b)
        .args(&["--base-id", "4242", "--restart-epoch", "3"])
        .no_wait()
        .start();
    let status = proxy.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let err = proxy.stderr();
    assert!(
        err.contains("cannot reach restart epoch 2 (base id 4242)"),
        "{err}"
    );
}
