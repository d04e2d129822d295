//! Translator: Envoy v3 protos → validated domain model (`model`). The one path both the
//! bootstrap file and (later) xDS take.
use std::{collections::HashMap, sync::Arc};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

use crate::{
    model::{Endpoint, Snapshot},
    stats::StatsRegistry,
};

/// A rejected input: where (field path from the bootstrap root), for typed configs the type
/// URL, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}{}: {message}", type_url.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
pub struct TranslateError {
    pub path: String,
    pub type_url: Option<String>,
    pub message: String,
}

/// Inputs a translation reads besides the bootstrap.
pub struct TranslateContext<'a> {
    pub generation: u64,
    pub stats: &'a mut StatsRegistry,
    /// The generation being replaced: unchanged listeners and clusters are shared with it.
    pub previous: Option<&'a Snapshot>,
    /// Resolved addresses of DNS clusters, by cluster name.
    pub dns: &'a HashMap<String, Arc<[Endpoint]>>,
}

/// Translates a bootstrap into a snapshot, or lists every problem found.
pub fn translate(
    _bootstrap: &Bootstrap,
    _ctx: &mut TranslateContext,
) -> Result<Snapshot, Vec<TranslateError>> {
    Err(vec![])
}
