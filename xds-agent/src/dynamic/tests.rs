//! Dynamic config tests: updates applied resource by resource, NACK texts, removals, warming
//! (on assignments, route tables and SDS secrets) and what each generation publishes.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster as ClusterProto, core::v3::TypedExtensionConfig,
    endpoint::v3::ClusterLoadAssignment, listener::v3::Listener as ListenerProto,
    route::v3::RouteConfiguration,
};
use prost::{Message, Name};

use super::{secrets::Rebuilt, *};
use crate::{
    translate::tls::Secrets,
    xds::{Resource, Update},
};
use model::{stats::StatsRegistry, Snapshot};

fn any<M: Message + Name + Default>(yaml: &str) -> Any {
    let message: M = proto::from_json(proto::parse_document(yaml).unwrap(), false).unwrap();
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

fn update(type_url: &str, resources: &[(&str, Any)], removed: &[&str], full_state: bool) -> Update {
    Update {
        type_url: type_url.into(),
        version_info: "v".into(),
        nonce: "n".into(),
        resources: resources
            .iter()
            .map(|(name, body)| Resource {
                name: name.to_string(),
                version: "1".into(),
                body: body.clone(),
            })
            .collect(),
        removed: removed.iter().map(|s| s.to_string()).collect(),
        full_state,
    }
}

struct Fixture {
    config: DynamicConfig,
    statics: Arc<Snapshot>,
    stats: StatsRegistry,
}

impl Fixture {
    fn new() -> Self {
        Self {
            config: DynamicConfig::default(),
            statics: Arc::new(Snapshot::empty()),
            stats: StatsRegistry::new(1),
        }
    }

    fn apply(&mut self, update: Update) -> Applied {
        let dns = HashMap::new();
        let mut inputs = Inputs {
            generation: 2,
            stats: &mut self.stats,
            previous: None,
            dns: &dns,
            ports: None,
        };
        self.config.apply(&update, &self.statics, &mut inputs)
    }
}

fn eds_cluster(name: &str) -> Any {
    any::<ClusterProto>(&format!(
        "{{name: {name}, type: EDS, eds_cluster_config: {{eds_config: {{ads: {{}}, initial_fetch_timeout: 5s}}}}}}"
    ))
}

fn static_cluster(name: &str, port: u16) -> Any {
    any::<ClusterProto>(&format!(
        "{{name: {name}, load_assignment: {{endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}}}"
    ))
}

fn assignment(name: &str, ports: &[u16]) -> Any {
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| format!("{{endpoint: {{address: {{socket_address: {{address: 10.0.0.1, port_value: {p}}}}}}}}}"))
        .collect();
    any::<ClusterLoadAssignment>(&format!(
        "{{cluster_name: {name}, endpoints: [{{lb_endpoints: [{}]}}]}}",
        endpoints.join(", ")
    ))
}

fn rds_listener(name: &str, port: u16, table: &str) -> Any {
    any::<ListenerProto>(&format!(
        r#"{{name: {name}, address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}},
        filter_chains: [{{filters: [{{name: hcm, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
          stat_prefix: s, rds: {{route_config_name: {table}, config_source: {{ads: {{}}, initial_fetch_timeout: 0s}}}},
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]}}}}]}}]}}"#
    ))
}

fn table(name: &str, cluster: &str) -> Any {
    any::<RouteConfiguration>(&format!(
        "{{name: {name}, virtual_hosts: [{{name: v, domains: ['*'], routes: [{{match: {{prefix: /}}, route: {{cluster: {cluster}}}}}]}}]}}"
    ))
}

