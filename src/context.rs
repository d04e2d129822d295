//! Shard context: what every connection on a shard shares (shard id, clusters, log writers).
use std::{
    cell::{Cell, RefCell},
    sync::Arc,
};

use model::{
    connection_limit::{ConnectionLimit, ConnectionSlot},
    publish::EventSender,
    Listener,
};

use crate::{
    access_log::{FlusherHandle, LogWriters},
    filters::network::http_connection_manager::RdsTables,
    net::{internal::InternalListeners, relay::SCRATCH_BYTES},
    overload::ShardOverload,
    proxy::cluster_manager::{ClusterManager, Place},
    stream::date::DateCache,
    tracing::Reporter,
};

pub struct ShardContext {
    pub id: usize,
    pub shards: usize,
    pub clusters: RefCell<ClusterManager>,
    /// RDS route tables (swapped by each snapshot).
    pub routes: RdsTables,
    pub logs: LogWriters,
    /// Finished spans waiting to be reported to their Zipkin collector.
    pub reporter: Reporter,
    /// The `date` response header, reformatted once a second.
    pub date: DateCache,
    /// Where every relay on the shard reads into (see `net::relay`).
    pub scratch: RefCell<Box<[u8]>>,
    /// The internal listeners accepting on this shard.
    pub internal: InternalListeners,
    /// Bytes an in-process connection buffers per direction (the snapshot's).
    pub internal_buffer: Cell<usize>,
    /// The global downstream connection limit (the snapshot's).
    pub connection_limit: RefCell<Option<Arc<ConnectionLimit>>>,
    /// The overload manager's action states.
    pub overload: ShardOverload,
    next_connection: Cell<u64>,
}

impl ShardContext {
    pub fn new(id: usize, shards: usize, logs: FlusherHandle, events: EventSender) -> Self {
        let place = Place {
            shard: id,
            shards,
            events: Some(events),
        };
        Self {
            id,
            shards,
            clusters: RefCell::new(ClusterManager::new(place)),
            routes: RdsTables::default(),
            logs: LogWriters::new(id, logs),
            reporter: Reporter::default(),
            date: DateCache::default(),
            scratch: RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice()),
            internal: InternalListeners::default(),
            internal_buffer: Cell::new(model::DEFAULT_INTERNAL_BUFFER),
            connection_limit: RefCell::default(),
            overload: ShardOverload::default(),
            next_connection: Cell::new(0),
        }
    }

    /// Counts a connection `listener` accepted against the global limit: `Ok(None)` when no
    /// limit applies, `Err(())` when the limit is reached (the connection is refused).
    pub fn connection_slot(&self, listener: &Listener) -> Result<Option<ConnectionSlot>, ()> {
        match &*self.connection_limit.borrow() {
            Some(limit) if !listener.ignores_connection_limit => limit.open().map(Some).ok_or(()),
            _ => Ok(None),
        }
    }

    /// A process-wide unique connection id (ids are interleaved across shards).
    pub fn connection_id(&self) -> u64 {
        let n = self.next_connection.get();
        self.next_connection.set(n + 1);
        n * self.shards as u64 + self.id as u64
    }
}
