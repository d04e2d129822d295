//! Agent: refuses a listener address that another socket already holds, before the shards
//! bind it. Shards bind with SO_REUSEPORT, so a second shardproxy (or an Envoy) on the same
//! address would bind too and silently take part of the connections. The probe binds a
//! throwaway socket the way a shard does (SO_REUSEADDR, IPV6_V6ONLY), minus SO_REUSEPORT: that
//! fails with EADDRINUSE exactly when a listening socket is already there. SO_REUSEADDR keeps
//! TIME_WAIT leftovers (a restart) from counting, as it does for the shards' own bind.
//!
//! Only addresses this process has never published (nor took over in a hot restart) are probed: one of ours may still be
//! bound by a shard (a generation not applied yet, a listener renamed or moved), and the probe
//! cannot tell our sockets from another process's. An address this process gave up and that
//! another process took meanwhile is therefore not caught (see README).
use std::{collections::HashSet, io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use model::Snapshot;

/// The listener addresses this process has published to its shards.
#[derive(Debug, Default)]
pub struct ListenerAddresses {
    published: HashSet<SocketAddr>,
}

impl ListenerAddresses {
    /// Addresses whose sockets this process already holds (taken over by a hot restart) count
    /// as published: the probe would find them in use, by us.
    pub fn holding(addresses: &[SocketAddr]) -> Self {
        Self {
            published: addresses.iter().copied().collect(),
        }
    }

    /// The listeners of `snapshot` on an address this process never published that cannot be
    /// bound: (listener name, why).
    pub fn taken(&self, snapshot: &Snapshot) -> Vec<(String, String)> {
        snapshot
            .listeners
            .iter()
            .filter(|l| l.bind_to_port && l.address.port() != 0)
            .filter(|l| !self.published.contains(&l.address))
            .filter_map(|l| {
                let error = probe(l.address).err()?;
                Some((l.name.clone(), describe(l.address, &error)))
            })
            .collect()
    }

    /// Records the addresses of a snapshot being published.
    pub fn publish(&mut self, snapshot: &Snapshot) {
        self.published
            .extend(snapshot.listeners.iter().map(|l| l.address));
    }
}

/// Binds and drops a socket on `address` as a shard would, without SO_REUSEPORT.
pub fn probe(address: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&address.into())
}

fn describe(address: SocketAddr, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::AddrInUse => format!(
            "{address} is already in use by another socket (another shardproxy or Envoy there \
             would share it through SO_REUSEPORT and take part of its connections)"
        ),
        _ => format!("cannot bind {address}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read,
        net::{TcpListener, TcpStream},
        sync::Arc,
    };

    use super::*;
    use model::{stats::StatsRegistry, Listener};

    fn snapshot(listeners: &[(&str, SocketAddr)]) -> Snapshot {
        let listener = |(name, address): &(&str, SocketAddr)| {
            Arc::new(Listener::without_chains(
                name,
                *address,
                StatsRegistry::new(1).listener(name),
            ))
        };
        Snapshot {
            listeners: listeners.iter().map(listener).collect(),
            ..Snapshot::empty()
        }
    }

    /// A listening socket as a shard opens it (SO_REUSEADDR and SO_REUSEPORT).
    fn shard_like_listener(address: SocketAddr) -> TcpListener {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.bind(&address.into()).unwrap();
        socket.listen(16).unwrap();
        socket.into()
    }

    fn free_address() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn a_free_address_passes() {
        assert!(probe(free_address()).is_ok());
    }

    #[test]
    fn a_reuseport_listener_is_found() {
        let held = shard_like_listener("127.0.0.1:0".parse().unwrap());
        let address = held.local_addr().unwrap();
        let error = probe(address).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(describe(address, &error).contains(&format!("{address} is already in use")));
    }

    #[test]
    fn only_addresses_never_published_are_probed() {
        let held = shard_like_listener("127.0.0.1:0".parse().unwrap());
        let taken = held.local_addr().unwrap();
        let (free, port_zero) = (free_address(), "127.0.0.1:0".parse().unwrap());
        let mut addresses = ListenerAddresses::default();
        let wanted = snapshot(&[("busy", taken), ("free", free), ("any", port_zero)]);
        let refused = addresses.taken(&wanted);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].0, "busy");
        // Once published (here: as if ours), the address is not probed again, under any name.
        addresses.publish(&wanted);
        assert!(addresses.taken(&snapshot(&[("renamed", taken)])).is_empty());
    }

    #[test]
    fn time_wait_leftovers_do_not_count() {
        // The server side closes first, so its end of the connection (on the listener's port)
        // stays in TIME_WAIT after the listener is gone: a restart must still bind.
        let listener = shard_like_listener("127.0.0.1:0".parse().unwrap());
        let address = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(address).unwrap();
        let (served, _) = listener.accept().unwrap();
        drop(served);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        drop(listener);
        drop(client);
        assert!(probe(address).is_ok(), "TIME_WAIT on {address} counted");
    }
}
