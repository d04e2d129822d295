//! Domain model: Envoy's overload manager — resource monitors the agent reads every refresh
//! interval, actions whose triggers turn a monitor's pressure into a state between 0 (off) and
//! 1 (saturated), and the states shards act on ([`ActionStates`], sent to every shard when
//! one changes and read there without a lock or an atomic).
use std::{sync::Arc, time::Duration};

use crate::stats::{stat_scope, StatsRegistry};

/// The bootstrap's `overload_manager`.
#[derive(Debug)]
pub struct OverloadConfig {
    /// `refresh_interval` (Envoy's default: 1 s).
    pub refresh_interval: Duration,
    pub monitors: Vec<Monitor>,
    pub actions: Vec<Action>,
}

#[derive(Debug)]
pub struct Monitor {
    /// The monitor's name (`envoy.resource_monitors.fixed_heap`…): its stats' scope.
    pub name: String,
    pub kind: MonitorKind,
    /// `overload.<name>.*`
    pub stats: Arc<MonitorStats>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MonitorKind {
    /// `envoy.resource_monitors.fixed_heap`: heap in use over `max_heap_size_bytes`.
    FixedHeap { max_bytes: u64 },
    /// `envoy.resource_monitors.global_downstream_max_connections`: a proactive monitor, which
    /// limits connections at accept (`ConnectionLimit`) and, as in Envoy, reports no pressure
    /// to triggers.
    GlobalConnections,
}

/// What an action does on shards (or, for `ShrinkHeap`, on the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// `envoy.overload_actions.stop_accepting_requests`: new requests get a 503.
    StopAcceptingRequests = 0,
    /// `envoy.overload_actions.disable_http_keepalive`: responses close their connection.
    DisableHttpKeepalive = 1,
    /// `envoy.overload_actions.stop_accepting_connections`: listeners stop calling accept
    /// (new connections wait in the kernel's backlog).
    StopAcceptingConnections = 2,
    /// `envoy.overload_actions.reject_incoming_connections`: accepted connections are closed
    /// at once.
    RejectIncomingConnections = 3,
    /// `envoy.overload_actions.shrink_heap`: free heap pages go back to the OS.
    ShrinkHeap = 4,
}

impl ActionKind {
    pub const ALL: [Self; 5] = [
        Self::StopAcceptingRequests,
        Self::DisableHttpKeepalive,
        Self::StopAcceptingConnections,
        Self::RejectIncomingConnections,
        Self::ShrinkHeap,
    ];

