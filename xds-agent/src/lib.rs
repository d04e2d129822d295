//! Agent thread: loads config, translates it into immutable snapshots, publishes them to shards.
pub mod admin;
pub mod agent;
pub mod bootstrap;
pub mod dns;
pub mod dynamic;
pub mod health;
pub mod listener_probe;
pub mod names;
pub mod port_zero;
pub mod signals;
pub mod translate;
pub mod watch;
pub mod xds;
