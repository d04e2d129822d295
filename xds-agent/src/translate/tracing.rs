//! Translator: tracing — the connection manager's `tracing` (sampling, custom tags, provider)
//! and the bootstrap's `tracing.http`, the tracer used when a connection manager names none;
//! `envoy.tracers.zipkin` is the one provider (HTTP_JSON reports).
use std::sync::Arc;

use envoy_types::pb::envoy::{
    config::{
        bootstrap::v3::Bootstrap,
        trace::v3::{
            tracing::Http as ProviderProto, zipkin_config::CollectorEndpointVersion, ZipkinConfig,
        },
    },
    extensions::{
        filters::network::http_connection_manager::v3::HttpConnectionManager as HcmProto,
        request_id::uuid::v3::UuidRequestIdConfig,
    },
    r#type::{
        metadata::v3::metadata_kind::Kind as MetadataKind,
        tracing::v3::{custom_tag::Type as TagType, CustomTag as TagProto},
        v3::Percent,
    },
};
use model::{
    stats::StatsRegistry,
    tracing::{CustomTag, HttpTracing, LocalNode, TagValue, Zipkin, SAMPLING_DENOMINATOR},
};

use super::{http_connection_manager::Problems, TranslateError};
use crate::names;

/// Envoy's default `max_path_tag_length`.
pub const DEFAULT_MAX_PATH_TAG_LENGTH: usize = 256;

/// What every connection manager's tracing reads from the bootstrap: the node spans name,
/// and `tracing.http`, the tracer of connection managers that name no `provider`.
#[derive(Debug, Clone, Default)]
pub struct BootstrapTracing {
    pub node: LocalNode,
    pub http: Option<Arc<Zipkin>>,
}

/// The bootstrap's tracing part (problems reported at `tracing.http`). `Bootstrap.tracing` is
/// deprecated in favour of a provider per connection manager, but Istio still sets it.
#[allow(deprecated)]
pub(super) fn bootstrap_tracing(
    bootstrap: &Bootstrap,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> BootstrapTracing {
    let node = bootstrap
        .node
        .as_ref()
        .map_or_else(LocalNode::default, |n| LocalNode {
            id: n.id.clone(),
            cluster: n.cluster.clone(),
            zone: n
                .locality
                .as_ref()
                .map_or_else(String::new, |l| l.zone.clone()),
        });
    let provider = bootstrap.tracing.as_ref().and_then(|t| t.http.as_ref());
    let http = provider.and_then(|p| zipkin(p, "tracing.http", &node, stats, errors));
    BootstrapTracing { node, http }
}

/// A connection manager's `tracing`; `None` without one (or when it is refused).
pub(super) fn http_tracing(
    config: &HcmProto,
    path: &str,
    bootstrap: &BootstrapTracing,
    stats: &mut StatsRegistry,
    p: &mut Problems,
) -> Option<HttpTracing> {
    let tracing = config.tracing.as_ref()?;
    let at = |field: &str| format!("{path}.tracing.{field}");
    let before = p.count();
    let mut share = |value: Option<&Percent>, field: &str| match value {
        None => SAMPLING_DENOMINATOR,
        Some(v) if (0.0..=100.0).contains(&v.value) => {
            (v.value * f64::from(SAMPLING_DENOMINATOR) / 100.0).round() as u32
        }
        Some(_) => {
            p.add(at(field), "must be a percentage between 0 and 100");
            0
        }
    };
    let client_sampling = share(tracing.client_sampling.as_ref(), "client_sampling");
    let random_sampling = share(tracing.random_sampling.as_ref(), "random_sampling");
    let overall_sampling = share(tracing.overall_sampling.as_ref(), "overall_sampling");
    if tracing.verbose {
        p.add(
            at("verbose"),
            "verbose spans (an annotation per request event) are not supported",
        );
    }
    if tracing.spawn_upstream_span.is_some_and(|v| v.value) {
        p.add(
            at("spawn_upstream_span"),
            "upstream spans are not supported: each request has one span per proxy",
        );
    }
    let custom_tags = tracing
        .custom_tags
        .iter()
        .enumerate()
        .filter_map(|(i, tag)| custom_tag(tag, &at(&format!("custom_tags[{i}]")), p))
        .collect();
    let zipkin = match &tracing.provider {
        Some(provider) => zipkin(provider, &at("provider"), &bootstrap.node, stats, p.errors),
        None => bootstrap.http.clone(),
    };
    let (pack_trace_reason, request_id_sampling) = request_id_settings(config);
    (p.count() == before).then(|| HttpTracing {
        client_sampling,
        random_sampling,
        overall_sampling,
        max_path_tag_length: tracing
            .max_path_tag_length
            .map_or(DEFAULT_MAX_PATH_TAG_LENGTH, |v| v.value as usize),
        custom_tags,
        zipkin,
        pack_trace_reason,
        request_id_sampling,
    })
}

/// The UUID request-id extension's `pack_trace_reason` and
/// `use_request_id_for_trace_sampling` (both default true; other extensions are refused
/// where the connection manager is translated).
fn request_id_settings(config: &HcmProto) -> (bool, bool) {
    let uuid = config
        .request_id_extension
        .as_ref()
        .and_then(|e| e.typed_config.as_ref())
        .and_then(|any| proto::decode_any::<UuidRequestIdConfig>(any).ok())
        .unwrap_or_default();
    (
        uuid.pack_trace_reason.is_none_or(|v| v.value),
        uuid.use_request_id_for_trace_sampling
            .is_none_or(|v| v.value),
    )
}

fn custom_tag(proto: &TagProto, path: &str, p: &mut Problems) -> Option<CustomTag> {
    if proto.tag.is_empty() {
        p.add(format!("{path}.tag"), "tag is required");
        return None;
    }
    let optional = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let value = match &proto.r#type {
        Some(TagType::Literal(l)) => TagValue::Literal(l.value.clone()),
        // Read once, as Envoy reads it when the config loads; no value and no default: no tag.
        Some(TagType::Environment(e)) => {
            let value = std::env::var(&e.name)
                .ok()
                .or_else(|| optional(&e.default_value));
            TagValue::Literal(value.filter(|v| !v.is_empty())?)
        }
        Some(TagType::RequestHeader(h)) => TagValue::RequestHeader {
            name: h.name.to_ascii_lowercase(),
            default: optional(&h.default_value),
        },
        Some(TagType::Metadata(m)) => {
            let kind = m.kind.as_ref().and_then(|k| k.kind.as_ref());
            if !matches!(kind, Some(MetadataKind::Request(_))) {
                p.add(
                    format!("{path}.metadata.kind"),
                    "only request (dynamic) metadata tags are supported: route, cluster and host \
                     metadata are not kept for filters",
                );
                return None;
            }
            TagValue::AbsentMetadata {
                default: optional(&m.default_value),
            }
        }
        Some(TagType::Value(_)) => {
            p.add(
                format!("{path}.value"),
                "formatted tag values are not supported (literal, environment, request_header \
                 and request metadata are)",
            );
            return None;
        }
        None => {
            p.add(
                path,
                "a tag value (literal, environment, request_header, metadata) is required",
            );
            return None;
        }
    };
    Some(CustomTag {
        tag: proto.tag.clone(),
        value,
    })
}

