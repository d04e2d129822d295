//! Runtime: shardproxy's own per-core io_uring runtime (executor, timers, sockets), shard
//! threads, pinning, wake-ups. The only place for `unsafe`.
pub mod executor;
pub mod host;
pub mod limits;
pub mod memory;
pub mod net;
mod ops;
pub mod priority;
mod readiness;
mod ring;
pub mod shard;
pub mod timer;
pub mod wake;

#[cfg(test)]
mod tests;

pub use executor::{spawn_local, Task};
