//! shardproxy's data plane: the shard threads (what the binary starts) and everything that
//! runs on shards — NET/IO, codecs, streams, filters, the proxy layer — on the `rt` runtime.
pub mod access_log;
#[cfg(feature = "bench")]
pub mod bench;
mod context;
mod filters;
pub mod memory;
mod net;
mod overload;
mod protocol;
mod proxy;
pub mod shard;
mod stream;
mod tracing;

/// The shard runtime crate, at the path the modules here name it by.
use ::rt;

#[cfg(fuzzing)]
pub mod fuzzing;
