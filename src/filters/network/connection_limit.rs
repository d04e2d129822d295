//! Network filter `envoy.filters.network.connection_limit`: counts the connections its chain
//! takes, in one count shared by every shard, and closes one past `max_connections`, as
//! Envoy's `onNewConnection` does: when the chain is picked, before the transport socket, and
//! after `delay`, with no byte read or written.
use std::sync::atomic::AtomicU64;

use model::{
    connection_limit::ConnectionSlot,
    stats::{dec, inc},
    ConnectionFilter,
};

use crate::{context::ShardContext, rt::timer};

/// A connection counted by one filter (its slot and its `active_connections`), until dropped.
pub struct Counted<'a> {
    _slot: ConnectionSlot,
    active: &'a AtomicU64,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        dec(self.active);
    }
}

/// Counts a new connection in each enabled connection_limit filter of `filters`, in order:
/// what keeps it counted while it is open, or `None` (once the refusing filter's `delay` has
/// passed) when one of them is past its limit — counted in its `limited_connections`, the
/// connection is to be closed. As in Envoy, a refused connection counts until it closes.
pub async fn admit<'a>(
    ctx: &ShardContext,
    filters: &'a [ConnectionFilter],
) -> Option<Vec<Counted<'a>>> {
    let mut counted = Vec::new();
    for filter in filters {
        let ConnectionFilter::ConnectionLimit(filter) = filter else {
            continue;
        };
        if !filter.enabled {
            continue;
        }
        let cells = filter.stats.shard(ctx.id);
        inc(&cells.active_connections);
        let (slot, within) = filter.limit.count();
        counted.push(Counted {
            _slot: slot,
            active: &cells.active_connections,
        });
        if !within {
            inc(&cells.limited_connections);
            tracing::debug!(
                max = filter.limit.max,
                delay = ?filter.delay,
                "connection_limit: connection over the limit closed"
            );
            if !filter.delay.is_zero() {
                timer::sleep(filter.delay).await;
            }
            return None;
        }
    }
    Some(counted)
}