#[test]
fn an_eds_cluster_warms_until_its_assignment_arrives_then_only_it_changes() {
    let mut f = Fixture::new();
    let applied = f.apply(update(
        CLUSTER,
        &[("a", eds_cluster("a")), ("b", static_cluster("b", 81))],
        &[],
        true,
    ));
    assert!(applied.changed && applied.rejection.is_none());
    assert_eq!(
        f.config.wanted_assignments(),
        Wanted::from([("a".to_string(), Some(Duration::from_secs(5)))])
    );
    let now = Instant::now();
    f.config
        .wait_for(ASSIGNMENT, &f.config.wanted_assignments(), now);
    let gen2 = f.config.assemble(&f.statics, 2, now);
    assert!(gen2.clusters.contains_key("b"));
    assert!(
        !gen2.clusters.contains_key("a"),
        "warming clusters are not published"
    );
    assert!(f.config.warming(now));

    f.apply(update(
        ASSIGNMENT,
        &[("a", assignment("a", &[1, 2]))],
        &[],
        false,
    ));
    let gen3 = f.config.assemble(&f.statics, 3, now);
    assert_eq!(gen3.clusters["a"].endpoints.len(), 2);
    assert!(Arc::ptr_eq(&gen2.clusters["b"], &gen3.clusters["b"]));
    assert!(!f.config.warming(now));

    f.apply(update(
        ASSIGNMENT,
        &[("a", assignment("a", &[1]))],
        &[],
        false,
    ));
    let gen4 = f.config.assemble(&f.statics, 4, now);
    assert_eq!(gen4.clusters["a"].endpoints.len(), 1);
    assert!(Arc::ptr_eq(&gen3.clusters["b"], &gen4.clusters["b"]));
    // Generations after the first say what changed, so shards look at nothing else.
    assert_eq!(
        gen2.cluster_changes, None,
        "the first assembly lists nothing"
    );
    assert_eq!(gen3.cluster_changes, Some(vec!["a".to_string()]));
    assert_eq!(gen4.cluster_changes, Some(vec!["a".to_string()]));
    assert_eq!(
        f.config.assemble(&f.statics, 5, now).cluster_changes,
        Some(vec![]),
        "nothing changed"
    );
}

#[test]
fn a_missing_assignment_stops_warming_at_its_timeout() {
    let mut f = Fixture::new();
    f.apply(update(CLUSTER, &[("a", eds_cluster("a"))], &[], true));
    let now = Instant::now();
    f.config
        .wait_for(ASSIGNMENT, &f.config.wanted_assignments(), now);
    assert_eq!(
        f.config.next_deadline(now),
        Some(now + Duration::from_secs(5))
    );
    let later = now + Duration::from_secs(6);
    let snapshot = f.config.assemble(&f.statics, 2, later);
    assert!(snapshot.clusters["a"].endpoints.is_empty());
    assert!(!f.config.warming(later));
}

#[test]
fn a_listener_waits_for_its_route_table() {
    let mut f = Fixture::new();
    f.apply(update(
        CLUSTER,
        &[("c", static_cluster("c", 80))],
        &[],
        true,
    ));
    let applied = f.apply(update(
        LISTENER,
        &[("l", rds_listener("l", 0, "r"))],
        &[],
        true,
    ));
    assert!(applied.rejection.is_none(), "{:?}", applied.rejection);
    assert_eq!(
        f.config.wanted_routes(),
        Wanted::from([("r".to_string(), None)]),
        "the listener's rds source says 0s: wait forever"
    );
    let now = Instant::now();
    f.config.wait_for(ROUTE, &f.config.wanted_routes(), now);
    assert!(f.config.assemble(&f.statics, 2, now).listeners.is_empty());
    assert_eq!(f.config.next_deadline(now), None, "0s waits forever");
    f.apply(update(ROUTE, &[("r", table("r", "c"))], &[], false));
    let snapshot = f.config.assemble(&f.statics, 3, now);
    assert_eq!(snapshot.listeners.len(), 1);
    assert!(snapshot.routes.contains_key("r"));
}

#[test]
fn an_invalid_resource_is_nacked_by_name_and_field_while_the_rest_applies() {
    let mut f = Fixture::new();
    f.apply(update(
        CLUSTER,
        &[("a", static_cluster("a", 80))],
        &[],
        true,
    ));
    let bad = any::<ClusterProto>("{name: a, connect_timeout: -1s}");
    let mut second = update(
        CLUSTER,
        &[("a", bad), ("b", static_cluster("b", 81))],
        &[],
        true,
    );
    second.version_info = "v2".into();
    let applied = f.apply(second);
    let rejection = applied.rejection.expect("NACK");
    assert_eq!(rejection.names, ["a"]);
    assert!(
        rejection
            .message
            .contains("clusters[\"a\"].connect_timeout"),
        "{}",
        rejection.message
    );
    // The last good "a" keeps serving; "b" was accepted beside it.
    let snapshot = f.config.assemble(&f.statics, 2, Instant::now());
    assert_eq!(snapshot.clusters["a"].endpoints[0].address.port(), 80);
    assert!(snapshot.clusters.contains_key("b"));
    assert_eq!(
        f.config.status[CLUSTER].version_info, "v",
        "a NACK keeps the version"
    );
    assert!(f
        .config
        .failed
        .contains_key(&(CLUSTER.to_string(), "a".to_string())));
}

