//! Router: the deadlines an upstream request runs under — route `timeout`, `per_try_timeout`,
//! the connection manager's `request_timeout` (while the request is still arriving) and
//! `stream_idle_timeout` — and which one expired.
use std::time::{Duration, Instant};

use crate::rt::timer;

/// Which deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The route's `timeout`: 504, no retry.
    Route,
    /// `per_try_timeout`: retriable, else 504.
    PerTry,
    /// `request_timeout` before the request was received in full: 408.
    Request,
    /// `stream_idle_timeout`: nothing moved for that long (408 while receiving, else 504).
    StreamIdle,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Deadlines {
    pub route: Option<Instant>,
    pub request: Option<Instant>,
    pub stream_idle: Option<Duration>,
}

impl Deadlines {
    /// The nearest deadline from now and its kind. `per_try` is the current try's; the request
    /// deadline counts only while `receiving` the request. On a tie the route's wins (it
    /// cannot be retried).
    pub fn next(&self, per_try: Option<Instant>, receiving: bool) -> Option<(Instant, Expiry)> {
        // Computed at every step: from the loop's per-turn time, not the clock.
        let idle = self.stream_idle.map(|d| timer::turn_time() + d);
        [
            (self.route, Expiry::Route),
            (per_try, Expiry::PerTry),
            (self.request.filter(|_| receiving), Expiry::Request),
            (idle, Expiry::StreamIdle),
        ]
        .into_iter()
        .filter_map(|(at, kind)| at.map(|at| (at, kind)))
        .min_by_key(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_deadline_wins_and_ties_go_to_the_route() {
        let now = Instant::now();
        let d = Deadlines {
            route: Some(now + Duration::from_secs(5)),
            request: Some(now + Duration::from_secs(1)),
            stream_idle: Some(Duration::from_secs(60)),
        };
        assert_eq!(d.next(None, true).unwrap().1, Expiry::Request);
        assert_eq!(d.next(None, false).unwrap().1, Expiry::Route);
        let tie = d.route;
        assert_eq!(d.next(tie, false).unwrap().1, Expiry::Route);
        assert_eq!(d.next(Some(now), false).unwrap().1, Expiry::PerTry);
        assert!(Deadlines::default().next(None, true).is_none());
    }
}
