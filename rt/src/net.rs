//! Runtime: TCP sockets on the shard's ring. Non-blocking syscalls with io_uring readiness
//! (see `readiness`), so a relay reads into the shard's scratch buffer and idle connections
//! hold no buffer.
use std::{
    future::poll_fn,
    io,
    net::{Shutdown, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::BytesMut;
use futures_lite::{future, AsyncRead, AsyncWrite};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::{
    readiness::{Interest, Source},
    timer,
};

pub struct TcpListener(Source<std::net::TcpListener>);

impl TcpListener {
    /// Adopts a bound, listening, non-blocking socket (created with socket2 for the options
    /// std does not expose). Must be called on a shard thread.
    pub fn adopt(socket: Socket) -> Self {
        Self(Source::new(socket.into()))
    }

    /// The next connection, already non-blocking.
    pub async fn accept(&mut self) -> io::Result<TcpStream> {
        poll_fn(|cx| self.0.poll_io(Interest::Read, cx, accept4)).await
    }
}

/// Accepts one connection, with its peer's address (which accept4 reports for free, so no
/// getpeername is needed later).
fn accept4(listener: &std::net::TcpListener) -> io::Result<TcpStream> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let mut storage = socket2::SockAddrStorage::zeroed();
    let mut len = storage.size_of();
    // SAFETY: accept4 writes at most `len` bytes of address into `storage` (viewed as the
    // generic sockaddr it starts with), which outlives the call; `listener` keeps the
    // descriptor open for the call.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            storage.view_as::<libc::sockaddr>(),
            &mut len,
            flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: accept4 initialised `len` bytes of `storage` with the peer's address.
    let peer = unsafe { socket2::SockAddr::new(storage, len) }.as_socket();
    Ok(TcpStream {
        source: Source::new(fd.into()),
        peer,
    })
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        // Leave the SO_REUSEPORT group now, not when the ring releases its poll's reference:
        // new connections go to the shards still listening. Not once the sockets were handed
        // to a new process (hot restart): the shutdown would stop its listening too.
        if !crate::handover::handed_over() {
            let _ = SockRef::from(self.0.io()).shutdown(Shutdown::Read);
        }
    }
}

pub struct TcpStream {
    source: Source<std::net::TcpStream>,
    /// The peer's address when it is known without a syscall (accepted connections).
    peer: Option<SocketAddr>,
}

impl TcpStream {
    /// Connects to `addr`, failing with `TimedOut` after `timeout`.
    pub async fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        Self::connect_from(None, addr, timeout).await
    }

    /// `connect_timeout` from the local address `from` (port 0: any), when given.
    pub async fn connect_from(
        from: Option<SocketAddr>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        if let Some(from) = from {
            socket.bind(&from.into())?;
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut source = Source::new(std::net::TcpStream::from(socket));
        source.clear(Interest::Write);
        let connected = poll_fn(|cx| source.poll_ready(Interest::Write, cx).map(Ok));
        let expired = async {
            timer::sleep(timeout).await;
            Err(io::Error::from(io::ErrorKind::TimedOut))
        };
        future::or(connected, expired).await?;
        if let Some(e) = source.io().take_error()? {
            return Err(e);
        }
        Ok(Self { source, peer: None })
    }

    /// Ready once the socket may be read (data, EOF or an error), without reading.
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.source.poll_ready(Interest::Read, cx)
    }

    /// Whether the socket turned readable (data or EOF) since it was last drained. For an idle
    /// pooled HTTP/1 connection either means it can no longer carry a request. Never waits.
    pub fn has_pending_input(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.source.poll_ready(Interest::Read, &mut cx).is_ready()
    }

    /// Reads into `buf`'s spare capacity (at least `reserve` bytes of it, reserved if need be),
    /// so received bytes are not copied again; 0 = the peer closed its side.
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        reserve: usize,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < reserve {
            buf.reserve(reserve);
        }
        let result = self.source.poll_io(Interest::Read, cx, |io| {
            let spare = buf.spare_capacity_mut();
            let n = SockRef::from(io).recv(spare)?;
            let drained = n > 0 && n < spare.len();
            // SAFETY: recv initialised the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            Ok((n, drained))
        });
        match result {
            Poll::Ready(Ok((n, drained))) => {
                if drained {
                    self.source.clear(Interest::Read); // drained: new data raises a poll event
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Copies received bytes into `buf` without consuming them (MSG_PEEK), once more have
    /// arrived than `seen` (what the previous peek returned); 0 = the peer closed its side
    /// (with or without bytes left unread: none will follow).
    pub fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        seen: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.source.poll_io(Interest::Read, cx, |io| io.peek(buf)) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            if n == 0 || n > seen || n == buf.len() {
                return Poll::Ready(Ok(n));
            }
            if self.source.read_closed() {
                return Poll::Ready(Ok(0)); // the peer closed: nothing new will arrive
            }
            self.source.clear(Interest::Read); // nothing new: wait for the next arrival
        }
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.source.io().set_nodelay(nodelay)
    }

    pub fn nodelay(&self) -> io::Result<bool> {
        self.source.io().nodelay()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self.peer {
            Some(peer) => Ok(peer),
            None => self.source.io().peer_addr(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.io().local_addr()
    }

    /// The destination the connection had before an iptables REDIRECT (`SO_ORIGINAL_DST`,
    /// `IP6T_SO_ORIGINAL_DST` for IPv6); an error when it was not redirected.
    pub fn original_dst(&self) -> io::Result<SocketAddr> {
        let socket = socket2::SockRef::from(self.source.io());
        let address = match self.local_addr()? {
            SocketAddr::V4(_) => socket.original_dst_v4()?,
            SocketAddr::V6(_) => socket.original_dst_v6()?,
        };
        address
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP address"))
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.source.poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.source.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.source.poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // writes go straight to the socket
    }

    /// Half-close: sends FIN; reading goes on.
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.source.io().shutdown(Shutdown::Write))
    }
}
