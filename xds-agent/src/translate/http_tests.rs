//! Translator tests for the HTTP connection manager and route tables: defaults, every
//! supported option, routing through translated tables, and errors with their field paths.
use std::{collections::HashMap, sync::Arc, time::Duration};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

use super::*;
use model::{
    hash_policy::HashInput,
    http::{EscapedSlashes, HttpConnectionManager, ServerHeader, UnderscoreHeaders},
    route::{
        AppendAction, ClusterSpecifier, HeaderAdd, HostRewrite, Mirror, RedirectPath, RetryOn,
        RouteAction, TlsRequirement,
    },
    route_match::{testing::Request, PathMatch},
    ClusterRef, NetworkFilter,
};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const BASE: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";

/// A bootstrap whose listener runs an HTTP connection manager with `fields` (YAML at the
/// connection manager's level, written from column 0), and clusters c, d and m.
fn yaml(fields: &str) -> String {
    let fields: Vec<String> = fields.lines().map(|l| format!("          {l}")).collect();
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
{}
  clusters: [{{name: c}}, {{name: d}}, {{name: m}}]
"#,
        fields.join("\n")
    )
}

/// `stat_prefix`, the router, and `route_config` with the given virtual hosts (flow YAML).
fn with_hosts(virtual_hosts: &str) -> String {
    yaml(&format!(
        "stat_prefix: ingress\nhttp_filters: [{{name: envoy.filters.http.router}}]\nroute_config: {{name: rc, virtual_hosts: {virtual_hosts}}}"
    ))
}

/// One virtual host for `*` with the given routes (flow YAML).
fn with_routes(routes: &str) -> String {
    with_hosts(&format!("[{{name: vh, domains: ['*'], routes: {routes}}}]"))
}

const CATCH_ALL: &str = "[{match: {prefix: /}, route: {cluster: c}}]";

fn run(text: &str, previous: Option<&Snapshot>) -> Result<Snapshot, Vec<TranslateError>> {
    let bootstrap: Bootstrap =
        proto::from_json(proto::parse_document(text).unwrap(), false).unwrap();
    let mut stats = StatsRegistry::new(1);
    let dns = HashMap::new();
    let mut ctx = TranslateContext {
        generation: 1,
        stats: &mut stats,
        previous,
        dns: &dns,
        extensions: &Default::default(),
        secrets: Default::default(),
        local_peer: Default::default(),
        ports: None,
    };
    let result = translate(&bootstrap, &mut ctx);
    if let Err(errors) = &result {
        assert_eq!(errors, &validate(&bootstrap), "validate agrees");
    }
    result
}

fn ok(text: &str) -> Snapshot {
    run(text, None).unwrap_or_else(|e| panic!("{e:#?}"))
}

/// Errors as (path below the connection manager, message).
fn errors(text: &str) -> Vec<(String, String)> {
    let errors = run(text, None).unwrap_err();
    for e in &errors {
        assert_eq!(e.type_url.as_deref(), Some(HCM), "{e}");
    }
    errors
        .into_iter()
        .map(|e| {
            let path = e.path.strip_prefix(BASE).unwrap_or(&e.path).to_string();
            (path, e.message)
        })
        .collect()
}

fn hcm(s: &Snapshot) -> &HttpConnectionManager {
    match &s.listeners[0].filter_chains[0].network {
        NetworkFilter::HttpConnectionManager(h) => h,
        other => panic!("expected a connection manager, got {other:?}"),
    }
}

fn error_list(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect()
}

#[test]
fn connection_manager_defaults() {
    let s = ok(&with_routes(CATCH_ALL));
    let h = hcm(&s);
    assert_eq!(h.stat_prefix, "ingress");
    assert!(h.filters.is_empty());
    assert!(!h.use_remote_address && !h.skip_xff_append && !h.preserve_external_request_id);
    assert_eq!(h.xff_num_trusted_hops, 0);
    assert!(h.generate_request_id);
    assert_eq!(h.server_name, "envoy");
    assert_eq!(h.server_header, ServerHeader::Overwrite);
    assert_eq!(h.timeouts.request, None);
    assert_eq!(h.timeouts.request_headers, None);
    assert_eq!(h.timeouts.stream_idle, Some(Duration::from_secs(300)));
    assert_eq!(h.timeouts.idle, Some(Duration::from_secs(3600)));
    assert_eq!(h.max_request_headers_bytes, 60 * 1024);
    assert_eq!(h.max_requests_per_connection, None);
    assert_eq!(h.max_headers_count, 100);
    assert_eq!(h.headers_with_underscores, UnderscoreHeaders::Allow);
    assert!(!h.http1.accept_http_10 && h.http1.default_host_for_http_10.is_none());
    assert!(!h.path.normalize && !h.path.merge_slashes);
    assert_eq!(h.path.escaped_slashes, EscapedSlashes::KeepUnchanged);
    assert!(h.upgrades.is_empty() && !h.proxy_100_continue && h.access_logs.is_empty());
    let mut stats = Vec::new();
    h.stats.read(&mut stats);
    assert!(stats
        .iter()
        .any(|s| s.name == "http.ingress.downstream_rq_total"));

    let rc = &h.routes.inline().unwrap();
    assert_eq!(rc.name, "rc");
    assert!(!rc.most_specific_header_mutations_wins);
    let vh = rc.virtual_host(b"anything").unwrap();
    assert_eq!(vh.require_tls, TlsRequirement::None);
    let route = vh.route(&Request::get("/x")).unwrap();
    let RouteAction::Forward(f) = &route.action else {
        panic!("{:?}", route.action)
    };
    assert!(matches!(&f.cluster, ClusterSpecifier::Name(c) if c.name == "c"));
    assert_eq!(f.timeout, Some(Duration::from_secs(15)));
    assert_eq!(f.idle_timeout, None);
    assert_eq!(f.cluster_not_found_status, 503);
    assert_eq!(f.host_rewrite, HostRewrite::None);
    assert!(f.retry_policy.is_none() && f.mirrors.is_empty() && f.upgrades.is_empty());
}

