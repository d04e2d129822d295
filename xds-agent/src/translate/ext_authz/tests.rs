//! Translator tests: `envoy.filters.network.ext_authz` and the `GrpcService` rules both
//! `ext_authz` filters share with xDS streams.
use std::time::Duration;

use super::*;
use crate::translate::tests::{bootstrap, errors, ok};
use model::NetworkFilter;

const NETWORK: &str = "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz";
const TCP: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// A bootstrap whose listener runs the network filter with `config`, then tcp_proxy.
fn config(config: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.ext_authz
        typed_config: {{"@type": "{NETWORK}", {config}}}
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": "{TCP}", stat_prefix: tcp, cluster: c}}
  clusters:
  - name: c
    load_assignment: {{cluster_name: c, endpoints: [{{lb_endpoints: [{{endpoint: {{address:
      {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}}}]}}]}}
"#
    )
}

#[test]
fn network_filter_translates_with_envoys_stat_names() {
    let snapshot = ok(&config(
        "stat_prefix: tcp_authz, failure_mode_allow: true, include_peer_certificate: true, \
         grpc_service: {envoy_grpc: {cluster_name: authz, authority: a.local}, timeout: 1s}, \
         transport_api_version: V3",
    ));
    let chain = &snapshot.listeners[0].filter_chains[0];
    assert!(matches!(chain.network, NetworkFilter::TcpProxy(_)));
    let [ConnectionFilter::ExtAuthz(f)] = &chain.connection_filters[..] else {
        panic!("{:?}", chain.connection_filters)
    };
    assert_eq!(f.service.cluster, "authz");
    assert_eq!(f.service.authority, "a.local");
    assert_eq!(f.service.timeout, Some(Duration::from_secs(1)));
    assert!(f.failure_mode_allow && f.include_peer_certificate && !f.include_tls_session);
    let mut names = vec![];
    f.stats.read(&mut names);
    let names: Vec<_> = names.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ext_authz.tcp_authz.total",
            "ext_authz.tcp_authz.ok",
            "ext_authz.tcp_authz.denied",
            "ext_authz.tcp_authz.error",
            "ext_authz.tcp_authz.failure_mode_allowed",
            "ext_authz.tcp_authz.cx_closed",
            "ext_authz.tcp_authz.disabled",
            "ext_authz.tcp_authz.active",
        ]
    );
}

#[test]
fn network_filter_refusals_name_the_field() {
    let at = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
    for (yaml, field) in [
        (
            "grpc_service: {envoy_grpc: {cluster_name: a}}",
            "stat_prefix",
        ),
        ("stat_prefix: s", "grpc_service"),
        (
            "stat_prefix: s, grpc_service: {envoy_grpc: {cluster_name: a}}, \
             transport_api_version: V2",
            "transport_api_version",
        ),
        (
            "stat_prefix: s, grpc_service: {envoy_grpc: {cluster_name: a}}, \
             send_tls_alert_on_denial: true",
            "send_tls_alert_on_denial",
        ),
        (
            "stat_prefix: s, grpc_service: {envoy_grpc: {cluster_name: a}}, \
             filter_enabled_metadata: {filter: f, path: [{key: k}], value: {present_match: true}}",
            "filter_enabled_metadata",
        ),
        (
            "stat_prefix: s, grpc_service: {envoy_grpc: {cluster_name: a}, timeout: -1s}",
            "grpc_service.timeout",
        ),
        (
            "stat_prefix: s, grpc_service: {envoy_grpc: {cluster_name: a}, \
             initial_metadata: [{key: \":path\", value: x}]}",
            "grpc_service.initial_metadata[0]",
        ),
    ] {
        let errors = errors(&config(yaml));
        let path = format!("{at}.{field}");
        assert!(errors.iter().any(|e| e.path == path), "{yaml}: {errors:?}");
    }
}

/// What only a check's `GrpcService` may say is refused on an xDS stream.
#[test]
fn xds_streams_refuse_call_settings() {
    let yaml = r#"
dynamic_resources:
  ads_config:
    api_type: GRPC
    grpc_services: [{envoy_grpc: {cluster_name: xds, authority: x}, timeout: 1s}]
  cds_config: {ads: {}}
static_resources:
  clusters:
  - name: xds
    load_assignment: {cluster_name: xds, endpoints: [{lb_endpoints: [{endpoint: {address:
      {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}
"#;
    let errors = crate::translate::validate(&bootstrap(yaml));
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"dynamic_resources.ads_config.grpc_services[0].timeout")
            && paths
                .contains(&"dynamic_resources.ads_config.grpc_services[0].envoy_grpc.authority"),
        "{errors:?}"
    );
}
