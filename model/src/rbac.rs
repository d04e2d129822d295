//! Domain model: role-based access control (`config.rbac.v3.RBAC`) as the HTTP and network
//! `rbac` filters run it — policies compiled into permission and principal trees, and the
//! engine that judges a connection or a request with Envoy's rules: a policy matches when one
//! of its permissions and one of its principals match; policies are tried in name order and
//! the first match is the one reported.
use std::{net::SocketAddr, sync::Arc};

use crate::{
    filter_chain_match::Cidr,
    filter_stats::{RbacShadowStats, RbacStats},
    matchers::{HeaderMatcher, StringMatcher},
    metadata::{DynamicMetadata, MetadataMatcher},
    route::RouteRequest,
    stats::inc,
    tls_info::CertificateInfo,
};

/// What a set of rules does with a request its policies match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Allowed only when a policy matches.
    Allow,
    /// Denied when a policy matches.
    Deny,
    /// Always allowed (Envoy marks matches for access logs in dynamic metadata, which is not
    /// kept here).
    Log,
}

/// One set of rules (`rules` or `shadow_rules`).
#[derive(Debug)]
pub struct Rules {
    pub action: Action,
    /// Sorted by name.
    pub policies: Vec<Policy>,
}

#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub permissions: Vec<Permission>,
    pub principals: Vec<Principal>,
}

/// What a request or connection does (`config.rbac.v3.Permission`).
#[derive(Debug)]
pub enum Permission {
    Any,
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
    Header(HeaderMatcher),
    /// The path without query and fragment.
    UrlPath(StringMatcher),
    /// The connection's local address (its original destination when one was restored).
    DestinationIp(Cidr),
    /// A value above 65535 never matches.
    DestinationPort(u32),
    /// `start..end`.
    DestinationPortRange {
        start: u32,
        end: u32,
    },
    RequestedServerName(StringMatcher),
    /// The stream's dynamic metadata (a connection has none).
    Metadata(MetadataMatcher),
}

/// Who sends it (`config.rbac.v3.Principal`).
#[derive(Debug)]
pub enum Principal {
    Any,
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
    /// A TLS connection; with a name, one of the peer certificate's URI SANs, else one of its
    /// DNS SANs, else its subject matches (a peer without a certificate has the empty
    /// subject).
    Authenticated(Option<StringMatcher>),
    /// The downstream peer's address. `source_ip`, `direct_remote_ip` and `remote_ip` all read
    /// it: neither PROXY protocol nor `x-forwarded-for` changes a connection's remote address
    /// here (as in access logs).
    RemoteIp(Cidr),
    Header(HeaderMatcher),
    UrlPath(StringMatcher),
    /// A connection filter state value (`io.istio.peer_principal`, ...) as a string.
    FilterState {
        key: String,
        value: StringMatcher,
    },
    /// As [`Permission::Metadata`].
    Metadata(MetadataMatcher),
}

/// What the rules read of a connection (and of its request, for the HTTP filter).
pub trait Subject {
    fn remote(&self) -> SocketAddr;
    fn local(&self) -> SocketAddr;
    /// The SNI; empty without one.
    fn requested_server_name(&self) -> &str;
    /// `None` on a plaintext connection; `Some(None)` on TLS without a peer certificate.
    fn peer_certificate(&self) -> Option<Option<&CertificateInfo>>;
    fn filter_state(&self, key: &str) -> Option<&str>;
    /// What filters before this one wrote on the stream (empty for a connection).
    fn dynamic_metadata(&self) -> &DynamicMetadata;
    /// The request (HTTP filter); `None` for a connection, on which header matchers see no
    /// headers and path matchers never match.
    fn request(&self) -> Option<&dyn RouteRequest>;
}

impl Rules {
    /// Whether `subject` is allowed, and the first policy (by name) that matched it.
    pub fn judge(&self, subject: &impl Subject) -> (bool, Option<&str>) {
        let matched = self
            .policies
            .iter()
            .find(|p| p.matches(subject))
            .map(|p| p.name.as_str());
        let allowed = match self.action {
            Action::Allow => matched.is_some(),
            Action::Deny => matched.is_none(),
            Action::Log => true,
        };
        (allowed, matched)
    }
}

impl Policy {
    fn matches(&self, subject: &impl Subject) -> bool {
        self.permissions.iter().any(|p| p.matches(subject))
            && self.principals.iter().any(|p| p.matches(subject))
    }
}

