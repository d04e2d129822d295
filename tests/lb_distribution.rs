//! Tests: load balancing — round robin (exact on one shard, ±1 per shard on two), weighted
//! round robin, RANDOM, LEAST_REQUEST, and weighted_clusters, counted at real upstreams.
mod common;

use std::{collections::BTreeMap, net::TcpStream};

use common::*;
use serde_json::{json, Value};

/// Upstreams named by `ids`, each saying its name on connect.
fn hellos(ids: &[&str]) -> Vec<Upstream> {
    ids.iter().map(|id| Upstream::hello(id)).collect()
}

/// One connection: which upstream answered.
fn who(port: u16) -> String {
    let mut s = connect(port);
    let id = read_line(&mut s).unwrap();
    assert!(!id.is_empty(), "no upstream answered");
    id
}

fn tally(seq: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in seq {
        *m.entry(id.clone()).or_insert(0) += 1;
    }
    m
}

/// A proxy with one listener over one cluster of `ups` with `weights` and `cluster_extra`.
fn lb_proxy(
    tag: &str,
    ups: &[Upstream],
    weights: &[u32],
    cluster_extra: Value,
    concurrency: &str,
) -> (Proxy, u16) {
    let (l, admin) = (free_port(), free_port());
    let endpoints: Vec<(u16, u32)> = ups.iter().zip(weights).map(|(u, w)| (u.port, *w)).collect();
    let b = bootstrap(
        admin,
        vec![listener("lb", l, tcp_proxy("lb", "c", json!(null)))],
        vec![cluster("c", &endpoints, cluster_extra)],
    );
    (
        Proxy::builder(tag, &b)
            .args(&["--concurrency", concurrency])
            .start(),
        l,
    )
}

#[test]
fn round_robin_exact_on_one_shard() {
    let ups = hellos(&["a", "b", "c"]);
    let (proxy, l) = lb_proxy(
        "rr1",
        &ups,
        &[1, 1, 1],
        json!({"lb_policy": "ROUND_ROBIN"}),
        "1",
    );
    let seq: Vec<String> = (0..30).map(|_| who(l)).collect();
    let t = tally(&seq);
    assert_eq!(
        t.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "counts {t:?}, sequence {seq:?}"
    );
    // A strict rotation: the sequence repeats with period 3 and no host twice in a row.
    for i in 3..seq.len() {
        assert_eq!(seq[i], seq[i - 3], "not a rotation: {seq:?}");
    }
    proxy.wait_stat("cluster.c.upstream_cx_total", ">= 30", |v| v >= 30);
}

#[test]
fn round_robin_within_one_per_shard_on_two_shards() {
    let ups = hellos(&["a", "b", "c"]);
    let (_proxy, l) = lb_proxy(
        "rr2",
        &ups,
        &[1, 1, 1],
        json!({"lb_policy": "ROUND_ROBIN"}),
        "2",
    );
    let seq: Vec<String> = (0..60).map(|_| who(l)).collect();
    let t = tally(&seq);
    assert_eq!(t.len(), 3, "every host used: {t:?}");
    let (min, max) = (*t.values().min().unwrap(), *t.values().max().unwrap());
    // Each shard rotates on its own: per shard the counts differ by at most 1.
    assert!(
        max - min <= 2,
        "round robin over 2 shards is off by more than 1 per shard: {t:?}"
    );
}

#[test]
fn weighted_round_robin_exact_over_full_cycles() {
    let ups = hellos(&["w1", "w2", "w3"]);
    let (_proxy, l) = lb_proxy(
        "wrr",
        &ups,
        &[1, 2, 3],
        json!({"lb_policy": "ROUND_ROBIN"}),
        "1",
    );
    let seq: Vec<String> = (0..60).map(|_| who(l)).collect();
    let t = tally(&seq);
    let got: Vec<usize> = ["w1", "w2", "w3"]
        .iter()
        .map(|k| t.get(*k).copied().unwrap_or(0))
        .collect();
    assert_eq!(
        got,
        vec![10, 20, 30],
        "weights 1:2:3 over 10 full cycles; sequence {seq:?}"
    );
    // Every full cycle of 6 is itself 1:2:3.
    for (i, cycle) in seq.chunks(6).enumerate() {
        let c = tally(cycle);
        let got: Vec<usize> = ["w1", "w2", "w3"]
            .iter()
            .map(|k| c.get(*k).copied().unwrap_or(0))
            .collect();
        assert_eq!(got, vec![1, 2, 3], "cycle {i}: {cycle:?}");
    }
}

