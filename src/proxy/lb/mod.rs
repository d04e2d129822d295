//! Load balancers: shard-local state per cluster; each picks an index into the host list.
mod consistent;
mod hash;
pub mod host_set;
mod least_request;
mod maglev;
mod random;
mod ring_hash;
mod round_robin;
pub mod subset;
pub mod zone;

pub use hash::{xx64, xx64_chain};

use std::{collections::HashMap, rc::Rc};

use model::LbPolicy;

use self::{
    consistent::HashTable, least_request::LeastRequest, random::WeightedRandom,
    round_robin::RoundRobin,
};
use super::cluster_manager::Host;

pub enum Balancer {
    RoundRobin(RoundRobin),
    Random(WeightedRandom),
    LeastRequest(LeastRequest),
    /// RING_HASH and MAGLEV.
    Hash(HashTable),
}

/// What one pick goes by: the request's hash (consistent-hash balancers; none: a random one)
/// and which try of host selection this is (0 first).
#[derive(Debug, Clone, Copy, Default)]
pub struct PickKey {
    pub hash: Option<u64>,
    pub attempt: u32,
}

impl Balancer {
    /// Fresh state for `hosts` (of a priority whose hosts are `all`); `shard` staggers
    /// round-robin starts so shards spread out. `locality_weighted`: hosts share by their
    /// locality's weight first (`weights`).
    pub fn new(
        policy: LbPolicy,
        hosts: &[Rc<Host>],
        all: &[Rc<Host>],
        locality_weighted: bool,
        shard: usize,
    ) -> Self {
        if policy.hashes() {
            return Self::Hash(HashTable::new(policy, hosts, all, locality_weighted));
        }
        let weights = weights(hosts, locality_weighted);
        match policy {
            LbPolicy::RoundRobin => Self::RoundRobin(RoundRobin::new(&weights, shard)),
            LbPolicy::Random => Self::Random(WeightedRandom::new(&weights)),
            LbPolicy::LeastRequest { choice_count } => Self::LeastRequest(LeastRequest::new(
                WeightedRandom::new(&weights),
                choice_count,
            )),
            // An ORIGINAL_DST cluster has no hosts to balance: it picks by destination
            // (`ShardCluster::destination_host`).
            LbPolicy::ClusterProvided => Self::RoundRobin(RoundRobin::new(&weights, shard)),
            LbPolicy::RingHash(_) | LbPolicy::Maglev { .. } => unreachable!("built above"),
        }
    }

    /// New weights for the same hosts (slow start); consistent-hash tables keep theirs (slow
    /// start does not apply to them).
    pub fn reweigh(&mut self, weights: &[u64]) {
        match self {
            Self::RoundRobin(rr) => rr.reweigh(weights),
            Self::Random(random) => *random = WeightedRandom::new(weights),
            Self::LeastRequest(lr) => lr.reweigh(WeightedRandom::new(weights)),
            Self::Hash(_) => {}
        }
    }

    /// The next host's index; a consistent-hash balancer's for `hash`.
    pub fn pick(&mut self, hosts: &[Rc<Host>], hash: u64, attempt: u32) -> Option<usize> {
        if hosts.is_empty() {
            return None;
        }
        Some(match self {
            Self::RoundRobin(rr) => rr.pick(),
            Self::Random(random) => random.pick(),
            Self::LeastRequest(lr) => lr.pick(hosts),
            Self::Hash(table) => return table.pick(hash, attempt),
        })
    }
}

/// What a host weighs when picked. Under locality weighting, a host's share of all requests
/// is its locality's share of the locality weights times its share of its locality's host
/// weights, as Envoy's pick of a locality and then a host within it gives on average. A
/// locality without a weight takes nothing, unless none has one: then, as in Envoy, the hosts
/// are balanced as if localities were not weighted.
pub fn weights(hosts: &[Rc<Host>], locality_weighted: bool) -> Vec<u64> {
    let own: Vec<u64> = hosts
        .iter()
        .map(|h| u64::from(h.endpoint.weight.max(1)))
        .collect();
    if !locality_weighted || hosts.iter().all(|h| h.endpoint.locality.weight == 0) {
        return own;
    }
    let mut totals: HashMap<u32, u64> = HashMap::new();
    for (host, weight) in hosts.iter().zip(&own) {
        *totals.entry(host.endpoint.locality.index).or_default() += *weight;
    }
    let shares: Vec<f64> = hosts
        .iter()
        .zip(&own)
        .map(|(h, w)| {
            let locality = h.endpoint.locality;
            f64::from(locality.weight) * *w as f64 / totals[&locality.index] as f64
        })
        .collect();
    let largest = shares.iter().copied().fold(0.0, f64::max);
    shares
        .iter()
        .map(|share| match share {
            0.0 => 0,
            share => ((share / largest) * LOCALITY_SCALE).round().max(1.0) as u64,
        })
        .collect()
}

/// The weight of the heaviest host under locality weighting: the others' are rounded against
/// it (shares kept to one part in a million).
const LOCALITY_SCALE: f64 = 1_000_000.0;

fn all_equal(weights: &[u64]) -> bool {
    weights.windows(2).all(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    use model::{Endpoint, Locality};

    use super::*;

    fn host(port: u16, weight: u32, locality: (u32, u32)) -> Rc<Host> {
        Rc::new(Host::new(Endpoint {
            weight,
            locality: Locality {
                index: locality.0,
                weight: locality.1,
            },
            ..Endpoint::new(([127, 0, 0, 1], port).into())
        }))
    }

    #[test]
    fn locality_weights_split_before_host_weights() {
        // Locality 0 (weight 3) has two hosts weighing 1 and 2; locality 1 (weight 1) one host;
        // locality 2 has no weight.
        let hosts = [
            host(1, 1, (0, 3)),
            host(2, 2, (0, 3)),
            host(3, 5, (1, 1)),
            host(4, 1, (2, 0)),
        ];
        let shares = weights(&hosts, true);
        let total: u64 = shares.iter().sum();
        let share = |i: usize| shares[i] as f64 / total as f64;
        assert!((share(0) - 0.25).abs() < 1e-6, "{shares:?}");
        assert!((share(1) - 0.5).abs() < 1e-6, "{shares:?}");
        assert!((share(2) - 0.25).abs() < 1e-6, "{shares:?}");
        assert_eq!(shares[3], 0);
        // Without locality weighting, or with no locality weighted, the hosts' own weights.
        assert_eq!(weights(&hosts, false), [1, 2, 5, 1]);
        let unweighted = [host(1, 1, (0, 0)), host(2, 2, (1, 0))];
        assert_eq!(weights(&unweighted, true), [1, 2]);
    }

    #[test]
    fn a_locality_without_weight_is_never_picked() {
        let hosts = [host(1, 1, (0, 1)), host(2, 1, (1, 0)), host(3, 1, (2, 1))];
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest { choice_count: 2 },
        ] {
            let mut balancer = Balancer::new(policy, &hosts, &hosts, true, 0);
            let picks: Vec<usize> = (0..300)
                .filter_map(|_| balancer.pick(&hosts, 0, 0))
                .collect();
            assert!(picks.iter().all(|&i| i != 1), "{policy:?}");
            assert!(picks.contains(&0) && picks.contains(&2), "{policy:?}");
        }
    }
}
