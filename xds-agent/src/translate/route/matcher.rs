//! Translator: a route's `match` (`RouteMatch`, `HeaderMatcher`, `QueryParameterMatcher`,
//! `StringMatcher`, `RegexMatcher`) → `RouteMatcher`, regexes compiled here.
use envoy_types::pb::envoy::{
    config::route::v3::{
        header_matcher::HeaderMatchSpecifier,
        query_parameter_matcher::QueryParameterMatchSpecifier, route_match::PathSpecifier,
        HeaderMatcher as HeaderMatcherProto, QueryParameterMatcher as QueryProto, RouteMatch,
    },
    r#type::matcher::v3::{
        string_matcher::MatchPattern, RegexMatcher, StringMatcher as StringProto,
    },
};
use regex::bytes::Regex;

use super::{header_ops::is_token_byte, Problems};
use crate::route_match::{
    full_match_regex, HeaderMatcher, HeaderRule, PathMatch, QueryParameterMatcher, RouteMatcher,
    StringMatcher,
};

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
            regex(r, &format!("{path}.safe_regex"), p).map(PathMatch::Regex)
        }
        Some(PathSpecifier::PathSeparatedPrefix(prefix)) => {
            separated_prefix(prefix, &format!("{path}.path_separated_prefix"), p)
        }
        // CONNECT and path-template matchers are rejected by the walker.
        Some(_) => None,
        None => {
            p.add(
                path,
                "one of prefix, path, safe_regex or path_separated_prefix is required",
            );
            None
        }
    };
    let headers: Vec<_> = proto
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| header(h, &format!("{path}.headers[{i}]"), p))
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

#[allow(deprecated)] // The `*_match` forms are deprecated in Envoy but still accepted by it.
fn header(proto: &HeaderMatcherProto, path: &str, p: &mut Problems) -> Option<HeaderMatcher> {
    let name_ok = !proto.name.is_empty()
        && proto
            .name
            .strip_prefix(':')
            .unwrap_or(&proto.name)
            .bytes()
            .all(is_token_byte);
    if !name_ok {
        p.add(
            format!("{path}.name"),
            format!("{:?} is not a valid header name", proto.name),
        );
    }
    // The deprecated `*_match` forms: case-sensitive, non-empty (but see `exact_match`).
    let mut non_empty = |value: &str, field: &str| -> Option<Box<[u8]>> {
        if value.is_empty() {
            p.add(format!("{path}.{field}"), "must not be empty");
            return None;
        }
        Some(value.as_bytes().into())
    };
    let ignore_case = false;
    let rule = match &proto.header_match_specifier {
        None => Some(HeaderRule::Present(true)),
        Some(HeaderMatchSpecifier::PresentMatch(present)) => Some(HeaderRule::Present(*present)),
        // Envoy treats an empty exact value as "any value".
        Some(HeaderMatchSpecifier::ExactMatch(v)) if v.is_empty() => {
            Some(HeaderRule::Value(StringMatcher::Any))
        }
        Some(HeaderMatchSpecifier::ExactMatch(v)) => non_empty(v, "exact_match")
            .map(|value| HeaderRule::Value(StringMatcher::Exact { value, ignore_case })),
        Some(HeaderMatchSpecifier::PrefixMatch(v)) => non_empty(v, "prefix_match")
            .map(|value| HeaderRule::Value(StringMatcher::Prefix { value, ignore_case })),
        Some(HeaderMatchSpecifier::SuffixMatch(v)) => non_empty(v, "suffix_match")
            .map(|value| HeaderRule::Value(StringMatcher::Suffix { value, ignore_case })),
        Some(HeaderMatchSpecifier::ContainsMatch(v)) => non_empty(v, "contains_match")
            .map(|value| HeaderRule::Value(StringMatcher::Contains { value, ignore_case })),
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
            regex(r, &format!("{path}.safe_regex_match"), p)
                .map(|r| HeaderRule::Value(StringMatcher::Regex(r)))
        }
        Some(HeaderMatchSpecifier::RangeMatch(range)) => {
            Some(HeaderRule::Range(range.start, range.end))
        }
        Some(HeaderMatchSpecifier::StringMatch(m)) => {
            string_matcher(m, &format!("{path}.string_match"), p).map(HeaderRule::Value)
        }
    };
    Some(HeaderMatcher {
        name: proto.name.to_ascii_lowercase(),
        rule: rule.filter(|_| name_ok)?,
        invert: proto.invert_match,
        missing_as_empty: proto.treat_missing_header_as_empty,
    })
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
            Some(string_matcher(m, &format!("{path}.string_match"), p)?)
        }
        Some(QueryParameterMatchSpecifier::PresentMatch(_)) | None => None,
    };
    Some(QueryParameterMatcher {
        name: proto.name.clone(),
        value,
    })
}

/// A `StringMatcher`; exact/prefix/suffix/contains fold ASCII case with `ignore_case`, which
/// (as in Envoy) does not apply to `safe_regex`.
pub(super) fn string_matcher(
    proto: &StringProto,
    path: &str,
    p: &mut Problems,
) -> Option<StringMatcher> {
    let ignore_case = proto.ignore_case;
    let mut value = |v: &str, field: &str, may_be_empty: bool| -> Option<Box<[u8]>> {
        if v.is_empty() && !may_be_empty {
            p.add(format!("{path}.{field}"), "must not be empty");
            return None;
        }
        Some(if ignore_case {
            v.to_ascii_lowercase().into_bytes().into()
        } else {
            v.as_bytes().into()
        })
    };
    match &proto.match_pattern {
        Some(MatchPattern::Exact(v)) => Some(StringMatcher::Exact {
            value: value(v, "exact", true)?,
            ignore_case,
        }),
        Some(MatchPattern::Prefix(v)) => Some(StringMatcher::Prefix {
            value: value(v, "prefix", false)?,
            ignore_case,
        }),
        Some(MatchPattern::Suffix(v)) => Some(StringMatcher::Suffix {
            value: value(v, "suffix", false)?,
            ignore_case,
        }),
        Some(MatchPattern::Contains(v)) => Some(StringMatcher::Contains {
            value: value(v, "contains", false)?,
            ignore_case,
        }),
        Some(MatchPattern::SafeRegex(r)) => {
            regex(r, &format!("{path}.safe_regex"), p).map(StringMatcher::Regex)
        }
        // Custom matchers are rejected by the walker.
        Some(MatchPattern::Custom(_)) => None,
        None => {
            p.add(
                path,
                "one of exact, prefix, suffix, contains or safe_regex is required",
            );
            None
        }
    }
}

/// A `RegexMatcher` that must match a whole value.
fn regex(proto: &RegexMatcher, path: &str, p: &mut Problems) -> Option<Regex> {
    match full_match_regex(&proto.regex) {
        Ok(r) if !proto.regex.is_empty() => Some(r),
        Ok(_) => {
            p.add(format!("{path}.regex"), "regex is required");
            None
        }
        Err(e) => {
            p.add(format!("{path}.regex"), format!("invalid regex: {e}"));
            None
        }
    }
}
