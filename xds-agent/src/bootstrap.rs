//! Bootstrap loading: `-c` file and `--config-yaml`, merged as Envoy merges them.
