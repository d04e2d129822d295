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
    "istio/connect_authority.proto",
    "istio/connect_baggage.proto",
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
    "istio/connect_authority.proto",
    "istio/connect_baggage.proto",
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
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let embedded = without_source_info(&descriptors, &out_dir);
    println!(
        "cargo:rustc-env=ENVOY_TYPES_DESCRIPTORS={}",
        embedded.display()
    );
    compile_own_protos(&descriptors);
    println!("cargo:rerun-if-changed=build.rs");
}

/// Writes Envoy's descriptor set without each file's `source_code_info` (comments and source
/// locations: four fifths of its bytes, which nothing here reads), so the pool every start
/// decodes is smaller and quicker to build. Everything else is copied byte for byte (options
/// keep their extensions).
fn without_source_info(descriptors: &std::path::Path, out_dir: &std::path::Path) -> PathBuf {
    /// `FileDescriptorSet.file` and `FileDescriptorProto.source_code_info`.
    const FILE: u64 = 1;
    const SOURCE_CODE_INFO: u64 = 9;
    let set = fs::read(descriptors).expect("read the envoy-types descriptor set");
    let mut out = Vec::with_capacity(set.len());
    for (number, field) in fields(&set) {
        assert_eq!(number, FILE, "a FileDescriptorSet holds files only");
        let file: Vec<u8> = fields(length_delimited(field))
            .filter(|(n, _)| *n != SOURCE_CODE_INFO)
            .flat_map(|(_, bytes)| bytes.iter().copied())
            .collect();
        put_varint(&mut out, FILE << 3 | 2);
        put_varint(&mut out, file.len() as u64);
        out.extend_from_slice(&file);
    }
    let path = out_dir.join("envoy_types.bin");
    fs::write(&path, out).expect("write envoy_types.bin");
    path
}

/// The fields of an encoded message: each field's number and its whole encoding (key
/// included).
fn fields(message: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at == message.len() {
            return None;
        }
        let start = at;
        let key = varint(message, &mut at);
        let len = match key & 7 {
            0 => {
                varint(message, &mut at);
                0
            }
            1 => 8,
            2 => varint(message, &mut at) as usize,
            5 => 4,
            other => panic!("wire type {other} in a descriptor set"),
        };
        at += len;
        Some((key >> 3, &message[start..at]))
    })
}

/// The payload of a length-delimited field's encoding.
fn length_delimited(field: &[u8]) -> &[u8] {
    let mut at = 0;
    varint(field, &mut at);
    let len = varint(field, &mut at) as usize;
    &field[at..at + len]
}

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
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
