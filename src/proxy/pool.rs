//! Proxy layer: upstream connections — each host's idle HTTP/1.1 keep-alive connections (most
//! recent first, closed when idle too long, used up, or when the host leaves its cluster),
//! how any protocol's pool gets a connection within the cluster's circuit breakers (this
//! shard's share of Envoy's process-wide thresholds), and the lease that counts an open
//! connection.
use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::poll_fn,
    rc::Rc,
    sync::Arc,
    task::{Poll, Waker},
    time::{Duration, Instant},
};

use futures_lite::future;
use model::{
    stats::{dec, inc, record_duration, ClusterCells, ClusterStats},
    CircuitBreakers, UpstreamHttpOptions,
};

use super::{
    cluster_manager::{Host, ShardCluster},
    connect,
    open_as::{OpenAs, OpenedAs},
    upstream::Http2Pool,
};
use crate::{
    context::ShardContext,
    net::{buffered::Buffered, drain::DrainSignal, transport::Transport},
    rt::{self, timer},
};

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

    /// Waits until a connection slot is released or a connection goes idle (or the waker is
    /// dropped by cancellation).
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

    /// Wakes a request waiting for a connection (a slot or a stream became free).
    pub fn wake_one(&self) {
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
    /// What it was opened with beyond the cluster's settings (it serves only requests that
    /// want the same).
    pub opened_as: OpenedAs,
    pub lease: Lease,
}

/// Keeps an upstream connection counted in its cluster's stats and breaker until dropped.
pub struct Lease {
    opened: Instant,
    stats: Arc<ClusterStats>,
    shard: usize,
    _slot: Slot,
}

impl Lease {
    /// Counts a new connection (`http2`: an HTTP/2 one) holding `slot`.
    pub fn new(slot: Slot, stats: Arc<ClusterStats>, shard: usize, http2: bool) -> Self {
        let cells = stats.shard(shard);
        inc(&cells.upstream_cx_total);
        match http2 {
            true => inc(&cells.upstream_cx_http2_total),
            false => inc(&cells.upstream_cx_http1_total),
        }
        inc(&cells.upstream_cx_active);
        Self {
            opened: Instant::now(),
            stats,
            shard,
            _slot: slot,
        }
    }

    pub fn cells(&self) -> &ClusterCells {
        self.stats.shard(self.shard)
    }

    pub fn breakers(&self) -> &Rc<Breakers> {
        &self._slot.breakers
    }
}

impl UpstreamConn {
    pub fn new(conn: Buffered, opened_as: OpenAs<'_>, lease: Lease) -> Self {
        Self {
            conn,
            requests: 0,
            opened_as: opened_as.kept(),
            lease,
        }
    }

    /// Whether this connection has carried a request before (a failure on it may be a
    /// keep-alive race rather than the upstream failing).
    pub fn reused(&self) -> bool {
        self.requests > 1
    }

    pub fn cells(&self) -> &ClusterCells {
        self.lease.cells()
    }

