//! Translator: `envoy.filters.http.wasm` — Wasm is not run. Istio's null-VM plugins (compiled
//! into Istio's Envoy, named by `vm_config.code.local.inline_string` with the
//! `envoy.wasm.runtime.null` runtime) map to the native filter of the same job; any other
//! plugin (a real module) is refused.
use envoy_types::pb::{
    envoy::{
        config::core::v3::{async_data_source, data_source},
        extensions::{
            filters::http::wasm::v3::Wasm,
            wasm::v3::{plugin_config::Vm, VmConfig},
        },
    },
    google::protobuf::Any,
};

use super::{common::Site, peer_metadata};
use crate::translate::{TranslateContext, TranslateError};
use model::filters::HttpFilterKind;

/// The runtime of Istio's plugins built into its proxy.
const NULL_RUNTIME: &str = "envoy.wasm.runtime.null";
/// Istio 1.5–1.19's HTTP metadata exchange plugin.
const METADATA_EXCHANGE: &str = "envoy.wasm.metadata_exchange";

pub(super) fn filter(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let wasm: Wasm = super::decode(any, site, errors)?;
    let vm = wasm
        .config
        .as_ref()
        .and_then(|c| c.vm.as_ref().map(|Vm::VmConfig(vm)| vm));
    match vm.and_then(null_plugin) {
        Some(METADATA_EXCHANGE) => Some(peer_metadata::both_ways(ctx)),
        _ => {
            errors.push(site.error(
                "config.vm_config",
                "Wasm is not run: only Istio's null-VM plugins built into its proxy \
                 (envoy.wasm.metadata_exchange) map to native filters; a Wasm module is refused",
            ));
            None
        }
    }
}

/// The name of the built-in plugin a null-VM config runs.
fn null_plugin(vm: &VmConfig) -> Option<&str> {
    if vm.runtime != NULL_RUNTIME {
        return None;
    }
    match vm.code.as_ref()?.specifier.as_ref()? {
        async_data_source::Specifier::Local(local) => match local.specifier.as_ref()? {
            data_source::Specifier::InlineString(name) => Some(name),
            _ => None,
        },
        async_data_source::Specifier::Remote(_) => None,
    }
}
