//! Translator: a listener's `listener_filters` (TLS and HTTP inspectors, original_dst, also
//! implied by `use_original_dst`, Istio's set_internal_dst_address), their `filter_disabled` predicates and the listener's
//! filter timeout.
use envoy_types::pb::envoy::{
    config::listener::v3::{
        listener_filter, listener_filter_chain_match_predicate::Rule, Listener as ListenerProto,
        ListenerFilterChainMatchPredicate,
    },
    extensions::filters::listener::tls_inspector::v3::TlsInspector,
};

use super::{duration, TranslateError};
use crate::names;
use model::{
    listener_filters::{
        ListenerFilter, ListenerFilterKind, ListenerFilters, Predicate, DEFAULT_TIMEOUT,
    },
    stats::StatsRegistry,
};

/// Envoy's default `max_client_hello_size`, and its upper bound: 16 KiB of bytes read,
/// record headers included.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

pub(super) fn listener_filters(
    proto: &ListenerProto,
    path: &str,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Option<ListenerFilters> {
    let before = errors.len();
    let internal = proto.listener_specifier.is_some();
    let mut filters = Vec::new();
    for (i, filter) in proto.listener_filters.iter().enumerate() {
        let path = format!("{path}.listener_filters[{i}]");
        let any = match &filter.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any)) => any,
            _ => {
                errors.push(TranslateError::new(&path, None, "typed_config is required"));
                continue;
            }
        };
        let url = Some(any.type_url.as_str());
        let kind = match names::type_name(&any.type_url) {
            names::TLS_INSPECTOR => match proto::decode_any::<TlsInspector>(any) {
                Ok(config) => {
                    let size = config
                        .max_client_hello_size
                        .map_or(MAX_CLIENT_HELLO, |s| s.value as usize);
                    if size > MAX_CLIENT_HELLO {
                        errors.push(TranslateError::new(
                            format!("{path}.typed_config.max_client_hello_size"),
                            url,
                            format!("must be at most {MAX_CLIENT_HELLO}"),
                        ));
                        continue;
                    }
                    tls_inspector(size, stats)
                }
                Err(e) => {
                    errors.push(TranslateError::new(&path, url, e.to_string()));
                    continue;
                }
            },
            names::HTTP_INSPECTOR => ListenerFilterKind::HttpInspector {
                stats: stats.scope("http_inspector".into()),
            },
            names::ORIGINAL_DST => ListenerFilterKind::OriginalDst,
            names::SET_INTERNAL_DST_ADDRESS if internal => {
                ListenerFilterKind::SetInternalDstAddress
            }
            names::SET_INTERNAL_DST_ADDRESS => {
                errors.push(TranslateError::new(
                    format!("{path}.typed_config"),
                    url,
                    "only an internal listener's connections have an internal destination",
                ));
                continue;
            }
            _ => continue, // rejected by the walker
        };
        let disabled = filter
            .filter_disabled
            .as_ref()
            .and_then(|p| predicate(p, &format!("{path}.filter_disabled"), errors));
        filters.push(ListenerFilter { kind, disabled });
    }
    // Envoy adds the original_dst filter itself after the configured ones when the listener
    // uses original destinations (Istio's `virtualOutbound` lists none).
    let use_original_dst = proto.use_original_dst.as_ref().is_some_and(|b| b.value);
    if use_original_dst
        && !filters
            .iter()
            .any(|f| matches!(f.kind, ListenerFilterKind::OriginalDst))
    {
        filters.push(ListenerFilter {
            kind: ListenerFilterKind::OriginalDst,
            disabled: None,
        });
    }
    let timeout = match &proto.listener_filters_timeout {
        None => Some(DEFAULT_TIMEOUT),
        Some(d) => duration(d, &format!("{path}.listener_filters_timeout"), None, errors)
            .filter(|d| !d.is_zero()),
    };
    (errors.len() == before).then_some(ListenerFilters {
        filters,
        timeout,
        continue_on_timeout: proto.continue_on_listener_filters_timeout,
    })
}

/// The TLS inspector with its (process-wide) stats.
pub(super) fn tls_inspector(
    max_client_hello: usize,
    stats: &mut StatsRegistry,
) -> ListenerFilterKind {
    ListenerFilterKind::TlsInspector {
        max_client_hello,
        stats: stats.scope("tls_inspector".into()),
    }
}

fn predicate(
    proto: &ListenerFilterChainMatchPredicate,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<Predicate> {
    let set = |rules: &[ListenerFilterChainMatchPredicate], field: &str, errors: &mut Vec<_>| {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| predicate(r, &format!("{path}.{field}.rules[{i}]"), errors))
            .collect::<Option<Vec<_>>>()
    };
    match &proto.rule {
        Some(Rule::AnyMatch(true)) => Some(Predicate::Any),
        Some(Rule::OrMatch(s)) => set(&s.rules, "or_match", errors).map(Predicate::Or),
        Some(Rule::AndMatch(s)) => set(&s.rules, "and_match", errors).map(Predicate::And),
        Some(Rule::NotMatch(p)) => {
            predicate(p, &format!("{path}.not_match"), errors).map(|p| Predicate::Not(Box::new(p)))
        }
        Some(Rule::DestinationPortRange(r)) => {
            let ok = (0..=65535).contains(&r.start) && r.start < r.end && r.end <= 65536;
            if !ok {
                errors.push(TranslateError::new(
                    format!("{path}.destination_port_range"),
                    None,
                    format!("[{}, {}) is not a port range", r.start, r.end),
                ));
                return None;
            }
            Some(Predicate::DestinationPorts(r.start as u16, r.end as u32))
        }
        Some(Rule::AnyMatch(false)) | None => {
            errors.push(TranslateError::new(
                path,
                None,
                "one of or_match, and_match, not_match, any_match: true, destination_port_range is required",
            ));
            None
        }
    }
}
