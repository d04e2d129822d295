//! The agent: loads the bootstrap, translates and publishes generations, watches the file,
//! follows xDS and SDS, refreshes DNS, tracks shard acknowledgements, and runs drain and
//! shutdown. This module holds what the rest of the process sees (options, shared state,
//! commands, start-up).
mod changes;
mod event_loop;
mod overload;
mod sds;
mod xds;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use tokio::sync::mpsc::unbounded_channel;

use self::event_loop::Agent;
use crate::{
    admin, bootstrap, signals,
    translate::{translate, TranslateContext, TranslateError},
    watch,
};
use model::{
    publish::{EventReceiver, ShardLink},
    stats::{self, ServerState, StatsRegistry},
    Snapshot,
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
    /// `--admin-address-path`: where the admin's bound address is written.
    pub admin_address_path: Option<PathBuf>,
    /// Hands memory used by config work back to the OS (drops the descriptor pool); called
    /// after each load and admin request.
    pub release_memory: fn(),
    /// Hands free heap pages back to the OS, keeping the descriptor pool; called once the
    /// initial xDS fetch runs on every shard (an ADS stream keeps the pool, so
    /// `release_memory` does nothing then).
    pub trim_memory: fn(),
    /// Heap bytes in use, for the overload manager's `fixed_heap` monitor (`None`: unknown).
    pub heap_in_use: fn() -> Option<u64>,
    /// Opens the admin interface's socket (a hot restart's taken-over one, or a new one); the
    /// guard keeps it registered for the next hot restart while the admin server runs.
    pub admin_socket: AdminSocket,
    /// Called when the server goes live (a hot restart's previous process is told to drain).
    pub on_live: fn(),
    /// Listener addresses whose sockets a hot restart took over (not probed as taken).
    pub taken_over: Vec<std::net::SocketAddr>,
}

/// See [`AgentOptions::admin_socket`].
pub type AdminSocket =
    fn(
        std::net::SocketAddr,
    ) -> std::io::Result<(std::net::TcpListener, Box<dyn std::any::Any + Send>)>;

/// An admin socket of its own, for processes without hot restart.
pub fn bind_admin(
    address: std::net::SocketAddr,
) -> std::io::Result<(std::net::TcpListener, Box<dyn std::any::Any + Send>)> {
    Ok((std::net::TcpListener::bind(address)?, Box::new(())))
}

/// Changes the process's log levels (`/logging`); implemented by `main` over tracing's
/// reload handle. Returns the new filter description, or why the spec was rejected.
pub trait LogControl: Send + Sync {
    fn set(&self, spec: &str) -> Result<String, String>;
    fn current(&self) -> String;
}

/// Requests to the agent loop (from admin or signals).
#[derive(Debug)]
pub enum AgentCommand {
    /// Drain for `--drain-time-s`, then exit 0.
    Shutdown,
    /// Stop listening (all, or only inbound listeners). `graceful` first enters the draining
    /// state for the drain time before closing the sockets, as Envoy does; `started` is told
    /// once every shard drains (so a connection made after `/drain_listeners?graceful`
    /// answered is told to close, on any shard).
    DrainListeners {
        inbound_only: bool,
        graceful: bool,
        started: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// The bootstrap file changed on disk.
    Reload,
}

/// State the agent shares with the admin server.
pub struct AgentState {
    pub stats: StatsRegistry,
    /// The bootstrap as loaded (after `--config-yaml` merge): the static config dump.
    pub bootstrap: Bootstrap,
    pub snapshot: Arc<Snapshot>,
    /// Host health verdicts (active checks, outlier ejections) by cluster: what `/clusters`
    /// shows beside each host's EDS health.
    pub health: HashMap<String, Arc<model::health::HostVerdicts>>,
    /// The xDS resources held (empty without an ADS stream).
    pub dynamic: crate::dynamic::DynamicConfig,
    /// An ADS stream is running: the descriptor pool (the files of the types xDS delivered so
    /// far) stays resident, since every xDS update is checked against it, instead of being
    /// dropped after each load and admin request.
    pub keep_descriptors: bool,
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
    /// The generation holding the initial xDS fetch, until every shard runs it: then the
    /// memory that the fetch's decoding and the shards' rebuild freed goes back to the OS.
    pub trim_when_applied: Option<u64>,
    pub options: AgentOptions,
}

impl AgentState {
    /// Hands memory used by config work back to the OS, unless an ADS stream needs it.
    pub fn release_memory(&self) {
        if !self.keep_descriptors {
            (self.options.release_memory)();
        }
    }

