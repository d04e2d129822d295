//! xDS transport: incremental (Delta) requests — subscription diffs, initial resource
//! versions, ACK/NACK by nonce — and responses decoded into `Update`s.

use std::collections::BTreeSet;

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse},
    },
    google::rpc::Status,
};
use tracing::debug;

use super::subscriptions::TypeState;
use crate::xds::{Resource, Update};

/// The name that subscribes to every resource of a type.
const WILDCARD: &str = "*";

/// The first request of `ty` on a stream: its names (none for a wildcard, the legacy form
/// Envoy sends) and the version of every resource it holds, so the server sends only what
/// changed.
pub(super) fn first_request(ty: &mut TypeState, node: Option<Node>) -> DeltaDiscoveryRequest {
    ty.told_server = server_view(ty);
    ty.names_changed = false;
    DeltaDiscoveryRequest {
        node,
        type_url: ty.type_url.clone(),
        resource_names_subscribe: ty.names.iter().cloned().collect(),
        initial_resource_versions: ty.held.clone().into_iter().collect(),
        ..Default::default()
    }
}

/// A later request of `ty`: the subscription changes since the server was last told, and the
/// ACK (or NACK, with `error`) of response `nonce` when it is not empty.
pub(super) fn request(
    ty: &mut TypeState,
    node: Option<Node>,
    nonce: String,
    error: Option<Status>,
) -> DeltaDiscoveryRequest {
    let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
    if ty.names_changed {
        let wanted = server_view(ty);
        subscribe = wanted.difference(&ty.told_server).cloned().collect();
        unsubscribe = ty.told_server.difference(&wanted).cloned().collect();
        ty.told_server = wanted;
        ty.names_changed = false;
    }
    DeltaDiscoveryRequest {
        node,
        type_url: ty.type_url.clone(),
        resource_names_subscribe: subscribe,
        resource_names_unsubscribe: unsubscribe,
        response_nonce: nonce,
        error_detail: error,
        ..Default::default()
    }
}

/// The subscription as the server sees it: a wildcard is the name `*`.
fn server_view(ty: &TypeState) -> BTreeSet<String> {
    if ty.wildcard {
        BTreeSet::from([WILDCARD.to_owned()])
    } else {
        ty.names.clone()
    }
}

pub(super) fn decode(response: DeltaDiscoveryResponse) -> Update {
    let resources = (response.resources.into_iter())
        .filter_map(|r| match r.resource {
            Some(body) => Some(Resource {
                name: r.name,
                version: r.version,
                body,
            }),
            None => {
                // A body-less resource only refreshes a TTL, which is not supported.
                debug!(name = %r.name, "Delta xDS resource without a body ignored");
                None
            }
        })
        .collect();
    Update {
        type_url: response.type_url,
        version_info: response.system_version_info,
        nonce: response.nonce,
        resources,
        removed: response.removed_resources,
        full_state: false,
    }
}
