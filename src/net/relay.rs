//! Byte relay between two sockets: both directions at once, TCP half-close carried across,
//! back-pressure by never reading more than one buffer ahead of the writer, buffers that grow
//! with the traffic (up to the configured limit) and are allocated once per direction.
use std::{
    cell::{Cell, RefCell},
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

/// First buffer size; doubled each time a read fills it, up to the direction's limit.
const INITIAL_BUFFER: usize = 16 << 10;

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides closed their write halves (or one reset after the other closed).
    Closed,
    /// Nothing moved for the idle timeout.
    IdleTimeout,
    /// A socket error (reset) on the downstream side.
    DownstreamError,
    /// A socket error (reset) on the upstream side.
    UpstreamError,
}

/// Byte counters of one relay, and per-chunk hooks into the caller's stats.
pub trait RelayObserver {
    fn downstream_to_upstream(&self, bytes: usize);
    fn upstream_to_downstream(&self, bytes: usize);
}

/// A stream shared by the two directions: each poll borrows it only for the poll's duration.
struct Shared(Rc<RefCell<TcpStream>>);

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Shared {
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

/// Side a copy failed on.
#[derive(Debug, Clone, Copy)]
enum Side {
    Source,
    Sink,
}

/// Copies `from` → `to` until EOF, then half-closes `to`. `limit` caps the buffer.
async fn copy(
    mut from: Shared,
    mut to: Shared,
    limit: usize,
    last_activity: &Cell<Instant>,
    on_chunk: impl Fn(usize),
) -> Result<(), Side> {
    let mut buf = vec![0u8; INITIAL_BUFFER.min(limit)];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| Side::Source)?;
        if n == 0 {
            // Half-close: the peer may keep sending the other way.
            let _ = to.close().await;
            return Ok(());
        }
        last_activity.set(Instant::now());
        to.write_all(&buf[..n]).await.map_err(|_| Side::Sink)?;
        on_chunk(n);
        if n == buf.len() && buf.len() < limit {
            buf.resize((buf.len() * 2).min(limit), 0);
        }
    }
}

/// Relays until both directions closed, an error, or `idle_timeout` of silence.
pub async fn relay(
    downstream: TcpStream,
    upstream: TcpStream,
    downstream_limit: usize,
    upstream_limit: usize,
    idle_timeout: Option<Duration>,
    observer: &impl RelayObserver,
) -> RelayEnd {
    let down = Rc::new(RefCell::new(downstream));
    let up = Rc::new(RefCell::new(upstream));
    let last_activity = Cell::new(Instant::now());
    let to_upstream = async {
        copy(
            Shared(down.clone()),
            Shared(up.clone()),
            upstream_limit,
            &last_activity,
            |n| observer.downstream_to_upstream(n),
        )
        .await
        .map_err(|side| match side {
            Side::Source => RelayEnd::DownstreamError,
            Side::Sink => RelayEnd::UpstreamError,
        })
    };
    let to_downstream = async {
        copy(
            Shared(up.clone()),
            Shared(down.clone()),
            downstream_limit,
            &last_activity,
            |n| observer.upstream_to_downstream(n),
        )
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
    match idle_timeout {
        None => both.await,
        Some(timeout) => future::or(both, idle(timeout, &last_activity)).await,
    }
}

async fn idle(timeout: Duration, last_activity: &Cell<Instant>) -> RelayEnd {
    loop {
        let deadline = last_activity.get() + timeout;
        let now = Instant::now();
        if now >= deadline {
            return RelayEnd::IdleTimeout;
        }
        glommio::timer::sleep(deadline - now).await;
    }
}
