//! Runtime glue: shard threads on glommio, pinning, wake-ups. The only place for `unsafe`.
pub mod limits;
pub mod memory;
pub mod shard;
pub mod sockets;
pub mod wake;
