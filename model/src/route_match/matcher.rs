//! Route matching: one route's compiled `match` (path, headers, query parameters, gRPC),
//! evaluated on a request without allocating; header and string matchers are the model's
//! (`model::matchers`), shared with the HTTP filters.
use regex::bytes::Regex;

use crate::{
    matchers::{HeaderMatcher, StringMatcher},
    route::{ClientCertificateState, RouteRequest},
};

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
    /// `tls_context`: the client certificate the connection must (or must not) have.
    pub tls_context: TlsContextMatch,
}

/// `TlsContextMatchOptions`: each value set must equal the connection's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsContextMatch {
    pub presented: Option<bool>,
    pub validated: Option<bool>,
}

impl TlsContextMatch {
    pub fn matches(&self, state: ClientCertificateState) -> bool {
        self.presented.is_none_or(|p| p == state.presented)
            && self.validated.is_none_or(|v| v == state.validated)
    }
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
    /// `connect_matcher`: CONNECT requests only, whatever their (empty) path; the route index
    /// offers these routes to CONNECT requests alone.
    Connect,
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
            PathMatch::Connect => false,
        }
    }

    /// Whether everything but the path holds (gRPC, headers, query parameters, TLS).
    pub fn rest_matches(&self, request: &impl RouteRequest) -> bool {
        (!self.grpc || is_grpc(request))
            && self.tls_context.matches(request.client_certificate())
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
            PathMatch::Regex(_) | PathMatch::Connect => path_end(path),
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
    use crate::{matchers::StringPattern, route_match::testing::Request};

    fn req<'a>(headers: &[(&'a str, &'a str)]) -> Request<'a> {
        Request {
            headers: headers.to_vec(),
            ..Request::get("/p?a=1&b&c=x%20y&a=2")
        }
    }

    fn exact(v: &str) -> StringMatcher {
        StringMatcher::new(StringPattern::Exact(v.as_bytes().into()), false)
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
            tls_context: TlsContextMatch::default(),
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
    fn tls_context_compares_each_value_set() {
        let none = ClientCertificateState::default();
        let validated = ClientCertificateState {
            presented: true,
            validated: true,
        };
        let m = |presented, validated| TlsContextMatch {
            presented,
            validated,
        };
        assert!(m(None, None).matches(none) && m(None, None).matches(validated));
        assert!(m(Some(true), None).matches(validated) && !m(Some(true), None).matches(none));
        assert!(m(Some(false), None).matches(none) && !m(Some(false), None).matches(validated));
        assert!(m(None, Some(false)).matches(none));
        assert!(!m(Some(true), Some(false)).matches(validated));
    }

    #[test]
    fn grpc_needs_a_grpc_content_type() {
        let m = RouteMatcher {
            path: PathMatch::Prefix("/".into()),
            case_sensitive: true,
            headers: vec![],
            query_parameters: vec![],
            grpc: true,
            tls_context: TlsContextMatch::default(),
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
