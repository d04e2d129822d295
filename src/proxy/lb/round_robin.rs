//! ROUND_ROBIN: plain rotation when weights are equal; smooth weighted round robin otherwise
//! (each pick raises every host's credit by its weight and takes the host with the most).
pub struct RoundRobin {
    next: usize,
    /// Per-host (weight, credit); empty when all weights are equal.
    weighted: Vec<(i64, i64)>,
    total: i64,
    len: usize,
}

impl RoundRobin {
    pub fn new(weights: &[u64], shard: usize) -> Self {
        let len = weights.len();
        let mut rr = Self {
            next: if len == 0 { 0 } else { shard % len },
            weighted: Vec::new(),
            total: 0,
            len,
        };
        rr.reweigh(weights);
        rr
    }

    /// New weights for the same hosts; each keeps its credit, so the rotation carries on.
    pub fn reweigh(&mut self, weights: &[u64]) {
        if super::all_equal(weights) {
            self.weighted.clear();
        } else {
            self.weighted.resize(weights.len(), (0, 0));
            for ((weight, _), new) in self.weighted.iter_mut().zip(weights) {
                *weight = *new as i64;
            }
        }
        self.total = weights.iter().map(|w| *w as i64).sum();
    }

    pub fn pick(&mut self) -> usize {
        if self.weighted.is_empty() {
            let index = self.next;
            self.next = (self.next + 1) % self.len;
            return index;
        }
        let (mut best, mut best_credit) = (0, i64::MIN);
        for (i, (weight, credit)) in self.weighted.iter_mut().enumerate() {
            *credit += *weight;
            if *credit > best_credit {
                (best, best_credit) = (i, *credit);
            }
        }
        self.weighted[best].1 -= self.total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(weights: &[u64], picks: usize) -> Vec<usize> {
        let mut rr = RoundRobin::new(weights, 0);
        let mut counts = vec![0; weights.len()];
        (0..picks).for_each(|_| counts[rr.pick()] += 1);
        counts
    }

    #[test]
    fn equal_weights_rotate() {
        let mut rr = RoundRobin::new(&[1, 1, 1], 1);
        assert_eq!([rr.pick(), rr.pick(), rr.pick(), rr.pick()], [1, 2, 0, 1]);
    }

    #[test]
    fn weights_are_exact_per_cycle_and_interleaved() {
        assert_eq!(counts(&[5, 1, 1], 70), vec![50, 10, 10]);
        let mut rr = RoundRobin::new(&[2, 1], 0);
        assert_eq!([rr.pick(), rr.pick(), rr.pick()], [0, 1, 0]);
    }

    #[test]
    fn new_weights_take_effect_without_restarting() {
        let mut rr = RoundRobin::new(&[1, 1], 0);
        rr.reweigh(&[3, 1]);
        let mut counts = [0; 2];
        (0..40).for_each(|_| counts[rr.pick()] += 1);
        assert_eq!(counts, [30, 10]);
        rr.reweigh(&[1, 1]);
        assert_ne!(rr.pick(), rr.pick());
    }
}
