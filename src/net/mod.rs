//! NET/IO layer: listeners, connection dispatch to filter chains, byte relays.
pub mod connection;
pub mod listener;
pub mod relay;
