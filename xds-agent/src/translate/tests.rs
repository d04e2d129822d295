//! Translator tests: every supported feature, default and error path, through `translate`.
use std::{collections::HashMap, sync::Arc, time::Duration};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

use super::*;
use model::{
    access_log::{JsonFormat, JsonTemplate, LogSink, SubstitutionFormat},
    Cluster, ClusterRef, DnsHost, LbPolicy, NetworkFilter, RingHash, RingHashFunction, TcpProxy,
};

const TCP: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

pub(super) fn bootstrap(yaml: &str) -> Bootstrap {
    proto::from_json(proto::parse_document(yaml).unwrap(), false).unwrap()
}

fn run(
    yaml: &str,
    previous: Option<&Snapshot>,
    dns: &HashMap<String, Arc<[Endpoint]>>,
) -> Result<Snapshot, Vec<TranslateError>> {
    let mut stats = StatsRegistry::new(2);
    let mut ctx = TranslateContext {
        generation: 7,
        stats: &mut stats,
        previous,
        dns,
        extensions: &Default::default(),
        secrets: Default::default(),
        local_peer: Default::default(),
        ports: None,
    };
    translate(&bootstrap(yaml), &mut ctx)
}

pub(super) fn ok(yaml: &str) -> Snapshot {
    run(yaml, None, &HashMap::new()).unwrap_or_else(|e| panic!("{e:#?}"))
}

/// `yaml` translated as the generation after `previous`.
pub(super) fn ok_after(yaml: &str, previous: &Snapshot) -> Snapshot {
    run(yaml, Some(previous), &HashMap::new()).unwrap_or_else(|e| panic!("{e:#?}"))
}

pub(super) fn errors(yaml: &str) -> Vec<TranslateError> {
    let errors = run(yaml, None, &HashMap::new()).unwrap_err();
    assert_eq!(errors, validate(&bootstrap(yaml)), "validate agrees");
    errors
}

/// A listener on 127.0.0.1:10000 whose tcp_proxy has `proxy` as extra fields, and `clusters`.
fn config(proxy: &str, clusters: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": {TCP}
          stat_prefix: tcp
          {proxy}
  clusters: {clusters}
"#
    )
}

const STATIC: &str =
    "[{name: c, load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}}]}]}}]";

fn proxy(snapshot: &Snapshot) -> &TcpProxy {
    let NetworkFilter::TcpProxy(p) = &snapshot.listeners[0].filter_chains[0].network else {
        panic!("expected a tcp_proxy chain");
    };
    p
}

fn stat_names(read: impl Fn(&mut Vec<model::stats::StatValue>)) -> Vec<String> {
    let mut out = Vec::new();
    read(&mut out);
    out.into_iter().map(|s| s.name).collect()
}

#[test]
fn listener_and_tcp_proxy_defaults() {
    let s = ok(&config("cluster: c", STATIC));
    assert_eq!(s.generation, 7);
    let l = &s.listeners[0];
    assert_eq!(l.name, "l");
    assert_eq!(l.address, "127.0.0.1:10000".parse().unwrap());
    assert_eq!(l.buffer_limit, 1 << 20);
    assert_eq!(l.accepts_per_event, model::DEFAULT_ACCEPTS_PER_EVENT);
    assert!(!l.inbound);
    assert!(stat_names(|o| l.stats.read(o))
        .contains(&"listener.127.0.0.1_10000.downstream_cx_total".into()));
    let p = proxy(&s);
    assert_eq!(p.upstream.clusters, [(ClusterRef::named("c"), 1)]);
    assert_eq!(p.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(p.max_connect_attempts, 1);
    assert!(p.access_logs.is_empty());
    assert!(stat_names(|o| p.stats.read(o)).contains(&"tcp.tcp.idle_timeout".into()));
    let c = &s.clusters["c"];
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(
        c.endpoints[0],
        Endpoint::new("10.0.0.1:80".parse().unwrap())
    );
    assert_eq!(c.dns, None);
    assert_eq!(c.buffer_limit, 1 << 20);
}

#[test]
fn listener_options() {
    let yaml = config("cluster: c", STATIC)
        .replace("  - name: l\n", "  - name: l\n    stat_prefix: mine\n    traffic_direction: INBOUND\n    per_connection_buffer_limit_bytes: 4096\n    max_connections_to_accept_per_socket_event: 3\n")
        .replace("127.0.0.1", "'::1'");
    let s = ok(&yaml);
    let l = &s.listeners[0];
    assert!(l.inbound);
    assert_eq!(l.buffer_limit, 4096);
    assert_eq!(l.accepts_per_event, 3);
    assert_eq!(l.address, "[::1]:10000".parse().unwrap());
    assert!(stat_names(|o| l.stats.read(o))[0].starts_with("listener.mine."));
    // Without stat_prefix, an IPv6 address names the stats as Envoy does.
    let s = ok(&config("cluster: c", STATIC).replace("127.0.0.1", "'::1'"));
    assert!(stat_names(|o| s.listeners[0].stats.read(o))[0].starts_with("listener.[__1]_10000."));
}

#[test]
fn unnamed_listener_is_named_after_its_address() {
    let s = ok(&config("cluster: c", STATIC).replace("  - name: l\n    address", "  - address"));
    assert_eq!(s.listeners[0].name, "127.0.0.1_10000");
}

#[test]
fn tcp_proxy_options() {
    let s = ok(&config(
        "weighted_clusters: {clusters: [{name: c, weight: 3}, {name: d, weight: 1}]}
          idle_timeout: 0s
          max_connect_attempts: 3",
        "[{name: c}, {name: d}]",
    ));
    let p = proxy(&s);
    assert_eq!(p.upstream.total_weight, 4);
    assert_eq!(p.upstream.pick(3).name, "d");
    assert_eq!(p.idle_timeout, None);
    assert_eq!(p.max_connect_attempts, 3);
}

#[test]
fn tcp_proxy_errors() {
    let base = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
    let e = errors(&config("cluster: nope", STATIC));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, format!("{base}.cluster"));
    assert_eq!(e[0].type_url.as_deref(), Some(TCP));
    assert_eq!(e[0].message, "cluster \"nope\" does not exist");

    let e = errors(
        &config("max_connect_attempts: 0", STATIC).replace("stat_prefix: tcp", "stat_prefix: \"\""),
    );
    let paths: Vec<_> = e
        .iter()
        .map(|e| e.path.strip_prefix(base).unwrap())
        .collect();
    assert_eq!(
        paths,
        [".stat_prefix", "", ".max_connect_attempts"],
        "{e:#?}"
    );

    let e = errors(&config(
        "weighted_clusters: {clusters: [{name: c, weight: 0}, {name: x, weight: 1}]}",
        STATIC,
    ));
    let paths: Vec<_> = e
        .iter()
        .map(|e| e.path.strip_prefix(base).unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            ".weighted_clusters.clusters[0].weight",
            ".weighted_clusters.clusters[1].name"
        ]
    );
}