#[test]
fn removal_by_full_state_and_by_name() {
    let mut f = Fixture::new();
    f.apply(update(
        CLUSTER,
        &[
            ("a", static_cluster("a", 80)),
            ("b", static_cluster("b", 81)),
        ],
        &[],
        true,
    ));
    let applied = f.apply(update(
        CLUSTER,
        &[("a", static_cluster("a", 80))],
        &[],
        true,
    ));
    assert!(applied.changed, "b left the state of the world");
    assert!(!f.config.clusters.contains_key("b"));
    let applied = f.apply(update(CLUSTER, &[], &["a"], false));
    assert!(applied.changed);
    let snapshot = f.config.assemble(&f.statics, 2, Instant::now());
    assert!(snapshot.clusters.is_empty());
}

#[test]
fn an_unchanged_resource_is_not_translated_again() {
    let mut f = Fixture::new();
    f.apply(update(
        CLUSTER,
        &[("a", static_cluster("a", 80))],
        &[],
        true,
    ));
    let before = f.config.clusters["a"].model.clone();
    let applied = f.apply(update(
        CLUSTER,
        &[("a", static_cluster("a", 80))],
        &[],
        true,
    ));
    assert!(!applied.changed);
    assert!(Arc::ptr_eq(&before, &f.config.clusters["a"].model));
}

#[test]
fn a_resource_of_the_wrong_type_or_name_is_rejected() {
    let mut f = Fixture::new();
    let applied = f.apply(update(CLUSTER, &[("x", assignment("x", &[1]))], &[], true));
    assert!(applied
        .rejection
        .unwrap()
        .message
        .contains("ClusterLoadAssignment"));
    let applied = f.apply(update(CLUSTER, &[("x", static_cluster("y", 1))], &[], true));
    assert!(applied
        .rejection
        .unwrap()
        .message
        .contains("named \"x\" but its config names \"y\""));
}

/// A listener whose one HTTP filter's config comes over ECDS as `filter`.
fn ecds_listener(name: &str, port: u16, filter: &str) -> Any {
    any::<ListenerProto>(&format!(
        r#"{{name: {name}, address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}},
        filter_chains: [{{filters: [{{name: hcm, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
          stat_prefix: s, route_config: {{virtual_hosts: [{{name: v, domains: ['*'], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200}}}}]}}]}},
          http_filters: [
            {{name: {filter}, config_discovery: {{config_source: {{ads: {{}}}}, type_urls: [type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault]}}}},
            {{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]}}}}]}}]}}"#
    ))
}

fn fault(name: &str, percent: u32) -> Any {
    any::<TypedExtensionConfig>(&format!(
        r#"{{name: {name}, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault,
          abort: {{http_status: 503, percentage: {{numerator: {percent}}}}}}}}}"#
    ))
}

#[test]
fn a_listener_with_an_ecds_filter_warms_until_its_config_arrives_and_follows_it() {
    let mut f = Fixture::new();
    let applied = f.apply(update(
        LISTENER,
        &[("l", ecds_listener("l", 0, "faults"))],
        &[],
        true,
    ));
    assert!(applied.rejection.is_none(), "{:?}", applied.rejection);
    assert_eq!(f.config.wanted_extensions(), ["faults"]);
    let now = Instant::now();
    assert!(f.config.warming(now));
    assert!(f.config.assemble(&f.statics, 2, now).listeners.is_empty());

    let applied = f.apply(update(
        EXTENSION,
        &[("faults", fault("faults", 10))],
        &[],
        false,
    ));
    assert!(
        applied.changed && applied.rejection.is_none(),
        "{:?}",
        applied.rejection
    );
    let first = f.config.assemble(&f.statics, 3, now);
    assert_eq!(first.listeners.len(), 1);
    assert!(!f.config.warming(now));

    // A new config rebuilds the listener; a config of a type outside type_urls is rejected
    // and the listener keeps the last good one.
    f.apply(update(
        EXTENSION,
        &[("faults", fault("faults", 20))],
        &[],
        false,
    ));
    let second = f.config.assemble(&f.statics, 4, now);
    assert!(!Arc::ptr_eq(&first.listeners[0], &second.listeners[0]));
    let wrong = any::<TypedExtensionConfig>(
        r#"{name: faults, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}"#,
    );
    let applied = f.apply(update(EXTENSION, &[("faults", wrong)], &[], false));
    let rejection = applied.rejection.expect("NACK");
    assert!(
        rejection.message.contains("type_urls"),
        "{}",
        rejection.message
    );
    let third = f.config.assemble(&f.statics, 5, now);
    assert!(Arc::ptr_eq(&second.listeners[0], &third.listeners[0]));
}

