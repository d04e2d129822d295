//! Translator: the connection manager's `local_reply_config` (`LocalReplyConfig`) → mappers
//! with compiled filters, headers and bodies, and body formats.
use bytes::Bytes;
use envoy_types::pb::envoy::{
    config::{
        accesslog::v3::{
            access_log_filter::FilterSpecifier, comparison_filter::Op, AccessLogFilter,
            ComparisonFilter,
        },
        core::v3::SubstitutionFormatString,
    },
    extensions::filters::network::http_connection_manager::v3::{
        LocalReplyConfig as LocalReplyProto, ResponseMapper,
    },
};

use super::{
    access_log::substitution_format,
    data_source,
    http_connection_manager::Problems,
    matchers::{header_matcher, At},
    route::header_adds,
};
use model::{
    access_log::{ResponseFlags, SubstitutionFormat},
    local_reply::{BodyFormat, Comparison, LocalReplyConfig, Mapper, ReplyFilter},
};

/// `local_reply_config` at `path`.
pub(super) fn local_reply(
    proto: Option<&LocalReplyProto>,
    path: &str,
    p: &mut Problems,
) -> LocalReplyConfig {
    let Some(proto) = proto else {
        return LocalReplyConfig::default();
    };
    LocalReplyConfig {
        mappers: proto
            .mappers
            .iter()
            .enumerate()
            .filter_map(|(i, m)| mapper(m, &format!("{path}.mappers[{i}]"), p))
            .collect(),
        body_format: proto
            .body_format
            .as_ref()
            .and_then(|f| body_format(f, &format!("{path}.body_format"), p)),
    }
}

fn mapper(proto: &ResponseMapper, path: &str, p: &mut Problems) -> Option<Mapper> {
    let Some(filter) = &proto.filter else {
        p.add(format!("{path}.filter"), "filter is required");
        return None;
    };
    let filter = reply_filter(filter, &format!("{path}.filter"), p);
    let status = match proto.status_code.map(|s| s.value) {
        Some(code) if !(200..600).contains(&code) => {
            p.add(
                format!("{path}.status_code"),
                format!("{code} is not between 200 and 599"),
            );
            None
        }
        code => code.map(|c| c as u16),
    };
    let headers_to_add = header_adds(&proto.headers_to_add, &format!("{path}.headers_to_add"), p);
    let body = match &proto.body {
        Some(source) => {
            let body_path = format!("{path}.body");
            Some(Bytes::from(data_source::read(
                source, &body_path, p.errors,
            )?))
        }
        None => None,
    };
    let body_format = match &proto.body_format_override {
        Some(f) => Some(body_format(f, &format!("{path}.body_format_override"), p)?),
        None => None,
    };
    Some(Mapper {
        filter: filter?,
        status,
        headers_to_add,
        body,
        body_format,
    })
}

/// A mapper's filter; the access log filters that need what shardproxy does not have
/// (runtime, tracing, metadata, gRPC status of a reply, extensions, log types) are refused by
/// the walker.
fn reply_filter(proto: &AccessLogFilter, path: &str, p: &mut Problems) -> Option<ReplyFilter> {
    let at = |field: &str| format!("{path}.{field}");
    Some(match &proto.filter_specifier {
        Some(FilterSpecifier::StatusCodeFilter(f)) => {
            let (op, value) = comparison(f.comparison.as_ref(), &at("status_code_filter"), p)?;
            ReplyFilter::StatusCode(op, value)
        }
        Some(FilterSpecifier::DurationFilter(f)) => {
            let (op, value) = comparison(f.comparison.as_ref(), &at("duration_filter"), p)?;
            ReplyFilter::Duration(op, value)
        }
        Some(FilterSpecifier::NotHealthCheckFilter(_)) => ReplyFilter::NotHealthCheck,
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
            ReplyFilter::Header(header_matcher(header, at, p.errors)?)
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
            ReplyFilter::ResponseFlags(flags)
        }
        Some(FilterSpecifier::AndFilter(f)) => {
            ReplyFilter::And(filters(&f.filters, &at("and_filter.filters"), p)?)
        }
        Some(FilterSpecifier::OrFilter(f)) => {
            ReplyFilter::Or(filters(&f.filters, &at("or_filter.filters"), p)?)
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
fn filters(protos: &[AccessLogFilter], path: &str, p: &mut Problems) -> Option<Vec<ReplyFilter>> {
    if protos.len() < 2 {
        p.add(path, "needs at least 2 filters");
        return None;
    }
    let before = p.count();
    let filters: Vec<_> = protos
        .iter()
        .enumerate()
        .filter_map(|(i, f)| reply_filter(f, &format!("{path}[{i}]"), p))
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

/// A body format: text or JSON, with `omit_empty_values` and its `content_type` (default
/// `text/plain` for text, `application/json` for JSON, as Envoy).
fn body_format(
    proto: &SubstitutionFormatString,
    path: &str,
    p: &mut Problems,
) -> Option<BodyFormat> {
    let format = substitution_format(proto, path, p.url, p.errors)?;
    let content_type = match (proto.content_type.as_str(), &format) {
        ("", SubstitutionFormat::Text(_)) => Bytes::from_static(b"text/plain"),
        ("", SubstitutionFormat::Json(_)) => Bytes::from_static(b"application/json"),
        (given, _) => Bytes::copy_from_slice(given.as_bytes()),
    };
    Some(BodyFormat {
        format,
        content_type,
    })
}
