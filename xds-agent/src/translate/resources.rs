//! Translator: one xDS resource at a time (Cluster, ClusterLoadAssignment, Listener,
//! RouteConfiguration). The same walker and semantic passes as the bootstrap; error paths
//! start at the resource (`clusters["name"].connect_timeout`) so a NACK names the resource,
//! the field and the reason.
use std::{collections::HashSet, sync::Arc};

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster as ClusterProto, endpoint::v3::ClusterLoadAssignment,
    listener::v3::Listener as ListenerProto, route::v3::RouteConfiguration,
};

use super::{
    cluster, http_connection_manager::Problems, listener, route, support::unsupported_fields,
    TranslateContext, TranslateError,
};
use model::{route::RouteConfig, Cluster, Endpoint, Listener};

/// The result of translating one resource: its model, or every problem found.
pub type Translated<T> = Result<T, Vec<TranslateError>>;

/// Runs the semantic pass after the walker's findings (`errors`); the model only when
/// neither found a problem. (The semantic pass reports why whenever it returns `None`.)
fn checked<T>(
    mut errors: Vec<TranslateError>,
    build: impl FnOnce(&mut Vec<TranslateError>) -> Option<T>,
) -> Translated<T> {
    match build(&mut errors) {
        Some(model) if errors.is_empty() => Ok(model),
        _ => Err(errors),
    }
}

/// A resource's name is required: it is how xDS tells resources apart.
fn named(name: &str, path: &str, errors: &mut Vec<TranslateError>) -> Option<()> {
    if name.is_empty() {
        errors.push(TranslateError::new(
            format!("{path}.name"),
            None,
            "name is required",
        ));
        return None;
    }
    Some(())
}

/// A CDS cluster. An EDS cluster comes without endpoints (`Cluster::eds` names its
/// assignment).
pub fn cluster(proto: &ClusterProto, ctx: &mut TranslateContext) -> Translated<Arc<Cluster>> {
    let path = format!("clusters[{:?}]", proto.name);
    checked(unsupported_fields(proto, &path, None), |errors| {
        named(&proto.name, &path, errors)?;
        cluster::cluster(proto, &path, ctx, errors)
    })
}

pub use super::cluster::local_priority_error;

/// An EDS assignment's endpoints.
pub fn assignment(proto: &ClusterLoadAssignment) -> Translated<Arc<[Endpoint]>> {
    let path = format!("cluster_load_assignments[{:?}]", proto.cluster_name);
    checked(unsupported_fields(proto, &path, None), |errors| {
        let endpoints = cluster::assignment_endpoints(proto, &path, errors);
        Some(endpoints.into())
    })
}

/// An LDS listener. Clusters named by its filters (tcp_proxy, an inline route table) must be
/// in `clusters`, as Envoy validates inline tables against its cluster manager.
pub fn listener(
    proto: &ListenerProto,
    clusters: &HashSet<&str>,
    ctx: &mut TranslateContext,
) -> Translated<Arc<Listener>> {
    let path = format!("listeners[{:?}]", proto.name);
    checked(unsupported_fields(proto, &path, None), |errors| {
        named(&proto.name, &path, errors)?;
        listener::listener(proto, &path, clusters, ctx, errors)
    })
}

/// An RDS route table (clusters are checked only when `validate_clusters` is set).
pub fn route_config(
    proto: &RouteConfiguration,
    clusters: &HashSet<&str>,
    ctx: &mut TranslateContext,
) -> Translated<Arc<RouteConfig>> {
    let path = format!("route_configs[{:?}]", proto.name);
    checked(unsupported_fields(proto, &path, None), |errors| {
        named(&proto.name, &path, errors)?;
        let mut p = Problems { url: None, errors };
        route::route_config(proto, &path, clusters, false, ctx, &mut p)
    })
}
