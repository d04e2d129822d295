//! Translator: the `envoy.filters.network.tcp_proxy` filter and its access logs.
use std::{collections::HashSet, path::PathBuf, sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{access_log, AccessLog as AccessLogProto},
            core::v3::{data_source, substitution_format_string, SubstitutionFormatString},
        },
        extensions::{
            access_loggers::{
                file::v3::{file_access_log, FileAccessLog},
                stream::v3::{
                    stderr_access_log, stdout_access_log, StderrAccessLog, StdoutAccessLog,
                },
            },
            filters::network::tcp_proxy::v3::{
                tcp_proxy::ClusterSpecifier, TcpProxy as TcpProxyProto,
            },
        },
    },
    google::protobuf::Any,
};

use super::{duration, TranslateError};
use crate::{
    access_log::{AccessLog, LogSink},
    model::{TcpProxy, WeightedClusters},
    names,
    stats::StatsRegistry,
};

/// Envoy's default tcp_proxy `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Translates a tcp_proxy `typed_config` at `path`; cluster names must be in `clusters`.
pub(super) fn tcp_proxy(
    any: &Any,
    path: &str,
    clusters: &HashSet<&str>,
    stats: &mut StatsRegistry,
    errors: &mut Vec<TranslateError>,
) -> Option<TcpProxy> {
    let url = Some(any.type_url.as_str());
    let config: TcpProxyProto = match proto::decode_any(any) {
        Ok(config) => config,
        Err(e) => {
            errors.push(TranslateError::new(path, url, e.to_string()));
            return None;
        }
    };
    let before = errors.len();
    let err =
        |field: &str, message: String| TranslateError::new(format!("{path}.{field}"), url, message);
    if config.stat_prefix.is_empty() {
        errors.push(err("stat_prefix", "stat_prefix is required".into()));
    }
    let upstream = upstream(&config, path, url, clusters, errors);
    let idle_timeout = match &config.idle_timeout {
        None => Some(DEFAULT_IDLE_TIMEOUT),
        Some(d) => {
            duration(d, &format!("{path}.idle_timeout"), url, errors).filter(|d| !d.is_zero())
        }
    };
    let max_connect_attempts = config.max_connect_attempts.map_or(1, |v| v.value);
    if max_connect_attempts < 1 {
        errors.push(err("max_connect_attempts", "must be at least 1".into()));
    }
    let access_logs = config
        .access_log
        .iter()
        .enumerate()
        .filter_map(|(i, log)| access_log(log, &format!("{path}.access_log[{i}]"), errors))
        .map(Arc::new)
        .collect();
    if errors.len() > before {
        return None;
    }
    Some(TcpProxy {
        upstream: upstream?,
        idle_timeout,
        max_connect_attempts,
        access_logs,
        stats: stats.tcp_proxy(&config.stat_prefix),
    })
}

fn upstream(
    config: &TcpProxyProto,
    path: &str,
    url: Option<&str>,
    clusters: &HashSet<&str>,
    errors: &mut Vec<TranslateError>,
) -> Option<WeightedClusters> {
    let check = |name: &str, path: String, errors: &mut Vec<TranslateError>| {
        let problem = if name.is_empty() {
            "cluster name is required".to_string()
        } else if !clusters.contains(name) {
            format!("cluster {name:?} does not exist")
        } else {
            return true;
        };
        errors.push(TranslateError::new(path, url, problem));
        false
    };
    match &config.cluster_specifier {
        None => {
            errors.push(TranslateError::new(
                path,
                url,
                "cluster or weighted_clusters is required",
            ));
            None
        }
        Some(ClusterSpecifier::Cluster(name)) => check(name, format!("{path}.cluster"), errors)
            .then(|| WeightedClusters {
                clusters: vec![(name.clone(), 1)],
                total_weight: 1,
            }),
        Some(ClusterSpecifier::WeightedClusters(weighted)) => {
            let base = format!("{path}.weighted_clusters.clusters");
            let mut ok = true;
            let mut total: u32 = 0;
            for (i, c) in weighted.clusters.iter().enumerate() {
                ok &= check(&c.name, format!("{base}[{i}].name"), errors);
                if c.weight == 0 {
                    errors.push(TranslateError::new(
                        format!("{base}[{i}].weight"),
                        url,
                        "weight must be at least 1",
                    ));
                    ok = false;
                }
                match total.checked_add(c.weight) {
                    Some(sum) => total = sum,
                    None => {
                        errors.push(TranslateError::new(
                            format!("{base}[{i}].weight"),
                            url,
                            "total weight overflows 32 bits",
                        ));
                        ok = false;
                    }
                }
            }
            if weighted.clusters.is_empty() {
                errors.push(TranslateError::new(
                    base,
                    url,
                    "at least one cluster is required",
                ));
                ok = false;
            }
            ok.then(|| WeightedClusters {
                clusters: weighted
                    .clusters
                    .iter()
                    .map(|c| (c.name.clone(), c.weight))
                    .collect(),
                total_weight: total,
            })
        }
    }
}