#[test]
fn tcp_proxy_tunneling_config() {
    let s = ok(&config(
        r#"cluster: c
          tunneling_config:
            hostname: "%DOWNSTREAM_LOCAL_ADDRESS%"
            headers_to_add:
            - header: {key: baggage, value: "k8s.namespace.name=ns"}
            - header: {key: X-Port, value: "%DOWNSTREAM_LOCAL_PORT%"}
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            propagate_response_headers: true"#,
        STATIC,
    ));
    let t = proxy(&s).tunneling.as_ref().expect("tunneling_config");
    assert_eq!(t.method, model::tcp_tunnel::TunnelMethod::Connect);
    assert_eq!(t.hostname.literal(), None, "a formatted hostname");
    let names: Vec<_> = t.headers_to_add.iter().map(|h| &h.name[..]).collect();
    assert_eq!(names, [&b"baggage"[..], b"x-port"]);
    assert_eq!(
        t.headers_to_add[1].action,
        model::route::AppendAction::OverwriteIfExistsOrAdd
    );
    assert!(proxy(&s).reads_addresses());

    let post = |extra: &str| {
        ok(&config(
            &format!(
                "cluster: c\n          tunneling_config: {{hostname: h, use_post: true{extra}}}"
            ),
            STATIC,
        ))
    };
    let method = |s: &Snapshot| proxy(s).tunneling.as_ref().unwrap().method.clone();
    let root = model::tcp_tunnel::TunnelMethod::Post(bytes::Bytes::from_static(b"/"));
    assert_eq!(method(&post("")), root, "POST to / by default");
    let path = model::tcp_tunnel::TunnelMethod::Post(bytes::Bytes::from_static(b"/t"));
    assert_eq!(method(&post(", post_path: /t")), path);
}

#[test]
fn tcp_proxy_tunneling_config_errors() {
    let base = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
    let e = errors(&config(
        r#"cluster: c
          tunneling_config:
            hostname: "%NOPE%"
            post_path: /p
            headers_to_add: [{header: {key: host, value: x}}]"#,
        STATIC,
    ));
    let found: Vec<_> = e
        .iter()
        .map(|e| (e.path.strip_prefix(base).unwrap(), e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                ".tunneling_config.hostname",
                "unknown command %NOPE% at position 0"
            ),
            (
                ".tunneling_config.post_path",
                "post_path is set but use_post is not (a path only goes with POST)"
            ),
            (
                ".tunneling_config.headers_to_add[0].header.key",
                ":-prefixed or host headers may not be modified"
            ),
        ],
        "{e:#?}"
    );
    assert!(e.iter().all(|e| e.type_url.as_deref() == Some(TCP)));

    let e = errors(&config(
        "cluster: c\n          tunneling_config: {}",
        STATIC,
    ));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].message, "hostname is required");

    // The request ID extension writes dynamic metadata no format here reads yet.
    let e = errors(&config(
        "cluster: c\n          tunneling_config: {hostname: h, request_id_header: x-id}",
        STATIC,
    ));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].path.ends_with("tunneling_config.request_id_header"),
        "{e:#?}"
    );
}

