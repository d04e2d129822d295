//! Tests: HTTP end-to-end helpers — scripted HTTP/1.1 upstream servers on threads (request
//! log, connection counts), a keep-alive HTTP/1.1 client and an h2c (prior knowledge) client
//! behind one `fetch_with(Proto, …)`, connection-manager bootstrap builders, and scenes run on
//! shardproxy or on Envoy as a peer with the same bootstrap.
use std::{
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{
    admin_address, bootstrap, http_get, listener_address, merge, socket_address, to_yaml,
    try_connect, Proxy, TempDir, Upstream, IO_TIMEOUT,
};

pub const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
pub const UPSTREAM_HTTP_OPTIONS: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
pub const UPSTREAM_HTTP_OPTIONS_KEY: &str =
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
pub const PREVIOUS_HOSTS: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

// ---------------------------------------------------------------------------------------------
// Bootstrap builders for the HTTP connection manager

/// The router filter entry (last in every chain).
pub fn router_filter() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}})
}

/// An HTTP filter entry named `name` with typed config `config`.
pub fn http_filter(name: &str, config: Value) -> Value {
    json!({"name": name, "typed_config": config})
}

/// An HCM typed_config with an inline route config of `virtual_hosts`, the router as its only
/// filter, `extra` merged in (an `http_filters` in `extra` replaces the chain).
pub fn hcm(stat_prefix: &str, virtual_hosts: Value, extra: Value) -> Value {
    let mut v = json!({
        "@type": HCM,
        "stat_prefix": stat_prefix,
        "route_config": {"name": "local_route", "virtual_hosts": virtual_hosts},
        "http_filters": [router_filter()],
    });
    merge(&mut v, extra);
    v
}

/// A listener on 127.0.0.1:`port` whose one filter is the connection manager `hcm`.
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

/// A virtual host named `name` for every domain with these `routes`.
pub fn any_host(routes: Value) -> Value {
    json!([{"name": "any", "domains": ["*"], "routes": routes}])
}

/// A route on `prefix` to `cluster`, with `action` merged into its `route` action.
pub fn route_to(prefix: &str, cluster: &str, action: Value) -> Value {
    let mut route = json!({"cluster": cluster});
    merge(&mut route, action);
    json!({"match": {"prefix": prefix}, "route": route})
}

/// `typed_extension_protocol_options` for a cluster: HTTP/1.1 upstreams with
/// `common_http_protocol_options` = `common`.
pub fn upstream_http_options(common: Value) -> Value {
    json!({"typed_extension_protocol_options": {UPSTREAM_HTTP_OPTIONS_KEY: {
        "@type": UPSTREAM_HTTP_OPTIONS,
        "explicit_http_config": {"http_protocol_options": {}},
        "common_http_protocol_options": common,
    }}})
}

/// A file access log at `path` with `format` (`None`: Envoy's default format).
pub fn file_access_log(path: &std::path::Path, format: Option<&str>) -> Value {
    let mut config = json!({"@type": super::FILE_LOG, "path": path.to_str().unwrap()});
    if let Some(format) = format {
        config["log_format"] = json!({"text_format_source": {"inline_string": format}});
    }
    json!([{"name": "envoy.access_loggers.file", "typed_config": config}])
}

// ---------------------------------------------------------------------------------------------
// Scripted HTTP/1.1 upstreams

/// A request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub chunked: bool,
    /// Which accepted connection (0-based) carried it.
    pub conn: usize,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What an upstream does with a request.
#[derive(Clone)]
pub enum Reply {
    /// A response with `content-length`.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// These bytes, then keep reading requests.
    Raw(Vec<u8>),
    /// These bytes, then close.
    RawClose(Vec<u8>),
    /// Close with a TCP reset, answering nothing.
    Reset,
    /// These bytes, then a TCP reset.
    RawReset(Vec<u8>),
    /// Close cleanly, answering nothing.
    Close,
    /// Wait, then do the rest.
    After(Duration, Box<Reply>),
    /// Never answer; hold the connection until the peer closes it.
    Hang,
    /// `101 Switching Protocols`, then echo raw bytes until EOF.
    UpgradeEcho,
}

