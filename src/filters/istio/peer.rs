//! A peer workload's identity as Istio's metadata exchange tells it: the fields of its node
//! metadata (a `google.protobuf.Struct`) that telemetry and policy read.
use prost::Message;
use prost_types::{value::Kind, Struct, Value};

/// The label naming a workload's canonical service.
pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
/// The label naming a workload's canonical revision.
pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// The parts of a peer's node metadata shardproxy reads; absent fields are empty.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its node id (`x-envoy-peer-metadata-id`), when sent.
    pub id: Box<str>,
    /// `NAME`: the pod.
    pub name: Box<str>,
    pub namespace: Box<str>,
    /// `WORKLOAD_NAME`: the deployment (or other owner) of the pod.
    pub workload: Box<str>,
    /// `CLUSTER_ID`.
    pub cluster: Box<str>,
    /// `LABELS`, as sent.
    pub labels: Box<[(Box<str>, Box<str>)]>,
}

impl Peer {
    /// The peer in a serialized `Struct` of node metadata.
    pub fn decode(metadata: &[u8], id: &str) -> Option<Self> {
        Some(Self::from_struct(&Struct::decode(metadata).ok()?, id))
    }

    pub fn from_struct(metadata: &Struct, id: &str) -> Self {
        let text = |key: &str| -> Box<str> {
            match metadata.fields.get(key).and_then(|v| v.kind.as_ref()) {
                Some(Kind::StringValue(s)) => s.as_str().into(),
                _ => "".into(),
            }
        };
        let labels = match metadata.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
            Some(Kind::StructValue(labels)) => labels
                .fields
                .iter()
                .filter_map(|(key, value)| match &value.kind {
                    Some(Kind::StringValue(s)) => Some((key.as_str().into(), s.as_str().into())),
                    _ => None,
                })
                .collect(),
            _ => Box::default(),
        };
        Self {
            id: id.into(),
            name: text("NAME"),
            namespace: text("NAMESPACE"),
            workload: text("WORKLOAD_NAME"),
            cluster: text("CLUSTER_ID"),
            labels,
        }
    }

    /// The workload a W3C `baggage` header describes (Istio's keys: `k8s.namespace.name`,
    /// `k8s.cluster.name`, `k8s.<kind>.name` for the workload, `service.name` and
    /// `service.version` as the canonical service and revision, `app.name`, `app.version`).
    pub fn from_baggage(baggage: &str) -> Self {
        let mut peer = Self::default();
        let mut labels = Vec::new();
        for (key, value) in baggage
            .split(',')
            .filter_map(|member| member.trim().split_once('='))
        {
            let value: Box<str> = value.into();
            let label = |name: &str| (Box::<str>::from(name), value.clone());
            match key {
                "k8s.namespace.name" => peer.namespace = value,
                "k8s.cluster.name" => peer.cluster = value,
                // A pod or job names its instance too.
                "k8s.pod.name" | "k8s.job.name" => {
                    peer.name = value.clone();
                    peer.workload = value;
                }
                "k8s.deployment.name" | "k8s.cronjob.name" => peer.workload = value,
                "service.name" => labels.push(label(CANONICAL_NAME)),
                "service.version" => labels.push(label(CANONICAL_REVISION)),
                "app.name" => labels.push(label("app")),
                "app.version" => labels.push(label("version")),
                _ => {}
            }
        }
        peer.labels = labels.into();
        peer
    }

    /// The label `key`'s value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }
}

/// The string in `value`, if it is one.
pub fn string(value: &Value) -> Option<&str> {
    match &value.kind {
        Some(Kind::StringValue(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    #[test]
    fn reads_the_node_metadata_istio_sends() {
        let labels = Struct {
            fields: [
                ("app".to_string(), text("reviews")),
                ("version".to_string(), text("v2")),
            ]
            .into(),
        };
        let metadata = Struct {
            fields: [
                ("NAMESPACE".to_string(), text("default")),
                ("WORKLOAD_NAME".to_string(), text("reviews-v2")),
                ("NAME".to_string(), text("reviews-v2-abc")),
                ("CLUSTER_ID".to_string(), text("Kubernetes")),
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(Kind::StructValue(labels)),
                    },
                ),
            ]
            .into(),
        };
        let peer = Peer::decode(&metadata.encode_to_vec(), "sidecar~1").unwrap();
        assert_eq!(&*peer.workload, "reviews-v2");
        assert_eq!(&*peer.namespace, "default");
        assert_eq!(&*peer.cluster, "Kubernetes");
        assert_eq!(peer.label("version"), Some("v2"));
        assert_eq!(&*peer.id, "sidecar~1");
        assert!(Peer::decode(b"\xff\xff", "").is_none());
    }
}
