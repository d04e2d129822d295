//! Dynamic config: applying one discovery response — each changed resource translated on its
//! own, accepted or rejected (the rest of the update still applies, as in Envoy), removals,
//! and the NACK text naming every rejected resource, field and reason.
use std::{collections::HashSet, time::SystemTime};

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster as ClusterProto, core::v3::TypedExtensionConfig,
    endpoint::v3::ClusterLoadAssignment, listener::v3::Listener as ListenerProto,
    route::v3::RouteConfiguration,
};

use super::{DynamicConfig, Failed, Held, Inputs, ASSIGNMENT, CLUSTER, EXTENSION, LISTENER, ROUTE};
use crate::{
    translate::{resources, TranslateError},
    xds::{Rejection, Resource, Update},
};
use model::Snapshot;

/// What applying an update did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Resources accepted, changed or removed: a new generation is due.
    pub changed: bool,
    /// `None`: ACK. Otherwise the NACK (the accepted part is applied all the same).
    pub rejection: Option<Rejection>,
}

impl DynamicConfig {
    /// Applies `update`; `statics` is the bootstrap's translation (its cluster names are known
    /// to listeners, and may not be replaced by CDS).
    pub fn apply(&mut self, update: &Update, statics: &Snapshot, inputs: &mut Inputs) -> Applied {
        let mut applied = Applied::default();
        // (name, reason) of each rejected resource.
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut offered = HashSet::new();
        for resource in &update.resources {
            offered.insert(resource.name.as_str());
            match self.apply_resource(&update.type_url, resource, statics, inputs) {
                Ok(changed) => {
                    applied.changed |= changed;
                    self.failed
                        .remove(&(update.type_url.clone(), resource.name.clone()));
                }
                Err(errors) => {
                    let reason = join(&errors);
                    self.failed.insert(
                        (update.type_url.clone(), resource.name.clone()),
                        Failed {
                            version: resource.version.clone(),
                            reason: reason.clone(),
                            at: SystemTime::now(),
                        },
                    );
                    problems.push((resource.name.clone(), reason));
                }
            }
        }
        let mut removed: Vec<String> = update.removed.clone();
        if update.full_state {
            removed.extend(
                self.names(&update.type_url)
                    .into_iter()
                    .filter(|name| !offered.contains(name.as_str())),
            );
        }
        for name in removed {
            applied.changed |= self.remove(&update.type_url, &name);
        }
        let status = self.status.entry(update.type_url.clone()).or_default();
        status.received = true;
        if problems.is_empty() {
            status.version_info.clone_from(&update.version_info);
        } else {
            let (names, reasons): (Vec<String>, Vec<String>) = problems.into_iter().unzip();
            applied.rejection = Some(Rejection {
                message: reasons.join("\n"),
                names,
            });
        }
        applied
    }

    /// Accepts one resource (`Ok(true)` if it changed what is held) or says why not.
    fn apply_resource(
        &mut self,
        type_url: &str,
        resource: &Resource,
        statics: &Snapshot,
        inputs: &mut Inputs,
    ) -> Result<bool, Vec<TranslateError>> {
        let body = &resource.body;
        if body.type_url != type_url {
            return Err(vec![TranslateError::new(
                format!("{:?}", resource.name),
                Some(&body.type_url),
                format!("a resource of this type in a {type_url} response"),
            )]);
        }
        match type_url {
            CLUSTER => {
                if unchanged(self.clusters.get(&resource.name), resource) {
                    return Ok(false);
                }
                let proto: ClusterProto = decode(resource)?;
                named(&resource.name, &proto.name)?;
                if statics.clusters.contains_key(&proto.name) {
                    return Err(vec![TranslateError::new(
                        format!("clusters[{:?}].name", proto.name),
                        None,
                        "a static cluster of this name exists (CDS may not replace it)",
                    )]);
                }
                let model = resources::cluster(
                    &proto,
                    &mut inputs.context(
                        &self.extension_configs,
                        &self.secrets.current,
                        &statics.local_peer,
                    ),
                )?;
                let old_eds = self
                    .clusters
                    .get(&proto.name)
                    .and_then(|held| held.model.eds_name().map(str::to_string));
                self.index_eds(&proto.name, old_eds.as_deref(), model.eds_name());
                self.dirty.insert(proto.name.clone());
                self.clusters.insert(proto.name, held(resource, model));
            }
            ASSIGNMENT => {
                if unchanged(self.assignments.get(&resource.name), resource) {
                    return Ok(false);
                }
                let proto: ClusterLoadAssignment = decode(resource)?;
                named(&resource.name, &proto.cluster_name)?;
                local_priority_only(&proto, statics)?;
                let model = resources::assignment(&proto)?;
                self.waiting
                    .remove(&(ASSIGNMENT, proto.cluster_name.clone()));
                self.mark_users_of(&proto.cluster_name);
                self.assignments
                    .insert(proto.cluster_name, held(resource, model));
            }
            LISTENER => {
                if unchanged(self.listeners.get(&resource.name), resource) {
                    return Ok(false);
                }
                let proto: ListenerProto = decode(resource)?;
                named(&resource.name, &proto.name)?;
                if let Some(clash) = statics.listeners.iter().find(|l| l.name == proto.name) {
                    return Err(vec![TranslateError::new(
                        format!("listeners[{:?}].name", clash.name),
                        None,
                        "a static listener of this name exists (LDS may not replace it)",
                    )]);
                }
                self.accept_listener(proto, held(resource, ()), statics, inputs)?;
            }
            ROUTE => {
                if unchanged(self.routes.get(&resource.name), resource) {
                    return Ok(false);
                }
                let proto: RouteConfiguration = decode(resource)?;
                named(&resource.name, &proto.name)?;
                let model = resources::route_config(
                    &proto,
                    &self.known_clusters(statics),
                    &mut inputs.context(
                        &self.extension_configs,
                        &self.secrets.current,
                        &statics.local_peer,
                    ),
                )?;
                self.waiting.remove(&(ROUTE, proto.name.clone()));
                self.routes.insert(proto.name, held(resource, model));
            }
            EXTENSION => {
                if unchanged(self.extensions.get(&resource.name), resource) {
                    return Ok(false);
                }
                let proto: TypedExtensionConfig = decode(resource)?;
                named(&resource.name, &proto.name)?;
                self.accept_extension(proto, held(resource, ()), statics, inputs)?;
            }
            other => {
                return Err(vec![TranslateError::new(
                    format!("{:?}", resource.name),
                    Some(other),
                    "resource type not subscribed",
                )])
            }
        }
        Ok(true)
    }

