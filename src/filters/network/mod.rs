//! Network (L4) filters: the filters a chain runs before its terminal one, and the terminal
//! filter itself.
pub mod connection_limit;
mod ext_authz;
pub mod filter_state;
pub mod http_connection_manager;
mod istio_authn;
mod rbac;
pub mod tcp_proxy;

use std::net::SocketAddr;

use model::ConnectionFilter;

use crate::{context::ShardContext, filters::istio::exchange, net::transport::Transport};
use filter_state::FilterState;

/// Runs a chain's `filters` (those before its terminal one) on a connection whose transport
/// socket is up (`server_name`: its SNI; `restored`: its original destination; `fallback`:
/// the address to report when the socket cannot say its own). What they learn goes into the
/// filter state (which starts as `state`) it returns; `None` when one of them closes the
/// connection, and the state's `denied` when one of them ended it (for the terminal filter to
/// log).
pub async fn run_connection_filters(
    ctx: &ShardContext,
    mut state: FilterState,
    filters: &[ConnectionFilter],
    transport: &mut Transport,
    server_name: &str,
    restored: Option<SocketAddr>,
    fallback: SocketAddr,
) -> Option<FilterState> {
    for filter in filters {
        match filter {
            ConnectionFilter::IstioAuthn { shared } => {
                istio_authn::run(transport, &mut state);
                state.shares_principals |= shared;
            }
            // Recorded by tcp_proxy, which sees the connection's upstream and end.
            ConnectionFilter::IstioStats(_) => {}
            ConnectionFilter::MetadataExchange(config) => {
                match exchange::exchange(transport, config).await {
                    Ok(peer) => state.downstream_peer = peer,
                    Err(e) => {
                        tracing::debug!("metadata exchange with the downstream failed: {e}");
                        return None;
                    }
                }
            }
            ConnectionFilter::Rbac { filter, delay_deny } => {
                let verdict = {
                    let connection =
                        rbac::Connection::new(transport, server_name, restored, fallback, &state);
                    rbac::judge(ctx.id, filter, &connection)
                };
                if let Err(details) = verdict {
                    rbac::deny(transport, *delay_deny).await;
                    state.denied = Some(details.into());
                    return Some(state);
                }
            }
            // Counted when the chain was picked (`connection_limit::admit`).
            ConnectionFilter::ConnectionLimit(_) => {}
            ConnectionFilter::ExtAuthz(filter) => {
                let allowed =
                    ext_authz::allowed(ctx, filter, transport, server_name, restored, fallback);
                if !allowed.await {
                    rbac::deny(transport, std::time::Duration::ZERO).await;
                    return None;
                }
            }
        }
    }
    Some(state)
}
