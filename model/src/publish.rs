//! Publishing: the agent's link to each shard (a crossbeam channel plus a wake-up) and the
//! events shards send back.
use std::sync::Arc;

use crossbeam_channel::Sender;
use tokio::sync::mpsc::UnboundedSender;

use crate::{
    health::{Consecutive, HostCounts, HostVerdicts},
    Snapshot,
};

/// What the agent tells a shard.
#[derive(Debug)]
pub enum ShardCommand {
    /// Run this generation: bind new listeners, drain removed ones, keep the rest.
    Apply(Arc<Snapshot>),
    /// Start draining the connections of listeners (all, or only inbound ones) whose
    /// `drain_type` is DEFAULT, keeping their sockets open: a graceful `/drain_listeners`.
    StartDraining { inbound_only: bool },
    /// Close listening sockets (all, or only inbound ones); connections of `drain_type:
    /// DEFAULT` listeners drain, MODIFY_ONLY ones continue.
    StopListening { inbound_only: bool },
    /// The agent's health verdicts on a cluster's hosts changed (active checks, outlier
    /// ejections): picks go over the hosts they let take traffic.
    HostHealth {
        cluster: String,
        verdicts: Arc<HostVerdicts>,
    },
    /// Send the cluster's outlier-detection counts since the last collection
    /// (`ShardEvent::OutlierCounts`).
    CollectOutlierCounts { cluster: String },
    /// The overload manager's action states changed.
    Overload(crate::overload::ActionStates),
    /// Close every connection and stop the shard.
    Exit,
}

/// What a shard tells the agent.
#[derive(Debug)]
pub enum ShardEvent {
    /// `at`: when the shard finished applying (the agent may read the event later).
    Applied {
        shard: usize,
        generation: u64,
        at: std::time::Instant,
    },
    BindFailed {
        shard: usize,
        generation: u64,
        listener: String,
        error: String,
    },
    /// A generation of a listener (`config_hash`) started draining on this shard with
    /// connections open (`draining`), or its drain ended: its last connection closed, or the
    /// drain time was over and the rest were closed.
    ListenerDraining {
        shard: usize,
        listener: String,
        config_hash: u64,
        draining: bool,
    },
    /// The shard's connections were told to drain (`ShardCommand::StartDraining`).
    DrainStarted {
        shard: usize,
    },
    Exited {
        shard: usize,
    },
    /// A run of consecutive failures of a host reached its outlier-detection threshold.
    OutlierTrip {
        cluster: String,
        address: std::net::SocketAddr,
        kind: Consecutive,
    },
    /// The answer to `ShardCommand::CollectOutlierCounts`: hosts with requests since the last
    /// collection.
    OutlierCounts {
        cluster: String,
        counts: Vec<(std::net::SocketAddr, HostCounts)>,
    },
}

/// Wakes a shard's executor after a command was queued (the shard side lives in `rt/`).
pub trait Wake: Send + Sync {
    fn wake(&self);
}

/// The agent's handle on one shard.
#[derive(Clone)]
pub struct ShardLink {
    pub commands: Sender<ShardCommand>,
    pub waker: Arc<dyn Wake>,
}

impl ShardLink {
    pub fn send(&self, command: ShardCommand) {
        // A closed channel means the shard already exited; nothing is left to tell it.
        if self.commands.send(command).is_ok() {
            self.waker.wake();
        }
    }
}

/// Where shards report to: the agent's event queue (usable from any thread, no runtime needed).
pub type EventSender = UnboundedSender<ShardEvent>;

/// The agent's receiving end of shard events.
pub type EventReceiver = tokio::sync::mpsc::UnboundedReceiver<ShardEvent>;

/// A new shard → agent event queue.
pub fn event_channel() -> (EventSender, EventReceiver) {
    tokio::sync::mpsc::unbounded_channel()
}
