//! A host's active health checking: a check every interval (Envoy's intervals and jitter,
//! slower while the cluster has had no traffic), the thresholds that move the host between
//! healthy and unhealthy, and the `health_check.*` counters.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use model::{
    health::{HealthCheck, HealthFlags},
    stats::{inc, ClusterStats},
};

use super::probe::{self, Kept, Target, Verdict};

/// What a host's checks concluded so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostReport {
    pub address: SocketAddr,
    /// `FAILED_ACTIVE_HC`, `DEGRADED_ACTIVE_HC`, `ACTIVE_HC_TIMEOUT` as they stand.
    pub flags: HealthFlags,
    /// The check just made passed.
    pub passed: bool,
}

/// Whether a check moved the host, or started to (a threshold not reached yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Unchanged,
    Pending,
    Changed,
}

/// A host's check state, as Envoy's health check session keeps it.
struct Session {
    flags: HealthFlags,
    first: bool,
    healthy_run: u32,
    unhealthy_run: u32,
}

impl Session {
    fn passed(&mut self, check: &HealthCheck, degraded: bool) -> Transition {
        self.unhealthy_run = 0;
        let mut transition = Transition::Unchanged;
        if self.flags.contains(HealthFlags::FAILED_ACTIVE_HC) {
            // The very first answer moves the host at once (Envoy: faster start-up).
            self.healthy_run += 1;
            if self.first || self.healthy_run >= check.healthy_threshold {
                self.flags.remove(HealthFlags::FAILED_ACTIVE_HC);
                self.flags.remove(HealthFlags::ACTIVE_HC_TIMEOUT);
                transition = Transition::Changed;
            } else {
                transition = Transition::Pending;
            }
        }
        if degraded != self.flags.contains(HealthFlags::DEGRADED_ACTIVE_HC) {
            match degraded {
                true => self.flags.insert(HealthFlags::DEGRADED_ACTIVE_HC),
                false => self.flags.remove(HealthFlags::DEGRADED_ACTIVE_HC),
            }
            if transition == Transition::Unchanged {
                transition = Transition::Changed;
            }
        }
        self.first = false;
        transition
    }

    /// A failed check: an answer that is wrong fails the host at once; no answer (or a
    /// retriable status) counts toward `unhealthy_threshold`.
    fn failed(&mut self, check: &HealthCheck, verdict: Verdict, timed_out: bool) -> Transition {
        self.healthy_run = 0;
        let mut transition = Transition::Unchanged;
        if !self.flags.contains(HealthFlags::FAILED_ACTIVE_HC) {
            let at_once = matches!(verdict, Verdict::Fail { retriable: false }) && !timed_out;
            self.unhealthy_run += 1;
            if at_once || self.unhealthy_run >= check.unhealthy_threshold {
                self.flags.insert(HealthFlags::FAILED_ACTIVE_HC);
                transition = Transition::Changed;
            } else {
                transition = Transition::Pending;
            }
        }
        match timed_out && self.flags.contains(HealthFlags::FAILED_ACTIVE_HC) {
            true => self.flags.insert(HealthFlags::ACTIVE_HC_TIMEOUT),
            false => self.flags.remove(HealthFlags::ACTIVE_HC_TIMEOUT),
        }
        self.first = false;
        transition
    }
}

/// Checks `address` (at `target`) forever, telling `report` after every check.
pub async fn run(
    check: Arc<HealthCheck>,
    cluster: Arc<ClusterStats>,
    address: SocketAddr,
    target: Target,
    report: impl Fn(HostReport),
) {
    let stats = check.stats.shard(0);
    let mut session = Session {
        flags: HealthFlags::FAILED_ACTIVE_HC,
        first: true,
        healthy_run: 0,
        unhealthy_run: 0,
    };
    let mut kept: Option<Kept> = None;
    tokio::time::sleep(jitter(check.initial_jitter, 0, Duration::ZERO)).await;
    loop {
        inc(&stats.attempt);
        let outcome = tokio::time::timeout(
            check.timeout,
            probe::check(&check.kind, &target, &mut kept, check.reuse_connection),
        )
        .await;
        let (verdict, timed_out) = match outcome {
            Ok(verdict) => (verdict, false),
            Err(_) => {
                kept = None;
                (Verdict::Network, true)
            }
        };
        let (healthy, transition) = match verdict {
            Verdict::Pass { degraded } => {
                inc(&stats.success);
                (true, session.passed(&check, degraded))
            }
            failed => {
                inc(&stats.failure);
                if matches!(failed, Verdict::Network) {
                    inc(&stats.network_failure);
                    kept = None;
                }
                (false, session.failed(&check, failed, timed_out))
            }
        };
        report(HostReport {
            address,
            flags: session.flags,
            passed: healthy,
        });
        tokio::time::sleep(interval(&check, &cluster, healthy, transition)).await;
    }
}

/// The wait before the next check, as Envoy's: edge intervals while a threshold is being
/// crossed, `unhealthy_interval` for an unhealthy host, the no-traffic intervals until the
/// cluster has had a connection; plus jitter.
fn interval(
    check: &HealthCheck,
    cluster: &ClusterStats,
    healthy: bool,
    transition: Transition,
) -> Duration {
    let traffic = cluster.sum(|c| &c.upstream_cx_total) > 0
        || cluster.sum(|c| &c.upstream_cx_tx_bytes_total) > 0;
    let pending = transition == Transition::Pending;
    let base = match (traffic, healthy, pending) {
        (true, false, true) => check.unhealthy_edge_interval,
        (true, false, false) => check.unhealthy_interval,
        (true, true, true) => check.healthy_edge_interval,
        (true, true, false) => check.interval,
        (false, true, false) => check.no_traffic_healthy_interval,
        (false, _, _) => check.no_traffic_interval,
    };
    jitter(check.interval_jitter, check.interval_jitter_percent, base).max(Duration::from_millis(1))
}

/// `base` plus up to `percent` of it plus up to `extra`, at random.
fn jitter(extra: Duration, percent: u32, base: Duration) -> Duration {
    let base_ms = base.as_millis() as u64;
    let percent_ms = u64::from(percent) * base_ms / 100;
    let mut ms = base_ms;
    if percent_ms > 0 {
        ms += fastrand::u64(0..percent_ms);
    }
    let extra_ms = extra.as_millis() as u64;
    if extra_ms > 0 {
        ms += fastrand::u64(0..extra_ms);
    }
    Duration::from_millis(ms)
}
