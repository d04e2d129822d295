//! Translator: access logs (`AccessLog`: file, stdout, stderr) and `SubstitutionFormatString`
//! (text or JSON) compiled, shared by the tcp_proxy and HTTP connection manager filters and
//! local reply body formats.
use std::{path::PathBuf, sync::Arc};

use envoy_types::pb::envoy::{
    config::{
        accesslog::v3::{
            access_log, access_log_filter::FilterSpecifier, AccessLog as AccessLogProto,
        },
        core::v3::{substitution_format_string, SubstitutionFormatString},
    },
    extensions::access_loggers::{
        file::v3::{file_access_log, FileAccessLog},
        stream::v3::{stderr_access_log, stdout_access_log, StderrAccessLog, StdoutAccessLog},
    },
};

use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use super::TranslateError;
use crate::names;
use model::access_log::{
    AccessLog, Format, JsonFormat, JsonTemplate, LogSink, ResponseFlags, SubstitutionFormat,
    DEFAULT_FORMAT,
};

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
    let only_flags = only_flags(log, path, errors);
    let path = format!("{path}.typed_config");
    let url = Some(any.type_url.as_str());
    let decoded = match names::type_name(&any.type_url) {
        names::FILE_ACCESS_LOG => proto::decode_any::<FileAccessLog>(any).map(|file| {
            let sink = LogSink::Path(PathBuf::from(&file.path));
            (
                sink,
                file_format(&file, &path, url, errors),
                file.path.is_empty(),
            )
        }),
        names::STDOUT_ACCESS_LOG => proto::decode_any::<StdoutAccessLog>(any).map(|log| {
            let format = match &log.access_log_format {
                Some(stdout_access_log::AccessLogFormat::LogFormat(f)) => {
                    substitution_format(f, &format!("{path}.log_format"), url, errors).map(Some)
                }
                None => Some(None),
            };
            (LogSink::Stdout, format, false)
        }),
        names::STDERR_ACCESS_LOG => proto::decode_any::<StderrAccessLog>(any).map(|log| {
            let format = match &log.access_log_format {
                Some(stderr_access_log::AccessLogFormat::LogFormat(f)) => {
                    substitution_format(f, &format!("{path}.log_format"), url, errors).map(Some)
                }
                None => Some(None),
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
    let format = match format? {
        Some(format) => format,
        None => SubstitutionFormat::Text(
            Format::compile(DEFAULT_FORMAT).expect("Envoy's default format compiles"),
        ),
    };
    Some(AccessLog {
        sink,
        format,
        only_flags: only_flags?,
    })
}

/// The log's `filter`: `response_flag_filter` is the one kind supported (the walker refuses
/// the others). `Some(None)`: no filter.
fn only_flags(
    log: &AccessLogProto,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<Option<ResponseFlags>> {
    let Some(filter) = &log.filter else {
        return Some(None);
    };
    let Some(FilterSpecifier::ResponseFlagFilter(wanted)) = &filter.filter_specifier else {
        return Some(None);
    };
    let mut flags = ResponseFlags::default();
    for (i, name) in wanted.flags.iter().enumerate() {
        match ResponseFlags::from_name(name) {
            Some(flag) => flags.set(flag),
            None => {
                errors.push(TranslateError::new(
                    format!("{path}.filter.response_flag_filter.flags[{i}]"),
                    None,
                    format!("unknown response flag {name:?}"),
                ));
                return None;
            }
        }
    }
    Some(Some(flags))
}

/// The format of a file logger: `Some(None)` for Envoy's default, `None` when it failed
/// (reported).
#[allow(deprecated)] // `format` is deprecated in Envoy but still accepted by it.
fn file_format(
    file: &FileAccessLog,
    path: &str,
    url: Option<&str>,
    errors: &mut Vec<TranslateError>,
) -> Option<Option<SubstitutionFormat>> {
    match &file.access_log_format {
        Some(file_access_log::AccessLogFormat::Format(f)) if !f.is_empty() => {
            text(f, false, format!("{path}.format"), url, errors).map(Some)
        }
        Some(file_access_log::AccessLogFormat::LogFormat(f)) => {
            substitution_format(f, &format!("{path}.log_format"), url, errors).map(Some)
        }
        _ => Some(None),
    }
}

/// A `SubstitutionFormatString` compiled: `text_format`, `text_format_source` or
/// `json_format`, with `omit_empty_values`. `None` when it failed (reported) or is of a kind
/// the walker refuses.
#[allow(deprecated)] // `text_format` is deprecated in Envoy but still accepted by it.
pub(super) fn substitution_format(
    format: &SubstitutionFormatString,
    path: &str,
    url: Option<&str>,
    errors: &mut Vec<TranslateError>,
) -> Option<SubstitutionFormat> {
    let omit_empty = format.omit_empty_values;
    match &format.format {
        Some(substitution_format_string::Format::TextFormat(t)) => {
            text(t, omit_empty, format!("{path}.text_format"), url, errors)
        }
        Some(substitution_format_string::Format::TextFormatSource(source)) => {
            let path = format!("{path}.text_format_source");
            let bytes = super::data_source::read(source, &path, errors)?;
            let Ok(t) = String::from_utf8(bytes) else {
                errors.push(TranslateError::new(path, url, "must be UTF-8 text"));
                return None;
            };
            let path = format!("{path}.{}", super::data_source::field(source));
            text(&t, omit_empty, path, url, errors)
        }
        Some(substitution_format_string::Format::JsonFormat(object)) => {
            let path = format!("{path}.json_format");
            match JsonFormat::compile(&fields(object), omit_empty) {
                Ok(json) => Some(SubstitutionFormat::Json(json)),
                Err(e) => {
                    let at = format!("{path}.{}", e.key);
                    errors.push(TranslateError::new(at, url, e.error.to_string()));
                    None
                }
            }
        }
        None => None,
    }
}

/// A text format compiled; `path` names its field.
fn text(
    text: &str,
    omit_empty: bool,
    path: String,
    url: Option<&str>,
    errors: &mut Vec<TranslateError>,
) -> Option<SubstitutionFormat> {
    match Format::compile(text) {
        Ok(format) if omit_empty => Some(SubstitutionFormat::Text(format.omitting_empty())),
        Ok(format) => Some(SubstitutionFormat::Text(format)),
        Err(e) => {
            errors.push(TranslateError::new(path, url, e.to_string()));
            None
        }
    }
}

/// A `google.protobuf.Struct`'s fields as a JSON template.
fn fields(object: &Struct) -> Vec<(String, JsonTemplate)> {
    object
        .fields
        .iter()
        .map(|(key, value)| (key.clone(), template(value)))
        .collect()
}

fn template(value: &Value) -> JsonTemplate {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => JsonTemplate::Null,
        Some(Kind::BoolValue(b)) => JsonTemplate::Bool(*b),
        Some(Kind::NumberValue(n)) => JsonTemplate::Number(*n),
        Some(Kind::StringValue(s)) => JsonTemplate::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            JsonTemplate::List(list.values.iter().map(template).collect())
        }
        Some(Kind::StructValue(object)) => JsonTemplate::Object(fields(object)),
    }
}
