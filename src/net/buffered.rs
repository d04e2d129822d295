//! A socket with a read buffer, for protocol codecs: reads land in the shard's scratch buffer
//! and only the bytes received are copied into the connection's `BytesMut` (so a connection's
//! buffer holds what it has not parsed yet, and nothing when idle).
use std::{
    cell::RefCell,
    future::poll_fn,
    io,
    pin::Pin,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use futures_lite::{future, AsyncRead, AsyncWriteExt};

use crate::rt::{net::TcpStream, timer};

/// Most bytes one read takes from the socket (bounds how far a peer can run ahead).
const READ_CHUNK: usize = 64 << 10;

pub struct Buffered {
    pub io: TcpStream,
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
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Reads once, appending to `buf`; 0 = the peer closed its side.
    pub async fn fill(&mut self, scratch: &RefCell<Box<[u8]>>) -> io::Result<usize> {
        let io = &mut self.io;
        let buf = &mut self.buf;
        poll_fn(|cx| {
            let mut scratch = scratch.borrow_mut();
            let limit = scratch.len().min(READ_CHUNK);
            let n = std::task::ready!(Pin::new(&mut *io).poll_read(cx, &mut scratch[..limit]))?;
            buf.extend_from_slice(&scratch[..n]);
            std::task::Poll::Ready(Ok(n))
        })
        .await
    }

    /// `fill`, failing with `TimedOut` at `deadline` (none = wait forever).
    pub async fn fill_until(
        &mut self,
        scratch: &RefCell<Box<[u8]>>,
        deadline: Option<Instant>,
    ) -> Result<usize, IoFailure> {
        let read = async { self.fill(scratch).await.map_err(|_| IoFailure::Broken) };
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
        self.io.write_all(data).await
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `now + timeout`, when there is a timeout.
pub fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}
