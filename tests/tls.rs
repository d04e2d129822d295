//! Tests: TLS end to end — termination, versions and tls_params, ALPN, filter-chain matching
//! (SNI, transport and application protocols with the tls_inspector, HTTP with the
//! http_inspector, source ranges and ports, destination port), RSA and ECDSA certificates on
//! one context, client certificates and their validation (trusted CA, SPIFFE SAN match,
//! expired, untrusted, revoked), TLS origination to the upstream (SNI, validation, mTLS),
//! passthrough, plaintext on a TLS port, x-forwarded-proto and XFCC, static secrets and SDS
//! (over ADS, an SDS stream and watched files; rotated with keep-alive connections open and
//! under load; a bad version NACKed; a listener warming until its secret arrives; `/certs`
//! and the secrets dump), session resumption, and Envoy's `ssl.*` stats.
//!
//! Each test runs one bootstrap on Envoy (its assertions are Envoy's documented behaviour),
//! then on shardproxy with the same bootstrap, and asserts the same observable outcome
//! (tests/common/tls.rs `on_both`); with `CI=true` a missing Envoy fails the test.
//!
//! Envoy 1.40 behaviour these tests pin (what shardproxy has to match):
//! - Client-certificate failures (`ssl.fail_verify_error`, `ssl.fail_verify_san`,
//!   `ssl.fail_verify_no_cert`) do not count in `ssl.connection_error`; a version or cipher
//!   mismatch and plaintext on a TLS port do. `ssl.handshake` and `ssl.versions.*` count
//!   successful handshakes only; `ssl.no_certificate` counts served connections without one.
//! - TLS 1.2 alerts: missing required certificate → handshake_failure, wrong SAN →
//!   certificate_unknown, unknown issuer → unknown_ca, expired → certificate_expired, revoked →
//!   certificate_revoked, version below the minimum → protocol_version, no shared suite →
//!   handshake_failure. In TLS 1.3 the client's handshake completes first and its next read
//!   fails (alert or bare close, racing).
//! - With `match_typed_subject_alt_names` in the validation context a client without a
//!   certificate is refused even with `require_client_certificate: false`.
//! - No ALPN overlap is not an error: the handshake completes without ALPN (rustls' default
//!   is to fail it with no_application_protocol). The server's own order decides (`h2` for a
//!   client offering `http/1.1,h2`).
//! - Filter-chain matching goes criterion by criterion (destination port, destination IP,
//!   server name, transport protocol, application protocols, source ...), and the most
//!   specific value present at a level wins that level for good: a chain naming the
//!   listener's `destination_port` takes every connection to that port, and one it does not
//!   match is closed (`no_filter_chain_match`) even when a catch-all chain exists.
//!   `*.wild.example.com` also matches names two labels down; exact beats wildcard.
//! - Upstream TLS defaults to TLS 1.2 at most; no SNI unless `sni` is set; a failed upstream
//!   handshake is a 503 "upstream connect error or disconnect/reset before headers. reset
//!   reason: remote connection failure, transport failure reason: ..."
//! - XFCC `SANITIZE_SET` + `uri: true` gives `Hash=<sha256 of the DER>;URI=<SAN>` (`By=` only
//!   when the server certificate has a URI SAN); a client's own XFCC is dropped.
//! - Plaintext on a TLS port: closed with no bytes sent (no alert).
//! - SDS: a secret file holds exactly one secret; a NACKed secret version (Envoy lists it as
//!   the active one in the config dump, shardproxy the one that serves) leaves the last good
//!   one serving; a listener naming a secret not yet there takes no handshake.
mod common;

use std::{
    io::{Read, Write},
    process::Command,
    time::{Duration, Instant},
};

use common::{http::*, tls::*, *};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Scenario helpers

/// A connection manager (stat prefix `ingress`) routing everything to `cluster`; `extra`
/// merged into it.
fn manager(cluster: &str, extra: Value) -> Value {
    hcm(
        "ingress",
        catch_all_routes(cluster, json!({})),
        vec![],
        extra,
    )
}

/// A filter chain terminating TLS with `tls` in front of `manager(cluster)`.
fn https_chain(chain_match: Value, cluster: &str, tls: Value) -> Value {
    filter_chain(
        chain_match,
        vec![hcm_filter(manager(cluster, json!({})))],
        Some(tls),
    )
}

/// A DownstreamTlsContext serving `certs`.
fn server_tls(certs: Vec<Value>) -> Value {
    downstream_tls(common_tls(certs, json!({})), json!({}))
}

/// A listener terminating TLS (`tls`) in front of `cluster`.
fn https_listener(name: &str, port: u16, cluster: &str, tls: Value) -> Value {
    listener_with(
        name,
        port,
        vec![],
        vec![https_chain(Value::Null, cluster, tls)],
    )
}

/// A listener requiring a client certificate validated by `validation_extra` on top of the
/// test CA, in front of `cluster`; `hcm_extra` merged into its connection manager.
fn mtls_listener(port: u16, cluster: &str, validation_extra: Value, hcm_extra: Value) -> Value {
    let tls = downstream_tls(
        common_tls(
            vec![tls_certificate(&pki().server_rsa)],
            json!({"validation_context": validation(&pki().ca, validation_extra)}),
        ),
        json!({"require_client_certificate": true}),
    );
    listener_with(
        "mtls",
        port,
        vec![],
        vec![filter_chain(
            Value::Null,
            vec![hcm_filter(manager(cluster, hcm_extra))],
            Some(tls),
        )],
    )
}

/// A STATIC cluster to one 127.0.0.1 port, `extra` merged in.
fn to_port(name: &str, port: u16, extra: Value) -> Value {
    cluster(name, &[(port, 1)], extra)
}

/// The text of the first TLS alert `openssl s_client` or Python's ssl reported (`protocol
/// version`, `certificate required`, ...), if any.
fn alert(output: &str) -> Option<String> {
    let i = output.find(" alert ")?;
    let rest = &output[i + " alert ".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_lowercase() || c == ' ' || c == '_'))
        .unwrap_or(rest.len());
    Some(rest[..end].trim().replace('_', " "))
}

/// One line describing a tls_client.py result: ok/refused, version, ALPN, server CN, status,
/// which upstream answered.
fn summary(r: &TlsResult) -> String {
    if r.ok() {
        format!(
            "ok {} alpn={} cn={} status={} upstream={}",
            r.version().unwrap_or("-"),
            r.alpn().unwrap_or("-"),
            r.peer_cn().unwrap_or("-"),
            r.status().map_or("-".into(), |s| s.to_string()),
            r.upstream().unwrap_or_else(|| "-".into()),
        )
    } else {
        format!("refused at {}", r.stage().unwrap_or("?"))
    }
}

fn s_summary(s: &SClient) -> String {
    if s.handshake_ok() {
        format!(
            "ok {} {}",
            s.protocol.as_deref().unwrap_or("-"),
            s.cipher.as_deref().unwrap_or("-")
        )
    } else {
        format!("failed alert={}", alert(&s.output).unwrap_or_default())
    }
}

/// Sends a plaintext HTTP/1.1 request to a TLS port and reads until the proxy closes:
/// (bytes received, whether they hold an HTTP response).
fn plaintext_to_tls_port(port: u16) -> (Vec<u8>, bool) {
    let mut s = connect(port);
    s.set_read_timeout(Some(SOON)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        assert!(start.elapsed() < SOON, "the proxy kept the connection open");
    }
    let http = String::from_utf8_lossy(&got).contains("HTTP/");
    (got, http)
}

fn xfp(r: &TlsResult) -> Option<String> {
    echoed_header(&r.echo(), "x-forwarded-proto").map(String::from)
}

// ---------------------------------------------------------------------------------------------
// Termination

/// HTTPS terminated in front of a plain HTTP upstream, with the certificate read from files on
/// one listener and given inline on another: both answer 200 with the certificate configured
/// (verified against the test CA), over TLS 1.3, and the upstream sees
/// `x-forwarded-proto: https`. curl (--cacert, --resolve) gets the same.
#[test]
fn https_termination_with_file_and_inline_certificates() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let b = bootstrap(
        0,
        vec![
            https_listener(
                "files",
                0,
                "app",
                server_tls(vec![tls_certificate(&pki.server_rsa)]),
            ),
            https_listener(
                "inline",
                0,
                "app",
                server_tls(vec![tls_certificate_inline(&pki.server_ecdsa)]),
            ),
        ],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    on_both("tls-termination", &b, |proxy| {
        let (files, inline) = (proxy.port("files"), proxy.port("inline"));
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        for (label, port) in [("files", files), ("inline", inline)] {
            let r = TlsClient::new(port).sni("localhost").ca(&pki.ca).run();
            assert!(r.ok(), "{who} {label}: {}", r.0);
            assert_eq!(r.status(), Some(200), "{who} {label}");
            assert_eq!(r.upstream().as_deref(), Some("app"), "{who} {label}");
            assert_eq!(r.peer_cn(), Some("localhost"), "{who} {label}");
            assert_eq!(r.version(), Some("TLSv1.3"), "{who} {label}");
            assert_eq!(xfp(&r).as_deref(), Some("https"), "{who} {label}");
            let url = format!("https://localhost:{port}/via-curl");
            let resolve = format!("localhost:{port}:127.0.0.1");
            let c = curl(&[
                "--http1.1",
                "--cacert",
                pki.ca.to_str().unwrap(),
                "--resolve",
                &resolve,
                &url,
            ]);
            assert_eq!(c.status, 200, "{who} {label}: curl: {}", c.body);
            let echo: Value = serde_json::from_str(&c.body).unwrap();
            assert_eq!(echo["target"], "/via-curl", "{who} {label}");
            seen.push(format!("{label}: {} curl={}", summary(&r), c.status));
        }
        seen
    });
}

/// TLS versions and `tls_params`: the default context negotiates TLS 1.3, or 1.2 with a
/// 1.2-only client; a `tls_minimum_protocol_version: TLSv1_3` listener refuses a 1.2-only client
/// (alert protocol_version); a `tls_maximum_protocol_version: TLSv1_2` listener negotiates
/// 1.2 and refuses a 1.3-only client; `cipher_suites` limits TLS 1.2 to the listed suite and a
/// client without it is refused (alert handshake_failure).
#[test]
fn tls_versions_and_tls_params() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    // Fixed ports: the scenario reads the listeners' stats (see `listener_stats`).
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let rsa = || vec![tls_certificate(&pki.server_rsa)];
    let params = |p: Value| downstream_tls(common_tls(rsa(), json!({"tls_params": p})), json!({}));
    let b = bootstrap(
        0,
        vec![
            https_listener("default", ports[0], "app", server_tls(rsa())),
            https_listener(
                "min13",
                ports[1],
                "app",
                params(json!({"tls_minimum_protocol_version": "TLSv1_3"})),
            ),
            https_listener(
                "max12",
                ports[2],
                "app",
                params(json!({"tls_maximum_protocol_version": "TLSv1_2"})),
            ),
            https_listener(
                "cipher12",
                ports[3],
                "app",
                params(json!({
                    "tls_maximum_protocol_version": "TLSv1_2",
                    "cipher_suites": ["ECDHE-RSA-AES256-GCM-SHA384"],
                })),
            ),
        ],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    on_both("tls-versions", &b, |proxy| {
        let who = proxy.kind.name();
        let req = http_request_text("localhost", "/");
        let mut seen = Vec::new();
        let mut check = |label: &str, port: u16, args: &[&str], expect: &str| {
            let s = s_client(port, args, &req);
            let got = s_summary(&s);
            assert!(
                got.starts_with(expect),
                "{who} {label}: expected {expect:?}, got {got:?}\n{}",
                s.output
            );
            if s.handshake_ok() {
                assert!(
                    s.output.contains("HTTP/1.1 200"),
                    "{who} {label}: {}",
                    s.output
                );
            }
            // Recorded as expected: the suite a default context picks is the TLS library's
            // preference (BoringSSL's equal-preference groups), not part of the contract.
            seen.push(format!("{label}: {expect}"));
        };
        check("default", ports[0], &[], "ok TLSv1.3");
        check("default 1.2", ports[0], &["-tls1_2"], "ok TLSv1.2");
        check("default 1.3", ports[0], &["-tls1_3"], "ok TLSv1.3");
        check(
            "min13 1.2",
            ports[1],
            &["-tls1_2"],
            "failed alert=protocol version",
        );
        check("min13 1.3", ports[1], &["-tls1_3"], "ok TLSv1.3");
        check("max12", ports[2], &[], "ok TLSv1.2");
        check(
            "max12 1.3",
            ports[2],
            &["-tls1_3"],
            "failed alert=protocol version",
        );
        check(
            "cipher12",
            ports[3],
            &["-tls1_2"],
            "ok TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384",
        );
        check(
            "cipher12 other suite",
            ports[3],
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
            "failed alert=handshake failure",
        );
        // Python's ssl, 1.2 only, against the 1.3-minimum listener: refused in the handshake.
        let r = TlsClient::new(ports[1]).only("TLSv1_2").run();
        assert_eq!(r.stage(), Some("handshake"), "{who}: {}", r.0);
        seen.push(format!("python 1.2 to min13: {}", summary(&r)));
        let stats = settled_stats(
            proxy,
            &listener_stats(ports[0]),
            &[
                "ssl.handshake",
                "ssl.versions.TLSv1.2",
                "ssl.versions.TLSv1.3",
            ],
            |s| s["ssl.handshake"] >= 3,
        );
        seen.push(format!("default listener stats: {stats:?}"));
        let refused = settled_stats(
            proxy,
            &listener_stats(ports[1]),
            &["ssl.handshake", "ssl.connection_error"],
            |s| s["ssl.connection_error"] >= 2,
        );
        seen.push(format!("min13 listener stats: {refused:?}"));
        seen
    });
}

