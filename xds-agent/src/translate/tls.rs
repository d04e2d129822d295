//! Translator: the TLS transport socket (`envoy.transport_sockets.tls`): a chain's
//! `DownstreamTlsContext` and a cluster's `UpstreamTlsContext` into rustls configs
//! (`model::tls`). Certificates, keys, CAs and CRLs are read and checked here, on the agent;
//! secrets named by `sds_secret_config` come from the bootstrap's `static_resources.secrets`
//! or, with an `sds_config`, from SDS: a context whose SDS secrets are not all held yet is
//! built without configs (it refuses connections) and filled in when they arrive.
use std::{
    collections::{hash_map::DefaultHasher, HashMap},
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{data_source::Specifier, transport_socket, DataSource, TransportSocket},
        extensions::transport_sockets::tls::v3::{
            common_tls_context::ValidationContextType,
            downstream_tls_context::{OcspStaplePolicy, SessionTicketKeysType},
            secret,
            subject_alt_name_matcher::SanType,
            tls_parameters::TlsProtocol,
            CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
            Secret, TlsCertificate, TlsParameters, UpstreamTlsContext,
        },
    },
    google::protobuf::Any,
};
use rustls::{
    client::Resumption,
    crypto::{aws_lc_rs, CryptoProvider},
    pki_types::{
        pem::PemObject, CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName,
    },
    server::{NoServerSessionStorage, ServerSessionMemoryCache, WebPkiClientVerifier},
    sign::CertifiedKey,
    version::{TLS12, TLS13},
    ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion,
};

use super::{config_source::secret_source, data_source, matchers, TranslateError};
use crate::{
    model::{
        tls::{
            CertificateChoice, ClientCertCheck, ClientCertificate, ClientConfigs, ClientTls,
            ContextCertificates, ListedCertificate, PeerValidation, SanKind, SanMatcher, SdsSecret,
            SecretKey, ServedCertificate, ServerConfigs, ServerTls, UpstreamVerifier, CIPHER_NAMES,
            GROUP_NAMES,
        },
        tls_info::CertificateInfo,
    },
    names,
    stats::StatsRegistry,
    xds::GrpcTarget,
};

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

/// The typed config of a transport socket: `None` for a raw one (`raw_buffer`), else the TLS
/// context's `Any`. The walker has rejected every other type.
fn tls_config<'a>(
    socket: &'a TransportSocket,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Result<Option<&'a Any>, ()> {
    match &socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any))
            if names::type_name(&any.type_url) == names::RAW_BUFFER =>
        {
            Ok(None)
        }
        Some(transport_socket::ConfigType::TypedConfig(any)) => Ok(Some(any)),
        None => {
            errors.push(TranslateError::new(
                format!("{path}.typed_config"),
                None,
                "typed_config is required",
            ));
            Err(())
        }
    }
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
    let Some(any) = tls_config(socket, path, errors)? else {
        return Ok(None);
    };
    let path = format!("{path}.typed_config");
    let mut at = At::new(&any.type_url, errors);
    let context = match proto::decode_any::<DownstreamTlsContext>(any) {
        Ok(c) => c,
        Err(e) => return at.fail(path, e.to_string()).ok_or(()),
    };
    server_tls(&context, &path, stat_scope, secrets, stats, &mut at)
        .map(Some)
        .ok_or(())
}

