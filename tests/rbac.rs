//! Tests: `envoy.filters.http.rbac` and `envoy.filters.network.rbac` as Istio's
//! AuthorizationPolicy uses them — requests allowed and denied by method, path, header,
//! source IP and peer identity (a mutual-TLS client's SPIFFE URI SAN), DENY rules before ALLOW
//! rules, shadow rules only counted, a route's `RBACPerRoute` replacing or lifting the rules,
//! and the network filter closing a denied TCP connection.
//!
//! Each comparison runs one bootstrap on Envoy 1.40, then on shardproxy, and asserts the same
//! statuses, bodies, response code details (access log) and stats (tests/common/tls.rs
//! `on_both`; with `CI=true` a missing Envoy fails the test). Envoy upstream has no
//! `istio_authn`, so the `filter_state` principal Istio writes (`io.istio.peer_principal`) is
//! tested on shardproxy alone, with the outcome the `authenticated` principal gives on both.
//!
//! Envoy 1.40 behaviour these tests pin: a denied request gets 403 `RBAC: access denied`,
//! response code details `rbac_access_denied_matched_policy[<policy>]` (`none` when no ALLOW
//! policy matched) and no response flag; stats are `http.<prefix>.rbac.[<rules prefix>.]allowed`
//! and `http.<prefix>.rbac.[<shadow prefix>.]shadow_denied` (the rules' prefix does not apply
//! to shadow stats); the network filter's are `<stat_prefix>rbac.*`.
mod common;

use std::{
    io::{Read, Write},
    path::Path,
};

use common::{http::*, http_e2e::file_access_log, tls::*, *};
use serde_json::{json, Value};

const RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const RBAC_PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";
const NETWORK_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

fn rbac_filter(name: &str, config: Value) -> Value {
    let mut typed = json!({"@type": RBAC});
    merge(&mut typed, config);
    json!({"name": name, "typed_config": typed})
}

fn network_rbac(config: Value) -> Value {
    let mut typed = json!({"@type": NETWORK_RBAC});
    merge(&mut typed, config);
    json!({"name": "envoy.filters.network.rbac", "typed_config": typed})
}

fn method(m: &str) -> Value {
    json!({"header": {"name": ":method", "exact_match": m}})
}

fn path_prefix(p: &str) -> Value {
    json!({"url_path": {"path": {"prefix": p}}})
}

fn principal_name(spiffe: &str) -> Value {
    json!({"authenticated": {"principal_name": {"exact": spiffe}}})
}

/// A file access log with the status, flags and response code details.
fn access_log(path: &Path) -> Value {
    let format =
        "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n";
    file_access_log(path, Some(format))
}

/// One plaintext request with `headers` lines: `(status, body)`.
fn request(port: u16, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut s = connect(port);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let r = read_http_response(s).unwrap();
    let body = if r.status == 200 {
        String::new()
    } else {
        r.body
    };
    (r.status, body)
}

