//! Translator: Istio's `istio.stats` (`stats.PluginConfig`), the same config as an HTTP filter
//! and as a network filter. `metrics` may drop metrics and remove labels; labels valued by
//! CEL expressions (`dimensions`) and new metrics (`definitions`) are refused.
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;

use super::{TranslateContext, TranslateError};
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

#[cfg(test)]
mod tests {
    use prost::Message;
    use proto::istio::stats::MetricConfig;

    use super::*;
    use model::stats::StatsRegistry;

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
        let ctx = &TranslateContext {
            generation: 1,
            stats: &mut stats,
            previous: None,
            dns: &Default::default(),
            extensions: &Default::default(),
            secrets: Default::default(),
            local_peer: Default::default(),
        };
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
}
