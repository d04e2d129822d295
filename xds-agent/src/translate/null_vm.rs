//! Translator: Istio's null-VM Wasm plugins — the plugins built into Istio's own proxy
//! (runtime `envoy.wasm.runtime.null`, named by `vm_config.code.local.inline_string`), which
//! Istio 1.5–1.19 configure as Wasm filters. shardproxy runs no Wasm: these map to the native
//! filters of the same job, and any other plugin (a real module) is refused.
use envoy_types::pb::envoy::{
    config::core::v3::{async_data_source, data_source},
    extensions::wasm::v3::{plugin_config::Vm, PluginConfig},
};

/// Istio's HTTP metadata exchange plugin.
pub const METADATA_EXCHANGE: &str = "envoy.wasm.metadata_exchange";
/// Istio's stats plugin (HTTP and TCP).
pub const STATS: &str = "envoy.wasm.stats";

/// Why a plugin that is not one of Istio's null-VM ones is refused.
pub const NOT_RUN: &str = "Wasm is not run: only Istio's null-VM plugins built into its proxy \
     (envoy.wasm.metadata_exchange, envoy.wasm.stats) map to native filters; a Wasm module is \
     refused";

const NULL_RUNTIME: &str = "envoy.wasm.runtime.null";

/// The name of the built-in plugin `config` runs, if it is a null-VM one.
pub fn plugin(config: Option<&PluginConfig>) -> Option<&str> {
    let Some(Vm::VmConfig(vm)) = config?.vm.as_ref() else {
        return None;
    };
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
