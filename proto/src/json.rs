//! Proto3 JSON mapping: YAML/JSON text or values into `envoy-types` messages (and back),
//! over the descriptor set that the `envoy-types` crate ships.
use envoy_types::pb::google::protobuf::Any;
use prost::Name;
use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions};

use crate::{descriptors, typed_struct::unwrap_typed_structs};

/// Why a document could not become a message. `path` is the field path (`a.b[2].c`), empty
/// when the error is about the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct JsonError {
    pub path: String,
    pub message: String,
}

impl JsonError {
    pub(crate) fn whole(message: impl ToString) -> Self {
        Self {
            path: String::new(),
            message: message.to_string(),
        }
    }
}

/// Parses YAML or JSON text (JSON is read as YAML, which also tolerates the trailing commas
/// found in some real bootstraps) into a JSON value tree.
pub fn parse_document(text: &str) -> Result<serde_json::Value, JsonError> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(_) => serde_yaml::from_str(text)
            .map_err(|e| JsonError::whole(format!("invalid YAML/JSON: {e}"))),
    }
}

/// Maps a JSON value onto message `M` with proto3 JSON rules (`@type` on `Any`, durations as
/// strings, wrapper types, TypedStruct wrappers unwrapped). Unknown fields are errors unless
/// `allow_unknown` is set.
pub fn from_json<M: prost::Message + Default + Name>(
    value: serde_json::Value,
    allow_unknown: bool,
) -> Result<M, JsonError> {
    let dynamic = to_dynamic(&M::full_name(), value, allow_unknown)?;
    let message = dynamic
        .transcode_to::<M>()
        .map_err(|e| JsonError::whole(format!("transcode {}: {e}", M::full_name())))?;
    Ok(unwrap_typed_structs(&message, allow_unknown)?.unwrap_or(message))
}

/// Decodes a config message from its binary encoding (an xDS resource), TypedStruct wrappers
/// unwrapped as [`from_json`] does.
pub fn decode_config<M: prost::Message + Default + Name>(bytes: &[u8]) -> Result<M, JsonError> {
    let message = M::decode(bytes).map_err(|e| JsonError::whole(format!("cannot decode: {e}")))?;
    Ok(unwrap_typed_structs(&message, false)?.unwrap_or(message))
}

pub(crate) fn to_dynamic(
    full_name: &str,
    value: serde_json::Value,
    allow_unknown: bool,
) -> Result<DynamicMessage, JsonError> {
    load_type_urls(&value);
    let descriptor = descriptors::message(full_name)
        .ok_or_else(|| JsonError::whole(format!("unknown message type {full_name}")))?;
    let options = DeserializeOptions::new().deny_unknown_fields(!allow_unknown);
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(value, &mut track);
    DynamicMessage::deserialize_with_options(descriptor, deserializer, &options).map_err(|e| {
        JsonError {
            path: track
                .path()
                .to_string()
                .trim_start_matches('.')
                .replace("?", ""),
            message: e.to_string(),
        }
    })
}

/// Decodes the types that the strings of `value` name as type URLs (`@type`s, TypedStructs'
/// `type_url`s), so the `Any`s holding them can be read.
fn load_type_urls(value: &serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('/') => descriptors::load_named_in(s.as_bytes()),
        serde_json::Value::Array(items) => items.iter().for_each(load_type_urls),
        serde_json::Value::Object(fields) => fields.values().for_each(load_type_urls),
        _ => {}
    }
}

/// Decodes an `Any`'s payload into `M`, checking the type URL names `M`.
pub fn decode_any<M: prost::Message + Default + Name>(any: &Any) -> Result<M, JsonError> {
    if any.type_url.rsplit('/').next() != Some(M::full_name().as_str()) {
        return Err(JsonError::whole(format!(
            "expected {}, got {}",
            M::full_name(),
            any.type_url
        )));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| JsonError::whole(format!("decode {}: {e}", any.type_url)))
}

/// Renders a message as proto3 JSON the way Envoy's admin prints it: proto field names
/// (`last_updated`, not `lastUpdated`), default-valued fields left out, `Any`s expanded with
/// their `@type`.
pub fn to_json<M: prost::Message + Name>(message: &M) -> serde_json::Value {
    try_to_json(message).expect("every Any in the message names a type in the pool")
}

/// [`to_json`], or why the message cannot be rendered (an `Any` whose type is not in the
/// pool, or whose payload does not decode).
pub fn try_to_json<M: prost::Message + Name>(message: &M) -> Result<serde_json::Value, String> {
    let bytes = message.encode_to_vec();
    descriptors::load_named_in(&bytes);
    let descriptor = descriptors::message(&M::full_name()).expect("type in the pool");
    let dynamic = DynamicMessage::decode(descriptor, bytes.as_slice())
        .expect("a message re-decodes as itself");
    dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new()
                .skip_default_fields(true)
                .use_proto_field_name(true),
        )
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

    use super::*;

    fn bootstrap(yaml: &str) -> Result<Bootstrap, JsonError> {
        from_json(parse_document(yaml).unwrap(), false)
    }

    #[test]
    fn reads_any_durations_and_wrappers() {
        let b = bootstrap(
            r#"
static_resources:
  clusters:
  - name: c
    connect_timeout: 0.25s
    per_connection_buffer_limit_bytes: 32768
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: s
          cluster: c
"#,
        )
        .unwrap();
        let cluster = &b.static_resources.as_ref().unwrap().clusters[0];
        assert_eq!(cluster.connect_timeout.unwrap().nanos, 250_000_000);
        assert_eq!(
            cluster.per_connection_buffer_limit_bytes.unwrap().value,
            32768
        );
        let listener = &b.static_resources.unwrap().listeners[0];
        assert!(listener.filter_chains[0].filters[0].config_type.is_some());
    }

    #[test]
    fn unknown_field_names_its_path() {
        let err =
            bootstrap("static_resources:\n  clusters:\n  - name: c\n    bogus: 1\n").unwrap_err();
        assert_eq!(err.path, "static_resources.clusters[0]");
        assert!(err.message.contains("bogus"), "{err}");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let err =
            bootstrap("static_resources:\n  clusters:\n  - name: c\n    connect_timeout: soon\n")
                .unwrap_err();
        assert_eq!(err.path, "static_resources.clusters[0].connect_timeout");
    }

    #[test]
    fn dumps_round_trip() {
        let b = bootstrap("node: {id: n1}\n").unwrap();
        assert_eq!(to_json(&b)["node"]["id"], "n1");
        let dump = envoy_types::pb::envoy::admin::v3::BootstrapConfigDump {
            bootstrap: None,
            last_updated: Some(Default::default()),
        };
        assert_eq!(
            to_json(&dump),
            serde_json::json!({"last_updated": "1970-01-01T00:00:00Z"})
        );
    }
}
