//! Memory hand-back after config work: the agent briefly decodes Envoy's descriptor pool
//! (~50 MB); afterwards free heap pages and the embedded descriptor bytes leave the RSS.
use crate::rt::memory;

/// Drops the descriptor pool, then [`trim`]s.
pub fn release_unused() {
    proto::release_pool();
    trim();
}

/// Returns free heap pages to the kernel and drops the resident pages of the embedded
/// descriptor set (they are re-read from the binary on next use); a decoded pool, if one is
/// kept, stays.
pub fn trim() {
    memory::trim_heap();
    memory::drop_static_pages(proto::descriptor_bytes());
}
