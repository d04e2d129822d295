//! Agent thread: loads config, translates it into immutable snapshots, publishes them to shards.
pub mod access_log;
pub mod admin;
pub mod agent;
pub mod bootstrap;
pub mod dns;
pub mod dynamic;
pub mod filter_stats;
pub mod listener_probe;
pub mod model;
pub mod names;
pub mod publish;
pub mod route_match;
pub mod signals;
pub mod stats;
pub mod translate;
pub mod watch;
pub mod xds;
