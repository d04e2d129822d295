//! xDS: the agent's dynamic config sources. `client` speaks the ADS (and SDS) gRPC protocol;
//! the types here are the contract between it and the agent, which owns the resources,
//! translates them and answers each update with an ACK or a NACK.
pub mod client;

use std::{net::SocketAddr, path::PathBuf};

use envoy_types::pb::{envoy::config::core::v3::Node, google::protobuf::Any};

/// Which gRPC service a stream calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `envoy.service.discovery.v3.AggregatedDiscoveryService` (every type on one stream).
    Aggregated,
    /// `envoy.service.secret.v3.SecretDiscoveryService` (Istio's `sds-grpc`: secrets only).
    Secrets,
}

/// Where the control plane listens: the endpoint of the bootstrap cluster `envoy_grpc` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcTarget {
    Tcp(SocketAddr),
    /// A `pipe` address (Istio's `xds-grpc` and `sds-grpc` reach the local agent so).
    Unix(PathBuf),
}

/// Everything a stream needs to connect and identify itself.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    pub service: Service,
    pub target: GrpcTarget,
    /// `api_type: DELTA_GRPC` (incremental) instead of `GRPC` (state of the world).
    pub delta: bool,
    /// Sent on the first request of each stream, and on every request unless
    /// `set_node_on_first_message_only`.
    pub node: Node,
    pub set_node_on_first_message_only: bool,
    /// The cluster's `connect_timeout`.
    pub connect_timeout: std::time::Duration,
}

/// One resource of an update.
#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    /// Delta: the resource's own version; state of the world: the response's `version_info`.
    pub version: String,
    pub body: Any,
}

/// One discovery response, decoded.
#[derive(Debug, Clone)]
pub struct Update {
    pub type_url: String,
    /// State of the world: `version_info`; Delta: `system_version_info` (may be empty).
    pub version_info: String,
    pub nonce: String,
    pub resources: Vec<Resource>,
    /// Delta `removed_resources` (also names the server does not have).
    pub removed: Vec<String>,
    /// State of the world for a wildcard type (LDS, CDS): every resource of the type is in
    /// `resources`, so any other is removed.
    pub full_state: bool,
}

/// What the client tells the agent.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// A stream is open (`control_plane.connected_state` 1).
    Connected {
        service: Service,
    },
    /// The stream ended; the client reconnects with back-off by itself.
    Disconnected {
        service: Service,
        reason: String,
    },
    Update {
        service: Service,
        update: Update,
    },
}

/// Why an update was (partly) rejected: sent as the NACK's `error_detail.message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub message: String,
    /// The resources not accepted (their versions are not recorded as held).
    pub names: Vec<String>,
}
