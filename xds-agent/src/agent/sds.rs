//! The agent's SDS side: a subscription for every secret a listener or cluster names — on the
//! ADS stream, on an SDS stream per gRPC source, or a watched file — and each new version of a
//! secret accepted only if every listener and cluster naming it rebuilds with it (else NACKed,
//! the last good version serving). Accepted, the rebuilt TLS contexts are swapped into the
//! serving ones: new handshakes take the new secret, and no connection is closed.
use std::{collections::HashMap, time::Instant};

use envoy_types::pb::{
    envoy::extensions::transport_sockets::tls::v3::Secret, google::protobuf::Any,
};
use prost::Message;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{
    event_loop::Agent,
    xds::{epoch_millis, version_hash, Xds},
    AgentState,
};
use crate::{
    dynamic::{join, Inputs, SECRET},
    translate::{dynamic_resources::node_identity, secret},
    watch,
    xds::{client, ClientEvent, Rejection, Service, StreamSettings, Update},
};
use model::{
    stats,
    tls::{FileSecretSource, GrpcSecretSource, SecretKey, SecretSource},
};

/// What SDS streams and secret files report to the agent loop.
pub(super) enum SdsEvent {
    Stream(GrpcSecretSource, ClientEvent),
    /// A secret file, or a file its secret names, changed.
    File(FileSecretSource),
}

/// The SDS streams and watched secret files in use.
pub(super) struct Sds {
    streams: HashMap<GrpcSecretSource, client::ClientHandle>,
    /// Each file source read, with its watcher (`None` when the files cannot be watched).
    files: HashMap<FileSecretSource, Option<notify::RecommendedWatcher>>,
    tx: UnboundedSender<SdsEvent>,
    pub events: UnboundedReceiver<SdsEvent>,
}

impl Sds {
    pub fn new() -> Self {
        let (tx, events) = unbounded_channel();
        Self {
            streams: HashMap::new(),
            files: HashMap::new(),
            tx,
            events,
        }
    }
}

impl Agent {
    /// Keeps the secret subscriptions equal to what the listeners and clusters name: names on
    /// the ADS stream, an SDS stream per gRPC source, a watched file per file source (read at
    /// once). Streams and files no longer named are dropped.
    pub(super) fn follow_secrets(&mut self, xds: Option<&Xds>, now: Instant) {
        let sources = {
            let mut state = self.lock();
            let AgentState { stats, dynamic, .. } = &mut *state;
            let wanted = dynamic.wanted_secrets(&self.statics);
            dynamic.secrets.set_wanted(wanted, stats, now);
            dynamic.secrets.sources()
        };
        let names =
            |agent: &Self, source: &SecretSource| agent.lock().dynamic.secrets.names(source);
        if let Some(xds) = xds {
            xds.client
                .subscribe(SECRET, names(self, &SecretSource::Ads));
        }
        let in_use = |grpc: &GrpcSecretSource| sources.contains(&SecretSource::Grpc(grpc.clone()));
        self.sds.streams.retain(|grpc, _| in_use(grpc));
        let in_use = |file: &FileSecretSource| sources.contains(&SecretSource::File(file.clone()));
        self.sds.files.retain(|file, _| in_use(file));
        for source in &sources {
            match source {
                SecretSource::Ads => {}
                SecretSource::Grpc(grpc) => {
                    if !self.sds.streams.contains_key(grpc) {
                        let Some(stream) = self.open_stream(grpc) else {
                            continue;
                        };
                        self.sds.streams.insert(grpc.clone(), stream);
                    }
                    self.sds.streams[grpc].subscribe(SECRET, names(self, source));
                }
                SecretSource::File(file) => {
                    if !self.sds.files.contains_key(file) {
                        self.load_secret_file(file);
                    }
                }
            }
        }
    }