    /// Envoy's well-known name.
    pub fn name(self) -> &'static str {
        match self {
            Self::StopAcceptingRequests => "envoy.overload_actions.stop_accepting_requests",
            Self::DisableHttpKeepalive => "envoy.overload_actions.disable_http_keepalive",
            Self::StopAcceptingConnections => "envoy.overload_actions.stop_accepting_connections",
            Self::RejectIncomingConnections => "envoy.overload_actions.reject_incoming_connections",
            Self::ShrinkHeap => "envoy.overload_actions.shrink_heap",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

#[derive(Debug)]
pub struct Action {
    pub kind: ActionKind,
    pub triggers: Vec<Trigger>,
    /// `overload.<name>.*`
    pub stats: Arc<ActionStats>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trigger {
    /// Index of its monitor in `OverloadConfig::monitors`.
    pub monitor: usize,
    pub kind: TriggerKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TriggerKind {
    /// Saturated at or above `value`, else off.
    Threshold { value: f64 },
    /// Off below `scaling`, saturated at or above `saturation`, linear in between.
    Scaled { scaling: f64, saturation: f64 },
}

impl TriggerKind {
    /// The trigger's state for `pressure`: 0 (off) to 1 (saturated).
    pub fn state(self, pressure: f64) -> f64 {
        match self {
            Self::Threshold { value } => f64::from(u8::from(pressure >= value)),
            Self::Scaled {
                scaling,
                saturation,
            } => {
                if pressure >= saturation {
                    1.0
                } else if pressure < scaling {
                    0.0
                } else {
                    (pressure - scaling) / (saturation - scaling)
                }
            }
        }
    }
}

impl OverloadConfig {
    /// Whether `other` configures the same monitors, actions and interval (stats aside): a
    /// reload that changes nothing keeps the previous config.
    pub fn same_as(&self, other: &Self) -> bool {
        self.refresh_interval == other.refresh_interval
            && self.monitors.len() == other.monitors.len()
            && self
                .monitors
                .iter()
                .zip(&other.monitors)
                .all(|(a, b)| a.name == b.name && a.kind == b.kind)
            && self.actions.len() == other.actions.len()
            && self
                .actions
                .iter()
                .zip(&other.actions)
                .all(|(a, b)| a.kind == b.kind && a.triggers == b.triggers)
    }

    /// Each action's state for the monitors' `pressures` (`None`: not read): the highest of
    /// its triggers', as Envoy combines them.
    pub fn states(&self, pressures: &[Option<f64>]) -> ActionStates {
        let mut states = ActionStates::default();
        for action in &self.actions {
            let state = action
                .triggers
                .iter()
                .filter_map(|t| Some(t.kind.state(pressures[t.monitor]?)))
                .fold(0.0, f64::max);
            states.0[action.kind as usize] = state;
        }
        states
    }
}

/// Every action's state, 0 (off) to 1 (saturated); what shards act on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ActionStates([f64; ActionKind::ALL.len()]);

impl ActionStates {
    pub fn get(&self, action: ActionKind) -> f64 {
        self.0[action as usize]
    }

    pub fn is_saturated(&self, action: ActionKind) -> bool {
        self.get(action) >= 1.0
    }

    /// Whether the action applies to one more request or connection: always when saturated,
    /// never when off, else with its state as probability (`random` uniform in [0, 1)).
    pub fn applies(&self, action: ActionKind, random: impl FnOnce() -> f64) -> bool {
        match self.get(action) {
            s if s <= 0.0 => false,
            s if s >= 1.0 => true,
            s => random() < s,
        }
    }
}

stat_scope!(
    ActionStats,
    ActionCells {
        active: Gauge,
        scale_percent: Gauge,
    }
);

stat_scope!(
    MonitorStats,
    MonitorCells {
        pressure: Gauge,
        failed_updates: Counter,
        skipped_updates: Counter,
    }
);

impl StatsRegistry {
    /// `overload.<action>.*`
    pub fn overload_action(&mut self, action: ActionKind) -> Arc<ActionStats> {
        self.scope(format!("overload.{}", action.name()))
    }

    /// `overload.<monitor>.*`
    pub fn overload_monitor(&mut self, name: &str) -> Arc<MonitorStats> {
        self.scope(format!("overload.{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_map_pressure_to_states() {
        let threshold = TriggerKind::Threshold { value: 0.8 };
        assert_eq!((threshold.state(0.79), threshold.state(0.8)), (0.0, 1.0));
        let scaled = TriggerKind::Scaled {
            scaling: 0.5,
            saturation: 0.9,
        };
        assert_eq!(scaled.state(0.4), 0.0);
        assert!((scaled.state(0.7) - 0.5).abs() < 1e-9);
        assert_eq!(scaled.state(0.95), 1.0);
    }

    #[test]
    fn an_action_takes_its_highest_trigger_and_unread_monitors_count_for_nothing() {
        let mut registry = StatsRegistry::new(1);
        let config = OverloadConfig {
            refresh_interval: Duration::from_secs(1),
            monitors: Vec::new(),
            actions: vec![Action {
                kind: ActionKind::DisableHttpKeepalive,
                triggers: vec![
                    Trigger {
                        monitor: 0,
                        kind: TriggerKind::Threshold { value: 0.9 },
                    },
                    Trigger {
                        monitor: 1,
                        kind: TriggerKind::Scaled {
                            scaling: 0.0,
                            saturation: 1.0,
                        },
                    },
                ],
                stats: registry.overload_action(ActionKind::DisableHttpKeepalive),
            }],
        };
        let states = config.states(&[Some(0.5), Some(0.25)]);
        assert_eq!(states.get(ActionKind::DisableHttpKeepalive), 0.25);
        assert_eq!(states.get(ActionKind::StopAcceptingRequests), 0.0);
        let states = config.states(&[Some(0.95), None]);
        assert!(states.is_saturated(ActionKind::DisableHttpKeepalive));
        assert!(states.applies(ActionKind::DisableHttpKeepalive, || 0.99));
        let half = config.states(&[None, Some(0.5)]);
        assert!(half.applies(ActionKind::DisableHttpKeepalive, || 0.4));
        assert!(!half.applies(ActionKind::DisableHttpKeepalive, || 0.6));
        assert!(!half.applies(ActionKind::StopAcceptingRequests, || 0.0));
    }
}
