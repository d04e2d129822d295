//! Translator: the network filters a chain runs before its terminal one (Istio's
//! `istio_authn`, `istio.metadata_exchange`, `istio.stats`, `envoy.filters.network.rbac`,
//! `envoy.filters.network.ext_authz`, `envoy.filters.network.connection_limit`), keyed by
//! config type.
use envoy_types::pb::google::protobuf::Any;

use envoy_types::pb::envoy::extensions::filters::network::{
    connection_limit::v3::ConnectionLimit, ext_authz::v3::ExtAuthz as NetworkExtAuthz,
    rbac::v3::Rbac as NetworkRbac, wasm::v3::Wasm,
};

use super::{
    connection_limit, decode_typed, ext_authz, istio, istio_stats, matchers::At, null_vm, rbac,
    TranslateContext, TranslateError,
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
        names::NETWORK_RBAC => with_stat_prefix(any, path, errors, |proto, at, errors| {
            rbac::network_filter(proto, at, ctx.stats, errors)
        }),
        names::NETWORK_EXT_AUTHZ => with_stat_prefix(any, path, errors, |proto, at, errors| {
            ext_authz::network_filter(proto, at, ctx.stats, errors)
        }),
        names::NETWORK_CONNECTION_LIMIT => {
            with_stat_prefix(any, path, errors, |proto, at, errors| {
                connection_limit::network_filter(proto, at, ctx.stats, errors)
            })
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

/// The config a filter names a required `stat_prefix` in (rbac, ext_authz, connection_limit),
/// decoded from `any` and handed to `build` at `<path>.typed_config`, all errors found in
/// one pass; `None` once any was.
fn with_stat_prefix<P: StatPrefixed>(
    any: &Any,
    path: &str,
    errors: &mut Vec<TranslateError>,
    build: impl FnOnce(P, At, &mut Vec<TranslateError>) -> Option<ConnectionFilter>,
) -> Option<ConnectionFilter> {
    let path = format!("{path}.typed_config");
    let at = At {
        path: &path,
        type_url: Some(&any.type_url),
    };
    let proto: P = decode_typed(any, &path, errors)?;
    let before = errors.len();
    if proto.stat_prefix().is_empty() {
        errors.push(at.error("stat_prefix", "stat_prefix is required"));
    }
    let filter = build(proto, at, errors);
    filter.filter(|_| errors.len() == before)
}

/// A network filter config with a `stat_prefix` field.
trait StatPrefixed: prost::Message + prost::Name + Default {
    fn stat_prefix(&self) -> &str;
}

macro_rules! stat_prefixed {
    ($($proto:ty),*) => {$(
        impl StatPrefixed for $proto {
            fn stat_prefix(&self) -> &str {
                &self.stat_prefix
            }
        }
    )*};
}

stat_prefixed!(NetworkRbac, NetworkExtAuthz, ConnectionLimit);

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
