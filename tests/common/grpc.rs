//! Tests: the gRPC peer (tests/peers/grpc_peer.py) — its server as a child process, and its
//! client's scenario runs as JSON.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use serde_json::Value;

use super::{
    http::{peer_script, python, run_peer},
    skip, Missing, SOON,
};

/// The whole client run (every scenario, one process, one channel) is killed after this.
const CLIENT_BOUND: Duration = Duration::from_secs(45);

/// Whether the peers' Python has grpcio; skips `test` (fails under CI) when not.
pub fn have_grpcio(test: &str) -> bool {
    let ok = Command::new(python())
        .args(["-c", "import grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(
            test,
            "no grpcio in the test venv (tests/run.sh installs it into target/test-venv)",
            Missing::Peer,
        );
    }
    ok
}

/// `grpc_peer.py serve`: the h2c gRPC upstream; exits when its stdin closes, killed by PID on
/// drop.
pub struct GrpcServer {
    pub port: u16,
    child: Child,
    _stdin: ChildStdin,
}

impl GrpcServer {
    pub fn start() -> GrpcServer {
        let mut child = Command::new(python())
            .arg(peer_script("grpc_peer.py"))
            .args(["serve", "--port", "0", "--stdin-eof"])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/peers/grpc_peer.py serve");
        let stdin = child.stdin.take().unwrap();
        // The READY line, read on a thread so a server that never prints it fails the test
        // after a bound instead of hanging it.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(SOON) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("grpc_peer.py serve printed no READY line within {SOON:?}");
            }
        };
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("grpc_peer.py serve printed {line:?}, not READY <port>"));
        GrpcServer {
            port,
            child,
            _stdin: stdin,
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