#[test]
fn connection_manager_options() {
    let s = ok(&yaml(
        r#"stat_prefix: edge
codec_type: HTTP1
http_filters:
- name: envoy.filters.http.router
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router, dynamic_stats: false}
route_config: {virtual_hosts: []}
use_remote_address: true
xff_num_trusted_hops: 2
skip_xff_append: true
generate_request_id: false
preserve_external_request_id: true
server_name: shard
server_header_transformation: PASS_THROUGH
request_timeout: 10s
request_headers_timeout: 2s
stream_idle_timeout: 0s
drain_timeout: 1s
common_http_protocol_options:
  idle_timeout: 0s
  max_requests_per_connection: 7
  max_headers_count: 20
  headers_with_underscores_action: DROP_HEADER
http_protocol_options: {accept_http_10: true, default_host_for_http_10: example.com}
max_request_headers_kb: 8192
normalize_path: true
merge_slashes: true
path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT
upgrade_configs: [{upgrade_type: WebSocket}, {upgrade_type: CONNECT, enabled: false}]
proxy_100_continue: true
http2_protocol_options:
  max_concurrent_streams: 10
  allow_connect: true
  connection_keepalive: {interval: 30s, timeout: 5s, interval_jitter: {value: 10}}
access_log:
- name: log
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"#,
    ));
    let h = hcm(&s);
    assert!(h.use_remote_address && h.skip_xff_append && h.preserve_external_request_id);
    assert_eq!(h.xff_num_trusted_hops, 2);
    assert!(!h.generate_request_id);
    assert_eq!(h.server_name, "shard");
    assert_eq!(h.server_header, ServerHeader::PassThrough);
    assert_eq!(h.timeouts.request, Some(Duration::from_secs(10)));
    assert_eq!(h.timeouts.request_headers, Some(Duration::from_secs(2)));
    assert_eq!(h.timeouts.stream_idle, None, "0s disables");
    assert_eq!(h.timeouts.idle, None, "0s disables");
    assert_eq!(h.max_requests_per_connection, Some(7));
    assert_eq!(h.max_headers_count, 20);
    assert_eq!(h.headers_with_underscores, UnderscoreHeaders::DropHeader);
    assert!(h.http1.accept_http_10);
    assert_eq!(
        h.http1.default_host_for_http_10.as_deref(),
        Some("example.com")
    );
    assert_eq!(h.max_request_headers_bytes, 8192 * 1024);
    assert!(h.path.normalize && h.path.merge_slashes);
    assert_eq!(h.path.escaped_slashes, EscapedSlashes::UnescapeAndRedirect);
    assert_eq!(
        h.upgrades,
        [
            ("websocket".to_string(), true),
            ("connect".to_string(), false)
        ]
    );
    assert!(h.proxy_100_continue);
    assert!(h.http2.allow_connect);
    let keepalive = h.http2.keepalive.unwrap();
    assert_eq!(
        (keepalive.interval, keepalive.timeout, keepalive.jitter_ppm),
        (Duration::from_secs(30), Duration::from_secs(5), 100_000)
    );
    assert_eq!(h.access_logs.len(), 1);
    assert!(h.routes.inline().unwrap().virtual_host(b"x").is_none());
    assert!(h.upgrade_allowed(None, b"websocket"));
    assert!(!h.upgrade_allowed(None, b"CONNECT"));
    assert!(!h.upgrade_allowed(None, b"h2c"));
}

#[test]
fn connection_manager_errors() {
    let e = errors(&yaml(
        r#"codec_type: HTTP3
rds: {config_source: {ads: {}}}
http_filters: []
max_request_headers_kb: 0
common_http_protocol_options: {max_headers_count: 0}
request_timeout: -1s
upgrade_configs: [{upgrade_type: websocket}, {upgrade_type: WEBSOCKET}]
http2_protocol_options: {connection_keepalive: {interval: 1s, interval_jitter: {value: 150}}}"#,
    ));
    assert_eq!(
        e,
        error_list(&[
            (
                ".codec_type",
                "codec_type HTTP3 is not supported: HTTP/1.1 and HTTP/2 are served (AUTO, HTTP1, HTTP2)"
            ),
            (".stat_prefix", "stat_prefix is required"),
            (".rds.route_config_name", "route_config_name is required"),
            (
                ".http_filters",
                "the router (envoy.filters.http.router) is required as the last HTTP filter"
            ),
            (".request_timeout", "must be a non-negative duration"),
            (".max_request_headers_kb", "must be between 1 and 8192"),
            (
                ".common_http_protocol_options.max_headers_count",
                "must be at least 1"
            ),
            (
                ".upgrade_configs[1].upgrade_type",
                "duplicate upgrade type \"websocket\""
            ),
            (
                ".http2_protocol_options.connection_keepalive.timeout",
                "is required and must be at least 1ms"
            ),
        ])
    );

    let e = errors(&yaml(
        r#"stat_prefix: s
http_filters:
- name: envoy.filters.http.router
- name: envoy.filters.http.router
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
- name: custom"#,
    ));
    assert_eq!(
        e,
        error_list(&[
            ("", "route_config or rds is required"),
            (
                ".http_filters[2]",
                "the last HTTP filter must be the router (envoy.filters.http.router)"
            ),
            (
                ".http_filters[0]",
                "the router is a terminal filter: it must be the last"
            ),
            (
                ".http_filters[1]",
                "the router is a terminal filter: it must be the last"
            ),
        ])
    );
}