#[test]
fn access_logs() {
    let s = ok(&config(
        r#"cluster: c
          access_log:
          - name: f
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /tmp/a.log
              log_format: {text_format_source: {inline_string: "%UPSTREAM_CLUSTER%\n"}}
          - name: old
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /tmp/b.log
              format: "%BYTES_SENT%\n"
          - name: out
            typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}
          - name: err
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
              log_format: {text_format: "%DURATION%"}
          - name: json
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                json_format: {code: "%RESPONSE_CODE%", up: {host: "%UPSTREAM_HOST%"}, n: 1, on: true}
                json_format_options: {sort_properties: true}
                omit_empty_values: true"#,
        STATIC,
    ));
    let logs = &proxy(&s).access_logs;
    let sinks: Vec<_> = logs.iter().map(|l| l.sink.clone()).collect();
    assert_eq!(
        sinks,
        [
            LogSink::Path("/tmp/a.log".into()),
            LogSink::Path("/tmp/b.log".into()),
            LogSink::Stdout,
            LogSink::Stderr,
            LogSink::Stdout
        ]
    );
    let json = |fields: Vec<(&str, JsonTemplate)>| {
        let fields: Vec<_> = fields.into_iter().map(|(k, v)| (k.into(), v)).collect();
        SubstitutionFormat::Json(JsonFormat::compile(&fields, true).unwrap())
    };
    assert_eq!(
        logs[4].format,
        json(vec![
            ("code", JsonTemplate::String("%RESPONSE_CODE%".into())),
            (
                "up",
                JsonTemplate::Object(vec![(
                    "host".into(),
                    JsonTemplate::String("%UPSTREAM_HOST%".into())
                )])
            ),
            ("n", JsonTemplate::Number(1.0)),
            ("on", JsonTemplate::Bool(true)),
        ])
    );
    let compiled = |sink, format| model::access_log::AccessLog::compile(sink, format).unwrap();
    let a = compiled(
        LogSink::Path("/tmp/a.log".into()),
        Some("%UPSTREAM_CLUSTER%\n"),
    );
    assert_eq!((&logs[0].sink, &logs[0].format), (&a.sink, &a.format));
    let stdout = compiled(LogSink::Stdout, None);
    assert_eq!(
        (&logs[2].sink, &logs[2].format),
        (&stdout.sink, &stdout.format)
    );
}

#[test]
fn access_log_errors() {
    let e = errors(&config(
        r#"cluster: c
          access_log:
          - name: f
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /tmp/a.log
              log_format: {text_format_source: {inline_string: "%NOPE%"}}
          - name: g
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              log_format: {json_format: {a: {b: "%NOPE%"}}}
          - name: h"#,
        STATIC,
    ));
    let base = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log";
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.path.strip_prefix(base).unwrap(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "[0].typed_config.log_format.text_format_source.inline_string",
                "unknown command %NOPE% at position 0"
            ),
            (
                "[1].typed_config.log_format.json_format.a.b",
                "unknown command %NOPE% at position 0"
            ),
            ("[1].typed_config.path", "path is required"),
            ("[2]", "typed_config is required"),
        ],
        "{e:#?}"
    );
}

#[test]
fn duplicate_names_and_addresses() {
    let one = config("cluster: c", STATIC);
    let listener = one
        .split("  listeners:\n")
        .nth(1)
        .unwrap()
        .split("  clusters:")
        .next()
        .unwrap();
    let yaml = one.replace(listener, &format!("{listener}{listener}"));
    let e = errors(&yaml);
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "static_resources.listeners[1].name",
                "duplicate listener name \"l\" (also listeners[0])"
            ),
            (
                "static_resources.listeners[1].address",
                "duplicate listener address 127.0.0.1:10000 (also listeners[0])"
            ),
        ]
    );
    let e = errors(&config("cluster: c", "[{name: c}, {name: c}, {}]"));
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "static_resources.clusters[1].name",
                "duplicate cluster name \"c\" (also clusters[0])"
            ),
            ("static_resources.clusters[2].name", "name is required"),
        ]
    );
}

#[test]
fn accepting_no_connection_per_event_is_an_error() {
    let yaml = config("cluster: c", STATIC).replace(
        "  - name: l\n",
        "  - name: l\n    max_connections_to_accept_per_socket_event: 0\n",
    );
    let e = errors(&yaml);
    assert_eq!(
        (e[0].path.as_str(), e[0].message.as_str()),
        (
            "static_resources.listeners[0].max_connections_to_accept_per_socket_event",
            "must be greater than 0"
        ),
        "{e:#?}"
    );
}

#[test]
fn listener_errors() {
    let e = errors(
        "static_resources:\n  listeners:\n  - name: a\n    address: {socket_address: {address: localhost, port_value: 1}}\n  - name: b\n    address: {pipe: {path: /x}}\n    filter_chains: [{filters: []}]\n",
    );
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "static_resources.listeners[1].address.pipe",
                "field is not supported yet"
            ),
            (
                "static_resources.listeners[0].address.socket_address.address",
                "\"localhost\" is not an IP address"
            ),
            (
                "static_resources.listeners[0].filter_chains",
                "at least one filter chain is required"
            ),
            (
                "static_resources.listeners[1].filter_chains[0].filters",
                "a filter chain needs a terminal envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager filter"
            ),
        ],
        "{e:#?}"
    );
}

#[test]
fn unsupported_filter_and_empty_default_chain() {
    let yaml = config("cluster: c", STATIC).replace(
        "    filter_chains:\n",
        "    default_filter_chain: {filters: []}\n    filter_chains:\n    - filter_chain_match: {server_names: [a]}\n      filters:\n      - name: envoy.filters.network.echo\n        typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}\n",
    );
    let e = errors(&yaml);
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config",
                "network filter envoy.filters.network.echo is not supported yet"
            ),
            (
                "static_resources.listeners[0].default_filter_chain.filters",
                "a filter chain needs a terminal envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager filter"
            ),
        ],
        "{e:#?}"
    );
}

