//! Runtime: the readiness backend shards run on — io_uring (`ring.rs`), or epoll (`epoll.rs`)
//! where io_uring is refused — chosen once per process, before the shards start.
use std::{io, os::fd::RawFd, sync::OnceLock, time::Duration};

use super::{epoll::Epoll, limits::StartError, ring::Ring};

/// Which backend every shard uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    IoUring,
    Epoll,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

static CHOSEN: OnceLock<Backend> = OnceLock::new();

/// Chooses the process's backend: `requested`, else io_uring when the kernel grants it, else
/// epoll (logged once, with why). A requested io_uring that is refused is an error.
pub fn choose(requested: Option<Backend>) -> Result<Backend, StartError> {
    let backend = match requested {
        Some(Backend::IoUring) => {
            Ring::probe().map_err(StartError::NoIoUring)?;
            Backend::IoUring
        }
        Some(Backend::Epoll) => Backend::Epoll,
        None => probed(),
    };
    let chosen = *CHOSEN.get_or_init(|| backend);
    tracing::info!(backend = chosen.name(), "shard runtime backend");
    Ok(chosen)
}

/// The process's backend (probed on first use when nobody chose).
pub fn backend() -> Backend {
    *CHOSEN.get_or_init(probed)
}

fn probed() -> Backend {
    match Ring::probe() {
        Ok(()) => Backend::IoUring,
        Err(e) => {
            tracing::warn!(
                "io_uring is not available ({e}: a seccomp profile, kernel.io_uring_disabled or an \
                 old kernel): the shards use epoll"
            );
            Backend::Epoll
        }
    }
}

/// One shard's readiness backend.
pub enum Poller {
    Uring(Ring),
    Epoll(Epoll),
}

impl Poller {
    pub fn new(backend: Backend) -> io::Result<Self> {
        Ok(match backend {
            Backend::IoUring => Poller::Uring(Ring::new()?),
            Backend::Epoll => Poller::Epoll(Epoll::new()?),
        })
    }

    /// Arms a poll for `events` on `fd` (see `Ring::poll_add`; epoll keeps read polls
    /// multishot and write polls one-shot, as the readiness layer asks).
    pub fn poll_add(&mut self, fd: RawFd, events: u32, multishot: bool, user_data: u64) {
        match self {
            Poller::Uring(ring) => ring.poll_add(fd, events, multishot, user_data),
            Poller::Epoll(epoll) => epoll.poll_add(fd, events, user_data),
        }
    }

    pub fn cancel(&mut self, user_data: u64) {
        match self {
            Poller::Uring(ring) => ring.cancel(user_data),
            Poller::Epoll(epoll) => epoll.cancel(user_data),
        }
    }

    pub fn all_submitted(&mut self) -> bool {
        match self {
            Poller::Uring(ring) => ring.all_submitted(),
            Poller::Epoll(epoll) => epoll.all_submitted(),
        }
    }

    pub fn submit(&mut self, wait: bool, timeout: Option<Duration>) {
        match self {
            Poller::Uring(ring) => ring.submit(wait, timeout),
            Poller::Epoll(epoll) => epoll.submit(wait, timeout),
        }
    }

    pub fn reap(&mut self, into: &mut Vec<(u64, i32, bool)>) {
        match self {
            Poller::Uring(ring) => ring.reap(into),
            Poller::Epoll(epoll) => epoll.reap(into),
        }
    }
}
