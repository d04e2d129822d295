//! Route matching: what the router computes from a matched route — the upstream path after
//! `prefix_rewrite` / `regex_rewrite`, and a redirect's `Location` (Envoy's rules for scheme,
//! host, port, path and query).
use regex::bytes::Regex;

use super::{domains::port_start, matcher::path_end, RouteMatcher};
use crate::route::{Forward, Redirect, RedirectPath, Route, RouteAction};

/// `RegexMatchAndSubstitute`: every match of `pattern` in the path (before `?`) is replaced.
#[derive(Debug)]
pub struct RegexRewrite {
    pub pattern: Regex,
    /// The substitution in the `regex` crate's syntax (`${1}`, `$$`).
    template: Vec<u8>,
}

/// Why a `RegexMatchAndSubstitute` does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("invalid regex: {0}")]
    Regex(String),
    #[error("substitution refers to group \\{group} but the pattern has {groups} group(s)")]
    NoSuchGroup { group: u32, groups: usize },
    #[error("substitution has a `\\` not followed by a digit or `\\`")]
    BadEscape,
}

impl RegexRewrite {
    /// Compiles `pattern` and an RE2-style `substitution` (`\1` for group 1, `\\` for `\`).
    pub fn new(pattern: &str, substitution: &str) -> Result<Self, RewriteError> {
        let pattern = Regex::new(pattern).map_err(|e| RewriteError::Regex(e.to_string()))?;
        let groups = pattern.captures_len() - 1;
        let mut template = Vec::with_capacity(substitution.len());
        let mut chars = substitution.bytes();
        while let Some(b) = chars.next() {
            match b {
                b'\\' => match chars.next() {
                    Some(b'\\') => template.push(b'\\'),
                    Some(d @ b'0'..=b'9') => {
                        let group = u32::from(d - b'0');
                        if group as usize > groups {
                            return Err(RewriteError::NoSuchGroup { group, groups });
                        }
                        template.extend_from_slice(format!("${{{group}}}").as_bytes());
                    }
                    _ => return Err(RewriteError::BadEscape),
                },
                b'$' => template.extend_from_slice(b"$$"),
                b => template.push(b),
            }
        }
        Ok(Self { pattern, template })
    }

    /// `value` with every match replaced (a whole header value).
    pub fn replace_all(&self, value: &[u8]) -> Vec<u8> {
        self.pattern
            .replace_all(value, self.template.as_slice())
            .into_owned()
    }

    /// `path` with the rewrite applied before its query; the query is kept.
    pub fn apply(&self, path: &[u8]) -> Vec<u8> {
        let end = path_end(path);
        let mut out = self
            .pattern
            .replace_all(&path[..end], self.template.as_slice())
            .into_owned();
        out.extend_from_slice(&path[end..]);
        out
    }
}

/// `path` with the `prefix_rewrite` replacing what `matcher` matched.
fn replace_matched(matcher: &RouteMatcher, prefix: &str, path: &[u8]) -> Vec<u8> {
    let rest = &path[matcher.matched_len(path)..];
    let mut out = Vec::with_capacity(prefix.len() + rest.len());
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(rest);
    out
}

impl Route {
    /// The path to send upstream when this is a forwarding route with a path rewrite; `None`
    /// keeps `path` (the request's path with query, as matched).
    pub fn rewritten_path(&self, path: &[u8]) -> Option<Vec<u8>> {
        let RouteAction::Forward(forward) = &self.action else {
            return None;
        };
        forward.rewritten_path(&self.matcher, path)
    }

    /// The `Location` of a redirect route (`None` for other actions). `scheme` is the
    /// request's (`http` / `https`), `authority` its `host`, `path` its path with query.
    pub fn redirect_location(
        &self,
        scheme: &[u8],
        authority: &[u8],
        path: &[u8],
    ) -> Option<Vec<u8>> {
        let RouteAction::Redirect(redirect) = &self.action else {
            return None;
        };
        Some(redirect.location(&self.matcher, scheme, authority, path))
    }
}

impl Forward {
    /// See `Route::rewritten_path`; `matcher` is the route's.
    pub fn rewritten_path(&self, matcher: &RouteMatcher, path: &[u8]) -> Option<Vec<u8>> {
        if let Some(prefix) = &self.prefix_rewrite {
            Some(replace_matched(matcher, prefix, path))
        } else {
            self.regex_rewrite.as_ref().map(|r| r.apply(path))
        }
    }
}

