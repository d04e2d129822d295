//! Runtime: the epoll readiness backend, for hosts where io_uring is refused (default Docker
//! and containerd seccomp profiles, `kernel.io_uring_disabled`). It gives the executor the
//! same completions the io_uring backend gives: a multishot read poll fires on every edge
//! (edge-triggered `EPOLLIN | EPOLLRDHUP`), a write poll fires once, and a cancelled poll ends
//! with a final `-ECANCELED` completion, so operation slots are freed the same way.
use std::{collections::HashMap, io, os::fd::RawFd, time::Duration};

/// Events reported at most per `epoll_wait`.
const MAX_EVENTS: usize = 256;
/// What ends a read or write wait besides its own readiness.
const FAILED: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// The polls armed on one descriptor.
#[derive(Default, Clone, Copy)]
struct Armed {
    read: Option<u64>,
    write: Option<u64>,
}

impl Armed {
    fn events(self) -> u32 {
        let mut events = libc::EPOLLET as u32;
        if self.read.is_some() {
            events |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if self.write.is_some() {
            events |= libc::EPOLLOUT as u32;
        }
        events
    }

    fn is_empty(self) -> bool {
        self.read.is_none() && self.write.is_none()
    }
}

pub struct Epoll {
    fd: RawFd,
    armed: HashMap<RawFd, Armed>,
    /// Where each armed poll is: its descriptor, and whether it is the read one.
    polls: HashMap<u64, (RawFd, bool)>,
    /// Completions made without the kernel (cancellations), handed out by the next `reap`.
    pending: Vec<(u64, i32, bool)>,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            armed: HashMap::new(),
            polls: HashMap::new(),
            pending: Vec::new(),
            events: Vec::with_capacity(MAX_EVENTS),
        })
    }

    /// Arms a poll for `events` on `fd`: the read one (`POLLIN`, multishot) or the write one.
    pub fn poll_add(&mut self, fd: RawFd, events: u32, user_data: u64) {
        let read = events & libc::POLLIN as u32 != 0;
        let armed = self.armed.entry(fd).or_default();
        let had = *armed;
        match read {
            true => armed.read = Some(user_data),
            false => armed.write = Some(user_data),
        }
        let now = *armed;
        self.polls.insert(user_data, (fd, read));
        if let Err(e) = self.control(fd, had, now) {
            // A descriptor epoll refuses: the poll fails at once, as io_uring's would.
            tracing::debug!(fd, "epoll_ctl failed: {e}");
            self.finish(user_data, -e.raw_os_error().unwrap_or(libc::EINVAL));
        }
    }

    /// Cancels the poll submitted with `user_data`; its final completion follows.
    pub fn cancel(&mut self, user_data: u64) {
        if self.polls.contains_key(&user_data) {
            self.finish(user_data, -libc::ECANCELED);
        }
    }

    /// Ends the poll `user_data` with `result` (no more completions) and disarms it.
    fn finish(&mut self, user_data: u64, result: i32) {
        self.disarm(user_data);
        self.pending.push((user_data, result, false));
    }

    fn disarm(&mut self, user_data: u64) {
        let Some((fd, read)) = self.polls.remove(&user_data) else {
            return;
        };
        let Some(armed) = self.armed.get_mut(&fd) else {
            return;
        };
        let had = *armed;
        match read {
            true => armed.read = None,
            false => armed.write = None,
        }
        let now = *armed;
        if now.is_empty() {
            self.armed.remove(&fd);
        }
        // The descriptor may be closed already (epoll dropped it then): nothing to undo.
        let _ = self.control(fd, had, now);
    }

    /// Brings the kernel's registration of `fd` from `had` to `now`.
    fn control(&mut self, fd: RawFd, had: Armed, now: Armed) -> io::Result<()> {
        let op = match (had.is_empty(), now.is_empty()) {
            (true, true) => return Ok(()),
            (true, false) => libc::EPOLL_CTL_ADD,
            (false, true) => libc::EPOLL_CTL_DEL,
            (false, false) => libc::EPOLL_CTL_MOD,
        };
        match self.ctl(op, fd, now.events()) {
            // A descriptor closed and its number reused while registered (epoll dropped the
            // old one at close), or one registered outside this table: switch the operation.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && op == libc::EPOLL_CTL_MOD => {
                self.ctl(libc::EPOLL_CTL_ADD, fd, now.events())
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && op == libc::EPOLL_CTL_ADD => {
                self.ctl(libc::EPOLL_CTL_MOD, fd, now.events())
            }
            result => result,
        }
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: `event` lives for the call; epoll_ctl reads it and keeps no pointer.
        if unsafe { libc::epoll_ctl(self.fd, op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for readiness: with `wait`, until an event or `timeout` (none: forever), unless
    /// completions are already pending; otherwise only collects what is ready now.
    pub fn submit(&mut self, wait: bool, timeout: Option<Duration>) {
        let timeout_ms = match (wait && self.pending.is_empty(), timeout) {
            (false, _) => 0,
            (true, None) => -1,
            // Rounded up: waking before the deadline would only spin.
            (true, Some(t)) => i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
        };
        self.events.clear();
        // SAFETY: the buffer has room for MAX_EVENTS entries; the kernel writes at most that
        // many and reports how many, which is then the vector's length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                self.events.as_mut_ptr(),
                MAX_EVENTS as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!("epoll_wait failed: {e}");
            }
            return;
        }
        // SAFETY: epoll_wait initialised the first `n` entries.
        unsafe { self.events.set_len(n as usize) };
        for i in 0..self.events.len() {
            let event = self.events[i];
            self.fire(event.u64 as RawFd, event.events);
        }
    }

    /// Turns one descriptor's events into completions of its armed polls.
    fn fire(&mut self, fd: RawFd, events: u32) {
        let Some(armed) = self.armed.get(&fd).copied() else {
            return;
        };
        let reading = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 | FAILED;
        if let (Some(read), true) = (armed.read, events & reading != 0) {
            self.pending.push((read, events as i32, true));
        }
        let writing = libc::EPOLLOUT as u32 | FAILED;
        if let (Some(write), true) = (armed.write, events & writing != 0) {
            self.disarm(write);
            self.pending.push((write, events as i32, false));
        }
    }

    /// Nothing is ever queued for the kernel.
    pub fn all_submitted(&mut self) -> bool {
        true
    }

    /// Moves every completion (`user_data`, poll events or `-errno`, more to come) into `into`.
    pub fn reap(&mut self, into: &mut Vec<(u64, i32, bool)>) {
        into.append(&mut self.pending);
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the descriptor is this struct's own and closed once.
        unsafe { libc::close(self.fd) };
    }
}
