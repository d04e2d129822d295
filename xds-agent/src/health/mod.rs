//! Host health on the agent (shards never wait on it): active health checks of every host of a
//! cluster with `health_checks`, outlier detection of clusters with `outlier_detection`, and
//! the verdicts (which hosts each keeps out of load balancing) published to every shard.
mod detector;
mod probe;
mod session;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Instant};

use tokio::{
    sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender},
    task::JoinHandle,
};

use self::{detector::Detector, probe::Target, session::HostReport};
use model::{
    health::{CoarseHealth, Consecutive, EndpointCheck, HealthFlags, HostCounts, HostVerdicts},
    publish::{ShardCommand, ShardLink},
    stats::set,
    Cluster, Snapshot,
};

/// What the monitor's own tasks tell it.
pub enum HealthEvent {
    Checked {
        cluster: String,
        epoch: u64,
        report: HostReport,
    },
    /// The cluster's outlier-detection interval.
    Interval { cluster: String, epoch: u64 },
}

/// A task stopped when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the monitor keeps for one cluster.
struct Watched {
    /// Tells this watch's events from those of a replaced one.
    epoch: u64,
    config: Arc<Cluster>,
    /// The active check of each checked host, and what it last concluded.
    sessions: HashMap<SocketAddr, (Task, HealthFlags)>,
    /// When a check last brought each host back to health (slow start counts from it).
    healthy_since: HashMap<SocketAddr, Instant>,
    detector: Option<Detector>,
    interval: Option<Task>,
    verdicts: Arc<HostVerdicts>,
}

pub struct HealthMonitor {
    sender: UnboundedSender<HealthEvent>,
    events: UnboundedReceiver<HealthEvent>,
    clusters: HashMap<String, Watched>,
    next_epoch: u64,
}

impl Default for HealthMonitor {
    fn default() -> Self {
        let (sender, events) = unbounded_channel();
        Self {
            sender,
            events,
            clusters: HashMap::new(),
            next_epoch: 0,
        }
    }
}

impl HealthMonitor {
    pub async fn next(&mut self) -> Option<HealthEvent> {
        self.events.recv().await
    }

    /// Every cluster's current verdicts (what `/clusters` shows).
    pub fn verdicts(&self) -> HashMap<String, Arc<HostVerdicts>> {
        self.clusters
            .iter()
            .map(|(name, w)| (name.clone(), w.verdicts.clone()))
            .collect()
    }

    /// Follows a published generation: starts watching clusters with health checks or outlier
    /// detection, follows their hosts, stops watching the others. New verdicts go to `shards`.
    pub fn follow(&mut self, snapshot: &Snapshot, shards: &[ShardLink]) {
        let watched = |c: &Cluster| c.health_check.is_some() || c.outlier_detection.is_some();
        let dropped: Vec<String> = self
            .clusters
            .keys()
            .filter(|name| !snapshot.clusters.get(*name).is_some_and(|c| watched(c)))
            .cloned()
            .collect();
        for name in dropped {
            self.clusters.remove(&name);
            // A cluster that stays without checks or detection: no verdict holds any more.
            if snapshot.clusters.contains_key(&name) {
                send(shards, &name, &Arc::default());
            }
        }
        for (name, cluster) in snapshot.clusters.iter() {
            if !watched(cluster) {
                continue;
            }
            let same = self.clusters.get(name).is_some_and(|w| {
                Arc::ptr_eq(&w.config, cluster)
                    || (w.config.config_hash == cluster.config_hash
                        && w.config.endpoints == cluster.endpoints)
            });
            if same {
                continue;
            }
            let keep = self
                .clusters
                .remove(name)
                .filter(|w| w.config.config_hash == cluster.config_hash);
            let fresh = keep.is_none();
            let watch = self.watch(cluster.clone(), keep);
            self.clusters.insert(name.clone(), watch);
            self.publish(name, shards, fresh);
        }
    }

