//! The agent's xDS side: starts the ADS stream, applies each update to the dynamic config,
//! answers it (ACK/NACK; an LDS answer waits until shards bound the new listeners, so a bind
//! failure NACKs that listener), keeps EDS/RDS/SDS subscriptions in step with what clusters
//! and listeners name, follows Envoy's initialisation order (CDS, then EDS, then LDS, then
//! RDS), publishes a generation whenever what is active changed, and goes live once the
//! initial fetch (SDS secrets included) is over.
use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use tokio::sync::mpsc::UnboundedReceiver;

use super::{event_loop::Agent, AgentState};
use crate::{
    dynamic::{
        stats_prefix, DynamicConfig, Inputs, ASSIGNMENT, CLUSTER, EXTENSION, LISTENER, ROUTE,
        SECRET,
    },
    translate::dynamic_resources::{node_identity, DynamicSources},
    xds::{client, ClientEvent, Rejection, Update},
};
use model::{
    stats::{self, ControlPlaneStats, ServerState, XdsStats},
    tls::SecretSource,
    Snapshot,
};

/// An LDS answer held until the shards applied the generation it produced.
struct PendingVerdict {
    nonce: String,
    generation: u64,
    rejection: Option<Rejection>,
}

pub(super) struct Xds {
    pub sources: DynamicSources,
    pub client: client::ClientHandle,
    pub events: UnboundedReceiver<ClientEvent>,
    control_plane: Arc<ControlPlaneStats>,
    lds_subscribed: bool,
    started: Instant,
    pending_lds: Option<PendingVerdict>,
    /// The wildcard types whose initial fetch timed out (counted once each).
    fetch_timed_out: Vec<&'static str>,
}

impl Xds {
    /// Connects to the control plane and subscribes to clusters (listeners follow once the
    /// clusters are warm, as in Envoy).
    pub fn start(sources: DynamicSources, stats: &mut stats::StatsRegistry) -> Self {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut settings = sources.ads.clone();
        settings.node = node_identity(&settings.node);
        let client = client::spawn(settings, tx);
        let control_plane: Arc<ControlPlaneStats> = stats.lasting("control_plane".into());
        let mut xds = Self {
            sources,
            client,
            events,
            control_plane,
            lds_subscribed: false,
            started: Instant::now(),
            pending_lds: None,
            fetch_timed_out: Vec::new(),
        };
        if xds.sources.cds.is_some() {
            xds.client.subscribe(CLUSTER, Vec::new());
        } else {
            xds.subscribe_listeners();
        }
        xds
    }

    fn subscribe_listeners(&mut self) {
        if !self.lds_subscribed && self.sources.lds.is_some() {
            self.client.subscribe(LISTENER, Vec::new());
        }
        self.lds_subscribed = true;
    }

    /// Whether the initial fetch of a wildcard type is over: a response came, or its
    /// `initial_fetch_timeout` passed (or it is not configured).
    fn fetched(&self, config: &DynamicConfig, type_url: &str, now: Instant) -> bool {
        let source = match type_url {
            CLUSTER => self.sources.cds,
            _ => self.sources.lds,
        };
        let Some(source) = source else {
            return true;
        };
        received(config, type_url)
            || source
                .initial_fetch_timeout
                .is_some_and(|t| now >= self.started + t)
    }

    /// The next moment something may stop warming.
    pub fn next_deadline(&self, config: &DynamicConfig, now: Instant) -> Option<Instant> {
        let wildcard = [self.sources.cds, self.sources.lds]
            .into_iter()
            .filter_map(|source| Some(self.started + source?.initial_fetch_timeout?))
            .filter(|d| *d > now);
        config.next_deadline(now).into_iter().chain(wildcard).min()
    }

    /// Whether clusters and listeners were fetched.
    fn fetched_all(&self, config: &DynamicConfig, now: Instant) -> bool {
        self.lds_subscribed
            && self.fetched(config, CLUSTER, now)
            && self.fetched(config, LISTENER, now)
    }
}

/// Whether the initial fetch is over: clusters and listeners fetched (with an ADS stream),
/// nothing warming, no SDS secret awaited.
fn initial_fetch_done(xds: Option<&Xds>, config: &DynamicConfig, now: Instant) -> bool {
    xds.is_none_or(|xds| xds.fetched_all(config, now)) && !config.warming(now)
}

fn received(config: &DynamicConfig, type_url: &str) -> bool {
    config.status.get(type_url).is_some_and(|s| s.received)
}

