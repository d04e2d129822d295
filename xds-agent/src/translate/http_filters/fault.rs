//! Translator: `envoy.filters.http.fault` (`HTTPFault`), in the chain and per route.
use std::{sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::extensions::filters::{
        common::fault::v3::{fault_delay::FaultDelaySecifier, FaultDelay as FaultDelayProto},
        http::fault::v3::{fault_abort::ErrorType, FaultAbort as FaultAbortProto, HttpFault},
    },
    google::protobuf::Any,
};

use super::common::{fractional_percent, Site};
use crate::translate::{duration, matchers::header_matcher, TranslateContext, TranslateError};
use model::{
    filter_stats::FaultStats,
    filters::{
        AbortSource, DelaySource, FaultAbort, FaultConfig, FaultDelay, FaultFilter,
        FractionalPercent, HttpFilterKind, PerRouteFilter,
    },
};

/// Envoy's abort body when `response_body` is unset.
const DEFAULT_ABORT_BODY: &str = "fault filter abort";

/// The filter in the chain; its stats are `http.<stat_prefix>.fault.*`.
pub(super) fn filter(
    any: &Any,
    site: &Site,
    stat_prefix: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let config = settings(any, site, errors)?;
    Some(HttpFilterKind::Fault(FaultFilter {
        config: Arc::new(config),
        stats: ctx
            .stats
            .scope::<FaultStats>(format!("http.{stat_prefix}.fault")),
    }))
}

/// An `HTTPFault` as a per-route override of the filter's settings.
pub(super) fn per_route(
    any: &Any,
    site: &Site,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<PerRouteFilter> {
    settings(any, site, errors).map(|c| PerRouteFilter::Fault(Arc::new(c)))
}

fn settings(any: &Any, site: &Site, errors: &mut Vec<TranslateError>) -> Option<FaultConfig> {
    let proto: HttpFault = super::decode(any, site, errors)?;
    let before = errors.len();
    let delay = proto.delay.as_ref().and_then(|d| delay(d, site, errors));
    let abort = proto.abort.as_ref().and_then(|a| abort(a, site, errors));
    let headers = proto
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let path = site.path_of(&format!("headers[{i}]"));
            header_matcher(h, site.at(&path), errors)
        })
        .collect();
    if errors.len() > before {
        return None;
    }
    Some(FaultConfig {
        delay,
        abort,
        upstream_cluster: Some(proto.upstream_cluster).filter(|c| !c.is_empty()),
        headers,
        downstream_nodes: proto.downstream_nodes,
        max_active_faults: proto.max_active_faults.map(|m| u64::from(m.value)),
        filter_metadata: proto.filter_metadata.as_ref().map(proto::to_json),
    })
}

