//! Translator: a route's `hash_policy` → `model::hash_policy::HashPolicies`.
use envoy_types::pb::envoy::config::route::v3::route_action::{
    hash_policy::PolicySpecifier, HashPolicy as HashPolicyProto,
};

use super::{
    action::{checked_value, regex_rewrite},
    header_ops::is_token_byte,
    Problems,
};
use model::hash_policy::{CookieHash, HashInput, HashPolicies, HashPolicy};

/// Why a `filter_state` hash policy is refused.
pub const NO_HASHABLE_FILTER_STATE: &str = "no filter-state object shardproxy's filters set is \
     hashable (in Envoy, only objects implementing Hashable are), so it could never produce a hash";

pub(super) fn hash_policies(
    protos: &[HashPolicyProto],
    path: &str,
    p: &mut Problems,
) -> HashPolicies {
    let policies = protos
        .iter()
        .enumerate()
        .filter_map(|(i, proto)| {
            let input = input(proto, &format!("{path}[{i}]"), p)??;
            Some(HashPolicy {
                input,
                terminal: proto.terminal,
            })
        })
        .collect();
    HashPolicies { policies }
}

/// The policy's input; `Some(None)` for one that hashes nothing (`source_ip: false`, as
/// Envoy skips it); `None` when invalid (reported).
fn input(proto: &HashPolicyProto, path: &str, p: &mut Problems) -> Option<Option<HashInput>> {
    Some(Some(match proto.policy_specifier.as_ref() {
        None => {
            p.add(path, "one of header, cookie, connection_properties, query_parameter or filter_state is required");
            return None;
        }
        Some(PolicySpecifier::Header(header)) => {
            let at = format!("{path}.header");
            let name = header.header_name.to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                p.add(format!("{at}.header_name"), "must be a header name");
            }
            let rewrite = match &header.regex_rewrite {
                Some(r) => Some(regex_rewrite(r, &format!("{at}.regex_rewrite"), p)?),
                None => None,
            };
            HashInput::Header {
                name: name.into(),
                rewrite,
            }
        }
        Some(PolicySpecifier::Cookie(cookie)) => {
            let at = format!("{path}.cookie");
            if cookie.name.is_empty() {
                p.add(format!("{at}.name"), "name is required");
            }
            // What goes into Set-Cookie must be a header value.
            checked_value(&cookie.name, format!("{at}.name"), p)?;
            checked_value(&cookie.path, format!("{at}.path"), p)?;
            let mut attributes = Vec::new();
            for (j, attribute) in cookie.attributes.iter().enumerate() {
                let at = format!("{at}.attributes[{j}]");
                if attribute.name.is_empty() {
                    p.add(format!("{at}.name"), "name is required");
                }
                checked_value(&attribute.name, format!("{at}.name"), p)?;
                checked_value(&attribute.value, format!("{at}.value"), p)?;
                attributes.push((
                    attribute.name.as_str().into(),
                    attribute.value.as_str().into(),
                ));
            }
            let ttl = cookie.ttl.as_ref().map(|d| d.seconds.max(0) as u64);
            HashInput::Cookie(CookieHash {
                name: cookie.name.as_str().into(),
                path: cookie.path.as_str().into(),
                ttl,
                attributes,
            })
        }
        Some(PolicySpecifier::ConnectionProperties(properties)) => match properties.source_ip {
            true => HashInput::SourceIp,
            false => return Some(None),
        },
        Some(PolicySpecifier::QueryParameter(parameter)) => {
            if parameter.name.is_empty() {
                p.add(format!("{path}.query_parameter.name"), "name is required");
            }
            HashInput::QueryParameter(parameter.name.as_str().into())
        }
        Some(PolicySpecifier::FilterState(_)) => {
            p.add(format!("{path}.filter_state"), NO_HASHABLE_FILTER_STATE);
            return None;
        }
    }))
}