/// A cluster's `transport_socket`: `Ok(None)` for raw bytes. With `verify_sni` (the cluster's
/// `auto_san_validation`) the server certificate must also be valid for the SNI sent.
pub(super) fn upstream(
    socket: &TransportSocket,
    path: &str,
    cluster: &str,
    verify_sni: bool,
    secrets: &Secrets,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Result<Option<Arc<ClientTls>>, ()> {
    let Some(any) = tls_config(socket, path, errors)? else {
        return Ok(None);
    };
    let path = format!("{path}.typed_config");
    let mut at = At::new(&any.type_url, errors);
    let context = match proto::decode_any::<UpstreamTlsContext>(any) {
        Ok(c) => c,
        Err(e) => return at.fail(path, e.to_string()).ok_or(()),
    };
    client_tls(
        &context, &path, cluster, verify_sni, secrets, stats, &mut at,
    )
    .map(Some)
    .ok_or(())
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
        ServerSessionMemoryCache::new(SESSION_CACHE)
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
    cluster: &str,
    verify_sni: bool,
    secrets: &Secrets,
    stats: &mut StatsRegistry,
    at: &mut At,
) -> Option<Arc<ClientTls>> {
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
        Resumption::in_memory_sessions(sessions.max(1) * 256)
    };
    // SNI goes out only for a DNS name: without `sni` (and without `auto_sni`) the shard
    // connects with the host's IP address as the name, which is never sent.
    config.enable_sni = true;
    config.alpn_protocols = alpn(common);
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

/// The context's certificates: inline or file `tls_certificates`, then named secrets.
fn certificates(
    common: &CommonTlsContext,
    path: &str,
    secrets: &Secrets,
    at: &mut At,
) -> Vec<ServedCertificate> {
    let mut out = Vec::new();
    for (i, cert) in common.tls_certificates.iter().enumerate() {
        out.extend(certificate(
            cert,
            &format!("{path}.tls_certificates[{i}]"),
            at,
        ));
    }
    for (i, sds) in common.tls_certificate_sds_secret_configs.iter().enumerate() {
        let path = format!("{path}.tls_certificate_sds_secret_configs[{i}]");
        let Some(named) = secret(sds, &path, secrets, at) else {
            continue;
        };
        match named.payload {
            Some(secret::Type::TlsCertificate(cert)) => {
                let path = format!("{}.tls_certificate", named.path);
                out.extend(at.reading(&named, |at| certificate(cert, &path, at)));
            }
            _ => {
                at.fail::<()>(format!("{path}.name"), named.not_a("tls_certificate", sds));
            }
        }
    }
    out
}

/// A secret an `sds_secret_config` names: its payload, the path of the secret (its problems
/// are reported under it), and whether it came from SDS.
struct Named<'a> {
    payload: Option<&'a secret::Type>,
    path: String,
    sds: bool,
}

impl Named<'_> {
    /// Why the secret cannot stand where a `wanted` one is named.
    fn not_a(&self, wanted: &str, sds: &SdsSecretConfig) -> String {
        let kind = match self.payload {
            Some(secret::Type::TlsCertificate(_)) => "a tls_certificate",
            Some(secret::Type::ValidationContext(_)) => "a validation_context",
            Some(_) => "of another kind",
            None => "empty",
        };
        format!("secret {:?} is {kind}, not a {wanted}", sds.name)
    }
}

/// The secret `sds` names: from `static_resources.secrets`, or with an `sds_config` from SDS.
/// `None` on an error, or when an SDS secret is not held yet (`at.pending`).
fn secret<'a>(
    sds: &SdsSecretConfig,
    path: &str,
    secrets: &'a Secrets,
    at: &mut At,
) -> Option<Named<'a>> {
    let Some(source) = &sds.sds_config else {
        return match secrets.statics.get(&sds.name) {
            Some(found) => Some(Named {
                payload: found.r#type.as_ref(),
                path: format!("static_resources.secrets[{:?}]", sds.name),
                sds: false,
            }),
            None => at.fail(
                format!("{path}.name"),
                format!("no static_resources.secrets entry named {:?}", sds.name),
            ),
        };
    };
    if sds.name.is_empty() {
        return at.fail(format!("{path}.name"), "is required");
    }
    let (source, initial_fetch_timeout) =
        secret_source(source, &format!("{path}.sds_config"), secrets, at.errors)?;
    let key = SecretKey {
        source,
        name: sds.name.clone(),
    };
    let found = secrets.held.get(&key);
    at.pending |= found.is_none();
    at.sds.push(SdsSecret {
        key,
        initial_fetch_timeout,
    });
    found.map(|found| Named {
        payload: found.r#type.as_ref(),
        path: format!("secrets[{:?}]", sds.name),
        sds: true,
    })
}