    /// Starts (or, with `previous` of the same config, carries on) watching `cluster`.
    fn watch(&mut self, cluster: Arc<Cluster>, previous: Option<Watched>) -> Watched {
        let addresses: Vec<SocketAddr> = cluster
            .endpoints
            .iter()
            .filter(|e| e.internal.is_none())
            .map(|e| e.address)
            .collect();
        let (epoch, mut sessions, mut healthy_since, detector, interval) = match previous {
            Some(p) => (p.epoch, p.sessions, p.healthy_since, p.detector, p.interval),
            None => {
                self.next_epoch += 1;
                let detector = cluster.outlier_detection.clone().map(Detector::new);
                let interval = detector.as_ref().map(|d| {
                    let every = d.config().interval;
                    let (sender, name, epoch) =
                        (self.sender.clone(), cluster.name.clone(), self.next_epoch);
                    Task(tokio::spawn(async move {
                        let mut ticks =
                            tokio::time::interval_at((Instant::now() + every).into(), every);
                        loop {
                            ticks.tick().await;
                            let event = HealthEvent::Interval {
                                cluster: name.clone(),
                                epoch,
                            };
                            if sender.send(event).is_err() {
                                return;
                            }
                        }
                    }))
                });
                (
                    self.next_epoch,
                    HashMap::new(),
                    HashMap::new(),
                    detector,
                    interval,
                )
            }
        };
        let mut detector = detector;
        if let Some(detector) = &mut detector {
            detector.set_hosts(&addresses);
        }
        sessions.retain(|address, _| addresses.contains(address));
        healthy_since.retain(|address, _| addresses.contains(address));
        if let Some(check) = &cluster.health_check {
            for endpoint in cluster.endpoints.iter().filter(|e| e.internal.is_none()) {
                let endpoint_check = endpoint.check.as_deref();
                if endpoint_check.is_some_and(|c| c.disabled)
                    || sessions.contains_key(&endpoint.address)
                {
                    continue;
                }
                let target = Target {
                    address: EndpointCheck::target(endpoint_check, endpoint.address),
                    authority: endpoint_check
                        .and_then(|c| c.hostname.clone())
                        .unwrap_or_else(|| check.authority().to_string()),
                    tls: cluster.tls_for(endpoint).cloned(),
                };
                let (sender, name) = (self.sender.clone(), cluster.name.clone());
                let report = move |report| {
                    let _ = sender.send(HealthEvent::Checked {
                        cluster: name.clone(),
                        epoch,
                        report,
                    });
                };
                let task = session::run(
                    check.clone(),
                    cluster.stats.clone(),
                    endpoint.address,
                    target,
                    report,
                );
                sessions.insert(
                    endpoint.address,
                    (Task(tokio::spawn(task)), HealthFlags::FAILED_ACTIVE_HC),
                );
            }
        }
        Watched {
            epoch,
            config: cluster,
            sessions,
            healthy_since,
            detector,
            interval,
            verdicts: Arc::default(),
        }
    }

    /// Handles one of the monitor's own events; new verdicts go to `shards`.
    pub fn on_event(&mut self, event: HealthEvent, shards: &[ShardLink]) {
        let now = Instant::now();
        match event {
            HealthEvent::Checked {
                cluster,
                epoch,
                report,
            } => {
                let Some(watched) = self.clusters.get_mut(&cluster).filter(|w| w.epoch == epoch)
                else {
                    return;
                };
                let mut changed = false;
                if let Some((_, flags)) = watched.sessions.get_mut(&report.address) {
                    changed |= *flags != report.flags;
                    let back = flags.contains(HealthFlags::FAILED_ACTIVE_HC)
                        && !report.flags.contains(HealthFlags::FAILED_ACTIVE_HC);
                    if back {
                        watched.healthy_since.insert(report.address, now);
                    }
                    *flags = report.flags;
                }
                if report.passed && !report.flags.contains(HealthFlags::FAILED_ACTIVE_HC) {
                    if let Some(detector) = &mut watched.detector {
                        changed |= detector.on_check_passed(report.address, now);
                    }
                }
                if changed {
                    self.publish(&cluster, shards, false);
                }
            }
            HealthEvent::Interval { cluster, epoch } => {
                let Some(watched) = self.clusters.get_mut(&cluster).filter(|w| w.epoch == epoch)
                else {
                    return;
                };
                let changed = watched
                    .detector
                    .as_mut()
                    .is_some_and(|d| d.on_interval(now));
                for shard in shards {
                    shard.send(ShardCommand::CollectOutlierCounts {
                        cluster: cluster.clone(),
                    });
                }
                if changed {
                    self.publish(&cluster, shards, false);
                }
            }
        }
    }

