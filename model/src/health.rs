//! Host health: Envoy's health flags, the active health check and outlier detection configs of
//! a cluster, and the verdicts the agent publishes to shards (which hosts checks or outlier
//! detection keep out of load balancing).
use std::{
    collections::HashMap,
    net::SocketAddr,
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::stats::{HealthCheckStats, OutlierStats};

/// Why a host is kept out of (or only a fallback in) load balancing: Envoy's health flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HealthFlags(u8);

impl HealthFlags {
    pub const NONE: Self = Self(0);
    /// The active health check failed (or has not passed yet).
    pub const FAILED_ACTIVE_HC: Self = Self(1);
    /// The active health check passed with `x-envoy-degraded`.
    pub const DEGRADED_ACTIVE_HC: Self = Self(2);
    /// Ejected by outlier detection.
    pub const FAILED_OUTLIER_CHECK: Self = Self(4);
    /// EDS says UNHEALTHY or TIMEOUT.
    pub const FAILED_EDS_HEALTH: Self = Self(8);
    /// EDS says DEGRADED.
    pub const DEGRADED_EDS_HEALTH: Self = Self(16);
    /// The last failed active check timed out.
    pub const ACTIVE_HC_TIMEOUT: Self = Self(32);
    /// EDS says DRAINING: the host is excluded from load balancing altogether (not even
    /// counted for the panic threshold), as Envoy excludes it.
    pub const EDS_STATUS_DRAINING: Self = Self(64);

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: Self) {
        self.0 &= !other.0;
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Envoy's coarse health: any failure flag makes the host unhealthy, else any degraded
    /// flag degraded.
    pub fn coarse(self) -> CoarseHealth {
        let failed = Self::FAILED_ACTIVE_HC.0
            | Self::FAILED_OUTLIER_CHECK.0
            | Self::FAILED_EDS_HEALTH.0
            | Self::EDS_STATUS_DRAINING.0;
        let degraded = Self::DEGRADED_ACTIVE_HC.0 | Self::DEGRADED_EDS_HEALTH.0;
        if self.0 & failed != 0 {
            CoarseHealth::Unhealthy
        } else if self.0 & degraded != 0 {
            CoarseHealth::Degraded
        } else {
            CoarseHealth::Healthy
        }
    }

    /// The flags as `/clusters` prints them (`healthy` when none is set).
    pub fn describe(self) -> String {
        const NAMES: [(HealthFlags, &str); 7] = [
            (HealthFlags::FAILED_ACTIVE_HC, "/failed_active_hc"),
            (HealthFlags::FAILED_OUTLIER_CHECK, "/failed_outlier_check"),
            (HealthFlags::FAILED_EDS_HEALTH, "/failed_eds_health"),
            (HealthFlags::DEGRADED_ACTIVE_HC, "/degraded_active_hc"),
            (HealthFlags::DEGRADED_EDS_HEALTH, "/degraded_eds_health"),
            (HealthFlags::ACTIVE_HC_TIMEOUT, "/active_hc_timeout"),
            (HealthFlags::EDS_STATUS_DRAINING, "/eds_status_draining"),
        ];
        let named: String = NAMES
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect();
        if named.is_empty() {
            "healthy".into()
        } else {
            named
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoarseHealth {
    Healthy,
    Degraded,
    Unhealthy,
}

/// What the agent's health checks and outlier detector say of a cluster's hosts, by address;
/// a host not listed has no flag from either.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostVerdicts {
    pub flags: HashMap<SocketAddr, HealthFlags>,
    /// When an active health check last brought each host back to health (Envoy's last pass
    /// while the host failed): where its slow-start window opens.
    pub healthy_since: HashMap<SocketAddr, Instant>,
}

impl HostVerdicts {
    pub fn of(&self, address: &SocketAddr) -> HealthFlags {
        self.flags.get(address).copied().unwrap_or_default()
    }
}

/// A cluster's `health_checks` entry (Envoy runs one per cluster).
#[derive(Debug)]
pub struct HealthCheck {
    pub timeout: Duration,
    pub interval: Duration,
    /// `interval_jitter`: up to this much is added to each interval.
    pub interval_jitter: Duration,
    /// `interval_jitter_percent`: up to this share of the interval is added too.
    pub interval_jitter_percent: u32,
    /// `initial_jitter`: the first check waits up to this long.
    pub initial_jitter: Duration,
    pub unhealthy_interval: Duration,
    pub unhealthy_edge_interval: Duration,
    pub healthy_edge_interval: Duration,
    /// Intervals while the cluster has had no traffic yet.
    pub no_traffic_interval: Duration,
    pub no_traffic_healthy_interval: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// `reuse_connection` (default true): one connection per host across checks.
    pub reuse_connection: bool,
    pub kind: CheckKind,
    /// `cluster.<name>.health_check.*`.
    pub stats: Arc<HealthCheckStats>,
}

impl HealthCheck {
    /// The `host` / `:authority` checks name (a host's `hostname` takes precedence).
    pub fn authority(&self) -> &str {
        match &self.kind {
            CheckKind::Http(http) => &http.host,
            CheckKind::Grpc { authority, .. } => authority,
            CheckKind::Tcp { .. } => "",
        }
    }
}

/// What a check sends and what passes.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckKind {
    Http(HttpCheck),
    /// `tcp_health_check`: `send` written, then every `receive` payload must arrive (in any
    /// order, as Envoy matches them); neither: a connect is a pass.
    Tcp {
        send: Vec<u8>,
        receive: Vec<Vec<u8>>,
    },
    /// `grpc_health_check`: `grpc.health.v1.Health/Check` over HTTP/2; SERVING passes.
    Grpc {
        service_name: String,
        /// `authority`: the `:authority`, else the cluster's name.
        authority: String,
        initial_metadata: Vec<(String, String)>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// `host`: the `host` header, else the cluster's name.
    pub host: String,
    pub path: String,
    /// `request_headers_to_add` (appended after the check's own headers).
    pub headers: Vec<(String, String)>,
    /// `request_headers_to_remove`.
    pub remove_headers: Vec<String>,
    pub method: String,
    /// `expected_statuses` (default `[200, 201)`).
    pub expected: Vec<Range<u16>>,
    /// `retriable_statuses`: failures that count toward `unhealthy_threshold` like network
    /// failures instead of failing the host at once.
    pub retriable: Vec<Range<u16>>,
    /// `codec_client_type: HTTP2`.
    pub http2: bool,
    /// `receive`: payloads the response body must contain.
    pub receive: Vec<Vec<u8>>,
    /// `send`: a request body.
    pub send: Vec<u8>,
}

/// A host's own `health_check_config`: where its checks go and what they name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointCheck {
    /// `address`: checks go here instead of the host's address.
    pub address: Option<SocketAddr>,
    /// `port_value`: checks go to this port.
    pub port: Option<u16>,
    /// `hostname`: the check's `host` / `:authority`.
    pub hostname: Option<String>,
    /// `disable_active_health_check`: the host is never checked (and never fails a check).
    pub disabled: bool,
}

impl EndpointCheck {
    /// Where checks of a host at `host` go.
    pub fn target(check: Option<&EndpointCheck>, host: SocketAddr) -> SocketAddr {
        let mut target = check.and_then(|c| c.address).unwrap_or(host);
        if let Some(port) = check.and_then(|c| c.port) {
            target.set_port(port);
        }
        target
    }
}

/// A cluster's `outlier_detection`, with Envoy's defaults filled in.
#[derive(Debug)]
pub struct OutlierDetection {
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_time_jitter: Duration,
    pub max_ejection_percent: u32,
    pub always_eject_one_host: bool,
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub consecutive_local_origin_failure: u32,
    pub split_external_local_origin_errors: bool,
    pub enforcing_consecutive_5xx: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub enforcing_success_rate: u32,
    pub enforcing_local_origin_success_rate: u32,
    pub enforcing_failure_percentage: u32,
    pub enforcing_failure_percentage_local_origin: u32,
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    pub success_rate_stdev_factor: u32,
    pub failure_percentage_threshold: u32,
    pub failure_percentage_minimum_hosts: u32,
    pub failure_percentage_request_volume: u32,
    pub successful_active_health_check_uneject_host: bool,
    /// `cluster.<name>.outlier_detection.*`.
    pub stats: Arc<OutlierStats>,
}

impl OutlierDetection {
    /// Envoy's defaults for every field (what an empty `outlier_detection` means).
    pub fn envoy_defaults(stats: Arc<OutlierStats>) -> Self {
        Self {
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 10,
            always_eject_one_host: false,
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            split_external_local_origin_errors: false,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_success_rate: 100,
            enforcing_local_origin_success_rate: 100,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            successful_active_health_check_uneject_host: true,
            stats,
        }
    }
}

/// What ended a request or connection attempt to a host, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The host answered with this HTTP status.
    Status(u16),
    /// The connection could not be made.
    ConnectFailed,
    /// The host did not answer in time.
    Timeout,
    /// The connection was made (tcp_proxy's success; for HTTP the status follows).
    Connected,
}

/// Which consecutive-failure counter reached its threshold on a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consecutive {
    Http5xx,
    GatewayFailure,
    LocalOriginFailure,
}

/// A host's request counts on one shard since the agent last collected them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCounts {
    pub success: u64,
    pub total: u64,
    pub local_success: u64,
    pub local_total: u64,
}

impl HostCounts {
    pub fn add(&mut self, other: &HostCounts) {
        self.success += other.success;
        self.total += other.total;
        self.local_success += other.local_success;
        self.local_total += other.local_total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_health_follows_envoy() {
        assert_eq!(HealthFlags::NONE.coarse(), CoarseHealth::Healthy);
        let mut flags = HealthFlags::DEGRADED_EDS_HEALTH;
        assert_eq!(flags.coarse(), CoarseHealth::Degraded);
        flags.insert(HealthFlags::FAILED_OUTLIER_CHECK);
        assert_eq!(flags.coarse(), CoarseHealth::Unhealthy);
        assert_eq!(
            flags.describe(),
            "/failed_outlier_check/degraded_eds_health"
        );
        flags.remove(HealthFlags::FAILED_OUTLIER_CHECK);
        assert_eq!(flags.coarse(), CoarseHealth::Degraded);
        assert_eq!(HealthFlags::NONE.describe(), "healthy");
    }
}
