//! Translator: `envoy.filters.http.local_ratelimit` (`LocalRateLimit`), in the chain and per
//! route. Each config gets its own process-wide token bucket (see `model::filters::token_bucket`).
use std::{sync::Arc, time::Duration, time::Instant};

use envoy_types::pb::{
    envoy::{
        config::core::v3::RuntimeFractionalPercent,
        extensions::filters::http::local_ratelimit::v3::LocalRateLimit,
        r#type::v3::TokenBucket as TokenBucketProto,
    },
    google::protobuf::Any,
};

use super::common::{fractional_percent, header_value_options, status_code, Site};
use crate::translate::{duration, TranslateContext, TranslateError};
use model::{
    filter_stats::LocalRateLimitStats,
    filters::{
        token_bucket::TokenBucket, FractionalPercent, HttpFilterKind, LocalRateLimitConfig,
        PerRouteFilter,
    },
};

/// Envoy's floor for `fill_interval`.
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);
/// The status of a limited request's reply by default, and when one below 400 is configured.
const TOO_MANY_REQUESTS: u16 = 429;

/// The filter in the chain (a token bucket is optional there).
pub(super) fn filter(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    config(any, site, false, ctx, errors).map(|c| HttpFilterKind::LocalRateLimit(Arc::new(c)))
}

