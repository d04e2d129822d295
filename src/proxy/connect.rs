//! Upstream connects: a transport to one host (TCP, then TLS when the cluster has a transport
//! socket, both within `connect_timeout` as in Envoy), and for L4 proxying the host pick with
//! retries up to the attempt limit (whatever an attempt opens: a connection, or a tunnel),
//! counting every outcome in the cluster's stats.
use std::{io, net::SocketAddr, rc::Rc, sync::Arc};

use futures_lite::future;
use model::{
    access_log::ResponseFlags,
    filters::Alpn,
    health::Outcome,
    metadata::Metadata,
    stats::{inc, HandshakeFailure},
    tls::classify_failure,
    Cluster, Endpoint, InternalEndpoint, MetadataSource,
};

use rustls::ClientConfig;

use super::{
    cluster_manager::{ActiveHost, ShardCluster},
    open_as::OpenAs,
};
use crate::{
    context::ShardContext,
    filters::{
        istio::{exchange, peer::Peer},
        network::filter_state::SharedState,
    },
    net::{
        internal::Passage,
        tls::{self, HandshakeError},
        transport::Transport,
    },
    rt::{net::TcpStream, timer},
};

/// Why no transport to a host was opened.
#[derive(Debug)]
pub enum OpenError {
    TimedOut,
    Connect(io::Error),
    Tls(HandshakeError),
    /// The cluster's TLS context still waits for its SDS secrets.
    SecretsNotReady,
    /// Istio's metadata exchange failed.
    Exchange(io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::TimedOut => f.write_str("connect timeout"),
            OpenError::Connect(e) => write!(f, "connect failed: {e}"),
            OpenError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            OpenError::SecretsNotReady => f.write_str("TLS context has no secrets yet"),
            OpenError::Exchange(e) => write!(f, "metadata exchange failed: {e}"),
        }
    }
}

/// A transport to a host, and the host's workload when Istio's metadata exchange ran on it.
pub struct Opened {
    pub transport: Transport,
    pub peer: Option<Rc<Peer>>,
}

/// Opens a transport to `endpoint`: TCP (no delay), then the TLS handshake of the transport
/// socket the cluster gives that endpoint (with `as_`'s SNI and ALPN in place of the
/// configured ones), then the cluster's metadata exchange when TLS negotiated its protocol, all
/// within the cluster's connect timeout. Counts TLS outcomes in `cluster.<name>.ssl.*`.
pub async fn open(
    ctx: &ShardContext,
    cluster: &Cluster,
    endpoint: &Endpoint,
    as_: OpenAs<'_>,
) -> Result<Opened, OpenError> {
    if let Some(internal) = &endpoint.internal {
        return open_internal(ctx, cluster, endpoint, internal, as_.shared);
    }
    let address = endpoint.address;
    // The config new connections take, fixed before connecting (a rotation meanwhile applies
    // to the next connection).
    let tls = match cluster.tls_for(endpoint) {
        None => None,
        Some(tls) => match tls.configs() {
            Some(configs) => {
                let presented = configs.listed.chain.first().map(|c| c.info.clone());
                Some((tls, with_alpn(configs.config.clone(), as_.alpn), presented))
            }
            None => {
                inc(&tls
                    .factory_stats
                    .shard(ctx.id)
                    .upstream_context_secrets_not_ready);
                return Err(OpenError::SecretsNotReady);
            }
        },
    };
    let attempt = async {
        let stream =
            TcpStream::connect_from(cluster.source_address, address, cluster.connect_timeout)
                .await
                .map_err(|e| match e.kind() {
                    io::ErrorKind::TimedOut => OpenError::TimedOut,
                    _ => OpenError::Connect(e),
                })?;
        let _ = stream.set_nodelay(true);
        let Some((tls, config, presented)) = tls else {
            return Ok(Opened {
                transport: Transport::Raw(stream),
                peer: None,
            });
        };
        let cells = tls.stats.shard(ctx.id);
        match tls::connect(stream, tls, config, presented, as_.sni, address).await {
            Ok(stream) => {
                let (version, cipher, curve) = model::tls::negotiated(stream.connection());
                let resumed =
                    stream.connection().handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                cells.handshake(version, cipher, curve, resumed);
                let mut transport = Transport::from(stream);
                let peer = match &cluster.metadata_exchange {
                    None => None,
                    Some(exchange) => exchange::exchange(&mut transport, exchange)
                        .await
                        .map_err(OpenError::Exchange)?,
                };
                Ok(Opened { transport, peer })
            }
            Err(e) => {
                cells.failure(match &e {
                    HandshakeError::Tls(e) => classify_failure(e),
                    HandshakeError::Io(_) => HandshakeFailure::Connection,
                });
                tracing::debug!(cluster = %cluster.name, host = %address, "upstream TLS handshake failed: {e}");
                Err(OpenError::Tls(e))
            }
        }
    };
    // The TCP connect has its own timer; this one bounds the handshake as well.
    let expired = async {
        timer::sleep(cluster.connect_timeout).await;
        Err(OpenError::TimedOut)
    };
    future::or(attempt, expired).await
}

