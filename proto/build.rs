//! Build script: locates the `envoy-types` crate on disk (via `cargo metadata`) so the crate can
//! embed the descriptor set it ships, instead of vendoring Envoy's protos here, compiles the
//! project's own `.proto` files under `protos/` (with `protox`, no system `protoc`) against it,
//! and writes the index that lets the pool decode only the files a type needs.
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
    let mut set = without_source_info(&descriptors);
    set.extend(compile_own_protos(&descriptors));
    let index = index(&set);
    fs::write(out_dir.join("descriptors.bin"), &set).expect("write descriptors.bin");
    fs::write(out_dir.join("descriptor_index.rs"), index).expect("write descriptor_index.rs");
    println!("cargo:rerun-if-changed=build.rs");
}

/// Envoy's descriptor set without each file's `source_code_info` (comments and source
/// locations: four fifths of its bytes, which nothing here reads), so the files the pool
/// decodes are smaller and quicker to build. Everything else is copied byte for byte (options
/// keep their extensions).
fn without_source_info(descriptors: &std::path::Path) -> Vec<u8> {
    /// `FileDescriptorProto.source_code_info`.
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
    out
}

/// `FileDescriptorSet.file`; in a `FileDescriptorProto`: `name`, `package`, `dependency`,
/// `message_type`; in a `DescriptorProto`: `name`, `nested_type`.
const FILE: u64 = 1;
const FILE_NAME: u64 = 1;
const FILE_PACKAGE: u64 = 2;
const FILE_DEPENDENCY: u64 = 3;
const FILE_MESSAGE_TYPE: u64 = 4;
const MESSAGE_NAME: u64 = 1;
const MESSAGE_NESTED_TYPE: u64 = 3;

/// The Rust source of the index of the descriptor set `set` (`descriptor_index.rs`): per
/// file, the byte range of its entry (key, length and `FileDescriptorProto`: alone, a set of
/// one file) and the files it imports; every message's full name,
/// sorted, with its file.
fn index(set: &[u8]) -> String {
    let mut files = Vec::new();
    let mut at = 0;
    for (number, field) in fields(set) {
        assert_eq!(number, FILE, "a FileDescriptorSet holds files only");
        files.push((at, at + field.len(), length_delimited(field)));
        at += field.len();
    }
    let names: Vec<String> = files
        .iter()
        .map(|(_, _, file)| string_field(file, FILE_NAME))
        .collect();
    let mut messages = Vec::new();
    let mut out = String::from(
        "/// Per file of the embedded set: the byte range of its entry (a one-file set) and the \
         files it imports.\nstatic FILES: &[(u32, u32, &[u16])] = &[\n",
    );
    for (i, (start, end, file)) in files.iter().enumerate() {
        let deps: Vec<String> = fields(file)
            .filter(|(n, _)| *n == FILE_DEPENDENCY)
            .map(|(_, f)| {
                let dep = String::from_utf8(length_delimited(f).to_vec()).expect("UTF-8 name");
                let index = names.iter().position(|n| *n == dep);
                index.unwrap_or_else(|| panic!("{} imports {dep}, not in the set", names[i]))
            })
            .map(|d| d.to_string())
            .collect();
        out += &format!("    ({start}, {end}, &[{}]),\n", deps.join(", "));
        let package = string_field(file, FILE_PACKAGE);
        for (_, message) in fields(file).filter(|(n, _)| *n == FILE_MESSAGE_TYPE) {
            message_names(length_delimited(message), &package, i, &mut messages);
        }
    }
    messages.sort();
    for pair in messages.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "a message declared twice");
    }
    out += "];\n/// Every message's full name, sorted, with the index of its file in `FILES`.\n\
            static MESSAGES: &[(&str, u16)] = &[\n";
    for (name, file) in &messages {
        out += &format!("    ({name:?}, {file}),\n");
    }
    out + "];\n"
}

/// Adds the full names of `message` (declared in `scope`) and of its nested messages.
fn message_names(message: &[u8], scope: &str, file: usize, out: &mut Vec<(String, usize)>) {
    let name = string_field(message, MESSAGE_NAME);
    let full = if scope.is_empty() {
        name
    } else {
        format!("{scope}.{name}")
    };
    for (_, nested) in fields(message).filter(|(n, _)| *n == MESSAGE_NESTED_TYPE) {
        message_names(length_delimited(nested), &full, file, out);
    }
    out.push((full, file));
}

/// A string field of a message (the first with that number; empty when absent).
fn string_field(message: &[u8], number: u64) -> String {
    fields(message)
        .find(|(n, _)| *n == number)
        .map(|(_, f)| String::from_utf8(length_delimited(f).to_vec()).expect("UTF-8 string"))
        .unwrap_or_default()
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

/// Compiles `OWN_PROTOS` into an encoded descriptor set to append to Envoy's (their imports
/// resolve against Envoy's descriptor set and are left out: it has them), and their Rust
/// types.
fn compile_own_protos(envoy_descriptors: &std::path::Path) -> Vec<u8> {
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
    let own = compiler.encode_file_descriptor_set();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
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
    own
}
