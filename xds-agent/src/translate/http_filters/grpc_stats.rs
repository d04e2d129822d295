//! Translator: `envoy.filters.http.grpc_stats` — which gRPC calls get stats of their own.
use std::sync::Arc;

use envoy_types::pb::{
    envoy::extensions::filters::http::grpc_stats::v3::{
        filter_config::PerMethodStatSpecifier, FilterConfig,
    },
    google::protobuf::Any,
};

use super::common::Site;
use crate::translate::{TranslateContext, TranslateError};
use model::filters::{GrpcMethodStats, GrpcStatsConfig, HttpFilterKind};

/// The filter in the chain; its stats are the route cluster's (`cluster.<name>.grpc.*`).
pub(super) fn filter(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let proto: FilterConfig = super::decode(any, site, errors)?;
    if proto.enable_upstream_stats {
        errors.push(site.error(
            "enable_upstream_stats",
            "the per-method upstream_rq_time histogram is not supported (the cluster's \
             upstream_rq_time covers gRPC calls too)",
        ));
        return None;
    }
    let methods = match proto.per_method_stat_specifier {
        Some(PerMethodStatSpecifier::StatsForAllMethods(all)) if all.value => GrpcMethodStats::All,
        Some(PerMethodStatSpecifier::IndividualMethodStatsAllowlist(list)) => {
            GrpcMethodStats::Allowlist(
                list.services
                    .iter()
                    .flat_map(|s| s.method_names.iter().map(|m| (s.name.clone(), m.clone())))
                    .collect(),
            )
        }
        Some(PerMethodStatSpecifier::StatsForAllMethods(_)) | None => GrpcMethodStats::None,
    };
    Some(HttpFilterKind::GrpcStats(Arc::new(GrpcStatsConfig {
        methods,
        replace_dots_in_service: proto.replace_dots_in_grpc_service_name,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{filter_errors, one_filter};
    use super::*;

    const GS: &str = "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig";

    fn config(fields: &str) -> GrpcStatsConfig {
        let filter = one_filter(&format!(
            "{{name: gs, typed_config: {{'@type': {GS}, {fields}}}}}"
        ));
        match filter.kind {
            HttpFilterKind::GrpcStats(config) => (*config).clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn method_stats_follow_the_specifier() {
        // Istio's form; `emit_filter_state` is accepted (documented as ignored).
        let istio = config("emit_filter_state: true, stats_for_all_methods: false");
        assert_eq!(istio.methods, GrpcMethodStats::None);
        assert_eq!(config("").methods, GrpcMethodStats::None);
        assert_eq!(
            config("stats_for_all_methods: true").methods,
            GrpcMethodStats::All
        );
        let listed = config(
            "individual_method_stats_allowlist: {services: [{name: a.B, method_names: [C, D]}]}, \
             replace_dots_in_grpc_service_name: true",
        );
        assert_eq!(
            listed.methods,
            GrpcMethodStats::Allowlist(vec![
                ("a.B".into(), "C".into()),
                ("a.B".into(), "D".into())
            ])
        );
        assert!(listed.replace_dots_in_service);
    }

    #[test]
    fn upstream_stats_are_refused() {
        let errors = filter_errors(&format!(
            "{{name: gs, typed_config: {{'@type': {GS}, enable_upstream_stats: true}}}}"
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].to_string().contains("enable_upstream_stats"),
            "{errors:?}"
        );
    }
}