impl Reply {
    pub fn status(status: u16, body: &str) -> Reply {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }
    pub fn ok(body: &str) -> Reply {
        Reply::status(200, body)
    }
    pub fn with_headers(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        Reply::Respond {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }
    pub fn after(ms: u64, then: Reply) -> Reply {
        Reply::After(Duration::from_millis(ms), Box::new(then))
    }
}

type ReqHandler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

/// An HTTP/1.1 server on a thread per connection: parses requests (keep-alive, content-length
/// and chunked bodies with trailers), logs them, and answers what `handler` says.
pub struct HttpUpstream {
    pub port: u16,
    server: Upstream,
    log: Arc<Mutex<Vec<Req>>>,
    closed: Arc<AtomicUsize>,
}

impl HttpUpstream {
    pub fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> HttpUpstream {
        let log: Arc<Mutex<Vec<Req>>> = Arc::default();
        let handler: ReqHandler = Arc::new(handler);
        let conns = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (server_log, server_closed) = (log.clone(), closed.clone());
        let server = Upstream::start(move |s| {
            let conn = conns.fetch_add(1, Ordering::SeqCst);
            serve_http(s, conn, &*handler, &server_log);
            server_closed.fetch_add(1, Ordering::SeqCst);
        });
        HttpUpstream {
            port: server.port,
            server,
            log,
            closed,
        }
    }

    /// Answers the i-th request (from 0, over all connections) with `script[i]`, and every
    /// request after the script's end with its last reply.
    pub fn script(script: Vec<Reply>) -> HttpUpstream {
        assert!(!script.is_empty());
        let n = AtomicUsize::new(0);
        HttpUpstream::start(move |_| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            script[i.min(script.len() - 1)].clone()
        })
    }

    /// Connections this upstream has seen end (closed by the peer, or by its script).
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Answers every request `200` with body `name` and header `x-upstream: name`.
    pub fn named(name: &str) -> HttpUpstream {
        let name = name.to_string();
        HttpUpstream::start(move |_| Reply::with_headers(200, &[("x-upstream", &name)], &name))
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.server.accepted()
    }

    /// Requests received so far (complete, body included).
    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The last request received (panics if none).
    pub fn last(&self) -> Req {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }
}