fn certificate(cert: &TlsCertificate, path: &str, at: &mut At) -> Option<ServedCertificate> {
    let chain = read(
        cert.certificate_chain.as_ref(),
        &format!("{path}.certificate_chain"),
        at,
    )?;
    let key = read(
        cert.private_key.as_ref(),
        &format!("{path}.private_key"),
        at,
    )?;
    let chain = match CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
    {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            return at.fail(
                format!("{path}.certificate_chain"),
                "no PEM certificate found",
            )
        }
        Err(e) => return at.fail(format!("{path}.certificate_chain"), format!("bad PEM: {e}")),
    };
    let key = match PrivateKeyDer::from_pem_slice(&key) {
        Ok(k) => k,
        Err(e) => {
            return at.fail(
                format!("{path}.private_key"),
                format!("no usable PEM private key: {e}"),
            )
        }
    };
    let signing = match aws_lc_rs::sign::any_supported_type(&key) {
        Ok(s) => s,
        Err(e) => return at.fail(format!("{path}.private_key"), e.to_string()),
    };
    let info = CertificateInfo::parse(&chain[0]);
    // Compared here rather than with rustls' `keys_match`, whose WebPKI parser refuses the
    // X.509 v1 certificates that Envoy (and its examples) serve.
    let key_matches = match (signing.public_key(), public_key(&chain[0])) {
        (Some(ours), Some(theirs)) => ours.as_ref() == theirs.as_slice(),
        _ => true, // a key type rustls cannot describe: the handshake will tell
    };
    if !key_matches {
        return at.fail(
            format!("{path}.private_key"),
            "does not match the certificate's public key",
        );
    }
    let key = CertifiedKey::new(chain, signing);
    let Some(info) = info else {
        return at.fail(
            format!("{path}.certificate_chain"),
            "cannot parse the certificate",
        );
    };
    Some(ServedCertificate {
        key: Arc::new(key),
        dns_names: info
            .sans
            .dns
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
        info: Arc::new(info),
        path: origin(cert.certificate_chain.as_ref()),
    })
}

/// The SubjectPublicKeyInfo of a certificate.
fn public_key(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

fn read(source: Option<&DataSource>, path: &str, at: &mut At) -> Option<Vec<u8>> {
    match source {
        Some(source) => material(source, path, at),
        None => at.fail(path, "is required"),
    }
}

/// Reads a data source, hashing what it held into the context's material (unless it is an
/// SDS secret's).
fn material(source: &DataSource, path: &str, at: &mut At) -> Option<Vec<u8>> {
    let bytes = data_source::read(source, path, at.errors)?;
    if !at.in_sds {
        bytes.hash(&mut at.material);
    }
    Some(bytes)
}

/// Where a certificate came from, as `/certs` shows it: its file, or `<inline>`.
fn origin(source: Option<&DataSource>) -> String {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::Filename(file)) => file.clone(),
        _ => "<inline>".into(),
    }
}

/// The peer validation of a context, its first trusted CA and the CRLs it names; `None`
/// without one (or while its SDS secret is not held).
fn validation(
    common: &CommonTlsContext,
    path: &str,
    secrets: &Secrets,
    at: &mut At,
) -> Option<Validation> {
    match &common.validation_context_type {
        None => None,
        Some(ValidationContextType::ValidationContext(v)) => {
            validation_context(v, &format!("{path}.validation_context"), at)
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
            let path = format!("{path}.validation_context_sds_secret_config");
            let named = secret(sds, &path, secrets, at)?;
            match named.payload {
                Some(secret::Type::ValidationContext(v)) => {
                    let path = format!("{}.validation_context", named.path);
                    at.reading(&named, |at| validation_context(v, &path, at))
                }
                _ => at.fail(
                    format!("{path}.name"),
                    named.not_a("validation_context", sds),
                ),
            }
        }
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            let path = format!("{path}.combined_validation_context");
            let mut merged = combined
                .default_validation_context
                .clone()
                .unwrap_or_default();
            let Some(sds) = &combined.validation_context_sds_secret_config else {
                return validation_context(&merged, &path, at);
            };
            let sds_path = format!("{path}.validation_context_sds_secret_config");
            let named = secret(sds, &sds_path, secrets, at)?;
            match named.payload {
                Some(secret::Type::ValidationContext(v)) => {
                    merge(&mut merged, v);
                    at.reading(&named, |at| validation_context(&merged, &path, at))
                }
                _ => at.fail(
                    format!("{sds_path}.name"),
                    named.not_a("validation_context", sds),
                ),
            }
        }
        Some(_) => None, // rejected by the walker
    }
}

