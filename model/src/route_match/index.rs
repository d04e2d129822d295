//! Route matching: the per-virtual-host route index. Plain `path` routes sit in hash maps;
//! `prefix` and `path_separated_prefix` routes in a stride tree, where each node jumps to its
//! children by hashing the next `stride` bytes of the path (the distance to the nearest
//! deeper route key), so a lookup makes one probe per route-key length along the path
//! however many routes the table holds. Case-insensitive routes have their own map and
//! tree over lower-cased keys; regex routes are kept in a list, and `connect_matcher` routes
//! in another that only CONNECT requests read. Every entry carries its
//! config position, and the lowest position whose whole match holds wins — the same answer
//! as Envoy's first-match scan.
use super::{
    fast_hash::FastMap,
    matcher::{path_end, PathMatch},
};
use crate::route::{Route, RouteRequest};

/// Paths up to this length are lower-cased on the stack for case-insensitive routes.
const INLINE_PATH: usize = 512;

/// Index of a virtual host's routes.
#[derive(Debug, Default)]
pub struct RouteIndex {
    exact: FastMap<Box<[u8]>, Vec<u32>>,
    prefixes: StrideTree,
    /// Case-insensitive routes, keyed lower-case.
    folded_exact: FastMap<Box<[u8]>, Vec<u32>>,
    folded_prefixes: StrideTree,
    /// Positions of routes matched one by one (regex paths), ascending.
    scanned: Vec<u32>,
    /// Positions of `connect_matcher` routes, ascending: only CONNECT requests see them.
    connect: Vec<u32>,
    /// `ignore_path_parameters_in_path_matching`: paths match up to the first `;`.
    ignore_path_parameters: bool,
}

impl RouteIndex {
    /// Indexes `routes` (positions are their indexes in the slice).
    pub fn build(routes: &[Route], ignore_path_parameters: bool) -> Self {
        let mut index = Self {
            ignore_path_parameters,
            ..Self::default()
        };
        let mut prefixes = Vec::new();
        let mut folded_prefixes = Vec::new();
        for (position, route) in routes.iter().enumerate() {
            let position = position as u32;
            let fold = !route.matcher.case_sensitive;
            let key = |p: &str| -> Box<[u8]> {
                if fold {
                    p.to_ascii_lowercase().into_bytes().into()
                } else {
                    p.as_bytes().into()
                }
            };
            let tree = if fold {
                &mut folded_prefixes
            } else {
                &mut prefixes
            };
            match &route.matcher.path {
                PathMatch::Path(p) => {
                    let map = if fold {
                        &mut index.folded_exact
                    } else {
                        &mut index.exact
                    };
                    map.entry(key(p)).or_default().push(position);
                }
                PathMatch::Prefix(p) => tree.push(Entry {
                    key: key(p),
                    separated: false,
                    position,
                }),
                PathMatch::PathSeparatedPrefix(p) => tree.push(Entry {
                    key: key(p),
                    separated: true,
                    position,
                }),
                PathMatch::Regex(_) => index.scanned.push(position),
                PathMatch::Connect => index.connect.push(position),
            }
        }
        index.prefixes = StrideTree::build(prefixes);
        index.folded_prefixes = StrideTree::build(folded_prefixes);
        index
    }

