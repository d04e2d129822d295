//! Build script: locates the `envoy-types` crate on disk (via `cargo metadata`) so the crate can
//! embed the descriptor set it ships, instead of vendoring Envoy's protos here.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.toml");
    let target = env::var("TARGET").unwrap();
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            &target,
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let manifest_path = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("envoy-types in the dependency graph");
    let crate_dir = PathBuf::from(manifest_path).parent().unwrap().to_path_buf();
    let descriptors = crate_dir.join("src/generated/types.bin");
    assert!(descriptors.exists(), "{} is missing", descriptors.display());
    println!(
        "cargo:rustc-env=ENVOY_TYPES_DESCRIPTORS={}",
        descriptors.display()
    );
    println!("cargo:rerun-if-changed=build.rs");
}