#[test]
fn unsupported_fields_are_named_with_the_connection_manager_type() {
    let e = errors(&with_routes(
        "[{match: {prefix: /, runtime_fraction: {default_value: {numerator: 1}}}, route: {cluster: c, max_stream_duration: {max_stream_duration: 5s}, hash_policy: [{header: {header_name: x}}]}}]",
    ));
    let route = ".route_config.virtual_hosts[0].routes[0]";
    assert_eq!(
        e,
        error_list(&[
            (
                &format!("{route}.match.runtime_fraction"),
                "field is not supported yet"
            ),
            (
                &format!("{route}.route.max_stream_duration.max_stream_duration"),
                "a stream duration limit is not supported yet (only 0s, no limit)"
            ),
        ])
    );
}

#[test]
fn virtual_hosts_by_domain() {
    let s = ok(&with_hosts(
        "[{name: a, domains: [a.com, 'a.com:8080'], routes: [], require_tls: ALL},
          {name: wild, domains: ['*.a.com'], routes: [], require_tls: EXTERNAL_ONLY},
          {name: any, domains: ['*'], routes: []}]",
    ));
    let rc = &hcm(&s).routes.inline().unwrap();
    let name = |host: &str| rc.virtual_host(host.as_bytes()).map(|v| v.name.as_str());
    assert_eq!(name("A.com"), Some("a"));
    assert_eq!(name("a.com:8080"), Some("a"));
    assert_eq!(name("a.com:9"), Some("any"));
    assert_eq!(name("x.a.com"), Some("wild"));
    assert_eq!(rc.virtual_hosts[0].require_tls, TlsRequirement::All);
    assert_eq!(
        rc.virtual_hosts[1].require_tls,
        TlsRequirement::ExternalOnly
    );

    let s = ok(
        &with_hosts("[{name: a, domains: [a.com], routes: []}]").replace(
            "route_config: {name: rc,",
            "route_config: {name: rc, ignore_port_in_host_matching: true,",
        ),
    );
    assert_eq!(
        hcm(&s)
            .routes
            .inline()
            .unwrap()
            .virtual_host(b"a.com:1")
            .map(|v| v.name.as_str()),
        Some("a")
    );
}

#[test]
fn route_matching_through_a_translated_table() {
    let s = ok(&with_routes(
        r#"[
  {name: exact, match: {path: /health}, direct_response: {status: 200, body: {inline_string: ok}}},
  {name: canary, match: {prefix: /api, headers: [{name: x-canary, string_match: {exact: "1"}}]}, route: {cluster: d}},
  {name: post, match: {prefix: /api, headers: [{name: ":method", exact_match: POST}]}, route: {cluster: d}},
  {name: debug, match: {prefix: /api, query_parameters: [{name: debug, present_match: true}]}, route: {cluster: d}},
  {name: sep, match: {path_separated_prefix: /api}, route: {cluster: c}},
  {name: ci, match: {prefix: /CASE, case_sensitive: false}, route: {cluster: c}},
  {name: regex, match: {safe_regex: {regex: "/v[0-9]+/.*"}}, route: {cluster: c}},
  {name: grpc, match: {prefix: /, grpc: {}}, route: {cluster: c}},
  {name: absent, match: {prefix: /, headers: [{name: x-a, present_match: false}]}, route: {cluster: c}},
  {name: range, match: {prefix: /, headers: [{name: x-a, range_match: {start: 1, end: 5}}]}, route: {cluster: c}},
  {name: rest, match: {prefix: /}, route: {cluster: c}}
]"#,
    ));
    let vh = hcm(&s).routes.inline().unwrap().virtual_host(b"h").unwrap();
    let name = |r: Request| vh.route(&r).map(|r| r.name.as_str());
    assert_eq!(name(Request::get("/health")), Some("exact"));
    assert_eq!(
        name(Request::get("/api/x").with("x-canary", "1")),
        Some("canary")
    );
    assert_eq!(
        name(Request {
            method: "POST",
            ..Request::get("/api/x")
        }),
        Some("post")
    );
    assert_eq!(name(Request::get("/api/x?debug")), Some("debug"));
    assert_eq!(name(Request::get("/api/x")), Some("sep"));
    assert_eq!(name(Request::get("/apix")), Some("absent"));
    assert_eq!(name(Request::get("/case/1")), Some("ci"));
    assert_eq!(name(Request::get("/v2/x")), Some("regex"));
    assert_eq!(
        name(Request::get("/x").with("content-type", "application/grpc")),
        Some("grpc")
    );
    assert_eq!(name(Request::get("/x").with("x-a", "3")), Some("range"));
    assert_eq!(name(Request::get("/x").with("x-a", "9")), Some("rest"));
}

