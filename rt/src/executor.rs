//! Runtime: the per-shard executor. One readiness backend per shard thread (an io_uring, or
//! epoll), a local run queue of `async-task` tasks, and a loop that runs ready tasks, then
//! submits and reaps completions.
use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::Future,
    io,
    os::fd::{OwnedFd, RawFd},
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::Instant,
};

use super::{
    ops::Ops,
    poller::{self, Backend, Poller},
    timer::Timers,
};
use async_task::Runnable;
pub use async_task::Task;

/// Tasks run per loop turn before the ring is looked at again.
const BUDGET: usize = 128;

/// Shard-local state behind the thread-local handle. Nothing here calls out (wakes, drops a
/// waker, runs a task) while one of its cells is borrowed.
pub struct Runtime {
    ring: RefCell<Poller>,
    pub ops: RefCell<Ops>,
    pub timers: RefCell<Timers>,
    /// The clock as read once per loop turn (again after a wait): what a polled timer is
    /// checked against, so polling one that is not due reads no clock.
    now: Cell<Instant>,
    queue: RefCell<VecDeque<Runnable>>,
    /// Descriptors closed only once every queued submission naming them was submitted, so a
    /// queued poll can never land on a reused descriptor number.
    closing: RefCell<Vec<OwnedFd>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's runtime; `None` off a shard thread or during teardown.
pub fn with<R>(f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    CURRENT
        .try_with(|current| current.borrow().as_ref().map(|rt| f(rt)))
        .ok()
        .flatten()
}

/// Spawns a task on this shard. Dropping the returned `Task` cancels it; `.detach()` lets it
/// run to completion on its own.
pub fn spawn_local<F>(future: F) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let (runnable, task) = async_task::spawn_local(future, schedule);
    runnable.schedule();
    task
}

fn schedule(runnable: Runnable) {
    let unscheduled = CURRENT
        .try_with(|current| match current.borrow().as_ref() {
            Some(rt) => {
                rt.queue.borrow_mut().push_back(runnable);
                None
            }
            None => Some(runnable),
        })
        .ok()
        .flatten();
    drop(unscheduled); // no runtime: the task's future is dropped
}

/// The shard's executor; owns this thread's runtime until dropped.
pub struct Executor {
    rt: Rc<Runtime>,
}

impl Executor {
    /// Creates this thread's runtime on the process's backend.
    pub fn new() -> io::Result<Self> {
        Self::on(poller::backend())
    }

    /// Creates this thread's runtime on `backend`.
    pub fn on(backend: Backend) -> io::Result<Self> {
        let rt = Rc::new(Runtime {
            ring: RefCell::new(Poller::new(backend)?),
            ops: RefCell::default(),
            timers: RefCell::default(),
            now: Cell::new(Instant::now()),
            queue: RefCell::default(),
            closing: RefCell::default(),
        });
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            assert!(current.is_none(), "one executor per thread");
            *current = Some(rt.clone());
        });
        Ok(Self { rt })
    }

    /// Runs `future` and every task it spawns until `future` completes.
    pub fn run<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> T {
        let mut main = spawn_local(future);
        let mut reaped = Vec::new();
        loop {
            self.run_ready();
            if main.is_finished() {
                break;
            }
            self.rt.turn(&mut reaped);
        }
        match Pin::new(&mut main).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => unreachable!("a finished task is ready"),
        }
    }

    fn run_ready(&self) {
        for _ in 0..BUDGET {
            let Some(runnable) = self.rt.queue.borrow_mut().pop_front() else {
                return;
            };
            runnable.run();
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Uninstall first, so futures dropped below find no runtime and close plainly.
        CURRENT.with(|current| current.borrow_mut().take());
        let queue = std::mem::take(&mut *self.rt.queue.borrow_mut());
        drop(queue);
        let timers = std::mem::take(&mut *self.rt.timers.borrow_mut());
        drop(timers);
        let ops = std::mem::take(&mut *self.rt.ops.borrow_mut());
        drop(ops);
    }
}

impl Runtime {
    /// Arms a poll for `events` on `fd`; returns its `user_data`.
    pub fn poll_add(&self, fd: RawFd, events: u32, multishot: bool) -> u64 {
        let user_data = self.ops.borrow_mut().insert();
        // `fd` stays open until this is submitted: sockets close through `close_later`.
        self.ring
            .borrow_mut()
            .poll_add(fd, events, multishot, user_data);
        user_data
    }

    /// Gives up an operation: cancels it if still in flight.
    pub fn abandon(&self, user_data: u64) {
        let (in_flight, waker) = self.ops.borrow_mut().abandon(user_data);
        drop(waker);
        if in_flight {
            self.ring.borrow_mut().cancel(user_data);
        }
    }

    /// This loop turn's time (see `now`).
    pub fn now(&self) -> Instant {
        self.now.get()
    }

    /// Closes `fd` after the next submit (see `closing`).
    pub fn close_later(&self, fd: OwnedFd) {
        self.closing.borrow_mut().push(fd);
    }

    /// One turn of the loop after the ready tasks ran: fire timers, submit, wait if nothing is
    /// runnable, reap completions and wake their waiters.
    fn turn(&self, reaped: &mut Vec<(u64, i32, bool)>) {
        let mut wakers = Vec::new();
        let now = Instant::now();
        self.now.set(now);
        if self.timers.borrow().next_deadline().is_some() {
            self.timers.borrow_mut().expired(now, &mut wakers);
        }
        wakers.into_iter().for_each(Waker::wake);
        if !self.closing.borrow().is_empty() {
            let mut ring = self.ring.borrow_mut();
            ring.submit(false, None);
            if ring.all_submitted() {
                self.closing.borrow_mut().clear();
            }
        }
        let idle = self.queue.borrow().is_empty();
        let next = self.timers.borrow().next_deadline();
        let timeout = next.map(|at| at.saturating_duration_since(now));
        {
            let mut ring = self.ring.borrow_mut();
            ring.submit(idle, timeout);
            ring.reap(reaped);
        }
        if idle {
            self.now.set(Instant::now()); // the wait may have been long
        }
        for (user_data, result, more) in reaped.drain(..) {
            let waker = self.ops.borrow_mut().complete(user_data, result, more);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}
