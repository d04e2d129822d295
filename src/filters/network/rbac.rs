//! Network filters: `envoy.filters.network.rbac` — judges a connection once its transport
//! socket is up (Envoy judges on the first bytes read; nothing the rules read changes by then,
//! so the verdict is the same) and closes a denied one once its first bytes are read, after
//! `delay_deny`.
use std::{cell::OnceCell, net::SocketAddr, time::Duration};

use futures_lite::{future, AsyncReadExt};
use model::{
    metadata::DynamicMetadata,
    rbac::{RbacFilter, Subject},
    route::RouteRequest,
    tls_info::{CertificateInfo, DownstreamTls},
};

use super::filter_state::FilterState;
use crate::{net::transport::Transport, rt::timer};

/// How long a denied connection waits for its first bytes before it is closed anyway
/// (Envoy's default idle timeout of tcp_proxy and the connection manager).
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(3600);

/// Whether the connection may go on; why not (the connection termination details) otherwise.
pub fn judge(shard: usize, filter: &RbacFilter, connection: &Connection<'_>) -> Result<(), String> {
    filter
        .check(&filter.rules, shard, connection)
        .verdict
        .map_err(|denied| {
            let details = denied.details();
            tracing::debug!(%details, "rbac: connection denied");
            details
        })
}

/// Ends a denied connection as Envoy does: when its first bytes arrive (read, so the close is
/// not a reset) or the peer closes, then after `delay_deny`.
pub async fn deny(transport: &mut Transport, delay_deny: Duration) {
    let mut first = vec![0; 16 * 1024];
    let read = async {
        let _ = transport.read(&mut first).await;
    };
    future::or(read, timer::sleep(FIRST_BYTES_WAIT)).await;
    if !delay_deny.is_zero() {
        timer::sleep(delay_deny).await;
    }
}

/// A connection as the rules read it.
pub struct Connection<'a> {
    transport: &'a Transport,
    remote: SocketAddr,
    local: SocketAddr,
    server_name: &'a str,
    state: &'a FilterState,
    /// Read from the transport when a rule first asks.
    tls: OnceCell<Option<DownstreamTls>>,
}

impl<'a> Connection<'a> {
    /// `local` is the restored original destination, else the socket's (`fallback` when the
    /// socket cannot say, as for the peer's address).
    pub fn new(
        transport: &'a Transport,
        server_name: &'a str,
        restored: Option<SocketAddr>,
        fallback: SocketAddr,
        state: &'a FilterState,
    ) -> Self {
        Self {
            transport,
            remote: transport.peer_addr().unwrap_or(fallback),
            local: restored.unwrap_or_else(|| transport.local_addr().unwrap_or(fallback)),
            server_name,
            state,
            tls: OnceCell::new(),
        }
    }
}

impl Subject for Connection<'_> {
    fn remote(&self) -> SocketAddr {
        self.remote
    }

    fn local(&self) -> SocketAddr {
        self.local
    }

    fn requested_server_name(&self) -> &str {
        self.server_name
    }

    fn peer_certificate(&self) -> Option<Option<&CertificateInfo>> {
        self.tls
            .get_or_init(|| self.transport.tls().map(|t| t.info()))
            .as_ref()
            .map(DownstreamTls::peer)
    }

    fn filter_state(&self, key: &str) -> Option<&str> {
        self.state.get(key)
    }

    /// No connection filter writes dynamic metadata.
    fn dynamic_metadata(&self) -> &DynamicMetadata {
        static NONE: DynamicMetadata = DynamicMetadata::new();
        &NONE
    }

    fn request(&self) -> Option<&dyn RouteRequest> {
        None
    }
}
