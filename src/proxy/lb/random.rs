//! RANDOM: weighted random choice over cumulative weights (binary search per pick).
pub struct WeightedRandom {
    /// Cumulative weights; empty when all weights are equal (uniform choice).
    cumulative: Vec<u64>,
    len: usize,
}

impl WeightedRandom {
    pub fn new(weights: &[u64]) -> Self {
        let cumulative = if super::all_equal(weights) {
            Vec::new()
        } else {
            weights
                .iter()
                .scan(0u64, |sum, w| {
                    *sum += *w;
                    Some(*sum)
                })
                .collect()
        };
        Self {
            cumulative,
            len: weights.len(),
        }
    }

    /// Whether every host is equally likely.
    pub fn is_uniform(&self) -> bool {
        self.cumulative.is_empty()
    }

    pub fn pick(&self) -> usize {
        match self.cumulative.last() {
            None => fastrand::usize(0..self.len),
            Some(total) => {
                let point = fastrand::u64(0..*total);
                self.cumulative.partition_point(|c| *c <= point)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_weights() {
        let random = WeightedRandom::new(&[1, 0, 3]);
        let mut counts = [0usize; 3];
        (0..40_000).for_each(|_| counts[random.pick()] += 1);
        assert_eq!(counts[1], 0);
        let ratio = counts[2] as f64 / counts[0] as f64;
        assert!((2.7..3.3).contains(&ratio), "{counts:?}");
    }
}
