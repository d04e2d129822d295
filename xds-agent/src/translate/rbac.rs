//! Translator: RBAC rules (`config.rbac.v3.RBAC`), shared by the HTTP and network `rbac`
//! filters — policies, permissions and principals compiled into `model::rbac`, the filters'
//! stats scopes by Envoy 1.40's names, the network filter itself, and their surface.
#![allow(deprecated)] // `metadata` and `source_ip`: deprecated in Envoy's API, sent by Istio.
use std::{sync::Arc, time::Duration};

use envoy_types::pb::envoy::{
    config::rbac::v3::{
        permission::Rule, principal::Identifier, rbac::Action as ActionProto,
        Permission as PermissionProto, Principal as PrincipalProto, Rbac as RbacProto,
    },
    extensions::filters::network::rbac::v3::{rbac::EnforcementType, Rbac as NetworkRbac},
    r#type::matcher::v3::{filter_state_matcher, path_matcher, PathMatcher},
};

use super::{
    duration,
    filter_chain_match::cidr,
    matchers::{header_matcher, metadata_matcher, string_matcher, At},
    surface::Surface,
    TranslateError,
};
use crate::names;
use model::{
    filter_stats::{RbacShadowStats, RbacStats},
    matchers::StringMatcher,
    rbac::{Action, Permission, Policy, Principal, RbacFilter, RbacRules, Rules, ShadowKeys},
    stats::StatsRegistry,
    ConnectionFilter,
};

/// What a filter's config says, in the parts both filters share.
pub(super) struct RbacConfig<'a> {
    pub rules: Option<&'a RbacProto>,
    pub shadow_rules: Option<&'a RbacProto>,
    /// `http.<hcm prefix>.` or the network filter's `stat_prefix`.
    pub stat_prefix: &'a str,
    pub rules_stat_prefix: &'a str,
    pub shadow_rules_stat_prefix: &'a str,
}