#[test]
fn route_actions() {
    let s = ok(&with_hosts(
        r#"[{name: vh, domains: ['*'],
  retry_policy: {retry_on: "5xx,connect-failure", num_retries: 3},
  request_mirror_policies: [{cluster: m, runtime_fraction: {default_value: {numerator: 25}}}],
  routes: [
  {match: {prefix: /w}, route: {weighted_clusters: {clusters: [{name: c, weight: 3}, {name: d, weight: 1}]}, timeout: 0s, idle_timeout: 0s, cluster_not_found_response_code: NOT_FOUND}},
  {match: {prefix: /h}, route: {cluster_header: X-Cluster, idle_timeout: 5s, auto_host_rewrite: true}},
  {match: {prefix: /p}, route: {cluster: c, prefix_rewrite: /q, host_rewrite_literal: up.example,
    upgrade_configs: [{upgrade_type: websocket, enabled: false}],
    request_mirror_policies: [{cluster: d, runtime_fraction: {default_value: {numerator: 5, denominator: TEN_THOUSAND}}}],
    retry_policy: {retry_on: "retriable-status-codes,unavailable", retriable_status_codes: [503], per_try_timeout: 1s,
      retry_back_off: {base_interval: 0.1s},
      retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts}], host_selection_retry_max_attempts: 3}}},
  {match: {prefix: /r}, route: {cluster: c, regex_rewrite: {pattern: {regex: "^/r/(.*)$"}, substitution: "/\\1/r"}}},
  {match: {prefix: /old}, redirect: {https_redirect: true, host_redirect: new.example, port_redirect: 8443, prefix_rewrite: /new, response_code: PERMANENT_REDIRECT, strip_query: true}},
  {match: {prefix: /path}, redirect: {path_redirect: /elsewhere}},
  {match: {prefix: /d}, direct_response: {status: 503}}
]}]"#,
    ));
    let h = hcm(&s);
    let vh = &h.routes.inline().unwrap().virtual_hosts[0];
    let forward = |i: usize| match &vh.routes[i].action {
        RouteAction::Forward(f) => f,
        other => panic!("{other:?}"),
    };
    let vh_retry = vh.retry_policy.as_ref().unwrap();
    assert_eq!(
        vh_retry.retry_on,
        RetryOn(RetryOn::FIVE_XX.0 | RetryOn::CONNECT_FAILURE.0)
    );
    assert_eq!(vh_retry.num_retries, 3);
    assert_eq!(vh_retry.back_off_base, Duration::from_millis(25));
    assert_eq!(vh_retry.back_off_max, Duration::from_millis(250));
    assert_eq!(vh_retry.host_selection_retry_max_attempts, 1);

    let w = forward(0);
    let ClusterSpecifier::Weighted(weighted) = &w.cluster else {
        panic!()
    };
    assert_eq!(weighted.clusters.total_weight, 4);
    assert_eq!(weighted.clusters.pick(3).name, "d");
    assert_eq!(w.timeout, None, "0s disables");
    assert_eq!(w.idle_timeout, Some(None), "0s disables");
    assert_eq!(w.cluster_not_found_status, 404);
    assert!(
        Arc::ptr_eq(w.retry_policy.as_ref().unwrap(), vh_retry),
        "inherited"
    );
    assert_eq!(
        w.mirrors,
        [Mirror {
            cluster: ClusterRef::named("m"),
            per_million: 250_000
        }]
    );

    let hdr = forward(1);
    assert!(matches!(&hdr.cluster, ClusterSpecifier::Header(h) if h == "x-cluster"));
    assert_eq!(hdr.idle_timeout, Some(Some(Duration::from_secs(5))));
    assert_eq!(hdr.host_rewrite, HostRewrite::Auto);

    let p = forward(2);
    assert_eq!(p.host_rewrite, HostRewrite::Literal("up.example".into()));
    assert_eq!(p.upgrades, [("websocket".to_string(), false)]);
    assert_eq!(
        p.mirrors,
        [Mirror {
            cluster: ClusterRef::named("d"),
            per_million: 500
        }]
    );
    let retry = p.retry_policy.as_ref().unwrap();
    let grpc_and_codes = RetryOn(RetryOn::RETRIABLE_STATUS_CODES.0 | RetryOn::GRPC_UNAVAILABLE.0);
    assert_eq!(
        retry.retry_on, grpc_and_codes,
        "unavailable is a gRPC condition"
    );
    assert_eq!(retry.retriable_status_codes, [503]);
    assert_eq!(retry.per_try_timeout, Some(Duration::from_secs(1)));
    assert_eq!(retry.back_off_base, Duration::from_millis(100));
    assert_eq!(retry.back_off_max, Duration::from_secs(1));
    assert!(retry.previous_hosts);
    assert_eq!(retry.host_selection_retry_max_attempts, 3);
    assert_eq!(
        vh.routes[2].rewritten_path(b"/p/x?y"),
        Some(b"/q/x?y".to_vec())
    );
    assert!(
        !h.upgrade_allowed(Some(p), b"websocket"),
        "not in upgrade_configs"
    );

    assert_eq!(
        vh.routes[3].rewritten_path(b"/r/a?z"),
        Some(b"/a/r?z".to_vec())
    );

    let RouteAction::Redirect(r) = &vh.routes[4].action else {
        panic!()
    };
    assert_eq!(r.status, 308);
    assert!(matches!(&r.path, RedirectPath::Prefix(p) if p == "/new"));
    assert_eq!(
        vh.routes[4].redirect_location(b"http", b"a.com", b"/old/x?q"),
        Some(b"https://new.example:8443/new/x".to_vec())
    );
    assert_eq!(
        vh.routes[5].redirect_location(b"http", b"a.com", b"/path?q"),
        Some(b"http://a.com/elsewhere?q".to_vec())
    );
    let RouteAction::DirectResponse(d) = &vh.routes[6].action else {
        panic!()
    };
    assert_eq!((d.status, d.body.is_none()), (503, true));
}

#[test]
fn header_mutations_at_every_level() {
    let s = ok(&with_hosts(
        r#"[{name: vh, domains: ['*'],
  request_headers_to_add: [{header: {key: X-VH, value: v}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}],
  response_headers_to_remove: [X-Powered-By],
  routes: [{match: {prefix: /}, route: {cluster: c},
    request_headers_to_add: [{header: {key: x-a, value: "100%%"}, append: false},
                             {header: {key: x-b, value: ""}, keep_empty_value: true},
                             {header: {key: x-c, value: c}, append_action: ADD_IF_ABSENT}],
    request_headers_to_remove: [x-drop]}]}]"#,
    )
    .replace(
        "route_config: {name: rc,",
        "route_config: {name: rc, most_specific_header_mutations_wins: true, internal_only_headers: [X-Internal], response_headers_to_add: [{header: {key: server-group, value: g}}],",
    ));
    let rc = &hcm(&s).routes.inline().unwrap();
    let vh = &rc.virtual_hosts[0];
    let route = &vh.routes[0];
    assert_eq!(
        route.headers.request_add,
        [
            HeaderAdd {
                name: "x-a".into(),
                value: "100%".into(),
                action: AppendAction::OverwriteIfExistsOrAdd,
                keep_empty: false
            },
            HeaderAdd {
                name: "x-b".into(),
                value: "".into(),
                action: AppendAction::AppendIfExistsOrAdd,
                keep_empty: true
            },
            HeaderAdd {
                name: "x-c".into(),
                value: "c".into(),
                action: AppendAction::AddIfAbsent,
                keep_empty: false
            },
        ]
    );
    assert_eq!(route.headers.request_remove, ["x-drop"]);
    assert_eq!(vh.headers.request_add[0].name, "x-vh");
    assert_eq!(vh.headers.response_remove, ["x-powered-by"]);
    assert_eq!(rc.headers.response_add[0].name, "server-group");
    assert_eq!(rc.internal_only_headers, ["x-internal"]);
    let order: Vec<_> = rc
        .header_mutations(vh, route, None)
        .into_iter()
        .flatten()
        .collect();
    assert!(std::ptr::eq(order[0], &rc.headers), "least specific first");
    assert!(std::ptr::eq(order[2], &route.headers));
}

