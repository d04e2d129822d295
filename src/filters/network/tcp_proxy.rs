//! `envoy.filters.network.tcp_proxy`: picks a cluster and host, connects (with retries up to
//! `max_connect_attempts`) or, with `tunneling_config`, opens an HTTP tunnel to the host
//! (`proxy/tunnel.rs`), relays bytes, then logs the connection. The chain's `istio.stats`
//! filters count the connection here: opened once the upstream (and its peer) is known, bytes
//! as they are relayed, closed at the end.
use std::{
    cell::Cell,
    rc::Rc,
    sync::Arc,
    time::{Instant, SystemTime},
};

use model::{
    access_log::{ConnectionRecord, ResponseFlags},
    istio::StatsConfig,
    metadata::Metadata,
    stats::{add, dec, inc, istio::SeriesCells, ClusterCells, TcpProxyCells},
    tls_info::{Negotiated, UriSans},
    ConnectionFilter, Listener, TcpProxy,
};

use crate::{
    context::ShardContext,
    filters::{
        istio::{
            peer::Peer,
            stats::{client_principals, open_tcp, Reporter, Sides},
        },
        network::filter_state::{FilterState, SharedState},
    },
    net::connection::Accepted,
    net::drain::DrainSignal,
    net::relay::{relay, RelayEnd, RelayLimits, RelayObserver},
    net::transport::Transport,
    proxy::{
        cluster_manager::{ActiveHost, ShardCluster},
        connect::{connect_upstream, try_hosts, Opened, Target},
        lb::xx64,
        tunnel::{self, OpenedTunnel},
    },
    rt::timer,
};

pub async fn run(
    ctx: &Rc<ShardContext>,
    listener: &Arc<Listener>,
    drain: &DrainSignal,
    proxy: &TcpProxy,
    accepted: Accepted<'_>,
) {
    let restored = accepted.restored;
    let downstream = accepted.transport;
    let mut istio = IstioTcp {
        configs: accepted
            .connection_filters
            .iter()
            .filter_map(|f| match f {
                ConnectionFilter::IstioStats(config) => Some(&**config),
                _ => None,
            })
            .collect(),
        state: &accepted.filter_state,
        inbound: listener.inbound,
        series: Vec::new(),
    };
    let started = Instant::now();
    let start_wall = SystemTime::now();
    let stats = proxy.stats.shard(ctx.id);
    inc(&stats.downstream_cx_total);
    // Addresses cost two syscalls per connection; only access logs and tunnels read them.
    let logged = proxy.logs_connections();
    let (downstream_remote, downstream_local) = match proxy.reads_addresses() {
        true => (
            downstream.peer_addr().unwrap_or(listener.address),
            // A redirected connection's local address is its original destination, as Envoy.
            restored.unwrap_or_else(|| downstream.local_addr().unwrap_or(listener.address)),
        ),
        false => (listener.address, listener.address),
    };
    // Read before the relay takes the connection, when a format reads it.
    let tls = match proxy.logs_read_tls() {
        true => downstream.tls().map(|t| t.info()),
        false => None,
    };
    let mut record = ConnectionRecord {
        start: start_wall,
        duration: Default::default(),
        bytes_received: 0,
        bytes_sent: 0,
        downstream_remote,
        downstream_local,
        upstream_host: None,
        upstream_local: None,
        upstream_cluster: None,
        response_flags: ResponseFlags::default(),
        connection_id: ctx.connection_id(),
        tls: tls.as_ref(),
        requested_server_name: Some(accepted.server_name).filter(|n| !n.is_empty()),
        upstream_tls: None,
        termination_details: accepted.filter_state.denied.as_deref(),
        http: None,
    };
    let picked = proxy
        .upstream
        .pick(fastrand::u32(0..proxy.upstream.total_weight.max(1)));
    record.upstream_cluster = Some(&picked.name);
    let cluster = ctx.clusters.borrow().resolve(picked);
    match cluster {
        // A connection a filter before this one ended (e.g. network RBAC) is only logged.
        _ if record.termination_details.is_some() => {}
        None => {
            inc(&stats.downstream_cx_no_route);
            record.response_flags.set(ResponseFlags::NO_ROUTE_FOUND);
        }
        Some(cluster) => {
            // Where an ORIGINAL_DST cluster sends the connection: the tunnel address an
            // internal connection was given, else the restored destination; none without
            // either, as in Envoy (the address it reached is this listener's own, and
            // relaying there would loop back into it).
            let state = &accepted.filter_state;
            let original = state.tunnel_destination.or(restored);
            let destination = cluster.config.original_dst.as_ref().and(original);
            let shared = state.shared();
            let hash = (proxy.hashes_source_ip && cluster.config.lb_policy.hashes())
                .then(|| downstream.peer_addr().ok())
                .flatten()
                .map(|remote| xx64(remote.ip().to_string().as_bytes(), 0));
            let upstream = Upstream {
                cluster: &cluster,
                destination,
                hash,
                shared: &shared,
            };
            proxy_to(
                ctx,
                listener,
                drain,
                proxy,
                upstream,
                downstream,
                stats,
                &mut record,
                &mut istio,
            )
            .await;
        }
    }
    // A connection that never reached an upstream is counted opened at its end, as Istio.
    if istio.series.is_empty() {
        istio.open(ctx.id, None, None, None, record.response_flags);
    }
    istio.close();
    record.duration = started.elapsed();
    if logged {
        ctx.logs.write(&proxy.access_logs, &record);
    }
}