/// ALPN: a context with `alpn_protocols: [h2, http/1.1]` picks the first of its own list the
/// client offers; a client offering none of them still completes the handshake without ALPN
/// (Envoy does not fail it with no_application_protocol) and is served HTTP/1.1; a context
/// without `alpn_protocols` negotiates none.
#[test]
fn alpn_negotiation() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let alpn_tls = downstream_tls(
        common_tls(
            vec![tls_certificate(&pki.server_rsa)],
            json!({"alpn_protocols": ["h2", "http/1.1"]}),
        ),
        json!({}),
    );
    let b = bootstrap(
        0,
        vec![
            https_listener("alpn", 0, "app", alpn_tls),
            https_listener(
                "no-alpn",
                0,
                "app",
                server_tls(vec![tls_certificate(&pki.server_rsa)]),
            ),
        ],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    on_both("tls-alpn", &b, |proxy| {
        let (with, without) = (proxy.port("alpn"), proxy.port("no-alpn"));
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        let cases = [
            (
                "alpn: h2,http/1.1",
                with,
                Some("h2,http/1.1"),
                true,
                Some("h2"),
            ),
            (
                "alpn: http/1.1,h2",
                with,
                Some("http/1.1,h2"),
                true,
                Some("h2"),
            ),
            (
                "alpn: http/1.1",
                with,
                Some("http/1.1"),
                false,
                Some("http/1.1"),
            ),
            ("alpn: foo", with, Some("foo"), false, None),
            ("alpn: none offered", with, None, false, None),
            (
                "no-alpn: h2,http/1.1",
                without,
                Some("h2,http/1.1"),
                false,
                None,
            ),
        ];
        for (label, port, offer, handshake_only, expect) in cases {
            let mut c = TlsClient::new(port).sni("localhost").ca(&pki.ca);
            if let Some(offer) = offer {
                c = c.alpn(offer);
            }
            if handshake_only {
                c = c.handshake_only();
            }
            let r = c.run();
            assert!(r.ok(), "{who} {label}: {}", r.0);
            assert_eq!(r.alpn(), expect, "{who} {label}");
            if !handshake_only {
                assert_eq!(r.status(), Some(200), "{who} {label}");
            }
            seen.push(format!("{label}: {}", summary(&r)));
        }
        seen
    });
}

// ---------------------------------------------------------------------------------------------
// Filter-chain matching

/// SNI picks the filter chain (tls_inspector): `server_names` exact beats a wildcard,
/// `*.wild.example.com` matches any name under it (also two labels down), and a connection
/// with another name or no SNI at all gets the chain without `server_names`. Each chain
/// serves its own certificate and routes to its own upstream.
#[test]
fn sni_selects_the_filter_chain() {
    let pki = pki();
    let ups = EchoUpstreams::start(&["one", "exact", "wild", "default"], None);
    let tls = |ck: &CertKey| server_tls(vec![tls_certificate(ck)]);
    let chains = vec![
        https_chain(
            json!({"server_names": ["domain1.example.com"]}),
            "one",
            tls(&pki.domain1),
        ),
        https_chain(
            json!({"server_names": ["x.wild.example.com"]}),
            "exact",
            tls(&pki.server_ecdsa),
        ),
        https_chain(
            json!({"server_names": ["*.wild.example.com"]}),
            "wild",
            tls(&pki.wildcard),
        ),
        https_chain(Value::Null, "default", tls(&pki.server_rsa)),
    ];
    let b = bootstrap(
        0,
        vec![listener_with("sni", 0, vec![tls_inspector()], chains)],
        ["one", "exact", "wild", "default"]
            .iter()
            .map(|n| to_port(n, ups.port(n), json!({})))
            .collect(),
    );
    on_both("tls-sni", &b, |proxy| {
        let port = proxy.port("sni");
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        let cases = [
            (Some("domain1.example.com"), "domain1.example.com", "one"),
            (Some("x.wild.example.com"), "localhost", "exact"),
            (Some("a.wild.example.com"), "*.wild.example.com", "wild"),
            (
                Some("deep.a.wild.example.com"),
                "*.wild.example.com",
                "wild",
            ),
            (Some("other.example.com"), "localhost", "default"),
            (None, "localhost", "default"),
        ];
        for (sni, cn, upstream) in cases {
            let mut c = TlsClient::new(port);
            if let Some(sni) = sni {
                c = c.sni(sni);
            }
            let r = c.run();
            let label = sni.unwrap_or("(no SNI)");
            assert!(r.ok(), "{who} {label}: {}", r.0);
            assert_eq!(r.peer_cn(), Some(cn), "{who} {label}");
            assert_eq!(r.upstream().as_deref(), Some(upstream), "{who} {label}");
            seen.push(format!("{label}: {}", summary(&r)));
        }
        // The verified case: the wildcard certificate is valid for the name the client asked.
        let r = TlsClient::new(port)
            .sni("b.wild.example.com")
            .ca(&pki.ca)
            .run();
        assert!(r.ok(), "{who}: verified wildcard: {}", r.0);
        let stats = settled_stats(
            proxy,
            "tls_inspector.",
            &["sni_found", "sni_not_found", "tls_found", "tls_not_found"],
            |s| s["tls_found"] >= 7,
        );
        seen.push(format!("tls_inspector stats: {stats:?}"));
        seen
    });
}

/// `transport_protocol` splits one port (tls_inspector): TLS connections get the chain with
/// `transport_protocol: tls` (terminated; the upstream sees x-forwarded-proto https), plaintext
/// ones the `raw_buffer` chain (x-forwarded-proto http).
#[test]
fn transport_protocol_splits_tls_and_plaintext_on_one_port() {
    let pki = pki();
    let ups = EchoUpstreams::start(&["secure", "plain"], None);
    let chains = vec![
        https_chain(
            json!({"transport_protocol": "tls"}),
            "secure",
            server_tls(vec![tls_certificate(&pki.server_rsa)]),
        ),
        filter_chain(
            json!({"transport_protocol": "raw_buffer"}),
            vec![hcm_filter(manager("plain", json!({})))],
            None,
        ),
    ];
    let b = bootstrap(
        0,
        vec![listener_with("split", 0, vec![tls_inspector()], chains)],
        vec![
            to_port("secure", ups.port("secure"), json!({})),
            to_port("plain", ups.port("plain"), json!({})),
        ],
    );
    on_both("tls-transport", &b, |proxy| {
        let port = proxy.port("split");
        let who = proxy.kind.name();
        let r = TlsClient::new(port).sni("localhost").ca(&pki.ca).run();
        assert_eq!(r.upstream().as_deref(), Some("secure"), "{who}: {}", r.0);
        assert_eq!(xfp(&r).as_deref(), Some("https"), "{who}");
        let c = curl(&[&format!("http://127.0.0.1:{port}/")]);
        assert_eq!(c.status, 200, "{who}: {}", c.body);
        let echo: Value = serde_json::from_str(&c.body).unwrap();
        assert_eq!(echo["upstream"], "plain", "{who}");
        assert_eq!(echoed_header(&echo, "x-forwarded-proto"), Some("http"));
        let stats = settled_stats(
            proxy,
            "tls_inspector.",
            &["tls_found", "tls_not_found"],
            |s| s["tls_not_found"] >= 1,
        );
        vec![
            format!("tls: {}", summary(&r)),
            format!("plaintext: {} {}", c.status, echo["upstream"]),
            format!("tls_inspector stats: {stats:?}"),
        ]
    });
}

/// `application_protocols` picks the chain from the client's ALPN list (tls_inspector), the
/// connection passed through by tcp_proxy to an HTTPS upstream per protocol: `h2` to one,
/// `http/1.1` to the other; a client offering both gets the chain of the first protocol it
/// lists; plaintext reaches the default chain.
#[test]
fn application_protocols_select_the_chain() {
    let pki = pki();
    let h2 = TlsUpstream::start("h2-upstream", &pki.upstream2, &["--alpn", "h2,http/1.1"]);
    let h1 = TlsUpstream::start("h1-upstream", &pki.upstream, &["--alpn", "http/1.1"]);
    let plain = EchoUpstreams::start(&["plain"], None);
    let chains = vec![
        filter_chain(
            json!({"transport_protocol": "tls", "application_protocols": ["h2"]}),
            vec![tcp_proxy_filter("h2", "h2")],
            None,
        ),
        filter_chain(
            json!({"transport_protocol": "tls", "application_protocols": ["http/1.1"]}),
            vec![tcp_proxy_filter("h1", "h1")],
            None,
        ),
        filter_chain(Value::Null, vec![tcp_proxy_filter("plain", "plain")], None),
    ];
    let b = bootstrap(
        0,
        vec![listener_with("alpn", 0, vec![tls_inspector()], chains)],
        vec![
            to_port("h2", h2.port, json!({})),
            to_port("h1", h1.port, json!({})),
            to_port("plain", plain.port("plain"), json!({})),
        ],
    );
    on_both("tls-application-protocols", &b, |proxy| {
        let port = proxy.port("alpn");
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        for (offer, cn, alpn) in [
            ("h2", "upstream2.example.com", "h2"),
            ("http/1.1", UPSTREAM_NAME, "http/1.1"),
            ("h2,http/1.1", "upstream2.example.com", "h2"),
            ("http/1.1,h2", UPSTREAM_NAME, "http/1.1"),
        ] {
            let r = TlsClient::new(port)
                .sni("localhost")
                .alpn(offer)
                .handshake_only()
                .run();
            assert!(r.ok(), "{who} {offer}: {}", r.0);
            assert_eq!(r.peer_cn(), Some(cn), "{who} {offer}");
            assert_eq!(r.alpn(), Some(alpn), "{who} {offer}");
            seen.push(format!("{offer}: {}", summary(&r)));
        }
        let r = TlsClient::new(port).sni("localhost").alpn("http/1.1").run();
        assert_eq!(r.upstream().as_deref(), Some("h1-upstream"), "{who}");
        let c = curl(&[&format!("http://127.0.0.1:{port}/")]);
        let echo: Value = serde_json::from_str(&c.body).unwrap();
        assert_eq!(echo["upstream"], "plain", "{who}");
        seen.push(format!("plaintext: {}", echo["upstream"]));
        seen
    });
}

