//! Translator: the bootstrap's `overload_manager` — the global downstream connection limit
//! (`envoy.resource_monitors.global_downstream_max_connections`), the fixed-heap monitor and
//! the actions shards take (Envoy's names, threshold and scaled triggers), with Envoy's
//! errors for unknown actions, unknown trigger resources and duplicates.
use std::{collections::HashSet, sync::Arc, time::Duration};

use envoy_types::pb::envoy::{
    config::{
        bootstrap::v3::Bootstrap,
        overload::v3::{resource_monitor, trigger::TriggerOneof, OverloadManager},
    },
    extensions::resource_monitors::{
        downstream_connections::v3::DownstreamConnectionsConfig, fixed_heap::v3::FixedHeapConfig,
    },
};

use super::{positive_duration, TranslateContext, TranslateError};
use crate::names;
use model::{
    connection_limit::ConnectionLimit,
    overload::{Action, ActionKind, Monitor, MonitorKind, OverloadConfig, Trigger, TriggerKind},
    Snapshot,
};

/// Envoy's default `refresh_interval`.
const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

/// Actions Envoy knows that shardproxy does not take, with the reason.
const UNSUPPORTED_ACTIONS: &[(&str, &str)] = &[
    (
        "envoy.overload_actions.reduce_timeouts",
        "timeouts are not scaled under load",
    ),
    (
        "envoy.overload_actions.reset_high_memory_stream",
        "streams do not account their buffers to the overload manager",
    ),
];

