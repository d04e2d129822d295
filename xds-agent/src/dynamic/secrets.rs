//! Dynamic config: SDS secrets — the ones the listeners and clusters (static and dynamic) name,
//! the version of each accepted, the last rejected one, how long their users still wait
//! (`initial_fetch_timeout`; a rejected first version ends the wait, as in Envoy), and the
//! rebuild of every TLS context naming a secret with a new version of it.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use envoy_types::pb::{
    envoy::{
        config::{
            bootstrap::v3::Bootstrap, cluster::v3::Cluster as ClusterProto,
            listener::v3::Listener as ListenerProto,
        },
        extensions::transport_sockets::tls::v3::Secret,
    },
    google::protobuf::Any,
};

use super::{DynamicConfig, Failed, Held, Inputs};
use crate::translate::{self, tls::Secrets, TranslateError};
use model::{
    stats::{StatsRegistry, XdsStats},
    tls::{ClientTls, SdsSecret, SecretKey, SecretSource, ServerTls},
    Cluster, Listener, Snapshot,
};

/// A secret some listener or cluster names.
#[derive(Debug)]
pub struct Wanted {
    /// Since when (the warming dump's `last_updated`).
    pub since: SystemTime,
    /// When its users stop waiting for a first version (`None`: never).
    deadline: Option<Instant>,
    /// Its `init_fetch_timeout` was counted.
    timed_out: bool,
    /// `sds.<name>.*`.
    pub stats: Arc<XdsStats>,
}

#[derive(Debug, Default)]
pub struct SecretStore {
    /// What translations resolve `sds_secret_config`s against: the bootstrap's part (set by
    /// the agent after each bootstrap translation) and the SDS secrets accepted.
    pub current: Arc<Secrets>,
    /// Each secret accepted: its version, when, and the resolved secret (for `/config_dump`).
    pub held: BTreeMap<SecretKey, Held<()>>,
    /// The last rejected version of a secret.
    pub failed: BTreeMap<SecretKey, Failed>,
    pub wanted: BTreeMap<SecretKey, Wanted>,
}

impl SecretStore {
    /// Keeps `wanted` (each with the longest wait its users allow) and forgets every other
    /// secret, held or not (no context can use it any more).
    pub fn set_wanted(
        &mut self,
        wanted: BTreeMap<SecretKey, Option<Duration>>,
        stats: &mut StatsRegistry,
        now: Instant,
    ) {
        self.wanted.retain(|key, _| wanted.contains_key(key));
        self.held.retain(|key, _| wanted.contains_key(key));
        self.failed.retain(|key, _| wanted.contains_key(key));
        if self
            .current
            .held
            .keys()
            .any(|key| !wanted.contains_key(key))
        {
            let current = Arc::make_mut(&mut self.current);
            Arc::make_mut(&mut current.held).retain(|key, _| wanted.contains_key(key));
        }
        for (key, wait) in wanted {
            self.wanted.entry(key).or_insert_with_key(|key| Wanted {
                since: SystemTime::now(),
                deadline: wait.map(|t| now + t),
                timed_out: false,
                stats: stats.scope(format!("sds.{}", key.name)),
            });
        }
    }

    /// The names wanted from `source`.
    pub fn names(&self, source: &SecretSource) -> Vec<String> {
        self.wanted
            .keys()
            .filter(|key| key.source == *source)
            .map(|key| key.name.clone())
            .collect()
    }

    /// The sources secrets are wanted from (keys sort by source first).
    pub fn sources(&self) -> Vec<SecretSource> {
        let mut sources: Vec<SecretSource> =
            self.wanted.keys().map(|key| key.source.clone()).collect();
        sources.dedup();
        sources
    }

    /// Whether `key`'s users still wait: wanted, never accepted nor rejected, not timed out.
    pub fn pending(&self, key: &SecretKey, now: Instant) -> bool {
        self.wanted.get(key).is_some_and(|wanted| {
            !self.held.contains_key(key)
                && !self.failed.contains_key(key)
                && wanted.deadline.is_none_or(|d| d > now)
        })
    }

    fn any_pending(&self, now: Instant) -> bool {
        self.wanted.keys().any(|key| self.pending(key, now))
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.wanted
            .iter()
            .filter(|(key, _)| self.pending(key, now))
            .filter_map(|(_, wanted)| wanted.deadline)
            .min()
    }

