//! Tests: Istio's metadata exchange and ALPN override against an independent implementation
//! of the wire formats (tests/peers/istio_mx.py, Python's protobuf): the TCP exchange
//! (`istio-peer-exchange`) as an upstream cluster filter and as a listener chain's filter,
//! and the HTTP headers (`io.istio.http.peer_metadata`) with `istio.alpn` towards an HTTPS
//! upstream that reports the ALPN offered and the headers received; `istio.stats` names the
//! peers those exchanges found.
mod common;

use std::{
    fs,
    io::{Read, Write},
    process::Command,
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine};
use common::{http::*, tls::*, *};
use prost::Message;
use serde_json::{json, Value};

const NODE_ID: &str = "sidecar~127.0.0.1~client-1.ns1~ns1.svc.cluster.local";
const TYPED_STRUCT: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";
const ALPN_FILTER: &str =
    "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig";

/// The bootstrap node, as Istio's agent writes it (PROXY_CONFIG stays home).
fn node() -> Value {
    json!({
        "id": NODE_ID,
        "cluster": "client.ns1",
        "metadata": {
            "NAMESPACE": "ns1",
            "WORKLOAD_NAME": "client-wl",
            "CLUSTER_ID": "Kubernetes",
            "LABELS": {"app": "client", "version": "v1"},
            "PROXY_CONFIG": {"concurrency": 2},
        },
    })
}

/// `istio.metadata_exchange` as Istio sends it: wrapped in a TypedStruct.
fn exchange_filter() -> Value {
    json!({
        "name": "istio.metadata_exchange",
        "typed_config": {
            "@type": TYPED_STRUCT,
            "type_url": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
            "value": {"protocol": "istio-peer-exchange"},
        },
    })
}

/// Checks one frame (as istio_mx.py decoded it) carries this test's node.
fn assert_is_our_node(peer: &Value) {
    assert_eq!(
        peer["type_url"], "type.googleapis.com/google.protobuf.Struct",
        "{peer}"
    );
    assert_eq!(peer["id"], NODE_ID, "{peer}");
    let metadata = &peer["metadata"];
    assert_eq!(metadata["NAMESPACE"], "ns1", "{peer}");
    assert_eq!(metadata["WORKLOAD_NAME"], "client-wl", "{peer}");
    assert_eq!(metadata["LABELS"]["app"], "client", "{peer}");
    assert!(metadata.get("PROXY_CONFIG").is_none(), "{peer}");
}

