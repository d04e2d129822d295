//! Stats: per-status-code counters (`<scope>.<field>_<code>`, e.g. `cluster.a.upstream_rq_200`)
//! — one counter per code 100–599 per shard, allocated when the shard first records one, read
//! as the sum over shards and listed only for codes that occurred, as Envoy lists them.
use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    OnceLock,
};

use super::{inc, StatKind, StatValue};

/// The lowest and one past the highest code counted.
const FIRST: u16 = 100;
const END: u16 = 600;
const CODES: usize = (END - FIRST) as usize;

/// One shard's counters by status code; empty (one pointer) until the shard records a code.
#[derive(Debug, Default)]
pub struct StatusCodeCell(OnceLock<Box<[AtomicU64]>>);

impl StatusCodeCell {
    /// Appends, for every code some shard recorded, `<name>_<code>` summed over `shards`.
    pub fn read_sum<'a>(
        name: &str,
        shards: impl Iterator<Item = &'a StatusCodeCell>,
        out: &mut Vec<StatValue>,
    ) {
        let tables: Vec<&[AtomicU64]> = shards.filter_map(|s| s.0.get().map(|t| &t[..])).collect();
        if tables.is_empty() {
            return;
        }
        for (i, code) in (FIRST..END).enumerate() {
            let sum = tables
                .iter()
                .fold(0u64, |acc, t| acc.wrapping_add(t[i].load(Relaxed)));
            if sum != 0 {
                out.push(StatValue {
                    name: format!("{name}_{code}"),
                    kind: StatKind::Counter,
                    value: sum as i64,
                });
            }
        }
    }
}

/// Counts `code` in the calling shard's cell; codes outside 100–599 are not counted.
#[inline]
pub fn record_status(cell: &StatusCodeCell, code: u16) {
    if !(FIRST..END).contains(&code) {
        return;
    }
    let table = cell
        .0
        .get_or_init(|| (0..CODES).map(|_| AtomicU64::new(0)).collect());
    inc(&table[usize::from(code - FIRST)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(cells: &[StatusCodeCell]) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        StatusCodeCell::read_sum("cluster.a.upstream_rq", cells.iter(), &mut out);
        out.into_iter()
            .inspect(|s| assert_eq!(s.kind, StatKind::Counter))
            .map(|s| (s.name, s.value))
            .collect()
    }

    #[test]
    fn codes_sum_over_shards_and_only_those_seen_are_listed() {
        let shards = [StatusCodeCell::default(), StatusCodeCell::default()];
        assert!(read(&shards).is_empty());
        assert!(
            shards[0].0.get().is_none(),
            "nothing allocated before a code"
        );
        record_status(&shards[0], 200);
        record_status(&shards[1], 200);
        record_status(&shards[1], 404);
        record_status(&shards[0], 100);
        record_status(&shards[0], 599);
        assert!(shards[0].0.get().is_some());
        assert_eq!(
            read(&shards),
            [
                ("cluster.a.upstream_rq_100".to_string(), 1),
                ("cluster.a.upstream_rq_200".to_string(), 2),
                ("cluster.a.upstream_rq_404".to_string(), 1),
                ("cluster.a.upstream_rq_599".to_string(), 1),
            ]
        );
    }

    #[test]
    fn codes_outside_100_to_599_are_not_counted() {
        let shards = [StatusCodeCell::default()];
        for code in [0, 99, 600, 999] {
            record_status(&shards[0], code);
        }
        assert!(read(&shards).is_empty());
    }
}
