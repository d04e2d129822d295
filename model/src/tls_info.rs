//! Domain model: what a TLS connection tells the layers above it — access logs
//! (`%DOWNSTREAM_TLS_VERSION%`, `%DOWNSTREAM_PEER_SUBJECT%`, …) and the connection manager's
//! `x-forwarded-client-cert` — in Envoy's (BoringSSL's) text forms. A connection's facts are
//! read once, when the config first needs them, and its peer certificate is parsed at most
//! once; a served certificate is parsed by the agent when it loads it.
use std::{
    cell::OnceCell,
    fmt::Write,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::{
    asn1_rs::{Any, Tag, ToDer},
    certificate::X509Certificate,
    prelude::FromDer,
    time::ASN1Time,
    x509::X509Name,
};

use super::tls::{negotiated, PeerNames};
use crate::stats::{CIPHERS, VERSIONS};

/// What logs and XFCC read of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// RFC 2253 text as BoringSSL prints it (`XN_FLAG_RFC2253`): last RDN first.
    pub subject: String,
    pub issuer: String,
    /// Lower-case hex without leading zero bytes (BoringSSL's `BN_bn2hex`).
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub sans: PeerNames,
    /// SHA-256 of the DER, lower-case hex.
    pub sha256: String,
}

impl CertificateInfo {
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut serial = String::new();
        let raw = cert.raw_serial();
        let significant = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
        hex(&raw[significant..], &mut serial);
        if serial.is_empty() {
            serial.push('0');
        }
        let mut sha256 = String::with_capacity(64);
        hex(&Sha256::digest(der), &mut sha256);
        let validity = cert.validity();
        Some(Self {
            subject: rfc2253(cert.subject()),
            issuer: rfc2253(cert.issuer()),
            serial,
            not_before: system_time(&validity.not_before),
            not_after: system_time(&validity.not_after),
            sans: PeerNames::of(&cert),
            sha256,
        })
    }
}

/// What a handshake negotiated, by Envoy's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// `TLSv1.2`, `TLSv1.3`.
    pub version: Option<&'static str>,
    /// The suite by BoringSSL's name (`TLS_AES_128_GCM_SHA256`, `ECDHE-RSA-AES128-GCM-SHA256`).
    pub cipher: Option<&'static str>,
}

impl Negotiated {
    pub fn of(conn: &rustls::CommonState) -> Self {
        let (version, cipher, _) = negotiated(conn);
        Self {
            version: version.map(|i| VERSIONS[i]),
            cipher: cipher.map(|i| CIPHERS[i]),
        }
    }
}

/// The first URI SAN of the peer's certificate and of the one this side presented, on a TLS
/// connection (Istio's principals: `spiffe://…`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UriSans {
    pub peer: Option<Box<str>>,
    pub local: Option<Box<str>>,
}

/// A downstream TLS connection as the config reads it, taken from the connection the first
/// time something needs it and kept for the connection's life.
#[derive(Debug)]
pub struct DownstreamTls {
    pub negotiated: Negotiated,
    /// The client's certificates as sent, leaf first; empty when it presented none.
    pub peer_chain: Vec<CertificateDer<'static>>,
    /// The certificate this side served.
    pub local: Option<Arc<CertificateInfo>>,
    peer: OnceCell<Option<CertificateInfo>>,
}

impl DownstreamTls {
    pub fn new(conn: &rustls::CommonState, local: Option<Arc<CertificateInfo>>) -> Self {
        Self {
            negotiated: Negotiated::of(conn),
            peer_chain: conn.peer_certificates().unwrap_or_default().to_vec(),
            local,
            peer: OnceCell::new(),
        }
    }

    /// The client's certificate, parsed on first use.
    pub fn peer(&self) -> Option<&CertificateInfo> {
        self.peer
            .get_or_init(|| CertificateInfo::parse(self.peer_chain.first()?))
            .as_ref()
    }