/// One access log: file, stdout or stderr, with its format compiled.
fn access_log(
    log: &AccessLogProto,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<AccessLog> {
    let any = match &log.config_type {
        Some(access_log::ConfigType::TypedConfig(any)) => any,
        None => {
            errors.push(TranslateError::new(path, None, "typed_config is required"));
            return None;
        }
    };
    let path = format!("{path}.typed_config");
    let url = Some(any.type_url.as_str());
    let decoded = match names::type_name(&any.type_url) {
        names::FILE_ACCESS_LOG => proto::decode_any::<FileAccessLog>(any).map(|file| {
            let sink = LogSink::Path(PathBuf::from(&file.path));
            (sink, file_format(&file, &path), file.path.is_empty())
        }),
        names::STDOUT_ACCESS_LOG => proto::decode_any::<StdoutAccessLog>(any).map(|log| {
            let format = match &log.access_log_format {
                Some(stdout_access_log::AccessLogFormat::LogFormat(f)) => {
                    substitution_format(f, &format!("{path}.log_format"))
                }
                None => None,
            };
            (LogSink::Stdout, format, false)
        }),
        names::STDERR_ACCESS_LOG => proto::decode_any::<StderrAccessLog>(any).map(|log| {
            let format = match &log.access_log_format {
                Some(stderr_access_log::AccessLogFormat::LogFormat(f)) => {
                    substitution_format(f, &format!("{path}.log_format"))
                }
                None => None,
            };
            (LogSink::Stderr, format, false)
        }),
        // Other types are rejected by the walker.
        _ => return None,
    };
    let (sink, format, missing_path) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            errors.push(TranslateError::new(path, url, e.to_string()));
            return None;
        }
    };
    if missing_path {
        errors.push(TranslateError::new(
            format!("{path}.path"),
            url,
            "path is required",
        ));
        return None;
    }
    let (format, format_path) = match format {
        Some((format, format_path)) => (Some(format), format_path),
        None => (None, path.clone()),
    };
    match AccessLog::compile(sink, format.as_deref()) {
        Ok(log) => Some(log),
        Err(e) => {
            errors.push(TranslateError::new(format_path, url, e.to_string()));
            None
        }
    }
}

/// The text format of a file logger and where it sits; `None` for Envoy's default.
#[allow(deprecated)] // `format` is deprecated in Envoy but still accepted by it.
fn file_format(file: &FileAccessLog, path: &str) -> Option<(String, String)> {
    match &file.access_log_format {
        Some(file_access_log::AccessLogFormat::Format(f)) if !f.is_empty() => {
            Some((f.clone(), format!("{path}.format")))
        }
        Some(file_access_log::AccessLogFormat::LogFormat(f)) => {
            substitution_format(f, &format!("{path}.log_format"))
        }
        _ => None,
    }
}

#[allow(deprecated)] // `text_format` is deprecated in Envoy but still accepted by it.
fn substitution_format(format: &SubstitutionFormatString, path: &str) -> Option<(String, String)> {
    match &format.format {
        Some(substitution_format_string::Format::TextFormat(text)) => {
            Some((text.clone(), format!("{path}.text_format")))
        }
        Some(substitution_format_string::Format::TextFormatSource(source)) => {
            match &source.specifier {
                Some(data_source::Specifier::InlineString(text)) => Some((
                    text.clone(),
                    format!("{path}.text_format_source.inline_string"),
                )),
                _ => None,
            }
        }
        _ => None,
    }
}
