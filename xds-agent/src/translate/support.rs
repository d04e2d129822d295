//! Translator: the reflective walker that rejects every set field outside the supported surface
//! (`surface.rs`), through `Any` payloads too, naming each field's full path and type URL.
use prost_reflect::{DynamicMessage, MapKey, ReflectMessage, Value};

use super::{
    surface::{any_slot, surface, LEAF_TYPES},
    TranslateError,
};
use crate::names;

const ANY: &str = "google.protobuf.Any";

/// Every set field of `message` (and of the messages inside it) that the translator does not
/// support, one error each. `path` is where `message` sits (empty for a root) and `type_url`
/// the enclosing typed config's, if any.
pub fn unsupported_fields<M: prost::Message + prost::Name>(
    message: &M,
    path: &str,
    type_url: Option<&str>,
) -> Vec<TranslateError> {
    let mut errors = Vec::new();
    let bytes = message.encode_to_vec();
    // The payload types of the `Any`s inside, decoded before the walk takes pool handles.
    proto::load_named_in(&bytes);
    let Some(descriptor) = proto::message(&M::full_name()) else {
        errors.push(error(
            path,
            type_url,
            format!("unknown message type {}", M::full_name()),
        ));
        return errors;
    };
    match DynamicMessage::decode(descriptor, bytes.as_slice()) {
        Ok(dynamic) => walk(&dynamic, path, type_url, &mut errors),
        Err(e) => errors.push(error(path, type_url, format!("cannot decode: {e}"))),
    }
    errors
}

