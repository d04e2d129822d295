//! TypedStruct unwrapping: an `Any` holding `udpa.type.v1.TypedStruct` or
//! `xds.type.v3.TypedStruct` (a typed config written as JSON, as Istio writes many) becomes the
//! `Any` of the message it names, so every later step sees a config in one form.
use prost::Message;
use prost_reflect::{DynamicMessage, MapKey, ReflectMessage, Value};

use crate::{
    descriptors::{load_named_in, message as descriptor_of},
    json::{to_dynamic, JsonError},
};

/// The wrapper types, by full name (both have `type_url` = 1 and `value` = 2).
pub const TYPED_STRUCTS: [&str; 2] = ["udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"];

const ANY: &str = "google.protobuf.Any";

/// `message` with every TypedStruct in it, at any depth and through `Any` payloads, replaced
/// by the `Any` of the message its `type_url` names, decoded from its `value` with proto3 JSON
/// rules (unknown fields refused unless `allow_unknown`). `None` when it holds none. A
/// TypedStruct naming a type outside the pool becomes an empty `Any` of that type, so the
/// config is refused (or skipped, where optional) under the type it names.
pub fn unwrap_typed_structs<M: Message + Default + prost::Name>(
    message: &M,
    allow_unknown: bool,
) -> Result<Option<M>, JsonError> {
    let bytes = message.encode_to_vec();
    if !mentions_typed_struct(&bytes) {
        return Ok(None);
    }
    load_named_in(&bytes);
    let descriptor = descriptor_of(&M::full_name())
        .ok_or_else(|| JsonError::whole(format!("unknown message type {}", M::full_name())))?;
    let mut dynamic = DynamicMessage::decode(descriptor, bytes.as_slice())
        .map_err(|e| JsonError::whole(format!("decode {}: {e}", M::full_name())))?;
    rewrite(&mut dynamic, "", allow_unknown)?;
    dynamic
        .transcode_to::<M>()
        .map(Some)
        .map_err(|e| JsonError::whole(format!("transcode {}: {e}", M::full_name())))
}