    /// Whether the connection's TLS negotiated `h2` by ALPN.
    pub fn negotiated_http2(&self) -> bool {
        let tls = self.conn.io.tls();
        tls.is_some_and(|t| t.connection().alpn_protocol() == Some(b"h2"))
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
    /// The host's HTTP/2 connections.
    pub http2: Http2Pool,
    /// A sweeper task is closing connections as they pass the idle timeout.
    sweeping: Cell<bool>,
    /// Starts when the host leaves its cluster: its connections close as soon as they are
    /// idle, none is parked any more, and the tasks that hold the host end.
    pub retired: DrainSignal,
    /// Under `auto_config`: whether the host's ALPN picked `h2` (learnt from the shard's
    /// first connection to it).
    pub negotiated_http2: Cell<Option<bool>>,
}

impl HostPool {
    /// The most recently used idle connection that is still usable and was opened as `wanted`;
    /// stale ones are closed.
    pub fn take(&self, options: &UpstreamHttpOptions, wanted: OpenAs<'_>) -> Option<UpstreamConn> {
        let now = timer::turn_time();
        loop {
            let (mut conn, since) = {
                let mut idle = self.idle.borrow_mut();
                let last = idle.iter().rposition(|(c, _)| c.opened_as.serves(wanted))?;
                idle.remove(last)
            };
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

    /// The host left its cluster (an update removed it, or replaced it with a changed
    /// endpoint): its idle HTTP/1.1 connections close now and the ones in use close when their
    /// exchange ends, as Envoy drains a removed host's pools. Without this, the sweeper (which
    /// holds the host) kept them open for the whole idle timeout, an hour by default: a file
    /// descriptor per connection under EDS churn until the process ran out (bench/soak.py).
    /// Its HTTP/2 connections close once they carry no stream (upstream/http2.rs).
    pub fn retire(&self) {
        self.retired.start();
        let closing = std::mem::take(&mut *self.idle.borrow_mut());
        drop(closing);
    }
}

/// Parks a connection in its host's pool after a complete exchange (unless it has carried
/// its last request, or the host left its cluster) and wakes a request waiting for one. Idle
/// connections are closed when they pass the idle timeout, by a sweeper task per host that
/// runs while the pool is not empty and the host in its cluster.
pub fn park(host: &Rc<Host>, mut conn: UpstreamConn, options: &UpstreamHttpOptions) {
    if host.pool().retired.is_draining() {
        return;
    }
    if options
        .max_requests_per_connection
        .is_some_and(|max| conn.requests >= max)
    {
        inc(&conn.cells().upstream_cx_max_requests);
        return;
    }
    let breakers = conn.lease.breakers().clone();
    conn.conn.release_idle_buffer();
    host.pool()
        .idle
        .borrow_mut()
        .push((conn, timer::turn_time()));
    if let Some(timeout) = options.idle_timeout {
        if !host.pool().sweeping.replace(true) {
            rt::spawn_local(sweep(host.clone(), timeout)).detach();
        }
    }
    breakers.wake_one();
}

/// Closes a host's idle connections as they expire; ends when the pool is empty (retiring
/// the host empties it and wakes this).
async fn sweep(host: Rc<Host>, timeout: Duration) {
    loop {
        let oldest = host.pool().idle.borrow().first().map(|(_, since)| *since);
        let Some(oldest) = oldest else {
            host.pool().sweeping.set(false);
            return;
        };
        future::or(
            timer::sleep_until(oldest + timeout),
            host.pool().retired.started(),
        )
        .await;
        let now = Instant::now();
        let expired: Vec<_> = {
            let mut idle = host.pool().idle.borrow_mut();
            let n = idle
                .iter()
                .take_while(|(_, since)| *since + timeout <= now)
                .count();
            idle.drain(..n).collect()
        };
        for (conn, _) in expired {
            inc(&conn.cells().upstream_cx_idle_timeout);
        }
    }
}

/// Why no upstream connection could be had.
pub enum Acquire {
    Failed,
    TimedOut,
    Overflow,
}

/// A pooled connection to `host` (opened `as_`), or a new one within the cluster's breakers
/// (waiting as a pending request while `max_connections` is reached).
pub async fn acquire(
    ctx: &ShardContext,
    cluster: &ShardCluster,
    host: &Rc<Host>,
    as_: OpenAs<'_>,
    deadline: Option<Instant>,
) -> Result<UpstreamConn, Acquire> {
    let config = &cluster.config;
    let reuse = || host.pool().take(&config.http, as_);
    let open = async |slot| {
        let stream = open_transport(ctx, cluster, host, as_).await?;
        let lease = Lease::new(slot, config.stats.clone(), ctx.id, false);
        Ok(UpstreamConn::new(Buffered::new(stream), as_, lease))
    };
    within_breakers(ctx, cluster, deadline, reuse, open).await
}

/// A connection to `host` (TCP, then TLS as the endpoint's transport socket says), its
/// connect time and failures counted.
pub async fn open_transport(
    ctx: &ShardContext,
    cluster: &ShardCluster,
    host: &Host,
    as_: OpenAs<'_>,
) -> Result<Transport, Acquire> {
    let config = &cluster.config;
    let cells = config.stats.shard(ctx.id);
    let started = Instant::now();
    match connect::open(ctx, config, &host.endpoint, as_).await {
        Ok(opened) => {
            record_duration(&cells.upstream_cx_connect_ms, started.elapsed());
            Ok(opened.transport)
        }
        Err(e) => {
            tracing::debug!(cluster = %config.name, host = %host.address(), "upstream connect failed: {e}");
            if matches!(e, connect::OpenError::TimedOut) {
                inc(&cells.upstream_cx_connect_timeout);
            }
            inc(&cells.upstream_cx_connect_fail);
            Err(Acquire::Failed)
        }
    }
}

/// What every protocol's pool does to get a connection: `reuse` one it has, else `open` one
/// within the cluster's `max_connections` (given the breaker slot), else wait as a pending
/// request (within `max_pending_requests`) until a slot or a connection frees up.
pub async fn within_breakers<T>(
    ctx: &ShardContext,
    cluster: &ShardCluster,
    deadline: Option<Instant>,
    mut reuse: impl FnMut() -> Option<T>,
    open: impl AsyncFnOnce(Slot) -> Result<T, Acquire>,
) -> Result<T, Acquire> {
    let cells = cluster.config.stats.shard(ctx.id);
    let mut _pending = None;
    loop {
        if let Some(conn) = reuse() {
            return Ok(conn);
        }
        if let Some(slot) = cluster.breakers.connection() {
            return open(slot).await;
        }
        if _pending.is_none() {
            inc(&cells.upstream_cx_overflow);
            let Some(slot) = cluster.breakers.pending() else {
                inc(&cells.upstream_rq_pending_overflow);
                return Err(Acquire::Overflow);
            };
            inc(&cells.upstream_rq_pending_total);
            inc(&cells.upstream_rq_pending_active);
            _pending = Some(PendingGauge { _slot: slot, cells });
        }
        let released = cluster.breakers.released();
        let expired = match deadline {
            None => {
                released.await;
                false
            }
            Some(at) => {
                future::or(
                    async {
                        released.await;
                        false
                    },
                    async {
                        timer::sleep_until(at).await;
                        true
                    },
                )
                .await
            }
        };
        if expired {
            return Err(Acquire::TimedOut);
        }
    }
}

/// A pending request: holds its breaker slot and the `upstream_rq_pending_active` gauge.
struct PendingGauge<'a> {
    _slot: Slot,
    cells: &'a ClusterCells,
}

impl Drop for PendingGauge<'_> {
    fn drop(&mut self) {
        dec(&self.cells.upstream_rq_pending_active);
    }
}