fn error(path: &str, type_url: Option<&str>, message: String) -> TranslateError {
    TranslateError {
        path: path.to_string(),
        type_url: type_url.map(str::to_string),
        message,
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn walk(
    message: &DynamicMessage,
    path: &str,
    type_url: Option<&str>,
    errors: &mut Vec<TranslateError>,
) {
    let descriptor = message.descriptor();
    let name = descriptor.full_name();
    if LEAF_TYPES.contains(&name) {
        return;
    }
    let Some(surface) = surface(name) else {
        errors.push(error(
            path,
            type_url,
            format!("{name} is not supported yet"),
        ));
        return;
    };
    for (field, value) in message.fields() {
        let field_name = field.name();
        if surface.ignored.iter().any(|(f, _)| *f == field_name) {
            continue;
        }
        let field_path = join(path, field_name);
        if !surface.supported.contains(&field_name) {
            errors.push(error(
                &field_path,
                type_url,
                "field is not supported yet".into(),
            ));
            continue;
        }
        walk_value(message, value, &field_path, type_url, errors);
    }
    for unknown in message.unknown_fields() {
        errors.push(error(
            path,
            type_url,
            format!("unknown field number {} in {name}", unknown.number()),
        ));
    }
}

fn walk_value(
    parent: &DynamicMessage,
    value: &Value,
    path: &str,
    type_url: Option<&str>,
    errors: &mut Vec<TranslateError>,
) {
    match value {
        Value::Message(m) if m.descriptor().full_name() == ANY => {
            walk_any(parent, None, m, path, errors)
        }
        Value::Message(m) => walk(m, path, type_url, errors),
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(parent, item, &format!("{path}[{i}]"), type_url, errors);
            }
        }
        Value::Map(entries) => {
            // Sorted by key, so the same input always reports in the same order.
            let mut entries: Vec<(String, &Value)> = entries
                .iter()
                .map(|(key, item)| match key {
                    MapKey::String(s) => (s.clone(), item),
                    other => (format!("{other:?}"), item),
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, item) in entries {
                let item_path = format!("{path}[{key}]");
                match item {
                    // A map of `Any` (`typed_per_filter_config`) is keyed by what the payload
                    // configures: name it by its key.
                    Value::Message(m) if m.descriptor().full_name() == ANY => {
                        walk_any(parent, Some(&key), m, &item_path, errors)
                    }
                    item => walk_value(parent, item, &item_path, type_url, errors),
                }
            }
        }
        _ => {}
    }
}

/// `is_optional: true` on the `Any`'s parent (an HTTP filter, a per-route `FilterConfig`):
/// Envoy skips an unsupported type there instead of rejecting the config; the translator
/// skips it too.
fn is_optional(parent: &DynamicMessage) -> bool {
    matches!(
        parent.get_field_by_name("is_optional").as_deref(),
        Some(Value::Bool(true))
    )
}

/// An `Any`: allowed only in the slots of `ANY_SLOTS`, with a payload type listed there; the
/// payload is then walked with its type URL. `key` names a map entry's payload. A payload
/// whose type is not supported is skipped when its parent says `is_optional: true` (Envoy's
/// rule for optional extensions).
fn walk_any(
    parent: &DynamicMessage,
    key: Option<&str>,
    any: &DynamicMessage,
    path: &str,
    errors: &mut Vec<TranslateError>,
) {
    let url = match any.get_field_by_name("type_url").as_deref() {
        Some(Value::String(url)) => url.clone(),
        _ => String::new(),
    };
    let bytes = match any.get_field_by_name("value").as_deref() {
        Some(Value::Bytes(bytes)) => bytes.clone(),
        _ => Default::default(),
    };
    let type_name = names::type_name(&url);
    let parent_name = parent.descriptor().full_name().to_string();
    let slot = any_slot(&parent_name);
    let Some((_, what, allowed)) = slot else {
        errors.push(error(
            path,
            Some(&url),
            "typed config is not supported yet".into(),
        ));
        return;
    };
    if !allowed.contains(&type_name) {
        if is_optional(parent) {
            return;
        }
        let named = match (key, parent.get_field_by_name("name").as_deref()) {
            (Some(key), _) => format!(" {key}"),
            (None, Some(Value::String(n))) if !n.is_empty() => format!(" {n}"),
            _ => String::new(),
        };
        let message = if !proto::is_known(type_name) {
            format!("{what}{named}: unknown type")
        } else {
            format!("{what}{named} is not supported yet")
        };
        errors.push(error(path, Some(&url), message));
        return;
    }
    // A slot that lists "" takes an empty `Any` as no config.
    if type_name.is_empty() && bytes.is_empty() {
        return;
    }
    let Some(descriptor) = proto::message(type_name) else {
        errors.push(error(path, Some(&url), "unknown type".into()));
        return;
    };
    match DynamicMessage::decode(descriptor, bytes) {
        Ok(payload) => walk(&payload, path, Some(&url), errors),
        Err(e) => errors.push(error(path, Some(&url), format!("cannot decode: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

    use super::*;

    fn check(yaml: &str) -> Vec<TranslateError> {
        let bootstrap: Bootstrap =
            proto::from_json(proto::parse_document(yaml).unwrap(), false).unwrap();
        unsupported_fields(&bootstrap, "", None)
    }

    const TCP: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

    #[test]
    fn supported_and_ignored_fields_pass() {
        let errors = check(&format!(
            r#"
node: {{id: n, cluster: c, metadata: {{a: b}}, locality: {{zone: z}}}}
layered_runtime: {{layers: [{{name: static, static_layer: {{}}}}]}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 9901}}}}, access_log_path: /dev/null}}
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 0.0.0.0, port_value: 1}}}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config: {{"@type": "{TCP}", stat_prefix: s, cluster: c, idle_timeout: 5s}}
  clusters:
  - name: c
    type: STRICT_DNS
    connect_timeout: 1s
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: x, port_value: 1}}}}}}
"#
        ));
        assert_eq!(errors, vec![]);
    }

    #[test]
    fn unsupported_fields_are_each_named_with_path_and_type_url() {
        let errors = check(&format!(
            r#"
hds_config: {{}}
overload_manager: {{buffer_factory_config: {{}}}}
static_resources:
  listeners:
  - name: l
    listener_filters: [{{name: x, config_discovery: {{}}}}]
    filter_chains:
    - filter_chain_match: {{address_suffix: x}}
      filters:
      - name: tcp
        typed_config:
          "@type": "{TCP}"
          stat_prefix: s
          cluster: c
          tunneling_config: {{hostname: h, request_id_header: x-id}}
"#
        ));
        let mut paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "hds_config",
                "overload_manager.buffer_factory_config",
                "static_resources.listeners[0].filter_chains[0].filter_chain_match.address_suffix",
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.tunneling_config.request_id_header",
                "static_resources.listeners[0].listener_filters[0].config_discovery",
            ]
        );
        assert_eq!(errors.len(), 5, "{errors:#?}");
        let tunnel = errors
            .iter()
            .find(|e| e.path.ends_with("request_id_header"))
            .unwrap();
        assert_eq!(tunnel.type_url.as_deref(), Some(TCP));
        // A present message counts as set even when empty (`http2_protocol_options: {}` would
        // switch a feature on in Envoy), so `dynamic_resources: {}` is reported too.
    }

    #[test]
    fn unsupported_filter_names_filter_and_type_url() {
        let errors = check(
            r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: envoy.filters.network.echo
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo
"#,
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        let e = &errors[0];
        assert_eq!(
            e.path,
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
        );
        assert_eq!(
            e.message,
            "network filter envoy.filters.network.echo is not supported yet"
        );
        assert!(e.type_url.as_deref().unwrap().ends_with("echo.v3.Echo"));
    }

    /// `typed_per_filter_config` is a map of `Any`: each payload is checked against the slot
    /// and named by its key (the filter it configures), in key order.
    #[test]
    fn map_valued_any_is_named_by_its_key() {
        let errors = check(
            r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              typed_per_filter_config:
                z.filter:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo
                a.filter:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo
          http_filters:
          - name: envoy.filters.http.router
"#,
        );
        let vh = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config\
                  .route_config.virtual_hosts[0].typed_per_filter_config";
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    format!("{vh}[a.filter]").as_str(),
                    "per-filter config a.filter is not supported yet"
                ),
                (
                    format!("{vh}[z.filter]").as_str(),
                    "per-filter config z.filter is not supported yet"
                ),
            ]
        );
    }

    #[test]
    fn optional_extensions_of_unsupported_types_are_skipped() {
        let hcm = |optional: bool| {
            format!(
                r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          route_config: {{}}
          http_filters:
          - name: some.filter
            is_optional: {optional}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo
          - name: envoy.filters.http.router
"#
            )
        };
        assert_eq!(check(&hcm(true)), vec![]);
        let errors = check(&hcm(false));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(
            errors[0].message,
            "HTTP filter some.filter is not supported yet"
        );
    }

    #[test]
    fn tcp_proxy_as_access_logger_is_rejected() {
        let errors = check(&format!(
            r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": "{TCP}"
          stat_prefix: s
          cluster: c
          access_log:
          - name: log
            typed_config: {{"@type": "{TCP}", stat_prefix: t}}
"#
        ));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].message, "access logger log is not supported yet");
    }
}