/// One context holding an RSA and an ECDSA certificate serves the one the client can verify:
/// the ECDSA key to a client offering only ECDSA signatures (or ECDSA suites in TLS 1.2), the
/// RSA key to one offering only RSA-PSS (or RSA suites).
#[test]
fn rsa_and_ecdsa_certificates_on_one_context() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let b = bootstrap(
        0,
        vec![https_listener(
            "dual",
            0,
            "app",
            server_tls(vec![
                tls_certificate(&pki.server_rsa),
                tls_certificate(&pki.server_ecdsa),
            ]),
        )],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    on_both("tls-dual-cert", &b, |proxy| {
        let port = proxy.port("dual");
        let who = proxy.kind.name();
        let req = http_request_text("localhost", "/");
        let mut seen = Vec::new();
        for (label, args, sig, bits) in [
            (
                "1.3 ecdsa sigalgs",
                &["-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256"][..],
                "ECDSA",
                256,
            ),
            (
                "1.3 rsa-pss sigalgs",
                &["-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"][..],
                "RSA-PSS",
                2048,
            ),
            (
                "1.2 ecdsa suite",
                &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"][..],
                "ECDSA",
                256,
            ),
            (
                "1.2 rsa suite",
                &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"][..],
                "",
                2048,
            ),
        ] {
            let s = s_client(port, args, &req);
            assert!(s.handshake_ok(), "{who} {label}: {}", s.output);
            assert_eq!(s.server_key_bits, Some(bits), "{who} {label}: {}", s.output);
            if !sig.is_empty() {
                assert_eq!(s.peer_sig_type.as_deref(), Some(sig), "{who} {label}");
            }
            assert!(s.output.contains("HTTP/1.1 200"), "{who} {label}");
            seen.push(format!(
                "{label}: {} key={bits} sig={}",
                s.protocol.as_deref().unwrap_or("-"),
                s.peer_sig_type.as_deref().unwrap_or("-")
            ));
        }
        seen
    });
}

// ---------------------------------------------------------------------------------------------
// Client certificates

/// `require_client_certificate`: a client without a certificate is refused (TLS 1.3: the
/// server's alert arrives after the client's handshake, so the first read fails; TLS 1.2: the
/// handshake fails with alert handshake_failure) and counted in `ssl.fail_verify_no_cert`
/// (not in `ssl.connection_error`); one with a certificate from the trusted CA is served.
#[test]
fn required_client_certificate() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    // A fixed port: the scenario reads the listener's stats (see `listener_stats`).
    let port = free_port();
    let b = bootstrap(
        0,
        vec![mtls_listener(port, "app", json!({}), json!({}))],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    on_both("tls-require-cert", &b, |proxy| {
        let who = proxy.kind.name();
        let base = || TlsClient::new(port).sni("localhost").ca(&pki.ca);
        let none13 = base().only("TLSv1_3").run();
        assert!(none13.refused(), "{who}: no cert, 1.3: {}", none13.0);
        let none12 = base().only("TLSv1_2").run();
        assert!(none12.refused(), "{who}: no cert, 1.2: {}", none12.0);
        assert_eq!(none12.stage(), Some("handshake"), "{who}: {}", none12.0);
        let with = base().cert(&pki.client).run();
        assert_eq!(with.status(), Some(200), "{who}: with cert: {}", with.0);
        // curl: --cert/--key served, without them refused (exit 35, 55 or 56 as the TLS 1.3
        // alert races curl's own steps).
        let (resolve, url) = (
            format!("localhost:{port}:127.0.0.1"),
            format!("https://localhost:{port}/curl"),
        );
        let ca = pki.ca.to_str().unwrap();
        let curl_args = ["--http1.1", "--cacert", ca, "--resolve", &resolve, &url];
        let (cert, key) = (
            pki.client.cert.to_str().unwrap(),
            pki.client.key.to_str().unwrap(),
        );
        let c = curl(&[&["--cert", cert, "--key", key][..], &curl_args[..]].concat());
        assert_eq!(c.status, 200, "{who}: curl with cert: {}", c.body);
        let refused = try_curl(&curl_args);
        assert!(
            refused.is_err(),
            "{who}: curl without cert: {:?}",
            refused.map(|c| c.status)
        );
        let stats = settled_stats(
            proxy,
            &listener_stats(port),
            &[
                "ssl.handshake",
                "ssl.connection_error",
                "ssl.no_certificate",
                "ssl.fail_verify_no_cert",
            ],
            |s| s["ssl.handshake"] >= 1 && s["ssl.fail_verify_no_cert"] >= 2,
        );
        // TLS 1.3: whether the client reads the server's alert or only the close races.
        // TLS 1.2: BoringSSL sends handshake_failure, rustls certificate_required (RFC 8446's
        // more precise alert, which it sends for 1.2 as well): either is a refusal for want
        // of a certificate (docs/tls.md lists the difference).
        let alert12 =
            alert(none12.error()).map(|a| a.replace("certificate required", "handshake failure"));
        vec![
            format!("no cert 1.3: {}", summary(&none13)),
            format!("no cert 1.2: {} alert={alert12:?}", summary(&none12)),
            format!("with cert: {}", summary(&with)),
            format!("stats: {stats:?}"),
        ]
    });
}

/// `match_typed_subject_alt_names` with a SPIFFE URI: the client whose certificate carries
/// spiffe://cluster.local/ns/default/sa/client is served, one with another SPIFFE identity is
/// refused (`ssl.fail_verify_san`).
#[test]
fn spiffe_uri_san_match() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    // A fixed port: the scenario reads the listener's stats (see `listener_stats`).
    let port = free_port();
    let b = bootstrap(
        0,
        vec![mtls_listener(
            port,
            "app",
            json!({"match_typed_subject_alt_names": [san_exact("URI", CLIENT_SPIFFE)]}),
            json!({}),
        )],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    on_both("tls-spiffe", &b, |proxy| {
        let who = proxy.kind.name();
        let base = || TlsClient::new(port).sni("localhost").ca(&pki.ca);
        let good = base().cert(&pki.client).run();
        assert_eq!(good.status(), Some(200), "{who}: {}", good.0);
        let other = base().cert(&pki.client_other).run();
        assert!(other.refused(), "{who}: other SPIFFE id: {}", other.0);
        let other12 = base().cert(&pki.client_other).only("TLSv1_2").run();
        assert!(
            other12.refused(),
            "{who}: other SPIFFE id, 1.2: {}",
            other12.0
        );
        let stats = settled_stats(
            proxy,
            &listener_stats(port),
            &[
                "ssl.handshake",
                "ssl.connection_error",
                "ssl.fail_verify_san",
            ],
            |s| s["ssl.fail_verify_san"] >= 2,
        );
        vec![
            format!("client: {}", summary(&good)),
            format!("other: {}", summary(&other)),
            format!(
                "other 1.2: {} alert={:?}",
                summary(&other12),
                alert(other12.error())
            ),
            format!("stats: {stats:?}"),
        ]
    });
}

/// Expired, untrusted (another CA) and revoked (the CA's CRL in the validation context)
/// client certificates are refused; a good one is served. Each failure counts in
/// `ssl.fail_verify_error`.
#[test]
fn expired_untrusted_and_revoked_client_certificates_are_refused() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    // A fixed port: the scenario reads the listener's stats (see `listener_stats`).
    let port = free_port();
    let b = bootstrap(
        0,
        vec![mtls_listener(
            port,
            "app",
            json!({"crl": {"filename": pki.crl.to_str().unwrap()}}),
            json!({}),
        )],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    on_both("tls-bad-client-certs", &b, |proxy| {
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        for (label, ck, ok) in [
            ("good", &pki.client, true),
            ("expired", &pki.client_expired, false),
            ("untrusted", &pki.untrusted_client, false),
            ("revoked", &pki.client_revoked, false),
        ] {
            for version in ["TLSv1_3", "TLSv1_2"] {
                let r = TlsClient::new(port)
                    .sni("localhost")
                    .ca(&pki.ca)
                    .cert(ck)
                    .only(version)
                    .run();
                if ok {
                    assert_eq!(r.status(), Some(200), "{who} {label} {version}: {}", r.0);
                } else {
                    assert!(r.refused(), "{who} {label} {version}: {}", r.0);
                }
                // The alert is only certain in TLS 1.2 (in 1.3 it races the close).
                let alert = (version == "TLSv1_2").then(|| alert(r.error())).flatten();
                seen.push(format!(
                    "{label} {version}: {} alert={alert:?}",
                    summary(&r)
                ));
            }
        }
        let stats = settled_stats(
            proxy,
            &listener_stats(port),
            &[
                "ssl.handshake",
                "ssl.connection_error",
                "ssl.fail_verify_error",
            ],
            |s| s["ssl.fail_verify_error"] >= 6,
        );
        seen.push(format!("stats: {stats:?}"));
        seen
    });
}

// ---------------------------------------------------------------------------------------------
// TLS to the upstream

/// Cluster transport sockets (UpstreamTlsContext) from a plaintext listener to the HTTPS
/// upstream: `sni` is what the upstream receives (none when unset); validation with the
/// test CA and a DNS SAN match passes; a SAN mismatch or an untrusted CA is a 503 (upstream
/// connect error) counted in the cluster's `ssl.fail_verify_san` / `ssl.fail_verify_error`.
#[test]
fn upstream_tls_origination_with_sni_and_validation() {
    let pki = pki();
    let secure = TlsUpstream::start("secure", &pki.upstream, &[]);
    let tls = |sni: Option<&str>, validation_context: Option<Value>| {
        let mut common = json!({});
        if let Some(v) = validation_context {
            common["validation_context"] = v;
        }
        let extra = sni.map_or(json!({}), |s| json!({"sni": s}));
        json!({"transport_socket": upstream_tls(common, extra)})
    };
    let san = |name: &str| json!({"match_typed_subject_alt_names": [san_exact("DNS", name)]});
    let clusters = vec![
        to_port(
            "verified",
            secure.port,
            tls(
                Some(UPSTREAM_NAME),
                Some(validation(&pki.ca, san(UPSTREAM_NAME))),
            ),
        ),
        to_port(
            "mismatch",
            secure.port,
            tls(
                Some(UPSTREAM_NAME),
                Some(validation(&pki.ca, san("other.example.com"))),
            ),
        ),
        to_port(
            "untrusted",
            secure.port,
            tls(
                Some(UPSTREAM_NAME),
                Some(validation(&pki.untrusted_ca, json!({}))),
            ),
        ),
        to_port("nosni", secure.port, tls(None, None)),
    ];
    let routes: Vec<Value> = ["verified", "mismatch", "untrusted", "nosni"]
        .iter()
        .map(|c| json!({"match": {"prefix": format!("/{c}")}, "route": {"cluster": c}}))
        .collect();
    let route_config = json!({"name": "local", "virtual_hosts": [
        {"name": "all", "domains": ["*"], "routes": routes}]});
    let b = bootstrap(
        0,
        vec![http_listener(
            "plain",
            0,
            hcm("ingress", route_config, vec![], json!({})),
        )],
        clusters,
    );
    on_both("tls-upstream", &b, |proxy| {
        let port = proxy.port("plain");
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        for (path, status) in [
            ("/verified", 200),
            ("/mismatch", 503),
            ("/untrusted", 503),
            ("/nosni", 200),
        ] {
            let c = curl(&[&format!("http://127.0.0.1:{port}{path}")]);
            assert_eq!(c.status, status, "{who} {path}: {}", c.body);
            if status == 200 {
                let echo: Value = serde_json::from_str(&c.body).unwrap();
                let sni = echo["tls"]["sni"].as_str().map(String::from);
                let expect_sni = (path == "/verified").then(|| UPSTREAM_NAME.to_string());
                assert_eq!(sni, expect_sni, "{who} {path}");
                assert_eq!(
                    echoed_header(&echo, "x-forwarded-proto"),
                    Some("http"),
                    "{who} {path}"
                );
                seen.push(format!(
                    "{path}: 200 sni={sni:?} version={}",
                    echo["tls"]["version"]
                ));
            } else {
                // Envoy: "upstream connect error or disconnect/reset before headers. reset
                // reason: remote connection failure, transport failure reason: TLS_error:..."
                // (the transport failure reason is the TLS library's own text).
                let head = c.body.split(", transport failure reason").next().unwrap();
                seen.push(format!("{path}: {} {head}", c.status));
            }
        }
        for (cluster, stat, at_least) in [
            ("verified", "ssl.handshake", 1),
            ("mismatch", "ssl.fail_verify_san", 1),
            ("untrusted", "ssl.fail_verify_error", 1),
        ] {
            let s = settled_stats(proxy, &format!("cluster.{cluster}."), &[stat], |s| {
                s[stat] >= at_least
            });
            seen.push(format!("cluster.{cluster}: {s:?}"));
        }
        seen
    });
}

