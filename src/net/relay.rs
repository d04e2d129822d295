//! Byte relay between two byte streams (raw or TLS transports, or a tunnel carried on an
//! HTTP/2 stream): both directions at once, half-close carried across.
//! Reads land in the shard's scratch buffer and are written on at once, so an idle connection
//! holds no buffer; only bytes the peer cannot take yet are kept per connection (back-pressure:
//! at most one read, bounded by the direction's limit, is ever held).
use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::{net::drain::DrainSignal, rt::timer};

/// Size of each shard's scratch buffer: the largest single read.
pub const SCRATCH_BYTES: usize = 256 << 10;

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides closed their write halves.
    Closed,
    /// Nothing moved for the idle timeout.
    IdleTimeout,
    /// A socket error (reset) on the downstream side.
    DownstreamError,
    /// A socket error (reset) on the upstream side.
    UpstreamError,
    /// The listener's drain time ended.
    Drained,
}

/// Per-chunk hooks into the caller's stats.
pub trait RelayObserver {
    fn downstream_to_upstream(&self, bytes: usize);
    fn upstream_to_downstream(&self, bytes: usize);
}

/// Read-ahead limits per direction and the idle timeout.
pub struct RelayLimits {
    /// Most bytes read from upstream ahead of a slow downstream.
    pub downstream: usize,
    /// Most bytes read from downstream ahead of a slow upstream.
    pub upstream: usize,
    pub idle_timeout: Option<Duration>,
}

/// Writes through a shared stream; each poll borrows it only for the poll's duration.
struct Writer<'a, S>(&'a RefCell<S>);

impl<S: AsyncWrite + Unpin> AsyncWrite for Writer<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// Which socket of a direction failed.
#[derive(Debug, Clone, Copy)]
enum Side {
    Source,
    Sink,
}

/// One direction: `from` → `to` until EOF, then half-close `to`.
struct Direction<'a, F, T> {
    from: &'a RefCell<F>,
    to: &'a RefCell<T>,
    limit: usize,
    scratch: &'a RefCell<Box<[u8]>>,
    /// Bytes read but not yet accepted by `to`; empty (and unallocated) unless back-pressured.
    backlog: Vec<u8>,
}

impl<'a, F: AsyncRead + Unpin, T: AsyncWrite + Unpin> Direction<'a, F, T> {
    fn new(
        from: &'a RefCell<F>,
        to: &'a RefCell<T>,
        limit: usize,
        scratch: &'a RefCell<Box<[u8]>>,
    ) -> Self {
        Self {
            from,
            to,
            limit,
            scratch,
            backlog: Vec::new(),
        }
    }

    async fn run(
        mut self,
        last_activity: &Cell<Instant>,
        on_chunk: impl Fn(usize),
    ) -> Result<(), Side> {
        loop {
            if !self.backlog.is_empty() {
                Writer(self.to)
                    .write_all(&self.backlog)
                    .await
                    .map_err(|_| Side::Sink)?;
                self.backlog = Vec::new(); // give the memory back while the peer keeps up
            }
            // TLS records the socket did not take yet (a no-op on a raw socket).
            Writer(self.to).flush().await.map_err(|_| Side::Sink)?;
            let n = poll_fn(|cx| self.read_and_forward(cx)).await?;
            if n == 0 {
                // Half-close: the peer may keep sending the other way.
                let _ = Writer(self.to).close().await;
                return Ok(());
            }
            last_activity.set(Instant::now());
            on_chunk(n);
        }
    }

    /// Reads into the scratch buffer and writes as much as `to` takes right away; the rest
    /// goes to the backlog.
    fn read_and_forward(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Side>> {
        let mut scratch = self.scratch.borrow_mut();
        let buf = &mut scratch[..self.limit.clamp(1, SCRATCH_BYTES)];
        let n = match Pin::new(&mut *self.from.borrow_mut()).poll_read(cx, buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(Side::Source)),
            Poll::Ready(Ok(n)) => n,
        };
        let mut written = 0;
        while written < n {
            match Pin::new(&mut *self.to.borrow_mut()).poll_write(cx, &buf[written..n]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(Side::Sink)),
                Poll::Ready(Ok(w)) => written += w,
                Poll::Pending => break,
            }
        }
        self.backlog.extend_from_slice(&buf[written..n]);
        Poll::Ready(Ok(n))
    }
}

/// Relays until both directions closed, an error, `idle_timeout` of silence, or the end of
/// the drain of the listener the downstream connection came from.
pub async fn relay(
    downstream: impl AsyncRead + AsyncWrite + Unpin,
    upstream: impl AsyncRead + AsyncWrite + Unpin,
    limits: &RelayLimits,
    scratch: &RefCell<Box<[u8]>>,
    observer: &impl RelayObserver,
    drain: &DrainSignal,
) -> RelayEnd {
    let (down, up) = (RefCell::new(downstream), RefCell::new(upstream));
    let last_activity = Cell::new(Instant::now());
    let to_upstream = async {
        Direction::new(&down, &up, limits.upstream, scratch)
            .run(&last_activity, |n| observer.downstream_to_upstream(n))
            .await
            .map_err(|side| match side {
                Side::Source => RelayEnd::DownstreamError,
                Side::Sink => RelayEnd::UpstreamError,
            })
    };
    let to_downstream = async {
        Direction::new(&up, &down, limits.downstream, scratch)
            .run(&last_activity, |n| observer.upstream_to_downstream(n))
            .await
            .map_err(|side| match side {
                Side::Source => RelayEnd::UpstreamError,
                Side::Sink => RelayEnd::DownstreamError,
            })
    };
    let both = async {
        match future::try_zip(to_upstream, to_downstream).await {
            Ok(_) => RelayEnd::Closed,
            Err(end) => end,
        }
    };
    let drained = async {
        drain.closed().await;
        RelayEnd::Drained
    };
    let ended = async {
        match limits.idle_timeout {
            None => drained.await,
            Some(timeout) => future::or(idle(timeout, &last_activity), drained).await,
        }
    };
    future::or(both, ended).await
}

async fn idle(timeout: Duration, last_activity: &Cell<Instant>) -> RelayEnd {
    loop {
        let deadline = last_activity.get() + timeout;
        if Instant::now() >= deadline {
            return RelayEnd::IdleTimeout;
        }
        timer::sleep_until(deadline).await;
    }
}
