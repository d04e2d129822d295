//! Tests: `envoy.filters.http.ext_authz` and `envoy.filters.network.ext_authz` against a real
//! authorization server (tests/peers/ext_authz_server.py, grpcio), compared with Envoy 1.40 on
//! the same bootstrap (tests/common/tls.rs `on_both`; with `CI=true` a missing Envoy or grpcio
//! fails the test): statuses, bodies and headers clients get, headers the upstream gets,
//! access-log flags and response code details, stats, and the CheckRequests the server
//! recorded (with what differs by run — stream ids, times, client ports, request ids —
//! left out).
//!
//! Covered: allowed requests with the service's header changes upstream and its response
//! headers downstream; denied requests with the service's status, headers and body (403 by
//! default); errors (the call failing, timing out) refused with `status_on_error` or let
//! through under `failure_mode_allow` (with `x-envoy-auth-failure-mode-allowed`); a route
//! disabling the filter and routes adding context extensions; the body sent whole, partial
//! or as bytes, and a too-large one refused 413; HTTP/2 clients; mutual-TLS principals, the
//! peer certificate and the SNI; the network filter closing denied connections. The HTTP
//! service (`http_service`, against tests/peers/ext_authz_http_server.py, which records each
//! check's method, path, headers and body): the checks' paths under `path_prefix`, the headers
//! `allowed_headers` selects and `headers_to_add` sets, the body; where the answer's headers
//! go (`allowed_upstream_headers[_to_append]`, `allowed_client_headers[_on_success]`,
//! `dynamic_metadata_from_headers`, `x-envoy-auth-headers-to-remove`); denials with the
//! service's status and body; 5xx answers, timeouts and an unreachable service as errors.
//!
//! Admins bind port 0; listeners keep a fixed port (`free_port`), the same for both proxies,
//! because the compared checks carry the listener's address (the destination, the host).
mod common;

use std::{io::Read, io::Write, path::Path};

use common::{http::*, tls::*, *};
use serde_json::{json, Value};

const EXT_AUTHZ: &str = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
const PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";
const NETWORK: &str = "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz";
const HTTP_OPTIONS: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Whether the peers' Python has grpcio and the Check API's messages (xds-protos); skips
/// `test` (fails under CI) when not.
fn have_authz_peer(test: &str) -> bool {
    have_python(test, "grpc, envoy.service.auth.v3.external_auth_pb2_grpc")
}

/// The authorization server, recording into `log` (network checks of `deny_ports` denied).
struct AuthzServer {
    server: PeerServer,
    _dir: TempDir,
    log: std::path::PathBuf,
}

impl AuthzServer {
    fn start(tag: &str, deny_ports: &[u16]) -> AuthzServer {
        let dir = TempDir::new(tag);
        let log = dir.file("checks.jsonl");
        let ports: Vec<String> = deny_ports.iter().map(u16::to_string).collect();
        let server = PeerServer::start(
            "ext_authz_server.py",
            &[
                "--port",
                "0",
                "--log",
                log.to_str().unwrap(),
                "--deny-ports",
                &ports.join(","),
                "--stdin-eof",
            ],
        );
        AuthzServer {
            server,
            _dir: dir,
            log,
        }
    }

    /// The cluster `authz` over HTTP/2 to the server.
    fn cluster(&self) -> Value {
        h2_cluster("authz", self.server.port)
    }

    /// The `n` checks recorded since the last call, as comparable JSON (then forgotten).
    fn checks(&self, n: usize) -> Vec<String> {
        if n == 0 {
            return Vec::new();
        }
        take_log_lines(&self.log, n)
            .iter()
            .map(|line| normalized(serde_json::from_str(line).unwrap()))
            .collect()
    }
}

