//! Istio's metadata exchange and stats as configured: this proxy's own identity as peers and
//! metrics know it, and the filters' settings.
use std::sync::Arc;

use bytes::Bytes;

use crate::stats::istio::{IstioMetrics, Overrides};

/// A TCP exchange frame starts with this (big-endian), then the payload's length.
pub const EXCHANGE_MAGIC: u32 = 0x3D23_0467;
/// The payload's type: a `google.protobuf.Struct` of the two keys below.
pub const STRUCT_TYPE: &str = "type.googleapis.com/google.protobuf.Struct";
/// The node metadata's key in the frame, and the HTTP header carrying it.
pub const METADATA_KEY: &str = "x-envoy-peer-metadata";
/// The node id's key in the frame, and the HTTP header carrying it.
pub const METADATA_ID_KEY: &str = "x-envoy-peer-metadata-id";

/// This proxy's identity as Istio's metadata exchange sends it, made once from the bootstrap's
/// `node` (its id and the part of its metadata Istio exchanges).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LocalPeer {
    /// The node id (`x-envoy-peer-metadata-id`).
    pub id: Bytes,
    /// The exchanged metadata: a serialized `google.protobuf.Struct`, base64
    /// (`x-envoy-peer-metadata`).
    pub header: Bytes,
    /// The TCP exchange's frame: magic, length, and a `google.protobuf.Any` holding a `Struct`
    /// of the two above.
    pub frame: Bytes,
    /// What the stats filters label this proxy's own side with.
    pub workload: Arc<LocalWorkload>,
}

/// `istio.metadata_exchange` (`envoy.tcp.metadataexchange.config.MetadataExchange`) on a
/// downstream chain or an upstream cluster: once TLS negotiated `protocol`, each side sends
/// its frame first and reads the other's.
#[derive(Debug)]
pub struct MetadataExchange {
    pub protocol: Bytes,
    pub local: Arc<LocalPeer>,
}

/// This proxy's workload as Istio's stats label it, from the bootstrap node's metadata
/// (`WORKLOAD_NAME`, `NAMESPACE`, `CLUSTER_ID`, and the `LABELS` Istio reads); absent fields
/// are empty, as in Istio.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LocalWorkload {
    pub workload: Box<str>,
    pub namespace: Box<str>,
    pub cluster: Box<str>,
    /// `LABELS.app`, `LABELS.version`.
    pub app: Box<str>,
    pub version: Box<str>,
    /// `LABELS["service.istio.io/canonical-name"]` and `…/canonical-revision`.
    pub canonical_name: Box<str>,
    pub canonical_revision: Box<str>,
}

/// Istio's `istio.stats` (`stats.PluginConfig`), as an HTTP filter or a network one.
#[derive(Debug)]
pub struct StatsConfig {
    /// `reporter: SERVER_GATEWAY`: a waypoint reports (`reporter="waypoint"`); otherwise the
    /// listener's direction says (`INBOUND`: destination, else source).
    pub waypoint: bool,
    pub disable_host_header_fallback: bool,
    pub overrides: Arc<Overrides>,
    pub local: Arc<LocalWorkload>,
    pub metrics: Arc<IstioMetrics>,
}
