//! Admin JSON: proto3 JSON with the proto field names (`last_updated`, not `lastUpdated`),
//! as Envoy's admin prints its messages; default-valued fields are left out.
use prost::{Message, Name};
use prost_reflect::{DynamicMessage, SerializeOptions};

/// Renders an `envoy-types` message (its `Any`s expanded with `@type`).
pub fn render<M: Message + Name>(message: &M) -> serde_json::Value {
    let descriptor = proto::pool()
        .get_message_by_name(&M::full_name())
        .expect("admin message types are in the pool");
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message decodes as its own type");
    dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new()
                .skip_default_fields(true)
                .use_proto_field_name(true),
        )
        .expect("every Any we build names a type in the pool")
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::admin::v3::BootstrapConfigDump;

    use super::*;

    #[test]
    fn uses_proto_field_names() {
        let dump = BootstrapConfigDump {
            bootstrap: None,
            last_updated: Some(Default::default()),
        };
        assert_eq!(
            render(&dump),
            serde_json::json!({"last_updated": "1970-01-01T00:00:00Z"})
        );
    }
}
