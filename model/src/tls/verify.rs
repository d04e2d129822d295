//! Domain model: Envoy's peer verification on rustls: the chain against trusted CAs (CRLs
//! for clients), then subject-alt-name matchers, a SAN mismatch being its own failure
//! (`ssl.fail_verify_san`); and which stat a failed handshake counts under.
use std::{fmt, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        ParsedCertificate,
    },
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};

use super::certificates::dns_name_matches;
use crate::matchers::StringMatcher;
use crate::stats::HandshakeFailure;

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

/// The rustls error meaning "the SAN check failed" (counted as `ssl.fail_verify_san`).
#[derive(Debug)]
struct SanMismatch;

impl fmt::Display for SanMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no subject alt name matches")
    }
}

impl std::error::Error for SanMismatch {}

/// The stat a handshake error counts under.
pub fn classify_failure(error: &Error) -> HandshakeFailure {
    match error {
        Error::NoCertificatesPresented => HandshakeFailure::NoCertificate,
        Error::InvalidCertificate(CertificateError::Other(other))
            if other.0.downcast_ref::<SanMismatch>().is_some() =>
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
