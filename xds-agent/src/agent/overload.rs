//! The overload manager on the agent: every `refresh_interval` it reads the resource monitors,
//! turns their pressure into action states through the triggers, keeps Envoy's
//! `overload.*` gauges, and sends the states to every shard when one changes (shards act on
//! them without locks; see `model::overload`). `shrink_heap` runs here.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use model::{
    overload::{ActionKind, ActionStates, MonitorKind, OverloadConfig},
    publish::{ShardCommand, ShardLink},
    stats::{inc, set},
    Snapshot,
};

/// How often a saturated `shrink_heap` hands free heap pages back (Envoy's timer).
const SHRINK_HEAP_INTERVAL: Duration = Duration::from_secs(10);

pub(super) struct OverloadManager {
    config: Option<Arc<OverloadConfig>>,
    /// What shards were last told.
    states: ActionStates,
    next_refresh: Option<Instant>,
    last_shrink: Option<Instant>,
    /// Heap bytes in use ([`super::AgentOptions::heap_in_use`]); `None` when unknown.
    heap_in_use: fn() -> Option<u64>,
    /// Hands free heap pages back to the OS ([`super::AgentOptions::trim_memory`]).
    trim: fn(),
}

impl OverloadManager {
    pub(super) fn new(heap_in_use: fn() -> Option<u64>, trim: fn()) -> Self {
        Self {
            config: None,
            states: ActionStates::default(),
            next_refresh: None,
            last_shrink: None,
            heap_in_use,
            trim,
        }
    }

    /// Follows a published generation: a changed overload config is evaluated at once.
    pub(super) fn follow(&mut self, snapshot: &Snapshot, shards: &[ShardLink]) {
        let same = match (&self.config, &snapshot.overload) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.config = snapshot.overload.clone();
        self.next_refresh = self.config.as_ref().map(|_| Instant::now());
        if self.config.is_none() {
            self.publish(ActionStates::default(), shards);
        }
    }

    /// When the monitors are next read (`None`: no overload config).
    pub(super) fn next_refresh(&self) -> Option<Instant> {
        self.next_refresh
    }

    /// Reads every monitor, updates the stats, and sends changed states to the shards.
    pub(super) fn refresh(&mut self, shards: &[ShardLink]) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let now = Instant::now();
        self.next_refresh = Some(now + config.refresh_interval);
        let pressures: Vec<Option<f64>> = config
            .monitors
            .iter()
            .map(|monitor| {
                let cells = monitor.stats.shard(0);
                let pressure = match monitor.kind {
                    MonitorKind::FixedHeap { max_bytes } => match (self.heap_in_use)() {
                        Some(used) => Some(used as f64 / max_bytes as f64),
                        None => {
                            inc(&cells.failed_updates);
                            None
                        }
                    },
                    // Proactive: counted at accept; triggers see no pressure, as in Envoy.
                    MonitorKind::GlobalConnections => None,
                };
                set(
                    &cells.pressure,
                    (pressure.unwrap_or(0.0) * 100.0).round() as i64,
                );
                pressure
            })
            .collect();
        let states = config.states(&pressures);
        for action in &config.actions {
            let state = states.get(action.kind);
            let cells = action.stats.shard(0);
            set(&cells.active, i64::from(state >= 1.0));
            set(&cells.scale_percent, (state * 100.0).round() as i64);
        }
        if states.is_saturated(ActionKind::ShrinkHeap)
            && self
                .last_shrink
                .is_none_or(|at| now.duration_since(at) >= SHRINK_HEAP_INTERVAL)
        {
            self.last_shrink = Some(now);
            (self.trim)();
        }
        self.publish(states, shards);
    }

    fn publish(&mut self, states: ActionStates, shards: &[ShardLink]) {
        if states == self.states {
            return;
        }
        for action in ActionKind::ALL {
            let (was, is) = (self.states.get(action), states.get(action));
            if (was > 0.0) != (is > 0.0) {
                let became = if is > 0.0 { "active" } else { "inactive" };
                tracing::info!("Overload action {} became {became}", action.name());
            }
        }
        self.states = states;
        for shard in shards {
            shard.send(ShardCommand::Overload(states));
        }
    }
}
