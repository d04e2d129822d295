//! NET/IO layer: in-process connections to internal listeners (Envoy's `internal_listener`).
//! Opening a connection to an `envoy_internal_address` endpoint queues one end of a pair of
//! byte pipes on the named listener of the same shard, with what the opening side passes
//! along (`Passage`); the listener's accept loop serves the other end like an accepted socket.
//! Each direction holds at most the configured buffer: a writer waits while it is full.
use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    future::poll_fn,
    io,
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use model::metadata::Metadata;

use crate::filters::network::filter_state::SharedState;

/// What an internal connection carries from the side that opened it.
#[derive(Debug, Default)]
pub struct Passage {
    /// The namespaces of the endpoint's (and cluster's) metadata its cluster passes through
    /// (`internal_upstream`'s `passthrough_metadata`).
    pub metadata: Metadata,
    /// The opener's filter state shared with its upstream connection.
    pub shared: SharedState,
}

/// The endpoint metadata namespace `istio.set_internal_dst_address` reads.
const TUNNEL: &str = "tunnel";

impl Passage {
    /// What `istio.set_internal_dst_address` finds: (the destination the connection stands
    /// for, restored as its local address; the tunnel address `ORIGINAL_DST` clusters send
    /// it to). From the endpoint's `tunnel` metadata (`destination`, `address`) when it passed
    /// any, else from `connect_authority`'s authority (the tunnel port in place of its own
    /// when the route set one). What does not parse as `ip:port` is left out, as Istio does.
    pub fn internal_destination(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        if self.metadata.get(TUNNEL, &[]).is_some() {
            let parse = |field| self.metadata.str(TUNNEL, &[field])?.parse().ok();
            return (parse("destination"), parse("address"));
        }
        let Some((authority, port)) = &self.shared.authority else {
            return (None, None);
        };
        match authority.parse::<SocketAddr>() {
            Ok(local) => {
                let tunnel = SocketAddr::new(local.ip(), port.unwrap_or(local.port()));
                (Some(local), Some(tunnel))
            }
            Err(_) => (None, None),
        }
    }
}

/// One direction of a pipe.
#[derive(Default)]
struct Direction {
    data: BytesMut,
    /// The writing end shut it down (or is gone): its reader sees the end once `data` is read.
    shut: bool,
    /// The reading end is gone: writes fail.
    unread: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Direction {
    fn wake_reader(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }
}

struct Pipe {
    /// `[0]` carries bytes to the opening end, `[1]` to the listener's.
    directions: [Direction; 2],
    limit: usize,
}

/// One end of an in-process connection.
pub struct InternalStream {
    pipe: Rc<RefCell<Pipe>>,
    /// The direction this end reads (it writes the other one).
    side: usize,
    /// Set on the listener's end.
    passage: Option<Rc<Passage>>,
}

/// A connected pair: (the opener's end, the listener's end), each direction holding at most
/// `limit` bytes.
fn pair(limit: usize, passage: Passage) -> (InternalStream, InternalStream) {
    let pipe = Rc::new(RefCell::new(Pipe {
        directions: Default::default(),
        limit: limit.max(1),
    }));
    let opener = InternalStream {
        pipe: pipe.clone(),
        side: 0,
        passage: None,
    };
    let listener = InternalStream {
        pipe,
        side: 1,
        passage: Some(Rc::new(passage)),
    };
    (opener, listener)
}

impl InternalStream {
    /// What the opener passed (on the listener's end).
    pub fn passage(&self) -> Option<&Passage> {
        self.passage.as_deref()
    }

    /// Takes what has arrived into `buf` (at least `reserve` bytes of room are made);
    /// 0 = the other end shut its side.
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        reserve: usize,
    ) -> Poll<io::Result<usize>> {
        let room = reserve.max(buf.capacity() - buf.len());
        self.poll_take(cx, |data| {
            let n = data.len().min(room);
            buf.extend_from_slice(&data[..n]);
            n
        })
    }

