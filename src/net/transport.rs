//! NET/IO layer: a connection's transport socket, raw, TLS or in-process (an internal
//! listener's connection), behind one interface: what the codecs and the relay read from and
//! write to. Writers flush after each write (`write_all`
//! in `buffered`, the relay), which is a no-op on a raw socket and sends TLS records that did
//! not fit into the socket at once.
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};

use model::NO_ADDRESS;

use super::{internal::InternalStream, tls::TlsStream};
use crate::rt::net::TcpStream;

pub enum Transport {
    Raw(TcpStream),
    Tls(Box<TlsStream>),
    Internal(InternalStream),
}

impl From<TcpStream> for Transport {
    fn from(io: TcpStream) -> Self {
        Transport::Raw(io)
    }
}

impl From<TlsStream> for Transport {
    fn from(io: TlsStream) -> Self {
        Transport::Tls(Box::new(io))
    }
}

impl Transport {
    /// Reads into `buf`'s spare capacity (at least `reserve` bytes of room); 0 = the peer
    /// closed its side.
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        reserve: usize,
    ) -> Poll<io::Result<usize>> {
        match self {
            Transport::Raw(io) => io.poll_read_buf(cx, buf, reserve),
            Transport::Tls(tls) => {
                if buf.capacity() - buf.len() < reserve {
                    buf.reserve(reserve);
                }
                tls.poll_read_buf(cx, buf, reserve)
            }
            Transport::Internal(io) => io.poll_read_buf(cx, buf, reserve),
        }
    }

    /// Ready once data, a close or an error is waiting (nothing is read).
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Transport::Raw(io) => io.poll_readable(cx),
            Transport::Tls(tls) => tls.poll_readable(cx),
            Transport::Internal(io) => io.poll_readable(cx),
        }
    }

    /// Whether data, a close or an error is waiting. Never waits.
    pub fn has_pending_input(&mut self) -> bool {
        match self {
            Transport::Raw(io) => io.has_pending_input(),
            Transport::Tls(tls) => tls.has_pending_input(),
            Transport::Internal(io) => io.has_pending_input(),
        }
    }

    /// The TCP connection underneath, if there is one.
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Transport::Raw(io) => Some(io),
            Transport::Tls(tls) => Some(tls.tcp()),
            Transport::Internal(_) => None,
        }
    }

    pub fn tls(&self) -> Option<&TlsStream> {
        match self {
            Transport::Tls(tls) => Some(tls),
            Transport::Raw(_) | Transport::Internal(_) => None,
        }
    }

    pub fn tls_mut(&mut self) -> Option<&mut TlsStream> {
        match self {
            Transport::Tls(tls) => Some(tls),
            Transport::Raw(_) | Transport::Internal(_) => None,
        }
    }

    /// `NO_ADDRESS` for an in-process connection.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().map_or(Ok(NO_ADDRESS), TcpStream::peer_addr)
    }

    /// `NO_ADDRESS` for an in-process connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().map_or(Ok(NO_ADDRESS), TcpStream::local_addr)
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Raw(io) => Pin::new(io).poll_read(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Transport::Internal(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Raw(io) => Pin::new(io).poll_write(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Transport::Internal(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Raw(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
            Transport::Internal(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Raw(io) => Pin::new(io).poll_flush(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Transport::Internal(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Raw(io) => Pin::new(io).poll_close(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_close(cx),
            Transport::Internal(io) => Pin::new(io).poll_close(cx),
        }
    }
}
