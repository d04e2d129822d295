//! shardproxy's shard runtime: a per-core executor on io_uring readiness (an epoll backend
//! where io_uring is refused), timers, non-blocking sockets, cross-thread wake-ups, start-up
//! checks and thread priorities. The only crate with `unsafe`.
mod epoll;
pub mod executor;
pub mod handover;
pub mod host;
pub mod limits;
pub mod memory;
pub mod net;
mod ops;
pub mod poller;
pub mod priority;
mod readiness;
mod ring;
pub mod timer;
pub mod wake;

#[cfg(test)]
mod tests;

pub use executor::{spawn_local, Task};
