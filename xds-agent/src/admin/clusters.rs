//! `/clusters`: every upstream cluster with its circuit-breaker limits and hosts, in Envoy's
//! `name::…::value` text lines or as `envoy.admin.v3.Clusters` JSON.
//!
//! Per-host counters (connections, requests) are not tracked per host yet: they print 0, and
//! success rates print -1 (Envoy's "not computed"). Health flags join what EDS says of each
//! host with the agent's active checks and outlier ejections.
use std::{fmt::Write, net::SocketAddr};

use envoy_types::pb::{
    envoy::{
        admin::v3::{
            simple_metric, ClusterStatus, Clusters, HostHealthStatus, HostStatus, SimpleMetric,
        },
        config::{
            cluster::v3::{circuit_breakers::Thresholds, CircuitBreakers},
            core::v3::{
                address, socket_address::PortSpecifier, Address, HealthStatus, RoutingPriority,
                SocketAddress,
            },
        },
    },
    google::protobuf::UInt32Value,
};

use super::{query::Query, reply::Reply};
use crate::agent::AgentState;
use model::{
    health::{HealthFlags, HostVerdicts},
    Cluster, Endpoint,
};

/// Envoy's default circuit-breaker limits per priority: connections, pending requests,
/// requests, retries. We do not enforce circuit breakers yet; these are what Envoy reports
/// for a cluster that configures none.
const DEFAULT_LIMITS: (u32, u32, u32, u32) = (1024, 1024, 1024, 3);

/// Per-host stats in Envoy's (alphabetical) order, and whether each is a gauge.
const HOST_STATS: &[(&str, bool)] = &[
    ("cx_active", true),
    ("cx_connect_fail", false),
    ("cx_total", false),
    ("rq_active", true),
    ("rq_error", false),
    ("rq_success", false),
    ("rq_timeout", false),
    ("rq_total", false),
];

/// The clusters of the current snapshot in name order, each with whether it came from the
/// API (anything not among the bootstrap's static clusters).
fn clusters(state: &AgentState) -> Vec<(&Cluster, bool)> {
    let static_names: Vec<&str> = state
        .bootstrap
        .static_resources
        .iter()
        .flat_map(|r| r.clusters.iter().map(|c| c.name.as_str()))
        .collect();
    let mut out: Vec<_> = state
        .snapshot
        .clusters
        .values()
        .map(|c| (c.as_ref(), !static_names.contains(&c.name.as_str())))
        .collect();
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    out
}

/// A host's flags: its EDS health joined with the agent's verdicts on it.
fn flags(state: &AgentState, cluster: &Cluster, endpoint: &Endpoint) -> HealthFlags {
    let verdicts = state.health.get(&cluster.name).map(|v| &**v);
    let verdict = verdicts.map_or(HealthFlags::NONE, |v: &HostVerdicts| {
        v.of(&endpoint.address)
    });
    endpoint.eds_health.union(verdict)
}

/// The DNS name every endpoint of the cluster was resolved from, when there is exactly one.
fn hostname(cluster: &Cluster) -> &str {
    match cluster.dns.as_ref().map(|d| d.hosts.as_slice()) {
        Some([only]) => &only.hostname,
        _ => "",
    }
}

/// Envoy's text format.
pub fn text(state: &AgentState) -> String {
    let mut out = String::new();
    let (cx, pending, rq, retries) = DEFAULT_LIMITS;
    for (cluster, via_api) in clusters(state) {
        let name = &cluster.name;
        let _ = writeln!(out, "{name}::observability_name::{name}");
        for priority in ["default", "high"] {
            let _ = writeln!(out, "{name}::{priority}_priority::max_connections::{cx}");
            let _ = writeln!(
                out,
                "{name}::{priority}_priority::max_pending_requests::{pending}"
            );
            let _ = writeln!(out, "{name}::{priority}_priority::max_requests::{rq}");
            let _ = writeln!(out, "{name}::{priority}_priority::max_retries::{retries}");
        }
        let _ = writeln!(out, "{name}::added_via_api::{via_api}");
        for endpoint in cluster.endpoints.iter() {
            let host = format!("{name}::{}", endpoint.address);
            for (stat, _) in HOST_STATS {
                let _ = writeln!(out, "{host}::{stat}::0");
            }
            let _ = writeln!(out, "{host}::hostname::{}", hostname(cluster));
            let flags = flags(state, cluster, endpoint).describe();
            let _ = writeln!(out, "{host}::health_flags::{flags}");
            let _ = writeln!(out, "{host}::weight::{}", endpoint.weight);
            let _ = writeln!(out, "{host}::region::");
            let _ = writeln!(out, "{host}::zone::");
            let _ = writeln!(out, "{host}::sub_zone::");
            let _ = writeln!(out, "{host}::canary::false");
            let _ = writeln!(out, "{host}::priority::{}", endpoint.priority);
            let _ = writeln!(out, "{host}::success_rate::-1");
            let _ = writeln!(out, "{host}::local_origin_success_rate::-1");
        }
    }
    out
}