fn serve_http(s: TcpStream, conn: usize, handler: &dyn Fn(&Req) -> Reply, log: &Mutex<Vec<Req>>) {
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(s);
    loop {
        let req = match read_request(&mut r, conn) {
            Ok(Some(req)) => req,
            Ok(None) | Err(_) => return,
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || req.version == "HTTP/1.0";
        log.lock().unwrap().push(req.clone());
        let mut reply = handler(&req);
        while let Reply::After(wait, then) = reply {
            thread::sleep(wait);
            reply = *then;
        }
        match reply {
            Reply::Respond {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
                for (k, v) in &headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
                if !has("content-length") && !has("transfer-encoding") {
                    out.push_str(&format!("content-length: {}\r\n", body.len()));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                if req.method != "HEAD" {
                    bytes.extend_from_slice(&body);
                }
                if w.write_all(&bytes).is_err() || close {
                    return;
                }
            }
            Reply::Raw(bytes) => {
                if w.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::RawClose(bytes) => {
                let _ = w.write_all(&bytes);
                let _ = w.shutdown(Shutdown::Write);
                let _ = io::copy(&mut r, &mut io::sink());
                return;
            }
            Reply::Reset => {
                let _ = socket2::SockRef::from(&w).set_linger(Some(Duration::ZERO));
                return;
            }
            Reply::RawReset(bytes) => {
                let _ = w.write_all(&bytes);
                thread::sleep(Duration::from_millis(200));
                let _ = socket2::SockRef::from(&w).set_linger(Some(Duration::ZERO));
                return;
            }
            Reply::Close => {
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            Reply::Hang => {
                let _ = io::copy(&mut r, &mut io::sink());
                return;
            }
            Reply::UpgradeEcho => {
                let head = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
                if w.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let mut buf = vec![0u8; 16 << 10];
                // Bytes already buffered after the head go first.
                let early = r.buffer().to_vec();
                r.consume(early.len());
                if w.write_all(&early).is_err() {
                    return;
                }
                loop {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = w.shutdown(Shutdown::Write);
                return;
            }
            Reply::After(..) => unreachable!("unwrapped above"),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        101 => "Switching Protocols",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn invalid(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

/// Reads one header section (until the empty line); `None` at a clean EOF before any byte.
fn read_fields(r: &mut impl BufRead) -> io::Result<Option<Vec<(String, String)>>> {
    let mut fields = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            return Ok(Some(fields));
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad field {l:?}")))?;
        fields.push((k.to_string(), v.trim().to_string()));
    }
}

/// Header or trailer fields, in order.
type Fields = Vec<(String, String)>;

/// Reads a chunked body and its trailers.
fn read_chunked(r: &mut impl BufRead) -> io::Result<(Vec<u8>, Fields)> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            let trailers = read_fields(r)?.ok_or_else(|| invalid("EOF in trailers"))?;
            return Ok((body, trailers));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        line.clear();
        r.read_line(&mut line)?;
    }
}

/// Reads one request; `None` at a clean EOF between requests.
fn read_request(r: &mut impl BufRead, conn: usize) -> io::Result<Option<Req>> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let (method, path, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), Some(v)) => (m.to_string(), p.to_string(), v.to_string()),
        _ => return Err(invalid(format!("bad request line {line:?}"))),
    };
    let headers = read_fields(r)?.ok_or_else(|| invalid("EOF in headers"))?;
    let chunked = find_header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let (body, trailers) = if chunked {
        read_chunked(r)?
    } else {
        let len = find_header(&headers, "content-length")
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| invalid("bad content-length"))
            })
            .transpose()?
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        (body, Vec::new())
    };
    Ok(Some(Req {
        method,
        path,
        version,
        headers,
        body,
        trailers,
        chunked,
        conn,
    }))
}

// ---------------------------------------------------------------------------------------------
// A keep-alive HTTP/1.1 client

/// A response as the client read it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection: requests written whole, responses read one at a time.
pub struct Client {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
    pub port: u16,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::try_connect(port).unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"))
    }

    /// Connects from the local address `ip` (another loopback address, e.g. `127.0.0.2`:
    /// Envoy treats `127.0.0.1` itself specially in `x-forwarded-for`).
    pub fn connect_from(port: u16, ip: [u8; 4]) -> Client {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        let from = std::net::SocketAddr::from((ip, 0));
        sock.bind(&from.into()).unwrap();
        sock.connect_timeout(&super::addr(port).into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port} from {from}: {e}"));
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
            port,
        }
    }

    pub fn try_connect(port: u16) -> io::Result<Client> {
        let s = try_connect(port)?;
        Ok(Client {
            w: s.try_clone()?,
            r: BufReader::new(s),
            port,
        })
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write to the proxy");
    }

    /// Sends a request (HTTP/1.1, `host: example.com` unless given, `content-length` when
    /// there is a body) and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: reading the response: {e}"))
    }

    /// `request`, with an error when the response is cut.
    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        self.send(&request_bytes(method, path, headers, body));
        self.read_response(method == "HEAD")
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    /// Reads one response (interim 1xx responses other than 101 are skipped).
    pub fn read_response(&mut self, head_request: bool) -> io::Result<Resp> {
        loop {
            let resp = self.read_one(head_request)?;
            if !(100..200).contains(&resp.status) || resp.status == 101 {
                return Ok(resp);
            }
        }
    }

    /// Reads one response, 1xx included.
    pub fn read_one(&mut self, head_request: bool) -> io::Result<Resp> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF"));
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status = parts
            .next()
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
        let headers = read_fields(&mut self.r)?.ok_or_else(|| invalid("EOF in headers"))?;
        let mut resp = Resp {
            version,
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            (resp.body, resp.trailers) = read_chunked(&mut self.r)?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().map_err(|_| invalid("bad content-length"))?;
            resp.body.resize(len, 0);
            self.r.read_exact(&mut resp.body)?;
        } else {
            self.r.read_to_end(&mut resp.body)?;
        }
        Ok(resp)
    }

    /// Whether the proxy closes the connection within `within` (EOF or reset, nothing read).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.r.get_ref().set_read_timeout(Some(within)).unwrap();
        let mut b = [0u8; 1];
        let closed = match self.r.read(&mut b) {
            Ok(0) => true,
            Ok(_) => panic!("unexpected data from the proxy"),
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        self.r.get_ref().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        closed
    }
}

