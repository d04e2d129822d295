//! Tests: subset load balancing (`lb_subset_config`, route `metadata_match`), on Envoy 1.40
//! and shardproxy with the same bootstrap: hosts labelled `version` v1/v2 and `stage`
//! prod/canary; each route's criteria reach only its subset's hosts, spread evenly within it
//! (chi-square bound); criteria no subset has go to each fallback policy (every host, the
//! default subset, none: 503 with `UH`), a selector's `KEYS_SUBSET` to the subset of fewer keys,
//! a weighted cluster's criteria merge over its route's; the `lb_subsets_*` stats agree. An
//! EDS update that moves a host from v1 to v2 moves its picks on both proxies; invalid configs
//! are refused with Envoy's errors.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
};

use common::{
    http::{envoy_bin, request, EchoUpstreams, HttpConn, HttpProxy, Kind, NO_ENVOY},
    http_e2e::*,
    tls::*,
    xds::*,
    *,
};
use serde_json::{json, Value};

/// Requests per case.
const REQUESTS: usize = 300;

/// Chi-square's 99.9th percentile by degrees of freedom (0 to 5).
const CHI2_P001: [f64; 6] = [0.0, 10.83, 13.82, 16.27, 18.47, 20.52];

/// The hosts: name, version, stage.
const HOSTS: [(&str, &str, &str); 6] = [
    ("v1-prod-a", "v1", "prod"),
    ("v1-prod-b", "v1", "prod"),
    ("v1-canary", "v1", "canary"),
    ("v2-prod", "v2", "prod"),
    ("v2-canary-a", "v2", "canary"),
    ("v2-canary-b", "v2", "canary"),
];

/// `envoy.lb` metadata (as in a route's `metadata_match` or an endpoint's `metadata`).
fn lb(labels: Value) -> Value {
    json!({"filter_metadata": {"envoy.lb": labels}})
}

/// A static cluster `name` over the labelled `ups`, with `subset` as its `lb_subset_config`.
fn labelled_cluster(name: &str, ups: &[HttpUpstream], subset: Value) -> Value {
    let lb_endpoints: Vec<Value> = HOSTS
        .iter()
        .zip(ups)
        .map(|((_, version, stage), up)| {
            json!({"endpoint": {"address": socket_address(up.port)},
                   "metadata": lb(json!({"version": version, "stage": stage}))})
        })
        .collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "lb_subset_config": subset,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]},
    })
}

/// The selectors of every cluster here: by version, and by version and stage (falling back to
/// version alone).
fn selectors() -> Value {
    json!([
        {"keys": ["version"]},
        {"keys": ["version", "stage"], "fallback_policy": "KEYS_SUBSET",
         "fallback_keys_subset": ["version"]},
    ])
}

/// A route for requests with `x-case: case`, with `action` as its route action.
fn case_route(case: &str, action: Value) -> Value {
    json!({"match": {"prefix": "/", "headers": [{"name": "x-case", "string_match": {"exact": case}}]},
           "route": action})
}

/// The cases: (name, route action, the hosts that may answer; none: 503 UH).
fn cases() -> Vec<(&'static str, Value, Vec<&'static str>)> {
    let to =
        |cluster: &str, labels: Value| json!({"cluster": cluster, "metadata_match": lb(labels)});
    let v1 = vec!["v1-prod-a", "v1-prod-b", "v1-canary"];
    let all: Vec<&str> = HOSTS.iter().map(|h| h.0).collect();
    vec![
        ("v1", to("backend", json!({"version": "v1"})), v1.clone()),
        (
            "v2-canary",
            to("backend", json!({"version": "v2", "stage": "canary"})),
            vec!["v2-canary-a", "v2-canary-b"],
        ),
        // No host has stage `none`: the selector's KEYS_SUBSET falls back to version v1.
        (
            "keys-subset",
            to("backend", json!({"version": "v1", "stage": "none"})),
            v1,
        ),
        // Version v9: no subset; each cluster's fallback_policy.
        ("any", to("backend", json!({"version": "v9"})), all.clone()),
        (
            "default",
            to("backend_default", json!({"version": "v9"})),
            vec!["v1-prod-a", "v1-prod-b", "v2-prod"],
        ),
        ("none", to("backend_none", json!({"version": "v9"})), vec![]),
        // A key no selector has, and no criteria at all.
        (
            "no-selector",
            to("backend_none", json!({"color": "red"})),
            vec![],
        ),
        ("no-criteria", json!({"cluster": "backend"}), all),
        // The weighted cluster's version replaces the route's; the route's stage stays.
        (
            "weighted",
            json!({"weighted_clusters": {"clusters": [
                      {"name": "backend", "weight": 1, "metadata_match": lb(json!({"version": "v2"}))}]},
                   "metadata_match": lb(json!({"version": "v1", "stage": "canary"}))}),
            vec!["v2-canary-a", "v2-canary-b"],
        ),
    ]
}

