//! Runtime: one shard's io_uring, set up with the cheapest completion mode the kernel accepts
//! (no inter-processor kick per completion), with push, submit/wait and reap.
use std::{io, os::fd::RawFd, time::Duration};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::ops::IGNORED;

/// Submission queue entries per ring.
pub const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries per ring (multishot polls may complete many times per submit).
pub const CQ_ENTRIES: u32 = 4096;

pub struct Ring(IoUring);

impl Ring {
    /// Creates the calling thread's ring; with SINGLE_ISSUER only this thread may submit.
    pub fn new() -> io::Result<Self> {
        let (ring, mode) = setup()?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG: shardproxy needs Linux 5.13+",
            ));
        }
        tracing::info!(mode, "io_uring ring created");
        Ok(Self(ring))
    }

    /// Whether this process may create rings (a tiny one is made and dropped).
    pub fn probe() -> io::Result<()> {
        IoUring::new(1).map(drop)
    }

    /// Queues a poll for `events` on `fd`. `fd` must stay open until the entry is submitted
    /// (else the kernel could look up a reused descriptor number).
    pub fn poll_add(&mut self, fd: RawFd, events: u32, multishot: bool, user_data: u64) {
        let entry = opcode::PollAdd::new(types::Fd(fd), events)
            .multi(multishot)
            .build()
            .user_data(user_data);
        self.push(&entry);
    }

    /// Queues the cancellation of the operation submitted with `user_data`.
    pub fn cancel(&mut self, user_data: u64) {
        self.push(
            &opcode::AsyncCancel::new(user_data)
                .build()
                .user_data(IGNORED),
        );
    }

    fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the only entries queued (poll add, cancel) reference no user memory.
            if unsafe { self.0.submission().push(entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.0.submit() {
                tracing::warn!("io_uring submit failed: {e}");
            }
        }
    }

    /// Whether every queued entry was handed to the kernel.
    pub fn all_submitted(&mut self) -> bool {
        self.0.submission().is_empty()
    }

    /// Submits queued entries. With `wait`, blocks until one completion or `timeout`;
    /// otherwise enters the kernel only when there is something to submit, deferred
    /// completion work to run (TASKRUN flag) or an overflow to flush.
    pub fn submit(&mut self, wait: bool, timeout: Option<Duration>) {
        let result = if wait {
            match timeout.map(types::Timespec::from) {
                Some(ts) => self
                    .0
                    .submitter()
                    .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts)),
                None => self.0.submit_and_wait(1),
            }
        } else {
            let sq = self.0.submission();
            if sq.is_empty() && !sq.taskrun() && !sq.cq_overflow() {
                return;
            }
            drop(sq);
            self.0.submit()
        };
        match result {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => tracing::warn!("io_uring submit failed: {e}"),
        }
    }

    /// Moves every completion (`user_data`, result, more to come) into `into`.
    pub fn reap(&mut self, into: &mut Vec<(u64, i32, bool)>) {
        into.extend(
            self.0
                .completion()
                .filter(|cqe| cqe.user_data() != IGNORED)
                .map(|cqe| (cqe.user_data(), cqe.result(), cqueue::more(cqe.flags()))),
        );
    }
}

/// DEFER_TASKRUN (kernel 6.1+): completions are processed only when this thread enters the
/// kernel to wait for them; else COOP_TASKRUN (5.19+): no IPI, processed on the next kernel
/// entry; else the default (an IPI per completion into the running thread).
fn setup() -> io::Result<(IoUring, &'static str)> {
    let mut builder = IoUring::builder();
    builder
        .setup_cqsize(CQ_ENTRIES)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag();
    if let Ok(ring) = builder.build(SQ_ENTRIES) {
        return Ok((ring, "single_issuer|defer_taskrun|taskrun_flag"));
    }
    let mut builder = IoUring::builder();
    builder
        .setup_cqsize(CQ_ENTRIES)
        .setup_coop_taskrun()
        .setup_taskrun_flag();
    if let Ok(ring) = builder.build(SQ_ENTRIES) {
        return Ok((ring, "coop_taskrun|taskrun_flag"));
    }
    let ring = IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)?;
    Ok((ring, "default"))
}
