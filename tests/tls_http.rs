//! Tests: TLS information in HTTP — `x-forwarded-client-cert` in every
//! `forward_client_cert_details` mode, on mutual TLS, TLS without a client certificate and
//! plaintext; the TLS access-log commands on HTTP and tcp_proxy logs (terminated, passed
//! through by SNI, and to a TLS upstream); route `tls_context` matches.
//!
//! Each test runs one bootstrap on Envoy, then on shardproxy, and asserts the same outcome
//! (tests/common/tls.rs `on_both`); with `CI=true` a missing Envoy fails the test.
//!
//! Envoy 1.40 behaviour these tests pin:
//! - XFCC is kept as it came only with ALWAYS_FORWARD_ONLY, or with FORWARD_ONLY when the
//!   client presented a certificate; APPEND_FORWARD and SANITIZE_SET add (or set) this proxy's
//!   element on such connections; anything else drops the header. The element is `By=` per URI
//!   SAN of the served certificate, `Hash=`, then `Cert="…"`, `Chain="…"`, `Subject="…"`,
//!   `URI=` per URI SAN, `DNS=` per DNS SAN, joined with `;`; APPEND_FORWARD adds it after `,`.
//! - Subjects and issuers print as RFC 2253 (last RDN first, `\,` escapes), serials in
//!   lower-case hex, validity times as `%START_TIME%` does, SAN lists joined with `,`.
//! - `%REQUESTED_SERVER_NAME%` is what the tls_inspector read: set for TLS passthrough, `-` on
//!   a terminating listener without the inspector.
//! - `%DOWNSTREAM_TLS_SESSION_ID%` is `-` for TLS 1.3; for TLS 1.2 Envoy prints the session ID
//!   (64 hex digits), which rustls does not expose: shardproxy prints `-` (docs/tls.md).
mod common;

use std::path::Path;

use common::{http::*, tls::*, *};
use serde_json::{json, Value};

/// A DownstreamTlsContext serving `pki.upstream` (it has a URI SAN, so XFCC gets `By=`),
/// validating client certificates against the test CA when they are presented.
fn optional_mtls() -> Value {
    downstream_tls(
        common_tls(
            vec![tls_certificate(&pki().upstream)],
            json!({"validation_context": validation(&pki().ca, json!({}))}),
        ),
        json!({"require_client_certificate": false}),
    )
}

/// A listener with one chain: `filters` behind `tls` (plaintext when `None`), and the
/// tls_inspector when `inspect`.
fn one_chain(
    name: &str,
    port: u16,
    inspect: bool,
    filters: Vec<Value>,
    tls: Option<Value>,
) -> Value {
    let listener_filters = if inspect {
        vec![tls_inspector()]
    } else {
        vec![]
    };
    listener_with(
        name,
        port,
        listener_filters,
        vec![filter_chain(Value::Null, filters, tls)],
    )
}

/// A file access log writing `format` to `path`.
fn file_log(path: &Path, format: &str) -> Value {
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_LOG,
            "path": path.to_str().unwrap(),
            "log_format": {"text_format_source": {"inline_string": format}},
        },
    }])
}

/// Every `x-forwarded-client-cert` value the echo upstream received.
fn xfcc_values(echo: &Value) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            h[0].as_str()
                .unwrap()
                .eq_ignore_ascii_case("x-forwarded-client-cert")
        })
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

const CLIENT_XFCC: &str = "By=spiffe://evil;Hash=abc";

// ---------------------------------------------------------------------------------------------
// x-forwarded-client-cert

