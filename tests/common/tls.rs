//! Tests: TLS end-to-end harness — a throwaway PKI made with the `openssl` CLI, TLS bootstrap
//! builders (Downstream/UpstreamTlsContext, tls_inspector, filter chains), TLS clients (curl,
//! `openssl s_client`, tests/peers/tls_client.py, in-process rustls for keep-alive and load),
//! the HTTPS upstream (tests/peers/tls_upstream.py), and the runner that plays one bootstrap
//! on Envoy, then on shardproxy.
//!
//! Without an Envoy binary only the shardproxy half runs (and with `CI=true` the test fails
//! instead).

use std::{
    collections::BTreeMap,
    env, fs,
    io::{self, BufRead, BufReader, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::{json, Value};

use super::{
    http::{envoy_bin, peer_script, python, HttpProxy, Kind},
    read_http_response, skip, HttpResponse, Missing,
};

pub const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
pub const UPSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
pub const TLS_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

/// The SPIFFE identity in the client certificate.
pub const CLIENT_SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/client";
/// The SPIFFE identity in the second client certificate (a SAN matcher's "wrong" identity).
pub const OTHER_SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/other";
/// The first URI SAN of `Pki::client_rich`.
pub const RICH_SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/rich";
/// The DNS name (and CN) of the upstream's server certificate.
pub const UPSTREAM_NAME: &str = "upstream.example.com";

// ---------------------------------------------------------------------------------------------
// The PKI

/// A certificate (PEM; a leaf signed by the intermediate is followed by the intermediate) and
/// its private key (PKCS#8 PEM).
#[derive(Debug, Clone)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertKey {
    pub fn cert_pem(&self) -> String {
        fs::read_to_string(&self.cert).unwrap()
    }
    pub fn key_pem(&self) -> String {
        fs::read_to_string(&self.key).unwrap()
    }
}

/// A throwaway PKI. Root CA (RSA-2048) → intermediate (RSA-2048) → server certificates;
/// client certificates are signed by the root directly (so the root's CRL covers them).
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    /// The trust anchor (root CA certificate, PEM).
    pub ca: PathBuf,
    pub intermediate: CertKey,
    /// RSA-2048 server certificate, CN=localhost; SANs localhost, domain1.example.com,
    /// *.wild.example.com, IP 127.0.0.1.
    pub server_rsa: CertKey,
    /// ECDSA P-256 server certificate with the same names, CN=localhost.
    pub server_ecdsa: CertKey,
    /// CN and SAN domain1.example.com (ECDSA).
    pub domain1: CertKey,
    /// CN and SAN domain2.example.com (ECDSA).
    pub domain2: CertKey,
    /// CN and SAN *.wild.example.com (ECDSA).
    pub wildcard: CertKey,
    /// The upstream's server certificate: CN and SAN upstream.example.com, also localhost and
    /// 127.0.0.1, URI spiffe://cluster.local/ns/default/sa/upstream (ECDSA).
    pub upstream: CertKey,
    /// The upstream's second certificate (CN and SAN upstream2.example.com), for chains that
    /// must show which upstream answered a handshake.
    pub upstream2: CertKey,
    /// Client certificate: CN=client, URI SAN spiffe://cluster.local/ns/default/sa/client.
    pub client: CertKey,
    /// Client certificate: CN=other, URI SAN spiffe://cluster.local/ns/default/sa/other.
    pub client_other: CertKey,
    /// Client certificate signed by the intermediate (the file holds both: the client sends
    /// a chain), subject `C=US, O=Acme, Inc., OU=mesh, CN=rich client`, SANs
    /// DNS:rich.example.com, DNS:alt.example.com, URI `RICH_SPIFFE`, URI …/sa/rich2.
    pub client_rich: CertKey,
    /// Client certificate revoked by `crl`: CN=revoked, URI SAN …/sa/revoked.
    pub client_revoked: CertKey,
    /// Client certificate valid 2020-01-01 .. 2021-01-01: CN=expired-client, URI …/sa/client.
    pub client_expired: CertKey,
    /// Server certificate valid 2020-01-01 .. 2021-01-01: CN=localhost, SANs as server_rsa.
    pub server_expired: CertKey,
    /// A second CA nobody trusts.
    pub untrusted_ca: PathBuf,
    /// Server certificate (CN=localhost, usual SANs) signed by the untrusted CA.
    pub untrusted_server: CertKey,
    /// Client certificate (CN=client, URI …/sa/client) signed by the untrusted CA.
    pub untrusted_client: CertKey,
    /// The root CA's CRL, revoking `client_revoked`.
    pub crl: PathBuf,
    /// Workload certificates made so far, by namespace and service account: tests running side
    /// by side ask for the same ones, which are made once (their files are shared).
    workloads: Mutex<BTreeMap<String, CertKey>>,
}

