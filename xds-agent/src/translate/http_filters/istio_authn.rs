//! Translator: Istio ≤ 1.9's `istio_authn` HTTP filter (`authn.v2alpha1.FilterConfig`) — the
//! v1alpha1 authentication policy's peer methods (mTLS modes), whether the peer is optional,
//! the principal binding and the trust domains a peer may come from. JWT methods (peer or
//! origin) are refused by the surface: they read the payloads of Envoy's `jwt_authn` filter,
//! which shardproxy does not have.
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;

use super::common::Site;
use crate::translate::{TranslateContext, TranslateError};
use model::filters::{AuthnPolicy, HttpFilterKind, PeerMethod, TrustDomains};
use proto::istio::{
    authentication::{mutual_tls::Mode, peer_authentication_method::Params, PrincipalBinding},
    http_authn::FilterConfig,
};

pub(super) fn filter(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let config: FilterConfig = super::decode(any, site, errors)?;
    let policy = config.policy.unwrap_or_default();
    let peers = policy
        .peers
        .iter()
        .map(|method| match &method.params {
            Some(Params::Mtls(mtls)) if mtls.allow_tls => PeerMethod::MtlsPermissive,
            Some(Params::Mtls(mtls)) => match Mode::try_from(mtls.mode) {
                Ok(Mode::Permissive) => PeerMethod::MtlsPermissive,
                // An unknown mode is STRICT's: the safe side.
                _ => PeerMethod::MtlsStrict,
            },
            // JWT methods are refused by the surface.
            Some(Params::Jwt(_)) | None => PeerMethod::Unnamed,
        })
        .collect();
    let trust_domains = match (
        config.allowed_trust_domains.is_empty(),
        config.skip_validate_trust_domain,
    ) {
        (false, _) => TrustDomains::OneOf(config.allowed_trust_domains),
        (true, true) => TrustDomains::Any,
        (true, false) => TrustDomains::Local,
    };
    let principal_is_peer = policy.principal_binding == PrincipalBinding::UsePeer as i32;
    Some(HttpFilterKind::IstioAuthnPolicy(Arc::new(AuthnPolicy {
        peers,
        peer_is_optional: policy.peer_is_optional,
        principal_is_peer,
        trust_domains,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{filter_errors, one_filter};
    use super::*;

    fn policy(yaml: &str) -> Arc<AuthnPolicy> {
        let filter = one_filter(&format!(
            "name: istio_authn\ntyped_config:\n  '@type': type.googleapis.com/{}\n{yaml}",
            crate::names::ISTIO_AUTHN_POLICY
        ));
        match filter.kind {
            HttpFilterKind::IstioAuthnPolicy(policy) => policy,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn istio_1_9_policies_translate() {
        // As istiod 1.9 renders a PERMISSIVE PeerAuthentication.
        let p = policy(
            "  policy: {peers: [{mtls: {mode: PERMISSIVE}}]}\n  skip_validate_trust_domain: true",
        );
        assert_eq!(p.peers, vec![PeerMethod::MtlsPermissive]);
        assert!(!p.peer_is_optional && p.principal_is_peer);
        assert_eq!(p.trust_domains, TrustDomains::Any);
        let p = policy(
            "  policy: {peers: [{mtls: {}}, {mtls: {allowTls: true}}], peerIsOptional: true, \
             principalBinding: USE_ORIGIN, targets: [{name: productpage}]}\n  \
             allowed_trust_domains: [a.local]",
        );
        assert_eq!(
            p.peers,
            vec![PeerMethod::MtlsStrict, PeerMethod::MtlsPermissive]
        );
        assert!(p.peer_is_optional && !p.principal_is_peer);
        assert_eq!(p.trust_domains, TrustDomains::OneOf(vec!["a.local".into()]));
        assert_eq!(policy("  policy: {}").trust_domains, TrustDomains::Local);
    }

    #[test]
    fn jwt_methods_are_refused() {
        for body in [
            "  policy: {origins: [{jwt: {issuer: x}}]}",
            "  policy: {peers: [{jwt: {issuer: x}}]}",
        ] {
            let errors = filter_errors(&format!(
                "name: istio_authn\ntyped_config:\n  '@type': type.googleapis.com/{}\n{body}",
                crate::names::ISTIO_AUTHN_POLICY
            ));
            let text = format!("{errors:?}");
            assert!(text.contains("jwt") || text.contains("origins"), "{text}");
        }
    }
}
