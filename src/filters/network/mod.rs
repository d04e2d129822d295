//! Network (L4) filters: the filters a chain runs before its terminal one, and the terminal
//! filter itself.
pub mod filter_state;
pub mod http_connection_manager;
mod istio_authn;
pub mod tcp_proxy;

use model::ConnectionFilter;

use crate::{filters::istio::exchange, net::transport::Transport};
use filter_state::FilterState;

/// Runs a chain's `filters` (those before its terminal one) on a connection whose transport
/// socket is up; what they learn goes into the returned filter state. `None`: a filter
/// closed the connection.
pub async fn run_connection_filters(
    filters: &[ConnectionFilter],
    transport: &mut Transport,
) -> Option<FilterState> {
    let mut state = FilterState::default();
    for filter in filters {
        match filter {
            ConnectionFilter::IstioAuthn => istio_authn::run(transport, &mut state),
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
        }
    }
    Some(state)
}
