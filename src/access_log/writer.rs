//! Access-log writers on a shard. Each line is rendered into its log's pending batch; batches
//! go to the process's flusher thread at the end of the loop turn that wrote them (or at once
//! past `FLUSH_BYTES`) over a bounded channel. A shard never writes a log itself: when the
//! flusher is behind (a slow pipe, a full disk), a batch that does not fit is dropped and its
//! lines counted (`filesystem.write_dropped`), and traffic goes on.
use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::Arc,
};

use futures_lite::future;
use model::{
    access_log::{AccessLog, ConnectionRecord},
    stats::{add, FilesystemStats},
};

use super::flusher::{Batch, FlusherHandle};
use crate::rt;

/// A log's pending bytes are handed over at once past this size.
const FLUSH_BYTES: usize = 64 * 1024;

pub struct LogWriters(Rc<Writers>);

struct Writers {
    shard: usize,
    flusher: FlusherHandle,
    /// Per log (by identity): its lines not handed over yet.
    pending: RefCell<Vec<Pending>>,
    /// A hand-over is scheduled for the end of this loop turn.
    scheduled: Cell<bool>,
    stats: RefCell<Option<Arc<FilesystemStats>>>,
}

struct Pending {
    log: Arc<AccessLog>,
    bytes: Vec<u8>,
    lines: u64,
}

impl LogWriters {
    pub fn new(shard: usize, flusher: FlusherHandle) -> Self {
        Self(Rc::new(Writers {
            shard,
            flusher,
            pending: RefCell::default(),
            scheduled: Cell::new(false),
            stats: RefCell::default(),
        }))
    }

    /// Where the lines handed over and dropped are counted (the snapshot's).
    pub fn set_stats(&self, stats: Option<Arc<FilesystemStats>>) {
        *self.0.stats.borrow_mut() = stats;
    }

    /// Renders one line per log that logs `record` into its pending batch.
    pub fn write(&self, logs: &[Arc<AccessLog>], record: &ConnectionRecord) {
        let writers = &self.0;
        for log in logs.iter().filter(|log| log.logs(record)) {
            let full = {
                let mut pending = writers.pending.borrow_mut();
                let at = match pending.iter().position(|p| Arc::ptr_eq(&p.log, log)) {
                    Some(at) => at,
                    None => {
                        pending.push(Pending {
                            log: log.clone(),
                            bytes: Vec::new(),
                            lines: 0,
                        });
                        pending.len() - 1
                    }
                };
                let batch = &mut pending[at];
                log.render(record, &mut batch.bytes);
                batch.lines += 1;
                batch.bytes.len() >= FLUSH_BYTES
            };
            if full {
                writers.hand_over();
            }
        }
        if !writers.scheduled.replace(true) {
            let writers = writers.clone();
            rt::spawn_local(async move {
                // After the tasks already queued: their lines join this batch.
                future::yield_now().await;
                writers.scheduled.set(false);
                writers.hand_over();
            })
            .detach();
        }
    }
}

impl Writers {
    /// Hands every pending batch to the flusher; one that does not fit is dropped (counted).
    fn hand_over(&self) {
        let batches = std::mem::take(&mut *self.pending.borrow_mut());
        let stats = self.stats.borrow();
        let cells = stats.as_ref().map(|s| s.shard(self.shard));
        for Pending { log, bytes, lines } in batches {
            if bytes.is_empty() {
                continue;
            }
            let sink = log.sink.clone();
            let counted = match self.flusher.send(Batch { sink, bytes, lines }) {
                true => cells.map(|c| &c.write_buffered),
                false => cells.map(|c| &c.write_dropped),
            };
            if let Some(counter) = counted {
                add(counter, lines);
            }
        }
    }
}