impl Agent {
    /// A client event: connection state, or an update to apply and answer.
    pub(super) fn on_xds_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Connected { service } => {
                tracing::info!(?service, "connected to the control plane");
                self.set_connected(1);
            }
            ClientEvent::Disconnected { service, reason } => {
                tracing::warn!(?service, "control plane stream ended: {reason}");
                self.set_connected(0);
                for type_url in [CLUSTER, LISTENER, ASSIGNMENT, ROUTE, EXTENSION] {
                    stats::inc(&self.xds_stats(type_url).shard(0).update_failure);
                }
                self.secret_stream_failed(&SecretSource::Ads);
            }
            ClientEvent::Update { update, .. } if update.type_url == SECRET => {
                let rejection = self.apply_secrets(&SecretSource::Ads, &update);
                if let Some(xds) = &self.xds {
                    xds.client.verdict(SECRET, &update.nonce, rejection);
                }
                self.after_secrets();
            }
            ClientEvent::Update { update, .. } => self.on_update(update),
        }
    }

    fn xds_stats(&self, type_url: &str) -> Arc<XdsStats> {
        self.lock().stats.lasting(stats_prefix(type_url).into())
    }

    fn set_connected(&mut self, value: i64) {
        if let Some(xds) = &self.xds {
            stats::set(&xds.control_plane.shard(0).connected_state, value);
        }
    }

    fn on_update(&mut self, update: Update) {
        let Some(mut xds) = self.xds.take() else {
            return;
        };
        let started = Instant::now();
        let statics = self.statics.clone();
        let scope = self.xds_stats(&update.type_url);
        stats::inc(&scope.shard(0).update_attempt);
        let applied = {
            let mut state = self.lock();
            let AgentState {
                stats,
                snapshot,
                dynamic,
                ..
            } = &mut *state;
            let mut inputs = Inputs {
                generation: snapshot.generation + 1,
                stats,
                previous: Some(snapshot),
                dns: &self.dns,
                ports: Some(&self.ports),
            };
            dynamic.apply(&update, &statics, &mut inputs)
        };
        let cells = scope.shard(0);
        match &applied.rejection {
            None => {
                stats::inc(&cells.update_success);
                stats::set(&cells.version, version_hash(&update.version_info));
                stats::set(&cells.update_time, epoch_millis());
            }
            Some(rejection) => {
                stats::inc(&cells.update_rejected);
                tracing::warn!(
                    type_url = %update.type_url,
                    version = %update.version_info,
                    "rejected: {}",
                    rejection.message
                );
            }
        }
        let now = Instant::now();
        self.follow_subscriptions(&mut xds, &update.type_url, now);
        let generation = if applied.changed || !self.initialized {
            self.republish(Some(&xds), now)
        } else {
            None
        };
        match (update.type_url.as_str(), generation) {
            (LISTENER, Some(generation)) => {
                if let Some(old) = xds.pending_lds.take() {
                    xds.client.verdict(LISTENER, &old.nonce, old.rejection);
                }
                xds.pending_lds = Some(PendingVerdict {
                    nonce: update.nonce.clone(),
                    generation,
                    rejection: applied.rejection,
                });
            }
            _ => xds
                .client
                .verdict(&update.type_url, &update.nonce, applied.rejection),
        }
        let took = started.elapsed();
        stats::record_duration(&cells.update_duration, took);
        tracing::debug!(
            type_url = %update.type_url,
            resources = update.resources.len(),
            removed = update.removed.len(),
            "update applied in {took:?}"
        );
        self.xds = Some(xds);
    }

    /// Keeps EDS, RDS and SDS subscriptions equal to what held clusters and listeners name,
    /// and subscribes to listeners once the initial clusters are warm.
    pub(super) fn follow_subscriptions(&mut self, xds: &mut Xds, type_url: &str, now: Instant) {
        if [CLUSTER, LISTENER, EXTENSION].contains(&type_url) {
            self.follow_secrets(Some(xds), now);
        }
        let mut state = self.lock();
        let config = &mut state.dynamic;
        let wanted = match type_url {
            CLUSTER => vec![(ASSIGNMENT, config.wanted_assignments())],
            LISTENER => vec![(ROUTE, config.wanted_routes())],
            _ => Vec::new(),
        };
        for (type_url, wanted) in wanted {
            config.wait_for(type_url, &wanted, now);
            xds.client.subscribe(type_url, wanted.into_keys().collect());
        }
        if type_url == LISTENER {
            // ECDS has no timeout: a listener cannot be built without its filter configs.
            xds.client.subscribe(EXTENSION, config.wanted_extensions());
        }
        if !xds.lds_subscribed
            && xds.fetched(config, CLUSTER, now)
            && config.warming_clusters(now).next().is_none()
        {
            xds.subscribe_listeners();
        }
    }

    /// A warming deadline passed: whatever waited on it becomes active.
    pub(super) fn on_deadline(&mut self) {
        let now = Instant::now();
        let mut xds = self.xds.take();
        for stats in self.lock().dynamic.secrets.timed_out(now) {
            stats::inc(&stats.shard(0).init_fetch_timeout);
        }
        if let Some(xds) = &mut xds {
            for type_url in [CLUSTER, LISTENER] {
                let timed_out = !xds.fetch_timed_out.contains(&type_url) && {
                    let state = self.lock();
                    !received(&state.dynamic, type_url)
                        && xds.fetched(&state.dynamic, type_url, now)
                };
                if timed_out {
                    xds.fetch_timed_out.push(type_url);
                    stats::inc(&self.xds_stats(type_url).shard(0).init_fetch_timeout);
                }
            }
            self.follow_subscriptions(xds, "", now);
        }
        self.republish(xds.as_ref(), now);
        self.xds = xds;
    }

    /// Assembles and publishes the next generation; marks the server live once the initial
    /// fetch is over. Returns the generation published, if one was.
    pub(super) fn republish(&mut self, xds: Option<&Xds>, now: Instant) -> Option<u64> {
        let (snapshot, unchanged, done) = {
            let mut state = self.lock();
            let generation = state.snapshot.generation + 1;
            let snapshot = state.dynamic.assemble(&self.statics, generation, now);
            let unchanged = super::changes::same_config(&state.snapshot, &snapshot);
            // Once live, no need to walk every held resource again.
            let done = !self.initialized && initial_fetch_done(xds, &state.dynamic, now);
            (snapshot, unchanged, done)
        };
        let generation = snapshot.generation;
        let published = (!unchanged).then(|| {
            self.publish(Arc::new(snapshot));
            generation
        });
        if done {
            self.initialized = true;
            let took = self.lock().started.elapsed();
            tracing::info!("initial fetch done in {took:?}: live");
            self.mark_live();
            let mut state = self.lock();
            state.trim_when_applied = Some(state.snapshot.generation);
            state.trim_if_applied();
        }
        published
    }

    /// Every shard applied `generation` (or reported a bind failure for it): sends the LDS
    /// answer that waited for it, NACKing listeners that could not bind (they are dropped, as
    /// Envoy drops a listener it cannot bind).
    pub(super) fn on_generation_applied(
        &mut self,
        generation: u64,
        bind_failures: &[(String, String)],
    ) {
        let Some(mut xds) = self.xds.take() else {
            return;
        };
        if let Some(pending) = xds.pending_lds.take_if(|p| p.generation <= generation) {
            let mut rejection = pending.rejection;
            let mut dropped = false;
            {
                let mut state = self.lock();
                for (name, error) in bind_failures {
                    if state.dynamic.listeners.remove(name).is_none() {
                        continue;
                    }
                    dropped = true;
                    let nack = rejection.get_or_insert(Rejection {
                        message: String::new(),
                        names: Vec::new(),
                    });
                    if !nack.message.is_empty() {
                        nack.message.push('\n');
                    }
                    nack.message
                        .push_str(&format!("listeners[{name:?}].address: {error}"));
                    nack.names.push(name.clone());
                }
            }
            xds.client.verdict(LISTENER, &pending.nonce, rejection);
            if dropped {
                self.republish(Some(&xds), Instant::now());
            }
        }
        self.xds = Some(xds);
    }

    /// Takes `statics` as the static translation (at start-up, after a bootstrap reload or a
    /// DNS change), follows the secrets it names (a secret file is read at once, so static
    /// listeners start with it) and composes it with the dynamic config: static listeners
    /// still waiting for SDS secrets stay out.
    pub(super) fn compose(&mut self, statics: Snapshot) -> Arc<Snapshot> {
        self.statics = Arc::new(statics);
        let xds = self.xds.take();
        self.follow_secrets(xds.as_ref(), Instant::now());
        self.xds = xds;
        let generation = self.statics.generation;
        let mut state = self.lock();
        Arc::new(
            state
                .dynamic
                .assemble(&self.statics, generation, Instant::now()),
        )
    }

    pub(super) fn mark_live(&mut self) {
        let mut state = self.lock();
        state.server_state = ServerState::Live;
        stats::set(&state.stats.server.shard(0).state, ServerState::Live as i64);
        stats::set(&state.stats.server.shard(0).live, 1);
        stats::set(&state.stats.listener_manager.shard(0).workers_started, 1);
        state.last_updated = SystemTime::now();
        let on_live = state.options.on_live;
        drop(state);
        on_live();
    }
}

/// Envoy's `version` gauge: a hash of the version text.
pub(super) fn version_hash(version: &str) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    version.hash(&mut hasher);
    (hasher.finish() >> 1) as i64
}

pub(super) fn epoch_millis() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
