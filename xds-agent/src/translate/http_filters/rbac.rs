//! Translator: `envoy.filters.http.rbac` (`RBAC`) and its per-route `RBACPerRoute`; the rules
//! themselves are `translate::rbac`'s.
use std::sync::Arc;

use envoy_types::pb::{
    envoy::extensions::filters::http::rbac::v3::{Rbac, RbacPerRoute},
    google::protobuf::Any,
};

use super::common::Site;
use crate::translate::{
    rbac::{filter as rbac_filter, rules_pair, RbacConfig},
    TranslateContext, TranslateError,
};
use model::filters::{HttpFilterKind, PerRouteFilter};

/// The filter in the chain: stats under `http.<stat_prefix>.rbac`.
pub(super) fn filter(
    any: &Any,
    site: &Site,
    stat_prefix: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let proto: Rbac = super::decode(any, site, errors)?;
    let config = RbacConfig {
        rules: proto.rules.as_ref(),
        shadow_rules: proto.shadow_rules.as_ref(),
        stat_prefix: &format!("http.{stat_prefix}."),
        rules_stat_prefix: &proto.rules_stat_prefix,
        shadow_rules_stat_prefix: &proto.shadow_rules_stat_prefix,
    };
    let path = site.path_of("");
    rbac_filter(&config, site.at(&path), ctx.stats, errors)
        .map(|f| HttpFilterKind::Rbac(Arc::new(f)))
}

