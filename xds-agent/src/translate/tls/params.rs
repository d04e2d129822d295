//! Translator: `tls_params` — the crypto provider with the TLS 1.2 suites and curves named
//! by Envoy's names, and the protocol versions allowed.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    tls_parameters::TlsProtocol, TlsParameters,
};
use rustls::{
    crypto::{aws_lc_rs, CryptoProvider},
    version::{TLS12, TLS13},
    SupportedProtocolVersion,
};

use super::At;
use model::tls::{CIPHER_NAMES, GROUP_NAMES};

/// BoringSSL's names of the TLS 1.2 suites with RSA key transport (no forward secrecy), which
/// rustls does not implement. Istio lists two of them after its ECDHE suites: a list that
/// still names a suite rustls has leaves these out (with a warning) instead of failing.
const RSA_KEY_TRANSPORT: &[&str] = &[
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "AES128-SHA256",
    "AES256-SHA256",
    "DES-CBC3-SHA",
];

/// The crypto provider with `tls_params`' cipher suites and curves (rustls' defaults where
/// unset, which cover Envoy's defaults).
pub(super) fn provider(
    params: Option<&TlsParameters>,
    path: &str,
    at: &mut At,
) -> Option<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    let Some(params) = params else {
        return Some(provider);
    };
    let path = format!("{path}.tls_params");
    if !params.cipher_suites.is_empty() {
        let mut wanted = Vec::new();
        let mut left_out = Vec::new();
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
                    None if RSA_KEY_TRANSPORT.contains(&name) => left_out.push(name),
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
        if !left_out.is_empty() {
            if wanted.is_empty() {
                at.fail::<()>(
                    format!("{path}.cipher_suites"),
                    format!(
                        "{} use RSA key transport, which rustls does not offer, and no other \
                         TLS 1.2 suite is listed",
                        left_out.join(", ")
                    ),
                );
            } else {
                tracing::warn!(
                    at = %path,
                    "cipher suites {} (RSA key transport) are not offered: rustls lacks them",
                    left_out.join(", ")
                );
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
pub(super) fn versions(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn suites(names: &[&str]) -> (Option<CryptoProvider>, Vec<String>) {
        let params = TlsParameters {
            cipher_suites: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        };
        let mut errors = Vec::new();
        let provider = {
            let mut at = At::new("t", &mut errors);
            provider(Some(&params), "c", &mut at)
        };
        (provider, errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn rsa_key_transport_suites_are_left_out_when_others_remain() {
        // Istio's inbound list.
        let (provider, errors) = suites(&[
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "AES256-GCM-SHA384",
            "AES128-GCM-SHA256",
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let tls12 = provider
            .unwrap()
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &TLS12)
            .count();
        assert_eq!(tls12, 2);
        let (_, errors) = suites(&["AES128-GCM-SHA256"]);
        assert!(errors[0].contains("no other TLS 1.2 suite"), "{errors:?}");
        let (_, errors) = suites(&["ECDHE-FOO-SHA", "ECDHE-RSA-AES128-GCM-SHA256"]);
        assert!(errors[0].contains("not offered by rustls"), "{errors:?}");
    }
}
