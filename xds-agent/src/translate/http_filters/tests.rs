//! Translator tests for the HTTP filter registry: helpers the filters' tests share, and the
//! registry's own rules (router, optional, disabled, per-route wrappers, the walker's view).
use std::collections::HashMap;

use envoy_types::pb::{
    envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter as HttpFilterProto,
    google::protobuf::Any,
};

use super::*;
use crate::translate::{support::unsupported_fields, surface};
use model::stats::StatsRegistry;

/// Runs `f` with a translation context over a fresh registry of 2 shards.
fn with_ctx<T>(f: impl FnOnce(&mut TranslateContext) -> T) -> T {
    let mut stats = StatsRegistry::new(2);
    let dns = HashMap::new();
    let mut ctx = TranslateContext {
        generation: 1,
        stats: &mut stats,
        previous: None,
        dns: &dns,
        extensions: &Default::default(),
        secrets: Default::default(),
        local_peer: Default::default(),
        ports: None,
    };
    f(&mut ctx)
}

fn parse<M: prost::Message + Default + prost::Name>(yaml: &str) -> M {
    proto::from_json(proto::parse_document(yaml).unwrap(), false).unwrap()
}

/// Walker and translator errors for an `http_filters` entry at path `f` (connection manager
/// stat prefix `ingress`), and the filter if it translated.
fn translate_filter(yaml: &str) -> (Option<HttpFilter>, Vec<TranslateError>) {
    let proto: HttpFilterProto = parse(yaml);
    let mut errors = unsupported_fields(&proto, "f", None);
    let filter = with_ctx(|ctx| http_filter(&proto, "f", "ingress", ctx, &mut errors));
    (filter, errors)
}

/// The filter an entry translates to, asserting no error.
pub(super) fn one_filter(yaml: &str) -> HttpFilter {
    let (filter, errors) = translate_filter(yaml);
    assert_eq!(errors, vec![]);
    filter.expect("translated")
}

/// The errors an entry gets (at least one).
pub(super) fn filter_errors(yaml: &str) -> Vec<TranslateError> {
    let (_, errors) = translate_filter(yaml);
    assert!(!errors.is_empty(), "expected errors");
    errors
}

/// A `typed_per_filter_config` value as the walker and `per_route` see it, at
/// `r.typed_per_filter_config[x]`. (The walker checks a `FilterConfig` as it is, and any other
/// payload in a `FilterConfig` slot, which takes the same types as a route's.)
fn translate_per_route(yaml: &str) -> (Option<PerRouteFilter>, Vec<TranslateError>) {
    let any: Any = parse(yaml);
    let path = "r.typed_per_filter_config[x]";
    let mut errors = if names::type_name(&any.type_url) == names::FILTER_CONFIG {
        unsupported_fields(
            &proto::decode_any::<FilterConfig>(&any).unwrap(),
            path,
            None,
        )
    } else {
        let wrapper = FilterConfig {
            config: Some(any.clone()),
            ..Default::default()
        };
        unsupported_fields(&wrapper, path, None)
            .into_iter()
            .map(|mut e| {
                e.path = e.path.replacen(&format!("{path}.config"), path, 1);
                e
            })
            .collect()
    };
    let filter = with_ctx(|ctx| per_route("x", &any, path, ctx, &mut errors));
    (filter, errors)
}

pub(super) fn per_route_config(yaml: &str) -> PerRouteFilter {
    let (filter, errors) = translate_per_route(yaml);
    assert_eq!(errors, vec![]);
    filter.expect("translated")
}

pub(super) fn per_route_errors(yaml: &str) -> Vec<TranslateError> {
    let (_, errors) = translate_per_route(yaml);
    assert!(!errors.is_empty(), "expected errors");
    errors
}

const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
const FILTER_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";
/// A real Envoy filter this proxy does not implement.
const BUFFER: &str = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer";

