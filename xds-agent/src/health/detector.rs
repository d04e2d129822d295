//! A cluster's outlier detector, merging every shard: ejects on the runs of failures shards
//! report and, each interval, by success rate and failure percentage over the counts shards
//! hand over; unejects when the ejection time (growing with each ejection, capped) is over;
//! keeps `max_ejection_percent` and the `enforcing_*` odds; counts Envoy's
//! `outlier_detection.*` stats.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, Instant},
};

use model::{
    health::{Consecutive, HostCounts, OutlierDetection},
    stats::{inc, set, OutlierCells},
};

#[derive(Default)]
struct HostState {
    ejected: bool,
    /// Multiplies `base_ejection_time`: one more per ejection, one less per interval spent
    /// healthy after an unejection (Envoy's backoff).
    backoff: u32,
    last_ejection: Option<Instant>,
    last_unejection: Option<Instant>,
    jitter: Duration,
}

/// Why a host is ejected, as Envoy's ejection types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Consecutive(Consecutive),
    SuccessRate { local: bool },
    FailurePercentage { local: bool },
}

pub struct Detector {
    config: Arc<OutlierDetection>,
    hosts: HashMap<SocketAddr, HostState>,
    /// Counts shards handed over since the last interval.
    counts: HashMap<SocketAddr, HostCounts>,
}