/// The rules of the plaintext listener: a DENY filter, then an ALLOW filter; a shadow ALLOW
/// set counted with Istio's dry-run prefix.
fn plain_filters() -> Vec<Value> {
    vec![
        rbac_filter(
            "deny",
            json!({
                "rules": {"action": "DENY", "policies": {
                    "ns[default]-policy[deny admin]-rule[0]": {
                        "permissions": [path_prefix("/admin")],
                        "principals": [{"any": true}],
                    },
                }},
                "shadow_rules": {"policies": {"dry run": {
                    "permissions": [method("GET")],
                    "principals": [{"any": true}],
                }}},
                "shadow_rules_stat_prefix": "istio_dry_run_allow_",
            }),
        ),
        rbac_filter(
            "allow",
            json!({
                "rules_stat_prefix": "allow_",
                "rules": {"policies": {
                    "get info": {
                        "permissions": [{"and_rules": {"rules": [method("GET"), path_prefix("/info")]}}],
                        "principals": [{"any": true}],
                    },
                    "post data": {
                        "permissions": [{"and_rules": {"rules": [
                            {"header": {"name": ":method", "string_match": {"exact": "POST"}}},
                            {"url_path": {"path": {"exact": "/data"}}},
                        ]}}],
                        "principals": [{"remote_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}}],
                    },
                    "from ten": {
                        "permissions": [path_prefix("/ten")],
                        "principals": [{"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}],
                    },
                    "prod header": {
                        "permissions": [{"header": {"name": "x-env", "string_match": {"exact": "prod"}}}],
                        "principals": [{"not_id": {"source_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}}],
                    },
                }},
            }),
        ),
    ]
}

/// Routes: `/open` lifts the ALLOW filter's rules (an empty `RBACPerRoute`), `/override`
/// replaces them with POST-only; everything else goes to `app`.
fn plain_routes() -> Value {
    let route = |prefix: &str, per_filter: Value| {
        json!({"match": {"prefix": prefix}, "route": {"cluster": "app"},
               "typed_per_filter_config": per_filter})
    };
    json!({"name": "local", "virtual_hosts": [{
        "name": "all", "domains": ["*"],
        "routes": [
            route("/open", json!({"allow": {"@type": RBAC_PER_ROUTE}})),
            route("/override", json!({"allow": {"@type": RBAC_PER_ROUTE, "rbac": {
                "rules": {"policies": {"post only": {
                    "permissions": [method("POST")],
                    "principals": [{"any": true}],
                }}},
            }}})),
            route("/", json!({})),
        ],
    }]})
}

/// An mTLS HTTP listener allowing only `CLIENT_SPIFFE` (network filters `before` the
/// connection manager; `principal` is the ALLOW policy's principal).
fn mtls_listener(name: &str, port: u16, before: Vec<Value>, principal: Value) -> Value {
    let authz = rbac_filter(
        "authz",
        json!({"rules": {"policies": {"sleep only": {
            "permissions": [{"any": true}],
            "principals": [principal],
        }}}}),
    );
    tls_listener(name, port, true, before, vec![authz])
}

/// A TLS HTTP listener (client certificates required or optional) running `filters`
/// (network filters `before` the connection manager) in front of `app`.
fn tls_listener(
    name: &str,
    port: u16,
    require_client_certificate: bool,
    before: Vec<Value>,
    filters: Vec<Value>,
) -> Value {
    let pki = pki();
    let tls = downstream_tls(
        common_tls(
            vec![tls_certificate(&pki.upstream)],
            json!({"validation_context": validation(&pki.ca, json!({}))}),
        ),
        json!({"require_client_certificate": require_client_certificate}),
    );
    let manager = hcm_filter(hcm(
        name,
        catch_all_routes("app", json!({})),
        filters,
        json!({}),
    ));
    let mut chain = before;
    chain.push(manager);
    listener_with(
        name,
        port,
        vec![],
        vec![filter_chain(Value::Null, chain, Some(tls))],
    )
}

/// Allowed and denied requests by method, path, header and source IP; a DENY filter before an
/// ALLOW one; shadow rules counted; a route lifting and replacing the rules; mutual-TLS
/// clients allowed or denied by the SPIFFE id in their certificate (`authenticated`).
#[test]
fn http_rbac_allows_and_denies_as_envoy() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let logs = TempDir::new("rbac-http-logs");
    let log = logs.file("access.log");
    let manager = hcm(
        "plain",
        plain_routes(),
        plain_filters(),
        json!({"access_log": access_log(&log)}),
    );
    let b = bootstrap(
        0,
        vec![
            http_listener("plain", 0, manager),
            mtls_listener("mtls", 0, vec![], principal_name(CLIENT_SPIFFE)),
        ],
        vec![cluster("app", &[(app.port("app"), 1)], json!({}))],
    );
    let cases: &[(&str, &str, &[&str])] = &[
        ("GET", "/info/a?x=1", &[]),
        ("GET", "/data", &[]),
        ("POST", "/data", &[]),
        ("POST", "/data?q", &[]),
        ("GET", "/ten", &[]),
        ("GET", "/admin/users", &[]),
        ("POST", "/admin", &["x-env: prod"]),
        ("GET", "/other", &["x-env: prod"]),
        ("GET", "/other", &["x-env: dev"]),
        ("GET", "/open/x", &[]),
        ("GET", "/override", &[]),
        ("POST", "/override", &[]),
    ];
    on_both("rbac-http", &b, |proxy| {
        let (plain, mtls) = (proxy.port("plain"), proxy.port("mtls"));
        let mut seen: Vec<String> = cases
            .iter()
            .map(|(m, p, h)| format!("{m} {p} {h:?}: {:?}", request(plain, m, p, h)))
            .collect();
        seen.extend(take_log_lines(&log, cases.len()));
        for (label, cert) in [("client", &pki.client), ("other", &pki.client_other)] {
            let r = TlsClient::new(mtls)
                .sni("localhost")
                .ca(&pki.ca)
                .cert(cert)
                .path("/x")
                .run();
            let body = if r.status() == Some(200) {
                ""
            } else {
                r.body()
            };
            seen.push(format!("mtls {label}: {:?} {body}", r.status()));
        }
        let names = [
            "plain.rbac.allowed",
            "plain.rbac.denied",
            "plain.rbac.allow_.allowed",
            "plain.rbac.allow_.denied",
            "plain.rbac.istio_dry_run_allow_.shadow_allowed",
            "plain.rbac.istio_dry_run_allow_.shadow_denied",
            "plain.rbac.shadow_allowed",
            "mtls.rbac.allowed",
            "mtls.rbac.denied",
        ];
        let stats = settled_stats(proxy, "http.", &names, |s| s["mtls.rbac.denied"] == 1);
        seen.push(format!("{stats:?}"));
        seen
    });
}

/// Dynamic metadata between filters, as Istio's CUSTOM action chains them: a shadow-only
/// filter writes its verdict (`<shadow prefix>shadow_effective_policy_id` and
/// `..._shadow_engine_result` under `envoy.filters.http.rbac`), and a later filter's
/// `metadata` principals read it (string prefix, `present_match`, `invert`); the access log
/// prints it with `%DYNAMIC_METADATA%`.
#[test]
fn http_rbac_shadow_verdict_feeds_later_filters_as_envoy() {
    let app = EchoUpstreams::start(&["app"], None);
    let metadata = |key: &str, value: Value, invert: bool| {
        json!({"metadata": {
            "filter": "envoy.filters.http.rbac",
            "path": [{"key": key}],
            "value": value,
            "invert": invert,
        }})
    };
    let filters = vec![
        rbac_filter(
            "custom",
            json!({
                "shadow_rules": {"action": "DENY", "policies": {"istio-ext-authz-ns[default]-policy[ext]-rule[0]": {
                    "permissions": [path_prefix("/guarded")],
                    "principals": [{"any": true}],
                }}},
                "shadow_rules_stat_prefix": "istio_ext_authz_",
            }),
        ),
        rbac_filter(
            "reader",
            json!({"rules": {"action": "DENY", "policies": {
                "a-guarded": {
                    "permissions": [{"any": true}],
                    "principals": [metadata(
                        "istio_ext_authz_shadow_effective_policy_id",
                        json!({"string_match": {"prefix": "istio-ext-authz"}}),
                        false,
                    )],
                },
                "b-unjudged": {
                    "permissions": [path_prefix("/unjudged")],
                    "principals": [metadata(
                        "istio_ext_authz_shadow_engine_result",
                        json!({"present_match": true}),
                        true,
                    )],
                },
                "c-allowed-marker": {
                    "permissions": [path_prefix("/marker")],
                    "principals": [metadata(
                        "istio_ext_authz_shadow_engine_result",
                        json!({"string_match": {"exact": "allowed"}}),
                        false,
                    )],
                },
            }}}),
        ),
    ];
    let logs = TempDir::new("rbac-metadata-logs");
    let log = logs.file("access.log");
    let format = "%REQ(:PATH)% \
                  %DYNAMIC_METADATA(envoy.filters.http.rbac:istio_ext_authz_shadow_effective_policy_id)% \
                  %DYNAMIC_METADATA(envoy.filters.http.rbac:istio_ext_authz_shadow_engine_result)% \
                  %DYNAMIC_METADATA(envoy.filters.http.rbac:missing)% %DYNAMIC_METADATA(nothing)%\n";
    let access_log = json!({"access_log": file_access_log(&log, Some(format))});
    let manager = hcm(
        "meta",
        catch_all_routes("app", json!({})),
        filters,
        access_log,
    );
    let b = bootstrap(
        0,
        vec![http_listener("meta", 0, manager)],
        vec![cluster("app", &[(app.port("app"), 1)], json!({}))],
    );
    let paths = ["/guarded/x", "/open", "/unjudged", "/marker"];
    on_both("rbac-metadata", &b, |proxy| {
        let port = proxy.port("meta");
        let mut seen: Vec<_> = paths
            .iter()
            .map(|path| format!("{path}: {:?}", request(port, "GET", path, &[])))
            .collect();
        seen.extend(take_log_lines(&log, paths.len()));
        seen
    });
}

/// Istio's principal: `istio_authn` records the peer's SPIFFE id as the filter state
/// `io.istio.peer_principal`, which the `filter_state` principal reads (exact and regex, as
/// Istio writes them), with the same outcome as `authenticated` on Envoy above. A JWT claim
/// principal (`metadata` from `istio_authn`, which only Istio's JWT filter sets) never
/// matches; negated, it always does. shardproxy only: Envoy upstream lacks `istio_authn`.
#[test]
fn filter_state_principal_reads_istio_authn() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let authn = json!({
        "name": "istio_authn",
        "typed_config": {"@type": "type.googleapis.com/io.istio.network.authn.Config"},
    });
    let peer =
        |m: Value| json!({"filter_state": {"key": "io.istio.peer_principal", "string_match": m}});
    let jwt = json!({"metadata": {
        "filter": "istio_authn",
        "path": [{"key": "request.auth.claims"}, {"key": "iss"}],
        "value": {"list_match": {"one_of": {"string_match": {"exact": "https://accounts.google.com"}}}},
    }});
    let principals = [
        ("exact", peer(json!({"exact": CLIENT_SPIFFE}))),
        (
            "regex",
            peer(json!({"safe_regex": {"regex": ".*/sa/client"}})),
        ),
        (
            "with_jwt",
            json!({"and_ids": {"ids": [peer(json!({"exact": CLIENT_SPIFFE})), jwt.clone()]}}),
        ),
        (
            "without_jwt",
            json!({"and_ids": {"ids": [peer(json!({"exact": CLIENT_SPIFFE})), {"not_id": jwt}]}}),
        ),
    ];
    let mut listeners = Vec::new();
    let mut labels = Vec::new();
    for (label, principal) in principals {
        listeners.push(mtls_listener(label, 0, vec![authn.clone()], principal));
        labels.push(label);
    }
    let b = bootstrap(
        0,
        listeners,
        vec![cluster("app", &[(app.port("app"), 1)], json!({}))],
    );
    let proxy = HttpProxy::start(Kind::Shardproxy, "rbac-filter-state", &b);
    let mut seen = Vec::new();
    for label in labels {
        let port = proxy.port(label);
        for (who, cert) in [("client", &pki.client), ("other", &pki.client_other)] {
            let r = TlsClient::new(port)
                .sni("localhost")
                .ca(&pki.ca)
                .cert(cert)
                .path("/x")
                .run();
            seen.push(format!("{label} {who}: {:?}", r.status()));
        }
    }
    assert_eq!(
        seen,
        [
            "exact client: Some(200)",
            "exact other: Some(403)",
            "regex client: Some(200)",
            "regex other: Some(403)",
            "with_jwt client: Some(403)",
            "with_jwt other: Some(403)",
            "without_jwt client: Some(200)",
            "without_jwt other: Some(403)",
        ]
    );
    drop(proxy);
}

/// Istio ≤ 1.9's `istio_authn` HTTP filter (`authn.v2alpha1`, carried in a TypedStruct as
/// istiod 1.9 sent it): `STRICT` answers a peer without a certificate `401`, `PERMISSIVE`
/// lets it through unnamed; a certificate's trust domain must be this proxy's (its own
/// certificate's SPIFFE id's), or one `allowed_trust_domains` lists, in both modes; the peer
/// it names is `istio_authn` dynamic metadata, which an RBAC `metadata` principal reads.
/// shardproxy only: Envoy upstream lacks Istio's filter.
#[test]
fn v2alpha1_istio_authn_names_the_peer_for_rbac() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let authn = |mode: &str, trust: Value| {
        let mut config = json!({"policy": {"peers": [{"mtls": {"mode": mode}}]}});
        merge(&mut config, trust);
        json!({"name": "istio_authn", "typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/istio.envoy.config.filter.http.authn.v2alpha1.FilterConfig",
            "value": config,
        }})
    };
    let source_principal = json!({"metadata": {
        "filter": "istio_authn",
        "path": [{"key": "source.principal"}],
        "value": {"string_match": {"exact": CLIENT_SPIFFE.trim_start_matches("spiffe://")}},
    }});
    let client_only = rbac_filter(
        "authz",
        json!({"rules": {"policies": {"client": {
            "permissions": [{"any": true}],
            "principals": [source_principal],
        }}}}),
    );
    let cases = [
        (
            "strict-skip",
            authn("STRICT", json!({"skip_validate_trust_domain": true})),
        ),
        (
            "permissive-skip",
            authn("PERMISSIVE", json!({"skip_validate_trust_domain": true})),
        ),
        (
            "strict-allowed",
            authn(
                "STRICT",
                json!({"allowed_trust_domains": ["cluster.local"]}),
            ),
        ),
        ("strict-local", authn("STRICT", json!({}))),
        (
            "permissive-elsewhere",
            authn(
                "PERMISSIVE",
                json!({"allowed_trust_domains": ["other.domain"]}),
            ),
        ),
    ];
    let mut listeners = Vec::new();
    let mut labels = Vec::new();
    for (label, filter) in cases {
        let filters = vec![filter, client_only.clone()];
        listeners.push(tls_listener(label, 0, false, vec![], filters));
        labels.push(label);
    }
    let b = bootstrap(
        0,
        listeners,
        vec![cluster("app", &[(app.port("app"), 1)], json!({}))],
    );
    let proxy = HttpProxy::start(Kind::Shardproxy, "rbac-v2alpha1-authn", &b);
    let mut seen = Vec::new();
    for label in labels {
        let port = proxy.port(label);
        for (who, cert) in [
            ("client", Some(&pki.client)),
            ("other", Some(&pki.client_other)),
            ("none", None),
        ] {
            let mut client = TlsClient::new(port).sni("localhost").ca(&pki.ca).path("/x");
            if let Some(cert) = cert {
                client = client.cert(cert);
            }
            let r = client.run();
            let body = if r.status() == Some(401) {
                r.body()
            } else {
                ""
            };
            seen.push(format!("{label} {who}: {:?} {body}", r.status()));
        }
    }
    assert_eq!(
        seen,
        [
            "strict-skip client: Some(200) ",
            "strict-skip other: Some(403) ",
            "strict-skip none: Some(401) Peer authentication failed.",
            "permissive-skip client: Some(200) ",
            "permissive-skip other: Some(403) ",
            "permissive-skip none: Some(403) ",
            "strict-allowed client: Some(200) ",
            "strict-allowed other: Some(403) ",
            "strict-allowed none: Some(401) Peer authentication failed.",
            "strict-local client: Some(200) ",
            "strict-local other: Some(403) ",
            "strict-local none: Some(401) Peer authentication failed.",
            "permissive-elsewhere client: Some(401) Peer authentication failed.",
            "permissive-elsewhere other: Some(401) Peer authentication failed.",
            "permissive-elsewhere none: Some(403) ",
        ]
    );
    drop(proxy);
}

/// The network filter: Istio's `rules: {}` (ALLOW with no policy) closes every connection
/// after its first bytes, counted as `tcp.rbac.denied`, with a shadow DENY set counted under
/// `tcp.rbac.istio_dry_run_allow_`; a destination-port policy lets a connection through. The
/// tcp_proxy access log names the denial in `%CONNECTION_TERMINATION_DETAILS%`.
#[test]
fn network_rbac_closes_denied_connections_as_envoy() {
    let app = EchoUpstreams::start(&["app"], None);
    // A fixed port: the `open` policy matches on it (`destination_port_range`).
    let open = free_port();
    let logs = TempDir::new("rbac-network-logs");
    let log = logs.file("access.log");
    let format = "%CONNECTION_TERMINATION_DETAILS%\n";
    let tcp_log = json!({"access_log": file_access_log(&log, Some(format))});
    let tcp = |name: &str, port: u16, rbac: Value| {
        json!({
            "name": name,
            "address": socket_address(port),
            "filter_chains": [{"filters": [
                network_rbac(rbac),
                {"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp_proxy(name, "app", tcp_log.clone())},
            ]}],
        })
    };
    let b = bootstrap(
        0,
        vec![
            tcp(
                "closed",
                0,
                json!({
                    "stat_prefix": "tcp.",
                    "rules": {},
                    "shadow_rules": {"action": "DENY", "policies": {"local": {
                        "permissions": [{"any": true}],
                        "principals": [{"remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}],
                    }}},
                    "shadow_rules_stat_prefix": "istio_dry_run_allow_",
                }),
            ),
            tcp(
                "open",
                open,
                json!({
                    "stat_prefix": "open.",
                    "rules": {"policies": {"port": {
                        "permissions": [{"destination_port_range": {"start": open, "end": open + 1}}],
                        "principals": [{"not_id": {"any": true}}, {"any": true}],
                    }}},
                }),
            ),
        ],
        vec![cluster("app", &[(app.port("app"), 1)], json!({}))],
    );
    on_both("rbac-network", &b, |proxy| {
        let closed = proxy.port("closed");
        let mut seen = Vec::new();
        let mut s = connect(closed);
        s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let end = s.read_to_end(&mut got).map(|_| got.len());
        seen.push(format!("closed: {end:?}"));
        let mut s = connect(open);
        s.write_all(b"GET /x HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
            .unwrap();
        seen.push(format!("open: {}", read_http_response(s).unwrap().status));
        let mut logged = take_log_lines(&log, 2);
        logged.sort();
        seen.extend(logged);
        let names = [
            "tcp.rbac.allowed",
            "tcp.rbac.denied",
            "tcp.rbac.istio_dry_run_allow_.shadow_allowed",
            "tcp.rbac.istio_dry_run_allow_.shadow_denied",
            "open.rbac.allowed",
            "open.rbac.denied",
        ];
        let stats = settled_stats(proxy, "", &names, |s| s["open.rbac.allowed"] == 1);
        seen.push(format!("{stats:?}"));
        seen
    });
}
