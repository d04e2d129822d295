//! HTTP filters: Istio ≤ 1.9's `istio_authn` (`authn.v2alpha1`) — authenticates the peer by
//! its certificate's first URI SAN (`spiffe://` stripped), method by method, as istio-proxy
//! did: `STRICT` needs a certificate, `PERMISSIVE` takes one when there is one, and a
//! certificate's trust domain must be this proxy's (or an allowed one). A request no method
//! authenticates gets `401 Peer authentication failed.` unless the peer is optional. The
//! outcome is written as `istio_authn` dynamic metadata (`source.principal`, `source.user`,
//! `request.auth.principal`) for RBAC's `metadata` principals.
use model::{
    filters::{AuthnPolicy, PeerMethod, TrustDomains},
    tls_info::CertificateInfo,
};

use crate::stream::{FilterResult, LocalReply, StreamContext};

/// The dynamic metadata namespace Istio's filter writes.
pub const METADATA_NAMESPACE: &str = "istio_authn";

const SPIFFE: &str = "spiffe://";

pub(super) fn on_request(policy: &AuthnPolicy, cx: &StreamContext<'_>) -> FilterResult {
    let tls = cx.downstream.tls;
    let peer_cert = tls.and_then(|t| t.peer());
    let local_cert = tls.and_then(|t| t.local.as_deref());
    let authenticated = match policy.peers.is_empty() {
        true => Some(None),
        false => policy
            .peers
            .iter()
            .find_map(|method| authenticate(*method, peer_cert, local_cert, &policy.trust_domains)),
    };
    let peer = match authenticated {
        Some(peer) => peer,
        None if policy.peer_is_optional => None,
        None => return FilterResult::Respond(LocalReply::new(401, "Peer authentication failed.")),
    };
    if let Some(peer) = peer {
        let mut metadata = cx.notes.metadata_mut();
        if policy.principal_is_peer {
            metadata.set(METADATA_NAMESPACE, "request.auth.principal", peer.into());
        }
        metadata.set(METADATA_NAMESPACE, "source.user", peer.into());
        metadata.set(METADATA_NAMESPACE, "source.principal", peer.into());
    }
    FilterResult::Continue
}

/// One method's outcome: `None` when it fails, else the peer it names (if any).
fn authenticate<'c>(
    method: PeerMethod,
    peer: Option<&'c CertificateInfo>,
    local: Option<&CertificateInfo>,
    trust_domains: &TrustDomains,
) -> Option<Option<&'c str>> {
    let user = peer.and_then(principal);
    match (method, user) {
        (PeerMethod::Unnamed, _) => Some(None),
        (PeerMethod::MtlsStrict, None) => None,
        (PeerMethod::MtlsPermissive, None) => Some(None),
        (_, Some(user)) => trusted(peer, local, trust_domains).then_some(Some(user)),
    }
}

/// The peer's identity: its certificate's first URI SAN, `spiffe://` stripped.
fn principal(cert: &CertificateInfo) -> Option<&str> {
    let san = cert.sans.uri.first()?;
    Some(san.strip_prefix(SPIFFE).unwrap_or(san))
}

/// Whether the peer certificate's trust domain is one `trust_domains` allows.
fn trusted(
    peer: Option<&CertificateInfo>,
    local: Option<&CertificateInfo>,
    trust_domains: &TrustDomains,
) -> bool {
    let peer_domain = peer.and_then(trust_domain);
    match trust_domains {
        TrustDomains::Any => true,
        TrustDomains::Local => peer_domain.is_some() && peer_domain == local.and_then(trust_domain),
        TrustDomains::OneOf(allowed) => peer_domain.is_some_and(|d| allowed.iter().any(|a| a == d)),
    }
}

/// `<trust domain>` of the first URI SAN when it is `spiffe://<trust domain>/...`.
fn trust_domain(cert: &CertificateInfo) -> Option<&str> {
    let id = cert.sans.uri.first()?.strip_prefix(SPIFFE)?;
    let domain = id.split('/').next()?;
    (!domain.is_empty()).then_some(domain)
}

#[cfg(test)]
mod tests {
    use model::tls::PeerNames;

    use super::*;

    fn cert(uri: &str) -> CertificateInfo {
        CertificateInfo {
            subject: String::new(),
            issuer: String::new(),
            serial: "1".into(),
            not_before: std::time::SystemTime::UNIX_EPOCH,
            not_after: std::time::SystemTime::UNIX_EPOCH,
            sans: PeerNames {
                uri: vec![uri.to_string()],
                ..PeerNames::default()
            },
            sha256: String::new(),
        }
    }

    #[test]
    fn methods_name_the_peer_by_its_spiffe_id() {
        let peer = cert("spiffe://cluster.local/ns/a/sa/b");
        let local = cert("spiffe://cluster.local/ns/x/sa/y");
        let local_only = TrustDomains::Local;
        let run = |m, p| authenticate(m, p, Some(&local), &local_only);
        assert_eq!(
            run(PeerMethod::MtlsStrict, Some(&peer)),
            Some(Some("cluster.local/ns/a/sa/b"))
        );
        assert_eq!(
            run(PeerMethod::MtlsPermissive, Some(&peer)),
            Some(Some("cluster.local/ns/a/sa/b"))
        );
        assert_eq!(run(PeerMethod::MtlsStrict, None), None);
        assert_eq!(run(PeerMethod::MtlsPermissive, None), Some(None));
        assert_eq!(run(PeerMethod::Unnamed, Some(&peer)), Some(None));
    }

    #[test]
    fn trust_domains_must_match_unless_skipped_or_allowed() {
        let foreign = cert("spiffe://other.domain/ns/a/sa/b");
        let local = cert("spiffe://cluster.local/ns/x/sa/y");
        let run = |domains: &TrustDomains| {
            authenticate(
                PeerMethod::MtlsPermissive,
                Some(&foreign),
                Some(&local),
                domains,
            )
        };
        assert_eq!(run(&TrustDomains::Local), None);
        assert_eq!(
            run(&TrustDomains::Any),
            Some(Some("other.domain/ns/a/sa/b"))
        );
        let allowed = TrustDomains::OneOf(vec!["other.domain".into()]);
        assert_eq!(run(&allowed), Some(Some("other.domain/ns/a/sa/b")));
        let elsewhere = TrustDomains::OneOf(vec!["cluster.local".into()]);
        assert_eq!(run(&elsewhere), None);
        // A certificate that is not SPIFFE has no trust domain to compare.
        let plain = cert("https://example.com/x");
        let r = authenticate(
            PeerMethod::MtlsStrict,
            Some(&plain),
            Some(&local),
            &TrustDomains::Local,
        );
        assert_eq!(r, None);
        let r = authenticate(
            PeerMethod::MtlsStrict,
            Some(&plain),
            Some(&local),
            &TrustDomains::Any,
        );
        assert_eq!(r, Some(Some("https://example.com/x")));
    }
}