/// mTLS to the upstream: a cluster presenting the client certificate reaches an upstream that
/// requires one (the upstream sees its SPIFFE URI SAN); a cluster without one gets a 503.
#[test]
fn upstream_client_certificate() {
    let pki = pki();
    let ca = pki.ca.to_str().unwrap();
    let strict = TlsUpstream::start(
        "strict",
        &pki.upstream,
        &["--ca", ca, "--require-client-cert"],
    );
    let with_cert = upstream_tls(
        common_tls(
            vec![tls_certificate(&pki.client)],
            json!({"validation_context": validation(&pki.ca, json!({}))}),
        ),
        json!({"sni": UPSTREAM_NAME}),
    );
    let without_cert = upstream_tls(
        json!({"validation_context": validation(&pki.ca, json!({}))}),
        json!({"sni": UPSTREAM_NAME}),
    );
    let routes = json!([
        {"match": {"path": "/with"}, "route": {"cluster": "with"}},
        {"match": {"path": "/without"}, "route": {"cluster": "without"}},
    ]);
    let b = bootstrap(
        0,
        vec![http_listener(
            "plain",
            0,
            hcm(
                "ingress",
                json!({"name": "local", "virtual_hosts": [
                    {"name": "all", "domains": ["*"], "routes": routes}]}),
                vec![],
                json!({}),
            ),
        )],
        vec![
            to_port("with", strict.port, json!({"transport_socket": with_cert})),
            to_port(
                "without",
                strict.port,
                json!({"transport_socket": without_cert}),
            ),
        ],
    );
    on_both("tls-upstream-mtls", &b, |proxy| {
        let port = proxy.port("plain");
        let who = proxy.kind.name();
        let c = curl(&[&format!("http://127.0.0.1:{port}/with")]);
        assert_eq!(c.status, 200, "{who}: {}", c.body);
        let echo: Value = serde_json::from_str(&c.body).unwrap();
        assert_eq!(
            echo["tls"]["peer_sans"],
            json!([["URI", CLIENT_SPIFFE]]),
            "{who}"
        );
        let c2 = curl(&[&format!("http://127.0.0.1:{port}/without")]);
        assert_eq!(c2.status, 503, "{who}: {}", c2.body);
        vec![
            format!("with: 200 peer={}", echo["tls"]["peer_sans"]),
            format!("without: {}", c2.status),
        ]
    });
}

// ---------------------------------------------------------------------------------------------
// Passthrough, plaintext on a TLS port, forwarded headers

/// TLS passthrough: the chain for `server_names: [passthrough.example.com]` is a tcp_proxy,
/// so that client's TLS reaches the HTTPS upstream untouched (it sees the upstream's
/// certificate, the upstream sees its SNI and no x-forwarded-proto); other names are
/// terminated by the proxy.
#[test]
fn tls_passthrough_by_server_name() {
    let pki = pki();
    let backend = TlsUpstream::start("backend", &pki.upstream, &[]);
    let terminated = EchoUpstreams::start(&["terminated"], None);
    let chains = vec![
        filter_chain(
            json!({"server_names": ["passthrough.example.com"]}),
            vec![tcp_proxy_filter("passthrough", "backend")],
            None,
        ),
        https_chain(
            Value::Null,
            "terminated",
            server_tls(vec![tls_certificate(&pki.server_rsa)]),
        ),
    ];
    let b = bootstrap(
        0,
        vec![listener_with("pass", 0, vec![tls_inspector()], chains)],
        vec![
            to_port("backend", backend.port, json!({})),
            to_port("terminated", terminated.port("terminated"), json!({})),
        ],
    );
    on_both("tls-passthrough", &b, |proxy| {
        let port = proxy.port("pass");
        let who = proxy.kind.name();
        let r = TlsClient::new(port).sni("passthrough.example.com").run();
        assert!(r.ok(), "{who}: {}", r.0);
        assert_eq!(r.peer_cn(), Some(UPSTREAM_NAME), "{who}");
        let echo = r.echo();
        assert_eq!(echo["upstream"], "backend", "{who}");
        assert_eq!(echo["tls"]["sni"], "passthrough.example.com", "{who}");
        assert_eq!(echoed_header(&echo, "x-forwarded-proto"), None, "{who}");
        let t = TlsClient::new(port).sni("localhost").ca(&pki.ca).run();
        assert_eq!(
            t.upstream().as_deref(),
            Some("terminated"),
            "{who}: {}",
            t.0
        );
        assert_eq!(xfp(&t).as_deref(), Some("https"), "{who}");
        vec![
            format!("passthrough: {}", summary(&r)),
            format!("terminated: {}", summary(&t)),
        ]
    });
}

/// A plaintext HTTP request on a TLS-only port gets no HTTP answer and the connection is
/// closed (`ssl.connection_error`); the listener keeps serving TLS clients.
#[test]
fn plaintext_client_on_a_tls_port() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    // A fixed port: the scenario reads the listener's stats (see `listener_stats`).
    let port = free_port();
    let b = bootstrap(
        0,
        vec![https_listener(
            "tls",
            port,
            "app",
            server_tls(vec![tls_certificate(&pki.server_rsa)]),
        )],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    on_both("tls-plaintext", &b, |proxy| {
        let who = proxy.kind.name();
        let (bytes, http) = plaintext_to_tls_port(port);
        assert!(!http, "{who}: answered plaintext with HTTP: {bytes:?}");
        eprintln!("{who}: a plaintext request got {bytes:?} before the close");
        let r = TlsClient::new(port).sni("localhost").ca(&pki.ca).run();
        assert_eq!(r.status(), Some(200), "{who}: {}", r.0);
        let stats = settled_stats(
            proxy,
            &listener_stats(port),
            &["ssl.handshake", "ssl.connection_error"],
            |s| s["ssl.connection_error"] >= 1 && s["ssl.handshake"] >= 1,
        );
        vec![
            "plaintext: closed without HTTP".to_string(),
            format!("then: {}", summary(&r)),
            format!("stats: {stats:?}"),
        ]
    });
}

/// `forward_client_cert_details: SANITIZE_SET` with `set_current_client_cert_details: {uri:
/// true}`: the upstream gets `x-forwarded-client-cert: Hash=<SHA-256 of the client
/// certificate>;URI=<its SPIFFE URI>` in place of the one the client sent, and
/// `x-forwarded-proto: https`.
#[test]
fn xfcc_sanitize_set_with_the_client_uri() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let b = bootstrap(
        0,
        vec![mtls_listener(
            0,
            "app",
            json!({}),
            json!({
                "forward_client_cert_details": "SANITIZE_SET",
                "set_current_client_cert_details": {"uri": true},
            }),
        )],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&pki.client.cert)
        .output()
        .unwrap()
        .stdout;
    let hash = {
        use sha2::{Digest, Sha256};
        hex(&Sha256::digest(&der))
    };
    let expected = format!("Hash={hash};URI={CLIENT_SPIFFE}");
    on_both("tls-xfcc", &b, |proxy| {
        let port = proxy.port("mtls");
        let who = proxy.kind.name();
        let r = TlsClient::new(port)
            .sni("localhost")
            .ca(&pki.ca)
            .cert(&pki.client)
            .header("x-forwarded-client-cert: By=spiffe://evil;URI=spiffe://evil")
            .run();
        assert_eq!(r.status(), Some(200), "{who}: {}", r.0);
        let echo = r.echo();
        let xfcc: Vec<&str> = echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| {
                h[0].as_str()
                    .unwrap()
                    .eq_ignore_ascii_case("x-forwarded-client-cert")
            })
            .map(|h| h[1].as_str().unwrap())
            .collect();
        assert_eq!(xfcc, vec![expected.as_str()], "{who}");
        assert_eq!(xfp(&r).as_deref(), Some("https"), "{who}");
        format!("xfcc={xfcc:?} xfp=https")
    });
}

/// Static `secrets` in the bootstrap, referenced by name from the DownstreamTlsContext
/// (`tls_certificate_sds_secret_configs`, `validation_context_sds_secret_config`, no
/// `sds_config`): the listener serves that certificate and validates clients with that
/// validation context (SPIFFE SAN match included).
#[test]
fn static_secrets_referenced_by_sds_name() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let tls = downstream_tls(
        json!({
            "tls_certificate_sds_secret_configs": [{"name": "server-cert"}],
            "validation_context_sds_secret_config": {"name": "client-ca"},
        }),
        json!({"require_client_certificate": true}),
    );
    let mut b = bootstrap(
        0,
        vec![https_listener("sds", 0, "app", tls)],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    b["static_resources"]["secrets"] = json!([
        {"name": "server-cert", "tls_certificate": tls_certificate(&pki.server_ecdsa)},
        {"name": "client-ca", "validation_context": validation(
            &pki.ca,
            json!({"match_typed_subject_alt_names": [san_exact("URI", CLIENT_SPIFFE)]}),
        )},
    ]);
    on_both("tls-static-secrets", &b, |proxy| {
        let port = proxy.port("sds");
        let who = proxy.kind.name();
        let base = || TlsClient::new(port).sni("localhost").ca(&pki.ca);
        let good = base().cert(&pki.client).run();
        assert_eq!(good.status(), Some(200), "{who}: {}", good.0);
        assert_eq!(good.peer_cn(), Some("localhost"), "{who}");
        let s = s_client(
            port,
            &[
                "-CAfile",
                pki.ca.to_str().unwrap(),
                "-cert",
                pki.client.cert.to_str().unwrap(),
                "-key",
                pki.client.key.to_str().unwrap(),
            ],
            &http_request_text("localhost", "/"),
        );
        assert_eq!(s.server_key_bits, Some(256), "{who}: the ECDSA secret");
        assert_eq!(s.verify_code, Some(0), "{who}: {}", s.output);
        let other = base().cert(&pki.client_other).run();
        assert!(other.refused(), "{who}: {}", other.0);
        vec![
            format!("client: {}", summary(&good)),
            format!(
                "key bits {:?} verify {:?}",
                s.server_key_bits, s.verify_code
            ),
            format!("other: {}", summary(&other)),
        ]
    });
}