fn subset_bootstrap(ups: &[HttpUpstream]) -> Value {
    let routes: Vec<Value> = cases()
        .into_iter()
        .map(|(c, a, _)| case_route(c, a))
        .collect();
    bootstrap(
        0,
        vec![http_listener(
            "subsets",
            0,
            hcm("subsets", any_host(json!(routes)), json!({})),
        )],
        vec![
            labelled_cluster(
                "backend",
                ups,
                json!({"subset_selectors": selectors(), "fallback_policy": "ANY_ENDPOINT"}),
            ),
            labelled_cluster(
                "backend_default",
                ups,
                json!({"subset_selectors": selectors(), "fallback_policy": "DEFAULT_SUBSET",
                       "default_subset": {"stage": "prod"}}),
            ),
            labelled_cluster(
                "backend_none",
                ups,
                json!({"subset_selectors": selectors(), "fallback_policy": "NO_FALLBACK"}),
            ),
        ],
    )
}

/// Pearson's chi-square of `counts` against an even spread.
fn chi_square(counts: &BTreeMap<String, usize>) -> f64 {
    let total: usize = counts.values().sum();
    let e = total as f64 / counts.len() as f64;
    counts.values().map(|n| (*n as f64 - e).powi(2) / e).sum()
}

/// What one case gave: the hosts that answered (or the local answers), and whether they
/// spread evenly.
#[derive(Debug, PartialEq)]
struct Outcome {
    hosts: BTreeSet<String>,
    even: bool,
}

fn run_case(port: u16, case: &str, expected: &[&str]) -> Outcome {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..5 {
        let mut conn = HttpConn::open(port);
        for _ in 0..REQUESTS / 5 {
            let r = conn
                .exchange(
                    "GET",
                    &request("GET", "/", &[("host", "s.test"), ("x-case", case)], b""),
                )
                .expect("a response");
            let answer = match r.status() {
                200 => r.text(),
                status => format!("{status} {}", r.text()),
            };
            *counts.entry(answer).or_default() += 1;
        }
    }
    let chi2 = chi_square(&counts);
    let df = counts.len().saturating_sub(1).min(5);
    let even = expected.is_empty() || chi2 < CHI2_P001[df];
    eprintln!("{case}: {counts:?}, chi-square {chi2:.2}");
    Outcome {
        hosts: counts.into_keys().collect(),
        even,
    }
}

/// The per-pick stats (the same through both proxies).
const PICK_STATS: [&str; 3] = [
    "lb_subsets_selected",
    "lb_subsets_fallback",
    "lb_subsets_fallback_panic",
];

/// Subsets of each cluster: v1, v2 and the four version/stage pairs.
const SUBSETS: i64 = 6;

