//! The agent loop: loads the bootstrap, translates and publishes generations, watches the file,
//! refreshes DNS, tracks shard acknowledgements, and runs drain and shutdown.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::{
    admin, bootstrap, dns,
    model::{Cluster, DnsTarget, Endpoint, Listener, Snapshot},
    publish::{ShardCommand, ShardEvent, ShardLink},
    signals,
    stats::{self, ServerState, StatsRegistry},
    translate::{translate, TranslateContext, TranslateError},
    watch,
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
    /// Hands memory used by config work back to the OS (drops the descriptor pool); called
    /// after each load and admin request.
    pub release_memory: fn(),
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
    /// The bootstrap file changed on disk.
    Reload,
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

/// Why the agent could not start (the process exits 1 with this message).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    #[error("invalid configuration:\n{}", list(.0))]
    Config(Vec<TranslateError>),
    #[error("admin address {address}: {error}")]
    AdminBind {
        address: String,
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

/// Runs the agent on the calling thread until shutdown. `started` receives the start-up
/// outcome as soon as generation 1 runs on every shard (or failed to).
pub fn run(
    options: AgentOptions,
    shards: Vec<ShardLink>,
    events: UnboundedReceiver<ShardEvent>,
    logs: Arc<dyn LogControl>,
) -> Result<(), StartupError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartupError::Runtime)?;
    runtime.block_on(async move {
        let stats = StatsRegistry::new(shards.len());
        let bootstrap = load_bootstrap(&options)?;
        let (commands_tx, commands) = unbounded_channel();
        let (dns_tx, dns_results) = unbounded_channel();
        let mut agent = Agent {
            shards,
            events,
            commands,
            dns_tx,
            dns_results,
            dns: HashMap::new(),
            dns_tasks: HashMap::new(),
            publish_started: None,
            last_applied: Instant::now(),
            state: Arc::new(Mutex::new(AgentState {
                stats: StatsRegistry::new(0),
                bootstrap: bootstrap.clone(),
                snapshot: Arc::new(Snapshot {
                    generation: 0,
                    listeners: vec![],
                    clusters: HashMap::new(),
                }),
                applied: Vec::new(),
                server_state: ServerState::PreInitializing,
                healthcheck_failed: false,
                started: Instant::now(),
                started_wall: SystemTime::now(),
                last_updated: SystemTime::now(),
                last_reload_error: None,
                options: options.clone(),
            })),
        };
        let shard_count = agent.shards.len();
        stats::set(&stats.server.shard(0).concurrency, shard_count as i64);
        stats::set(
            &stats.server.shard(0).state,
            ServerState::Initializing as i64,
        );
        {
            let mut state = agent.lock();
            state.stats = stats;
            state.applied = vec![0; shard_count];
            state.server_state = ServerState::Initializing;
        }
        if let Some(address) = admin_address(&bootstrap) {
            let listener = tokio::net::TcpListener::bind(&address)
                .await
                .map_err(|error| StartupError::AdminBind {
                    address: address.clone(),
                    error,
                })?;
            let bound = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or(address);
            tracing::info!("admin listening on {bound}");
            let ctx = admin::AdminContext {
                state: agent.state.clone(),
                commands: commands_tx.clone(),
                logs,
            };
            tokio::spawn(admin::serve(listener, ctx));
        }
        agent.start(bootstrap).await?;
        (options.release_memory)();
        let _watch = options
            .config_path
            .as_ref()
            .and_then(|path| watch::spawn(path, commands_tx.clone()));
        signals::spawn(commands_tx);
        agent.run().await;
        Ok(())
    })
}

struct Agent {
    state: SharedState,
    shards: Vec<ShardLink>,
    events: UnboundedReceiver<ShardEvent>,
    commands: UnboundedReceiver<AgentCommand>,
    dns_tx: UnboundedSender<(String, Arc<[Endpoint]>)>,
    dns_results: UnboundedReceiver<(String, Arc<[Endpoint]>)>,
    /// Last resolved addresses of each DNS cluster.
    dns: HashMap<String, Arc<[Endpoint]>>,
    dns_tasks: HashMap<String, (DnsTarget, tokio::task::JoinHandle<()>)>,
    /// Generation published and when; cleared once every shard applied it.
    publish_started: Option<(u64, Instant)>,
    /// Latest time a shard reported applying the generation being published.
    last_applied: Instant,
}

