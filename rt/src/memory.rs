//! Runtime: the heap — how much of it is in use (the overload manager's `fixed_heap`
//! monitor), and handing memory back to the kernel: glibc's free heap pages, and the resident
//! pages of the executable's read-only segments (re-read from the executable on next use).
use std::ffi::{c_int, c_void};

/// Bytes of heap in use: glibc's allocated chunks in every arena plus its mmapped blocks
/// (what Envoy's `fixed_heap` monitor reads from its allocator: memory not free in the heap).
pub fn heap_in_use() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments and only reads glibc's arena statistics (under
    // each arena's lock); it is thread-safe.
    let info = unsafe { libc::mallinfo2() };
    Some((info.uordblks + info.hblkhd) as u64)
}

/// Returns free heap pages to the kernel.
pub fn trim_heap() {
    // SAFETY: malloc_trim only returns free pages of glibc's heap to the kernel; it touches no
    // live allocation and is thread-safe.
    unsafe { libc::malloc_trim(0) };
}

/// Drops the resident pages of the executable's read-only segments (code, constants, embedded
/// data): pages read again fault back in from the page cache.
pub fn drop_read_only_image() {
    // SAFETY: the callback only reads the program headers it is given (valid during the call)
    // and is not unwound through (it cannot panic).
    unsafe { libc::dl_iterate_phdr(Some(drop_read_only_segments), std::ptr::null_mut()) };
}

/// `dl_iterate_phdr`'s callback: for its first object, the executable, `MADV_DONTNEED`s the
/// pages of every loadable segment without write permission; returns 1 to stop there.
unsafe extern "C" fn drop_read_only_segments(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    _data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid `dl_phdr_info` whose `dlpi_phdr` points to
    // `dlpi_phnum` program headers, for the duration of the call.
    let info = unsafe { &*info };
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
    let page = 4096;
    for header in headers
        .iter()
        .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0)
    {
        let start = info.dlpi_addr as usize + header.p_vaddr as usize;
        let end = start + header.p_memsz as usize;
        let (start, end) = (start.div_ceil(page) * page, end / page * page);
        if end > start {
            // SAFETY: [start, end) lies inside a read-only segment of the executable's image,
            // a private file mapping never written (relocations go to the separate RELRO
            // segment, which is writable until start-up ends); MADV_DONTNEED drops its
            // resident pages and later reads fault the same bytes back in from the file, so no
            // observable content changes.
            unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    1
}
