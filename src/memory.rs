//! Memory hand-back after config work: free heap pages, the decoded descriptor pool (when no
//! ADS stream needs it) and the executable's pages that only start-up and config work read
//! leave the RSS.
use std::sync::Once;

use crate::rt::memory;

/// Drops the descriptor pool, then [`trim`]s.
pub fn release_unused() {
    proto::release_pool();
    trim();
}

/// Returns free heap pages to the kernel; a decoded pool, if one is kept, stays. The first
/// call (once start-up's config runs) also drops the resident pages of the executable's
/// read-only segments (code, constants, the embedded descriptor set): pages read again fault
/// back in from the page cache, which after start-up is the request path's code, not the
/// bootstrap parser's, the translator's or the TLS setup's. Only once: later calls (after
/// each admin request without ADS) would make the request path fault its code back in.
pub fn trim() {
    memory::trim_heap();
    static IMAGE: Once = Once::new();
    IMAGE.call_once(memory::drop_read_only_image);
}
