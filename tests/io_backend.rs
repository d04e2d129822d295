//! Tests: the shard runtime's backends. Under a seccomp filter that refuses io_uring as
//! Docker's and containerd's default profiles do (tests/peers/no_io_uring.py), shardproxy
//! picks epoll by itself, says so once, and proxies; asked for io_uring there, it exits 1 with
//! a message that names the way out. `--io-backend epoll` runs epoll where io_uring works
//! (tests/run.sh also runs the whole suite a second time with SHARDPROXY_IO_BACKEND=epoll).
mod common;

use std::{io::Write, time::Duration};

use common::{http::*, *};
use serde_json::json;

/// A tcp_proxy listener `echo` (port 0) to a TCP echo: (the bootstrap, the echo).
fn echo_bootstrap() -> (serde_json::Value, Upstream) {
    let echo = Upstream::echo();
    let b = bootstrap(
        0,
        vec![listener("echo", 0, tcp_proxy("echo", "echo", json!(null)))],
        vec![cluster("echo", &[(echo.port, 1)], json!({}))],
    );
    (b, echo)
}

fn echoes(port: u16) -> bool {
    let mut s = connect(port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"through").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    read_all(&mut s).is_ok_and(|got| got == b"through")
}

/// The command that execs its arguments with io_uring refused.
fn without_io_uring() -> [String; 2] {
    [
        python().to_string_lossy().into_owned(),
        peer_script("no_io_uring.py").to_string_lossy().into_owned(),
    ]
}

#[test]
fn io_uring_refused_by_seccomp_falls_back_to_epoll() {
    let (b, _echo) = echo_bootstrap();
    let under = without_io_uring();
    let under: Vec<&str> = under.iter().map(String::as_str).collect();
    // `auto` over SHARDPROXY_IO_BACKEND, which tests/run.sh's epoll pass sets.
    let proxy = Proxy::builder("no_io_uring", &b)
        .under(&under)
        .args(&["--io-backend", "auto"])
        .start();
    assert!(echoes(proxy.port("echo")), "proxied on epoll");
    let stderr = proxy.stderr();
    assert!(
        stderr.contains("io_uring is not available") && stderr.contains("the shards use epoll"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("io_uring is not available").count(),
        1,
        "said once"
    );
    assert!(stderr.contains("backend=\"epoll\""), "{stderr}");
}

#[test]
fn io_uring_asked_for_but_refused_is_a_start_up_error() {
    let (b, _echo) = echo_bootstrap();
    let under = without_io_uring();
    let under: Vec<&str> = under.iter().map(String::as_str).collect();
    let mut proxy = Proxy::builder("io_uring_refused", &b)
        .under(&under)
        .args(&["--io-backend", "io_uring"])
        .no_wait()
        .start();
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .expect("exits when io_uring is refused");
    assert_eq!(status.code(), Some(1));
    let stderr = proxy.stderr();
    assert!(
        stderr.contains("io_uring was asked for but is not available")
            && stderr.contains("--io-backend epoll"),
        "{stderr}"
    );
}

#[test]
fn epoll_can_be_chosen_where_io_uring_works() {
    let (b, _echo) = echo_bootstrap();
    let proxy = Proxy::builder("epoll_chosen", &b)
        .args(&["--io-backend", "epoll"])
        .start();
    assert!(echoes(proxy.port("echo")));
    let stderr = proxy.stderr();
    assert!(stderr.contains("backend=\"epoll\""), "{stderr}");
    assert!(!stderr.contains("io_uring ring created"), "{stderr}");
}