impl Redirect {
    /// See `Route::redirect_location`; `matcher` is the route's.
    pub fn location(
        &self,
        matcher: &RouteMatcher,
        scheme: &[u8],
        authority: &[u8],
        path: &[u8],
    ) -> Vec<u8> {
        let rewritten;
        let mut path = match &self.path {
            RedirectPath::Prefix(prefix) => {
                rewritten = replace_matched(matcher, prefix, path);
                &rewritten[..]
            }
            RedirectPath::Regex(rewrite) => {
                rewritten = rewrite.apply(path);
                &rewritten[..]
            }
            RedirectPath::Keep | RedirectPath::Path(_) => path,
        };
        let mut own_query = false;
        let new_path;
        if let RedirectPath::Path(p) = &self.path {
            own_query = p.contains('?');
            let query = if own_query {
                &[][..]
            } else {
                &path[query_start(path)..]
            };
            new_path = [p.as_bytes(), query].concat();
            path = &new_path;
        }
        if self.strip_query && !own_query {
            path = &path[..query_start(path)];
        }
        let final_scheme = self.scheme.as_deref().map_or(scheme, str::as_bytes);
        let port = self.port.map(|p| format!(":{p}"));
        let host = match &self.host {
            Some(host) => host.as_bytes(),
            None => request_host(authority, scheme, final_scheme, port.is_some()),
        };
        let mut out = Vec::with_capacity(final_scheme.len() + host.len() + path.len() + 10);
        out.extend_from_slice(final_scheme);
        out.extend_from_slice(b"://");
        out.extend_from_slice(host);
        out.extend_from_slice(port.as_deref().unwrap_or("").as_bytes());
        if path.first() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(path);
        out
    }
}

/// Where the query starts (`?`), else the end.
fn query_start(path: &[u8]) -> usize {
    path.iter().position(|b| *b == b'?').unwrap_or(path.len())
}

/// The request's authority for a redirect: its port is dropped when a new port replaces it,
/// or when the scheme changes and the port was the old scheme's default (`:80` for http,
/// `:443` for https).
fn request_host<'a>(
    authority: &'a [u8],
    scheme: &[u8],
    new_scheme: &[u8],
    new_port: bool,
) -> &'a [u8] {
    let Some(colon) = port_start(authority) else {
        return authority;
    };
    let port = &authority[colon..];
    let default_port = (scheme.eq_ignore_ascii_case(b"http") && port == b":80")
        || (scheme.eq_ignore_ascii_case(b"https") && port == b":443");
    if new_port || (new_scheme != scheme && default_port) {
        &authority[..colon]
    } else {
        authority
    }
}