#[test]
fn filter_chain_match_values_and_duplicates() {
    let chain = |m: &str| {
        format!("    - filter_chain_match: {m}\n      filters:\n      - name: t\n        typed_config: {{\"@type\": {TCP}, stat_prefix: s, cluster: c}}\n")
    };
    let yaml = config("cluster: c", STATIC).replace(
        "    filter_chains:\n",
        &format!(
            "    filter_chains:\n{}{}{}{}",
            chain("{server_names: [a.com, \"w*.b.com\"]}"),
            chain("{server_names: [c.com, a.com]}"),
            chain(
                "{prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 33}], source_ports: [0]}"
            ),
            chain("{destination_port: 70000}"),
        ),
    );
    let e = errors(&yaml);
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    let base = "static_resources.listeners[0].filter_chains";
    assert_eq!(
        got,
        [
            (
                &*format!("{base}[0].filter_chain_match.server_names[1]"),
                "\"w*.b.com\": partial wildcards are not supported (only a leading `*.`)"
            ),
            (
                &format!("{base}[2].filter_chain_match.source_ports[0]"),
                "0 is not a port (1-65535)"
            ),
            (
                &format!("{base}[2].filter_chain_match.prefix_ranges[0]"),
                "\"10.0.0.0\"/33 is not an IP address range"
            ),
            (
                &format!("{base}[3].filter_chain_match.destination_port"),
                "70000 is not a port (1-65535)"
            ),
        ],
        "{e:#?}"
    );
    // Valid values, but two chains both take SNI a.com (the filter_chains[0] default chain
    // of the fixture takes everything else).
    let yaml = config("cluster: c", STATIC).replace(
        "    filter_chains:\n",
        &format!(
            "    filter_chains:\n{}{}",
            chain("{server_names: [a.com, \"*.b.com\"]}"),
            chain("{server_names: [c.com, a.com]}"),
        ),
    );
    let e = errors(&yaml);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].path, format!("{base}[1].filter_chain_match"));
    assert!(e[0].message.contains("same matching rules"), "{e:#?}");
}

#[test]
fn cluster_options() {
    let s = ok(&config(
        "cluster: c",
        "[{name: c, connect_timeout: 0.25s, lb_policy: LEAST_REQUEST, least_request_lb_config: {choice_count: 3}, per_connection_buffer_limit_bytes: 100, load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}, load_balancing_weight: 5}]}]}}, {name: r, lb_policy: RANDOM}, {name: l, lb_policy: LEAST_REQUEST}]",
    ));
    let c = &s.clusters["c"];
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest { choice_count: 3 });
    assert_eq!(c.buffer_limit, 100);
    assert_eq!(c.endpoints[0].weight, 5);
    assert_eq!(s.clusters["r"].lb_policy, LbPolicy::Random);
    assert_eq!(
        s.clusters["l"].lb_policy,
        LbPolicy::LeastRequest { choice_count: 2 }
    );
    assert!(stat_names(|o| c.stats.read(o)).contains(&"cluster.c.upstream_cx_total".into()));
}

#[test]
fn consistent_hash_policies() {
    let s = ok(&config(
        "cluster: c",
        "[{name: c, lb_policy: RING_HASH, ring_hash_lb_config: {minimum_ring_size: 64, hash_function: MURMUR_HASH_2}, common_lb_config: {consistent_hashing_lb_config: {use_hostname_for_hashing: true}}, load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}, metadata: {filter_metadata: {envoy.lb: {hash_key: alpha}}}}]}]}}, {name: m, lb_policy: MAGLEV}, {name: r, lb_policy: RING_HASH}]",
    ));
    let c = &s.clusters["c"];
    assert_eq!(
        c.lb_policy,
        LbPolicy::RingHash(RingHash {
            minimum_ring_size: 64,
            maximum_ring_size: 8 << 20,
            hash_function: RingHashFunction::MurmurHash2,
            use_hostname: true,
        })
    );
    assert_eq!(c.endpoints[0].hash_key.as_deref(), Some("alpha"));
    assert_eq!(
        s.clusters["m"].lb_policy,
        LbPolicy::Maglev {
            table_size: 65537,
            use_hostname: false
        }
    );
    assert!(
        matches!(s.clusters["r"].lb_policy, LbPolicy::RingHash(r) if r.minimum_ring_size == 1024 && r.hash_function == RingHashFunction::XxHash)
    );
    let e = errors(&config(
        "cluster: c",
        "[{name: c, lb_policy: RING_HASH, ring_hash_lb_config: {minimum_ring_size: 0, maximum_ring_size: 9000000}, common_lb_config: {consistent_hashing_lb_config: {hash_balance_factor: 150}}}]",
    ));
    let got: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "static_resources.clusters[0].ring_hash_lb_config.minimum_ring_size",
            "static_resources.clusters[0].ring_hash_lb_config.maximum_ring_size",
            "static_resources.clusters[0].common_lb_config.consistent_hashing_lb_config.hash_balance_factor",
        ],
        "{e:#?}"
    );
}