#[test]
fn the_router_is_recognised_and_must_be_last() {
    let router: HttpFilterProto = parse(&format!(
        r#"{{name: envoy.filters.http.router, typed_config: {{"@type": "{ROUTER}"}}}}"#
    ));
    assert!(is_router(&router));
    let fault: HttpFilterProto = parse(&format!(
        r#"{{name: envoy.filters.http.fault, typed_config: {{"@type": "{FAULT}"}}}}"#
    ));
    assert!(!is_router(&fault));
    assert!(!is_router(&parse(r#"{name: envoy.filters.http.router}"#)));
    // Handed to `http_filter`, the router is one that is not last.
    let errors = filter_errors(&format!(
        r#"{{name: envoy.filters.http.router, typed_config: {{"@type": "{ROUTER}"}}}}"#
    ));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "f.typed_config");
    assert_eq!(errors[0].message, "the router must be the last HTTP filter");
}

#[test]
fn unsupported_filters_are_errors_unless_optional() {
    let errors = filter_errors(&format!(
        r#"{{name: envoy.filters.http.buffer, typed_config: {{"@type": "{BUFFER}", max_request_bytes: 1}}}}"#
    ));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "f.typed_config");
    assert_eq!(
        errors[0].message,
        "HTTP filter envoy.filters.http.buffer is not supported yet"
    );
    let (filter, errors) = translate_filter(&format!(
        r#"{{name: envoy.filters.http.buffer, is_optional: true, typed_config: {{"@type": "{BUFFER}", max_request_bytes: 1}}}}"#
    ));
    assert!(
        filter.is_none(),
        "an optional unsupported filter is skipped"
    );
    assert_eq!(errors, vec![]);
    // Optional does not excuse unsupported fields of a supported filter.
    let errors = filter_errors(&format!(
        r#"{{name: f, is_optional: true, typed_config: {{"@type": "{FAULT}", response_rate_limit: {{header_limit: {{}}}}}}}}"#
    ));
    assert_eq!(errors[0].path, "f.typed_config.response_rate_limit");
}

#[test]
fn entries_need_a_typed_config_and_a_name() {
    let errors = filter_errors("{name: envoy.filters.http.fault}");
    assert_eq!(errors[0].path, "f");
    assert_eq!(errors[0].message, "typed_config is required");
    let errors = filter_errors(&format!(r#"{{typed_config: {{"@type": "{FAULT}"}}}}"#));
    assert_eq!(errors[0].path, "f.name");
}

#[test]
fn disabled_filters_keep_their_flag_and_stats_names() {
    let filter = one_filter(&format!(
        r#"{{name: envoy.filters.http.fault, disabled: true, typed_config: {{"@type": "{FAULT}"}}}}"#
    ));
    assert!(filter.disabled);
    assert_eq!(filter.name, "envoy.filters.http.fault");
    let HttpFilterKind::Fault(f) = &filter.kind else {
        panic!()
    };
    let mut stats = vec![];
    model::stats::Scope::read(&*f.stats, &mut stats);
    assert!(stats
        .iter()
        .any(|s| s.name == "http.ingress.fault.delays_injected"));
}

#[test]
fn filter_config_wrappers_disable_enable_and_excuse() {
    let config = per_route_config(&format!(
        r#"{{"@type": "{FILTER_CONFIG}", disabled: true}}"#
    ));
    assert!(matches!(config, PerRouteFilter::Disabled));
    // An empty `config` (no type; not expressible in YAML) enables the filter.
    let empty = FilterConfig {
        config: Some(Any::default()),
        ..Default::default()
    };
    let any = Any {
        type_url: FILTER_CONFIG.into(),
        value: prost::Message::encode_to_vec(&empty),
    };
    let config = with_ctx(|ctx| per_route("x", &any, "r", ctx, &mut vec![]));
    assert!(matches!(config, Some(PerRouteFilter::Enabled)));
    let config = per_route_config(&format!(
        r#"{{"@type": "{FILTER_CONFIG}", is_optional: true, config: {{"@type": "{BUFFER}", max_request_bytes: 1}}}}"#
    ));
    assert!(matches!(config, PerRouteFilter::Enabled));
    let config = per_route_config(&format!(
        r#"{{"@type": "{FILTER_CONFIG}", config: {{"@type": "{FAULT}", max_active_faults: 2}}}}"#
    ));
    assert!(matches!(config, PerRouteFilter::Fault(f) if f.max_active_faults == Some(2)));
    let errors = per_route_errors(&format!(r#"{{"@type": "{FILTER_CONFIG}"}}"#));
    assert_eq!(errors[0].path, "r.typed_per_filter_config[x].config");
}

#[test]
fn filter_types_without_per_route_config_are_rejected_per_route() {
    let (config, _) = translate_per_route(&format!(r#"{{"@type": "{CORS}"}}"#));
    assert!(config.is_none());
    let errors = with_ctx(|ctx| {
        let mut errors = unsupported_fields(
            &FilterConfig {
                config: Some(parse(&format!(r#"{{"@type": "{ROUTER}"}}"#))),
                ..Default::default()
            },
            "r",
            None,
        );
        per_route(
            "x",
            &parse(&format!(r#"{{"@type": "{ROUTER}"}}"#)),
            "r",
            ctx,
            &mut errors,
        );
        errors
    });
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "r.config");
}

#[test]
fn registry_and_slot_tables_agree() {
    let configs: Vec<_> = (REGISTRY.iter().map(|f| f.config_type))
        .chain(NOT_RUN.iter().copied())
        .collect();
    assert_eq!(configs, FILTER_TYPES);
    let per_route: Vec<_> = REGISTRY
        .iter()
        .filter_map(|f| f.per_route.map(|(t, _)| t))
        .collect();
    assert_eq!(per_route, PER_ROUTE_CONFIG_TYPES);
    assert_eq!(&PER_ROUTE_TYPES[..per_route.len()], PER_ROUTE_CONFIG_TYPES);
    assert_eq!(PER_ROUTE_TYPES.last(), Some(&names::FILTER_CONFIG));
    for t in PER_ROUTE_TYPES {
        assert!(surface::surface(t).is_some(), "{t}");
    }
}
