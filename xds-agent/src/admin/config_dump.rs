//! `/config_dump`: `envoy.admin.v3.ConfigDump` of the loaded bootstrap (its static
//! listeners and clusters), with Envoy's `resource`, `mask` and `include_eds` parameters.
use std::time::SystemTime;

use envoy_types::{
    pb::{
        envoy::admin::v3::{
            clusters_config_dump::StaticCluster, endpoints_config_dump::StaticEndpointConfig,
            listeners_config_dump::StaticListener, BootstrapConfigDump, ClustersConfigDump,
            ConfigDump, EndpointsConfigDump, ListenersConfigDump,
        },
        google::protobuf::{Any, Timestamp},
    },
    util::pack_any,
};
use hyper::StatusCode;
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

use super::{dynamic_dump, query::Query, reply::Reply};
use crate::agent::AgentState;

/// Why a config dump query was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpQueryError {
    #[error("{0} is not a repeated field. Use ?mask={0} to get only this field")]
    NotRepeated(String),
    #[error("no config dump has a resource field named {0:?}")]
    NoSuchResource(String),
}

impl DumpQueryError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotRepeated(_) => StatusCode::BAD_REQUEST,
            Self::NoSuchResource(_) => StatusCode::NOT_FOUND,
        }
    }
}

const ANY: &str = "google.protobuf.Any";

pub(super) fn timestamp(time: SystemTime) -> Timestamp {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since_epoch.as_secs() as i64,
        nanos: since_epoch.subsec_nanos() as i32,
    }
}

/// The dumps in Envoy's order: bootstrap, clusters, endpoints (`include_eds` only), listeners,
/// routes (when RDS is in use), secrets. Each carries the static resources and the dynamic
/// ones held.
pub fn dumps(state: &AgentState, include_eds: bool) -> Vec<Any> {
    let now = std::time::Instant::now();
    let dynamic = &state.dynamic;
    let updated = Some(timestamp(state.last_updated));
    let resources = state.bootstrap.static_resources.clone().unwrap_or_default();
    let mut configs = vec![pack_any(BootstrapConfigDump {
        bootstrap: Some(state.bootstrap.clone()),
        last_updated: updated,
    })];
    let mut clusters = ClustersConfigDump {
        static_clusters: resources
            .clusters
            .iter()
            .map(|cluster| StaticCluster {
                cluster: Some(pack_any(cluster.clone())),
                last_updated: updated,
            })
            .collect(),
        ..Default::default()
    };
    dynamic_dump::clusters(dynamic, &mut clusters, now);
    configs.push(pack_any(clusters));
    if include_eds {
        let mut endpoints = EndpointsConfigDump {
            static_endpoint_configs: resources
                .clusters
                .iter()
                .filter_map(|cluster| {
                    let mut assignment = cluster.load_assignment.clone()?;
                    if assignment.cluster_name.is_empty() {
                        assignment.cluster_name = cluster.name.clone();
                    }
                    Some(StaticEndpointConfig {
                        endpoint_config: Some(pack_any(assignment)),
                        last_updated: updated,
                    })
                })
                .collect(),
            ..Default::default()
        };
        dynamic_dump::endpoints(dynamic, &mut endpoints);
        configs.push(pack_any(endpoints));
    }
    let mut listeners = ListenersConfigDump {
        static_listeners: resources
            .listeners
            .iter()
            .map(|listener| StaticListener {
                listener: Some(pack_any(listener.clone())),
                last_updated: updated,
            })
            .collect(),
        ..Default::default()
    };
    dynamic_dump::listeners(dynamic, &mut listeners, now);
    configs.push(pack_any(listeners));
    configs.extend(dynamic_dump::routes(dynamic).map(pack_any));
    configs.push(pack_any(dynamic_dump::secrets(&resources.secrets, dynamic)));
    configs
}

/// An `Any`'s payload as a dynamic message (the types of the `Any`s inside it decoded into
/// the pool too); `None` when its type is not in the pool.
fn decode(any: &Any) -> Option<DynamicMessage> {
    proto::load_named_in(&any.value);
    let descriptor = proto::message(crate::names::type_name(&any.type_url))?;
    DynamicMessage::decode(descriptor, any.value.as_slice()).ok()
}

fn repack(message: &DynamicMessage) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{}", message.descriptor().full_name()),
        value: message.encode_to_vec(),
    }
}

/// `?resource=<field>`: the elements of that repeated field of every dump that has it.
pub fn select_resource(configs: &[Any], resource: &str) -> Result<Vec<Any>, DumpQueryError> {
    let mut found = false;
    let mut out = Vec::new();
    for dump in configs.iter().filter_map(decode) {
        let Some(field) = dump.descriptor().get_field_by_name(resource) else {
            continue;
        };
        if !field.is_list() || !matches!(field.kind(), Kind::Message(_)) {
            return Err(DumpQueryError::NotRepeated(resource.into()));
        }
        found = true;
        if let Value::List(items) = dump.get_field(&field).as_ref() {
            out.extend(items.iter().filter_map(Value::as_message).map(repack));
        }
    }
    if found {
        Ok(out)
    } else {
        Err(DumpQueryError::NoSuchResource(resource.into()))
    }
}