    /// Ready once data or the end of the other side's bytes is waiting (nothing is read).
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut pipe = self.pipe.borrow_mut();
        let direction = &mut pipe.directions[self.side];
        if !direction.data.is_empty() || direction.shut {
            return Poll::Ready(());
        }
        direction.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether data or the end is waiting. Never waits.
    pub fn has_pending_input(&mut self) -> bool {
        let pipe = self.pipe.borrow();
        let direction = &pipe.directions[self.side];
        !direction.data.is_empty() || direction.shut
    }

    /// Copies waiting bytes into `buf` without taking them, once more than `seen` are
    /// waiting (or `buf` is full); 0 = the other end shut its side.
    pub fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        seen: usize,
    ) -> Poll<io::Result<usize>> {
        let mut pipe = self.pipe.borrow_mut();
        let direction = &mut pipe.directions[self.side];
        let n = direction.data.len().min(buf.len());
        if n > seen || (n == buf.len() && n > 0) {
            buf[..n].copy_from_slice(&direction.data[..n]);
            return Poll::Ready(Ok(n));
        }
        if direction.shut {
            return Poll::Ready(Ok(0));
        }
        direction.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Runs `take` on the waiting bytes (it returns how many it took), or waits for some.
    fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&[u8]) -> usize,
    ) -> Poll<io::Result<usize>> {
        let mut pipe = self.pipe.borrow_mut();
        let direction = &mut pipe.directions[self.side];
        if direction.data.is_empty() {
            if direction.shut {
                return Poll::Ready(Ok(0));
            }
            direction.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = take(&direction.data);
        direction.data.advance(n);
        direction.wake_writer();
        Poll::Ready(Ok(n))
    }

    /// Appends from `bufs` what fits in the other side's direction, or waits for room.
    fn poll_put(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut pipe = self.pipe.borrow_mut();
        let limit = pipe.limit;
        let direction = &mut pipe.directions[1 - self.side];
        if direction.unread || direction.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = limit.saturating_sub(direction.data.len());
        if room == 0 {
            direction.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut written = 0;
        for buf in bufs {
            let n = buf.len().min(room - written);
            direction.data.extend_from_slice(&buf[..n]);
            written += n;
            if written == room {
                break;
            }
        }
        if written > 0 {
            direction.wake_reader();
        }
        Poll::Ready(Ok(written))
    }

    fn shut_down_writing(&mut self) {
        let mut pipe = self.pipe.borrow_mut();
        let direction = &mut pipe.directions[1 - self.side];
        direction.shut = true;
        direction.wake_reader();
    }
}

impl Drop for InternalStream {
    fn drop(&mut self) {
        self.shut_down_writing();
        let mut pipe = self.pipe.borrow_mut();
        let direction = &mut pipe.directions[self.side];
        direction.unread = true;
        direction.data.clear();
        direction.wake_writer();
    }
}

impl AsyncRead for InternalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_take(cx, |data| {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            n
        })
    }
}

impl AsyncWrite for InternalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_put(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_put(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Half-close: the other end reads the end of the bytes; reading goes on.
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().shut_down_writing();
        Poll::Ready(Ok(()))
    }
}

/// Connections waiting for an internal listener's accept loop.
#[derive(Default)]
struct Backlog {
    queue: VecDeque<InternalStream>,
    acceptor: Option<Waker>,
}

type Registry = Rc<RefCell<HashMap<Box<str>, Rc<RefCell<Backlog>>>>>;

/// A shard's internal listeners that accept, by name.
#[derive(Default, Clone)]
pub struct InternalListeners(Registry);

impl InternalListeners {
    /// Makes `name` accept connections until the returned registration drops.
    pub fn register(&self, name: &str) -> Registration {
        let backlog = Rc::new(RefCell::new(Backlog::default()));
        self.0.borrow_mut().insert(name.into(), backlog.clone());
        Registration {
            registry: self.0.clone(),
            name: name.into(),
            backlog,
        }
    }

