//! HTTP connection manager: the headers Envoy sets on every request it forwards —
//! `x-forwarded-for` (`use_remote_address`, `skip_xff_append`), `x-forwarded-proto`,
//! `x-envoy-external-address`, `x-request-id` (`generate_request_id`,
//! `preserve_external_request_id`), `x-forwarded-client-cert` (`forward_client_cert_details`)
//! — and the cleaning of `x-envoy-*` headers from the edge.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use model::{
    http::{ForwardClientCert, HttpConnectionManager},
    route::RouteConfig,
    tls_info::DownstreamTls,
};

use crate::{
    rt::host,
    stream::headers::{Headers, RequestHead},
};

const XFCC: &str = "x-forwarded-client-cert";

/// Whether a request from `remote` is an edge request from outside. Only with
/// `use_remote_address`; and as Envoy without an `internal_address_config`, no peer address
/// counts as internal (not even loopback).
pub fn is_external(hcm: &HttpConnectionManager, _remote: SocketAddr) -> bool {
    hcm.use_remote_address
}

/// Sets the forwarding headers on a request from `remote` that came over `scheme` (`http`,
/// or `https` on a TLS connection).
pub fn prepare(
    hcm: &HttpConnectionManager,
    table: &RouteConfig,
    head: &mut RequestHead,
    remote: SocketAddr,
    scheme: &'static str,
) {
    let headers = &mut head.headers;
    let external = is_external(hcm, remote);
    if external {
        // Envoy's own control headers are not for outside clients to set.
        headers.retain(|h| !h.name.starts_with(b"x-envoy-"));
    }
    // No request is internal without an `internal_address_config` (not supported), so the
    // route table's `internal_only_headers` never pass, as in Envoy 1.40.
    for name in &table.internal_only_headers {
        headers.remove(name);
    }
    if hcm.use_remote_address {
        if !hcm.skip_xff_append {
            // A peer at exactly 127.0.0.1 or ::1 is this host: Envoy records the host's own
            // address instead (other 127/8 addresses are taken as they are, as Envoy does).
            let ip = match remote.ip() {
                ip if ip == Ipv4Addr::LOCALHOST || ip == Ipv6Addr::LOCALHOST => {
                    host::local_address().unwrap_or(ip)
                }
                ip => ip,
            }
            .to_string();
            match headers.get("x-forwarded-for") {
                Some(existing) => {
                    let mut joined = Vec::with_capacity(existing.len() + 1 + ip.len());
                    joined.extend_from_slice(existing);
                    joined.push(b',');
                    joined.extend_from_slice(ip.as_bytes());
                    headers.set("x-forwarded-for", joined);
                }
                None => headers.append("x-forwarded-for", ip),
            }
        }
        // At the edge the scheme is what this connection used.
        headers.set("x-forwarded-proto", Bytes::from_static(scheme.as_bytes()));
        if external {
            let client = trusted_client(headers.get("x-forwarded-for"), hcm.xff_num_trusted_hops);
            headers.set(
                "x-envoy-external-address",
                client.unwrap_or_else(|| remote.ip().to_string()),
            );
        }
    } else if !headers.contains("x-forwarded-proto") {
        headers.append("x-forwarded-proto", Bytes::from_static(scheme.as_bytes()));
    }
    if hcm.generate_request_id {
        let keep =
            headers.contains("x-request-id") && (!external || hcm.preserve_external_request_id);
        if !keep {
            headers.set("x-request-id", uuid_v4());
        }
    }
}

