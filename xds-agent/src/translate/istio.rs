//! Translator: Istio's metadata exchange — this proxy's identity as its peers learn it (from
//! the bootstrap's `node`), and the `istio.metadata_exchange` network filter on chains and
//! clusters.
use std::sync::Arc;

use base64::{engine::general_purpose::STANDARD, Engine};
use bytes::Bytes;
use envoy_types::pb::{
    envoy::config::core::v3::Node,
    google::protobuf::{value::Kind, Any, Struct, Value},
};
use prost::{
    encoding::{encode_key, encode_varint, WireType},
    Message,
};

use super::{decode_typed, TranslateError};
use model::istio::{
    LocalPeer, LocalWorkload, MetadataExchange, EXCHANGE_MAGIC, METADATA_ID_KEY, METADATA_KEY,
    STRUCT_TYPE,
};
use proto::istio::metadata_exchange::MetadataExchange as MetadataExchangeProto;

/// The node metadata keys Istio's exchange carries (its node schema); the others (proxy
/// config, agent settings) stay home.
const EXCHANGED: &[&str] = &[
    "NAME",
    "NAMESPACE",
    "OWNER",
    "WORKLOAD_NAME",
    "ISTIO_VERSION",
    "MESH_ID",
    "CLUSTER_ID",
    "LABELS",
    "PLATFORM_METADATA",
    "APP_CONTAINERS",
    "INSTANCE_IPS",
];

/// This proxy's identity for the exchange, from the bootstrap's `node`.
pub fn local_peer(node: Option<&Node>) -> LocalPeer {
    let id = node.map(|n| n.id.clone()).unwrap_or_default();
    let metadata = Struct {
        fields: node
            .and_then(|n| n.metadata.as_ref())
            .into_iter()
            .flat_map(|m| &m.fields)
            .filter(|(key, _)| EXCHANGED.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
    };
    let both = Struct {
        fields: [
            (
                METADATA_KEY.to_string(),
                Kind::StructValue(metadata.clone()),
            ),
            (METADATA_ID_KEY.to_string(), Kind::StringValue(id.clone())),
        ]
        .into_iter()
        .map(|(key, kind)| (key, Value { kind: Some(kind) }))
        .collect(),
    };
    let payload = Any {
        type_url: STRUCT_TYPE.into(),
        value: canonical_struct(&both),
    }
    .encode_to_vec();
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&EXCHANGE_MAGIC.to_be_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let workload = Arc::new(local_workload(&metadata));
    LocalPeer {
        workload,
        id: Bytes::from(id),
        header: Bytes::from(STANDARD.encode(canonical_struct(&metadata))),
        frame: Bytes::from(frame),
    }
}

/// The binary encoding of `message` with its fields in key order, at every depth. prost writes
/// a map in its hash order, which differs between two maps with the same entries: the same
/// node would give other bytes on each translation.
fn canonical_struct(message: &Struct) -> Vec<u8> {
    let mut keys: Vec<&String> = message.fields.keys().collect();
    keys.sort_unstable();
    let mut out = Vec::new();
    for key in keys {
        // A map entry: the key is field 1, the value field 2.
        let mut entry = Vec::new();
        length_delimited(1, key.as_bytes(), &mut entry);
        length_delimited(2, &canonical_value(&message.fields[key]), &mut entry);
        length_delimited(1, &entry, &mut out);
    }
    out
}

/// A `Value`'s encoding with the structs inside it in key order.
fn canonical_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match &value.kind {
        Some(Kind::StructValue(inner)) => length_delimited(5, &canonical_struct(inner), &mut out),
        Some(Kind::ListValue(list)) => {
            let mut items = Vec::new();
            for item in &list.values {
                length_delimited(1, &canonical_value(item), &mut items);
            }
            length_delimited(6, &items, &mut out);
        }
        _ => value.encode(&mut out).expect("a Vec grows"),
    }
    out
}

fn length_delimited(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// What the stats filters label this proxy with, from its node metadata.
fn local_workload(metadata: &Struct) -> LocalWorkload {
    let text = |fields: &std::collections::HashMap<String, Value>, key: &str| -> Box<str> {
        match fields.get(key).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => s.as_str().into(),
            _ => "".into(),
        }
    };
    let labels = match metadata.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(labels)) => labels.fields.clone(),
        _ => Default::default(),
    };
    LocalWorkload {
        workload: text(&metadata.fields, "WORKLOAD_NAME"),
        namespace: text(&metadata.fields, "NAMESPACE"),
        cluster: text(&metadata.fields, "CLUSTER_ID"),
        app: text(&labels, "app"),
        version: text(&labels, "version"),
        canonical_name: text(&labels, "service.istio.io/canonical-name"),
        canonical_revision: text(&labels, "service.istio.io/canonical-revision"),
    }
}

