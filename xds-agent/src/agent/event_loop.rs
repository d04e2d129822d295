//! The agent's event loop: shard acknowledgements, xDS and SDS events, warming deadlines, DNS
//! results, reloads, drain and shutdown.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::{
    changes::{changed_clusters, record_changes, same_config},
    list, load_bootstrap,
    overload::OverloadManager,
    sds::Sds,
    xds::Xds,
    AgentCommand, AgentState, SharedState, StartupError,
};
use crate::{
    dns,
    health::HealthMonitor,
    listener_probe::ListenerAddresses,
    port_zero::PortReservations,
    translate::{
        dynamic_resources::dynamic_sources, tls::Secrets, translate, TranslateContext,
        TranslateError,
    },
    xds::ClientEvent,
};
use model::{
    publish::{EventReceiver, ShardCommand, ShardEvent, ShardLink},
    stats::{self, ServerState},
    Cluster, DnsTarget, Endpoint, Snapshot,
};

/// The next xDS client event, or never when there is no ADS stream.
async fn next_xds_event(xds: &mut Option<Xds>) -> Option<ClientEvent> {
    match xds {
        Some(xds) => xds.events.recv().await,
        None => std::future::pending().await,
    }
}

pub(super) struct Agent {
    state: SharedState,
    shards: Vec<ShardLink>,
    events: EventReceiver,
    commands: UnboundedReceiver<AgentCommand>,
    dns_tx: UnboundedSender<(String, Arc<[Endpoint]>)>,
    dns_results: UnboundedReceiver<(String, Arc<[Endpoint]>)>,
    /// Last resolved addresses of each DNS cluster.
    pub(super) dns: HashMap<String, Arc<[Endpoint]>>,
    /// The bootstrap's static resources, translated (what xDS resources are added to).
    pub(super) statics: Arc<Snapshot>,
    /// The ADS stream and the dynamic config, when the bootstrap has `dynamic_resources`.
    pub(super) xds: Option<Xds>,
    /// SDS streams and secret files.
    pub(super) sds: Sds,
    /// The initial fetch (xDS and SDS) finished, or timed out: the server is live.
    pub(super) initialized: bool,
    /// Listeners that failed to bind on some shard, or were refused before publishing (their
    /// address taken by another socket), since the last publish.
    bind_failures: Vec<(String, String)>,
    /// Listener addresses published so far (the probe skips them: see `listener_probe`).
    addresses: ListenerAddresses,
    /// The ports of listeners configured on port 0.
    pub(super) ports: PortReservations,
    dns_tasks: HashMap<String, (DnsTarget, tokio::task::JoinHandle<()>)>,
    /// A graceful `/drain_listeners` waiting for the shards to start draining: how many have
    /// yet to, and whom to tell.
    drain_started: Option<(usize, tokio::sync::oneshot::Sender<()>)>,
    /// Generation published and when; cleared once every shard applied it.
    publish_started: Option<(u64, Instant)>,
    /// Latest time a shard reported applying the generation being published.
    last_applied: Instant,
    /// Listener generations (name, config hash) draining, with how many shards still have
    /// their connections open: `listener_manager.total_listeners_draining` counts the keys.
    draining: HashMap<(String, u64), usize>,
    /// Active health checks and outlier detection.
    health: HealthMonitor,
    overload: OverloadManager,
}