/// Each `forward_client_cert_details` mode (the default SANITIZE, FORWARD_ONLY,
/// APPEND_FORWARD with subject, URI and DNS, SANITIZE_SET with all five details,
/// ALWAYS_FORWARD_ONLY) on a TLS listener where the client certificate is optional and on a
/// plaintext one; clients with the rich certificate (a chain of two, several SANs), with the
/// plain one, without one, and over plaintext, each sending an XFCC of its own (the plain
/// client also once without). The upstream sees exactly what Envoy sends it.
#[test]
fn xfcc_in_every_mode_with_and_without_mutual_tls() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let all = json!({"subject": true, "uri": true, "dns": true, "cert": true, "chain": true});
    let modes = [
        ("SANITIZE", json!({})),
        (
            "FORWARD_ONLY",
            json!({"forward_client_cert_details": "FORWARD_ONLY"}),
        ),
        (
            "APPEND_FORWARD",
            json!({"forward_client_cert_details": "APPEND_FORWARD",
                   "set_current_client_cert_details": {"subject": true, "uri": true, "dns": true}}),
        ),
        (
            "SANITIZE_SET",
            json!({"forward_client_cert_details": "SANITIZE_SET",
                   "set_current_client_cert_details": all}),
        ),
        (
            "ALWAYS_FORWARD_ONLY",
            json!({"forward_client_cert_details": "ALWAYS_FORWARD_ONLY"}),
        ),
    ];
    let mut listeners = Vec::new();
    for (mode, extra) in &modes {
        let manager = |extra: &Value| {
            hcm_filter(hcm(
                "ingress",
                catch_all_routes("app", json!({})),
                vec![],
                extra.clone(),
            ))
        };
        listeners.push(one_chain(
            &format!("tls-{mode}"),
            0,
            false,
            vec![manager(extra)],
            Some(optional_mtls()),
        ));
        listeners.push(one_chain(
            &format!("plain-{mode}"),
            0,
            false,
            vec![manager(extra)],
            None,
        ));
    }
    let b = bootstrap(
        0,
        listeners,
        vec![cluster("app", &[(app.port("app"), 1)], json!({}))],
    );
    on_both("tls-xfcc-modes", &b, |proxy| {
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        for (mode, _) in &modes {
            let tls_port = proxy.port(&format!("tls-{mode}"));
            let plain_port = proxy.port(&format!("plain-{mode}"));
            let client = || TlsClient::new(tls_port).sni("localhost").ca(&pki.ca);
            let cases = [
                (
                    "rich",
                    client()
                        .cert(&pki.client_rich)
                        .header(&format!("x-forwarded-client-cert: {CLIENT_XFCC}")),
                ),
                (
                    "plain",
                    client()
                        .cert(&pki.client)
                        .header(&format!("x-forwarded-client-cert: {CLIENT_XFCC}")),
                ),
                ("plain, no xfcc", client().cert(&pki.client)),
                (
                    "no cert",
                    client().header(&format!("x-forwarded-client-cert: {CLIENT_XFCC}")),
                ),
            ];
            for (label, c) in cases {
                let r = c.run();
                assert_eq!(r.status(), Some(200), "{who} {mode} {label}: {}", r.0);
                seen.push(format!("{mode} {label}: {:?}", xfcc_values(&r.echo())));
            }
            let mut conn = HttpConn::open(plain_port);
            let headers = [
                ("host", "localhost"),
                ("x-forwarded-client-cert", CLIENT_XFCC),
            ];
            let r = conn
                .exchange("GET", &request("GET", "/", &headers, b""))
                .unwrap();
            assert_eq!(r.status(), 200, "{who} {mode} plaintext");
            seen.push(format!("{mode} plaintext: {:?}", xfcc_values(&r.echo())));
        }
        seen
    });
}

// ---------------------------------------------------------------------------------------------
// Access logs

/// Every TLS command this proxy knows, then a marker.
const TLS_FORMAT: &str = "%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% \
    sid=%DOWNSTREAM_TLS_SESSION_ID% uri=%DOWNSTREAM_PEER_URI_SAN% dns=%DOWNSTREAM_PEER_DNS_SAN% \
    subject=%DOWNSTREAM_PEER_SUBJECT% issuer=%DOWNSTREAM_PEER_ISSUER% \
    serial=%DOWNSTREAM_PEER_SERIAL% sha256=%DOWNSTREAM_PEER_FINGERPRINT_256% \
    valid=%DOWNSTREAM_PEER_CERT_V_START%..%DOWNSTREAM_PEER_CERT_V_END% \
    local=%DOWNSTREAM_LOCAL_URI_SAN%|%DOWNSTREAM_LOCAL_SUBJECT% sni=%REQUESTED_SERVER_NAME% \
    upstream=%UPSTREAM_TLS_VERSION%|%UPSTREAM_TLS_CIPHER% path=%REQ(:PATH)%";