const SERVER_SANS: &str =
    "DNS:localhost,DNS:domain1.example.com,DNS:*.wild.example.com,IP:127.0.0.1";

/// The PKI of this test process, made on first use (a few seconds: three RSA keys) in a
/// temporary directory; the next test process removes it.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e")
            .join(format!("pki-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        remove_stale(dir.parent().unwrap());
        let start = Instant::now();
        let pki = make_pki(&dir);
        eprintln!(
            "test PKI made in {:?} at {}",
            start.elapsed(),
            dir.display()
        );
        pki
    })
}

/// Removes the PKI directories of test processes that are gone (a static is never dropped,
/// so each process leaves its own behind until the next run).
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("pki-") {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Runs `openssl args…` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl CLI (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Clone, Copy)]
enum KeyType {
    Rsa,
    Ec,
}

/// Generates a key `name.key` (PKCS#8).
fn key(dir: &Path, name: &str, kind: KeyType) -> PathBuf {
    let file = format!("{name}.key");
    match kind {
        KeyType::Rsa => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &file,
            ],
        ),
        KeyType::Ec => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &file,
            ],
        ),
    }
    dir.join(file)
}

/// A CA that `openssl ca` signs with: its own database, serials and CRL number.
struct Ca {
    name: String,
    cert: PathBuf,
    /// The chain a leaf it signs carries after itself (the intermediate for server leaves).
    chain_tail: Option<PathBuf>,
}

impl Ca {
    fn new(dir: &Path, name: &str, cert: PathBuf, key: &Path) -> Ca {
        let db = dir.join(format!("{name}-db"));
        fs::create_dir_all(&db).unwrap();
        fs::write(db.join("index.txt"), "").unwrap();
        fs::write(db.join("serial"), "1000\n").unwrap();
        fs::write(db.join("crlnumber"), "1000\n").unwrap();
        let conf = format!(
            "[ca]\ndefault_ca = this\n\n[this]\ndir = {db}\ndatabase = $dir/index.txt\n\
             serial = $dir/serial\ncrlnumber = $dir/crlnumber\nnew_certs_dir = $dir\n\
             certificate = {cert}\nprivate_key = {key}\ndefault_md = sha256\n\
             default_days = 3650\ndefault_crl_days = 3650\npolicy = any\n\
             unique_subject = no\ncopy_extensions = none\n\n[any]\ncountryName = optional\n\
             organizationName = optional\norganizationalUnitName = optional\n\
             commonName = supplied\n",
            db = db.display(),
            cert = cert.display(),
            key = key.display(),
        );
        fs::write(dir.join(format!("{name}-ca.cnf")), conf).unwrap();
        Ca {
            name: name.into(),
            cert,
            chain_tail: None,
        }
    }

    /// Signs a new key's certificate `leaf` with CN `cn`, extensions `ext` (lines of an
    /// openssl extension section) and validity `dates` (start, end as YYYYMMDDHHMMSSZ).
    fn sign(
        &self,
        dir: &Path,
        leaf: &str,
        kind: KeyType,
        cn: &str,
        ext: &str,
        dates: Option<(&str, &str)>,
    ) -> CertKey {
        self.sign_subject(dir, leaf, kind, &format!("/CN={cn}"), ext, dates)
    }

