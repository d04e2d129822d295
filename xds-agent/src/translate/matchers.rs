//! Translator: `StringMatcher`, `RegexMatcher`, `HeaderMatcher` and `MetadataMatcher` into the
//! compiled matchers of `model::matchers` and `model::metadata` (regexes built here, on the
//! agent), for route matching and HTTP filters alike. Errors name `path` (where the matcher sits) and the enclosing config's `type_url`.
#![allow(deprecated)] // HeaderMatcher's exact/prefix/suffix/contains/safe_regex_match fields.

use envoy_types::pb::envoy::{
    config::route::v3::{
        header_matcher::HeaderMatchSpecifier, HeaderMatcher as HeaderMatcherProto,
    },
    r#type::matcher::v3::{
        double_matcher, list_matcher, metadata_matcher::path_segment::Segment,
        string_matcher::MatchPattern, value_matcher, MetadataMatcher as MetadataMatcherProto,
        RegexMatcher, StringMatcher as StringMatcherProto, ValueMatcher as ValueMatcherProto,
    },
};

use super::{route::is_token_byte, TranslateError};
use model::{
    matchers::{HeaderMatcher, HeaderRule, HeaderSource, StringMatcher, StringPattern},
    metadata::{MetadataMatcher, ValueMatcher},
    route_match::full_match_regex,
};

/// Where a matcher sits, for its errors.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub path: &'a str,
    pub type_url: Option<&'a str>,
}

impl At<'_> {
    pub(super) fn error(&self, field: &str, message: impl Into<String>) -> TranslateError {
        let path = match field {
            "" => self.path.to_string(),
            field => format!("{}.{field}", self.path),
        };
        TranslateError::new(path, self.type_url, message)
    }

    pub(super) fn below(&self, field: &str) -> String {
        format!("{}.{field}", self.path)
    }
}

/// A `StringMatcher`. A `custom` matcher is left to the walker, which rejects it.
pub(super) fn string_matcher(
    proto: &StringMatcherProto,
    at: At,
    errors: &mut Vec<TranslateError>,
) -> Option<StringMatcher> {
    let non_empty = |s: &str, name: &str, errors: &mut Vec<TranslateError>| {
        if s.is_empty() {
            errors.push(at.error(name, "must not be empty"));
            None
        } else {
            Some(s.as_bytes().into())
        }
    };
    let pattern = match proto.match_pattern.as_ref() {
        None => {
            errors.push(at.error(
                "",
                "one of exact, prefix, suffix, contains, safe_regex is required",
            ));
            return None;
        }
        Some(MatchPattern::Exact(s)) => StringPattern::Exact(s.as_bytes().into()),
        Some(MatchPattern::Prefix(s)) => StringPattern::Prefix(non_empty(s, "prefix", errors)?),
        Some(MatchPattern::Suffix(s)) => StringPattern::Suffix(non_empty(s, "suffix", errors)?),
        Some(MatchPattern::Contains(s)) => {
            StringPattern::Contains(non_empty(s, "contains", errors)?)
        }
        Some(MatchPattern::SafeRegex(r)) => {
            let path = at.below("safe_regex");
            StringPattern::Regex(regex(r, At { path: &path, ..at }, errors)?)
        }
        Some(MatchPattern::Custom(_)) => return None,
    };
    Some(StringMatcher::new(pattern, proto.ignore_case))
}

/// A `RegexMatcher`, anchored: the whole value must match (Envoy's rule).
pub(super) fn regex(
    proto: &RegexMatcher,
    at: At,
    errors: &mut Vec<TranslateError>,
) -> Option<regex::bytes::Regex> {
    if proto.regex.is_empty() {
        errors.push(at.error("regex", "regex is required"));
        return None;
    }
    match full_match_regex(&proto.regex) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(at.error("regex", format!("invalid regex {:?}: {e}", proto.regex)));
            None
        }
    }
}