/// Type URLs are stored as plain bytes at every depth of an encoding (an `Any`'s payload is
/// the nested message's own encoding), so a config without this substring has no wrapper.
fn mentions_typed_struct(bytes: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"TypedStruct";
    bytes.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

fn join(path: &str, field: &str) -> String {
    if field.is_empty() {
        path.to_string()
    } else if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Rewrites the wrappers inside `message`; whether anything changed.
fn rewrite(
    message: &mut DynamicMessage,
    path: &str,
    allow_unknown: bool,
) -> Result<bool, JsonError> {
    let mut changed = false;
    for (field, value) in message.fields_mut() {
        let field_path = join(path, field.name());
        changed |= rewrite_value(value, &field_path, allow_unknown)?;
    }
    Ok(changed)
}

fn rewrite_value(value: &mut Value, path: &str, allow_unknown: bool) -> Result<bool, JsonError> {
    let mut changed = false;
    match value {
        Value::Message(m) if m.descriptor().full_name() == ANY => {
            changed = rewrite_any(m, path, allow_unknown)?
        }
        Value::Message(m) => changed = rewrite(m, path, allow_unknown)?,
        Value::List(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                changed |= rewrite_value(item, &format!("{path}[{i}]"), allow_unknown)?;
            }
        }
        Value::Map(entries) => {
            for (key, item) in entries.iter_mut() {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                changed |= rewrite_value(item, &format!("{path}[{key}]"), allow_unknown)?;
            }
        }
        _ => {}
    }
    Ok(changed)
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    match message.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// An `Any`: a wrapper is replaced by what it wraps; any other payload of a known type is
/// searched for wrappers and re-encoded when one was replaced.
fn rewrite_any(
    any: &mut DynamicMessage,
    path: &str,
    allow_unknown: bool,
) -> Result<bool, JsonError> {
    let url = string_field(any, "type_url");
    let bytes = match any.get_field_by_name("value").as_deref() {
        Some(Value::Bytes(bytes)) => bytes.clone(),
        _ => Default::default(),
    };
    if !mentions_typed_struct(url.as_bytes()) && !mentions_typed_struct(&bytes) {
        return Ok(false);
    }
    let Some(descriptor) = descriptor_of(type_name(&url)) else {
        return Ok(false);
    };
    let at = |e: String| JsonError {
        path: path.to_string(),
        message: e,
    };
    let (url, payload) = if TYPED_STRUCTS.contains(&type_name(&url)) {
        let wrapper = Wrapper::decode(bytes).map_err(|e| at(format!("decode {url}: {e}")))?;
        let inner_url = wrapper.type_url;
        let json = match &wrapper.value {
            Some(value) => struct_json(value).map_err(|e| at(format!("{url}: value: {e}")))?,
            None => serde_json::Value::Object(Default::default()),
        };
        let inner =
            match descriptor_of(type_name(&inner_url)) {
                Some(_) => {
                    let mut inner = to_dynamic(type_name(&inner_url), json, allow_unknown)
                        .map_err(|e| JsonError {
                            path: join(path, &e.path),
                            message: format!("{inner_url} (in a TypedStruct): {}", e.message),
                        })?;
                    rewrite(&mut inner, path, allow_unknown)?;
                    inner.encode_to_vec()
                }
                None => Vec::new(),
            };
        (inner_url, inner)
    } else {
        let mut payload = DynamicMessage::decode(descriptor, bytes)
            .map_err(|e| at(format!("decode {url}: {e}")))?;
        if !rewrite(&mut payload, path, allow_unknown)? {
            return Ok(false);
        }
        (url, payload.encode_to_vec())
    };
    any.set_field_by_name("type_url", Value::String(url));
    any.set_field_by_name("value", Value::Bytes(payload.into()));
    Ok(true)
}

/// Both wrappers' fields, read without reflection.
#[derive(Clone, PartialEq, prost::Message)]
struct Wrapper {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(message, optional, tag = "2")]
    value: Option<prost_types::Struct>,
}

/// A `google.protobuf.Struct` in its proto3 JSON form (an object); a number that JSON cannot
/// hold (NaN, an infinity) is an error.
fn struct_json(value: &prost_types::Struct) -> Result<serde_json::Value, String> {
    value
        .fields
        .iter()
        .map(|(key, value)| Ok((key.clone(), value_json(value)?)))
        .collect::<Result<_, String>>()
        .map(serde_json::Value::Object)
}

fn value_json(value: &prost_types::Value) -> Result<serde_json::Value, String> {
    use prost_types::value::Kind;
    Ok(match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("{n} is not a JSON number"))?,
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s)?,
        Some(Kind::ListValue(list)) => serde_json::Value::Array(
            list.values
                .iter()
                .map(value_json)
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// The message name a type URL names (`type.googleapis.com/a.b.C` → `a.b.C`).
fn type_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::{
        config::bootstrap::v3::Bootstrap,
        extensions::filters::network::http_connection_manager::v3::HttpConnectionManager,
    };

    use crate::{decode_any, from_json, parse_document};

    const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.\
                       http_connection_manager.v3.HttpConnectionManager";

    /// A listener filter's config, given as `typed_config` JSON.
    fn bootstrap(typed_config: &str) -> Result<Bootstrap, crate::JsonError> {
        let yaml = format!(
            "static_resources:\n  listeners:\n  - name: l\n    filter_chains:\n    - filters:\n      \
             - name: f\n        typed_config: {typed_config}\n"
        );
        from_json(parse_document(&yaml).unwrap(), false)
    }

    fn hcm(b: &Bootstrap) -> HttpConnectionManager {
        let filter = &b.static_resources.as_ref().unwrap().listeners[0].filter_chains[0].filters[0];
        let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
            any,
        )) = &filter.config_type
        else {
            panic!("no typed_config")
        };
        decode_any(any).unwrap()
    }

    /// Both wrappers, at the top and nested inside a plain config (an HTTP filter of a
    /// connection manager), decode as the plain form.
    #[test]
    fn wrapped_configs_decode_as_the_plain_form() {
        let router = r#"{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "suppress_envoy_headers": true}"#;
        let plain = bootstrap(&format!(
            r#"{{"@type": "{HCM}", "stat_prefix": "s", "http_filters": [{{"name": "r", "typed_config": {router}}}]}}"#
        ))
        .unwrap();
        for wrapper in super::TYPED_STRUCTS {
            let wrapped_router = format!(
                r#"{{"@type": "type.googleapis.com/{wrapper}", "type_url": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "value": {{"suppress_envoy_headers": true}}}}"#
            );
            let inner = bootstrap(&format!(
                r#"{{"@type": "{HCM}", "stat_prefix": "s", "http_filters": [{{"name": "r", "typed_config": {wrapped_router}}}]}}"#
            ))
            .unwrap();
            assert_eq!(inner, plain, "{wrapper} inside a plain config");
            let outer = bootstrap(&format!(
                r#"{{"@type": "type.googleapis.com/{wrapper}", "type_url": "{HCM}", "value": {{"stat_prefix": "s", "http_filters": [{{"name": "r", "typed_config": {wrapped_router}}}]}}}}"#
            ))
            .unwrap();
            assert_eq!(outer, plain, "{wrapper} around a config holding one");
            assert_eq!(hcm(&outer).stat_prefix, "s");
        }
    }

    #[test]
    fn bad_wrapped_json_names_the_field_path() {
        let err = bootstrap(&format!(
            r#"{{"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": "{HCM}", "value": {{"stat_prefix": "s", "bogus": 1}}}}"#
        ))
        .unwrap_err();
        assert_eq!(
            err.path,
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
        );
        assert!(err.message.contains("bogus"), "{err}");
        assert!(err.message.contains("HttpConnectionManager"), "{err}");
    }

    /// Every kind of `Struct` value reads as its JSON form.
    #[test]
    fn struct_values_read_as_json() {
        use prost_types::{value::Kind, ListValue, Struct, Value};
        let value = |kind| Value { kind: Some(kind) };
        let inner = Struct {
            fields: [("s".to_string(), value(Kind::StringValue("x".into())))].into(),
        };
        let list = ListValue {
            values: vec![value(Kind::BoolValue(true)), value(Kind::NullValue(0))],
        };
        let outer = Struct {
            fields: [
                ("n".to_string(), value(Kind::NumberValue(1.5))),
                ("o".to_string(), value(Kind::StructValue(inner))),
                ("l".to_string(), value(Kind::ListValue(list))),
            ]
            .into(),
        };
        assert_eq!(
            super::struct_json(&outer).unwrap(),
            serde_json::json!({"n": 1.5, "o": {"s": "x"}, "l": [true, null]})
        );
        let nan = Struct {
            fields: [("n".to_string(), value(Kind::NumberValue(f64::NAN)))].into(),
        };
        assert!(super::struct_json(&nan).is_err());
    }

    /// A wrapper naming a type outside the pool is left for the translator to refuse under
    /// the type it names.
    #[test]
    fn unknown_wrapped_type_keeps_its_name() {
        let b = bootstrap(
            r#"{"@type": "type.googleapis.com/xds.type.v3.TypedStruct", "type_url": "type.googleapis.com/no.such.Config", "value": {"a": 1}}"#,
        )
        .unwrap();
        let filter = &b.static_resources.unwrap().listeners[0].filter_chains[0].filters[0];
        let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
            any,
        )) = &filter.config_type
        else {
            panic!("no typed_config")
        };
        assert_eq!(any.type_url, "type.googleapis.com/no.such.Config");
        assert!(any.value.is_empty());
    }
}