/// A per-route config: its own bucket, which it must have.
pub(super) fn per_route(
    any: &Any,
    site: &Site,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<PerRouteFilter> {
    config(any, site, true, ctx, errors).map(|c| PerRouteFilter::LocalRateLimit(Arc::new(c)))
}

fn config(
    any: &Any,
    site: &Site,
    per_route: bool,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<LocalRateLimitConfig> {
    let proto: LocalRateLimit = super::decode(any, site, errors)?;
    let before = errors.len();
    if proto.stat_prefix.is_empty() {
        errors.push(site.error("stat_prefix", "stat_prefix is required"));
    }
    if per_route && proto.token_bucket.is_none() {
        errors.push(site.error(
            "token_bucket",
            "a per-route local rate limit needs its own token_bucket",
        ));
    }
    let status = match &proto.status {
        None => Some(TOO_MANY_REQUESTS),
        Some(s) => status_code(s.code, site, "status.code", errors).map(|code| {
            if code < 400 {
                TOO_MANY_REQUESTS
            } else {
                code
            }
        }),
    };
    let filter_enabled = runtime_percent(&proto.filter_enabled, site, "filter_enabled", errors);
    let filter_enforced = runtime_percent(&proto.filter_enforced, site, "filter_enforced", errors);
    let response_headers_to_add = header_value_options(
        &proto.response_headers_to_add,
        site,
        "response_headers_to_add",
        errors,
    );
    let request_headers_to_add_when_not_enforced = header_value_options(
        &proto.request_headers_to_add_when_not_enforced,
        site,
        "request_headers_to_add_when_not_enforced",
        errors,
    );
    let bucket = proto
        .token_bucket
        .as_ref()
        .map(|b| bucket_shape(b, site, errors));
    if errors.len() > before {
        return None;
    }
    let stats = ctx
        .stats
        .scope::<LocalRateLimitStats>(format!("{}.http_local_rate_limit", proto.stat_prefix));
    let bucket = bucket.flatten().map(|(max, per_fill, interval)| {
        TokenBucket::new(max, per_fill, interval, stats.shard_count(), Instant::now())
    });
    Some(LocalRateLimitConfig {
        bucket,
        status: status?,
        filter_enabled,
        filter_enforced,
        response_headers_to_add: response_headers_to_add?,
        request_headers_to_add_when_not_enforced: request_headers_to_add_when_not_enforced?,
        enable_retry_after: proto.enable_retry_after_header,
        stats,
    })
}

/// A `RuntimeFractionalPercent`'s default value (there is no runtime); unset is 0 %, as
/// Envoy's "for safety" default.
fn runtime_percent(
    proto: &Option<RuntimeFractionalPercent>,
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> FractionalPercent {
    let Some(proto) = proto else {
        return FractionalPercent::NONE;
    };
    match &proto.default_value {
        Some(v) => fractional_percent(v, site, &format!("{field}.default_value"), errors),
        None => {
            errors.push(site.error(
                &format!("{field}.default_value"),
                "default_value is required",
            ));
            FractionalPercent::NONE
        }
    }
}

/// `(max_tokens, tokens_per_fill, fill_interval)`, validated as Envoy does.
fn bucket_shape(
    proto: &TokenBucketProto,
    site: &Site,
    errors: &mut Vec<TranslateError>,
) -> Option<(u32, u32, Duration)> {
    let before = errors.len();
    if proto.max_tokens == 0 {
        errors.push(site.error("token_bucket.max_tokens", "must be greater than zero"));
    }
    let per_fill = proto.tokens_per_fill.map_or(1, |v| v.value);
    if per_fill == 0 {
        errors.push(site.error("token_bucket.tokens_per_fill", "must be greater than zero"));
    }
    let field = "token_bucket.fill_interval";
    let interval = match &proto.fill_interval {
        None => {
            errors.push(site.error(field, "fill_interval is required"));
            None
        }
        Some(d) => match duration(d, &site.path_of(field), Some(site.type_url), errors) {
            Some(d) if d < MIN_FILL_INTERVAL => {
                errors.push(site.error(field, "must be at least 50ms"));
                None
            }
            other => other,
        },
    };
    if errors.len() > before {
        return None;
    }
    Some((proto.max_tokens, per_fill, interval?))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{filter_errors, one_filter, per_route_config, per_route_errors};
    use super::*;
    use model::route::AppendAction;

    const RL: &str =
        "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

    #[test]
    fn local_rate_limit_translates() {
        let filter = one_filter(&format!(
            r#"{{name: envoy.filters.http.local_ratelimit, typed_config: {{"@type": "{RL}",
              stat_prefix: http_local_rate_limiter,
              token_bucket: {{max_tokens: 10, tokens_per_fill: 5, fill_interval: 1s}},
              filter_enabled: {{runtime_key: a, default_value: {{numerator: 100}}}},
              filter_enforced: {{runtime_key: b, default_value: {{numerator: 50}}}},
              status: {{code: BadRequest}},
              response_headers_to_add: [{{append_action: OVERWRITE_IF_EXISTS_OR_ADD, header: {{key: x-local-rate-limit, value: "true"}}}}],
              enable_retry_after_header: true}}}}"#
        ));
        let HttpFilterKind::LocalRateLimit(c) = &filter.kind else {
            panic!("{filter:?}")
        };
        let bucket = c.bucket.as_ref().unwrap();
        assert_eq!(bucket.max_tokens(), 10);
        assert_eq!(bucket.tokens_per_fill(), 5);
        assert_eq!(bucket.fill_interval(), Duration::from_secs(1));
        assert_eq!(c.status, 400);
        assert!(c.filter_enabled.is_all());
        assert_eq!(c.filter_enforced.numerator, 50);
        assert_eq!(c.response_headers_to_add[0].name, "x-local-rate-limit");
        assert_eq!(
            c.response_headers_to_add[0].action,
            AppendAction::OverwriteIfExistsOrAdd
        );
        assert!(c.enable_retry_after);
    }

    #[test]
    fn defaults_are_envoys() {
        let filter = one_filter(&format!(
            r#"{{name: rl, typed_config: {{"@type": "{RL}", stat_prefix: s, status: {{code: Found}}}}}}"#
        ));
        let HttpFilterKind::LocalRateLimit(c) = &filter.kind else {
            panic!()
        };
        assert!(c.bucket.is_none(), "a bucket is optional in the chain");
        assert_eq!(c.status, 429, "below 400 means 429");
        assert_eq!(c.filter_enabled, FractionalPercent::NONE);
        assert_eq!(c.filter_enforced, FractionalPercent::NONE);
    }

    #[test]
    fn per_route_needs_a_bucket() {
        let errors = per_route_errors(&format!(r#"{{"@type": "{RL}", stat_prefix: s}}"#));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "r.typed_per_filter_config[x].token_bucket");
        let config = per_route_config(&format!(
            r#"{{"@type": "{RL}", stat_prefix: s, token_bucket: {{max_tokens: 1, fill_interval: 60s}}}}"#
        ));
        let PerRouteFilter::LocalRateLimit(c) = config else {
            panic!()
        };
        assert_eq!(c.bucket.as_ref().unwrap().tokens_per_fill(), 1);
    }

    #[test]
    fn rate_limit_errors_name_their_field() {
        let errors = filter_errors(&format!(
            r#"{{name: rl, typed_config: {{"@type": "{RL}",
              token_bucket: {{max_tokens: 0, tokens_per_fill: 0, fill_interval: 0.01s}},
              filter_enabled: {{runtime_key: a}},
              descriptors: [{{entries: [{{key: a, value: b}}], token_bucket: {{max_tokens: 1, fill_interval: 1s}}}}],
              local_rate_limit_per_downstream_connection: true}}}}"#
        ));
        let mut paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "f.typed_config.descriptors",
                "f.typed_config.filter_enabled.default_value",
                "f.typed_config.local_rate_limit_per_downstream_connection",
                "f.typed_config.stat_prefix",
                "f.typed_config.token_bucket.fill_interval",
                "f.typed_config.token_bucket.max_tokens",
                "f.typed_config.token_bucket.tokens_per_fill",
            ],
            "{errors:#?}"
        );
    }
}
