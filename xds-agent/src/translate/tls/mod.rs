//! Translator: the TLS transport socket (`envoy.transport_sockets.tls`): a chain's
//! `DownstreamTlsContext` and a cluster's `UpstreamTlsContext` into rustls configs
//! (`model::tls`). Certificates, keys, CAs and CRLs are read and checked here, on the agent;
//! secrets named by `sds_secret_config` come from the bootstrap's `static_resources.secrets`
//! or, with an `sds_config`, from SDS: a context whose SDS secrets are not all held yet is
//! built without configs (it refuses connections) and filled in when they arrive.
use std::{
    collections::{hash_map::DefaultHasher, HashMap},
    hash::Hasher,
    sync::Arc,
    time::Duration,
};

use envoy_types::pb::envoy::{
    config::core::v3::{transport_socket, TransportSocket},
    extensions::transport_sockets::tls::v3::{
        downstream_tls_context::{OcspStaplePolicy, SessionTicketKeysType},
        CommonTlsContext, DownstreamTlsContext, Secret, UpstreamTlsContext,
    },
};
use rustls::{
    client::Resumption,
    crypto::aws_lc_rs,
    pki_types::ServerName,
    server::{NoServerSessionStorage, WebPkiClientVerifier},
    version::{TLS12, TLS13},
    ClientConfig, ServerConfig,
};

use super::TranslateError;

mod certificates;
mod params;
mod sessions;
mod validation;

use crate::{names, xds::GrpcTarget};

use certificates::{certificates, Named};
use model::{
    stats::StatsRegistry,
    tls::{
        CertificateChoice, ClientCertCheck, ClientCertificate, ClientConfigs, ClientTls,
        ContextCertificates, PeerValidation, SdsSecret, SecretKey, ServedCertificate,
        ServerConfigs, ServerTls, UpstreamVerifier,
    },
};
use params::{provider, versions};
use sessions::{ClientSessions, ServerSessions};
use validation::validation;

/// What an `sds_secret_config` resolves against: the bootstrap's secrets and the sources it
/// offers (set by `translate`), and the SDS secrets accepted (set by the agent).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `static_resources.secrets` by name.
    pub statics: Arc<HashMap<String, Secret>>,
    /// The static clusters an `api_config_source` may name (one endpoint each), and where
    /// each points.
    pub grpc_clusters: Arc<HashMap<String, (GrpcTarget, Duration)>>,
    /// `dynamic_resources.ads_config` is set: `ads` sources are served.
    pub ads: bool,
    /// The SDS secrets accepted, with the files they name read into inline bytes.
    pub held: Arc<HashMap<SecretKey, Secret>>,
    /// The bootstrap's node and `tracing.http` (set by `translate`): connection managers of
    /// later xDS resources read them too, as secrets do, so they travel together.
    pub tracing: Arc<super::tracing::BootstrapTracing>,
}

/// Collects a listener's or cluster's problems at one type URL.
struct At<'a> {
    type_url: &'a str,
    errors: &'a mut Vec<TranslateError>,
    /// Every certificate, key, CA and CRL read, except from SDS secrets (those are swapped in
    /// place, not config).
    material: DefaultHasher,
    /// Reading an SDS secret: its bytes are not hashed.
    in_sds: bool,
    /// The SDS secrets named, held or not.
    sds: Vec<SdsSecret>,
    /// An SDS secret named is not held yet.
    pending: bool,
}

impl<'a> At<'a> {
    fn new(type_url: &'a str, errors: &'a mut Vec<TranslateError>) -> Self {
        Self {
            type_url,
            errors,
            material: DefaultHasher::new(),
            in_sds: false,
            sds: Vec::new(),
            pending: false,
        }
    }

    fn fail<T>(&mut self, path: impl Into<String>, message: impl Into<String>) -> Option<T> {
        self.errors
            .push(TranslateError::new(path, Some(self.type_url), message));
        None
    }

    /// Runs `read` on a secret's payload (unhashed when it came from SDS).
    fn reading<T>(&mut self, secret: &Named, read: impl FnOnce(&mut Self) -> T) -> T {
        self.in_sds = secret.sds;
        let out = read(self);
        self.in_sds = false;
        out
    }
}

