//! A socket with a read buffer, for protocol codecs: reads land in the shard's scratch buffer
//! and only the bytes received are copied into the connection's `BytesMut` (so a connection's
//! buffer holds what it has not parsed yet, and nothing when idle).
use std::{
    cell::RefCell,
    future::poll_fn,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt};

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
        let (io, buf) = (&mut self.io, &mut self.buf);
        poll_fn(|cx| poll_fill(io, buf, scratch, cx)).await
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

/// Reads once from `io` through the scratch buffer, appending what came to `buf`.
fn poll_fill(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    scratch: &RefCell<Box<[u8]>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut scratch = scratch.borrow_mut();
    let limit = scratch.len().min(READ_CHUNK);
    let n = ready!(Pin::new(io).poll_read(cx, &mut scratch[..limit]))?;
    buf.extend_from_slice(&scratch[..n]);
    Poll::Ready(Ok(n))
}

/// A socket written by one future and read by another of the same task (each poll borrows
/// it only for the poll), e.g. a request body still going out while the response comes in.
pub struct Shared<'a>(RefCell<&'a mut TcpStream>);

impl<'a> Shared<'a> {
    pub fn new(io: &'a mut TcpStream) -> Self {
        Self(RefCell::new(io))
    }

    /// Reads once, appending to `buf`; 0 = the peer closed its side.
    pub async fn fill(
        &self,
        buf: &mut BytesMut,
        scratch: &RefCell<Box<[u8]>>,
    ) -> io::Result<usize> {
        poll_fn(|cx| poll_fill(&mut self.0.borrow_mut(), buf, scratch, cx)).await
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut **self.0.borrow_mut()).poll_write(cx, data)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        Ok(())
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
