//! Domain model: TLS for transport sockets. The rustls configs the agent builds for a chain's
//! downstream side (`ServerTls`) and a cluster's upstream side (`ClientTls`) — swapped in place
//! when an SDS secret they name changes (`SecretKey`) — the certificate choice by SNI and key
//! type, and Envoy's peer verification: a trusted CA chain (with CRLs) and
//! `match_typed_subject_alt_names`, where a SAN mismatch is its own failure
//! (`ssl.fail_verify_san`).
use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        ClientHello, ParsedCertificate, ResolvesServerCert,
    },
    sign::CertifiedKey,
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    ServerConfig, SignatureScheme,
};

use super::{matchers::StringMatcher, tls_info::CertificateInfo};
use crate::stats::{self, HandshakeFailure, SslFactoryStats, SslStats, CIPHERS, CURVES, VERSIONS};

/// Where an SDS secret comes from (`SdsSecretConfig.sds_config`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretSource {
    /// The ADS stream (`ads: {}`).
    Ads,
    /// An SDS stream of its own (`api_config_source`, as Istio's `sds-grpc`).
    Grpc(GrpcSecretSource),
    /// A file holding the secret (`path_config_source`, or the deprecated `path`).
    File(FileSecretSource),
}

/// An `api_config_source` with one `envoy_grpc` service: one stream per distinct source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrpcSecretSource {
    /// The static cluster the service names.
    pub cluster: String,
    /// `api_type: DELTA_GRPC` (else GRPC, state of the world).
    pub delta: bool,
    pub set_node_on_first_message_only: bool,
}

/// A secret file, reloaded when it changes (or, with `watched_directory`, when an entry is
/// moved into that directory: Kubernetes' `..data` swap).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileSecretSource {
    pub path: PathBuf,
    pub watched_directory: Option<PathBuf>,
}

/// An SDS secret: its source and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretKey {
    pub source: SecretSource,
    pub name: String,
}

/// An SDS secret a TLS context names, and how long what uses it waits for it
/// (`initial_fetch_timeout`; `None`: forever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsSecret {
    pub key: SecretKey,
    pub initial_fetch_timeout: Option<Duration>,
}

/// A chain's downstream TLS (`DownstreamTlsContext`). Its rustls configs are replaced in
/// place when an SDS secret it names changes: new handshakes take the new certificate or CA,
/// open connections keep theirs, and the listener (so its connections) stays as it is.
pub struct ServerTls {
    /// `None` while an SDS secret it names is missing (its wait timed out or its first version
    /// was rejected): connections are closed (`downstream_context_secrets_not_ready`).
    configs: ArcSwapOption<ServerConfigs>,
    pub stats: Arc<SslStats>,
    /// `<listener>.server_ssl_socket_factory.*`.
    pub factory_stats: Arc<SslFactoryStats>,
    /// Hash of the certificates, keys and CAs read from files or inline (a changed file is a
    /// changed config); SDS secrets are not in it (they are swapped in place).
    pub material_hash: u64,
    /// The SDS secrets the context names.
    pub secrets: Vec<SdsSecret>,
}

/// A server context's rustls configs.
pub struct ServerConfigs {
    /// With the configured ALPN protocols.
    pub with_alpn: Arc<ServerConfig>,
    /// The same without ALPN, for clients that offer none of the configured protocols: Envoy
    /// (BoringSSL) then goes on without ALPN, where rustls would refuse the handshake.
    pub without_alpn: Arc<ServerConfig>,
    /// The certificates both configs serve (their resolver).
    pub certificates: Arc<CertificateChoice>,
    /// Client certificates are asked for (a validation context): a handshake without one
    /// counts as `ssl.no_certificate`.
    pub requests_client_certificate: bool,
    /// What `/certs` lists of the context.
    pub listed: ContextCertificates,
}

