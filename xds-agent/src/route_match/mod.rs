//! Route matching over compiled route tables: virtual host by authority, route by path,
//! headers and query. Indexes are built by the translator so lookups never scan thousands
//! of plain routes. (Skeleton: filled in by the routing work.)
use crate::model::route::{Route, RouteConfig, RouteRequest, VirtualHost};

/// Domain index of a route table's virtual hosts.
#[derive(Debug, Default)]
pub struct VirtualHostIndex {}

/// Index of a virtual host's routes.
#[derive(Debug, Default)]
pub struct RouteIndex {}

/// A route's compiled `match`.
#[derive(Debug, Default)]
pub struct RouteMatcher {}

impl RouteConfig {
    /// The virtual host for a request's authority (`host` header), most specific domain first.
    pub fn virtual_host(&self, _authority: &[u8]) -> Option<&VirtualHost> {
        self.virtual_hosts.first()
    }
}

impl VirtualHost {
    /// The first route (config order) that matches.
    pub fn route(&self, _request: &impl RouteRequest) -> Option<&Route> {
        self.routes.first()
    }
}