    /// Opens a connection to the listener `name` (each direction buffering `limit` bytes);
    /// refused when no such listener accepts on this shard.
    pub fn connect(
        &self,
        name: &str,
        limit: usize,
        passage: Passage,
    ) -> io::Result<InternalStream> {
        let registry = self.0.borrow();
        let Some(backlog) = registry.get(name) else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("no internal listener {name:?}"),
            ));
        };
        let (opener, listener) = pair(limit, passage);
        let mut backlog = backlog.borrow_mut();
        backlog.queue.push_back(listener);
        if let Some(waker) = backlog.acceptor.take() {
            waker.wake();
        }
        Ok(opener)
    }
}

/// An internal listener accepting connections; unregistered when dropped (connections still
/// queued are closed).
pub struct Registration {
    registry: Registry,
    name: Box<str>,
    backlog: Rc<RefCell<Backlog>>,
}

impl Registration {
    pub async fn accept(&self) -> InternalStream {
        poll_fn(|cx| {
            let mut backlog = self.backlog.borrow_mut();
            match backlog.queue.pop_front() {
                Some(stream) => Poll::Ready(stream),
                None => {
                    backlog.acceptor = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = self.registry.borrow_mut();
        if registry
            .get(&self.name)
            .is_some_and(|b| Rc::ptr_eq(b, &self.backlog))
        {
            registry.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{pin::pin, task::Waker};

    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn ready<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(future).as_mut().poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[test]
    fn bytes_cross_both_ways_and_a_half_close_ends_one_direction() {
        let (mut a, mut b) = pair(1024, Passage::default());
        ready(a.write_all(b"ping")).unwrap().unwrap();
        ready(a.close()).unwrap().unwrap();
        let mut got = Vec::new();
        ready(b.read_to_end(&mut got)).unwrap().unwrap();
        assert_eq!(got, b"ping");
        ready(b.write_all(b"pong")).unwrap().unwrap();
        let mut buf = [0; 8];
        assert_eq!(ready(a.read(&mut buf)).unwrap().unwrap(), 4);
        assert_eq!(&buf[..4], b"pong");
    }

    #[test]
    fn a_full_direction_makes_the_writer_wait_and_a_gone_reader_fails_it() {
        let (mut a, b) = pair(4, Passage::default());
        assert_eq!(ready(a.write(b"123456")).unwrap().unwrap(), 4);
        assert!(ready(a.write(b"7")).is_none(), "full: waits");
        drop(b);
        let err = ready(a.write(b"7")).unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let mut buf = [0; 4];
        assert_eq!(
            ready(a.read(&mut buf)).unwrap().unwrap(),
            0,
            "end of stream"
        );
    }

    #[test]
    fn peeking_waits_for_more_than_seen_and_leaves_the_bytes() {
        let (mut a, mut b) = pair(64, Passage::default());
        let mut buf = [0; 16];
        assert!(ready(poll_fn(|cx| b.poll_peek(cx, &mut buf, 0))).is_none());
        ready(a.write_all(b"GET")).unwrap().unwrap();
        let peeked = ready(poll_fn(|cx| b.poll_peek(cx, &mut buf, 0))).unwrap();
        assert_eq!(peeked.unwrap(), 3);
        assert_eq!(&buf[..3], b"GET");
        assert!(ready(poll_fn(|cx| b.poll_peek(cx, &mut buf, 3))).is_none());
        let mut all = Vec::new();
        ready(a.close()).unwrap().unwrap();
        ready(b.read_to_end(&mut all)).unwrap().unwrap();
        assert_eq!(all, b"GET");
    }

    #[test]
    fn a_listener_accepts_until_its_registration_drops() {
        let listeners = InternalListeners::default();
        let registration = listeners.register("main_internal");
        let _opener = listeners
            .connect("main_internal", 64, Passage::default())
            .unwrap();
        assert!(ready(registration.accept()).is_some());
        drop(registration);
        let refused = listeners
            .connect("main_internal", 64, Passage::default())
            .err()
            .unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }
}
