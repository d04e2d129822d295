//! The agent loop: loads the bootstrap, translates and publishes generations, watches the file,
//! refreshes DNS, tracks shard acknowledgements, and runs drain and shutdown.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

use crate::{
    model::Snapshot,
    stats::{ServerState, StatsRegistry},
};

/// What the agent needs from the command line.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub config_path: Option<PathBuf>,
    pub config_yaml: Option<String>,
    /// Bootstrap used when neither `config_path` nor `config_yaml` is given.
    pub default_bootstrap: &'static str,
    pub allow_unknown_fields: bool,
    pub drain_time: Duration,
    pub concurrency: usize,
    pub service_node: Option<String>,
    pub service_cluster: Option<String>,
}

/// Changes the process's log levels (`/logging`); implemented by `main` over tracing's
/// reload handle. Returns the new filter description, or why the spec was rejected.
pub trait LogControl: Send + Sync {
    fn set(&self, spec: &str) -> Result<String, String>;
    fn current(&self) -> String;
}

/// Requests to the agent loop (from admin or signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCommand {
    /// Drain for `--drain-time-s`, then exit 0.
    Shutdown,
    /// Stop listening (all, or only inbound listeners). `graceful` first enters the draining
    /// state for the drain time before closing the sockets, as Envoy does.
    DrainListeners { inbound_only: bool, graceful: bool },
}

/// State the agent shares with the admin server.
pub struct AgentState {
    pub stats: StatsRegistry,
    /// The bootstrap as loaded (after `--config-yaml` merge): the static config dump.
    pub bootstrap: Bootstrap,
    pub snapshot: Arc<Snapshot>,
    /// Generation each shard last reported applied.
    pub applied: Vec<u64>,
    pub server_state: ServerState,
    /// `/healthcheck/fail` was called (and not undone by `/healthcheck/ok`).
    pub healthcheck_failed: bool,
    pub started: Instant,
    pub started_wall: SystemTime,
    pub last_updated: SystemTime,
    /// The last bootstrap reload's rejection reason, if the last attempt failed.
    pub last_reload_error: Option<String>,
    pub options: AgentOptions,
}

impl AgentState {
    /// Whether every shard runs the current generation.
    pub fn all_shards_applied(&self) -> bool {
        self.applied.iter().all(|g| *g >= self.snapshot.generation)
    }
}

pub type SharedState = Arc<Mutex<AgentState>>;
