//! Tests: consistent-hash load balancing (RING_HASH, MAGLEV) with route `hash_policy`, against
//! Envoy 1.40 on the same bootstrap: the same keys (header, query parameter, cookie, source
//! IP) must reach the same upstream through both, with equal and unequal host weights,
//! locality weights, and a host removed or unhealthy (which moves its keys and few others); the
//! cookie Envoy makes must be byte-identical. Each key goes on a new connection, so keys land
//! on both shards: every shard must map a key to the same host. Also the spread over hosts
//! (chi-square bound) and tcp_proxy's source-IP hashing. With `CI=true` a missing Envoy fails
//! the comparisons (tests/common's skip helper).
mod common;

use std::{collections::BTreeMap, net::Ipv4Addr, process::Command};

use common::{http::*, tls::*, *};
use serde_json::{json, Value};

/// Keys per comparison.
const KEYS: usize = 200;
const HOSTS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];

/// Hosts as `(name, host weight, locality)`; localities are listed in name order, as Envoy
/// orders them.
type Hosts<'a> = &'a [(&'a str, u32, usize)];

fn equal_hosts() -> Vec<(&'static str, u32, usize)> {
    HOSTS.iter().map(|n| (*n, 1, 0)).collect()
}

/// A cluster `c` over `hosts` of `ups`, with `localities` (weights; empty: one locality
/// without weight) and `extra` merged in.
fn hash_cluster(ups: &EchoUpstreams, hosts: Hosts<'_>, localities: &[u32], extra: Value) -> Value {
    let count = localities.len().max(1);
    let groups: Vec<Value> = (0..count)
        .map(|l| {
            let lb_endpoints: Vec<Value> = hosts
                .iter()
                .filter(|(_, _, locality)| *locality == l)
                .map(|(name, weight, _)| {
                    json!({"endpoint": {"address": socket_address(ups.port(name))},
                           "load_balancing_weight": weight})
                })
                .collect();
            let mut group = json!({"locality": {"zone": format!("zone-{l}")},
                                   "lb_endpoints": lb_endpoints});
            if let Some(weight) = localities.get(l) {
                group["load_balancing_weight"] = json!(weight);
            }
            group
        })
        .collect();
    let mut cluster = json!({
        "name": "c",
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": "c", "endpoints": groups},
    });
    merge(&mut cluster, extra);
    cluster
}

/// A bootstrap with an HTTP listener on `port` routing everything to `cluster` with
/// `hash_policy`.
fn hash_bootstrap(port: u16, cluster: Value, hash_policy: Value) -> Value {
    let routes = catch_all_routes("c", json!({"hash_policy": hash_policy}));
    let hcm = hcm("hash", routes, vec![], json!({}));
    bootstrap(
        free_port(),
        vec![http_listener("hash", port, hcm)],
        vec![cluster],
    )
}

/// Which upstream answered one request, sent on a new connection.
fn upstream_for(port: u16, target: &str, headers: &[(&str, &str)]) -> String {
    let mut all = vec![("host", "hash.test"), ("connection", "close")];
    all.extend_from_slice(headers);
    let mut conn = HttpConn::open(port);
    let response = conn
        .exchange("GET", &request("GET", target, &all, b""))
        .expect("a response");
    assert_eq!(response.status(), 200, "{}", response.text());
    response.echo()["upstream"].as_str().unwrap().to_string()
}

/// The upstream of each of the keys sent as header `x-key`.
fn by_header(port: u16) -> Vec<String> {
    (0..KEYS)
        .map(|i| upstream_for(port, "/", &[("x-key", &format!("key-{i}"))]))
        .collect()
}

fn header_policy() -> Value {
    json!([{"header": {"header_name": "x-key"}}])
}

/// Asserts the keys spread over at least `at_least` hosts (a hash that ignored the key, or a
/// balancer that ignored the hash, cannot pass the comparison with Envoy by luck).
fn assert_spread(picks: &[String], at_least: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for pick in picks {
        *counts.entry(pick.clone()).or_insert(0) += 1;
    }
    assert!(counts.len() >= at_least, "keys reached only {counts:?}");
    counts
}

/// Runs the header comparison for `extra` over `hosts` and returns the picks.
fn compare_header(tag: &str, hosts: Hosts<'_>, localities: &[u32], extra: Value) -> Vec<String> {
    let ups = EchoUpstreams::start(&HOSTS, None);
    compare_header_on(&ups, tag, hosts, localities, extra)
}

/// [`compare_header`] on the upstreams `ups` (hosts are hashed by address: the same
/// upstreams give the same table).
fn compare_header_on(
    ups: &EchoUpstreams,
    tag: &str,
    hosts: Hosts<'_>,
    localities: &[u32],
    extra: Value,
) -> Vec<String> {
    let port = free_port();
    let cluster = hash_cluster(ups, hosts, localities, extra);
    let b = hash_bootstrap(port, cluster, header_policy());
    on_both(tag, &b, |_| {
        let picks = by_header(port);
        // The same key again, on new connections: the same host (whichever shard took it).
        for (i, pick) in picks.iter().enumerate().take(20) {
            let again = upstream_for(port, "/", &[("x-key", &format!("key-{i}"))]);
            assert_eq!(&again, pick, "key-{i} moved between requests");
        }
        picks
    })
    .expect("shardproxy ran")
}

#[test]
fn ring_hash_xx_hash_matches_envoy() {
    let hosts = equal_hosts();
    let picks = compare_header("ring-xx", &hosts, &[], json!({"lb_policy": "RING_HASH"}));
    assert_spread(&picks, 5);
}

#[test]
fn ring_hash_murmur_with_host_weights_matches_envoy() {
    let hosts = [
        ("u0", 1, 0),
        ("u1", 2, 0),
        ("u2", 3, 0),
        ("u3", 1, 0),
        ("u4", 5, 0),
    ];
    let extra = json!({"lb_policy": "RING_HASH", "ring_hash_lb_config": {
        "hash_function": "MURMUR_HASH_2", "minimum_ring_size": 64}});
    let picks = compare_header("ring-murmur", &hosts, &[], extra);
    let counts = assert_spread(&picks, 5);
    assert!(counts["u4"] > counts["u0"], "weight 5 vs 1: {counts:?}");
}

#[test]
fn maglev_matches_envoy() {
    let hosts = equal_hosts();
    let picks = compare_header("maglev", &hosts, &[], json!({"lb_policy": "MAGLEV"}));
    assert_spread(&picks, 5);
}

#[test]
fn maglev_with_host_and_locality_weights_matches_envoy() {
    // zone-0 (weight 1): u0, u1 (weight 3); zone-1 (weight 2): u2, u3; zone-2 (weight 3): u4.
    let hosts = [
        ("u0", 1, 0),
        ("u1", 3, 0),
        ("u2", 1, 1),
        ("u3", 1, 1),
        ("u4", 1, 2),
    ];
    let extra = json!({"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 1031},
                       "common_lb_config": {"locality_weighted_lb_config": {}}});
    let picks = compare_header("maglev-locality", &hosts, &[1, 2, 3], extra);
    let counts = assert_spread(&picks, 5);
    // u4 alone holds half the weight; u0 an eighth of a sixth.
    assert!(counts["u4"] > 3 * counts["u0"], "{counts:?}");
}

#[test]
fn ring_hash_with_locality_weights_matches_envoy() {
    let hosts = [
        ("u0", 1, 0),
        ("u1", 2, 0),
        ("u2", 1, 1),
        ("u3", 1, 1),
        ("u4", 4, 1),
    ];
    let extra = json!({"lb_policy": "RING_HASH",
                       "common_lb_config": {"locality_weighted_lb_config": {}}});
    let picks = compare_header("ring-locality", &hosts, &[3, 1], extra);
    assert_spread(&picks, 5);
}

#[test]
fn query_parameter_hashing_matches_envoy() {
    let ups = EchoUpstreams::start(&HOSTS, None);
    let port = free_port();
    let cluster = hash_cluster(&ups, &equal_hosts(), &[], json!({"lb_policy": "RING_HASH"}));
    let policy = json!([{"query_parameter": {"name": "user"}}]);
    let b = hash_bootstrap(port, cluster, policy);
    let scenario = |_: &HttpProxy| {
        (0..KEYS)
            .map(|i| upstream_for(port, &format!("/p?a=1&user=u%20{i}&user=x"), &[]))
            .collect::<Vec<_>>()
    };
    let picks = on_both("query", &b, scenario).expect("shardproxy ran");
    assert_spread(&picks, 5);
}

/// One request from `source` (an address on loopback) and source port `local_port` (any: 0),
/// sent by python (which can bind both, reusing a port whose last connection is in
/// TIME_WAIT), carrying header line `extra` (if not empty): the upstream that answered and the
/// response's `set-cookie`.
fn request_from(port: u16, source: &str, local_port: u16, extra: &str) -> (String, String) {
    let extra = match extra {
        "" => String::new(),
        line => format!("{line}\\r\\n"),
    };
    let script = format!(
        "import socket\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{source}', {local_port}))\n\
         s.settimeout(20)\n\
         s.connect(('127.0.0.1', {port}))\n\
         s.sendall(b'GET / HTTP/1.1\\r\\nhost: hash.test\\r\\nconnection: close\\r\\n{extra}\\r\\n')\n\
         data = b''\n\
         while True:\n\
         \x20   chunk = s.recv(65536)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(data.decode())\n"
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    let set_cookie = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim())
        })
        .unwrap_or("")
        .to_string();
    let echo: Value = serde_json::from_str(body.trim()).unwrap();
    (echo["upstream"].as_str().unwrap().to_string(), set_cookie)
}

