//! Protocol layer: an HTTP/2 stream carrying a tunnel (a terminated CONNECT, or a WebSocket
//! over extended CONNECT) as a byte stream the relay reads and writes: DATA frames in and out
//! within the flow-control windows, END_STREAM as the half-close, a reset as an error.
use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes};
use futures_lite::{AsyncRead, AsyncWrite};
use h2::{Reason, RecvStream, SendStream};

/// Both directions of one stream once its response head (200) is sent.
pub struct Tunnel {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// The rest of the last DATA frame read (at most one frame is held): its window is given
    /// back only as the relay takes it.
    pending: Bytes,
    /// END_STREAM went out.
    ended: bool,
}

impl Tunnel {
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            ended: false,
        }
    }

    /// Ends the stream with RST_STREAM `reason` (its tunnel's far end failed).
    pub fn reset(&mut self, reason: Reason) {
        self.send.send_reset(reason);
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(chunk)) => this.pending = chunk,
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
                None => return Poll::Ready(Ok(0)), // END_STREAM: the client's half-close
            }
        }
        let n = buf.len().min(this.pending.len());
        buf[..n].copy_from_slice(&this.pending[..n]);
        this.pending.advance(n);
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let send = &mut self.get_mut().send;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Only what the client's windows allow is queued: a slow client slows the upstream.
        while send.capacity() == 0 {
            send.reserve_capacity(buf.len());
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
        let n = buf.len().min(send.capacity());
        match send.send_data(Bytes::copy_from_slice(&buf[..n]), false) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(error) => Poll::Ready(Err(io::Error::other(error))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes queued frames out.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ended {
            this.ended = true;
            this.send
                .send_data(Bytes::new(), true)
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}
