//! Domain model: the connection manager's `local_reply_config` — mappers that rewrite the
//! replies the proxy makes itself, and the format of their bodies.
use std::time::Duration;

use bytes::Bytes;

use crate::{
    access_log::{ConnectionRecord, Format, HttpLogView, ResponseFlags},
    matchers::HeaderMatcher,
    route::{HeaderAdd, RouteRequest},
};

/// `local_reply_config`.
#[derive(Debug, Default)]
pub struct LocalReplyConfig {
    /// Tried in order; the first whose filter matches rewrites the reply.
    pub mappers: Vec<Mapper>,
    /// `body_format`: what every local reply's body becomes (unless a mapper overrides it).
    pub body_format: Option<BodyFormat>,
}

/// One `ResponseMapper`.
#[derive(Debug)]
pub struct Mapper {
    pub filter: ReplyFilter,
    /// `status_code`: the status the reply gets instead.
    pub status: Option<u16>,
    /// `headers_to_add`.
    pub headers_to_add: Vec<HeaderAdd>,
    /// `body`: the body the reply gets instead (what `%LOCAL_REPLY_BODY%` then reads).
    pub body: Option<Bytes>,
    /// `body_format_override`.
    pub body_format: Option<BodyFormat>,
}

/// The access log filters a mapper may use.
#[derive(Debug)]
pub enum ReplyFilter {
    /// `status_code_filter`: the reply's status compared with a value.
    StatusCode(Comparison, u32),
    /// `duration_filter`: the request's duration so far, in milliseconds.
    Duration(Comparison, u32),
    /// `header_filter`: a request header matcher.
    Header(HeaderMatcher),
    /// `response_flag_filter`: any of these flags is set (any flag at all when empty).
    ResponseFlags(ResponseFlags),
    /// `not_health_check_filter`: no request is a health check here (there is no health
    /// check filter), so it always matches.
    NotHealthCheck,
    And(Vec<ReplyFilter>),
    Or(Vec<ReplyFilter>),
}

/// `ComparisonFilter.op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ge,
    Le,
    Ne,
}

impl Comparison {
    fn holds(self, actual: u64, value: u32) -> bool {
        let value = u64::from(value);
        match self {
            Comparison::Eq => actual == value,
            Comparison::Ge => actual >= value,
            Comparison::Le => actual <= value,
            Comparison::Ne => actual != value,
        }
    }
}

impl ReplyFilter {
    /// Whether the reply `record` describes (its `http` view answering with the reply's
    /// status) matches.
    pub fn matches(&self, record: &ConnectionRecord) -> bool {
        let status = record.http.map_or(0, |h| h.response_code());
        match self {
            ReplyFilter::StatusCode(op, value) => op.holds(status.into(), *value),
            ReplyFilter::Duration(op, value) => op.holds(millis(record.duration), *value),
            ReplyFilter::Header(matcher) => record
                .http
                .is_some_and(|http| matcher.matches(&RequestOf(http))),
            ReplyFilter::ResponseFlags(flags) if flags.is_empty() => {
                !record.response_flags.is_empty()
            }
            ReplyFilter::ResponseFlags(flags) => record.response_flags.intersects(*flags),
            ReplyFilter::NotHealthCheck => true,
            ReplyFilter::And(all) => all.iter().all(|f| f.matches(record)),
            ReplyFilter::Or(any) => any.iter().any(|f| f.matches(record)),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The request a header filter reads, through the record's view.
struct RequestOf<'a>(&'a dyn HttpLogView);

impl RouteRequest for RequestOf<'_> {
    fn method(&self) -> &[u8] {
        self.0.request_header(":method").unwrap_or_default()
    }
    fn path(&self) -> &[u8] {
        self.0.request_header(":path").unwrap_or_default()
    }
    fn header(&self, lowercase_name: &str) -> Option<&[u8]> {
        self.0.request_header(lowercase_name)
    }
}

/// A body format (`SubstitutionFormatString`) and the `content-type` it answers with.
#[derive(Debug)]
pub struct BodyFormat {
    pub format: Format,
    /// `content_type`, else `text/plain` for a text format and `application/json` for JSON.
    pub content_type: Bytes,
}

impl LocalReplyConfig {
    /// The first mapper whose filter matches the reply `record` describes.
    pub fn mapper(&self, record: &ConnectionRecord) -> Option<&Mapper> {
        self.mappers.iter().find(|m| m.filter.matches(record))
    }
}