/// The filter: its rules and its stats, `<stat_prefix>rbac[.<rules_stat_prefix>].allowed` /
/// `denied` and `<stat_prefix>rbac[.<shadow_rules_stat_prefix>].shadow_allowed` /
/// `shadow_denied` (Envoy 1.40 joins each sub-prefix to `rbac` as one more dot-separated
/// part; the rules' prefix does not apply to the shadow stats).
pub(super) fn filter(
    config: &RbacConfig,
    at: At,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Option<RbacFilter> {
    let rules = rules_pair(config.rules, config.shadow_rules, at, errors)?;
    let scope = |sub: &str| match sub.trim_end_matches('.') {
        "" => format!("{}rbac", config.stat_prefix),
        sub => format!("{}rbac.{sub}", config.stat_prefix),
    };
    Some(RbacFilter {
        rules: Arc::new(rules),
        stats: stats.scope::<RbacStats>(scope(config.rules_stat_prefix)),
        shadow_stats: stats.scope::<RbacShadowStats>(scope(config.shadow_rules_stat_prefix)),
        shadow_keys: ShadowKeys::new(config.shadow_rules_stat_prefix),
    })
}

/// `rules` and `shadow_rules` (either may be absent).
pub(super) fn rules_pair(
    rules: Option<&RbacProto>,
    shadow_rules: Option<&RbacProto>,
    at: At,
    errors: &mut Vec<TranslateError>,
) -> Option<RbacRules> {
    let before = errors.len();
    let mut one = |proto: Option<&RbacProto>, field: &str| {
        let path = at.below(field);
        proto.map(|p| compile(p, At { path: &path, ..at }, errors))
    };
    let enforced = one(rules, "rules");
    let shadow = one(shadow_rules, "shadow_rules");
    (errors.len() == before).then(|| RbacRules {
        enforced: enforced.flatten(),
        shadow: shadow.flatten(),
    })
}

/// `envoy.filters.network.rbac` (its `stat_prefix` checked by the caller): the prefix is used
/// as given (Istio's `tcp.` gives `tcp.rbac.allowed`). `enforcement_type: CONTINUOUS` is refused: with nothing that sets
/// dynamic metadata the verdict never changes, and Envoy would count it on every read.
pub(super) fn network_filter(
    proto: NetworkRbac,
    at: At,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Option<ConnectionFilter> {
    if proto.enforcement_type == EnforcementType::Continuous as i32 {
        errors.push(at.error(
            "enforcement_type",
            "CONTINUOUS is not supported: only ONE_TIME_ON_FIRST_BYTE (no filter here sets \
             the dynamic metadata that could change a verdict)",
        ));
    }
    let delay_deny = match &proto.delay_deny {
        None => Some(Duration::ZERO),
        Some(d) => duration(d, &at.below("delay_deny"), at.type_url, errors),
    };
    let config = RbacConfig {
        rules: proto.rules.as_ref(),
        shadow_rules: proto.shadow_rules.as_ref(),
        stat_prefix: &proto.stat_prefix,
        rules_stat_prefix: "",
        shadow_rules_stat_prefix: &proto.shadow_rules_stat_prefix,
    };
    let filter = filter(&config, at, stats, errors);
    Some(ConnectionFilter::Rbac {
        filter: filter?,
        delay_deny: delay_deny?,
    })
}

/// One set of rules; policies sorted by name (Envoy's order).
fn compile(proto: &RbacProto, at: At, errors: &mut Vec<TranslateError>) -> Option<Rules> {
    let action = match ActionProto::try_from(proto.action) {
        Ok(ActionProto::Allow) => Action::Allow,
        Ok(ActionProto::Deny) => Action::Deny,
        Ok(ActionProto::Log) => Action::Log,
        Err(_) => {
            errors.push(at.error("action", format!("unknown action {}", proto.action)));
            return None;
        }
    };
    let mut names: Vec<&String> = proto.policies.keys().collect();
    names.sort();
    let mut policies = Vec::with_capacity(names.len());
    for name in names {
        let policy = &proto.policies[name];
        let path = at.below(&format!("policies[{name}]"));
        let at = At { path: &path, ..at };
        let permissions = list(&policy.permissions, "permissions", at, errors, permission);
        let principals = list(&policy.principals, "principals", at, errors, principal);
        if let (Some(permissions), Some(principals)) = (permissions, principals) {
            policies.push(Policy {
                name: name.clone(),
                permissions,
                principals,
            });
        }
    }
    Some(Rules { action, policies })
}

/// A non-empty list (Envoy's `min_items: 1`) of permissions or principals at `field`.
fn list<P, T>(
    items: &[P],
    field: &str,
    at: At,
    errors: &mut Vec<TranslateError>,
    one: fn(&P, At, &mut Vec<TranslateError>) -> Option<T>,
) -> Option<Vec<T>> {
    if items.is_empty() {
        errors.push(at.error(field, "at least one is required"));
        return None;
    }
    let before = errors.len();
    let built: Vec<T> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let path = at.below(&format!("{field}[{i}]"));
            one(item, At { path: &path, ..at }, errors)
        })
        .collect();
    (errors.len() == before).then_some(built)
}

