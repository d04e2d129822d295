//! Runtime: readiness for non-blocking descriptors. The syscall is tried first; only on
//! EAGAIN does the socket wait, on a multishot POLLIN armed once per socket (re-armed only if
//! the kernel ends it) or a one-shot POLLOUT. Readiness is tracked edge-style: a short read
//! or write means "drained" and waits for the next event without another syscall.
use std::{
    io::{self, Read, Write},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    task::{Context, Poll},
};

use super::executor;

#[derive(Clone, Copy)]
pub enum Interest {
    Read,
    Write,
}

/// Events after which reads never block again (EOF or error), whatever a short read says.
const FINAL: u32 = (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as u32;

struct State {
    /// Worth trying the syscall (no EAGAIN or short transfer since the last event).
    ready: bool,
    /// The peer closed or the socket failed: stays ready. A short read that took the last
    /// data before a FIN must not wait for an event the FIN already raised.
    closed: bool,
    /// The armed poll's `user_data`.
    poll: Option<u64>,
}

/// A non-blocking descriptor registered with the shard's ring.
pub struct Source<T: AsFd + Into<OwnedFd>> {
    io: Option<T>,
    read: State,
    write: State,
}

impl<T: AsFd + Into<OwnedFd>> Source<T> {
    /// `io` must be in non-blocking mode.
    pub fn new(io: T) -> Self {
        let state = || State {
            ready: true,
            closed: false,
            poll: None,
        };
        Self {
            io: Some(io),
            read: state(),
            write: state(),
        }
    }

    pub fn io(&self) -> &T {
        self.io.as_ref().expect("open until dropped")
    }

    /// `Ready` when the syscall for `interest` is worth trying.
    pub fn poll_ready(&mut self, interest: Interest, cx: &mut Context<'_>) -> Poll<()> {
        let fd = self.io().as_fd().as_raw_fd();
        let (state, events, multishot) = match interest {
            Interest::Read => (&mut self.read, libc::POLLIN | libc::POLLRDHUP, true),
            Interest::Write => (&mut self.write, libc::POLLOUT, false),
        };
        while !state.ready {
            let Some(poll) = state.poll else {
                state.poll = executor::with(|rt| rt.poll_add(fd, events as u32, multishot));
                if state.poll.is_none() {
                    return Poll::Pending; // no runtime (teardown): never ready
                }
                continue;
            };
            let (events, ended) = match executor::with(|rt| rt.ops.borrow_mut().poll(poll, cx)) {
                Some(Poll::Ready(fired)) => fired,
                _ => return Poll::Pending,
            };
            state.ready = true;
            state.closed |= events & FINAL != 0;
            if ended {
                state.poll = None; // re-armed when next needed
            }
        }
        Poll::Ready(())
    }

    /// Whether the peer closed (or the socket failed): reads will not block again.
    pub fn read_closed(&self) -> bool {
        self.read.closed
    }

    /// Records that the syscall for `interest` would block.
    pub fn clear(&mut self, interest: Interest) {
        let state = match interest {
            Interest::Read => &mut self.read,
            Interest::Write => &mut self.write,
        };
        state.ready = state.closed;
    }

    /// Runs `op` until it does not report `WouldBlock` or `Interrupted`, waiting for readiness.
    pub fn poll_io<R>(
        &mut self,
        interest: Interest,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            if self.poll_ready(interest, cx).is_pending() {
                return Poll::Pending;
            }
            match op(self.io()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear(interest),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl<T: AsFd + Into<OwnedFd>> Source<T>
where
    for<'a> &'a T: Read + Write,
{
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let result = self.poll_io(Interest::Read, cx, |mut io| io.read(buf));
        if let Poll::Ready(Ok(n)) = result {
            if n > 0 && n < buf.len() {
                self.clear(Interest::Read); // drained: new data raises a poll event
            }
        }
        result
    }

    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let result = self.poll_io(Interest::Write, cx, |mut io| io.write_vectored(bufs));
        if let Poll::Ready(Ok(n)) = result {
            if n < total {
                self.clear(Interest::Write); // send buffer full
            }
        }
        result
    }

    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = self.poll_io(Interest::Write, cx, |mut io| io.write(buf));
        if let Poll::Ready(Ok(n)) = result {
            if n < buf.len() {
                self.clear(Interest::Write); // send buffer full
            }
        }
        result
    }
}

impl<T: AsFd + Into<OwnedFd>> Drop for Source<T> {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else { return };
        let fd: OwnedFd = io.into();
        let polls = [self.read.poll.take(), self.write.poll.take()];
        // Without a runtime (teardown) the closure is dropped unrun, closing `fd` at once:
        // nothing will be submitted any more.
        executor::with(move |rt| {
            polls
                .into_iter()
                .flatten()
                .for_each(|poll| rt.abandon(poll));
            rt.close_later(fd);
        });
    }
}
