//! Tests: shared end-to-end harness — temp dirs, bootstrap templates, the proxy as a child
//! process, a tiny admin HTTP client, and real upstream servers on threads.
//!
//! Ports come from the kernel: what can report the port it bound (shardproxy, Envoy, the
//! in-test upstreams, the Python peers) binds port 0 and is asked afterwards; `free_port` is
//! for the rest. Every child is killed by PID when its handle drops.
#![allow(dead_code)]

pub mod grpc;
pub mod http;
pub mod http_e2e;
pub mod istio;
pub mod netns;
pub mod pod;
pub mod tls;
pub mod xds;

use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_shardproxy");
pub const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub const FILE_LOG: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";

/// Generous bound for anything that should happen "soon" on 2 shared slow cores.
pub const SOON: Duration = Duration::from_secs(20);
/// Read/write timeout on every test socket: a hang fails the test instead of blocking CI.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Skipping

/// What a skipped test lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A peer that tests/run.sh installs (Envoy, a client): with `CI=true` the test fails
    /// instead of skipping, so CI never passes without having run it.
    Peer,
    /// Something of the machine the suite does not install (free fixed ports, the shared
    /// fixtures outside the repo, a system tool): skipped everywhere.
    Environment,
    /// A case shardproxy does not support yet (an Envoy example needing TLS, ...): skipped
    /// everywhere, with the reason.
    Feature,
}

/// Skips (the rest of) `test`: `SKIP test: reason` on stderr, and the same line appended to
/// the file `$SHARDPROXY_TEST_SKIPS` names (tests/run.sh sets it and prints a summary at the
/// end). Under `CI=true` a missing [`Missing::Peer`] panics instead.
pub fn skip(test: &str, reason: &str, missing: Missing) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci && missing == Missing::Peer {
        panic!(
            "{test}: {reason} (CI is set: a missing peer fails the test instead of skipping it)"
        );
    }
    let line = format!("SKIP {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("SHARDPROXY_TEST_SKIPS") {
        // One short write per line with O_APPEND: lines from parallel tests do not interleave.
        let appended = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = appended {
            eprintln!(
                "cannot record the skip in {}: {e}",
                Path::new(&path).display()
            );
        }
    }
}

/// `cmd` on PATH, if there.
pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

pub fn have_command(cmd: &str) -> bool {
    which(cmd).is_some()
}

// ---------------------------------------------------------------------------------------------
// Ports, temp dirs, polling

