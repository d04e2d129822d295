//! Domain model: connection limits counted across shards — the overload manager's global
//! downstream connection limit (`envoy.resource_monitors.global_downstream_max_connections`):
//! one count of open downstream connections for the whole process, taken at accept by every
//! listener that does not `ignore_global_conn_limit`, given back when the connection closes —
//! and the `envoy.filters.network.connection_limit` filter's count per filter config. One
//! atomic add per connection (not per request), as Envoy counts them.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::filter_stats::ConnectionLimitStats;

#[derive(Debug)]
pub struct ConnectionLimit {
    /// `max_active_downstream_connections`.
    pub max: u64,
    active: AtomicU64,
}

/// One open connection counted against the limit, until dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionLimit>);

impl ConnectionLimit {
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(Self {
            max,
            active: AtomicU64::new(0),
        })
    }

    /// A slot for a new connection, or `None` when `max` are open.
    pub fn open(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let previous = self.active.fetch_add(1, Ordering::Relaxed);
        if previous >= self.max {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnectionSlot(self.clone()))
    }

    /// Counts a new connection whatever the count, as the connection_limit filter does (a
    /// connection it refuses stays counted until it closes): its slot, and whether it is
    /// within `max`.
    pub fn count(self: &Arc<Self>) -> (ConnectionSlot, bool) {
        let previous = self.active.fetch_add(1, Ordering::Relaxed);
        (ConnectionSlot(self.clone()), previous < self.max)
    }

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// `envoy.filters.network.connection_limit`: counts the connections its filter chain takes
/// (`limit.max` is `max_connections`); one past the limit is closed, after `delay`, without a
/// byte read or written.
#[derive(Debug)]
pub struct ConnectionLimitFilter {
    /// Shared by every shard; kept across listener updates that leave the chain unchanged.
    pub limit: Arc<ConnectionLimit>,
    /// `delay`: how long a connection over the limit is held before it is closed.
    pub delay: Duration,
    /// `runtime_enabled`'s `default_value` (true when unset): a disabled filter neither counts
    /// nor refuses.
    pub enabled: bool,
    /// `connection_limit.<stat_prefix>.*`
    pub stats: Arc<ConnectionLimitStats>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_refused_at_the_limit_and_given_back_on_drop() {
        let limit = ConnectionLimit::new(2);
        let (a, b) = (limit.open().unwrap(), limit.open().unwrap());
        assert!(limit.open().is_none());
        assert_eq!(limit.active(), 2);
        drop(a);
        let c = limit.open().unwrap();
        drop((b, c));
        assert_eq!(limit.active(), 0);
    }

    #[test]
    fn counted_connections_past_the_limit_hold_their_count_until_dropped() {
        let limit = ConnectionLimit::new(1);
        let (first, within) = limit.count();
        assert!(within);
        let (refused, within) = limit.count();
        assert!(!within);
        drop(first);
        // The refused connection is still open: the next one is over the limit too.
        assert!(!limit.count().1);
        drop(refused);
        assert!(limit.count().1);
        assert_eq!(limit.active(), 0);
    }
}