impl Detector {
    pub fn new(config: Arc<OutlierDetection>) -> Self {
        Self {
            config,
            hosts: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    pub fn config(&self) -> &Arc<OutlierDetection> {
        &self.config
    }

    fn cells(&self) -> &OutlierCells {
        self.config.stats.shard(0)
    }

    /// Follows the cluster's hosts: new ones are watched, removed ones forgotten.
    pub fn set_hosts(&mut self, addresses: &[SocketAddr]) {
        self.hosts.retain(|a, _| addresses.contains(a));
        for address in addresses {
            self.hosts.entry(*address).or_default();
        }
        self.update_active();
    }

    pub fn is_ejected(&self, address: &SocketAddr) -> bool {
        self.hosts.get(address).is_some_and(|h| h.ejected)
    }

    pub fn add_counts(&mut self, counts: &[(SocketAddr, HostCounts)]) {
        for (address, c) in counts {
            self.counts.entry(*address).or_default().add(c);
        }
    }

    /// A shard's run of failures reached its threshold; true when the host was ejected.
    pub fn on_trip(&mut self, address: SocketAddr, kind: Consecutive, now: Instant) -> bool {
        if self.hosts.get(&address).is_none_or(|h| h.ejected) {
            return false;
        }
        let cells = self.cells();
        match kind {
            Consecutive::Http5xx => {
                inc(&cells.ejections_detected_consecutive_5xx);
                inc(&cells.ejections_consecutive_5xx);
            }
            Consecutive::GatewayFailure => {
                inc(&cells.ejections_detected_consecutive_gateway_failure)
            }
            Consecutive::LocalOriginFailure => {
                inc(&cells.ejections_detected_consecutive_local_origin_failure)
            }
        }
        self.eject(address, Cause::Consecutive(kind), now)
    }

    /// An active health check passed: an ejected host comes back at once when
    /// `successful_active_health_check_uneject_host` (the default).
    pub fn on_check_passed(&mut self, address: SocketAddr, now: Instant) -> bool {
        let uneject = self.config.successful_active_health_check_uneject_host
            && self.hosts.get(&address).is_some_and(|h| h.ejected);
        if uneject {
            self.uneject(address, now);
        }
        uneject
    }

    /// The interval: unejects hosts whose time is over, ejects by success rate and failure
    /// percentage over the counts gathered, lowers the backoff of hosts that stayed healthy.
    /// True when an ejection changed.
    pub fn on_interval(&mut self, now: Instant) -> bool {
        let mut changed = false;
        let expired: Vec<SocketAddr> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.ejected && self.ejection_over(h, now))
            .map(|(a, _)| *a)
            .collect();
        for address in expired {
            self.uneject(address, now);
            changed = true;
        }
        let counts = std::mem::take(&mut self.counts);
        for local in [false, true] {
            changed |= self.rate_ejections(&counts, local, now);
        }
        let interval = self.config.interval;
        for host in self.hosts.values_mut() {
            let healthy_since = host.last_unejection.is_some_and(|t| now - t >= interval);
            if !host.ejected && healthy_since {
                host.backoff = host.backoff.saturating_sub(1);
            }
        }
        changed
    }

    fn ejection_over(&self, host: &HostState, now: Instant) -> bool {
        let base = self.config.base_ejection_time;
        let time = (base * host.backoff).min(self.config.max_ejection_time) + host.jitter;
        host.last_ejection.is_some_and(|t| now - t >= time)
    }

    /// Success-rate and failure-percentage ejections (external or local origin counts).
    fn rate_ejections(
        &mut self,
        counts: &HashMap<SocketAddr, HostCounts>,
        local: bool,
        now: Instant,
    ) -> bool {
        let config = self.config.clone();
        let rates: Vec<(SocketAddr, f64, u64)> = self
            .hosts
            .iter()
            .filter(|(_, h)| !h.ejected)
            .filter_map(|(address, _)| {
                let c = counts.get(address)?;
                let (success, total) = match local {
                    false => (c.success, c.total),
                    true => (c.local_success, c.local_total),
                };
                (total > 0).then(|| (*address, 100.0 * success as f64 / total as f64, total))
            })
            .collect();
        let mut changed = false;
        let by_volume = |volume: u32| {
            rates
                .iter()
                .filter(move |(_, _, total)| *total >= u64::from(volume))
        };
        let valid: Vec<_> = by_volume(config.success_rate_request_volume).collect();
        if !valid.is_empty() && valid.len() >= config.success_rate_minimum_hosts as usize {
            let mean = valid.iter().map(|(_, rate, _)| rate).sum::<f64>() / valid.len() as f64;
            let variance = valid
                .iter()
                .map(|(_, rate, _)| (rate - mean).powi(2))
                .sum::<f64>()
                / valid.len() as f64;
            let threshold =
                mean - config.success_rate_stdev_factor as f64 / 1000.0 * variance.sqrt();
            for (address, rate, _) in &valid {
                if *rate < threshold {
                    inc(&self.cells().ejections_success_rate);
                    inc(match local {
                        false => &self.cells().ejections_detected_success_rate,
                        true => &self.cells().ejections_detected_local_origin_success_rate,
                    });
                    changed |= self.eject(*address, Cause::SuccessRate { local }, now);
                }
            }
        }
        let valid: Vec<_> = by_volume(config.failure_percentage_request_volume).collect();
        if !valid.is_empty() && valid.len() >= config.failure_percentage_minimum_hosts as usize {
            for (address, rate, _) in &valid {
                if 100.0 - rate >= config.failure_percentage_threshold as f64 {
                    inc(match local {
                        false => &self.cells().ejections_detected_failure_percentage,
                        true => {
                            &self
                                .cells()
                                .ejections_detected_local_origin_failure_percentage
                        }
                    });
                    changed |= self.eject(*address, Cause::FailurePercentage { local }, now);
                }
            }
        }
        changed
    }

    /// Ejects `address` unless that would pass `max_ejection_percent` (counted as an
    /// overflow) or the cause's `enforcing_*` odds say no.
    fn eject(&mut self, address: SocketAddr, cause: Cause, now: Instant) -> bool {
        let config = self.config.clone();
        let active = self.hosts.values().filter(|h| h.ejected).count();
        let percent = 100.0 * (active + 1) as f64 / self.hosts.len().max(1) as f64;
        let allowed = percent <= f64::from(config.max_ejection_percent)
            || (config.always_eject_one_host && active == 0);
        let cells = self.cells();
        if !allowed {
            inc(&cells.ejections_overflow);
            return false;
        }
        if matches!(
            cause,
            Cause::Consecutive(Consecutive::Http5xx) | Cause::SuccessRate { local: false }
        ) {
            inc(&cells.ejections_total);
        }
        let (enforcing, enforced) = enforcement(&config, cells, cause);
        if fastrand::u32(0..100) >= enforcing {
            return false;
        }
        inc(&cells.ejections_enforced_total);
        inc(enforced);
        let jitter_ms = config.max_ejection_time_jitter.as_millis() as u64;
        let base = config.base_ejection_time;
        let Some(host) = self.hosts.get_mut(&address) else {
            return false;
        };
        host.ejected = true;
        host.last_ejection = Some(now);
        host.jitter = Duration::from_millis(fastrand::u64(0..=jitter_ms));
        if base * host.backoff < config.max_ejection_time + base {
            host.backoff += 1;
        }
        tracing::info!(%address, ?cause, "outlier detection ejected a host");
        self.update_active();
        true
    }

    fn uneject(&mut self, address: SocketAddr, now: Instant) {
        if let Some(host) = self.hosts.get_mut(&address) {
            host.ejected = false;
            host.last_unejection = Some(now);
            tracing::info!(%address, "outlier detection returned a host");
        }
        self.update_active();
    }

    fn update_active(&self) {
        let active = self.hosts.values().filter(|h| h.ejected).count();
        set(&self.cells().ejections_active, active as i64);
    }
}

/// The percentage a cause's ejections are enforced at, and its `ejections_enforced_*` counter.
fn enforcement<'a>(
    config: &OutlierDetection,
    cells: &'a OutlierCells,
    cause: Cause,
) -> (u32, &'a AtomicU64) {
    match cause {
        Cause::Consecutive(Consecutive::Http5xx) => (
            config.enforcing_consecutive_5xx,
            &cells.ejections_enforced_consecutive_5xx,
        ),
        Cause::Consecutive(Consecutive::GatewayFailure) => (
            config.enforcing_consecutive_gateway_failure,
            &cells.ejections_enforced_consecutive_gateway_failure,
        ),
        Cause::Consecutive(Consecutive::LocalOriginFailure) => (
            config.enforcing_consecutive_local_origin_failure,
            &cells.ejections_enforced_consecutive_local_origin_failure,
        ),
        Cause::SuccessRate { local: false } => (
            config.enforcing_success_rate,
            &cells.ejections_enforced_success_rate,
        ),
        Cause::SuccessRate { local: true } => (
            config.enforcing_local_origin_success_rate,
            &cells.ejections_enforced_local_origin_success_rate,
        ),
        Cause::FailurePercentage { local: false } => (
            config.enforcing_failure_percentage,
            &cells.ejections_enforced_failure_percentage,
        ),
        Cause::FailurePercentage { local: true } => (
            config.enforcing_failure_percentage_local_origin,
            &cells.ejections_enforced_local_origin_failure_percentage,
        ),
    }
}

