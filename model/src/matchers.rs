//! Domain model: compiled string and header matchers (`type.matcher.v3.StringMatcher`,
//! `config.route.v3.HeaderMatcher`) with Envoy's matching rules, shared by HTTP filters and
//! route matching.
use crate::route::RouteRequest;

/// A compiled `StringMatcher`.
#[derive(Debug, Clone)]
pub struct StringMatcher {
    pattern: StringPattern,
    /// ASCII case-insensitive (literal patterns are stored lower-case); never set for regexes,
    /// on which Envoy ignores `ignore_case`.
    ignore_case: bool,
}

#[derive(Debug, Clone)]
pub enum StringPattern {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    Contains(Box<[u8]>),
    /// Anchored: the whole value must match.
    Regex(regex::bytes::Regex),
}

impl StringMatcher {
    /// A matcher; with `ignore_case`, literal patterns are lower-cased here once.
    pub fn new(pattern: StringPattern, ignore_case: bool) -> Self {
        let lower = |b: Box<[u8]>| b.to_ascii_lowercase().into_boxed_slice();
        let pattern = match pattern {
            StringPattern::Exact(p) if ignore_case => StringPattern::Exact(lower(p)),
            StringPattern::Prefix(p) if ignore_case => StringPattern::Prefix(lower(p)),
            StringPattern::Suffix(p) if ignore_case => StringPattern::Suffix(lower(p)),
            StringPattern::Contains(p) if ignore_case => StringPattern::Contains(lower(p)),
            other => other,
        };
        let ignore_case = ignore_case && !matches!(pattern, StringPattern::Regex(_));
        Self {
            pattern,
            ignore_case,
        }
    }

    /// The value of an `exact` pattern.
    pub fn exact_value(&self) -> Option<&str> {
        match &self.pattern {
            StringPattern::Exact(p) => std::str::from_utf8(p).ok(),
            _ => None,
        }
    }

    pub fn matches(&self, value: &[u8]) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match &self.pattern {
            StringPattern::Exact(p) => eq(value, p),
            StringPattern::Prefix(p) => value.len() >= p.len() && eq(&value[..p.len()], p),
            StringPattern::Suffix(p) => {
                value.len() >= p.len() && eq(&value[value.len() - p.len()..], p)
            }
            StringPattern::Contains(p) => {
                p.is_empty() || value.windows(p.len()).any(|window| eq(window, p))
            }
            StringPattern::Regex(r) => r.is_match(value),
        }
    }
}

/// Where a header matcher reads its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// `:method`.
    Method,
    /// `:path` (with the query).
    Path,
    /// A header by lower-case name (`:authority` is the `host` header).
    Named(String),
}

/// What a header matcher checks.
#[derive(Debug, Clone)]
pub enum HeaderRule {
    /// `present_match` (and a matcher with no rule: present).
    Present(bool),
    /// Deprecated `exact_match`: an empty value matches any value.
    Exact(Box<[u8]>),
    Value(StringMatcher),
    /// `range_match`: a base-10 integer in `start..end`.
    Range {
        start: i64,
        end: i64,
    },
}

/// A compiled `HeaderMatcher`. A header with several values matches on its first.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    pub source: HeaderSource,
    pub rule: HeaderRule,
    pub invert: bool,
    pub treat_missing_as_empty: bool,
}

impl HeaderMatcher {
    /// Whether `request` matches (see [`Self::matches_value`]).
    pub fn matches(&self, request: &(impl RouteRequest + ?Sized)) -> bool {
        let value = match &self.source {
            HeaderSource::Method => Some(request.method()),
            HeaderSource::Path => Some(request.path()),
            HeaderSource::Named(name) => request.header(name),
        };
        self.matches_value(value)
    }

    /// Envoy's rule on the header's value (`None`: missing): a missing header (unless treated
    /// as empty) matches only `present_match: false`, or `present_match: true` inverted;
    /// otherwise the rule's result, inverted if `invert_match`.
    pub fn matches_value(&self, value: Option<&[u8]>) -> bool {
        let value = match value {
            Some(v) => v,
            None if self.treat_missing_as_empty => &[],
            None => {
                let present = matches!(self.rule, HeaderRule::Present(true));
                let absent = matches!(self.rule, HeaderRule::Present(false));
                return if self.invert { present } else { absent };
            }
        };
        let matched = match &self.rule {
            HeaderRule::Present(present) => *present,
            HeaderRule::Exact(expected) => expected.is_empty() || value == &expected[..],
            HeaderRule::Value(matcher) => matcher.matches(value),
            HeaderRule::Range { start, end } => {
                parse_i64(value).is_some_and(|n| n >= *start && n < *end)
            }
        };
        matched != self.invert
    }
}

