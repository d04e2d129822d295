//! Dynamic config: SDS secrets — the ones the listeners and clusters (static and dynamic) name,
//! the version of each accepted, the last rejected one, how long their users still wait
//! (`initial_fetch_timeout`; a rejected first version ends the wait, as in Envoy), and the
//! rebuild of every listener and cluster naming a secret with a new version of it.
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
use prost::Message;

use super::{DynamicConfig, Failed, Held, Inputs};
use crate::{
    model::{
        tls::{SdsSecret, SecretKey, SecretSource},
        Cluster, Listener, Snapshot,
    },
    stats::{StatsRegistry, XdsStats},
    translate::{self, resources, tls::Secrets, TranslateError},
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

/// A listener or cluster that serves (or warms), and the same rebuilt with a new secret.
pub enum Rebuilt {
    Listener(Arc<Listener>, Arc<Listener>),
    Cluster(Arc<Cluster>, Arc<Cluster>),
}

impl Rebuilt {
    /// Swaps the rebuilt TLS contexts naming `key` into the serving ones: new handshakes take
    /// them; the listener or cluster, and its connections, stay.
    pub fn swap_in(&self, key: &SecretKey) {
        let names = |secrets: &[SdsSecret]| secrets.iter().any(|s| s.key == *key);
        match self {
            Rebuilt::Listener(serving, fresh) => {
                let chains = serving.filter_chains.iter().zip(&fresh.filter_chains);
                for (serving, fresh) in chains {
                    if let (Some(serving), Some(fresh)) = (&serving.tls, &fresh.tls) {
                        if names(&serving.secrets) {
                            serving.update_from(fresh);
                        }
                    }
                }
            }
            Rebuilt::Cluster(serving, fresh) => {
                for (serving, fresh) in serving.tls_contexts().zip(fresh.tls_contexts()) {
                    if names(&serving.secrets) {
                        serving.update_from(fresh);
                    }
                }
            }
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

    /// Every listener and cluster naming `key` — static ones (translated from `bootstrap`
    /// into `statics`) and held dynamic ones — rebuilt with `candidate` as the secrets, not
    /// reusing the serving versions; or every problem a rebuild found.
    pub fn rebuild_users(
        &self,
        key: &SecretKey,
        candidate: &Arc<Secrets>,
        bootstrap: &Bootstrap,
        statics: &Snapshot,
        inputs: &mut Inputs,
    ) -> Result<Vec<Rebuilt>, Vec<TranslateError>> {
        let names = |secret: &SdsSecret| secret.key == *key;
        let known = self.known_clusters(statics);
        let mut ctx = inputs.context(&self.extension_configs, candidate);
        ctx.previous = None;
        let mut rebuilt = Vec::new();
        let mut errors = Vec::new();
        let mut take = |result: Result<Rebuilt, Vec<TranslateError>>| match result {
            Ok(r) => rebuilt.push(r),
            Err(e) => errors.extend(e),
        };
        for (i, serving) in statics.listeners.iter().enumerate() {
            if listener_secrets(serving).any(names) {
                take(
                    translate::static_listener(bootstrap, i, &mut ctx)
                        .map(|fresh| Rebuilt::Listener(serving.clone(), fresh)),
                );
            }
        }
        for serving in statics.clusters.values() {
            if cluster_secrets(serving).any(names) {
                take(
                    translate::static_cluster(bootstrap, &serving.name, &mut ctx)
                        .map(|fresh| Rebuilt::Cluster(serving.clone(), fresh)),
                );
            }
        }
        // Held bodies decoded once already.
        for held in self.listeners.values() {
            if listener_secrets(&held.model).any(names) {
                if let Ok(proto) = ListenerProto::decode(held.body.value.as_slice()) {
                    take(
                        resources::listener(&proto, &known, &mut ctx)
                            .map(|fresh| Rebuilt::Listener(held.model.clone(), fresh)),
                    );
                }
            }
        }
        for held in self.clusters.values() {
            if cluster_secrets(&held.model).any(names) {
                if let Ok(proto) = ClusterProto::decode(held.body.value.as_slice()) {
                    take(
                        resources::cluster(&proto, &mut ctx)
                            .map(|fresh| Rebuilt::Cluster(held.model.clone(), fresh)),
                    );
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