#[test]
fn cookie_hashing_and_the_made_cookie_match_envoy() {
    let ups = EchoUpstreams::start(&HOSTS, None);
    let port = free_port();
    let cluster = hash_cluster(&ups, &equal_hosts(), &[], json!({"lb_policy": "MAGLEV"}));
    let policy = json!([{"cookie": {"name": "sticky", "ttl": "3600s", "path": "/app",
                                    "attributes": [{"name": "SameSite", "value": "Lax"},
                                                   {"name": "Secure"}]}}]);
    let b = hash_bootstrap(port, cluster, policy);
    // The made cookie hashes the connection's addresses: the same client port on both runs.
    let client_port = free_port();
    let scenario = |_: &HttpProxy| {
        let (first, set_cookie) = request_from(port, "127.0.0.1", client_port, "");
        let value = set_cookie
            .strip_prefix("sticky=\"")
            .and_then(|v| v.split('"').next())
            .unwrap_or_else(|| panic!("no sticky cookie made: {set_cookie:?}"))
            .to_string();
        // The made cookie sticks: sent back, it reaches the same host, and none is made.
        let (again, none) = request_from(port, "127.0.0.1", 0, &format!("cookie: sticky={value}"));
        assert_eq!(again, first, "the made cookie did not stick");
        assert_eq!(none, "", "a cookie was made though the request had one");
        let picks: Vec<String> = (0..KEYS)
            .map(|i| {
                let cookie = format!("a=b; sticky=\"k{i}\"");
                upstream_for(port, "/", &[("cookie", &cookie)])
            })
            .collect();
        (set_cookie, picks)
    };
    let (set_cookie, picks) = on_both("cookie", &b, scenario).expect("shardproxy ran");
    let attributes = "; Max-Age=3600; Path=/app; SameSite=Lax; Secure; HttpOnly";
    assert!(set_cookie.ends_with(attributes), "{set_cookie}");
    assert_spread(&picks, 5);
}

