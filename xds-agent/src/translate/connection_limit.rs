//! Translator: the `envoy.filters.network.connection_limit` network filter, and its count kept
//! across listener updates that leave its filter chain unchanged (as Envoy keeps an unchanged
//! chain's filter config on an in-place listener update).
use std::{sync::Arc, time::Duration};

use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit as Proto;

use super::{duration, matchers::At, TranslateError};
use model::{
    connection_limit::{ConnectionLimit, ConnectionLimitFilter},
    filter_stats::ConnectionLimitStats,
    stats::StatsRegistry,
    ConnectionFilter, FilterChain, Listener,
};

/// `envoy.filters.network.connection_limit` (its `stat_prefix` checked by the caller): Envoy's
/// validation (`max_connections` of at least 1, a `default_value` in `runtime_enabled`); stats
/// under `connection_limit.<stat_prefix>.`. A new count each time: [`keep_counts`] carries the
/// previous one over.
pub(super) fn network_filter(
    proto: Proto,
    at: At,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Option<ConnectionFilter> {
    let max = match proto.max_connections {
        Some(max) if max.value >= 1 => max.value,
        Some(_) => {
            errors.push(at.error("max_connections", "must be at least 1"));
            0
        }
        None => {
            errors.push(at.error("max_connections", "max_connections is required"));
            0
        }
    };
    let delay = match &proto.delay {
        Some(delay) => duration(delay, &at.below("delay"), at.type_url, errors),
        None => Some(Duration::ZERO),
    };
    // No runtime: the flag's default value decides (Envoy's default: enabled).
    let enabled = match &proto.runtime_enabled {
        None => true,
        Some(flag) => match flag.default_value {
            Some(value) => value.value,
            None => {
                errors.push(at.error("runtime_enabled.default_value", "default_value is required"));
                true
            }
        },
    };
    Some(ConnectionFilter::ConnectionLimit(Arc::new(
        ConnectionLimitFilter {
            limit: ConnectionLimit::new(max),
            delay: delay?,
            enabled,
            stats: stats
                .scope::<ConnectionLimitStats>(format!("connection_limit.{}", proto.stat_prefix)),
        },
    )))
}

/// Gives the connection_limit filters of `chains` the counts of `previous`'s: a chain whose
/// config is unchanged keeps its filters' counts (and so the connections it has open stay
/// counted). `previous` is the listener's last version, when the update leaves everything
/// but its chains alone (Envoy builds a listener changed otherwise anew, counts and all).
pub(super) fn keep_counts(chains: &mut [FilterChain], previous: &Listener) {
    for chain in chains {
        let Some(old) = previous
            .filter_chains
            .iter()
            .find(|old| old.config_hash == chain.config_hash)
        else {
            continue;
        };
        for (new, old) in chain
            .connection_filters
            .iter_mut()
            .zip(&old.connection_filters)
        {
            if let (ConnectionFilter::ConnectionLimit(_), ConnectionFilter::ConnectionLimit(kept)) =
                (&*new, old)
            {
                *new = ConnectionFilter::ConnectionLimit(kept.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::translate::tests::{errors, ok, ok_after};

    const LIMIT: &str =
        "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit";
    const TCP: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

    /// A bootstrap whose listener (with `listener_extra` fields) runs the filter with `config`,
    /// then tcp_proxy (stat prefix `tcp_prefix`).
    fn bootstrap(config: &str, listener_extra: &str, tcp_prefix: &str) -> String {
        format!(
            r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    {listener_extra}
    filter_chains:
    - filters:
      - name: envoy.filters.network.connection_limit
        typed_config: {{"@type": "{LIMIT}", {config}}}
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": "{TCP}", stat_prefix: {tcp_prefix}, cluster: c}}
  clusters:
  - name: c
    load_assignment: {{cluster_name: c, endpoints: [{{lb_endpoints: [{{endpoint: {{address:
      {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}}}]}}]}}
"#
        )
    }

    fn filter(snapshot: &model::Snapshot) -> Arc<ConnectionLimitFilter> {
        match &snapshot.listeners[0].filter_chains[0].connection_filters[..] {
            [ConnectionFilter::ConnectionLimit(f)] => f.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn translates_with_envoys_stat_names_and_defaults() {
        let f = filter(&ok(&bootstrap(
            "stat_prefix: cl, max_connections: 2, delay: 0.5s",
            "",
            "tcp",
        )));
        assert_eq!(
            (f.limit.max, f.delay, f.enabled),
            (2, Duration::from_millis(500), true)
        );
        let mut names = vec![];
        f.stats.read(&mut names);
        let names: Vec<_> = names.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "connection_limit.cl.limited_connections",
                "connection_limit.cl.active_connections"
            ]
        );
        let f = filter(&ok(&bootstrap(
            "stat_prefix: cl, max_connections: 1, \
             runtime_enabled: {runtime_key: k, default_value: false}",
            "",
            "tcp",
        )));
        assert_eq!((f.delay, f.enabled), (Duration::ZERO, false));
    }

    #[test]
    fn refusals_name_the_field() {
        let at = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
        for (yaml, field) in [
            ("max_connections: 1", "stat_prefix"),
            ("stat_prefix: s", "max_connections"),
            ("stat_prefix: s, max_connections: 0", "max_connections"),
            ("stat_prefix: s, max_connections: 1, delay: -1s", "delay"),
            (
                "stat_prefix: s, max_connections: 1, runtime_enabled: {runtime_key: k}",
                "runtime_enabled.default_value",
            ),
        ] {
            let errors = errors(&bootstrap(yaml, "", "tcp"));
            let path = format!("{at}.{field}");
            assert!(errors.iter().any(|e| e.path == path), "{yaml}: {errors:?}");
        }
    }

    /// An update that changes only another part of the chain's listener keeps an unchanged
    /// chain's count; a changed chain, or a listener changed otherwise, starts a new one.
    #[test]
    fn an_unchanged_chain_keeps_its_count_across_updates() {
        let config = "stat_prefix: cl, max_connections: 2";
        let first = ok(&bootstrap(config, "", "tcp"));
        let count = filter(&first).limit.clone();
        // Unchanged: the listener itself is reused.
        let same = ok_after(&bootstrap(config, "", "tcp"), &first);
        assert!(Arc::ptr_eq(&filter(&same).limit, &count));
        // A second chain added: the first one is unchanged.
        let two_chains = bootstrap(config, "", "tcp").replace(
            "  clusters:",
            &format!(
                "    - filter_chain_match: {{destination_port: 9}}\n      filters:\n      \
                 - name: t\n        typed_config: {{\"@type\": \"{TCP}\", stat_prefix: t, \
                 cluster: c}}\n  clusters:"
            ),
        );
        let added = ok_after(&two_chains, &same);
        assert_eq!(added.listeners[0].filter_chains.len(), 2);
        assert!(Arc::ptr_eq(&filter(&added).limit, &count));
        // The chain itself changed.
        let changed = ok_after(&bootstrap(config, "", "other"), &added);
        assert!(!Arc::ptr_eq(&filter(&changed).limit, &count));
        // The listener changed beyond its chains.
        let rebuilt = ok_after(
            &bootstrap(config, "per_connection_buffer_limit_bytes: 4096", "tcp"),
            &first,
        );
        assert!(!Arc::ptr_eq(&filter(&rebuilt).limit, &count));
    }
}