/// `x-forwarded-client-cert` by `forward_client_cert_details`, on a connection whose client
/// presented a certificate (`presented`) or not; `element` is this connection's own entry.
pub fn client_cert(
    hcm: &HttpConnectionManager,
    headers: &mut Headers,
    presented: bool,
    element: impl FnOnce() -> Bytes,
) {
    match hcm.forward_client_cert {
        ForwardClientCert::AlwaysForwardOnly => {}
        ForwardClientCert::Sanitize => {
            headers.remove(XFCC);
        }
        _ if !presented => {
            headers.remove(XFCC);
        }
        ForwardClientCert::ForwardOnly => {}
        ForwardClientCert::SanitizeSet => headers.set(XFCC, element()),
        ForwardClientCert::AppendForward => {
            // Repeated headers count as one joined with `,` (Envoy's codec joins them).
            let mut joined = Vec::new();
            let values = headers.iter().filter(|h| h.name == XFCC).map(|h| &h.value);
            for value in values.chain([&element()]) {
                if !joined.is_empty() {
                    joined.push(b',');
                }
                joined.extend_from_slice(value);
            }
            headers.set(XFCC, joined);
        }
    }
}

/// This proxy's XFCC element for a connection, in Envoy's order and quoting: `By=` for each
/// URI SAN of the served certificate, `Hash=`, then what `set_current_client_cert_details`
/// asks for — `Cert="…"`, `Chain="…"`, `Subject="…"`, `URI=` (each, or one empty), `DNS=`
/// (each) — joined with `;`.
pub fn client_cert_element(hcm: &HttpConnectionManager, tls: &DownstreamTls) -> Bytes {
    let details = hcm.client_cert_details;
    let peer = tls.peer();
    let mut items = Vec::new();
    if let Some(local) = &tls.local {
        items.extend(local.sans.uri.iter().map(|uri| format!("By={uri}")));
    }
    if let Some(peer) = peer {
        items.push(format!("Hash={}", peer.sha256));
    }
    for (wanted, key, whole_chain) in [
        (details.cert, "Cert", false),
        (details.chain, "Chain", true),
    ] {
        let mut pem = String::new();
        if wanted {
            tls.peer_pem_url_encoded(whole_chain, &mut pem);
        }
        if !pem.is_empty() {
            items.push(format!("{key}=\"{pem}\""));
        }
    }
    if details.subject {
        items.push(format!("Subject=\"{}\"", peer.map_or("", |p| &p.subject)));
    }
    if details.uri {
        match peer.map(|p| &p.sans.uri[..]).unwrap_or_default() {
            [] => items.push("URI=".to_string()),
            uris => items.extend(uris.iter().map(|uri| format!("URI={uri}"))),
        }
    }
    if details.dns {
        let dns = peer.map(|p| &p.sans.dns[..]).unwrap_or_default();
        items.extend(dns.iter().map(|name| format!("DNS={name}")));
    }
    Bytes::from(items.join(";"))
}

/// The client address `xff_num_trusted_hops` points at: with `n` trusted proxies in front,
/// the `n`th `x-forwarded-for` entry from the right (the last one itself when `n` is 0 is the
/// peer, which the caller knows). `None` when the header is shorter than that.
fn trusted_client(xff: Option<&Bytes>, hops: u32) -> Option<String> {
    if hops == 0 {
        return None;
    }
    let xff = std::str::from_utf8(xff?).ok()?;
    let entries: Vec<&str> = xff.split(',').map(str::trim).collect();
    let index = entries.len().checked_sub(1 + hops as usize)?;
    Some(entries[index].to_string())
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
    fn trusted_hops_pick_the_client_from_the_right() {
        let xff = Bytes::from_static(b"1.1.1.1, 2.2.2.2,3.3.3.3");
        assert_eq!(trusted_client(Some(&xff), 0), None);
        assert_eq!(trusted_client(Some(&xff), 1).as_deref(), Some("2.2.2.2"));
        assert_eq!(trusted_client(Some(&xff), 2).as_deref(), Some("1.1.1.1"));
        assert_eq!(trusted_client(Some(&xff), 3), None);
    }

    #[test]
    fn uuids_have_version_and_variant() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(id[14], b'4');
        assert!(matches!(id[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(id, uuid_v4());
    }
}