impl Permission {
    pub fn matches(&self, s: &impl Subject) -> bool {
        match self {
            Self::Any => true,
            Self::And(all) => all.iter().all(|p| p.matches(s)),
            Self::Or(any) => any.iter().any(|p| p.matches(s)),
            Self::Not(p) => !p.matches(s),
            Self::Header(h) => header(h, s),
            Self::UrlPath(m) => url_path(m, s),
            Self::DestinationIp(cidr) => cidr.contains(s.local().ip()),
            Self::DestinationPort(port) => u32::from(s.local().port()) == *port,
            Self::DestinationPortRange { start, end } => {
                (*start..*end).contains(&u32::from(s.local().port()))
            }
            Self::RequestedServerName(m) => m.matches(s.requested_server_name().as_bytes()),
            Self::Metadata(m) => m.matches(s.dynamic_metadata()),
        }
    }
}

impl Principal {
    pub fn matches(&self, s: &impl Subject) -> bool {
        match self {
            Self::Any => true,
            Self::And(all) => all.iter().all(|p| p.matches(s)),
            Self::Or(any) => any.iter().any(|p| p.matches(s)),
            Self::Not(p) => !p.matches(s),
            Self::Authenticated(name) => authenticated(name.as_ref(), s),
            Self::RemoteIp(cidr) => cidr.contains(s.remote().ip()),
            Self::Header(h) => header(h, s),
            Self::UrlPath(m) => url_path(m, s),
            Self::FilterState { key, value } => s
                .filter_state(key)
                .is_some_and(|v| value.matches(v.as_bytes())),
            Self::Metadata(m) => m.matches(s.dynamic_metadata()),
        }
    }
}

fn header(matcher: &HeaderMatcher, s: &impl Subject) -> bool {
    match s.request() {
        Some(request) => matcher.matches(request),
        None => matcher.matches_value(None),
    }
}

fn url_path(matcher: &StringMatcher, s: &impl Subject) -> bool {
    s.request().is_some_and(|r| {
        let path = r.path();
        let end = path
            .iter()
            .position(|b| matches!(b, b'?' | b'#'))
            .unwrap_or(path.len());
        matcher.matches(&path[..end])
    })
}

fn authenticated(name: Option<&StringMatcher>, s: &impl Subject) -> bool {
    let Some(peer) = s.peer_certificate() else {
        return false;
    };
    let Some(name) = name else {
        return true;
    };
    let Some(cert) = peer else {
        return name.matches(b"");
    };
    cert.sans.uri.iter().any(|uri| name.matches(uri.as_bytes()))
        || cert.sans.dns.iter().any(|dns| name.matches(dns.as_bytes()))
        || name.matches(cert.subject.as_bytes())
}

/// A filter's rules, or a route's (`RBACPerRoute`): either set may be absent; without
/// enforced rules everything is allowed.
#[derive(Debug, Default)]
pub struct RbacRules {
    pub enforced: Option<Rules>,
    /// Only counted (`shadow_allowed` / `shadow_denied`).
    pub shadow: Option<Rules>,
}

/// An `rbac` filter (HTTP or network) as configured: its rules and its stats, which a
/// route's rules count in too.
#[derive(Debug)]
pub struct RbacFilter {
    pub rules: Arc<RbacRules>,
    pub stats: Arc<RbacStats>,
    pub shadow_stats: Arc<RbacShadowStats>,
    /// The dynamic metadata keys of the shadow verdict (made once, not per request).
    pub shadow_keys: ShadowKeys,
}

/// A denial: Envoy's `rbac_access_denied_matched_policy[<policy>]` (`none` when an `ALLOW`
/// set matched nothing).
#[derive(Debug, PartialEq, Eq)]
pub struct Denied<'a> {
    pub policy: Option<&'a str>,
}

impl Denied<'_> {
    /// The response code details (or connection termination details) Envoy reports; blanks in
    /// the policy name become `_`.
    pub fn details(&self) -> String {
        let policy = self.policy.unwrap_or("none");
        let sanitized: String = policy
            .chars()
            .map(|c| match c {
                ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' => '_',
                c => c,
            })
            .collect();
        format!("rbac_access_denied_matched_policy[{sanitized}]")
    }
}

/// The namespace of the dynamic metadata the HTTP filter writes.
pub const METADATA_NAMESPACE: &str = "envoy.filters.http.rbac";

/// What [`RbacFilter::check`] found: the enforced rules' verdict, and the shadow rules' when
/// there are some.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked<'r> {
    pub verdict: Result<(), Denied<'r>>,
    pub shadow: Option<ShadowVerdict<'r>>,
}

/// The shadow rules' verdict: whether they would allow, and the policy that matched.
#[derive(Debug, PartialEq, Eq)]
pub struct ShadowVerdict<'r> {
    pub allowed: bool,
    pub policy: Option<&'r str>,
}

