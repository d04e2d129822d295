//! Translator: a cluster's `health_checks` and `outlier_detection`, with Envoy's defaults and
//! checks.
use std::{ops::Range, sync::Arc, time::Duration};

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{Cluster as ClusterProto, OutlierDetection as OutlierProto},
        core::v3::{
            health_check::{payload::Payload as PayloadKind, HealthChecker, Payload},
            HeaderValueOption, HealthCheck as HealthCheckProto, RequestMethod,
        },
    },
    r#type::v3::{CodecClientType, Int64Range},
};
use envoy_types::pb::google::protobuf;

use super::{duration, positive_duration, TranslateContext, TranslateError};
use model::health::{CheckKind, HealthCheck, HttpCheck, OutlierDetection};

/// The cluster's active health check, if it has one (Envoy runs at most one per cluster).
pub(super) fn health_check(
    proto: &ClusterProto,
    path: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<HealthCheck>> {
    let path = format!("{path}.health_checks");
    let config = match proto.health_checks.as_slice() {
        [] => return None,
        [config] => config,
        _ => {
            errors.push(TranslateError::new(
                path,
                None,
                "only one health check per cluster is supported (as in Envoy)",
            ));
            return None;
        }
    };
    let path = format!("{path}[0]");
    let before = errors.len();
    let required = |value: Option<&protobuf::Duration>, field: &str, errors: &mut Vec<_>| {
        let field_path = format!("{path}.{field}");
        match value {
            Some(_) => positive_duration(value, Duration::ZERO, &field_path, errors),
            None => {
                errors.push(TranslateError::new(field_path, None, "is required"));
                Duration::ZERO
            }
        }
    };
    let optional = |value: Option<&protobuf::Duration>, field: &str, default, errors: &mut _| {
        value
            .and_then(|v| duration(v, &format!("{path}.{field}"), None, errors))
            .unwrap_or(default)
    };
    let timeout = required(config.timeout.as_ref(), "timeout", errors);
    let interval = required(config.interval.as_ref(), "interval", errors);
    let threshold = |value: Option<&protobuf::UInt32Value>, field: &str, errors: &mut Vec<_>| {
        value.map(|v| v.value).unwrap_or_else(|| {
            errors.push(TranslateError::new(
                format!("{path}.{field}"),
                None,
                "is required",
            ));
            1
        })
    };
    let unhealthy_threshold = threshold(
        config.unhealthy_threshold.as_ref(),
        "unhealthy_threshold",
        errors,
    );
    let healthy_threshold = threshold(
        config.healthy_threshold.as_ref(),
        "healthy_threshold",
        errors,
    );
    let no_traffic_interval = positive_duration(
        config.no_traffic_interval.as_ref(),
        Duration::from_secs(60),
        &format!("{path}.no_traffic_interval"),
        errors,
    );
    let unhealthy_interval = positive_duration(
        config.unhealthy_interval.as_ref(),
        interval,
        &format!("{path}.unhealthy_interval"),
        errors,
    );
    let kind = checker(config, &proto.name, &path, errors);
    let check = HealthCheck {
        timeout,
        interval,
        interval_jitter: optional(
            config.interval_jitter.as_ref(),
            "interval_jitter",
            Duration::ZERO,
            errors,
        ),
        interval_jitter_percent: config.interval_jitter_percent,
        initial_jitter: optional(
            config.initial_jitter.as_ref(),
            "initial_jitter",
            Duration::ZERO,
            errors,
        ),
        unhealthy_interval,
        unhealthy_edge_interval: positive_duration(
            config.unhealthy_edge_interval.as_ref(),
            unhealthy_interval,
            &format!("{path}.unhealthy_edge_interval"),
            errors,
        ),
        healthy_edge_interval: positive_duration(
            config.healthy_edge_interval.as_ref(),
            interval,
            &format!("{path}.healthy_edge_interval"),
            errors,
        ),
        no_traffic_interval,
        no_traffic_healthy_interval: positive_duration(
            config.no_traffic_healthy_interval.as_ref(),
            no_traffic_interval,
            &format!("{path}.no_traffic_healthy_interval"),
            errors,
        ),
        unhealthy_threshold,
        healthy_threshold,
        reuse_connection: config.reuse_connection.as_ref().is_none_or(|v| v.value),
        kind: kind?,
        stats: ctx.stats.health_check(&proto.name),
    };
    (errors.len() == before).then(|| Arc::new(check))
}

/// What the check sends and expects.
fn checker(
    config: &HealthCheckProto,
    cluster: &str,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<CheckKind> {
    match &config.health_checker {
        Some(HealthChecker::HttpHealthCheck(http)) => {
            let path = format!("{path}.http_health_check");
            if http.path.is_empty() {
                errors.push(TranslateError::new(
                    format!("{path}.path"),
                    None,
                    "path is required",
                ));
            }
            let method = match http.method() {
                RequestMethod::MethodUnspecified => "GET",
                RequestMethod::Connect => {
                    errors.push(TranslateError::new(
                        format!("{path}.method"),
                        None,
                        "CONNECT is not allowed for health checks (as in Envoy)",
                    ));
                    return None;
                }
                method => method.as_str_name(),
            };
            let expected = match http.expected_statuses.as_slice() {
                [] => std::iter::once(200..201).collect(),
                ranges => statuses(ranges, &format!("{path}.expected_statuses"), errors),
            };
            Some(CheckKind::Http(HttpCheck {
                host: non_empty(&http.host).unwrap_or(cluster).to_string(),
                path: http.path.clone(),
                headers: headers(
                    &http.request_headers_to_add,
                    &format!("{path}.request_headers_to_add"),
                    errors,
                ),
                remove_headers: http
                    .request_headers_to_remove
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                method: method.to_string(),
                expected,
                retriable: statuses(
                    &http.retriable_statuses,
                    &format!("{path}.retriable_statuses"),
                    errors,
                ),
                http2: match http.codec_client_type() {
                    CodecClientType::Http1 => false,
                    CodecClientType::Http2 => true,
                    CodecClientType::Http3 => {
                        errors.push(TranslateError::new(
                            format!("{path}.codec_client_type"),
                            None,
                            "HTTP3 health checks are not supported (no HTTP/3 upstreams)",
                        ));
                        return None;
                    }
                },
                receive: http
                    .receive
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| payload(p, &format!("{path}.receive[{i}]"), errors))
                    .collect(),
                send: http
                    .send
                    .as_ref()
                    .and_then(|p| payload(p, &format!("{path}.send"), errors))
                    .unwrap_or_default(),
            }))
        }
        Some(HealthChecker::TcpHealthCheck(tcp)) => {
            let path = format!("{path}.tcp_health_check");
            Some(CheckKind::Tcp {
                send: tcp
                    .send
                    .as_ref()
                    .and_then(|p| payload(p, &format!("{path}.send"), errors))
                    .unwrap_or_default(),
                receive: tcp
                    .receive
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| payload(p, &format!("{path}.receive[{i}]"), errors))
                    .collect(),
            })
        }
        Some(HealthChecker::GrpcHealthCheck(grpc)) => Some(CheckKind::Grpc {
            service_name: grpc.service_name.clone(),
            authority: non_empty(&grpc.authority).unwrap_or(cluster).to_string(),
            initial_metadata: headers(
                &grpc.initial_metadata,
                &format!("{path}.grpc_health_check.initial_metadata"),
                errors,
            ),
        }),
        // Redis and custom checkers are rejected by the surface walker.
        Some(_) => None,
        None => {
            errors.push(TranslateError::new(
                path,
                None,
                "a health checker (http_health_check, tcp_health_check or grpc_health_check) is required",
            ));
            None
        }
    }
}