pub fn socket_address(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(addr.port() as u32)),
            ..Default::default()
        })),
    }
}

fn thresholds(priority: RoutingPriority) -> Thresholds {
    let (cx, pending, rq, retries) = DEFAULT_LIMITS;
    let limit = |value| Some(UInt32Value { value });
    Thresholds {
        priority: priority as i32,
        max_connections: limit(cx),
        max_pending_requests: limit(pending),
        max_requests: limit(rq),
        max_retries: limit(retries),
        ..Default::default()
    }
}

/// `envoy.admin.v3.Clusters`.
pub fn statuses(state: &AgentState) -> Clusters {
    let host_stats: Vec<SimpleMetric> = HOST_STATS
        .iter()
        .map(|(name, gauge)| SimpleMetric {
            r#type: if *gauge {
                simple_metric::Type::Gauge
            } else {
                simple_metric::Type::Counter
            } as i32,
            value: 0,
            name: (*name).into(),
        })
        .collect();
    let cluster_statuses = clusters(state)
        .into_iter()
        .map(|(cluster, via_api)| ClusterStatus {
            name: cluster.name.clone(),
            observability_name: cluster.name.clone(),
            added_via_api: via_api,
            circuit_breakers: Some(CircuitBreakers {
                thresholds: vec![
                    thresholds(RoutingPriority::Default),
                    thresholds(RoutingPriority::High),
                ],
                ..Default::default()
            }),
            host_statuses: cluster
                .endpoints
                .iter()
                .map(|endpoint| HostStatus {
                    address: Some(socket_address(endpoint.address)),
                    stats: host_stats.clone(),
                    health_status: Some(health_status(flags(state, cluster, endpoint))),
                    weight: endpoint.weight,
                    hostname: hostname(cluster).into(),
                    priority: endpoint.priority,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    Clusters { cluster_statuses }
}

fn health_status(flags: HealthFlags) -> HostHealthStatus {
    let eds = if flags.contains(HealthFlags::EDS_STATUS_DRAINING) {
        HealthStatus::Draining
    } else if flags.contains(HealthFlags::FAILED_EDS_HEALTH) {
        HealthStatus::Unhealthy
    } else if flags.contains(HealthFlags::DEGRADED_EDS_HEALTH) {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    };
    HostHealthStatus {
        failed_active_health_check: flags.contains(HealthFlags::FAILED_ACTIVE_HC),
        failed_outlier_check: flags.contains(HealthFlags::FAILED_OUTLIER_CHECK),
        failed_active_degraded_check: flags.contains(HealthFlags::DEGRADED_ACTIVE_HC),
        active_hc_timeout: flags.contains(HealthFlags::ACTIVE_HC_TIMEOUT),
        eds_health_status: eds as i32,
        ..Default::default()
    }
}

/// `GET /clusters`.
pub fn handle(state: &AgentState, query: &Query) -> Reply {
    match query.get("format") {
        Some("json") => Reply::json(&proto::to_json(&statuses(state))),
        _ => Reply::ok_text(text(state)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::fixture;

    #[test]
    fn text_format() {
        let text = text(&fixture::state());
        let lines: Vec<&str> = text.lines().collect();
        // `api` sorts first and has no hosts; it is not a bootstrap cluster.
        assert_eq!(lines[0], "api::observability_name::api");
        assert_eq!(lines[1], "api::default_priority::max_connections::1024");
        assert_eq!(lines[8], "api::high_priority::max_retries::3");
        assert_eq!(lines[9], "api::added_via_api::true");
        assert!(text.contains("backend::added_via_api::false\n"));
        for line in [
            "backend::10.0.0.1:8080::cx_active::0",
            "backend::10.0.0.1:8080::cx_connect_fail::0",
            "backend::10.0.0.1:8080::cx_total::0",
            "backend::10.0.0.1:8080::rq_active::0",
            "backend::10.0.0.1:8080::rq_total::0",
            "backend::10.0.0.1:8080::health_flags::healthy",
            "backend::10.0.0.1:8080::weight::1",
            "backend::10.0.0.1:8080::region::",
            "backend::10.0.0.1:8080::zone::",
        ] {
            assert!(lines.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn json_format() {
        let json = proto::to_json(&statuses(&fixture::state()));
        let backend = &json["cluster_statuses"][1];
        assert_eq!(backend["name"], "backend");
        assert_eq!(
            backend["circuit_breakers"]["thresholds"][1]["priority"],
            "HIGH"
        );
        assert_eq!(
            backend["circuit_breakers"]["thresholds"][0]["max_connections"],
            1024
        );
        let host = &backend["host_statuses"][0];
        assert_eq!(host["address"]["socket_address"]["address"], "10.0.0.1");
        assert_eq!(host["address"]["socket_address"]["port_value"], 8080);
        assert_eq!(host["health_status"]["eds_health_status"], "HEALTHY");
        assert_eq!(host["weight"], 1);
        assert_eq!(
            host["stats"][0],
            serde_json::json!({"type": "GAUGE", "name": "cx_active"})
        );
    }
}