/// A port no one listens on, for a process to bind later. Only where port 0 cannot serve:
/// - the process cannot report the port it got (nginx, HAProxy configs);
/// - the port must be known before the process starts: written into another config (a
///   cluster endpoint in the same bootstrap, a control plane's resources), matched on
///   (`destination_port`, `source_ports`, an authorization server's deny list), connected to
///   while its listener warms, or hot restart's fixed addresses;
/// - the test reads it back from what names it: listener stats are named after the configured
///   address, in Envoy as in shardproxy (`listener.127.0.0.1_0.` for port 0, see
///   `tls::listener_stats`), and some compared access-log lines and recorded requests hold the
///   listener's address;
/// - nothing may listen there at all ([`refused_port`]).
///
/// Everything else binds port 0 and reads the port back ([`Proxy::port`],
/// [`http::HttpProxy::port`], the peers' `LISTEN` lines). Taken from 12000..32000, below the
/// kernel's ephemeral range (32768+): a port picked by binding port 0 is closed again before
/// the proxy binds it, and in between any outgoing connection of a parallel test may take it as
/// its source port. Ports are handed out once per test process, starting at an offset from the
/// PID so test binaries run side by side rarely meet; each is checked free by binding it.
pub fn free_port() -> u16 {
    const FIRST: u32 = 12000;
    const SPAN: u32 = 20000;
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    let _ = NEXT.compare_exchange(
        usize::MAX,
        (std::process::id().wrapping_mul(7919) % SPAN) as usize,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) as u32 % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// What `--admin-address-path` (shardproxy's and Envoy's) wrote, once it is there.
pub fn admin_address(path: &Path) -> Option<SocketAddr> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The address listener `name` bound, from the admin's `/listeners` (`name::address` lines;
/// the port is the kernel's choice for a listener configured on port 0, in shardproxy as in
/// Envoy).
pub fn listener_address(admin: SocketAddr, name: &str) -> SocketAddr {
    let listeners = http_get(admin, "/listeners")
        .unwrap_or_else(|e| panic!("GET {admin}/listeners: {e}"))
        .body;
    listeners
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix("::"))
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no listener {name} in /listeners:\n{listeners}"))
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A directory under cargo's per-target temp dir; removed on drop unless the test is failing
/// (then kept, and its path printed, for the proxy's logs).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e")
            .join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `f` every 50 ms until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_for(timeout, f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `f` every 50 ms until it returns Some; `None` once `timeout` passed (the caller
/// explains the failure).
pub fn poll_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `text` to `path` atomically (temp file in the same dir, then rename), as a
/// config-management tool would.
/// The lines of a log file once it has at least `n` (panics after `SOON`).
pub fn log_lines(path: &Path, n: usize) -> Vec<String> {
    wait_for(SOON, &format!("{n} access log lines"), || {
        let text = fs::read_to_string(path).ok()?;
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= n).then_some(lines)
    })
}

/// [`log_lines`], then the file is removed, so the next proxy of a test writes its own.
pub fn take_log_lines(path: &Path, n: usize) -> Vec<String> {
    let lines = log_lines(path, n);
    let _ = fs::remove_file(path);
    lines
}

pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Bootstrap templates (built as JSON values, written as block YAML)

/// Renders a JSON value as block-style YAML (strings JSON-quoted, which YAML accepts).
pub fn to_yaml(v: &Value) -> String {
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => serde_json::to_string(s).unwrap(),
            other => other.to_string(),
        }
    }
    fn is_scalar_or_empty(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => true,
        }
    }
    fn emit(v: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(m) => {
                for (k, val) in m {
                    let key = serde_json::to_string(k).unwrap();
                    if is_scalar_or_empty(val) {
                        out.push_str(&format!("{pad}{key}: {}\n", scalar(val)));
                    } else {
                        out.push_str(&format!("{pad}{key}:\n"));
                        emit(val, indent + 2, out);
                    }
                }
            }
            Value::Array(a) => {
                for item in a {
                    if is_scalar_or_empty(item) {
                        out.push_str(&format!("{pad}- {}\n", scalar(item)));
                    } else {
                        out.push_str(&format!("{pad}-\n"));
                        emit(item, indent + 2, out);
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", scalar(other))),
        }
    }
    let mut out = String::new();
    emit(v, 0, &mut out);
    out
}

pub fn socket_address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// A tcp_proxy typed_config relaying to `cluster`, with `extra` fields merged in.
pub fn tcp_proxy(stat_prefix: &str, cluster: &str, extra: Value) -> Value {
    let mut v = json!({"@type": TCP_PROXY, "stat_prefix": stat_prefix, "cluster": cluster});
    merge(&mut v, extra);
    v
}

/// A listener on 127.0.0.1:`port` with one filter chain holding `tcp_proxy` (a typed_config).
pub fn listener(name: &str, port: u16, tcp_proxy: Value) -> Value {
    json!({
        "name": name,
        "address": socket_address(port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": tcp_proxy,
        }]}],
    })
}

/// A STATIC cluster over 127.0.0.1 `endpoints` given as (port, weight); `extra` merged in.
pub fn cluster(name: &str, endpoints: &[(u16, u32)], extra: Value) -> Value {
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(port, weight)| json!({"endpoint": {"address": socket_address(*port)}, "load_balancing_weight": weight}))
        .collect();
    let mut v = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]},
    });
    merge(&mut v, extra);
    v
}