/// A STATIC cluster speaking HTTP/2 to 127.0.0.1:`port`.
fn h2_cluster(name: &str, port: u16) -> Value {
    cluster(
        name,
        &[(port, 1)],
        json!({"typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        }}),
    )
}

/// A recorded CheckRequest without what differs from run to run: the stream id, the time, the
/// client's port, the request id and the proxy's own address (`x-forwarded-for` metadata).
fn normalized(mut check: Value) -> String {
    let mut remove = |path: &str, key: &str| {
        if let Some(object) = check.pointer_mut(path).and_then(Value::as_object_mut) {
            object.remove(key);
        }
    };
    remove("/attributes/source/address/socket_address", "port_value");
    remove("/attributes/request", "time");
    remove("/attributes/request/http", "id");
    remove("/attributes/request/http/headers", "x-request-id");
    remove("/metadata", "x-forwarded-for");
    check.to_string()
}

fn ext_authz(name: &str, config: Value) -> Value {
    let mut typed =
        json!({"@type": EXT_AUTHZ, "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}}});
    merge(&mut typed, config);
    json!({"name": name, "typed_config": typed})
}

/// A file access log with the status, flags and response code details, then `extra`.
fn access_log(path: &Path, extra: &str) -> Value {
    let format = format!(
        "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%{extra}\n"
    );
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_LOG,
            "path": path.to_str().unwrap(),
            "log_format": {"text_format_source": {"inline_string": format}},
        },
    }])
}

/// What a client saw: status, the headers the service may set, the body (an upstream's echo
/// reduced to the headers the service changes and the body it got).
fn outcome(r: &Curl) -> String {
    let picked: Vec<String> = ["x-authz-response", "x-denied", "set-cookie", "content-type"]
        .iter()
        .flat_map(|name| {
            r.headers
                .iter()
                .filter(move |(k, _)| k == name)
                .map(|(k, v)| format!("{k}={v}"))
        })
        .collect();
    let body = match serde_json::from_str::<Value>(&r.body) {
        Ok(echo) if echo["headers"].is_array() => {
            let upstream: Vec<String> = [
                "x-authz",
                "x-authz-append",
                "x-authz-new",
                "x-remove-me",
                "x-envoy-auth-failure-mode-allowed",
            ]
            .iter()
            .filter_map(|name| echoed_header(&echo, name).map(|v| format!("{name}={v}")))
            .collect();
            format!("upstream {upstream:?} body {}", echo["body"])
        }
        _ => r.body.clone(),
    };
    format!("{} {picked:?} {body}", r.status)
}

/// Allowed, denied and failed checks; routes disabling the filter and adding context
/// extensions (the virtual host's merged under the route's); an HTTP/2 client.
#[test]
fn http_checks_as_envoy() {
    if !have_authz_peer("http_checks_as_envoy") {
        return;
    }
    let authz = AuthzServer::start("ext-authz-http", &[]);
    let app = EchoUpstreams::start(&["app"], None);
    let port = free_port();
    let logs = TempDir::new("ext-authz-http-logs");
    let log = logs.file("access.log");
    let extensions = |pairs: Value| json!({"authz": {"@type": PER_ROUTE, "check_settings": {"context_extensions": pairs}}});
    let route = |prefix: &str, per_filter: Value| json!({"match": {"prefix": prefix}, "route": {"cluster": "app"}, "typed_per_filter_config": per_filter});
    let routes = json!({"name": "local", "virtual_hosts": [{
        "name": "all", "domains": ["*"],
        "typed_per_filter_config": extensions(json!({"vhost": "all", "level": "vhost"})),
        "routes": [
            route("/off", json!({"authz": {"@type": PER_ROUTE, "disabled": true}})),
            route("/ctx", extensions(json!({"level": "route"}))),
            route("/", json!({})),
        ],
    }]});
    let manager = hcm(
        "plain",
        routes,
        vec![ext_authz("authz", json!({}))],
        json!({"access_log": access_log(&log, "")}),
    );
    let b = bootstrap(
        0,
        vec![http_listener("plain", port, manager)],
        vec![
            cluster("app", &[(app.port("app"), 1)], json!({})),
            authz.cluster(),
        ],
    );
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "allowed",
            vec![
                "-H",
                "x-a: 1",
                "-H",
                "x-a: 2",
                "-H",
                "x-remove-me: z",
                "-H",
                "x-authz-append: orig",
                url("/allowed?q=1").as_str(),
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        ),
        ("denied", vec![url("/deny")]),
        (
            "denied 401",
            vec!["-H".into(), "x-deny-status: 401".into(), url("/deny")],
        ),
        ("status only", vec![url("/status")]),
        ("error", vec![url("/error")]),
        (
            "timeout",
            vec!["-H".into(), "x-sleep-ms: 1000".into(), url("/slow")],
        ),
        ("disabled route", vec![url("/off/x")]),
        ("extensions", vec![url("/ctx/x")]),
        (
            "http2",
            vec!["--http2-prior-knowledge".into(), url("/allowed/h2")],
        ),
        ("post", vec!["-d".into(), "hello".into(), url("/post")]),
    ];
    on_both("ext-authz-http", &b, |proxy| {
        let mut seen: Vec<String> = cases
            .iter()
            .map(|(label, args)| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                format!("{label}: {}", outcome(&curl(&args)))
            })
            .collect();
        seen.extend(take_log_lines(&log, cases.len()));
        // Every request but the disabled route's was checked.
        seen.extend(authz.checks(cases.len() - 1));
        let names = ["ok", "denied", "error", "failure_mode_allowed", "disabled"];
        let stats = settled_stats(proxy, "http.plain.ext_authz.", &names, |s| s["ok"] == 4);
        seen.push(format!("{stats:?}"));
        seen
    });
}

