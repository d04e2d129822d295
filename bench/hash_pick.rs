//! Micro-benchmark (consistent hashing): the CPU one request's host pick costs under
//! RING_HASH and MAGLEV — the header `hash_policy`'s xxHash64 plus the table lookup — against
//! ROUND_ROBIN's pick in the same run. The target: hashing adds at most 0.2 µs per
//! pick. Also the time to build each table (done when hosts or their health change, never per
//! request).
//!
//! Run: `cargo bench -p shardproxy --features bench --bench hash_pick`. On a shared machine a
//! dev build with the crate optimised is quicker and gives the same picture:
//! `cargo bench -p shardproxy --features bench --bench hash_pick --profile dev --config
//! 'profile.dev.opt-level=3' --config 'profile.dev.debug-assertions=false' --config
//! 'profile.dev.overflow-checks=false'`.
use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use shardproxy::bench::{policies, PickCase};

/// Distinct requests cycled through (distinct keys: no cache luck).
const REQUESTS: usize = 4096;

/// Nanoseconds per pick: the best of several rounds of at least `round` each.
fn ns_per_pick(case: &mut PickCase, round: Duration) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let (mut picks, started) = (0usize, Instant::now());
        while started.elapsed() < round {
            for i in 0..REQUESTS {
                black_box(case.pick(black_box(i)));
            }
            picks += REQUESTS;
        }
        best = best.min(started.elapsed().as_nanos() as f64 / picks as f64);
    }
    best
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let round = Duration::from_millis(if quick { 50 } else { 300 });
    println!("| hosts | policy | build ms | ns per pick | added ns vs ROUND_ROBIN |");
    println!("|---:|---|---:|---:|---:|");
    for hosts in [10, 100, 1000] {
        let mut baseline = 0.0;
        for (name, policy) in policies() {
            let mut case = PickCase::new(policy, hosts, REQUESTS);
            let build = case.built_in.as_secs_f64() * 1000.0;
            let ns = ns_per_pick(&mut case, round);
            if name == "ROUND_ROBIN" {
                baseline = ns;
            }
            println!(
                "| {hosts} | {name} | {build:.2} | {ns:.1} | {:+.1} |",
                ns - baseline
            );
        }
    }
}
