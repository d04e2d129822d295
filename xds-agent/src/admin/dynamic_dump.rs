//! `/config_dump`, dynamic part: the xDS resources held — active and warming, with versions,
//! last-updated times and, for a rejected update, the NACK reason (`error_state`) — and the
//! secrets, static and SDS, their private keys redacted.
use std::{collections::BTreeSet, time::Instant};

use envoy_types::{
    pb::envoy::{
        admin::v3::{
            clusters_config_dump::DynamicCluster,
            endpoints_config_dump::DynamicEndpointConfig,
            listeners_config_dump::{DynamicListener, DynamicListenerState},
            routes_config_dump::DynamicRouteConfig,
            secrets_config_dump::{DynamicSecret, StaticSecret},
            ClientResourceStatus, ClustersConfigDump, EndpointsConfigDump, ListenersConfigDump,
            RoutesConfigDump, SecretsConfigDump, UpdateFailureState,
        },
        extensions::transport_sockets::tls::v3::Secret,
    },
    util::pack_any,
};
use prost::Message;

use super::config_dump::timestamp;
use crate::{
    dynamic::{DynamicConfig, Failed, Held, ASSIGNMENT, CLUSTER, LISTENER, ROUTE},
    translate::secret::redacted,
};

/// The last rejection of a resource, as Envoy reports it.
fn error_state(config: &DynamicConfig, type_url: &str, name: &str) -> Option<UpdateFailureState> {
    config
        .failed
        .get(&(type_url.to_string(), name.to_string()))
        .map(failure_state)
}

fn failure_state(failed: &Failed) -> UpdateFailureState {
    UpdateFailureState {
        failed_configuration: None,
        last_update_attempt: Some(timestamp(failed.at)),
        details: failed.reason.clone(),
        version_info: failed.version.clone(),
    }
}

fn status(error: &Option<UpdateFailureState>) -> i32 {
    match error {
        Some(_) => ClientResourceStatus::Nacked as i32,
        None => ClientResourceStatus::Acked as i32,
    }
}

/// Names rejected that were never accepted: reported with their error only.
fn only_failed<'a, T>(
    config: &'a DynamicConfig,
    type_url: &'a str,
    held: &'a std::collections::BTreeMap<String, Held<T>>,
) -> impl Iterator<Item = &'a str> {
    config
        .failed
        .keys()
        .filter(move |(t, name)| t == type_url && !held.contains_key(name))
        .map(|(_, name)| name.as_str())
}

pub fn clusters(config: &DynamicConfig, dump: &mut ClustersConfigDump, now: Instant) {
    dump.version_info = version(config, CLUSTER);
    let warming: Vec<&str> = config.warming_clusters(now).collect();
    for (name, held) in &config.clusters {
        let error_state = error_state(config, CLUSTER, name);
        let entry = DynamicCluster {
            version_info: held.version.clone(),
            cluster: Some(held.body.clone()),
            last_updated: Some(timestamp(held.last_updated)),
            client_status: status(&error_state),
            error_state,
        };
        match warming.contains(&name.as_str()) {
            true => dump.dynamic_warming_clusters.push(entry),
            false => dump.dynamic_active_clusters.push(entry),
        }
    }
    for name in only_failed(config, CLUSTER, &config.clusters) {
        dump.dynamic_active_clusters.push(DynamicCluster {
            error_state: error_state(config, CLUSTER, name),
            client_status: ClientResourceStatus::Nacked as i32,
            ..Default::default()
        });
    }
}

pub fn endpoints(config: &DynamicConfig, dump: &mut EndpointsConfigDump) {
    for (name, held) in &config.assignments {
        let error_state = error_state(config, ASSIGNMENT, name);
        dump.dynamic_endpoint_configs.push(DynamicEndpointConfig {
            version_info: held.version.clone(),
            endpoint_config: Some(held.body.clone()),
            last_updated: Some(timestamp(held.last_updated)),
            client_status: status(&error_state),
            error_state,
        });
    }
}

