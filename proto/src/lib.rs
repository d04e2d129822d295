//! Proto layer: Envoy's descriptor pool and proto3 JSON mapping from YAML/JSON into
//! `envoy-types` messages, with errors that name the field path, TypedStruct wrappers
//! unwrapped.
pub mod descriptors;
pub mod istio;
pub mod json;
pub mod typed_struct;

pub use descriptors::{is_known, load_named_in, message, release_pool};
pub use json::{
    decode_any, decode_config, from_json, parse_document, to_json, try_to_json, JsonError,
};
