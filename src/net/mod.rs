//! NET/IO layer: listeners, listener filters, connection dispatch to filter chains, transport
//! sockets (raw, TLS, in-process), byte relays.
pub mod buffered;
pub mod connection;
pub mod drain;
pub mod inspect;
pub mod internal;
pub mod listener;
pub mod listener_filters;
pub mod relay;
pub mod socket;
pub mod tls;
pub mod tokio_io;
pub mod transport;
