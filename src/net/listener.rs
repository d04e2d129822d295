//! NET/IO layer: listeners on a shard: one SO_REUSEPORT socket per listener per shard, an
//! accept loop each, reconciled against every new snapshot as Envoy's listener manager does.
//! A modified listener keeps its socket (same address) and new connections take the new
//! config at once, while the connections accepted under the old config drain; a removed one
//! closes its socket and drains; after the drain time whatever is still open is closed.
//!
//! What the agent receives when a bind fails (one `ShardEvent::BindFailed` per shard, then
//! that shard's `Applied` for the same generation, as for any snapshot):
//! - a new listener: it is not bound on that shard; the rest of the snapshot is applied.
//! - a listener whose address changed: the old socket and the old config keep serving on that
//!   shard (no traffic is lost) until a later snapshot binds or removes it. A later snapshot
//!   with the same listener tries the bind again. (An LDS listener is then NACKed and dropped
//!   by the agent, as Envoy removes a listener its workers failed to add: the next generation
//!   removes it here and its connections drain; a bootstrap listener stays as it is.)
use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    io,
    net::SocketAddr,
    os::fd::AsFd,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_lite::future;
use model::{
    publish::{EventSender, ShardEvent},
    stats::inc,
    DrainType, Listener, Snapshot,
};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    context::ShardContext,
    net::{connection, drain::DrainSignal, internal, socket},
    rt::{
        self,
        handover::{self, Registration, Role},
        net::TcpListener,
        timer, Task,
    },
};

const BACKLOG: i32 = 1024;

/// One generation of a listener on this shard: the config its connections pinned at accept,
/// the drain signal of each filter chain (what its connections watch), whether the generation
/// is retired (`drain`), and how many of its connections are still open.
pub struct Generation {
    pub config: Arc<Listener>,
    /// Retired: accepts no more connections; closed at the end of its drain time.
    pub drain: DrainSignal,
    /// One per chain of `config`. After an update that changed only filter chains, an
    /// unchanged chain's signal is shared with the generation before, so that generation's
    /// connections on it keep running (Envoy's filter-chain-only update).
    chains: Vec<Rc<DrainSignal>>,
    open: Cell<usize>,
}

impl Generation {
    /// A generation of `config`, taking over the chain signals of `previous` for the chains
    /// an update that changed only filter chains left as they were.
    fn new(config: Arc<Listener>, previous: Option<&Generation>) -> Rc<Self> {
        let carried = previous.filter(|p| p.config.listener_hash == config.listener_hash);
        let chains = config
            .filter_chains
            .iter()
            .map(|chain| {
                carried
                    .and_then(|p| {
                        let i = p.config.filter_chains.iter().position(|c| {
                            c.config_hash == chain.config_hash && c.name == chain.name
                        })?;
                        Some(p.chains[i].clone())
                    })
                    .unwrap_or_default()
            })
            .collect();
        Rc::new(Self {
            config,
            drain: DrainSignal::default(),
            chains,
            open: Cell::new(0),
        })
    }

    /// The drain signal connections on chain `index` watch.
    pub fn chain_drain(&self, index: usize) -> &DrainSignal {
        &self.chains[index]
    }

    /// Chain signals of this generation that `successor` does not carry over.
    fn retired_chains(&self, successor: Option<&Generation>) -> Vec<Rc<DrainSignal>> {
        let kept = |signal: &Rc<DrainSignal>| {
            successor.is_some_and(|s| s.chains.iter().any(|k| Rc::ptr_eq(k, signal)))
        };
        self.chains.iter().filter(|c| !kept(c)).cloned().collect()
    }

    /// Counts a connection of this generation until the returned guard drops.
    pub fn open_connection(self: &Rc<Self>) -> OpenConnection {
        self.open.set(self.open.get() + 1);
        OpenConnection(self.clone())
    }
}

/// A connection of a generation; the last one to close ends the generation's drain early.
pub struct OpenConnection(Rc<Generation>);