/// `RBACPerRoute`: the route's rules replace the filter's (its stats stay the filter's);
/// without `rbac` the route allows everything. The stat prefixes in it only name Envoy's
/// dynamic metadata, which is not kept.
pub(super) fn per_route(
    any: &Any,
    site: &Site,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<PerRouteFilter> {
    let proto: RbacPerRoute = super::decode(any, site, errors)?;
    let rbac = proto.rbac.unwrap_or_default();
    let path = site.path_of("rbac");
    let rules = rules_pair(
        rbac.rules.as_ref(),
        rbac.shadow_rules.as_ref(),
        site.at(&path),
        errors,
    )?;
    Some(PerRouteFilter::Rbac(Arc::new(rules)))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{filter_errors, one_filter, per_route_config, per_route_errors};
    use super::*;
    use model::{
        rbac::{Action, Permission, Principal},
        stats::StatKind,
    };

    const RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
    const PER_ROUTE: &str =
        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";

    fn entry(config: &str) -> String {
        format!(r#"{{name: rbac, typed_config: {{"@type": "{RBAC}", {config}}}}}"#)
    }

    fn rbac(filter: &model::filters::HttpFilter) -> &model::rbac::RbacFilter {
        match &filter.kind {
            HttpFilterKind::Rbac(f) => f,
            other => panic!("{other:?}"),
        }
    }

    /// Istio 1.19's ALLOW policy (sidecar with authz dump): policies, permissions and
    /// principals compile; the JWT claim principal (`metadata`) is fixed to not matching.
    #[test]
    fn istio_policies_translate() {
        let filter = one_filter(&entry(
            r#"rules: {policies: {"ns[default]-policy[httpbin]-rule[0]": {
                 permissions: [{and_rules: {rules: [
                   {or_rules: {rules: [{header: {name: ":method", exact_match: GET}}]}},
                   {or_rules: {rules: [{url_path: {path: {prefix: /info}}}]}}]}},
                   {destination_port: 8080}, {destination_ip: {address_prefix: 10.0.0.0, prefix_len: 8}},
                   {destination_port_range: {start: 80, end: 90}},
                   {requested_server_name: {suffix: .local}}, {not_rule: {any: true}}],
                 principals: [{and_ids: {ids: [
                   {or_ids: {ids: [{filter_state: {key: io.istio.peer_principal,
                     string_match: {safe_regex: {regex: ".*/ns/test/.*"}}}}]}},
                   {or_ids: {ids: [{metadata: {filter: istio_authn,
                     path: [{key: request.auth.claims}, {key: iss}],
                     value: {list_match: {one_of: {string_match: {exact: "https://accounts.google.com"}}}}}}]}}]}},
                   {authenticated: {principal_name: {exact: "spiffe://x"}}}, {authenticated: {}},
                   {source_ip: {address_prefix: 127.0.0.1, prefix_len: 32}},
                   {direct_remote_ip: {address_prefix: "::1", prefix_len: 128}},
                   {remote_ip: {address_prefix: 10.1.0.0, prefix_len: 16}},
                   {header: {name: x-user, present_match: true}}, {url_path: {path: {exact: /a}}},
                   {metadata: {filter: f, path: [{key: k}], value: {present_match: true}, invert: true}}]}}},
               shadow_rules: {action: DENY, policies: {}},
               shadow_rules_stat_prefix: istio_dry_run_allow_"#,
        ));
        let f = rbac(&filter);
        let rules = f.rules.enforced.as_ref().unwrap();
        assert_eq!(rules.action, Action::Allow);
        let policy = &rules.policies[0];
        assert_eq!(policy.name, "ns[default]-policy[httpbin]-rule[0]");
        assert_eq!(policy.permissions.len(), 6);
        assert!(matches!(
            policy.permissions[3],
            Permission::DestinationPortRange { start: 80, end: 90 }
        ));
        let Principal::And(ids) = &policy.principals[0] else {
            panic!("{:?}", policy.principals[0])
        };
        let Principal::Or(jwt) = &ids[1] else {
            panic!()
        };
        assert!(
            matches!(&jwt[0], Principal::Metadata(m) if !m.invert && &*m.filter == "istio_authn")
        );
        assert!(matches!(&policy.principals[8], Principal::Metadata(m) if m.invert));
        assert!(matches!(
            policy.principals[2],
            Principal::Authenticated(None)
        ));
        assert_eq!(
            f.shadow_stats
                .shard(0)
                .shadow_denied
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        let mut names = vec![];
        f.stats.read(&mut names);
        f.shadow_stats.read(&mut names);
        let names: Vec<_> = names.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        assert_eq!(
            names,
            [
                ("http.ingress.rbac.allowed", StatKind::Counter),
                ("http.ingress.rbac.denied", StatKind::Counter),
                (
                    "http.ingress.rbac.istio_dry_run_allow_.shadow_allowed",
                    StatKind::Counter
                ),
                (
                    "http.ingress.rbac.istio_dry_run_allow_.shadow_denied",
                    StatKind::Counter
                ),
            ]
        );
    }

    /// Policies are kept in name order; a rules prefix with or without its dot names the
    /// same stats.
    #[test]
    fn policies_sort_by_name_and_prefixes_join_as_envoy() {
        let filter = one_filter(&entry(
            r#"rules_stat_prefix: "foo.", rules: {action: LOG, policies: {
                 b: {permissions: [{any: true}], principals: [{any: true}]},
                 a: {permissions: [{any: true}], principals: [{any: true}]}}}"#,
        ));
        let f = rbac(&filter);
        let rules = f.rules.enforced.as_ref().unwrap();
        let names: Vec<_> = rules.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(f.rules.shadow.is_none());
        let mut stats = vec![];
        f.stats.read(&mut stats);
        assert_eq!(stats[0].name, "http.ingress.rbac.foo.allowed");
    }

    /// What Envoy refuses, and what is not implemented, is an error naming the field.
    #[test]
    fn refused_fields_are_named() {
        let cases = [
            (
                r#"rules: {policies: {p: {permissions: [{any: true}], principals: [{any: true}],
                     condition: {id: 1}}}}"#,
                "f.typed_config.rules.policies[p].condition",
            ),
            (
                r#"matcher: {}"#,
                "f.typed_config.matcher",
            ),
            (
                r#"rules: {audit_logging_options: {audit_condition: ON_DENY}}"#,
                "f.typed_config.rules.audit_logging_options",
            ),
            (
                r#"rules: {policies: {p: {permissions: [{uri_template: {name: t}}], principals: [{any: true}]}}}"#,
                "f.typed_config.rules.policies[p].permissions[0].uri_template",
            ),
            (
                r#"rules: {policies: {p: {permissions: [{any: true}], principals: [{sourced_metadata: {}}]}}}"#,
                "f.typed_config.rules.policies[p].principals[0].sourced_metadata",
            ),
            (
                r#"rules: {policies: {p: {permissions: [], principals: [{any: true}]}}}"#,
                "f.typed_config.rules.policies[p].permissions",
            ),
            (
                r#"rules: {policies: {p: {permissions: [{any: false}], principals: [{any: true}]}}}"#,
                "f.typed_config.rules.policies[p].permissions[0].any",
            ),
            (
                r#"rules: {policies: {p: {permissions: [{destination_port_range: {start: 9, end: 9}}], principals: [{any: true}]}}}"#,
                "f.typed_config.rules.policies[p].permissions[0].destination_port_range",
            ),
            (
                r#"rules: {policies: {p: {permissions: [{any: true}], principals: [{remote_ip: {address_prefix: nope}}]}}}"#,
                "f.typed_config.rules.policies[p].principals[0].remote_ip",
            ),
            (
                r#"rules: {policies: {p: {permissions: [{any: true}], principals: [{filter_state: {key: k, string_match: {safe_regex: {regex: "("}}}}]}}}"#,
                "f.typed_config.rules.policies[p].principals[0].filter_state.string_match.safe_regex.regex",
            ),
        ];
        for (config, path) in cases {
            let errors = filter_errors(&entry(config));
            assert!(
                errors.iter().any(|e| e.path == path),
                "{config}: {errors:?}"
            );
        }
    }

    /// `RBACPerRoute`: its rules replace the filter's; without any, the route allows all.
    #[test]
    fn per_route_configs_replace_or_lift_the_rules() {
        let PerRouteFilter::Rbac(lifted) =
            per_route_config(&format!(r#"{{"@type": "{PER_ROUTE}"}}"#))
        else {
            panic!()
        };
        assert!(lifted.enforced.is_none() && lifted.shadow.is_none());
        let PerRouteFilter::Rbac(replaced) = per_route_config(&format!(
            r#"{{"@type": "{PER_ROUTE}", rbac: {{rules: {{action: DENY, policies: {{}}}}}}}}"#
        )) else {
            panic!()
        };
        assert_eq!(replaced.enforced.as_ref().unwrap().action, Action::Deny);
        let errors = per_route_errors(&format!(
            r#"{{"@type": "{PER_ROUTE}", rbac: {{shadow_matcher: {{}}}}}}"#
        ));
        let path = "r.typed_per_filter_config[x].rbac.shadow_matcher";
        assert!(errors.iter().any(|e| e.path == path), "{errors:?}");
    }
}
