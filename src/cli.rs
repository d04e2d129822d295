//! Command line: the flags Envoy takes (Istio's agent passes them), with their Envoy meanings.
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Run the proxy.
    Serve,
    /// Load and translate the config, print OK or every problem, exit 0 or 1.
    Validate,
}

/// `--io-backend`: how shards wait for socket readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoBackend {
    /// io_uring when the kernel grants it, else epoll (logged).
    Auto,
    /// io_uring, or fail at start-up.
    #[value(name = "io_uring")]
    IoUring,
    /// epoll (for seccomp profiles that refuse io_uring, or to compare).
    Epoll,
}

impl IoBackend {
    /// The backend asked for (`None`: probe).
    pub fn requested(self) -> Option<rt::poller::Backend> {
        match self {
            IoBackend::Auto => None,
            IoBackend::IoUring => Some(rt::poller::Backend::IoUring),
            IoBackend::Epoll => Some(rt::poller::Backend::Epoll),
        }
    }
}

/// `--drain-strategy`: Envoy's two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DrainStrategy {
    /// Envoy: encourage connections to close over the drain time.
    Gradual,
    /// Envoy: encourage them all to close at once.
    Immediate,
}

/// `--concurrency N`, N >= 1. Envoy documents no meaning for 0 and runs one worker for it
/// (`std::max(1U, value)`); Istio never passes 0. Refused rather than given a meaning of ours.
fn shard_count(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err(
            "0 shards cannot serve; give 1 or more, or leave --concurrency out for one \
                      shard per CPU this process may run on"
                .into(),
        ),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a shard count: {e}")),
    }
}

/// `--bootstrap-version`: only 3 (the v2 API is gone, as in Envoy).
fn bootstrap_version(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(3) => Ok(3),
        _ => Err(format!("only bootstrap version 3 is read, not {value}")),
    }
}

/// shardproxy: a thread-per-core io_uring (or epoll) proxy configured with Envoy's v3 API.
///
/// With neither -c nor --config-yaml it runs the embedded default bootstrap (see README).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Envoy v3 bootstrap file (YAML or JSON). Watched: a valid change is applied live.
    #[arg(short = 'c', long = "config-path")]
    pub config_path: Option<PathBuf>,

    /// Bootstrap YAML merged over the file's (repeated fields append, scalars override).
    #[arg(long = "config-yaml")]
    pub config_yaml: Option<String>,

    /// `serve` runs the proxy; `validate` checks the config and exits 0 (OK) or 1.
    #[arg(long, value_enum, default_value = "serve")]
    pub mode: Mode,

    /// Shards (one pinned executor per core), 1 or more. Default: one per CPU this process may
    /// run on.
    #[arg(long, value_parser = shard_count)]
    pub concurrency: Option<usize>,

    /// How shards wait for sockets: `auto` (io_uring, else epoll), `io_uring` or `epoll`.
    #[arg(
        long = "io-backend",
        env = "SHARDPROXY_IO_BACKEND",
        value_enum,
        default_value = "auto"
    )]
    pub io_backend: IoBackend,

    /// Seconds open connections get to finish on shutdown or listener drain.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    pub drain_time_s: u64,

    /// `gradual` or `immediate`; both let connections finish within --drain-time-s.
    #[arg(long = "drain-strategy", value_enum, default_value = "gradual")]
    pub drain_strategy: DrainStrategy,

    /// Accepted and ignored: addresses come from the config.
    #[arg(long = "local-address-ip-version", default_value = "v4")]
    pub local_address_ip_version: String,

    /// Accepted and ignored: shards hand access-log lines to the log thread at the end of each
    /// loop turn (at once past 64 KiB), which writes them as they come.
    #[arg(long = "file-flush-interval-msec", default_value_t = 10000)]
    pub file_flush_interval_msec: u64,

    /// No hot restart: this process neither takes sockets over nor hands them on.
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,

    /// Tells apart hot-restart families on one host (the hand-over socket's name).
    #[arg(long = "base-id", default_value_t = 0)]
    pub base_id: u32,

    /// 0 for a first start; N takes the listening sockets over from the process started with
    /// N-1 (same --base-id), which drains and exits once this one is live.
    #[arg(long = "restart-epoch", default_value_t = 0)]
    pub restart_epoch: u32,

    /// Accepted and ignored: the previous process exits after its own --drain-time-s.
    #[arg(long = "parent-shutdown-time-s", default_value_t = 900)]
    pub parent_shutdown_time_s: u64,

    /// Only 3, the v3 API (Istio 1.10 passes it).
    #[arg(long = "bootstrap-version", value_parser = bootstrap_version)]
    pub bootstrap_version: Option<u32>,

    /// Accepted and ignored: the process stays dumpable (core dumps follow the rlimit the
    /// container sets) since shardproxy never changes its credentials.
    #[arg(long = "enable-core-dump")]
    pub enable_core_dump: bool,

    /// Accepted and ignored: no deprecated-feature warnings are logged.
    #[arg(long = "skip-deprecated-logs")]
    pub skip_deprecated_logs: bool,

    /// Accepted and ignored, as --file-flush-interval-msec.
    #[arg(long = "file-flush-min-size-kb", default_value_t = 64)]
    pub file_flush_min_size_kb: u64,

    /// Ignore unknown fields in the bootstrap instead of rejecting them.
    #[arg(long = "allow-unknown-static-fields")]
    pub allow_unknown_static_fields: bool,

    /// Log level: trace, debug, info, warning/warn, error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,

    /// Per-component levels, `component:level,...` (components are module names here).
    #[arg(long = "component-log-level")]
    pub component_log_level: Option<String>,

    /// Log line format. Accepted; lines use tracing's format (documented in the README).
    #[arg(long = "log-format")]
    pub log_format: Option<String>,

    /// Node id reported to control planes and in /server_info (overrides `node.id`).
    #[arg(long = "service-node")]
    pub service_node: Option<String>,

    /// Node cluster (overrides `node.cluster`).
    #[arg(long = "service-cluster")]
    pub service_cluster: Option<String>,

    /// Writes the admin interface's bound address (`ip:port`) to this file once it listens:
    /// how a caller learns the port of an admin configured on port 0.
    #[arg(long = "admin-address-path")]
    pub admin_address_path: Option<PathBuf>,
}