    /// Trims the heap ([`AgentOptions::trim_memory`]) once every shard runs
    /// `trim_when_applied`; true when it did.
    pub fn trim_if_applied(&mut self) -> bool {
        let due = self
            .trim_when_applied
            .is_some_and(|generation| self.applied.iter().all(|g| *g >= generation));
        if due {
            self.trim_when_applied = None;
            (self.options.trim_memory)();
        }
        due
    }

    /// Whether every shard runs the current generation.
    pub fn all_shards_applied(&self) -> bool {
        self.applied.iter().all(|g| *g >= self.snapshot.generation)
    }
}

pub type SharedState = Arc<Mutex<AgentState>>;

/// Why the agent could not start (the process exits 1 with this message).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Transparent: the message already names the file; printing the source again (anyhow's
    /// `{:#}`) would say it twice.
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    #[error("invalid configuration:\n{}", list(.0))]
    Config(Vec<TranslateError>),
    #[error("admin address {address}: {error}")]
    AdminBind {
        address: String,
        error: std::io::Error,
    },
    #[error("--admin-address-path {}: {error}", .path.display())]
    AdminAddressPath {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("listeners failed to start:\n{}", .0.join("\n"))]
    Bind(Vec<String>),
    #[error("cannot start the agent runtime: {0}")]
    Runtime(std::io::Error),
}

