//! Proto layer: Envoy's descriptor pool and proto3 JSON mapping from YAML/JSON into
//! `envoy-types` messages, with errors that name the field path, TypedStruct wrappers
//! unwrapped.
pub mod istio;
pub mod json;
pub mod typed_struct;

pub use json::{
    decode_any, decode_config, descriptor_bytes, from_json, parse_document, pool, release_pool,
    to_json, try_to_json, JsonError,
};
