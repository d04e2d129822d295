//! NET/IO layer: a connection's transport seen through tokio's I/O traits, which the `h2`
//! crate speaks; bytes already read off it (a sniffed HTTP/2 preface) are replayed first.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use tokio::io::ReadBuf;

use super::{buffered::Buffered, transport::Transport};

pub struct TokioIo {
    io: Transport,
    /// Read before the handoff, not yet consumed.
    replay: BytesMut,
}

impl TokioIo {
    /// The connection `conn` with what its buffer holds still to be read.
    pub fn new(conn: Buffered) -> Self {
        Self {
            io: conn.io,
            replay: conn.buf,
        }
    }
}

impl tokio::io::AsyncRead for TokioIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            if this.replay.is_empty() {
                // The read buffer is not needed once replayed: h2 reads into its own.
                this.replay = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        let unfilled = buf.initialize_unfilled();
        let n = std::task::ready!(Pin::new(&mut this.io).poll_read(cx, unfilled))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for TokioIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}
