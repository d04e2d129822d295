//! Tests: every manifest under `k8s/` validates offline (tests/peers/validate_k8s.py:
//! Kubernetes 1.30 schemas, strict Istio CRD models, the IstioOperator overlay, the seccomp
//! profile, the Dockerfile's binary path), and each of those checks rejects a broken copy.
mod common;

use std::process::Command;

use common::{
    http::{peer_script, python},
    *,
};

/// Whether the test venv's Python has the validators tests/run.sh installs.
fn python_has_validators() -> bool {
    Command::new(python())
        .args([
            "-c",
            "import kubernetes_validate, yaml, cloudcoil.models.istio.networking.v1",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn k8s_manifests_validate() {
    const TEST: &str = "k8s_manifests_validate";
    if !python_has_validators() {
        skip(
            TEST,
            "the Python of tests/peers lacks kubernetes-validate / cloudcoil-models-istio \
             (tests/run.sh installs them into target/test-venv; or set SHARDPROXY_TEST_VENV)",
            Missing::Peer,
        );
        return;
    }
    let k8s = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s");
    let out = Command::new(python())
        .arg(peer_script("validate_k8s.py"))
        .arg(&k8s)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run tests/peers/validate_k8s.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "validate_k8s.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("self-test rejected"),
        "no negative self-test ran:\n{stdout}"
    );
}
