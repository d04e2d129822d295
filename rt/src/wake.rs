//! Wake-ups from the agent to a shard: one byte over a socketpair, whose readiness the
//! shard's ring reports, so a parked shard wakes without any polling interval.
use std::{
    future::poll_fn,
    io::{self, Write},
    os::unix::net::UnixStream as StdUnixStream,
};

use super::readiness::Source;

/// Agent side: writes a byte per wake (a full socket buffer already means "wake pending").
pub struct SocketWaker(StdUnixStream);

impl SocketWaker {
    pub fn wake(&self) {
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
    /// Attaches to the current shard's runtime; must run on the shard thread.
    pub fn attach(self) -> WakeStream {
        WakeStream(Source::new(self.0))
    }
}

pub struct WakeStream(Source<StdUnixStream>);

impl WakeStream {
    /// Waits for at least one wake-up (several coalesce). Errors mean the agent is gone.
    pub async fn wait(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 64];
        match poll_fn(|cx| self.0.poll_read(cx, &mut buf)).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }
}