/// Istio's CUSTOM policy: an RBAC filter's shadow rules name the requests to check
/// (`istio_ext_authz_shadow_effective_policy_id`), which `filter_enabled_metadata` reads; the
/// service's dynamic metadata is what a later RBAC filter judges by.
#[test]
fn istio_custom_policy_as_envoy() {
    if !have_authz_peer("istio_custom_policy_as_envoy") {
        return;
    }
    let authz = AuthzServer::start("ext-authz-istio", &[]);
    let app = EchoUpstreams::start(&["app"], None);
    let port = free_port();
    let rbac = |name: &str, config: Value| {
        let mut typed =
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"});
        merge(&mut typed, config);
        json!({"name": name, "typed_config": typed})
    };
    let path = |prefix: &str| json!({"url_path": {"path": {"prefix": prefix}}});
    let filters = vec![
        rbac(
            "envoy.filters.http.rbac",
            json!({
                "shadow_rules": {"action": "DENY", "policies": {
                    "istio-ext-authz-ns[default]-policy[ext]-rule[0]": {
                        "permissions": [path("/checked")],
                        "principals": [{"any": true}],
                    },
                }},
                "shadow_rules_stat_prefix": "istio_ext_authz_",
            }),
        ),
        ext_authz(
            "envoy.filters.http.ext_authz",
            json!({"filter_enabled_metadata": {
                "filter": "envoy.filters.http.rbac",
                "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
                "value": {"string_match": {"prefix": "istio-ext-authz"}},
            }}),
        ),
        rbac(
            "after",
            json!({"rules_stat_prefix": "after_", "rules": {"policies": {
                "the service named alice": {
                    "permissions": [{"any": true}],
                    "principals": [{"metadata": {
                        "filter": "envoy.filters.http.ext_authz",
                        "path": [{"key": "user"}],
                        "value": {"string_match": {"exact": "alice"}},
                    }}],
                },
                "unchecked": {"permissions": [path("/unchecked")], "principals": [{"any": true}]},
            }}}),
        ),
    ];
    let manager = hcm(
        "istio",
        catch_all_routes("app", json!({})),
        filters,
        json!({}),
    );
    let b = bootstrap(
        0,
        vec![http_listener("istio", port, manager)],
        vec![
            cluster("app", &[(app.port("app"), 1)], json!({})),
            authz.cluster(),
        ],
    );
    let cases = [
        ("/checked", "alice"),
        ("/checked", "bob"),
        ("/unchecked", "bob"),
    ];
    on_both("ext-authz-istio", &b, |proxy| {
        let mut seen: Vec<String> = cases
            .iter()
            .map(|(path, user)| {
                let url = format!("http://127.0.0.1:{port}{path}");
                let r = curl(&["-H", &format!("x-user: {user}"), &url]);
                format!("{path} {user}: {}", outcome(&r))
            })
            .collect();
        seen.extend(authz.checks(2));
        let names = [
            "ext_authz.ok",
            "ext_authz.disabled",
            "rbac.after_.allowed",
            "rbac.after_.denied",
        ];
        let stats = settled_stats(proxy, "http.istio.", &names, |s| {
            s["ext_authz.disabled"] == 1
        });
        seen.push(format!("{stats:?}"));
        seen
    });
}

