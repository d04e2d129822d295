//! Route matching: one route's compiled `match` (path, headers, query parameters, gRPC) and
//! the string matchers they use, evaluated on a request without allocating.
use regex::bytes::Regex;

use crate::model::route::RouteRequest;

/// A route's compiled `match`.
#[derive(Debug)]
pub struct RouteMatcher {
    pub path: PathMatch,
    /// `case_sensitive` (default true): applies to prefix, path and path_separated_prefix.
    pub case_sensitive: bool,
    /// Every one must match.
    pub headers: Vec<HeaderMatcher>,
    /// Every one must match.
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// `grpc: {}`: only requests with a gRPC `content-type`.
    pub grpc: bool,
}

/// The path part of a route's match, compared with the path before `?`/`#`.
#[derive(Debug)]
pub enum PathMatch {
    Prefix(String),
    /// `path`: the whole path.
    Path(String),
    /// `path_separated_prefix`: the prefix followed by `/` or the end of the path.
    PathSeparatedPrefix(String),
    /// `safe_regex`: the whole path must match.
    Regex(Regex),
}

/// `HeaderMatcher`: one request header (or `:method`, `:path`, `:authority`).
#[derive(Debug)]
pub struct HeaderMatcher {
    /// Lower-case.
    pub name: String,
    pub rule: HeaderRule,
    pub invert: bool,
    /// `treat_missing_header_as_empty`: a missing header is matched as the empty value.
    pub missing_as_empty: bool,
}

#[derive(Debug)]
pub enum HeaderRule {
    /// `present_match` (a matcher with no rule is `Present(true)`): `false` matches absence.
    Present(bool),
    Value(StringMatcher),
    /// `range_match`: the value as a decimal integer in `[start, end)`.
    Range(i64, i64),
}

/// `StringMatcher` (and the deprecated header `*_match` forms mapped onto it).
#[derive(Debug)]
pub enum StringMatcher {
    /// Lower-cased when `ignore_case`.
    Exact {
        value: Box<[u8]>,
        ignore_case: bool,
    },
    Prefix {
        value: Box<[u8]>,
        ignore_case: bool,
    },
    Suffix {
        value: Box<[u8]>,
        ignore_case: bool,
    },
    Contains {
        value: Box<[u8]>,
        ignore_case: bool,
    },
    /// Whole-value match.
    Regex(Regex),
    /// The deprecated `exact_match: ""`, which Envoy treats as "any value".
    Any,
}

/// `QueryParameterMatcher`: the first value of a query parameter (undecoded, as Envoy).
#[derive(Debug)]
pub struct QueryParameterMatcher {
    pub name: String,
    /// `None` = present (`present_match`, or no matcher at all).
    pub value: Option<StringMatcher>,
}

/// Compiles a regex that must match a whole value (RE2's `FullMatch`), with the `regex`
/// crate's RE2-compatible syntax.
pub fn full_match_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

