//! Memory hand-back after config work: the agent briefly decodes Envoy's descriptor pool
//! (~50 MB); afterwards free heap pages and the embedded descriptor bytes leave the RSS.
/// Drops the descriptor pool, then [`trim`]s.
pub fn release_unused() {
    proto::release_pool();
    trim();
}

/// Returns free heap pages to the kernel and drops the resident pages of the embedded
/// descriptor set (they are re-read from the binary on next use); a decoded pool, if one is
/// kept, stays.
pub fn trim() {
    // SAFETY: malloc_trim only returns free pages of glibc's heap to the kernel; it touches no
    // live allocation and is thread-safe.
    unsafe { libc::malloc_trim(0) };
    let bytes = proto::descriptor_bytes();
    let page = 4096;
    let start = (bytes.as_ptr() as usize).div_ceil(page) * page;
    let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside a read-only static of the executable's image, a
        // private file mapping; MADV_DONTNEED drops its resident pages and later reads fault
        // the same bytes back in from the file, so no observable content changes.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}
