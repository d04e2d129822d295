//! Listeners on a shard: one SO_REUSEPORT socket per listener per shard, an accept loop each,
//! reconciled against every new snapshot (kept, re-pointed, added, or closed).
use std::{
    cell::RefCell, collections::HashMap, io, net::SocketAddr, rc::Rc, sync::Arc, time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use xds_agent::model::{Listener, Snapshot};

use crate::{
    context::ShardContext,
    net::connection,
    rt::{self, net::TcpListener, timer, Task},
};

const BACKLOG: i32 = 1024;

struct Active {
    /// Config new connections pin; swapped in place when the listener changes but keeps its
    /// address (open connections keep the config they were accepted with).
    config: Rc<RefCell<Arc<Listener>>>,
    /// Dropping the task cancels the accept loop and closes the socket.
    _accept: Task<()>,
}

#[derive(Default)]
pub struct ListenerSet {
    active: HashMap<String, Active>,
}

impl ListenerSet {
    /// Brings this shard's sockets in line with `snapshot`; returns (listener, error) for each
    /// listener that could not bind.
    pub fn apply(&mut self, ctx: &Rc<ShardContext>, snapshot: &Snapshot) -> Vec<(String, String)> {
        let wanted: HashMap<&str, &Arc<Listener>> = snapshot
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l))
            .collect();
        self.active.retain(|name, active| {
            wanted
                .get(name.as_str())
                .is_some_and(|new| new.address == active.config.borrow().address)
        });
        let mut failures = Vec::new();
        for (name, listener) in wanted {
            if let Some(active) = self.active.get(name) {
                if !Arc::ptr_eq(&active.config.borrow(), listener) {
                    *active.config.borrow_mut() = listener.clone();
                }
                continue;
            }
            match bind(listener.address) {
                Ok(socket) => {
                    let config = Rc::new(RefCell::new(listener.clone()));
                    let accept = rt::spawn_local(accept_loop(socket, config.clone(), ctx.clone()));
                    self.active.insert(
                        name.to_string(),
                        Active {
                            config,
                            _accept: accept,
                        },
                    );
                }
                Err(e) => failures.push((
                    name.to_string(),
                    format!("cannot bind {}: {e}", listener.address),
                )),
            }
        }
        failures
    }

    /// Closes listening sockets (all, or inbound ones only); connections continue.
    pub fn stop(&mut self, inbound_only: bool) {
        self.active
            .retain(|_, active| inbound_only && !active.config.borrow().inbound);
    }
}

fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::adopt(socket))
}

async fn accept_loop(
    mut socket: TcpListener,
    config: Rc<RefCell<Arc<Listener>>>,
    ctx: Rc<ShardContext>,
) {
    loop {
        match socket.accept().await {
            Ok(stream) => {
                let listener = config.borrow().clone();
                rt::spawn_local(connection::serve(ctx.clone(), listener, stream)).detach();
            }
            Err(e) => {
                // Out of descriptors or memory: back off briefly instead of spinning.
                tracing::warn!(listener = %config.borrow().name, "accept failed: {e}");
                timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