impl Agent {
    fn lock(&self) -> std::sync::MutexGuard<'_, AgentState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Translates `bootstrap` as the generation after `previous` (or as generation 1).
    fn translate(
        &self,
        bootstrap: &Bootstrap,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, Vec<TranslateError>> {
        let mut state = self.lock();
        translate(
            bootstrap,
            &mut TranslateContext {
                generation: previous.map_or(1, |p| p.generation + 1),
                stats: &mut state.stats,
                previous,
                dns: &self.dns,
            },
        )
    }

    /// Generation 1: resolve DNS clusters, translate, publish, wait for every shard.
    async fn start(&mut self, bootstrap: Bootstrap) -> Result<(), StartupError> {
        let first = self
            .translate(&bootstrap, None)
            .map_err(StartupError::Config)?;
        for cluster in first.clusters.values() {
            if let Some(target) = &cluster.dns {
                self.dns
                    .insert(cluster.name.clone(), dns::resolve(target).await);
            }
        }
        let snapshot = match self.dns.is_empty() {
            true => first,
            false => self
                .translate(&bootstrap, None)
                .map_err(StartupError::Config)?,
        };
        self.publish(Arc::new(snapshot));
        let mut failures = Vec::new();
        while !self.lock().all_shards_applied() {
            match self.events.recv().await {
                Some(ShardEvent::BindFailed {
                    listener,
                    error,
                    shard,
                    ..
                }) => failures.push(format!("  - listener {listener} (shard {shard}): {error}")),
                Some(event) => self.on_shard_event(event),
                None => break,
            }
        }
        if !failures.is_empty() {
            failures.dedup_by(|a, b| a.split(" (shard").next() == b.split(" (shard").next());
            return Err(StartupError::Bind(failures));
        }
        let mut state = self.lock();
        state.server_state = ServerState::Live;
        stats::set(&state.stats.server.shard(0).state, ServerState::Live as i64);
        stats::set(&state.stats.server.shard(0).live, 1);
        stats::set(&state.stats.listener_manager.shard(0).workers_started, 1);
        drop(state);
        tracing::info!(
            "all {} shard(s) running generation 1: live",
            self.shards.len()
        );
        Ok(())
    }

    async fn run(&mut self) {
        loop {
            tokio::select! {
                Some(event) = self.events.recv() => self.on_shard_event(event),
                Some((cluster, endpoints)) = self.dns_results.recv() => self.on_dns(cluster, endpoints),
                Some(command) = self.commands.recv() => match command {
                    AgentCommand::Shutdown => return self.shutdown().await,
                    AgentCommand::DrainListeners { inbound_only, graceful } => self.drain_listeners(inbound_only, graceful),
                    AgentCommand::Reload => self.reload(),
                },
            }
        }
    }

    fn on_shard_event(&mut self, event: ShardEvent) {
        match event {
            ShardEvent::Applied {
                shard,
                generation,
                at,
            } => {
                let all_applied = {
                    let mut state = self.lock();
                    if let Some(applied) = state.applied.get_mut(shard) {
                        *applied = generation;
                    }
                    self.publish_started
                        .is_some_and(|(published, _)| state.applied.iter().all(|g| *g >= published))
                };
                if let Some((published, started)) = self.publish_started {
                    self.last_applied = self.last_applied.max(at);
                    if all_applied {
                        let took = self.last_applied.saturating_duration_since(started);
                        tracing::info!(
                            generation = published,
                            "applied on all shards {took:?} after publish"
                        );
                        self.publish_started = None;
                    }
                }
            }
            ShardEvent::BindFailed {
                shard,
                generation,
                listener,
                error,
            } => {
                let state = self.lock();
                crate::stats::inc(
                    &state
                        .stats
                        .listener_manager
                        .shard(0)
                        .listener_create_failure,
                );
                tracing::error!(shard, generation, listener, "listener failed: {error}");
            }
            ShardEvent::Exited { .. } => {}
        }
    }

    /// Publishes a generation to every shard and restarts DNS refreshes to match it.
    fn publish(&mut self, snapshot: Arc<Snapshot>) {
        {
            let mut state = self.lock();
            record_changes(&state.stats, &state.snapshot, &snapshot);
            state.snapshot = snapshot.clone();
            state.last_updated = SystemTime::now();
            state.stats.prune();
        }
        self.publish_started = Some((snapshot.generation, Instant::now()));
        self.last_applied = Instant::now();
        for shard in &self.shards {
            shard.send(ShardCommand::Apply(snapshot.clone()));
        }
        self.sync_dns_tasks(&snapshot);
    }

    fn sync_dns_tasks(&mut self, snapshot: &Snapshot) {
        self.dns_tasks.retain(|name, (target, task)| {
            let keep = snapshot.clusters.get(name).and_then(|c| c.dns.as_ref()) == Some(target);
            if !keep {
                task.abort();
            }
            keep
        });
        self.dns
            .retain(|name, _| snapshot.clusters.get(name).is_some_and(|c| c.dns.is_some()));
        for cluster in snapshot.clusters.values() {
            if let (Some(target), false) =
                (&cluster.dns, self.dns_tasks.contains_key(&cluster.name))
            {
                let task = tokio::spawn(dns::refresh(
                    cluster.name.clone(),
                    target.clone(),
                    self.dns_tx.clone(),
                ));
                self.dns_tasks
                    .insert(cluster.name.clone(), (target.clone(), task));
            }
        }
    }

    /// A DNS cluster's addresses changed: publish a generation that replaces that cluster only.
    fn on_dns(&mut self, name: String, endpoints: Arc<[Endpoint]>) {
        if self.dns.get(&name).is_some_and(|known| *known == endpoints) {
            return;
        }
        self.dns.insert(name.clone(), endpoints.clone());
        let current = self.lock().snapshot.clone();
        let Some(cluster) = current.clusters.get(&name) else {
            return;
        };
        tracing::info!(cluster = %name, hosts = endpoints.len(), "DNS cluster membership changed");
        let mut clusters = current.clusters.clone();
        clusters.insert(
            name,
            Arc::new(Cluster {
                endpoints,
                ..Cluster::clone(cluster)
            }),
        );
        self.publish(Arc::new(Snapshot {
            generation: current.generation + 1,
            listeners: current.listeners.clone(),
            clusters,
        }));
    }

    /// The bootstrap file changed: load, translate, publish — or keep serving the last good
    /// config and say why.
    fn reload(&mut self) {
        self.apply_reload();
        let release_memory = self.lock().options.release_memory;
        release_memory();
    }

    fn apply_reload(&mut self) {
        let (options, previous) = {
            let state = self.lock();
            crate::stats::inc(&state.stats.bootstrap_reload.shard(0).update_attempt);
            (state.options.clone(), state.snapshot.clone())
        };
        let result = load_bootstrap(&options)
            .map_err(|e| e.to_string())
            .and_then(|bootstrap| {
                self.translate(&bootstrap, Some(&previous))
                    .map(|snapshot| (bootstrap, snapshot))
                    .map_err(|errors| list(&errors))
            });
        match result {
            Ok((bootstrap, snapshot)) => {
                let mut state = self.lock();
                crate::stats::inc(&state.stats.bootstrap_reload.shard(0).update_success);
                state.bootstrap = bootstrap;
                state.last_reload_error = None;
                let unchanged = same_config(&state.snapshot, &snapshot);
                drop(state);
                if unchanged {
                    tracing::info!("bootstrap reloaded: no change");
                } else {
                    tracing::info!(generation = snapshot.generation, "bootstrap reloaded");
                    self.publish(Arc::new(snapshot));
                }
            }
            Err(error) => {
                let mut state = self.lock();
                crate::stats::inc(&state.stats.bootstrap_reload.shard(0).update_rejected);
                tracing::error!(
                    "bootstrap reload rejected, still serving generation {}:\n{error}",
                    state.snapshot.generation
                );
                state.last_reload_error = Some(error);
            }
        }
    }

    fn drain_listeners(&mut self, inbound_only: bool, graceful: bool) {
        let drain_time = self.lock().options.drain_time;
        if graceful {
            let mut state = self.lock();
            state.server_state = ServerState::Draining;
            stats::set(
                &state.stats.server.shard(0).state,
                ServerState::Draining as i64,
            );
        }
        let delay = if graceful { drain_time } else { Duration::ZERO };
        tracing::info!(inbound_only, graceful, "draining listeners in {delay:?}");
        let links = self.shards.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for link in links {
                link.send(ShardCommand::StopListening { inbound_only });
            }
        });
    }

    /// Stops accepting, lets connections finish for up to the drain time, stops the shards.
    async fn shutdown(&mut self) {
        let drain_time = {
            let mut state = self.lock();
            state.server_state = ServerState::Draining;
            stats::set(
                &state.stats.server.shard(0).state,
                ServerState::Draining as i64,
            );
            stats::set(&state.stats.server.shard(0).live, 0);
            state.options.drain_time
        };
        for shard in &self.shards {
            shard.send(ShardCommand::StopListening {
                inbound_only: false,
            });
        }
        let deadline = Instant::now() + drain_time;
        tracing::info!("shutting down: draining connections for up to {drain_time:?}");
        loop {
            let active = self.lock().stats.active_downstream_connections();
            if active <= 0 || Instant::now() >= deadline {
                tracing::info!(open_connections = active.max(0), "drain finished");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for shard in &self.shards {
            shard.send(ShardCommand::Exit);
        }
        let mut exited = 0;
        let wait = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(wait);
        while exited < self.shards.len() {
            tokio::select! {
                Some(event) = self.events.recv() => if let ShardEvent::Exited { .. } = event { exited += 1 },
                _ = &mut wait => break,
            }
        }
    }
}

/// Whether two generations run the same listeners and clusters (by pointer).
fn same_config(old: &Snapshot, new: &Snapshot) -> bool {
    old.listeners.len() == new.listeners.len()
        && old
            .listeners
            .iter()
            .zip(&new.listeners)
            .all(|(a, b)| Arc::ptr_eq(a, b))
        && old.clusters.len() == new.clusters.len()
        && new
            .clusters
            .iter()
            .all(|(name, c)| old.clusters.get(name).is_some_and(|o| Arc::ptr_eq(o, c)))
}

/// Envoy's listener_manager / cluster_manager change counters and gauges.
fn record_changes(stats: &StatsRegistry, old: &Snapshot, new: &Snapshot) {
    use crate::stats::{add, set};
    let lm = stats.listener_manager.shard(0);
    let old_listeners: HashMap<&str, &Arc<Listener>> =
        old.listeners.iter().map(|l| (l.name.as_str(), l)).collect();
    for listener in &new.listeners {
        match old_listeners.get(listener.name.as_str()) {
            None => add(&lm.listener_added, 1),
            Some(o) if !Arc::ptr_eq(o, listener) => add(&lm.listener_modified, 1),
            Some(_) => {}
        }
    }
    let removed = old
        .listeners
        .iter()
        .filter(|o| !new.listeners.iter().any(|n| n.name == o.name))
        .count();
    add(&lm.listener_removed, removed as u64);
    set(&lm.total_listeners_active, new.listeners.len() as i64);
    let cm = stats.cluster_manager.shard(0);
    for (name, cluster) in &new.clusters {
        match old.clusters.get(name) {
            None => add(&cm.cluster_added, 1),
            Some(o) if !Arc::ptr_eq(o, cluster) => add(&cm.cluster_modified, 1),
            Some(_) => continue,
        }
        let cells = cluster.stats.shard(0);
        set(&cells.membership_total, cluster.endpoints.len() as i64);
        set(&cells.membership_healthy, cluster.endpoints.len() as i64);
    }
    let removed = old
        .clusters
        .keys()
        .filter(|name| !new.clusters.contains_key(*name))
        .count();
    add(&cm.cluster_removed, removed as u64);
    set(&cm.active_clusters, new.clusters.len() as i64);
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
