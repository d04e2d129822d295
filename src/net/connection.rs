//! NET/IO layer: a downstream connection: counts it, picks its filter chain, hands it to the
//! chain's terminal filter. The listener generation (config and drain signal) is pinned here
//! for the connection's life.
use xds_agent::{
    model::NetworkFilter,
    stats::{dec, inc},
};

use std::rc::Rc;

use crate::{
    context::ShardContext,
    filters::network::{http_connection_manager, tcp_proxy},
    net::listener::OpenConnection,
    rt::net::TcpStream,
};

pub async fn serve(ctx: Rc<ShardContext>, open: OpenConnection, stream: TcpStream) {
    let generation = open.generation();
    let listener = &generation.config;
    let drain = &generation.drain;
    let stats = listener.stats.shard(ctx.id);
    inc(&stats.downstream_cx_total);
    inc(&stats.downstream_cx_active);
    let _ = stream.set_nodelay(true);
    match listener.filter_chains.first() {
        Some(chain) => match &chain.network {
            NetworkFilter::TcpProxy(proxy) => {
                tcp_proxy::run(&ctx, listener, drain, proxy, stream).await
            }
            NetworkFilter::HttpConnectionManager(hcm) => {
                http_connection_manager::run(&ctx, listener, drain, hcm, stream).await
            }
        },
        None => inc(&stats.no_filter_chain_match),
    }
    dec(&stats.downstream_cx_active);
    inc(&stats.downstream_cx_destroy);
}