/// Session resumption (stateless tickets, on by default): a second `s_client` with the first
/// one's session is `Reused`, in TLS 1.2 and 1.3 (`ssl.session_reused`).
#[test]
fn session_resumption() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    // A fixed port: the scenario reads the listener's stats (see `listener_stats`).
    let port = free_port();
    let b = bootstrap(
        0,
        vec![https_listener(
            "resume",
            port,
            "app",
            server_tls(vec![tls_certificate(&pki.server_rsa)]),
        )],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    on_both("tls-resumption", &b, |proxy| {
        let who = proxy.kind.name();
        let dir = TempDir::new("tls-sessions");
        let req = http_request_text("localhost", "/");
        let mut seen = Vec::new();
        for v in ["-tls1_2", "-tls1_3"] {
            let sess = dir.file(&format!("session{v}"));
            let sess = sess.to_str().unwrap();
            let first = s_client(port, &[v, "-sess_out", sess], &req);
            assert!(first.handshake_ok(), "{who} {v}: {}", first.output);
            assert!(!first.reused(), "{who} {v}");
            let second = s_client(port, &[v, "-sess_in", sess], &req);
            assert!(second.reused(), "{who} {v}: {}", second.output);
            assert!(second.output.contains("HTTP/1.1 200"), "{who} {v}");
            seen.push(format!(
                "{v}: first {:?}, second {:?}",
                first.session, second.session
            ));
        }
        let stats = settled_stats(
            proxy,
            &listener_stats(port),
            &["ssl.handshake", "ssl.session_reused"],
            |s| s["ssl.handshake"] >= 4,
        );
        seen.push(format!("stats: {stats:?}"));
        seen
    });
}

/// Envoy's listener TLS stats after a fixed mix of connections, on two listeners validating
/// an optional client certificate (`require_client_certificate: false`). "optional" (trusted CA
/// only): no certificate (TLS 1.3, served: `ssl.no_certificate`), a good one (TLS 1.2), an
/// untrusted issuer (`ssl.fail_verify_error`), plaintext (`ssl.connection_error`). "san" (plus
/// a SPIFFE SAN matcher): a good certificate, a wrong SAN (`ssl.fail_verify_san`), and no
/// certificate — refused there too (`ssl.fail_verify_no_cert`): with a SAN matcher Envoy
/// requires a certificate whatever require_client_certificate says. Every counter read must
/// equal Envoy's.
#[test]
fn tls_stats_after_a_mix_of_connections() {
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    // Fixed ports: the scenario reads the listeners' stats (see `listener_stats`).
    let (optional, san) = (free_port(), free_port());
    let tls = |validation_extra: Value| {
        downstream_tls(
            common_tls(
                vec![tls_certificate(&pki.server_rsa)],
                json!({"validation_context": validation(&pki.ca, validation_extra)}),
            ),
            json!({"require_client_certificate": false}),
        )
    };
    let b = bootstrap(
        0,
        vec![
            https_listener("optional", optional, "app", tls(json!({}))),
            https_listener(
                "san",
                san,
                "app",
                tls(json!({"match_typed_subject_alt_names": [san_exact("URI", CLIENT_SPIFFE)]})),
            ),
        ],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    const NAMES: &[&str] = &[
        "ssl.handshake",
        "ssl.connection_error",
        "ssl.no_certificate",
        "ssl.fail_verify_error",
        "ssl.fail_verify_san",
        "ssl.fail_verify_no_cert",
        "ssl.session_reused",
        "ssl.versions.TLSv1.2",
        "ssl.versions.TLSv1.3",
        "downstream_cx_total",
    ];
    on_both("tls-stats", &b, |proxy| {
        let who = proxy.kind.name();
        let base = |port| TlsClient::new(port).sni("localhost").ca(&pki.ca);
        let mut seen = Vec::new();
        let none = base(optional).only("TLSv1_3").run();
        assert_eq!(none.status(), Some(200), "{who}: no cert: {}", none.0);
        let good = base(optional).cert(&pki.client).only("TLSv1_2").run();
        assert_eq!(good.status(), Some(200), "{who}: good cert: {}", good.0);
        let untrusted = base(optional).cert(&pki.untrusted_client).run();
        assert!(untrusted.refused(), "{who}: untrusted: {}", untrusted.0);
        let (_, http) = plaintext_to_tls_port(optional);
        assert!(!http, "{who}");
        let san_good = base(san).cert(&pki.client).run();
        assert_eq!(san_good.status(), Some(200), "{who}: {}", san_good.0);
        let wrong_san = base(san).cert(&pki.client_other).run();
        assert!(wrong_san.refused(), "{who}: wrong SAN: {}", wrong_san.0);
        let san_none = base(san).run();
        assert!(
            san_none.refused(),
            "{who}: no cert with a SAN matcher: {}",
            san_none.0
        );
        for r in [&none, &good, &untrusted, &san_good, &wrong_san, &san_none] {
            seen.push(summary(r));
        }
        for (port, cx) in [(optional, 4), (san, 3)] {
            let prefix = listener_stats(port);
            let stats = settled_stats(proxy, &prefix, NAMES, |s| {
                s["downstream_cx_total"] >= cx
                    && s["ssl.handshake"]
                        + s["ssl.connection_error"]
                        + s["ssl.fail_verify_error"]
                        + s["ssl.fail_verify_san"]
                        + s["ssl.fail_verify_no_cert"]
                        >= cx
            });
            let all = proxy.stats();
            let nonzero: Vec<String> = all
                .iter()
                .filter(|(k, v)| k.starts_with(&format!("{prefix}ssl.")) && **v > 0)
                .map(|(k, v)| format!("{}={v}", &k[prefix.len()..]))
                .collect();
            eprintln!("{who}: non-zero ssl stats of 127.0.0.1:{port}: {nonzero:?}");
            seen.push(format!("stats: {stats:?}"));
        }
        seen
    });
}

// ---------------------------------------------------------------------------------------------
// Filter-chain matching on addresses and ports

/// Connects to 127.0.0.1:`port` from `ip`:`src_port` (0: any) and reads the first line the
/// relayed upstream sends (`Upstream::hello`), or `closed` when the proxy closes instead.
fn hello_via(port: u16, ip: [u8; 4], src_port: u16) -> String {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    sock.set_reuse_address(true).unwrap();
    sock.bind(&std::net::SocketAddr::from((ip, src_port)).into())
        .unwrap();
    sock.connect_timeout(&addr(port).into(), std::time::Duration::from_secs(5))
        .unwrap();
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(SOON)).unwrap();
    match read_line(&mut s) {
        Ok(line) if !line.is_empty() => line,
        _ => "closed".into(),
    }
}

/// Plain-TCP filter-chain matching (no TLS): `source_prefix_ranges`, `source_ports` and the
/// chain without a match as the fallback; and Envoy's order of criteria — a chain naming the
/// listener's `destination_port` takes that port's connections away from the port-less chains,
/// so a connection it does not match (wrong source) matches nothing and is closed
/// (`listener.<addr>.no_filter_chain_match`) even though a catch-all chain exists.
#[test]
fn filter_chain_match_on_source_and_destination_port() {
    let ids = ["from-2", "src-port", "default", "port-src4", "catch-all"];
    let hellos: Vec<Upstream> = ids.iter().map(|id| Upstream::hello(id)).collect();
    // Fixed ports: the chains match on them (`destination_port`, `source_ports`), and the
    // scenario reads the listeners' stats.
    let (p1, p2, src_port) = (free_port(), free_port(), free_port());
    let chain = |m: Value, id: &str| filter_chain(m, vec![tcp_proxy_filter(id, id)], None);
    let ip32 = |ip: &str| json!([{"address_prefix": ip, "prefix_len": 32}]);
    let b = bootstrap(
        0,
        vec![
            listener_with(
                "sources",
                p1,
                vec![],
                vec![
                    chain(json!({"source_prefix_ranges": ip32("127.0.0.2")}), "from-2"),
                    chain(json!({"source_ports": [src_port]}), "src-port"),
                    chain(Value::Null, "default"),
                ],
            ),
            listener_with(
                "port",
                p2,
                vec![],
                vec![
                    chain(
                        json!({"destination_port": p2, "source_prefix_ranges": ip32("127.0.0.4")}),
                        "port-src4",
                    ),
                    chain(Value::Null, "catch-all"),
                ],
            ),
        ],
        ids.iter()
            .zip(&hellos)
            .map(|(id, u)| to_port(id, u.port, json!({})))
            .collect(),
    );
    on_both("filter-chain-match", &b, |proxy| {
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        for (label, port, ip, sport, expect) in [
            ("from 127.0.0.1", p1, [127, 0, 0, 1], 0, "default"),
            ("from 127.0.0.2", p1, [127, 0, 0, 2], 0, "from-2"),
            (
                "from the source port",
                p1,
                [127, 0, 0, 1],
                src_port,
                "src-port",
            ),
            (
                "port chain, from 127.0.0.4",
                p2,
                [127, 0, 0, 4],
                0,
                "port-src4",
            ),
            (
                "port chain, from 127.0.0.1",
                p2,
                [127, 0, 0, 1],
                0,
                "closed",
            ),
        ] {
            let got = hello_via(port, ip, sport);
            assert_eq!(got, expect, "{who}: {label}");
            seen.push(format!("{label}: {got}"));
        }
        let stats = settled_stats(
            proxy,
            &listener_stats(p2),
            &["no_filter_chain_match"],
            |s| s["no_filter_chain_match"] >= 1,
        );
        seen.push(format!("stats: {stats:?}"));
        seen
    });
}

/// The http_inspector sets the application protocol of plaintext connections: an HTTP/1.1
/// request matches the chain with `application_protocols: [http/1.1]` (the connection
/// manager), other bytes the chain without it (a tcp_proxy to an echo server); with the
/// tls_inspector beside it, TLS still reaches its own chain. Stats `http_inspector.*`. (Had
/// the HTTP chain also said `transport_protocol: raw_buffer`, it alone would be left for
/// plaintext at the transport level — the more specific value wins a level — and non-HTTP
/// bytes would match no chain at all.)
#[test]
fn http_inspector_splits_http_from_other_plaintext() {
    const HTTP_INSPECTOR: &str =
        "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
    let pki = pki();
    let ups = EchoUpstreams::start(&["http", "tls"], None);
    let echo = Upstream::echo();
    let chains = vec![
        https_chain(
            json!({"transport_protocol": "tls"}),
            "tls",
            server_tls(vec![tls_certificate(&pki.server_rsa)]),
        ),
        filter_chain(
            json!({"application_protocols": ["http/1.1"]}),
            vec![hcm_filter(manager("http", json!({})))],
            None,
        ),
        filter_chain(Value::Null, vec![tcp_proxy_filter("raw", "raw")], None),
    ];
    let inspectors = vec![
        tls_inspector(),
        json!({"name": "envoy.filters.listener.http_inspector",
               "typed_config": {"@type": HTTP_INSPECTOR}}),
    ];
    let b = bootstrap(
        0,
        vec![listener_with("inspect", 0, inspectors, chains)],
        vec![
            to_port("http", ups.port("http"), json!({})),
            to_port("tls", ups.port("tls"), json!({})),
            to_port("raw", echo.port, json!({})),
        ],
    );
    on_both("http-inspector", &b, |proxy| {
        let port = proxy.port("inspect");
        let who = proxy.kind.name();
        let c = curl(&[&format!("http://127.0.0.1:{port}/")]);
        let body: Value = serde_json::from_str(&c.body).unwrap();
        assert_eq!(body["upstream"], "http", "{who}");
        let mut s = connect(port);
        s.write_all(b"not http at all\r\n").unwrap();
        let line = read_line(&mut s).unwrap();
        assert_eq!(
            line, "not http at all\r",
            "{who}: echoed through the raw chain"
        );
        drop(s);
        let r = TlsClient::new(port).sni("localhost").ca(&pki.ca).run();
        assert_eq!(r.upstream().as_deref(), Some("tls"), "{who}: {}", r.0);
        let stats = settled_stats(
            proxy,
            "http_inspector.",
            &[
                "http10_found",
                "http11_found",
                "http2_found",
                "http_not_found",
            ],
            |s| s["http11_found"] >= 1 && s["http_not_found"] >= 1,
        );
        vec![
            "http: http".to_string(),
            "raw: echoed".to_string(),
            format!("tls: {}", summary(&r)),
            format!("http_inspector stats: {stats:?}"),
        ]
    });
}