    /// The secrets whose wait ran out since the last call (each counted once as
    /// `init_fetch_timeout`).
    pub fn timed_out(&mut self, now: Instant) -> Vec<Arc<XdsStats>> {
        let mut out = Vec::new();
        for (key, wanted) in &mut self.wanted {
            let waited = !wanted.timed_out
                && !self.held.contains_key(key)
                && wanted.deadline.is_some_and(|d| d <= now);
            if waited {
                wanted.timed_out = true;
                out.push(wanted.stats.clone());
            }
        }
        out
    }

    /// What translations would resolve against with `secret` as `key`'s version.
    pub fn with(&self, key: &SecretKey, secret: Secret) -> Arc<Secrets> {
        let mut candidate = Secrets::clone(&self.current);
        Arc::make_mut(&mut candidate.held).insert(key.clone(), secret);
        Arc::new(candidate)
    }

    /// Takes `candidate` (from [`Self::with`]) as current, `key`'s version accepted.
    pub fn accept(&mut self, key: SecretKey, version: String, body: Any, candidate: Arc<Secrets>) {
        self.current = candidate;
        self.failed.remove(&key);
        self.held.insert(
            key,
            Held {
                version,
                last_updated: SystemTime::now(),
                body,
                model: (),
            },
        );
    }

    /// Records a rejected version (the accepted one, if any, stays).
    pub fn reject(&mut self, key: SecretKey, version: String, reason: String) {
        let at = SystemTime::now();
        let failed = Failed {
            version,
            reason,
            at,
        };
        self.failed.insert(key, failed);
    }

    /// `sds.<name>.version_text` of every secret accepted.
    pub fn version_texts(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.held.iter().map(|(key, held)| {
            (
                format!("sds.{}.version_text", key.name),
                held.version.clone(),
            )
        })
    }
}

/// A TLS context that serves (or waits for its secrets), and the same rebuilt with a new
/// secret.
pub enum Rebuilt {
    Server(Arc<ServerTls>, Arc<ServerTls>),
    Client(Arc<ClientTls>, Arc<ClientTls>),
}

impl Rebuilt {
    /// Swaps the rebuilt context into the serving one: new handshakes take it; the listener
    /// or cluster, and its connections, stay.
    pub fn swap_in(&self) {
        match self {
            Rebuilt::Server(serving, fresh) => serving.update_from(fresh),
            Rebuilt::Client(serving, fresh) => serving.update_from(fresh),
        }
    }
}

/// The SDS secrets a listener's TLS contexts name.
pub fn listener_secrets(listener: &Listener) -> impl Iterator<Item = &SdsSecret> {
    listener
        .filter_chains
        .iter()
        .filter_map(|chain| chain.tls.as_ref())
        .flat_map(|tls| &tls.secrets)
}

/// The SDS secrets a cluster's TLS contexts (`transport_socket_matches` too) name.
pub fn cluster_secrets(cluster: &Cluster) -> impl Iterator<Item = &SdsSecret> {
    cluster.tls_contexts().flat_map(|tls| &tls.secrets)
}

