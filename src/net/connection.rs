//! NET/IO layer: a downstream connection, as Envoy takes it: accept → listener filters → pick
//! the filter chain (`filter_chain_match`, else the default chain) → the chain's transport
//! socket (a TLS handshake, or raw bytes) → the chain's terminal filter. The listener
//! generation (config and drain signal) is pinned here for the connection's life.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    rc::Rc,
    time::{Instant, SystemTime},
};

use model::{
    access_log::{ConnectionRecord, ResponseFlags},
    connection_limit::ConnectionSlot,
    filter_chain_match::ConnectionFacts,
    stats::{dec, inc, HandshakeFailure},
    tls::{classify_failure, negotiated, ServerTls},
    ConnectionFilter, Listener, NetworkFilter,
};

use crate::{
    context::ShardContext,
    filters::network::{
        connection_limit, filter_state::FilterState, http_connection_manager,
        run_connection_filters, tcp_proxy,
    },
    net::{
        listener::{Generation, Handoffs, OpenConnection},
        listener_filters::{self, Abort, Found},
        socket::Socket,
        tls::{self, HandshakeError},
        transport::Transport,
    },
    rt::net::TcpStream,
};

/// Most ALPN protocols a connection offers that filter-chain matching looks at.
const MAX_ALPN: usize = 8;

/// Serves one accepted connection; `slot` (its place under the global connection limit) is
/// given back when it closes.
pub async fn serve(
    ctx: Rc<ShardContext>,
    open: OpenConnection,
    mut stream: Socket,
    handoffs: Handoffs,
    slot: Option<ConnectionSlot>,
) {
    let _slot = slot;
    let mut open = open;
    let mut restored = None;
    loop {
        let listener = open.generation().config.clone();
        let stats = listener.stats.shard(ctx.id);
        inc(&stats.downstream_cx_total);
        inc(&stats.downstream_cx_active);
        // A connection handed over once is served where it lands.
        let handoffs = restored.is_none().then_some(&handoffs);
        let picked = pick_chain(&ctx, &listener, &mut stream, restored, handoffs).await;
        let closed = || {
            dec(&stats.downstream_cx_active);
            inc(&stats.downstream_cx_destroy);
        };
        match picked {
            Picked::HandOff(target, local) => {
                closed();
                open = target.open_connection();
                restored = Some(local);
            }
            Picked::Chain(index, found) => {
                let restored = found.original_destination.or(restored);
                let landed = Landed {
                    server_name: &found.server_name,
                    restored,
                    tunnel: found.tunnel_destination,
                };
                serve_chain(&ctx, &open, index, landed, stream).await;
                return closed();
            }
            Picked::Closed => return closed(),
        }
    }
}

/// What the listener filters found that the chain reads.
struct Landed<'a> {
    /// The server name (SNI) the tls_inspector read; empty without one.
    server_name: &'a str,
    /// The original destination, when restored.
    restored: Option<SocketAddr>,
    /// Where `ORIGINAL_DST` clusters send an internal connection.
    tunnel: Option<SocketAddr>,
}

