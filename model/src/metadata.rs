//! Metadata: a resource's `metadata.filter_metadata` kept as written (per filter namespace, a
//! JSON value tree) for the filters that read it, e.g. Istio's stats reading a cluster's
//! `istio.services`; the dynamic metadata filters write on a stream (RBAC's shadow verdict);
//! and Envoy's `MetadataMatcher` over it.
use std::{collections::BTreeMap, sync::Arc};

use serde_json::Map;
/// A metadata value (a protobuf `Value` as JSON).
pub use serde_json::Value;

use crate::matchers::StringMatcher;

/// `filter_metadata`: namespace → struct. Empty for a resource without metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(Arc<BTreeMap<String, Value>>);

impl Metadata {
    pub fn new(namespaces: BTreeMap<String, Value>) -> Self {
        Self(Arc::new(namespaces))
    }

    /// The value at `path` (object keys) inside `namespace`.
    pub fn get(&self, namespace: &str, path: &[&str]) -> Option<&Value> {
        path.iter()
            .try_fold(self.0.get(namespace)?, |value, key| value.get(key))
    }

    /// The string at `path` inside `namespace`.
    pub fn str(&self, namespace: &str, path: &[&str]) -> Option<&str> {
        self.get(namespace, path)?.as_str()
    }
}

/// What filters write on one stream, per filter namespace (a `Struct` each); empty (and
/// allocation-free) until one writes.
#[derive(Debug, Default, PartialEq)]
pub struct DynamicMetadata(BTreeMap<Box<str>, Map<String, Value>>);

impl DynamicMetadata {
    pub const fn new() -> Self {
        Self(BTreeMap::new())
    }

    /// Sets `key` in `namespace` (Envoy merges a filter's fields into its namespace).
    pub fn set(&mut self, namespace: &str, key: &str, value: Value) {
        match self.0.get_mut(namespace) {
            Some(fields) => {
                fields.insert(key.to_string(), value);
            }
            None => {
                self.0
                    .insert(namespace.into(), Map::from_iter([(key.to_string(), value)]));
            }
        }
    }

    /// The value at `path` (struct keys) inside `namespace`.
    pub fn get(&self, namespace: &str, path: &[Box<str>]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let top = self.0.get(namespace)?.get(&**first)?;
        rest.iter().try_fold(top, |value, key| value.get(&**key))
    }
}

/// Envoy's `type.matcher.v3.MetadataMatcher`: the value at `path` in a filter's namespace of
/// the dynamic metadata, judged by `value` (a missing value is no kind: only `present_match:
/// false` matches it), the outcome flipped by `invert`.
#[derive(Debug, Clone)]
pub struct MetadataMatcher {
    pub filter: Box<str>,
    pub path: Box<[Box<str>]>,
    pub value: ValueMatcher,
    pub invert: bool,
}

/// `type.matcher.v3.ValueMatcher`.
#[derive(Debug, Clone)]
pub enum ValueMatcher {
    Null,
    /// `[start, end)`.
    DoubleRange {
        start: f64,
        end: f64,
    },
    DoubleExact(f64),
    String(StringMatcher),
    Bool(bool),
    Present(bool),
    /// A list with an element that matches.
    OneOf(Box<ValueMatcher>),
    Or(Vec<ValueMatcher>),
}

impl MetadataMatcher {
    pub fn matches(&self, metadata: &DynamicMetadata) -> bool {
        self.value.matches(metadata.get(&self.filter, &self.path)) != self.invert
    }
}

