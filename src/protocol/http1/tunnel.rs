//! Protocol layer: an HTTP/1.1 connection carrying a tunnel once its response head was read:
//! after a CONNECT the raw bytes both ways; after a POST (tcp_proxy's `use_post`, as Envoy
//! sends it) the tunnel's bytes go out as the request's chunked body and come in as the
//! response's body, decoded by its framing. What arrived after the response head is read first.
use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes};
use futures_lite::{AsyncRead, AsyncWrite};

use super::{encode_chunk, encode_last_chunk, BodyDecoder, BodyEvent, Framing, Limits};
use crate::net::buffered::Buffered;

pub struct Http1Tunnel {
    conn: Buffered,
    /// The request body is chunked (a POST), with the response's body decoder.
    post: Option<Post>,
}

/// A POST tunnel's framing state.
struct Post {
    decoder: BodyDecoder,
    /// The rest of the last decoded chunk.
    pending_in: Bytes,
    /// Encoded bytes not yet taken by the connection (only while it pushes back).
    pending_out: Vec<u8>,
    /// The last chunk was queued.
    ended: bool,
}

impl Http1Tunnel {
    /// A CONNECT's tunnel: the connection's bytes as they are.
    pub fn connect(conn: Buffered) -> Self {
        Self { conn, post: None }
    }

    /// A POST's tunnel whose response body is framed as `framing`.
    pub fn post(conn: Buffered, framing: &Framing, limits: &Limits) -> Self {
        let post = Post {
            decoder: BodyDecoder::new(framing, limits),
            pending_in: Bytes::new(),
            pending_out: Vec::new(),
            ended: false,
        };
        Self {
            conn,
            post: Some(post),
        }
    }

    /// Writes what a POST holds encoded until the connection took it all.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(post) = &mut self.post else {
            return Poll::Ready(Ok(()));
        };
        while !post.pending_out.is_empty() {
            let n = ready!(Pin::new(&mut self.conn.io).poll_write(cx, &post.pending_out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            post.pending_out.drain(..n);
        }
        post.pending_out = Vec::new(); // the memory back while the connection keeps up
        Poll::Ready(Ok(()))
    }
}

/// Copies what fits of `from` into `buf`.
fn take(from: &mut Bytes, buf: &mut [u8]) -> usize {
    let n = buf.len().min(from.len());
    buf[..n].copy_from_slice(&from[..n]);
    from.advance(n);
    n
}

impl AsyncRead for Http1Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let conn = &mut this.conn;
        let Some(post) = &mut this.post else {
            if conn.buf.is_empty() {
                return Pin::new(&mut conn.io).poll_read(cx, buf);
            }
            let n = buf.len().min(conn.buf.len());
            buf[..n].copy_from_slice(&conn.buf[..n]);
            conn.buf.advance(n);
            return Poll::Ready(Ok(n));
        };
        loop {
            if !post.pending_in.is_empty() {
                return Poll::Ready(Ok(take(&mut post.pending_in, buf)));
            }
            match post.decoder.decode(&mut conn.buf) {
                Ok(BodyEvent::Data(chunk)) => post.pending_in = chunk,
                // The response's end is the tunnel's half-close.
                Ok(BodyEvent::Done { .. }) => return Poll::Ready(Ok(0)),
                Ok(BodyEvent::NeedMore) => {
                    let n = ready!(Pin::new(&mut conn.io).poll_read(cx, buf))?;
                    if n == 0 {
                        post.decoder.at_eof().map_err(io::Error::other)?;
                        return Poll::Ready(Ok(0));
                    }
                    conn.buf.extend_from_slice(&buf[..n]);
                }
                Err(error) => return Poll::Ready(Err(io::Error::other(error))),
            }
        }
    }
}

impl AsyncWrite for Http1Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.post.is_none() {
            return Pin::new(&mut this.conn.io).poll_write(cx, buf);
        }
        ready!(this.poll_drain(cx))?;
        let post = this.post.as_mut().expect("a POST tunnel");
        encode_chunk(buf, &mut post.pending_out);
        // Taken once encoded; the next write or flush pushes out what the connection left.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.conn.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(post) = this.post.as_mut().filter(|p| !p.ended) {
            post.ended = true;
            encode_last_chunk(None, &mut post.pending_out);
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.conn.io).poll_close(cx)
    }
}
