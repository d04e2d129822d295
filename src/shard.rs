//! Shard threads: one executor (and io_uring) per core, pinned, applying the snapshots the agent
//! publishes and acknowledging each generation.
use std::{rc::Rc, sync::Arc, thread::JoinHandle, time::Duration};

use crossbeam_channel::Receiver;
use model::publish::{EventSender, ShardCommand, ShardEvent, ShardLink, Wake};

use crate::{
    access_log::FlusherHandle,
    context::ShardContext,
    net::listener::ListenerSet,
    rt::{
        executor::Executor,
        limits::StartError,
        wake::{self, SocketWaker, WakeReceiver},
    },
};

/// The agent's end of a shard's wake-ups.
struct ShardWaker(SocketWaker);

impl Wake for ShardWaker {
    fn wake(&self) {
        self.0.wake();
    }
}

/// Starts `count` shards pinned round-robin over `cores`; returns the agent's links to them.
/// `drain_time`: how long connections of a modified, removed or drained listener get.
pub fn spawn_all(
    count: usize,
    cores: &[core_affinity::CoreId],
    events: EventSender,
    drain_time: Duration,
    logs: FlusherHandle,
) -> Result<(Vec<ShardLink>, Vec<JoinHandle<()>>), StartError> {
    let mut links = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count);
    for id in 0..count {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (waker, wake_rx) = wake::pair().map_err(|e| StartError::Shard {
            shard: id,
            error: e.to_string(),
        })?;
        let core = cores.get(id % cores.len().max(1)).copied();
        let events = events.clone();
        let logs = logs.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                match Executor::new() {
                    Ok(executor) => {
                        let _ = started_tx.send(Ok(()));
                        let listeners = ListenerSet::new(id, drain_time, events.clone());
                        let ctx = ShardContext::new(id, count, logs, events.clone());
                        executor.run(run(ctx, listeners, rx, wake_rx, events));
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                    }
                }
            })
            .map_err(|e| StartError::Shard {
                shard: id,
                error: e.to_string(),
            })?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(StartError::Shard { shard: id, error }),
            Err(_) => {
                return Err(StartError::Shard {
                    shard: id,
                    error: "shard thread died".into(),
                })
            }
        }
        links.push(ShardLink {
            commands: tx,
            waker: std::sync::Arc::new(ShardWaker(waker)),
        });
        threads.push(thread);
    }
    Ok((links, threads))
}

/// A shard's main loop: wait for a wake-up, run every queued command, repeat.
async fn run(
    ctx: ShardContext,
    mut listeners: ListenerSet,
    commands: Receiver<ShardCommand>,
    wake: WakeReceiver,
    events: EventSender,
) {
    let ctx = Rc::new(ctx);
    let mut wake = wake.attach();
    loop {
        while let Ok(command) = commands.try_recv() {
            match command {
                ShardCommand::Apply(snapshot) => apply(&ctx, &mut listeners, snapshot, &events),
                ShardCommand::StartDraining { inbound_only } => {
                    listeners.start_draining(inbound_only);
                    let _ = events.send(ShardEvent::DrainStarted { shard: ctx.id });
                }
                ShardCommand::StopListening { inbound_only } => listeners.stop(inbound_only),
                ShardCommand::HostHealth { cluster, verdicts } => {
                    ctx.clusters.borrow_mut().set_verdicts(cluster, verdicts)
                }
                ShardCommand::CollectOutlierCounts { cluster } => {
                    let counts = ctx.clusters.borrow().take_counts(&cluster);
                    let _ = events.send(ShardEvent::OutlierCounts { cluster, counts });
                }
                ShardCommand::Overload(states) => ctx.overload.set(states),
                ShardCommand::Exit => {
                    let _ = events.send(ShardEvent::Exited { shard: ctx.id });
                    return;
                }
            }
        }
        if wake.wait().await.is_err() {
            return; // the agent is gone
        }
    }
}

fn apply(
    ctx: &Rc<ShardContext>,
    listeners: &mut ListenerSet,
    snapshot: Arc<model::Snapshot>,
    events: &EventSender,
) {
    let generation = snapshot.generation;
    ctx.clusters.borrow_mut().apply(&snapshot);
    ctx.routes.apply(&snapshot);
    ctx.internal_buffer.set(snapshot.internal_buffer);
    ctx.logs.set_stats(snapshot.log_stats.clone());
    *ctx.connection_limit.borrow_mut() = snapshot.connection_limit.clone();
    for (listener, error) in listeners.apply(ctx, &snapshot) {
        let _ = events.send(ShardEvent::BindFailed {
            shard: ctx.id,
            generation,
            listener,
            error,
        });
    }
    let _ = events.send(ShardEvent::Applied {
        shard: ctx.id,
        generation,
        at: std::time::Instant::now(),
    });
}