/// A whole bootstrap: admin on `admin_port`, the given static listeners and clusters.
pub fn bootstrap(admin_port: u16, listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "admin": {"address": socket_address(admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

/// Shallow-recursive merge of object `extra` into `base`.
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (b, e) => *b = e,
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy as a child process

pub struct Proxy {
    pub child: Child,
    /// Port 0 until `wait_ready` reads the bound address of an admin configured on port 0.
    pub admin: SocketAddr,
    admin_address_path: Option<PathBuf>,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub stderr_path: PathBuf,
    pub stdout_path: PathBuf,
    exited: Option<ExitStatus>,
}

pub struct ProxyBuilder {
    config: Option<String>,
    admin_port: u16,
    args: Vec<String>,
    tag: String,
    wait_ready: bool,
    under: Vec<String>,
}

impl ProxyBuilder {
    /// Runs the proxy through a command that execs it (e.g. `taskset -c 0`), so the child's PID
    /// is still the proxy's.
    pub fn under(mut self, command: &[&str]) -> Self {
        self.under = command.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Extra command-line arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }
    /// Do not wait for /ready (for startup-failure tests).
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }
    pub fn start(self) -> Proxy {
        let dir = TempDir::new(&self.tag);
        let config_path = dir.file("bootstrap.yaml");
        let stderr_path = dir.file("stderr.log");
        let stdout_path = dir.file("stdout.log");
        let mut cmd = match self.under.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        if let Some(config) = &self.config {
            fs::write(&config_path, config).unwrap();
            cmd.arg("-c").arg(&config_path);
        }
        if !self.args.iter().any(|a| a == "--concurrency") {
            cmd.args(["--concurrency", "2"]);
        }
        // An admin on port 0: the proxy writes the port it got, `admin_address` reads it.
        let admin_address_path = (self.admin_port == 0).then(|| dir.file("admin_address"));
        if let Some(path) = &admin_address_path {
            cmd.arg("--admin-address-path").arg(path);
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let mut proxy = Proxy {
            child,
            admin: addr(self.admin_port),
            admin_address_path,
            dir,
            config_path,
            stderr_path,
            stdout_path,
            exited: None,
        };
        if self.wait_ready {
            proxy.wait_ready();
        }
        proxy
    }
}

impl Proxy {
    /// A proxy running `bootstrap` (written to bootstrap.yaml, passed with -c); the admin port
    /// is read from the bootstrap.
    pub fn builder(tag: &str, bootstrap: &Value) -> ProxyBuilder {
        let admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
            .as_u64()
            .expect("bootstrap has admin.address.socket_address.port_value")
            as u16;
        ProxyBuilder {
            config: Some(to_yaml(bootstrap)),
            admin_port,
            args: Vec::new(),
            tag: tag.into(),
            wait_ready: true,
            under: Vec::new(),
        }
    }

    /// A proxy started from raw config text (written to bootstrap.yaml).
    pub fn builder_raw(tag: &str, config: Option<&str>, admin_port: u16) -> ProxyBuilder {
        ProxyBuilder {
            config: config.map(str::to_string),
            admin_port,
            args: Vec::new(),
            tag: tag.into(),
            wait_ready: true,
            under: Vec::new(),
        }
    }

    pub fn start(tag: &str, bootstrap: &Value) -> Proxy {
        Self::builder(tag, bootstrap).start()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// The exit status if the process has exited (non-blocking).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap();
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls /ready until 200 LIVE; panics with the proxy's stderr if it exits or times out.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        let limit = Duration::from_secs(60);
        loop {
            if let Some(status) = self.try_exit() {
                panic!(
                    "proxy exited before ready ({status}); stderr:\n{}",
                    self.stderr()
                );
            }
            if self.admin.port() == 0 {
                let path = self
                    .admin_address_path
                    .as_ref()
                    .expect("admin port 0 without a path");
                if let Some(bound) = admin_address(path) {
                    self.admin = bound;
                }
            } else if let Ok(r) = http_get(self.admin, "/ready") {
                if r.status == 200 {
                    assert!(
                        r.body.contains("LIVE"),
                        "/ready 200 without LIVE: {:?}",
                        r.body
                    );
                    return;
                }
            }
            if start.elapsed() > limit {
                panic!(
                    "proxy not ready after {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.admin, path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}; stderr:\n{}", self.stderr()))
    }

    /// The address listener `name` bound (see [`listener_address`]).
    pub fn listener_address(&self, name: &str) -> SocketAddr {
        listener_address(self.admin, name)
    }

    /// The port listener `name` bound.
    pub fn port(&self, name: &str) -> u16 {
        self.listener_address(name).port()
    }

    /// The port listener `name` bound, once /listeners shows it (a listener a reload adds).
    pub fn wait_port(&self, name: &str) -> u16 {
        let line = format!("{name}::");
        wait_for(SOON, &format!("listener {name} in /listeners"), || {
            let listeners = self.get("/listeners").body;
            listeners
                .lines()
                .any(|l| l.starts_with(&line))
                .then_some(())
        });
        self.port(name)
    }

    pub fn post(&self, path: &str) -> HttpResponse {
        http_request(self.admin, "POST", path)
            .unwrap_or_else(|e| panic!("POST {path}: {e}; stderr:\n{}", self.stderr()))
    }

    /// All `name: integer` lines of /stats.
    pub fn stats(&self) -> BTreeMap<String, i64> {
        let r = self.get("/stats");
        assert_eq!(r.status, 200, "/stats: {}", r.body);
        parse_stats(&r.body)
    }

    pub fn stat(&self, name: &str) -> Option<i64> {
        self.stats().get(name).copied()
    }

    /// Polls /stats until `name` satisfies `pred`; returns its value.
    pub fn wait_stat(&self, name: &str, what: &str, pred: impl Fn(i64) -> bool) -> i64 {
        let start = Instant::now();
        loop {
            let stats = self.stats();
            match stats.get(name) {
                Some(v) if pred(*v) => return *v,
                v if start.elapsed() > SOON => {
                    let near: Vec<_> = stats
                        .iter()
                        .filter(|(k, _)| k.split('.').take(2).eq(name.split('.').take(2)))
                        .collect();
                    panic!("stat {name} = {v:?}, expected {what}; related stats: {near:?}");
                }
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Rewrites the watched bootstrap file atomically.
    pub fn rewrite(&self, bootstrap: &str) {
        write_atomic(&self.config_path, bootstrap);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill(); // SIGKILL by PID
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- proxy {} stderr ----\n{}",
                self.pid(),
                tail(&self.stderr(), 4000)
            );
        }
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Parses Envoy's text /stats: every `name: integer` line (histogram lines are skipped).
pub fn parse_stats(body: &str) -> BTreeMap<String, i64> {
    body.lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(": ")?;
            Some((name.to_string(), value.trim().parse::<i64>().ok()?))
        })
        .collect()
}

/// Runs the binary to completion (bounded by `timeout`) and returns (status, stdout, stderr).
pub fn run_to_end(args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    let dir = TempDir::new("run");
    let out = dir.file("stdout");
    let err = dir.file("stderr");
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{BIN} {args:?} did not exit within {timeout:?}; stderr:\n{}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        fs::read_to_string(&out).unwrap_or_default(),
        fs::read_to_string(&err).unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client for the admin interface

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", tail(&self.body, 2000)))
    }
}

pub fn http_get(to: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    http_request(to, "GET", path)
}

pub fn http_request(to: SocketAddr, method: &str, path: &str) -> io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nUser-Agent: shardproxy-e2e\r\nAccept: */*\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    read_http_response(s)
}

/// Reads one response (Content-Length, chunked, or until EOF) from `s`.
pub fn read_http_response(s: impl Read) -> io::Result<HttpResponse> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("EOF in headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(&format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// ---------------------------------------------------------------------------------------------
// Client helpers

/// Connects to 127.0.0.1:`port` with I/O timeouts set.
pub fn connect(port: u16) -> TcpStream {
    try_connect(port).unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"))
}

pub fn try_connect(port: u16) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(5))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads until EOF (bounded by the socket's read timeout).
pub fn read_all(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    s.read_to_end(&mut v)?;
    Ok(v)
}

/// Reads one `\n`-terminated line (byte by byte: nothing after it is consumed).
pub fn read_line(s: &mut TcpStream) -> io::Result<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b)? {
            0 => break,
            _ if b[0] == b'\n' => break,
            _ => out.push(b[0]),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What an established connection does next: data, clean EOF, reset, or nothing (timeout).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Data(usize),
    Eof,
    Reset,
    Timeout,
}

pub fn next_outcome(s: &mut TcpStream, within: Duration) -> Outcome {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let out = match s.read(&mut buf) {
        Ok(0) => Outcome::Eof,
        Ok(n) => Outcome::Data(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Outcome::Timeout
        }
        Err(_) => Outcome::Reset,
    };
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    out
}

/// Deterministic pseudo-random bytes (xorshift64*), the same for the same seed.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `len` pattern bytes from `seed` to `w`; returns their SHA-256 (hex).
pub fn send_pattern(w: &mut impl Write, seed: u64, len: usize) -> io::Result<String> {
    let mut p = Pattern::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        p.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        h.update(&buf[..n]);
        left -= n;
    }
    w.flush()?;
    Ok(hex(&h.finalize()))
}

/// SHA-256 (hex) of `len` pattern bytes from `seed`, without sending them.
pub fn pattern_hash(seed: u64, len: usize) -> String {
    send_pattern(&mut io::sink(), seed, len).unwrap()
}

/// Reads `r` to EOF; returns (byte count, SHA-256 hex).
pub fn hash_to_eof(r: &mut impl Read) -> io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex(&h.finalize())))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Upstream servers on threads

type Handler = Arc<dyn Fn(TcpStream) + Send + Sync>;

/// A real TCP server on 127.0.0.1:0; each accepted connection runs `handler` on its own thread.
/// Stops accepting when dropped (connections already running finish on their own).
pub struct Upstream {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(handler);
        let (a, st) = (accepted.clone(), stop.clone());
        thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                        s.set_write_timeout(Some(Duration::from_secs(120))).unwrap();
                        let _ = s.set_nodelay(true);
                        let h = handler.clone();
                        thread::spawn(move || h(s));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Upstream {
            port,
            accepted,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Echoes everything; after the client's EOF, closes its write side.
    pub fn echo() -> Upstream {
        Upstream::start(|mut s| {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = s.shutdown(Shutdown::Write);
        })
    }

    /// Reads to EOF, then replies `<count> <sha256-hex>\n` and closes; also reports each
    /// connection's (count, hash) on the returned channel.
    pub fn sink() -> (Upstream, mpsc::Receiver<(u64, String)>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let u = Upstream::start(move |mut s| {
            if let Ok((n, h)) = hash_to_eof(&mut s) {
                let _ = tx.lock().unwrap().send((n, h.clone()));
                let _ = s.write_all(format!("{n} {h}\n").as_bytes());
            }
        });
        (u, rx)
    }

    /// Sends `len` pattern bytes from `seed`, then closes.
    pub fn source(seed: u64, len: usize) -> Upstream {
        Upstream::start(move |mut s| {
            let _ = send_pattern(&mut s, seed, len);
            let _ = s.shutdown(Shutdown::Write);
            // Wait for the peer's close so nothing unread turns the close into a reset.
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = io::copy(&mut s, &mut io::sink());
        })
    }

    /// Writes `<id>\n` at once, then holds the connection until the peer closes it.
    pub fn hello(id: &str) -> Upstream {
        let id = format!("{id}\n");
        Upstream::start(move |mut s| {
            if s.write_all(id.as_bytes()).is_ok() {
                let _ = io::copy(&mut s, &mut io::sink());
            }
        })
    }

    /// Waits for the first bytes, then resets the connection (SO_LINGER 0 close).
    pub fn reset_after_first_read() -> Upstream {
        Upstream::start(|mut s| {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"partial");
            thread::sleep(Duration::from_millis(100));
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A port with nothing listening: connecting gets ECONNREFUSED.
pub fn refused_port() -> u16 {
    free_port()
}

/// A 127.0.0.1 address where a TCP connect hangs: a listener with backlog 0 whose accept
/// queue is already full (the kernel then drops further SYNs), held while this lives.
pub struct Blackhole {
    pub port: u16,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        sock.bind(&addr(0).into()).unwrap();
        sock.listen(0).unwrap();
        let port = sock.local_addr().unwrap().as_socket().unwrap().port();
        let mut fillers = Vec::new();
        // Fill the accept queue until a connect no longer completes.
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr(port), Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(_) => {
                    return Blackhole {
                        port,
                        _listener: sock,
                        _fillers: fillers,
                    }
                }
            }
        }
        panic!("could not make a blackhole: the accept queue of a backlog-0 listener never filled");
    }
}
