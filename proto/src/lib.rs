//! Proto layer: Envoy's descriptor pool and proto3 JSON mapping from YAML/JSON into
//! `envoy-types` messages, with errors that name the field path.
pub mod json;

pub use json::{
    decode_any, descriptor_bytes, from_json, parse_document, pool, release_pool, to_json,
    try_to_json, JsonError,
};