fn list(errors: &[TranslateError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads and translates the configured bootstrap once (for `--mode validate` and start-up).
pub fn load_and_translate(
    options: &AgentOptions,
    stats: &mut StatsRegistry,
) -> Result<(Bootstrap, Snapshot), StartupError> {
    let bootstrap = load_bootstrap(options)?;
    let snapshot = translate(
        &bootstrap,
        &mut TranslateContext {
            generation: 1,
            stats,
            previous: None,
            dns: &HashMap::new(),
            extensions: &Default::default(),
            secrets: Default::default(),
            local_peer: Default::default(),
            ports: None,
        },
    )
    .map_err(StartupError::Config)?;
    Ok((bootstrap, snapshot))
}

fn load_bootstrap(options: &AgentOptions) -> Result<Bootstrap, crate::bootstrap::BootstrapError> {
    let yaml = match (&options.config_path, &options.config_yaml) {
        (None, None) => Some(options.default_bootstrap),
        (_, yaml) => yaml.as_deref(),
    };
    let mut bootstrap = bootstrap::load(
        options.config_path.as_deref(),
        yaml,
        options.allow_unknown_fields,
    )?;
    bootstrap::apply_node_flags(
        &mut bootstrap,
        options.service_node.as_deref(),
        options.service_cluster.as_deref(),
    );
    Ok(bootstrap)
}

/// Runs the agent on the calling thread until shutdown, from `bootstrap` (what
/// [`load_and_translate`] read and checked before the shards started); returns early with the
/// reason when generation 1 cannot start (an address that cannot bind).
pub fn run(
    options: AgentOptions,
    bootstrap: Bootstrap,
    shards: Vec<ShardLink>,
    events: EventReceiver,
    logs: Arc<dyn LogControl>,
) -> Result<(), StartupError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartupError::Runtime)?;
    runtime.block_on(async move {
        let stats = StatsRegistry::new(shards.len());
        stats::set(&stats.server.shard(0).concurrency, shards.len() as i64);
        stats::set(
            &stats.server.shard(0).state,
            ServerState::Initializing as i64,
        );
        let state = Arc::new(Mutex::new(AgentState {
            stats,
            bootstrap: bootstrap.clone(),
            snapshot: Arc::new(Snapshot::empty()),
            health: HashMap::new(),
            dynamic: Default::default(),
            keep_descriptors: false,
            applied: vec![0; shards.len()],
            server_state: ServerState::Initializing,
            healthcheck_failed: false,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            last_updated: SystemTime::now(),
            last_reload_error: None,
            trim_when_applied: None,
            options: options.clone(),
        }));
        let (commands_tx, commands) = unbounded_channel();
        if let Some(address) = admin_address(&bootstrap) {
            let bind_error = |error| StartupError::AdminBind {
                address: address.clone(),
                error,
            };
            let parsed = address.parse().map_err(|e| {
                bind_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            })?;
            let (listener, registration) = (options.admin_socket)(parsed).map_err(bind_error)?;
            listener.set_nonblocking(true).map_err(bind_error)?;
            let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
            let bound = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or(address);
            tracing::info!("admin listening on {bound}");
            if let Some(path) = &options.admin_address_path {
                std::fs::write(path, &bound).map_err(|error| StartupError::AdminAddressPath {
                    path: path.clone(),
                    error,
                })?;
            }
            let ctx = admin::AdminContext {
                state: state.clone(),
                commands: commands_tx.clone(),
                logs,
            };
            tokio::spawn(async move {
                let _registered = registration;
                admin::serve(listener, ctx).await
            });
        }
        // Watch before generation 1 is built: a change made meanwhile becomes generation 2
        // instead of being missed.
        let reload = commands_tx.clone();
        let _watch = options.config_path.as_ref().and_then(|path| {
            watch::spawn(std::slice::from_ref(path), &[], move || {
                reload.send(AgentCommand::Reload).is_ok()
            })
        });
        signals::spawn(commands_tx);
        let mut agent = Agent::new(state.clone(), shards, events, commands);
        agent.start(bootstrap).await?;
        state.lock().map(|s| s.release_memory()).ok();
        agent.run().await;
        Ok(())
    })
}

/// The admin `socket_address` of the bootstrap, as `ip:port`.
fn admin_address(bootstrap: &Bootstrap) -> Option<String> {
    use envoy_types::pb::envoy::config::core::v3::{
        address::Address as Kind, socket_address::PortSpecifier,
    };
    let address = bootstrap
        .admin
        .as_ref()?
        .address
        .as_ref()?
        .address
        .as_ref()?;
    let Kind::SocketAddress(socket) = address else {
        return None;
    };
    let Some(PortSpecifier::PortValue(port)) = socket.port_specifier else {
        return None;
    };
    Some(match socket.address.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]:{port}"),
        Err(_) => format!("{}:{port}", socket.address),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static TRIMS: AtomicUsize = AtomicUsize::new(0);

    /// With an ADS stream the descriptor pool stays resident, and `release_memory` does
    /// nothing: the initial fetch's freed memory goes back once every shard runs it, once.
    #[test]
    fn heap_trimmed_once_when_every_shard_runs_the_initial_fetch() {
        let mut state = crate::admin::fixture::state();
        state.keep_descriptors = true;
        state.options.trim_memory = || {
            TRIMS.fetch_add(1, Ordering::SeqCst);
        };
        state.applied = vec![2, 1];
        assert!(!state.trim_if_applied(), "nothing to trim before the fetch");
        state.trim_when_applied = Some(2);
        assert!(!state.trim_if_applied(), "shard 1 still runs generation 1");
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0);
        state.applied = vec![2, 3];
        assert!(state.trim_if_applied());
        assert!(!state.trim_if_applied(), "once");
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1);
        assert_eq!(state.trim_when_applied, None);
    }
}