impl ValueMatcher {
    /// Judges a value; `None` when there is none.
    pub fn matches(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (Self::Present(present), value) => *present == value.is_some(),
            (Self::Or(any), value) => any.iter().any(|m| m.matches(value)),
            (_, None) => false,
            (Self::Null, Some(value)) => value.is_null(),
            (Self::DoubleRange { start, end }, Some(value)) => {
                value.as_f64().is_some_and(|v| *start <= v && v < *end)
            }
            (Self::DoubleExact(exact), Some(value)) => value.as_f64() == Some(*exact),
            (Self::String(m), Some(value)) => {
                value.as_str().is_some_and(|s| m.matches(s.as_bytes()))
            }
            (Self::Bool(b), Some(value)) => value.as_bool() == Some(*b),
            (Self::OneOf(inner), Some(value)) => value
                .as_array()
                .is_some_and(|list| list.iter().any(|v| inner.matches(Some(v)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn looks_up_paths_in_a_namespace() {
        let metadata = Metadata::new(BTreeMap::from([(
            "istio".to_string(),
            json!({"services": [{"host": "a.b"}], "subset": "v1"}),
        )]));
        assert_eq!(metadata.str("istio", &["subset"]), Some("v1"));
        let services = metadata.get("istio", &["services"]).unwrap();
        assert_eq!(services[0]["host"], "a.b");
        assert_eq!(metadata.get("istio", &["missing"]), None);
        assert_eq!(metadata.get("other", &[]), None);
    }

    fn path(keys: &[&str]) -> Box<[Box<str>]> {
        keys.iter().map(|k| (*k).into()).collect()
    }

    fn exact(s: &str) -> ValueMatcher {
        ValueMatcher::String(StringMatcher::new(
            crate::matchers::StringPattern::Exact(s.as_bytes().into()),
            false,
        ))
    }

    #[test]
    fn dynamic_metadata_merges_fields_per_namespace() {
        let mut m = DynamicMetadata::default();
        m.set("rbac", "a", json!("x"));
        m.set("rbac", "b", json!({"c": 1}));
        m.set("rbac", "a", json!("y"));
        assert_eq!(m.get("rbac", &path(&["a"])), Some(&json!("y")));
        assert_eq!(m.get("rbac", &path(&["b", "c"])), Some(&json!(1)));
        assert_eq!(m.get("rbac", &path(&[])), None);
        assert_eq!(m.get("other", &path(&["a"])), None);
    }

    #[test]
    fn metadata_matchers_follow_envoys_value_rules() {
        let mut m = DynamicMetadata::default();
        m.set("f", "s", json!("istio-ext-authz-x"));
        m.set("f", "n", json!(2.5));
        m.set("f", "l", json!(["a", "b"]));
        m.set("f", "t", json!(true));
        m.set("f", "z", Value::Null);
        let at = |key: &str, value: ValueMatcher, invert: bool| {
            MetadataMatcher {
                filter: "f".into(),
                path: path(&[key]),
                value,
                invert,
            }
            .matches(&m)
        };
        assert!(at("s", exact("istio-ext-authz-x"), false));
        assert!(!at("s", exact("other"), false));
        assert!(at("s", exact("other"), true));
        assert!(at(
            "n",
            ValueMatcher::DoubleRange {
                start: 2.0,
                end: 3.0
            },
            false
        ));
        assert!(!at(
            "n",
            ValueMatcher::DoubleRange {
                start: 0.0,
                end: 2.5
            },
            false
        ));
        assert!(at("n", ValueMatcher::DoubleExact(2.5), false));
        assert!(at("l", ValueMatcher::OneOf(Box::new(exact("b"))), false));
        assert!(!at("s", ValueMatcher::OneOf(Box::new(exact("b"))), false));
        assert!(at("t", ValueMatcher::Bool(true), false));
        assert!(at("z", ValueMatcher::Null, false));
        // A missing value: only `present_match: false` (and its inversions) match it.
        assert!(!at("missing", ValueMatcher::Null, false));
        assert!(!at("missing", exact(""), false));
        assert!(at("missing", exact(""), true));
        assert!(at("missing", ValueMatcher::Present(false), false));
        assert!(at("s", ValueMatcher::Present(true), false));
        let or = ValueMatcher::Or(vec![exact("q"), ValueMatcher::Present(false)]);
        assert!(at("missing", or, false));
    }
}