impl Agent {
    pub(super) fn new(
        state: SharedState,
        shards: Vec<ShardLink>,
        events: EventReceiver,
        commands: UnboundedReceiver<AgentCommand>,
    ) -> Self {
        let (dns_tx, dns_results) = tokio::sync::mpsc::unbounded_channel();
        let (taken_over, overload) = {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            let options = &state.options;
            let overload = OverloadManager::new(options.heap_in_use, options.trim_memory);
            (options.taken_over.clone(), overload)
        };
        Self {
            state,
            shards,
            events,
            commands,
            dns_tx,
            dns_results,
            dns: HashMap::new(),
            statics: Arc::new(Snapshot::empty()),
            xds: None,
            sds: Sds::new(),
            initialized: false,
            bind_failures: Vec::new(),
            addresses: ListenerAddresses::holding(&taken_over),
            ports: PortReservations::default(),
            dns_tasks: HashMap::new(),
            drain_started: None,
            publish_started: None,
            last_applied: Instant::now(),
            draining: HashMap::new(),
            health: HealthMonitor::default(),
            overload,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, AgentState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Translates `bootstrap` as the generation after `previous` (or as generation 1), with
    /// the SDS secrets held; also returns the secrets the translation resolved against (the
    /// bootstrap's part new), to keep once the translation is taken.
    fn translate(
        &self,
        bootstrap: &Bootstrap,
        previous: Option<&Snapshot>,
    ) -> Result<(Snapshot, Arc<Secrets>), Vec<TranslateError>> {
        let mut state = self.lock();
        let AgentState { stats, dynamic, .. } = &mut *state;
        let mut ctx = TranslateContext {
            generation: previous.map_or(1, |p| p.generation + 1),
            stats,
            previous,
            dns: &self.dns,
            extensions: &Default::default(),
            secrets: dynamic.secrets.current.clone(),
            local_peer: Default::default(),
            ports: Some(&self.ports),
        };
        let snapshot = translate(bootstrap, &mut ctx)?;
        Ok((snapshot, ctx.secrets))
    }

    /// Generation 1: resolve DNS clusters, translate, publish, wait for every shard.
    pub(super) async fn start(&mut self, bootstrap: Bootstrap) -> Result<(), StartupError> {
        let first = self
            .translate(&bootstrap, None)
            .map_err(StartupError::Config)?;
        for cluster in first.0.clusters.values() {
            if let Some(target) = &cluster.dns {
                self.dns
                    .insert(cluster.name.clone(), dns::resolve(target).await);
            }
        }
        let (snapshot, secrets) = match self.dns.is_empty() {
            true => first,
            false => self
                .translate(&bootstrap, None)
                .map_err(StartupError::Config)?,
        };
        self.lock().dynamic.secrets.current = secrets;
        let mut errors = Vec::new();
        if let Some(sources) = dynamic_sources(&bootstrap, &mut errors) {
            let mut state = self.lock();
            state.keep_descriptors = true;
            let xds = Xds::start(sources, &mut state.stats);
            drop(state);
            self.xds = Some(xds);
        }
        let snapshot = self.compose(snapshot);
        // Before any shard binds: an address another socket holds fails the start-up.
        let taken = self.addresses.taken(&snapshot);
        if !taken.is_empty() {
            return Err(StartupError::Bind(
                taken
                    .iter()
                    .map(|(listener, error)| format!("  - listener {listener}: {error}"))
                    .collect(),
            ));
        }
        self.publish(snapshot);
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
        self.bind_failures.clear();
        tracing::info!("all {} shard(s) running generation 1", self.shards.len());
        let xds = self.xds.take();
        self.republish(xds.as_ref(), Instant::now());
        self.xds = xds;
        if !self.initialized {
            tracing::info!("waiting for the initial xDS fetch and SDS secrets");
        }
        Ok(())
    }

    pub(super) async fn run(&mut self) {
        loop {
            let now = Instant::now();
            let deadline = {
                let state = self.lock();
                match &self.xds {
                    Some(xds) => xds.next_deadline(&state.dynamic, now),
                    None => state.dynamic.next_deadline(now),
                }
            };
            let warming_ends = tokio::time::sleep_until(
                deadline.unwrap_or(now + Duration::from_secs(3600)).into(),
            );
            let refresh = self.overload.next_refresh();
            let overload_due = tokio::time::sleep_until(refresh.unwrap_or(now).into());
            tokio::select! {
                Some(event) = self.events.recv() => self.on_shard_event(event),
                _ = overload_due, if refresh.is_some() => self.overload.refresh(&self.shards),
                Some(event) = next_xds_event(&mut self.xds) => self.on_xds_event(event),
                Some(event) = self.sds.events.recv() => self.on_sds_event(event),
                _ = warming_ends, if deadline.is_some() => self.on_deadline(),
                Some((cluster, endpoints)) = self.dns_results.recv() => self.on_dns(cluster, endpoints),
                Some(event) = self.health.next() => {
                    self.health.on_event(event, &self.shards);
                    self.lock().health = self.health.verdicts();
                }
                Some(command) = self.commands.recv() => match command {
                    AgentCommand::Shutdown => return self.shutdown().await,
                    AgentCommand::DrainListeners { inbound_only, graceful, started } => self.drain_listeners(inbound_only, graceful, started),
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
                        let failures = std::mem::take(&mut self.bind_failures);
                        self.on_generation_applied(published, &failures);
                        let mut state = self.lock();
                        // No shard holds the generation before any more: free the stats
                        // scopes only it used.
                        state.stats.prune();
                        state.trim_if_applied();
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
                model::stats::inc(
                    &state
                        .stats
                        .listener_manager
                        .shard(0)
                        .listener_create_failure,
                );
                tracing::error!(shard, generation, listener, "listener failed: {error}");
                drop(state);
                self.bind_failures.push((listener, error));
            }
            ShardEvent::ListenerDraining {
                listener,
                config_hash,
                draining,
                ..
            } => self.listener_draining(listener, config_hash, draining),
            ShardEvent::DrainStarted { .. } => {
                if let Some((waiting, _)) = &mut self.drain_started {
                    *waiting = waiting.saturating_sub(1);
                    if *waiting == 0 {
                        if let Some((_, started)) = self.drain_started.take() {
                            let _ = started.send(());
                        }
                    }
                }
            }
            ShardEvent::Exited { .. } => {}
            ShardEvent::OutlierTrip {
                cluster,
                address,
                kind,
            } => {
                self.health.on_trip(&cluster, address, kind, &self.shards);
                self.lock().health = self.health.verdicts();
            }
            ShardEvent::OutlierCounts { cluster, counts } => {
                self.health.on_counts(&cluster, &counts)
            }
        }
    }

    fn listener_draining(&mut self, listener: String, config_hash: u64, draining: bool) {
        let key = (listener, config_hash);
        match (draining, self.draining.get_mut(&key)) {
            (true, Some(shards)) => *shards += 1,
            (true, None) => {
                self.draining.insert(key, 1);
            }
            (false, Some(shards)) if *shards > 1 => *shards -= 1,
            (false, _) => {
                self.draining.remove(&key);
            }
        }
        let mut state = self.lock();
        stats::set(
            &state
                .stats
                .listener_manager
                .shard(0)
                .total_listeners_draining,
            self.draining.len() as i64,
        );
        // A drain that ended on a shard let go of its generation: free the stats scopes only
        // that listener version used (`listener.<old stat_prefix>`, `http.<old stat_prefix>`).
        if !draining {
            state.stats.prune();
        }
    }

    /// Publishes a generation to every shard and restarts DNS refreshes to match it.
    pub(super) fn publish(&mut self, snapshot: Arc<Snapshot>) {
        let snapshot = self.refuse_taken_addresses(snapshot);
        {
            let mut state = self.lock();
            record_changes(&state.stats, &state.snapshot, &snapshot);
            let previous = std::mem::replace(&mut state.snapshot, snapshot.clone());
            state.last_updated = SystemTime::now();
            drop(state);
            self.sync_dns_tasks(&previous, &snapshot);
        }
        self.ports.retain(&snapshot);
        self.publish_started = Some((snapshot.generation, Instant::now()));
        self.last_applied = Instant::now();
        for shard in &self.shards {
            shard.send(ShardCommand::Apply(snapshot.clone()));
        }
        self.health.follow(&snapshot, &self.shards);
        self.lock().health = self.health.verdicts();
        self.overload.follow(&snapshot, &self.shards);
    }

    /// Keeps out of `snapshot` each new listener whose address another socket holds: its
    /// previous version keeps serving if there is one, as when a shard's bind fails. Each is
    /// reported as a bind failure (logged, counted, NACKed when it came over LDS).
    fn refuse_taken_addresses(&mut self, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        let taken = self.addresses.taken(&snapshot);
        let snapshot = match taken.is_empty() {
            true => snapshot,
            false => {
                let previous = self.lock().snapshot.clone();
                let mut kept = Snapshot::clone(&snapshot);
                kept.listeners = snapshot
                    .listeners
                    .iter()
                    .filter_map(|l| match taken.iter().any(|(name, _)| *name == l.name) {
                        false => Some(l.clone()),
                        true => previous
                            .listeners
                            .iter()
                            .find(|p| p.name == l.name)
                            .cloned(),
                    })
                    .collect();
                let state = self.lock();
                let failures = &state
                    .stats
                    .listener_manager
                    .shard(0)
                    .listener_create_failure;
                for (listener, error) in &taken {
                    model::stats::inc(failures);
                    tracing::error!(listener, "listener refused: {error}");
                }
                drop(state);
                self.bind_failures.extend(taken);
                Arc::new(kept)
            }
        };
        self.addresses.publish(&snapshot);
        snapshot
    }

    /// Keeps one DNS refresh task per DNS cluster of `snapshot` (looking only at the clusters
    /// that changed since `previous`).
    fn sync_dns_tasks(&mut self, previous: &Snapshot, snapshot: &Snapshot) {
        for name in changed_clusters(previous, snapshot) {
            let target = snapshot.clusters.get(name).and_then(|c| c.dns.as_ref());
            if self.dns_tasks.get(name).map(|(t, _)| t) == target {
                continue;
            }
            if let Some((_, task)) = self.dns_tasks.remove(name) {
                task.abort();
            }
            match target {
                Some(target) => {
                    let task = tokio::spawn(dns::refresh(
                        name.to_string(),
                        target.clone(),
                        self.dns_tx.clone(),
                    ));
                    self.dns_tasks
                        .insert(name.to_string(), (target.clone(), task));
                }
                None => {
                    self.dns.remove(name);
                }
            }
        }
    }

    /// A DNS cluster's addresses changed: publish a generation that replaces that cluster only.
    fn on_dns(&mut self, name: String, endpoints: Arc<[Endpoint]>) {
        if self.dns.get(&name).is_some_and(|known| *known == endpoints) {
            return;
        }
        self.dns.insert(name.clone(), endpoints.clone());
        tracing::info!(cluster = %name, hosts = endpoints.len(), "DNS cluster membership changed");
        let generation = self.lock().snapshot.generation + 1;
        let resolved = |cluster: &Arc<Cluster>| Arc::new(cluster.with_endpoints(endpoints.clone()));
        let mut statics = Snapshot::clone(&self.statics);
        statics.generation = generation;
        if let Some(cluster) = statics.clusters.get_mut(&name) {
            *cluster = resolved(cluster);
        } else {
            self.lock().dynamic.replace_cluster(&name, resolved);
        }
        let snapshot = self.compose(statics);
        self.publish(snapshot);
    }

    /// The bootstrap file changed: load, translate, publish — or keep serving the last good
    /// config and say why.
    fn reload(&mut self) {
        self.apply_reload();
        self.lock().release_memory();
    }

    fn apply_reload(&mut self) {
        let (options, previous) = {
            let state = self.lock();
            model::stats::inc(&state.stats.bootstrap_reload.shard(0).update_attempt);
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
            Ok((bootstrap, (snapshot, secrets))) => {
                let sources = dynamic_sources(&bootstrap, &mut Vec::new());
                if sources.as_ref().map(|s| &s.ads) != self.xds.as_ref().map(|x| &x.sources.ads) {
                    tracing::warn!(
                        "the bootstrap's ADS settings changed: they apply at the next restart"
                    );
                }
                let mut state = self.lock();
                model::stats::inc(&state.stats.bootstrap_reload.shard(0).update_success);
                state.bootstrap = bootstrap;
                state.last_reload_error = None;
                state.dynamic.secrets.current = secrets;
                drop(state);
                let snapshot = self.compose(snapshot);
                let unchanged = same_config(&self.lock().snapshot, &snapshot);
                if unchanged {
                    tracing::info!("bootstrap reloaded: no change");
                } else {
                    tracing::info!(generation = snapshot.generation, "bootstrap reloaded");
                    self.publish(snapshot);
                }
            }
            Err(error) => {
                let mut state = self.lock();
                model::stats::inc(&state.stats.bootstrap_reload.shard(0).update_rejected);
                tracing::error!(
                    "bootstrap reload rejected, still serving generation {}:\n{error}",
                    state.snapshot.generation
                );
                state.last_reload_error = Some(error);
            }
        }
    }

    fn drain_listeners(
        &mut self,
        inbound_only: bool,
        graceful: bool,
        started: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
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
        if graceful {
            // Connections learn of the drain now; the sockets close when the period ends.
            for link in &self.shards {
                link.send(ShardCommand::StartDraining { inbound_only });
            }
            // Told once every shard has started draining.
            self.drain_started = started.map(|s| (self.shards.len(), s));
        }
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