    /// The position of the first route (config order) that matches `request`.
    pub fn find(&self, routes: &[Route], request: &impl RouteRequest) -> Option<usize> {
        let full = request.path();
        let mut path = &full[..path_end(full)];
        if self.ignore_path_parameters {
            if let Some(semicolon) = path.iter().position(|b| *b == b';') {
                path = &path[..semicolon];
            }
        }
        let mut best = u32::MAX;
        let consider = |candidates: &[u32], best: &mut u32, needs_path: bool| {
            for &position in candidates {
                if position >= *best {
                    return;
                }
                let matcher = &routes[position as usize].matcher;
                if (!needs_path || matcher.path_matches(path)) && matcher.rest_matches(request) {
                    *best = position;
                    return;
                }
            }
        };
        if let Some(list) = self.exact.get(path) {
            consider(list, &mut best, false);
        }
        self.prefixes
            .walk(path, |list| consider(list, &mut best, false));
        if !self.folded_exact.is_empty() || !self.folded_prefixes.nodes.is_empty() {
            let mut inline = [0u8; INLINE_PATH];
            let owned;
            let folded: &[u8] = if path.len() <= INLINE_PATH {
                inline[..path.len()].copy_from_slice(path);
                inline[..path.len()].make_ascii_lowercase();
                &inline[..path.len()]
            } else {
                owned = path.to_ascii_lowercase();
                &owned
            };
            if let Some(list) = self.folded_exact.get(folded) {
                consider(list, &mut best, false);
            }
            self.folded_prefixes
                .walk(folded, |list| consider(list, &mut best, false));
        }
        consider(&self.scanned, &mut best, true);
        if request.method() == b"CONNECT" {
            consider(&self.connect, &mut best, false);
        }
        (best != u32::MAX).then_some(best as usize)
    }
}

/// A prefix route's key, as indexed.
struct Entry {
    key: Box<[u8]>,
    /// `path_separated_prefix` (else `prefix`).
    separated: bool,
    position: u32,
}

/// The prefix routes' tree; node 0 (if any) is the root, whose key is empty.
#[derive(Debug, Default)]
struct StrideTree {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// Routes whose key is this node's, by kind; each ascending by position.
    prefix: Vec<u32>,
    separated: Vec<u32>,
    /// How many path bytes lead to a child (the shortest deeper key minus this one); 0 for a
    /// leaf.
    stride: usize,
    /// Children by those bytes.
    children: FastMap<Box<[u8]>, u32>,
}

impl StrideTree {
    fn build(mut entries: Vec<Entry>) -> Self {
        let mut tree = Self::default();
        if entries.is_empty() {
            return tree;
        }
        // By key, then position: a node's own keys come first in its range, in config order.
        entries.sort_by(|a, b| a.key.cmp(&b.key).then(a.position.cmp(&b.position)));
        tree.nodes.push(Node::default());
        // (node, range of entries sharing its key as a prefix, key length).
        let mut pending = vec![(0usize, 0..entries.len(), 0usize)];
        while let Some((node, range, depth)) = pending.pop() {
            let group = &entries[range.clone()];
            let own = group.iter().take_while(|e| e.key.len() == depth).count();
            for e in &group[..own] {
                let list = if e.separated {
                    &mut tree.nodes[node].separated
                } else {
                    &mut tree.nodes[node].prefix
                };
                list.push(e.position);
            }
            let deeper = &group[own..];
            let Some(shortest) = deeper.iter().map(|e| e.key.len()).min() else {
                continue;
            };
            let stride = shortest - depth;
            tree.nodes[node].stride = stride;
            let mut start = range.start + own;
            while start < range.end {
                let chunk = &entries[start].key[depth..depth + stride];
                let len = entries[start..range.end]
                    .iter()
                    .take_while(|e| &e.key[depth..depth + stride] == chunk)
                    .count();
                let child = tree.nodes.len();
                tree.nodes.push(Node::default());
                tree.nodes[node].children.insert(chunk.into(), child as u32);
                pending.push((child, start..start + len, depth + stride));
                start += len;
            }
        }
        tree
    }