/// `failure_mode_allow` with its header; the body sent whole, partially (the first
/// `max_request_bytes`, marked `x-envoy-auth-partial-body`) or as bytes, and forwarded whole;
/// a body over the limit without `allow_partial_message` refused 413.
#[test]
fn failure_mode_and_bodies_as_envoy() {
    if !have_authz_peer("failure_mode_and_bodies_as_envoy") {
        return;
    }
    let authz = AuthzServer::start("ext-authz-body", &[]);
    let app = EchoUpstreams::start(&["app"], None);
    let (partial, strict) = (free_port(), free_port());
    let logs = TempDir::new("ext-authz-body-logs");
    let log = logs.file("access.log");
    let listener = |name: &str, port: u16, config: Value| {
        let manager = hcm(
            name,
            catch_all_routes("app", json!({})),
            vec![ext_authz("authz", config)],
            json!({"access_log": access_log(&log, "")}),
        );
        http_listener(name, port, manager)
    };
    let b = bootstrap(
        0,
        vec![
            listener(
                "partial",
                partial,
                json!({
                    "stat_prefix": "waf",
                    "failure_mode_allow": true,
                    "failure_mode_allow_header_add": true,
                    "with_request_body": {"max_request_bytes": 10, "allow_partial_message": true},
                }),
            ),
            listener(
                "strict",
                strict,
                json!({"with_request_body": {"max_request_bytes": 10, "pack_as_bytes": true}}),
            ),
        ],
        vec![
            cluster("app", &[(app.port("app"), 1)], json!({})),
            authz.cluster(),
        ],
    );
    let cases: Vec<(&str, u16, &str, Option<&str>)> = vec![
        ("error allowed", partial, "/error", None),
        ("short body", partial, "/x", Some("hello")),
        (
            "long body",
            partial,
            "/x",
            Some("hello world, this is long"),
        ),
        ("exact body", partial, "/x", Some("0123456789")),
        ("bytes", strict, "/x", Some("hello")),
        ("too large", strict, "/x", Some("hello world, this is long")),
    ];
    on_both("ext-authz-body", &b, |proxy| {
        let mut seen: Vec<String> = cases
            .iter()
            .map(|(label, port, path, body)| {
                let url = format!("http://127.0.0.1:{port}{path}");
                let mut args = vec![url.as_str()];
                if let Some(body) = body {
                    args.extend(["--data-binary", body]);
                }
                format!("{label}: {}", outcome(&curl(&args)))
            })
            .collect();
        seen.extend(take_log_lines(&log, cases.len()));
        // The too-large body is refused before any check.
        seen.extend(authz.checks(cases.len() - 1));
        let names = [
            "partial.ext_authz.waf.ok",
            "partial.ext_authz.waf.error",
            "partial.ext_authz.waf.failure_mode_allowed",
            "strict.ext_authz.ok",
            "downstream_rq_too_large",
        ];
        let stats = settled_stats(proxy, "http.", &names, |s| s["strict.ext_authz.ok"] == 1);
        seen.push(format!("{stats:?}"));
        seen
    });
}

