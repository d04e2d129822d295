//! Domain model: the certificates a TLS context serves or presents, and the choice among
//! several by SNI and the client's signature algorithms (Envoy's order).
use std::sync::Arc;

use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    SignatureScheme,
};

use crate::tls_info::CertificateInfo;

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