#[test]
fn route_table_errors() {
    let e = errors(&with_hosts(
        r#"[{name: a, domains: [a.com, "*"], routes: [
  {match: {prefix: /}, route: {cluster: nope}},
  {match: {prefix: /}, route: {weighted_clusters: {clusters: [{name: c}, {name: gone, weight: 0}]}}},
  {match: {safe_regex: {regex: "("}}, route: {cluster: c}},
  {match: {path_separated_prefix: /a/}, route: {cluster: c}},
  {match: {prefix: /}, route: {cluster: c, prefix_rewrite: /x, regex_rewrite: {pattern: {regex: a}, substitution: "\\2"}}},
  {match: {prefix: /}},
  {match: {prefix: /}, direct_response: {status: 100, body: {inline_string: "0123456789"}}},
  {match: {prefix: /}, redirect: {port_redirect: 70000}},
  {match: {prefix: /}, route: {cluster: c, retry_policy: {retry_on: "5xx,bogus,envoy-ratelimited", retry_back_off: {base_interval: 1s, max_interval: 0.5s}}}},
  {match: {prefix: /, headers: [{name: "bad name", present_match: true}, {name: x, prefix_match: ""}]}, route: {cluster: c}}
]},
{name: b, domains: [A.COM, "*"], routes: [], request_headers_to_add: [{header: {key: ":path", value: x}}, {header: {key: x, value: "%REQ(y)% %BOGUS%"}}, {header: {key: y, value: "a"}, append: true, append_action: ADD_IF_ABSENT}], response_headers_to_remove: [host]},
{name: c, domains: [], routes: [], request_mirror_policies: [{cluster: missing}]}]"#,
    )
    .replace(
        "route_config: {name: rc,",
        "route_config: {name: rc, max_direct_response_body_size_bytes: 4,",
    ));
    let vh = ".route_config.virtual_hosts";
    let r = |i: usize, rest: &str| format!("{vh}[0].routes[{i}]{rest}");
    let expected: Vec<(String, String)> = [
        (r(0, ".route.cluster"), "cluster \"nope\" does not exist"),
        (
            r(1, ".route.weighted_clusters.clusters[1].name"),
            "cluster \"gone\" does not exist",
        ),
        (
            format!("{vh}[2].request_mirror_policies[0].cluster"),
            "cluster \"missing\" does not exist",
        ),
        (
            r(1, ".route.weighted_clusters.clusters"),
            "the sum of the weights must be greater than 0",
        ),
        (r(2, ".match.safe_regex.regex"), "invalid regex"),
        (
            r(3, ".match.path_separated_prefix"),
            "must be non-empty, without `?` or `#`, and must not end with `/`",
        ),
        (
            r(4, ".route.regex_rewrite"),
            "substitution refers to group \\2 but the pattern has 0 group(s)",
        ),
        (
            r(4, ".route"),
            "specify only one of prefix_rewrite and regex_rewrite",
        ),
        (
            r(5, ""),
            "one of route, redirect or direct_response is required",
        ),
        (
            r(6, ".direct_response.status"),
            "must be between 200 and 599",
        ),
        (
            r(6, ".direct_response.body"),
            "body is 10 bytes; max_direct_response_body_size_bytes allows 4",
        ),
        (r(7, ".redirect.port_redirect"), "must be a port (1-65535)"),
        (
            r(8, ".route.retry_policy.retry_on"),
            "unknown retry_on condition \"bogus\"",
        ),
        (
            r(8, ".route.retry_policy.retry_on"),
            "retry_on condition \"envoy-ratelimited\" is not supported yet",
        ),
        (
            r(8, ".route.retry_policy.retry_back_off.max_interval"),
            "must be greater than or equal to the base_interval",
        ),
        (
            r(9, ".match.headers[0].name"),
            "\"bad name\" is not a valid header name",
        ),
        (
            r(9, ".match.headers[1].prefix_match"),
            "must not be empty (use present_match)",
        ),
        (
            format!("{vh}[1].domains[0]"),
            "duplicate domain \"A.COM\" (also in virtual host 0)",
        ),
        (
            format!("{vh}[1].domains[1]"),
            "duplicate domain \"*\" (also in virtual host 0)",
        ),
        (
            format!("{vh}[1].request_headers_to_add[0].header.key"),
            ":-prefixed or host headers may not be modified",
        ),
        (
            format!("{vh}[1].request_headers_to_add[1].header.value"),
            "unknown command %BOGUS% at position 9",
        ),
        (
            format!("{vh}[1].request_headers_to_add[2]"),
            "append and append_action cannot both be set; use append_action",
        ),
        (
            format!("{vh}[1].response_headers_to_remove[0]"),
            ":-prefixed or host headers may not be removed",
        ),
        (
            format!("{vh}[2].domains"),
            "at least one domain is required",
        ),
    ]
    .into_iter()
    .map(|(p, m)| (p, m.to_string()))
    .collect();
    let mut got = e.clone();
    // Regex error texts come from the regex crate: compare their start only.
    for (path, message) in &mut got {
        if path.ends_with("safe_regex.regex") {
            message.truncate("invalid regex".len());
        }
    }
    let mut expected = expected;
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn clusters_may_be_unknown_when_validation_is_off() {
    let text = with_routes("[{match: {prefix: /}, route: {cluster: later}}]").replace(
        "route_config: {name: rc,",
        "route_config: {name: rc, validate_clusters: false,",
    );
    let s = ok(&text);
    let vh = &hcm(&s).routes.inline().unwrap().virtual_hosts[0];
    assert!(matches!(
        &vh.routes[0].action,
        RouteAction::Forward(f) if matches!(&f.cluster, ClusterSpecifier::Name(c) if c.name == "later")
    ));
}

