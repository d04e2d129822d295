//! Translator: access logs (`AccessLog`: file, stdout, stderr) with their formats compiled,
//! shared by the tcp_proxy and HTTP connection manager filters.
use std::{path::PathBuf, sync::Arc};

use envoy_types::pb::envoy::{
    config::{
        accesslog::v3::{access_log, AccessLog as AccessLogProto},
        core::v3::{substitution_format_string, SubstitutionFormatString},
    },
    extensions::access_loggers::{
        file::v3::{file_access_log, FileAccessLog},
        stream::v3::{stderr_access_log, stdout_access_log, StderrAccessLog, StdoutAccessLog},
    },
};

use super::TranslateError;
use crate::names;
use model::access_log::{AccessLog, LogSink};

/// The `access_log` list at `path`; entries with problems are reported and left out.
pub(super) fn access_logs(
    logs: &[AccessLogProto],
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Vec<Arc<AccessLog>> {
    logs.iter()
        .enumerate()
        .filter_map(|(i, log)| access_log(log, &format!("{path}[{i}]"), errors))
        .map(Arc::new)
        .collect()
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
            (
                sink,
                file_format(&file, &path, errors),
                file.path.is_empty(),
            )
        }),
        names::STDOUT_ACCESS_LOG => proto::decode_any::<StdoutAccessLog>(any).map(|log| {
            let format = match &log.access_log_format {
                Some(stdout_access_log::AccessLogFormat::LogFormat(f)) => {
                    substitution_format(f, &format!("{path}.log_format"), errors)
                }
                None => None,
            };
            (LogSink::Stdout, format, false)
        }),
        names::STDERR_ACCESS_LOG => proto::decode_any::<StderrAccessLog>(any).map(|log| {
            let format = match &log.access_log_format {
                Some(stderr_access_log::AccessLogFormat::LogFormat(f)) => {
                    substitution_format(f, &format!("{path}.log_format"), errors)
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
fn file_format(
    file: &FileAccessLog,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<(String, String)> {
    match &file.access_log_format {
        Some(file_access_log::AccessLogFormat::Format(f)) if !f.is_empty() => {
            Some((f.clone(), format!("{path}.format")))
        }
        Some(file_access_log::AccessLogFormat::LogFormat(f)) => {
            substitution_format(f, &format!("{path}.log_format"), errors)
        }
        _ => None,
    }
}

#[allow(deprecated)] // `text_format` is deprecated in Envoy but still accepted by it.
/// A text format (`text_format`, `text_format_source`) and the path of the field it came
/// from; `None` for other kinds (which the walker refuses).
pub(super) fn substitution_format(
    format: &SubstitutionFormatString,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<(String, String)> {
    match &format.format {
        Some(substitution_format_string::Format::TextFormat(text)) => {
            Some((text.clone(), format!("{path}.text_format")))
        }
        Some(substitution_format_string::Format::TextFormatSource(source)) => {
            let path = format!("{path}.text_format_source");
            let bytes = super::data_source::read(source, &path, errors)?;
            match String::from_utf8(bytes) {
                Ok(text) => Some((
                    text,
                    format!("{path}.{}", super::data_source::field(source)),
                )),
                Err(_) => {
                    errors.push(TranslateError::new(path, None, "must be UTF-8 text"));
                    None
                }
            }
        }
        _ => None,
    }
}
