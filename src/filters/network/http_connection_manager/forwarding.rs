//! HTTP connection manager: the headers Envoy sets on every request it forwards —
//! `x-forwarded-for` (`use_remote_address`, `skip_xff_append`), `x-forwarded-proto`,
//! `x-request-id` (`generate_request_id`, `preserve_external_request_id`).
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use xds_agent::model::http::HttpConnectionManager;

use crate::stream::headers::RequestHead;

/// Whether an address is internal by Envoy's default rule (RFC 1918, loopback, RFC 4193).
fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Whether a request from `remote` counts as external (only at the edge: with
/// `use_remote_address`, a non-internal peer).
pub fn is_external(hcm: &HttpConnectionManager, remote: SocketAddr) -> bool {
    hcm.use_remote_address && !internal(remote.ip())
}

/// Sets the forwarding headers on a request from `remote`.
pub fn prepare(hcm: &HttpConnectionManager, head: &mut RequestHead, remote: SocketAddr) {
    let headers = &mut head.headers;
    let external = is_external(hcm, remote);
    if hcm.use_remote_address {
        if !hcm.skip_xff_append {
            let ip = remote.ip().to_string();
            match headers.get("x-forwarded-for") {
                Some(existing) => {
                    let mut joined = Vec::with_capacity(existing.len() + 2 + ip.len());
                    joined.extend_from_slice(existing);
                    joined.extend_from_slice(b",");
                    joined.extend_from_slice(ip.as_bytes());
                    headers.set("x-forwarded-for", joined);
                }
                None => headers.append("x-forwarded-for", ip),
            }
        }
        // At the edge the scheme is what this connection used.
        headers.set("x-forwarded-proto", Bytes::from_static(b"http"));
    } else if !headers.contains("x-forwarded-proto") {
        headers.append("x-forwarded-proto", Bytes::from_static(b"http"));
    }
    if hcm.generate_request_id {
        let keep =
            headers.contains("x-request-id") && (!external || hcm.preserve_external_request_id);
        if !keep {
            headers.set("x-request-id", uuid_v4());
        }
    }
}

/// A random (version 4) UUID in its text form.
pub fn uuid_v4() -> Bytes {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 0xf) as usize]);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_version_and_variant() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(id[14], b'4');
        assert!(matches!(id[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(id, uuid_v4());
    }

    #[test]
    fn internal_addresses() {
        assert!(internal("10.1.2.3".parse().unwrap()));
        assert!(internal("127.0.0.1".parse().unwrap()));
        assert!(internal("fd00::1".parse().unwrap()));
        assert!(!internal("8.8.8.8".parse().unwrap()));
    }
}
