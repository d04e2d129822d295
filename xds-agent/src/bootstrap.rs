//! Bootstrap loading: `-c` file and `--config-yaml`, merged as Envoy merges them.
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::{bootstrap::v3::Bootstrap, core::v3::Node};
use prost::Message;

/// Why a bootstrap could not be loaded. `source` is the file path, or `--config-yaml`.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{}: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The document is not YAML/JSON, or does not map onto a `Bootstrap`; the error carries the
    /// field path.
    #[error("{source_name}: {error}")]
    Parse {
        source_name: String,
        error: proto::JsonError,
    },
    #[error("no bootstrap given: pass -c <path> or --config-yaml")]
    Missing,
}

/// The name `--config-yaml` errors are reported under.
pub const CONFIG_YAML: &str = "--config-yaml";

/// Loads the bootstrap file at `path` (YAML or JSON, told apart by content) and merges
/// `config_yaml` over it with protobuf MergeFrom semantics, as Envoy does: set scalars replace,
/// messages merge recursively, repeated fields append.
pub fn load(
    path: Option<&Path>,
    config_yaml: Option<&str>,
    allow_unknown_fields: bool,
) -> Result<Bootstrap, BootstrapError> {
    let base = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| BootstrapError::Read {
                path: path.to_path_buf(),
                error,
            })?;
            Some(parse(
                &text,
                &path.display().to_string(),
                allow_unknown_fields,
            )?)
        }
        None => None,
    };
    let overlay = config_yaml
        .map(|yaml| parse(yaml, CONFIG_YAML, allow_unknown_fields))
        .transpose()?;
    match (base, overlay) {
        (Some(mut base), Some(overlay)) => {
            base.merge(overlay.encode_to_vec().as_slice())
                .map_err(|e| BootstrapError::Parse {
                    source_name: CONFIG_YAML.into(),
                    error: proto::JsonError {
                        path: String::new(),
                        message: format!("cannot merge: {e}"),
                    },
                })?;
            Ok(base)
        }
        (Some(only), None) | (None, Some(only)) => Ok(only),
        (None, None) => Err(BootstrapError::Missing),
    }
}

fn parse(text: &str, source_name: &str, allow_unknown: bool) -> Result<Bootstrap, BootstrapError> {
    let wrap = |error| BootstrapError::Parse {
        source_name: source_name.to_string(),
        error,
    };
    let value = proto::parse_document(text).map_err(wrap)?;
    // An empty document (e.g. an empty `--config-yaml`) is an empty bootstrap.
    let value = if value.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        value
    };
    proto::from_json(value, allow_unknown).map_err(wrap)
}

/// Applies `--service-node` and `--service-cluster`: as in Envoy, a non-empty flag overrides
/// `node.id` / `node.cluster` from the bootstrap.
pub fn apply_node_flags(
    bootstrap: &mut Bootstrap,
    service_node: Option<&str>,
    service_cluster: Option<&str>,
) {
    let node_flag = service_node.filter(|s| !s.is_empty());
    let cluster_flag = service_cluster.filter(|s| !s.is_empty());
    if node_flag.is_none() && cluster_flag.is_none() {
        return;
    }
    let node = bootstrap.node.get_or_insert_with(Node::default);
    if let Some(id) = node_flag {
        node.id = id.to_string();
    }
    if let Some(cluster) = cluster_flag {
        node.cluster = cluster.to_string();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A uniquely named file under the system temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(text: &str) -> TempFile {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "shardproxy-bootstrap-{}-{n}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    #[test]
    fn yaml_and_json_files_load() {
        let yaml = file("node: {id: a}\n");
        assert_eq!(
            load(Some(yaml.path()), None, false)
                .unwrap()
                .node
                .unwrap()
                .id,
            "a"
        );
        let json = file(r#"{"node": {"id": "b"}}"#);
        assert_eq!(
            load(Some(json.path()), None, false)
                .unwrap()
                .node
                .unwrap()
                .id,
            "b"
        );
    }

    #[test]
    fn config_yaml_merges_over_the_file() {
        let f = file("node: {id: a, cluster: c}\nstatic_resources:\n  clusters: [{name: x}]\n");
        let b = load(
            Some(f.path()),
            Some("node: {id: b}\nstatic_resources: {clusters: [{name: y}]}"),
            false,
        )
        .unwrap();
        let node = b.node.unwrap();
        assert_eq!((node.id.as_str(), node.cluster.as_str()), ("b", "c"));
        let names: Vec<_> = b
            .static_resources
            .unwrap()
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(names, ["x", "y"]);
        assert_eq!(load(None, Some(""), false).unwrap(), Bootstrap::default());
    }

    #[test]
    fn errors_name_source_and_field_path() {
        let f = file("static_resources:\n  clusters:\n  - name: c\n    connect_timeout: soon\n");
        let err = load(Some(f.path()), None, false).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: static_resources.clusters[0].connect_timeout: ",
                f.path().display()
            )),
            "{err}"
        );
        let err = load(None, Some("bogus: 1"), false).unwrap_err().to_string();
        assert!(err.starts_with("--config-yaml: "), "{err}");
        assert!(load(None, Some("bogus: 1"), true).is_ok());
        let missing = load(Some(Path::new("/nonexistent/x.yaml")), None, false).unwrap_err();
        assert!(missing.to_string().starts_with("/nonexistent/x.yaml: "));
        assert!(matches!(
            load(None, None, false),
            Err(BootstrapError::Missing)
        ));
    }

    #[test]
    fn node_flags_override_bootstrap() {
        let mut b = load(None, Some("node: {id: a, cluster: c}"), false).unwrap();
        apply_node_flags(&mut b, None, Some(""));
        assert_eq!(b.node.as_ref().unwrap().id, "a");
        apply_node_flags(&mut b, Some("n"), Some("k"));
        let node = b.node.unwrap();
        assert_eq!((node.id.as_str(), node.cluster.as_str()), ("n", "k"));
        let mut empty = Bootstrap::default();
        apply_node_flags(&mut empty, Some("n"), None);
        assert_eq!(empty.node.unwrap().id, "n");
    }
}