/// The names of the plaintext socket that need no `typed_config` (Envoy's legacy form).
const LEGACY_RAW_BUFFER_NAMES: &[&str] = &["envoy.transport_sockets.raw_buffer", "raw_buffer"];

/// Decodes a transport socket's TLS context and builds it with `build` (given the context,
/// the path of its typed config, and where to report): `Ok(None)` for a raw socket
/// (`raw_buffer`, also by name alone; the walker has rejected every other type).
fn decoded<C, T>(
    socket: &TransportSocket,
    path: &str,
    errors: &mut Vec<TranslateError>,
    build: impl FnOnce(&C, &str, &mut At) -> Option<T>,
) -> Result<Option<T>, ()>
where
    C: prost::Message + prost::Name + Default,
{
    let any = match &socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any))
            if names::type_name(&any.type_url) == names::RAW_BUFFER =>
        {
            return Ok(None)
        }
        Some(transport_socket::ConfigType::TypedConfig(any)) => any,
        // Istio ≤ 1.9 names the plaintext socket without a config (the legacy form Envoy
        // 1.40 refuses); nothing else can be meant.
        None if LEGACY_RAW_BUFFER_NAMES.contains(&socket.name.as_str()) => return Ok(None),
        None => {
            errors.push(TranslateError::new(
                format!("{path}.typed_config"),
                None,
                "typed_config is required",
            ));
            return Err(());
        }
    };
    let path = format!("{path}.typed_config");
    let mut at = At::new(&any.type_url, errors);
    let built = match proto::decode_any::<C>(any) {
        Ok(context) => build(&context, &path, &mut at),
        Err(e) => at.fail(path, e.to_string()),
    };
    built.map(Some).ok_or(())
}

/// A filter chain's `transport_socket`: `Ok(None)` for raw bytes.
pub(super) fn downstream(
    socket: &TransportSocket,
    path: &str,
    stat_scope: &str,
    secrets: &Secrets,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Result<Option<Arc<ServerTls>>, ()> {
    decoded(
        socket,
        path,
        errors,
        |context: &DownstreamTlsContext, path, at| {
            server_tls(context, path, stat_scope, secrets, stats, at)
        },
    )
}

/// A cluster's `transport_socket` (for `peer`): `Ok(None)` for raw bytes.
pub(super) fn upstream(
    socket: &TransportSocket,
    path: &str,
    peer: &Peer,
    secrets: &Secrets,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Result<Option<Arc<ClientTls>>, ()> {
    decoded(
        socket,
        path,
        errors,
        |context: &UpstreamTlsContext, path, at| {
            client_tls(context, path, peer, secrets, stats, at)
        },
    )
}

/// What a cluster's TLS context takes from the cluster.
pub(super) struct Peer<'a> {
    pub cluster: &'a str,
    /// `auto_san_validation`: the server certificate must also be valid for the SNI sent.
    pub verify_sni: bool,
    /// Offered when the context lists no ALPN protocol.
    pub default_alpn: &'a [&'a str],
}