/// A mutual-TLS client: the check names both sides' principals (the client's SPIFFE id, the
/// server certificate's identity), carries the client's certificate (URL-encoded PEM) and the
/// SNI.
#[test]
fn mtls_principals_as_envoy() {
    if !have_authz_peer("mtls_principals_as_envoy") {
        return;
    }
    let pki = pki();
    let authz = AuthzServer::start("ext-authz-mtls", &[]);
    let app = EchoUpstreams::start(&["app"], None);
    let port = free_port();
    let tls = downstream_tls(
        common_tls(
            vec![tls_certificate(&pki.upstream)],
            json!({"validation_context": validation(&pki.ca, json!({}))}),
        ),
        json!({"require_client_certificate": true}),
    );
    let manager = hcm_filter(hcm(
        "mtls",
        catch_all_routes("app", json!({})),
        vec![ext_authz(
            "authz",
            json!({"include_peer_certificate": true, "include_tls_session": true,
                   "allowed_headers": {"patterns": [{"exact": ":path"}, {"prefix": "x-"}]}}),
        )],
        json!({}),
    ));
    let b = bootstrap(
        0,
        vec![listener_with(
            "mtls",
            port,
            vec![tls_inspector()],
            vec![filter_chain(Value::Null, vec![manager], Some(tls))],
        )],
        vec![
            cluster("app", &[(app.port("app"), 1)], json!({})),
            authz.cluster(),
        ],
    );
    on_both("ext-authz-mtls", &b, |_| {
        let r = TlsClient::new(port)
            .sni("localhost")
            .ca(&pki.ca)
            .cert(&pki.client)
            .header("x-user: alice")
            .path("/x")
            .run();
        let mut seen = vec![format!("{:?}", r.status())];
        seen.extend(authz.checks(1));
        seen
    });
}