#[cfg(test)]
mod tests {
    use model::stats::OutlierStats;

    use super::*;

    fn config(max_ejection_percent: u32) -> Arc<OutlierDetection> {
        Arc::new(OutlierDetection {
            max_ejection_percent,
            enforcing_failure_percentage: 100,
            ..OutlierDetection::envoy_defaults(Arc::new(OutlierStats::new("t".into(), 1)))
        })
    }

    fn hosts(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| ([127, 0, 0, 1], 1000 + i).into()).collect()
    }

    fn stat(detector: &Detector, read: impl Fn(&OutlierCells) -> &AtomicU64) -> u64 {
        detector.config.stats.sum(read)
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_and_returns_the_host() {
        let mut detector = Detector::new(config(100));
        let all = hosts(2);
        detector.set_hosts(&all);
        let t0 = Instant::now();
        assert!(detector.on_trip(all[0], Consecutive::Http5xx, t0));
        assert!(
            !detector.on_trip(all[0], Consecutive::Http5xx, t0),
            "already ejected"
        );
        assert!(!detector.on_interval(t0 + Duration::from_secs(29)));
        assert!(
            detector.on_interval(t0 + Duration::from_secs(30)),
            "base time over"
        );
        assert!(!detector.is_ejected(&all[0]));
        // The second ejection lasts twice the base time.
        let t1 = t0 + Duration::from_secs(31);
        assert!(detector.on_trip(all[0], Consecutive::Http5xx, t1));
        assert!(!detector.on_interval(t1 + Duration::from_secs(59)));
        assert!(detector.on_interval(t1 + Duration::from_secs(60)));
        assert_eq!(
            stat(&detector, |c| &c.ejections_enforced_consecutive_5xx),
            2
        );
        assert_eq!(stat(&detector, |c| &c.ejections_active), 0);
    }

    #[test]
    fn max_ejection_percent_holds_hosts_back() {
        let mut detector = Detector::new(config(30));
        let all = hosts(4);
        detector.set_hosts(&all);
        let now = Instant::now();
        // One of four is 25 %: allowed; a second would be 50 %.
        assert!(detector.on_trip(all[0], Consecutive::Http5xx, now));
        assert!(!detector.on_trip(all[1], Consecutive::Http5xx, now));
        assert_eq!(stat(&detector, |c| &c.ejections_overflow), 1);
        assert_eq!(stat(&detector, |c| &c.ejections_active), 1);
    }

    #[test]
    fn success_rate_and_failure_percentage_find_the_outlier() {
        let mut detector = Detector::new(config(100));
        let all = hosts(6);
        detector.set_hosts(&all);
        let counts: Vec<(SocketAddr, HostCounts)> = all
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let success = if i == 5 { 10 } else { 200 };
                let counts = HostCounts {
                    success,
                    total: 200,
                    ..Default::default()
                };
                (*a, counts)
            })
            .collect();
        // Counts arrive from two shards, split.
        let halves: Vec<_> = counts
            .iter()
            .map(|(a, c)| {
                let half = HostCounts {
                    success: c.success / 2,
                    total: c.total / 2,
                    ..Default::default()
                };
                (*a, half)
            })
            .collect();
        detector.add_counts(&halves);
        detector.add_counts(&halves);
        assert!(detector.on_interval(Instant::now()));
        assert!(detector.is_ejected(&all[5]));
        assert!(all[..5].iter().all(|a| !detector.is_ejected(a)));
        assert_eq!(stat(&detector, |c| &c.ejections_detected_success_rate), 1);
        // The counts were used: the next interval has none.
        assert!(!detector.on_interval(Instant::now()));
    }

    #[test]
    fn a_passing_active_check_returns_an_ejected_host() {
        let mut detector = Detector::new(config(100));
        let all = hosts(2);
        detector.set_hosts(&all);
        let now = Instant::now();
        detector.on_trip(all[1], Consecutive::Http5xx, now);
        assert!(detector.on_check_passed(all[1], now));
        assert!(!detector.is_ejected(&all[1]));
    }
}