/// The bytes of a request: `host: example.com` unless `headers` has one; `content-length`
/// when there is a body and no framing header is given.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        out.push_str("host: example.com\r\n");
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The protocol a scene's client speaks to the proxy's listener (codec `AUTO`: HTTP/1.1, or
/// HTTP/2 by its connection preface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// The raw-socket HTTP/1.1 `Client`.
    Http1,
    /// HTTP/2 cleartext with prior knowledge (`h2c_request`).
    H2c,
}

impl Proto {
    /// Both, HTTP/1.1 first: scenarios about routing semantics run over each.
    pub const ALL: [Proto; 2] = [Proto::Http1, Proto::H2c];
}

/// One request on a fresh connection in `proto`; an error when the response is cut (the
/// connection closed or reset mid-response, or the HTTP/2 stream reset).
pub fn try_fetch_with(
    proto: Proto,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Resp> {
    match proto {
        Proto::Http1 => Client::try_connect(port)?.try_request(method, path, headers, body),
        Proto::H2c => h2c_request(port, method, path, headers, body),
    }
}

/// One request on a fresh connection in `proto` (panics if the response is cut).
pub fn fetch_with(
    proto: Proto,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_fetch_with(proto, port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{proto:?} {method} {path}: reading the response: {e}"))
}

/// `GET path` on a fresh connection in `proto`.
pub fn get_with(proto: Proto, port: u16, path: &str) -> Resp {
    fetch_with(proto, port, "GET", path, &[], b"")
}

/// One request over HTTP/2 cleartext with prior knowledge on a fresh connection (its own
/// current-thread tokio runtime): `:authority` from a `host` in `headers`, else
/// `example.com`; `content-length` when there is a body and none is given, as the HTTP/1.1
/// client sends. The response's `version` is `HTTP/2`, its header names lower case (as
/// HTTP/2 carries them), its body and trailers read whole.
pub fn h2c_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Resp> {
    let h2 = |e: h2::Error| io::Error::other(format!("h2: {e}"));
    let authority = find_header_ref(headers, "host").unwrap_or("example.com");
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{authority}{path}"));
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
    {
        req = req.header(*k, *v);
    }
    if !body.is_empty() && find_header_ref(headers, "content-length").is_none() {
        req = req.header("content-length", body.len());
    }
    let req = req.body(()).map_err(|e| invalid(format!("request: {e}")))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(super::addr(port)).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = h2::client::handshake(tcp).await.map_err(h2)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await.map_err(h2)?;
        let (response, mut stream) = send.send_request(req, body.is_empty()).map_err(h2)?;
        if !body.is_empty() {
            stream
                .send_data(bytes::Bytes::copy_from_slice(body), true)
                .map_err(h2)?;
        }
        let (head, mut recv) = response.await.map_err(h2)?.into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(h2)?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.map_err(h2)?;
        let fields = |map: &http::HeaderMap| -> Fields {
            map.iter()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_string(), v)
                })
                .collect()
        };
        Ok::<_, io::Error>(Resp {
            version: "HTTP/2".to_string(),
            status: head.status.as_u16(),
            headers: fields(&head.headers),
            body: data,
            trailers: trailers.as_ref().map(fields).unwrap_or_default(),
        })
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            tokio::time::timeout(IO_TIMEOUT, exchange)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "h2c exchange timed out"))?
        })
}

fn find_header_ref<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// One HTTP/1.1 request on a fresh connection.
pub fn fetch(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    fetch_with(Proto::Http1, port, method, path, headers, body)
}

