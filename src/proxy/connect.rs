//! Upstream connects for L4 proxying: pick a host, connect within `connect_timeout`, retry
//! with a fresh pick up to the attempt limit, counting every outcome in the cluster's stats.
use std::{io, rc::Rc};

use glommio::net::TcpStream;
use xds_agent::{access_log::ResponseFlags, stats::inc};

use super::cluster_manager::{ActiveHost, ShardCluster};
use crate::context::ShardContext;

/// Connects to a host of `cluster`; on failure returns the response flag to log.
pub async fn connect_upstream(
    ctx: &ShardContext,
    cluster: &Rc<ShardCluster>,
    attempts: u32,
) -> Result<(TcpStream, ActiveHost), ResponseFlags> {
    let stats = cluster.config.stats.shard(ctx.id);
    for _ in 0..attempts.max(1) {
        let Some(host) = cluster.pick() else {
            inc(&stats.upstream_cx_none_healthy);
            return Err(ResponseFlags::NO_HEALTHY_UPSTREAM);
        };
        inc(&stats.upstream_cx_total);
        let active = ActiveHost::new(host);
        match TcpStream::connect_timeout(active.address(), cluster.config.connect_timeout).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                inc(&stats.upstream_cx_active);
                return Ok((stream, active));
            }
            Err(e) => {
                let timed_out = io::Error::from(e).kind() == io::ErrorKind::TimedOut;
                if timed_out {
                    inc(&stats.upstream_cx_connect_timeout);
                }
                inc(&stats.upstream_cx_connect_fail);
                tracing::debug!(cluster = %cluster.config.name, host = %active.address(), timed_out, "upstream connect failed");
            }
        }
    }
    inc(&stats.upstream_cx_connect_attempts_exceeded);
    Err(ResponseFlags::UPSTREAM_CONNECTION_FAILURE)
}
