//! A downstream connection: counts it, picks its filter chain, hands it to the chain's
//! terminal filter. The listener config is pinned here for the connection's life.
use std::{rc::Rc, sync::Arc};

use xds_agent::{
    model::{Listener, NetworkFilter},
    stats::{dec, inc},
};

use crate::{
    context::ShardContext,
    filters::network::{http_connection_manager, tcp_proxy},
    rt::net::TcpStream,
};

pub async fn serve(ctx: Rc<ShardContext>, listener: Arc<Listener>, stream: TcpStream) {
    let stats = listener.stats.shard(ctx.id);
    inc(&stats.downstream_cx_total);
    inc(&stats.downstream_cx_active);
    let _ = stream.set_nodelay(true);
    match listener.filter_chains.first() {
        Some(chain) => match &chain.network {
            NetworkFilter::TcpProxy(proxy) => tcp_proxy::run(&ctx, &listener, proxy, stream).await,
            NetworkFilter::HttpConnectionManager(hcm) => {
                http_connection_manager::run(&ctx, &listener, hcm, stream).await
            }
        },
        None => inc(&stats.no_filter_chain_match),
    }
    dec(&stats.downstream_cx_active);
    inc(&stats.downstream_cx_destroy);
}