    /// The client's certificate (`whole_chain`: every certificate it sent) as PEM, URL-encoded
    /// as Envoy encodes it for XFCC: everything but letters, digits and `*-._` is `%XX`.
    pub fn peer_pem_url_encoded(&self, whole_chain: bool, out: &mut String) {
        use base64::{engine::general_purpose::STANDARD, Engine};
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        const ENCODED: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
            .remove(b'*')
            .remove(b'-')
            .remove(b'.')
            .remove(b'_');
        let count = if whole_chain {
            self.peer_chain.len()
        } else {
            1
        };
        for der in self.peer_chain.iter().take(count) {
            let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
            for (i, c) in STANDARD.encode(der).chars().enumerate() {
                if i > 0 && i % 64 == 0 {
                    pem.push('\n');
                }
                pem.push(c);
            }
            pem.push_str("\n-----END CERTIFICATE-----\n");
            out.extend(utf8_percent_encode(&pem, ENCODED));
        }
    }
}

fn hex(bytes: &[u8], out: &mut String) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn system_time(time: &ASN1Time) -> SystemTime {
    let secs = time.timestamp();
    match u64::try_from(secs) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

/// Attribute types by BoringSSL's short names (`OBJ_nid2sn`); others print as dotted OIDs.
const SHORT_NAMES: [(&str, &str); 24] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "title"),
    ("2.5.4.13", "description"),
    ("2.5.4.15", "businessCategory"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.41", "name"),
    ("2.5.4.42", "GN"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.3.6.1.4.1.311.60.2.1.3", "jurisdictionC"),
    ("1.3.6.1.4.1.311.60.2.1.2", "jurisdictionST"),
];

/// A name as BoringSSL's `X509_NAME_print_ex(XN_FLAG_RFC2253)` prints it: attributes last to
/// first, `,` between RDNs and `+` inside one, short names, RFC 2253 escapes, bytes above
/// 0x7f and control characters as `\XX`, values of unknown types (and of unknown attribute
/// types) as `#` and their DER in hex.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let attributes: Vec<(usize, _)> = name
        .iter()
        .enumerate()
        .flat_map(|(rdn, set)| set.iter().map(move |a| (rdn, a)))
        .collect();
    let mut out = String::new();
    let mut previous = None;
    for (rdn, attribute) in attributes.into_iter().rev() {
        if let Some(previous) = previous {
            out.push(if previous == rdn { '+' } else { ',' });
        }
        previous = Some(rdn);
        let oid = attribute.attr_type().to_id_string();
        let short = SHORT_NAMES.iter().find(|(o, _)| *o == oid);
        out.push_str(short.map_or(oid.as_str(), |(_, s)| s));
        out.push('=');
        match short.and_then(|_| text(attribute.attr_value())) {
            Some(text) => escape(&text, &mut out),
            None => {
                out.push('#');
                let der = attribute.attr_value().to_der_vec().unwrap_or_default();
                for b in der {
                    let _ = write!(out, "{b:02X}");
                }
            }
        }
    }
    out
}

