//! The embedded default bootstrap: a TCP proxy on 127.0.0.1:10000 in front of the admin
//! interface on 127.0.0.1:9901 (also runnable as `examples/default.yaml`).
pub const BOOTSTRAP: &str = include_str!("../examples/default.yaml");
