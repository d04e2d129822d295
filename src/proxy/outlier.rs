//! A shard's side of outlier detection: each host's runs of consecutive failures and its
//! request counts, kept as Envoy's host monitor keeps them. A run that reaches its threshold is
//! reported (and starts again); the agent merges every shard's reports and counts and decides.
use std::cell::Cell;

use model::health::{Consecutive, HostCounts, Outcome, OutlierDetection};

#[derive(Default)]
pub struct HostOutlier {
    consecutive_5xx: Cell<u32>,
    consecutive_gateway: Cell<u32>,
    consecutive_local: Cell<u32>,
    counts: Cell<HostCounts>,
}

/// Runs that reached their threshold with one outcome (at most two: 5xx and gateway).
pub type Trips = [Option<Consecutive>; 2];

impl HostOutlier {
    /// Counts `outcome`. Without `split_external_local_origin_errors`, a failed connect is a
    /// 503, a timeout a 504 and a connect success a 200, as Envoy maps them; with it they count
    /// as local-origin results apart from the host's own statuses.
    pub fn record(&self, outcome: Outcome, config: &OutlierDetection) -> Trips {
        if !config.split_external_local_origin_errors {
            let status = match outcome {
                Outcome::Status(status) => status,
                Outcome::ConnectFailed => 503,
                Outcome::Timeout => 504,
                Outcome::Connected => 200,
            };
            return self.status(status, config);
        }
        match outcome {
            Outcome::Status(status) => {
                // A status means the connection was made: a local-origin success too.
                self.local(true, config);
                self.status(status, config)
            }
            Outcome::Connected => [self.local(true, config), None],
            Outcome::ConnectFailed | Outcome::Timeout => [self.local(false, config), None],
        }
    }

    fn status(&self, status: u16, config: &OutlierDetection) -> Trips {
        let mut counts = self.counts.get();
        counts.total += 1;
        let mut trips = [None, None];
        if (500..600).contains(&status) {
            if matches!(status, 502..=504) {
                trips[0] = bump(
                    &self.consecutive_gateway,
                    config.consecutive_gateway_failure,
                    Consecutive::GatewayFailure,
                );
            } else {
                self.consecutive_gateway.set(0);
            }
            trips[1] = bump(
                &self.consecutive_5xx,
                config.consecutive_5xx,
                Consecutive::Http5xx,
            );
        } else {
            counts.success += 1;
            self.consecutive_5xx.set(0);
            self.consecutive_gateway.set(0);
        }
        self.counts.set(counts);
        trips
    }

    fn local(&self, success: bool, config: &OutlierDetection) -> Option<Consecutive> {
        let mut counts = self.counts.get();
        counts.local_total += 1;
        let trip = if success {
            counts.local_success += 1;
            self.consecutive_local.set(0);
            None
        } else {
            bump(
                &self.consecutive_local,
                config.consecutive_local_origin_failure,
                Consecutive::LocalOriginFailure,
            )
        };
        self.counts.set(counts);
        trip
    }

    /// The counts since the last call (then zeroed).
    pub fn take_counts(&self) -> HostCounts {
        self.counts.take()
    }
}

/// One more failure in the run `counter`: the run's kind when it reaches `threshold` (the
/// run then starts again, as Envoy resets it once the ejection is decided).
fn bump(counter: &Cell<u32>, threshold: u32, kind: Consecutive) -> Option<Consecutive> {
    let run = counter.get() + 1;
    if run >= threshold {
        counter.set(0);
        Some(kind)
    } else {
        counter.set(run);
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use model::stats::OutlierStats;

    use super::*;

    fn config(split: bool) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_failure: 2,
            consecutive_local_origin_failure: 2,
            split_external_local_origin_errors: split,
            ..OutlierDetection::envoy_defaults(Arc::new(OutlierStats::new("test".into(), 1)))
        }
    }

    #[test]
    fn runs_of_failures_trip_and_a_success_ends_them() {
        let config = config(false);
        let host = HostOutlier::default();
        assert_eq!(host.record(Outcome::Status(500), &config), [None, None]);
        assert_eq!(host.record(Outcome::Status(200), &config), [None, None]);
        assert_eq!(host.record(Outcome::Status(500), &config), [None, None]);
        assert_eq!(host.record(Outcome::Status(503), &config), [None, None]);
        // A failed connect is a 503: the third 5xx in a row and the second gateway failure.
        assert_eq!(
            host.record(Outcome::ConnectFailed, &config),
            [
                Some(Consecutive::GatewayFailure),
                Some(Consecutive::Http5xx)
            ]
        );
        let counts = host.take_counts();
        assert_eq!((counts.success, counts.total), (1, 5));
        assert_eq!(host.take_counts(), HostCounts::default());
    }

    #[test]
    fn split_local_origin_failures_count_apart() {
        let config = config(true);
        let host = HostOutlier::default();
        assert_eq!(host.record(Outcome::ConnectFailed, &config), [None, None]);
        assert_eq!(
            host.record(Outcome::Timeout, &config),
            [Some(Consecutive::LocalOriginFailure), None]
        );
        host.record(Outcome::Status(503), &config);
        let counts = host.take_counts();
        assert_eq!((counts.local_success, counts.local_total), (1, 3));
        assert_eq!((counts.success, counts.total), (0, 1));
    }
}
