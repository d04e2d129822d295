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
    let type_name = names::type_name(&response.type_url);
    let full_state = type_name == names::LISTENER || type_name == names::CLUSTER;
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
