//! Tests: `--mode validate` — OK for good files, exit 1 with field-path messages for bad ones,
//! and no crash or vague output on any of the shared Envoy fixture files.
mod common;

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    time::Duration,
};

use common::*;
use serde_json::json;

fn validate_text(tag: &str, text: &str) -> (i32, String) {
    let dir = TempDir::new(tag);
    let path = dir.file("bootstrap.yaml");
    std::fs::write(&path, text).unwrap();
    validate_file(&path)
}

fn validate_file(path: &Path) -> (i32, String) {
    let (status, stdout, stderr) = run_to_end(
        &["--mode", "validate", "-c", path.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let code = status.code().unwrap_or_else(|| {
        panic!(
            "validate of {} died by signal {:?}; stderr:\n{stderr}",
            path.display(),
            status.signal()
        )
    });
    // Problems may be printed on stdout (Envoy) or stderr; log lines are not part of it.
    (code, format!("{stdout}{stderr}"))
}

fn good() -> serde_json::Value {
    bootstrap(
        0,
        vec![listener(
            "l",
            0,
            tcp_proxy("l", "c", json!({"idle_timeout": "30s"})),
        )],
        vec![cluster(
            "c",
            &[(refused_port(), 1), (refused_port(), 3)],
            json!({"lb_policy": "LEAST_REQUEST"}),
        )],
    )
}

fn assert_rejected(tag: &str, text: &str, must_name: &[&str]) {
    let (code, out) = validate_text(tag, text);
    assert_eq!(
        code, 1,
        "{tag}: expected exit 1, got {code}; output:\n{out}"
    );
    assert!(!out.trim().is_empty(), "{tag}: exit 1 with no message");
    assert!(
        !out.lines().any(|l| l.trim() == "OK"),
        "{tag}: printed OK on failure:\n{out}"
    );
    for word in must_name {
        assert!(
            out.contains(word),
            "{tag}: message does not name {word:?}:\n{out}"
        );
    }
}

#[test]
fn good_file_prints_ok() {
    let (code, out) = validate_text("good", &to_yaml(&good()));
    assert_eq!((code, out.trim()), (0, "OK"));
    // JSON bootstrap too.
    let (code, out) = validate_text("good_json", &serde_json::to_string_pretty(&good()).unwrap());
    assert_eq!((code, out.trim()), (0, "OK"));
}

#[test]
fn validate_does_not_bind_or_serve() {
    // Validation of a config whose ports are taken still says OK: nothing is bound.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let b = bootstrap(
        port,
        vec![listener("l", port, tcp_proxy("l", "c", json!(null)))],
        vec![cluster("c", &[(1, 1)], json!(null))],
    );
    let (code, out) = validate_text("nobind", &to_yaml(&b));
    assert_eq!((code, out.trim()), (0, "OK"), "validate must not bind");
}

#[test]
fn bad_yaml() {
    assert_rejected(
        "badyaml",
        "static_resources:\n  listeners: [ {name: l\n  clusters: ]]\n",
        &["line"],
    );
}

#[test]
fn unknown_field_named_with_path() {
    let mut b = good();
    b["static_resources"]["clusters"][0]["bogus_field"] = json!(true);
    assert_rejected("unknown", &to_yaml(&b), &["bogus_field", "clusters[0]"]);
}

#[test]
fn unknown_field_inside_typed_config() {
    let mut b = good();
    b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["no_such_option"] = json!(1);
    assert_rejected(
        "unknown_typed",
        &to_yaml(&b),
        &["no_such_option", "listeners[0]", "typed_config"],
    );
}

#[test]
fn wrong_type_named_with_path() {
    let mut b = good();
    b["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] =
        json!("not-a-port");
    assert_rejected("wrongtype", &to_yaml(&b), &["port_value", "listeners[0]"]);
    let mut b = good();
    b["static_resources"]["clusters"][0]["connect_timeout"] = json!([1, 2]);
    assert_rejected(
        "wrongtype2",
        &to_yaml(&b),
        &["connect_timeout", "clusters[0]"],
    );
}

#[test]
fn missing_cluster() {
    // A tcp_proxy naming a cluster that does not exist.
    let mut b = good();
    b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["cluster"] = json!("nowhere");
    assert_rejected("missingcluster", &to_yaml(&b), &["nowhere", "listeners[0]"]);
    // A tcp_proxy with no cluster at all.
    let mut b = good();
    b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        .as_object_mut()
        .unwrap()
        .remove("cluster");
    assert_rejected("nocluster", &to_yaml(&b), &["cluster", "listeners[0]"]);
}

#[test]
fn duplicate_listener_names() {
    let mut b = good();
    let second = b["static_resources"]["listeners"][0].clone();
    b["static_resources"]["listeners"]
        .as_array_mut()
        .unwrap()
        .push(second);
    assert_rejected("duplicate", &to_yaml(&b), &["listeners[1]", "\"l\""]);
}

#[test]
fn several_problems_all_reported() {
    // Two semantic problems in different places: both are listed, not just the first.
    let mut b = good();
    b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["cluster"] = json!("nowhere");
    let mut dup = b["static_resources"]["clusters"][0].clone();
    dup["load_assignment"]["cluster_name"] = json!("c");
    b["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(dup);
    let (code, out) = validate_text("several", &to_yaml(&b));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("clusters[1]"),
        "duplicate-cluster problem missing:\n{out}"
    );
    assert!(
        out.contains("nowhere"),
        "missing-cluster problem missing:\n{out}"
    );
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
}

/// Does this line name a config field path (`a.b`, `a[0]`, `a[0].b`)?
fn names_path(line: &str) -> bool {
    line.split(|c: char| c.is_whitespace() || matches!(c, '`' | '\'' | '"' | ',' | '(' | ')'))
        .map(|w| w.trim_end_matches(':'))
        .any(|w| {
            let pathy = w.contains('[') || w.contains('.');
            let allowed = w
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.[]@".contains(c));
            let starts = w.chars().next().is_some_and(|c| c.is_ascii_lowercase());
            let not_a_url_or_number =
                !w.contains("googleapis") && !w.ends_with('.') && w.split('.').count() <= 40;
            pathy
                && allowed
                && starts
                && not_a_url_or_number
                && w.chars().any(|c| c.is_ascii_alphabetic())
        })
}

#[test]
fn every_envoy_fixture_is_ok_or_names_paths() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/envoy-static");
    assert!(
        dir.is_dir(),
        "the fixtures folder {} is absent: this test needs the shared Envoy fixtures beside the checkout",
        dir.display()
    );
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    assert!(
        !files.is_empty(),
        "no fixture files under {}",
        dir.display()
    );
    let mut problems = Vec::new();
    let (mut ok, mut rejected) = (0, 0);
    for f in &files {
        let (code, out) = validate_file(f);
        let name = f.strip_prefix(&dir).unwrap().display().to_string();
        match code {
            0 => {
                ok += 1;
                if out.trim() != "OK" {
                    problems.push(format!("{name}: exit 0 but output is not `OK`: {out:?}"));
                }
            }
            1 => {
                rejected += 1;
                let mut lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
                // A heading such as `invalid configuration:` may open the list.
                if lines.len() > 1 && lines[0].trim_end().ends_with(':') && !names_path(lines[0]) {
                    lines.remove(0);
                }
                if lines.is_empty() {
                    problems.push(format!("{name}: exit 1 with no problem listed: {out:?}"));
                }
                for l in lines {
                    if !names_path(l) {
                        problems.push(format!("{name}: line names no field path: {l:?}"));
                    }
                }
            }
            other => problems.push(format!(
                "{name}: exit code {other} (expected 0 or 1); output:\n{out}"
            )),
        }
    }
    eprintln!(
        "envoy-static fixtures: {} files, {ok} OK, {rejected} rejected with field paths",
        files.len()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn names_path_recognises_paths() {
    assert!(names_path("static_resources.listeners[0].name: duplicate"));
    assert!(names_path("error at clusters[2]: bad"));
    assert!(names_path("`admin.address`: unsupported"));
    assert!(!names_path("something went wrong"));
    assert!(!names_path("invalid config."));
    assert!(!names_path(
        "type.googleapis.com/envoy.config.X is unsupported"
    ));
}

/// Every bootstrap in examples/ is runnable: `--mode validate` says OK.
#[test]
fn every_example_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    assert!(
        !files.is_empty(),
        "no example bootstraps in {}",
        dir.display()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let (code, out) = validate_file(f);
            (code != 0 || out.trim() != "OK")
                .then(|| format!("{} (exit {code}):\n{out}", f.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "examples that do not validate:\n{}",
        failures.join("\n")
    );
}

/// TLS config problems are precise errors naming the field path: a missing certificate file,
/// a key that is not the certificate's, a cipher suite rustls does not offer, TLS 1.0, a
/// secret of the wrong kind, a client certificate required with no CA to check it against.
#[test]
fn tls_config_errors_name_their_paths() {
    let dir = TempDir::new("validate-tls");
    let pem = |name: &str, args: &[&str]| {
        let path = dir.file(name);
        let status = std::process::Command::new("openssl")
            .args(args)
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
        path.to_str().unwrap().to_string()
    };
    let key = pem(
        "key.pem",
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
        ],
    );
    let other_key = pem(
        "other.pem",
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
        ],
    );
    let cert = dir.file("cert.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-new", "-key", &key, "-subj", "/CN=x", "-days", "1", "-out",
        ])
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let cert = cert.to_str().unwrap();
    let mut b = good();
    let chain = |common: serde_json::Value, extra: serde_json::Value| {
        let mut context = json!({"common_tls_context": common});
        common::merge(&mut context, extra);
        context["@type"] = json!(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
        );
        json!({"name": "envoy.transport_sockets.tls", "typed_config": context})
    };
    let certs = |key: &str| json!([{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}]);
    let listener = b["static_resources"]["listeners"][0].clone();
    let mut listeners = Vec::new();
    for (i, socket) in [
        chain(json!({"tls_certificates": [{"certificate_chain": {"filename": "/nonexistent/cert.pem"}, "private_key": {"filename": key}}]}), json!({})),
        chain(json!({"tls_certificates": certs(&other_key)}), json!({})),
        chain(json!({"tls_certificates": certs(&key), "tls_params": {"cipher_suites": ["ECDHE-FOO-SHA"]}}), json!({})),
        chain(json!({"tls_certificates": certs(&key), "tls_params": {"tls_minimum_protocol_version": "TLSv1_0"}}), json!({})),
        chain(json!({"tls_certificate_sds_secret_configs": [{"name": "ca"}]}), json!({})),
        chain(json!({"tls_certificates": certs(&key)}), json!({"require_client_certificate": true})),
    ]
    .into_iter()
    .enumerate()
    {
        let mut l = listener.clone();
        l["name"] = json!(format!("l{i}"));
        l["filter_chains"][0]["transport_socket"] = socket;
        listeners.push(l);
    }
    b["static_resources"]["listeners"] = json!(listeners);
    b["static_resources"]["secrets"] =
        json!([{"name": "ca", "validation_context": {"trusted_ca": {"filename": cert}}}]);
    let at = |i: usize, rest: &str| {
        format!(
            "static_resources.listeners[{i}].filter_chains[0].transport_socket.typed_config.{rest}"
        )
    };
    assert_rejected(
        "tls",
        &to_yaml(&b),
        &[
            &at(0, "common_tls_context.tls_certificates[0].certificate_chain.filename: cannot read /nonexistent/cert.pem"),
            &at(1, "common_tls_context.tls_certificates[0].private_key"),
            "does not match the certificate's public key",
            &at(2, "common_tls_context.tls_params.cipher_suites[0]"),
            "cipher suite \"ECDHE-FOO-SHA\" is not offered by rustls",
            &at(3, "common_tls_context.tls_params.tls_minimum_protocol_version"),
            &at(4, "common_tls_context.tls_certificate_sds_secret_configs[0].name"),
            "not a tls_certificate",
            &at(5, "require_client_certificate"),
        ],
    );
}

#[test]
fn auto_config_needs_tls_and_keepalive_a_timeout() {
    // auto_config on a plaintext cluster: ALPN cannot pick the protocol.
    let mut b = good();
    b["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "auto_config": {},
        }
    });
    assert_rejected(
        "autoplain",
        &to_yaml(&b),
        &[
            "clusters[0].typed_extension_protocol_options",
            "TLS transport_socket",
        ],
    );
    // connection_keepalive without a timeout.
    b["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {
                "connection_keepalive": {"interval": "10s"},
            }},
        }
    });
    assert_rejected(
        "keepalivetimeout",
        &to_yaml(&b),
        &["connection_keepalive.timeout", "at least 1ms"],
    );
}