fn server_tls(
    context: &DownstreamTlsContext,
    path: &str,
    stat_scope: &str,
    secrets: &Secrets,
    stats: &mut StatsRegistry,
    at: &mut At,
) -> Option<Arc<ServerTls>> {
    let before = at.errors.len();
    let empty = CommonTlsContext::default();
    let common = context.common_tls_context.as_ref().unwrap_or(&empty);
    let common_path = format!("{path}.common_tls_context");
    if context.ocsp_staple_policy != OcspStaplePolicy::LenientStapling as i32 {
        at.fail::<()>(
            format!("{path}.ocsp_staple_policy"),
            "only LENIENT_STAPLING is supported: certificates are served without OCSP staples",
        );
    }
    let certificates = certificates(common, &common_path, secrets, at);
    if certificates.is_empty() && at.errors.len() == before && !at.pending {
        at.fail::<()>(
            format!("{common_path}.tls_certificates"),
            "a server context needs at least one certificate",
        );
    }
    let provider = provider(common.tls_params.as_ref(), &common_path, at);
    let versions = versions(
        common.tls_params.as_ref(),
        &TLS13,
        &format!("{common_path}.tls_params"),
        at,
    );
    let validation = validation(common, &common_path, secrets, at);
    let require_client = context
        .require_client_certificate
        .as_ref()
        .is_some_and(|v| v.value);
    if at.errors.len() > before {
        return None;
    }
    let stats = (
        stats.ssl(stat_scope),
        stats.ssl_socket_factory(stat_scope, true),
    );
    let (provider, versions) = (Arc::new(provider?), versions?);
    if at.pending {
        let sds = std::mem::take(&mut at.sds);
        return Some(Arc::new(ServerTls::new(
            None,
            stats.0,
            stats.1,
            at.material.finish(),
            sds,
        )));
    }
    let verifier = match validation {
        Some((validation, ca, crls)) => {
            let roots = validation.roots.clone()?;
            let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .with_crls(crls);
            // As in Envoy, SAN matchers need a certificate to match even when it is optional.
            if !require_client && validation.san_matchers.is_empty() {
                builder = builder.allow_unauthenticated();
            }
            match builder.build() {
                Ok(inner) => Some((Arc::new(ClientCertCheck { inner, validation }), ca)),
                Err(e) => {
                    return at.fail(format!("{common_path}.validation_context"), e.to_string())
                }
            }
        }
        None if require_client => {
            return at.fail(
                format!("{path}.require_client_certificate"),
                "requires a validation_context with a trusted_ca to verify client certificates",
            )
        }
        None => None,
    };
    let builder =
        match ServerConfig::builder_with_provider(provider).with_protocol_versions(&versions) {
            Ok(b) => b,
            Err(e) => return at.fail(format!("{common_path}.tls_params"), e.to_string()),
        };
    let requests_client_certificate = verifier.is_some();
    let (builder, ca) = match verifier {
        Some((v, ca)) => (builder.with_client_cert_verifier(v), ca),
        None => (builder.with_no_client_auth(), None),
    };
    let chain = certificates.iter().map(ServedCertificate::listed).collect();
    let certificates = Arc::new(CertificateChoice(certificates));
    let mut config = builder.with_cert_resolver(certificates.clone());
    config.session_storage = if context.disable_stateful_session_resumption {
        Arc::new(NoServerSessionStorage {})
    } else {
        ServerSessions::new(SESSION_CACHE)
    };
    let stateless = !matches!(
        context.session_ticket_keys_type,
        Some(SessionTicketKeysType::DisableStatelessSessionResumption(
            true
        ))
    );
    if stateless {
        match aws_lc_rs::Ticketer::new() {
            Ok(ticketer) => config.ticketer = ticketer,
            Err(e) => return at.fail(path, format!("cannot create a session ticketer: {e}")),
        }
    }
    config.send_tls13_tickets = 1;
    let without_alpn = Arc::new(config.clone());
    config.alpn_protocols = alpn(common);
    Some(Arc::new(ServerTls::new(
        Some(ServerConfigs {
            with_alpn: Arc::new(config),
            without_alpn,
            certificates,
            requests_client_certificate,
            listed: ContextCertificates { ca, chain },
        }),
        stats.0,
        stats.1,
        at.material.finish(),
        std::mem::take(&mut at.sds),
    )))
}

/// Sessions a context remembers for stateful resumption.
const SESSION_CACHE: usize = 4096;