#[test]
fn a_rejected_ecds_config_ends_the_wait_of_the_listeners_needing_it() {
    let mut f = Fixture::new();
    f.apply(update(
        LISTENER,
        &[("l", ecds_listener("l", 0, "faults"))],
        &[],
        true,
    ));
    let wrong = any::<TypedExtensionConfig>(
        r#"{name: faults, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}"#,
    );
    let applied = f.apply(update(EXTENSION, &[("faults", wrong)], &[], false));
    assert!(applied.rejection.is_some());
    let now = Instant::now();
    assert!(!f.config.warming(now), "the answer settles the wait");
    assert!(f.config.assemble(&f.statics, 2, now).listeners.is_empty());
    let failed = &f.config.failed[&(LISTENER.to_string(), "l".to_string())];
    assert!(failed.reason.contains("type_urls"), "{}", failed.reason);
}

#[test]
fn an_assignment_reaches_the_clusters_that_name_it_now() {
    let mut f = Fixture::new();
    let named = |name: &str, service: &str| {
        any::<ClusterProto>(&format!(
            "{{name: {name}, type: EDS, eds_cluster_config: {{service_name: {service}, eds_config: {{ads: {{}}}}}}}}"
        ))
    };
    f.apply(update(
        CLUSTER,
        &[("a", named("a", "s1")), ("b", named("b", "s1"))],
        &[],
        true,
    ));
    f.apply(update(CLUSTER, &[("b", named("b", "s2"))], &[], false));
    f.apply(update(
        ASSIGNMENT,
        &[("s1", assignment("s1", &[80]))],
        &[],
        false,
    ));
    f.apply(update(
        ASSIGNMENT,
        &[("s2", assignment("s2", &[81, 82]))],
        &[],
        false,
    ));
    let gen2 = f.config.assemble(&f.statics, 2, Instant::now());
    assert_eq!(gen2.clusters["a"].endpoints.len(), 1);
    assert_eq!(gen2.clusters["b"].endpoints.len(), 2);
    // `a` removed: a new s1 assignment marks nothing; `b` keeps its s2 endpoints.
    f.apply(update(CLUSTER, &[], &["a"], false));
    f.apply(update(
        ASSIGNMENT,
        &[("s1", assignment("s1", &[80, 81, 82]))],
        &[],
        false,
    ));
    assert!(!f.config.dirty.contains("b"));
    let gen3 = f.config.assemble(&f.statics, 3, Instant::now());
    assert!(!gen3.clusters.contains_key("a"));
    assert!(Arc::ptr_eq(&gen2.clusters["b"], &gen3.clusters["b"]));
}

/// A cluster presenting the client certificate of ADS secret `secret` (waited for `wait`).
fn tls_cluster(name: &str, secret: &str, wait: &str) -> Any {
    any::<ClusterProto>(&format!(
        r#"{{name: {name}, load_assignment: {{endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 443}}}}}}}}]}}]}},
        transport_socket: {{name: tls, typed_config: {{"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext,
          common_tls_context: {{tls_certificate_sds_secret_configs: [{{name: {secret}, sds_config: {{ads: {{}}, initial_fetch_timeout: {wait}}}}}]}}}}}}}}"#
    ))
}

