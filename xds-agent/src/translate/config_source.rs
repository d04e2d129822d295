//! Translator: `ConfigSource` — where a dynamic resource comes from. Listeners, clusters,
//! assignments, route tables and filter configs come over ADS (`ads: {}`, as Istio
//! configures every source); an SDS secret also from a gRPC stream of its own
//! (`api_config_source`, Istio's `sds-grpc`) or from a file (`path_config_source`).
use std::{path::PathBuf, time::Duration};

use envoy_types::pb::envoy::config::core::v3::{
    api_config_source::ApiType,
    config_source::ConfigSourceSpecifier,
    grpc_service::{EnvoyGrpc, TargetSpecifier},
    ApiConfigSource, ApiVersion, ConfigSource, GrpcService,
};

use super::{duration, tls::Secrets, TranslateError};
use model::tls::{FileSecretSource, GrpcSecretSource, SecretSource};

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
    let initial_fetch_timeout = initial_fetch_timeout(source, path, errors);
    match &source.config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => {}
        None => errors.push(TranslateError::new(
            path,
            None,
            "ads is required (the only config source served)",
        )),
        Some(_) => errors.push(TranslateError::new(
            path,
            None,
            "only ads is served here (api_config_source and path_config_source are served for \
             SDS secrets only)",
        )),
    }
    (errors.len() == before).then_some(AdsSource {
        initial_fetch_timeout,
    })
}

/// The source of an SDS secret (`sds_config` at `path`) and how long its users wait for it:
/// ADS when the bootstrap has a stream, a gRPC stream to a static cluster of `secrets`, or a
/// file that exists.
pub fn secret_source(
    source: &ConfigSource,
    path: &str,
    secrets: &Secrets,
    errors: &mut Vec<TranslateError>,
) -> Option<(SecretSource, Option<Duration>)> {
    let before = errors.len();
    let initial_fetch_timeout = initial_fetch_timeout(source, path, errors);
    let file = |file: &str, watched_directory: Option<&str>, field: &str, errors: &mut Vec<_>| {
        if file.is_empty() {
            errors.push(TranslateError::new(
                format!("{path}.{field}"),
                None,
                "a path is required",
            ));
            return None;
        }
        if !std::path::Path::new(file).is_file() {
            errors.push(TranslateError::new(
                format!("{path}.{field}"),
                None,
                format!("{file}: no such file (it must exist when the config is loaded)"),
            ));
            return None;
        }
        Some(SecretSource::File(FileSecretSource {
            path: PathBuf::from(file),
            watched_directory: watched_directory.map(PathBuf::from),
        }))
    };
    let found = match &source.config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) if secrets.ads => Some(SecretSource::Ads),
        Some(ConfigSourceSpecifier::Ads(_)) => {
            errors.push(TranslateError::new(
                format!("{path}.ads"),
                None,
                "there is no ADS stream: dynamic_resources.ads_config is not set",
            ));
            None
        }
        Some(ConfigSourceSpecifier::ApiConfigSource(api)) => {
            let at = format!("{path}.api_config_source");
            grpc_service(api, &at, errors).and_then(|(cluster, delta)| {
                if secrets.grpc_clusters.contains_key(&cluster) {
                    return Some(SecretSource::Grpc(GrpcSecretSource {
                        cluster,
                        delta,
                        set_node_on_first_message_only: api.set_node_on_first_message_only,
                    }));
                }
                errors.push(TranslateError::new(
                    format!("{at}.grpc_services[0].envoy_grpc.cluster_name"),
                    None,
                    format!("no static cluster named {cluster:?} with exactly one endpoint"),
                ));
                None
            })
        }
        Some(ConfigSourceSpecifier::PathConfigSource(source)) => file(
            &source.path,
            source.watched_directory.as_ref().map(|d| d.path.as_str()),
            "path_config_source.path",
            errors,
        ),
        #[allow(deprecated)]
        Some(ConfigSourceSpecifier::Path(deprecated)) => file(deprecated, None, "path", errors),
        // `self` is rejected by the walker.
        Some(ConfigSourceSpecifier::Self_(_)) => None,
        None => {
            errors.push(TranslateError::new(
                path,
                None,
                "one of ads, api_config_source or path_config_source is required",
            ));
            None
        }
    };
    let found = found?;
    (errors.len() == before).then_some((found, initial_fetch_timeout))
}

/// The gRPC service of an `api_config_source` (ADS's or an SDS stream's): the static cluster
/// its one `envoy_grpc` service names, and whether it is Delta.
pub fn grpc_service(
    api: &ApiConfigSource,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<(String, bool)> {
    let delta = match ApiType::try_from(api.api_type) {
        Ok(ApiType::Grpc) => false,
        Ok(ApiType::DeltaGrpc) => true,
        _ => {
            errors.push(TranslateError::new(
                format!("{path}.api_type"),
                None,
                "api_type must be GRPC or DELTA_GRPC",
            ));
            false
        }
    };
    if !matches!(
        ApiVersion::try_from(api.transport_api_version),
        Ok(ApiVersion::Auto | ApiVersion::V3)
    ) {
        errors.push(TranslateError::new(
            format!("{path}.transport_api_version"),
            None,
            "only the V3 transport is served",
        ));
    }
    match api.grpc_services.as_slice() {
        [service] => match &service.target_specifier {
            Some(TargetSpecifier::EnvoyGrpc(grpc)) => {
                xds_stream_only(service, grpc, &format!("{path}.grpc_services[0]"), errors);
                Some((grpc.cluster_name.clone(), delta))
            }
            // google_grpc is rejected by the walker.
            _ => None,
        },
        _ => {
            errors.push(TranslateError::new(
                format!("{path}.grpc_services"),
                None,
                "exactly one gRPC service is required",
            ));
            None
        }
    }
}

/// What a `GrpcService` may say only where a call is made (ext_authz's checks), not on an xDS
/// stream: `timeout`, `initial_metadata`, `envoy_grpc.authority` are refused there.
fn xds_stream_only(
    service: &GrpcService,
    grpc: &EnvoyGrpc,
    path: &str,
    errors: &mut Vec<TranslateError>,
) {
    let set = [
        ("timeout", service.timeout.is_some()),
        ("initial_metadata", !service.initial_metadata.is_empty()),
        ("envoy_grpc.authority", !grpc.authority.is_empty()),
    ];
    for (field, _) in set.iter().filter(|(_, set)| *set) {
        errors.push(TranslateError::new(
            format!("{path}.{field}"),
            None,
            "not supported on an xDS stream",
        ));
    }
}

/// `resource_api_version` (V3 only) and `initial_fetch_timeout` (`None`: wait forever).
fn initial_fetch_timeout(
    source: &ConfigSource,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<Duration> {
    match ApiVersion::try_from(source.resource_api_version) {
        Ok(ApiVersion::Auto | ApiVersion::V3) => {}
        _ => errors.push(TranslateError::new(
            format!("{path}.resource_api_version"),
            None,
            "only the V3 resource API is served",
        )),
    }
    match &source.initial_fetch_timeout {
        None => Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
        Some(d) => duration(d, &format!("{path}.initial_fetch_timeout"), None, errors)
            .filter(|d| !d.is_zero()),
    }
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