/// The overload manager's global downstream connection limit: the
/// `envoy.resource_monitors.global_downstream_max_connections` monitor's
/// `max_active_downstream_connections` (which must be positive), if configured.
/// The previous generation's limit is kept when the maximum is the same, so the connections
/// open across a reload stay counted.
pub(super) fn connection_limit(
    bootstrap: &Bootstrap,
    previous: Option<&Snapshot>,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<ConnectionLimit>> {
    let monitors = bootstrap
        .overload_manager
        .as_ref()?
        .resource_monitors
        .iter();
    let mut limit = None;
    for (i, monitor) in monitors.enumerate() {
        let Some(resource_monitor::ConfigType::TypedConfig(any)) = &monitor.config_type else {
            continue;
        };
        if names::type_name(&any.type_url) != names::DOWNSTREAM_CONNECTIONS {
            continue; // another monitor (see `overload`), or refused by the walker
        }
        let path = format!("overload_manager.resource_monitors[{i}].typed_config");
        match proto::decode_any::<DownstreamConnectionsConfig>(any) {
            Ok(config) if config.max_active_downstream_connections > 0 => {
                let max = config.max_active_downstream_connections as u64;
                let kept = previous.and_then(|p| p.connection_limit.clone());
                limit = Some(
                    kept.filter(|l| l.max == max)
                        .unwrap_or_else(|| ConnectionLimit::new(max)),
                );
            }
            Ok(_) => errors.push(TranslateError::new(
                format!("{path}.max_active_downstream_connections"),
                Some(&any.type_url),
                "must be greater than 0",
            )),
            Err(e) => errors.push(TranslateError::new(
                path,
                Some(&any.type_url),
                e.to_string(),
            )),
        }
    }
    limit
}

/// The monitors and actions the agent evaluates, when the bootstrap configures any action;
/// the previous generation's when they are the same.
pub(super) fn overload(
    bootstrap: &Bootstrap,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<OverloadConfig>> {
    let manager = bootstrap.overload_manager.as_ref()?;
    let refresh_interval = positive_duration(
        manager.refresh_interval.as_ref(),
        DEFAULT_REFRESH,
        "overload_manager.refresh_interval",
        errors,
    );
    let monitors = monitors(manager, ctx, errors);
    let actions = actions(manager, &monitors, ctx, errors);
    if actions.is_empty() {
        return None; // monitors without actions change nothing but the connection limit
    }
    let config = OverloadConfig {
        refresh_interval,
        monitors,
        actions,
    };
    let previous = ctx.previous.and_then(|p| p.overload.clone());
    Some(
        previous
            .filter(|p| p.same_as(&config))
            .unwrap_or_else(|| Arc::new(config)),
    )
}

fn monitors(
    manager: &OverloadManager,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Vec<Monitor> {
    let mut out: Vec<Monitor> = Vec::new();
    for (i, monitor) in manager.resource_monitors.iter().enumerate() {
        let path = format!("overload_manager.resource_monitors[{i}]");
        if out.iter().any(|m| m.name == monitor.name) {
            errors.push(TranslateError::new(
                format!("{path}.name"),
                None,
                format!("Duplicate resource monitor {}", monitor.name),
            ));
            continue;
        }
        let Some(resource_monitor::ConfigType::TypedConfig(any)) = &monitor.config_type else {
            errors.push(TranslateError::new(
                format!("{path}.typed_config"),
                None,
                "a resource monitor needs its typed_config",
            ));
            continue;
        };
        let kind = match names::type_name(&any.type_url) {
            names::DOWNSTREAM_CONNECTIONS => MonitorKind::GlobalConnections,
            names::FIXED_HEAP => match proto::decode_any::<FixedHeapConfig>(any) {
                Ok(config) if config.max_heap_size_bytes > 0 => MonitorKind::FixedHeap {
                    max_bytes: config.max_heap_size_bytes,
                },
                Ok(_) => {
                    errors.push(TranslateError::new(
                        format!("{path}.typed_config.max_heap_size_bytes"),
                        Some(&any.type_url),
                        "must be greater than 0",
                    ));
                    continue;
                }
                Err(e) => {
                    errors.push(TranslateError::new(
                        format!("{path}.typed_config"),
                        Some(&any.type_url),
                        e.to_string(),
                    ));
                    continue;
                }
            },
            _ => continue, // refused by the walker
        };
        out.push(Monitor {
            name: monitor.name.clone(),
            kind,
            stats: ctx.stats.overload_monitor(&monitor.name),
        });
    }
    out
}

fn actions(
    manager: &OverloadManager,
    monitors: &[Monitor],
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Vec<Action> {
    let mut out: Vec<Action> = Vec::new();
    for (i, action) in manager.actions.iter().enumerate() {
        let path = format!("overload_manager.actions[{i}]");
        let Some(kind) = ActionKind::from_name(&action.name) else {
            let message = match UNSUPPORTED_ACTIONS.iter().find(|(n, _)| *n == action.name) {
                Some((_, why)) => format!("{} is not supported: {why}", action.name),
                None => format!("Unknown Overload Manager Action {}", action.name),
            };
            errors.push(TranslateError::new(format!("{path}.name"), None, message));
            continue;
        };
        if out.iter().any(|a| a.kind == kind) {
            errors.push(TranslateError::new(
                format!("{path}.name"),
                None,
                format!("Duplicate overload action {}", action.name),
            ));
            continue;
        }
        if action.typed_config.is_some() {
            errors.push(TranslateError::new(
                format!("{path}.typed_config"),
                None,
                "no supported action takes a typed_config",
            ));
        }
        let mut seen = HashSet::new();
        let mut triggers = Vec::new();
        for (k, trigger) in action.triggers.iter().enumerate() {
            let at = format!("{path}.triggers[{k}]");
            if !seen.insert(trigger.name.as_str()) {
                errors.push(TranslateError::new(
                    format!("{at}.name"),
                    None,
                    format!(
                        "Duplicate trigger resource for overload action {}",
                        action.name
                    ),
                ));
                continue;
            }
            let Some(monitor) = monitors.iter().position(|m| m.name == trigger.name) else {
                errors.push(TranslateError::new(
                    format!("{at}.name"),
                    None,
                    format!(
                        "Unknown trigger resource {} for overload action {}",
                        trigger.name, action.name
                    ),
                ));
                continue;
            };
            if let Some(kind) = trigger_kind(trigger.trigger_oneof.as_ref(), &at, errors) {
                triggers.push(Trigger { monitor, kind });
            }
        }
        out.push(Action {
            kind,
            triggers,
            stats: ctx.stats.overload_action(kind),
        });
    }
    out
}

/// A trigger's kind; its thresholds must lie in [0, 1], a scaled one's scaling threshold
/// below its saturation threshold (Envoy's rules).
fn trigger_kind(
    trigger: Option<&TriggerOneof>,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<TriggerKind> {
    let in_range = |v: f64| (0.0..=1.0).contains(&v);
    let kind = match trigger {
        None => {
            errors.push(TranslateError::new(
                path,
                None,
                "a trigger needs threshold or scaled",
            ));
            return None;
        }
        Some(TriggerOneof::Threshold(t)) => TriggerKind::Threshold { value: t.value },
        Some(TriggerOneof::Scaled(s)) => TriggerKind::Scaled {
            scaling: s.scaling_threshold,
            saturation: s.saturation_threshold,
        },
    };
    let valid = match kind {
        TriggerKind::Threshold { value } => in_range(value),
        TriggerKind::Scaled {
            scaling,
            saturation,
        } => in_range(scaling) && in_range(saturation) && scaling < saturation,
    };
    if !valid {
        errors.push(TranslateError::new(
            path,
            None,
            "thresholds lie in [0, 1], a scaled trigger's scaling_threshold below its \
             saturation_threshold",
        ));
        return None;
    }
    Some(kind)
}

#[cfg(test)]
mod tests {
    use crate::translate::tests::{errors, ok};

    const HEAP: &str =
        "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig";

    fn manager(actions: &str) -> String {
        format!(
            "overload_manager:\n  refresh_interval: 0.25s\n  resource_monitors:\n  - name: \
             envoy.resource_monitors.fixed_heap\n    typed_config: {{\"@type\": \"{HEAP}\", \
             max_heap_size_bytes: 1000}}\n  actions: {actions}\n"
        )
    }

    #[test]
    fn monitors_and_actions_translate_with_their_triggers() {
        let snapshot = ok(&manager(
            "[{name: envoy.overload_actions.stop_accepting_requests, triggers: [{name: \
             envoy.resource_monitors.fixed_heap, threshold: {value: 0.9}}]}, {name: \
             envoy.overload_actions.disable_http_keepalive, triggers: [{name: \
             envoy.resource_monitors.fixed_heap, scaled: {scaling_threshold: 0.5, \
             saturation_threshold: 0.8}}]}]",
        ));
        let overload = snapshot.overload.unwrap();
        assert_eq!(overload.refresh_interval.as_millis(), 250);
        assert_eq!(overload.actions.len(), 2);
        let states = overload.states(&[Some(0.65)]);
        use model::overload::ActionKind::*;
        assert_eq!(states.get(StopAcceptingRequests), 0.0);
        assert!((states.get(DisableHttpKeepalive) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn unknown_actions_resources_and_duplicates_are_refused_as_envoy_refuses_them() {
        let errors = errors(&manager(
            "[{name: envoy.overload_actions.reject_incoming_requests, triggers: []}, {name: \
             envoy.overload_actions.reduce_timeouts}, {name: \
             envoy.overload_actions.shrink_heap, triggers: [{name: nope, threshold: {value: \
             0.5}}, {name: envoy.resource_monitors.fixed_heap, threshold: {value: 2}}]}]",
        ));
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let all = messages.join("\n");
        assert!(
            all.contains(
                "Unknown Overload Manager Action envoy.overload_actions.reject_incoming_requests"
            ),
            "{all}"
        );
        assert!(all.contains("reduce_timeouts is not supported"), "{all}");
        assert!(
            all.contains("Unknown trigger resource nope for overload action"),
            "{all}"
        );
        assert!(
            all.contains("overload_manager.actions[2].triggers[1]"),
            "{all}"
        );
        assert_eq!(errors.len(), 4, "{all}");
    }
}