    /// Opens the SDS stream of a gRPC source, its events tagged with the source.
    fn open_stream(&self, source: &GrpcSecretSource) -> Option<client::ClientHandle> {
        let state = self.lock();
        // Translation checked the cluster is there.
        let (target, connect_timeout) = state
            .dynamic
            .secrets
            .current
            .grpc_clusters
            .get(&source.cluster)?
            .clone();
        let settings = StreamSettings {
            service: Service::Secrets,
            target,
            delta: source.delta,
            node: node_identity(&state.bootstrap.node.clone().unwrap_or_default()),
            set_node_on_first_message_only: source.set_node_on_first_message_only,
            connect_timeout,
        };
        drop(state);
        let (tx, mut events) = unbounded_channel();
        let stream = client::spawn(settings, tx);
        let (agent, tagged) = (self.sds.tx.clone(), source.clone());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if agent.send(SdsEvent::Stream(tagged.clone(), event)).is_err() {
                    return;
                }
            }
        });
        Some(stream)
    }

    /// Reads a secret file and offers its secret to every name wanted from it; then watches
    /// it (or its `watched_directory`) and the files its secret names.
    fn load_secret_file(&mut self, source: &FileSecretSource) {
        let file = SecretSource::File(source.clone());
        let names = self.lock().dynamic.secrets.names(&file);
        let read = secret::read_file(&source.path);
        let mut files = match &source.watched_directory {
            Some(_) => Vec::new(),
            None => vec![source.path.clone()],
        };
        if let Ok((_, body)) = &read {
            if let Ok(mut raw) = Secret::decode(body.value.as_slice()) {
                files.extend(secret::files(&mut raw));
            }
        }
        for name in names {
            let key = SecretKey {
                source: file.clone(),
                name,
            };
            let (version, body) = match &read {
                Ok((version, body)) => (version.as_str(), Ok(body)),
                Err(e) => ("", Err(e.clone())),
            };
            let _ = self.offer_secret(&key, version, body);
        }
        let dirs: Vec<_> = source.watched_directory.iter().cloned().collect();
        let (agent, tagged) = (self.sds.tx.clone(), source.clone());
        let watcher = watch::spawn(&files, &dirs, move || {
            agent.send(SdsEvent::File(tagged.clone())).is_ok()
        });
        self.sds.files.insert(source.clone(), watcher);
    }

    /// An SDS stream's or secret file's event.
    pub(super) fn on_sds_event(&mut self, event: SdsEvent) {
        match event {
            SdsEvent::Stream(source, ClientEvent::Connected { .. }) => {
                tracing::info!(cluster = %source.cluster, "SDS stream connected");
            }
            SdsEvent::Stream(source, ClientEvent::Disconnected { reason, .. }) => {
                tracing::warn!(cluster = %source.cluster, "SDS stream ended: {reason}");
                self.secret_stream_failed(&SecretSource::Grpc(source));
            }
            SdsEvent::Stream(source, ClientEvent::Update { update, .. }) => {
                let rejection = self.apply_secrets(&SecretSource::Grpc(source.clone()), &update);
                if let Some(stream) = self.sds.streams.get(&source) {
                    stream.verdict(SECRET, &update.nonce, rejection);
                }
                self.after_secrets();
            }
            SdsEvent::File(source) => {
                if self.sds.files.contains_key(&source) {
                    self.load_secret_file(&source);
                    self.after_secrets();
                }
            }
        }
    }

    /// Counts `update_failure` for every secret wanted from a stream that ended.
    pub(super) fn secret_stream_failed(&self, source: &SecretSource) {
        let state = self.lock();
        let wanted = state.dynamic.secrets.wanted.iter();
        for (_, wanted) in wanted.filter(|(key, _)| key.source == *source) {
            stats::inc(&wanted.stats.shard(0).update_failure);
        }
    }

    /// Publishes what the secrets stopped holding back (the server may go live; clusters
    /// that waited for them may be warm, so listeners may be subscribed to now), and hands
    /// the memory the rebuilds used back.
    pub(super) fn after_secrets(&mut self) {
        let now = Instant::now();
        let mut xds = self.xds.take();
        if let Some(xds) = &mut xds {
            self.follow_subscriptions(xds, "", now);
        }
        self.republish(xds.as_ref(), now);
        self.xds = xds;
        self.lock().release_memory();
    }

    /// Offers each secret of an update from `source`; the NACK of the rejected ones, if any.
    /// A secret the server removes keeps serving its last version, as in Envoy.
    pub(super) fn apply_secrets(
        &mut self,
        source: &SecretSource,
        update: &Update,
    ) -> Option<Rejection> {
        let mut rejected: Vec<(String, String)> = Vec::new();
        for resource in &update.resources {
            let key = SecretKey {
                source: source.clone(),
                name: resource.name.clone(),
            };
            if let Err(reason) = self.offer_secret(&key, &resource.version, Ok(&resource.body)) {
                rejected.push((resource.name.clone(), reason));
            }
        }
        if rejected.is_empty() {
            return None;
        }
        let (names, reasons): (Vec<String>, Vec<String>) = rejected.into_iter().unzip();
        Some(Rejection {
            message: reasons.join("\n"),
            names,
        })
    }

    /// Offers `body` (or why it could not be read) as version `version` of secret `key`: it
    /// is accepted when every listener and cluster naming the secret rebuilds with it, and
    /// their TLS contexts take it in place; else it is rejected (`Err` with the reason) and
    /// the last good version keeps serving. A secret not wanted is ignored. Counted in
    /// `sds.<name>.*`.
    fn offer_secret(
        &mut self,
        key: &SecretKey,
        version: &str,
        body: Result<&Any, String>,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut state = self.lock();
        let AgentState {
            stats,
            bootstrap,
            snapshot,
            dynamic,
            ..
        } = &mut *state;
        let Some(scope) = dynamic.secrets.wanted.get(key).map(|w| w.stats.clone()) else {
            return Ok(());
        };
        let cells = scope.shard(0);
        stats::inc(&cells.update_attempt);
        let offered = body.and_then(|body| {
            let resolved = secret::resolve(body, &key.name).map_err(|e| join(&e))?;
            let body = Any {
                type_url: SECRET.into(),
                value: resolved.encode_to_vec(),
            };
            if dynamic
                .secrets
                .held
                .get(key)
                .is_some_and(|h| h.body == body)
            {
                return Ok((body, dynamic.secrets.current.clone(), Vec::new()));
            }
            let candidate = dynamic.secrets.with(key, resolved);
            let mut inputs = Inputs {
                generation: snapshot.generation,
                stats,
                previous: None,
                dns: &self.dns,
                ports: Some(&self.ports),
            };
            let rebuilt = dynamic
                .rebuild_users(key, &candidate, bootstrap, &self.statics, &mut inputs)
                .map_err(|e| join(&e))?;
            Ok((body, candidate, rebuilt))
        });
        match offered {
            Ok((body, candidate, rebuilt)) => {
                dynamic
                    .secrets
                    .accept(key.clone(), version.to_string(), body, candidate);
                for context in &rebuilt {
                    context.swap_in();
                }
                stats::inc(&cells.update_success);
                stats::set(&cells.version, version_hash(version));
                stats::set(&cells.update_time, epoch_millis());
                stats::record_duration(&cells.update_duration, started.elapsed());
                tracing::info!(secret = %key.name, version, contexts = rebuilt.len(), "secret accepted");
                Ok(())
            }
            Err(reason) => {
                dynamic
                    .secrets
                    .reject(key.clone(), version.to_string(), reason.clone());
                stats::inc(&cells.update_rejected);
                tracing::warn!(secret = %key.name, version, "secret rejected: {reason}");
                Err(reason)
            }
        }
    }
}