impl RbacFilter {
    /// Judges `subject` by `rules` (the filter's own or a route's), counting on `shard`: the
    /// shadow rules are only counted; the enforced rules decide.
    pub fn check<'r>(
        &self,
        rules: &'r RbacRules,
        shard: usize,
        subject: &impl Subject,
    ) -> Checked<'r> {
        let shadow = rules.shadow.as_ref().map(|shadow| {
            let cells = self.shadow_stats.shard(shard);
            let (allowed, policy) = shadow.judge(subject);
            inc(match allowed {
                true => &cells.shadow_allowed,
                false => &cells.shadow_denied,
            });
            ShadowVerdict { allowed, policy }
        });
        let verdict = match &rules.enforced {
            None => Ok(()),
            Some(enforced) => {
                let cells = self.stats.shard(shard);
                match enforced.judge(subject) {
                    (true, _) => {
                        inc(&cells.allowed);
                        Ok(())
                    }
                    (false, policy) => {
                        inc(&cells.denied);
                        Err(Denied { policy })
                    }
                }
            }
        };
        Checked { verdict, shadow }
    }

    /// The dynamic metadata Envoy writes for a shadow verdict, under
    /// [`METADATA_NAMESPACE`]: `<shadow prefix>shadow_engine_result` (`allowed` / `denied`)
    /// and, when a policy matched, `<shadow prefix>shadow_effective_policy_id`.
    pub fn record_shadow(&self, verdict: &ShadowVerdict<'_>, metadata: &mut DynamicMetadata) {
        let keys = &self.shadow_keys;
        let result = if verdict.allowed { "allowed" } else { "denied" };
        metadata.set(METADATA_NAMESPACE, &keys.result, result.into());
        if let Some(policy) = verdict.policy {
            metadata.set(METADATA_NAMESPACE, &keys.policy, policy.into());
        }
    }
}

/// `<shadow_rules_stat_prefix>shadow_engine_result` and `…shadow_effective_policy_id`.
#[derive(Debug)]
pub struct ShadowKeys {
    result: Box<str>,
    policy: Box<str>,
}

