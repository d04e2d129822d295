//! Admin server over real HTTP: every endpoint's status, content type and body, and the
//! commands the mutating endpoints send to the agent loop.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use model::{
    stats::{self, ServerState, StatsRegistry},
    CircuitBreakers, Cluster, ClusterId, Endpoint, LbPolicy, Listener, Snapshot,
    UpstreamHttpOptions,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc::{unbounded_channel, UnboundedReceiver},
};
use xds_agent::{
    admin::{serve, AdminContext},
    agent::{AgentCommand, AgentOptions, AgentState, LogControl, SharedState},
};

const BOOTSTRAP: &str = r#"
node: {id: node-1, cluster: mesh}
static_resources:
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9000}}}
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
"#;

/// Log levels kept in memory; rejects specs containing `bad`.
struct Levels(Mutex<String>);

impl LogControl for Levels {
    fn set(&self, spec: &str) -> Result<String, String> {
        if spec.contains("bad") {
            return Err(format!("cannot parse {spec}"));
        }
        *self.0.lock().unwrap() = spec.to_string();
        Ok(spec.to_string())
    }

    fn current(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

fn agent_state() -> AgentState {
    let mut registry = StatsRegistry::new(2);
    let cluster = Cluster {
        name: "backend".into(),
        id: ClusterId::of("backend"),
        config_hash: 0,
        dns: None,
        eds: None,
        connect_timeout: Duration::from_secs(1),
        lb_policy: LbPolicy::RoundRobin,
        endpoints: vec![Endpoint {
            weight: 3,
            ..Endpoint::new("127.0.0.1:9000".parse().unwrap())
        }]
        .into(),
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
        stats: registry.cluster("backend"),
    };
    stats::add(&cluster.stats.shard(1).upstream_cx_total, 5);
    let listener = Listener {
        inbound: true,
        ..Listener::without_chains(
            "ingress",
            "127.0.0.1:10000".parse().unwrap(),
            registry.listener("127.0.0.1_10000"),
        )
    };
    stats::inc(&listener.stats.shard(0).downstream_cx_active);
    AgentState {
        stats: registry,
        bootstrap: proto::from_json(proto::parse_document(BOOTSTRAP).unwrap(), false).unwrap(),
        health: Default::default(),
        snapshot: Arc::new(Snapshot {
            generation: 1,
            listeners: vec![Arc::new(listener)],
            clusters: [("backend".to_string(), Arc::new(cluster))]
                .into_iter()
                .collect(),
            cluster_changes: None,
            ..Snapshot::empty()
        }),
        dynamic: Default::default(),
        keep_descriptors: false,
        applied: vec![1, 1],
        server_state: ServerState::Live,
        healthcheck_failed: false,
        started: Instant::now() - Duration::from_secs(3),
        started_wall: SystemTime::now(),
        last_updated: SystemTime::now(),
        last_reload_error: None,
        trim_when_applied: None,
        options: AgentOptions {
            config_path: None,
            config_yaml: Some(BOOTSTRAP.into()),
            default_bootstrap: "",
            allow_unknown_fields: false,
            drain_time: Duration::from_secs(5),
            concurrency: 2,
            service_node: None,
            service_cluster: None,
            admin_address_path: None,
            release_memory: proto::release_pool,
            trim_memory: || {},
            heap_in_use: || None,
            admin_socket: xds_agent::agent::bind_admin,
            on_live: || {},
            taken_over: Vec::new(),
        },
    }
}

struct Admin {
    port: u16,
    state: SharedState,
    commands: UnboundedReceiver<AgentCommand>,
}

async fn start() -> Admin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state: SharedState = Arc::new(Mutex::new(agent_state()));
    let (tx, commands) = unbounded_channel();
    let ctx = AdminContext {
        state: state.clone(),
        commands: tx,
        logs: Arc::new(Levels(Mutex::new("info".into()))),
    };
    tokio::spawn(serve(listener, ctx));
    Admin {
        port,
        state,
        commands,
    }
}

struct Response {
    status: u16,
    content_type: String,
    body: String,
}

impl Response {
    fn json(&self) -> serde_json::Value {
        assert_eq!(self.content_type, "application/json");
        serde_json::from_str(&self.body).unwrap()
    }
}

impl Admin {
    async fn request(&self, method: &str, target: &str) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let request =
            format!("{method} {target} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a full response");
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let content_type = lines
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        Response {
            status,
            content_type,
            body: body.to_string(),
        }
    }

    async fn get(&self, target: &str) -> Response {
        self.request("GET", target).await
    }

    async fn post(&self, target: &str) -> Response {
        self.request("POST", target).await
    }
}

const TEXT: &str = "text/plain; charset=UTF-8";