/// A `MetadataMatcher` over dynamic metadata: a filter namespace, a path of keys, a value
/// matcher.
pub(super) fn metadata_matcher(
    proto: &MetadataMatcherProto,
    at: At,
    errors: &mut Vec<TranslateError>,
) -> Option<MetadataMatcher> {
    let before = errors.len();
    if proto.filter.is_empty() {
        errors.push(at.error("filter", "filter is required"));
    }
    if proto.path.is_empty() {
        errors.push(at.error("path", "path needs at least one key"));
    }
    let path = proto
        .path
        .iter()
        .enumerate()
        .filter_map(|(i, segment)| match &segment.segment {
            Some(Segment::Key(key)) if !key.is_empty() => Some(key.as_str().into()),
            _ => {
                errors.push(at.error(&format!("path[{i}].key"), "key is required"));
                None
            }
        })
        .collect();
    let value = match &proto.value {
        Some(value) => value_matcher(value, &at.below("value"), at, errors),
        None => {
            errors.push(at.error("value", "value is required"));
            None
        }
    };
    (errors.len() == before).then_some(MetadataMatcher {
        filter: proto.filter.as_str().into(),
        path,
        value: value?,
        invert: proto.invert,
    })
}

fn value_matcher(
    proto: &ValueMatcherProto,
    path: &str,
    at: At,
    errors: &mut Vec<TranslateError>,
) -> Option<ValueMatcher> {
    use value_matcher::MatchPattern as Pattern;
    let at = At { path, ..at };
    Some(match &proto.match_pattern {
        Some(Pattern::NullMatch(_)) => ValueMatcher::Null,
        Some(Pattern::DoubleMatch(d)) => match &d.match_pattern {
            Some(double_matcher::MatchPattern::Range(r)) => ValueMatcher::DoubleRange {
                start: r.start,
                end: r.end,
            },
            Some(double_matcher::MatchPattern::Exact(x)) => ValueMatcher::DoubleExact(*x),
            None => {
                errors.push(at.error("double_match", "range or exact is required"));
                return None;
            }
        },
        Some(Pattern::StringMatch(m)) => {
            let path = at.below("string_match");
            ValueMatcher::String(string_matcher(m, At { path: &path, ..at }, errors)?)
        }
        Some(Pattern::BoolMatch(b)) => ValueMatcher::Bool(*b),
        Some(Pattern::PresentMatch(p)) => ValueMatcher::Present(*p),
        Some(Pattern::ListMatch(list)) => match &list.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(inner)) => {
                let path = at.below("list_match.one_of");
                ValueMatcher::OneOf(Box::new(value_matcher(inner, &path, at, errors)?))
            }
            None => {
                errors.push(at.error("list_match", "one_of is required"));
                return None;
            }
        },
        Some(Pattern::OrMatch(or)) => ValueMatcher::Or(
            or.value_matchers
                .iter()
                .enumerate()
                .map(|(i, inner)| {
                    let path = at.below(&format!("or_match.value_matchers[{i}]"));
                    value_matcher(inner, &path, at, errors)
                })
                .collect::<Option<_>>()?,
        ),
        None => {
            errors.push(at.error("", "a value matcher is required"));
            return None;
        }
    })
}

