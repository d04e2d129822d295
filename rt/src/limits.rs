//! Start-up checks with actionable errors: the locked-memory limit io_uring rings need, and
//! the errors a shard start can end in.
use std::io;

use super::ring::{CQ_ENTRIES, SQ_ENTRIES};

/// Locked memory each shard's ring needs: only its SQ/CQ arrays (64-byte submission entries,
/// a 4-byte index each, 16-byte completion entries), plus a page of ring headers. Shards
/// register no buffers; sockets read into ordinary memory. Kernels since 5.12 charge this to
/// the memory cgroup instead, where the limit no longer applies.
const RING_BYTES: u64 = SQ_ENTRIES as u64 * (64 + 4) + CQ_ENTRIES as u64 * 16 + 4096;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "RLIMIT_MEMLOCK is {have} KiB but {shards} shard(s) need {need} KiB of locked memory for \
         io_uring; raise it (shell: `ulimit -l {need}` or unlimited; systemd: LimitMEMLOCK=; \
         docker: --ulimit memlock=-1; Kubernetes: a container runtime default of at least this)"
    )]
    MemlockTooLow { have: u64, need: u64, shards: usize },
    #[error("io_uring was asked for but is not available on this kernel or is blocked by seccomp/sysctl ({0}); it needs Linux 5.13+ with io_uring enabled (kernel.io_uring_disabled=0); `--io-backend epoll` runs without it")]
    NoIoUring(io::Error),
    #[error("cannot start shard {shard}: {error}")]
    Shard { shard: usize, error: String },
}

/// Checks the locked-memory limit covers `shards` rings.
pub fn check_memlock(shards: usize) -> Result<(), StartError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(()); // cannot tell; let the executor report what fails
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return Ok(());
    }
    let need = RING_BYTES * shards as u64;
    if limit.rlim_cur < need {
        return Err(StartError::MemlockTooLow {
            have: limit.rlim_cur >> 10,
            need: need.div_ceil(1024),
            shards,
        });
    }
    Ok(())
}
