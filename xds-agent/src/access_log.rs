//! Access log formats: compiled from Envoy's `%COMMAND%` strings on the agent, rendered on shards.
#[derive(Debug)]
pub struct AccessLog;
