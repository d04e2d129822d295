//! Translator: the connection manager's `local_reply_config` (`LocalReplyConfig`) → mappers
//! with compiled filters, headers and bodies, and body formats.
use bytes::Bytes;
use envoy_types::pb::envoy::{
    config::core::v3::SubstitutionFormatString,
    extensions::filters::network::http_connection_manager::v3::{
        LocalReplyConfig as LocalReplyProto, ResponseMapper,
    },
};

use super::{
    access_log::{log_filter, substitution_format},
    data_source,
    http_connection_manager::Problems,
    route::header_adds,
};
use model::{
    access_log::SubstitutionFormat,
    local_reply::{BodyFormat, LocalReplyConfig, Mapper},
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
    let filter = log_filter(filter, &format!("{path}.filter"), p);
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