/// `istio.metadata_exchange` at `path` (a chain's network filter or a cluster's upstream
/// one).
pub fn metadata_exchange(
    any: &Any,
    path: &str,
    local: &Arc<LocalPeer>,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<MetadataExchange>> {
    let config: MetadataExchangeProto = decode_typed(any, path, errors)?;
    let mut ok = true;
    if config.protocol.is_empty() {
        errors.push(TranslateError::new(
            format!("{path}.protocol"),
            Some(&any.type_url),
            "the ALPN protocol that starts the exchange is required (Istio's is istio-peer-exchange)",
        ));
        ok = false;
    }
    if !config.additional_labels.is_empty() {
        errors.push(TranslateError::new(
            format!("{path}.additional_labels"),
            Some(&any.type_url),
            "additional labels are not exchanged: only Istio's standard node metadata is",
        ));
        ok = false;
    }
    ok.then(|| {
        Arc::new(MetadataExchange {
            protocol: Bytes::from(config.protocol),
            local: local.clone(),
        })
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::ListValue;

    use super::*;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    #[test]
    fn the_frame_carries_the_exchanged_metadata_and_the_id() {
        let node = Node {
            id: "sidecar~10.0.0.1~app-1.ns~ns.svc.cluster.local".into(),
            metadata: Some(Struct {
                fields: [
                    ("NAMESPACE".to_string(), string("ns")),
                    ("PROXY_CONFIG".to_string(), string("kept home")),
                    (
                        "INSTANCE_IPS".to_string(),
                        Value {
                            kind: Some(Kind::ListValue(ListValue { values: vec![] })),
                        },
                    ),
                ]
                .into(),
            }),
            ..Default::default()
        };
        let peer = local_peer(Some(&node));
        assert_eq!(peer.id, "sidecar~10.0.0.1~app-1.ns~ns.svc.cluster.local");
        assert_eq!(peer.frame[..4], EXCHANGE_MAGIC.to_be_bytes());
        let length = u32::from_be_bytes(peer.frame[4..8].try_into().unwrap()) as usize;
        assert_eq!(peer.frame.len(), 8 + length);
        let any = Any::decode(&peer.frame[8..]).unwrap();
        assert_eq!(any.type_url, STRUCT_TYPE);
        let both = Struct::decode(any.value.as_slice()).unwrap();
        let Some(Kind::StructValue(metadata)) = &both.fields[METADATA_KEY].kind else {
            panic!("{both:?}");
        };
        assert_eq!(metadata.fields["NAMESPACE"], string("ns"));
        assert!(!metadata.fields.contains_key("PROXY_CONFIG"));
        assert_eq!(both.fields[METADATA_ID_KEY], string(&node.id));
        let header = Struct::decode(STANDARD.decode(&peer.header).unwrap().as_slice()).unwrap();
        assert_eq!(&header, metadata);
    }

    /// fuzz/translator's determinism check: the frame and header were the prost encoding,
    /// whose map order is each map's hash order, so two translations of one node differed.
    #[test]
    fn the_same_node_gives_the_same_bytes() {
        let labels = Struct {
            fields: [
                "app",
                "version",
                "service.istio.io/canonical-name",
                "team",
                "tier",
            ]
            .into_iter()
            .map(|k| (k.to_string(), string(k)))
            .collect(),
        };
        let mut fields: std::collections::HashMap<String, Value> = EXCHANGED
            .iter()
            .map(|k| (k.to_string(), string(&k.to_lowercase())))
            .collect();
        fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
        fields.insert(
            "INSTANCE_IPS".into(),
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![string("10.0.0.1"), Value { kind: None }],
                })),
            },
        );
        let node = Node {
            id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local".into(),
            metadata: Some(Struct { fields }),
            ..Default::default()
        };
        let first = local_peer(Some(&node));
        for _ in 0..8 {
            let again = local_peer(Some(&node));
            assert_eq!(again.frame, first.frame);
            assert_eq!(again.header, first.header);
        }
        let any = Any::decode(&first.frame[8..]).unwrap();
        let both = Struct::decode(any.value.as_slice()).unwrap();
        assert_eq!(
            both.fields[METADATA_KEY].kind,
            Some(Kind::StructValue(node.metadata.clone().unwrap()))
        );
    }
}
