//! NET/IO layer: listeners, connection dispatch to filter chains, byte relays.
pub mod buffered;
pub mod connection;
pub mod drain;
pub mod listener;
pub mod relay;
