//! Build script: locates the `envoy-types` crate on disk (via `cargo metadata`) so the crate can
//! embed the descriptor set it ships, instead of vendoring Envoy's protos here, and compiles the
//! project's own `.proto` files under `protos/` (with `protox`, no system `protoc`) against it.
use std::{env, fs, path::PathBuf, process::Command};

use protox::file::{ChainFileResolver, DescriptorSetFileResolver, IncludeFileResolver};

/// The project's own protos, relative to `protos/`.
const OWN_PROTOS: &[&str] = &[
    "udpa/type/v1/typed_struct.proto",
    "xds/type/v3/typed_struct.proto",
    "istio/workload/bootstrap_extension.proto",
    "istio/alpn.proto",
    "istio/authentication_policy.proto",
    "istio/http_authn.proto",
    "istio/metadata_exchange.proto",
    "istio/network_authn.proto",
    "istio/peer_metadata.proto",
    "istio/set_internal_dst_address.proto",
    "istio/stats.proto",
];

/// The protos translated into Rust types (`$OUT_DIR/<package>.rs`, by prost-build): the
/// Istio filter configs the translator reads.
const RUST_PROTOS: &[&str] = &[
    "istio/alpn.proto",
    "istio/authentication_policy.proto",
    "istio/http_authn.proto",
    "istio/metadata_exchange.proto",
    "istio/network_authn.proto",
    "istio/peer_metadata.proto",
    "istio/set_internal_dst_address.proto",
    "istio/stats.proto",
];

/// Protos naming another Istio package's messages: `(proto, that package, its Rust path)`.
const CROSS_PACKAGE: &[(&str, &str, &str)] = &[(
    "istio/http_authn.proto",
    ".istio.authentication.v1alpha1",
    "crate::istio::authentication",
)];

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
    compile_own_protos(&descriptors);
    println!("cargo:rerun-if-changed=build.rs");
}

/// Compiles `OWN_PROTOS` into `$OUT_DIR/own.bin` (their imports resolve against Envoy's
/// descriptor set and are left out: the pool already has them).
fn compile_own_protos(envoy_descriptors: &std::path::Path) {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("protos");
    let envoy = fs::read(envoy_descriptors).expect("read the envoy-types descriptor set");
    let mut resolver = ChainFileResolver::new();
    resolver.add(IncludeFileResolver::new(root.clone()));
    resolver.add(DescriptorSetFileResolver::decode(envoy.as_slice()).expect("descriptor set"));
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(false);
    compiler
        .open_files(OWN_PROTOS)
        .unwrap_or_else(|e| panic!("compile protos/: {e}"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(
        out_dir.join("own.bin"),
        compiler.encode_file_descriptor_set(),
    )
    .expect("write own.bin");
    // prost-build reads the messages the generated ones name (Duration), so these come with
    // their imports; it writes the well-known types' own file too, left unused.
    let mut compiler =
        protox::Compiler::new([root.clone()]).unwrap_or_else(|e| panic!("protos/: {e}"));
    compiler.include_imports(true);
    let rust = compiler
        .open_files(RUST_PROTOS)
        .unwrap_or_else(|e| panic!("compile protos/: {e}"))
        .file_descriptor_set();
    prost_build::Config::new()
        .out_dir(&out_dir)
        .enable_type_names()
        .compile_fds(rust)
        .unwrap_or_else(|e| panic!("generate Rust for protos/: {e}"));
    // The generated files are included flat (src/istio.rs), not nested by package, so a
    // message naming another Istio package's is generated again with that package's path.
    for (proto, package, path) in CROSS_PACKAGE {
        let fds = protox::Compiler::new([root.clone()])
            .and_then(|mut c| {
                c.include_imports(true);
                c.open_files([proto])?;
                Ok(c.file_descriptor_set())
            })
            .unwrap_or_else(|e| panic!("compile {proto}: {e}"));
        prost_build::Config::new()
            .out_dir(&out_dir)
            .enable_type_names()
            .extern_path(*package, *path)
            .compile_fds(fds)
            .unwrap_or_else(|e| panic!("generate Rust for {proto}: {e}"));
    }
    for proto in OWN_PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
}
