//! Route matching: the per-virtual-host route index. Plain `prefix`, `path` and
//! `path_separated_prefix` routes sit in radix trees (one case-sensitive, one ASCII-folded)
//! so a lookup walks the request path once, whatever the number of routes; regex routes are
//! kept in a list. Every entry carries its config position, and the lowest position whose
//! whole match holds wins — the same answer as Envoy's first-match scan.
use super::matcher::{path_end, PathMatch};
use crate::model::route::{Route, RouteRequest};

/// Index of a virtual host's routes.
#[derive(Debug, Default)]
pub struct RouteIndex {
    exact_case: RadixTree,
    folded_case: RadixTree,
    /// Positions of routes matched one by one (regex paths), ascending.
    scanned: Vec<u32>,
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
        for (position, route) in routes.iter().enumerate() {
            let position = position as u32;
            let tree = if route.matcher.case_sensitive {
                &mut index.exact_case
            } else {
                &mut index.folded_case
            };
            let fold = !route.matcher.case_sensitive;
            match &route.matcher.path {
                PathMatch::Prefix(p) => tree.insert(p.as_bytes(), fold, Kind::Prefix, position),
                PathMatch::Path(p) => tree.insert(p.as_bytes(), fold, Kind::Exact, position),
                PathMatch::PathSeparatedPrefix(p) => {
                    tree.insert(p.as_bytes(), fold, Kind::Separated, position)
                }
                PathMatch::Regex(_) => index.scanned.push(position),
            }
        }
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
        self.exact_case
            .walk(path, false, |list| consider(list, &mut best, false));
        self.folded_case
            .walk(path, true, |list| consider(list, &mut best, false));
        consider(&self.scanned, &mut best, true);
        (best != u32::MAX).then_some(best as usize)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Prefix,
    Exact,
    Separated,
}

/// A radix tree over route paths; node 0 is the root (empty label).
#[derive(Debug)]
struct RadixTree {
    nodes: Vec<Node>,
}

impl Default for RadixTree {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    /// The bytes on the edge from the parent (lower-case in the folded tree).
    label: Box<[u8]>,
    /// First label byte of each child, parallel to `children`.
    first_bytes: Vec<u8>,
    children: Vec<u32>,
    /// Routes whose key ends here, by kind; each ascending by position.
    prefix: Vec<u32>,
    exact: Vec<u32>,
    separated: Vec<u32>,
}

impl RadixTree {
    fn insert(&mut self, key: &[u8], fold: bool, kind: Kind, position: u32) {
        let key: Vec<u8> = if fold {
            key.to_ascii_lowercase()
        } else {
            key.to_vec()
        };
        let mut node = 0;
        let mut rest = &key[..];
        while !rest.is_empty() {
            let Some(slot) = self.nodes[node]
                .first_bytes
                .iter()
                .position(|b| *b == rest[0])
            else {
                let child = self.push(rest);
                self.nodes[node].first_bytes.push(rest[0]);
                self.nodes[node].children.push(child);
                node = child as usize;
                break;
            };
            let child = self.nodes[node].children[slot] as usize;
            let common = common_prefix(&self.nodes[child].label, rest);
            if common < self.nodes[child].label.len() {
                self.split(node, slot, common);
            }
            node = self.nodes[node].children[slot] as usize;
            rest = &rest[common..];
        }
        let node = &mut self.nodes[node];
        match kind {
            Kind::Prefix => node.prefix.push(position),
            Kind::Exact => node.exact.push(position),
            Kind::Separated => node.separated.push(position),
        }
    }

    fn push(&mut self, label: &[u8]) -> u32 {
        self.nodes.push(Node {
            label: label.into(),
            ..Node::default()
        });
        (self.nodes.len() - 1) as u32
    }

    /// Splits the edge to `parent`'s child in `slot` after `at` label bytes.
    fn split(&mut self, parent: usize, slot: usize, at: usize) {
        let child = self.nodes[parent].children[slot] as usize;
        let label = std::mem::take(&mut self.nodes[child].label);
        let middle = self.push(&label[..at]);
        self.nodes[child].label = label[at..].into();
        let middle_node = &mut self.nodes[middle as usize];
        middle_node.first_bytes.push(label[at]);
        middle_node.children.push(child as u32);
        self.nodes[parent].children[slot] = middle;
    }

    /// Calls `visit` with each candidate list whose key matches `path`, shortest key first.
    fn walk<'a>(&'a self, path: &[u8], fold: bool, mut visit: impl FnMut(&'a [u32])) {
        let mut node = &self.nodes[0];
        let mut depth = 0;
        loop {
            visit(&node.prefix);
            if depth == path.len() {
                visit(&node.exact);
                visit(&node.separated);
                return;
            }
            if path[depth] == b'/' {
                visit(&node.separated);
            }
            let next = if fold {
                path[depth].to_ascii_lowercase()
            } else {
                path[depth]
            };
            let Some(slot) = node.first_bytes.iter().position(|b| *b == next) else {
                return;
            };
            let child = &self.nodes[node.children[slot] as usize];
            let end = depth + child.label.len();
            let label_matches = end <= path.len()
                && if fold {
                    path[depth..end].eq_ignore_ascii_case(&child.label)
                } else {
                    path[depth..end] == *child.label
                };
            if !label_matches {
                return;
            }
            node = child;
            depth = end;
        }
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{
            filters::PerRouteFilters,
            route::{DirectResponse, HeaderMutations, RouteAction},
        },
        route_match::{
            full_match_regex, testing::Request, HeaderMatcher, HeaderRule, QueryParameterMatcher,
            RouteMatcher, StringMatcher,
        },
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
            },
            action: RouteAction::DirectResponse(DirectResponse {
                status: 200,
                body: None,
            }),
            headers: HeaderMutations::default(),
            per_filter: PerRouteFilters::default(),
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
            name: "x-canary".into(),
            rule: HeaderRule::Present(true),
            invert: false,
            missing_as_empty: false,
        });
        let mut by_query = prefix("/");
        by_query
            .matcher
            .query_parameters
            .push(QueryParameterMatcher {
                name: "debug".into(),
                value: Some(StringMatcher::Exact {
                    value: b"1".as_slice().into(),
                    ignore_case: false,
                }),
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
    fn the_tree_splits_and_shares_edges() {
        // Keys inserted in an order that forces edge splits at every level.
        let keys = ["/abcdef", "/abc", "/abxyz", "/ab", "/a", "/abcdeg", "/b"];
        let routes: Vec<Route> = keys.iter().map(|k| path(k)).collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(find(&routes, &Request::get(k)), Some(i), "{k}");
        }
        assert_eq!(find(&routes, &Request::get("/abcde")), None);
        assert_eq!(find(&routes, &Request::get("/abcdefg")), None);
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