#[tokio::test]
async fn ready_and_healthcheck() {
    let admin = start().await;
    let r = admin.get("/ready").await;
    assert_eq!(
        (r.status, r.content_type.as_str(), r.body.as_str()),
        (200, TEXT, "LIVE\n")
    );

    let r = admin.post("/healthcheck/fail").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    assert!(admin.state.lock().unwrap().healthcheck_failed);
    let r = admin.get("/ready").await;
    assert_eq!((r.status, r.body.as_str()), (503, "DRAINING\n"));
    assert_eq!(admin.get("/server_info").await.json()["state"], "DRAINING");

    let r = admin.post("/healthcheck/ok").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    assert_eq!(admin.get("/ready").await.status, 200);

    admin.state.lock().unwrap().server_state = ServerState::Initializing;
    let r = admin.get("/ready").await;
    assert_eq!((r.status, r.body.as_str()), (503, "INITIALIZING\n"));
}

#[tokio::test]
async fn server_info() {
    let admin = start().await;
    let r = admin.get("/server_info").await;
    assert_eq!(r.status, 200);
    let info = r.json();
    assert!(info["version"].as_str().unwrap().starts_with("shardproxy/"));
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["hot_restart_version"], "disabled");
    assert_eq!(info["uptime_current_epoch"], "3s");
    assert_eq!(info["command_line_options"]["concurrency"], 2);
    assert_eq!(info["command_line_options"]["drain_time"], "5s");
    assert_eq!(info["node"]["id"], "node-1");
}

#[tokio::test]
async fn stats_text_json_and_selectors() {
    let admin = start().await;
    let r = admin.get("/stats").await;
    assert_eq!((r.status, r.content_type.as_str()), (200, TEXT));
    assert!(
        r.body.contains("cluster.backend.upstream_cx_total: 5\n"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("server.uptime: 3\n"),
        "uptime refreshed on read: {}",
        r.body
    );
    // Counters and gauges in name order, then histograms in name order (as Envoy).
    let histogram = |l: &&str| l.contains(" P0(") || l.ends_with(": No recorded values");
    let (histograms, scalars): (Vec<&str>, Vec<&str>) = r.body.lines().partition(histogram);
    let first_histogram = r.body.lines().position(|l| histogram(&l));
    assert_eq!(first_histogram.unwrap_or(scalars.len()), scalars.len());
    for lines in [scalars, histograms] {
        let names: Vec<&str> = lines.iter().map(|l| l.split(':').next().unwrap()).collect();
        assert!(names.windows(2).all(|w| w[0] <= w[1]), "sorted");
    }

    let r = admin
        .get("/stats?filter=%5Ecluster%5C.backend%5C.upstream_cx_t&usedonly")
        .await;
    assert_eq!(r.body, "cluster.backend.upstream_cx_total: 5\n");

    let r = admin.get("/stats?usedonly&type=Gauges").await;
    assert_eq!(
        r.body,
        "listener.127.0.0.1_10000.downstream_cx_active: 1\nserver.uptime: 3\n"
    );

    let r = admin
        .get("/stats?format=json&filter=upstream_cx_total")
        .await;
    assert_eq!(
        r.json(),
        serde_json::json!({"stats": [{"name": "cluster.backend.upstream_cx_total", "value": 5}]})
    );

    let r = admin.get("/stats?filter=(").await;
    assert_eq!((r.status, r.content_type.as_str()), (400, TEXT));
    assert!(r.body.starts_with("Invalid regex"), "{}", r.body);
    assert_eq!(admin.get("/stats?type=Bogus").await.status, 400);
}

#[tokio::test]
async fn prometheus() {
    let admin = start().await;
    for path in ["/stats/prometheus", "/stats?format=prometheus"] {
        let r = admin.get(path).await;
        assert_eq!((r.status, r.content_type.as_str()), (200, TEXT));
        let body = r.body;
        assert!(
            body.contains(
                "# TYPE envoy_cluster_upstream_cx_total counter\n\
             envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend\"} 5\n"
            ),
            "{body}"
        );
        assert!(
            body.contains(
                "# TYPE envoy_listener_downstream_cx_active gauge\n\
             envoy_listener_downstream_cx_active{envoy_listener_address=\"127.0.0.1_10000\"} 1\n"
            ),
            "{body}"
        );
        assert!(body.contains("# TYPE envoy_server_uptime gauge\nenvoy_server_uptime 3\n"));
        assert_eq!(
            body.matches("# TYPE envoy_cluster_upstream_cx_total ")
                .count(),
            1
        );
    }
    let r = admin.get("/stats/prometheus?usedonly&filter=cluster").await;
    assert_eq!(
        r.body,
        "# TYPE envoy_cluster_upstream_cx_total counter\n\
         envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend\"} 5\n\n"
    );
}

#[tokio::test]
async fn config_dump() {
    let admin = start().await;
    let r = admin.get("/config_dump").await;
    assert_eq!(r.status, 200);
    let dump = r.json();
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
        ]
    );
    assert_eq!(dump["configs"][0]["bootstrap"]["node"]["id"], "node-1");
    assert_eq!(
        dump["configs"][1]["static_clusters"][0]["cluster"]["name"],
        "backend"
    );
    assert_eq!(
        dump["configs"][2]["static_listeners"][0]["listener"]["name"],
        "ingress"
    );
    assert!(dump["configs"][2]["static_listeners"][0]["last_updated"].is_string());

    let eds = admin.get("/config_dump?include_eds").await.json();
    assert_eq!(
        eds["configs"][2]["@type"],
        "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"
    );

    let r = admin
        .get("/config_dump?resource=static_listeners&mask=listener.name")
        .await;
    assert_eq!(
        r.json()["configs"][0]["listener"],
        serde_json::json!({
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
            "name": "ingress"
        })
    );
    assert_eq!(
        admin.get("/config_dump?resource=version_info").await.status,
        400
    );
}