    /// A shard's run of failures of `address` reached its threshold.
    pub fn on_trip(
        &mut self,
        cluster: &str,
        address: SocketAddr,
        kind: Consecutive,
        shards: &[ShardLink],
    ) {
        let ejected = self
            .clusters
            .get_mut(cluster)
            .and_then(|w| w.detector.as_mut())
            .is_some_and(|d| d.on_trip(address, kind, Instant::now()));
        if ejected {
            self.publish(cluster, shards, false);
        }
    }

    /// A shard's outlier-detection counts of `cluster`'s hosts.
    pub fn on_counts(&mut self, cluster: &str, counts: &[(SocketAddr, HostCounts)]) {
        if let Some(detector) = self
            .clusters
            .get_mut(cluster)
            .and_then(|w| w.detector.as_mut())
        {
            detector.add_counts(counts);
        }
    }

    /// Recomputes `cluster`'s verdicts and gauges, and sends the verdicts to every shard when
    /// they changed (or `always`: a new watch, whose shards may hold an older one's).
    fn publish(&mut self, cluster: &str, shards: &[ShardLink], always: bool) {
        let Some(watched) = self.clusters.get_mut(cluster) else {
            return;
        };
        let mut flags = HashMap::new();
        for endpoint in watched.config.endpoints.iter() {
            let mut host = watched
                .sessions
                .get(&endpoint.address)
                .map_or(HealthFlags::NONE, |(_, f)| *f);
            if watched
                .detector
                .as_ref()
                .is_some_and(|d| d.is_ejected(&endpoint.address))
            {
                host.insert(HealthFlags::FAILED_OUTLIER_CHECK);
            }
            if host != HealthFlags::NONE {
                flags.insert(endpoint.address, host);
            }
        }
        let config = &watched.config;
        if let Some(check) = &config.health_check {
            let cells = check.stats.shard(0);
            let sessions = watched.sessions.values().map(|(_, f)| *f);
            let healthy = sessions
                .clone()
                .filter(|f| !f.contains(HealthFlags::FAILED_ACTIVE_HC))
                .count();
            let degraded = sessions
                .filter(|f| f.contains(HealthFlags::DEGRADED_ACTIVE_HC))
                .count();
            set(&cells.healthy, healthy as i64);
            set(&cells.degraded, degraded as i64);
        }
        let verdicts = HostVerdicts {
            flags,
            healthy_since: watched.healthy_since.clone(),
        };
        let healthy = config
            .endpoints
            .iter()
            .filter(|e| {
                e.eds_health.union(verdicts.of(&e.address)).coarse() == CoarseHealth::Healthy
            })
            .count();
        set(&config.stats.shard(0).membership_healthy, healthy as i64);
        if *watched.verdicts == verdicts && !always {
            return;
        }
        watched.verdicts = Arc::new(verdicts);
        send(shards, cluster, &watched.verdicts);
    }
}

fn send(shards: &[ShardLink], cluster: &str, verdicts: &Arc<HostVerdicts>) {
    for shard in shards {
        shard.send(ShardCommand::HostHealth {
            cluster: cluster.to_string(),
            verdicts: verdicts.clone(),
        });
    }
}