impl OpenConnection {
    pub fn generation(&self) -> &Rc<Generation> {
        &self.0
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let generation = &self.0;
        generation.open.set(generation.open.get() - 1);
        if generation.open.get() == 0 && generation.drain.is_draining() {
            generation.drain.close();
        }
    }
}

/// When a retired generation's remaining connections are closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cutoff {
    /// At the end of the drain time (a listener modified or removed, as Envoy).
    DrainTime,
    /// Never: they end by themselves (the server stopped listening).
    None,
}

/// Which listeners the server stopped (`/drain_listeners`, shutdown): they stay stopped, and
/// listeners added later in that scope are not bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stopped {
    Inbound,
    All,
}

struct Active {
    /// The generation new connections pin; replaced when the listener is modified.
    current: Rc<RefCell<Rc<Generation>>>,
    /// `None` once the server stopped the listener. Dropping the task cancels the accept loop
    /// and closes the socket.
    accept: Option<Task<()>>,
}

impl Active {
    fn generation(&self) -> Rc<Generation> {
        self.current.borrow().clone()
    }
}

/// Where drains are reported (for `listener_manager.total_listeners_draining`).
struct Reporter {
    shard: usize,
    events: EventSender,
}

impl Reporter {
    fn draining(&self, listener: &Listener, draining: bool) {
        let _ = self.events.send(ShardEvent::ListenerDraining {
            shard: self.shard,
            listener: listener.name.clone(),
            config_hash: listener.config_hash,
            draining,
        });
    }
}

/// The listeners of a shard that do not bind (`bind_to_port: false`), by address: where a
/// `use_original_dst` listener hands a redirected connection over to.
pub type Handoffs = Rc<RefCell<HashMap<SocketAddr, Rc<RefCell<Rc<Generation>>>>>>;

pub struct ListenerSet {
    active: HashMap<String, Active>,
    handoffs: Handoffs,
    /// How long old connections get to finish (`--drain-time-s`).
    drain_time: Duration,
    stopped: Option<Stopped>,
    reporter: Rc<Reporter>,
}

impl ListenerSet {
    pub fn new(shard: usize, drain_time: Duration, events: EventSender) -> Self {
        Self {
            active: HashMap::new(),
            handoffs: Handoffs::default(),
            drain_time,
            stopped: None,
            reporter: Rc::new(Reporter { shard, events }),
        }
    }