/// A `HeaderMatcher`.
pub(super) fn header_matcher(
    proto: &HeaderMatcherProto,
    at: At,
    errors: &mut Vec<TranslateError>,
) -> Option<HeaderMatcher> {
    let name = proto.name.to_ascii_lowercase();
    let token = |n: &str| !n.is_empty() && n.bytes().all(is_token_byte);
    let source = match name.as_str() {
        "" => {
            errors.push(at.error("name", "name is required"));
            return None;
        }
        ":method" => HeaderSource::Method,
        ":path" => HeaderSource::Path,
        ":authority" => HeaderSource::Named(name),
        pseudo if pseudo.starts_with(':') => {
            errors.push(at.error(
                "name",
                format!("{pseudo}: only :authority, :method and :path can be matched"),
            ));
            return None;
        }
        n if !token(n) => {
            errors.push(at.error(
                "name",
                format!("{:?} is not a valid header name", proto.name),
            ));
            return None;
        }
        _ => HeaderSource::Named(name),
    };
    let literal = |s: &str,
                   which: &str,
                   make: fn(Box<[u8]>) -> StringPattern,
                   errors: &mut Vec<TranslateError>| {
        if s.is_empty() {
            errors.push(at.error(which, "must not be empty (use present_match)"));
            return None;
        }
        Some(HeaderRule::Value(StringMatcher::new(
            make(s.as_bytes().into()),
            false,
        )))
    };
    let rule = match proto.header_match_specifier.as_ref() {
        None => HeaderRule::Present(true),
        Some(HeaderMatchSpecifier::PresentMatch(present)) => HeaderRule::Present(*present),
        Some(HeaderMatchSpecifier::ExactMatch(s)) => HeaderRule::Exact(s.as_bytes().into()),
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => {
            literal(s, "prefix_match", StringPattern::Prefix, errors)?
        }
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => {
            literal(s, "suffix_match", StringPattern::Suffix, errors)?
        }
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => {
            literal(s, "contains_match", StringPattern::Contains, errors)?
        }
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
            let path = at.below("safe_regex_match");
            let r = regex(r, At { path: &path, ..at }, errors)?;
            HeaderRule::Value(StringMatcher::new(StringPattern::Regex(r), false))
        }
        Some(HeaderMatchSpecifier::RangeMatch(range)) => HeaderRule::Range {
            start: range.start,
            end: range.end,
        },
        Some(HeaderMatchSpecifier::StringMatch(m)) => {
            let path = at.below("string_match");
            HeaderRule::Value(string_matcher(m, At { path: &path, ..at }, errors)?)
        }
    };
    Some(HeaderMatcher {
        source,
        rule,
        invert: proto.invert_match,
        treat_missing_as_empty: proto.treat_missing_header_as_empty,
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::r#type::v3::Int64Range;

    use super::*;

    fn at(field: &str) -> String {
        format!("p.{field}")
    }

    fn site(path: &str) -> At<'_> {
        At {
            path,
            type_url: Some("t"),
        }
    }

    fn header(name: &str, spec: Option<HeaderMatchSpecifier>) -> HeaderMatcherProto {
        HeaderMatcherProto {
            name: name.into(),
            header_match_specifier: spec,
            ..Default::default()
        }
    }

    #[test]
    fn header_matchers_compile() {
        let mut errors = vec![];
        let m = header_matcher(&header("X-Env", None), site(&at("h")), &mut errors).unwrap();
        assert_eq!(m.source, HeaderSource::Named("x-env".into()));
        assert!(matches!(m.rule, HeaderRule::Present(true)));
        let m = header_matcher(&header(":method", None), site(&at("h")), &mut errors).unwrap();
        assert_eq!(m.source, HeaderSource::Method);
        let range = Some(HeaderMatchSpecifier::RangeMatch(Int64Range {
            start: 1,
            end: 5,
        }));
        let m = header_matcher(&header("n", range), site(&at("h")), &mut errors).unwrap();
        assert!(matches!(m.rule, HeaderRule::Range { start: 1, end: 5 }));
        let regex = Some(HeaderMatchSpecifier::SafeRegexMatch(RegexMatcher {
            regex: "a|b".into(),
            ..Default::default()
        }));
        let m = header_matcher(&header("r", regex), site(&at("h")), &mut errors).unwrap();
        let HeaderRule::Value(v) = &m.rule else {
            panic!()
        };
        assert!(
            v.matches(b"a") && !v.matches(b"ab"),
            "alternatives stay anchored"
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn bad_matchers_name_their_field() {
        let mut errors = vec![];
        let bad_regex = Some(HeaderMatchSpecifier::StringMatch(StringMatcherProto {
            match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                regex: "(".into(),
                ..Default::default()
            })),
            ignore_case: false,
        }));
        let empty_prefix = Some(HeaderMatchSpecifier::PrefixMatch(String::new()));
        for (name, spec) in [
            ("", None),
            (":scheme", None),
            ("a", bad_regex),
            ("a", empty_prefix),
        ] {
            assert!(header_matcher(&header(name, spec), site(&at("h")), &mut errors).is_none());
        }
        let none = StringMatcherProto::default();
        assert!(string_matcher(&none, site(&at("s")), &mut errors).is_none());
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "p.h.name",
                "p.h.name",
                "p.h.string_match.safe_regex.regex",
                "p.h.prefix_match",
                "p.s"
            ]
        );
    }
}