// ---------------------------------------------------------------------------------------------
// SDS

/// Secrets over xDS (tests/peers/xds_server.py): one listener takes its certificate over ADS
/// (`sds_config: {ads: {}}`), another over a separate SDS stream to the same control plane
/// (`api_config_source` GRPC, as Istio's `sds-grpc`). Both serve the first secret; after the
/// control plane pushes a new one (another certificate), new connections get it, and again
/// after it is pushed back.
#[test]
fn sds_secrets_over_ads_and_an_sds_stream_rotate() {
    use common::xds::{XdsServer, HTTP_OPTIONS, SECRET};
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let secret = |ck: &CertKey| {
        json!({"resources": {SECRET: [
            {"name": "server-cert", "tls_certificate": tls_certificate_inline(ck)},
        ]}})
    };
    let dir = TempDir::new("tls-sds");
    let script = dir.file("resources.json");
    std::fs::write(&script, secret(&pki.server_rsa).to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let grpc = json!({"envoy_grpc": {"cluster_name": "xds_cluster"}});
    let sds_tls = |sds_config: Value| {
        downstream_tls(
            json!({"tls_certificate_sds_secret_configs": [
                {"name": "server-cert", "sds_config": sds_config}]}),
            json!({}),
        )
    };
    let xds_cluster = to_port(
        "xds_cluster",
        xds.ads_port,
        json!({"typed_extension_protocol_options": {HTTP_OPTIONS: {
            "@type": format!("type.googleapis.com/{HTTP_OPTIONS}"),
            "explicit_http_config": {"http2_protocol_options": {}},
        }}}),
    );
    let mut b = bootstrap(
        0,
        vec![
            https_listener(
                "over-ads",
                0,
                "app",
                sds_tls(json!({"ads": {}, "resource_api_version": "V3"})),
            ),
            https_listener(
                "over-sds",
                0,
                "app",
                sds_tls(json!({"resource_api_version": "V3", "api_config_source": {
                    "api_type": "GRPC", "transport_api_version": "V3",
                    "grpc_services": [grpc.clone()]}})),
            ),
        ],
        vec![to_port("app", app.port("app"), json!({})), xds_cluster],
    );
    b["node"] = json!({"id": "tls-sds", "cluster": "xds-test"});
    b["dynamic_resources"] = json!({"ads_config": {
        "api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [grpc]}});
    on_both("tls-sds", &b, |proxy| {
        let (over_ads, over_sds) = (proxy.port("over-ads"), proxy.port("over-sds"));
        let who = proxy.kind.name();
        let cn = |port| {
            TlsClient::new(port)
                .sni("localhost")
                .handshake_only()
                .run()
                .peer_cn()
                .map(String::from)
        };
        let mut seen = Vec::new();
        for (step, ck, expect) in [
            ("initial", None, "localhost"),
            ("rotated", Some(&pki.domain1), "domain1.example.com"),
            ("rotated back", Some(&pki.server_rsa), "localhost"),
        ] {
            if let Some(ck) = ck {
                xds.push(&secret(ck));
            }
            for (label, port) in [("ads", over_ads), ("sds stream", over_sds)] {
                wait_for(SOON, &format!("{who} {label} {step}: CN {expect}"), || {
                    (cn(port).as_deref() == Some(expect)).then_some(())
                });
                let r = TlsClient::new(port).sni("localhost").run();
                assert_eq!(r.status(), Some(200), "{who} {label} {step}: {}", r.0);
                seen.push(format!("{label} {step}: {}", summary(&r)));
            }
        }
        seen
    });
}

/// A `tls_certificate_sds_secret_configs` DownstreamTlsContext naming secret `name` from
/// `sds_config`.
fn sds_tls(name: &str, sds_config: Value) -> Value {
    downstream_tls(
        json!({"tls_certificate_sds_secret_configs": [{"name": name, "sds_config": sds_config}]}),
        json!({}),
    )
}

/// The CN of the certificate a new connection to `port` gets (None: no handshake).
fn served_cn(port: u16) -> Option<String> {
    let r = TlsClient::new(port).sni("localhost").handshake_only().run();
    r.peer_cn().map(String::from)
}

/// Waits until new connections to `port` get the certificate with CN `cn`.
fn wait_cn(who: &str, port: u16, cn: &str) {
    wait_for(
        SOON,
        &format!("{who}: new handshakes on {port} to get CN {cn}"),
        || (served_cn(port).as_deref() == Some(cn)).then_some(()),
    );
}

/// `/certs` as sorted lines: each context's CA and chain certificates (path, serial, SANs,
/// expiry).
fn certs_lines(proxy: &HttpProxy) -> Vec<String> {
    let certs = http_get(proxy.admin, "/certs").unwrap().json();
    let describe = |c: &Value| {
        let sans: Vec<String> = c["subject_alt_names"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|san| san.as_object().unwrap())
            .map(|(kind, name)| format!("{kind}:{}", name.as_str().unwrap()))
            .collect();
        format!(
            "{} serial {} [{}] until {}",
            c["path"].as_str().unwrap(),
            c["serial_number"].as_str().unwrap(),
            sans.join(","),
            c["expiration_time"].as_str().unwrap()
        )
    };
    let mut lines: Vec<String> = certs["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|context| {
            let list = |field: &str| -> Vec<String> {
                context[field]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(describe)
                    .collect()
            };
            format!("ca {:?} chain {:?}", list("ca_cert"), list("cert_chain"))
        })
        .collect();
    lines.sort();
    lines
}

/// The secrets dump of `proxy`'s /config_dump.
fn secrets_dump(proxy: &HttpProxy) -> Value {
    let dump = http_get(proxy.admin, "/config_dump").unwrap().json();
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"].as_str().unwrap().ends_with("SecretsConfigDump"))
        .cloned()
        .expect("a SecretsConfigDump")
}

/// File-based SDS: one listener reads its secret from a file holding the PEM inline
/// (`path_config_source.path`, the file watched), another from a file naming the certificate
/// and key files, in a `watched_directory`. Both serve the first certificate; after each file
/// is replaced (written beside it, then renamed over it) new handshakes get the new one, while
/// keep-alive connections opened before go on serving requests. `/certs` lists the contexts'
/// certificates (and the CA of the first one's validation context), and the secrets dump
/// redacts the private keys.
#[test]
fn sds_from_files_rotates_without_closing_connections() {
    use common::xds::SECRET;
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let dir = TempDir::new("tls-sds-file");
    let watched = dir.file("watched");
    std::fs::create_dir_all(&watched).unwrap();
    let inline_file = dir.file("inline.json");
    let named_file = watched.join("named.json");
    let write = |ck: &CertKey| {
        let secret = |certificate: Value| {
            json!({"resources": [
                {"@type": SECRET, "name": "server-cert", "tls_certificate": certificate}]})
            .to_string()
        };
        write_atomic(&inline_file, &secret(tls_certificate_inline(ck)));
        write_atomic(&named_file, &secret(tls_certificate(ck)));
    };
    write(&pki.server_rsa);
    let mut b = bootstrap(
        0,
        vec![
            https_listener(
                "by-path",
                0,
                "app",
                downstream_tls(
                    json!({
                        "tls_certificate_sds_secret_configs": [{"name": "server-cert", "sds_config":
                            {"path_config_source": {"path": inline_file}, "resource_api_version": "V3"}}],
                        "validation_context": validation(&pki.ca, json!({})),
                    }),
                    json!({"require_client_certificate": false}),
                ),
            ),
            https_listener(
                "by-dir",
                0,
                "app",
                sds_tls(
                    "server-cert",
                    json!({"path_config_source": {"path": named_file,
                           "watched_directory": {"path": watched}}}),
                ),
            ),
        ],
        vec![to_port("app", app.port("app"), json!({}))],
    );
    b["node"] = json!({"id": "tls-sds-file", "cluster": "test"});
    let trusted = https_config(&pki.ca);
    on_both("tls-sds-file", &b, |proxy| {
        let (by_path, by_dir) = (proxy.port("by-path"), proxy.port("by-dir"));
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        for port in [by_path, by_dir] {
            assert_eq!(served_cn(port).as_deref(), Some("localhost"), "{who}");
        }
        let mut kept: Vec<Https> = [by_path, by_dir]
            .into_iter()
            .map(|port| Https::connect(port, &trusted).unwrap())
            .collect();
        for conn in &mut kept {
            assert_eq!(conn.get("/").unwrap().status, 200, "{who}");
        }
        seen.push(format!("certs before: {:?}", certs_lines(proxy)));
        write(&pki.domain1);
        for port in [by_path, by_dir] {
            wait_cn(who, port, "domain1.example.com");
        }
        for (conn, label) in kept.iter_mut().zip(["by-path", "by-dir"]) {
            let r = conn.get("/").unwrap();
            assert_eq!(r.status, 200, "{who}: the keep-alive connection to {label}");
            assert_eq!(conn.peer_certificate(), leaf_der(&pki.server_rsa), "{who}");
            seen.push(format!(
                "{label} keep-alive after the rotation: {}",
                r.status
            ));
        }
        seen.push(format!("certs after: {:?}", certs_lines(proxy)));
        let secrets = secrets_dump(proxy);
        let active = secrets["dynamic_active_secrets"].as_array().unwrap();
        assert_eq!(active.len(), 2, "{who}: {secrets}");
        for secret in active {
            let key = &secret["secret"]["tls_certificate"]["private_key"];
            let redacted =
                key["inline_string"] == "[redacted]" || key["inline_bytes"] == "W3JlZGFjdGVkXQ==";
            assert!(redacted, "{who}: the private key is redacted: {key}");
        }
        let stats = proxy.stats();
        assert_eq!(
            stats.get("sds.server-cert.update_rejected"),
            Some(&0),
            "{who}"
        );
        // The next run starts from the first certificate again.
        write(&pki.server_rsa);
        for port in [by_path, by_dir] {
            wait_cn(who, port, "localhost");
        }
        seen
    });
}

/// A secret version that cannot serve is NACKed and the last good one keeps serving: a key
/// that does not match the certificate, then a validation context where a certificate is
/// named. A good version afterwards is taken. shardproxy's NACK names the field.
#[test]
fn sds_bad_secret_is_nacked_and_the_last_good_one_serves() {
    use common::xds::{XdsServer, HTTP_OPTIONS, SECRET};
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let secret = |body: Value| {
        let mut secret = json!({"name": "server-cert"});
        merge(&mut secret, body);
        json!({"resources": {SECRET: [secret]}})
    };
    let good = |ck: &CertKey| secret(json!({"tls_certificate": tls_certificate_inline(ck)}));
    let mismatched = secret(json!({"tls_certificate": {
        "certificate_chain": {"inline_string": pki.server_rsa.cert_pem()},
        "private_key": {"inline_string": pki.domain1.key_pem()},
    }}));
    let wrong_kind = secret(json!({"validation_context": {
        "trusted_ca": {"inline_string": std::fs::read_to_string(&pki.ca).unwrap()}}}));
    let dir = TempDir::new("tls-sds-nack");
    let script = dir.file("resources.json");
    std::fs::write(&script, good(&pki.server_rsa).to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let xds_cluster = to_port(
        "xds_cluster",
        xds.ads_port,
        json!({"typed_extension_protocol_options": {HTTP_OPTIONS: {
            "@type": format!("type.googleapis.com/{HTTP_OPTIONS}"),
            "explicit_http_config": {"http2_protocol_options": {}},
        }}}),
    );
    let mut b = bootstrap(
        0,
        vec![https_listener(
            "over-ads",
            0,
            "app",
            sds_tls(
                "server-cert",
                json!({"ads": {}, "resource_api_version": "V3"}),
            ),
        )],
        vec![to_port("app", app.port("app"), json!({})), xds_cluster],
    );
    let node = "tls-sds-nack";
    b["node"] = json!({"id": node, "cluster": "xds-test"});
    b["dynamic_resources"] = json!({"ads_config": {
        "api_type": "GRPC", "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]}});
    let nacks = || {
        let record = xds.record(node, SECRET);
        record["nacked"].as_array().cloned().unwrap_or_default()
    };
    on_both("tls-sds-nack", &b, |proxy| {
        let port = proxy.port("over-ads");
        let who = proxy.kind.name();
        wait_cn(who, port, "localhost");
        let mut seen = vec![format!("initial: {:?}", served_cn(port))];
        for (label, bad, field) in [
            (
                "mismatched key",
                &mismatched,
                "secrets[\"server-cert\"].tls_certificate.private_key",
            ),
            (
                "validation context",
                &wrong_kind,
                "is a validation_context, not a tls_certificate",
            ),
        ] {
            let before = nacks().len();
            xds.push(bad);
            let nack = wait_for(SOON, &format!("{who} to NACK the {label}"), || {
                nacks().get(before).cloned()
            });
            let message = nack["error_detail"]["message"].as_str().unwrap_or("");
            if proxy.kind == Kind::Shardproxy {
                assert!(message.contains(field), "{who}: {message}");
            }
            let r = TlsClient::new(port).sni("localhost").run();
            assert_eq!(r.status(), Some(200), "{who}: {}", r.0);
            seen.push(format!(
                "after the {label}: NACK code {}, {}",
                nack["error_detail"]["code"],
                summary(&r)
            ));
        }
        let stats = proxy.stats();
        seen.push(format!(
            "sds.server-cert.update_rejected {:?}",
            stats.get("sds.server-cert.update_rejected")
        ));
        if proxy.kind == Kind::Shardproxy {
            // Envoy lists the rejected version as active; shardproxy the one that serves.
            let secrets = secrets_dump(proxy);
            let active = &secrets["dynamic_active_secrets"][0];
            assert!(active["secret"]["tls_certificate"].is_object(), "{secrets}");
            assert_eq!(active["client_status"], "NACKED", "{secrets}");
        }
        xds.push(&good(&pki.domain1));
        wait_cn(who, port, "domain1.example.com");
        seen.push(format!("good again: {:?}", served_cn(port)));
        // The next run starts from the first certificate again.
        xds.push(&good(&pki.server_rsa));
        wait_cn(who, port, "localhost");
        seen
    });
}

/// A listener that arrives over LDS naming a secret the control plane does not have yet
/// warms: it takes no connection, and the config dump shows it warming with the secret; once
/// the secret is pushed it serves it.
#[test]
fn a_listener_warms_until_its_secret_arrives() {
    use common::xds::{ads_bootstrap, XdsServer, LISTENER, SECRET};
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let dir = TempDir::new("tls-sds-warm");
    let script = dir.file("resources.json");
    let empty = json!({"resources": {LISTENER: [], SECRET: []}});
    std::fs::write(&script, empty.to_string()).unwrap();
    let xds = XdsServer::start(&script);
    let node = "tls-sds-warm";
    // A fixed port: the scenario connects to it while the listener is still warming.
    let port = free_port();
    let mut b = ads_bootstrap(0, node, xds.ads_port, "GRPC");
    b["dynamic_resources"]
        .as_object_mut()
        .unwrap()
        .remove("cds_config");
    b["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(to_port("app", app.port("app"), json!({})));
    let listener = https_listener(
        "late-tls",
        port,
        "app",
        sds_tls(
            "late",
            json!({"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}),
        ),
    );
    on_both("tls-sds-warm", &b, |proxy| {
        let who = proxy.kind.name();
        let versions = xds.push(&json!({"resources": {LISTENER: [listener.clone()], SECRET: []}}));
        xds.wait_ack(node, LISTENER, &versions[LISTENER]);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let warming = TlsClient::new(port).sni("localhost").handshake_only().run();
        assert!(!warming.ok(), "{who}: a warming listener took a handshake");
        let dump = http_get(proxy.admin, "/config_dump").unwrap().json();
        let find = |suffix: &str| {
            dump["configs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["@type"].as_str().unwrap().ends_with(suffix))
                .cloned()
                .unwrap()
        };
        let listener_state = &find("ListenersConfigDump")["dynamic_listeners"][0];
        let secret_state = &find("SecretsConfigDump")["dynamic_warming_secrets"][0];
        let mut seen = vec![
            format!("handshake while warming: ok={}", warming.ok()),
            format!(
                "listener {} warming {} active {}",
                listener_state["name"],
                listener_state["warming_state"].is_object(),
                listener_state["active_state"].is_object()
            ),
            format!(
                "warming secret {} {}",
                secret_state["name"], secret_state["version_info"]
            ),
        ];
        xds.push(&json!({"resources": {SECRET: [
            {"name": "late", "tls_certificate": tls_certificate_inline(&pki.server_rsa)}]}}));
        wait_cn(who, port, "localhost");
        let r = TlsClient::new(port).sni("localhost").run();
        assert_eq!(r.status(), Some(200), "{who}: {}", r.0);
        seen.push(format!("after the secret: {}", summary(&r)));
        let active = secrets_dump(proxy)["dynamic_active_secrets"][0]["name"].clone();
        seen.push(format!("active secret {active}"));
        // The next run starts without the listener.
        let versions = xds.push(&empty);
        xds.wait_ack(node, LISTENER, &versions[LISTENER]);
        seen
    });
}

/// Certificate rotation during a load run: for 10 s, three clients make HTTPS requests, each
/// on a new connection (handshake verified against the CA), while the control plane rotates
/// the listener's certificate five times over its SDS stream — to an `sds-grpc` cluster on a
/// unix socket, as Istio's — (RSA and ECDSA in turn). Not a request fails, and both
/// certificates are served.
#[test]
fn certificate_rotation_under_load_fails_no_request() {
    use common::xds::{XdsServer, HTTP_OPTIONS, SECRET};
    use std::{
        sync::atomic::{AtomicBool, Ordering},
        thread,
        time::Duration,
    };
    let pki = pki();
    let secret = |ck: &CertKey| {
        json!({"resources": {SECRET: [
            {"name": "server-cert", "tls_certificate": tls_certificate_inline(ck)}]}})
    };
    let dir = TempDir::new("tls-sds-load");
    let script = dir.file("resources.json");
    std::fs::write(&script, secret(&pki.server_rsa).to_string()).unwrap();
    let socket = dir.file("sds.sock");
    let xds = XdsServer::start_with(&script, 0, &[&socket]);
    let routes = json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]});
    let tls = sds_tls(
        "server-cert",
        json!({"resource_api_version": "V3", "initial_fetch_timeout": "0s", "api_config_source": {
            "api_type": "GRPC", "transport_api_version": "V3",
            "set_node_on_first_message_only": true,
            "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]}}),
    );
    let chain = filter_chain(
        Value::Null,
        vec![hcm_filter(hcm("ingress", routes, vec![], json!({})))],
        Some(tls),
    );
    let sds_cluster = json!({
        "name": "sds-grpc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {HTTP_OPTIONS: {
            "@type": format!("type.googleapis.com/{HTTP_OPTIONS}"),
            "explicit_http_config": {"http2_protocol_options": {}},
        }},
        "load_assignment": {"cluster_name": "sds-grpc", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"pipe": {"path": socket}}}}]}]},
    });
    let mut b = bootstrap(
        0,
        vec![listener_with("load", 0, vec![], vec![chain])],
        vec![sds_cluster],
    );
    b["node"] = json!({"id": "tls-sds-load", "cluster": "test"});
    let trusted = https_config(&pki.ca);
    let (rsa, ecdsa) = (leaf_der(&pki.server_rsa), leaf_der(&pki.server_ecdsa));
    on_both("tls-sds-load", &b, |proxy| {
        let port = proxy.port("load");
        let who = proxy.kind.name();
        xds.push(&secret(&pki.server_rsa));
        wait_cn(who, port, "localhost");
        let stop = AtomicBool::new(false);
        let (results, rotations) = thread::scope(|scope| {
            let clients: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        let (mut served, mut failures) = ([0usize; 2], Vec::new());
                        while !stop.load(Ordering::Relaxed) {
                            let exchange = Https::connect(port, &trusted).and_then(|mut conn| {
                                Ok((conn.peer_certificate(), conn.get("/")?.status))
                            });
                            match exchange {
                                Ok((cert, 200)) if cert == rsa => served[0] += 1,
                                Ok((cert, 200)) if cert == ecdsa => served[1] += 1,
                                Ok((_, status)) => failures.push(format!("status {status}")),
                                Err(e) => failures.push(e.to_string()),
                            }
                        }
                        (served, failures)
                    })
                })
                .collect();
            let mut rotations = 0;
            for step in 0..5 {
                thread::sleep(Duration::from_millis(1700));
                let ck = [&pki.server_ecdsa, &pki.server_rsa][step % 2];
                xds.push(&secret(ck));
                rotations += 1;
            }
            thread::sleep(Duration::from_millis(1500));
            stop.store(true, Ordering::Relaxed);
            let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
            (results, rotations)
        });
        let served = results
            .iter()
            .fold([0, 0], |acc, (s, _)| [acc[0] + s[0], acc[1] + s[1]]);
        let failures: Vec<&String> = results.iter().flat_map(|(_, f)| f).collect();
        eprintln!("{who}: {served:?} requests served (RSA, ECDSA) over {rotations} rotations");
        assert!(failures.is_empty(), "{who}: failed requests: {failures:?}");
        assert!(served[0] > 10 && served[1] > 10, "{who}: {served:?}");
        vec![
            format!("rotations {rotations}"),
            format!("failed requests {}", failures.len()),
            "both certificates served".to_string(),
        ]
    });
}