/// Every matcher matches (an empty list matches everything).
pub fn all_match(matchers: &[HeaderMatcher], request: &impl RouteRequest) -> bool {
    matchers.iter().all(|m| m.matches(request))
}

/// A base-10 integer with an optional sign, nothing else.
fn parse_i64(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Request(Vec<(&'static str, &'static str)>);

    impl RouteRequest for Request {
        fn method(&self) -> &[u8] {
            b"GET"
        }
        fn path(&self) -> &[u8] {
            b"/a?b=c"
        }
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.0
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        }
    }

    fn string(pattern: StringPattern, ignore_case: bool) -> StringMatcher {
        StringMatcher::new(pattern, ignore_case)
    }

    fn literal(s: &str) -> Box<[u8]> {
        s.as_bytes().into()
    }

    #[test]
    fn string_patterns_and_case() {
        let exact = string(StringPattern::Exact(literal("Abc")), false);
        assert!(exact.matches(b"Abc") && !exact.matches(b"abc"));
        let exact = string(StringPattern::Exact(literal("Abc")), true);
        assert!(exact.matches(b"aBC") && !exact.matches(b"abcd"));
        let prefix = string(StringPattern::Prefix(literal("ht")), true);
        assert!(prefix.matches(b"HTTP") && !prefix.matches(b"h"));
        let suffix = string(StringPattern::Suffix(literal(".com")), false);
        assert!(suffix.matches(b"a.com") && !suffix.matches(b"a.COM"));
        let contains = string(StringPattern::Contains(literal("mid")), true);
        assert!(contains.matches(b"aMIDb") && !contains.matches(b"mi"));
        let regex = regex::bytes::Regex::new("^(?:a+b)$").unwrap();
        let regex = string(StringPattern::Regex(regex), true);
        assert!(regex.matches(b"aab") && !regex.matches(b"aabc") && !regex.matches(b"AAB"));
    }

    fn header(rule: HeaderRule, invert: bool, empty: bool) -> HeaderMatcher {
        HeaderMatcher {
            source: HeaderSource::Named("x".into()),
            rule,
            invert,
            treat_missing_as_empty: empty,
        }
    }

    #[test]
    fn missing_headers_follow_envoy() {
        let none = Request(vec![]);
        let present = |p, invert| header(HeaderRule::Present(p), invert, false).matches(&none);
        assert!(!present(true, false));
        assert!(present(false, false));
        assert!(present(true, true));
        assert!(!present(false, true));
        let range = HeaderRule::Range { start: 0, end: 10 };
        assert!(!header(range.clone(), true, false).matches(&none));
        // Treated as empty: an empty value is not in the range, so inverted it matches.
        assert!(header(range, true, true).matches(&none));
    }

    #[test]
    fn present_values_ranges_and_inversion() {
        let r = Request(vec![("x", "-5")]);
        assert!(header(HeaderRule::Present(true), false, false).matches(&r));
        assert!(!header(HeaderRule::Present(false), false, false).matches(&r));
        assert!(header(HeaderRule::Exact(literal("")), false, false).matches(&r));
        assert!(header(HeaderRule::Exact(literal("-5")), false, false).matches(&r));
        assert!(!header(HeaderRule::Exact(literal("5")), false, false).matches(&r));
        assert!(header(HeaderRule::Range { start: -10, end: 0 }, false, false).matches(&r));
        assert!(!header(
            HeaderRule::Range {
                start: -5 + 1,
                end: 0
            },
            false,
            false
        )
        .matches(&r));
        let odd = Request(vec![("x", "1x")]);
        assert!(!header(HeaderRule::Range { start: 0, end: 10 }, false, false).matches(&odd));
        let value = HeaderRule::Value(string(StringPattern::Prefix(literal("-")), false));
        assert!(!header(value, true, false).matches(&r));
    }

    #[test]
    fn pseudo_headers_and_lists() {
        let r = Request(vec![("x", "1")]);
        let method = HeaderMatcher {
            source: HeaderSource::Method,
            rule: HeaderRule::Exact(literal("GET")),
            invert: false,
            treat_missing_as_empty: false,
        };
        let path = HeaderMatcher {
            source: HeaderSource::Path,
            rule: HeaderRule::Value(string(StringPattern::Prefix(literal("/a")), false)),
            invert: false,
            treat_missing_as_empty: false,
        };
        assert!(all_match(&[method.clone(), path], &r));
        assert!(all_match(&[], &r));
        let missing = header(HeaderRule::Present(true), false, false);
        let mut other = missing.clone();
        other.source = HeaderSource::Named("y".into());
        assert!(!all_match(&[method, other], &r));
    }
}