/// The TLS commands on four listeners, each logging to its own file: HTTPS with an optional
/// client certificate (without the tls_inspector: no requested server name), routing `/up` to
/// a TLS upstream (TLS 1.2, one suite, so the upstream fields are fixed); the same connection
/// manager over plaintext (every TLS field `-`); a tcp_proxy terminating TLS; a tcp_proxy
/// passing TLS through by SNI (tls_inspector: the server name, no TLS fields). Clients: the
/// rich certificate over TLS 1.3 and over TLS 1.2 (one suite), none, plaintext.
#[test]
fn tls_access_log_commands() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let tls_app = TlsUpstream::start("tls-app", &pki.upstream, &[]);
    let logs = TempDir::new("tls-logs");
    let routes = json!({"name": "local", "virtual_hosts": [{
        "name": "all", "domains": ["*"],
        "routes": [
            {"match": {"prefix": "/up"}, "route": {"cluster": "tls_app"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "app"}},
        ],
    }]});
    let manager = |log: &str| {
        let format = format!("{log} {TLS_FORMAT}\n");
        hcm_filter(hcm(
            "ingress",
            routes.clone(),
            vec![],
            json!({"access_log": file_log(&logs.file(log), &format)}),
        ))
    };
    let tcp_proxy = |log: &str, cluster: &str| {
        let format = format!("{log} {TLS_FORMAT}\n");
        let mut filter = tcp_proxy_filter(log, cluster);
        filter["typed_config"]["access_log"] = file_log(&logs.file(log), &format);
        filter
    };
    let tls_upstream_cluster = cluster(
        "tls_app",
        &[(tls_app.port, 1)],
        json!({"transport_socket": upstream_tls(
            common_tls(vec![], json!({
                "validation_context": validation(&pki.ca, json!({})),
                "tls_params": {"cipher_suites": ["ECDHE-ECDSA-AES128-GCM-SHA256"]},
            })),
            json!({"sni": UPSTREAM_NAME}),
        )}),
    );
    let b = bootstrap(
        0,
        vec![
            one_chain(
                "https",
                0,
                false,
                vec![manager("https")],
                Some(optional_mtls()),
            ),
            one_chain("plain", 0, false, vec![manager("plain")], None),
            one_chain(
                "tcp",
                0,
                false,
                vec![tcp_proxy("tcp", "app")],
                Some(optional_mtls()),
            ),
            one_chain(
                "passthrough",
                0,
                true,
                vec![tcp_proxy("passthrough", "tls_passthrough")],
                None,
            ),
        ],
        vec![
            cluster("app", &[(app.port("app"), 1)], json!({})),
            tls_upstream_cluster,
            cluster("tls_passthrough", &[(tls_app.port, 1)], json!({})),
        ],
    );
    on_both("tls-access-log", &b, |proxy| {
        let (https, plain, tcp, passthrough) = (
            proxy.port("https"),
            proxy.port("plain"),
            proxy.port("tcp"),
            proxy.port("passthrough"),
        );
        let who = proxy.kind.name();
        let client = |port: u16| TlsClient::new(port).sni("localhost").ca(&pki.ca);
        let rich = |port: u16| client(port).cert(&pki.client_rich);
        let tls12 = |c: TlsClient| c.only("TLSv1_2").ciphers("ECDHE-ECDSA-AES128-GCM-SHA256");
        let runs = [
            rich(https).path("/rich13").run(),
            tls12(rich(https)).path("/rich12").run(),
            client(https).path("/anonymous").run(),
            rich(https).path("/up").run(),
            rich(tcp).path("/tcp").run(),
            client(passthrough).path("/passthrough").run(),
        ];
        for r in &runs {
            assert_eq!(r.status(), Some(200), "{who}: {}", r.0);
        }
        let mut conn = HttpConn::open(plain);
        let r = conn
            .exchange(
                "GET",
                &request("GET", "/plain", &[("host", "localhost")], b""),
            )
            .unwrap();
        assert_eq!(r.status(), 200, "{who}: plaintext");
        drop(conn);
        let mut lines = take_log_lines(&logs.file("https"), 4);
        lines.extend(take_log_lines(&logs.file("plain"), 1));
        lines.extend(take_log_lines(&logs.file("tcp"), 1));
        lines.extend(take_log_lines(&logs.file("passthrough"), 1));
        // TLS 1.2: Envoy prints the session ID, shardproxy `-` (docs/tls.md).
        for line in &mut lines {
            if let Some(at) = line.find("sid=") {
                let id = &line[at + 4..at + 4 + line[at + 4..].find(' ').unwrap()];
                if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    assert!(line.contains("TLSv1.2"), "{who}: a session ID on {line}");
                    *line = line.replacen(&format!("sid={id}"), "sid=-", 1);
                }
            }
        }
        lines.sort();
        lines
    });
}

// ---------------------------------------------------------------------------------------------
// Route matching

/// `tls_context` route matches: `presented: true` and `validated: true` routes take the
/// clients with a certificate, `presented: false` the others (TLS without one, plaintext),
/// and under `/v/` a `validated: false` route takes those without one.
#[test]
fn routes_match_on_the_client_certificate() {
    let pki = pki();
    let answer = |prefix: &str, tls_context: Value, body: &str| {
        json!({"match": {"prefix": prefix, "tls_context": tls_context},
               "direct_response": {"status": 200, "body": {"inline_string": body}}})
    };
    let routes = json!({"name": "local", "virtual_hosts": [{
        "name": "all", "domains": ["*"],
        "routes": [
            answer("/v/", json!({"validated": false}), "not validated"),
            answer("/", json!({"presented": true, "validated": true}), "validated"),
            answer("/", json!({"presented": false}), "not presented"),
            answer("/", json!({}), "fallback"),
        ],
    }]});
    let manager = || hcm_filter(hcm("ingress", routes.clone(), vec![], json!({})));
    let b = bootstrap(
        0,
        vec![
            one_chain("tls", 0, false, vec![manager()], Some(optional_mtls())),
            one_chain("plain", 0, false, vec![manager()], None),
        ],
        vec![],
    );
    on_both("tls-route-match", &b, |proxy| {
        let (tls_port, plain_port) = (proxy.port("tls"), proxy.port("plain"));
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        for path in ["/", "/v/x"] {
            let client = || {
                TlsClient::new(tls_port)
                    .sni("localhost")
                    .ca(&pki.ca)
                    .path(path)
            };
            for (label, r) in [
                ("cert", client().cert(&pki.client).run()),
                ("no cert", client().run()),
            ] {
                assert_eq!(r.status(), Some(200), "{who} {label} {path}: {}", r.0);
                seen.push(format!("{label} {path}: {}", r.body()));
            }
            let mut conn = HttpConn::open(plain_port);
            let r = conn
                .exchange("GET", &request("GET", path, &[("host", "localhost")], b""))
                .unwrap();
            seen.push(format!("plaintext {path}: {}", r.text()));
        }
        seen
    });
}