/// `Location` for a virtual host's `require_tls` redirect (Envoy: `https://` + the request's
/// authority, port included, + path).
pub fn https_redirect_location(authority: &[u8], path: &[u8]) -> Vec<u8> {
    [b"https://", authority, path].concat()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        filters::PerRouteFilters,
        route::{ClusterSpecifier, HeaderMutations, HostRewrite},
        route_match::{full_match_regex, PathMatch},
    };

    fn matcher(path: PathMatch) -> RouteMatcher {
        RouteMatcher {
            path,
            case_sensitive: true,
            headers: vec![],
            query_parameters: vec![],
            grpc: false,
            tls_context: Default::default(),
        }
    }

    fn forward(prefix: Option<&str>, regex: Option<RegexRewrite>) -> Forward {
        Forward {
            cluster: ClusterSpecifier::Name(crate::ClusterRef::named("c")),
            cluster_not_found_status: 503,
            prefix_rewrite: prefix.map(str::to_string),
            regex_rewrite: regex,
            host_rewrite: HostRewrite::None,
            timeout: Some(Duration::from_secs(15)),
            idle_timeout: None,
            grpc_timeout: None,
            retry_policy: None,
            mirrors: vec![],
            upgrades: vec![],
            terminates_connect: false,
            hash_policy: Default::default(),
            metadata_match: None,
        }
    }

    fn text(bytes: Option<Vec<u8>>) -> Option<String> {
        bytes.map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn prefix_rewrite_replaces_what_matched() {
        let f = forward(Some("/v2"), None);
        let prefix = matcher(PathMatch::Prefix("/v1".into()));
        assert_eq!(
            text(f.rewritten_path(&prefix, b"/v1/a?q=1")),
            Some("/v2/a?q=1".into())
        );
        let f = forward(Some("/"), None);
        let ci = RouteMatcher {
            case_sensitive: false,
            ..matcher(PathMatch::Prefix("/api/".into()))
        };
        assert_eq!(text(f.rewritten_path(&ci, b"/API/x")), Some("/x".into()));
        let exact = matcher(PathMatch::Path("/old".into()));
        let f = forward(Some("/new"), None);
        assert_eq!(
            text(f.rewritten_path(&exact, b"/old?x")),
            Some("/new?x".into())
        );
        let regex = matcher(PathMatch::Regex(full_match_regex("/r/.*").unwrap()));
        assert_eq!(
            text(f.rewritten_path(&regex, b"/r/a/b?x")),
            Some("/new?x".into())
        );
        let none = forward(None, None);
        assert_eq!(none.rewritten_path(&exact, b"/old"), None);
    }

    #[test]
    fn regex_rewrite_uses_re2_substitutions_and_keeps_the_query() {
        let r = RegexRewrite::new(r"^/service/([^/]+)(/.*)$", r"\2/instance/\1").unwrap();
        let f = forward(None, Some(r));
        let m = matcher(PathMatch::Prefix("/".into()));
        assert_eq!(
            text(f.rewritten_path(&m, b"/service/foo/v1/api?x=/service/y")),
            Some("/v1/api/instance/foo?x=/service/y".into())
        );
        let every = RegexRewrite::new("o", "0$").unwrap();
        assert_eq!(every.apply(b"/foo?o"), b"/f0$0$?o");
        let backslash = RegexRewrite::new("a", r"\\").unwrap();
        assert_eq!(backslash.apply(b"/a"), br"/\");
        assert_eq!(
            RegexRewrite::new("(a)", r"\2").unwrap_err(),
            RewriteError::NoSuchGroup {
                group: 2,
                groups: 1
            }
        );
        assert_eq!(
            RegexRewrite::new("a", r"\x").unwrap_err(),
            RewriteError::BadEscape
        );
        assert!(matches!(
            RegexRewrite::new("(", "").unwrap_err(),
            RewriteError::Regex(_)
        ));
    }

    fn redirect(path: RedirectPath) -> Redirect {
        Redirect {
            scheme: None,
            host: None,
            port: None,
            path,
            status: 301,
            strip_query: false,
        }
    }

    fn location(r: &Redirect, m: &RouteMatcher, scheme: &str, host: &str, path: &str) -> String {
        String::from_utf8(r.location(m, scheme.as_bytes(), host.as_bytes(), path.as_bytes()))
            .unwrap()
    }

    #[test]
    fn redirect_location_follows_envoys_rules() {
        let m = matcher(PathMatch::Prefix("/old".into()));
        let keep = redirect(RedirectPath::Keep);
        assert_eq!(
            location(&keep, &m, "http", "a.com", "/old/x?q"),
            "http://a.com/old/x?q"
        );

        let https = Redirect {
            scheme: Some("https".into()),
            ..redirect(RedirectPath::Keep)
        };
        assert_eq!(
            location(&https, &m, "http", "a.com:80", "/x"),
            "https://a.com/x"
        );
        assert_eq!(
            location(&https, &m, "http", "a.com:8080", "/x"),
            "https://a.com:8080/x"
        );
        assert_eq!(
            location(&https, &m, "https", "a.com:443", "/x"),
            "https://a.com:443/x"
        );

        let host_port = Redirect {
            host: Some("b.com".into()),
            port: Some(8443),
            ..redirect(RedirectPath::Keep)
        };
        assert_eq!(
            location(&host_port, &m, "http", "a.com:1", "/x"),
            "http://b.com:8443/x"
        );
        let port = Redirect {
            port: Some(9000),
            ..redirect(RedirectPath::Keep)
        };
        assert_eq!(
            location(&port, &m, "http", "[::1]:1", "/x"),
            "http://[::1]:9000/x"
        );

        let path = redirect(RedirectPath::Path("/new".into()));
        assert_eq!(
            location(&path, &m, "http", "a", "/old/x?q=1"),
            "http://a/new?q=1"
        );
        let path_query = Redirect {
            strip_query: true,
            ..redirect(RedirectPath::Path("/new?z=2".into()))
        };
        assert_eq!(
            location(&path_query, &m, "http", "a", "/old?q"),
            "http://a/new?z=2"
        );

        let prefix = Redirect {
            strip_query: true,
            ..redirect(RedirectPath::Prefix("/fresh".into()))
        };
        assert_eq!(
            location(&prefix, &m, "http", "a", "/old/x?q=1"),
            "http://a/fresh/x"
        );

        let regex = redirect(RedirectPath::Regex(RegexRewrite::new("x", "y").unwrap()));
        assert_eq!(
            location(&regex, &m, "http", "a", "/old/x?x"),
            "http://a/old/y?x"
        );

        let relative = redirect(RedirectPath::Prefix("new".into()));
        assert_eq!(
            location(&relative, &m, "http", "a", "/old/x"),
            "http://a/new/x"
        );
    }

    #[test]
    fn route_helpers_dispatch_on_the_action() {
        let route = |action| Route {
            name: String::new(),
            matcher: matcher(PathMatch::Prefix("/a".into())),
            action,
            headers: HeaderMutations::default(),
            per_filter: PerRouteFilters::default(),
            decorator: None,
        };
        let fwd = route(RouteAction::Forward(forward(Some("/b"), None)));
        assert_eq!(text(fwd.rewritten_path(b"/a/1")), Some("/b/1".into()));
        assert_eq!(fwd.redirect_location(b"http", b"h", b"/a"), None);
        let red = route(RouteAction::Redirect(redirect(RedirectPath::Keep)));
        assert_eq!(red.rewritten_path(b"/a"), None);
        assert_eq!(
            text(red.redirect_location(b"http", b"h", b"/a")),
            Some("http://h/a".into())
        );
        assert_eq!(
            https_redirect_location(b"h:8080", b"/p?q"),
            b"https://h:8080/p?q"
        );
    }
}