pub fn listeners(config: &DynamicConfig, dump: &mut ListenersConfigDump, now: Instant) {
    dump.version_info = version(config, LISTENER);
    let warming: Vec<&str> = config.warming_listeners(now).collect();
    let state = |held: &Held<()>| DynamicListenerState {
        version_info: held.version.clone(),
        listener: Some(held.body.clone()),
        last_updated: Some(timestamp(held.last_updated)),
    };
    let names: BTreeSet<&String> = config
        .listeners
        .keys()
        .chain(config.awaiting.keys())
        .collect();
    for name in names {
        let held = config.listeners.get(name).map(|h| state(&h.with(())));
        // An update waiting for ECDS configs warms while the held version serves.
        let waiting = config.awaiting.get(name).map(state);
        let (active_state, warming_state) = match (held, waiting) {
            (held, Some(waiting)) => (held, Some(waiting)),
            (Some(held), None) if warming.contains(&name.as_str()) => (None, Some(held)),
            (held, None) => (held, None),
        };
        let error_state = error_state(config, LISTENER, name);
        dump.dynamic_listeners.push(DynamicListener {
            name: name.clone(),
            active_state,
            warming_state,
            draining_state: None,
            client_status: status(&error_state),
            error_state,
        });
    }
    for name in only_failed(config, LISTENER, &config.listeners) {
        dump.dynamic_listeners.push(DynamicListener {
            name: name.to_string(),
            error_state: error_state(config, LISTENER, name),
            client_status: ClientResourceStatus::Nacked as i32,
            ..Default::default()
        });
    }
}

/// The routes dump (only when RDS tables are held, as Envoy shows it only with RDS in use).
pub fn routes(config: &DynamicConfig) -> Option<RoutesConfigDump> {
    if config.routes.is_empty() && only_failed(config, ROUTE, &config.routes).next().is_none() {
        return None;
    }
    let mut dump = RoutesConfigDump::default();
    for (name, held) in &config.routes {
        let error_state = error_state(config, ROUTE, name);
        dump.dynamic_route_configs.push(DynamicRouteConfig {
            version_info: held.version.clone(),
            route_config: Some(held.body.clone()),
            last_updated: Some(timestamp(held.last_updated)),
            client_status: status(&error_state),
            error_state,
        });
    }
    for name in only_failed(config, ROUTE, &config.routes) {
        dump.dynamic_route_configs.push(DynamicRouteConfig {
            error_state: error_state(config, ROUTE, name),
            client_status: ClientResourceStatus::Nacked as i32,
            ..Default::default()
        });
    }
    Some(dump)
}

fn version(config: &DynamicConfig, type_url: &str) -> String {
    config
        .status
        .get(type_url)
        .map(|s| s.version_info.clone())
        .unwrap_or_default()
}

/// The secrets dump: the bootstrap's `statics`, and each SDS secret wanted — active once a
/// version was accepted, else warming (`version_info` "uninitialized", as Envoy).
pub fn secrets(statics: &[Secret], config: &DynamicConfig) -> SecretsConfigDump {
    let store = &config.secrets;
    let mut dump = SecretsConfigDump {
        static_secrets: statics
            .iter()
            .map(|secret| StaticSecret {
                name: secret.name.clone(),
                last_updated: None,
                secret: Some(pack_any(redacted(secret.clone()))),
            })
            .collect(),
        ..Default::default()
    };
    for (key, wanted) in &store.wanted {
        let error_state = store.failed.get(key).map(failure_state);
        let client_status = status(&error_state);
        match store.held.get(key) {
            Some(held) => dump.dynamic_active_secrets.push(DynamicSecret {
                name: key.name.clone(),
                version_info: held.version.clone(),
                last_updated: Some(timestamp(held.last_updated)),
                secret: Secret::decode(held.body.value.as_slice())
                    .ok()
                    .map(|secret| pack_any(redacted(secret))),
                error_state,
                client_status,
            }),
            None => dump.dynamic_warming_secrets.push(DynamicSecret {
                name: key.name.clone(),
                version_info: "uninitialized".into(),
                last_updated: Some(timestamp(wanted.since)),
                secret: Some(pack_any(Secret {
                    name: key.name.clone(),
                    r#type: None,
                })),
                error_state,
                client_status,
            }),
        }
    }
    dump
}
