//! Upstream connects for L4 proxying: pick a host, connect within `connect_timeout`, retry
//! with a fresh pick up to the attempt limit, counting every outcome in the cluster's stats.
use std::{io, net::SocketAddr, rc::Rc};

use xds_agent::{access_log::ResponseFlags, stats::inc};

use super::cluster_manager::{ActiveHost, ShardCluster};
use crate::{context::ShardContext, rt::net::TcpStream};

/// Why no upstream connection was made: the flag to log, and the last host tried (Envoy
/// logs it as `%UPSTREAM_HOST%` even when the connect failed).
pub struct ConnectFailure {
    pub flag: ResponseFlags,
    pub last_host: Option<SocketAddr>,
}

/// Connects to a host of `cluster`.
pub async fn connect_upstream(
    ctx: &ShardContext,
    cluster: &Rc<ShardCluster>,
    attempts: u32,
) -> Result<(TcpStream, ActiveHost), ConnectFailure> {
    let stats = cluster.config.stats.shard(ctx.id);
    let mut last_host = None;
    for _ in 0..attempts.max(1) {
        let Some(host) = cluster.pick() else {
            inc(&stats.upstream_cx_none_healthy);
            return Err(ConnectFailure {
                flag: ResponseFlags::NO_HEALTHY_UPSTREAM,
                last_host,
            });
        };
        inc(&stats.upstream_cx_total);
        let active = ActiveHost::new(host);
        last_host = Some(active.address());
        match TcpStream::connect_timeout(active.address(), cluster.config.connect_timeout).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                inc(&stats.upstream_cx_active);
                return Ok((stream, active));
            }
            Err(e) => {
                let timed_out = e.kind() == io::ErrorKind::TimedOut;
                if timed_out {
                    inc(&stats.upstream_cx_connect_timeout);
                }
                inc(&stats.upstream_cx_connect_fail);
                tracing::debug!(cluster = %cluster.config.name, host = %active.address(), timed_out, "upstream connect failed");
            }
        }
    }
    inc(&stats.upstream_cx_connect_attempts_exceeded);
    Err(ConnectFailure {
        flag: ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
        last_host,
    })
}
