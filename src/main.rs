//! Binary entry: parses Envoy-compatible flags and starts the agent and the shards.
fn main() {}
