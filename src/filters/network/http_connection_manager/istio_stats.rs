//! HTTP connection manager: Istio's standard metrics of an exchange that ended, once for each
//! `istio.stats` filter in the chain.
use model::{filters::HttpFilterKind, istio::StatsConfig};

use super::{stream::Exchange, Connection};
use crate::{
    filters::istio::stats::{client_principals, record_http, HttpOutcome, Reporter, Sides},
    stream::{grpc, headers::RequestHead},
};

pub fn record(c: &Connection<'_>, request: &RequestHead, exchange: &Exchange) {
    for filter in &c.hcm.filters {
        if let HttpFilterKind::IstioStats(config) = &filter.kind {
            record_one(c, config, request, exchange);
        }
    }
}

fn record_one(c: &Connection<'_>, config: &StatsConfig, request: &RequestHead, ex: &Exchange) {
    let reporter = Reporter::of(config, c.listener.inbound);
    let state = c.filter_state;
    let (peer_principal, local_principal, mutual_tls) = match reporter {
        Reporter::Client => {
            let (peer, local) = client_principals(ex.upstream_sans.as_deref());
            (peer, local, None)
        }
        Reporter::Server | Reporter::Waypoint => {
            let (mut peer, mut local) = (
                state.peer_principal.as_deref().unwrap_or(""),
                state.local_principal.as_deref().unwrap_or(""),
            );
            // Without istio_authn, the downstream certificates' first URI SANs.
            if let (true, Some(tls)) = (peer.is_empty() && local.is_empty(), c.tls()) {
                peer = tls
                    .peer()
                    .and_then(|p| p.sans.uri.first())
                    .map_or("", |s| s);
                local = tls
                    .local
                    .as_deref()
                    .and_then(|l| l.sans.uri.first())
                    .map_or("", |s| s);
            }
            (peer, local, Some(!peer.is_empty() && !local.is_empty()))
        }
    };
    let cluster = ex.cluster.as_ref().map(|cluster| {
        let config = &cluster.config;
        (config.name.as_str(), &config.metadata)
    });
    let sides = Sides {
        downstream: ex
            .downstream_peer
            .as_deref()
            .or(state.downstream_peer.as_deref()),
        upstream: ex.upstream_peer.as_deref(),
        peer_principal,
        local_principal,
        host: std::str::from_utf8(request.authority()).unwrap_or(""),
        route_name: ex.route_name.as_deref().unwrap_or(""),
        cluster,
    };
    let is_grpc = grpc::is_grpc(request);
    let grpc_status = ex
        .grpc_status
        .or_else(|| ex.response.as_ref().and_then(grpc::status_of))
        .or_else(|| is_grpc.then(|| grpc::status_for(ex.status)));
    let outcome = HttpOutcome {
        grpc: is_grpc,
        status: ex.status,
        grpc_status,
        flags: ex.flags,
        mutual_tls,
        duration_ms: ex.started.elapsed().as_millis() as u64,
        request_bytes: ex.bytes_received,
        response_bytes: ex.bytes_sent,
    };
    record_http(config, c.ctx.id, reporter, &sides, &outcome);
}
