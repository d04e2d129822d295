//! Config metadata: a resource's `metadata.filter_metadata` kept as written (per filter
//! namespace, a JSON value tree) for the filters that read it, e.g. Istio's stats reading a
//! cluster's `istio.services`.
use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value;

/// `filter_metadata`: namespace → struct. Empty for a resource without metadata.
#[derive(Debug, Clone, Default, PartialEq)]
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
}