fn permission(
    proto: &PermissionProto,
    at: At,
    errors: &mut Vec<TranslateError>,
) -> Option<Permission> {
    let below = |field: &str| at.below(field);
    let built = match proto.rule.as_ref() {
        None => {
            errors.push(at.error("", "a permission rule is required"));
            return None;
        }
        Some(Rule::Any(any)) => always(*any, at, errors).map(|_| Permission::Any)?,
        Some(Rule::AndRules(set)) => {
            Permission::And(list(&set.rules, "and_rules.rules", at, errors, permission)?)
        }
        Some(Rule::OrRules(set)) => {
            Permission::Or(list(&set.rules, "or_rules.rules", at, errors, permission)?)
        }
        Some(Rule::NotRule(rule)) => {
            let path = below("not_rule");
            Permission::Not(Box::new(permission(
                rule,
                At { path: &path, ..at },
                errors,
            )?))
        }
        Some(Rule::Header(header)) => {
            let path = below("header");
            Permission::Header(header_matcher(header, At { path: &path, ..at }, errors)?)
        }
        Some(Rule::UrlPath(path_proto)) => {
            Permission::UrlPath(url_path(path_proto, &below("url_path"), at, errors)?)
        }
        Some(Rule::DestinationIp(range)) => {
            Permission::DestinationIp(cidr(range, &below("destination_ip"), at.type_url, errors)?)
        }
        Some(Rule::DestinationPort(port)) => Permission::DestinationPort(*port),
        Some(Rule::DestinationPortRange(range)) => {
            let bounds = 0..=65536;
            if !bounds.contains(&range.start)
                || !bounds.contains(&range.end)
                || range.start >= range.end
            {
                errors.push(at.error(
                    "destination_port_range",
                    format!(
                        "{}..{} is not a port range (0 <= start < end <= 65536)",
                        range.start, range.end
                    ),
                ));
                return None;
            }
            Permission::DestinationPortRange {
                start: range.start as u32,
                end: range.end as u32,
            }
        }
        Some(Rule::RequestedServerName(name)) => {
            let path = below("requested_server_name");
            Permission::RequestedServerName(string_matcher(name, At { path: &path, ..at }, errors)?)
        }
        Some(Rule::Metadata(m)) => {
            let path = below("metadata");
            Permission::Metadata(metadata_matcher(m, At { path: &path, ..at }, errors)?)
        }
        // Refused by the walker (not in the surface).
        Some(Rule::Matcher(_) | Rule::UriTemplate(_) | Rule::SourcedMetadata(_)) => return None,
    };
    Some(built)
}

fn principal(
    proto: &PrincipalProto,
    at: At,
    errors: &mut Vec<TranslateError>,
) -> Option<Principal> {
    let below = |field: &str| at.below(field);
    let built = match proto.identifier.as_ref() {
        None => {
            errors.push(at.error("", "a principal identifier is required"));
            return None;
        }
        Some(Identifier::Any(any)) => always(*any, at, errors).map(|_| Principal::Any)?,
        Some(Identifier::AndIds(set)) => {
            Principal::And(list(&set.ids, "and_ids.ids", at, errors, principal)?)
        }
        Some(Identifier::OrIds(set)) => {
            Principal::Or(list(&set.ids, "or_ids.ids", at, errors, principal)?)
        }
        Some(Identifier::NotId(id)) => {
            let path = below("not_id");
            Principal::Not(Box::new(principal(id, At { path: &path, ..at }, errors)?))
        }
        Some(Identifier::Authenticated(auth)) => {
            let name = match &auth.principal_name {
                None => None,
                Some(m) => {
                    let path = below("authenticated.principal_name");
                    Some(string_matcher(m, At { path: &path, ..at }, errors)?)
                }
            };
            Principal::Authenticated(name)
        }
        Some(Identifier::SourceIp(range)) => {
            Principal::RemoteIp(cidr(range, &below("source_ip"), at.type_url, errors)?)
        }
        Some(Identifier::DirectRemoteIp(range)) => Principal::RemoteIp(cidr(
            range,
            &below("direct_remote_ip"),
            at.type_url,
            errors,
        )?),
        Some(Identifier::RemoteIp(range)) => {
            Principal::RemoteIp(cidr(range, &below("remote_ip"), at.type_url, errors)?)
        }
        Some(Identifier::Header(header)) => {
            let path = below("header");
            Principal::Header(header_matcher(header, At { path: &path, ..at }, errors)?)
        }
        Some(Identifier::UrlPath(path_proto)) => {
            Principal::UrlPath(url_path(path_proto, &below("url_path"), at, errors)?)
        }
        Some(Identifier::FilterState(state)) => {
            let path = below("filter_state");
            let at = At { path: &path, ..at };
            if state.key.is_empty() {
                errors.push(at.error("key", "key is required"));
                return None;
            }
            let value = match &state.matcher {
                Some(filter_state_matcher::Matcher::StringMatch(m)) => {
                    let path = at.below("string_match");
                    string_matcher(m, At { path: &path, ..at }, errors)?
                }
                // address_match is refused by the walker.
                Some(filter_state_matcher::Matcher::AddressMatch(_)) => return None,
                None => {
                    errors.push(at.error("", "string_match is required"));
                    return None;
                }
            };
            Principal::FilterState {
                key: state.key.clone(),
                value,
            }
        }
        Some(Identifier::Metadata(m)) => {
            let path = below("metadata");
            Principal::Metadata(metadata_matcher(m, At { path: &path, ..at }, errors)?)
        }
        // Refused by the walker (not in the surface).
        Some(Identifier::SourcedMetadata(_) | Identifier::Custom(_)) => return None,
    };
    Some(built)
}

