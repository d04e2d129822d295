//! Stats layer: latency histograms. A shard records into its own cell (a bucket index and two
//! single-writer relaxed stores); the agent merges the shards' cells into snapshots that answer
//! Envoy's percentiles and Prometheus buckets.
//!
//! Values are recorded in microseconds and reported in milliseconds (Envoy's unit for `*_time`
//! and `*_ms`). Buckets keep two significant decimal digits, as Envoy's circllhist does: exact
//! below 100 µs, then 90 buckets per decade, `[m·10^e, (m+1)·10^e)` for `m` in 10..=99, up to
//! 10^11 µs (about 28 hours); larger values share one overflow bucket. A bucket is at most 10 %
//! of its lower edge wide (1 % at the top of a decade), and percentiles interpolate linearly
//! inside it. Every one of Envoy's default Prometheus bounds is a bucket edge, so their counts
//! are exact.
//!
//! A shard's buckets (7.3 KB) are allocated on its first record, so scopes that never see
//! traffic (most clusters of a large mesh config) cost 24 bytes per histogram per shard.
use std::{
    fmt,
    sync::{atomic::AtomicU64, atomic::Ordering::Relaxed, OnceLock},
    time::Duration,
};

use super::{add, inc};

/// Values below this many microseconds have a bucket each.
const EXACT: usize = 100;
/// Buckets per decade above [`EXACT`]: leading two digits 10..=99.
const PER_DECADE: usize = 90;
/// Decades above [`EXACT`]: bucket widths 10^1 ..= 10^9 µs.
const DECADES: usize = 9;
/// The bucket of every value at or above 10^11 µs.
const OVERFLOW: usize = EXACT + PER_DECADE * DECADES;
/// Buckets per cell.
const BUCKETS: usize = OVERFLOW + 1;
const POW10: [u64; 12] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
];

/// Envoy's quantiles, as fractions, in its output order.
pub const SUPPORTED_QUANTILES: [f64; 10] =
    [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// Envoy's default histogram bucket bounds in milliseconds (`/stats/prometheus` `le` values).
pub const PROMETHEUS_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

#[inline]
fn bucket_index(micros: u64) -> usize {
    if micros < EXACT as u64 {
        return micros as usize;
    }
    if micros >= POW10[11] {
        return OVERFLOW;
    }
    // 100 <= micros < 10^11: three to eleven digits, so 1 <= width_exp <= 9.
    let width_exp = micros.ilog10() as usize - 1;
    let leading = (micros / POW10[width_exp]) as usize;
    EXACT + (width_exp - 1) * PER_DECADE + (leading - 10)
}

/// A bucket's range in microseconds, `[low, high)`; the overflow bucket is empty at 10^11.
fn bucket_range(index: usize) -> (u64, u64) {
    if index < EXACT {
        return (index as u64, index as u64 + 1);
    }
    if index >= OVERFLOW {
        return (POW10[11], POW10[11]);
    }
    let k = index - EXACT;
    let width = POW10[k / PER_DECADE + 1];
    let leading = (k % PER_DECADE + 10) as u64;
    (leading * width, (leading + 1) * width)
}

/// One shard's histogram: bucket counts (allocated on first use) and the sum of values.
#[derive(Default)]
pub struct HistogramCell {
    buckets: OnceLock<Box<[AtomicU64; BUCKETS]>>,
    sum_micros: AtomicU64,
}

impl fmt::Debug for HistogramCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramCell")
            .field("allocated", &self.buckets.get().is_some())
            .field("sum_micros", &self.sum_micros.load(Relaxed))
            .finish()
    }
}

fn zeroed_buckets() -> Box<[AtomicU64; BUCKETS]> {
    let cells: Box<[AtomicU64]> = (0..BUCKETS).map(|_| AtomicU64::new(0)).collect();
    cells.try_into().expect("BUCKETS cells")
}

/// Records `micros` into a cell owned by the calling shard.
#[inline]
pub fn record(cell: &HistogramCell, micros: u64) {
    let buckets = cell.buckets.get_or_init(zeroed_buckets);
    inc(&buckets[bucket_index(micros)]);
    add(&cell.sum_micros, micros);
}

/// Records a duration (microsecond resolution) into a cell owned by the calling shard.
#[inline]
pub fn record_duration(cell: &HistogramCell, duration: Duration) {
    record(
        cell,
        u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
    );
}