#[test]
fn source_ip_hashing_matches_envoy() {
    let ups = EchoUpstreams::start(&HOSTS, None);
    let port = free_port();
    let cluster = hash_cluster(&ups, &equal_hosts(), &[], json!({"lb_policy": "RING_HASH"}));
    let policy = json!([{"connection_properties": {"source_ip": true}}]);
    let b = hash_bootstrap(port, cluster, policy);
    let scenario = |_: &HttpProxy| {
        (2..42)
            .map(|n| request_from(port, &format!("127.0.0.{n}"), 0, "").0)
            .collect::<Vec<_>>()
    };
    let picks = on_both("source-ip", &b, scenario).expect("shardproxy ran");
    assert_spread(&picks, 4);
}

/// The header picks on `hosts` for `policy_extra`, with `u2` present, removed, then present
/// but unhealthy (EDS `health_status`): Envoy's and shardproxy's must agree each time.
fn picks_without_u2(tag: &str, extra: Value) -> [Vec<String>; 3] {
    let ups = EchoUpstreams::start(&HOSTS, None);
    let all = equal_hosts();
    let with_all = compare_header_on(&ups, &format!("{tag}-all"), &all, &[], extra.clone());
    let four: Vec<_> = all.into_iter().filter(|h| h.0 != "u2").collect();
    let removed = compare_header_on(&ups, &format!("{tag}-removed"), &four, &[], extra.clone());
    let port = free_port();
    let mut cluster = hash_cluster(&ups, &equal_hosts(), &[], extra);
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][2]["health_status"] =
        json!("UNHEALTHY");
    let b = hash_bootstrap(port, cluster, header_policy());
    let unhealthy =
        on_both(&format!("{tag}-unhealthy"), &b, |_| by_header(port)).expect("shardproxy ran");
    [with_all, removed, unhealthy]
}

