//! Translator: access logs (`AccessLog`: file, stdout, stderr) and `SubstitutionFormatString`
//! (text or JSON) compiled, shared by the tcp_proxy and HTTP connection manager filters and
//! local reply body formats.
use std::{path::PathBuf, sync::Arc};

use envoy_types::pb::envoy::{
    config::{
        accesslog::v3::{
            access_log, access_log_filter::FilterSpecifier, comparison_filter::Op,
            AccessLog as AccessLogProto, AccessLogFilter, ComparisonFilter,
        },
        core::v3::{substitution_format_string, SubstitutionFormatString},
    },
    extensions::access_loggers::{
        file::v3::{file_access_log, FileAccessLog},
        stream::v3::{stderr_access_log, stdout_access_log, StderrAccessLog, StdoutAccessLog},
    },
};

use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use super::{
    http_connection_manager::Problems,
    matchers::{header_matcher, At},
    TranslateError,
};
use crate::names;
use model::access_log::{
    filter::{Comparison, LogFilter},
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
    let filter = filter(log, path, errors);
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
        filter: filter?,
    })
}

/// The log's `filter` (`Some(None)`: none; `None`: it has problems, reported).
fn filter(
    log: &AccessLogProto,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<Option<LogFilter>> {
    let Some(proto) = &log.filter else {
        return Some(None);
    };
    let mut p = Problems { url: None, errors };
    log_filter(proto, &format!("{path}.filter"), &mut p).map(Some)
}

/// An access log filter (a log's `filter`, a local reply mapper's); the kinds that need what
/// shardproxy does not have (runtime, tracing, metadata, gRPC status of a reply, extensions,
/// log types) are refused by the walker.
pub(super) fn log_filter(
    proto: &AccessLogFilter,
    path: &str,
    p: &mut Problems,
) -> Option<LogFilter> {
    let at = |field: &str| format!("{path}.{field}");
    Some(match &proto.filter_specifier {
        Some(FilterSpecifier::StatusCodeFilter(f)) => {
            let (op, value) = comparison(f.comparison.as_ref(), &at("status_code_filter"), p)?;
            LogFilter::StatusCode(op, value)
        }
        Some(FilterSpecifier::DurationFilter(f)) => {
            let (op, value) = comparison(f.comparison.as_ref(), &at("duration_filter"), p)?;
            LogFilter::Duration(op, value)
        }
        Some(FilterSpecifier::NotHealthCheckFilter(_)) => LogFilter::NotHealthCheck,
        Some(FilterSpecifier::HeaderFilter(f)) => {
            let path = at("header_filter.header");
            let Some(header) = &f.header else {
                p.add(path, "header is required");
                return None;
            };
            let at = At {
                path: &path,
                type_url: p.url,
            };
            LogFilter::Header(header_matcher(header, at, p.errors)?)
        }
        Some(FilterSpecifier::ResponseFlagFilter(f)) => {
            let mut flags = ResponseFlags::default();
            for (i, name) in f.flags.iter().enumerate() {
                match ResponseFlags::from_name(name) {
                    Some(flag) => flags.set(flag),
                    None => p.add(
                        at(&format!("response_flag_filter.flags[{i}]")),
                        format!("{name:?} is not a response flag"),
                    ),
                }
            }
            LogFilter::ResponseFlags(flags)
        }
        Some(FilterSpecifier::AndFilter(f)) => {
            LogFilter::And(filters(&f.filters, &at("and_filter.filters"), p)?)
        }
        Some(FilterSpecifier::OrFilter(f)) => {
            LogFilter::Or(filters(&f.filters, &at("or_filter.filters"), p)?)
        }
        // The walker refuses the other kinds, naming the field.
        Some(_) => return None,
        None => {
            p.add(path, "a filter kind is required");
            return None;
        }
    })
}

/// The filters of an `and_filter` or `or_filter` (Envoy wants at least two).
fn filters(protos: &[AccessLogFilter], path: &str, p: &mut Problems) -> Option<Vec<LogFilter>> {
    if protos.len() < 2 {
        p.add(path, "needs at least 2 filters");
        return None;
    }
    let before = p.count();
    let filters: Vec<_> = protos
        .iter()
        .enumerate()
        .filter_map(|(i, f)| log_filter(f, &format!("{path}[{i}]"), p))
        .collect();
    (p.count() == before && filters.len() == protos.len()).then_some(filters)
}

fn comparison(
    proto: Option<&ComparisonFilter>,
    path: &str,
    p: &mut Problems,
) -> Option<(Comparison, u32)> {
    let Some(proto) = proto else {
        p.add(format!("{path}.comparison"), "comparison is required");
        return None;
    };
    let op = match Op::try_from(proto.op) {
        Ok(Op::Eq) => Comparison::Eq,
        Ok(Op::Ge) => Comparison::Ge,
        Ok(Op::Le) => Comparison::Le,
        Ok(Op::Ne) => Comparison::Ne,
        Err(_) => {
            p.add(
                format!("{path}.comparison.op"),
                format!("unknown op {}", proto.op),
            );
            return None;
        }
    };
    let Some(value) = &proto.value else {
        p.add(format!("{path}.comparison.value"), "value is required");
        return None;
    };
    Some((op, value.default_value))
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