#[test]
fn routes_reach_their_subsets_and_fallbacks_as_in_envoy() {
    let ups: Vec<HttpUpstream> = HOSTS
        .iter()
        .map(|&(name, _, _)| HttpUpstream::start(move |_| Reply::ok(name)))
        .collect();
    let b = subset_bootstrap(&ups);
    on_both("subset_lb", &b, |proxy| {
        let port = proxy.port("subsets");
        let mut outcomes = Vec::new();
        for (case, _, expected) in cases() {
            let outcome = run_case(port, case, &expected);
            let want: BTreeSet<String> = match expected.is_empty() {
                true => ["503 no healthy upstream".to_string()].into(),
                false => expected.iter().map(|h| h.to_string()).collect(),
            };
            assert_eq!(outcome.hosts, want, "{} {case}", proxy.kind.name());
            assert!(outcome.even, "{} {case}: uneven", proxy.kind.name());
            outcomes.push((case, outcome));
        }
        let stats = proxy.stats();
        let read = |cluster: &str, name: &str| {
            stats
                .get(&format!("cluster.{cluster}.{name}"))
                .copied()
                .unwrap_or(0)
        };
        let mut by_cluster: BTreeMap<String, i64> = BTreeMap::new();
        for cluster in ["backend", "backend_default", "backend_none"] {
            for name in PICK_STATS {
                by_cluster.insert(format!("{cluster}.{name}"), read(cluster, name));
            }
            by_cluster.insert(
                format!("{cluster}.upstream_cx_none_healthy"),
                read(cluster, "upstream_cx_none_healthy"),
            );
            // Each load balancer (an Envoy worker's, a shard's) counts its subsets: a multiple
            // of the cluster's, none removed.
            let (active, created) = (
                read(cluster, "lb_subsets_active"),
                read(cluster, "lb_subsets_created"),
            );
            eprintln!(
                "{} {cluster}: lb_subsets_active {active}, created {created}",
                proxy.kind.name()
            );
            let whole = active > 0 && active % SUBSETS == 0 && created == active;
            by_cluster.insert(
                format!("{cluster}.subsets counted per balancer"),
                i64::from(whole),
            );
            by_cluster.insert(
                format!("{cluster}.lb_subsets_removed"),
                read(cluster, "lb_subsets_removed"),
            );
            if proxy.kind == Kind::Shardproxy {
                assert_eq!(active, 2 * SUBSETS, "{cluster}: one count per shard");
            }
        }
        eprintln!("{}: {by_cluster:?}", proxy.kind.name());
        let n = REQUESTS as i64;
        // backend: v1, v2-canary, keys-subset (its fallback finds v1), weighted select; any
        // and no-criteria fall back.
        assert_eq!(by_cluster["backend.lb_subsets_selected"], 4 * n);
        assert_eq!(by_cluster["backend.lb_subsets_fallback"], 2 * n);
        assert_eq!(by_cluster["backend_default.lb_subsets_fallback"], n);
        assert_eq!(by_cluster["backend_none.lb_subsets_fallback"], 0);
        assert_eq!(by_cluster["backend_none.upstream_cx_none_healthy"], 2 * n);
        (outcomes, by_cluster)
    });
}

#[test]
fn invalid_subset_configs_are_refused() {
    let ups: Vec<HttpUpstream> = (0..HOSTS.len())
        .map(|_| HttpUpstream::start(|_| Reply::ok("x")))
        .collect();
    let cases = [
        (
            json!([{"keys": ["version"], "fallback_policy": "KEYS_SUBSET"}]),
            "fallback_keys_subset cannot be empty",
        ),
        (
            json!([{"keys": ["version"], "fallback_policy": "KEYS_SUBSET",
                    "fallback_keys_subset": ["stage"]}]),
            "fallback_keys_subset must be a subset of selector keys",
        ),
        (
            json!([{"keys": ["version", "stage"], "fallback_policy": "KEYS_SUBSET",
                    "fallback_keys_subset": ["stage", "version"]}]),
            "fallback_keys_subset cannot be equal to keys",
        ),
        (
            json!([{"keys": ["version"], "fallback_keys_subset": ["version"]}]),
            "fallback_keys_subset can be set only for KEYS_SUBSET fallback_policy",
        ),
        // Envoy skips a selector without keys; shardproxy refuses it.
        (json!([{"keys": []}]), "a selector needs at least one key"),
    ];
    let envoy = envoy_bin();
    if envoy.is_none() {
        skip(
            "invalid_subset_configs_are_refused",
            NO_ENVOY,
            Missing::Peer,
        );
    }
    for (selectors, error) in cases {
        let mut b = subset_bootstrap(&ups);
        b["static_resources"]["clusters"][0]["lb_subset_config"]["subset_selectors"] = selectors;
        let dir = TempDir::new("subset-invalid");
        let path = dir.file("bootstrap.yaml");
        fs::write(&path, to_yaml(&b)).unwrap();
        let validate = |bin: &std::path::Path| {
            let out = std::process::Command::new(bin)
                .args(["--mode", "validate", "-c"])
                .arg(&path)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
            (out.status.success(), text.into_owned())
        };
        let (ok, text) = validate(std::path::Path::new(BIN));
        assert!(!ok && text.contains(error), "shardproxy, {error}: {text}");
        if let Some(envoy) = &envoy {
            let (ok, text) = validate(envoy);
            match error.starts_with("a selector") {
                true => assert!(ok, "Envoy, {error}: {text}"),
                false => assert!(!ok && text.contains(error), "Envoy, {error}: {text}"),
            }
        }
    }
}