/// A tracer (`tracing.http` of the bootstrap, or a connection manager's `provider`): only
/// `envoy.tracers.zipkin`, reporting Zipkin v2 JSON (the deprecated
/// `split_spans_for_request` is read to refuse it).
#[allow(deprecated)]
fn zipkin(
    provider: &ProviderProto,
    path: &str,
    node: &LocalNode,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<Zipkin>> {
    use envoy_types::pb::envoy::config::trace::v3::tracing::http::ConfigType;
    let Some(ConfigType::TypedConfig(any)) = &provider.config_type else {
        errors.push(TranslateError::new(path, None, "typed_config is required"));
        return None;
    };
    let url = Some(any.type_url.as_str());
    let at = format!("{path}.typed_config");
    // Other provider types are refused by the walker, which names them.
    if names::type_name(&any.type_url) != names::ZIPKIN {
        return None;
    }
    let config: ZipkinConfig = match proto::decode_any(any) {
        Ok(config) => config,
        Err(e) => {
            errors.push(TranslateError::new(at, url, e.to_string()));
            return None;
        }
    };
    let before = errors.len();
    let mut add = |field: &str, message: &str| {
        errors.push(TranslateError::new(format!("{at}.{field}"), url, message))
    };
    if config.collector_cluster.is_empty() {
        add("collector_cluster", "collector_cluster is required");
    }
    if config.collector_endpoint.is_empty() {
        add("collector_endpoint", "collector_endpoint is required");
    }
    match config.collector_endpoint_version() {
        CollectorEndpointVersion::HttpJson => {}
        other => add(
            "collector_endpoint_version",
            &format!(
                "{} is not supported: spans are reported as HTTP_JSON (Zipkin v2 JSON)",
                other.as_str_name()
            ),
        ),
    }
    if config.split_spans_for_request {
        add(
            "split_spans_for_request",
            "not supported: each request has one span per proxy",
        );
    }
    if errors.len() > before {
        return None;
    }
    Some(Arc::new(Zipkin {
        collector_hostname: match config.collector_hostname.is_empty() {
            true => config.collector_cluster.clone(),
            false => config.collector_hostname.clone(),
        },
        collector_cluster: config.collector_cluster,
        collector_endpoint: config.collector_endpoint,
        trace_id_128bit: config.trace_id_128bit,
        shared_span_context: config.shared_span_context.is_none_or(|v| v.value),
        node: node.clone(),
        stats: stats.zipkin(),
    }))
}
