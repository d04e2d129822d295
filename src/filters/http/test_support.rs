//! HTTP filter tests: a connection manager with one virtual host and one route (whose
//! per-filter configs a test sets), a stream context over it, and synthetic heads.
use std::{
    sync::Arc,
    time::{Duration, Instant, UNIX_EPOCH},
};

use bytes::Bytes;
use model::{
    access_log::{ConnectionRecord, Format, HttpTimings, ResponseFlags},
    filters::{HttpFilter, PerRouteFilter, PerRouteFilters},
    http::{
        Codec, EscapedSlashes, ForwardClientCert, HcmTimeouts, Http1Options, Http2Options,
        HttpConnectionManager, PathPolicy, Routes, ServerHeader, UnderscoreHeaders,
    },
    route::{
        ClusterSpecifier, DirectResponse, Forward, HeaderMutations, HostRewrite, Route,
        RouteAction, RouteConfig, RouteIndex, RouteMatcher, TlsRequirement, VirtualHost,
        VirtualHostIndex,
    },
    route_match::PathMatch,
    stats::HttpStats,
};

use crate::{
    access_log::{FlusherHandle, HttpExchange},
    context::ShardContext,
    filters::network::filter_state::FilterState,
    stream::{
        headers::{Headers, RequestHead, ResponseHead, Version},
        mutations::Formatter,
        Downstream, StreamContext, StreamNotes,
    },
};

/// The cluster the test route forwards to.
pub const CLUSTER: &str = "backend";

/// A shard (id 0 of 1) and a connection manager running `filters`.
pub struct World {
    pub shard: ShardContext,
    pub hcm: HttpConnectionManager,
    pub filter_state: FilterState,
}

type Entries = Vec<(String, PerRouteFilter)>;

impl World {
    /// `route` and `vhost` are the test route's and virtual host's `typed_per_filter_config`.
    pub fn new(filters: Vec<HttpFilter>, route: Entries, vhost: Entries) -> Self {
        let route = Route {
            name: "r".into(),
            matcher: RouteMatcher {
                path: PathMatch::Prefix("/".into()),
                case_sensitive: true,
                headers: vec![],
                query_parameters: vec![],
                grpc: false,
                tls_context: Default::default(),
            },
            action: RouteAction::Forward(Forward {
                cluster: ClusterSpecifier::Name(model::ClusterRef::named(CLUSTER)),
                prefix_rewrite: None,
                regex_rewrite: None,
                host_rewrite: HostRewrite::None,
                timeout: None,
                idle_timeout: None,
                grpc_timeout: None,
                retry_policy: None,
                mirrors: vec![],
                upgrades: vec![],
                terminates_connect: false,
                hash_policy: Default::default(),
                metadata_match: None,
                cluster_not_found_status: 503,
            }),
            headers: HeaderMutations::default(),
            per_filter: PerRouteFilters(route),
            decorator: None,
        };
        let vhost = VirtualHost {
            name: "v".into(),
            domains: vec!["*".into()],
            routes: vec![route],
            route_index: RouteIndex::default(),
            headers: HeaderMutations::default(),
            retry_policy: None,
            per_filter: PerRouteFilters(vhost),
            require_tls: TlsRequirement::None,
            attempt_count_to_upstream: false,
            attempt_count_in_response: false,
        };
        let route_config = RouteConfig {
            name: "rc".into(),
            config_hash: 0,
            virtual_hosts: vec![vhost],
            vhost_index: VirtualHostIndex::default(),
            headers: HeaderMutations::default(),
            most_specific_header_mutations_wins: false,
            internal_only_headers: vec![],
        };
        let hcm = HttpConnectionManager {
            stat_prefix: "test".into(),
            routes: Routes::Static(Arc::new(route_config)),
            filters,
            use_remote_address: false,
            xff_num_trusted_hops: 0,
            skip_xff_append: false,
            generate_request_id: false,
            preserve_external_request_id: false,
            server_name: "envoy".into(),
            server_header: ServerHeader::Overwrite,
            timeouts: HcmTimeouts {
                request: None,
                request_headers: None,
                stream_idle: None,
                idle: None,
            },
            max_request_headers_bytes: 60 * 1024,
            max_requests_per_connection: None,
            max_headers_count: 100,
            headers_with_underscores: UnderscoreHeaders::Allow,
            codec: Codec::Auto,
            http2: Http2Options::default(),
            http1: Http1Options::default(),
            path: PathPolicy {
                normalize: false,
                merge_slashes: false,
                escaped_slashes: EscapedSlashes::KeepUnchanged,
            },
            upgrades: vec![],
            proxy_100_continue: false,
            forward_client_cert: ForwardClientCert::Sanitize,
            client_cert_details: Default::default(),
            access_logs: vec![],
            local_reply: Default::default(),
            tracing: None,
            stats: Arc::new(HttpStats::new("http.test".into(), 1)),
        };
        Self {
            shard: ShardContext::new(
                0,
                1,
                FlusherHandle::unread(),
                model::publish::event_channel().0,
            ),
            hcm,
            filter_state: FilterState::default(),
        }
    }

