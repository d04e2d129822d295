//! Test fixture: a small agent state with one listener, one static and one API cluster.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use crate::agent::{AgentOptions, AgentState};

use model::{
    stats::{ServerState, StatsRegistry},
    CircuitBreakers, Cluster, ClusterId, Endpoint, LbPolicy, Listener, Snapshot,
    UpstreamHttpOptions,
};

pub const BOOTSTRAP: &str = r#"
node: {id: node-1, cluster: mesh}
static_resources:
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 8080}}}
  listeners:
  - name: ingress
    address: {socket_address: {address: 0.0.0.0, port_value: 10000}}
"#;

pub fn state() -> AgentState {
    let mut stats = StatsRegistry::new(2);
    let cluster = |name: &str, stats: &mut StatsRegistry, endpoints: Vec<Endpoint>| Cluster {
        name: name.into(),
        id: ClusterId::of(name),
        config_hash: 0,
        dns: None,
        eds: None,
        connect_timeout: Duration::from_secs(1),
        lb_policy: LbPolicy::RoundRobin,
        endpoints: endpoints.into(),
        buffer_limit: 1 << 20,
        circuit_breakers: CircuitBreakers::DEFAULT,
        http: UpstreamHttpOptions::default(),
        tls: None,
        socket_matches: Vec::new(),
        original_dst: None,
        source_address: None,
        locality_weighted: false,
        metadata: Default::default(),
        metadata_exchange: None,
        passthrough_metadata: Vec::new(),
        health_check: None,
        outlier_detection: None,
        panic_threshold: 50.0,
        slow_start: None,
        zone_aware: Default::default(),
        subset: None,
        stats: stats.cluster(name),
    };
    let backend = cluster(
        "backend",
        &mut stats,
        vec![Endpoint::new("10.0.0.1:8080".parse().unwrap())],
    );
    let api = cluster("api", &mut stats, vec![]);
    let listener = Listener::without_chains(
        "ingress",
        "0.0.0.0:10000".parse().unwrap(),
        stats.listener("0.0.0.0_10000"),
    );
    let snapshot = Snapshot {
        generation: 1,
        listeners: vec![Arc::new(listener)],
        clusters: [
            ("backend".to_string(), Arc::new(backend)),
            ("api".to_string(), Arc::new(api)),
        ]
        .into_iter()
        .collect(),
        cluster_changes: None,
        routes: HashMap::new(),
        local_peer: Default::default(),
        stat_naming: Default::default(),
        internal_buffer: model::DEFAULT_INTERNAL_BUFFER,
        log_stats: None,
        connection_limit: None,
        overload: None,
        local_zone: None,
    };
    AgentState {
        stats,
        bootstrap: proto::from_json(proto::parse_document(BOOTSTRAP).unwrap(), false).unwrap(),
        snapshot: Arc::new(snapshot),
        health: Default::default(),
        dynamic: Default::default(),
        keep_descriptors: false,
        applied: vec![1, 1],
        server_state: ServerState::Live,
        healthcheck_failed: false,
        started: Instant::now(),
        started_wall: SystemTime::now(),
        last_updated: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        last_reload_error: None,
        trim_when_applied: None,
        options: AgentOptions {
            config_path: Some("/etc/shardproxy/bootstrap.yaml".into()),
            config_yaml: None,
            default_bootstrap: "",
            allow_unknown_fields: false,
            drain_time: Duration::from_secs(45),
            concurrency: 2,
            service_node: Some("sidecar~10.0.0.9~pod.ns~ns.svc.cluster.local".into()),
            service_cluster: None,
            admin_address_path: None,
            release_memory: proto::release_pool,
            trim_memory: || {},
            heap_in_use: || None,
            admin_socket: crate::agent::bind_admin,
            on_live: || {},
            taken_over: Vec::new(),
        },
    }
}