/// A validation context: how peers are checked, the first trusted CA (`/certs`), the CRLs.
type Validation = (
    PeerValidation,
    Option<ListedCertificate>,
    Vec<CertificateRevocationListDer<'static>>,
);

/// `Message::MergeFrom` of a dynamic validation context over the default one, as Envoy
/// combines them: singular fields replace, repeated fields append.
fn merge(into: &mut CertificateValidationContext, from: &CertificateValidationContext) {
    if from.trusted_ca.is_some() {
        into.trusted_ca.clone_from(&from.trusted_ca);
    }
    if from.crl.is_some() {
        into.crl.clone_from(&from.crl);
    }
    into.match_typed_subject_alt_names
        .extend(from.match_typed_subject_alt_names.iter().cloned());
    #[allow(deprecated)]
    into.match_subject_alt_names
        .extend(from.match_subject_alt_names.iter().cloned());
}

fn validation_context(
    context: &CertificateValidationContext,
    path: &str,
    at: &mut At,
) -> Option<Validation> {
    let before = at.errors.len();
    let mut ca = None;
    let roots = match &context.trusted_ca {
        None => None,
        Some(source) => {
            let pem = material(source, &format!("{path}.trusted_ca"), at)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                if let (None, Ok(der)) = (&ca, &cert) {
                    ca = CertificateInfo::parse(der).map(|info| ListedCertificate {
                        path: origin(Some(source)),
                        info: Arc::new(info),
                    });
                }
                match cert.map(|c| roots.add(c)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return at.fail(format!("{path}.trusted_ca"), e.to_string()),
                    Err(e) => {
                        return at.fail(format!("{path}.trusted_ca"), format!("bad PEM: {e}"))
                    }
                }
            }
            if roots.is_empty() {
                return at.fail(format!("{path}.trusted_ca"), "no PEM certificate found");
            }
            Some(Arc::new(roots))
        }
    };
    let crls = match &context.crl {
        None => Vec::new(),
        Some(source) => {
            let pem = material(source, &format!("{path}.crl"), at)?;
            match CertificateRevocationListDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>()
            {
                Ok(crls) if !crls.is_empty() => crls,
                Ok(_) => return at.fail(format!("{path}.crl"), "no PEM CRL found"),
                Err(e) => return at.fail(format!("{path}.crl"), format!("bad PEM: {e}")),
            }
        }
    };
    if roots.is_none() && !crls.is_empty() {
        at.fail::<()>(format!("{path}.crl"), "a CRL needs a trusted_ca");
    }
    let mut san_matchers = Vec::new();
    for (i, m) in context.match_typed_subject_alt_names.iter().enumerate() {
        let m_path = format!("{path}.match_typed_subject_alt_names[{i}]");
        let kind = match SanType::try_from(m.san_type) {
            Ok(SanType::Dns) => SanKind::Dns,
            Ok(SanType::Uri) => SanKind::Uri,
            Ok(SanType::Email) => SanKind::Email,
            Ok(SanType::IpAddress) => SanKind::IpAddress,
            _ => {
                at.fail::<()>(
                    format!("{m_path}.san_type"),
                    "must be DNS, URI, EMAIL or IP_ADDRESS",
                );
                continue;
            }
        };
        let Some(matcher) = &m.matcher else {
            at.fail::<()>(format!("{m_path}.matcher"), "is required");
            continue;
        };
        let found = matchers::string_matcher(
            matcher,
            matchers::At {
                path: &format!("{m_path}.matcher"),
                type_url: Some(at.type_url),
            },
            at.errors,
        );
        san_matchers.extend(found.map(|matcher| SanMatcher { kind, matcher }));
    }
    #[allow(deprecated)] // Istio still writes match_subject_alt_names.
    for (i, m) in context.match_subject_alt_names.iter().enumerate() {
        let found = matchers::string_matcher(
            m,
            matchers::At {
                path: &format!("{path}.match_subject_alt_names[{i}]"),
                type_url: Some(at.type_url),
            },
            at.errors,
        );
        san_matchers.extend(found.map(|matcher| SanMatcher {
            kind: SanKind::Any,
            matcher,
        }));
    }
    if at.errors.len() > before {
        return None;
    }
    Some((
        PeerValidation {
            roots,
            san_matchers,
            algorithms: aws_lc_rs::default_provider().signature_verification_algorithms,
        },
        ca,
        crls,
    ))
}