/// `GET path` on a fresh HTTP/1.1 connection.
pub fn get(port: u16, path: &str) -> Resp {
    get_with(Proto::Http1, port, path)
}

// ---------------------------------------------------------------------------------------------
// Envoy as a peer

/// The Envoy binary tests compare with: `SHARDPROXY_TEST_ENVOY` (set by tests/run.sh), else
/// the test venv's; `None` when there is none (the comparison is then skipped).
pub fn envoy_binary() -> Option<PathBuf> {
    let from_env = std::env::var_os("SHARDPROXY_TEST_ENVOY").map(PathBuf::from);
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/envoy");
    from_env.into_iter().chain([venv]).find(|p| p.is_file())
}

/// Envoy running a bootstrap, killed by PID on drop.
pub struct Envoy {
    child: Child,
    pub dir: TempDir,
    /// Its admin address (read from --admin-address-path when configured on port 0).
    pub admin: SocketAddr,
}

impl Envoy {
    /// Starts Envoy on `bootstrap` (one worker) and waits for its admin /ready; `None` when
    /// no Envoy binary is available.
    pub fn start(tag: &str, bootstrap: &Value) -> Option<Envoy> {
        let Some(bin) = envoy_binary() else {
            super::skip(
                &format!("the Envoy comparison ({tag})"),
                super::http::NO_ENVOY,
                super::Missing::Peer,
            );
            return None;
        };
        let dir = TempDir::new(&format!("envoy-{tag}"));
        let config = dir.file("bootstrap.yaml");
        fs::write(&config, to_yaml(bootstrap)).unwrap();
        let admin_address_path = dir.file("admin_address");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_address_path)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .args(["--file-flush-interval-msec", "50"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.file("stdout.log")).unwrap())
            .stderr(fs::File::create(dir.file("stderr.log")).unwrap())
            .spawn()
            .expect("start envoy");
        let admin = super::addr(0);
        let mut envoy = Envoy { child, dir, admin };
        let start = Instant::now();
        loop {
            if let Some(status) = envoy.child.try_wait().unwrap() {
                panic!("envoy exited ({status}): {}", envoy.stderr());
            }
            if envoy.admin.port() == 0 {
                envoy.admin = admin_address(&admin_address_path).unwrap_or(envoy.admin);
            } else if http_get(envoy.admin, "/ready").is_ok_and(|r| r.status == 200) {
                return Some(envoy);
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("envoy not ready in 60 s: {}", envoy.stderr());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stderr(&self) -> String {
        let text = fs::read_to_string(self.dir.file("stderr.log")).unwrap_or_default();
        let chars: Vec<char> = text.chars().collect();
        chars[chars.len().saturating_sub(4000)..].iter().collect()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL by PID
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- envoy stderr ----\n{}", self.stderr());
        }
    }
}

/// Which proxy runs a scenario: shardproxy (one shard, so limits are exact) or Envoy (one
/// worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Shardproxy,
    Envoy,
}

/// A running peer; killed on drop.
pub enum Running {
    Shardproxy(Proxy),
    Envoy(Envoy),
}

impl Running {
    /// The peer's admin address.
    pub fn admin(&self) -> SocketAddr {
        match self {
            Running::Shardproxy(proxy) => proxy.admin,
            Running::Envoy(envoy) => envoy.admin,
        }
    }
}

impl Peer {
    /// Starts this peer on `bootstrap`; `None` for Envoy when there is no Envoy binary.
    pub fn start(self, tag: &str, bootstrap: &Value) -> Option<Running> {
        match self {
            Peer::Shardproxy => Some(Running::Shardproxy(
                Proxy::builder(tag, bootstrap)
                    .args(&["--concurrency", "1"])
                    .start(),
            )),
            Peer::Envoy => Envoy::start(tag, bootstrap).map(Running::Envoy),
        }
    }
}

