//! NET/IO layer: the TLS transport socket on the shard's own loop: rustls over a
//! non-blocking socket, driven by the same readiness as a raw one (no extra thread, no tokio).
//! Servers accept through rustls' `Acceptor` so the config can depend on the ClientHello
//! (ALPN fallback); clients connect with the cluster's config. Plaintext is read out of
//! rustls' buffer straight into the caller's `BytesMut`.
use std::{
    cell::OnceCell,
    future::poll_fn,
    io::{self, BufRead, Read, Write},
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{ready, Context, Poll, Waker},
};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use model::{
    tls::{ClientTls, ServerConfigs},
    tls_info::{CertificateInfo, DownstreamTls, UriSans},
};
use rustls::{pki_types::ServerName, server::Acceptor, ClientConfig, ClientConnection, Connection};

use crate::rt::net::TcpStream;

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The peer broke the TLS rules or failed verification (the alert was sent).
    Tls(rustls::Error),
    /// The socket failed or closed before the handshake completed.
    Io(io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Tls(e) => write!(f, "TLS error: {e}"),
            HandshakeError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// A TLS connection over a socket.
pub struct TlsStream {
    io: TcpStream,
    tls: Connection,
    /// `close_notify` has been queued.
    closing: bool,
    /// The certificate this side presented: served (server side) or sent (client side).
    local: Option<Arc<CertificateInfo>>,
    /// Both sides' first URI SANs, read once when first asked.
    uri_sans: OnceCell<Rc<UriSans>>,
    /// Plaintext given back by a filter that read it but does not consume it ([`Self::unread`]):
    /// read again before anything rustls holds.
    unread: Vec<u8>,
}

/// The socket as `Read`/`Write` for rustls: "would block" instead of pending (the waker is
/// registered by the poll underneath).
struct SyncIo<'a, 'b> {
    io: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for SyncIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_read(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SyncIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `Pending` for "would block".
fn pending_on_block<T>(result: io::Result<T>) -> Poll<io::Result<T>> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

/// Accepts a downstream TLS connection: reads the ClientHello, picks the config (with or
/// without ALPN), completes the handshake.
pub async fn accept(
    mut io: TcpStream,
    configs: &ServerConfigs,
) -> Result<TlsStream, HandshakeError> {
    let mut acceptor = Acceptor::default();
    let accepted = loop {
        let n = poll_fn(|cx| pending_on_block(acceptor.read_tls(&mut SyncIo { io: &mut io, cx })))
            .await
            .map_err(HandshakeError::Io)?;
        if n == 0 {
            return Err(HandshakeError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => {}
            Err((e, mut alert)) => {
                let _ =
                    poll_fn(|cx| pending_on_block(alert.write(&mut SyncIo { io: &mut io, cx })))
                        .await;
                return Err(HandshakeError::Tls(e));
            }
        }
    };
    let (config, served) = configs.config_for(&accepted.client_hello());
    let conn = match accepted.into_connection(config) {
        Ok(conn) => conn,
        Err((e, mut alert)) => {
            let _ =
                poll_fn(|cx| pending_on_block(alert.write(&mut SyncIo { io: &mut io, cx }))).await;
            return Err(HandshakeError::Tls(e));
        }
    };
    TlsStream::handshake(io, conn.into(), served).await
}

/// Starts TLS to an upstream host with `config` (the context's, taken when the connection
/// began, presenting `local`): SNI `sni` (`auto_sni`) or as configured (none: the host's
/// address stands as the name, which rustls never sends), then the handshake.
pub async fn connect(
    io: TcpStream,
    tls: &ClientTls,
    config: Arc<ClientConfig>,
    local: Option<Arc<CertificateInfo>>,
    sni: Option<&str>,
    host: SocketAddr,
) -> Result<TlsStream, HandshakeError> {
    let name = sni
        .and_then(|s| ServerName::try_from(s).ok())
        .map(|n| n.to_owned())
        .or_else(|| tls.sni.clone())
        .unwrap_or_else(|| ServerName::IpAddress(host.ip().into()));
    let conn = ClientConnection::new(config, name).map_err(HandshakeError::Tls)?;
    TlsStream::handshake(io, conn.into(), local).await
}

impl TlsStream {
    async fn handshake(
        io: TcpStream,
        tls: Connection,
        local: Option<Arc<CertificateInfo>>,
    ) -> Result<Self, HandshakeError> {
        let mut stream = Self {
            io,
            tls,
            closing: false,
            local,
            uri_sans: OnceCell::new(),
            unread: Vec::new(),
        };
        while stream.tls.is_handshaking() {
            poll_fn(|cx| stream.poll_flush_tls(cx))
                .await
                .map_err(HandshakeError::Io)?;
            if !stream.tls.is_handshaking() {
                break;
            }
            let n = poll_fn(|cx| stream.poll_fill(cx)).await?;
            if n == 0 {
                return Err(HandshakeError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        poll_fn(|cx| stream.poll_flush_tls(cx))
            .await
            .map_err(HandshakeError::Io)?;
        Ok(stream)
    }

    /// Reads TLS records from the socket and processes them; on a TLS error, sends the alert
    /// rustls queued (best effort) and fails. 0 = the socket reached EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, HandshakeError>> {
        let io = &mut self.io;
        let n = match ready!(pending_on_block(self.tls.read_tls(&mut SyncIo { io, cx }))) {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(HandshakeError::Io(e))),
        };
        if let Err(e) = self.tls.process_new_packets() {
            let _ = self.poll_flush_tls(cx);
            return Poll::Ready(Err(HandshakeError::Tls(e)));
        }
        Poll::Ready(Ok(n))
    }

    /// Writes queued TLS records until none is left.
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            let io = &mut self.io;
            match ready!(pending_on_block(self.tls.write_tls(&mut SyncIo { io, cx }))) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Makes plaintext available, reading from the socket as needed; `false` = the peer
    /// closed (close_notify, or EOF without one, which Envoy also takes as a close).
    fn poll_plaintext(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !self.unread.is_empty() {
            return Poll::Ready(Ok(true));
        }
        loop {
            match self.tls.reader().fill_buf() {
                Ok([]) => return Poll::Ready(Ok(false)),
                Ok(_) => return Poll::Ready(Ok(true)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Poll::Ready(Ok(false))
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Answers the peer may be owed (key updates) go out before waiting to read.
            if let Poll::Ready(Err(e)) = self.poll_flush_tls(cx) {
                return Poll::Ready(Err(e));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(_) => {}
                Err(HandshakeError::Io(e)) => return Poll::Ready(Err(e)),
                Err(HandshakeError::Tls(e)) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)))
                }
            }
        }
    }

    /// Reads plaintext into `buf` (at most `limit` bytes); 0 = the peer closed.
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        if !ready!(self.poll_plaintext(cx))? {
            return Poll::Ready(Ok(0));
        }
        if !self.unread.is_empty() {
            let n = self.unread.len().min(limit.max(1));
            buf.extend_from_slice(&self.unread[..n]);
            self.unread.drain(..n);
            return Poll::Ready(Ok(n));
        }
        let mut reader = self.tls.reader();
        let available = reader.fill_buf()?;
        let n = available.len().min(limit.max(1));
        buf.extend_from_slice(&available[..n]);
        reader.consume(n);
        Poll::Ready(Ok(n))
    }

    /// Ready once plaintext, a close or an error is waiting (without taking any of it).
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_plaintext(cx).map(|_| ())
    }

    /// Whether plaintext, a close or an error is waiting (an idle pooled connection that has
    /// any cannot carry a request). TLS records that carry no data (session tickets) are
    /// processed and do not count. Never waits.
    pub fn has_pending_input(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        !matches!(self.poll_plaintext(&mut cx), Poll::Pending)
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.io
    }

    pub fn connection(&self) -> &Connection {
        &self.tls
    }

    /// Gives back `bytes` read from this connection: the next reads return them first, in
    /// order, before any later plaintext (Istio's metadata exchange, which leaves a peer's
    /// first bytes to the relay when they are not its frame).
    pub fn unread(&mut self, bytes: &[u8]) {
        self.unread.splice(..0, bytes.iter().copied());
    }

    /// What access logs and XFCC read of this (downstream) connection.
    pub fn info(&self) -> DownstreamTls {
        DownstreamTls::new(&self.tls, self.local.clone())
    }

    /// The first URI SAN of the peer's certificate and of this side's (Istio's principals),
    /// read once per connection.
    pub fn uri_sans(&self) -> Rc<UriSans> {
        self.uri_sans
            .get_or_init(|| {
                let first = |c: &CertificateInfo| c.sans.uri.first().map(|s| s.as_str().into());
                let peer = self
                    .tls
                    .peer_certificates()
                    .and_then(|chain| CertificateInfo::parse(chain.first()?));
                Rc::new(UriSans {
                    peer: peer.as_ref().and_then(first),
                    local: self.local.as_deref().and_then(first),
                })
            })
            .clone()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !ready!(this.poll_plaintext(cx))? {
            return Poll::Ready(Ok(0));
        }
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.len());
            buf[..n].copy_from_slice(&this.unread[..n]);
            this.unread.drain(..n);
            return Poll::Ready(Ok(n));
        }
        Poll::Ready(this.tls.reader().read(buf))
    }
}

impl AsyncWrite for TlsStream {
    /// Encrypts what rustls takes (its buffer is bounded) and writes what the socket takes;
    /// the rest goes out on the next write or flush.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut taken = 0;
        loop {
            if this.poll_flush_tls(cx)?.is_pending() {
                return if taken > 0 {
                    Poll::Ready(Ok(taken))
                } else {
                    Poll::Pending
                };
            }
            if taken == buf.len() {
                return Poll::Ready(Ok(taken));
            }
            let n = this.tls.writer().write(&buf[taken..])?;
            if n == 0 && !this.tls.wants_write() {
                return Poll::Ready(Ok(taken));
            }
            taken += n;
        }
    }

    /// All slices into one TLS record where they fit (a response head and a small body go out
    /// as one record in one send, as nginx sends them), after what was queued before.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_flush_tls(cx))?;
        let n = this.tls.writer().write_vectored(bufs)?;
        // What the socket does not take now goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_flush_tls(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_tls(cx)
    }

    /// Sends close_notify, then half-closes the socket.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.tls.send_close_notify();
            this.closing = true;
        }
        ready!(this.poll_flush_tls(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}
