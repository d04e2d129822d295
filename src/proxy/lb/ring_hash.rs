//! RING_HASH: Ketama's ring as Envoy builds it — each host gets points in proportion to its
//! weight (keys `<host key>_<n>`), sorted by hash; a request's hash goes to the first point at
//! or after it, wrapping around.
use std::io::Write;

use model::{RingHash, RingHashFunction};

use super::{
    consistent::Weighted,
    hash::{murmur2_64, xx64, MURMUR_SEED},
};

pub struct Ring {
    /// Point hashes, ascending.
    hashes: Box<[u64]>,
    /// The host (its place in the tier) at each point.
    hosts: Box<[u32]>,
}

impl Ring {
    pub fn new(weighted: &[Weighted], config: &RingHash) -> Self {
        if weighted.is_empty() {
            return Self {
                hashes: Box::new([]),
                hosts: Box::new([]),
            };
        }
        let lightest = weighted.iter().map(|w| w.weight).fold(1.0, f64::min);
        // The lightest host gets a whole number of points (at least the minimum ring size in
        // all), unless that exceeds the maximum.
        let scale = ((lightest * config.minimum_ring_size as f64).ceil() / lightest)
            .min(config.maximum_ring_size as f64);
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(scale.ceil() as usize);
        let (mut made, mut target) = (0.0f64, 0.0f64);
        let mut key = Vec::with_capacity(64);
        for host in weighted {
            // Running sums: a host's fractional share of points carries over to the next.
            target += scale * host.weight;
            let mut n = 0u64;
            while made < target {
                key.clear();
                let _ = write!(key, "{}_{n}", host.key);
                let hash = match config.hash_function {
                    RingHashFunction::XxHash => xx64(&key, 0),
                    RingHashFunction::MurmurHash2 => murmur2_64(&key, MURMUR_SEED),
                };
                points.push((hash, host.index));
                n += 1;
                made += 1.0;
            }
        }
        points.sort_unstable();
        Self {
            hashes: points.iter().map(|p| p.0).collect(),
            hosts: points.iter().map(|p| p.1).collect(),
        }
    }

    /// The host at the first point at or after `hash` (the first point past the last one);
    /// retry `attempt`s step on to the following points.
    pub fn pick(&self, hash: u64, attempt: u32) -> Option<usize> {
        if self.hashes.is_empty() {
            return None;
        }
        let at = match self.hashes.partition_point(|h| *h < hash) {
            end if end == self.hashes.len() => 0,
            at => at,
        };
        let at = (at + attempt as usize) % self.hashes.len();
        Some(self.hosts[at] as usize)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.hashes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weighted(weights: &[f64]) -> Vec<Weighted> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Weighted {
                index: i as u32,
                key: format!("10.0.0.1:{}", 80 + i).into(),
                weight: *w,
            })
            .collect()
    }

    fn config(min: u64, max: u64) -> RingHash {
        RingHash {
            minimum_ring_size: min,
            maximum_ring_size: max,
            hash_function: RingHashFunction::XxHash,
            use_hostname: false,
        }
    }

    fn points_per_host(ring: &Ring, hosts: usize) -> Vec<usize> {
        let mut counts = vec![0; hosts];
        ring.hosts.iter().for_each(|h| counts[*h as usize] += 1);
        counts
    }

    #[test]
    fn points_follow_weights_and_the_size_bounds() {
        let ring = Ring::new(&weighted(&[0.25; 4]), &config(1024, 8 << 20));
        assert_eq!(points_per_host(&ring, 4), [256; 4]);
        // Four hosts at 1.5 points each: running sums give 2, 1, 2, 1 (Envoy's own example).
        let ring = Ring::new(&weighted(&[0.25; 4]), &config(1, 6));
        assert_eq!(points_per_host(&ring, 4), [1; 4]);
        let ring = Ring::new(&weighted(&[0.25; 4]), &config(6, 6));
        assert_eq!(points_per_host(&ring, 4), [2, 1, 2, 1]);
        // The lightest host gets a whole number of points: 1/6 of 1024 -> 171 points.
        let ring = Ring::new(&weighted(&[1.0 / 6.0, 5.0 / 6.0]), &config(1024, 8 << 20));
        assert_eq!(points_per_host(&ring, 2), [171, 855]);
        assert_eq!(ring.len(), 1026);
    }

    #[test]
    fn picks_the_next_point_and_wraps() {
        let ring = Ring::new(&weighted(&[0.5, 0.5]), &config(4, 4));
        let hashes = ring.hashes.clone();
        assert!(hashes.windows(2).all(|w| w[0] <= w[1]));
        let host_at = |i: usize| Some(ring.hosts[i] as usize);
        assert_eq!(ring.pick(hashes[1], 0), host_at(1));
        assert_eq!(ring.pick(hashes[1] + 1, 0), host_at(2));
        assert_eq!(ring.pick(0, 0), host_at(0));
        assert_eq!(ring.pick(hashes[3] + 1, 0), host_at(0));
        assert_eq!(ring.pick(hashes[1], 1), host_at(2));
        assert_eq!(ring.pick(hashes[3], 1), host_at(0));
        assert!(Ring::new(&[], &config(4, 4)).pick(1, 0).is_none());
    }

    #[test]
    fn murmur_builds_other_points() {
        let xx = Ring::new(&weighted(&[0.5, 0.5]), &config(8, 8));
        let murmur_config = RingHash {
            hash_function: RingHashFunction::MurmurHash2,
            ..config(8, 8)
        };
        let murmur = Ring::new(&weighted(&[0.5, 0.5]), &murmur_config);
        assert_eq!(murmur.len(), 8);
        assert_ne!(xx.hashes, murmur.hashes);
    }
}