    /// The test route answers directly instead of forwarding.
    pub fn answering_directly(mut self) -> Self {
        let Routes::Static(table) = &mut self.hcm.routes else {
            unreachable!("the test table is inline")
        };
        let config = Arc::get_mut(table).expect("not shared yet");
        config.virtual_hosts[0].routes[0].action = RouteAction::DirectResponse(DirectResponse {
            status: 200,
            body: None,
        });
        self
    }

    /// A stream on the test route.
    pub fn cx(&self) -> StreamContext<'_> {
        let vhost = &self.hcm.routes.inline().expect("inline").virtual_hosts[0];
        StreamContext {
            shard: &self.shard,
            hcm: &self.hcm,
            virtual_host: Some(vhost),
            route: Some(&vhost.routes[0]),
            started: Instant::now(),
            filter_state: &self.filter_state,
            downstream: Downstream {
                remote: "10.0.0.1:5555".parse().unwrap(),
                local: "10.0.0.2:8080".parse().unwrap(),
                requested_server_name: "",
                tls: None,
                scheme: "http",
            },
            notes: StreamNotes::default(),
        }
    }

    /// The only filter.
    pub fn filter(&self) -> &HttpFilter {
        &self.hcm.filters[0]
    }
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    let mut headers = Headers::default();
    for (name, value) in pairs {
        headers.append(
            Bytes::copy_from_slice(name.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        );
    }
    headers
}

pub fn request(method: &str, path: &str, pairs: &[(&str, &str)]) -> RequestHead {
    RequestHead {
        method: Bytes::copy_from_slice(method.as_bytes()),
        path: Bytes::copy_from_slice(path.as_bytes()),
        version: Version::Http11,
        headers: headers(pairs),
    }
}

pub fn response(status: u16, pairs: &[(&str, &str)]) -> ResponseHead {
    ResponseHead {
        status,
        version: Version::Http11,
        headers: headers(pairs),
    }
}

/// The value of `name`, as text.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| std::str::from_utf8(v).unwrap())
}

/// Every value of `name`, as text.
pub fn all<'a>(headers: &'a Headers, name: &'a str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .map(|v| std::str::from_utf8(v).unwrap())
        .collect()
}

/// Renders header formats over the heads, on a fixed connection from 10.0.0.1:5555.
pub struct TestValues;

impl Formatter for TestValues {
    fn render(
        &self,
        format: &Format,
        request: &RequestHead,
        response: Option<&ResponseHead>,
        out: &mut Vec<u8>,
    ) {
        let http = HttpExchange {
            request,
            response,
            trailers: None,
            scheme: "http",
            response_code_details: None,
            route_name: None,
            local_reply_body: None,
            metadata: None,
            timings: HttpTimings::default(),
        };
        let record = ConnectionRecord {
            start: UNIX_EPOCH,
            duration: Duration::ZERO,
            bytes_received: 0,
            bytes_sent: 0,
            downstream_remote: "10.0.0.1:5555".parse().unwrap(),
            downstream_local: "10.0.0.2:80".parse().unwrap(),
            upstream_host: None,
            upstream_local: None,
            upstream_cluster: None,
            response_flags: ResponseFlags::default(),
            connection_id: 1,
            tls: None,
            requested_server_name: None,
            upstream_tls: None,
            termination_details: None,
            http: Some(&http),
        };
        format.render(&record, out)
    }
}