#[test]
fn subset_configs() {
    use model::subset::{Fallback, SelectorFallback};
    let s = ok(&config(
        "cluster: c",
        "[{name: c, lb_subset_config: {fallback_policy: DEFAULT_SUBSET, default_subset: {stage: prod}, list_as_any: true, metadata_fallback_policy: FALLBACK_LIST, subset_selectors: [{keys: [version, stage], fallback_policy: KEYS_SUBSET, fallback_keys_subset: [version]}, {keys: [stage], fallback_policy: NO_FALLBACK}, {keys: [version], fallback_policy: ANY_ENDPOINT}]}, load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}, metadata: {filter_metadata: {envoy.lb: {version: v1, stage: prod}}}}]}]}}, {name: plain, lb_subset_config: {subset_selectors: []}}]",
    ));
    let subset = s.clusters["c"].subset.as_ref().unwrap();
    let settings = &subset.config;
    assert_eq!(settings.fallback, Fallback::DefaultSubset);
    assert!(settings.list_as_any && settings.fallback_list);
    let keys: Vec<Vec<&str>> = settings
        .selectors
        .iter()
        .map(|s| s.keys.iter().map(|k| &**k).collect())
        .collect();
    assert_eq!(
        keys,
        [vec!["stage", "version"], vec!["stage"], vec!["version"]]
    );
    let fallbacks: Vec<&SelectorFallback> =
        settings.selectors.iter().map(|s| &s.fallback).collect();
    // `stage` is the first key of the first selector: Envoy keeps no fallback of its own.
    assert_eq!(
        fallbacks,
        [
            &SelectorFallback::KeysSubset(["version".into()].into()),
            &SelectorFallback::NotDefined,
            &SelectorFallback::AnyEndpoint,
        ]
    );
    // One host: in subsets {stage, version}, {stage} and {version}; in the default subset.
    assert_eq!(subset.subsets.all().len(), 3);
    assert_eq!(&*subset.subsets.default, &[0]);
    // No selectors: not subset-balanced, as Envoy.
    assert!(s.clusters["plain"].subset.is_none());
    let e = errors(&config(
        "cluster: c",
        "[{name: c, lb_subset_config: {subset_selectors: [{keys: []}, {keys: [a], fallback_policy: KEYS_SUBSET}, {keys: [a, b], fallback_policy: KEYS_SUBSET, fallback_keys_subset: [c]}, {keys: [a], fallback_keys_subset: [a]}, {keys: [a, b], fallback_policy: KEYS_SUBSET, fallback_keys_subset: [b, a]}]}}, {name: o, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, lb_subset_config: {subset_selectors: [{keys: [a]}]}}]",
    ));
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    let at = |i: usize, field: &'static str| -> String {
        format!("static_resources.clusters[0].lb_subset_config.subset_selectors[{i}].{field}")
    };
    let want = [
        (
            at(0, "keys"),
            "a selector needs at least one key (Envoy skips a selector without keys)",
        ),
        (
            at(1, "fallback_keys_subset"),
            "fallback_keys_subset cannot be empty",
        ),
        (
            at(2, "fallback_keys_subset"),
            "fallback_keys_subset must be a subset of selector keys",
        ),
        (
            at(3, "fallback_keys_subset"),
            "fallback_keys_subset can be set only for KEYS_SUBSET fallback_policy",
        ),
        (
            at(4, "fallback_keys_subset"),
            "fallback_keys_subset cannot be equal to keys",
        ),
        (
            "static_resources.clusters[1].lb_subset_config".to_string(),
            "cluster: LB policy CLUSTER_PROVIDED cannot be combined with lb_subset_config",
        ),
    ];
    let want: Vec<(&str, &str)> = want.iter().map(|(p, m)| (p.as_str(), *m)).collect();
    for w in &want {
        assert!(got.contains(w), "{w:?} not in {got:#?}");
    }
}

const DNS: &str = "[{name: c, type: STRICT_DNS, dns_refresh_rate: 10s, dns_lookup_family: V4_ONLY, load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: backend.local, port_value: 80}}}, load_balancing_weight: 2}]}]}}]";

#[test]
fn dns_clusters() {
    let resolved: Arc<[Endpoint]> = Arc::from([Endpoint {
        weight: 2,
        ..Endpoint::new("10.1.1.1:80".parse().unwrap())
    }]);
    let dns = HashMap::from([("c".to_string(), resolved.clone())]);
    let s = run(&config("cluster: c", DNS), None, &dns).unwrap();
    let c = &s.clusters["c"];
    let target = c.dns.as_ref().unwrap();
    assert_eq!(
        target.hosts,
        [DnsHost {
            hostname: "backend.local".into(),
            port: 80,
            template: Endpoint {
                weight: 2,
                ..Endpoint::new(model::NO_ADDRESS)
            },
        }]
    );
    assert_eq!(target.refresh_rate, Duration::from_secs(10));
    assert!(!target.logical);
    assert_eq!(c.endpoints, resolved);
    // Not resolved yet: no endpoints.
    let s = ok(&config(
        "cluster: c",
        &DNS.replace("STRICT_DNS", "LOGICAL_DNS"),
    ));
    let c = &s.clusters["c"];
    assert!(c.endpoints.is_empty());
    assert!(c.dns.as_ref().unwrap().logical);
    assert_eq!(
        c.dns.as_ref().unwrap().refresh_rate,
        Duration::from_secs(10)
    );
}