    /// Brings this shard's listeners in line with `snapshot`; returns (listener, error) for
    /// each listener that could not bind (see the module comment for what then serves).
    pub fn apply(&mut self, ctx: &Rc<ShardContext>, snapshot: &Snapshot) -> Vec<(String, String)> {
        let wanted: HashMap<&str, &Arc<Listener>> = snapshot
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l))
            .collect();
        let removed: Vec<String> = self
            .active
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            .cloned()
            .collect();
        for name in removed {
            if let Some(active) = self.active.remove(&name) {
                self.retire(active.generation(), None, Cutoff::DrainTime); // dropping `active` closes the socket
            }
        }
        let mut failures = Vec::new();
        for (name, listener) in wanted {
            let (old, listening) = match self.active.get(name) {
                Some(active) => (Some(active.generation()), active.accept.is_some()),
                None => (None, false),
            };
            if old
                .as_ref()
                .is_some_and(|g| Arc::ptr_eq(&g.config, listener))
            {
                continue;
            }
            let generation = Generation::new(listener.clone(), old.as_deref());
            let same_socket = old
                .as_ref()
                .is_some_and(|g| g.config.address == listener.address);
            let stopped = self.is_stopped(listener);
            let unbound = stopped || !(listener.bind_to_port || listener.internal);
            if unbound || (listening && same_socket) {
                // New connections take the new config at once (no accept gap); a stopped
                // listener only carries its config for a later drain, one that does not bind
                // for the connections handed over to it.
                let active = self
                    .active
                    .entry(name.to_string())
                    .or_insert_with(|| Active {
                        current: Rc::new(RefCell::new(generation.clone())),
                        accept: None,
                    });
                *active.current.borrow_mut() = generation;
                if unbound {
                    active.accept = None;
                }
            } else {
                let current = Rc::new(RefCell::new(generation));
                let handoffs = self.handoffs.clone();
                let accepting = match listener.internal {
                    true => {
                        let registration = ctx.internal.register(name);
                        let accepting = accept_internal(registration, current.clone(), ctx.clone());
                        Ok(rt::spawn_local(accepting))
                    }
                    false => listen(listener.address, ctx.id, ctx.shards).map(|sockets| {
                        rt::spawn_local(accept_all(sockets, current.clone(), handoffs, ctx.clone()))
                    }),
                };
                match accepting {
                    Ok(accept) => {
                        // Replacing the old entry closes its socket.
                        self.active.insert(
                            name.to_string(),
                            Active {
                                current,
                                accept: Some(accept),
                            },
                        );
                    }
                    Err(e) => {
                        failures.push((
                            name.to_string(),
                            format!("cannot bind {}: {e}", listener.address),
                        ));
                        continue; // an old socket, if any, keeps serving the old config
                    }
                }
            }
            if let Some(old) = old {
                let current = self.active[name].generation();
                self.retire(old, Some(&current), Cutoff::DrainTime);
            }
        }
        let unbound = self
            .active
            .values()
            .filter(|a| {
                let config = &a.generation().config;
                !config.bind_to_port && !config.internal
            })
            .map(|a| (a.generation().config.address, a.current.clone()));
        *self.handoffs.borrow_mut() = unbound.collect();
        failures
    }

    /// Server drain (`/drain_listeners`, shutdown): closes listening sockets (all, or inbound
    /// ones only); connections of `drain_type: DEFAULT` listeners drain (as Envoy, they are not
    /// cut at the end of the drain time: a request in flight finishes), MODIFY_ONLY ones
    /// continue (until their listener is modified or removed).
    /// Tells the connections of DEFAULT-drain listeners in scope to drain (HTTP responses
    /// close their connections, idle ones close), while the sockets keep accepting: the
    /// graceful period of `/drain_listeners?graceful`, before `stop`.
    pub fn start_draining(&mut self, inbound_only: bool) {
        for active in self.active.values() {
            let generation = active.generation();
            let in_scope = !inbound_only || generation.config.inbound;
            if in_scope && generation.config.drain_type == DrainType::Default {
                generation.chains.iter().for_each(|c| c.start());
            }
        }
    }

    pub fn stop(&mut self, inbound_only: bool) {
        let scope = if inbound_only {
            Stopped::Inbound
        } else {
            Stopped::All
        };
        self.stopped = self.stopped.max(Some(scope));
        let mut draining = Vec::new();
        for active in self.active.values_mut() {
            let generation = active.generation();
            if inbound_only && !generation.config.inbound {
                continue;
            }
            active.accept = None;
            if generation.config.drain_type == DrainType::Default {
                draining.push(generation);
            }
        }
        draining
            .into_iter()
            .for_each(|g| self.retire(g, None, Cutoff::None));
    }

    fn is_stopped(&self, listener: &Listener) -> bool {
        match self.stopped {
            None => false,
            Some(Stopped::Inbound) => listener.inbound,
            Some(Stopped::All) => true,
        }
    }

    /// Retires a generation that accepts no more connections: the connections on its chains
    /// that `successor` does not carry over drain, and (with `Cutoff::DrainTime`) after the
    /// drain time whatever is left of them is closed.
    fn retire(&self, generation: Rc<Generation>, successor: Option<&Generation>, cutoff: Cutoff) {
        if generation.drain.is_draining() {
            return;
        }
        let retired = generation.retired_chains(successor);
        generation.drain.start();
        retired.iter().for_each(|c| c.start());
        if generation.open.get() == 0 {
            generation.drain.close();
            retired.iter().for_each(|c| c.close());
            return;
        }
        let reporter = self.reporter.clone();
        reporter.draining(&generation.config, true);
        let drain_time = self.drain_time;
        rt::spawn_local(async move {
            match cutoff {
                Cutoff::DrainTime => {
                    future::or(timer::sleep(drain_time), generation.drain.closed()).await
                }
                Cutoff::None => generation.drain.closed().await,
            }
            generation.drain.close();
            retired.iter().for_each(|c| c.close());
            reporter.draining(&generation.config, false);
        })
        .detach();
    }
}

