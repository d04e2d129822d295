//! Istio's HTTP metadata exchange (`io.istio.http.peer_metadata`): a client sidecar sends its
//! workload's metadata upstream in `x-envoy-peer-metadata` (a base64 `google.protobuf.Struct`)
//! and `x-envoy-peer-metadata-id`; the server sidecar reads and removes them (its downstream
//! peer) and answers with its own, which the client reads and removes (its upstream peer).
use std::rc::Rc;

use base64::{
    alphabet::STANDARD,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine,
};
use model::{
    filters::PeerMetadataConfig,
    istio::{METADATA_ID_KEY, METADATA_KEY},
    route::{ClusterSpecifier, RouteAction},
};

use crate::{
    filters::istio::peer::Peer,
    stream::{
        headers::{Headers, RequestHead, ResponseHead},
        StreamContext,
    },
};

/// Envoy decodes the header with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn on_request(config: &PeerMetadataConfig, cx: &StreamContext<'_>, request: &mut RequestHead) {
    if config.downstream_discovery {
        let headers = &mut request.headers;
        cx.notes.peer_headers_received(
            headers.get(METADATA_ID_KEY).is_some(),
            headers.get(METADATA_KEY).is_some(),
        );
        if let Some(peer) = take_peer(headers) {
            cx.notes.set_downstream_peer(peer);
        }
    }
    if config.upstream_propagation && !skips_cluster(config, cx) {
        let local = &config.local;
        request.headers.set(METADATA_ID_KEY, local.id.clone());
        request.headers.set(METADATA_KEY, local.header.clone());
    }
}

pub fn on_response(
    config: &PeerMetadataConfig,
    cx: &StreamContext<'_>,
    response: &mut ResponseHead,
) {
    if config.upstream_discovery {
        if let Some(peer) = take_peer(&mut response.headers) {
            cx.notes.set_upstream_peer(peer);
        }
    }
    if config.downstream_propagation {
        let (id, value) = cx.notes.received_peer_headers();
        let local = &config.local;
        if id {
            response.headers.set(METADATA_ID_KEY, local.id.clone());
        }
        if value {
            response.headers.set(METADATA_KEY, local.header.clone());
        }
    }
}

/// The peer the headers carry (none when absent or not a `Struct`); the headers are removed
/// either way.
fn take_peer(headers: &mut Headers) -> Option<Rc<Peer>> {
    let id = headers.get(METADATA_ID_KEY).cloned().unwrap_or_default();
    let value = headers.get(METADATA_KEY).cloned();
    headers.remove(METADATA_ID_KEY);
    headers.remove(METADATA_KEY);
    let metadata = BASE64.decode(value?).ok()?;
    let id = std::str::from_utf8(&id).unwrap_or_default();
    Peer::decode(&metadata, id).map(Rc::new)
}

/// `skip_external_clusters` and the route's cluster is external (`PassthroughCluster`, or
/// `istio` metadata `external: true`), or the cluster's `istio` metadata says `disable_mx`.
/// Only a route naming one cluster is looked at: a weighted pick is made later.
fn skips_cluster(config: &PeerMetadataConfig, cx: &StreamContext<'_>) -> bool {
    let Some(RouteAction::Forward(forward)) = cx.route.map(|r| &r.action) else {
        return false;
    };
    let ClusterSpecifier::Name(name) = &forward.cluster else {
        return false;
    };
    let Some(cluster) = cx.shard.clusters.borrow().resolve(name) else {
        return false;
    };
    let cluster = &cluster.config;
    let flag = |key| {
        cluster
            .metadata
            .get("istio", &[key])
            .and_then(|v| v.as_bool())
    };
    let external = cluster.name == "PassthroughCluster" || flag("external") == Some(true);
    (config.skip_external_clusters && external) || flag("disable_mx") == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use prost_types::{value::Kind, Struct, Value};

    #[test]
    fn reads_and_removes_the_peer_headers() {
        let metadata = Struct {
            fields: [(
                "WORKLOAD_NAME".to_string(),
                Value {
                    kind: Some(Kind::StringValue("productpage-v1".into())),
                },
            )]
            .into(),
        };
        let mut headers = Headers::default();
        // Without padding, as some peers send it.
        let encoded =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(metadata.encode_to_vec());
        headers.set(METADATA_KEY, encoded);
        headers.set(METADATA_ID_KEY, "sidecar~10.0.0.9~pp");
        let peer = take_peer(&mut headers).unwrap();
        assert_eq!(&*peer.workload, "productpage-v1");
        assert_eq!(&*peer.id, "sidecar~10.0.0.9~pp");
        assert!(headers.get(METADATA_KEY).is_none());
        assert!(headers.get(METADATA_ID_KEY).is_none());
        headers.set(METADATA_KEY, "not base64 !");
        assert!(take_peer(&mut headers).is_none());
        assert!(headers.get(METADATA_KEY).is_none());
    }
}
