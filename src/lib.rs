//! shardproxy's data plane: the shard runtime (`rt`, what the binary starts) and everything
//! that runs on shards — NET/IO, codecs, streams, filters, the proxy layer.
mod access_log;
mod context;
mod filters;
mod net;
mod protocol;
mod proxy;
pub mod rt;
mod stream;
mod tracing;

#[cfg(fuzzing)]
pub mod fuzzing;