#[test]
fn an_unchanged_route_table_keeps_its_arc() {
    let text = with_routes(CATCH_ALL);
    let first = ok(&text);
    // The listener changes (stat_prefix), the table does not.
    let changed = run(
        &text.replace("stat_prefix: ingress", "stat_prefix: other"),
        Some(&first),
    )
    .unwrap();
    assert!(!Arc::ptr_eq(&first.listeners[0], &changed.listeners[0]));
    assert!(Arc::ptr_eq(
        hcm(&first).routes.inline().unwrap(),
        hcm(&changed).routes.inline().unwrap()
    ));
    let retabled = run(&text.replace("prefix: /", "prefix: /x"), Some(&first)).unwrap();
    assert!(!Arc::ptr_eq(
        hcm(&first).routes.inline().unwrap(),
        hcm(&retabled).routes.inline().unwrap()
    ));
    // A table whose cluster disappeared is not reused: it is an error.
    let e = run(
        &text
            .replace("stat_prefix: ingress", "stat_prefix: other")
            .replace("{name: c}, ", ""),
        Some(&first),
    )
    .unwrap_err();
    assert_eq!(
        e[0].path,
        format!("{BASE}.route_config.virtual_hosts[0].routes[0].route.cluster")
    );
}

#[test]
fn optional_http_filters_of_unsupported_types_are_skipped() {
    let s = ok(&yaml(
        r#"stat_prefix: s
route_config: {}
http_filters:
- name: envoy.filters.http.buffer
  is_optional: true
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer}
- name: envoy.filters.http.router"#,
    ));
    assert!(hcm(&s).filters.is_empty());
}

#[test]
fn tables_with_maps_hash_the_same_on_every_parse() {
    let text = with_routes(CATCH_ALL).replace(
        "{name: vh,",
        "{name: vh, metadata: {filter_metadata: {a: {x: 1, y: 2, z: 3}, b: {k: v}, c: {}, d: {}}},",
    );
    let first = ok(&text);
    for _ in 0..20 {
        let again = run(&text, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&first.listeners[0], &again.listeners[0]));
        assert_eq!(
            hcm(&first).routes.inline().unwrap().config_hash,
            hcm(&again).routes.inline().unwrap().config_hash
        );
    }
}

/// `stat_prefix`, the router, a catch-all route to c, and `local_reply_config` (flow YAML).
fn with_local_reply(config: &str) -> String {
    yaml(&format!(
        "stat_prefix: ingress\nhttp_filters: [{{name: envoy.filters.http.router}}]\nroute_config: {{name: rc, virtual_hosts: [{{name: v, domains: [\"*\"], routes: []}}]}}\nlocal_reply_config: {config}"
    ))
}

#[test]
fn local_reply_config_compiles_mappers_and_body_formats() {
    let s = ok(&with_local_reply(
        r#"{mappers: [
  {filter: {and_filter: {filters: [{status_code_filter: {comparison: {op: GE, value: {default_value: 500, runtime_key: k}}}}, {response_flag_filter: {flags: [UH]}}]}},
   status_code: 502, headers_to_add: [{header: {key: x-mapped, value: "%RESPONSE_CODE%"}}], body: {inline_string: "mapped"},
   body_format_override: {text_format: "override %LOCAL_REPLY_BODY%", content_type: text/html}},
  {filter: {or_filter: {filters: [{header_filter: {header: {name: x-test, present_match: true}}}, {duration_filter: {comparison: {op: LE, value: {default_value: 5}}}}]}}},
  {filter: {not_health_check_filter: {}}}],
 body_format: {text_format_source: {inline_string: "%RESPONSE_CODE% %LOCAL_REPLY_BODY%\n"}, omit_empty_values: true}}"#,
    ));
    let config = &hcm(&s).local_reply;
    assert_eq!(config.mappers.len(), 3);
    let first = &config.mappers[0];
    assert_eq!(first.status, Some(502));
    assert_eq!(first.body.as_deref(), Some(&b"mapped"[..]));
    assert!(matches!(
        first.headers_to_add[0].value,
        model::route::HeaderValue::Formatted(_)
    ));
    assert_eq!(
        &first.body_format.as_ref().unwrap().content_type[..],
        b"text/html"
    );
    let body = config.body_format.as_ref().unwrap();
    assert_eq!(&body.content_type[..], b"text/plain");
}

#[test]
fn json_body_formats_default_to_application_json() {
    let s = ok(&with_local_reply(
        r#"{mappers: [{filter: {not_health_check_filter: {}},
   body_format_override: {json_format: {m: "%LOCAL_REPLY_BODY%"}, content_type: application/x}}],
 body_format: {json_format: {code: "%RESPONSE_CODE%"}}}"#,
    ));
    let config = &hcm(&s).local_reply;
    let body = config.body_format.as_ref().unwrap();
    assert_eq!(&body.content_type[..], b"application/json");
    assert!(matches!(
        body.format,
        model::access_log::SubstitutionFormat::Json(_)
    ));
    let mapped = config.mappers[0].body_format.as_ref().unwrap();
    assert_eq!(&mapped.content_type[..], b"application/x");
}