fn certificate(
    name: &str,
    pem_suffix: &str,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret {
    proto::from_json(
        serde_json::json!({"name": name, "tls_certificate": {
            "certificate_chain": {"inline_string": format!("{}{pem_suffix}", include_str!("../translate/testdata/unit.crt"))},
            "private_key": {"inline_string": include_str!("../translate/testdata/unit.key")},
        }}),
        false,
    )
    .unwrap()
}

#[test]
fn a_cluster_warms_until_its_secret_arrives_and_takes_new_versions_in_place() {
    use model::tls::{SecretKey, SecretSource};
    let mut f = Fixture::new();
    f.config.secrets.current = Arc::new(Secrets {
        ads: true,
        ..Default::default()
    });
    f.apply(update(
        CLUSTER,
        &[
            ("a", tls_cluster("a", "s", "0s")),
            ("b", tls_cluster("b", "t", "5s")),
        ],
        &[],
        true,
    ));
    let now = Instant::now();
    let wanted = f.config.wanted_secrets(&f.statics);
    f.config.secrets.set_wanted(wanted, &mut f.stats, now);
    let gen2 = f.config.assemble(&f.statics, 2, now);
    assert!(gen2.clusters.is_empty(), "clusters wait for their secrets");
    assert_eq!(
        f.config.next_deadline(now),
        Some(now + Duration::from_secs(5))
    );
    assert_eq!(f.config.secrets.names(&SecretSource::Ads), ["s", "t"]);

    let key = SecretKey {
        source: SecretSource::Ads,
        name: "s".into(),
    };
    let offer = |f: &mut Fixture, suffix: &str| {
        let candidate = f.config.secrets.with(&key, certificate("s", suffix));
        let dns = HashMap::new();
        let mut inputs = Inputs {
            generation: 3,
            stats: &mut f.stats,
            previous: None,
            dns: &dns,
            ports: None,
        };
        let bootstrap = Default::default();
        let rebuilt = f
            .config
            .rebuild_users(&key, &candidate, &bootstrap, &f.statics, &mut inputs)
            .unwrap();
        assert_eq!(rebuilt.len(), 1, "only the context naming the secret");
        f.config
            .secrets
            .accept(key.clone(), suffix.into(), Any::default(), candidate);
        rebuilt.iter().for_each(Rebuilt::swap_in);
    };
    offer(&mut f, "");
    let gen3 = f.config.assemble(&f.statics, 3, now);
    let a = gen3.clusters["a"].clone();
    let first = a
        .tls
        .as_ref()
        .unwrap()
        .config()
        .expect("the secret arrived");
    assert!(Arc::ptr_eq(&a, &f.config.clusters["a"].model));
    assert!(!gen3.clusters.contains_key("b"), "b still waits for t");

    offer(&mut f, "\n");
    let rotated = a.tls.as_ref().unwrap().config().unwrap();
    assert!(
        !Arc::ptr_eq(&first, &rotated),
        "the new version is swapped in"
    );
    let gen4 = f.config.assemble(&f.statics, 4, now);
    assert!(Arc::ptr_eq(&gen4.clusters["a"], &a), "the cluster stays");

    // `t` never comes: b goes out at its timeout, refusing connections (counted once).
    let later = now + Duration::from_secs(6);
    assert_eq!(f.config.secrets.timed_out(later).len(), 1);
    assert!(f.config.secrets.timed_out(later).is_empty());
    let gen5 = f.config.assemble(&f.statics, 5, later);
    assert!(gen5.clusters["b"].tls.as_ref().unwrap().config().is_none());
    assert!(!f.config.warming(later));
}

#[test]
fn a_rotation_rebuilds_only_tls_contexts_so_stale_references_do_not_block_it() {
    use model::tls::{SecretKey, SecretSource};
    let mut f = Fixture::new();
    f.config.secrets.current = Arc::new(Secrets {
        ads: true,
        ..Default::default()
    });
    f.apply(update(
        CLUSTER,
        &[("c", static_cluster("c", 80))],
        &[],
        true,
    ));
    let listener = any::<ListenerProto>(
        r#"{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 10443}},
        filter_chains: [{filters: [{name: tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c}}],
          transport_socket: {name: tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext,
            common_tls_context: {tls_certificate_sds_secret_configs: [{name: s, sds_config: {ads: {}}}]}}}}]}"#,
    );
    let applied = f.apply(update(LISTENER, &[("l", listener)], &[], true));
    assert!(applied.rejection.is_none(), "{:?}", applied.rejection);
    // The cluster the listener names goes: translating the listener again would now fail.
    f.apply(update(CLUSTER, &[], &[], true));
    let key = SecretKey {
        source: SecretSource::Ads,
        name: "s".into(),
    };
    let candidate = f.config.secrets.with(&key, certificate("s", ""));
    let dns = HashMap::new();
    let mut inputs = Inputs {
        generation: 3,
        stats: &mut f.stats,
        previous: None,
        dns: &dns,
        ports: None,
    };
    let rebuilt = f
        .config
        .rebuild_users(
            &key,
            &candidate,
            &Default::default(),
            &f.statics,
            &mut inputs,
        )
        .expect("only the TLS context is rebuilt");
    assert_eq!(rebuilt.len(), 1);
    rebuilt.iter().for_each(Rebuilt::swap_in);
    let serving = &f.config.listeners["l"].model.filter_chains[0];
    assert!(serving.tls.as_ref().unwrap().configs().is_some());
}