/// The sockets shard `shard` of `shards` listens on for `address`: its share of those taken
/// over from the previous process (hot restart: they keep their queued connections), else one
/// of its own bound with SO_REUSEPORT. Each is registered for handing over to the next process.
fn listen(
    address: SocketAddr,
    shard: usize,
    shards: usize,
) -> io::Result<Vec<(TcpListener, Registration)>> {
    let taken = handover::take(Role::Listener, address, shard, shards);
    let sockets = match taken.is_empty() {
        true => vec![bind(address)?],
        false => taken.into_iter().map(Socket::from).collect(),
    };
    sockets
        .into_iter()
        .map(|socket| {
            socket.set_nonblocking(true)?;
            // Accepted sockets inherit TCP_NODELAY from the listening one (Linux copies the
            // listener's TCP options into each child): no setsockopt per connection.
            socket.set_tcp_nodelay(true)?;
            let registration = Registration::new(Role::Listener, address, socket.as_fd())?;
            Ok((TcpListener::adopt(socket), registration))
        })
        .collect()
}

fn bind(address: SocketAddr) -> io::Result<Socket> {
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
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Accepts on every socket of a listener (more than one only after a hot restart from a
/// process with more shards); dropping the task stops them all and closes the sockets.
async fn accept_all(
    sockets: Vec<(TcpListener, Registration)>,
    current: Rc<RefCell<Rc<Generation>>>,
    handoffs: Handoffs,
    ctx: Rc<ShardContext>,
) {
    let loops: Vec<Task<()>> = sockets
        .into_iter()
        .map(|(socket, registration)| {
            let accepting = accept_loop(socket, current.clone(), handoffs.clone(), ctx.clone());
            rt::spawn_local(async move {
                let _registration = registration;
                accepting.await
            })
        })
        .collect();
    future::pending::<()>().await;
    drop(loops);
}

/// Accepts connections until dropped: paused while `stop_accepting_connections` is saturated
/// (unless the listener bypasses the overload manager; connections wait in the backlog);
/// each accepted one is counted against the global connection limit, may be rejected by
/// `reject_incoming_connections`, and is served on its own task.
async fn accept_loop(
    mut socket: TcpListener,
    current: Rc<RefCell<Rc<Generation>>>,
    handoffs: Handoffs,
    ctx: Rc<ShardContext>,
) {
    let mut backoff = AcceptBackoff::default();
    let mut since_yield = 0;
    loop {
        let (bypasses, per_event) = {
            let config = &current.borrow().config;
            (config.bypasses_overload, config.accepts_per_event)
        };
        since_yield += 1;
        if since_yield > per_event {
            // A full backlog would keep accept4 succeeding: let the shard serve the
            // connections it has before taking more.
            since_yield = 0;
            future::yield_now().await;
        }
        if !bypasses {
            ctx.overload.until_accepting().await;
        }
        let stopped = async {
            match bypasses {
                true => future::pending().await,
                false => ctx.overload.until_stopped().await,
            }
            None
        };
        let Some(accepted) = future::or(async { Some(socket.accept().await) }, stopped).await
        else {
            continue;
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                let generation = current.borrow().clone();
                if let Some(delay) = backoff.failed(&generation.config.name, &e) {
                    inc(&generation
                        .config
                        .stats
                        .shard(ctx.id)
                        .downstream_cx_accept_backoff);
                    timer::sleep(delay).await;
                }
                continue;
            }
        };
        backoff.succeeded();
        let open = current.borrow().open_connection();
        let config = &open.generation().config;
        let Ok(slot) = ctx.connection_slot(config) else {
            // Over the global connection limit: closed at once, as Envoy.
            inc(&config.stats.shard(ctx.id).downstream_global_cx_overflow);
            continue;
        };
        if !config.bypasses_overload
            && ctx
                .overload
                .applies(model::overload::ActionKind::RejectIncomingConnections)
        {
            inc(&config.stats.shard(ctx.id).downstream_cx_overload_reject);
            continue;
        }
        let stream = socket::Socket::Tcp(stream);
        // Spawned as it is: a wrapping future would move this one (tens of KB) on first poll.
        rt::spawn_local(connection::serve(
            ctx.clone(),
            open,
            stream,
            handoffs.clone(),
            slot,
        ))
        .detach();
    }
}

/// The first wait after a failed accept that is not about one connection.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between accepts while they keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Failures less than this apart are one burst (logged once).
const BURST_GAP: Duration = Duration::from_secs(10);

/// Back-off after accept failures that would repeat at once (out of descriptors or memory:
/// EMFILE, ENFILE, ENOBUFS, ENOMEM): the listener waits, twice as long after each failure
/// up to a second, instead of spinning on a connection it cannot take; a success resets the
/// wait. The first failure of a burst is logged.
#[derive(Default)]
struct AcceptBackoff {
    delay: Option<Duration>,
    last_failure: Option<Instant>,
}

impl AcceptBackoff {
    /// How long to wait after `error` (`None`: a failure of one connection only, such as a
    /// client that reset before it was accepted; the next accept goes ahead).
    fn failed(&mut self, listener: &str, error: &io::Error) -> Option<Duration> {
        let lasting = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM];
        let transient = error
            .raw_os_error()
            .is_some_and(|code| !lasting.contains(&code));
        if transient {
            return None;
        }
        let now = Instant::now();
        if self
            .last_failure
            .is_none_or(|at| now.duration_since(at) >= BURST_GAP)
        {
            tracing::warn!(
                listener,
                "accept failed: {error}; backing off until it succeeds"
            );
        }
        self.last_failure = Some(now);
        let delay = self
            .delay
            .map_or(FIRST_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
        self.delay = Some(delay);
        Some(delay)
    }

    fn succeeded(&mut self) {
        self.delay = None;
    }
}

/// An internal listener's accept loop: serves each in-process connection opened to it.
async fn accept_internal(
    registration: internal::Registration,
    current: Rc<RefCell<Rc<Generation>>>,
    ctx: Rc<ShardContext>,
) {
    loop {
        let stream = socket::Socket::Internal(registration.accept().await);
        let open = current.borrow().open_connection();
        // An internal listener hands nothing over (`use_original_dst` is refused for it).
        let serving = connection::serve(ctx.clone(), open, stream, Handoffs::default(), None);
        rt::spawn_local(serving).detach();
    }
}

#[cfg(test)]
mod tests {
    use std::{future::Future, pin::pin, task::Poll};

    use model::{publish::EventReceiver, stats::StatsRegistry};

    use super::*;
    use crate::{access_log::FlusherHandle, rt::executor::Executor};

    fn free_address() -> SocketAddr {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    }

    fn listener(
        name: &str,
        hash: u64,
        address: SocketAddr,
        drain_type: DrainType,
    ) -> Arc<Listener> {
        Arc::new(Listener {
            config_hash: hash,
            drain_type,
            ..Listener::without_chains(name, address, StatsRegistry::new(1).listener(name))
        })
    }

    fn snapshot(generation: u64, listeners: &[&Arc<Listener>]) -> Snapshot {
        Snapshot {
            generation,
            listeners: listeners.iter().map(|l| Arc::clone(l)).collect(),
            ..Snapshot::empty()
        }
    }

    struct Shard {
        ctx: Rc<ShardContext>,
        set: ListenerSet,
        events: EventReceiver,
    }

    fn shard(drain_time: Duration) -> Shard {
        let (tx, events) = model::publish::event_channel();
        Shard {
            ctx: Rc::new(ShardContext::new(
                0,
                1,
                FlusherHandle::unread(),
                model::publish::event_channel().0,
            )),
            set: ListenerSet::new(0, drain_time, tx),
            events,
        }
    }

    impl Shard {
        fn generation(&self, name: &str) -> Rc<Generation> {
            self.set.active[name].generation()
        }

        /// `(listener, config_hash, draining)` of every drain report so far.
        fn drains(&mut self) -> Vec<(String, u64, bool)> {
            let mut out = Vec::new();
            while let Ok(event) = self.events.try_recv() {
                if let ShardEvent::ListenerDraining {
                    listener,
                    config_hash,
                    draining,
                    ..
                } = event
                {
                    out.push((listener, config_hash, draining));
                }
            }
            out
        }
    }

    fn is_closed(generation: &Generation) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        matches!(
            pin!(generation.drain.closed()).poll(&mut cx),
            Poll::Ready(())
        )
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_ends_with_a_success() {
        let mut backoff = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let delays: Vec<u64> = (0..9)
            .map(|_| backoff.failed("l", &emfile).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(
            backoff.failed("l", &aborted),
            None,
            "one connection's failure"
        );
        backoff.succeeded();
        let enobufs = io::Error::from_raw_os_error(libc::ENOBUFS);
        assert_eq!(backoff.failed("l", &enobufs), Some(FIRST_BACKOFF));
        assert!(
            backoff.last_failure.is_some(),
            "the same burst: not logged again"
        );
    }

    #[test]
    fn accepted_connections_have_nodelay_from_the_listening_socket() {
        Executor::new().unwrap().run(async {
            let address = free_address();
            let mut sockets = listen(address, 0, 1).unwrap();
            let (listener, _registration) = &mut sockets[0];
            let _client = std::net::TcpStream::connect(address).unwrap();
            let accepted = listener.accept().await.unwrap();
            assert!(
                accepted.nodelay().unwrap(),
                "inherited, no setsockopt per connection"
            );
        });
    }

    #[test]
    fn modified_listener_keeps_its_socket_and_drains_the_old_generation() {
        Executor::new().unwrap().run(async {
            let mut s = shard(Duration::from_secs(600));
            let address = free_address();
            let v1 = listener("l", 1, address, DrainType::Default);
            assert!(s.set.apply(&s.ctx, &snapshot(1, &[&v1])).is_empty());
            let socket = s.set.active["l"].current.clone();
            let old = s.generation("l");
            let open = old.open_connection();

            let v2 = listener("l", 2, address, DrainType::Default);
            assert!(s.set.apply(&s.ctx, &snapshot(2, &[&v2])).is_empty());
            assert!(
                Rc::ptr_eq(&socket, &s.set.active["l"].current),
                "same address: the accept loop and its socket are kept"
            );
            assert!(Arc::ptr_eq(&s.generation("l").config, &v2));
            assert!(!s.generation("l").drain.is_draining());
            assert!(old.drain.is_draining() && !is_closed(&old));
            assert_eq!(s.drains(), [("l".to_string(), 1, true)]);

            // The same snapshot again changes nothing.
            s.set.apply(&s.ctx, &snapshot(3, &[&v2]));
            assert!(Arc::ptr_eq(&s.generation("l").config, &v2));
            assert!(s.drains().is_empty());

            // The last old connection closing ends the drain before the drain time.
            drop(open);
            assert!(is_closed(&old));
            timer::sleep(Duration::from_millis(10)).await;
            assert_eq!(s.drains(), [("l".to_string(), 1, false)]);
        });
    }

    #[test]
    fn drain_time_closes_what_is_left_and_idle_generations_close_at_once() {
        Executor::new().unwrap().run(async {
            let mut s = shard(Duration::from_millis(50));
            let (a, b) = (free_address(), free_address());
            let busy = listener("busy", 1, a, DrainType::Default);
            let idle = listener("idle", 1, b, DrainType::Default);
            s.set.apply(&s.ctx, &snapshot(1, &[&busy, &idle]));
            let (busy_old, idle_old) = (s.generation("busy"), s.generation("idle"));
            let _open = busy_old.open_connection();

            // `busy` is removed, `idle` moves to another address.
            let moved = listener("idle", 2, free_address(), DrainType::Default);
            assert!(s.set.apply(&s.ctx, &snapshot(2, &[&moved])).is_empty());
            assert!(!s.set.active.contains_key("busy"));
            timer::sleep(Duration::from_millis(10)).await; // the socket's close goes through the ring
            assert!(
                std::net::TcpStream::connect(a).is_err(),
                "a removed listener's socket is closed at once"
            );
            assert!(is_closed(&idle_old), "no connection: nothing to wait for");
            assert!(busy_old.drain.is_draining() && !is_closed(&busy_old));
            timer::sleep(Duration::from_millis(100)).await;
            assert!(is_closed(&busy_old), "closed at the end of the drain time");
            assert_eq!(
                s.drains(),
                [
                    ("busy".to_string(), 1, true),
                    ("busy".to_string(), 1, false)
                ]
            );
        });
    }

    #[test]
    fn server_drain_spares_modify_only_listeners_until_they_change() {
        Executor::new().unwrap().run(async {
            let mut s = shard(Duration::from_secs(600));
            let default = listener("d", 1, free_address(), DrainType::Default);
            let modify_only = listener("m", 1, free_address(), DrainType::ModifyOnly);
            s.set.apply(&s.ctx, &snapshot(1, &[&default, &modify_only]));
            let (d, m) = (s.generation("d"), s.generation("m"));
            let _open = (d.open_connection(), m.open_connection());

            s.set.stop(false);
            assert!(s.set.active.values().all(|a| a.accept.is_none()));
            assert!(d.drain.is_draining());
            assert!(!m.drain.is_draining());

            // Stopped: changes are not bound again, but a modification drains MODIFY_ONLY.
            let m2 = listener("m", 2, free_address(), DrainType::ModifyOnly);
            let added = listener("new", 1, free_address(), DrainType::Default);
            assert!(s
                .set
                .apply(&s.ctx, &snapshot(2, &[&default, &m2, &added]))
                .is_empty());
            assert!(m.drain.is_draining());
            assert!(s.set.active.values().all(|a| a.accept.is_none()));
            assert!(std::net::TcpStream::connect(added.address).is_err());
            assert_eq!(
                s.drains(),
                [("d".to_string(), 1, true), ("m".to_string(), 1, true)]
            );
        });
    }

    #[test]
    fn failed_bind_of_a_moved_listener_keeps_the_old_socket_and_config() {
        Executor::new().unwrap().run(async {
            let mut s = shard(Duration::from_secs(600));
            let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = free_address();
            let v1 = listener("l", 1, address, DrainType::Default);
            s.set.apply(&s.ctx, &snapshot(1, &[&v1]));
            let old = s.generation("l");

            let moved = listener("l", 2, taken.local_addr().unwrap(), DrainType::Default);
            let fresh = listener("fresh", 1, free_address(), DrainType::Default);
            let failures = s.set.apply(&s.ctx, &snapshot(2, &[&moved, &fresh]));
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].0, "l");
            assert!(Rc::ptr_eq(&s.generation("l"), &old));
            assert!(!old.drain.is_draining());
            assert!(std::net::TcpStream::connect(address).is_ok());
            assert!(s.set.active["fresh"].accept.is_some());
        });
    }
}
