//! Micro-benchmark (subset load balancing): the CPU one request's host pick costs through a
//! subset-balanced cluster — the lookup of the route's criteria among the subsets, then the
//! subset's own ROUND_ROBIN — against a plain ROUND_ROBIN pick over as many hosts in the same
//! run: a subset found at once, one found through a selector's `KEYS_SUBSET` fallback, and the
//! cluster's fallback (no subset).
//!
//! Run: `cargo bench -p shardproxy --features bench --bench subset_pick` (or with the dev
//! profile optimised, as `hash_pick.rs` says).
use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use serde_json::json;
use shardproxy::bench::{PickCase, SubsetPickCase};

/// Hosts in the subset-balanced cluster: 10 versions of 10 hosts.
const HOSTS: usize = 100;

/// Nanoseconds per pick: the best of several rounds of at least `round` each.
fn ns_per_pick(mut pick: impl FnMut() -> u16, round: Duration) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let (mut picks, started) = (0usize, Instant::now());
        while started.elapsed() < round {
            for _ in 0..1024 {
                black_box(pick());
            }
            picks += 1024;
        }
        best = best.min(started.elapsed().as_nanos() as f64 / picks as f64);
    }
    best
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let round = Duration::from_millis(if quick { 50 } else { 300 });
    let mut plain = PickCase::new(shardproxy::bench::policies()[0].1, HOSTS / 10, 1);
    let baseline = ns_per_pick(|| plain.pick(0), round);
    println!(
        "plain ROUND_ROBIN over {} hosts: {baseline:.1} ns/pick",
        HOSTS / 10
    );
    let cases = [
        ("subset {version: v3}", json!({"version": "v3"})),
        (
            "KEYS_SUBSET {version: v3, stage: none} -> {version: v3}",
            json!({"version": "v3", "stage": "none"}),
        ),
        (
            "no subset {version: v99}: every host",
            json!({"version": "v99"}),
        ),
    ];
    for (name, criteria) in cases {
        let mut case = SubsetPickCase::new(HOSTS, &criteria);
        assert_ne!(case.pick(), 0, "{name}: no host");
        let ns = ns_per_pick(|| case.pick(), round);
        println!(
            "{name}: {ns:.1} ns/pick, {:.2}x the plain pick (+{:.1} ns)",
            ns / baseline,
            ns - baseline
        );
    }
}
