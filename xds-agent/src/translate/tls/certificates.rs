//! Translator: a TLS context's certificates — inline or from files, or named secrets
//! (static, or held from SDS) — read, parsed and checked against their keys.
use std::{hash::Hash, sync::Arc};

use envoy_types::pb::envoy::{
    config::core::v3::{data_source::Specifier, DataSource},
    extensions::transport_sockets::tls::v3::{
        secret, CommonTlsContext, SdsSecretConfig, TlsCertificate,
    },
};
use rustls::{
    crypto::aws_lc_rs,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
};

use super::super::{config_source::secret_source, data_source};
use super::{At, Secrets};
use model::{
    tls::{SdsSecret, SecretKey, ServedCertificate},
    tls_info::CertificateInfo,
};

/// The context's certificates: inline or file `tls_certificates`, then named secrets.
pub(super) fn certificates(
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
pub(super) struct Named<'a> {
    pub(super) payload: Option<&'a secret::Type>,
    pub(super) path: String,
    pub(super) sds: bool,
}

impl Named<'_> {
    /// Why the secret cannot stand where a `wanted` one is named.
    pub(super) fn not_a(&self, wanted: &str, sds: &SdsSecretConfig) -> String {
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
pub(super) fn secret<'a>(
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
pub(super) fn material(source: &DataSource, path: &str, at: &mut At) -> Option<Vec<u8>> {
    let bytes = data_source::read(source, path, at.errors)?;
    if !at.in_sds {
        bytes.hash(&mut at.material);
    }
    Some(bytes)
}

/// Where a certificate came from, as `/certs` shows it: its file, or `<inline>`.
pub(super) fn origin(source: Option<&DataSource>) -> String {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::Filename(file)) => file.clone(),
        _ => "<inline>".into(),
    }
}