/// The EDS assignment of `svc`: hosts `a` and `b` (ports) labelled by `versions`.
fn labelled_assignment(ports: &[(u16, &str)]) -> Value {
    let lb_endpoints: Vec<Value> = ports
        .iter()
        .map(|(port, version)| {
            json!({"endpoint": {"address": socket_address(*port)},
                   "metadata": lb(json!({"version": version}))})
        })
        .collect();
    json!({"cluster_name": "svc", "endpoints": [{"lb_endpoints": lb_endpoints}]})
}

/// The upstreams `through` the listener names in 60 requests.
fn answering(port: u16) -> BTreeSet<String> {
    (0..60)
        .filter_map(|_| through(port))
        .map(|(up, _)| up)
        .collect()
}

#[test]
fn an_eds_update_moves_a_host_between_subsets() {
    let test = "an_eds_update_moves_a_host_between_subsets";
    let mut kinds = vec![Kind::Shardproxy];
    if have_envoy(test) {
        kinds.push(Kind::Envoy);
    }
    let mut seen = Vec::new();
    for kind in kinds {
        let upstreams = EchoUpstreams::start(&["a", "b", "c"], None);
        let (a, b, c) = (
            upstreams.port("a"),
            upstreams.port("b"),
            upstreams.port("c"),
        );
        let listen = free_port();
        let mut cluster = eds_cluster("svc");
        cluster["lb_subset_config"] = json!({"subset_selectors": [{"keys": ["version"]}],
                                             "fallback_policy": "NO_FALLBACK"});
        let mut routes = common::http::catch_all_routes(
            "svc",
            json!({"metadata_match": lb(json!({"version": "v2"}))}),
        );
        routes["response_headers_to_add"] =
            json!([{"header": {"key": "x-route-version", "value": "1"}}]);
        let listener = common::http::http_listener(
            "main",
            listen,
            common::http::hcm("ingress", routes, vec![], json!({})),
        );
        let set = json!({"resources": {
            LISTENER: [listener],
            CLUSTER: [cluster],
            ENDPOINT: [labelled_assignment(&[(a, "v1"), (b, "v1"), (c, "v2")])],
        }});
        let dir = TempDir::new("subset-eds");
        let script = dir.file("resources.json");
        fs::write(&script, set.to_string()).unwrap();
        let xds = XdsServer::start(&script);
        let node = "subset-eds";
        let bootstrap = ads_bootstrap(0, node, xds.ads_port, "DELTA_GRPC");
        let proxy = HttpProxy::start(kind, node, &bootstrap);
        wait_for(SOON, "traffic", || through(listen));
        let before = answering(listen);
        let versions = xds.push(&json!({"resources": {
            ENDPOINT: [labelled_assignment(&[(a, "v1"), (b, "v2"), (c, "v2")])]}}));
        xds.wait_ack(node, ENDPOINT, &versions[ENDPOINT]);
        let after = wait_for(SOON, "b in subset v2", || {
            let now = answering(listen);
            (now.len() == 2).then_some(now)
        });
        let stats = proxy.stats();
        let read = |n: &str| stats.get(&format!("cluster.svc.{n}")).copied().unwrap_or(0);
        eprintln!(
            "{kind:?}: before {before:?}, after {after:?}; created {}, removed {}, active {}",
            read("lb_subsets_created"),
            read("lb_subsets_removed"),
            read("lb_subsets_active")
        );
        seen.push((before, after));
    }
    let want: (BTreeSet<String>, BTreeSet<String>) =
        (["c".into()].into(), ["b".into(), "c".into()].into());
    for outcome in seen {
        assert_eq!(outcome, want);
    }
}

