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

    pub fn pick(&self, hosts: &[Rc<Host>]) -> usize {
        let mut best = self.draw.pick();
        for _ in 1..self.choice_count {
            let candidate = self.draw.pick();
            if less_loaded(&hosts[candidate], &hosts[best]) {
                best = candidate;
            }
        }
        best
    }
}

/// `a.active / a.weight < b.active / b.weight`, without division.
fn less_loaded(a: &Host, b: &Host) -> bool {
    (a.active() as u64) * (b.endpoint.weight.max(1) as u64)
        < (b.active() as u64) * (a.endpoint.weight.max(1) as u64)
}
