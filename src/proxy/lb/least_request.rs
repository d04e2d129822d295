//! LEAST_REQUEST: draw `choice_count` candidates (weighted) and take the one with the fewest
//! active requests per unit of weight (power of two choices by default).
use std::rc::Rc;

use super::random::WeightedRandom;
use crate::proxy::cluster_manager::Host;

pub struct LeastRequest {
    draw: WeightedRandom,
    choice_count: u32,
}

impl LeastRequest {
    pub fn new(draw: WeightedRandom, choice_count: u32) -> Self {
        Self {
            draw,
            choice_count: choice_count.max(1),
        }
    }

    /// A new weighted draw (slow start's weights).
    pub fn reweigh(&mut self, draw: WeightedRandom) {
        self.draw = draw;
    }

    pub fn pick(&self, hosts: &[Rc<Host>]) -> usize {
        let mut best = self.draw.pick();
        for _ in 1..self.choice_count {
            let candidate = self.other_than(best, hosts.len());
            if less_loaded(&hosts[candidate], &hosts[best]) {
                best = candidate;
            }
        }
        best
    }

    /// A candidate different from `taken` when the draw is uniform (with two hosts or more), so
    /// the least loaded host is among two candidates 2/3 of the time over 3 hosts, not 5/9.
    fn other_than(&self, taken: usize, len: usize) -> usize {
        match self.draw.is_uniform() && len > 1 {
            true => (taken + 1 + fastrand::usize(0..len - 1)) % len,
            false => self.draw.pick(),
        }
    }
}

/// `a.active / a.weight < b.active / b.weight`, without division.
fn less_loaded(a: &Host, b: &Host) -> bool {
    (a.active() as u64) * (b.endpoint.weight.max(1) as u64)
        < (b.active() as u64) * (a.endpoint.weight.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use model::Endpoint;

    use super::*;
    use crate::proxy::cluster_manager::ActiveHost;

    #[test]
    fn two_distinct_candidates_find_the_idle_host() {
        let hosts: Vec<Rc<Host>> = (0..3)
            .map(|i| Rc::new(Host::new(Endpoint::new(([127, 0, 0, 1], 1000 + i).into()))))
            .collect();
        let _busy: Vec<ActiveHost> = [0, 2]
            .iter()
            .flat_map(|&i| (0..10).map(move |_| i))
            .map(|i| ActiveHost::new(hosts[i].clone()))
            .collect();
        let lr = LeastRequest::new(WeightedRandom::new(&[1, 1, 1]), 2);
        let to_idle = (0..3000).filter(|_| lr.pick(&hosts) == 1).count();
        // Host 1 is one of the two distinct candidates in 2/3 of picks, and then always wins.
        assert!((1800..2200).contains(&to_idle), "{to_idle}");
    }
}