/// `istio.stats` as Istio configures it.
fn stats_filter() -> Value {
    json!({"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}})
}

/// The value of the one series of `family` on `admin`'s `/stats/prometheus` whose labels
/// include every `labels` pair (once it has that value or more).
fn istio_series(admin: u16, family: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
    wait_for(SOON, &format!("{family} with {labels:?}"), || {
        let text = http_get(addr(admin), "/stats/prometheus").ok()?.body;
        let line = text.lines().find(|line| {
            line.starts_with(&format!("{family}{{"))
                && labels
                    .iter()
                    .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })?;
        let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
        (value >= at_least).then_some(value)
    })
}

fn have_peer(test: &str) -> bool {
    have_python(test, "google.protobuf")
}

/// A proxy whose TCP listener relays to an istio_mx.py exchange server (`--garbage`: one that
/// negotiates `istio-peer-exchange` but sends no frame) over TLS offering Istio's ALPN list,
/// with the upstream exchange filter and `istio.stats` on the listener.
struct UpstreamExchange {
    admin: u16,
    /// What the server recorded of this proxy's frame (one JSON line a connection).
    record: std::path::PathBuf,
    /// What a client of the listener got back for its `hello mesh`.
    echoed: Vec<u8>,
    _server: PeerServer,
    _proxy: Proxy,
    _dir: TempDir,
}

/// `None` after saying why not (a missing peer fails under CI).
fn upstream_exchange(test: &str, garbage: bool) -> Option<UpstreamExchange> {
    if !have_peer(test) {
        return None;
    }
    let pki = pki();
    let dir = TempDir::new("mx-upstream");
    let record = dir.file("peers.jsonl");
    let mut args = vec![
        "server",
        "--cert",
        pki.upstream.cert.to_str().unwrap(),
        "--key",
        pki.upstream.key.to_str().unwrap(),
        "--metadata",
        r#"{"NAMESPACE": "ns2", "WORKLOAD_NAME": "server-wl"}"#,
        "--id",
        "sidecar~server",
        "--record",
        record.to_str().unwrap(),
    ];
    if garbage {
        args.push("--garbage");
    }
    let server = PeerServer::start("istio_mx.py", &args);
    let upstream = cluster(
        "server",
        &[(server.port, 1)],
        json!({
            "transport_socket": upstream_tls(
                json!({
                    "alpn_protocols": ["istio-peer-exchange", "istio"],
                    "validation_context": validation(&pki.ca, json!({})),
                }),
                json!({"sni": "localhost"}),
            ),
            "filters": [exchange_filter()],
        }),
    );
    let mut outbound = listener("out", 0, tcp_proxy("out", "server", json!({})));
    outbound["traffic_direction"] = json!("OUTBOUND");
    let relay = outbound["filter_chains"][0]["filters"][0].clone();
    outbound["filter_chains"][0]["filters"] = json!([stats_filter(), relay]);
    let mut b = bootstrap(0, vec![outbound], vec![upstream]);
    b["node"] = node();
    let proxy = Proxy::start("mx-upstream", &b);
    let (admin, port) = (proxy.admin.port(), proxy.port("out"));
    let mut client = connect(port);
    client.write_all(b"hello mesh").unwrap();
    let mut echoed = vec![0u8; if garbage { 22 } else { 10 }];
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.read_exact(&mut echoed).unwrap();
    Some(UpstreamExchange {
        admin,
        record,
        echoed,
        _server: server,
        _proxy: proxy,
        _dir: dir,
    })
}

/// A cluster to the exchange server: the server gets this proxy's frame, the client's bytes
/// pass after the exchange, and the server's frame never reaches the client.
#[test]
fn upstream_exchange_sends_the_node_and_consumes_the_peers_frame() {
    let test = "upstream_exchange_sends_the_node_and_consumes_the_peers_frame";
    let Some(run) = upstream_exchange(test, false) else {
        return;
    };
    assert_eq!(
        run.echoed, b"hello mesh",
        "the server's frame was not consumed"
    );
    let peer = wait_for(SOON, "the server's record of our frame", || {
        let text = fs::read_to_string(&run.record).ok()?;
        serde_json::from_str::<Value>(text.lines().next()?).ok()
    });
    assert_is_our_node(&peer);
    // istio.stats names the server's workload as the exchange told it, and its principal as
    // its certificate says (whose namespace wins over the exchanged one, as in Istio).
    let labels = [
        ("reporter", "source"),
        ("source_workload", "client-wl"),
        ("source_workload_namespace", "ns1"),
        ("destination_workload", "server-wl"),
        ("destination_workload_namespace", "default"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/default/sa/upstream",
        ),
        ("request_protocol", "tcp"),
    ];
    let admin = run.admin;
    istio_series(admin, "istio_tcp_connections_opened_total", &labels, 1.0);
    istio_series(admin, "istio_tcp_connections_closed_total", &labels, 1.0);
    istio_series(admin, "istio_tcp_received_bytes_total", &labels, 10.0);
    istio_series(admin, "istio_tcp_sent_bytes_total", &labels, 10.0);
}

/// A server that negotiated `istio-peer-exchange` but sends no frame (Istio: "peer missing
/// TCP MetadataExchange filter"): its bytes reach the client as they came, and the connection
/// has no upstream peer.
#[test]
fn upstream_exchange_relays_a_server_that_sends_no_frame() {
    let test = "upstream_exchange_relays_a_server_that_sends_no_frame";
    let Some(run) = upstream_exchange(test, true) else {
        return;
    };
    assert_eq!(run.echoed, b"\0\0\0\0garbage!hello mesh");
    let labels = [
        ("reporter", "source"),
        ("source_workload", "client-wl"),
        ("destination_workload", "unknown"),
        ("request_protocol", "tcp"),
    ];
    istio_series(
        run.admin,
        "istio_tcp_connections_opened_total",
        &labels,
        1.0,
    );
}

/// Runs istio_mx.py as a client of `port`: (the frame it read, what came back of `send`).
fn exchange_client(port: u16, send: &str, garbage: bool) -> (Value, String) {
    let pki = pki();
    let mut command = Command::new(python());
    command
        .arg(peer_script("istio_mx.py"))
        .args(["client", "--port", &port.to_string(), "--ca"])
        .arg(&pki.ca)
        .args([
            "--metadata",
            r#"{"NAMESPACE": "ns0", "WORKLOAD_NAME": "caller"}"#,
        ])
        .args(["--id", "sidecar~caller", "--send", send]);
    if garbage {
        command.arg("--garbage");
    }
    let output = command.output().expect("run tests/peers/istio_mx.py");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {stdout:?} ({output:?})"))
            .to_string()
    };
    (serde_json::from_str(&line("PEER ")).unwrap(), line("ECHO "))
}

/// A TLS listener offering `istio-peer-exchange` whose chain runs the exchange before its
/// tcp_proxy: a peer that sends its frame gets this proxy's and then a byte relay; a peer
/// whose first bytes are not a frame gets a relay of them too (no peer, as Istio's filter),
/// and the listener goes on serving.
#[test]
fn downstream_exchange_answers_and_relays_after_the_frames() {
    let test = "downstream_exchange_answers_and_relays_after_the_frames";
    if !have_peer(test) {
        return;
    }
    let pki = pki();
    let echo = Upstream::echo();
    let tls = downstream_tls(
        common_tls(
            vec![tls_certificate(&pki.server_ecdsa)],
            json!({"alpn_protocols": ["istio-peer-exchange"]}),
        ),
        json!({}),
    );
    let inbound = json!({
        "name": "in",
        "address": socket_address(0),
        "filter_chains": [{
            "filters": [
                exchange_filter(),
                {"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp_proxy("in", "echo", json!({}))},
            ],
            "transport_socket": tls,
        }],
    });
    let mut b = bootstrap(
        0,
        vec![inbound],
        vec![cluster("echo", &[(echo.port, 1)], json!({}))],
    );
    b["node"] = node();
    let proxy = Proxy::start("mx-downstream", &b);
    let port = proxy.port("in");
    let (peer, echoed) = exchange_client(port, "ping", false);
    assert_is_our_node(&peer);
    assert_eq!(echoed, "ping");
    // A peer that negotiated the protocol but sends no frame (Istio: "peer missing TCP
    // MetadataExchange filter") gets ours, and its bytes are relayed as they came.
    let (peer, echoed) = exchange_client(port, "ping", true);
    assert_is_our_node(&peer);
    assert_eq!(
        echoed, "\0\0\0\0garbage!ping",
        "a peer that sent no frame must have its bytes relayed"
    );
    let (_, echoed) = exchange_client(port, "still serving", false);
    assert_eq!(echoed, "still serving");
}

/// The base64 `Struct` an Istio peer puts in `x-envoy-peer-metadata`.
fn peer_header(workload: &str) -> String {
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as ProtoValue};
    let metadata = Struct {
        fields: [(
            "WORKLOAD_NAME".to_string(),
            ProtoValue {
                kind: Some(Kind::StringValue(workload.into())),
            },
        )]
        .into(),
    };
    STANDARD.encode(metadata.encode_to_vec())
}

/// The node metadata in an `x-envoy-peer-metadata` value.
fn decode_peer_header(value: &str) -> Value {
    use envoy_types::pb::google::protobuf::Struct;
    let metadata = Struct::decode(STANDARD.decode(value).unwrap().as_slice()).unwrap();
    proto_json(&metadata)
}

/// `Struct` as JSON (string and struct values, which is all these headers hold).
fn proto_json(s: &envoy_types::pb::google::protobuf::Struct) -> Value {
    use envoy_types::pb::google::protobuf::value::Kind;
    s.fields
        .iter()
        .map(|(k, v)| {
            let value = match &v.kind {
                Some(Kind::StringValue(s)) => json!(s),
                Some(Kind::StructValue(s)) => proto_json(s),
                other => json!(format!("{other:?}")),
            };
            (k.clone(), value)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A client sidecar's outbound HTTP path as Istio configures it: `io.istio.http.peer_metadata`
/// (upstream discovery and propagation) and `istio.alpn` before the router, to a cluster whose
/// TLS context offers `istio-peer-exchange, istio`. The upstream sees `istio-http/1.1` offered
/// and this proxy's metadata in the headers; the upstream's own peer headers are taken off
/// the response. A request the fault filter aborts is counted against the route's service.
#[test]
fn alpn_override_and_peer_headers_reach_the_upstream() {
    let pki = pki();
    let up = TlsUpstream::start(
        "istio-up",
        &pki.upstream,
        &[
            "--alpn",
            "istio-http/1.1,istio-h2,istio-peer-exchange,istio",
        ],
    );
    let filters = vec![
        json!({
            "name": "istio.metadata_exchange",
            "typed_config": {
                "@type": TYPED_STRUCT,
                "type_url": "type.googleapis.com/io.istio.http.peer_metadata.Config",
                "value": {
                    "upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
                    "upstream_propagation": [{"istio_headers": {}}],
                },
            },
        }),
        json!({
            "name": "istio.alpn",
            "typed_config": {
                "@type": ALPN_FILTER,
                "alpn_override": [
                    {"alpn_override": ["istio-http/1.0"]},
                    {"upstream_protocol": "HTTP11", "alpn_override": ["istio-http/1.1"]},
                    {"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2"]},
                ],
            },
        }),
        // Aborts the requests that ask for it (`x-envoy-fault-abort-request`).
        json!({
            "name": "envoy.filters.http.fault",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "abort": {"header_abort": {}, "percentage": {"numerator": 100}},
            },
        }),
        stats_filter(),
    ];
    let outbound = http_listener(
        "out",
        0,
        hcm(
            "out",
            catch_all_routes("istio-up", json!({})),
            filters,
            json!({}),
        ),
    );
    let upstream = cluster(
        "istio-up",
        &[(up.port, 1)],
        json!({"transport_socket": upstream_tls(
            json!({
                "alpn_protocols": ["istio-peer-exchange", "istio"],
                "validation_context": validation(&pki.ca, json!({})),
            }),
            json!({"sni": "localhost"}),
        ),
        "metadata": {"filter_metadata": {"istio": {"services": [{
            "host": "reviews.default.svc.cluster.local", "name": "reviews", "namespace": "default",
        }]}}}}),
    );
    let mut b = bootstrap(0, vec![outbound], vec![upstream]);
    b["node"] = node();
    let proxy = Proxy::start("istio-alpn", &b);
    let (admin, port) = (proxy.admin.port(), proxy.port("out"));
    // Twice: the second request reuses the connection the first opened with the override.
    for _ in 0..2 {
        let mut s = connect(port);
        write!(
            s,
            "GET /reviews HTTP/1.1\r\nhost: reviews\r\n\
             x-echo-header: x-envoy-peer-metadata: {}\r\n\
             x-echo-header: x-envoy-peer-metadata-id: sidecar~server\r\n\
             connection: close\r\n\r\n",
            peer_header("reviews-v2")
        )
        .unwrap();
        let r = read_http_response(s).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.header("x-envoy-peer-metadata").is_none(), "{r:?}");
        assert!(r.header("x-envoy-peer-metadata-id").is_none(), "{r:?}");
        let echo = r.json();
        assert_eq!(echo["tls"]["alpn"], "istio-http/1.1", "{echo}");
        let sent = |name: &str| {
            echo["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
                .map(|h| h[1].as_str().unwrap().to_string())
        };
        assert_eq!(sent("x-envoy-peer-metadata-id").as_deref(), Some(NODE_ID));
        let metadata = decode_peer_header(&sent("x-envoy-peer-metadata").expect("metadata sent"));
        assert_eq!(metadata["NAMESPACE"], "ns1", "{metadata}");
        assert_eq!(metadata["LABELS"]["version"], "v1", "{metadata}");
        assert!(metadata.get("PROXY_CONFIG").is_none(), "{metadata}");
    }
    // istio.stats names the upstream workload from its response headers, the service from
    // the cluster's metadata.
    let labels = [
        ("reporter", "source"),
        ("source_workload", "client-wl"),
        ("destination_workload", "reviews-v2"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("response_code", "200"),
        ("request_protocol", "http"),
    ];
    assert_eq!(
        istio_series(admin, "istio_requests_total", &labels, 2.0),
        2.0
    );
    istio_series(
        admin,
        "istio_request_duration_milliseconds_count",
        &labels,
        2.0,
    );

    // A request the fault filter aborts never reaches a workload, but its route's cluster
    // still names the destination service, as in Envoy.
    let mut s = connect(port);
    write!(
        s,
        "GET /reviews HTTP/1.1\r\nhost: reviews\r\n\
         x-envoy-fault-abort-request: 503\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let r = read_http_response(s).unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    let aborted = [
        ("reporter", "source"),
        ("destination_workload", "unknown"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("response_code", "503"),
        ("response_flags", "FI"),
    ];
    istio_series(admin, "istio_requests_total", &aborted, 1.0);
}
