//! Translator: a TLS context's peer validation — trusted CAs, CRLs and subject-alt-name
//! matchers, from the context, a named secret, or both combined as Envoy merges them.
use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, secret, subject_alt_name_matcher::SanType,
    CertificateValidationContext, CommonTlsContext,
};
use rustls::{
    crypto::aws_lc_rs,
    pki_types::{pem::PemObject, CertificateDer, CertificateRevocationListDer},
    RootCertStore,
};

use super::super::matchers;
use super::{
    certificates::{material, origin, secret as named_secret},
    At, Secrets,
};
use model::{
    tls::{ListedCertificate, PeerValidation, SanKind, SanMatcher},
    tls_info::CertificateInfo,
};

/// The peer validation of a context, its first trusted CA and the CRLs it names; `None`
/// without one (or while its SDS secret is not held).
pub(super) fn validation(
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
            let named = named_secret(sds, &path, secrets, at)?;
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
            let named = named_secret(sds, &sds_path, secrets, at)?;
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
