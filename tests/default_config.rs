//! Tests: the embedded default bootstrap — admin on 127.0.0.1:9901 and a tcp_proxy on
//! 127.0.0.1:10000 that relays to the admin, so GET :10000/stats shows the stats.
mod common;

use std::net::TcpListener;

use common::*;

#[test]
fn no_config_serves_admin_through_the_default_tcp_proxy() {
    // The default uses fixed ports; skip (loudly) where something else holds them.
    for port in [9901, 10000] {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            eprintln!("SKIPPED no_config_serves_admin_through_the_default_tcp_proxy: 127.0.0.1:{port} is in use");
            return;
        }
    }
    let proxy = Proxy::builder_raw("default", None, 9901)
        .args(&["--concurrency", "1"])
        .start();
    let direct = proxy.get("/stats");
    assert_eq!(direct.status, 200);
    // Through the proxy's own listener, as `curl http://127.0.0.1:10000/stats` would.
    let r = http_get(addr(10000), "/stats")
        .unwrap_or_else(|e| panic!("GET :10000/stats: {e}\n{}", proxy.stderr()));
    assert_eq!(r.status, 200, "{}", r.body);
    let stats = parse_stats(&r.body);
    assert!(
        stats.contains_key("cluster.admin.upstream_cx_total"),
        "stats through :10000:\n{}",
        r.body
    );
    assert!(
        stats["cluster.admin.upstream_cx_total"] >= 1,
        "the relayed request itself is counted"
    );
    proxy.wait_stat("tcp.default.downstream_cx_total", ">= 1", |v| v >= 1);
    // The default logs each relayed connection to stdout.
    wait_for(SOON, "an access log line on stdout", || {
        proxy.stdout().contains("127.0.0.1:9901").then_some(())
    });
}