impl DynamicConfig {
    /// Every SDS secret the static and held dynamic listeners and clusters name, each with
    /// the longest wait its users allow.
    pub fn wanted_secrets(&self, statics: &Snapshot) -> BTreeMap<SecretKey, Option<Duration>> {
        let listeners = statics
            .listeners
            .iter()
            .chain(self.listeners.values().map(|held| &held.model))
            .flat_map(|listener| listener_secrets(listener));
        let clusters = statics
            .clusters
            .values()
            .chain(self.clusters.values().map(|held| &held.model))
            .flat_map(|cluster| cluster_secrets(cluster));
        let mut out: BTreeMap<SecretKey, Option<Duration>> = BTreeMap::new();
        for secret in listeners.chain(clusters) {
            let wait = out
                .entry(secret.key.clone())
                .or_insert(secret.initial_fetch_timeout);
            *wait = match (*wait, secret.initial_fetch_timeout) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        out
    }

    /// Every TLS context naming `key` — of static listeners and clusters (translated from
    /// `bootstrap` into `statics`) and of held dynamic ones — rebuilt from its transport
    /// socket with `candidate` as the secrets; or every problem a rebuild found.
    pub fn rebuild_users(
        &self,
        key: &SecretKey,
        candidate: &Arc<Secrets>,
        bootstrap: &Bootstrap,
        statics: &Snapshot,
        inputs: &mut Inputs,
    ) -> Result<Vec<Rebuilt>, Vec<TranslateError>> {
        let named = |secret: &SdsSecret| secret.key == *key;
        let names = |secrets: &[SdsSecret]| secrets.iter().any(named);
        let mut ctx = inputs.context(&self.extension_configs, candidate, &statics.local_peer);
        let mut rebuilt = Vec::new();
        let mut errors = Vec::new();
        let resources = bootstrap.static_resources.as_ref();
        let static_listeners = (statics.listeners.iter().enumerate())
            .filter(|(_, serving)| listener_secrets(serving).any(named))
            .map(|(i, serving)| {
                let proto = resources.and_then(|r| r.listeners.get(i)).cloned();
                (serving, proto, format!("static_resources.listeners[{i}]"))
            });
        // Held bodies decoded once already.
        let dynamic_listeners = (self.listeners.values())
            .filter(|held| listener_secrets(&held.model).any(named))
            .map(|held| {
                let proto = proto::decode_config::<ListenerProto>(&held.body.value).ok();
                (
                    &held.model,
                    proto,
                    format!("listeners[{:?}]", held.model.name),
                )
            });
        for (serving, proto, path) in static_listeners.chain(dynamic_listeners) {
            // The contexts naming the secret, by chain.
            let slots: Vec<_> = (serving.filter_chains.iter())
                .map(|c| c.tls.as_ref().filter(|tls| names(&tls.secrets)))
                .collect();
            let wanted = |i: usize| slots[i].is_some();
            let Some(proto) = proto else {
                continue;
            };
            let fresh = translate::listener_tls(&proto, &path, wanted, &mut ctx, &mut errors);
            for (serving, fresh) in slots.iter().zip(fresh) {
                if let (Some(serving), Some(fresh)) = (serving, fresh) {
                    rebuilt.push(Rebuilt::Server((*serving).clone(), fresh));
                }
            }
        }
        let static_clusters = (statics.clusters.values())
            .filter(|serving| cluster_secrets(serving).any(named))
            .map(|serving| {
                let mut protos = resources.iter().flat_map(|r| r.clusters.iter().enumerate());
                let found = protos.find(|(_, c)| c.name == serving.name);
                let path = found.map(|(j, _)| format!("static_resources.clusters[{j}]"));
                (
                    serving,
                    found.map(|(_, c)| c.clone()),
                    path.unwrap_or_default(),
                )
            });
        let dynamic_clusters = (self.clusters.values())
            .filter(|held| cluster_secrets(&held.model).any(named))
            .map(|held| {
                let proto = proto::decode_config::<ClusterProto>(&held.body.value).ok();
                (
                    &held.model,
                    proto,
                    format!("clusters[{:?}]", held.model.name),
                )
            });
        for (serving, proto, path) in static_clusters.chain(dynamic_clusters) {
            // The contexts naming the secret, in the translator's order: `transport_socket`,
            // then the matches'.
            let slots: Vec<_> = std::iter::once(serving.tls.as_ref())
                .chain(serving.socket_matches.iter().map(|m| m.tls.as_ref()))
                .map(|tls| tls.filter(|tls| names(&tls.secrets)))
                .collect();
            let wanted = |i: usize| slots[i].is_some();
            let Some(proto) = proto else {
                continue;
            };
            let fresh = translate::cluster_tls(&proto, &path, wanted, &mut ctx, &mut errors);
            for (serving, fresh) in slots.iter().zip(fresh) {
                if let (Some(serving), Some(fresh)) = (serving, fresh) {
                    rebuilt.push(Rebuilt::Client((*serving).clone(), fresh));
                }
            }
        }
        match errors.is_empty() {
            true => Ok(rebuilt),
            false => Err(errors),
        }
    }

    /// Whether some secret `secrets` lists is still awaited.
    pub(super) fn secrets_pending<'a>(
        &self,
        mut secrets: impl Iterator<Item = &'a SdsSecret>,
        now: Instant,
    ) -> bool {
        secrets.any(|secret| self.secrets.pending(&secret.key, now))
    }

    /// Whether some wanted secret is still awaited (static listeners and clusters wait too).
    pub(super) fn any_secret_pending(&self, now: Instant) -> bool {
        self.secrets.any_pending(now)
    }

    pub(super) fn next_secret_deadline(&self, now: Instant) -> Option<Instant> {
        self.secrets.next_deadline(now)
    }
}