impl RouteMatcher {
    /// Whether the path condition holds for `path` (before `?`, parameters already cut).
    pub fn path_matches(&self, path: &[u8]) -> bool {
        let fold = !self.case_sensitive;
        match &self.path {
            PathMatch::Prefix(p) => starts_with(path, p.as_bytes(), fold),
            PathMatch::Path(p) => eq(path, p.as_bytes(), fold),
            PathMatch::PathSeparatedPrefix(p) => {
                starts_with(path, p.as_bytes(), fold)
                    && matches!(path.get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    /// Whether everything but the path holds (gRPC, headers, query parameters).
    pub fn rest_matches(&self, request: &impl RouteRequest) -> bool {
        (!self.grpc || is_grpc(request))
            && self.headers.iter().all(|h| h.matches(request))
            && (self.query_parameters.is_empty() || self.query_matches(request.path()))
    }

    fn query_matches(&self, path: &[u8]) -> bool {
        let query = query_of(path);
        self.query_parameters.iter().all(|q| q.matches(query))
    }

    /// How many bytes of `path` the match covers, which `prefix_rewrite` replaces: the
    /// configured prefix or path, or for regex routes the whole path before `?`.
    pub fn matched_len(&self, path: &[u8]) -> usize {
        match &self.path {
            PathMatch::Prefix(p) | PathMatch::Path(p) | PathMatch::PathSeparatedPrefix(p) => {
                p.len().min(path.len())
            }
            PathMatch::Regex(_) => path_end(path),
        }
    }
}

/// gRPC's `content-type`: `application/grpc`, optionally followed by `+subtype` or `;params`.
fn is_grpc(request: &impl RouteRequest) -> bool {
    request.header("content-type").is_some_and(|ct| {
        ct.strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
    })
}

impl HeaderMatcher {
    pub fn matches(&self, request: &impl RouteRequest) -> bool {
        let value = match self.name.as_str() {
            ":method" => Some(request.method()),
            ":path" => Some(request.path()),
            name => request.header(name),
        };
        let value = match (value, self.missing_as_empty) {
            (Some(v), _) => v,
            (None, true) => b"",
            (None, false) => {
                // Absent: only a presence rule can match (Envoy's semantics).
                return matches!(self.rule, HeaderRule::Present(present) if present == self.invert);
            }
        };
        let matched = match &self.rule {
            HeaderRule::Present(present) => *present,
            HeaderRule::Value(m) => m.matches(value),
            HeaderRule::Range(start, end) => std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|n| *start <= n && n < *end),
        };
        matched != self.invert
    }
}

impl StringMatcher {
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact {
                value: v,
                ignore_case,
            } => eq(value, v, *ignore_case),
            Self::Prefix {
                value: v,
                ignore_case,
            } => starts_with(value, v, *ignore_case),
            Self::Suffix {
                value: v,
                ignore_case,
            } => value.len() >= v.len() && eq(&value[value.len() - v.len()..], v, *ignore_case),
            Self::Contains {
                value: v,
                ignore_case,
            } => v.is_empty() || value.windows(v.len()).any(|w| eq(w, v, *ignore_case)),
            Self::Regex(r) => r.is_match(value),
            Self::Any => true,
        }
    }
}

impl QueryParameterMatcher {
    /// Matches against a raw query string (after `?`, before `#`).
    pub fn matches(&self, query: &[u8]) -> bool {
        let first = query.split(|b| *b == b'&').find_map(|pair| {
            let (key, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            (key == self.name.as_bytes()).then_some(value)
        });
        match (first, &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(m)) => m.matches(v),
        }
    }
}

/// Where the path ends: the first `?` or `#`, else the whole.
pub fn path_end(path: &[u8]) -> usize {
    path.iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(path.len())
}

/// The query of `path` (between `?` and `#`), empty without one.
fn query_of(path: &[u8]) -> &[u8] {
    let Some(start) = path.iter().position(|b| *b == b'?') else {
        return b"";
    };
    let rest = &path[start + 1..];
    let end = rest.iter().position(|b| *b == b'#').unwrap_or(rest.len());
    &rest[..end]
}

/// `a == b`; with `fold`, `b` is lower-case and `a` is compared ASCII-case-insensitively.
fn eq(a: &[u8], b: &[u8], fold: bool) -> bool {
    if fold {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn starts_with(value: &[u8], prefix: &[u8], fold: bool) -> bool {
    value.len() >= prefix.len() && eq(&value[..prefix.len()], prefix, fold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route_match::testing::Request;

    fn req<'a>(headers: &[(&'a str, &'a str)]) -> Request<'a> {
        Request {
            headers: headers.to_vec(),
            ..Request::get("/p?a=1&b&c=x%20y&a=2")
        }
    }

    fn header(name: &str, rule: HeaderRule, invert: bool, missing_as_empty: bool) -> HeaderMatcher {
        HeaderMatcher {
            name: name.into(),
            rule,
            invert,
            missing_as_empty,
        }
    }

    fn exact(v: &str) -> StringMatcher {
        StringMatcher::Exact {
            value: v.as_bytes().into(),
            ignore_case: false,
        }
    }

    #[test]
    fn string_matchers() {
        let folded = |v: &str| v.to_ascii_lowercase().into_bytes().into_boxed_slice();
        assert!(exact("abc").matches(b"abc"));
        assert!(!exact("abc").matches(b"ABC"));
        let ci = StringMatcher::Exact {
            value: folded("AbC"),
            ignore_case: true,
        };
        assert!(ci.matches(b"aBc"));
        let prefix = StringMatcher::Prefix {
            value: folded("Ab"),
            ignore_case: true,
        };
        assert!(prefix.matches(b"ABCD") && !prefix.matches(b"a"));
        let suffix = StringMatcher::Suffix {
            value: b"cd".as_slice().into(),
            ignore_case: false,
        };
        assert!(suffix.matches(b"abcd") && !suffix.matches(b"abcD") && !suffix.matches(b"d"));
        let contains = StringMatcher::Contains {
            value: folded("B-C"),
            ignore_case: true,
        };
        assert!(contains.matches(b"aB-Cd") && !contains.matches(b"abc"));
        let regex = StringMatcher::Regex(full_match_regex(r"\d{3}").unwrap());
        assert!(regex.matches(b"123") && !regex.matches(b"1234") && !regex.matches(b"a123"));
        assert!(StringMatcher::Any.matches(b""));
    }

    #[test]
    fn header_presence_absence_and_inversion_follow_envoy() {
        let present = header("x", HeaderRule::Present(true), false, false);
        assert!(present.matches(&req(&[("x", "")])));
        assert!(!present.matches(&req(&[])));
        let absent = header("x", HeaderRule::Present(false), false, false);
        assert!(absent.matches(&req(&[])) && !absent.matches(&req(&[("x", "1")])));
        let inverted_present = header("x", HeaderRule::Present(true), true, false);
        assert!(inverted_present.matches(&req(&[])));
        // A value rule never matches a missing header, inverted or not...
        let inverted = header("x", HeaderRule::Value(exact("v")), true, false);
        assert!(!inverted.matches(&req(&[])));
        assert!(inverted.matches(&req(&[("x", "w")])));
        assert!(!inverted.matches(&req(&[("x", "v")])));
        // ...unless missing counts as empty.
        let empty = header("x", HeaderRule::Value(exact("v")), true, true);
        assert!(empty.matches(&req(&[])));
        let range = header("x", HeaderRule::Range(-10, 0), false, false);
        assert!(range.matches(&req(&[("x", "-1")])));
        assert!(!range.matches(&req(&[("x", "0")])) && !range.matches(&req(&[("x", "1.5")])));
    }

    #[test]
    fn pseudo_headers_read_method_and_path() {
        let method = header(":method", HeaderRule::Value(exact("GET")), false, false);
        assert!(method.matches(&req(&[])));
        let path = header(
            ":path",
            HeaderRule::Value(StringMatcher::Prefix {
                value: b"/p?".as_slice().into(),
                ignore_case: false,
            }),
            false,
            false,
        );
        assert!(path.matches(&req(&[])));
    }

    #[test]
    fn query_parameters_use_the_first_raw_value() {
        let q = |name: &str, value: Option<StringMatcher>| QueryParameterMatcher {
            name: name.into(),
            value,
        };
        let query = query_of(b"/p?a=1&b&c=x%20y&a=2#frag");
        assert_eq!(query, b"a=1&b&c=x%20y&a=2");
        assert!(q("a", Some(exact("1"))).matches(query));
        assert!(!q("a", Some(exact("2"))).matches(query));
        assert!(q("b", None).matches(query));
        assert!(q("b", Some(exact(""))).matches(query));
        assert!(q("c", Some(exact("x%20y"))).matches(query));
        assert!(!q("d", None).matches(query));
        assert!(!q("a", None).matches(b""));
    }

    #[test]
    fn path_matches_and_matched_len() {
        let m = |path, case_sensitive| RouteMatcher {
            path,
            case_sensitive,
            headers: vec![],
            query_parameters: vec![],
            grpc: false,
        };
        let sep = m(PathMatch::PathSeparatedPrefix("/api".into()), true);
        assert!(sep.path_matches(b"/api") && sep.path_matches(b"/api/x"));
        assert!(!sep.path_matches(b"/apix"));
        let ci = m(PathMatch::Prefix("/api".into()), false);
        assert!(ci.path_matches(b"/API/v1"));
        assert_eq!(ci.matched_len(b"/API/v1"), 4);
        let regex = m(
            PathMatch::Regex(full_match_regex("/v[0-9]+/.*").unwrap()),
            true,
        );
        assert!(regex.path_matches(b"/v12/x") && !regex.path_matches(b"/x/v12/x"));
        assert_eq!(regex.matched_len(b"/v1/x?q"), 5);
    }

    #[test]
    fn grpc_needs_a_grpc_content_type() {
        let m = RouteMatcher {
            path: PathMatch::Prefix("/".into()),
            case_sensitive: true,
            headers: vec![],
            query_parameters: vec![],
            grpc: true,
        };
        for (ct, ok) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=x", true),
            ("application/grpcx", false),
            ("text/plain", false),
        ] {
            assert_eq!(m.rest_matches(&req(&[("content-type", ct)])), ok, "{ct}");
        }
        assert!(!m.rest_matches(&req(&[])));
    }
}