#[test]
fn local_reply_config_problems_name_their_field() {
    let errors = errors(&with_local_reply(
        r#"{mappers: [
  {filter: {runtime_filter: {runtime_key: r}}},
  {filter: {status_code_filter: {comparison: {op: EQ, value: {default_value: 404}}}}, status_code: 700},
  {filter: {response_flag_filter: {flags: [XX]}}},
  {filter: {and_filter: {filters: [{not_health_check_filter: {}}]}}}],
 body_format: {json_format: {a: [{b: "%NOPE%"}]}}}"#,
    ));
    assert_eq!(
        errors,
        error_list(&[
            (
                ".local_reply_config.mappers[0].filter.runtime_filter",
                "field is not supported yet"
            ),
            (
                ".local_reply_config.mappers[1].status_code",
                "700 is not between 200 and 599"
            ),
            (
                ".local_reply_config.mappers[2].filter.response_flag_filter.flags[0]",
                "\"XX\" is not a response flag"
            ),
            (
                ".local_reply_config.mappers[3].filter.and_filter.filters",
                "needs at least 2 filters"
            ),
            (
                ".local_reply_config.body_format.json_format.a[0].b",
                "unknown command %NOPE% at position 0"
            ),
        ])
    );
}

#[test]
fn header_values_compile_their_commands() {
    let s = ok(&with_hosts(
        r#"[{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c}}],
  request_headers_to_add: [{header: {key: x-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}, {header: {key: x-lit, value: "50%% off"}}]}]"#,
    ));
    let adds = &hcm(&s).routes.inline().unwrap().virtual_hosts[0]
        .headers
        .request_add;
    assert!(matches!(
        adds[0].value,
        model::route::HeaderValue::Formatted(_)
    ));
    assert_eq!(adds[1].value, "50% off".into());
}

#[test]
fn connect_termination_routes() {
    let s = ok(&with_routes(
        "[{match: {connect_matcher: {}}, route: {cluster: c, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]}},
          {match: {prefix: /}, route: {cluster: d, upgrade_configs: [{upgrade_type: websocket}]}}]",
    ));
    let routes = &hcm(&s).routes.inline().unwrap().virtual_hosts[0].routes;
    assert!(matches!(routes[0].matcher.path, PathMatch::Connect));
    let forward = |i: usize| match &routes[i].action {
        RouteAction::Forward(f) => f,
        other => panic!("{other:?}"),
    };
    assert!(forward(0).terminates_connect);
    assert_eq!(forward(0).upgrades, [("connect".to_string(), true)]);
    assert!(!forward(1).terminates_connect);
}

#[test]
fn connect_termination_errors() {
    let e = errors(&with_routes(
        "[{match: {connect_matcher: {}}, route: {cluster: c}},
          {match: {connect_matcher: {}}, route: {cluster: c, upgrade_configs: [{upgrade_type: CONNECT}]}},
          {match: {prefix: /}, route: {cluster: c, upgrade_configs: [{upgrade_type: websocket, connect_config: {}}]}},
          {match: {connect_matcher: {}}, route: {cluster: c, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {allow_post: true, proxy_protocol_config: {}}}]}}]",
    ));
    let r = |i: usize, rest: &str| format!(".route_config.virtual_hosts[0].routes[{i}]{rest}");
    let terminate = "a connect_matcher route must terminate CONNECT (an upgrade_configs entry \
                     {upgrade_type: CONNECT, connect_config: {}}): forwarding CONNECT upstream \
                     is not supported";
    let config = ".route.upgrade_configs[0].connect_config";
    let expected = [
        (
            r(3, &format!("{config}.proxy_protocol_config")),
            "field is not supported yet",
        ),
        (
            r(3, &format!("{config}.allow_post")),
            "field is not supported yet",
        ),
        (r(0, ".route.upgrade_configs"), terminate),
        (r(1, ".route.upgrade_configs"), terminate),
        (
            r(2, config),
            "only a CONNECT upgrade has a connect_config, not \"websocket\"",
        ),
    ];
    let mut expected: Vec<(String, String)> = expected
        .into_iter()
        .map(|(p, m)| (p, m.to_string()))
        .collect();
    let mut e = e;
    e.sort();
    expected.sort();
    assert_eq!(e, expected);
}

