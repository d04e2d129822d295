//! Tests: the gRPC peer (tests/peers/grpc_peer.py) — its server as a child process, and its
//! client's scenario runs as JSON.
use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

use super::http::{have_python, run_peer, PeerServer};

/// The whole client run (every scenario, one process, one channel) is killed after this.
const CLIENT_BOUND: Duration = Duration::from_secs(45);

/// Whether the peers' Python has grpcio; skips `test` (fails under CI) when not.
pub fn have_grpcio(test: &str) -> bool {
    have_python(test, "grpc")
}

/// `grpc_peer.py serve`: the h2c gRPC upstream.
pub fn grpc_server() -> PeerServer {
    PeerServer::start("grpc_peer.py", &["serve", "--port", "0", "--stdin-eof"])
}

/// Runs `grpc_peer.py call` with `scenarios` against 127.0.0.1:`port`, sending `authority`;
/// returns each scenario's JSON object by name.
pub fn grpc_call(port: u16, authority: &str, scenarios: &str) -> BTreeMap<String, Value> {
    let args: Vec<String> = [
        "call",
        "--target",
        &format!("127.0.0.1:{port}"),
        "--authority",
        authority,
        "--scenario",
        scenarios,
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = run_peer("grpc_peer.py", &args, CLIENT_BOUND);
    let mut out = BTreeMap::new();
    for line in run.stdout.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        out.insert(v["scenario"].as_str().unwrap().to_string(), v);
    }
    // A failed scenario prints its error in its JSON object (and the exit code is 1): the
    // caller's assertions name it. No object at all means the client itself failed.
    assert!(
        !out.is_empty(),
        "grpc_peer.py call {scenarios}: {}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    out
}
