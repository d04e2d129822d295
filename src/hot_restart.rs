//! Hot restart, as Envoy's `--restart-epoch` / `--base-id`: a process started with epoch N
//! takes the listening sockets (listeners and admin) over from epoch N-1 before its shards
//! bind, so connections queued on them are not lost; once live it tells N-1 to drain and exit
//! (`rt::handover`). Every process serves the next epoch the same way.
use std::{net::SocketAddr, os::fd::AsFd};

use rt::handover::{self, Registration, Role};

/// The command line's hot-restart flags.
pub struct Restart {
    pub base_id: u32,
    pub epoch: u32,
    /// `--disable-hot-restart`.
    pub disabled: bool,
}

/// Takes the previous epoch's sockets over (epoch > 0) and starts serving the next epoch. A
/// hand-over socket already in use (another process of this base id and epoch) leaves this
/// process without hot restart, said once.
pub fn start(restart: Restart) -> anyhow::Result<()> {
    if restart.disabled {
        anyhow::ensure!(
            restart.epoch == 0,
            "--restart-epoch {} needs hot restart, which --disable-hot-restart turns off",
            restart.epoch
        );
        return Ok(());
    }
    if restart.epoch > 0 {
        let count = handover::take_over(restart.base_id, restart.epoch)?;
        tracing::info!(
            "hot restart: took {count} listening socket(s) over from epoch {}",
            restart.epoch - 1
        );
    }
    if let Err(e) = handover::serve_next(restart.base_id, restart.epoch) {
        tracing::warn!(
            "hot restart unavailable for this process (base id {}, epoch {}): {e}; give each \
             proxy on this host its own --base-id, or --disable-hot-restart",
            restart.base_id,
            restart.epoch
        );
    }
    Ok(())
}

/// The admin socket: the previous epoch's, else a new one; registered for the next epoch.
pub fn admin_socket(
    address: SocketAddr,
) -> std::io::Result<(std::net::TcpListener, Box<dyn std::any::Any + Send>)> {
    let listener = match handover::take(Role::Admin, address, 0, 1).pop() {
        Some(fd) => std::net::TcpListener::from(fd),
        None => std::net::TcpListener::bind(address)?,
    };
    let registration = Registration::new(Role::Admin, address, listener.as_fd())?;
    Ok((listener, Box::new(registration)))
}
