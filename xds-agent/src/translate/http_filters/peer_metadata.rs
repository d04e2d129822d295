//! Translator: Istio's `io.istio.http.peer_metadata` (the HTTP `istio.metadata_exchange`) —
//! peers discovered from and propagated in the `x-envoy-peer-metadata(-id)` headers.
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;

use super::common::Site;
use crate::translate::{TranslateContext, TranslateError};
use model::filters::{HttpFilterKind, PeerMetadataConfig};
use proto::istio::peer_metadata::{
    config::{discovery_method, propagation_method, DiscoveryMethod, PropagationMethod},
    Config,
};

pub(super) fn filter(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let config: Config = super::decode(any, site, errors)?;
    if !config.additional_labels.is_empty() {
        errors.push(site.error(
            "additional_labels",
            "additional labels are not exchanged: only Istio's standard node metadata is",
        ));
        return None;
    }
    let downstream = discovery(
        &config.downstream_discovery,
        "downstream_discovery",
        site,
        errors,
    );
    let upstream = discovery(
        &config.upstream_discovery,
        "upstream_discovery",
        site,
        errors,
    );
    let (to_downstream, skip_down) = propagation(&config.downstream_propagation);
    let (to_upstream, skip_up) = propagation(&config.upstream_propagation);
    Some(HttpFilterKind::PeerMetadata(Arc::new(PeerMetadataConfig {
        downstream_discovery: downstream?,
        upstream_discovery: upstream?,
        upstream_propagation: to_upstream,
        downstream_propagation: to_downstream,
        skip_external_clusters: skip_down || skip_up,
        local: ctx.local_peer.clone(),
    })))
}

/// The filter as Istio's older null-VM plugin (`envoy.wasm.metadata_exchange`) ran it: both
/// peers read from the headers, and this proxy's metadata sent both ways.
pub(super) fn both_ways(ctx: &TranslateContext) -> HttpFilterKind {
    HttpFilterKind::PeerMetadata(Arc::new(PeerMetadataConfig {
        downstream_discovery: true,
        upstream_discovery: true,
        upstream_propagation: true,
        downstream_propagation: true,
        skip_external_clusters: false,
        local: ctx.local_peer.clone(),
    }))
}

/// Whether `methods` read the Istio headers. Workload discovery (Istio's WDS, for ambient
/// mode) and baggage (deprecated by Istio) find nothing here: they are tried after the
/// headers in Istio's configs, as fallbacks.
fn discovery(
    methods: &[DiscoveryMethod],
    field: &str,
    site: &Site,
    errors: &mut Vec<TranslateError>,
) -> Option<bool> {
    let mut headers = false;
    for (i, method) in methods.iter().enumerate() {
        match &method.method_specifier {
            Some(discovery_method::MethodSpecifier::IstioHeaders(_)) => headers = true,
            Some(
                discovery_method::MethodSpecifier::WorkloadDiscovery(_)
                | discovery_method::MethodSpecifier::Baggage(_),
            ) => {}
            None => {
                errors.push(site.error(&format!("{field}[{i}]"), "a discovery method is required"));
                return None;
            }
        }
    }
    Some(headers)
}

/// Whether `methods` send the Istio headers, and whether they skip external clusters.
fn propagation(methods: &[PropagationMethod]) -> (bool, bool) {
    methods.iter().fold((false, false), |(on, skip), method| {
        match &method.method_specifier {
            Some(propagation_method::MethodSpecifier::IstioHeaders(headers)) => {
                (true, skip || headers.skip_external_clusters)
            }
            None => (on, skip),
        }
    })
}