/// The network filter: a connection to a port the server denies is closed (counted in
/// `ext_authz.<prefix>.cx_closed`), an allowed one reaches the upstream; a check that fails
/// closes the connection unless `failure_mode_allow`.
#[test]
fn network_filter_as_envoy() {
    if !have_authz_peer("network_filter_as_envoy") {
        return;
    }
    let (open, closed, failing, tolerant) = (free_port(), free_port(), free_port(), free_port());
    let authz = AuthzServer::start("ext-authz-network", &[closed]);
    let app = EchoUpstreams::start(&["app"], None);
    let tcp = |name: &str, port: u16, cluster: &str, failure_mode_allow: bool| {
        json!({
            "name": name,
            "address": socket_address(port),
            "filter_chains": [{"filters": [
                {"name": "envoy.filters.network.ext_authz", "typed_config": {
                    "@type": NETWORK, "stat_prefix": name,
                    "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
                    "failure_mode_allow": failure_mode_allow,
                }},
                {"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp_proxy(name, "app", json!({}))},
            ]}],
        })
    };
    let b = bootstrap(
        0,
        vec![
            tcp("open", open, "authz", false),
            tcp("closed", closed, "authz", false),
            tcp("failing", failing, "down", false),
            tcp("tolerant", tolerant, "down", true),
        ],
        vec![
            cluster("app", &[(app.port("app"), 1)], json!({})),
            authz.cluster(),
            h2_cluster("down", refused_port()),
        ],
    );
    on_both("ext-authz-network", &b, |proxy| {
        let mut seen = Vec::new();
        for (label, port) in [
            ("open", open),
            ("closed", closed),
            ("failing", failing),
            ("tolerant", tolerant),
        ] {
            let mut s = connect(port);
            s.write_all(b"GET /x HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut got = Vec::new();
            let answer = match s.read_to_end(&mut got) {
                Ok(_) if got.is_empty() => "closed".to_string(),
                Ok(_) => String::from_utf8_lossy(&got[..12.min(got.len())]).into_owned(),
                Err(e) => format!("{:?}", e.kind()),
            };
            seen.push(format!("{label}: {answer}"));
        }
        seen.extend(authz.checks(2));
        let mut names = Vec::new();
        for prefix in ["open", "closed", "failing", "tolerant"] {
            for stat in [
                "total",
                "ok",
                "denied",
                "error",
                "failure_mode_allowed",
                "cx_closed",
                "active",
            ] {
                names.push(format!("{prefix}.{stat}"));
            }
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let stats = settled_stats(proxy, "ext_authz.", &names, |s| s["tolerant.total"] == 1);
        seen.push(format!("{stats:?}"));
        seen
    });
}

/// The HTTP authorization server (tests/peers/ext_authz_http_server.py), recording into `log`.
struct HttpAuthzServer {
    server: PeerServer,
    _dir: TempDir,
    log: std::path::PathBuf,
}

impl HttpAuthzServer {
    fn start(tag: &str) -> HttpAuthzServer {
        let dir = TempDir::new(tag);
        let log = dir.file("checks.jsonl");
        let args = ["--port", "0", "--log", log.to_str().unwrap(), "--stdin-eof"];
        let server = PeerServer::start("ext_authz_http_server.py", &args);
        HttpAuthzServer {
            server,
            _dir: dir,
            log,
        }
    }

    /// The `n` checks recorded since the last call (method, path, headers sorted, body), then
    /// forgotten.
    fn checks(&self, n: usize) -> Vec<String> {
        if n == 0 {
            return Vec::new();
        }
        let mut checks: Vec<String> = take_log_lines(&self.log, n)
            .iter()
            .map(|line| {
                let mut check: Value = serde_json::from_str(line).unwrap();
                let mut headers: Vec<Value> = check["headers"].as_array().unwrap().clone();
                headers.sort_by_key(|h| h.to_string());
                check["headers"] = Value::Array(headers);
                check.to_string()
            })
            .collect();
        // Checks made at once (none here) may be recorded in either order.
        checks.sort();
        checks
    }
}

/// An `ext_authz` filter asking the HTTP service on cluster `cluster`; `service` and `config`
/// are merged over the service's URI and the filter's defaults.
fn http_ext_authz(cluster: &str, service: Value, config: Value) -> Value {
    let mut http = json!({"server_uri": {"uri": "http://authz.local:9000", "cluster": cluster, "timeout": "0.5s"}});
    merge(&mut http, service);
    let mut typed = json!({"@type": EXT_AUTHZ, "http_service": http});
    merge(&mut typed, config);
    json!({"name": "authz", "typed_config": typed})
}

/// What a client saw of an HTTP check: status, the headers the service may have sent it, the
/// body (an upstream's echo reduced to the headers the service may change, every line of
/// each, and the body it got).
fn http_outcome(r: &Curl) -> String {
    let pick = |headers: &mut dyn Iterator<Item = (&str, &str)>, names: &[&str]| {
        headers
            .filter(|(k, _)| names.contains(&k.to_ascii_lowercase().as_str()))
            .map(|(k, v)| format!("{}={v}", k.to_ascii_lowercase()))
            .collect::<Vec<String>>()
    };
    let to_client = [
        "x-authz-client",
        "x-denied",
        "set-cookie",
        "www-authenticate",
        "x-authz-secret",
        "content-type",
    ];
    let client = pick(
        &mut r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &to_client,
    );
    let body = match serde_json::from_str::<Value>(&r.body) {
        Ok(echo) if echo["headers"].is_array() => {
            let to_upstream = [
                "x-authz",
                "x-authz-append",
                "x-authz-secret",
                "x-remove-me",
                "authorization",
                "x-envoy-auth-failure-mode-allowed",
            ];
            let headers = echo["headers"].as_array().unwrap();
            let upstream = pick(
                &mut headers
                    .iter()
                    .map(|h| (h[0].as_str().unwrap(), h[1].as_str().unwrap())),
                &to_upstream,
            );
            format!("upstream {upstream:?} body {}", echo["body"])
        }
        _ => r.body.clone(),
    };
    format!("{} {client:?} {body}", r.status)
}

/// The HTTP service: checks carry the method, the path under `path_prefix`, the allowed
/// headers (and Envoy's four), `headers_to_add` and the body (whole, or its first
/// `max_request_bytes`); an allowing answer's headers set and added upstream, added to the
/// client's response and taken as dynamic metadata, `x-envoy-auth-headers-to-remove` honoured;
/// denials (401, 302) with the listed client headers and the body; 5xx answers and timeouts
/// refused 403; a disabled route unchecked; an HTTP/2 client.
#[test]
fn http_service_as_envoy() {
    if !have_python("http_service_as_envoy", "json, http.server") {
        return;
    }
    let authz = HttpAuthzServer::start("ext-authz-http-service");
    let app = EchoUpstreams::start(&["app"], None);
    let port = free_port();
    let logs = TempDir::new("ext-authz-http-service-logs");
    let log = logs.file("access.log");
    let names = |names: &[&str]| {
        let patterns: Vec<Value> = names.iter().map(|n| json!({"exact": n})).collect();
        json!({"patterns": patterns})
    };
    let filter = http_ext_authz(
        "authz",
        json!({
            "path_prefix": "/check",
            "authorization_request": {"headers_to_add": [
                {"key": "x-added", "value": "lit"},
                {"key": "x-verdict-source", "value": "proxy"},
            ]},
            "authorization_response": {
                "allowed_upstream_headers": names(&["x-authz"]),
                "allowed_upstream_headers_to_append": names(&["x-authz-append"]),
                "allowed_client_headers": names(&["x-denied", "set-cookie"]),
                "allowed_client_headers_on_success": names(&["x-authz-client"]),
                "dynamic_metadata_from_headers": names(&["x-user-id"]),
            },
        }),
        json!({
            "allowed_headers": {"patterns": [{"exact": "x-verdict"}, {"exact": "x-sleep-ms"}, {"prefix": "x-user"}]},
            "with_request_body": {"max_request_bytes": 100, "allow_partial_message": true},
        }),
    );
    let routes = json!({"name": "local", "virtual_hosts": [{
        "name": "all", "domains": ["*"],
        "routes": [
            {"match": {"prefix": "/off"}, "route": {"cluster": "app"},
             "typed_per_filter_config": {"authz": {"@type": PER_ROUTE, "disabled": true}}},
            {"match": {"prefix": "/"}, "route": {"cluster": "app"}},
        ],
    }]});
    let manager = hcm(
        "plain",
        routes,
        vec![filter],
        json!({"access_log": access_log(&log, " %DYNAMIC_METADATA(envoy.filters.http.ext_authz:x-user-id)%")}),
    );
    let b = bootstrap(
        0,
        vec![http_listener("plain", port, manager)],
        vec![
            cluster("app", &[(app.port("app"), 1)], json!({})),
            cluster("authz", &[(authz.server.port, 1)], json!({})),
        ],
    );
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let long_body = "0123456789".repeat(15);
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "allowed",
            args(&[
                "-H",
                "x-user: alice",
                "-H",
                "x-remove-me: z",
                "-H",
                "x-authz-append: orig",
                "-H",
                "x-authz: old",
                "-H",
                "authorization: Bearer t",
                "-H",
                "cookie: c=1",
                &url("/allowed?q=1"),
            ]),
        ),
        ("denied 401", args(&["-H", "x-verdict: 401", &url("/deny")])),
        (
            "denied 302",
            args(&["-H", "x-verdict: 302", &url("/deny/moved")]),
        ),
        ("error 503", args(&["-H", "x-verdict: 503", &url("/err")])),
        (
            "timeout",
            args(&[
                "-H",
                "x-verdict: slow",
                "-H",
                "x-sleep-ms: 1000",
                &url("/slow"),
            ]),
        ),
        (
            "disabled route",
            args(&["-H", "x-verdict: 401", &url("/off/x")]),
        ),
        (
            "body",
            args(&["--data-binary", "hello body", &url("/post")]),
        ),
        (
            "partial body",
            args(&["--data-binary", &long_body, &url("/post/long")]),
        ),
        (
            "http2",
            args(&["--http2-prior-knowledge", "-H", "x-user: bob", &url("/h2")]),
        ),
    ];
    on_both("ext-authz-http-service", &b, |proxy| {
        let mut seen: Vec<String> = cases
            .iter()
            .map(|(label, args)| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                format!("{label}: {}", http_outcome(&curl(&args)))
            })
            .collect();
        seen.extend(take_log_lines(&log, cases.len()));
        // Every request but the disabled route's was checked.
        seen.extend(authz.checks(cases.len() - 1));
        let names = ["ok", "denied", "error", "failure_mode_allowed", "disabled"];
        let stats = settled_stats(proxy, "http.plain.ext_authz.", &names, |s| s["ok"] == 4);
        seen.push(format!("{stats:?}"));
        seen
    });
}