fn client_tls(
    context: &UpstreamTlsContext,
    path: &str,
    peer: &Peer,
    secrets: &Secrets,
    stats: &mut StatsRegistry,
    at: &mut At,
) -> Option<Arc<ClientTls>> {
    let Peer {
        cluster,
        verify_sni,
        default_alpn,
    } = *peer;
    let before = at.errors.len();
    let empty = CommonTlsContext::default();
    let common = context.common_tls_context.as_ref().unwrap_or(&empty);
    let common_path = format!("{path}.common_tls_context");
    let sni = match context.sni.as_str() {
        "" => None,
        name => match ServerName::try_from(name.to_string()) {
            Ok(n) => Some(n),
            Err(e) => return at.fail(format!("{path}.sni"), format!("{name:?}: {e}")),
        },
    };
    let mut certificates = certificates(common, &common_path, secrets, at);
    if certificates.len() > 1 {
        at.fail::<()>(
            format!("{common_path}.tls_certificates"),
            "an upstream context takes at most one client certificate",
        );
    }
    let provider = provider(common.tls_params.as_ref(), &common_path, at);
    // Envoy's client default is TLS 1.2 at most.
    let versions = versions(
        common.tls_params.as_ref(),
        &TLS12,
        &format!("{common_path}.tls_params"),
        at,
    );
    let validation = validation(common, &common_path, secrets, at);
    if at.errors.len() > before {
        return None;
    }
    let scope = format!("cluster.{cluster}");
    let stats = (stats.ssl(&scope), stats.ssl_socket_factory(&scope, false));
    let (provider, versions) = (Arc::new(provider?), versions?);
    if at.pending {
        let sds = std::mem::take(&mut at.sds);
        return Some(Arc::new(ClientTls::new(
            None,
            sni,
            stats.0,
            stats.1,
            at.material.finish(),
            sds,
        )));
    }
    let (validation, ca) = match validation {
        Some((validation, _, crls)) if !crls.is_empty() => {
            drop(validation);
            return at.fail(
                format!("{common_path}.validation_context.crl"),
                "CRLs are checked on downstream client certificates only",
            );
        }
        Some((validation, ca, _)) => (validation, ca),
        None => (
            PeerValidation {
                roots: None,
                san_matchers: Vec::new(),
                algorithms: provider.signature_verification_algorithms,
            },
            None,
        ),
    };
    let verifier = UpstreamVerifier {
        validation,
        verify_sni,
    };
    let builder =
        match ClientConfig::builder_with_provider(provider).with_protocol_versions(&versions) {
            Ok(b) => b,
            Err(e) => return at.fail(format!("{common_path}.tls_params"), e.to_string()),
        };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let chain = certificates.iter().map(ServedCertificate::listed).collect();
    let mut config = match certificates.pop() {
        Some(cert) => builder.with_client_cert_resolver(Arc::new(ClientCertificate(cert.key))),
        None => builder.with_no_client_auth(),
    };
    let sessions = context
        .max_session_keys
        .as_ref()
        .map_or(1, |v| v.value as usize);
    config.resumption = if sessions == 0 {
        Resumption::disabled()
    } else {
        Resumption::store(ClientSessions::new(sessions.max(1) * 256))
    };
    // SNI goes out only for a DNS name: without `sni` (and without `auto_sni`) the shard
    // connects with the host's IP address as the name, which is never sent.
    config.enable_sni = true;
    config.alpn_protocols = alpn(common);
    if config.alpn_protocols.is_empty() {
        config.alpn_protocols = default_alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    }
    Some(Arc::new(ClientTls::new(
        Some(ClientConfigs {
            config: Arc::new(config),
            listed: ContextCertificates { ca, chain },
        }),
        sni,
        stats.0,
        stats.1,
        at.material.finish(),
        std::mem::take(&mut at.sds),
    )))
}

fn alpn(common: &CommonTlsContext) -> Vec<Vec<u8>> {
    common
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect()
}

/// The static secrets of a bootstrap by name; each is checked where it is used.
pub(super) fn static_secrets(
    secrets: &[Secret],
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> HashMap<String, Secret> {
    let mut out = HashMap::new();
    for (i, secret) in secrets.iter().enumerate() {
        if secret.name.is_empty() {
            errors.push(TranslateError::new(
                format!("{path}[{i}].name"),
                None,
                "is required",
            ));
        } else if out.insert(secret.name.clone(), secret.clone()).is_some() {
            errors.push(TranslateError::new(
                format!("{path}[{i}].name"),
                None,
                format!("duplicate secret name {:?}", secret.name),
            ));
        }
    }
    out
}