#[test]
fn cluster_errors() {
    let e = errors(&config(
        "cluster: c",
        "[{name: c, type: EDS}, {name: d, lb_policy: MAGLEV, maglev_lb_config: {table_size: 100}, connect_timeout: 0s}, {name: s, load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: db.local, port_value: 1}}}, load_balancing_weight: 0}]}]}}, {name: g, type: LOGICAL_DNS, least_request_lb_config: {choice_count: 1}, lb_policy: LEAST_REQUEST, load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: a, port_value: 1}}}}, {endpoint: {address: {socket_address: {address: b, port_value: 1}}}}]}]}}, {name: h, health_checks: [{timeout: 1s}]}]",
    ));
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "static_resources.clusters[0].eds_cluster_config",
                "eds_cluster_config is required for an EDS cluster"
            ),
            ("static_resources.clusters[1].connect_timeout", "must be greater than zero"),
            ("static_resources.clusters[1].maglev_lb_config.table_size", "100 is not a prime of at most 5000011"),
            (
                "static_resources.clusters[2].load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight",
                "load_balancing_weight must be at least 1"
            ),
            (
                "static_resources.clusters[2].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
                "\"db.local\" is not an IP address"
            ),
            ("static_resources.clusters[3].least_request_lb_config.choice_count", "choice_count must be at least 2"),
            ("static_resources.clusters[3].load_assignment", "LOGICAL_DNS clusters must have exactly one endpoint"),
            ("static_resources.clusters[4].health_checks[0].interval", "is required"),
            ("static_resources.clusters[4].health_checks[0].unhealthy_threshold", "is required"),
            ("static_resources.clusters[4].health_checks[0].healthy_threshold", "is required"),
            (
                "static_resources.clusters[4].health_checks[0]",
                "a health checker (http_health_check, tcp_health_check or grpc_health_check) is required"
            ),
        ],
        "{e:#?}"
    );
}

#[test]
fn unchanged_parts_are_shared_with_the_previous_generation() {
    let yaml = config("cluster: c", STATIC);
    let first = ok(&yaml);
    let same = run(&yaml, Some(&first), &HashMap::new()).unwrap();
    assert!(Arc::ptr_eq(&first.listeners[0], &same.listeners[0]));
    assert!(Arc::ptr_eq(&first.clusters["c"], &same.clusters["c"]));

    let changed = run(
        &yaml.replace("10.0.0.1", "10.0.0.2"),
        Some(&first),
        &HashMap::new(),
    )
    .unwrap();
    assert!(Arc::ptr_eq(&first.listeners[0], &changed.listeners[0]));
    assert!(!Arc::ptr_eq(&first.clusters["c"], &changed.clusters["c"]));

    let changed = run(
        &yaml.replace("stat_prefix: tcp", "stat_prefix: other"),
        Some(&first),
        &HashMap::new(),
    )
    .unwrap();
    assert!(!Arc::ptr_eq(&first.listeners[0], &changed.listeners[0]));
    assert!(Arc::ptr_eq(&first.clusters["c"], &changed.clusters["c"]));

    // A DNS cluster is kept until its resolved endpoints change.
    let dns_yaml = config("cluster: c", DNS);
    let first = ok(&dns_yaml);
    let same = run(&dns_yaml, Some(&first), &HashMap::new()).unwrap();
    assert!(Arc::ptr_eq(&first.clusters["c"], &same.clusters["c"]));
    let resolved = HashMap::from([(
        "c".to_string(),
        Arc::from([Endpoint {
            weight: 2,
            ..Endpoint::new("10.1.1.1:80".parse().unwrap())
        }]),
    )]);
    let moved: Snapshot = run(&dns_yaml, Some(&first), &resolved).unwrap();
    let moved: &Cluster = &moved.clusters["c"];
    assert!(!std::ptr::eq(moved, &*first.clusters["c"]));
    assert_eq!(moved.config_hash, first.clusters["c"].config_hash);
}

#[test]
fn bootstrap_level_surface() {
    assert_eq!(
        validate(&bootstrap(
            "node: {id: n, metadata: {x: y}}\nadmin: {address: {socket_address: {address: 0.0.0.0, port_value: 9901}}}\nlayered_runtime: {}\n"
        )),
        []
    );
    let e = validate(&bootstrap(
        "admin: {address: {socket_address: {address: any, port_value: 9901}}}\ndynamic_resources: {ads_config: {api_type: GRPC}}\ncluster_manager: {local_cluster_name: x}\ntracing: {http: {name: z, typed_config: {'@type': type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig}}}\n",
    ));
    let got: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "dynamic_resources.ads_config.grpc_services",
            "tracing.http.typed_config",
            "cluster_manager.local_cluster_name",
            "admin.address.socket_address.address"
        ],
        "{e:#?}"
    );
}

#[test]
fn interception_fields() {
    let yaml = config("cluster: c", STATIC).replace(
        "  - name: l\n",
        "  - name: l\n    bind_to_port: false\n    use_original_dst: true\n    listener_filters: [{name: envoy.filters.listener.original_dst, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}]\n",
    );
    let s = ok(&yaml);
    let l = &s.listeners[0];
    assert!(!l.bind_to_port && l.use_original_dst);
    assert!(matches!(
        l.listener_filters.filters[0].kind,
        model::listener_filters::ListenerFilterKind::OriginalDst
    ));
    // Defaults: bound, no hand-over (a default value is never refused).
    let s = ok(&config("cluster: c", STATIC)
        .replace("  - name: l\n", "  - name: l\n    bind_to_port: true\n"));
    assert!(s.listeners[0].bind_to_port && !s.listeners[0].use_original_dst);
    assert!(s.listeners[0].listener_filters.filters.is_empty());
    // `use_original_dst` alone implies the filter, as in Envoy (Istio's virtualOutbound).
    let s = ok(&config("cluster: c", STATIC)
        .replace("  - name: l\n", "  - name: l\n    use_original_dst: true\n"));
    let filters = &s.listeners[0].listener_filters.filters;
    assert_eq!(filters.len(), 1);
    assert!(matches!(
        filters[0].kind,
        model::listener_filters::ListenerFilterKind::OriginalDst
    ));
}

