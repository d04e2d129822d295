//! Access log filters (`AccessLogFilter`) as shards evaluate them on a connection's or
//! request's record: which lines a log writes, and which local replies a mapper rewrites.
use std::time::Duration;

use super::{ConnectionRecord, HttpLogView, ResponseFlags};
use crate::{matchers::HeaderMatcher, route::RouteRequest};

/// An access log `filter` (also what a local reply mapper matches with): the kinds that need
/// only the record.
#[derive(Debug, Clone)]
pub enum LogFilter {
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
    And(Vec<LogFilter>),
    Or(Vec<LogFilter>),
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

impl LogFilter {
    /// Whether the connection or request `record` describes matches (a local reply's record
    /// answers with the reply's status).
    pub fn matches(&self, record: &ConnectionRecord) -> bool {
        let status = record.http.map_or(0, |h| h.response_code());
        match self {
            LogFilter::StatusCode(op, value) => op.holds(status.into(), *value),
            LogFilter::Duration(op, value) => op.holds(millis(record.duration), *value),
            LogFilter::Header(matcher) => record
                .http
                .is_some_and(|http| matcher.matches(&RequestOf(http))),
            LogFilter::ResponseFlags(flags) if flags.is_empty() => {
                !record.response_flags.is_empty()
            }
            LogFilter::ResponseFlags(flags) => record.response_flags.intersects(*flags),
            LogFilter::NotHealthCheck => true,
            LogFilter::And(all) => all.iter().all(|f| f.matches(record)),
            LogFilter::Or(any) => any.iter().any(|f| f.matches(record)),
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
