//! Domain model: the process-wide token bucket of `envoy.filters.http.local_ratelimit`, shared
//! by every shard, with per-shard leases so most requests touch no shared cache line.
//!
//! The rate is the process's, not a shard's (Envoy's local rate limit is per process too):
//! - One bucket per config, held in the model (`Arc`), so every shard running that config
//!   takes from the same tokens. Its state is one `AtomicU64`: the fill period it was last
//!   brought up to date in (high 32 bits) and the tokens left (low 32 bits). Refill is lazy
//!   and exact: whoever touches the bucket first in a new period adds `tokens_per_fill` per
//!   elapsed period, capped at `max_tokens` (Envoy's discrete refill: `tokens_per_fill` every
//!   `fill_interval`, starting full). A take is one compare-and-swap.
//! - A shard does not take one token per request: it leases a few and serves the next
//!   requests from its lease, a slot only it writes (no read-modify-write, no contention). A
//!   lease is valid only in the fill period it was taken in. Leases start at one token and
//!   double, up to `batch`, each time a shard uses one up within the period, so a shard that
//!   sees little traffic leases single tokens.
//!
//! Why the rate holds: every admitted request spent a token taken from the shared bucket in the
//! same fill period, and a leased token counts as spent when leased, so the process admits at
//! most what one unshared bucket would. Tokens left in a lease when its period ends expire:
//! giving them back could overfill the bucket, which may have refilled to its cap meanwhile.
//! So leasing can only under-admit, by at most `batch - 1` tokens per shard per period.
//! `batch` is at most an eighth of `min(max_tokens, tokens_per_fill)` split over the shards, and
//! 1 for small buckets, which are then exact.
use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use crate::stats::Padded;

/// The largest lease: one shared compare-and-swap per this many requests at most.
const MAX_BATCH: u32 = 64;

/// A token bucket shared by all shards (see the module docs).
#[derive(Debug)]
pub struct TokenBucket {
    max_tokens: u32,
    tokens_per_fill: u32,
    fill_interval: Duration,
    /// Start of period 0; periods are counted from here.
    epoch: Instant,
    /// `period << 32 | tokens`.
    state: AtomicU64,
    batch: u32,
    /// One lease per shard (see `Lease`); written only by its shard.
    leases: Box<[Padded<AtomicU64>]>,
}

fn pack(period: u32, tokens: u32) -> u64 {
    (u64::from(period) << 32) | u64::from(tokens)
}

fn unpack(state: u64) -> (u32, u32) {
    ((state >> 32) as u32, state as u32)
}

/// A shard's lease, packed in a `u64`: the period it was taken in, the tokens left, and its
/// size (the next lease in the same period is twice as large).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    period: u32,
    left: u16,
    size: u16,
}

impl Lease {
    fn load(slot: &AtomicU64) -> Self {
        let v = slot.load(Relaxed);
        Self {
            period: (v >> 32) as u32,
            left: (v >> 16) as u16,
            size: v as u16,
        }
    }

    fn store(self, slot: &AtomicU64) {
        let v =
            (u64::from(self.period) << 32) | (u64::from(self.left) << 16) | u64::from(self.size);
        slot.store(v, Relaxed);
    }
}

impl TokenBucket {
    /// A full bucket for `shards` shards. `fill_interval` must be positive (the translator
    /// requires at least 50 ms, as Envoy); `max_tokens` and `tokens_per_fill` at least 1.
    pub fn new(
        max_tokens: u32,
        tokens_per_fill: u32,
        fill_interval: Duration,
        shards: usize,
        epoch: Instant,
    ) -> Self {
        let per_period = max_tokens.min(tokens_per_fill);
        let batch = Self::batch_for(per_period, shards);
        Self::with_batch(
            max_tokens,
            tokens_per_fill,
            fill_interval,
            shards,
            epoch,
            batch,
        )
    }

    /// The lease size: an eighth of a period's tokens over the shards, between 1 and
    /// `MAX_BATCH`.
    fn batch_for(per_period: u32, shards: usize) -> u32 {
        let share = u64::from(per_period) / (8 * shards.max(1) as u64);
        share.clamp(1, u64::from(MAX_BATCH)) as u32
    }

    fn with_batch(
        max_tokens: u32,
        tokens_per_fill: u32,
        fill_interval: Duration,
        shards: usize,
        epoch: Instant,
        batch: u32,
    ) -> Self {
        Self {
            max_tokens,
            tokens_per_fill,
            fill_interval,
            epoch,
            state: AtomicU64::new(pack(0, max_tokens)),
            batch,
            leases: (0..shards.max(1))
                .map(|_| Padded(AtomicU64::new(0)))
                .collect(),
        }
    }

