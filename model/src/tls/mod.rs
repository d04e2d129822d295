//! Domain model: TLS for transport sockets. The rustls configs the agent builds for a chain's
//! downstream side (`ServerTls`) and a cluster's upstream side (`ClientTls`) — swapped in place
//! when an SDS secret they name changes (`SecretKey`) — the certificate choice by SNI and key
//! type, and Envoy's peer verification: a trusted CA chain (with CRLs) and
//! `match_typed_subject_alt_names`, where a SAN mismatch is its own failure
//! (`ssl.fail_verify_san`).
use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;

use rustls::{pki_types::ServerName, server::ClientHello, ClientConfig, ServerConfig};

use super::tls_info::CertificateInfo;
use crate::stats::{self, SslFactoryStats, SslStats};

mod certificates;
mod names;
mod verify;

pub use certificates::*;
pub use names::*;
pub use verify::*;

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
        use crate::matchers::{StringMatcher, StringPattern};
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
}