/// The crypto provider with `tls_params`' cipher suites and curves (rustls' defaults where
/// unset, which cover Envoy's defaults).
fn provider(params: Option<&TlsParameters>, path: &str, at: &mut At) -> Option<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    let Some(params) = params else {
        return Some(provider);
    };
    let path = format!("{path}.tls_params");
    if !params.cipher_suites.is_empty() {
        let mut wanted = Vec::new();
        for (i, entry) in params.cipher_suites.iter().enumerate() {
            // `[A|B]` is an equal-preference group in BoringSSL's syntax.
            for name in entry.trim_matches(|c| c == '[' || c == ']').split('|') {
                match CIPHER_NAMES.iter().find(|(n, _)| *n == name) {
                    Some((_, suite)) if !name.starts_with("TLS_") => wanted.push(*suite),
                    Some(_) => {
                        at.fail::<()>(
                            format!("{path}.cipher_suites[{i}]"),
                            format!("{name}: TLS 1.3 suites are not configurable (as in Envoy); list TLS 1.2 suites only"),
                        );
                    }
                    None => {
                        at.fail::<()>(
                            format!("{path}.cipher_suites[{i}]"),
                            format!(
                                "cipher suite {name:?} is not offered by rustls; TLS 1.2 suites available: {}",
                                CIPHER_NAMES.iter().map(|(n, _)| *n).filter(|n| !n.starts_with("TLS_")).collect::<Vec<_>>().join(", ")
                            ),
                        );
                    }
                }
            }
        }
        provider
            .cipher_suites
            .retain(|s| s.version() == &TLS13 || wanted.contains(&s.suite()));
    }
    if !params.ecdh_curves.is_empty() {
        let mut groups = Vec::new();
        for (i, name) in params.ecdh_curves.iter().enumerate() {
            match GROUP_NAMES.iter().find(|(n, _)| n == name) {
                Some((_, group)) => groups.extend(
                    provider
                        .kx_groups
                        .iter()
                        .filter(|g| g.name() == *group)
                        .copied(),
                ),
                None => {
                    at.fail::<()>(
                        format!("{path}.ecdh_curves[{i}]"),
                        format!(
                            "curve {name:?} is not offered by rustls; available: {}",
                            GROUP_NAMES
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
        }
        provider.kx_groups = groups;
    }
    Some(provider)
}

/// The protocol versions `tls_params` allow; the default minimum is TLS 1.2 and the default
/// maximum `default_max` (Envoy: 1.3 for servers, 1.2 for clients).
fn versions(
    params: Option<&TlsParameters>,
    default_max: &'static SupportedProtocolVersion,
    path: &str,
    at: &mut At,
) -> Option<Vec<&'static SupportedProtocolVersion>> {
    let level = |v: &SupportedProtocolVersion| if v == &TLS12 { 2 } else { 3 };
    let (min, max) = params.map_or((0, 0), |p| {
        (
            p.tls_minimum_protocol_version,
            p.tls_maximum_protocol_version,
        )
    });
    let parse = |value: i32, field: &str, default: u8, at: &mut At| -> Option<u8> {
        match TlsProtocol::try_from(value) {
            Ok(TlsProtocol::TlsAuto) => Some(default),
            Ok(TlsProtocol::TlSv12) => Some(2),
            Ok(TlsProtocol::TlSv13) => Some(3),
            Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11) => at.fail(
                format!("{path}.{field}"),
                "TLS 1.0 and 1.1 are not offered (rustls implements TLS 1.2 and 1.3)",
            ),
            Err(_) => at.fail(
                format!("{path}.{field}"),
                format!("unknown version {value}"),
            ),
        }
    };
    let min = parse(min, "tls_minimum_protocol_version", 2, at);
    let max = parse(max, "tls_maximum_protocol_version", level(default_max), at);
    let (min, max) = (min?, max?);
    if min > max {
        return at.fail(
            format!("{path}.tls_minimum_protocol_version"),
            "is above tls_maximum_protocol_version",
        );
    }
    Some(
        [(2, &TLS12), (3, &TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, v)| v)
            .collect(),
    )
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
