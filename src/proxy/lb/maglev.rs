//! MAGLEV: Maglev's lookup table (Eisenbud et al., 2016) with Envoy's weighting — hosts in
//! order of their keys take turns claiming their next preferred free slot, a host of lower
//! weight skipping turns; a request's hash indexes the table.
use super::{consistent::Weighted, hash::xx64};

/// A slot no host has claimed yet (only while building).
const FREE: u32 = u32::MAX;

pub struct Maglev {
    /// The host (its place in the tier) in each slot; empty without hosts.
    table: Box<[u32]>,
}

/// A host claiming slots: its preference list is `offset + skip × next` modulo the size.
struct Claimant<'a> {
    host: &'a Weighted,
    offset: u64,
    skip: u64,
    next: u64,
    /// The weight it must reach before its next turn.
    target: f64,
}

impl Maglev {
    pub fn new(weighted: &[Weighted], size: u64) -> Self {
        if weighted.is_empty() {
            return Self {
                table: Box::new([]),
            };
        }
        let mut sorted: Vec<&Weighted> = weighted.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key).then(a.index.cmp(&b.index)));
        let heaviest = weighted.iter().map(|w| w.weight).fold(0.0, f64::max);
        let mut claimants: Vec<Claimant> = sorted
            .into_iter()
            .map(|host| Claimant {
                host,
                offset: xx64(host.key.as_bytes(), 0) % size,
                skip: xx64(host.key.as_bytes(), 1) % (size - 1) + 1,
                next: 0,
                target: 0.0,
            })
            .collect();
        let mut table = vec![FREE; size as usize];
        let mut filled = 0;
        let mut round = 1u32;
        while filled < size {
            for claimant in &mut claimants {
                if filled == size {
                    break;
                }
                // The heaviest host claims every round, one of a third its weight every third.
                if f64::from(round) * claimant.host.weight < claimant.target {
                    continue;
                }
                claimant.target += heaviest;
                let mut slot = claimant.slot(size);
                while table[slot] != FREE {
                    claimant.next += 1;
                    slot = claimant.slot(size);
                }
                table[slot] = claimant.host.index;
                claimant.next += 1;
                filled += 1;
            }
            round += 1;
        }
        Self {
            table: table.into(),
        }
    }

    /// The host in `hash`'s slot; a retry `attempt` flips most of the hash's bits first.
    pub fn pick(&self, hash: u64, attempt: u32) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let hash = match attempt {
            0 => hash,
            n => hash ^ (u64::MAX - u64::from(n) + 1),
        };
        Some(self.table[(hash % self.table.len() as u64) as usize] as usize)
    }
}

impl Claimant<'_> {
    fn slot(&self, size: u64) -> usize {
        ((self.offset + self.skip * self.next) % size) as usize
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
                key: format!("10.0.0.{}:80", i + 1).into(),
                weight: *w,
            })
            .collect()
    }

    fn slots(maglev: &Maglev, hosts: usize) -> Vec<usize> {
        let mut counts = vec![0; hosts];
        maglev.table.iter().for_each(|h| counts[*h as usize] += 1);
        counts
    }

    #[test]
    fn every_slot_is_claimed_in_proportion_to_weight() {
        let maglev = Maglev::new(&weighted(&[0.25; 4]), 65537);
        let counts = slots(&maglev, 4);
        assert_eq!(counts.iter().sum::<usize>(), 65537);
        assert!(
            counts.iter().all(|c| (16384..=16385).contains(c)),
            "{counts:?}"
        );
        let maglev = Maglev::new(&weighted(&[0.25, 0.75]), 65537);
        let counts = slots(&maglev, 2);
        assert!((16383..=16385).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn removing_a_host_moves_only_its_slots() {
        let before = Maglev::new(&weighted(&[0.25; 4]), 65537);
        let mut three = weighted(&[1.0 / 3.0; 4]);
        three.remove(2);
        let after = Maglev::new(&three, 65537);
        let moved = before
            .table
            .iter()
            .zip(after.table.iter())
            .filter(|(b, a)| **b != 2 && b != a)
            .count();
        // Maglev is not perfectly stable: a small share of other slots moves too.
        assert!(moved < 65537 / 20, "{moved} slots of kept hosts moved");
    }

    #[test]
    fn retries_flip_the_hash() {
        let maglev = Maglev::new(&weighted(&[0.5, 0.5]), 7);
        assert_eq!(maglev.pick(3, 0), Some(maglev.table[3] as usize));
        let flipped = (3u64 ^ u64::MAX) % 7;
        assert_eq!(
            maglev.pick(3, 1),
            Some(maglev.table[flipped as usize] as usize)
        );
        assert!(Maglev::new(&[], 7).pick(3, 0).is_none());
    }
}