    /// Calls `visit` with each candidate list whose key matches `path`, shortest key first.
    fn walk<'a>(&'a self, path: &[u8], mut visit: impl FnMut(&'a [u32])) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut depth = 0;
        loop {
            if !node.prefix.is_empty() {
                visit(&node.prefix);
            }
            if !node.separated.is_empty() && matches!(path.get(depth), None | Some(b'/')) {
                visit(&node.separated);
            }
            let end = depth + node.stride;
            if node.stride == 0 || end > path.len() {
                return;
            }
            let Some(&child) = node.children.get(&path[depth..end]) else {
                return;
            };
            node = &self.nodes[child as usize];
            depth = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        filters::PerRouteFilters,
        matchers::{HeaderMatcher, HeaderRule, HeaderSource, StringMatcher, StringPattern},
        route::{DirectResponse, HeaderMutations, RouteAction},
        route_match::{full_match_regex, testing::Request, QueryParameterMatcher, RouteMatcher},
    };

    fn route(path: PathMatch) -> Route {
        Route {
            name: String::new(),
            matcher: RouteMatcher {
                path,
                case_sensitive: true,
                headers: vec![],
                query_parameters: vec![],
                grpc: false,
                tls_context: Default::default(),
            },
            action: RouteAction::DirectResponse(DirectResponse {
                status: 200,
                body: None,
            }),
            headers: HeaderMutations::default(),
            per_filter: PerRouteFilters::default(),
            decorator: None,
        }
    }

    fn prefix(p: &str) -> Route {
        route(PathMatch::Prefix(p.into()))
    }

    fn path(p: &str) -> Route {
        route(PathMatch::Path(p.into()))
    }

    fn find(routes: &[Route], request: &Request) -> Option<usize> {
        RouteIndex::build(routes, false).find(routes, request)
    }

    #[test]
    fn connect_matcher_routes_see_only_connect_requests() {
        let any = || route(PathMatch::Regex(full_match_regex(".*").unwrap()));
        let routes = [prefix("/"), route(PathMatch::Connect), any()];
        let connect = Request {
            method: "CONNECT",
            ..Request::get("")
        };
        assert_eq!(find(&routes, &connect), Some(1));
        assert_eq!(find(&routes, &Request::get("/")), Some(0));
        assert_eq!(
            find(&routes, &Request::get("")),
            Some(2),
            "a GET never matches a connect_matcher route"
        );
        let regex_first = [any(), route(PathMatch::Connect)];
        assert_eq!(
            find(&regex_first, &connect),
            Some(0),
            "a CONNECT's empty path matches other kinds as Envoy's (an earlier `.*` wins)"
        );
    }

    #[test]
    fn first_route_in_config_order_wins() {
        let routes = [
            prefix("/api/v1"),
            path("/api"),
            prefix("/api"),
            prefix("/"),
            path("/api/v1/x"),
        ];
        let at = |p| find(&routes, &Request::get(p));
        assert_eq!(
            at("/api/v1/x"),
            Some(0),
            "an earlier prefix beats a later exact path"
        );
        assert_eq!(at("/api"), Some(1));
        assert_eq!(at("/api?x=1"), Some(1), "the query is not part of the path");
        assert_eq!(at("/api/"), Some(2));
        assert_eq!(at("/apix"), Some(2), "a plain prefix needs no separator");
        assert_eq!(at("/other"), Some(3));
        assert_eq!(at(""), None);
        assert_eq!(at("*"), None);
    }

    #[test]
    fn separated_prefix_needs_a_slash_or_the_end() {
        let routes = [
            route(PathMatch::PathSeparatedPrefix("/api".into())),
            prefix("/"),
        ];
        let at = |p| find(&routes, &Request::get(p));
        assert_eq!(at("/api"), Some(0));
        assert_eq!(at("/api/x"), Some(0));
        assert_eq!(at("/api?x"), Some(0));
        assert_eq!(at("/apix"), Some(1));
    }

    #[test]
    fn case_insensitive_routes_fold_ascii() {
        let mut ci = prefix("/Api");
        ci.matcher.case_sensitive = false;
        let mut ci_path = path("/EXACT");
        ci_path.matcher.case_sensitive = false;
        let routes = [prefix("/API/v2"), ci, ci_path, prefix("/")];
        let at = |p| find(&routes, &Request::get(p));
        assert_eq!(at("/API/v2"), Some(0));
        assert_eq!(at("/api/v2"), Some(1));
        assert_eq!(at("/aPI"), Some(1));
        assert_eq!(at("/exact"), Some(2));
        assert_eq!(at("/exact/"), Some(3));
    }

    #[test]
    fn regex_routes_merge_by_position() {
        let regex = |r| route(PathMatch::Regex(full_match_regex(r).unwrap()));
        let routes = [path("/a/1"), regex("/a/[0-9]+"), prefix("/a"), regex(".*")];
        let at = |p| find(&routes, &Request::get(p));
        assert_eq!(at("/a/1"), Some(0));
        assert_eq!(at("/a/22"), Some(1));
        assert_eq!(at("/a/x"), Some(2));
        assert_eq!(at("/b"), Some(3));
        assert_eq!(
            at("/a/22?q=1"),
            Some(1),
            "regexes see the path without the query"
        );
    }

    #[test]
    fn headers_and_query_parameters_narrow_a_candidate() {
        let mut by_header = prefix("/");
        by_header.matcher.headers.push(HeaderMatcher {
            source: HeaderSource::Named("x-canary".into()),
            rule: HeaderRule::Present(true),
            invert: false,
            treat_missing_as_empty: false,
        });
        let mut by_query = prefix("/");
        by_query
            .matcher
            .query_parameters
            .push(QueryParameterMatcher {
                name: "debug".into(),
                value: Some(StringMatcher::new(
                    StringPattern::Exact(b"1".as_slice().into()),
                    false,
                )),
            });
        let routes = [by_header, by_query, prefix("/")];
        assert_eq!(
            find(&routes, &Request::get("/x").with("x-canary", "")),
            Some(0)
        );
        assert_eq!(find(&routes, &Request::get("/x?debug=1")), Some(1));
        assert_eq!(find(&routes, &Request::get("/x?debug=2")), Some(2));
    }

    #[test]
    fn path_parameters_can_be_ignored() {
        let routes = [path("/a"), prefix("/")];
        let index = RouteIndex::build(&routes, true);
        assert_eq!(
            index.find(&routes, &Request::get("/a;jsessionid=1")),
            Some(0)
        );
        assert_eq!(find(&routes, &Request::get("/a;jsessionid=1")), Some(1));
    }

    #[test]
    fn nested_and_sibling_prefixes_of_every_length() {
        // Keys of staggered lengths, nested and not, in an order unlike their sorted one.
        let keys = [
            "/abcdef", "/abc", "/abxyz", "/ab", "", "/abcdeg", "/b", "/abcd",
        ];
        let routes: Vec<Route> = keys.iter().map(|k| prefix(k)).collect();
        let at = |p| find(&routes, &Request::get(p));
        assert_eq!(at("/abcdefZ"), Some(0));
        assert_eq!(at("/abcde"), Some(1));
        assert_eq!(at("/abxyz/1"), Some(2));
        assert_eq!(at("/abx"), Some(3));
        assert_eq!(at("/a"), Some(4));
        assert_eq!(at("/b/x"), Some(4));
        let mut reversed: Vec<Route> = keys.iter().rev().map(|k| prefix(k)).collect();
        reversed.remove(3); // Drop "" so the longest-first order shows.
        let at = |p| find(&reversed, &Request::get(p));
        assert_eq!(at("/abcdefZ"), Some(0), "/abcd is first now");
        assert_eq!(at("/abcdeg"), Some(0));
        assert_eq!(at("/abx"), Some(3));
        assert_eq!(at("/abxyz"), Some(3));
        assert_eq!(at("/c"), None);
    }

    #[test]
    fn thousands_of_routes_agree_with_a_linear_scan() {
        let mut routes = Vec::new();
        for i in 0..2000 {
            routes.push(if i % 3 == 0 {
                path(&format!("/svc/{i}/item"))
            } else {
                prefix(&format!("/svc/{i}/"))
            });
        }
        routes.push(prefix("/svc/1"));
        let index = RouteIndex::build(&routes, false);
        for p in [
            "/svc/1999/x",
            "/svc/3/item",
            "/svc/3/itemx",
            "/svc/1",
            "/svc/10/a",
            "/none",
        ] {
            let linear = routes
                .iter()
                .position(|r| r.matcher.path_matches(p.as_bytes()));
            assert_eq!(index.find(&routes, &Request::get(p)), linear, "{p}");
        }
    }
}
