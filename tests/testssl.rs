//! Tests: testssl.sh (Debian's `testssl.sh` package) scans a listener with a default
//! DownstreamTlsContext — protocols (`-p`), cipher categories (`-s`) and vulnerabilities
//! (`-U`), `--fast` — on Envoy, then on shardproxy .
//! Asserts: nothing below TLS 1.2 offered, TLS 1.2 offered; no NULL, anonymous, EXPORT, LOW
//! (DES, RC2, RC4), 3DES/IDEA or obsolete CBC cipher offered; no finding VULNERABLE, none of
//! severity HIGH or CRITICAL. About 30 s a proxy on 2 cores (Envoy: 27 s).
mod common;

use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{http::*, tls::*, *};
use serde_json::{json, Value};

/// The testssl.sh command (`testssl` in Debian's package), or None (a failure under CI=true).
fn testssl() -> Option<PathBuf> {
    let found = ["testssl", "testssl.sh"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        skip(
            "testssl",
            "no testssl.sh (apt-get install testssl.sh, or run tests/run.sh)",
            Missing::Peer,
        );
    }
    found
}

/// Runs testssl.sh against 127.0.0.1:`port` (bounded to 4 minutes); returns its JSON findings
/// as id -> (severity, finding).
fn scan(bin: &PathBuf, port: u16, dir: &TempDir) -> BTreeMap<String, (String, String)> {
    let json_file = dir.file(&format!("testssl-{port}.json"));
    let _ = fs::remove_file(&json_file);
    let log = dir.file(&format!("testssl-{port}.log"));
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(["--quiet", "--warnings", "off", "--fast", "--color", "0"])
        .args(["--connect-timeout", "10", "--openssl-timeout", "10"])
        .arg("--jsonfile")
        .arg(&json_file)
        .args(["-p", "-s", "-U"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start testssl.sh");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(240) {
            let _ = child.kill(); // by PID
            let _ = child.wait();
            panic!("testssl.sh ran longer than 4 minutes");
        }
        thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "testssl.sh on port {port}: {status} in {:?}",
        start.elapsed()
    );
    let text = fs::read_to_string(&json_file).unwrap_or_else(|e| {
        panic!(
            "testssl.sh wrote no JSON ({e}); its output:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let findings: Vec<Value> = serde_json::from_str(&text).unwrap();
    findings
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap_or_default().to_string(),
                (
                    f["severity"].as_str().unwrap_or_default().to_string(),
                    f["finding"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn testssl_finds_no_weak_protocol_cipher_or_vulnerability() {
    let Some(bin) = testssl() else {
        return;
    };
    let pki = pki();
    let app = EchoUpstreams::start(&["app"], None);
    let tls = downstream_tls(
        common_tls(vec![tls_certificate(&pki.server_rsa)], json!({})),
        json!({}),
    );
    let manager = hcm(
        "ingress",
        catch_all_routes("app", json!({})),
        vec![],
        json!({}),
    );
    let b = bootstrap(
        0,
        vec![listener_with(
            "tls",
            0,
            vec![],
            vec![filter_chain(
                Value::Null,
                vec![hcm_filter(manager)],
                Some(tls),
            )],
        )],
        vec![cluster("app", &[(app.port("app"), 1)], json!({}))],
    );
    let dir = TempDir::new("testssl");
    on_both("testssl", &b, |proxy| {
        let who = proxy.kind.name();
        let findings = scan(&bin, proxy.port("tls"), &dir);
        let finding = |id: &str| {
            findings
                .get(id)
                .map(|(_, f)| f.as_str())
                .unwrap_or_else(|| panic!("{who}: testssl.sh reported no {id}: {findings:?}"))
        };
        for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
            assert!(
                finding(id).starts_with("not offered"),
                "{who}: {id} {}",
                finding(id)
            );
        }
        assert!(finding("TLS1_2").starts_with("offered"), "{who}");
        for id in [
            "cipherlist_NULL",
            "cipherlist_aNULL",
            "cipherlist_EXPORT",
            "cipherlist_LOW",
            "cipherlist_3DES_IDEA",
            "cipherlist_AVERAGE",
        ] {
            assert!(
                finding(id).starts_with("not offered"),
                "{who}: {id} {}",
                finding(id)
            );
        }
        assert!(finding("cipherlist_STRONG").starts_with("offered"), "{who}");
        let bad: Vec<_> = findings
            .iter()
            .filter(|(_, (severity, f))| {
                f.contains("VULNERABLE") || matches!(severity.as_str(), "HIGH" | "CRITICAL")
            })
            .collect();
        assert!(bad.is_empty(), "{who}: {bad:?}");
        // What both proxies must agree on: the protocols and cipher categories offered.
        findings
            .iter()
            .filter(|(id, _)| {
                id.starts_with("cipherlist_")
                    || ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"]
                        .contains(&id.as_str())
            })
            .map(|(id, (_, f))| format!("{id}: {f}"))
            .collect::<Vec<_>>()
    });
}