    /// As `sign`, with a whole `subject` (`/C=../O=../OU=../CN=..`, in that order).
    fn sign_subject(
        &self,
        dir: &Path,
        leaf: &str,
        kind: KeyType,
        subject: &str,
        ext: &str,
        dates: Option<(&str, &str)>,
    ) -> CertKey {
        let key = key(dir, leaf, kind);
        let csr = format!("{leaf}.csr");
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                key.to_str().unwrap(),
                "-subj",
                subject,
                "-out",
                &csr,
            ],
        );
        let ext_file = format!("{leaf}.ext");
        fs::write(dir.join(&ext_file), format!("[ext]\n{ext}\n")).unwrap();
        let signed = format!("{leaf}.leaf.pem");
        let conf = format!("{}-ca.cnf", self.name);
        let mut args = vec![
            "ca",
            "-batch",
            "-notext",
            "-config",
            &conf,
            "-extfile",
            &ext_file,
            "-extensions",
            "ext",
            "-in",
            &csr,
            "-out",
            &signed,
        ];
        if let Some((start, end)) = dates {
            args.extend(["-startdate", start, "-enddate", end]);
        }
        openssl(dir, &args);
        let mut pem = fs::read_to_string(dir.join(&signed)).unwrap();
        if let Some(tail) = &self.chain_tail {
            pem.push_str(&fs::read_to_string(tail).unwrap());
        }
        let cert = dir.join(format!("{leaf}.crt"));
        fs::write(&cert, pem).unwrap();
        CertKey { cert, key }
    }

    fn revoke(&self, dir: &Path, leaf: &CertKey) {
        let conf = format!("{}-ca.cnf", self.name);
        let leaf_only = leaf.cert.with_extension("leaf.pem");
        openssl(
            dir,
            &[
                "ca",
                "-batch",
                "-config",
                &conf,
                "-revoke",
                leaf_only.to_str().unwrap(),
            ],
        );
    }

    fn crl(&self, dir: &Path, file: &str) -> PathBuf {
        let conf = format!("{}-ca.cnf", self.name);
        openssl(
            dir,
            &["ca", "-batch", "-config", &conf, "-gencrl", "-out", file],
        );
        dir.join(file)
    }
}

/// A self-signed CA certificate `name.crt` for a new key.
fn root_ca(dir: &Path, name: &str, cn: &str, kind: KeyType) -> (PathBuf, PathBuf) {
    let key = key(dir, name, kind);
    let ext = format!("{name}.ext");
    fs::write(
        dir.join(&ext),
        "[req]\ndistinguished_name = dn\n[dn]\n[ext]\nbasicConstraints = critical, CA:TRUE\n\
         keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n",
    )
    .unwrap();
    let cert = format!("{name}.crt");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-config",
            &ext,
            "-extensions",
            "ext",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "3650",
            "-out",
            &cert,
        ],
    );
    (dir.join(cert), key)
}

fn leaf_ext(server: bool, sans: &str) -> String {
    let (usage, eku) = if server {
        ("digitalSignature, keyEncipherment", "serverAuth")
    } else {
        ("digitalSignature", "clientAuth")
    };
    format!(
        "basicConstraints = CA:FALSE\nkeyUsage = critical, {usage}\nextendedKeyUsage = {eku}\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\nsubjectAltName = {sans}\n"
    )
}

impl Pki {
    /// An Istio workload certificate for service account `sa` of namespace `default`, as
    /// istiod's CA issues it (see [`Pki::workload_in`]).
    pub fn workload(&self, sa: &str) -> CertKey {
        self.workload_in("default", sa)
    }

    /// An Istio workload certificate for service account `sa` of `namespace`, as istiod's CA
    /// issues it: signed by the intermediate (the chain follows the leaf), its one SAN the URI
    /// spiffe://cluster.local/ns/`namespace`/sa/`sa`, for server and client use (a sidecar
    /// presents it both ways). Made once: tests running side by side share its files.
    pub fn workload_in(&self, namespace: &str, sa: &str) -> CertKey {
        let mut made = self.workloads.lock().unwrap_or_else(|e| e.into_inner());
        made.entry(format!("{namespace}/{sa}"))
            .or_insert_with(|| self.make_workload(namespace, sa))
            .clone()
    }

    fn make_workload(&self, namespace: &str, sa: &str) -> CertKey {
        let dir = &self.dir;
        let name = match namespace {
            "default" => format!("workload-{sa}"),
            _ => format!("workload-{namespace}-{sa}"),
        };
        let inter_only = self.intermediate.cert.with_extension("leaf.pem");
        let mut ca = Ca::new(dir, &name, inter_only.clone(), &self.intermediate.key);
        ca.chain_tail = Some(inter_only);
        let ext = format!(
            "basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature, \
             keyEncipherment\nextendedKeyUsage = serverAuth, clientAuth\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n\
             subjectAltName = critical, URI:{}\n",
            spiffe_in(namespace, sa)
        );
        ca.sign(dir, &name, KeyType::Ec, sa, &ext, None)
    }
}

/// The SPIFFE identity of service account `sa` in namespace `default`.
pub fn spiffe(sa: &str) -> String {
    spiffe_in("default", sa)
}

/// The SPIFFE identity of service account `sa` in `namespace`.
pub fn spiffe_in(namespace: &str, sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{namespace}/sa/{sa}")
}

const EXPIRED: (&str, &str) = ("20200101000000Z", "20210101000000Z");