fn non_empty(value: &str) -> Option<&str> {
    Some(value).filter(|v| !v.is_empty())
}

/// A payload's bytes: `text` is hex, as in Envoy.
fn payload(payload: &Payload, path: &str, errors: &mut Vec<TranslateError>) -> Option<Vec<u8>> {
    match &payload.payload {
        Some(PayloadKind::Binary(bytes)) => Some(bytes.clone()),
        Some(PayloadKind::Text(hex)) => match decode_hex(hex) {
            Some(bytes) if !bytes.is_empty() => Some(bytes),
            _ => {
                errors.push(TranslateError::new(
                    format!("{path}.text"),
                    None,
                    format!("{hex:?} is not a non-empty hex string"),
                ));
                None
            }
        },
        None => {
            errors.push(TranslateError::new(
                path,
                None,
                "text or binary is required",
            ));
            None
        }
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `[start, end)` status ranges, each within 100..600 as Envoy requires.
fn statuses(
    ranges: &[Int64Range],
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Vec<Range<u16>> {
    ranges
        .iter()
        .enumerate()
        .filter_map(|(i, range)| {
            let valid =
                (100..600).contains(&range.start) && range.start < range.end && range.end <= 600;
            if !valid {
                errors.push(TranslateError::new(
                    format!("{path}[{i}]"),
                    None,
                    format!(
                        "[{}, {}) is not a status range within [100, 600)",
                        range.start, range.end
                    ),
                ));
                return None;
            }
            Some(range.start as u16..range.end as u16)
        })
        .collect()
}

/// Headers a check adds, taken literally: Envoy's `%…%` formatters are not evaluated here, so
/// a value using one is refused rather than sent verbatim.
fn headers(
    options: &[HeaderValueOption],
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Vec<(String, String)> {
    options
        .iter()
        .enumerate()
        .filter_map(|(i, option)| {
            let header = option.header.as_ref()?;
            if header.value.contains('%') {
                errors.push(TranslateError::new(
                    format!("{path}[{i}].header.value"),
                    None,
                    "header formatters (%...%) are not supported in health check headers",
                ));
                return None;
            }
            Some((header.key.to_ascii_lowercase(), header.value.clone()))
        })
        .collect()
}

/// The cluster's outlier detection with Envoy's defaults, if configured.
pub(super) fn outlier_detection(
    proto: &ClusterProto,
    path: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<OutlierDetection>> {
    let config: &OutlierProto = proto.outlier_detection.as_ref()?;
    let path = format!("{path}.outlier_detection");
    let d = OutlierDetection::envoy_defaults(ctx.stats.outlier_detection(&proto.name));
    let value =
        |v: &Option<protobuf::UInt32Value>, default: u32| v.as_ref().map_or(default, |v| v.value);
    let percent =
        |v: &Option<protobuf::UInt32Value>, default: u32, field: &str, errors: &mut Vec<_>| {
            let value = value(v, default);
            if value > 100 {
                errors.push(TranslateError::new(
                    format!("{path}.{field}"),
                    None,
                    format!("{value} is not a percentage (at most 100)"),
                ));
            }
            value.min(100)
        };
    let positive =
        |v: Option<&protobuf::Duration>, default: Duration, field: &str, errors: &mut _| {
            positive_duration(v, default, &format!("{path}.{field}"), errors)
        };
    let base_ejection_time = positive(
        config.base_ejection_time.as_ref(),
        d.base_ejection_time,
        "base_ejection_time",
        errors,
    );
    let max_ejection_time = positive(
        config.max_ejection_time.as_ref(),
        base_ejection_time.max(d.max_ejection_time),
        "max_ejection_time",
        errors,
    );
    if max_ejection_time < base_ejection_time {
        errors.push(TranslateError::new(
            format!("{path}.max_ejection_time"),
            None,
            "max_ejection_time cannot be smaller than base_ejection_time (as in Envoy)",
        ));
    }
    Some(Arc::new(OutlierDetection {
        interval: positive(config.interval.as_ref(), d.interval, "interval", errors),
        base_ejection_time,
        max_ejection_time,
        max_ejection_time_jitter: config
            .max_ejection_time_jitter
            .as_ref()
            .and_then(|d| duration(d, &format!("{path}.max_ejection_time_jitter"), None, errors))
            .unwrap_or_default(),
        max_ejection_percent: percent(
            &config.max_ejection_percent,
            d.max_ejection_percent,
            "max_ejection_percent",
            errors,
        ),
        always_eject_one_host: config
            .always_eject_one_host
            .as_ref()
            .is_some_and(|v| v.value),
        consecutive_5xx: value(&config.consecutive_5xx, d.consecutive_5xx),
        consecutive_gateway_failure: value(
            &config.consecutive_gateway_failure,
            d.consecutive_gateway_failure,
        ),
        consecutive_local_origin_failure: value(
            &config.consecutive_local_origin_failure,
            d.consecutive_local_origin_failure,
        ),
        split_external_local_origin_errors: config.split_external_local_origin_errors,
        enforcing_consecutive_5xx: percent(
            &config.enforcing_consecutive_5xx,
            d.enforcing_consecutive_5xx,
            "enforcing_consecutive_5xx",
            errors,
        ),
        enforcing_consecutive_gateway_failure: percent(
            &config.enforcing_consecutive_gateway_failure,
            d.enforcing_consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure",
            errors,
        ),
        enforcing_consecutive_local_origin_failure: percent(
            &config.enforcing_consecutive_local_origin_failure,
            d.enforcing_consecutive_local_origin_failure,
            "enforcing_consecutive_local_origin_failure",
            errors,
        ),
        enforcing_success_rate: percent(
            &config.enforcing_success_rate,
            d.enforcing_success_rate,
            "enforcing_success_rate",
            errors,
        ),
        enforcing_local_origin_success_rate: percent(
            &config.enforcing_local_origin_success_rate,
            d.enforcing_local_origin_success_rate,
            "enforcing_local_origin_success_rate",
            errors,
        ),
        enforcing_failure_percentage: percent(
            &config.enforcing_failure_percentage,
            d.enforcing_failure_percentage,
            "enforcing_failure_percentage",
            errors,
        ),
        enforcing_failure_percentage_local_origin: percent(
            &config.enforcing_failure_percentage_local_origin,
            d.enforcing_failure_percentage_local_origin,
            "enforcing_failure_percentage_local_origin",
            errors,
        ),
        success_rate_minimum_hosts: value(
            &config.success_rate_minimum_hosts,
            d.success_rate_minimum_hosts,
        ),
        success_rate_request_volume: value(
            &config.success_rate_request_volume,
            d.success_rate_request_volume,
        ),
        success_rate_stdev_factor: value(
            &config.success_rate_stdev_factor,
            d.success_rate_stdev_factor,
        ),
        failure_percentage_threshold: percent(
            &config.failure_percentage_threshold,
            d.failure_percentage_threshold,
            "failure_percentage_threshold",
            errors,
        ),
        failure_percentage_minimum_hosts: value(
            &config.failure_percentage_minimum_hosts,
            d.failure_percentage_minimum_hosts,
        ),
        failure_percentage_request_volume: value(
            &config.failure_percentage_request_volume,
            d.failure_percentage_request_volume,
        ),
        successful_active_health_check_uneject_host: config
            .successful_active_health_check_uneject_host
            .as_ref()
            .is_none_or(|v| v.value),
        stats: d.stats,
    }))
}

#[cfg(test)]
mod tests {
    use super::decode_hex;

    #[test]
    fn payload_text_is_hex() {
        assert_eq!(decode_hex("50494e47"), Some(b"PING".to_vec()));
        assert_eq!(decode_hex("5"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