/// Runs the chain at `index` of `open`'s listener on the connection.
async fn serve_chain(
    ctx: &Rc<ShardContext>,
    open: &OpenConnection,
    index: usize,
    landed: Landed<'_>,
    stream: Socket,
) {
    let Landed {
        server_name,
        restored,
        tunnel,
    } = landed;
    let generation = open.generation();
    let listener = &generation.config;
    {
        let chain = &listener.filter_chains[index];
        let Some(_counted) = connection_limit::admit(ctx, &chain.connection_filters).await else {
            return;
        };
        // The chain's drain: an update that changed only other chains leaves it running.
        let drain = generation.chain_drain(index);
        let arriving = FilterState::arriving(stream.passage().map(|p| &p.shared), tunnel);
        let mut transport = match (&chain.tls, stream) {
            (None, stream) => Some(stream.into()),
            (Some(tls), Socket::Tcp(stream)) => handshake(ctx, tls, stream).await,
            // Refused by the translator.
            (Some(_), Socket::Internal(_)) => None,
        };
        let filter_state = match &mut transport {
            Some(transport) => {
                run_connection_filters(
                    ctx,
                    arriving,
                    &chain.connection_filters,
                    transport,
                    server_name,
                    restored,
                    listener.address,
                )
                .await
            }
            None => None,
        };
        if let (Some(transport), Some(filter_state)) = (transport, filter_state) {
            let accepted = Accepted {
                transport,
                filter_state,
                connection_filters: &chain.connection_filters,
                server_name,
                restored,
            };
            match &chain.network {
                NetworkFilter::TcpProxy(proxy) => {
                    tcp_proxy::run(ctx, listener, drain, proxy, accepted).await
                }
                // A connection a filter ended has no streams to log.
                NetworkFilter::HttpConnectionManager(_)
                    if accepted.filter_state.denied.is_some() => {}
                NetworkFilter::HttpConnectionManager(hcm) => {
                    http_connection_manager::run(ctx, listener, drain, hcm, accepted).await
                }
            }
        }
    }
}

/// A connection ready for its network filter.
pub struct Accepted<'a> {
    pub transport: Transport,
    /// What the chain's filters before the terminal one learned.
    pub filter_state: FilterState,
    /// Those filters (the terminal one records what some of them count, e.g. `istio.stats`).
    pub connection_filters: &'a [ConnectionFilter],
    /// The server name (SNI) the tls_inspector read; empty without one.
    pub server_name: &'a str,
    /// The destination before an iptables REDIRECT, when the `original_dst` listener filter
    /// found one (the connection's local address as Envoy reports it).
    pub restored: Option<SocketAddr>,
}

/// What the listener filters and chain matching decided for a connection.
enum Picked {
    /// The chain's index, and what the listener filters found.
    Chain(usize, Found),
    /// `use_original_dst`: the listener at the original destination (`.1`) serves it.
    HandOff(Rc<Generation>, SocketAddr),
    /// Closed (counted).
    Closed,
}

/// Runs the listener filters and picks the chain. `restored` is the original destination of
/// a connection handed over; `handoffs` the listeners a `use_original_dst` listener may hand
/// it to.
async fn pick_chain(
    ctx: &ShardContext,
    listener: &Listener,
    stream: &mut Socket,
    restored: Option<SocketAddr>,
    handoffs: Option<&Handoffs>,
) -> Picked {
    let stats = listener.stats.shard(ctx.id);
    let started = (SystemTime::now(), Instant::now());
    let remote = stream.peer_addr().unwrap_or(listener.address);
    // A listener bound to one address is that address; a wildcard one asks the socket (a
    // syscall), only when a chain matches on it.
    let ask = listener.address.ip().is_unspecified() && listener.chain_index.reads_local();
    let local = match (restored, ask) {
        (Some(restored), _) => restored,
        (None, false) => listener.address,
        (None, true) => stream.local_addr().unwrap_or(listener.address),
    };
    let found = match listener_filters::run(ctx, &listener.listener_filters, local, stream).await {
        Ok(found) => found,
        Err(abort) => {
            match abort {
                Abort::TimedOut => inc(&stats.downstream_pre_cx_timeout),
                Abort::Rejected => inc(&stats.downstream_listener_filter_error),
                Abort::Closed => {}
            }
            tracing::debug!(listener = %listener.name, %remote, ?abort, "connection closed by a listener filter");
            log_unserved(
                ctx,
                listener,
                started,
                remote,
                local,
                ResponseFlags::default(),
            );
            return Picked::Closed;
        }
    };
    let local = found.original_destination.unwrap_or(local);
    if let (true, Some(original), Some(handoffs)) = (
        listener.use_original_dst,
        found.original_destination,
        handoffs,
    ) {
        if let Some(target) = handoff_target(handoffs, original) {
            return Picked::HandOff(target, original);
        }
    }
    let mut alpn = [""; MAX_ALPN];
    let offered = found.application_protocols.len().min(MAX_ALPN);
    for (slot, p) in alpn.iter_mut().zip(&found.application_protocols) {
        *slot = p;
    }
    let facts = ConnectionFacts {
        local,
        remote,
        direct_remote: remote,
        server_name: &found.server_name,
        transport_protocol: found.transport_protocol(),
        application_protocols: &alpn[..offered],
    };
    match listener.chain_for(&facts) {
        Some(index) => Picked::Chain(index, found),
        None => {
            inc(&stats.no_filter_chain_match);
            tracing::debug!(listener = %listener.name, %remote, %local, sni = %found.server_name, "no filter chain matched");
            log_unserved(
                ctx,
                listener,
                started,
                remote,
                local,
                ResponseFlags::NO_ROUTE_FOUND,
            );
            Picked::Closed
        }
    }
}

