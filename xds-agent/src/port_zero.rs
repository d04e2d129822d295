//! Agent: gives a listener configured on port 0 one real port, the same on every shard. Each
//! shard binds its own SO_REUSEPORT socket, so port 0 there would give every shard a different
//! port; instead the agent binds one socket on port 0 (SO_REUSEADDR, SO_REUSEPORT, never
//! listening, so it takes no connections), keeps it while the listener exists, and the
//! translator writes the port it got into the listener's address. `/listeners` then shows the
//! port, as Envoy's does. A listener keeps its port across updates for as long as its name and
//! configured address stay the same.
use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Mutex, PoisonError},
};

use socket2::{Domain, Protocol, Socket, Type};

use model::Snapshot;

/// The ports held for port-0 listeners, by listener name.
#[derive(Debug, Default)]
pub struct PortReservations {
    held: Mutex<HashMap<String, Reservation>>,
}

#[derive(Debug)]
struct Reservation {
    configured: SocketAddr,
    bound: SocketAddr,
    _socket: Socket,
}

impl PortReservations {
    /// The address listener `name` configured on `configured` (port 0) binds: the port held
    /// for it, else a new one.
    pub fn assign(&self, name: &str, configured: SocketAddr) -> io::Result<SocketAddr> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reservation) = held.get(name).filter(|r| r.configured == configured) {
            return Ok(reservation.bound);
        }
        let (socket, bound) = reserve(configured)?;
        tracing::info!(listener = name, "port 0 of {configured} is {bound}");
        held.insert(
            name.to_string(),
            Reservation {
                configured,
                bound,
                _socket: socket,
            },
        );
        Ok(bound)
    }

    /// Gives up the ports of listeners `snapshot` no longer has (its shards hold the rest).
    pub fn retain(&self, snapshot: &Snapshot) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|name, r| {
            snapshot
                .listeners
                .iter()
                .any(|l| l.name == *name && l.address == r.bound)
        });
    }
}

/// A socket bound on `configured` (port 0) as a shard binds, and the address it got.
fn reserve(configured: SocketAddr) -> io::Result<(Socket, SocketAddr)> {
    let socket = Socket::new(
        Domain::for_address(configured),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if configured.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&configured.into())?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))?;
    Ok((socket, bound))
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, sync::Arc};

    use super::*;
    use model::{stats::StatsRegistry, Listener};

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn a_name_keeps_its_port_and_shards_can_share_it() {
        let ports = PortReservations::default();
        let first = ports.assign("a", any_port()).unwrap();
        assert_ne!(first.port(), 0);
        assert_eq!(ports.assign("a", any_port()).unwrap(), first);
        let other = ports.assign("b", any_port()).unwrap();
        assert_ne!(other, first);
        // Two shards' listening sockets bind the held port beside the reservation.
        let shard = |address: SocketAddr| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            socket.set_reuse_address(true).unwrap();
            socket.set_reuse_port(true).unwrap();
            socket.bind(&address.into()).unwrap();
            socket.listen(16).unwrap();
            TcpListener::from(socket)
        };
        let (_one, _two) = (shard(first), shard(first));
    }

    #[test]
    fn a_removed_listener_gives_its_port_up() {
        let ports = PortReservations::default();
        let kept = ports.assign("kept", any_port()).unwrap();
        ports.assign("gone", any_port()).unwrap();
        let snapshot = Snapshot {
            listeners: vec![Arc::new(Listener::without_chains(
                "kept",
                kept,
                StatsRegistry::new(1).listener("kept"),
            ))],
            ..Snapshot::empty()
        };
        ports.retain(&snapshot);
        let held = ports.held.lock().unwrap();
        assert_eq!(held.keys().collect::<Vec<_>>(), ["kept"]);
    }
}