    /// Names held of a type.
    fn names(&self, type_url: &str) -> Vec<String> {
        match type_url {
            CLUSTER => self.clusters.keys().cloned().collect(),
            ASSIGNMENT => self.assignments.keys().cloned().collect(),
            LISTENER => self
                .listeners
                .keys()
                .chain(self.awaiting.keys())
                .cloned()
                .collect(),
            EXTENSION => self.extensions.keys().cloned().collect(),
            ROUTE => self.routes.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Drops a resource; `true` if one was held.
    fn remove(&mut self, type_url: &str, name: &str) -> bool {
        self.failed
            .remove(&(type_url.to_string(), name.to_string()));
        match type_url {
            CLUSTER => {
                self.dirty.insert(name.to_string());
                let Some(held) = self.clusters.remove(name) else {
                    return false;
                };
                self.index_eds(name, held.model.eds_name(), None);
                true
            }
            ASSIGNMENT => {
                self.mark_users_of(name);
                self.assignments.remove(name).is_some()
            }
            LISTENER => {
                self.listener_extensions.remove(name);
                let awaited = self.awaiting.remove(name).is_some();
                self.listeners.remove(name).is_some() || awaited
            }
            EXTENSION => {
                // Listeners keep the config they were built with (as Envoy keeps the last).
                self.extension_configs.remove(name);
                self.extensions.remove(name).is_some()
            }
            ROUTE => self.routes.remove(name).is_some(),
            _ => false,
        }
    }

    /// Marks the clusters whose endpoints come from assignment `name` for rebuilding.
    fn mark_users_of(&mut self, name: &str) {
        if let Some(users) = self.eds_users.get(name) {
            self.dirty.extend(users.iter().cloned());
        }
    }
}

/// Whether `resource` is byte for byte the version held.
fn unchanged<T>(held: Option<&Held<T>>, resource: &Resource) -> bool {
    held.is_some_and(|h| h.body.value == resource.body.value)
}

pub(super) fn held<T>(resource: &Resource, model: T) -> Held<T> {
    Held {
        version: resource.version.clone(),
        last_updated: SystemTime::now(),
        body: resource.body.clone(),
        model,
    }
}

/// A resource's config, TypedStruct wrappers unwrapped (`proto::decode_config`); a problem
/// names the resource and the field path inside it.
pub(super) fn decode<M: prost::Message + Default + prost::Name>(
    resource: &Resource,
) -> Result<M, Vec<TranslateError>> {
    proto::decode_config(resource.body.value.as_slice()).map_err(|e| {
        let name = format!("{:?}", resource.name);
        let path = if e.path.is_empty() {
            name
        } else {
            format!("{name}.{}", e.path)
        };
        vec![TranslateError::new(
            path,
            Some(&resource.body.type_url),
            e.message,
        )]
    })
}

/// A resource's name must be the name inside it.
fn named(name: &str, inner: &str) -> Result<(), Vec<TranslateError>> {
    if name == inner || name.is_empty() {
        return Ok(());
    }
    Err(vec![TranslateError::new(
        format!("{name:?}"),
        None,
        format!("the resource is named {name:?} but its config names {inner:?}"),
    )])
}

/// Problems as one text, a line each.
pub(crate) fn join(errors: &[TranslateError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Refuses an assignment of the local cluster (zone-aware routing's) with a priority above 0,
/// as Envoy does.
fn local_priority_only(
    proto: &ClusterLoadAssignment,
    statics: &Snapshot,
) -> Result<(), Vec<TranslateError>> {
    let Some(local) = &statics.local_zone else {
        return Ok(());
    };
    let of_local = statics
        .clusters
        .get(&local.cluster)
        .and_then(|c| c.eds.as_ref())
        .is_some_and(|eds| eds.name == proto.cluster_name);
    match proto.endpoints.iter().position(|g| g.priority > 0) {
        Some(l) if of_local => Err(vec![TranslateError::new(
            format!(
                "cluster_load_assignments[{:?}].endpoints[{l}].priority",
                proto.cluster_name
            ),
            None,
            resources::local_priority_error(&local.cluster),
        )]),
        _ => Ok(()),
    }
}
