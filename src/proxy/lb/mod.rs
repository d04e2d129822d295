//! Load balancers: shard-local state per cluster; each picks an index into the host list.
mod least_request;
mod random;
mod round_robin;

use std::rc::Rc;

use model::LbPolicy;

use self::{least_request::LeastRequest, random::WeightedRandom, round_robin::RoundRobin};
use super::cluster_manager::Host;

pub enum Balancer {
    RoundRobin(RoundRobin),
    Random(WeightedRandom),
    LeastRequest(LeastRequest),
}

impl Balancer {
    /// Fresh state for `hosts`; `shard` staggers round-robin starts so shards spread out.
    pub fn new(policy: LbPolicy, hosts: &[Rc<Host>], shard: usize) -> Self {
        let weights: Vec<u32> = hosts.iter().map(|h| h.endpoint.weight.max(1)).collect();
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
        }
    }

    pub fn pick(&mut self, hosts: &[Rc<Host>]) -> Option<usize> {
        if hosts.is_empty() {
            return None;
        }
        Some(match self {
            Self::RoundRobin(rr) => rr.pick(),
            Self::Random(random) => random.pick(),
            Self::LeastRequest(lr) => lr.pick(hosts),
        })
    }
}

fn all_equal(weights: &[u32]) -> bool {
    weights.windows(2).all(|w| w[0] == w[1])
}