impl ServerConfigs {
    /// The config for a client's hello (with ALPN when it offers a configured protocol), and
    /// the certificate that config will serve it.
    pub fn config_for(
        &self,
        hello: &ClientHello<'_>,
    ) -> (Arc<ServerConfig>, Option<Arc<CertificateInfo>>) {
        let configured = &self.with_alpn.alpn_protocols;
        let shares_one = match hello.alpn() {
            Some(mut offered) => offered.any(|p| configured.iter().any(|c| c == p)),
            None => true,
        };
        let config = if configured.is_empty() || shares_one {
            self.with_alpn.clone()
        } else {
            self.without_alpn.clone()
        };
        let served = self.certificates.choose(hello).map(|c| c.info.clone());
        (config, served)
    }
}

impl ServerTls {
    /// `configs: None` builds a context waiting for its SDS secrets.
    pub fn new(
        configs: Option<ServerConfigs>,
        stats: Arc<SslStats>,
        factory_stats: Arc<SslFactoryStats>,
        material_hash: u64,
        secrets: Vec<SdsSecret>,
    ) -> Self {
        Self {
            configs: ArcSwapOption::from_pointee(configs),
            stats,
            factory_stats,
            material_hash,
            secrets,
        }
    }

    /// The configs new handshakes take; `None` while a secret is missing.
    pub fn configs(&self) -> Option<Arc<ServerConfigs>> {
        self.configs.load_full()
    }

