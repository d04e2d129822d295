//! Translator: a route's `match` (`RouteMatch`, `QueryParameterMatcher`) → `RouteMatcher`;
//! header, string and regex matchers through the shared `translate::matchers`.
use envoy_types::pb::envoy::config::route::v3::{
    query_parameter_matcher::QueryParameterMatchSpecifier, route_match::PathSpecifier,
    QueryParameterMatcher as QueryProto, RouteMatch,
};

use super::Problems;
use crate::translate::matchers::{header_matcher, regex, string_matcher, At};
use model::route_match::{PathMatch, QueryParameterMatcher, RouteMatcher, TlsContextMatch};

/// Where a matcher at `path` sits, for the shared matcher translator.
fn at<'a>(path: &'a str, p: &Problems<'a>) -> At<'a> {
    At {
        path,
        type_url: p.url,
    }
}

/// The route's `match` at `path`.
pub(super) fn route_match(
    proto: Option<&RouteMatch>,
    path: &str,
    p: &mut Problems,
) -> Option<RouteMatcher> {
    let Some(proto) = proto else {
        p.add(path, "match is required");
        return None;
    };
    let before = p.count();
    let path_match = match &proto.path_specifier {
        Some(PathSpecifier::Prefix(prefix)) => Some(PathMatch::Prefix(prefix.clone())),
        Some(PathSpecifier::Path(exact)) => Some(PathMatch::Path(exact.clone())),
        Some(PathSpecifier::SafeRegex(r)) => {
            let path = format!("{path}.safe_regex");
            regex(r, at(&path, p), p.errors).map(PathMatch::Regex)
        }
        Some(PathSpecifier::PathSeparatedPrefix(prefix)) => {
            separated_prefix(prefix, &format!("{path}.path_separated_prefix"), p)
        }
        Some(PathSpecifier::ConnectMatcher(_)) => Some(PathMatch::Connect),
        // Path-template matchers are rejected by the walker.
        Some(_) => None,
        None => {
            p.add(
                path,
                "one of prefix, path, safe_regex, path_separated_prefix or connect_matcher is required",
            );
            None
        }
    };
    let headers: Vec<_> = proto
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let path = format!("{path}.headers[{i}]");
            header_matcher(h, at(&path, p), p.errors)
        })
        .collect();
    let query_parameters: Vec<_> = proto
        .query_parameters
        .iter()
        .enumerate()
        .filter_map(|(i, q)| query_parameter(q, &format!("{path}.query_parameters[{i}]"), p))
        .collect();
    if p.count() > before {
        return None;
    }
    Some(RouteMatcher {
        path: path_match?,
        case_sensitive: proto.case_sensitive.is_none_or(|v| v.value),
        headers,
        query_parameters,
        grpc: proto.grpc.is_some(),
        tls_context: proto
            .tls_context
            .as_ref()
            .map_or_else(TlsContextMatch::default, |t| TlsContextMatch {
                presented: t.presented.map(|v| v.value),
                validated: t.validated.map(|v| v.value),
            }),
    })
}

/// Envoy's rule for `path_separated_prefix`: no `?` or `#`, and no trailing `/`.
fn separated_prefix(prefix: &str, path: &str, p: &mut Problems) -> Option<PathMatch> {
    if prefix.is_empty() || prefix.ends_with('/') || prefix.contains(['?', '#']) {
        p.add(
            path,
            "must be non-empty, without `?` or `#`, and must not end with `/`",
        );
        return None;
    }
    Some(PathMatch::PathSeparatedPrefix(prefix.to_string()))
}

fn query_parameter(
    proto: &QueryProto,
    path: &str,
    p: &mut Problems,
) -> Option<QueryParameterMatcher> {
    if proto.name.is_empty() {
        p.add(format!("{path}.name"), "name is required");
        return None;
    }
    let value = match &proto.query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(m)) => {
            let path = format!("{path}.string_match");
            Some(string_matcher(m, at(&path, p), p.errors)?)
        }
        Some(QueryParameterMatchSpecifier::PresentMatch(_)) | None => None,
    };
    Some(QueryParameterMatcher {
        name: proto.name.clone(),
        value,
    })
}
