//! Tests: the xDS client against the scripted Python control plane
//! (tests/peers/xds_server.py), state of the world and Delta: resources arrive, ACKs and NACKs
//! (with our error_detail) are recorded by the server, pushed updates arrive, the client
//! reconnects after the server restarts (Delta restating what it holds), and a unix socket
//! target works.

mod common;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{
    addr,
    xds::{XdsServer, SECRET},
    TempDir,
};

use envoy_types::pb::envoy::config::{cluster::v3::Cluster, core::v3::Node};
use prost::Message;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use xds_agent::{
    dynamic::CLUSTER as CDS,
    xds::{
        client::{self, ClientHandle},
        ClientEvent, GrpcTarget, Rejection, Service, StreamSettings, Update,
    },
};

/// Long enough for a restarted Python server plus a few back-off rounds.
const PATIENCE: Duration = Duration::from_secs(40);

/// Polls the server's record of `node` for CDS until `done` holds for it.
async fn wait_record(
    server: &XdsServer,
    node: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let record = server.record(node, CDS);
        if done(&record) {
            return record;
        }
        assert!(Instant::now() < deadline, "{what}; server record: {record}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cluster(name: &str) -> Value {
    json!({"name": name, "type": "STATIC", "connect_timeout": "1s"})
}

fn clusters(names: &[&str]) -> Value {
    json!({"resources": {CDS: names.iter().map(|n| cluster(n)).collect::<Vec<_>>()}})
}

/// A temp dir holding a script with one cluster, `backend`; the script's path.
fn script() -> (TempDir, PathBuf) {
    let dir = TempDir::new("xds-client");
    let path = dir.file("resources.json");
    std::fs::write(&path, clusters(&["backend"]).to_string()).unwrap();
    (dir, path)
}

// ---------------------------------------------------------------------------------------------
// The client side

fn start_client(
    target: GrpcTarget,
    delta: bool,
    node: &str,
) -> (ClientHandle, UnboundedReceiver<ClientEvent>) {
    let (events, inbox) = unbounded_channel();
    let handle = client::spawn(
        StreamSettings {
            service: Service::Aggregated,
            target,
            delta,
            node: Node {
                id: node.into(),
                cluster: "test".into(),
                ..Default::default()
            },
            set_node_on_first_message_only: false,
            connect_timeout: Duration::from_secs(2),
        },
        events,
    );
    handle.subscribe(CDS, vec![]);
    (handle, inbox)
}

async fn next_event(events: &mut UnboundedReceiver<ClientEvent>) -> ClientEvent {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("a client event in time")
        .expect("the client task is running")
}

async fn expect_connected(events: &mut UnboundedReceiver<ClientEvent>) {
    match next_event(events).await {
        ClientEvent::Connected { service } => assert_eq!(service, Service::Aggregated),
        other => panic!("expected Connected, got {other:?}"),
    }
}

async fn expect_update(events: &mut UnboundedReceiver<ClientEvent>) -> Update {
    match next_event(events).await {
        ClientEvent::Update { update, .. } => {
            assert_eq!(update.type_url, CDS);
            update
        }
        other => panic!("expected an Update, got {other:?}"),
    }
}

fn cluster_names(update: &Update) -> Vec<String> {
    let mut names: Vec<String> = (update.resources.iter())
        .map(|r| {
            let cluster = Cluster::decode(r.body.value.as_slice()).expect("a Cluster body");
            assert_eq!(cluster.name, r.name, "the resource is named after its body");
            cluster.name
        })
        .collect();
    names.sort();
    names
}

fn acked(record: &Value) -> Vec<String> {
    (record["acked"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Receive, ACK, pushed update, NACK, server restart and reconnect.
async fn full_cycle(delta: bool) {
    let node = if delta { "client-delta" } else { "client-sotw" };
    let (dir, script) = script();
    let server = XdsServer::start_with(&script, 0, &[]);
    let (client, mut events) = start_client(GrpcTarget::Tcp(addr(server.ads_port)), delta, node);

    expect_connected(&mut events).await;
    let first = expect_update(&mut events).await;
    assert_eq!(cluster_names(&first), ["backend"]);
    assert_eq!(
        first.full_state, !delta,
        "SotW CDS is full state; Delta never"
    );
    let backend_version = first.resources[0].version.clone();
    if !delta {
        assert_eq!(
            (first.version_info.as_str(), backend_version.as_str()),
            ("1", "1")
        );
    }
    client.verdict(CDS, &first.nonce, None);
    wait_record(&server, node, "the ACK of version 1", |r| acked(r) == ["1"]).await;

    // A pushed update: a new cluster the agent rejects.
    server.push(&clusters(&["backend", "bad"]));
    let pushed = expect_update(&mut events).await;
    let expected: &[&str] = if delta { &["bad"] } else { &["backend", "bad"] };
    assert_eq!(cluster_names(&pushed), expected);
    let message = "cluster bad: rejected by the test";
    client.verdict(
        CDS,
        &pushed.nonce,
        Some(Rejection {
            message: message.into(),
            names: vec!["bad".into()],
        }),
    );
    let record = wait_record(&server, node, "the NACK of version 2", |r| {
        r["nacked"].as_array().is_some_and(|n| !n.is_empty())
    })
    .await;
    let nack = &record["nacked"][0];
    assert_eq!(nack["version"], "2");
    assert_eq!(nack["nonce"], pushed.nonce.as_str());
    assert_eq!(
        nack["error_detail"],
        json!({"code": 13, "message": message})
    );
    assert_eq!(acked(&record), ["1"], "a NACK is not an ACK");
    assert_eq!(record["mode"], if delta { "delta" } else { "sotw" });

    // The server dies and comes back on the same port, serving the script (backend only).
    let port = server.ads_port;
    drop(server);
    match next_event(&mut events).await {
        ClientEvent::Disconnected { service, reason } => {
            assert_eq!(service, Service::Aggregated);
            assert!(!reason.is_empty());
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let server = XdsServer::start_with(&script, port, &[]);
    let connected = loop {
        match next_event(&mut events).await {
            ClientEvent::Disconnected { .. } => continue, // attempts while it was down
            other => break other,
        }
    };
    assert!(
        matches!(connected, ClientEvent::Connected { .. }),
        "{connected:?}"
    );
    let again = expect_update(&mut events).await;
    if delta {
        // It told the new server what it holds: backend, not the rejected one, so nothing
        // needs sending again.
        let record = server.record(node, CDS);
        assert_eq!(
            record["initial_resource_versions"],
            json!({"backend": backend_version}),
            "{record}"
        );
        assert!(again.resources.is_empty(), "{again:?}");
        assert!(again.removed.is_empty(), "{again:?}");
    } else {
        assert_eq!(cluster_names(&again), ["backend"]);
        assert_eq!(again.version_info, "1");
    }
    client.verdict(CDS, &again.nonce, None);
    wait_record(&server, node, "the ACK on the new stream", |r| {
        !acked(r).is_empty()
    })
    .await;
    drop(server);
    drop(dir);
}

#[tokio::test]
async fn state_of_the_world_stream_acks_nacks_and_reconnects() {
    full_cycle(false).await;
}

#[tokio::test]
async fn delta_stream_acks_nacks_and_reconnects_with_what_it_holds() {
    full_cycle(true).await;
}

#[tokio::test]
async fn a_unix_socket_target_works() {
    let (dir, script) = script();
    let socket = dir.file("ads.sock");
    let server = XdsServer::start_with(&script, 0, &[&socket]);
    let node = "client-unix";
    let (client, mut events) = start_client(GrpcTarget::Unix(socket), true, node);
    expect_connected(&mut events).await;
    let update = expect_update(&mut events).await;
    assert_eq!(cluster_names(&update), ["backend"]);
    client.verdict(CDS, &update.nonce, None);
    wait_record(&server, node, "the ACK over the unix socket", |r| {
        acked(r) == ["1"]
    })
    .await;
    drop(server);
    drop(dir);
}

/// Istio's `sds-grpc` stream: the SecretDiscoveryService, secrets by name only.
async fn secret_stream(delta: bool) {
    let (dir, script) = script();
    let secret = |name: &str| {
        json!({"name": name, "tls_certificate": {
            "certificate_chain": {"inline_string": format!("{name} chain")},
            "private_key": {"inline_string": "key"}}})
    };
    let set =
        json!({"resources": {SECRET: [secret("default"), secret("ROOTCA"), secret("other")]}});
    std::fs::write(&script, set.to_string()).unwrap();
    let server = XdsServer::start(&script);
    let node = if delta { "sds-delta" } else { "sds-sotw" };
    let (events, mut inbox) = unbounded_channel();
    let client = client::spawn(
        StreamSettings {
            service: Service::Secrets,
            target: GrpcTarget::Tcp(addr(server.ads_port)),
            delta,
            node: Node {
                id: node.into(),
                ..Default::default()
            },
            set_node_on_first_message_only: true,
            connect_timeout: Duration::from_secs(2),
        },
        events,
    );
    client.subscribe(SECRET, vec!["ROOTCA".into(), "default".into()]);
    match next_event(&mut inbox).await {
        ClientEvent::Connected { service } => assert_eq!(service, Service::Secrets),
        other => panic!("expected Connected, got {other:?}"),
    }
    let update = match next_event(&mut inbox).await {
        ClientEvent::Update { update, .. } => update,
        other => panic!("expected an Update, got {other:?}"),
    };
    assert_eq!(update.type_url, SECRET);
    let mut names: Vec<&str> = update.resources.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["ROOTCA", "default"], "only the secrets named");
    client.verdict(SECRET, &update.nonce, None);
    let deadline = Instant::now() + PATIENCE;
    while acked(&server.record(node, SECRET)).is_empty() {
        assert!(Instant::now() < deadline, "the SDS ACK");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
    drop(dir);
}

#[tokio::test]
async fn a_secret_stream_state_of_the_world_gets_the_named_secrets() {
    secret_stream(false).await;
}

#[tokio::test]
async fn a_secret_stream_delta_gets_the_named_secrets() {
    secret_stream(true).await;
}