#[test]
fn uuid_request_ids_are_accepted_and_other_extensions_refused() {
    let config = |ext: &str| {
        yaml(&format!(
            "stat_prefix: s\nhttp_filters: [{{name: envoy.filters.http.router}}]\nroute_config: {{}}\nrequest_id_extension: {{typed_config: {ext}}}"
        ))
    };
    // Istio's form: x-request-id stays the connection manager's own UUID.
    let s = ok(&config(
        r#"{"@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig, use_request_id_for_trace_sampling: true}"#,
    ));
    assert!(hcm(&s).generate_request_id);
    let e = run(
        &config(r#"{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"#),
        None,
    )
    .unwrap_err();
    assert!(
        e.iter()
            .any(|e| e.path.ends_with(".request_id_extension.typed_config")
                && e.message.contains("request ID extension")),
        "{e:?}"
    );
}

#[test]
fn istio_tracing_is_translated_and_unsupported_parts_refused() {
    let config = |tracing: &str| {
        yaml(&format!(
            "stat_prefix: s\nhttp_filters: [{{name: envoy.filters.http.router}}]\nroute_config: {{}}\ntracing: {tracing}"
        ))
    };
    let zipkin = |extra: &str| {
        format!(
            "{{name: envoy.tracers.zipkin, typed_config: {{'@type': type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: zipkin, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_JSON{extra}}}}}"
        )
    };
    // Istio 1.22's shape: sampling shares, literal and request-metadata tags, a provider.
    let s = ok(&config(&format!(
        "{{client_sampling: {{value: 100}}, random_sampling: {{value: 1}}, overall_sampling: {{value: 100}}, custom_tags: [{{tag: istio.mesh_id, literal: {{value: cluster.local}}}}, {{tag: dry, metadata: {{kind: {{request: {{}}}}, metadata_key: {{key: envoy.filters.http.rbac, path: [{{key: k}}]}}}}}}], provider: {}}}",
        zipkin("")
    )));
    let tracing = hcm(&s).tracing.as_ref().unwrap();
    assert_eq!(
        (tracing.client_sampling, tracing.random_sampling),
        (10_000, 100)
    );
    assert_eq!(tracing.custom_tags.len(), 2);
    let tracer = tracing.zipkin.as_ref().unwrap();
    assert_eq!(tracer.collector_hostname, "zipkin");
    assert!(tracer.shared_span_context);
    for (tracing, at) in [
        (
            format!("{{provider: {}}}", zipkin(", collector_endpoint_version: HTTP_PROTO")),
            "collector_endpoint_version",
        ),
        ("{verbose: true}".to_string(), "tracing.verbose"),
        ("{spawn_upstream_span: true}".to_string(), "spawn_upstream_span"),
        (
            "{custom_tags: [{tag: t, metadata: {kind: {route: {}}, metadata_key: {key: k}}}]}"
                .to_string(),
            "custom_tags[0].metadata.kind",
        ),
        (
            "{provider: {name: otel, typed_config: {'@type': type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig}}}"
                .to_string(),
            "provider.typed_config",
        ),
    ] {
        let e = run(&config(&tracing), None).unwrap_err();
        assert!(e.iter().any(|e| e.path.contains(at)), "{at}: {e:#?}");
    }
}

#[test]
fn hash_policies() {
    let s = ok(&with_routes(
        "[{match: {prefix: /}, route: {cluster: c, hash_policy: [
            {header: {header_name: X-User, regex_rewrite: {pattern: {regex: '^(\\w+)-.*$'}, substitution: '\\1'}}},
            {cookie: {name: sticky, ttl: 60.5s, path: /app, attributes: [{name: SameSite, value: Lax}]}, terminal: true},
            {connection_properties: {source_ip: false}},
            {connection_properties: {source_ip: true}},
            {query_parameter: {name: user}}]}}]",
    ));
    let routes = &hcm(&s).routes.inline().unwrap().virtual_hosts[0].routes;
    let RouteAction::Forward(forward) = &routes[0].action else {
        panic!("{:?}", routes[0].action);
    };
    let policies = &forward.hash_policy.policies;
    // `source_ip: false` hashes nothing: left out, as Envoy leaves it out.
    assert_eq!(policies.len(), 4, "{policies:?}");
    assert!(
        matches!(&policies[0].input, HashInput::Header { name, rewrite: Some(_) } if &**name == "x-user")
    );
    let HashInput::Cookie(cookie) = &policies[1].input else {
        panic!("{policies:?}");
    };
    assert!(policies[1].terminal);
    assert_eq!(cookie.ttl, Some(60));
    assert_eq!(&*cookie.path, "/app");
    assert_eq!(
        cookie.attributes,
        [(Box::from("SameSite"), Box::from("Lax"))]
    );
    assert!(matches!(policies[2].input, HashInput::SourceIp));
    assert!(matches!(&policies[3].input, HashInput::QueryParameter(name) if &**name == "user"));
    let e = errors(&with_routes(
        "[{match: {prefix: /}, route: {cluster: c, hash_policy: [{filter_state: {key: k}}, {cookie: {name: ''}}, {}]}}]",
    ));
    let route = ".route_config.virtual_hosts[0].routes[0].route.hash_policy";
    let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("{route}[0].filter_state"),
            format!("{route}[1].cookie.name"),
            format!("{route}[2]"),
        ],
        "{e:?}"
    );
}

#[test]
fn metadata_match_of_routes_and_weighted_clusters() {
    let s = ok(&with_routes(
        r#"[
  {match: {prefix: /a}, route: {cluster: c, metadata_match: {filter_metadata: {envoy.lb: {version: v1, stage: prod}, other: {x: y}}}}},
  {match: {prefix: /w}, route: {metadata_match: {filter_metadata: {envoy.lb: {version: v1, stage: prod}}},
    weighted_clusters: {clusters: [{name: c, weight: 1, metadata_match: {filter_metadata: {envoy.lb: {version: v2}}}}, {name: d, weight: 1}]}}},
  {match: {prefix: /o}, route: {cluster: c, metadata_match: {filter_metadata: {other: {x: y}}}}}
]"#,
    ));
    let h = hcm(&s);
    let vh = &h.routes.inline().unwrap().virtual_hosts[0];
    let forward = |i: usize| match &vh.routes[i].action {
        RouteAction::Forward(f) => f,
        other => panic!("{other:?}"),
    };
    let labels = |m: &model::subset::MetadataMatch| -> Vec<(String, String)> {
        m.labels
            .iter()
            .map(|l| (l.key.to_string(), l.value.to_string()))
            .collect()
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // Only `envoy.lb` counts, sorted by key.
    let own = forward(0).metadata_match.as_deref().unwrap();
    assert_eq!(
        labels(own),
        pairs(&[("stage", "\"prod\""), ("version", "\"v1\"")])
    );
    let ClusterSpecifier::Weighted(weighted) = &forward(1).cluster else {
        panic!("weighted");
    };
    // The first cluster's version replaces the route's; the second takes the route's.
    let first = weighted.metadata_match[0].as_deref().unwrap();
    assert_eq!(
        labels(first),
        pairs(&[("stage", "\"prod\""), ("version", "\"v2\"")])
    );
    let second = weighted.metadata_match[1].as_deref().unwrap();
    assert_eq!(
        labels(second),
        pairs(&[("stage", "\"prod\""), ("version", "\"v1\"")])
    );
    assert!(forward(2).metadata_match.is_none());
}
