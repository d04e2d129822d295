//! Domain model: the overload manager's global downstream connection limit
//! (`envoy.resource_monitors.global_downstream_max_connections`): one count of open
//! downstream connections for the whole process, taken at accept by every listener that does
//! not `ignore_global_conn_limit`, given back when the connection closes. One atomic add per
//! connection (not per request), as Envoy counts them.
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

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

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
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
}