/// How many keys not on `u2` before moved.
fn moved_off_others(before: &[String], after: &[String]) -> usize {
    let moved = before
        .iter()
        .zip(after)
        .filter(|(b, a)| *b != "u2" && b != a)
        .count();
    assert!(after.iter().all(|a| a != "u2"), "u2 still picked");
    moved
}

#[test]
fn a_removed_or_unhealthy_host_moves_mostly_its_own_keys_on_the_ring() {
    let [all, removed, unhealthy] =
        picks_without_u2("ring-move", json!({"lb_policy": "RING_HASH"}));
    // u2's keys move. The others keep their points, but each gains some (205 → 256 points
    // for 5 → 4 hosts at the minimum ring size, as in Envoy), so a few of their keys move
    // among them too.
    let moved = moved_off_others(&all, &removed);
    assert!(moved <= KEYS / 5, "{moved} keys of kept hosts moved");
    // An unhealthy host is left out of the ring just as a removed one.
    assert_eq!(unhealthy, removed);
}

#[test]
fn a_removed_host_moves_few_other_keys_in_maglev() {
    let [all, removed, unhealthy] = picks_without_u2("maglev-move", json!({"lb_policy": "MAGLEV"}));
    // Maglev trades a little stability for balance: a few other keys may move.
    let moved = moved_off_others(&all, &removed);
    assert!(moved <= KEYS / 10, "{moved} keys of kept hosts moved");
    assert_eq!(unhealthy, removed);
}

/// Pearson's chi-square of `counts` against `expected` shares of their total.
fn chi_square(counts: &[usize], shares: &[f64]) -> f64 {
    let total: usize = counts.iter().sum();
    let sum: f64 = shares.iter().sum();
    counts
        .iter()
        .zip(shares)
        .map(|(n, share)| {
            let e = total as f64 * share / sum;
            (*n as f64 - e).powi(2) / e
        })
        .sum()
}

/// Chi-square's 99.9th percentile at 3 degrees of freedom: a correct balancer fails once in
/// a thousand runs.
const CHI2_3DF_P001: f64 = 16.27;

/// How many of `requests` (sent on one keep-alive connection) each of the four hosts took.
fn spread(port: u16, requests: usize, key: impl Fn(usize) -> Option<String>) -> Vec<usize> {
    let mut conn = HttpConn::open(port);
    let mut counts = BTreeMap::new();
    for i in 0..requests {
        let key = key(i);
        let mut headers = vec![("host", "hash.test")];
        if let Some(key) = &key {
            headers.push(("x-key", key));
        }
        let response = conn
            .exchange("GET", &request("GET", "/", &headers, b""))
            .expect("a response");
        let upstream = response.echo()["upstream"].as_str().unwrap().to_string();
        *counts.entry(upstream).or_insert(0usize) += 1;
    }
    HOSTS[..4]
        .iter()
        .map(|h| counts.get(*h).copied().unwrap_or(0))
        .collect()
}

