//! Wake-ups from the agent to a shard: one byte over a socketpair, read by the shard's
//! executor through io_uring, so a parked shard wakes without any polling interval.
use std::{
    io::{self, Write},
    os::{fd::FromRawFd, fd::IntoRawFd, unix::net::UnixStream as StdUnixStream},
};

use futures_lite::AsyncReadExt;
use glommio::net::UnixStream;
use xds_agent::publish::Wake;

/// Agent side: writes a byte per wake (a full socket buffer already means "wake pending").
pub struct SocketWaker(StdUnixStream);

impl Wake for SocketWaker {
    fn wake(&self) {
        match (&self.0).write(&[1]) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::debug!("shard wake-up failed (shard gone?): {e}"),
        }
    }
}

/// Shard side, before it is attached to the shard's executor.
pub struct WakeReceiver(StdUnixStream);

pub fn pair() -> io::Result<(SocketWaker, WakeReceiver)> {
    let (agent, shard) = StdUnixStream::pair()?;
    agent.set_nonblocking(true)?;
    shard.set_nonblocking(true)?;
    Ok((SocketWaker(agent), WakeReceiver(shard)))
}

impl WakeReceiver {
    /// Attaches to the current glommio executor; must run on the shard thread.
    pub fn attach(self) -> WakeStream {
        let fd = self.0.into_raw_fd();
        // SAFETY: `fd` was just released by `into_raw_fd`, so this is its only owner; it is a
        // connected, non-blocking AF_UNIX stream socket, which glommio's UnixStream expects.
        WakeStream(unsafe { UnixStream::from_raw_fd(fd) })
    }
}

pub struct WakeStream(UnixStream);

impl WakeStream {
    /// Waits for at least one wake-up (several coalesce). Errors mean the agent is gone.
    pub async fn wait(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 64];
        match self.0.read(&mut buf).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }
}