impl ShadowKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            result: format!("{prefix}shadow_engine_result").into(),
            policy: format!("{prefix}shadow_effective_policy_id").into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, sync::atomic::Ordering::Relaxed};

    use super::*;
    use crate::{
        matchers::{HeaderRule, HeaderSource, StringPattern},
        tls::PeerNames,
    };

    struct Request {
        method: &'static str,
        path: &'static str,
    }

    impl RouteRequest for Request {
        fn method(&self) -> &[u8] {
            self.method.as_bytes()
        }
        fn path(&self) -> &[u8] {
            self.path.as_bytes()
        }
        fn header(&self, name: &str) -> Option<&[u8]> {
            (name == "x-env").then_some(b"prod")
        }
    }

    struct Conn {
        remote: SocketAddr,
        local: SocketAddr,
        sni: &'static str,
        tls: Option<Option<CertificateInfo>>,
        peer_principal: Option<&'static str>,
        request: Option<Request>,
        metadata: DynamicMetadata,
    }

    impl Subject for Conn {
        fn remote(&self) -> SocketAddr {
            self.remote
        }
        fn local(&self) -> SocketAddr {
            self.local
        }
        fn requested_server_name(&self) -> &str {
            self.sni
        }
        fn peer_certificate(&self) -> Option<Option<&CertificateInfo>> {
            self.tls.as_ref().map(Option::as_ref)
        }
        fn filter_state(&self, key: &str) -> Option<&str> {
            self.peer_principal
                .filter(|_| key == "io.istio.peer_principal")
        }
        fn dynamic_metadata(&self) -> &DynamicMetadata {
            &self.metadata
        }
        fn request(&self) -> Option<&dyn RouteRequest> {
            self.request.as_ref().map(|r| r as &dyn RouteRequest)
        }
    }

    fn conn() -> Conn {
        Conn {
            remote: "10.0.0.7:40000".parse().unwrap(),
            local: "10.0.1.1:8080".parse().unwrap(),
            sni: "api.example.com",
            tls: None,
            peer_principal: None,
            request: Some(Request {
                method: "GET",
                path: "/info/a?x=1",
            }),
            metadata: DynamicMetadata::default(),
        }
    }

    fn exact(s: &str) -> StringMatcher {
        StringMatcher::new(StringPattern::Exact(s.as_bytes().into()), false)
    }

    fn prefix(s: &str) -> StringMatcher {
        StringMatcher::new(StringPattern::Prefix(s.as_bytes().into()), false)
    }

    fn cidr(s: &str, len: u8) -> Cidr {
        Cidr::new(s.parse::<IpAddr>().unwrap(), len).unwrap()
    }

    fn method(m: &str) -> HeaderMatcher {
        HeaderMatcher {
            source: HeaderSource::Method,
            rule: HeaderRule::Exact(m.as_bytes().into()),
            invert: false,
            treat_missing_as_empty: false,
        }
    }

    fn cert(uri: &[&str], dns: &[&str], subject: &str) -> CertificateInfo {
        CertificateInfo {
            subject: subject.into(),
            issuer: String::new(),
            serial: "1".into(),
            not_before: std::time::SystemTime::UNIX_EPOCH,
            not_after: std::time::SystemTime::UNIX_EPOCH,
            sans: PeerNames {
                uri: uri.iter().map(|s| s.to_string()).collect(),
                dns: dns.iter().map(|s| s.to_string()).collect(),
                ..PeerNames::default()
            },
            sha256: String::new(),
        }
    }

    #[test]
    fn permissions_read_the_request_and_the_connection() {
        let c = conn();
        let get_info = Permission::And(vec![
            Permission::Header(method("GET")),
            Permission::UrlPath(prefix("/info")),
        ]);
        assert!(get_info.matches(&c));
        // The query is not part of the path.
        assert!(!Permission::UrlPath(exact("/info/a?x=1")).matches(&c));
        assert!(Permission::UrlPath(exact("/info/a")).matches(&c));
        assert!(Permission::Not(Box::new(Permission::Header(method("POST")))).matches(&c));
        assert!(
            Permission::Or(vec![Permission::Header(method("POST")), Permission::Any]).matches(&c)
        );
        assert!(Permission::DestinationIp(cidr("10.0.0.0", 16)).matches(&c));
        assert!(!Permission::DestinationIp(cidr("10.0.2.0", 24)).matches(&c));
        assert!(Permission::DestinationPort(8080).matches(&c));
        assert!(!Permission::DestinationPort(65536 + 8080).matches(&c));
        let range = |start, end| Permission::DestinationPortRange { start, end };
        assert!(range(8000, 8081).matches(&c) && !range(8000, 8080).matches(&c));
        assert!(Permission::RequestedServerName(exact("api.example.com")).matches(&c));
        let authn = |key: &str, present| crate::metadata::MetadataMatcher {
            filter: "istio_authn".into(),
            path: Box::new([key.into()]),
            value: crate::metadata::ValueMatcher::Present(present),
            invert: false,
        };
        assert!(!Permission::Metadata(authn("source.principal", true)).matches(&c));
        let mut c = c;
        c.metadata.set(
            "istio_authn",
            "source.principal",
            "cluster.local/ns/a/sa/b".into(),
        );
        assert!(Principal::Metadata(authn("source.principal", true)).matches(&c));
        assert!(!Principal::Metadata(authn("source.principal", false)).matches(&c));
        assert!(Permission::And(vec![]).matches(&c), "an empty and is true");
        assert!(!Permission::Or(vec![]).matches(&c), "an empty or is false");
    }

    #[test]
    fn a_connection_has_no_headers_and_no_path() {
        let mut c = conn();
        c.request = None;
        assert!(!Permission::Header(method("GET")).matches(&c));
        let absent = HeaderMatcher {
            source: HeaderSource::Named("x-env".into()),
            rule: HeaderRule::Present(false),
            invert: false,
            treat_missing_as_empty: false,
        };
        assert!(Principal::Header(absent).matches(&c));
        assert!(!Principal::UrlPath(prefix("/")).matches(&c));
    }

    #[test]
    fn principals_read_identities_and_addresses() {
        let mut c = conn();
        let spiffe = "spiffe://cluster.local/ns/default/sa/sleep";
        let named = |m| Principal::Authenticated(Some(m));
        // Plaintext: nothing authenticated matches, not even an empty name.
        assert!(!Principal::Authenticated(None).matches(&c));
        assert!(!named(exact("")).matches(&c));
        // TLS without a client certificate: any, and the empty subject.
        c.tls = Some(None);
        assert!(Principal::Authenticated(None).matches(&c));
        assert!(named(exact("")).matches(&c) && !named(exact(spiffe)).matches(&c));
        // URI SANs, then DNS SANs, then the subject.
        c.tls = Some(Some(cert(&[spiffe], &["sleep.default"], "CN=sleep,O=acme")));
        assert!(named(exact(spiffe)).matches(&c));
        assert!(named(exact("sleep.default")).matches(&c));
        assert!(named(exact("CN=sleep,O=acme")).matches(&c));
        assert!(!named(exact("CN=other")).matches(&c));
        assert!(Principal::RemoteIp(cidr("10.0.0.7", 32)).matches(&c));
        assert!(
            !Principal::RemoteIp(cidr("::", 0)).matches(&c),
            "other family"
        );
        let state = |m| Principal::FilterState {
            key: "io.istio.peer_principal".into(),
            value: m,
        };
        assert!(!state(exact(spiffe)).matches(&c), "no filter state yet");
        c.peer_principal = Some(spiffe);
        assert!(state(exact(spiffe)).matches(&c));
        let regex = regex::bytes::Regex::new("^(?:.*/ns/default/.*)$").unwrap();
        assert!(state(StringMatcher::new(StringPattern::Regex(regex), false)).matches(&c));
    }

    /// Rules whose policies match everything (`true`) or nothing.
    fn rules(action: Action, policies: &[(&str, bool)]) -> Rules {
        let permission = |matches| match matches {
            true => Permission::Any,
            false => Permission::Not(Box::new(Permission::Any)),
        };
        Rules {
            action,
            policies: policies
                .iter()
                .map(|(name, matches)| Policy {
                    name: name.to_string(),
                    permissions: vec![permission(*matches)],
                    principals: vec![Principal::Any],
                })
                .collect(),
        }
    }

    #[test]
    fn actions_and_the_reported_policy() {
        let c = conn();
        let allow = rules(Action::Allow, &[("a", false), ("b", true)]);
        assert_eq!(allow.judge(&c), (true, Some("b")));
        let empty = rules(Action::Allow, &[]);
        assert_eq!(empty.judge(&c), (false, None));
        let deny = rules(Action::Deny, &[("p 1", true), ("z", true)]);
        assert_eq!(deny.judge(&c), (false, Some("p 1")));
        assert_eq!(rules(Action::Deny, &[]).judge(&c), (true, None));
        let log = rules(Action::Log, &[("l", true)]);
        assert_eq!(log.judge(&c), (true, Some("l")));
        assert_eq!(
            Denied {
                policy: Some("p 1\tx")
            }
            .details(),
            "rbac_access_denied_matched_policy[p_1_x]"
        );
        assert_eq!(
            Denied { policy: None }.details(),
            "rbac_access_denied_matched_policy[none]"
        );
    }

    #[test]
    fn checks_count_shadow_and_enforced_rules() {
        let filter = RbacFilter {
            rules: Arc::new(RbacRules::default()),
            stats: Arc::new(RbacStats::new("http.x.rbac".into(), 1)),
            shadow_stats: Arc::new(RbacShadowStats::new("http.x.rbac".into(), 1)),
            shadow_keys: ShadowKeys::new("istio_dry_run_"),
        };
        let c = conn();
        let route = RbacRules {
            enforced: Some(rules(Action::Deny, &[("d", true)])),
            shadow: Some(rules(Action::Allow, &[])),
        };
        let checked = filter.check(&route, 0, &c);
        assert_eq!(checked.verdict, Err(Denied { policy: Some("d") }));
        let shadow = checked.shadow.expect("shadow rules judged");
        assert_eq!(
            shadow,
            ShadowVerdict {
                allowed: false,
                policy: None
            }
        );
        let mut metadata = DynamicMetadata::default();
        filter.record_shadow(&shadow, &mut metadata);
        filter.record_shadow(
            &ShadowVerdict {
                allowed: true,
                policy: Some("p"),
            },
            &mut metadata,
        );
        let key = |k: &str| -> Box<[Box<str>]> { Box::new([k.into()]) };
        let at = |k| metadata.get(METADATA_NAMESPACE, &key(k)).cloned();
        assert_eq!(
            at("istio_dry_run_shadow_engine_result"),
            Some("allowed".into())
        );
        assert_eq!(
            at("istio_dry_run_shadow_effective_policy_id"),
            Some("p".into())
        );
        let checked = filter.check(&filter.rules, 0, &c);
        assert_eq!(
            checked,
            Checked {
                verdict: Ok(()),
                shadow: None
            }
        );
        let cells = filter.stats.shard(0);
        let shadow = filter.shadow_stats.shard(0);
        assert_eq!(cells.denied.load(Relaxed), 1);
        assert_eq!(
            cells.allowed.load(Relaxed),
            0,
            "no enforced rules: not counted"
        );
        assert_eq!(shadow.shadow_denied.load(Relaxed), 1);
    }
}