/// Opens an in-process connection to the internal listener `internal` names, carrying the
/// metadata the cluster passes through and the opener's shared filter state. A cluster's TLS
/// does not apply (the translator allows only a plaintext socket in `internal_upstream`; a TLS
/// cluster's internal endpoint is refused here).
fn open_internal(
    ctx: &ShardContext,
    cluster: &Cluster,
    endpoint: &Endpoint,
    internal: &InternalEndpoint,
    shared: Option<&SharedState>,
) -> Result<Opened, OpenError> {
    if cluster.tls_for(endpoint).is_some() {
        let refused = io::Error::other("TLS to an internal listener is not supported");
        return Err(OpenError::Connect(refused));
    }
    let metadata = cluster
        .passthrough_metadata
        .iter()
        .filter_map(|p| {
            let source = match p.source {
                MetadataSource::Host => &internal.metadata,
                MetadataSource::Cluster => &cluster.metadata,
            };
            Some((p.namespace.clone(), source.get(&p.namespace, &[])?.clone()))
        })
        .collect();
    let passage = Passage {
        metadata: Metadata::new(metadata),
        shared: shared.cloned().unwrap_or_default(),
    };
    let buffer = ctx.internal_buffer.get();
    let stream = ctx
        .internal
        .connect(&internal.listener, buffer, passage)
        .map_err(OpenError::Connect)?;
    Ok(Opened {
        transport: Transport::Internal(stream),
        peer: None,
    })
}

/// `config` offering `alpn` instead of its own list (a copy, for the connection about to
/// open).
fn with_alpn(config: Arc<ClientConfig>, alpn: Option<&Alpn>) -> Arc<ClientConfig> {
    match alpn {
        None => config,
        Some(alpn) => {
            let mut config = (*config).clone();
            config.alpn_protocols = alpn.to_vec();
            Arc::new(config)
        }
    }
}

/// Why no upstream connection was made: the flag to log, and the last host tried (Envoy
/// logs it as `%UPSTREAM_HOST%` even when the connect failed).
pub struct ConnectFailure {
    pub flag: ResponseFlags,
    pub last_host: Option<SocketAddr>,
}

/// Where a connection goes: a host of `cluster` (of an `ORIGINAL_DST` one: `destination`'s;
/// of a consistent-hash one: `hash`'s), tried up to `attempts` times.
pub struct Target<'a> {
    pub cluster: &'a Rc<ShardCluster>,
    pub attempts: u32,
    pub destination: Option<SocketAddr>,
    pub hash: Option<u64>,
}

/// Connects to a host of the target, sharing `shared` with it.
pub async fn connect_upstream(
    ctx: &ShardContext,
    target: Target<'_>,
    shared: &SharedState,
) -> Result<(Opened, ActiveHost), ConnectFailure> {
    let cluster = target.cluster;
    let stats = cluster.config.stats.shard(ctx.id);
    let attempt = async |active: &ActiveHost| {
        inc(&stats.upstream_cx_total);
        let endpoint = &active.host().endpoint;
        let as_ = OpenAs {
            shared: Some(shared),
            ..OpenAs::default()
        };
        match open(ctx, &cluster.config, endpoint, as_).await {
            Ok(stream) => {
                inc(&stats.upstream_cx_active);
                cluster.report(active.host(), Outcome::Connected);
                Some(stream)
            }
            Err(e) => {
                let outcome = match e {
                    OpenError::TimedOut => {
                        inc(&stats.upstream_cx_connect_timeout);
                        Outcome::Timeout
                    }
                    _ => Outcome::ConnectFailed,
                };
                cluster.report(active.host(), outcome);
                inc(&stats.upstream_cx_connect_fail);
                tracing::debug!(cluster = %cluster.config.name, host = %active.address(), "upstream connect failed: {e}");
                None
            }
        }
    };
    try_hosts(ctx, target, attempt).await
}

/// Picks a host of the target and runs `attempt` on it, up to the target's `attempts` times,
/// until one succeeds (`attempt` counts its own failures).
pub async fn try_hosts<T>(
    ctx: &ShardContext,
    target: Target<'_>,
    mut attempt: impl AsyncFnMut(&ActiveHost) -> Option<T>,
) -> Result<(T, ActiveHost), ConnectFailure> {
    let cluster = target.cluster;
    let stats = cluster.config.stats.shard(ctx.id);
    let mut last_host = None;
    for _ in 0..target.attempts.max(1) {
        // tcp_proxy's `metadata_match` is refused by the translator: no subset criteria.
        let Some(host) = cluster.pick_for(target.destination, target.hash, None) else {
            inc(&stats.upstream_cx_none_healthy);
            return Err(ConnectFailure {
                flag: ResponseFlags::NO_HEALTHY_UPSTREAM,
                last_host,
            });
        };
        let active = ActiveHost::new(host);
        last_host = Some(active.address());
        if let Some(opened) = attempt(&active).await {
            return Ok((opened, active));
        }
    }
    inc(&stats.upstream_cx_connect_attempts_exceeded);
    // Envoy flags the attempts running out as well (it logs `UF,URX`).
    let mut flag = ResponseFlags::UPSTREAM_CONNECTION_FAILURE;
    flag.set(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
    Err(ConnectFailure { flag, last_host })
}
