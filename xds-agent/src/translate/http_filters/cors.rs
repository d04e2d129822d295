//! Translator: `envoy.filters.http.cors` — the filter (`Cors`, no settings) and its per-route /
//! per-virtual-host `CorsPolicy`.
use std::sync::Arc;

use envoy_types::pb::{
    envoy::{
        config::core::v3::RuntimeFractionalPercent,
        extensions::filters::http::cors::v3::{Cors, CorsPolicy as CorsPolicyProto},
    },
    google::protobuf::Any,
};

use super::common::{fractional_percent, Site};
use crate::translate::{matchers::string_matcher, TranslateContext, TranslateError};
use model::{
    filter_stats::CorsStats,
    filters::{CorsPolicy, FractionalPercent, HttpFilterKind, PerRouteFilter},
};

/// The filter in the chain; its stats are `http.<stat_prefix>.cors.*`.
pub(super) fn filter(
    any: &Any,
    site: &Site,
    stat_prefix: &str,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let _: Cors = super::decode(any, site, errors)?;
    Some(HttpFilterKind::Cors(
        ctx.stats
            .scope::<CorsStats>(format!("http.{stat_prefix}.cors")),
    ))
}

/// A `CorsPolicy` for a route or virtual host.
pub(super) fn per_route(
    any: &Any,
    site: &Site,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<PerRouteFilter> {
    let proto: CorsPolicyProto = super::decode(any, site, errors)?;
    let before = errors.len();
    let allow_origins = proto
        .allow_origin_string_match
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let path = site.path_of(&format!("allow_origin_string_match[{i}]"));
            string_matcher(m, site.at(&path), errors)
        })
        .collect();
    let runtime_percent = |p: &Option<RuntimeFractionalPercent>,
                           field: &str,
                           errors: &mut Vec<TranslateError>|
     -> Option<FractionalPercent> {
        let p = p.as_ref()?;
        match &p.default_value {
            Some(v) => Some(fractional_percent(
                v,
                site,
                &format!("{field}.default_value"),
                errors,
            )),
            None => {
                errors.push(site.error(
                    &format!("{field}.default_value"),
                    "default_value is required",
                ));
                None
            }
        }
    };
    let filter_enabled = runtime_percent(&proto.filter_enabled, "filter_enabled", errors);
    let shadow_enabled = runtime_percent(&proto.shadow_enabled, "shadow_enabled", errors);
    for (field, value) in [
        ("allow_methods", &proto.allow_methods),
        ("allow_headers", &proto.allow_headers),
        ("expose_headers", &proto.expose_headers),
        ("max_age", &proto.max_age),
    ] {
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            errors.push(site.error(field, "may not contain CR, LF or NUL"));
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(PerRouteFilter::Cors(Arc::new(CorsPolicy {
        allow_origins,
        allow_methods: proto.allow_methods,
        allow_headers: proto.allow_headers,
        expose_headers: proto.expose_headers,
        max_age: proto.max_age,
        allow_credentials: proto.allow_credentials.map(|b| b.value),
        allow_private_network_access: proto.allow_private_network_access.map(|b| b.value),
        forward_not_matching_preflights: proto.forward_not_matching_preflights.map(|b| b.value),
        filter_enabled,
        shadow_enabled,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{one_filter, per_route_config, per_route_errors};
    use super::*;

    const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
    const POLICY: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";

    #[test]
    fn cors_filter_and_policy_translate() {
        let filter = one_filter(&format!(
            r#"{{name: envoy.filters.http.cors, typed_config: {{"@type": "{CORS}"}}}}"#
        ));
        assert!(matches!(filter.kind, HttpFilterKind::Cors(_)));
        let policy = per_route_config(&format!(
            r#"{{"@type": "{POLICY}",
              allow_origin_string_match: [{{exact: "https://a.example"}}, {{suffix: ".b.example", ignore_case: true}}],
              allow_methods: "GET, POST", allow_headers: x-a, expose_headers: x-b, max_age: "600",
              allow_credentials: true, allow_private_network_access: false,
              filter_enabled: {{default_value: {{numerator: 50}}, runtime_key: k}},
              forward_not_matching_preflights: false}}"#
        ));
        let PerRouteFilter::Cors(p) = policy else {
            panic!("{policy:?}")
        };
        assert_eq!(p.allow_origins.len(), 2);
        assert!(p.allow_origins[1].matches(b"https://X.B.EXAMPLE"));
        assert_eq!(p.allow_methods, "GET, POST");
        assert_eq!(p.max_age, "600");
        assert_eq!(p.allow_credentials, Some(true));
        assert_eq!(p.allow_private_network_access, Some(false));
        assert_eq!(p.forward_not_matching_preflights, Some(false));
        assert_eq!(p.filter_enabled.unwrap().numerator, 50);
        assert_eq!(p.shadow_enabled, None);
    }

    #[test]
    fn cors_policy_errors_name_their_field() {
        let errors = per_route_errors(&format!(
            r#"{{"@type": "{POLICY}", allow_origin_string_match: [{{prefix: ""}}],
              shadow_enabled: {{runtime_key: k}}}}"#
        ));
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "r.typed_per_filter_config[x].allow_origin_string_match[0].prefix",
                "r.typed_per_filter_config[x].shadow_enabled.default_value",
            ]
        );
    }
}