    /// Takes `fresh`'s configs (the same context rebuilt with new secrets).
    pub fn update_from(&self, fresh: &ServerTls) {
        self.configs.store(fresh.configs.load_full());
        stats::inc(&self.factory_stats.shard(0).ssl_context_update_by_sds);
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let configs = self.configs.load();
        f.debug_struct("ServerTls")
            .field(
                "alpn",
                &configs.as_ref().map(|c| &c.with_alpn.alpn_protocols),
            )
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// A cluster's upstream TLS (`UpstreamTlsContext`); its config is replaced in place when an
/// SDS secret it names changes.
pub struct ClientTls {
    /// `None` while an SDS secret it names is missing: connections fail
    /// (`upstream_context_secrets_not_ready`).
    configs: ArcSwapOption<ClientConfigs>,
    /// The SNI sent (`sni`); without one, none is sent.
    pub sni: Option<ServerName<'static>>,
    pub stats: Arc<SslStats>,
    /// `cluster.<name>.client_ssl_socket_factory.*`.
    pub factory_stats: Arc<SslFactoryStats>,
    /// Hash of the certificates, keys and CAs read from files or inline.
    pub material_hash: u64,
    /// The SDS secrets the context names.
    pub secrets: Vec<SdsSecret>,
}

/// A client context's rustls config.
pub struct ClientConfigs {
    pub config: Arc<ClientConfig>,
    /// What `/certs` lists of the context.
    pub listed: ContextCertificates,
}

impl ClientTls {
    /// `configs: None` builds a context waiting for its SDS secrets.
    pub fn new(
        configs: Option<ClientConfigs>,
        sni: Option<ServerName<'static>>,
        stats: Arc<SslStats>,
        factory_stats: Arc<SslFactoryStats>,
        material_hash: u64,
        secrets: Vec<SdsSecret>,
    ) -> Self {
        Self {
            configs: ArcSwapOption::from_pointee(configs),
            sni,
            stats,
            factory_stats,
            material_hash,
            secrets,
        }
    }

    /// The config new connections take; `None` while a secret is missing.
    pub fn config(&self) -> Option<Arc<ClientConfig>> {
        self.configs.load().as_ref().map(|c| c.config.clone())
    }

    /// The config and what `/certs` lists of it; `None` while a secret is missing.
    pub fn configs(&self) -> Option<Arc<ClientConfigs>> {
        self.configs.load_full()
    }

    /// Takes `fresh`'s config (the same context rebuilt with new secrets).
    pub fn update_from(&self, fresh: &ClientTls) {
        self.configs.store(fresh.configs.load_full());
        stats::inc(&self.factory_stats.shard(0).ssl_context_update_by_sds);
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("sni", &self.sni)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// A context's certificates as `/certs` shows them: the first certificate of each chain it
/// serves or presents, and the first trusted CA.
#[derive(Debug, Clone, Default)]
pub struct ContextCertificates {
    pub ca: Option<ListedCertificate>,
    pub chain: Vec<ListedCertificate>,
}

/// A certificate `/certs` lists: the file it came from (or `<inline>`), and what it is.
#[derive(Debug, Clone)]
pub struct ListedCertificate {
    pub path: String,
    pub info: Arc<CertificateInfo>,
}

/// A served certificate and the DNS names it is for (lowercase; wildcards as `*.suffix`).
#[derive(Debug)]
pub struct ServedCertificate {
    pub key: Arc<CertifiedKey>,
    pub dns_names: Vec<String>,
    /// What access logs and XFCC read of it (`%DOWNSTREAM_LOCAL_SUBJECT%`, `By=`).
    pub info: Arc<CertificateInfo>,
    /// The file it came from, or `<inline>` (`/certs`).
    pub path: String,
}

impl ServedCertificate {
    /// The certificate as `/certs` lists it.
    pub fn listed(&self) -> ListedCertificate {
        ListedCertificate {
            path: self.path.clone(),
            info: self.info.clone(),
        }
    }
}

/// Several certificates on one context: the first whose names cover the SNI and whose key the
/// client can verify; else the first the client can verify; else the first (Envoy's order).
#[derive(Debug)]
pub struct CertificateChoice(pub Vec<ServedCertificate>);

impl CertificateChoice {
    /// The certificate for `hello` (the only one, when there is one).
    pub fn choose(&self, hello: &ClientHello<'_>) -> Option<&ServedCertificate> {
        let certs = &self.0;
        if let [only] = &certs[..] {
            return Some(only);
        }
        let schemes = hello.signature_schemes();
        let usable = |c: &&ServedCertificate| c.key.key.choose_scheme(schemes).is_some();
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let for_sni = |c: &&ServedCertificate| {
            sni.as_deref()
                .is_some_and(|sni| c.dns_names.iter().any(|n| dns_name_matches(n, sni)))
        };
        certs
            .iter()
            .find(|c| for_sni(c) && usable(c))
            .or_else(|| certs.iter().find(usable))
            .or_else(|| certs.first())
    }
}

impl ResolvesServerCert for CertificateChoice {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(&hello).map(|c| c.key.clone())
    }
}

/// Whether a certificate name (`*.example.com` wildcards cover one label) covers `host`.
pub fn dns_name_matches(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == host,
    }
}

/// The client certificate an upstream context presents (`tls_certificates`).
#[derive(Debug)]
pub struct ClientCertificate(pub Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(&self, _: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.key.choose_scheme(schemes).map(|_| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// One `match_typed_subject_alt_names` entry.
#[derive(Debug, Clone)]
pub struct SanMatcher {
    pub kind: SanKind,
    pub matcher: StringMatcher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    Dns,
    Uri,
    Email,
    IpAddress,
    /// The deprecated `match_subject_alt_names`: a SAN of any of the four kinds.
    Any,
}

/// A certificate's subject alt names, in the certificate's order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerNames {
    pub dns: Vec<String>,
    pub uri: Vec<String>,
    pub email: Vec<String>,
    pub ip: Vec<String>,
}

impl PeerNames {
    pub fn parse(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        Some(Self::of(&cert))
    }

    pub fn of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Self {
        use x509_parser::extensions::GeneralName;
        let mut names = PeerNames::default();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => names.dns.push(d.to_string()),
                    GeneralName::URI(u) => names.uri.push(u.to_string()),
                    GeneralName::RFC822Name(e) => names.email.push(e.to_string()),
                    GeneralName::IPAddress(ip) => names.ip.extend(ip_text(ip)),
                    _ => {}
                }
            }
        }
        names
    }

    /// The SANs of a kind.
    fn of_kind(&self, kind: SanKind) -> impl Iterator<Item = (SanKind, &String)> {
        let all = [
            (SanKind::Dns, &self.dns),
            (SanKind::Uri, &self.uri),
            (SanKind::Email, &self.email),
            (SanKind::IpAddress, &self.ip),
        ];
        all.into_iter()
            .filter(move |(k, _)| kind == SanKind::Any || *k == kind)
            .flat_map(|(k, sans)| sans.iter().map(move |san| (k, san)))
    }

    /// Envoy's rule: with matchers, some SAN must satisfy some matcher (a DNS matcher's exact
    /// value also accepts a wildcard SAN covering it).
    pub fn satisfy(&self, matchers: &[SanMatcher]) -> bool {
        matchers.is_empty()
            || matchers.iter().any(|m| {
                self.of_kind(m.kind).any(|(kind, san)| {
                    m.matcher.matches(san.as_bytes())
                        || (kind == SanKind::Dns
                            && m.matcher.exact_value().is_some_and(|v| {
                                dns_name_matches(&san.to_ascii_lowercase(), &v.to_ascii_lowercase())
                            }))
                })
            })
    }
}

fn ip_text(raw: &[u8]) -> Option<String> {
    match raw.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(raw).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(raw).ok()?).to_string()),
        _ => None,
    }
}