/// An unset percentage is 0 % (Envoy's default instance).
fn percentage(
    proto: Option<&envoy_types::pb::envoy::r#type::v3::FractionalPercent>,
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> FractionalPercent {
    proto.map_or(FractionalPercent::NONE, |p| {
        fractional_percent(p, site, field, errors)
    })
}

fn delay(
    proto: &FaultDelayProto,
    site: &Site,
    errors: &mut Vec<TranslateError>,
) -> Option<FaultDelay> {
    let source = match proto.fault_delay_secifier.as_ref() {
        None => {
            errors.push(site.error("delay", "fixed_delay or header_delay is required"));
            return None;
        }
        Some(FaultDelaySecifier::HeaderDelay(_)) => DelaySource::Header,
        Some(FaultDelaySecifier::FixedDelay(d)) => {
            let path = site.path_of("delay.fixed_delay");
            match duration(d, &path, Some(site.type_url), errors)? {
                d if d > Duration::ZERO => DelaySource::Fixed(d),
                _ => {
                    errors.push(site.error("delay.fixed_delay", "must be greater than zero"));
                    return None;
                }
            }
        }
    };
    Some(FaultDelay {
        source,
        percentage: percentage(proto.percentage.as_ref(), site, "delay.percentage", errors),
    })
}

fn abort(
    proto: &FaultAbortProto,
    site: &Site,
    errors: &mut Vec<TranslateError>,
) -> Option<FaultAbort> {
    let source = match proto.error_type {
        None => {
            errors.push(site.error(
                "abort",
                "one of http_status, grpc_status, header_abort is required",
            ));
            return None;
        }
        Some(ErrorType::HttpStatus(status)) if (200..600).contains(&status) => {
            AbortSource::Http(status as u16)
        }
        Some(ErrorType::HttpStatus(status)) => {
            errors.push(site.error(
                "abort.http_status",
                format!("{status} is not in [200, 600)"),
            ));
            return None;
        }
        Some(ErrorType::GrpcStatus(status)) => AbortSource::Grpc(status),
        Some(ErrorType::HeaderAbort(_)) => AbortSource::Header,
    };
    let body = if proto.response_body.is_empty() {
        DEFAULT_ABORT_BODY.to_string()
    } else {
        proto.response_body.clone()
    };
    Some(FaultAbort {
        source,
        percentage: percentage(proto.percentage.as_ref(), site, "abort.percentage", errors),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{filter_errors, one_filter, per_route_config};
    use model::{
        filters::{HttpFilterKind, PerRouteFilter},
        matchers::HeaderSource,
    };

    use super::*;

    const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

    #[test]
    fn fault_config_translates() {
        let filter = one_filter(&format!(
            r#"{{name: envoy.filters.http.fault, typed_config: {{"@type": "{FAULT}",
              delay: {{fixed_delay: 0.25s, percentage: {{numerator: 5, denominator: TEN_THOUSAND}}}},
              abort: {{http_status: 503, percentage: {{numerator: 50}}}},
              upstream_cluster: backend,
              headers: [{{name: x-fault, exact_match: "yes"}}],
              downstream_nodes: [a, b],
              max_active_faults: 3,
              abort_percent_runtime: ignored.key}}}}"#
        ));
        let HttpFilterKind::Fault(f) = &filter.kind else {
            panic!("{filter:?}")
        };
        let c = &f.config;
        let delay = c.delay.as_ref().unwrap();
        assert_eq!(delay.source, DelaySource::Fixed(Duration::from_millis(250)));
        assert_eq!(
            delay.percentage,
            FractionalPercent {
                numerator: 5,
                denominator: 10_000
            }
        );
        let abort = c.abort.as_ref().unwrap();
        assert_eq!(abort.source, AbortSource::Http(503));
        assert_eq!(abort.percentage.numerator, 50);
        assert_eq!(abort.body, "fault filter abort");
        assert_eq!(c.upstream_cluster.as_deref(), Some("backend"));
        assert_eq!(c.headers[0].source, HeaderSource::Named("x-fault".into()));
        assert_eq!(c.downstream_nodes, ["a", "b"]);
        assert_eq!(c.max_active_faults, Some(3));
    }

    #[test]
    fn header_controlled_faults_default_to_zero_percent() {
        let filter = one_filter(&format!(
            r#"{{name: f, typed_config: {{"@type": "{FAULT}", delay: {{header_delay: {{}}}},
              abort: {{header_abort: {{}}, response_body: nope}}}}}}"#
        ));
        let HttpFilterKind::Fault(f) = &filter.kind else {
            panic!()
        };
        let c = &f.config;
        assert_eq!(c.delay.as_ref().unwrap().source, DelaySource::Header);
        assert_eq!(
            c.delay.as_ref().unwrap().percentage,
            FractionalPercent::NONE
        );
        assert_eq!(c.abort.as_ref().unwrap().source, AbortSource::Header);
        assert_eq!(c.abort.as_ref().unwrap().body, "nope");
        assert!(c.headers.is_empty() && c.upstream_cluster.is_none());
    }

    #[test]
    fn fault_errors_name_their_field() {
        let errors = filter_errors(&format!(
            r#"{{name: f, typed_config: {{"@type": "{FAULT}", delay: {{fixed_delay: 0s}},
              abort: {{http_status: 700}}, headers: [{{name: ""}}],
              response_rate_limit: {{fixed_limit: {{limit_kbps: 1}}}}}}}}"#
        ));
        let mut paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "f.typed_config.abort.http_status",
                "f.typed_config.delay.fixed_delay",
                "f.typed_config.headers[0].name",
                "f.typed_config.response_rate_limit",
            ],
            "{errors:#?}"
        );
        assert!(errors.iter().all(|e| e.type_url.as_deref() == Some(FAULT)));
    }

    #[test]
    fn per_route_fault_replaces_settings() {
        let config = per_route_config(&format!(
            r#"{{"@type": "{FAULT}", abort: {{grpc_status: 14, percentage: {{numerator: 100}}}}}}"#
        ));
        let PerRouteFilter::Fault(c) = config else {
            panic!("{config:?}")
        };
        assert_eq!(c.abort.as_ref().unwrap().source, AbortSource::Grpc(14));
    }
}
