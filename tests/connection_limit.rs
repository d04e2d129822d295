//! Tests: connection limits, on Envoy 1.40 and shardproxy with the same bootstrap and the same
//! outcome (tests/common/tls.rs `on_both`).
//!
//! The overload manager's global downstream connection limit
//! (`envoy.resource_monitors.global_downstream_max_connections`, which Istio's bootstrap
//! sets): at the limit a new connection is closed at once and counted in the listener's
//! `downstream_global_cx_overflow`, a listener with `ignore_global_conn_limit` still takes
//! connections, and a closed connection frees its place.
//!
//! The `envoy.filters.network.connection_limit` filter, in front of tcp_proxy and of the HTTP
//! connection manager: with `max_connections: 2` the third open connection of the chain is
//! closed (at once, or after `delay` with no response) and counted in
//! `connection_limit.<stat_prefix>.limited_connections`, `active_connections` counts what is
//! open (a refused connection too, until it closes), and a closed connection frees its place.
mod common;

use std::{
    io::Write,
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{
    http::{catch_all_routes, hcm, http_listener, request, EchoUpstreams, HttpConn},
    tls::*,
    *,
};
use serde_json::{json, Value};

/// Whether a new connection to `port` is served: the echo answers (else it is closed).
fn served(port: u16) -> Option<TcpStream> {
    let mut s = connect(port);
    s.write_all(b"ping").ok()?;
    match next_outcome(&mut s, Duration::from_secs(5)) {
        Outcome::Data(_) => Some(s),
        _ => None,
    }
}

#[test]
fn the_global_connection_limit_closes_connections_past_it() {
    let echo = Upstream::echo();
    // Fixed listener ports: the overflow is counted in stats named after the address.
    let (limited, exempt) = (free_port(), free_port());
    let mut exempt_listener = listener("exempt", exempt, tcp_proxy("exempt", "echo", json!(null)));
    exempt_listener["ignore_global_conn_limit"] = json!(true);
    let mut b = bootstrap(
        0,
        vec![
            listener(
                "limited",
                limited,
                tcp_proxy("limited", "echo", json!(null)),
            ),
            exempt_listener,
        ],
        vec![cluster("echo", &[(echo.port, 1)], json!({}))],
    );
    b["overload_manager"] = json!({"resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
            "max_active_downstream_connections": 2,
        },
    }]});
    on_both("connection_limit", &b, |proxy| {
        let first = served(limited);
        let second = served(limited);
        let third = served(limited).is_some();
        let exempt_served = served(exempt).is_some();
        drop(first);
        // The freed place is taken again once the proxy has seen the close.
        let prefix = listener_stats(limited);
        settled_stats(proxy, &prefix, &["downstream_cx_active"], |s| {
            s["downstream_cx_active"] == 1
        });
        let again = served(limited).is_some();
        drop(second);
        let overflow = settled_stats(proxy, &prefix, &["downstream_global_cx_overflow"], |s| {
            s["downstream_global_cx_overflow"] >= 1
        });
        let outcome = (third, exempt_served, again, overflow);
        assert_eq!(
            (outcome.0, outcome.1, outcome.2),
            (false, true, true),
            "{outcome:?}"
        );
        outcome
    });
}

/// The chain of `listener` with a connection_limit filter (`stat_prefix`, at most 2
/// connections, `delay` if any) in front of its terminal filter.
fn limited(mut listener: Value, stat_prefix: &str, delay: Option<&str>) -> Value {
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
        "stat_prefix": stat_prefix,
        "max_connections": 2,
    });
    if let Some(delay) = delay {
        config["delay"] = json!(delay);
    }
    let filters = listener["filter_chains"][0]["filters"]
        .as_array_mut()
        .unwrap();
    filters.insert(
        0,
        json!({"name": "envoy.filters.network.connection_limit", "typed_config": config}),
    );
    listener
}

/// `connection_limit.<prefix>.*` once settled with `active` connections counted.
fn limit_stats(
    proxy: &http::HttpProxy,
    prefix: &str,
    active: i64,
) -> std::collections::BTreeMap<String, i64> {
    settled_stats(
        proxy,
        &format!("connection_limit.{prefix}."),
        &["limited_connections", "active_connections"],
        |s| s["active_connections"] == active,
    )
}

/// A GET on a new keep-alive connection to `port`, answered (the connection kept), or `None`
/// when the proxy closes it.
fn http_served(port: u16) -> Option<HttpConn> {
    let mut conn = HttpConn::open(port);
    let get = request("GET", "/", &[("host", "limit.test")], b"");
    let response = conn.exchange("GET", &get).ok()?;
    assert_eq!(response.status(), 200);
    Some(conn)
}

