//! Translator: Istio's `istio.stats` (`stats.PluginConfig`), the same config as an HTTP filter
//! and as a network filter. `metrics` may drop metrics and remove labels; labels valued by
//! CEL expressions (`dimensions`) and new metrics (`definitions`) are refused.
use std::sync::Arc;

use envoy_types::pb::google::protobuf::{Any, StringValue};
use prost::Message;

use super::{TranslateContext, TranslateError};
use crate::names;
use model::{
    istio::StatsConfig,
    stats::istio::{label_index, Metric, Overrides},
};
use proto::istio::stats::{PluginConfig, Reporter};

/// The config in `any` (at `path`), or `None` with the reasons in `errors`.
pub fn stats_config(
    any: &Any,
    path: &str,
    ctx: &TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<StatsConfig>> {
    let error = |field: String, message: String| {
        TranslateError::new(format!("{path}{field}"), Some(&any.type_url), message)
    };
    let config: PluginConfig = match proto::decode_any(any) {
        Ok(config) => config,
        Err(e) => {
            errors.push(error(String::new(), e.to_string()));
            return None;
        }
    };
    let before = errors.len();
    if !config.definitions.is_empty() {
        errors.push(error(
            ".definitions".into(),
            "metrics valued by CEL expressions are not supported: only Istio's standard metrics are"
                .into(),
        ));
    }
    let mut overrides = Overrides::default();
    for (i, metric) in config.metrics.iter().enumerate() {
        let at = format!(".metrics[{i}]");
        if !metric.dimensions.is_empty() {
            errors.push(error(
                format!("{at}.dimensions"),
                "labels valued by CEL expressions are not supported: only tags_to_remove and drop"
                    .into(),
            ));
        }
        if !metric.r#match.is_empty() {
            errors.push(error(
                format!("{at}.match"),
                "CEL match expressions are not supported".into(),
            ));
        }
        // Istio ignores names that are not standard metrics, and labels that are not standard.
        let metrics: Vec<Metric> = match metric.name.as_str() {
            "" => Metric::ALL.to_vec(),
            name => Metric::from_config_name(name).into_iter().collect(),
        };
        for m in &metrics {
            if metric.drop {
                overrides.drop_metric(*m);
                continue;
            }
            for label in metric.tags_to_remove.iter().filter_map(|t| label_index(t)) {
                overrides.remove_label(*m, label);
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(Arc::new(StatsConfig {
        waypoint: config.reporter == Reporter::ServerGateway as i32,
        disable_host_header_fallback: config.disable_host_header_fallback,
        overrides: Arc::new(overrides),
        local: ctx.local_peer.workload.clone(),
        metrics: ctx.stats.istio.clone(),
    }))
}

/// The `metrics[].dimensions` Istio 1.9 wrote for its cluster labels, by label: standard
/// labels since, derived the same way here, so these dimensions change nothing.
const STANDARD_DIMENSIONS: &[(&str, &str)] = &[
    ("source_cluster", "node.metadata['CLUSTER_ID']"),
    ("source_cluster", "downstream_peer.cluster_id"),
    ("destination_cluster", "node.metadata['CLUSTER_ID']"),
    ("destination_cluster", "upstream_peer.cluster_id"),
];

/// Istio 1.5–1.9's null-VM stats plugin (`envoy.wasm.stats`): its JSON `configuration` (in a
/// `StringValue`; `None`: none) read as a `stats.PluginConfig` at `path`. `debug` and
/// `stat_prefix` (always `istio`) are left out; a dimension other than the standard ones
/// Istio 1.9 spelled out is refused, as CEL.
pub fn null_vm_stats(
    configuration: Option<&Any>,
    path: &str,
    ctx: &TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<StatsConfig>> {
    let error = |message: String| TranslateError::new(path.to_string(), None, message);
    let text = match configuration {
        None => String::new(),
        Some(any) if names::type_name(&any.type_url) == "google.protobuf.StringValue" => {
            match StringValue::decode(any.value.as_slice()) {
                Ok(text) => text.value,
                Err(e) => {
                    errors.push(error(format!("cannot decode: {e}")));
                    return None;
                }
            }
        }
        Some(any) => {
            errors.push(error(format!(
                "the stats plugin's configuration is JSON in a StringValue, not {}",
                any.type_url
            )));
            return None;
        }
    };
    let json = match text.trim() {
        "" => serde_json::Value::Object(Default::default()),
        text => match proto::parse_document(text) {
            Ok(json) => json,
            Err(e) => {
                errors.push(error(format!("not JSON: {e}")));
                return None;
            }
        },
    };
    let mut config = PluginConfig::default();
    for (key, value) in json.as_object().into_iter().flatten() {
        match key.as_str() {
            "debug" | "stat_prefix" => {}
            "disable_host_header_fallback" => {
                config.disable_host_header_fallback =
                    value.as_bool().unwrap_or(value.as_str() == Some("true"))
            }
            "metrics" => {
                for (i, metric) in value.as_array().into_iter().flatten().enumerate() {
                    let dimensions = metric["dimensions"].as_object().into_iter().flatten();
                    for (label, expression) in dimensions {
                        let pair = (label.as_str(), expression.as_str().unwrap_or_default());
                        if !STANDARD_DIMENSIONS.contains(&pair) {
                            errors.push(error(format!(
                                "metrics[{i}].dimensions.{label}: a CEL expression is not \
                                 supported ({expression})"
                            )));
                            return None;
                        }
                    }
                    let others = metric.as_object().into_iter().flatten();
                    if let Some((key, _)) = others.into_iter().find(|(k, _)| *k != "dimensions") {
                        errors.push(error(format!("metrics[{i}].{key} is not supported")));
                        return None;
                    }
                }
            }
            other => {
                errors.push(error(format!("unknown setting {other:?}")));
                return None;
            }
        }
    }
    let any = Any {
        type_url: format!("type.googleapis.com/{}", names::STATS),
        value: config.encode_to_vec(),
    };
    stats_config(&any, path, ctx, errors)
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use proto::istio::stats::MetricConfig;

    use super::*;
    use model::stats::StatsRegistry;

    fn context(stats: &mut StatsRegistry) -> TranslateContext<'_> {
        TranslateContext {
            generation: 1,
            stats,
            previous: None,
            // Empty maps that outlive the context (tests only).
            dns: Box::leak(Box::default()),
            extensions: Box::leak(Box::default()),
            secrets: Default::default(),
            local_peer: Default::default(),
            ports: None,
        }
    }

    fn any(config: PluginConfig) -> Any {
        Any {
            type_url: "type.googleapis.com/stats.PluginConfig".into(),
            value: config.encode_to_vec(),
        }
    }

    #[test]
    fn drop_and_tags_to_remove_apply_cel_is_refused() {
        let config = PluginConfig {
            disable_host_header_fallback: true,
            reporter: Reporter::ServerGateway as i32,
            metrics: vec![
                MetricConfig {
                    name: "request_bytes".into(),
                    drop: true,
                    ..Default::default()
                },
                MetricConfig {
                    tags_to_remove: vec!["response_flags".into(), "not_a_label".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut stats = StatsRegistry::new(1);
        let ctx = &context(&mut stats);
        {
            let mut errors = Vec::new();
            let built = stats_config(&any(config), "f", ctx, &mut errors).unwrap();
            assert!(errors.is_empty());
            assert!(built.waypoint && built.disable_host_header_fallback);
            let flags = label_index("response_flags").unwrap();
            let mut expected = Overrides::default();
            expected.drop_metric(Metric::RequestBytes);
            for m in Metric::ALL {
                expected.remove_label(m, flags);
            }
            assert_eq!(*built.overrides, expected);

            let cel = PluginConfig {
                metrics: vec![MetricConfig {
                    dimensions: [("x".to_string(), "request.host".to_string())].into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            assert!(stats_config(&any(cel), "f", ctx, &mut errors).is_none());
            assert_eq!(errors[0].path, "f.metrics[0].dimensions");
        }
    }

    #[test]
    fn istio_1_9_null_vm_configs_read_as_plugin_configs() {
        let mut stats = StatsRegistry::new(1);
        let ctx = &context(&mut stats);
        let json = |text: &str| Any {
            type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
            value: StringValue { value: text.into() }.encode_to_vec(),
        };
        let mut errors = Vec::new();
        // Istio 1.9's outbound config, and 1.5's, with its trailing comma.
        let outbound = r#"{"debug": "false", "stat_prefix": "istio", "metrics": [{"dimensions":
            {"source_cluster": "node.metadata['CLUSTER_ID']",
             "destination_cluster": "upstream_peer.cluster_id"}}]}"#;
        assert!(null_vm_stats(Some(&json(outbound)), "c", ctx, &mut errors).is_some());
        let gateway = "{\n \"debug\": \"false\",\n \"disable_host_header_fallback\": true,\n}\n";
        let built = null_vm_stats(Some(&json(gateway)), "c", ctx, &mut errors).unwrap();
        assert!(built.disable_host_header_fallback);
        assert!(errors.is_empty(), "{errors:?}");
        let cel = r#"{"metrics": [{"dimensions": {"request_host": "request.host"}}]}"#;
        assert!(null_vm_stats(Some(&json(cel)), "c", ctx, &mut errors).is_none());
        assert!(errors[0].message.contains("request_host"), "{errors:?}");
    }
}