/// `transport_socket_matches` as Istio's auto mTLS writes them: endpoints labelled
/// `tlsMode: istio` get the TLS socket, the others the `tlsMode-disabled` raw socket. Two
/// clusters with the same matches, one with a labelled TLS host and one with an unlabelled
/// plaintext host: each request succeeds because each host gets the socket it speaks.
#[test]
fn transport_socket_matches_pick_the_socket_by_endpoint_metadata() {
    let pki = pki();
    let secure = TlsUpstream::start("secure", &pki.upstream, &[]);
    let plain = EchoUpstreams::start(&["plain"], None);
    let cluster = |name: &str, port: u16, labels: Value| {
        json!({
            "name": name,
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}},
                "metadata": {"filter_metadata": {"envoy.transport_socket_match": labels}}
            }]}]},
            "transport_socket_matches": [
                {
                    "name": "tlsMode-istio",
                    "match": {"tlsMode": "istio"},
                    "transport_socket": upstream_tls(
                        json!({"validation_context": validation(&pki.ca, json!({}))}),
                        json!({"sni": UPSTREAM_NAME}),
                    ),
                },
                {
                    "name": "tlsMode-disabled",
                    "match": {},
                    "transport_socket": {"name": "envoy.transport_sockets.raw_buffer",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}},
                },
            ],
        })
    };
    let route_config = json!({"name": "local", "virtual_hosts": [
        {"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/tls"}, "route": {"cluster": "labelled"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "unlabelled"}}]}]});
    let b = bootstrap(
        0,
        vec![http_listener(
            "plain",
            0,
            hcm("ingress", route_config, vec![], json!({})),
        )],
        vec![
            cluster("labelled", secure.port, json!({"tlsMode": "istio"})),
            cluster("unlabelled", plain.port("plain"), json!({})),
        ],
    );
    on_both("tls-socket-matches", &b, |proxy| {
        let port = proxy.port("plain");
        let mut seen = Vec::new();
        for path in ["/tls", "/plain"] {
            let c = curl(&[&format!("http://127.0.0.1:{port}{path}")]);
            assert_eq!(c.status, 200, "{}: {}", proxy.kind.name(), c.body);
            let echo: Value = serde_json::from_str(&c.body).unwrap_or(Value::Null);
            seen.push(format!(
                "{path}: 200 tls={}",
                echo["tls"]["version"].is_string()
            ));
        }
        let stats = settled_stats(proxy, "cluster.labelled.", &["ssl.handshake"], |s| {
            s["ssl.handshake"] >= 1
        });
        seen.push(format!("{stats:?}"));
        seen
    });
}

