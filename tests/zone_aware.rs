//! Tests: zone-aware routing (`cluster_manager.local_cluster_name`, `node.locality`,
//! `zone_aware_lb_config`), on Envoy 1.40 and shardproxy with the same bootstrap: requests
//! spread over the upstream's zones as Envoy's direct and residual routing expects (chi-square
//! bound), with the same `lb_zone_*` stats; routing turns off below `min_cluster_size`.
mod common;

use std::collections::BTreeMap;

use common::{
    http::{request, HttpConn, HttpProxy},
    http_e2e::*,
    tls::*,
    *,
};
use serde_json::{json, Value};

/// Requests per proxy.
const REQUESTS: usize = 1500;

/// Chi-square's 99.9th percentile at 2 degrees of freedom.
const CHI2_2DF_P001: f64 = 13.82;

const ZONES: [&str; 3] = ["a", "b", "c"];

/// A static cluster `name` with `ports` grouped by zone (`(zone, ports)`), `extra` merged in.
fn zoned_cluster(name: &str, zones: &[(&str, Vec<u16>)], extra: Value) -> Value {
    let groups: Vec<Value> = zones
        .iter()
        .map(|(zone, ports)| {
            let lb_endpoints: Vec<Value> = ports
                .iter()
                .map(|p| json!({"endpoint": {"address": socket_address(*p)}}))
                .collect();
            json!({"locality": {"region": "r", "zone": zone}, "lb_endpoints": lb_endpoints})
        })
        .collect();
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": groups},
    });
    merge(&mut cluster, extra);
    cluster
}

/// A bootstrap whose node is in zone `a`, with local cluster `local` spread as `local`
/// (counts per zone; its hosts, on ports 1, 2, ..., take no traffic) and cluster `backend`
/// over `ups` (zone, upstream) with `extra`.
fn zoned_bootstrap(local: [usize; 3], ups: &[(&str, HttpUpstream)], extra: Value) -> Value {
    let mut next = 0;
    let local_zones: Vec<(&str, Vec<u16>)> = ZONES
        .iter()
        .zip(local)
        .filter(|(_, n)| *n > 0)
        .map(|(zone, n)| {
            let ports = (next + 1..=next + n as u16).collect();
            next += n as u16;
            (*zone, ports)
        })
        .collect();
    let backend_zones: Vec<(&str, Vec<u16>)> = ZONES
        .iter()
        .map(|zone| {
            let ports = ups.iter().filter(|(z, _)| z == zone).map(|(_, u)| u.port);
            (*zone, ports.collect::<Vec<u16>>())
        })
        .filter(|(_, ports)| !ports.is_empty())
        .collect();
    let mut b = bootstrap(
        0,
        vec![http_listener(
            "zoned",
            0,
            hcm(
                "zoned",
                any_host(json!([route_to("/", "backend", json!({}))])),
                json!({}),
            ),
        )],
        vec![
            zoned_cluster("local", &local_zones, json!({})),
            zoned_cluster("backend", &backend_zones, extra),
        ],
    );
    merge(
        &mut b,
        json!({
            "node": {"id": "zoned", "cluster": "zoned", "locality": {"region": "r", "zone": "a"}},
            "cluster_manager": {"local_cluster_name": "local"},
        }),
    );
    b
}

/// Upstreams answering with their zone: `counts[i]` in `ZONES[i]`.
fn upstreams(counts: [usize; 3]) -> Vec<(&'static str, HttpUpstream)> {
    ZONES
        .iter()
        .zip(counts)
        .flat_map(|(zone, n)| {
            (0..n).map(move |_| {
                let name = zone.to_string();
                (*zone, HttpUpstream::start(move |_| Reply::ok(&name)))
            })
        })
        .collect()
}

/// Which zone answered each of `REQUESTS` requests (on a few keep-alive connections, so both
/// workers or shards take some), as counts per zone.
fn spread(proxy: &HttpProxy) -> [usize; 3] {
    let port = proxy.port("zoned");
    let mut counts = [0; 3];
    for _ in 0..10 {
        let mut conn = HttpConn::open(port);
        for _ in 0..REQUESTS / 10 {
            let response = conn
                .exchange("GET", &request("GET", "/", &[("host", "zoned.test")], b""))
                .expect("a response");
            assert_eq!(response.status(), 200, "{}", response.text());
            let zone = ZONES.iter().position(|z| *z == response.text()).unwrap();
            counts[zone] += 1;
        }
    }
    counts
}

/// Pearson's chi-square of `counts` against `shares` (zones expected to take none must take
/// none, and are left out).
fn chi_square(counts: &[usize; 3], shares: [f64; 3]) -> f64 {
    let total: usize = counts.iter().sum();
    counts
        .iter()
        .zip(shares)
        .map(|(n, share)| match share {
            0.0 => {
                assert_eq!(*n, 0, "a zone expected to take nothing took {counts:?}");
                0.0
            }
            share => {
                let e = total as f64 * share;
                (*n as f64 - e).powi(2) / e
            }
        })
        .sum()
}

const STATS: [&str; 7] = [
    "lb_zone_routing_all_directly",
    "lb_zone_routing_sampled",
    "lb_zone_routing_cross_zone",
    "lb_zone_no_capacity_left",
    "lb_zone_cluster_too_small",
    "lb_local_cluster_not_ok",
    "lb_zone_number_differs",
];

