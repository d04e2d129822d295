//! Translator: listeners and their filter chains (each ending in a tcp_proxy or an HTTP
//! connection manager).
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use envoy_types::pb::envoy::config::{
    core::v3::TrafficDirection,
    listener::v3::{
        filter, listener::DrainType, FilterChain as FilterChainProto, Listener as ListenerProto,
    },
};

use super::{
    address, buffer_limit, config_hash, http_connection_manager::http_connection_manager,
    tcp_proxy::tcp_proxy, TranslateContext, TranslateError,
};
use crate::{
    model::{DrainType as ModelDrainType, FilterChain, Listener, NetworkFilter},
    names,
};

/// Translates `listeners` (at `path`), checking names and addresses are unique.
pub(super) fn listeners(
    listeners: &[ListenerProto],
    path: &str,
    clusters: &HashSet<&str>,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Vec<Arc<Listener>> {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, proto) in listeners.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let Some(listener) = listener(proto, &path, clusters, ctx, errors) else {
            continue;
        };
        if let Some(first) = names.insert(listener.name.clone(), i) {
            errors.push(TranslateError::new(
                format!("{path}.name"),
                None,
                format!(
                    "duplicate listener name {:?} (also listeners[{first}])",
                    listener.name
                ),
            ));
        }
        if listener.address.port() != 0 {
            if let Some(first) = addresses.insert(listener.address, i) {
                errors.push(TranslateError::new(
                    format!("{path}.address"),
                    None,
                    format!(
                        "duplicate listener address {} (also listeners[{first}])",
                        listener.address
                    ),
                ));
            }
        }
        out.push(listener);
    }
    out
}

/// One listener; reuses the previous generation's `Arc` when its config is unchanged.
pub(super) fn listener(
    proto: &ListenerProto,
    path: &str,
    clusters: &HashSet<&str>,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<Listener>> {
    let before = errors.len();
    let address = match &proto.address {
        Some(a) => address::socket_address(a, &format!("{path}.address"), errors),
        None => {
            errors.push(TranslateError::new(
                format!("{path}.address"),
                None,
                "address is required",
            ));
            None
        }
    };
    if proto.filter_chains.is_empty() {
        errors.push(TranslateError::new(
            format!("{path}.filter_chains"),
            None,
            "at least one filter chain is required",
        ));
    }
    let chains: Vec<_> = proto
        .filter_chains
        .iter()
        .enumerate()
        .filter_map(|(k, chain)| {
            filter_chain(
                chain,
                &format!("{path}.filter_chains[{k}]"),
                clusters,
                ctx,
                errors,
            )
        })
        .collect();
    let address = address?;
    if errors.len() > before || chains.len() != proto.filter_chains.len() {
        return None;
    }
    // Envoy names an unnamed listener with a UUID; the address keeps it stable across reloads.
    let name = if proto.name.is_empty() {
        address::stat_name(&address)
    } else {
        proto.name.clone()
    };
    let config_hash = config_hash(proto);
    if let Some(previous) = ctx.previous.and_then(|p| {
        p.listeners
            .iter()
            .find(|l| l.name == name && l.config_hash == config_hash)
    }) {
        return Some(previous.clone());
    }
    let stat_prefix = if proto.stat_prefix.is_empty() {
        address::stat_name(&address)
    } else {
        proto.stat_prefix.clone()
    };
    Some(Arc::new(Listener {
        name,
        config_hash,
        address,
        buffer_limit: buffer_limit(proto.per_connection_buffer_limit_bytes.as_ref()),
        filter_chains: chains,
        inbound: proto.traffic_direction == TrafficDirection::Inbound as i32,
        drain_type: match proto.drain_type() {
            DrainType::Default => ModelDrainType::Default,
            DrainType::ModifyOnly => ModelDrainType::ModifyOnly,
        },
        stats: ctx.stats.listener(&stat_prefix),
    }))
}

/// Whether a network filter type ends a chain (and so must be last).
fn is_terminal(type_url: &str) -> bool {
    matches!(
        names::type_name(type_url),
        names::TCP_PROXY | names::HTTP_CONNECTION_MANAGER
    )
}

/// A chain is one terminal tcp_proxy or HTTP connection manager; chains with filters the
/// walker rejected are skipped.
fn filter_chain(
    chain: &FilterChainProto,
    path: &str,
    clusters: &HashSet<&str>,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<FilterChain> {
    let Some((last, init)) = chain.filters.split_last() else {
        errors.push(TranslateError::new(
            format!("{path}.filters"),
            None,
            format!(
                "a filter chain needs a terminal {} or {} filter",
                names::TCP_PROXY_FILTER,
                names::HTTP_CONNECTION_MANAGER_FILTER
            ),
        ));
        return None;
    };
    let mut ok = true;
    for (f, filter) in init.iter().enumerate() {
        if let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type {
            if is_terminal(&any.type_url) {
                errors.push(TranslateError::new(
                    format!("{path}.filters[{f}]"),
                    Some(&any.type_url),
                    "a terminal filter (tcp_proxy, http_connection_manager) must be the last in its chain",
                ));
            }
        }
        ok = false;
    }
    let filter_path = format!("{path}.filters[{}]", init.len());
    let network = match &last.config_type {
        Some(filter::ConfigType::TypedConfig(any))
            if names::type_name(&any.type_url) == names::TCP_PROXY =>
        {
            tcp_proxy(
                any,
                &format!("{filter_path}.typed_config"),
                clusters,
                ctx.stats,
                errors,
            )
            .map(NetworkFilter::TcpProxy)
        }
        Some(filter::ConfigType::TypedConfig(any))
            if names::type_name(&any.type_url) == names::HTTP_CONNECTION_MANAGER =>
        {
            http_connection_manager(
                any,
                &format!("{filter_path}.typed_config"),
                clusters,
                ctx,
                errors,
            )
            .map(|hcm| NetworkFilter::HttpConnectionManager(Arc::new(hcm)))
        }
        Some(_) => None,
        None => {
            errors.push(TranslateError::new(
                filter_path,
                None,
                "typed_config is required",
            ));
            None
        }
    };
    let network = network.filter(|_| ok)?;
    Some(FilterChain {
        name: chain.name.clone(),
        network,
    })
}