/// `?mask=a.b,c`: keeps only the listed field paths of each config (descending into repeated
/// messages element by element); the config's type stays.
pub fn apply_mask(configs: &[Any], mask: &str) -> Vec<Any> {
    let paths: Vec<Vec<&str>> = mask
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split('.').collect())
        .collect();
    configs.iter().map(|any| trim_any(any, &paths)).collect()
}

/// Trims inside an `Any` (the mask reaches into packed resources, as Envoy's does); an `Any`
/// of a type we do not know is kept whole.
fn trim_any(any: &Any, paths: &[Vec<&str>]) -> Any {
    match decode(any) {
        Some(mut message) => {
            trim(&mut message, paths);
            repack(&message)
        }
        None => any.clone(),
    }
}

fn trim(message: &mut DynamicMessage, paths: &[Vec<&str>]) {
    let fields: Vec<_> = message.descriptor().fields().collect();
    for field in fields {
        let sub: Vec<Vec<&str>> = paths
            .iter()
            .filter(|p| p.first() == Some(&field.name()))
            .map(|p| p[1..].to_vec())
            .collect();
        if sub.is_empty() {
            message.clear_field(&field);
        } else if sub.iter().all(|p| !p.is_empty()) && message.has_field(&field) {
            match message.get_field_mut(&field) {
                Value::Message(inner) if inner.descriptor().full_name() == ANY => {
                    if let Ok(any) = inner.transcode_to::<Any>() {
                        let trimmed = trim_any(&any, &sub);
                        // Both sides are `google.protobuf.Any`: transcoding cannot fail.
                        let _ = inner.transcode_from(&trimmed);
                    }
                }
                Value::Message(inner) => trim(inner, &sub),
                Value::List(items) => items
                    .iter_mut()
                    .filter_map(Value::as_message_mut)
                    .for_each(|inner| trim(inner, &sub)),
                _ => {}
            }
        }
    }
}

/// `GET /config_dump`.
pub fn handle(state: &AgentState, query: &Query) -> Reply {
    let mut configs = dumps(state, query.has("include_eds"));
    if let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) {
        configs = match select_resource(&configs, resource) {
            Ok(selected) => selected,
            Err(e) => return Reply::text(e.status(), format!("{e}\n")),
        };
    }
    if let Some(mask) = query.get("mask").filter(|m| !m.is_empty()) {
        configs = apply_mask(&configs, mask);
    }
    Reply::json(&proto::to_json(&ConfigDump { configs }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::fixture;

    fn dump(query: &str) -> (StatusCode, serde_json::Value) {
        let reply = handle(&fixture::state(), &Query::parse(query).unwrap());
        let body = serde_json::from_slice(&reply.body).unwrap_or_default();
        (reply.status, body)
    }

    fn types(json: &serde_json::Value) -> Vec<&str> {
        json["configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["@type"].as_str().unwrap().rsplit('.').next().unwrap())
            .collect()
    }

    #[test]
    fn static_dump_shape() {
        let (status, json) = dump("");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            types(&json),
            [
                "BootstrapConfigDump",
                "ClustersConfigDump",
                "ListenersConfigDump",
                "SecretsConfigDump"
            ]
        );
        let configs = &json["configs"];
        assert_eq!(configs[0]["bootstrap"]["node"]["id"], "node-1");
        assert_eq!(configs[0]["last_updated"], "2023-11-14T22:13:20Z");
        let cluster = &configs[1]["static_clusters"][0];
        assert_eq!(
            cluster["cluster"]["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(cluster["cluster"]["name"], "backend");
        assert_eq!(cluster["last_updated"], "2023-11-14T22:13:20Z");
        let listener = &configs[2]["static_listeners"][0]["listener"];
        assert_eq!(
            listener["@type"],
            "type.googleapis.com/envoy.config.listener.v3.Listener"
        );
        assert_eq!(listener["address"]["socket_address"]["port_value"], 10000);
    }

    #[test]
    fn include_eds_adds_endpoints() {
        let (_, json) = dump("include_eds");
        assert_eq!(types(&json)[2], "EndpointsConfigDump");
        let assignment = &json["configs"][2]["static_endpoint_configs"][0]["endpoint_config"];
        assert_eq!(assignment["cluster_name"], "backend");
    }

    #[test]
    fn resource_and_mask() {
        let (_, json) = dump("resource=static_clusters&mask=cluster.name");
        assert_eq!(
            json,
            serde_json::json!({"configs": [{
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
                "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "backend"}
            }]})
        );
        let (status, _) = dump("resource=version_info");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = dump("resource=nothing_here");
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
