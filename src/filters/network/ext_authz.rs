//! Network filters: `envoy.filters.network.ext_authz` — one check of the connection (its
//! peers, their principals and certificate, the SNI) by the authorization service before the
//! terminal filter runs; a denied connection, or a failed check unless `failure_mode_allow`,
//! is closed once its first bytes are read, as Envoy closes it on its first data. Envoy calls
//! when the first bytes arrive; the call goes out as the connection is up here (a client that
//! never sends is checked here, never there).
use std::net::SocketAddr;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use model::{
    ext_authz::NetworkExtAuthz,
    stats::{dec, inc},
};

use crate::{
    context::ShardContext,
    filters::ext_authz::{
        attributes::{connection_attributes, Connection, Include},
        client::check,
        verdict::Verdict,
    },
    net::transport::Transport,
};

/// Whether the connection may go on (counted in the filter's stats).
pub async fn allowed(
    ctx: &ShardContext,
    filter: &NetworkExtAuthz,
    transport: &Transport,
    server_name: &str,
    restored: Option<SocketAddr>,
    fallback: SocketAddr,
) -> bool {
    let tls = transport.tls().map(|t| t.info());
    let connection = Connection {
        remote: transport.peer_addr().unwrap_or(fallback),
        local: restored.unwrap_or_else(|| transport.local_addr().unwrap_or(fallback)),
        server_name,
        tls: tls.as_ref(),
    };
    let include = Include {
        peer_certificate: filter.include_peer_certificate,
        tls_session: filter.include_tls_session,
    };
    let request = CheckRequest {
        attributes: Some(connection_attributes(&connection, include)),
    };
    let cells = filter.stats.shard(ctx.id);
    inc(&cells.total);
    inc(&cells.active);
    let verdict = check(ctx, &filter.service, &request).await;
    dec(&cells.active);
    let allowed = match verdict {
        Verdict::Allowed(_) => {
            inc(&cells.ok);
            true
        }
        Verdict::Denied(_) => {
            inc(&cells.denied);
            false
        }
        Verdict::Error => {
            inc(&cells.error);
            if filter.failure_mode_allow {
                inc(&cells.failure_mode_allowed);
            }
            filter.failure_mode_allow
        }
    };
    if !allowed {
        inc(&cells.cx_closed);
    }
    allowed
}