#[tokio::test]
async fn clusters_and_listeners() {
    let admin = start().await;
    let r = admin.get("/clusters").await;
    assert_eq!((r.status, r.content_type.as_str()), (200, TEXT));
    for line in [
        "backend::default_priority::max_connections::1024",
        "backend::added_via_api::false",
        "backend::127.0.0.1:9000::cx_active::0",
        "backend::127.0.0.1:9000::cx_total::0",
        "backend::127.0.0.1:9000::health_flags::healthy",
        "backend::127.0.0.1:9000::weight::3",
    ] {
        assert!(
            r.body.lines().any(|l| l == line),
            "{line} missing in\n{}",
            r.body
        );
    }
    let json = admin.get("/clusters?format=json").await.json();
    let host = &json["cluster_statuses"][0]["host_statuses"][0];
    assert_eq!(host["address"]["socket_address"]["port_value"], 9000);
    assert_eq!(host["weight"], 3);

    let r = admin.get("/listeners").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ingress::127.0.0.1:10000\n")
    );
    let json = admin.get("/listeners?format=json").await.json();
    assert_eq!(json["listener_statuses"][0]["name"], "ingress");
}

/// `/certs` as Envoy prints it; the fixture has no TLS context.
#[tokio::test]
async fn certs() {
    let admin = start().await;
    let r = admin.get("/certs").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"certificates": []}));
}

#[tokio::test]
async fn commands_reach_the_agent() {
    let mut admin = start().await;
    // A drain's reply waits until the agent says the shards are draining.
    let Admin { port, commands, .. } = &mut admin;
    let poster = Admin {
        port: *port,
        state: Arc::new(Mutex::new(agent_state())),
        commands: unbounded_channel().1,
    };
    let (r, ()) = tokio::join!(
        poster.post("/drain_listeners?inboundonly&graceful"),
        async {
            match commands.recv().await {
                Some(AgentCommand::DrainListeners {
                    inbound_only: true,
                    graceful: true,
                    started: Some(started),
                }) => {
                    let _ = started.send(());
                }
                other => panic!("{other:?}"),
            }
        }
    );
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    let (_, ()) = tokio::join!(poster.post("/drain_listeners"), async {
        assert!(matches!(
            commands.recv().await,
            Some(AgentCommand::DrainListeners {
                inbound_only: false,
                graceful: false,
                ..
            })
        ));
    });
    let r = admin.post("/quitquitquit").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    assert!(matches!(
        admin.commands.recv().await,
        Some(AgentCommand::Shutdown)
    ));

    // Mutations over GET do nothing.
    for path in [
        "/quitquitquit",
        "/drain_listeners",
        "/healthcheck/fail",
        "/logging?level=debug",
    ] {
        let r = admin.get(path).await;
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.body, "Method GET not allowed, POST required.\n");
    }
    assert!(admin.commands.try_recv().is_err());
    assert!(!admin.state.lock().unwrap().healthcheck_failed);
}

#[tokio::test]
async fn logging() {
    let admin = start().await;
    let r = admin.get("/logging").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "active loggers:\n  default: info\n")
    );
    let r = admin.post("/logging?paths=upstream:debug").await;
    assert_eq!(
        r.body,
        "active loggers:\n  default: info\n  upstream: debug\n"
    );
    let r = admin.post("/logging?level=trace").await;
    assert_eq!(r.body, "active loggers:\n  default: trace\n");
    let r = admin.post("/logging?level=loud").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("unknown log level \"loud\""), "{}", r.body);
    let r = admin.post("/logging?bad=info").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("cannot parse"), "{}", r.body);
}

#[tokio::test]
async fn help_and_unknown_paths() {
    let admin = start().await;
    let r = admin.get("/").await;
    assert_eq!((r.status, r.content_type.as_str()), (200, TEXT));
    assert!(r.body.starts_with("admin commands are:\n"));
    assert!(r.body.contains("  /stats/prometheus: "));
    let r = admin.get("/nope").await;
    assert_eq!(r.status, 404);
    assert!(
        r.body.starts_with("invalid path. admin commands are:\n"),
        "{}",
        r.body
    );
}