#[test]
fn the_connection_limit_filter_closes_the_third_connection_in_front_of_tcp_proxy() {
    let echo = Upstream::echo();
    let b = bootstrap(
        0,
        vec![limited(
            listener("tcp", 0, tcp_proxy("tcp", "echo", json!(null))),
            "tcp_limit",
            None,
        )],
        vec![cluster("echo", &[(echo.port, 1)], json!({}))],
    );
    on_both("connection_limit_filter_tcp", &b, |proxy| {
        let port = proxy.port("tcp");
        let first = served(port);
        let second = served(port);
        let third = served(port).is_some();
        // The refused connection counted until it closed; then two remain.
        let at_limit = limit_stats(proxy, "tcp_limit", 2);
        drop(first);
        limit_stats(proxy, "tcp_limit", 1);
        let again = served(port);
        let fourth = served(port).is_some();
        drop((second, again));
        let end = limit_stats(proxy, "tcp_limit", 0);
        let outcome = (third, at_limit, fourth, end);
        assert!(!outcome.0, "the third connection is closed: {outcome:?}");
        assert!(!outcome.2, "a slot given back is taken once: {outcome:?}");
        assert_eq!(outcome.3["limited_connections"], 2, "{outcome:?}");
        outcome
    });
}

#[test]
fn the_connection_limit_filter_closes_the_third_connection_after_its_delay_in_front_of_http() {
    let test =
        "the_connection_limit_filter_closes_the_third_connection_after_its_delay_in_front_of_http";
    if !http::have_python(test, "json") {
        return;
    }
    let upstream = EchoUpstreams::start(&["echo"], None);
    let manager = hcm(
        "http",
        catch_all_routes("echo", json!({})),
        vec![],
        json!({}),
    );
    let b = bootstrap(
        0,
        vec![limited(
            http_listener("http", 0, manager),
            "http_limit",
            Some("2s"),
        )],
        vec![cluster("echo", &[(upstream.port("echo"), 1)], json!({}))],
    );
    on_both("connection_limit_filter_http", &b, |proxy| {
        let port = proxy.port("http");
        let first = http_served(port);
        let second = http_served(port);
        assert!(first.is_some() && second.is_some());
        // The third connection: counted while it is held, its request unanswered, closed
        // after the delay (2 s), not at once.
        let started = Instant::now();
        let mut third = connect(port);
        third
            .write_all(&request("GET", "/", &[("host", "limit.test")], b""))
            .unwrap();
        let held = limit_stats(proxy, "http_limit", 3);
        let outcome = next_outcome(&mut third, Duration::from_secs(6));
        let closed_after = started.elapsed();
        let closed = matches!(outcome, Outcome::Eof | Outcome::Reset);
        // Envoy arms its timers from the event loop's cached time (libevent), which can be a
        // few milliseconds behind the clock: its close was seen 1.1 ms before 2 s measured from
        // the client's connect. 20 ms of slack; an immediate close is still far outside it.
        let delayed = closed_after >= Duration::from_millis(1980);
        let at_limit = limit_stats(proxy, "http_limit", 2);
        drop(first);
        limit_stats(proxy, "http_limit", 1);
        let again = http_served(port).is_some();
        drop(second);
        let result = (held, closed, delayed, at_limit, again);
        assert!(
            result.1 && result.2 && closed_after < Duration::from_secs(5),
            "closed after {closed_after:?} ({outcome:?}): {result:?}"
        );
        assert_eq!(result.3["limited_connections"], 1, "{result:?}");
        assert!(result.4, "the place freed is taken again: {result:?}");
        result
    });
}

/// shardproxy only (Envoy does not reload its bootstrap file; it keeps an unchanged chain's
/// filter config on an in-place listener update the same way): a reload that adds a chain to
/// the listener keeps the unchanged chain's count, so its two open connections still keep a
/// third out.
#[test]
fn the_connection_limit_filter_keeps_its_count_when_other_chains_change() {
    let echo = Upstream::echo();
    let tcp = limited(
        listener("tcp", 0, tcp_proxy("tcp", "echo", json!(null))),
        "tcp_limit",
        None,
    );
    let mut b = bootstrap(
        0,
        vec![tcp.clone()],
        vec![cluster("echo", &[(echo.port, 1)], json!({}))],
    );
    let proxy = Proxy::start("connection_limit_reload", &b);
    let port = proxy.port("tcp");
    let first = served(port);
    let second = served(port);
    assert!(first.is_some() && second.is_some());
    // A second chain (for connections to port 1: none here) and a listener to probe with.
    let mut two_chains = tcp;
    let terminal = two_chains["filter_chains"][0]["filters"][1].clone();
    two_chains["filter_chains"]
        .as_array_mut()
        .unwrap()
        .push(json!({"filter_chain_match": {"destination_port": 1}, "filters": [terminal]}));
    let probe = listener("probe", 0, tcp_proxy("probe", "echo", json!(null)));
    b["static_resources"]["listeners"] = json!([two_chains, probe]);
    proxy.rewrite(&to_yaml(&b));
    let probe = proxy.wait_port("probe");
    wait_for(SOON, "the reloaded config to serve", || served(probe));
    assert_eq!(proxy.port("tcp"), port, "the listener keeps its port");
    assert!(served(port).is_none(), "the open connections still count");
    assert_eq!(
        proxy.stat("connection_limit.tcp_limit.limited_connections"),
        Some(1)
    );
    drop(first);
    proxy.wait_stat("connection_limit.tcp_limit.active_connections", "1", |v| {
        v == 1
    });
    assert!(served(port).is_some(), "the place freed is taken again");
    drop(second);
}
