//! Domain model: HTTP filter configs (the chain before the router) and per-route overrides
//! (`typed_per_filter_config`). Filled in by the HTTP filters work.
use std::sync::Arc;

/// One configured HTTP filter: its config name (what `typed_per_filter_config` keys on) and
/// what it does.
#[derive(Debug)]
pub struct HttpFilter {
    pub name: String,
    pub kind: HttpFilterKind,
}

#[derive(Debug)]
pub enum HttpFilterKind {
    Fault(Arc<FaultConfig>),
    Cors,
    LocalRateLimit(Arc<LocalRateLimitConfig>),
    HeaderMutation(Arc<HeaderMutationConfig>),
}

#[derive(Debug)]
pub struct FaultConfig {}

#[derive(Debug)]
pub struct LocalRateLimitConfig {}

#[derive(Debug)]
pub struct HeaderMutationConfig {}

/// A per-route (or per-virtual-host) override of one filter's config.
#[derive(Debug)]
pub enum PerRouteFilter {
    Fault(Arc<FaultConfig>),
    LocalRateLimit(Arc<LocalRateLimitConfig>),
    HeaderMutation(Arc<HeaderMutationConfig>),
}

/// `typed_per_filter_config`, keyed by filter config name.
#[derive(Debug, Default)]
pub struct PerRouteFilters(pub Vec<(String, PerRouteFilter)>);

impl PerRouteFilters {
    pub fn get(&self, filter_name: &str) -> Option<&PerRouteFilter> {
        self.0
            .iter()
            .find(|(name, _)| name == filter_name)
            .map(|(_, f)| f)
    }
}
