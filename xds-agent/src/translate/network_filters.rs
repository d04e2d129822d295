//! Translator: the network filters a chain runs before its terminal one (Istio's
//! `istio_authn`, `istio.metadata_exchange`, `istio.stats`, `envoy.filters.network.rbac`,
//! `envoy.filters.network.ext_authz`, `envoy.filters.network.connection_limit`), keyed by
//! config type.
use envoy_types::pb::google::protobuf::Any;

use envoy_types::pb::envoy::extensions::filters::network::wasm::v3::Wasm;

use super::{
    connection_limit, decode_typed, ext_authz, istio, istio_stats, null_vm, rbac, TranslateContext,
    TranslateError,
};
use crate::names;
use model::ConnectionFilter;
use proto::istio::network_authn::Config as AuthnConfig;

/// The filter `any` configures (at `path`); `None` for a type that cannot run before a
/// terminal filter (a terminal one is said so here).
pub fn connection_filter(
    any: &Any,
    path: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<ConnectionFilter> {
    match names::type_name(&any.type_url) {
        names::ISTIO_AUTHN => {
            let config: AuthnConfig = decode_typed(any, &format!("{path}.typed_config"), errors)?;
            Some(ConnectionFilter::IstioAuthn {
                shared: config.shared,
            })
        }
        names::METADATA_EXCHANGE => istio::metadata_exchange(
            any,
            &format!("{path}.typed_config"),
            &ctx.local_peer,
            errors,
        )
        .map(ConnectionFilter::MetadataExchange),
        names::STATS => {
            istio_stats::stats_config(any, &format!("{path}.typed_config"), ctx, errors)
                .map(ConnectionFilter::IstioStats)
        }
        names::NETWORK_RBAC => rbac::network_filter(any, path, ctx.stats, errors),
        names::NETWORK_EXT_AUTHZ => ext_authz::network_filter(any, path, ctx.stats, errors),
        names::NETWORK_CONNECTION_LIMIT => {
            connection_limit::network_filter(any, path, ctx.stats, errors)
        }
        names::NETWORK_WASM => null_vm_filter(any, &format!("{path}.typed_config"), ctx, errors),
        names::TCP_PROXY | names::HTTP_CONNECTION_MANAGER => {
            errors.push(TranslateError::new(
                path.to_string(),
                Some(&any.type_url),
                "a terminal filter (tcp_proxy, http_connection_manager) must be the last in its chain",
            ));
            None
        }
        // Any other type was refused where the walker met it.
        _ => None,
    }
}

/// `envoy.filters.network.wasm`: Istio's null-VM stats plugin as `istio.stats`; any other Wasm
/// is refused.
fn null_vm_filter(
    any: &Any,
    path: &str,
    ctx: &TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<ConnectionFilter> {
    let wasm: Wasm = decode_typed(any, path, errors)?;
    let config = wasm.config.as_ref();
    if null_vm::plugin(config) != Some(null_vm::STATS) {
        errors.push(TranslateError::new(
            format!("{path}.config.vm_config"),
            Some(&any.type_url),
            null_vm::NOT_RUN,
        ));
        return None;
    }
    istio_stats::null_vm_stats(
        config.and_then(|c| c.configuration.as_ref()),
        &format!("{path}.config.configuration"),
        ctx,
        errors,
    )
    .map(ConnectionFilter::IstioStats)
}