/// Runs `scenario` on shardproxy, then on Envoy when there is one, and asserts both give the
/// same outcome; returns shardproxy's. With `SHARDPROXY_E2E_PEER=envoy` only Envoy runs, and
/// its outcome is returned: the tests' expectations can be checked against Envoy alone.
pub fn same_as_envoy<T: PartialEq + std::fmt::Debug>(scenario: impl Fn(Peer) -> Option<T>) -> T {
    if std::env::var("SHARDPROXY_E2E_PEER").as_deref() == Ok("envoy") {
        let theirs =
            scenario(Peer::Envoy).expect("SHARDPROXY_E2E_PEER=envoy needs an Envoy binary");
        eprintln!("Envoy's outcome: {theirs:?}");
        return theirs;
    }
    let ours = scenario(Peer::Shardproxy).expect("shardproxy runs the scenario");
    if let Some(theirs) = scenario(Peer::Envoy) {
        assert_eq!(ours, theirs, "shardproxy (left) and Envoy (right) differ");
    }
    ours
}

/// The access log format scenes write unless their connection manager sets its own.
pub const FLAGS_LOG: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST%\n";

/// One route on `/` to cluster `a` with `action` merged into the route action.
pub fn to_a(action: Value) -> Value {
    json!([route_to("/", "a", action)])
}

/// A running scenario: one HTTP listener (stat prefix `ingress`) whose virtual host `*` holds
/// `routes`, access-logged (`FLAGS_LOG`) to `log`, on shardproxy or Envoy.
pub struct Scene {
    pub port: u16,
    pub admin: u16,
    pub log: PathBuf,
    pub dir: TempDir,
    pub running: Running,
}

impl Scene {
    pub fn start(peer: Peer, tag: &str, routes: Value, clusters: Vec<Value>) -> Option<Scene> {
        Scene::with(peer, tag, json!({}), routes, clusters)
    }

    /// `hcm_extra` is merged into the connection manager's typed_config.
    pub fn with(
        peer: Peer,
        tag: &str,
        hcm_extra: Value,
        routes: Value,
        clusters: Vec<Value>,
    ) -> Option<Scene> {
        Scene::with_hosts(peer, tag, hcm_extra, any_host(routes), clusters)
    }

    /// `virtual_hosts` given whole.
    pub fn with_hosts(
        peer: Peer,
        tag: &str,
        hcm_extra: Value,
        virtual_hosts: Value,
        clusters: Vec<Value>,
    ) -> Option<Scene> {
        let dir = TempDir::new(tag);
        let log = dir.file("access.log");
        let mut extra = json!({"access_log": file_access_log(&log, Some(FLAGS_LOG))});
        merge(&mut extra, hcm_extra);
        let manager = hcm("ingress", virtual_hosts, extra);
        let b = bootstrap(0, vec![http_listener("http", 0, manager)], clusters);
        let running = peer.start(tag, &b)?;
        Some(Scene {
            port: listener_address(running.admin(), "http").port(),
            admin: running.admin().port(),
            log,
            dir,
            running,
        })
    }

    /// shardproxy only (for stats assertions).
    pub fn ours(tag: &str, routes: Value, clusters: Vec<Value>) -> Scene {
        Scene::start(Peer::Shardproxy, tag, routes, clusters).unwrap()
    }

    pub fn proxy(&self) -> &Proxy {
        match &self.running {
            Running::Shardproxy(p) => p,
            Running::Envoy(_) => panic!("not shardproxy"),
        }
    }

    pub fn is_envoy(&self) -> bool {
        matches!(self.running, Running::Envoy(_))
    }

    /// The `n`-th access log line's response flags, sorted (waits for the line). Envoy
    /// prints flags in the order they were set; `raw_flags` keeps that order.
    pub fn flags(&self, n: usize) -> String {
        let mut flags: Vec<String> = self.raw_flags(n).split(',').map(str::to_string).collect();
        flags.sort();
        flags.join(",")
    }

    /// The `n`-th access log line's response flags as printed.
    pub fn raw_flags(&self, n: usize) -> String {
        let lines = super::log_lines(&self.log, n + 1);
        lines[n].split(' ').nth(1).unwrap_or("").to_string()
    }

    /// The first `n` access log lines (waits for them).
    pub fn log_lines(&self, n: usize) -> Vec<String> {
        super::log_lines(&self.log, n)
    }
}