#[test]
fn random_uses_every_host_roughly_evenly() {
    let ups = hellos(&["a", "b", "c"]);
    let (_proxy, l) = lb_proxy(
        "random",
        &ups,
        &[1, 1, 1],
        json!({"lb_policy": "RANDOM"}),
        "2",
    );
    let seq: Vec<String> = (0..300).map(|_| who(l)).collect();
    let t = tally(&seq);
    assert_eq!(t.len(), 3, "every host used: {t:?}");
    for (id, n) in &t {
        assert!(
            (55..=145).contains(n),
            "RANDOM: host {id} got {n} of 300 (expected ~100): {t:?}"
        );
    }
    // Not a fixed rotation (a random policy that is really round robin would pass the counts).
    let rotation = (3..seq.len()).all(|i| seq[i] == seq[i - 3]);
    assert!(!rotation, "RANDOM picked in a strict rotation");
}

#[test]
fn least_request_balances_open_connections() {
    let ups = hellos(&["a", "b", "c"]);
    let (proxy, l) = lb_proxy(
        "leastreq",
        &ups,
        &[1, 1, 1],
        json!({"lb_policy": "LEAST_REQUEST"}),
        "1",
    );
    // Hold every connection open: active counts drive the choice.
    let mut held: Vec<(String, TcpStream)> = Vec::new();
    for _ in 0..30 {
        let mut s = connect(l);
        let id = read_line(&mut s).unwrap();
        held.push((id, s));
    }
    let t = tally(&held.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    assert_eq!(t.len(), 3, "every host used: {t:?}");
    for (id, n) in &t {
        assert!(
            (6..=14).contains(n),
            "LEAST_REQUEST: host {id} holds {n} of 30 open connections: {t:?}"
        );
    }
    proxy.wait_stat("cluster.c.upstream_cx_active", "30 open", |v| v == 30);
    // Close all of b's connections: the next ones should mostly go to b (the least loaded).
    held.retain(|(id, _)| id != "b");
    proxy.wait_stat(
        "cluster.c.upstream_cx_active",
        "b's connections closed",
        |v| v == 30 - t["b"] as i64,
    );
    // P2C picks b whenever b is one of its two choices (2/3 of the time); a full scan always.
    let next: Vec<String> = (0..12)
        .map(|_| {
            let mut s = connect(l);
            let id = read_line(&mut s).unwrap();
            held.push((id.clone(), s));
            id
        })
        .collect();
    let to_b = next.iter().filter(|id| *id == "b").count();
    assert!(
        to_b >= 4,
        "after b emptied, only {to_b} of 12 new connections went to b: {next:?}"
    );
}

#[test]
fn weighted_clusters_80_20() {
    let (a, b) = (Upstream::hello("a"), Upstream::hello("b"));
    let (l, admin) = (free_port(), free_port());
    let split = json!({
        "@type": TCP_PROXY,
        "stat_prefix": "split",
        "weighted_clusters": {"clusters": [{"name": "ca", "weight": 80}, {"name": "cb", "weight": 20}]},
    });
    let bs = bootstrap(
        admin,
        vec![listener("split", l, split)],
        vec![
            cluster("ca", &[(a.port, 1)], json!(null)),
            cluster("cb", &[(b.port, 1)], json!(null)),
        ],
    );
    let proxy = Proxy::start("weighted_clusters", &bs);
    let n = 500;
    let seq: Vec<String> = (0..n).map(|_| who(l)).collect();
    let t = tally(&seq);
    let to_a = t.get("a").copied().unwrap_or(0);
    assert!(
        (340..=460).contains(&to_a),
        "weighted_clusters 80/20: {to_a} of {n} to the 80% cluster: {t:?}"
    );
    assert_eq!(to_a + t.get("b").copied().unwrap_or(0), n);
    proxy.wait_stat("cluster.ca.upstream_cx_total", &format!("{to_a}"), |v| {
        v == to_a as i64
    });
    proxy.wait_stat(
        "cluster.cb.upstream_cx_total",
        &format!("{}", n - to_a),
        |v| v == (n - to_a) as i64,
    );
}
