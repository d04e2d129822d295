//! xDS transport: state-of-the-world requests (`DiscoveryRequest`) and responses decoded
//! into `Update`s.

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{DiscoveryRequest, DiscoveryResponse, Resource as Wrapped},
    },
    google::{protobuf::Any, rpc::Status},
};
use prost::Message;

use super::subscriptions::TypeState;
use crate::{
    dynamic::{CLUSTER, LISTENER},
    names,
    xds::{Resource, Update},
};

/// A request for `ty`: the full name list and the last accepted version. With no nonce it
/// starts (or restates) the subscription; with the nonce of a response it ACKs it, or NACKs
/// it when `error` is set (the version then stays the previously accepted one).
pub(super) fn request(
    ty: &TypeState,
    node: Option<Node>,
    nonce: String,
    error: Option<Status>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: ty.accepted_version.clone(),
        node,
        resource_names: ty.names.iter().cloned().collect(),
        type_url: ty.type_url.clone(),
        response_nonce: nonce,
        error_detail: error,
        ..Default::default()
    }
}

pub(super) fn decode(response: DiscoveryResponse) -> Update {
    // LDS and CDS responses hold every resource of the type; RDS, EDS and SDS ones only
    // some (xDS protocol, "state of the world").
    let full_state = response.type_url == LISTENER || response.type_url == CLUSTER;
    let resources = (response.resources.into_iter())
        .filter_map(|any| resource(any, &response.version_info))
        .collect();
    Update {
        type_url: response.type_url,
        version_info: response.version_info,
        nonce: response.nonce,
        resources,
        removed: Vec::new(),
        full_state,
    }
}

/// Every xDS resource message has its name as field 1, so reading only that field names
/// it without knowing its type.
#[derive(Clone, PartialEq, Message)]
struct NameField {
    #[prost(string, tag = "1")]
    name: String,
}

/// A resource of the response, unwrapped from `envoy.service.discovery.v3.Resource` when the
/// server wraps it; None for a wrapper without a body. A body that does not decode gets an
/// empty name: the agent decodes it in full and rejects it with the reason.
fn resource(any: Any, version: &str) -> Option<Resource> {
    if names::type_name(&any.type_url) == names::DISCOVERY_RESOURCE {
        let wrapped = Wrapped::decode(any.value.as_slice()).ok()?;
        return Some(Resource {
            name: wrapped.name,
            version: version.to_owned(),
            body: wrapped.resource?,
        });
    }
    let name = NameField::decode(any.value.as_slice()).map(|n| n.name);
    Some(Resource {
        name: name.unwrap_or_default(),
        version: version.to_owned(),
        body: any,
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment,
    };

    use super::*;
    use crate::dynamic::{ASSIGNMENT as EDS, CLUSTER as CDS};

    fn any<M: Message>(type_url: &str, message: &M) -> Any {
        Any {
            type_url: type_url.into(),
            value: message.encode_to_vec(),
        }
    }

    #[test]
    fn names_come_from_the_bodies_and_cds_is_full_state() {
        let cluster = Cluster {
            name: "backend".into(),
            ..Default::default()
        };
        let update = decode(DiscoveryResponse {
            version_info: "3".into(),
            resources: vec![any(CDS, &cluster), any(CDS, &Cluster::default())],
            type_url: CDS.into(),
            nonce: "n".into(),
            ..Default::default()
        });
        assert!(update.full_state);
        assert_eq!(
            (update.version_info.as_str(), update.nonce.as_str()),
            ("3", "n")
        );
        let names: Vec<_> = update.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["backend", ""]);
        assert!(update.resources.iter().all(|r| r.version == "3"));
        assert_eq!(
            Cluster::decode(update.resources[0].body.value.as_slice()),
            Ok(cluster)
        );
    }

    #[test]
    fn wrapped_resources_are_unwrapped_and_eds_is_not_full_state() {
        let cla = ClusterLoadAssignment {
            cluster_name: "backend".into(),
            ..Default::default()
        };
        let wrapper = Wrapped {
            name: "backend".into(),
            resource: Some(any(EDS, &cla)),
            ..Default::default()
        };
        let wrapper_url = "type.googleapis.com/envoy.service.discovery.v3.Resource";
        let update = decode(DiscoveryResponse {
            version_info: "1".into(),
            resources: vec![
                any(wrapper_url, &wrapper),
                any(wrapper_url, &Wrapped::default()),
            ],
            type_url: EDS.into(),
            ..Default::default()
        });
        assert!(!update.full_state);
        assert_eq!(update.resources.len(), 1, "a body-less wrapper is dropped");
        assert_eq!(update.resources[0].name, "backend");
        assert_eq!(update.resources[0].body.type_url, EDS);
    }

    #[test]
    fn an_undecodable_body_keeps_an_empty_name_for_the_agent_to_reject() {
        let update = decode(DiscoveryResponse {
            resources: vec![Any {
                type_url: CDS.into(),
                value: vec![0x0a, 0xff],
            }],
            type_url: CDS.into(),
            ..Default::default()
        });
        assert_eq!(update.resources.len(), 1);
        assert_eq!(update.resources[0].name, "");
    }
}
