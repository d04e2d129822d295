//! Translator: `envoy.filters.http.wasm` — Istio's null-VM plugins as native filters
//! (`translate::null_vm`); any other Wasm is refused.
use envoy_types::pb::{envoy::extensions::filters::http::wasm::v3::Wasm, google::protobuf::Any};

use super::{common::Site, peer_metadata};
use crate::translate::{istio_stats, null_vm, TranslateContext, TranslateError};
use model::filters::HttpFilterKind;

pub(super) fn filter(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let wasm: Wasm = super::decode(any, site, errors)?;
    let config = wasm.config.as_ref();
    match null_vm::plugin(config) {
        Some(null_vm::METADATA_EXCHANGE) => Some(peer_metadata::both_ways(ctx)),
        Some(null_vm::STATS) => istio_stats::null_vm_stats(
            config.and_then(|c| c.configuration.as_ref()),
            &site.path_of("config.configuration"),
            ctx,
            errors,
        )
        .map(HttpFilterKind::IstioStats),
        _ => {
            errors.push(site.error("config.vm_config", null_vm::NOT_RUN));
            None
        }
    }
}