/// The cluster a connection goes to, where an `ORIGINAL_DST` one sends it, and what the
/// connection shares with its upstream connection.
struct Upstream<'a> {
    cluster: &'a Rc<ShardCluster>,
    destination: Option<std::net::SocketAddr>,
    /// The connection's hash for a consistent-hash cluster (its source IP's).
    hash: Option<u64>,
    shared: &'a SharedState,
}

#[allow(clippy::too_many_arguments)]
async fn proxy_to(
    ctx: &Rc<ShardContext>,
    listener: &Listener,
    drain: &DrainSignal,
    proxy: &TcpProxy,
    upstream: Upstream<'_>,
    downstream: Transport,
    stats: &TcpProxyCells,
    record: &mut ConnectionRecord<'_>,
    istio: &mut IstioTcp<'_>,
) {
    let Upstream {
        cluster,
        destination,
        hash,
        shared,
    } = upstream;
    let target = Target {
        cluster,
        attempts: proxy.max_connect_attempts,
        destination,
        hash,
    };
    // The host a tunnel's request waits on.
    let asked = Cell::new(None);
    let connecting = async {
        match &proxy.tunneling {
            None => connect_upstream(ctx, target, shared)
                .await
                .map(|(opened, host)| (Connected::Raw(opened), host)),
            Some(tunneling) => {
                let request = tunnel::request(tunneling, record);
                let open = async |host: &ActiveHost| {
                    asked.set(Some(host.address()));
                    tunnel::open(ctx, cluster, host, &request).await
                };
                try_hosts(ctx, target, open)
                    .await
                    .map(|(opened, host)| (Connected::Tunnel(Box::new(opened)), host))
            }
        }
    };
    // Envoy's idle timer runs from the start: an upstream that never answers a tunnel's
    // request times the connection out, and the request counts as a failed connect.
    let deadline = proxy.idle_timeout.map(|t| Instant::now() + t);
    let (upstream, host) = match timer::within(deadline, connecting).await {
        None => {
            inc(&stats.idle_timeout);
            if let Some(host) = asked.get() {
                record
                    .response_flags
                    .set(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
                record.upstream_host = Some(host);
            }
            return;
        }
        Some(Ok(connected)) => connected,
        Some(Err(failure)) => {
            record.response_flags.set(failure.flag);
            record.upstream_host = failure.last_host;
            return;
        }
    };
    let cluster_name = (cluster.config.name.as_str(), &cluster.config.metadata);
    // A client's principals are the upstream connection's certificates'.
    let with_sans = !istio.configs.is_empty();
    match &upstream {
        Connected::Raw(opened) => {
            let sans = with_sans.then(|| opened.transport.tls().map(|t| t.uri_sans()));
            let sans = sans.flatten();
            let peer = opened.peer.as_deref();
            istio.open(
                ctx.id,
                peer,
                sans.as_deref(),
                Some(cluster_name),
                Default::default(),
            );
        }
        Connected::Tunnel(opened) => {
            let sans = opened.uri_sans.as_deref().filter(|_| with_sans);
            istio.open(ctx.id, None, sans, Some(cluster_name), Default::default());
        }
    }
    record.upstream_host = Some(host.address());
    if proxy.logs_connections() {
        (record.upstream_local, record.upstream_tls) = match &upstream {
            Connected::Raw(opened) => (
                opened.transport.local_addr().ok(),
                opened
                    .transport
                    .tls()
                    .map(|t| Negotiated::of(t.connection())),
            ),
            // The connection may be shared by other tunnels (HTTP/2): its address is not kept.
            Connected::Tunnel(opened) => (None, opened.negotiated),
        };
    }
    let cells = cluster.config.stats.shard(ctx.id);
    let observer = Observer {
        tcp: stats,
        cluster: cells,
        received: Default::default(),
        sent: Default::default(),
        istio: &istio.series,
    };
    let limits = RelayLimits {
        downstream: listener.buffer_limit,
        upstream: cluster.config.buffer_limit,
        idle_timeout: proxy.idle_timeout,
    };
    let scratch = &ctx.scratch;
    let end = match upstream {
        Connected::Raw(opened) => {
            let end = relay(
                downstream,
                opened.transport,
                &limits,
                scratch,
                &observer,
                drain,
            )
            .await;
            // A tunnel's connection is its pool's to count.
            dec(&cells.upstream_cx_active);
            inc(&cells.upstream_cx_destroy);
            end
        }
        Connected::Tunnel(opened) => {
            relay(downstream, opened.io, &limits, scratch, &observer, drain).await
        }
    };
    drop(host);
    record.bytes_received = observer.received.get();
    record.bytes_sent = observer.sent.get();
    match end {
        RelayEnd::Closed => {}
        RelayEnd::IdleTimeout => {
            inc(&stats.idle_timeout);
            inc(&cells.upstream_cx_destroy_local);
        }
        RelayEnd::UpstreamError => {
            inc(&cells.upstream_cx_destroy_remote);
            record
                .response_flags
                .set(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
        }
        RelayEnd::Drained => inc(&cells.upstream_cx_destroy_local),
        RelayEnd::DownstreamError => {
            inc(&cells.upstream_cx_destroy_local);
            record
                .response_flags
                .set(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        }
    }
}

/// What a connection reaches its host over: its own connection, or a tunnel.
enum Connected {
    Raw(Opened),
    /// Boxed: a tunnel's state is large, and only tunneled connections pay for it.
    Tunnel(Box<OpenedTunnel>),
}

struct Observer<'a> {
    tcp: &'a TcpProxyCells,
    cluster: &'a ClusterCells,
    received: Cell<u64>,
    sent: Cell<u64>,
    istio: &'a [Arc<SeriesCells>],
}

impl RelayObserver for Observer<'_> {
    fn downstream_to_upstream(&self, bytes: usize) {
        add(&self.tcp.downstream_cx_rx_bytes_total, bytes as u64);
        add(&self.cluster.upstream_cx_tx_bytes_total, bytes as u64);
        self.received.set(self.received.get() + bytes as u64);
        self.istio
            .iter()
            .for_each(|s| add(&s.received, bytes as u64));
    }

    fn upstream_to_downstream(&self, bytes: usize) {
        add(&self.tcp.downstream_cx_tx_bytes_total, bytes as u64);
        add(&self.cluster.upstream_cx_rx_bytes_total, bytes as u64);
        self.sent.set(self.sent.get() + bytes as u64);
        self.istio.iter().for_each(|s| add(&s.sent, bytes as u64));
    }
}

/// The chain's `istio.stats` filters and, once opened, the connection's series in each.
struct IstioTcp<'a> {
    configs: Vec<&'a StatsConfig>,
    state: &'a FilterState,
    inbound: bool,
    series: Vec<Arc<SeriesCells>>,
}

