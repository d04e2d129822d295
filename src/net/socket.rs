//! NET/IO layer: a downstream connection's socket before its transport socket is chosen: an
//! accepted TCP connection, or an internal listener's in-process one (which has no addresses
//! of its own: they read as `NO_ADDRESS` until `istio.set_internal_dst_address` restores its
//! destination).
use std::{
    io,
    net::SocketAddr,
    task::{Context, Poll},
};

use model::NO_ADDRESS;

use super::{
    internal::{InternalStream, Passage},
    transport::Transport,
};
use crate::rt::net::TcpStream;

pub enum Socket {
    Tcp(TcpStream),
    Internal(InternalStream),
}

impl Socket {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Socket::Tcp(io) => io.peer_addr(),
            Socket::Internal(_) => Ok(NO_ADDRESS),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Socket::Tcp(io) => io.local_addr(),
            Socket::Internal(_) => Ok(NO_ADDRESS),
        }
    }

    /// The destination before an iptables REDIRECT; an error when there was none (never for
    /// an in-process connection).
    pub fn original_dst(&self) -> io::Result<SocketAddr> {
        match self {
            Socket::Tcp(io) => io.original_dst(),
            Socket::Internal(_) => Err(io::Error::other("an in-process connection")),
        }
    }

    /// What the opener of an in-process connection passed along.
    pub fn passage(&self) -> Option<&Passage> {
        match self {
            Socket::Tcp(_) => None,
            Socket::Internal(io) => io.passage(),
        }
    }

    /// See `TcpStream::poll_peek`.
    pub fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        seen: usize,
    ) -> Poll<io::Result<usize>> {
        match self {
            Socket::Tcp(io) => io.poll_peek(cx, buf, seen),
            Socket::Internal(io) => io.poll_peek(cx, buf, seen),
        }
    }
}

impl From<Socket> for Transport {
    fn from(socket: Socket) -> Self {
        match socket {
            Socket::Tcp(io) => Transport::Raw(io),
            Socket::Internal(io) => Transport::Internal(io),
        }
    }
}