fn make_pki(dir: &Path) -> Pki {
    use KeyType::{Ec, Rsa};
    let (root_cert, root_key) = root_ca(dir, "root", "shardproxy test root CA", Rsa);
    let root = Ca::new(dir, "root", root_cert.clone(), &root_key);
    let inter_ext = "basicConstraints = critical, CA:TRUE, pathlen:0\n\
                     keyUsage = critical, keyCertSign, cRLSign\n\
                     subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n";
    let intermediate = root.sign(
        dir,
        "intermediate",
        Rsa,
        "shardproxy test intermediate CA",
        inter_ext,
        None,
    );
    let inter_only = intermediate.cert.with_extension("leaf.pem");
    let mut issuing = Ca::new(dir, "inter", inter_only.clone(), &intermediate.key);
    issuing.chain_tail = Some(inter_only);

    let server = |leaf: &str, kind, cn: &str, sans: &str| {
        issuing.sign(dir, leaf, kind, cn, &leaf_ext(true, sans), None)
    };
    let server_rsa = server("server-rsa", Rsa, "localhost", SERVER_SANS);
    let server_ecdsa = server("server-ecdsa", Ec, "localhost", SERVER_SANS);
    let domain1 = server(
        "domain1",
        Ec,
        "domain1.example.com",
        "DNS:domain1.example.com",
    );
    let domain2 = server(
        "domain2",
        Ec,
        "domain2.example.com",
        "DNS:domain2.example.com",
    );
    let wildcard = server(
        "wildcard",
        Ec,
        "*.wild.example.com",
        "DNS:*.wild.example.com",
    );
    let upstream = server(
        "upstream",
        Ec,
        UPSTREAM_NAME,
        "DNS:upstream.example.com,DNS:localhost,IP:127.0.0.1,\
         URI:spiffe://cluster.local/ns/default/sa/upstream",
    );
    let upstream2 = server(
        "upstream2",
        Ec,
        "upstream2.example.com",
        "DNS:upstream2.example.com,DNS:localhost,IP:127.0.0.1",
    );
    let server_expired = issuing.sign(
        dir,
        "server-expired",
        Ec,
        "localhost",
        &leaf_ext(true, SERVER_SANS),
        Some(EXPIRED),
    );

    let client = |leaf: &str, cn: &str, uri: &str, dates| {
        root.sign(
            dir,
            leaf,
            Ec,
            cn,
            &leaf_ext(false, &format!("URI:{uri}")),
            dates,
        )
    };
    let client_cert = client("client", "client", CLIENT_SPIFFE, None);
    let client_rich = issuing.sign_subject(
        dir,
        "client-rich",
        Ec,
        "/C=US/O=Acme, Inc./OU=mesh/CN=rich client",
        &leaf_ext(
            false,
            &format!(
                "DNS:rich.example.com,DNS:alt.example.com,URI:{RICH_SPIFFE},\
                 URI:spiffe://cluster.local/ns/default/sa/rich2"
            ),
        ),
        None,
    );
    let client_other = client("client-other", "other", OTHER_SPIFFE, None);
    let client_revoked = client(
        "client-revoked",
        "revoked",
        "spiffe://cluster.local/ns/default/sa/revoked",
        None,
    );
    let client_expired = client(
        "client-expired",
        "expired-client",
        CLIENT_SPIFFE,
        Some(EXPIRED),
    );
    root.revoke(dir, &client_revoked);
    let crl = root.crl(dir, "root.crl");

    let (untrusted_ca, untrusted_key) = root_ca(dir, "untrusted", "untrusted test CA", Ec);
    let untrusted = Ca::new(dir, "untrusted", untrusted_ca.clone(), &untrusted_key);
    let untrusted_server = untrusted.sign(
        dir,
        "untrusted-server",
        Ec,
        "localhost",
        &leaf_ext(true, SERVER_SANS),
        None,
    );
    let untrusted_client = untrusted.sign(
        dir,
        "untrusted-client",
        Ec,
        "client",
        &leaf_ext(false, &format!("URI:{CLIENT_SPIFFE}")),
        None,
    );
    Pki {
        dir: dir.to_path_buf(),
        ca: root.cert,
        intermediate,
        server_rsa,
        server_ecdsa,
        domain1,
        domain2,
        wildcard,
        upstream,
        upstream2,
        client: client_cert,
        client_rich,
        client_other,
        client_revoked,
        client_expired,
        server_expired,
        untrusted_ca,
        untrusted_server,
        untrusted_client,
        crl,
        workloads: Mutex::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap builders

/// A `tls_certificates` entry reading `ck`'s files.
pub fn tls_certificate(ck: &CertKey) -> Value {
    json!({
        "certificate_chain": {"filename": ck.cert.to_str().unwrap()},
        "private_key": {"filename": ck.key.to_str().unwrap()},
    })
}

/// A `tls_certificates` entry carrying `ck`'s PEM inline.
pub fn tls_certificate_inline(ck: &CertKey) -> Value {
    json!({
        "certificate_chain": {"inline_string": ck.cert_pem()},
        "private_key": {"inline_string": ck.key_pem()},
    })
}

/// A `common_tls_context` serving `certs` (each a `tls_certificates` entry); `extra` merged in.
pub fn common_tls(certs: Vec<Value>, extra: Value) -> Value {
    let mut v = json!({"tls_certificates": certs});
    super::merge(&mut v, extra);
    v
}

/// A DownstreamTlsContext transport socket with `common_tls_context` = `common`, `extra`
/// merged into the context (require_client_certificate, ...).
pub fn downstream_tls(common: Value, extra: Value) -> Value {
    let mut ctx = json!({"@type": DOWNSTREAM_TLS, "common_tls_context": common});
    super::merge(&mut ctx, extra);
    json!({"name": "envoy.transport_sockets.tls", "typed_config": ctx})
}

/// An UpstreamTlsContext transport socket with `common_tls_context` = `common`, `extra` merged
/// into the context (sni, ...).
pub fn upstream_tls(common: Value, extra: Value) -> Value {
    let mut ctx = json!({"@type": UPSTREAM_TLS, "common_tls_context": common});
    super::merge(&mut ctx, extra);
    json!({"name": "envoy.transport_sockets.tls", "typed_config": ctx})
}

/// A `validation_context` trusting `ca`, `extra` merged in.
pub fn validation(ca: &Path, extra: Value) -> Value {
    let mut v = json!({"trusted_ca": {"filename": ca.to_str().unwrap()}});
    super::merge(&mut v, extra);
    v
}

/// A `match_typed_subject_alt_names` entry: `san_type` (DNS, URI, ...) equal to `exact`.
pub fn san_exact(san_type: &str, exact: &str) -> Value {
    json!({"san_type": san_type, "matcher": {"exact": exact}})
}

/// The tls_inspector listener filter.
pub fn tls_inspector() -> Value {
    json!({"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR}})
}

/// The connection manager `hcm` as a network filter entry.
pub fn hcm_filter(hcm: Value) -> Value {
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm})
}

/// A tcp_proxy to `cluster` as a network filter entry.
pub fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Value {
    json!({"name": "envoy.filters.network.tcp_proxy",
           "typed_config": super::tcp_proxy(stat_prefix, cluster, json!({}))})
}

/// A filter chain: `filter_chain_match` (null: none), `filters`, and a transport socket.
pub fn filter_chain(chain_match: Value, filters: Vec<Value>, transport: Option<Value>) -> Value {
    let mut chain = json!({"filters": filters});
    if !chain_match.is_null() {
        chain["filter_chain_match"] = chain_match;
    }
    if let Some(t) = transport {
        chain["transport_socket"] = t;
    }
    chain
}

/// A listener on 127.0.0.1:`port` with `listener_filters` and `chains`.
pub fn listener_with(
    name: &str,
    port: u16,
    listener_filters: Vec<Value>,
    chains: Vec<Value>,
) -> Value {
    let mut l = json!({
        "name": name,
        "address": super::socket_address(port),
        "filter_chains": chains,
    });
    if !listener_filters.is_empty() {
        l["listener_filters"] = json!(listener_filters);
    }
    l
}

/// The stat prefix Envoy gives a listener on 127.0.0.1:`port`: `listener.127.0.0.1_<port>.`.
/// Envoy and shardproxy take it from the configured address, so every listener configured on
/// port 0 shares `listener.127.0.0.1_0.`: a test that reads these stats configures its listener
/// on a fixed port ([`free_port`](super::free_port)).
pub fn listener_stats(port: u16) -> String {
    format!("listener.127.0.0.1_{port}.")
}

// ---------------------------------------------------------------------------------------------
// In-process HTTPS (rustls)

/// A client config trusting `ca` (for [`Https`]).
pub fn https_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The first certificate of `ck`'s chain (DER): what a server serving `ck` presents first.
pub fn leaf_der(ck: &CertKey) -> Vec<u8> {
    CertificateDer::pem_file_iter(&ck.cert)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// An HTTPS connection to 127.0.0.1:`port` made in this process (rustls, SNI `localhost`,
/// the server verified): for keep-alive checks and load runs, where a child process per
/// request would be too slow.
pub struct Https {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Https {
    /// Connects and completes the handshake.
    pub fn connect(port: u16, config: &Arc<rustls::ClientConfig>) -> io::Result<Https> {
        let mut socket = super::try_connect(port)?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(config.clone(), name)
            .map_err(|e| io::Error::other(e.to_string()))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut socket)?;
        }
        Ok(Https {
            stream: rustls::StreamOwned::new(conn, socket),
        })
    }

    /// The certificate the server presented (DER).
    pub fn peer_certificate(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// GET `path` on this connection (kept alive).
    pub fn get(&mut self, path: &str) -> io::Result<HttpResponse> {
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: shardproxy-e2e\r\n\r\n"
        )?;
        self.stream.flush()?;
        read_http_response(&mut self.stream)
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy first, then shardproxy

/// Whether an Envoy binary is there to run the reference half. Without one the test is
/// skipped (`skip`, which fails it under `CI=true`).
pub fn envoy_available() -> bool {
    if envoy_bin().is_some() {
        return true;
    }
    skip(
        "envoy half",
        "no Envoy binary (set SHARDPROXY_TEST_ENVOY or run tests/run.sh)",
        Missing::Peer,
    );
    false
}

/// The proxies a TLS test runs against: Envoy (see [`envoy_available`]), then shardproxy.
pub fn tls_proxies() -> Vec<Kind> {
    let mut out = Vec::new();
    if envoy_available() {
        out.push(Kind::Envoy);
    }
    out.push(Kind::Shardproxy);
    out
}

/// Runs `scenario` against Envoy on `bootstrap` (its own assertions checked), then against
/// shardproxy on the same bootstrap, and asserts that shardproxy's outcome equals Envoy's.
/// Returns Envoy's outcome when it ran. Listeners on port 0 get other ports in each run:
/// `scenario` reads them from the proxy it is given (`proxy.port(name)`).
pub fn on_both<T: PartialEq + std::fmt::Debug>(
    tag: &str,
    bootstrap: &Value,
    scenario: impl Fn(&HttpProxy) -> T,
) -> Option<T> {
    on_both_with_flags(tag, bootstrap, &[], scenario)
}

/// [`on_both`] with both proxies started with the command-line `flags` (Envoy's).
pub fn on_both_with_flags<T: PartialEq + std::fmt::Debug>(
    tag: &str,
    bootstrap: &Value,
    flags: &[&str],
    scenario: impl Fn(&HttpProxy) -> T,
) -> Option<T> {
    let mut reference = None;
    for kind in tls_proxies() {
        let proxy = HttpProxy::start_with_flags(kind, tag, bootstrap, flags);
        let outcome = scenario(&proxy);
        eprintln!("{}: {outcome:?}", kind.name());
        drop(proxy);
        match (&reference, kind) {
            (Some(envoy), Kind::Shardproxy) => assert_eq!(
                &outcome, envoy,
                "{tag}: shardproxy (left) and Envoy (right) differ"
            ),
            _ => reference = Some(outcome),
        }
    }
    reference
}

/// The `names` (suffixes after `prefix`) of `proxy`'s /stats, once they have stopped moving
/// (two reads 200 ms apart agree) and `ready` holds for them; absent stats read as 0.
pub fn settled_stats(
    proxy: &HttpProxy,
    prefix: &str,
    names: &[&str],
    ready: impl Fn(&BTreeMap<String, i64>) -> bool,
) -> BTreeMap<String, i64> {
    let read = || -> BTreeMap<String, i64> {
        let all = proxy.stats();
        names
            .iter()
            .map(|n| {
                let v = all.get(&format!("{prefix}{n}")).copied().unwrap_or(0);
                (n.to_string(), v)
            })
            .collect()
    };
    let start = Instant::now();
    let mut last = read();
    loop {
        thread::sleep(Duration::from_millis(200));
        let now = read();
        if now == last && ready(&now) {
            return now;
        }
        assert!(
            start.elapsed() < super::SOON,
            "{}: stats under {prefix} never settled: {now:?}",
            proxy.kind.name()
        );
        last = now;
    }
}

// ---------------------------------------------------------------------------------------------
// TLS clients

/// tests/peers/tls_client.py: one connection, one optional HTTP/1.1 request.
#[derive(Debug, Clone, Default)]
pub struct TlsClient {
    pub port: u16,
    pub sni: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<CertKey>,
    pub alpn: Option<String>,
    pub min_version: Option<&'static str>,
    pub max_version: Option<&'static str>,
    pub ciphers: Option<String>,
    pub path: Option<String>,
    pub headers: Vec<String>,
    pub no_request: bool,
}

impl TlsClient {
    pub fn new(port: u16) -> TlsClient {
        TlsClient {
            port,
            ..TlsClient::default()
        }
    }
    pub fn sni(mut self, name: &str) -> Self {
        self.sni = Some(name.into());
        self
    }
    /// Verify the server's chain against `ca` (and its name against the SNI, when one is set).
    pub fn ca(mut self, ca: &Path) -> Self {
        self.ca = Some(ca.into());
        self
    }
    pub fn cert(mut self, ck: &CertKey) -> Self {
        self.cert = Some(ck.clone());
        self
    }
    /// Comma-separated ALPN protocols to offer.
    pub fn alpn(mut self, protocols: &str) -> Self {
        self.alpn = Some(protocols.into());
        self
    }
    /// Only this version (`TLSv1_2` or `TLSv1_3`).
    pub fn only(mut self, version: &'static str) -> Self {
        self.min_version = Some(version);
        self.max_version = Some(version);
        self
    }
    pub fn ciphers(mut self, list: &str) -> Self {
        self.ciphers = Some(list.into());
        self
    }
    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(path.into());
        self
    }
    pub fn header(mut self, line: &str) -> Self {
        self.headers.push(line.into());
        self
    }
    /// Handshake only: no request.
    pub fn handshake_only(mut self) -> Self {
        self.no_request = true;
        self
    }

    pub fn run(&self) -> TlsResult {
        let mut args = vec!["--port".to_string(), self.port.to_string()];
        let mut opt = |flag: &str, v: &Option<String>| {
            if let Some(v) = v {
                args.push(flag.into());
                args.push(v.clone());
            }
        };
        let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        opt("--sni", &self.sni);
        opt("--ca", &path_str(&self.ca));
        opt(
            "--cert",
            &self.cert.as_ref().map(|c| c.cert.display().to_string()),
        );
        opt(
            "--key",
            &self.cert.as_ref().map(|c| c.key.display().to_string()),
        );
        opt("--alpn", &self.alpn);
        opt("--min-version", &self.min_version.map(String::from));
        opt("--max-version", &self.max_version.map(String::from));
        opt("--ciphers", &self.ciphers);
        opt("--path", &self.path);
        for h in &self.headers {
            args.push("--header".into());
            args.push(h.clone());
        }
        if self.no_request {
            args.push("--no-request".into());
        }
        let run = super::http::run_peer("tls_client.py", &args, Duration::from_secs(40));
        assert!(
            run.status.success(),
            "tls_client.py {args:?}: {}{}",
            run.stdout,
            run.stderr
        );
        let json: Value = serde_json::from_str(run.stdout.trim())
            .unwrap_or_else(|e| panic!("tls_client.py output ({e}): {}", run.stdout));
        TlsResult(json)
    }
}

/// What tls_client.py reported.
#[derive(Debug, Clone)]
pub struct TlsResult(pub Value);

impl TlsResult {
    /// Handshake done and (unless handshake-only) a response read.
    pub fn ok(&self) -> bool {
        self.0["ok"] == true
    }
    /// Where it failed: `connect`, `handshake` or `request` (None when ok).
    pub fn stage(&self) -> Option<&str> {
        self.0["stage"].as_str()
    }
    pub fn error(&self) -> &str {
        self.0["error"].as_str().unwrap_or("")
    }
    pub fn version(&self) -> Option<&str> {
        self.0["version"].as_str()
    }
    pub fn cipher(&self) -> Option<&str> {
        self.0["cipher"].as_str()
    }
    pub fn alpn(&self) -> Option<&str> {
        self.0["alpn"].as_str()
    }
    /// The server certificate's common name.
    pub fn peer_cn(&self) -> Option<&str> {
        self.0["peer_subject"]["commonName"].as_str()
    }
    pub fn status(&self) -> Option<u16> {
        self.0["response"]["status"].as_u64().map(|s| s as u16)
    }
    pub fn body(&self) -> &str {
        self.0["response"]["body"].as_str().unwrap_or("")
    }
    /// The echo upstream's JSON (tests/peers/upstream.py or tls_upstream.py).
    pub fn echo(&self) -> Value {
        serde_json::from_str(self.body())
            .unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.0))
    }
    /// Which upstream answered (the echo's `upstream`).
    pub fn upstream(&self) -> Option<String> {
        serde_json::from_str::<Value>(self.body())
            .ok()
            .and_then(|e| e["upstream"].as_str().map(String::from))
    }
    /// Refused: no response was read (the handshake, or the first read after it, failed).
    pub fn refused(&self) -> bool {
        !self.ok() && self.status().is_none()
    }
}

/// What `openssl s_client` printed, parsed.
#[derive(Debug, Clone)]
pub struct SClient {
    /// "New" or "Reused".
    pub session: Option<String>,
    pub protocol: Option<String>,
    pub cipher: Option<String>,
    pub verify_code: Option<i32>,
    /// "Peer signature type" (RSA-PSS, ECDSA, ...).
    pub peer_sig_type: Option<String>,
    /// "Server public key is N bit".
    pub server_key_bits: Option<u32>,
    pub alpn: Option<String>,
    pub output: String,
}

impl SClient {
    pub fn handshake_ok(&self) -> bool {
        self.cipher
            .as_deref()
            .is_some_and(|c| c != "(NONE)" && c != "0000")
    }
    pub fn reused(&self) -> bool {
        self.session.as_deref() == Some("Reused")
    }
}

/// Runs `openssl s_client -connect 127.0.0.1:port -ign_eof args…` with `input` on its stdin
/// (bounded to 30 s); parses Protocol, Cipher, Verify return code, New/Reused, peer signature
/// type, server key size and ALPN.
pub fn s_client(port: u16, args: &[&str], input: &[u8]) -> SClient {
    let dir = super::TempDir::new("s_client");
    let (out, err) = (dir.file("stdout"), dir.file("stderr"));
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-ign_eof",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .expect("openssl s_client");
    {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
    }
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill(); // by PID, not yet reaped
            let _ = child.wait();
            panic!("openssl s_client {args:?} ran longer than 30 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    parse_s_client(format!("{}{}", read(&out), read(&err)))
}

fn parse_s_client(output: String) -> SClient {
    let field = |label: &str| {
        output.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == label).then(|| v.trim().to_string())
        })
    };
    let (session, cipher_line) = output
        .lines()
        .find_map(|l| {
            let rest = l
                .strip_prefix("New, ")
                .map(|r| ("New", r))
                .or_else(|| l.strip_prefix("Reused, ").map(|r| ("Reused", r)))?;
            Some((Some(rest.0.to_string()), rest.1.to_string()))
        })
        .unwrap_or((None, String::new()));
    let cipher = cipher_line
        .split_once("Cipher is ")
        .map(|(_, c)| c.trim().to_string())
        .or_else(|| field("Cipher"));
    SClient {
        session,
        protocol: field("Protocol"),
        cipher,
        verify_code: field("Verify return code")
            .and_then(|v| v.split_whitespace().next()?.parse().ok()),
        peer_sig_type: field("Peer signature type"),
        server_key_bits: output.lines().find_map(|l| {
            l.strip_prefix("Server public key is ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        }),
        alpn: field("ALPN protocol"),
        output,
    }
}

/// An HTTP/1.1 request line set for s_client's stdin: `GET path` to `host`, connection close.
pub fn http_request_text(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The HTTPS upstream

/// tests/peers/tls_upstream.py serving one HTTPS listener; killed when dropped.
pub struct TlsUpstream {
    pub port: u16,
    pub name: String,
    child: Child,
    _stdin: ChildStdin,
}

impl TlsUpstream {
    /// Serves `cert` as `name`; `extra` are more tls_upstream.py flags (`--ca`, `--alpn`, ...).
    pub fn start(name: &str, cert: &CertKey, extra: &[&str]) -> TlsUpstream {
        let mut child = Command::new(python())
            .arg(peer_script("tls_upstream.py"))
            .args(["--name", name, "--cert"])
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .args(extra)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/peers/tls_upstream.py");
        let stdin = child.stdin.take().unwrap();
        let mut port = None;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if line == "READY" {
                break;
            }
            if let Some(p) = line
                .strip_prefix("LISTEN ")
                .and_then(|r| r.split_whitespace().nth(1))
            {
                port = p.parse().ok();
            }
        }
        TlsUpstream {
            port: port.expect("tls_upstream.py reports its port"),
            name: name.into(),
            child,
            _stdin: stdin,
        }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill(); // by PID
        let _ = self.child.wait();
    }
}