/// A histogram as read: the non-empty buckets and the sum of the values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// (bucket index, count) for non-empty buckets, in bucket order.
    buckets: Vec<(u16, u64)>,
    sum_micros: u64,
}

impl HistogramSnapshot {
    /// Sums the cells of every shard.
    pub fn merge<'a>(cells: impl IntoIterator<Item = &'a HistogramCell>) -> Self {
        let mut dense: Option<Vec<u64>> = None;
        let mut sum_micros = 0u64;
        for cell in cells {
            sum_micros = sum_micros.wrapping_add(cell.sum_micros.load(Relaxed));
            let Some(buckets) = cell.buckets.get() else {
                continue;
            };
            let dense = dense.get_or_insert_with(|| vec![0; BUCKETS]);
            for (total, bucket) in dense.iter_mut().zip(buckets.iter()) {
                *total = total.wrapping_add(bucket.load(Relaxed));
            }
        }
        let buckets = dense
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter(|(_, n)| *n != 0)
            .map(|(i, n)| (i as u16, n))
            .collect();
        Self {
            buckets,
            sum_micros,
        }
    }

    /// What was recorded since `earlier` (a snapshot of the same histogram taken before).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut old = earlier.buckets.iter().peekable();
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for &(index, count) in &self.buckets {
            while old.next_if(|(i, _)| *i < index).is_some() {}
            let before = old.next_if(|(i, _)| *i == index).map_or(0, |(_, n)| *n);
            let added = count.saturating_sub(before);
            if added != 0 {
                buckets.push((index, added));
            }
        }
        Self {
            buckets,
            sum_micros: self.sum_micros.saturating_sub(earlier.sum_micros),
        }
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// Sum of the recorded values, in milliseconds.
    pub fn sum_ms(&self) -> f64 {
        self.sum_micros as f64 / 1000.0
    }

    /// The `q` quantile (0..=1) in milliseconds, `None` when empty. Linear inside a bucket:
    /// `q = 0` is the lowest bucket's lower edge, `q = 1` the highest bucket's upper edge.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let target = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for &(index, count) in &self.buckets {
            if (below + count) as f64 >= target {
                let (low, high) = bucket_range(index as usize);
                let within = ((target - below as f64) / count as f64).clamp(0.0, 1.0);
                return Some(micros_to_ms(low as f64 + within * (high - low) as f64));
            }
            below += count;
        }
        let (_, high) = bucket_range(self.buckets.last()?.0 as usize);
        Some(micros_to_ms(high as f64))
    }

    /// Envoy's [`SUPPORTED_QUANTILES`], NaN when empty (as Envoy reports them).
    pub fn quantiles_ms(&self) -> [f64; SUPPORTED_QUANTILES.len()] {
        SUPPORTED_QUANTILES.map(|q| self.quantile_ms(q).unwrap_or(f64::NAN))
    }

    /// Values in buckets that end at or below `bound_ms`: the Prometheus `le` count. A value
    /// equal to a bound shares a bucket with larger ones and is counted above it, as in Envoy.
    pub fn count_below_ms(&self, bound_ms: f64) -> u64 {
        let bound_micros = bound_ms * 1000.0;
        self.buckets
            .iter()
            .take_while(|(index, _)| bucket_range(*index as usize).1 as f64 <= bound_micros)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Microseconds to milliseconds, rounded to the nanosecond so values print short (`1.05`).
fn micros_to_ms(micros: f64) -> f64 {
    (micros * 1000.0).round() / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(values: &[u64]) -> HistogramSnapshot {
        let cell = HistogramCell::default();
        values.iter().for_each(|v| record(&cell, *v));
        HistogramSnapshot::merge([&cell])
    }

    #[test]
    fn bucket_layout_is_contiguous_and_two_digit() {
        let mut expected_low = 0;
        for index in 0..OVERFLOW {
            let (low, high) = bucket_range(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert_eq!(bucket_index(low), index);
            assert_eq!(bucket_index(high - 1), index);
            // Width at most 10 % of the lower edge once past the exact range.
            if low >= EXACT as u64 {
                assert!((high - low) * 10 <= low, "bucket {index} [{low},{high})");
            }
            expected_low = high;
        }
        assert_eq!(expected_low, POW10[11]);
        assert_eq!(bucket_index(u64::MAX), OVERFLOW);
        assert_eq!(bucket_range(bucket_index(12_345)), (12_000, 13_000));
        // Envoy's Prometheus bounds are bucket edges.
        for bound in PROMETHEUS_BUCKETS_MS {
            let micros = (bound * 1000.0) as u64;
            assert_eq!(bucket_range(bucket_index(micros)).0, micros, "{bound} ms");
        }
    }

    #[test]
    fn one_value_spreads_over_its_bucket_as_envoy() {
        // Envoy records 200 ms into [200, 210): P0 200, P25 202.5, P50 205, P100 210.
        let q = snapshot(&[200_000]).quantiles_ms();
        assert_eq!(q[0], 200.0);
        assert_eq!(q[1], 202.5);
        assert_eq!(q[2], 205.0);
        assert_eq!(q[9], 210.0);
        assert_eq!(snapshot(&[5]).quantile_ms(0.5), Some(0.0055));
    }

    #[test]
    fn empty_histograms_have_no_quantiles() {
        let empty = snapshot(&[]);
        assert_eq!(empty.count(), 0);
        assert_eq!(empty.quantile_ms(0.5), None);
        assert!(empty.quantiles_ms().iter().all(|v| v.is_nan()));
    }

    #[test]
    fn percentiles_are_accurate_within_a_few_percent() {
        // A deterministic log-uniform spread from 20 µs to 20 s.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut values: Vec<u64> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
                (20.0 * 1e6f64.powf(unit)) as u64
            })
            .collect();
        let hist = snapshot(&values);
        values.sort_unstable();
        for q in [0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999] {
            let exact = values[((values.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
            let approx = hist.quantile_ms(q).unwrap();
            let error = (approx - exact).abs() / exact;
            assert!(error < 0.02, "q{q}: {approx} vs {exact} ({error})");
        }
        let total: u64 = values.iter().sum();
        assert_eq!(hist.sum_ms(), total as f64 / 1000.0);
        assert_eq!(hist.count(), values.len() as u64);
    }

    #[test]
    fn any_single_value_is_within_five_percent() {
        for v in [100, 101, 109, 999, 1_000, 1_099, 54_321, 3_600_000_000] {
            let p50 = snapshot(&[v]).quantile_ms(0.5).unwrap() * 1000.0;
            assert!((p50 - v as f64).abs() / v as f64 <= 0.05, "{v}: {p50}");
        }
    }

    #[test]
    fn shards_merge_and_intervals_subtract() {
        let (a, b) = (HistogramCell::default(), HistogramCell::default());
        record(&a, 1_000);
        record(&b, 1_000);
        record_duration(&b, Duration::from_millis(30));
        let first = HistogramSnapshot::merge([&a, &b]);
        assert_eq!(first.count(), 3);
        assert_eq!(first.sum_ms(), 32.0);
        record(&a, 7);
        record(&b, 30_000);
        let second = HistogramSnapshot::merge([&a, &b]);
        let interval = second.since(&first);
        assert_eq!(interval.count(), 2);
        assert_eq!(interval.sum_ms(), 30.007);
        assert_eq!(interval.quantile_ms(0.0), Some(0.007));
        assert_eq!(second.since(&second), HistogramSnapshot::default());
        // Unused cells allocate nothing and add nothing.
        let unused = HistogramCell::default();
        assert_eq!(HistogramSnapshot::merge([&unused]).count(), 0);
        assert!(unused.buckets.get().is_none());
    }

    #[test]
    fn prometheus_counts_are_cumulative() {
        let hist = snapshot(&[100, 499, 500, 1_000, 7_000, 4_000_000_000]);
        let counts: Vec<u64> = PROMETHEUS_BUCKETS_MS
            .iter()
            .map(|b| hist.count_below_ms(*b))
            .collect();
        // le=0.5: 100 and 499 µs; 500 µs counts from le=1 on; 1 ms from le=5.
        assert_eq!(&counts[..4], &[2, 3, 4, 5]);
        // 4e9 µs is above the last bound (3.6e9): only +Inf (the count) holds it.
        assert_eq!(counts[18], 5);
        assert_eq!(hist.count(), 6);
    }
}