/// How a peer certificate is checked: against trusted CAs (none: any certificate is accepted,
/// as Envoy does without a `trusted_ca`), then its SANs.
#[derive(Debug, Clone)]
pub struct PeerValidation {
    pub roots: Option<Arc<RootCertStore>>,
    pub san_matchers: Vec<SanMatcher>,
    pub algorithms: WebPkiSupportedAlgorithms,
}

/// The rustls error meaning "the SAN check failed" (counted as `ssl.fail_verify_san`).
const SAN_MISMATCH: &str = "no subject alt name matches";

impl PeerValidation {
    fn check_sans(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        if self.san_matchers.is_empty() {
            return Ok(());
        }
        match PeerNames::parse(end_entity) {
            Some(names) if names.satisfy(&self.san_matchers) => Ok(()),
            _ => Err(san_mismatch()),
        }
    }
}

/// The error counted as `ssl.fail_verify_san`.
fn san_mismatch() -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        SanMismatch,
    ))))
}

#[derive(Debug)]
struct SanMismatch;

impl fmt::Display for SanMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SAN_MISMATCH)
    }
}

impl std::error::Error for SanMismatch {}

/// The stat a handshake error counts under.
pub fn classify_failure(error: &Error) -> HandshakeFailure {
    match error {
        Error::NoCertificatesPresented => HandshakeFailure::NoCertificate,
        Error::InvalidCertificate(CertificateError::Other(other))
            if other.to_string() == SAN_MISMATCH =>
        {
            HandshakeFailure::VerifySan
        }
        Error::InvalidCertificate(_) | Error::InvalidCertRevocationList(_) => {
            HandshakeFailure::VerifyError
        }
        _ => HandshakeFailure::Connection,
    }
}

/// Upstream certificates: the chain against the trusted CAs (if any), then the SANs. The
/// host name is checked against the SNI only with `auto_san_validation`, as in Envoy.
#[derive(Debug)]
pub struct UpstreamVerifier {
    pub validation: PeerValidation,
    /// `auto_san_validation`: the certificate must be valid for the SNI sent.
    pub verify_sni: bool,
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let v = &self.validation;
        if v.roots.is_some() || self.verify_sni {
            let cert = ParsedCertificate::try_from(end_entity)?;
            if let Some(roots) = &v.roots {
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    roots,
                    intermediates,
                    now,
                    v.algorithms.all,
                )?;
            }
            if self.verify_sni {
                rustls::client::verify_server_name(&cert, server_name)
                    .map_err(|_| san_mismatch())?;
            }
        }
        v.check_sans(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.validation.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.validation.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.validation.algorithms.supported_schemes()
    }
}

/// Downstream client certificates: rustls' WebPKI verifier (chain, CRLs, expiry), then SANs.
#[derive(Debug)]
pub struct ClientCertCheck {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub validation: PeerValidation,
}

