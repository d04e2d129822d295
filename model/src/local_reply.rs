//! Domain model: the connection manager's `local_reply_config` — mappers that rewrite the
//! replies the proxy makes itself, and the format of their bodies.
use std::time::Duration;

use bytes::Bytes;

use crate::{
    access_log::{ConnectionRecord, HttpLogView, ResponseFlags, SubstitutionFormat},
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
    pub format: SubstitutionFormat,
    /// `content_type`, else `text/plain` for a text format and `application/json` for JSON.
    pub content_type: Bytes,
}

impl LocalReplyConfig {
    /// The first mapper whose filter matches the reply `record` describes.
    pub fn mapper(&self, record: &ConnectionRecord) -> Option<&Mapper> {
        self.mappers.iter().find(|m| m.filter.matches(record))
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::UNIX_EPOCH};

    use super::*;
    use crate::{
        matchers::{HeaderRule, HeaderSource},
        route::HeaderValue,
    };

    /// A reply with status 503 to a GET with `x-a: 1`, 20 ms in.
    struct Reply;

    impl HttpLogView for Reply {
        fn request_header(&self, name: &str) -> Option<&[u8]> {
            match name {
                ":method" => Some(b"GET"),
                "x-a" => Some(b"1"),
                _ => None,
            }
        }
        fn response_header(&self, _: &str) -> Option<&[u8]> {
            None
        }
        fn response_trailer(&self, _: &str) -> Option<&[u8]> {
            None
        }
        fn protocol(&self) -> &str {
            "HTTP/1.1"
        }
        fn response_code(&self) -> u16 {
            503
        }
    }

    fn record(flags: ResponseFlags) -> ConnectionRecord<'static> {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        ConnectionRecord {
            start: UNIX_EPOCH,
            duration: Duration::from_millis(20),
            bytes_received: 0,
            bytes_sent: 0,
            downstream_remote: addr,
            downstream_local: addr,
            upstream_host: None,
            upstream_local: None,
            upstream_cluster: None,
            response_flags: flags,
            connection_id: 0,
            tls: None,
            requested_server_name: None,
            upstream_tls: None,
            http: Some(&Reply),
        }
    }

    fn header(name: &str) -> ReplyFilter {
        ReplyFilter::Header(HeaderMatcher {
            source: HeaderSource::Named(name.into()),
            rule: HeaderRule::Present(true),
            invert: false,
            treat_missing_as_empty: false,
        })
    }

    #[test]
    fn filters_match_as_envoy_access_log_filters() {
        let r = record(ResponseFlags::NO_HEALTHY_UPSTREAM);
        let yes = [
            ReplyFilter::StatusCode(Comparison::Eq, 503),
            ReplyFilter::StatusCode(Comparison::Ge, 500),
            ReplyFilter::StatusCode(Comparison::Ne, 404),
            ReplyFilter::Duration(Comparison::Le, 20),
            header("x-a"),
            ReplyFilter::ResponseFlags(ResponseFlags::default()),
            ReplyFilter::ResponseFlags(ResponseFlags::NO_HEALTHY_UPSTREAM),
            ReplyFilter::NotHealthCheck,
            ReplyFilter::And(vec![header("x-a"), ReplyFilter::NotHealthCheck]),
            ReplyFilter::Or(vec![header("x-b"), ReplyFilter::NotHealthCheck]),
        ];
        let no = [
            ReplyFilter::StatusCode(Comparison::Le, 499),
            ReplyFilter::Duration(Comparison::Ge, 21),
            header("x-b"),
            ReplyFilter::ResponseFlags(ResponseFlags::NO_ROUTE_FOUND),
            ReplyFilter::And(vec![header("x-a"), header("x-b")]),
        ];
        for f in &yes {
            assert!(f.matches(&r), "{f:?}");
        }
        for f in &no {
            assert!(!f.matches(&r), "{f:?}");
        }
        assert!(!ReplyFilter::ResponseFlags(ResponseFlags::default())
            .matches(&record(ResponseFlags::default())));
    }

    #[test]
    fn the_first_matching_mapper_wins() {
        let mapper = |filter, status| Mapper {
            filter,
            status: Some(status),
            headers_to_add: vec![HeaderAdd {
                name: "x".into(),
                value: HeaderValue::from("v"),
                action: crate::route::AppendAction::AppendIfExistsOrAdd,
                keep_empty: false,
            }],
            body: None,
            body_format: None,
        };
        let config = LocalReplyConfig {
            mappers: vec![
                mapper(ReplyFilter::StatusCode(Comparison::Eq, 404), 400),
                mapper(ReplyFilter::StatusCode(Comparison::Ge, 500), 501),
                mapper(ReplyFilter::NotHealthCheck, 502),
            ],
            body_format: None,
        };
        let r = record(ResponseFlags::default());
        assert_eq!(config.mapper(&r).unwrap().status, Some(501));
    }
}
