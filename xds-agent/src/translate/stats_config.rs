//! Translator: the bootstrap's `stats_config` into `model::stats::naming::StatNaming` — the
//! `stats_tags` (a regex or a fixed value each), `use_all_default_tags`, and the
//! `stats_matcher` (reject all, or an inclusion or exclusion list of string matchers).
use envoy_types::pb::envoy::config::metrics::v3::{
    stats_matcher::StatsMatcher as MatcherKind, tag_specifier::TagValue, StatsConfig,
};

use super::{
    matchers::{string_matcher, At},
    TranslateError,
};
use model::stats::naming::{StatNaming, StatsMatcher, TagExtractor};

const PATH: &str = "stats_config";

pub(super) fn stat_naming(
    config: Option<&StatsConfig>,
    errors: &mut Vec<TranslateError>,
) -> StatNaming {
    let Some(config) = config else {
        return StatNaming::default();
    };
    let mut fixed = Vec::new();
    let mut extractors = Vec::new();
    for (i, spec) in config.stats_tags.iter().enumerate() {
        let path = format!("{PATH}.stats_tags[{i}]");
        if spec.tag_name.is_empty() {
            errors.push(TranslateError::new(
                format!("{path}.tag_name"),
                None,
                "tag_name is required",
            ));
            continue;
        }
        match &spec.tag_value {
            Some(TagValue::FixedValue(value)) => {
                fixed.push((spec.tag_name.as_str().into(), value.as_str().into()))
            }
            Some(TagValue::Regex(regex)) => match TagExtractor::new(&spec.tag_name, regex) {
                Ok(extractor) => extractors.push(extractor),
                Err(e) => errors.push(TranslateError::new(
                    format!("{path}.regex"),
                    None,
                    format!("invalid tag regex {regex:?}: {e}"),
                )),
            },
            // Envoy takes a default tag's regex by its name; any other name needs one.
            None => errors.push(TranslateError::new(
                path,
                None,
                "a tag needs a regex or a fixed_value",
            )),
        }
    }
    let use_all_default_tags = config.use_all_default_tags.is_none_or(|b| b.value);
    let matcher = matcher(config, errors);
    StatNaming::new(fixed, extractors, use_all_default_tags, matcher)
}

fn matcher(config: &StatsConfig, errors: &mut Vec<TranslateError>) -> StatsMatcher {
    let list = |path: &str, patterns: &[_], errors: &mut Vec<TranslateError>| {
        patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let path = format!("{PATH}.stats_matcher.{path}.patterns[{i}]");
                string_matcher(
                    p,
                    At {
                        path: &path,
                        type_url: None,
                    },
                    errors,
                )
            })
            .collect()
    };
    match config
        .stats_matcher
        .as_ref()
        .and_then(|m| m.stats_matcher.as_ref())
    {
        None | Some(MatcherKind::RejectAll(false)) => StatsMatcher::All,
        Some(MatcherKind::RejectAll(true)) => StatsMatcher::None,
        Some(MatcherKind::InclusionList(l)) => {
            StatsMatcher::Include(list("inclusion_list", &l.patterns, errors))
        }
        Some(MatcherKind::ExclusionList(l)) => {
            StatsMatcher::Exclude(list("exclusion_list", &l.patterns, errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(yaml: &str) -> Result<StatNaming, Vec<TranslateError>> {
        let config: StatsConfig =
            proto::from_json(proto::parse_document(yaml).unwrap(), false).unwrap();
        let mut errors = Vec::new();
        let naming = stat_naming(Some(&config), &mut errors);
        match errors.is_empty() {
            true => Ok(naming),
            false => Err(errors),
        }
    }

    #[test]
    fn istios_golden_stats_config_translates() {
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/istio-bootstrap/golden_default.json");
        let Ok(text) = std::fs::read_to_string(&golden) else {
            // The fixtures live beside the checkout (../shared); CI has them.
            assert!(
                std::env::var("CI").is_err(),
                "{} is missing",
                golden.display()
            );
            return;
        };
        let bootstrap: serde_json::Value = serde_json::from_str(&text).unwrap();
        let naming = naming(&bootstrap["stats_config"].to_string()).expect("translates");
        assert!(naming.shows("server.state") && naming.shows("cluster.xds-grpc.upstream_cx_total"));
        assert!(!naming.shows("cluster.outbound|80||a.b;.upstream_cx_total"));
        assert!(naming.shows("http.inbound_0.0.0.0_80.rbac.allowed"));
        let (name, tags) = naming.extract_tags("cluster.outbound|80||a.b;.upstream_rq_200");
        assert_eq!(name, "cluster.upstream_rq");
        assert_eq!(tags.len(), 2, "{tags:?}");
    }

    #[test]
    fn bad_tags_and_matchers_are_errors() {
        let e = naming("{stats_tags: [{tag_name: x, regex: '('}]}").unwrap_err();
        assert_eq!(e[0].path, "stats_config.stats_tags[0].regex");
        let e = naming("{stats_tags: [{tag_name: x}]}").unwrap_err();
        assert_eq!(e[0].message, "a tag needs a regex or a fixed_value");
        let e = naming("{stats_tags: [{regex: '(a)'}]}").unwrap_err();
        assert_eq!(e[0].message, "tag_name is required");
        let e =
            naming("{stats_matcher: {inclusion_list: {patterns: [{prefix: ''}]}}}").unwrap_err();
        assert_eq!(
            e[0].path,
            "stats_config.stats_matcher.inclusion_list.patterns[0].prefix"
        );
        let all = naming("{stats_matcher: {reject_all: true}}").unwrap();
        assert!(!all.shows("server.live"));
        let fixed =
            naming("{stats_tags: [{tag_name: mesh, fixed_value: m}], use_all_default_tags: false}")
                .unwrap();
        assert_eq!(
            fixed.extract_tags("cluster.a.upstream_rq_200").1,
            vec![("mesh", "m".to_string())]
        );
    }
}