impl ClientCertVerifier for ClientCertCheck {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.validation.check_sans(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What a handshake negotiated, as indexes into the stats' name tables.
pub fn negotiated(conn: &rustls::CommonState) -> (Option<usize>, Option<usize>, Option<usize>) {
    let version = conn.protocol_version().and_then(|v| match v {
        rustls::ProtocolVersion::TLSv1_2 => Some(0),
        rustls::ProtocolVersion::TLSv1_3 => Some(1),
        _ => None,
    });
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|s| cipher_name(s.suite()))
        .and_then(|name| CIPHERS.iter().position(|c| *c == name));
    let curve = conn
        .negotiated_key_exchange_group()
        .and_then(|g| group_name(g.name()))
        .and_then(|name| CURVES.iter().position(|c| *c == name));
    debug_assert_eq!(VERSIONS.len(), 2);
    (version, cipher, curve)
}

/// rustls' cipher suites by Envoy's (BoringSSL's) names.
pub const CIPHER_NAMES: [(&str, rustls::CipherSuite); 9] = {
    use rustls::CipherSuite as S;
    [
        ("TLS_AES_128_GCM_SHA256", S::TLS13_AES_128_GCM_SHA256),
        ("TLS_AES_256_GCM_SHA384", S::TLS13_AES_256_GCM_SHA384),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
};

pub fn cipher_name(suite: rustls::CipherSuite) -> Option<&'static str> {
    CIPHER_NAMES
        .iter()
        .find(|(_, s)| *s == suite)
        .map(|(n, _)| *n)
}

/// Key-exchange groups by Envoy's names (`ecdh_curves`, `ssl.curves.*`).
pub const GROUP_NAMES: [(&str, rustls::NamedGroup); 4] = [
    ("X25519", rustls::NamedGroup::X25519),
    ("P-256", rustls::NamedGroup::secp256r1),
    ("P-384", rustls::NamedGroup::secp384r1),
    ("X25519MLKEM768", rustls::NamedGroup::X25519MLKEM768),
];

pub fn group_name(group: rustls::NamedGroup) -> Option<&'static str> {
    GROUP_NAMES
        .iter()
        .find(|(_, g)| *g == group)
        .map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_names_cover_one_label() {
        assert!(dns_name_matches("*.example.com", "a.example.com"));
        assert!(!dns_name_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_name_matches("*.example.com", "example.com"));
        assert!(dns_name_matches("example.com", "example.com"));
    }

    #[test]
    fn san_matchers_by_kind_and_any_kind() {
        use crate::model::matchers::{StringMatcher, StringPattern};
        let names = PeerNames {
            dns: vec!["*.example.com".into()],
            uri: vec!["spiffe://cluster.local/ns/default/sa/app".into()],
            ..Default::default()
        };
        let exact = |kind, value: &str| SanMatcher {
            kind,
            matcher: StringMatcher::new(StringPattern::Exact(value.as_bytes().into()), false),
        };
        let uri = "spiffe://cluster.local/ns/default/sa/app";
        assert!(names.satisfy(&[exact(SanKind::Uri, uri)]));
        assert!(!names.satisfy(&[exact(SanKind::Dns, uri)]));
        assert!(
            names.satisfy(&[exact(SanKind::Any, uri)]),
            "deprecated matchers take any kind"
        );
        assert!(
            names.satisfy(&[exact(SanKind::Dns, "a.example.com")]),
            "wildcard SAN"
        );
        assert!(!names.satisfy(&[exact(SanKind::Dns, "a.b.example.com")]));
        assert!(names.satisfy(&[]));
    }

    #[test]
    fn every_cipher_and_group_has_a_stat_slot() {
        for (name, _) in CIPHER_NAMES {
            assert!(CIPHERS.contains(&name), "{name}");
        }
        for (name, _) in GROUP_NAMES {
            assert!(CURVES.contains(&name), "{name}");
        }
    }
}
