//! Socket hand-over to glommio: sockets are created with socket2 (options glommio does not
//! expose) and then adopted by the shard's executor.
use std::os::fd::{FromRawFd, IntoRawFd};

/// Adopts a bound, listening, non-blocking socket into the current shard's executor.
pub fn adopt_listener(socket: socket2::Socket) -> glommio::net::TcpListener {
    let fd = socket.into_raw_fd();
    // SAFETY: `into_raw_fd` released the only owner of `fd`, a listening TCP socket; glommio's
    // listener takes ownership and closes it on drop. Must be called on a shard thread.
    unsafe { glommio::net::TcpListener::from_raw_fd(fd) }
}