/// An `Any` of `udpa.type.v1.TypedStruct` (or `xds.type.v3.TypedStruct`) wrapping `value`,
/// the JSON of a message of type `type_url`, encoded as a control plane sends it.
fn typed_struct(wrapper: &str, type_url: &str, value: serde_json::Value) -> Any {
    let descriptor = proto::message(wrapper).unwrap();
    let json = serde_json::json!({"type_url": type_url, "value": value});
    let message = prost_reflect::DynamicMessage::deserialize(descriptor, json).unwrap();
    Any {
        type_url: format!("type.googleapis.com/{wrapper}"),
        value: message.encode_to_vec(),
    }
}

/// A listener whose connection manager has a fault filter and the router, each given plainly
/// or wrapped in `udpa.type.v1.TypedStruct` (and the connection manager in
/// `xds.type.v3.TypedStruct`).
fn hcm_listener(wrapped: bool) -> Any {
    use envoy_types::pb::envoy::{
        config::listener::v3::{filter, Filter, FilterChain},
        extensions::filters::network::http_connection_manager::v3::HttpConnectionManager,
    };
    use serde_json::{json, Value};
    const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
    const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    let config = |url: &str, mut value: Value| {
        if wrapped {
            json!({"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": url, "value": value})
        } else {
            value["@type"] = url.into();
            value
        }
    };
    let hcm = json!({
        "stat_prefix": "s",
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
        "http_filters": [
            {"name": "envoy.filters.http.fault", "typed_config": config(FAULT,
                json!({"abort": {"http_status": 503, "percentage": {"numerator": 10}}}))},
            {"name": "envoy.filters.http.router", "typed_config": config(ROUTER, json!({}))},
        ],
    });
    let hcm = if wrapped {
        typed_struct(
            "xds.type.v3.TypedStruct",
            &HttpConnectionManager::type_url(),
            hcm,
        )
    } else {
        let message: HttpConnectionManager = proto::from_json(hcm, false).unwrap();
        Any {
            type_url: HttpConnectionManager::type_url(),
            value: message.encode_to_vec(),
        }
    };
    let listener = ListenerProto {
        name: "l".into(),
        address: proto::from_json(
            json!({"socket_address": {"address": "127.0.0.1", "port_value": 1}}),
            false,
        )
        .ok(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "hcm".into(),
                config_type: Some(filter::ConfigType::TypedConfig(hcm)),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    Any {
        type_url: ListenerProto::type_url(),
        value: listener.encode_to_vec(),
    }
}

/// Istio sends many filter configs wrapped in a TypedStruct (their JSON, with the type it
/// stands for): an LDS listener so wrapped, at two depths, is accepted and builds the same
/// listener as the plain form.
#[test]
fn a_typed_struct_wrapped_listener_builds_as_the_plain_one() {
    let built = |wrapped: bool| {
        let mut f = Fixture::new();
        let body = hcm_listener(wrapped);
        assert_eq!(body.value.windows(11).any(|w| w == b"TypedStruct"), wrapped);
        let applied = f.apply(update(LISTENER, &[("l", body)], &[], true));
        assert!(applied.rejection.is_none(), "{:?}", applied.rejection);
        let snapshot = f.config.assemble(&f.statics, 2, Instant::now());
        assert_eq!(snapshot.listeners.len(), 1);
        format!("{:?}", snapshot.listeners[0])
    };
    let plain = built(false);
    assert!(plain.contains("Fault"), "{plain}");
    assert_eq!(built(true), plain);
}