/// An attribute value's characters, for the string types BoringSSL prints as text.
fn text(value: &Any<'_>) -> Option<String> {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String => Some(String::from_utf8_lossy(data).into_owned()),
        Tag::NumericString
        | Tag::PrintableString
        | Tag::T61String
        | Tag::Ia5String
        | Tag::VisibleString
        | Tag::UtcTime
        | Tag::GeneralizedTime => Some(data.iter().map(|b| char::from(*b)).collect()),
        Tag::BmpString => Some(
            char::decode_utf16(
                data.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]])),
            )
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        ),
        Tag::UniversalString => Some(
            data.chunks_exact(4)
                .map(|c| {
                    char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Appends `value`'s UTF-8 bytes with BoringSSL's RFC 2253 escapes.
fn escape(value: &str, out: &mut String) {
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let (first, last) = (i == 0, i + 1 == bytes.len());
        match b {
            0x80.. | ..0x20 | 0x7f => {
                let _ = write!(out, "\\{b:02X}");
            }
            b'\\' | b'"' | b',' | b'+' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' ' | b'#' if first => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' ' if last => out.push_str("\\ "),
            _ => out.push(char::from(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Self-signed by `openssl req -x509 -multivalue-rdn -set_serial 0x00ab0c -subj
    /// "/C=US/O=Acme, Inc./OU=edge+OU=mesh/CN=#rich <client> /emailAddress=x@y.z/street=Rue é"`
    /// with SANs DNS:rich.example.com, DNS:alt.example.com, URI:spiffe://td/ns/a/sa/rich,
    /// URI:spiffe://td/two, IP:10.0.0.1.
    const RICH: &str = "MIICpDCCAkmgAwIBAgIDAKsMMAoGCCqGSM49BAMCMH8xCzAJBgNVBAYTAlVTMRMw\
        EQYDVQQKDApBY21lLCBJbmMuMRowCwYDVQQLDARlZGdlMAsGA1UECwwEbWVzaDEY\
        MBYGA1UEAwwPI3JpY2ggPGNsaWVudD4gMRQwEgYJKoZIhvcNAQkBFgV4QHkuejEP\
        MA0GA1UECQwGUnVlIMOpMB4XDTI2MTIwNjIxMDY0N1oXDTM2MTIwMzIxMDY0N1ow\
        fzELMAkGA1UEBhMCVVMxEzARBgNVBAoMCkFjbWUsIEluYy4xGjALBgNVBAsMBGVk\
        Z2UwCwYDVQQLDARtZXNoMRgwFgYDVQQDDA8jcmljaCA8Y2xpZW50PiAxFDASBgkq\
        hkiG9w0BCQEWBXhAeS56MQ8wDQYDVQQJDAZSdWUgw6kwWTATBgcqhkjOPQIBBggq\
        hkjOPQMBBwNCAASOJLYsHt4yV8QDt7bkrjlr5Ol/if1gnBHjUFZROezffxDWJ4Ub\
        QbHon/afD78h4wQ/HyGqt76rWDcMltT16IHBo4GzMIGwMB0GA1UdDgQWBBQWrnLf\
        pfk7xOhU14anRdjdBnCWLzAfBgNVHSMEGDAWgBQWrnLfpfk7xOhU14anRdjdBnCW\
        LzAPBgNVHRMBAf8EBTADAQH/MF0GA1UdEQRWMFSCEHJpY2guZXhhbXBsZS5jb22C\
        D2FsdC5leGFtcGxlLmNvbYYYc3BpZmZlOi8vdGQvbnMvYS9zYS9yaWNohg9zcGlm\
        ZmU6Ly90ZC90d2+HBAoAAAEwCgYIKoZIzj0EAwIDSQAwRgIhAOlraSSEwi0dteKR\
        u0WGNfyBuLYXunQUgkjBJ3zZAB30AiEAwxnhytPpvpFzBMgXoK7Nrq15MF6CdC6y\
        pq6NkbLUnE0=";

    #[test]
    fn reads_a_certificate_as_boringssl_prints_it() {
        use base64::{engine::general_purpose::STANDARD, Engine};
        let der = STANDARD.decode(RICH).unwrap();
        let info = CertificateInfo::parse(&der).unwrap();
        // `openssl x509 -nameopt RFC2253` prints the same (the flags BoringSSL uses).
        let name = "street=Rue \\C3\\A9,emailAddress=x@y.z,CN=\\#rich \\<client\\>\\ ,\
                    OU=mesh+OU=edge,O=Acme\\, Inc.,C=US";
        assert_eq!(info.subject, name);
        assert_eq!(info.issuer, name);
        assert_eq!(info.serial, "ab0c");
        assert_eq!(
            info.sha256,
            "f756db3b30879fced2fd097f275e31e4b94ef55977f8bc1f493375ae39830360"
        );
        assert_eq!(info.sans.dns, ["rich.example.com", "alt.example.com"]);
        assert_eq!(
            info.sans.uri,
            ["spiffe://td/ns/a/sa/rich", "spiffe://td/two"]
        );
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(info.not_before), 1_796_591_207); // 2026-12-06T21:06:47Z
        assert_eq!(secs(info.not_after), 2_111_951_207); // 2036-12-03T21:06:47Z
    }

    #[test]
    fn escapes_as_boringssl() {
        let mut out = String::new();
        escape("#a, b+c\"d\\e<f>g;h ", &mut out);
        assert_eq!(out, "\\#a\\, b\\+c\\\"d\\\\e\\<f\\>g\\;h\\ ");
        out.clear();
        escape("é\tx", &mut out);
        assert_eq!(out, "\\C3\\A9\\09x");
    }

    #[test]
    fn hex_keeps_zeros_inside_bytes() {
        let mut out = String::new();
        hex(&[0x0a, 0x00, 0xff], &mut out);
        assert_eq!(out, "0a00ff");
    }
}
