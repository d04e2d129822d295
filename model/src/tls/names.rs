//! Domain model: rustls' cipher suites and key-exchange groups by Envoy's (BoringSSL's) names,
//! for `tls_params` and the `ssl.ciphers.*` / `ssl.curves.*` stats.

use crate::stats::{CIPHERS, CURVES, VERSIONS};

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
    use crate::stats::{CIPHERS, CURVES};

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
