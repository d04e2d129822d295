//! Tests: the embedded default bootstrap — admin on 127.0.0.1:9901 and an HTTP proxy on
//! 127.0.0.1:10000 that routes to the admin, so GET :10000/stats shows the stats.
mod common;

use std::net::TcpListener;

use common::*;

#[test]
fn no_config_serves_admin_through_the_default_tcp_proxy() {
    // The default uses fixed ports. Where something else holds them, rerun this test in a
    // fresh network namespace of its own (root with unshare), else skip loudly.
    let busy: Vec<u16> = [9901, 10000]
        .into_iter()
        .filter(|p| TcpListener::bind(("127.0.0.1", *p)).is_err())
        .collect();
    if !busy.is_empty() {
        if std::env::var_os("SHARDPROXY_E2E_NETNS").is_some() {
            panic!("ports {busy:?} busy even inside a fresh network namespace");
        }
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        let exe = std::env::current_exe().unwrap();
        let script = format!(
            "ip link set lo up && exec {} --exact no_config_serves_admin_through_the_default_tcp_proxy --nocapture",
            exe.display()
        );
        let ran = root.then(|| {
            std::process::Command::new("unshare")
                .args(["-n", "sh", "-c", &script])
                .env("SHARDPROXY_E2E_NETNS", "1")
                .output()
        });
        match ran {
            Some(Ok(out)) if out.status.code() != Some(127) && !String::from_utf8_lossy(&out.stderr).contains("unshare failed") => {
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                assert!(out.status.success(), "in a fresh network namespace:\n{text}");
                assert!(text.contains("1 passed"), "the namespaced run ran no test:\n{text}");
                eprintln!("127.0.0.1 ports {busy:?} in use: ran in a fresh network namespace instead");
            }
            _ => skip(
                "no_config_serves_admin_through_the_default_tcp_proxy",
                &format!("127.0.0.1 ports {busy:?} in use (and no root+unshare to use a network namespace)"),
                Missing::Environment,
            ),
        }
        return;
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
    proxy.wait_stat("http.default.downstream_rq_2xx", ">= 1", |v| v >= 1);
    // The default logs each request to stdout, in Envoy's default format.
    wait_for(SOON, "an access log line on stdout", || {
        let out = proxy.stdout();
        (out.contains("\"GET /stats HTTP/1.1\" 200") && out.contains("127.0.0.1:9901"))
            .then_some(())
    });
}
