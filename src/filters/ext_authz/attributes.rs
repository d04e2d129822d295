//! External authorization: the connection's part of a check's `AttributeContext`, as Envoy
//! fills it for both filters — the source (the downstream peer) and destination (this side)
//! with their addresses and principals (a certificate's first URI SAN, else its subject), the
//! peer's certificate when asked for, and the TLS session's SNI.
use std::net::SocketAddr;

use envoy_types::pb::envoy::{
    config::core::v3::{address, socket_address::PortSpecifier, Address, SocketAddress},
    service::auth::v3::{
        attribute_context::{Peer, TlsSession},
        AttributeContext,
    },
};
use model::{
    tls::PeerNames,
    tls_info::{CertificateInfo, DownstreamTls},
};

/// What a check reads of its downstream connection.
pub struct Connection<'a> {
    pub remote: SocketAddr,
    /// The original destination when one was restored, else the socket's local address.
    pub local: SocketAddr,
    /// The SNI; empty without one.
    pub server_name: &'a str,
    pub tls: Option<&'a DownstreamTls>,
}

/// What a filter's config asks to include.
#[derive(Clone, Copy)]
pub struct Include {
    pub peer_certificate: bool,
    pub tls_session: bool,
}

/// The attributes every check carries: source, destination, an empty `metadata_context`
/// (Envoy sends one), and the TLS session when asked for on a TLS connection.
pub fn connection_attributes(connection: &Connection<'_>, include: Include) -> AttributeContext {
    let tls = connection.tls;
    let mut source = peer(connection.remote, tls.and_then(DownstreamTls::peer));
    if let (true, Some(tls)) = (include.peer_certificate, tls) {
        tls.peer_pem_url_encoded(false, &mut source.certificate);
    }
    let local = tls.and_then(|t| t.local.as_deref());
    AttributeContext {
        source: Some(source),
        destination: Some(peer(connection.local, local)),
        metadata_context: Some(Default::default()),
        tls_session: tls.filter(|_| include.tls_session).map(|_| TlsSession {
            sni: connection.server_name.to_string(),
        }),
        ..Default::default()
    }
}

/// A peer: its address and, on TLS, its certificate's identity.
fn peer(address: SocketAddr, certificate: Option<&CertificateInfo>) -> Peer {
    Peer {
        address: Some(socket_address(address)),
        principal: certificate.map(principal).unwrap_or_default(),
        ..Default::default()
    }
}

/// A certificate's principal as Envoy takes it: its first URI SAN, else its subject.
fn principal(certificate: &CertificateInfo) -> String {
    let PeerNames { uri, .. } = &certificate.sans;
    uri.first()
        .cloned()
        .unwrap_or_else(|| certificate.subject.clone())
}

/// `address` as an Envoy `Address`.
pub fn socket_address(address: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(address.port()))),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_connections_carry_addresses_only() {
        let connection = Connection {
            remote: "10.0.0.1:4000".parse().unwrap(),
            local: "[::1]:80".parse().unwrap(),
            server_name: "",
            tls: None,
        };
        let include = Include {
            peer_certificate: true,
            tls_session: true,
        };
        let attributes = connection_attributes(&connection, include);
        let source = attributes.source.unwrap();
        assert!(source.principal.is_empty() && source.certificate.is_empty());
        let Some(address::Address::SocketAddress(a)) = source.address.unwrap().address else {
            panic!()
        };
        assert_eq!(a.address, "10.0.0.1");
        assert_eq!(a.port_specifier, Some(PortSpecifier::PortValue(4000)));
        let Some(address::Address::SocketAddress(d)) =
            attributes.destination.unwrap().address.unwrap().address
        else {
            panic!()
        };
        assert_eq!(d.address, "::1");
        assert!(attributes.tls_session.is_none() && attributes.metadata_context.is_some());
    }
}
