//! Runtime: handing memory back to the kernel — glibc's free heap pages, and the resident
//! pages of a read-only static (re-read from the executable on next use).

/// Returns free heap pages to the kernel.
pub fn trim_heap() {
    // SAFETY: malloc_trim only returns free pages of glibc's heap to the kernel; it touches no
    // live allocation and is thread-safe.
    unsafe { libc::malloc_trim(0) };
}

/// Drops the resident pages wholly inside `bytes`, a static of the executable's image.
pub fn drop_static_pages(bytes: &'static [u8]) {
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