#[test]
fn original_dst_clusters() {
    let clusters = "[{name: c, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, cleanup_interval: 30s, original_dst_lb_config: {use_http_header: true, upstream_port_override: 8080}, upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}}}]";
    let s = ok(&config("cluster: c", clusters));
    let c = &s.clusters["c"];
    assert_eq!(c.lb_policy, LbPolicy::ClusterProvided);
    assert!(c.endpoints.is_empty());
    assert_eq!(c.source_address, Some("127.0.0.6:0".parse().unwrap()));
    assert_eq!(
        c.original_dst,
        Some(model::OriginalDst {
            header: Some("x-envoy-original-dst-host".into()),
            port_override: Some(8080),
            cleanup_interval: Duration::from_secs(30),
        })
    );
    let e = errors(&config(
        "cluster: c",
        "[{name: c, type: ORIGINAL_DST}, {name: d, lb_policy: CLUSTER_PROVIDED}, {name: e, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, load_assignment: {endpoints: []}}, {name: f, upstream_bind_config: {source_address: {address: localhost}}}]",
    ));
    let got: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "static_resources.clusters[0].lb_policy",
            "static_resources.clusters[1].lb_policy",
            "static_resources.clusters[2].load_assignment",
            "static_resources.clusters[3].upstream_bind_config.source_address.address",
        ],
        "{e:#?}"
    );
}

#[test]
fn legacy_fields_istio_1_9_writes() {
    let yaml = config("cluster: c", STATIC)
        .replace(
            "    filter_chains:",
            "    deprecated_v1: {bind_to_port: false}\n    filter_chains:",
        )
        .replace(
            "[{name: c,",
            "[{name: c, protocol_selection: USE_DOWNSTREAM_PROTOCOL,",
        );
    let snapshot = ok(&yaml);
    assert!(!snapshot.listeners[0].bind_to_port);
    assert_eq!(
        snapshot.clusters["c"].http.protocol,
        model::UpstreamProtocol::Downstream
    );
    let binding = config("cluster: c", STATIC).replace(
        "    filter_chains:",
        "    deprecated_v1: {bind_to_port: true}\n    filter_chains:",
    );
    assert!(ok(&binding).listeners[0].bind_to_port);
}

#[test]
fn a_plaintext_socket_named_without_a_config_is_istio_1_9s_legacy_form() {
    let socket = |name: &str| {
        format!(
            "[{{name: c, transport_socket: {{name: {name}}}, load_assignment: {{endpoints: \
             [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 10.0.0.1, \
             port_value: 80}}}}}}}}]}}]}}}}]"
        )
    };
    let snapshot = ok(&config(
        "cluster: c",
        &socket("envoy.transport_sockets.raw_buffer"),
    ));
    assert!(snapshot.clusters["c"].tls.is_none());
    let e = errors(&config(
        "cluster: c",
        &socket("envoy.transport_sockets.tls"),
    ));
    assert_eq!(e[0].message, "typed_config is required", "{e:#?}");
}

/// A tcp_proxy chain on an internal listener `inner` (with `extra` fields), reached through
/// cluster `c`'s internal endpoint (with `socket` as its transport socket).
fn internal_config(extra: &str, socket: &str) -> String {
    format!(
        r#"
bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config: {{"@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener, buffer_size_kb: 64}}
static_resources:
  listeners:
  - name: inner
    internal_listener: {{}}
    {extra}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": {TCP}, stat_prefix: inner, cluster: c}}
  clusters:
  - name: c
    load_assignment: {{endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{envoy_internal_address: {{server_listener_name: inner, endpoint_id: e1}}}}}}, metadata: {{filter_metadata: {{tunnel: {{destination: "10.0.0.1:80"}}}}}}}}]}}]}}
    {socket}
"#
    )
}

const INTERNAL_UPSTREAM: &str = "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport";

#[test]
fn internal_listeners_and_endpoints() {
    let passthrough = format!(
        "transport_socket: {{name: iu, typed_config: {{'@type': {INTERNAL_UPSTREAM}, passthrough_metadata: [{{kind: {{host: {{}}}}, name: tunnel}}, {{kind: {{cluster: {{}}}}, name: istio}}]}}}}"
    );
    let listener_filter = "listener_filters: [{name: set_dst_address, typed_config: {'@type': type.googleapis.com/istio.set_internal_dst_address.v1.Config}}]";
    let s = ok(&internal_config(listener_filter, &passthrough));
    let inner = &s.listeners[0];
    assert!(inner.internal && !inner.bind_to_port);
    assert_eq!(inner.address, model::NO_ADDRESS);
    assert_eq!(s.internal_buffer, 64 * 1024);
    let c = &s.clusters["c"];
    let endpoint = c.endpoints[0].internal.as_ref().unwrap();
    assert_eq!(
        (&*endpoint.listener, &*endpoint.endpoint_id),
        ("inner", "e1")
    );
    assert_eq!(
        endpoint.metadata.str("tunnel", &["destination"]),
        Some("10.0.0.1:80")
    );
    assert!(c.tls.is_none());
    let sources: Vec<_> = c
        .passthrough_metadata
        .iter()
        .map(|p| (p.source, p.namespace.as_str()))
        .collect();
    assert_eq!(
        sources,
        [
            (model::MetadataSource::Host, "tunnel"),
            (model::MetadataSource::Cluster, "istio")
        ]
    );
}

