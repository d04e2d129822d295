//! Translator: `ConfigSource` — where a dynamic resource comes from. Only ADS is served
//! (`ads: {}`, as Istio configures every source); the walker rejects the other specifiers.
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, ApiVersion, ConfigSource,
};

use super::{duration, TranslateError};

/// Envoy's default `initial_fetch_timeout`.
pub const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// A checked ADS config source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdsSource {
    /// How long a resource may keep its dependants warming; `None` = wait forever (`0s`).
    pub initial_fetch_timeout: Option<Duration>,
}

/// The ADS source at `path`, or why it cannot be used.
pub fn ads_source(
    source: Option<&ConfigSource>,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<AdsSource> {
    let Some(source) = source else {
        errors.push(TranslateError::new(
            path,
            None,
            "a config source is required",
        ));
        return None;
    };
    let before = errors.len();
    match ApiVersion::try_from(source.resource_api_version) {
        Ok(ApiVersion::Auto | ApiVersion::V3) => {}
        _ => errors.push(TranslateError::new(
            format!("{path}.resource_api_version"),
            None,
            "only the V3 resource API is served",
        )),
    }
    if !matches!(
        source.config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_))
    ) {
        // Other specifiers are rejected by the walker; an empty source names none.
        if source.config_source_specifier.is_none() {
            errors.push(TranslateError::new(
                path,
                None,
                "ads is required (the only config source served)",
            ));
        }
    }
    let initial_fetch_timeout = match &source.initial_fetch_timeout {
        None => Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
        Some(d) => duration(d, &format!("{path}.initial_fetch_timeout"), None, errors)
            .filter(|d| !d.is_zero()),
    };
    (errors.len() == before).then_some(AdsSource {
        initial_fetch_timeout,
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::{
        envoy::config::core::v3::AggregatedConfigSource,
        google::protobuf::Duration as ProtoDuration,
    };

    use super::*;

    fn ads(timeout: Option<i64>) -> ConfigSource {
        ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
            initial_fetch_timeout: timeout.map(|seconds| ProtoDuration { seconds, nanos: 0 }),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }
    }

    #[test]
    fn zero_waits_forever_and_absent_is_envoys_default() {
        let mut errors = vec![];
        let forever = ads_source(Some(&ads(Some(0))), "x", &mut errors).unwrap();
        assert_eq!(forever.initial_fetch_timeout, None);
        let default = ads_source(Some(&ads(None)), "x", &mut errors).unwrap();
        assert_eq!(
            default.initial_fetch_timeout,
            Some(DEFAULT_INITIAL_FETCH_TIMEOUT)
        );
        assert!(errors.is_empty());
    }

    #[test]
    fn v2_and_missing_sources_are_rejected_with_their_path() {
        let mut errors = vec![];
        let mut v2 = ads(None);
        v2.resource_api_version = 1; // V2
        assert!(ads_source(Some(&v2), "rds.config_source", &mut errors).is_none());
        assert!(ads_source(None, "eds_config", &mut errors).is_none());
        assert_eq!(errors[0].path, "rds.config_source.resource_api_version");
        assert_eq!(errors[1].path, "eds_config");
    }
}