/// The `lb_zone_*` counters of `backend`; an absent one reads as 0 (Envoy makes its
/// load-balancer stats when first used).
fn zone_stats(proxy: &HttpProxy) -> BTreeMap<String, i64> {
    let all = proxy.stats();
    let read = |n: &str| {
        let v = all.get(&format!("cluster.backend.{n}")).copied();
        v.unwrap_or(0)
    };
    let mut stats: BTreeMap<String, i64> = STATS.iter().map(|n| (n.to_string(), read(n))).collect();
    let recalculated = read("lb_recalculate_zone_structures");
    stats.insert("recalculated (> 0)".into(), i64::from(recalculated > 0));
    stats
}

/// Runs `REQUESTS` through both proxies; each proxy's spread must match `shares` (chi-square
/// bound) and its stats, as `expect_stats` turns them into an outcome, must match Envoy's.
fn compare(
    tag: &str,
    b: &Value,
    shares: [f64; 3],
    expect_stats: impl Fn(&BTreeMap<String, i64>) -> Vec<(String, bool)>,
) {
    let outcome = on_both(tag, b, |proxy| {
        let counts = spread(proxy);
        let chi2 = chi_square(&counts, shares);
        let stats = zone_stats(proxy);
        let kind = proxy.kind.name();
        eprintln!("{tag} {kind}: zones {counts:?}, chi-square {chi2:.2}, {stats:?}");
        assert!(
            chi2 < CHI2_2DF_P001,
            "{tag}: {counts:?} against {shares:?}: chi-square {chi2:.2}"
        );
        expect_stats(&stats)
    });
    if let Some(outcome) = outcome {
        let failed: Vec<_> = outcome.iter().filter(|(_, ok)| !ok).collect();
        assert!(failed.is_empty(), "{tag}: {failed:?}");
    }
}

/// The share of `REQUESTS` a counter holds is within 0.05 of `share`.
fn near(stats: &BTreeMap<String, i64>, name: &str, share: f64) -> (String, bool) {
    let got = stats[name] as f64 / REQUESTS as f64;
    (format!("{name} ≈ {share}"), (got - share).abs() < 0.05)
}

fn is(stats: &BTreeMap<String, i64>, name: &str, want: i64) -> (String, bool) {
    (format!("{name} = {want}"), stats[name] == want)
}

#[test]
fn residual_routing_sends_what_the_local_zone_cannot_take_to_zones_with_capacity() {
    // Local proxies: a 50 %, b 25 %, c 25 %; upstream hosts: a 20 %, b 40 %, c 40 %. Zone a
    // takes 20/50 = 40 % of this proxy's requests; the rest goes by residual capacity (b and c
    // 15 points each): 30 % each.
    let ups = upstreams([2, 4, 4]);
    let b = zoned_bootstrap([2, 1, 1], &ups, json!({"lb_policy": "ROUND_ROBIN"}));
    compare("zone_residual", &b, [0.4, 0.3, 0.3], |s| {
        vec![
            near(s, "lb_zone_routing_sampled", 0.4),
            near(s, "lb_zone_routing_cross_zone", 0.6),
            is(s, "lb_zone_routing_all_directly", 0),
            is(s, "lb_zone_no_capacity_left", 0),
            is(s, "lb_local_cluster_not_ok", 0),
            is(s, "lb_zone_cluster_too_small", 0),
            is(s, "lb_zone_number_differs", 0),
            is(s, "recalculated (> 0)", 1),
        ]
    });
}

#[test]
fn a_local_zone_with_capacity_takes_everything_directly() {
    // Local: a 25 %; upstream: a 3 of 7 hosts (43 %): every request stays in a.
    let ups = upstreams([3, 2, 2]);
    let b = zoned_bootstrap([1, 2, 1], &ups, json!({"lb_policy": "RANDOM"}));
    compare("zone_direct", &b, [1.0, 0.0, 0.0], |s| {
        vec![
            is(s, "lb_zone_routing_all_directly", REQUESTS as i64),
            is(s, "lb_zone_routing_sampled", 0),
            is(s, "lb_zone_routing_cross_zone", 0),
        ]
    });
}

#[test]
fn routing_by_zone_is_off_below_min_cluster_size_or_in_part_by_routing_enabled() {
    let ups = upstreams([2, 4, 4]);
    // 10 healthy hosts, fewer than 11: hosts share requests as without zones (by count).
    let b = zoned_bootstrap(
        [2, 1, 1],
        &ups,
        json!({"lb_policy": "LEAST_REQUEST",
               "common_lb_config": {"zone_aware_lb_config": {"min_cluster_size": 11}}}),
    );
    compare("zone_too_small", &b, [0.2, 0.4, 0.4], |s| {
        vec![
            is(s, "lb_zone_routing_sampled", 0),
            is(s, "lb_zone_routing_cross_zone", 0),
            (
                "lb_zone_cluster_too_small > 0".into(),
                s["lb_zone_cluster_too_small"] > 0,
            ),
        ]
    });
    // Routing enabled for half of the picks: half residual (0.4, 0.3, 0.3), half by host
    // count (0.2, 0.4, 0.4).
    let b = zoned_bootstrap(
        [2, 1, 1],
        &ups,
        json!({"lb_policy": "ROUND_ROBIN",
               "common_lb_config": {"zone_aware_lb_config": {"routing_enabled": {"value": 50}}}}),
    );
    compare("zone_half", &b, [0.3, 0.35, 0.35], |s| {
        vec![
            near(s, "lb_zone_routing_sampled", 0.2),
            near(s, "lb_zone_routing_cross_zone", 0.3),
        ]
    });
}