#[test]
fn internal_listener_errors() {
    let tls = format!(
        "transport_socket: {{name: iu, typed_config: {{'@type': {INTERNAL_UPSTREAM}, transport_socket: {{name: tls, typed_config: {{'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext}}}}, passthrough_metadata: [{{kind: {{request: {{}}}}, name: x}}]}}}}"
    );
    let e = errors(&internal_config(
        "address: {socket_address: {address: 127.0.0.1, port_value: 1}}\n    use_original_dst: true",
        &tls,
    ));
    let got: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "static_resources.clusters[0].transport_socket.typed_config.transport_socket",
            "static_resources.clusters[0].transport_socket.typed_config.passthrough_metadata[0].kind",
            "static_resources.listeners[0].address",
            "static_resources.listeners[0].use_original_dst",
        ],
        "{e:#?}"
    );
    // Only an endpoint takes an internal address; only an internal listener's connections
    // have an internal destination.
    let yaml = config("cluster: c", STATIC)
        .replace(
            "    filter_chains:",
            "    listener_filters: [{name: s, typed_config: {'@type': type.googleapis.com/istio.set_internal_dst_address.v1.Config}}]\n    filter_chains:",
        )
        .replace(
            "[{name: c,",
            "[{name: d, type: STRICT_DNS, load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {envoy_internal_address: {server_listener_name: x}}}}]}]}}, {name: c,",
        );
    let e = errors(&yaml);
    let got: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.envoy_internal_address",
            "static_resources.listeners[0].listener_filters[0].typed_config",
        ],
        "{e:#?}"
    );
}

#[test]
fn slow_start_and_zone_aware_settings() {
    let s = ok(&config(
        "cluster: c",
        "[{name: c, lb_policy: LEAST_REQUEST, least_request_lb_config: {slow_start_config: {slow_start_window: 2s, aggression: {default_value: 2, runtime_key: k}, min_weight_percent: {value: 25}}}, common_lb_config: {zone_aware_lb_config: {routing_enabled: {value: 49.6}, min_cluster_size: 3, fail_traffic_on_panic: true}}, load_assignment: {endpoints: [{locality: {region: r, zone: z}, lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}}]}]}}, {name: r, round_robin_lb_config: {slow_start_config: {}}}]",
    ));
    let c = &s.clusters["c"];
    assert_eq!(
        c.slow_start,
        Some(model::balancing::SlowStart {
            window: Duration::from_secs(2),
            aggression: 2.0,
            min_weight: 0.25,
        })
    );
    assert_eq!(
        c.zone_aware,
        model::balancing::ZoneAware {
            routing_enabled: 50,
            min_cluster_size: 3,
            fail_traffic_on_panic: true,
        }
    );
    let locality = c.endpoints[0].locality_name.as_deref().unwrap();
    assert_eq!(
        (locality.region.as_str(), locality.zone.as_str()),
        ("r", "z")
    );
    // No window: slow start is off, as in Envoy.
    assert_eq!(s.clusters["r"].slow_start, None);
    assert_eq!(s.clusters["r"].zone_aware, Default::default());
    assert_eq!(s.local_zone, None);
}

#[test]
fn slow_start_and_local_cluster_errors() {
    let e = errors(&(config(
        "cluster: c",
        "[{name: c, lb_policy: RANDOM, round_robin_lb_config: {slow_start_config: {slow_start_window: 1s}}}, {name: d, round_robin_lb_config: {slow_start_config: {slow_start_window: 1s, min_weight_percent: {value: 120}}}}]",
    ) + "cluster_manager: {local_cluster_name: missing}\n"));
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "cluster_manager.local_cluster_name",
                "local cluster 'missing' must be defined"
            ),
            (
                "static_resources.clusters[0].round_robin_lb_config.slow_start_config",
                "round_robin_lb_config is only read by its own lb_policy, not Random"
            ),
            (
                "static_resources.clusters[1].round_robin_lb_config.slow_start_config.min_weight_percent",
                "120 is not a percentage in [0, 100]"
            ),
        ],
        "{e:#?}"
    );
    let e = errors(&(config(
        "cluster: c",
        "[{name: c, load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}}]}, {priority: 1, lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 80}}}}]}]}}]",
    ) + "cluster_manager: {local_cluster_name: c}\n"));
    assert_eq!(
        (e[0].path.as_str(), e[0].message.as_str()),
        (
            "static_resources.clusters[0].load_assignment.endpoints[1].priority",
            "Unexpected non-zero priority for local cluster 'c'."
        )
    );
    let s = ok(&(config("cluster: c", "[{name: c}]")
        + "cluster_manager: {local_cluster_name: c}\nnode: {id: n, locality: {zone: z1}}\n"));
    let zone = s.local_zone.as_deref().unwrap();
    assert_eq!(
        (zone.cluster.as_str(), zone.locality.zone.as_str()),
        ("c", "z1")
    );
}
