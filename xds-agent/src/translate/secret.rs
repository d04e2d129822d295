//! Translator: an SDS secret as it arrives — decoded, named as subscribed, the walker's
//! surface checked, and the files it names read into inline bytes (what TLS contexts use and
//! `/config_dump` shows) — and secret files (`path_config_source`): a `DiscoveryResponse` in
//! YAML or JSON holding the one secret.
use std::path::{Path, PathBuf};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{data_source::Specifier, DataSource},
        extensions::transport_sockets::tls::v3::{secret, Secret},
        service::discovery::v3::DiscoveryResponse,
    },
    google::protobuf::Any,
};
use prost::Message;

use super::{data_source, support::unsupported_fields, TranslateError};
use crate::names::type_urls::SECRET;

/// Secret `name` as offered in `body`, checked, with its files read into inline bytes.
pub fn resolve(body: &Any, name: &str) -> Result<Secret, Vec<TranslateError>> {
    let path = format!("secrets[{name:?}]");
    let fail = |message: String| vec![TranslateError::new(path.clone(), Some(SECRET), message)];
    if body.type_url != SECRET {
        return Err(fail(format!(
            "a {} where a secret was asked for",
            body.type_url
        )));
    }
    let mut secret =
        Secret::decode(body.value.as_slice()).map_err(|e| fail(format!("cannot decode: {e}")))?;
    if secret.name != name {
        return Err(fail(format!(
            "the secret is named {:?} but {name:?} was asked for",
            secret.name
        )));
    }
    let mut errors = unsupported_fields(&secret, &path, None);
    for (source, field) in data_sources(&mut secret) {
        let at = format!("{path}.{field}");
        if let Some(Specifier::Filename(_)) = &source.specifier {
            if let Some(bytes) = data_source::read(source, &at, &mut errors) {
                source.specifier = Some(Specifier::InlineBytes(bytes));
            }
        }
    }
    match errors.is_empty() {
        true => Ok(secret),
        false => Err(errors),
    }
}

/// The files a secret names (a secret file's source watches them too).
pub fn files(secret: &mut Secret) -> Vec<PathBuf> {
    data_sources(secret)
        .filter_map(|(source, _)| match &source.specifier {
            Some(Specifier::Filename(file)) => Some(PathBuf::from(file)),
            _ => None,
        })
        .collect()
}

/// The data sources of a secret's certificate, key, CA and CRL, with their field paths.
fn data_sources(secret: &mut Secret) -> impl Iterator<Item = (&mut DataSource, &'static str)> {
    let sources: Vec<(Option<&mut DataSource>, &'static str)> = match &mut secret.r#type {
        Some(secret::Type::TlsCertificate(cert)) => vec![
            (
                cert.certificate_chain.as_mut(),
                "tls_certificate.certificate_chain",
            ),
            (cert.private_key.as_mut(), "tls_certificate.private_key"),
        ],
        Some(secret::Type::ValidationContext(context)) => vec![
            (context.trusted_ca.as_mut(), "validation_context.trusted_ca"),
            (context.crl.as_mut(), "validation_context.crl"),
        ],
        _ => Vec::new(),
    };
    sources
        .into_iter()
        .filter_map(|(source, field)| Some((source?, field)))
}

/// A secret file: its `version_info` and its one resource (Envoy refuses any other count).
pub fn read_file(path: &Path) -> Result<(String, Any), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let response: DiscoveryResponse = proto::parse_document(&text)
        .and_then(|doc| proto::from_json(doc, false))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match <[Any; 1]>::try_from(response.resources) {
        Ok([resource]) => Ok((response.version_info, resource)),
        Err(resources) => Err(format!(
            "{}: holds {} resources; a secret file holds exactly one secret",
            path.display(),
            resources.len()
        )),
    }
}

/// Redacts what `/config_dump` must not show: the private key's bytes become `[redacted]`
/// (a file name stays), as Envoy does.
pub fn redacted(mut secret: Secret) -> Secret {
    if let Some(secret::Type::TlsCertificate(cert)) = &mut secret.r#type {
        if let Some(key) = &mut cert.private_key {
            key.specifier = match key.specifier.take() {
                Some(Specifier::InlineBytes(_)) => {
                    Some(Specifier::InlineBytes(REDACTED.as_bytes().to_vec()))
                }
                Some(Specifier::InlineString(_)) => Some(Specifier::InlineString(REDACTED.into())),
                other => other,
            };
        }
    }
    secret
}

const REDACTED: &str = "[redacted]";

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::TlsCertificate;

    fn tls_secret(name: &str, chain: Specifier, key: Specifier) -> Secret {
        Secret {
            name: name.into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(DataSource {
                    specifier: Some(chain),
                    ..Default::default()
                }),
                private_key: Some(DataSource {
                    specifier: Some(key),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    fn any(secret: &Secret) -> Any {
        Any {
            type_url: SECRET.into(),
            value: secret.encode_to_vec(),
        }
    }

    #[test]
    fn files_are_read_into_inline_bytes() {
        let dir = std::env::temp_dir().join(format!("sds-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chain = dir.join("chain.pem");
        std::fs::write(&chain, "CHAIN").unwrap();
        let mut secret = tls_secret(
            "s",
            Specifier::Filename(chain.display().to_string()),
            Specifier::InlineString("KEY".into()),
        );
        assert_eq!(files(&mut secret), vec![chain.clone()]);
        let resolved = resolve(&any(&secret), "s").unwrap();
        let Some(secret::Type::TlsCertificate(cert)) = resolved.r#type else {
            panic!("a tls_certificate")
        };
        assert_eq!(
            cert.certificate_chain.unwrap().specifier,
            Some(Specifier::InlineBytes(b"CHAIN".to_vec()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wrong_name_or_a_missing_file_is_rejected_with_its_path() {
        let secret = tls_secret(
            "other",
            Specifier::InlineString("C".into()),
            Specifier::InlineString("K".into()),
        );
        let errors = resolve(&any(&secret), "s").unwrap_err();
        assert_eq!(errors[0].path, "secrets[\"s\"]");
        let secret = tls_secret(
            "s",
            Specifier::Filename("/nonexistent/chain.pem".into()),
            Specifier::InlineString("K".into()),
        );
        let errors = resolve(&any(&secret), "s").unwrap_err();
        assert_eq!(
            errors[0].path,
            "secrets[\"s\"].tls_certificate.certificate_chain.filename"
        );
    }

    #[test]
    fn private_key_bytes_are_redacted_and_file_names_kept() {
        let inline = redacted(tls_secret(
            "s",
            Specifier::InlineString("C".into()),
            Specifier::InlineBytes(b"KEY".to_vec()),
        ));
        let json = proto::to_json(&inline);
        assert_eq!(
            json["tls_certificate"]["private_key"]["inline_bytes"],
            "W3JlZGFjdGVkXQ=="
        );
        assert_eq!(
            json["tls_certificate"]["certificate_chain"]["inline_string"],
            "C"
        );
        let file = redacted(tls_secret(
            "s",
            Specifier::InlineString("C".into()),
            Specifier::Filename("/k.pem".into()),
        ));
        assert_eq!(
            proto::to_json(&file)["tls_certificate"]["private_key"]["filename"],
            "/k.pem"
        );
    }
}