/// Writes the listener's access logs for a connection no chain took (`NR`: none matched),
/// accepted at `started`.
fn log_unserved(
    ctx: &ShardContext,
    listener: &Listener,
    started: (SystemTime, Instant),
    remote: SocketAddr,
    local: SocketAddr,
    flags: ResponseFlags,
) {
    if listener.access_logs.is_empty() {
        return;
    }
    let record = ConnectionRecord {
        start: started.0,
        duration: started.1.elapsed(),
        bytes_received: 0,
        bytes_sent: 0,
        downstream_remote: remote,
        downstream_local: local,
        upstream_host: None,
        upstream_local: None,
        upstream_cluster: None,
        response_flags: flags,
        connection_id: ctx.connection_id(),
        tls: None,
        requested_server_name: None,
        upstream_tls: None,
        termination_details: None,
        http: None,
    };
    ctx.logs.write(&listener.access_logs, &record);
}

/// The listener serving `original` as Envoy picks it: the one bound to that exact address,
/// else the wildcard one (`0.0.0.0` or `::`) on its port.
fn handoff_target(handoffs: &Handoffs, original: SocketAddr) -> Option<Rc<Generation>> {
    let handoffs = handoffs.borrow();
    let unspecified: IpAddr = match original {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let wildcard = SocketAddr::new(unspecified, original.port());
    let current = handoffs
        .get(&original)
        .or_else(|| handoffs.get(&wildcard))?;
    let generation = current.borrow().clone();
    (!generation.drain.is_draining()).then_some(generation)
}

/// The chain's TLS handshake; `None` (counted in `ssl.*`) closes the connection, as does a
/// context still waiting for its SDS secrets.
async fn handshake(ctx: &ShardContext, tls: &ServerTls, stream: TcpStream) -> Option<Transport> {
    let Some(configs) = tls.configs() else {
        inc(&tls
            .factory_stats
            .shard(ctx.id)
            .downstream_context_secrets_not_ready);
        tracing::debug!("TLS context has no secrets yet: connection closed");
        return None;
    };
    let cells = tls.stats.shard(ctx.id);
    let remote: Option<SocketAddr> = stream.peer_addr().ok();
    match tls::accept(stream, &configs).await {
        Ok(stream) => {
            let conn = stream.connection();
            let (version, cipher, curve) = negotiated(conn);
            let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            cells.handshake(version, cipher, curve, resumed);
            if conn.peer_certificates().is_none() && configs.requests_client_certificate {
                inc(&cells.no_certificate);
            }
            Some(stream.into())
        }
        Err(e) => {
            cells.failure(match &e {
                HandshakeError::Tls(e) => classify_failure(e),
                HandshakeError::Io(_) => HandshakeFailure::Connection,
            });
            tracing::debug!(?remote, "downstream TLS handshake failed: {e}");
            None
        }
    }
}