/// A cluster over two localities of weight 10: a (hosts a1 and a2 in v1, a3 and a4 in v2) and b
/// (b1 in v1), locality-weighted, subsets by version with `subset` merged in.
fn localities_bootstrap(ups: &[HttpUpstream], subset: Value) -> Value {
    let host = |up: &HttpUpstream, version: &str| {
        json!({"endpoint": {"address": socket_address(up.port)},
               "metadata": lb(json!({"version": version}))})
    };
    let mut lb_subset_config = json!({"subset_selectors": [{"keys": ["version"]}]});
    merge(&mut lb_subset_config, subset);
    let cluster = json!({
        "name": "backend",
        "type": "STATIC",
        "connect_timeout": "2s",
        "common_lb_config": {"locality_weighted_lb_config": {}},
        "lb_subset_config": lb_subset_config,
        "load_assignment": {"cluster_name": "backend", "endpoints": [
            {"locality": {"zone": "a"}, "load_balancing_weight": 10, "lb_endpoints": [
                host(&ups[0], "v1"), host(&ups[1], "v1"), host(&ups[2], "v2"), host(&ups[3], "v2")]},
            {"locality": {"zone": "b"}, "load_balancing_weight": 10, "lb_endpoints": [
                host(&ups[4], "v1")]},
        ]},
    });
    let route = case_route(
        "v1",
        json!({"cluster": "backend", "metadata_match": lb(json!({"version": "v1"}))}),
    );
    bootstrap(
        0,
        vec![http_listener(
            "subsets",
            0,
            hcm("subsets", any_host(json!([route])), json!({})),
        )],
        vec![cluster],
    )
}

#[test]
fn locality_weights_in_a_subset_follow_locality_weight_aware_and_scale_locality_weight() {
    let names = ["a1", "a2", "a3", "a4", "b1"];
    let ups: Vec<HttpUpstream> = names
        .iter()
        .map(|&name| HttpUpstream::start(move |_| Reply::ok(name)))
        .collect();
    // Subset v1: a1, a2 (of a's 4 hosts) and b1 (b's only host).
    let cases = [
        // Locality weights ignored: the three hosts alike.
        ("unaware", json!({}), [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]),
        // a and b weigh 10 each.
        (
            "aware",
            json!({"locality_weight_aware": true}),
            [0.25, 0.25, 0.5],
        ),
        // a scaled to round(10 × 2 / 4) = 5, b stays 10.
        (
            "scaled",
            json!({"locality_weight_aware": true, "scale_locality_weight": true}),
            [1.0 / 6.0, 1.0 / 6.0, 2.0 / 3.0],
        ),
    ];
    for (tag, subset, shares) in cases {
        let b = localities_bootstrap(&ups, subset);
        on_both(&format!("subset_{tag}"), &b, |proxy| {
            let port = proxy.port("subsets");
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..6 {
                let mut conn = HttpConn::open(port);
                for _ in 0..100 {
                    let r = conn
                        .exchange(
                            "GET",
                            &request("GET", "/", &[("host", "s.test"), ("x-case", "v1")], b""),
                        )
                        .expect("a response");
                    assert_eq!(r.status(), 200, "{}", r.text());
                    *counts.entry(r.text()).or_default() += 1;
                }
            }
            let total: usize = counts.values().sum();
            let chi2: f64 = ["a1", "a2", "b1"]
                .iter()
                .zip(shares)
                .map(|(host, share)| {
                    let e = total as f64 * share;
                    let n = counts.get(*host).copied().unwrap_or(0) as f64;
                    (n - e).powi(2) / e
                })
                .sum();
            eprintln!(
                "{tag} {}: {counts:?}, chi-square {chi2:.2}",
                proxy.kind.name()
            );
            assert!(chi2 < CHI2_P001[2], "{tag}: {counts:?} against {shares:?}");
            counts.into_keys().collect::<BTreeSet<String>>()
        });
    }
}