#[test]
fn keys_and_keyless_requests_spread_by_weight() {
    let ups = EchoUpstreams::start(&HOSTS, None);
    let port = free_port();
    let hosts = [("u0", 1, 0), ("u1", 2, 0), ("u2", 3, 0), ("u3", 4, 0)];
    let cluster = hash_cluster(&ups, &hosts, &[], json!({"lb_policy": "MAGLEV"}));
    let b = hash_bootstrap(port, cluster, header_policy());
    let _proxy = HttpProxy::start(Kind::Shardproxy, "hash-spread", &b);
    let shares = [1.0, 2.0, 3.0, 4.0];
    // Distinct keys: Maglev's table gives each host its weight's share of slots.
    let keyed = spread(port, 3000, |i| Some(format!("spread-{i}")));
    let chi2 = chi_square(&keyed, &shares);
    assert!(chi2 < CHI2_3DF_P001, "keys {keyed:?}: chi-square {chi2:.2}");
    // No header: no hash, a random host (as Envoy), still by weight.
    let random = spread(port, 3000, |_| None);
    let chi2 = chi_square(&random, &shares);
    assert!(
        chi2 < CHI2_3DF_P001,
        "keyless {random:?}: chi-square {chi2:.2}"
    );
    // One key always reaches one host.
    let same = spread(port, 50, |_| Some("one".into()));
    assert_eq!(same.iter().filter(|n| **n > 0).count(), 1, "{same:?}");
}

/// Which upstream a tcp_proxy connection from `source` reached (via python, which binds the
/// source address before connecting).
fn tcp_from(port: u16, source: Ipv4Addr) -> String {
    let script = format!(
        "import socket; s = socket.socket(); s.bind(('{source}', 0)); \
         s.connect(('127.0.0.1', {port})); s.settimeout(20); print(s.recv(64).decode().strip())"
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tcp_proxy_source_ip_hashing_matches_envoy() {
    let ups: Vec<Upstream> = HOSTS.iter().map(|h| Upstream::hello(h)).collect();
    let port = free_port();
    let endpoints: Vec<(u16, u32)> = ups.iter().map(|u| (u.port, 1)).collect();
    let proxy = tcp_proxy("hash", "c", json!({"hash_policy": [{"source_ip": {}}]}));
    let b = bootstrap(
        free_port(),
        vec![listener("hash", port, proxy)],
        vec![cluster("c", &endpoints, json!({"lb_policy": "RING_HASH"}))],
    );
    let scenario = |_: &HttpProxy| {
        (2..32)
            .map(|n| tcp_from(port, Ipv4Addr::new(127, 0, 0, n)))
            .collect::<Vec<_>>()
    };
    let picks = on_both("tcp-source-ip", &b, scenario).expect("shardproxy ran");
    assert_spread(&picks, 4);
    // The same source again, on new connections (either shard): the same host.
    let _proxy = HttpProxy::start(Kind::Shardproxy, "tcp-again", &b);
    for _ in 0..10 {
        assert_eq!(tcp_from(port, Ipv4Addr::new(127, 0, 0, 2)), picks[0]);
    }
}

#[test]
fn unsupported_pieces_are_refused_precisely() {
    let ups = EchoUpstreams::start(&HOSTS[..1], None);
    let hosts = [("u0", 1, 0)];
    let refused = [
        (
            json!({"lb_policy": "RING_HASH", "common_lb_config": {
                "consistent_hashing_lb_config": {"hash_balance_factor": 150}}}),
            header_policy(),
            "hash_balance_factor: bounded-load consistent hashing is not supported",
        ),
        (
            json!({"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 1000}}),
            header_policy(),
            "maglev_lb_config.table_size: 1000 is not a prime",
        ),
        (
            json!({"lb_policy": "RING_HASH", "ring_hash_lb_config": {
                "minimum_ring_size": 2048, "maximum_ring_size": 1024}}),
            header_policy(),
            "minimum_ring_size (2048) > maximum_ring_size (1024)",
        ),
        (
            json!({"lb_policy": "RING_HASH"}),
            json!([{"filter_state": {"key": "io.istio.peer_principal"}}]),
            "no filter-state object shardproxy's filters set is hashable",
        ),
    ];
    let dir = TempDir::new("hash-refused");
    for (i, (extra, policy, wanted)) in refused.into_iter().enumerate() {
        let b = hash_bootstrap(free_port(), hash_cluster(&ups, &hosts, &[], extra), policy);
        let path = dir.file(&format!("b{i}.yaml"));
        std::fs::write(&path, to_yaml(&b)).unwrap();
        let (status, stdout, stderr) =
            run_to_end(&["--mode", "validate", "-c", path.to_str().unwrap()], SOON);
        let out = format!("{stdout}{stderr}");
        assert!(!status.success(), "accepted: {b}");
        assert!(out.contains(wanted), "wanted {wanted:?} in:\n{out}");
    }
}
