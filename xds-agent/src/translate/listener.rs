//! Translator: listeners and their filter chains (each ending in a tcp_proxy or an HTTP
//! connection manager, behind an optional TLS transport socket), indexed for selection by
//! `filter_chain_match`, and their listener filters.
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use envoy_types::pb::envoy::config::{
    core::v3::TrafficDirection,
    listener::v3::{
        filter,
        listener::{DrainType, ListenerSpecifier},
        FilterChain as FilterChainProto, Listener as ListenerProto,
    },
};
use envoy_types::pb::envoy::{
    config::bootstrap::v3::Bootstrap,
    extensions::bootstrap::internal_listener::v3::InternalListener,
};

use super::{
    access_log::access_logs,
    address, buffer_limit, config_hash, connection_limit,
    filter_chain_match::chain_match,
    http_connection_manager::http_connection_manager,
    listener_filters::{listener_filters, tls_inspector, MAX_CLIENT_HELLO},
    network_filters,
    tcp_proxy::tcp_proxy,
    tls, TranslateContext, TranslateError,
};
use crate::names;
use model::{
    filter_chain_match::{ChainMatch, FilterChainIndex, IndexError},
    listener_filters::ListenerFilter,
    tls::ServerTls,
    DrainType as ModelDrainType, FilterChain, Listener, NetworkFilter, DEFAULT_ACCEPTS_PER_EVENT,
    DEFAULT_INTERNAL_BUFFER, NO_ADDRESS,
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

/// A listener's stats prefix: `stat_prefix`, else its address.
fn stat_prefix(proto: &ListenerProto, address: Option<&SocketAddr>) -> String {
    match (address, proto.stat_prefix.as_str()) {
        (_, prefix) if !prefix.is_empty() => prefix.to_string(),
        // Named after the listener, which is its address (Envoy's `envoy://<name>/`).
        _ if proto.listener_specifier.is_some() => proto.name.clone(),
        (Some(address), _) => address::stat_name(address),
        (None, _) => String::new(),
    }
}

/// The TLS contexts of listener `proto` (at `path`, accepted before) translated again with
/// `ctx`'s secrets, one per chain in `Listener::filter_chains` order (`None`: raw, or not
/// `wanted`). Only the transport sockets are read, as Envoy rebuilds only its TLS contexts on
/// an SDS update: the rest of the listener, and what it names, stays as it was accepted.
pub fn listener_tls(
    proto: &ListenerProto,
    path: &str,
    wanted: impl Fn(usize) -> bool,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Vec<Option<Arc<ServerTls>>> {
    let address = proto
        .address
        .as_ref()
        .and_then(|a| address::socket_address(a, path, &mut Vec::new()));
    let scope = format!("listener.{}", stat_prefix(proto, address.as_ref()));
    let chains = proto
        .filter_chains
        .iter()
        .enumerate()
        .map(|(k, chain)| (format!("{path}.filter_chains[{k}]"), chain));
    let default = proto
        .default_filter_chain
        .iter()
        .map(|chain| (format!("{path}.default_filter_chain"), chain));
    chains
        .chain(default)
        .enumerate()
        .map(|(i, (path, chain))| {
            let socket = chain.transport_socket.as_ref().filter(|_| wanted(i))?;
            let path = format!("{path}.transport_socket");
            tls::downstream(socket, &path, &scope, &ctx.secrets, ctx.stats, errors)
                .ok()
                .flatten()
        })
        .collect()
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
    let internal = matches!(
        proto.listener_specifier,
        Some(ListenerSpecifier::InternalListener(_))
    );
    let address = match (&proto.address, internal) {
        (None, true) => Some(NO_ADDRESS),
        (Some(_), true) => {
            errors.push(TranslateError::new(
                format!("{path}.address"),
                None,
                "an internal listener has no address: its connections come from \
                 envoy_internal_address endpoints that name it",
            ));
            None
        }
        (Some(a), false) => address::socket_address(a, &format!("{path}.address"), errors),
        (None, false) => {
            errors.push(TranslateError::new(
                format!("{path}.address"),
                None,
                "address is required (or internal_listener)",
            ));
            None
        }
    };
    if internal {
        internal_listener_checks(proto, path, errors);
    }
    if proto.filter_chains.is_empty() {
        errors.push(TranslateError::new(
            format!("{path}.filter_chains"),
            None,
            "at least one filter chain is required",
        ));
    }
    let stat_prefix = stat_prefix(proto, address.as_ref());
    let scope = format!("listener.{stat_prefix}");
    let mut chains = Vec::new();
    let mut matches = Vec::new();
    for (k, chain) in proto.filter_chains.iter().enumerate() {
        let path = format!("{path}.filter_chains[{k}]");
        let found = chain.filter_chain_match.as_ref().map_or_else(
            || Some(ChainMatch::default()),
            |m| chain_match(m, &format!("{path}.filter_chain_match"), errors),
        );
        let built = filter_chain(chain, &path, &scope, clusters, ctx, errors);
        if let (Some(m), Some(built)) = (found, built) {
            matches.push(m);
            chains.push(built);
        }
    }
    let default_chain = proto.default_filter_chain.as_ref().and_then(|chain| {
        let path = format!("{path}.default_filter_chain");
        // Istio writes an empty one; a match on the default chain would never be consulted.
        if chain
            .filter_chain_match
            .as_ref()
            .is_some_and(|m| *m != Default::default())
        {
            errors.push(TranslateError::new(
                format!("{path}.filter_chain_match"),
                None,
                "the default chain is taken when no chain matches: it takes no filter_chain_match",
            ));
        }
        filter_chain(chain, &path, &scope, clusters, ctx, errors)
    });
    let filters = listener_filters(proto, path, ctx.stats, errors);
    let address = address?;
    let expected = proto.filter_chains.len() + usize::from(proto.default_filter_chain.is_some());
    let has_default = default_chain.is_some();
    chains.extend(default_chain);
    if errors.len() > before || chains.len() != expected {
        return None;
    }
    let chain_index = match FilterChainIndex::build(&matches) {
        Ok(index) => index,
        Err(IndexError::Duplicate(first, second)) => {
            errors.push(TranslateError::new(
                format!("{path}.filter_chains[{second}].filter_chain_match"),
                None,
                format!(
                    "multiple filter chains with the same matching rules are defined \
                     (also filter_chains[{first}])"
                ),
            ));
            return None;
        }
    };
    let access_logs = access_logs(&proto.access_log, &format!("{path}.access_log"), errors);
    let mut filters = filters?;
    // As Envoy does, a listener whose chains match on what only the TLS inspector finds
    // gets one when it has none.
    if matches.iter().any(ChainMatch::needs_tls_inspector) && !filters.inspects_tls() {
        tracing::warn!(
            listener = %proto.name,
            "filter chain match rules require the TLS inspector listener filter, but it isn't configured: adding it"
        );
        filters.filters.push(ListenerFilter {
            kind: tls_inspector(MAX_CLIENT_HELLO, ctx.stats),
            disabled: None,
        });
    }
    // Envoy names an unnamed listener with a UUID; the address keeps it stable across reloads.
    let name = if proto.name.is_empty() {
        address::stat_name(&address)
    } else {
        proto.name.clone()
    };
    let bind_to_port = !internal && binds(proto);
    let accepts_per_event = match proto.max_connections_to_accept_per_socket_event {
        None => DEFAULT_ACCEPTS_PER_EVENT,
        Some(n) if n.value > 0 => n.value as usize,
        Some(_) => {
            errors.push(TranslateError::new(
                format!("{path}.max_connections_to_accept_per_socket_event"),
                None,
                "must be greater than 0",
            ));
            return None;
        }
    };
    let address = match ctx.ports {
        Some(ports) if bind_to_port && address.port() == 0 => match ports.assign(&name, address) {
            Ok(bound) => bound,
            Err(error) => {
                errors.push(TranslateError::new(
                    format!("{path}.address"),
                    None,
                    format!("cannot take a port for {address}: {error}"),
                ));
                return None;
            }
        },
        _ => address,
    };
    let listener_hash = config_hash(&ListenerProto {
        filter_chains: Vec::new(),
        default_filter_chain: None,
        ..proto.clone()
    });
    // Certificates and keys read from files or secrets count as config: a new key in the
    // same file rebuilds the listener.
    let config_hash = chains
        .iter()
        .filter_map(|c| c.tls.as_ref())
        .fold(config_hash(proto), |h, tls| h ^ tls.material_hash);

    let previous = ctx
        .previous
        .and_then(|p| p.listeners.iter().find(|l| l.name == name));
    if let Some(previous) = previous.filter(|l| l.config_hash == config_hash) {
        return Some(previous.clone());
    }
    if let Some(previous) = previous.filter(|l| l.listener_hash == listener_hash) {
        connection_limit::keep_counts(&mut chains, previous);
    }
    Some(Arc::new(Listener {
        name,
        config_hash,
        listener_hash,
        address,
        buffer_limit: buffer_limit(proto.per_connection_buffer_limit_bytes.as_ref()),
        accepts_per_event,
        filter_chains: chains,
        chain_index,
        default_chain: has_default.then_some(matches.len()),
        listener_filters: filters,
        internal,
        bind_to_port,
        use_original_dst: proto.use_original_dst.as_ref().is_some_and(|b| b.value),
        access_logs,
        inbound: proto.traffic_direction == TrafficDirection::Inbound as i32,
        ignores_connection_limit: proto.ignore_global_conn_limit,
        bypasses_overload: proto.bypass_overload_manager,
        outbound: proto.traffic_direction == TrafficDirection::Outbound as i32,
        drain_type: match proto.drain_type() {
            DrainType::Default => ModelDrainType::Default,
            DrainType::ModifyOnly => ModelDrainType::ModifyOnly,
        },
        stats: ctx.stats.listener(&stat_prefix),
    }))
}

/// The buffer of in-process connections to internal listeners, per direction: the
/// `envoy.bootstrap.internal_listener` extension's `buffer_size_kb` (Envoy's default without).
pub(super) fn internal_buffer(bootstrap: &Bootstrap, errors: &mut Vec<TranslateError>) -> usize {
    let extensions = bootstrap.bootstrap_extensions.iter().enumerate();
    let Some((i, any)) = extensions
        .filter_map(|(i, e)| Some((i, e.typed_config.as_ref()?)))
        .rfind(|(_, any)| names::type_name(&any.type_url) == names::INTERNAL_LISTENER)
    else {
        return DEFAULT_INTERNAL_BUFFER;
    };
    let path = format!("bootstrap_extensions[{i}].typed_config");
    match proto::decode_any::<InternalListener>(any) {
        Ok(config) => match config.buffer_size_kb.map(|k| k.value) {
            None => DEFAULT_INTERNAL_BUFFER,
            Some(kb @ 1..=8192) => kb as usize * 1024,
            Some(kb) => {
                errors.push(TranslateError::new(
                    format!("{path}.buffer_size_kb"),
                    Some(&any.type_url),
                    format!("{kb} is not between 1 and 8192"),
                ));
                DEFAULT_INTERNAL_BUFFER
            }
        },
        Err(e) => {
            errors.push(TranslateError::new(
                path,
                Some(&any.type_url),
                e.to_string(),
            ));
            DEFAULT_INTERNAL_BUFFER
        }
    }
}

/// What an internal listener cannot have: TLS on its chains (its connections are in-process
/// and TLS over them is not supported) and `use_original_dst` (they have no original
/// destination; `istio.set_internal_dst_address` restores theirs).
fn internal_listener_checks(proto: &ListenerProto, path: &str, errors: &mut Vec<TranslateError>) {
    let chains = proto
        .filter_chains
        .iter()
        .enumerate()
        .map(|(k, c)| (format!("filter_chains[{k}]"), c));
    let default = proto
        .default_filter_chain
        .iter()
        .map(|c| ("default_filter_chain".to_string(), c));
    for (at, chain) in chains.chain(default) {
        if chain.transport_socket.is_some() {
            errors.push(TranslateError::new(
                format!("{path}.{at}.transport_socket"),
                None,
                "an internal listener's connections are in-process: TLS over them is not supported",
            ));
        }
    }
    if proto.use_original_dst.as_ref().is_some_and(|b| b.value) {
        errors.push(TranslateError::new(
            format!("{path}.use_original_dst"),
            None,
            "an internal listener's connections have no original destination to hand over by",
        ));
    }
}

/// Whether the listener opens its socket: unless `bind_to_port` or the deprecated
/// `deprecated_v1.bind_to_port` (Istio 1.9 writes it) says false.
fn binds(proto: &ListenerProto) -> bool {
    #[allow(deprecated)]
    let legacy = proto
        .deprecated_v1
        .as_ref()
        .and_then(|v1| v1.bind_to_port.as_ref());
    [proto.bind_to_port.as_ref(), legacy]
        .into_iter()
        .flatten()
        .all(|b| b.value)
}

/// A chain is one terminal tcp_proxy or HTTP connection manager; chains with filters the
/// walker rejected are skipped.
fn filter_chain(
    chain: &FilterChainProto,
    path: &str,
    stat_scope: &str,
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
    let mut connection_filters = Vec::with_capacity(init.len());
    for (f, filter) in init.iter().enumerate() {
        // A filter without a typed_config was refused by the walker.
        let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
            ok = false;
            continue;
        };
        match network_filters::connection_filter(any, &format!("{path}.filters[{f}]"), ctx, errors)
        {
            Some(built) => connection_filters.push(built),
            None => ok = false,
        }
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
    let tls = match &chain.transport_socket {
        None => Ok(None),
        Some(socket) => tls::downstream(
            socket,
            &format!("{path}.transport_socket"),
            stat_scope,
            &ctx.secrets,
            ctx.stats,
            errors,
        ),
    };
    let network = network.filter(|_| ok)?;
    let tls = tls.ok()?;
    Some(FilterChain {
        name: chain.name.clone(),
        config_hash: config_hash(chain) ^ tls.as_ref().map_or(0, |t| t.material_hash),
        connection_filters,
        network,
        tls,
    })
}