    /// The fill period `now` falls in (earlier instants count as period 0). Periods wrap after
    /// 2^32 fill intervals (at least 6.8 years at the 50 ms minimum).
    fn period(&self, now: Instant) -> u32 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        (elapsed / self.fill_interval.as_nanos().max(1)) as u32
    }

    /// The shared state brought up to `period`: `(period, tokens)`. A caller with an older
    /// `period` than the stored one (it read the clock before another shard refilled) does not
    /// move the bucket back.
    fn refilled(&self, state: u64, period: u32) -> (u32, u32) {
        let (stored, tokens) = unpack(state);
        let elapsed = period.wrapping_sub(stored) as i32;
        if elapsed <= 0 {
            return (stored, tokens);
        }
        let added = u64::from(self.tokens_per_fill) * elapsed as u64;
        let tokens = (u64::from(tokens) + added).min(u64::from(self.max_tokens)) as u32;
        (period, tokens)
    }

    /// Takes up to `want` tokens from the shared bucket; how many it got.
    fn take(&self, period: u32, want: u32) -> u32 {
        let mut current = self.state.load(Relaxed);
        loop {
            let (period, tokens) = self.refilled(current, period);
            let got = want.min(tokens);
            let next = pack(period, tokens - got);
            if next == current {
                return got;
            }
            match self
                .state
                .compare_exchange_weak(current, next, Relaxed, Relaxed)
            {
                Ok(_) => return got,
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether a request on `shard` at `now` may pass (it then spent one token). Only shard
    /// `shard` may call this with that index: its lease slot has a single writer.
    pub fn try_acquire(&self, shard: usize, now: Instant) -> bool {
        let period = self.period(now);
        let Some(slot) = self.leases.get(shard) else {
            return self.take(period, 1) == 1;
        };
        let slot = &slot.0;
        let lease = Lease::load(slot);
        if lease.period == period && lease.left > 0 {
            Lease {
                left: lease.left - 1,
                ..lease
            }
            .store(slot);
            return true;
        }
        // Used up in this period: lease twice as many; from an older period: start again at
        // one (its unused tokens, if any, expire).
        let size = if lease.period == period {
            (lease.size * 2).clamp(1, self.batch as u16)
        } else {
            1
        };
        let got = self.take(period, u32::from(size));
        Lease {
            period,
            left: got.saturating_sub(1) as u16,
            size,
        }
        .store(slot);
        got > 0
    }

    /// How long from `now` until the next refill.
    pub fn until_next_fill(&self, now: Instant) -> Duration {
        let next = u64::from(self.period(now)) + 1;
        let at = self.epoch + self.fill_interval * next as u32;
        at.saturating_duration_since(now)
    }

    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }

    pub fn tokens_per_fill(&self) -> u32 {
        self.tokens_per_fill
    }

    pub fn fill_interval(&self) -> Duration {
        self.fill_interval
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{atomic::AtomicU32, Arc, Barrier},
        thread,
    };

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Tokens leased by `shard` and not used yet.
    fn leased(bucket: &TokenBucket, shard: usize) -> u32 {
        u32::from(Lease::load(&bucket.leases[shard].0).left)
    }

    /// Tokens in the shared bucket.
    fn shared(bucket: &TokenBucket) -> u32 {
        unpack(bucket.state.load(Relaxed)).1
    }

    #[test]
    fn starts_full_refills_per_period_and_caps() {
        let epoch = Instant::now();
        let bucket = TokenBucket::with_batch(3, 2, SECOND, 1, epoch, 1);
        let admitted =
            |at: Duration, n: usize| (0..n).filter(|_| bucket.try_acquire(0, epoch + at)).count();
        assert_eq!(admitted(Duration::ZERO, 10), 3, "starts full");
        assert_eq!(
            admitted(Duration::from_millis(999), 10),
            0,
            "no refill within a period"
        );
        assert_eq!(admitted(SECOND, 10), 2, "tokens_per_fill per period");
        assert_eq!(admitted(SECOND * 10, 10), 3, "refills cap at max_tokens");
    }

    #[test]
    fn next_fill_is_the_end_of_the_period() {
        let epoch = Instant::now();
        let bucket = TokenBucket::with_batch(1, 1, SECOND, 1, epoch, 1);
        let at = epoch + SECOND * 2 + Duration::from_millis(300);
        assert_eq!(bucket.until_next_fill(at), Duration::from_millis(700));
    }

    #[test]
    fn leases_grow_with_use_and_expire_at_the_period_end() {
        let epoch = Instant::now();
        let bucket = TokenBucket::with_batch(100, 100, SECOND, 2, epoch, 8);
        let acquire = |shard, at, n| (0..n).filter(|_| bucket.try_acquire(shard, at)).count();
        // Leases of 1, 2, 4 and 8 used up, then a fresh one of 8 with one token used.
        assert_eq!(acquire(0, epoch, 16), 16);
        assert_eq!(leased(&bucket, 0), 7);
        assert_eq!(shared(&bucket), 100 - 15 - 8);
        // Shard 1 gets only what is left in the shared bucket.
        assert_eq!(acquire(1, epoch, 200), 77);
        assert_eq!((shared(&bucket), leased(&bucket, 1)), (0, 0));
        // Shard 0 still serves its lease this period.
        assert_eq!(acquire(0, epoch, 3), 3);
        assert_eq!(leased(&bucket, 0), 4);
        // Next period: the 4 left expire (not given back) and leases restart at one token.
        assert!(bucket.try_acquire(0, epoch + SECOND));
        assert_eq!((shared(&bucket), leased(&bucket, 0)), (99, 0));
    }

    #[test]
    fn expired_leases_never_overfill_the_bucket() {
        let epoch = Instant::now();
        let bucket = TokenBucket::with_batch(10, 10, SECOND, 1, epoch, 4);
        assert_eq!((0..4).filter(|_| bucket.try_acquire(0, epoch)).count(), 4);
        assert_eq!((shared(&bucket), leased(&bucket, 0)), (3, 3));
        // Three periods later the bucket is at its cap; the 3 leased tokens are gone.
        assert!(bucket.try_acquire(0, epoch + SECOND * 3));
        assert_eq!((shared(&bucket), leased(&bucket, 0)), (9, 0));
    }

    #[test]
    fn batch_scales_with_the_bucket_and_the_shards() {
        assert_eq!(TokenBucket::batch_for(10, 2), 1);
        assert_eq!(TokenBucket::batch_for(800, 2), 50);
        assert_eq!(TokenBucket::batch_for(1_000_000, 4), MAX_BATCH);
        assert_eq!(TokenBucket::batch_for(0, 0), 1);
    }

    /// The process-wide rate: threads standing in for shards hammer one bucket within one fill
    /// period; together they admit exactly the bucket's tokens minus what is still leased.
    #[test]
    fn shards_hammering_one_bucket_admit_the_process_rate() {
        const SHARDS: usize = 4;
        const MAX: u32 = 10_000;
        let epoch = Instant::now();
        // An hour-long period: no refill happens during the test.
        let bucket = Arc::new(TokenBucket::new(
            MAX,
            MAX,
            Duration::from_secs(3600),
            SHARDS,
            epoch,
        ));
        assert!(bucket.batch > 1, "the test must exercise leasing");
        let admitted = Arc::new(AtomicU32::new(0));
        let start = Arc::new(Barrier::new(SHARDS));
        let threads: Vec<_> = (0..SHARDS)
            .map(|shard| {
                let (bucket, admitted, start) = (bucket.clone(), admitted.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    let mut mine = 0;
                    for _ in 0..MAX {
                        if bucket.try_acquire(shard, Instant::now()) {
                            mine += 1;
                        }
                    }
                    admitted.fetch_add(mine, Relaxed);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let admitted = admitted.load(Relaxed);
        let still_leased: u32 = (0..SHARDS).map(|s| leased(&bucket, s)).sum();
        let shared = shared(&bucket);
        assert!(admitted <= MAX, "admitted {admitted} > {MAX}");
        assert_eq!(admitted + still_leased + shared, MAX);
        assert_eq!(shared, 0, "demand (4 × {MAX}) exceeded supply");
        assert!(still_leased < SHARDS as u32 * bucket.batch);
    }

    /// Across periods from several threads: never more than the start level plus one fill per
    /// period.
    #[test]
    fn shards_across_refills_stay_within_the_rate() {
        const SHARDS: usize = 2;
        let epoch = Instant::now();
        let interval = Duration::from_millis(50);
        let bucket = Arc::new(TokenBucket::new(200, 100, interval, SHARDS, epoch));
        let admitted = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..SHARDS)
            .map(|shard| {
                let (bucket, admitted) = (bucket.clone(), admitted.clone());
                thread::spawn(move || {
                    let until = epoch + interval * 6;
                    let mut mine = 0;
                    while Instant::now() < until {
                        if bucket.try_acquire(shard, Instant::now()) {
                            mine += 1;
                        }
                    }
                    admitted.fetch_add(mine, Relaxed);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let end = Instant::now();
        let periods = (end - epoch).as_nanos() / interval.as_nanos();
        let allowed = 200 + 100 * periods as u32;
        let admitted = admitted.load(Relaxed);
        assert!(admitted <= allowed, "admitted {admitted} > {allowed}");
        // A loaded machine may starve the threads for whole periods, so only the start level
        // is certain to be spent.
        assert!(admitted >= 200, "admitted only {admitted}");
    }
}
