//! Domain model: the connection manager's `local_reply_config` — mappers that rewrite the
//! replies the proxy makes itself, and the format of their bodies.
use bytes::Bytes;

use crate::{
    access_log::{filter::LogFilter, ConnectionRecord, SubstitutionFormat},
    route::HeaderAdd,
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
    pub filter: LogFilter,
    /// `status_code`: the status the reply gets instead.
    pub status: Option<u16>,
    /// `headers_to_add`.
    pub headers_to_add: Vec<HeaderAdd>,
    /// `body`: the body the reply gets instead (what `%LOCAL_REPLY_BODY%` then reads).
    pub body: Option<Bytes>,
    /// `body_format_override`.
    pub body_format: Option<BodyFormat>,
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
    use std::{
        net::SocketAddr,
        time::{Duration, UNIX_EPOCH},
    };

    use super::*;
    use crate::{
        access_log::{filter::Comparison, HttpLogView, ResponseFlags},
        matchers::{HeaderMatcher, HeaderRule, HeaderSource},
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
            termination_details: None,
            http: Some(&Reply),
        }
    }

    fn header(name: &str) -> LogFilter {
        LogFilter::Header(HeaderMatcher {
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
            LogFilter::StatusCode(Comparison::Eq, 503),
            LogFilter::StatusCode(Comparison::Ge, 500),
            LogFilter::StatusCode(Comparison::Ne, 404),
            LogFilter::Duration(Comparison::Le, 20),
            header("x-a"),
            LogFilter::ResponseFlags(ResponseFlags::default()),
            LogFilter::ResponseFlags(ResponseFlags::NO_HEALTHY_UPSTREAM),
            LogFilter::NotHealthCheck,
            LogFilter::And(vec![header("x-a"), LogFilter::NotHealthCheck]),
            LogFilter::Or(vec![header("x-b"), LogFilter::NotHealthCheck]),
        ];
        let no = [
            LogFilter::StatusCode(Comparison::Le, 499),
            LogFilter::Duration(Comparison::Ge, 21),
            header("x-b"),
            LogFilter::ResponseFlags(ResponseFlags::NO_ROUTE_FOUND),
            LogFilter::And(vec![header("x-a"), header("x-b")]),
        ];
        for f in &yes {
            assert!(f.matches(&r), "{f:?}");
        }
        for f in &no {
            assert!(!f.matches(&r), "{f:?}");
        }
        assert!(!LogFilter::ResponseFlags(ResponseFlags::default())
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
                mapper(LogFilter::StatusCode(Comparison::Eq, 404), 400),
                mapper(LogFilter::StatusCode(Comparison::Ge, 500), 501),
                mapper(LogFilter::NotHealthCheck, 502),
            ],
            body_format: None,
        };
        let r = record(ResponseFlags::default());
        assert_eq!(config.mapper(&r).unwrap().status, Some(501));
    }
}