/// `any` must be `true` (Envoy's `const: true` rule).
fn always(any: bool, at: At, errors: &mut Vec<TranslateError>) -> Option<()> {
    if !any {
        errors.push(at.error("any", "must be true"));
        return None;
    }
    Some(())
}

fn url_path(
    proto: &PathMatcher,
    path: &str,
    at: At,
    errors: &mut Vec<TranslateError>,
) -> Option<StringMatcher> {
    let at = At { path, ..at };
    match &proto.rule {
        Some(path_matcher::Rule::Path(m)) => {
            let path = at.below("path");
            string_matcher(m, At { path: &path, ..at }, errors)
        }
        None => {
            errors.push(at.error("", "path is required"));
            None
        }
    }
}

/// A `MetadataMatcher`'s fixed outcome: nothing sets dynamic metadata here (Istio's JWT
/// `istio_authn` claims included), and Envoy's value matchers never match a missing value,
/// so it matches only when `invert`ed. Its string matchers are still checked.
/// The RBAC rules' surface (the HTTP filter's own messages are with the HTTP filters').
pub const SURFACE: &[Surface] = &[
    Surface {
        message: names::NETWORK_RBAC,
        supported: &[
            "rules",
            "shadow_rules",
            "stat_prefix",
            "shadow_rules_stat_prefix",
            "enforcement_type",
            "delay_deny",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.rbac.v3.RBAC",
        supported: &["action", "policies"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.rbac.v3.Policy",
        supported: &["permissions", "principals"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.rbac.v3.Permission",
        supported: &[
            "and_rules",
            "or_rules",
            "not_rule",
            "any",
            "header",
            "url_path",
            "destination_ip",
            "destination_port",
            "destination_port_range",
            "requested_server_name",
            "metadata",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.rbac.v3.Permission.Set",
        supported: &["rules"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.rbac.v3.Principal",
        supported: &[
            "and_ids",
            "or_ids",
            "not_id",
            "any",
            "authenticated",
            "source_ip",
            "direct_remote_ip",
            "remote_ip",
            "header",
            "url_path",
            "filter_state",
            "metadata",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.rbac.v3.Principal.Set",
        supported: &["ids"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.rbac.v3.Principal.Authenticated",
        supported: &["principal_name"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.PathMatcher",
        supported: &["path"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.FilterStateMatcher",
        supported: &["key", "string_match"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.MetadataMatcher",
        supported: &["filter", "path", "value", "invert"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.MetadataMatcher.PathSegment",
        supported: &["key"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.ValueMatcher",
        supported: &[
            "null_match",
            "double_match",
            "string_match",
            "bool_match",
            "present_match",
            "list_match",
            "or_match",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.ValueMatcher.NullMatch",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.ListMatcher",
        supported: &["one_of"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.OrMatcher",
        supported: &["value_matchers"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.matcher.v3.DoubleMatcher",
        supported: &["range", "exact"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.v3.DoubleRange",
        supported: &["start", "end"],
        ignored: &[],
    },
];
