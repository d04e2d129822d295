//! Tests: the overload manager's global downstream connection limit
//! (`envoy.resource_monitors.global_downstream_max_connections`, which Istio's bootstrap
//! sets), on Envoy 1.40 and shardproxy with the same bootstrap and the same outcome: at the
//! limit a new connection is closed at once and counted in the listener's
//! `downstream_global_cx_overflow`, a listener with `ignore_global_conn_limit` still takes
//! connections, and a closed connection frees its place.
mod common;

use std::{io::Write, net::TcpStream, time::Duration};

use common::{tls::*, *};
use serde_json::json;

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
    let (admin, limited, exempt) = (free_port(), free_port(), free_port());
    let mut exempt_listener = listener("exempt", exempt, tcp_proxy("exempt", "echo", json!(null)));
    exempt_listener["ignore_global_conn_limit"] = json!(true);
    let mut b = bootstrap(
        admin,
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
