//! Route matching over compiled route tables: virtual host by authority, route by path,
//! headers and query, and what the router derives from a match (rewritten path, redirect
//! `Location`, header-mutation order). Indexes are built by the translator so lookups never
//! scan thousands of plain routes; nothing here allocates on a plain lookup.
mod domains;
mod fast_hash;
mod index;
mod matcher;
mod rewrite;

pub use domains::{DuplicateDomain, VirtualHostIndex};
pub use index::RouteIndex;
pub use matcher::{
    full_match_regex, PathMatch, QueryParameterMatcher, RouteMatcher, TlsContextMatch,
};
pub use rewrite::{https_redirect_location, RegexRewrite, RewriteError};

use crate::route::{HeaderMutations, Route, RouteConfig, RouteRequest, VirtualHost};

impl RouteConfig {
    /// A table with no virtual hosts: every request gets 404 (no route).
    pub fn empty(name: &str) -> Self {
        Self {
            name: name.to_string(),
            config_hash: 0,
            virtual_hosts: Vec::new(),
            vhost_index: Default::default(),
            headers: Default::default(),
            most_specific_header_mutations_wins: false,
            internal_only_headers: Vec::new(),
        }
    }

    /// The virtual host for a request's authority (`host` header), most specific domain first.
    pub fn virtual_host(&self, authority: &[u8]) -> Option<&VirtualHost> {
        self.vhost_index
            .find(authority)
            .map(|i| &self.virtual_hosts[i])
    }

    /// The header mutations that apply to a request matched to `route` of `virtual_host`
    /// (and, for a weighted route, to the chosen cluster's entry), in the order Envoy applies
    /// them (a later level overrides an earlier one): weighted cluster, route, virtual host,
    /// route config — reversed by `most_specific_header_mutations_wins`; absent levels are
    /// `None`. No allocation.
    pub fn header_mutations<'a>(
        &'a self,
        virtual_host: &'a VirtualHost,
        route: &'a Route,
        weighted: Option<&'a HeaderMutations>,
    ) -> [Option<&'a HeaderMutations>; 4] {
        let mut levels = [
            weighted,
            Some(&route.headers),
            Some(&virtual_host.headers),
            Some(&self.headers),
        ];
        if self.most_specific_header_mutations_wins {
            levels.reverse();
        }
        levels
    }
}

impl VirtualHost {
    /// The first route (config order) that matches.
    pub fn route(&self, request: &impl RouteRequest) -> Option<&Route> {
        self.route_index
            .find(&self.routes, request)
            .map(|i| &self.routes[i])
    }
}

/// A request for tests (here and the agent's translator tests, through the `testing`
/// feature): method, path and headers.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use crate::route::RouteRequest;

    pub struct Request<'a> {
        pub method: &'a str,
        pub path: &'a str,
        pub headers: Vec<(&'a str, &'a str)>,
    }

    impl<'a> Request<'a> {
        pub fn get(path: &'a str) -> Self {
            Self {
                method: "GET",
                path,
                headers: vec![],
            }
        }

        pub fn with(mut self, name: &'a str, value: &'a str) -> Self {
            self.headers.push((name, value));
            self
        }
    }

    impl RouteRequest for Request<'_> {
        fn method(&self) -> &[u8] {
            self.method.as_bytes()
        }
        fn path(&self) -> &[u8] {
            self.path.as_bytes()
        }
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        }
    }
}