impl IstioTcp<'_> {
    /// Counts the connection opened, labelled with its upstream peer, the upstream TLS
    /// connection's principals and the cluster.
    fn open(
        &mut self,
        shard: usize,
        upstream_peer: Option<&Peer>,
        upstream_sans: Option<&UriSans>,
        cluster: Option<(&str, &Metadata)>,
        flags: ResponseFlags,
    ) {
        for config in &self.configs {
            let reporter = Reporter::of(config, self.inbound);
            let (peer_principal, local_principal, mutual_tls) = match reporter {
                Reporter::Client => {
                    let (peer, local) = client_principals(upstream_sans);
                    (peer, local, None)
                }
                Reporter::Server | Reporter::Waypoint => {
                    let peer = self.state.peer_principal.as_deref().unwrap_or("");
                    let local = self.state.local_principal.as_deref().unwrap_or("");
                    (peer, local, Some(!peer.is_empty() && !local.is_empty()))
                }
            };
            let sides = Sides {
                downstream: self.state.downstream_peer.as_deref(),
                upstream: upstream_peer,
                peer_principal,
                local_principal,
                cluster,
                ..Sides::default()
            };
            let series = open_tcp(config, shard, reporter, &sides, flags, mutual_tls);
            self.series.push(series);
        }
    }

    fn close(&self) {
        self.series.iter().for_each(|s| inc(&s.closed));
    }
}