/// What a raw client sees from a listener after sending `bytes` and waiting up to `wait`:
/// `closed` (EOF or reset) or `open`, and how long until the close.
fn raw_outcome(port: u16, bytes: &[u8], wait: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut s = connect(port);
    s.write_all(bytes).unwrap();
    let outcome = match next_outcome(&mut s, wait) {
        Outcome::Eof | Outcome::Reset => "closed",
        Outcome::Timeout => "open",
        Outcome::Data(_) => "answered",
    };
    (outcome.to_string(), started.elapsed())
}

/// TLS handshake records carrying the start of a ClientHello that announces `hello_len`
/// bytes: `sent` bytes of it (zeros after the handshake header), in records of `record`
/// bytes.
fn hello_records(hello_len: u32, sent: usize, record: usize) -> Vec<u8> {
    let mut message = vec![1];
    message.extend_from_slice(&hello_len.to_be_bytes()[1..]);
    message.resize(sent, 0);
    let mut out = Vec::new();
    for chunk in message.chunks(record) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Bad input to the TLS inspector, as Envoy handles it: a connection that sends nothing is
/// closed at `listener_filters_timeout` (`downstream_pre_cx_timeout`); with
/// `continue_on_listener_filters_timeout` it goes on to the plaintext chain instead; a
/// ClientHello announced larger than 16 KiB is refused at once (`client_hello_too_large`);
/// a truncated one whose client then closes is closed. Other connections are served
/// throughout.
#[test]
fn tls_inspector_bad_input_timeout_and_oversized_hello() {
    let pki = pki();
    let ups = EchoUpstreams::start(&["secure", "plain"], None);
    // Fixed ports: the scenario reads the listeners' stats (see `listener_stats`).
    let (strict, lenient) = (free_port(), free_port());
    let listener = |name: &str, port: u16, continue_on_timeout: bool| {
        let chains = vec![
            https_chain(
                json!({"transport_protocol": "tls"}),
                "secure",
                server_tls(vec![tls_certificate(&pki.server_rsa)]),
            ),
            filter_chain(
                json!({"transport_protocol": "raw_buffer"}),
                vec![hcm_filter(manager("plain", json!({})))],
                None,
            ),
        ];
        let mut l = listener_with(name, port, vec![tls_inspector()], chains);
        l["listener_filters_timeout"] = json!("0.5s");
        l["continue_on_listener_filters_timeout"] = json!(continue_on_timeout);
        l
    };
    let b = bootstrap(
        0,
        vec![
            listener("strict", strict, false),
            listener("lenient", lenient, true),
        ],
        vec![
            to_port("secure", ups.port("secure"), json!({})),
            to_port("plain", ups.port("plain"), json!({})),
        ],
    );
    on_both("tls-inspector-bad-input", &b, |proxy| {
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        // Nothing sent: closed at the timeout (not before, not much after).
        let (outcome, took) = raw_outcome(strict, b"", Duration::from_secs(3));
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(2500),
            "{who}: closed after {took:?}"
        );
        seen.push(format!("silent client: {outcome}"));
        // Lenient: after the timeout the plaintext chain takes the connection.
        let started = Instant::now();
        let mut s = connect(lenient);
        std::thread::sleep(Duration::from_millis(700));
        s.write_all(b"GET /late HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let head = read_line(&mut s).unwrap_or_default();
        assert!(started.elapsed() >= Duration::from_millis(500));
        seen.push(format!("lenient, late request: {head}"));
        // A ClientHello announcing more than 16 KiB is no TLS at all (BoringSSL's limit): the
        // plaintext chain answers the garbage.
        let (outcome, _) = raw_outcome(
            strict,
            &hello_records(20_000, 19_000, 16379),
            Duration::from_secs(3),
        );
        seen.push(format!("hello over 16 KiB: {outcome}"));
        // One under 16 KiB in 1000-byte records: with the record headers it needs more than
        // max_client_hello_size bytes, and is refused at once.
        let (outcome, took) = raw_outcome(
            strict,
            &hello_records(16_300, 16_304, 1000),
            Duration::from_secs(3),
        );
        assert!(
            took < Duration::from_millis(400),
            "{who}: refused after {took:?}"
        );
        seen.push(format!("hello too large: {outcome}"));
        // A truncated ClientHello, then the client's close: the proxy closes too.
        let mut s = connect(strict);
        s.write_all(&hello_records(300, 40, 1000)).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let outcome = next_outcome(&mut s, Duration::from_secs(3));
        seen.push(format!("truncated hello then FIN: {outcome:?}"));
        // Everyone else is served.
        let r = TlsClient::new(strict).sni("localhost").ca(&pki.ca).run();
        assert_eq!(r.status(), Some(200), "{who}: {}", r.0);
        let stats = settled_stats(
            proxy,
            &listener_stats(strict),
            &["downstream_pre_cx_timeout"],
            |s| s["downstream_pre_cx_timeout"] >= 1,
        );
        let inspector = settled_stats(
            proxy,
            "tls_inspector.",
            &["client_hello_too_large", "tls_not_found", "tls_found"],
            |s| s["tls_found"] >= 1 && s["client_hello_too_large"] >= 1,
        );
        seen.push(format!("{stats:?} {inspector:?}"));
        seen
    });
}

/// `upstream_http_protocol_options` `auto_sni` and `auto_san_validation`: each request's host
/// becomes the SNI of the connection that carries it (connections are not shared between
/// hosts), and a server certificate that does not cover that host is refused (503,
/// `ssl.fail_verify_san`).
#[test]
fn auto_sni_and_auto_san_validation() {
    let pki = pki();
    let secure = TlsUpstream::start("secure", &pki.upstream, &[]);
    let options = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "upstream_http_protocol_options": {"auto_sni": true, "auto_san_validation": true},
        "explicit_http_config": {"http_protocol_options": {}},
    }});
    let cluster = to_port(
        "auto",
        secure.port,
        json!({
            "transport_socket": upstream_tls(
                json!({"validation_context": validation(&pki.ca, json!({}))}),
                json!({}),
            ),
            "typed_extension_protocol_options": options,
        }),
    );
    let route_config = json!({"name": "local", "virtual_hosts": [
        {"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "auto"}}]}]});
    let b = bootstrap(
        0,
        vec![http_listener(
            "plain",
            0,
            hcm("ingress", route_config, vec![], json!({})),
        )],
        vec![cluster],
    );
    on_both("tls-auto-sni", &b, |proxy| {
        let port = proxy.port("plain");
        let who = proxy.kind.name();
        let mut seen = Vec::new();
        for host in [
            UPSTREAM_NAME,
            "localhost",
            UPSTREAM_NAME,
            "elsewhere.example.com",
        ] {
            let c = curl(&[
                "-H",
                &format!("host: {host}"),
                &format!("http://127.0.0.1:{port}/"),
            ]);
            let sni = serde_json::from_str::<Value>(&c.body)
                .ok()
                .and_then(|echo| echo["tls"]["sni"].as_str().map(String::from));
            seen.push(format!("{host}: {} sni={sni:?}", c.status));
            if c.status == 200 {
                assert_eq!(sni.as_deref(), Some(host), "{who}");
            }
        }
        // (How many handshakes depends on which worker or shard each connection lands on,
        // and so whether the third request finds a pooled connection: not compared.)
        let stats = settled_stats(proxy, "cluster.auto.", &["ssl.fail_verify_san"], |s| {
            s["ssl.fail_verify_san"] >= 1
        });
        seen.push(format!("{stats:?}"));
        seen
    });
}

/// A mesh hop between the two proxies, both ways: the client-side proxy (plain HTTP in, mTLS
/// out with the client workload's SPIFFE certificate, checking the server's SPIFFE URI) in
/// front of the server-side proxy (mTLS in, requiring the client's SPIFFE URI; XFCC with it to
/// the app). Envoy → shardproxy, then shardproxy → Envoy: the app sees the client's identity
/// either way, and each side refuses a peer without the expected SPIFFE URI.
#[test]
fn mesh_hop_with_spiffe_mtls_between_envoy_and_shardproxy() {
    if !envoy_available() {
        return;
    }
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    const SERVER_SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/upstream";
    let server_side = || {
        let tls = downstream_tls(
            common_tls(
                vec![tls_certificate(&pki.upstream)],
                json!({"validation_context": validation(
                    &pki.ca,
                    json!({"match_typed_subject_alt_names": [san_exact("URI", CLIENT_SPIFFE)]}),
                )}),
            ),
            json!({"require_client_certificate": true}),
        );
        let xfcc = json!({
            "forward_client_cert_details": "SANITIZE_SET",
            "set_current_client_cert_details": {"uri": true},
        });
        bootstrap(
            0,
            vec![listener_with(
                "inbound",
                0,
                vec![],
                vec![filter_chain(
                    Value::Null,
                    vec![hcm_filter(manager("app", xfcc))],
                    Some(tls),
                )],
            )],
            vec![to_port("app", app.port("app"), json!({}))],
        )
    };
    let client_side = |server: u16| {
        let tls = |cert| {
            upstream_tls(
                common_tls(
                    vec![tls_certificate(cert)],
                    json!({"validation_context": validation(
                        &pki.ca,
                        json!({"match_typed_subject_alt_names": [san_exact("URI", SERVER_SPIFFE)]}),
                    )}),
                ),
                json!({"sni": UPSTREAM_NAME}),
            )
        };
        let routes = json!({"name": "local", "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/wrong"}, "route": {"cluster": "wrong"}},
                {"match": {"prefix": "/"}, "route": {"cluster": "mesh"}}]}]});
        bootstrap(
            0,
            vec![http_listener(
                "outbound",
                0,
                hcm("outbound", routes, vec![], json!({})),
            )],
            vec![
                to_port(
                    "mesh",
                    server,
                    json!({"transport_socket": tls(&pki.client)}),
                ),
                // Another workload's identity: the server side refuses it.
                to_port(
                    "wrong",
                    server,
                    json!({"transport_socket": tls(&pki.client_other)}),
                ),
            ],
        )
    };
    for (client_kind, server_kind) in [
        (Kind::Envoy, Kind::Shardproxy),
        (Kind::Shardproxy, Kind::Envoy),
    ] {
        let server = HttpProxy::start(server_kind, "mesh-server", &server_side());
        let inbound = server.port("inbound");
        let client = HttpProxy::start(client_kind, "mesh-client", &client_side(inbound));
        let outbound = client.port("outbound");
        let hop = format!("{} → {}", client_kind.name(), server_kind.name());
        let c = curl(&[&format!("http://127.0.0.1:{outbound}/mesh")]);
        assert_eq!(c.status, 200, "{hop}: {}", c.body);
        let echo: Value = serde_json::from_str(&c.body).unwrap();
        let xfcc = echoed_header(&echo, "x-forwarded-client-cert").unwrap_or_default();
        assert!(
            xfcc.contains(&format!("URI={CLIENT_SPIFFE}")),
            "{hop}: the app sees the client's SPIFFE identity: {xfcc:?}"
        );
        // The edge (the client-side proxy, reached over plain HTTP) set the scheme; the
        // server side keeps it, as Envoy does without use_remote_address.
        assert_eq!(
            echoed_header(&echo, "x-forwarded-proto"),
            Some("http"),
            "{hop}"
        );
        let refused = curl(&[&format!("http://127.0.0.1:{outbound}/wrong")]);
        assert_eq!(
            refused.status, 503,
            "{hop}: another identity: {}",
            refused.body
        );
        drop((client, server));
    }
}
