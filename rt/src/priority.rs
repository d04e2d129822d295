//! Runtime: thread priorities — the agent thread gives way to the shards on a shared core.

/// The agent thread's nice value: config work (translating a push, answering admin) waits for
/// the shards' request work when both want the same core, instead of delaying requests; it
/// still gets about a tenth of a busy core (CFS weights 110 against 1024), so it never starves.
pub const AGENT_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to `nice`. A failure (a seccomp profile
/// forbidding it) is logged, and the thread keeps its priority.
pub fn lower_current_thread(nice: i32) {
    // SAFETY: setpriority(PRIO_PROCESS, 0, ..) changes only the calling thread's nice value
    // (a per-thread attribute on Linux); it reads and writes no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        tracing::warn!(
            "cannot lower the agent thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_lowers_only_its_own_priority() {
        let lowered = std::thread::spawn(|| {
            super::lower_current_thread(super::AGENT_NICE);
            // SAFETY: getpriority reads the calling thread's nice value only.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        })
        .join()
        .unwrap();
        assert_eq!(lowered, super::AGENT_NICE);
        // SAFETY: as above, for this thread.
        let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_ne!(own, super::AGENT_NICE, "other threads keep theirs");
    }
}