/// The HTTP service without client header lists: a denied client gets every answer header but
/// `host`; `path_override`; the deprecated `authorization_request.allowed_headers`; errors (a 5xx answer, an
/// unreachable service) let through under `failure_mode_allow` with its header, or refused with
/// `status_on_error`.
#[test]
fn http_service_defaults_and_failures_as_envoy() {
    if !have_python(
        "http_service_defaults_and_failures_as_envoy",
        "json, http.server",
    ) {
        return;
    }
    let authz = HttpAuthzServer::start("ext-authz-http-defaults");
    let app = EchoUpstreams::start(&["app"], None);
    let (tolerant, strict) = (free_port(), free_port());
    let logs = TempDir::new("ext-authz-http-defaults-logs");
    let log = logs.file("access.log");
    let listener = |name: &str, port: u16, filter: Value| {
        let manager = hcm(
            name,
            catch_all_routes("app", json!({})),
            vec![filter],
            json!({"access_log": access_log(&log, "")}),
        );
        http_listener(name, port, manager)
    };
    let verdict = json!({
        "path_override": "/authz",
        "authorization_request": {"allowed_headers": {"patterns": [{"exact": "x-verdict"}]}},
    });
    let b = bootstrap(
        0,
        vec![
            listener(
                "tolerant",
                tolerant,
                http_ext_authz(
                    "authz",
                    verdict,
                    json!({"failure_mode_allow": true, "failure_mode_allow_header_add": true}),
                ),
            ),
            listener(
                "strict",
                strict,
                http_ext_authz("down", json!({}), json!({"status_on_error": {"code": 503}})),
            ),
        ],
        vec![
            cluster("app", &[(app.port("app"), 1)], json!({})),
            cluster("authz", &[(authz.server.port, 1)], json!({})),
            cluster("down", &[(refused_port(), 1)], json!({})),
        ],
    );
    let cases: Vec<(&str, u16, Option<&str>)> = vec![
        ("denied", tolerant, Some("x-verdict: 403")),
        ("error allowed", tolerant, Some("x-verdict: 500")),
        ("allowed", tolerant, None),
        ("unreachable", strict, None),
    ];
    on_both("ext-authz-http-defaults", &b, |proxy| {
        let mut seen: Vec<String> = cases
            .iter()
            .map(|(label, port, header)| {
                let url = format!("http://127.0.0.1:{port}/x");
                let mut args = vec![url.as_str()];
                if let Some(header) = header {
                    args.extend(["-H", header]);
                }
                format!("{label}: {}", http_outcome(&curl(&args)))
            })
            .collect();
        seen.extend(take_log_lines(&log, cases.len()));
        seen.extend(authz.checks(3));
        let names = [
            "tolerant.ext_authz.ok",
            "tolerant.ext_authz.denied",
            "tolerant.ext_authz.error",
            "tolerant.ext_authz.failure_mode_allowed",
            "strict.ext_authz.error",
        ];
        let stats = settled_stats(proxy, "http.", &names, |s| s["strict.ext_authz.error"] == 1);
        seen.push(format!("{stats:?}"));
        seen
    });
}
