//! Proxy layer: HTTP/1.1 upstream connections — each host's idle keep-alive connections (most
//! recent first, closed when idle too long or used up) and the cluster's circuit breakers as
//! this shard's share of Envoy's process-wide thresholds.
use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::poll_fn,
    rc::Rc,
    sync::Arc,
    task::{Poll, Waker},
    time::Instant,
};

use xds_agent::{
    model::{CircuitBreakers, UpstreamHttpOptions},
    stats::{dec, inc, record_duration, ClusterCells, ClusterStats},
};

use crate::net::buffered::Buffered;

/// A cluster's breaker counters on this shard.
pub struct Breakers {
    limits: CircuitBreakers,
    connections: Cell<u32>,
    pending: Cell<u32>,
    requests: Cell<u32>,
    retries: Cell<u32>,
    /// Requests waiting for a connection slot.
    waiters: RefCell<VecDeque<Waker>>,
}

impl Breakers {
    pub fn new(limits: CircuitBreakers) -> Self {
        Self {
            limits,
            connections: Cell::new(0),
            pending: Cell::new(0),
            requests: Cell::new(0),
            retries: Cell::new(0),
            waiters: RefCell::default(),
        }
    }

    /// A request slot, or `None` when `max_requests` is reached.
    pub fn request(self: &Rc<Self>) -> Option<Slot> {
        Slot::take(self, |b| &b.requests, self.limits.max_requests)
    }

    /// A retry slot, or `None` when `max_retries` retries are already in flight.
    pub fn retry(self: &Rc<Self>) -> Option<Slot> {
        Slot::take(self, |b| &b.retries, self.limits.max_retries)
    }

    /// A connection slot, or `None` when `max_connections` is reached.
    pub fn connection(self: &Rc<Self>) -> Option<Slot> {
        Slot::take(self, |b| &b.connections, self.limits.max_connections)
    }

    /// A pending-request slot, or `None` when `max_pending_requests` is reached.
    pub fn pending(self: &Rc<Self>) -> Option<Slot> {
        Slot::take(self, |b| &b.pending, self.limits.max_pending_requests)
    }

    /// Waits until a connection slot is released (or the waker is dropped by cancellation).
    pub async fn released(&self) {
        let mut registered = false;
        poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            registered = true;
            self.waiters.borrow_mut().push_back(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn wake_one(&self) {
        let waiter = self.waiters.borrow_mut().pop_front();
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

/// One unit of a breaker counter, given back on drop.
pub struct Slot {
    breakers: Rc<Breakers>,
    counter: fn(&Breakers) -> &Cell<u32>,
}

impl Slot {
    fn take(
        breakers: &Rc<Breakers>,
        counter: fn(&Breakers) -> &Cell<u32>,
        limit: u32,
    ) -> Option<Self> {
        let cell = counter(breakers);
        if cell.get() >= limit {
            return None;
        }
        cell.set(cell.get() + 1);
        Some(Self {
            breakers: breakers.clone(),
            counter,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let cell = (self.counter)(&self.breakers);
        cell.set(cell.get() - 1);
        if std::ptr::eq(cell, &self.breakers.connections) {
            self.breakers.wake_one();
        }
    }
}

/// An open upstream connection and the lease that counts it.
pub struct UpstreamConn {
    pub conn: Buffered,
    /// Requests sent on it so far.
    pub requests: u32,
    pub lease: Lease,
}

/// Keeps an upstream connection counted in its cluster's stats and breaker until dropped.
pub struct Lease {
    opened: Instant,
    stats: Arc<ClusterStats>,
    shard: usize,
    _slot: Slot,
}

impl UpstreamConn {
    pub fn new(conn: Buffered, slot: Slot, stats: Arc<ClusterStats>, shard: usize) -> Self {
        let cells = stats.shard(shard);
        inc(&cells.upstream_cx_total);
        inc(&cells.upstream_cx_http1_total);
        inc(&cells.upstream_cx_active);
        Self {
            conn,
            requests: 0,
            lease: Lease {
                opened: Instant::now(),
                stats,
                shard,
                _slot: slot,
            },
        }
    }

    /// Whether this connection has carried a request before (a failure on it may be a
    /// keep-alive race rather than the upstream failing).
    pub fn reused(&self) -> bool {
        self.requests > 1
    }

    pub fn cells(&self) -> &ClusterCells {
        self.lease.stats.shard(self.lease.shard)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let cells = self.stats.shard(self.shard);
        dec(&cells.upstream_cx_active);
        inc(&cells.upstream_cx_destroy);
        record_duration(&cells.upstream_cx_length_ms, self.opened.elapsed());
    }
}

/// A host's idle connections, most recently used last.
#[derive(Default)]
pub struct HostPool {
    idle: RefCell<Vec<(UpstreamConn, Instant)>>,
}

impl HostPool {
    /// The most recently used idle connection that is still usable; stale ones are closed.
    pub fn take(&self, options: &UpstreamHttpOptions) -> Option<UpstreamConn> {
        let now = Instant::now();
        loop {
            let (mut conn, since) = self.idle.borrow_mut().pop()?;
            if options.idle_timeout.is_some_and(|t| now >= since + t) {
                inc(&conn.cells().upstream_cx_idle_timeout);
                continue;
            }
            if conn.conn.io.has_pending_input() {
                inc(&conn.cells().upstream_cx_destroy_remote);
                continue; // the upstream closed it (or sent something unsolicited)
            }
            return Some(conn);
        }
    }

    /// Parks a connection after a complete exchange, unless it has reached its request limit.
    pub fn put(&self, conn: UpstreamConn, options: &UpstreamHttpOptions) {
        if options
            .max_requests_per_connection
            .is_some_and(|max| conn.requests >= max)
        {
            inc(&conn.cells().upstream_cx_max_requests);
            return;
        }
        let mut idle = self.idle.borrow_mut();
        // Expire the oldest first so an idle pool does not hold descriptors forever.
        if let (Some(timeout), Some((_, since))) = (options.idle_timeout, idle.first()) {
            if since.elapsed() >= timeout {
                let (stale, _) = idle.remove(0);
                inc(&stale.cells().upstream_cx_idle_timeout);
            }
        }
        idle.push((conn, Instant::now()));
    }
}
