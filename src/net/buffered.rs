//! A transport (raw or TLS) with a read buffer, for protocol codecs: only the bytes received
//! land in the connection's `BytesMut` (so a connection's buffer holds what it has not parsed
//! yet, and nothing when idle). Every write is flushed (a no-op on a raw socket).
use std::{
    cell::RefCell,
    future::poll_fn,
    io,
    pin::Pin,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use futures_lite::{future, AsyncWrite, AsyncWriteExt};

use super::transport::Transport;
use crate::rt::timer;

/// Most read buffers a shard keeps for reuse.
const MAX_SPARE: usize = 64;

thread_local! {
    /// This shard's read buffers not in use (each with `READ_RESERVE` bytes free).
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Free buffer space a read makes sure of: a head with a 16 KiB body arrives in one read (the
/// buffer goes back to the shard's spares when the connection goes idle, so this is not an
/// allocation per request; bench/RESULTS.md has the measurements).
const READ_RESERVE: usize = 32 << 10;

pub struct Buffered {
    pub io: Transport,
    /// Received, not yet consumed.
    pub buf: BytesMut,
}

/// Why a read with a deadline failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoFailure {
    TimedOut,
    /// A socket error (reset): the connection is unusable.
    Broken,
}

impl Buffered {
    pub fn new(io: impl Into<Transport>) -> Self {
        Self {
            io: io.into(),
            buf: BytesMut::new(),
        }
    }

    /// Reads once, appending to `buf`; 0 = the peer closed its side. With nothing buffered,
    /// the buffer is taken only once there is something to read: a connection waiting for
    /// its next request holds none.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.is_empty() {
            poll_fn(|cx| self.io.poll_readable(cx)).await;
            if self.buf.capacity() < READ_RESERVE {
                if let Some(spare) = SPARE.with(|s| s.borrow_mut().pop()) {
                    self.buf = spare;
                }
            }
        }
        let (io, buf) = (&mut self.io, &mut self.buf);
        poll_fn(|cx| io.poll_read_buf(cx, buf, READ_RESERVE)).await
    }

    /// Gives the read buffer back when nothing is buffered (an idle keep-alive connection
    /// holds no buffer): to the shard's spare buffers when nothing else uses it any more, so
    /// the next read anywhere on the shard takes it instead of allocating.
    pub fn release_idle_buffer(&mut self) {
        if !self.buf.is_empty() {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        if buf.try_reclaim(READ_RESERVE) {
            SPARE.with(|s| {
                let mut spare = s.borrow_mut();
                if spare.len() < MAX_SPARE {
                    spare.push(buf);
                }
            });
        }
    }

    /// `fill`, failing with `TimedOut` at `deadline` (none = wait forever).
    pub async fn fill_until(&mut self, deadline: Option<Instant>) -> Result<usize, IoFailure> {
        let read = async { self.fill().await.map_err(|_| IoFailure::Broken) };
        match deadline {
            None => read.await,
            Some(at) => {
                future::or(read, async {
                    timer::sleep_until(at).await;
                    Err(IoFailure::TimedOut)
                })
                .await
            }
        }
    }

    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.io.write_all(data).await?;
        self.io.flush().await
    }

    /// Writes every slice, in order, with as few `writev` calls as the socket allows.
    pub async fn write_all_vectored(
        &mut self,
        mut slices: &mut [io::IoSlice<'_>],
    ) -> io::Result<()> {
        io::IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            let io = &mut self.io;
            let n = poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, slices)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io::IoSlice::advance_slices(&mut slices, n);
        }
        self.io.flush().await
    }
}

/// A socket written by one future and read by another of the same task (each poll borrows
/// it only for the poll), e.g. a request body still going out while the response comes in.
pub struct Shared<'a>(RefCell<&'a mut Transport>);

impl<'a> Shared<'a> {
    pub fn new(io: &'a mut Transport) -> Self {
        Self(RefCell::new(io))
    }

    /// Reads once, appending to `buf`; 0 = the peer closed its side.
    pub async fn fill(&self, buf: &mut BytesMut) -> io::Result<usize> {
        poll_fn(|cx| self.0.borrow_mut().poll_read_buf(cx, buf, READ_RESERVE)).await
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut **self.0.borrow_mut()).poll_write(cx, data)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        poll_fn(|cx| Pin::new(&mut **self.0.borrow_mut()).poll_flush(cx)).await
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `now + timeout`, when there is a timeout; now is the loop's per-turn time (no clock read),
/// as Envoy arms its timers from the dispatcher's cached time.
pub fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| timer::turn_time() + t)
}
