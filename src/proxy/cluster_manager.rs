//! Shard-local cluster manager: per-cluster hosts and load-balancer state, keyed by name and
//! carried across snapshots (rebuilt only for clusters whose config or endpoints changed), the
//! host health the agent publishes, and what outlier detection learns from each request.
use std::{
    cell::{Cell, OnceCell, RefCell},
    collections::HashMap,
    net::SocketAddr,
    rc::Rc,
    sync::Arc,
    time::Instant,
};

use model::{
    balancing::LocalZone,
    health::{HealthFlags, HostCounts, HostVerdicts, Outcome},
    publish::{EventSender, ShardEvent},
    subset::MetadataMatch,
    Cluster, ClusterRef, Endpoint, Locality, Snapshot,
};

use super::{
    lb::{
        host_set::{Balancing, HostSet},
        subset::SubsetSets,
        zone::LocalSpread,
        PickKey,
    },
    outlier::HostOutlier,
    pool::{Breakers, HostPool},
};

/// An upstream host: its endpoint as the cluster's assignment lists it now, and what this
/// shard keeps of it across assignments.
pub struct Host {
    pub endpoint: Endpoint,
    state: Rc<HostState>,
}

/// What a host keeps while its address stays in the cluster, through EDS updates that change
/// only its weight, health or metadata (as Envoy updates a host in place): its connections and
/// what has been counted of it.
#[derive(Default)]
struct HostState {
    /// This shard's count of its active connections (or requests).
    active: Cell<u32>,
    /// Its idle HTTP connections.
    pool: HostPool,
    /// This shard's outlier-detection counts of the host, made on the first report (only
    /// clusters with outlier detection report).
    outlier: OnceCell<Box<HostOutlier>>,
}

impl Host {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            state: Rc::default(),
        }
    }

    /// The host `endpoint` of a new assignment is: this one when nothing changed, this one's
    /// state with the new endpoint when it is the same host (see [`Endpoint::same_host`]),
    /// else none.
    fn successor(self: &Rc<Self>, endpoint: &Endpoint) -> Option<Rc<Host>> {
        if self.endpoint == *endpoint {
            return Some(self.clone());
        }
        // Updated in place, it keeps when its slow-start window opened, as in Envoy.
        self.endpoint.same_host(endpoint).then(|| {
            Rc::new(Host {
                endpoint: Endpoint {
                    first_published: self.endpoint.first_published,
                    ..endpoint.clone()
                },
                state: self.state.clone(),
            })
        })
    }

    /// This host (its connections and counts) with its locality weighing `weight`: how a
    /// subset sees it under `scale_locality_weight`.
    pub fn with_locality_weight(self: &Rc<Self>, weight: u32) -> Rc<Host> {
        if self.endpoint.locality.weight == weight {
            return self.clone();
        }
        let locality = Locality {
            weight,
            ..self.endpoint.locality
        };
        Rc::new(Host {
            endpoint: Endpoint {
                locality,
                ..self.endpoint.clone()
            },
            state: self.state.clone(),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.endpoint.address
    }

    pub fn active(&self) -> u32 {
        self.state.active.get()
    }

    /// Its idle HTTP connections.
    pub fn pool(&self) -> &HostPool {
        &self.state.pool
    }
}

/// A host in use: counts as active (for LEAST_REQUEST) until dropped.
pub struct ActiveHost(Rc<Host>);

impl ActiveHost {
    pub fn new(host: Rc<Host>) -> Self {
        let active = &host.state.active;
        active.set(active.get() + 1);
        Self(host)
    }

    pub fn address(&self) -> SocketAddr {
        self.0.address()
    }

    pub fn host(&self) -> &Rc<Host> {
        &self.0
    }
}

impl Drop for ActiveHost {
    fn drop(&mut self) {
        let active = &self.0.state.active;
        active.set(active.get() - 1);
    }
}

pub struct ShardCluster {
    pub config: Arc<Cluster>,
    hosts: Box<[Rc<Host>]>,
    /// What picks go over: rebuilt when the hosts' health changes.
    set: RefCell<Balancers>,
    pub breakers: Rc<Breakers>,
    /// An `ORIGINAL_DST` cluster's hosts, made on first use, with when each was last picked.
    destinations: RefCell<HashMap<SocketAddr, (Rc<Host>, Instant)>>,
    /// Where a host's run of failures is reported (clusters with outlier detection).
    events: Option<EventSender>,
    shard: usize,
    /// The local cluster's spread its set was built with (zone-aware routing).
    local: RefCell<Option<Rc<LocalSpread>>>,
}

impl ShardCluster {
    fn new(
        config: Arc<Cluster>,
        place: &Place,
        previous: Option<&ShardCluster>,
        verdicts: Option<&HostVerdicts>,
        local: Option<Rc<LocalSpread>>,
    ) -> Self {
        let Place {
            shard,
            shards,
            ref events,
        } = *place;
        // Hosts that stay keep their connections and counts.
        let hosts: Box<[Rc<Host>]> = config
            .endpoints
            .iter()
            .map(|endpoint| {
                previous
                    .and_then(|p| p.hosts.iter().find_map(|h| h.successor(endpoint)))
                    .unwrap_or_else(|| Rc::new(Host::new(endpoint.clone())))
            })
            .collect();
        if let Some(previous) = previous {
            previous.retire_except(&hosts);
        }
        let subsets = |c: &Cluster| c.subset.as_ref().map(|s| s.subsets.clone());
        let before = previous.and_then(|p| subsets(&p.config));
        if before.is_some() || config.subset.is_some() {
            let cells = config.stats.shard(shard);
            SubsetSets::count(before.as_deref(), subsets(&config).as_deref(), cells, shard);
        }
        let set = RefCell::new(balancers(&config, &hosts, verdicts, shard, &local));
        let breakers = Rc::new(Breakers::new(config.circuit_breakers.per_shard(shards)));
        let events = config.outlier_detection.as_ref().and(events.clone());
        Self {
            config,
            hosts,
            set,
            breakers,
            destinations: RefCell::default(),
            events,
            shard,
            local: RefCell::new(local),
        }
    }

    /// The cluster is gone from the snapshot: its hosts leave, its subsets are removed.
    fn leave(&self) {
        self.retire_except(&[]);
        if let Some(subset) = &self.config.subset {
            let cells = self.config.stats.shard(self.shard);
            SubsetSets::count(Some(&subset.subsets), None, cells, self.shard);
        }
    }

    /// Its hosts leave, but for those `kept` by its successor (see `HostPool::retire`).
    fn retire_except(&self, kept: &[Rc<Host>]) {
        let destinations = self.destinations.borrow();
        self.hosts
            .iter()
            .chain(destinations.values().map(|(host, _)| host))
            .filter(|old| !kept.iter().any(|new| Rc::ptr_eq(&new.state, &old.state)))
            .for_each(|gone| gone.pool().retire());
    }

    /// Rebuilds what picks go over with the agent's new `verdicts` on the hosts.
    fn set_verdicts(&self, verdicts: &HostVerdicts) {
        let local = self.local.borrow();
        *self.set.borrow_mut() = balancers(
            &self.config,
            &self.hosts,
            Some(verdicts),
            self.shard,
            &local,
        );
    }

    /// Rebuilds what picks go over when the local cluster's spread changed.
    fn set_local(&self, local: &Option<Rc<LocalSpread>>, verdicts: Option<&HostVerdicts>) {
        if *self.local.borrow() == *local {
            return;
        }
        *self.local.borrow_mut() = local.clone();
        *self.set.borrow_mut() = balancers(&self.config, &self.hosts, verdicts, self.shard, local);
    }

    /// Counts how a request or connection to `host` ended, for outlier detection; a run of
    /// failures that reaches its threshold is reported to the agent, which decides on the
    /// ejection.
    pub fn report(&self, host: &Host, outcome: Outcome) {
        let (Some(config), Some(events)) = (&self.config.outlier_detection, &self.events) else {
            return;
        };
        let outlier = host.state.outlier.get_or_init(Box::default);
        for kind in outlier.record(outcome, config).into_iter().flatten() {
            let _ = events.send(ShardEvent::OutlierTrip {
                cluster: self.config.name.clone(),
                address: host.address(),
                kind,
            });
        }
    }

    /// Every host's counts since the last collection (then zeroed).
    fn take_counts(&self) -> Vec<(SocketAddr, HostCounts)> {
        self.hosts
            .iter()
            .filter_map(|h| Some((h.address(), h.state.outlier.get()?.take_counts())))
            .filter(|(_, counts)| counts.total + counts.local_total > 0)
            .collect()
    }

    /// The next host: an `ORIGINAL_DST` cluster's for `destination` (none without one), any
    /// other's by its balancer (a consistent-hash one's for `hash`, a subset-balanced one's
    /// by the route's `criteria`).
    pub fn pick_for(
        &self,
        destination: Option<SocketAddr>,
        hash: Option<u64>,
        criteria: Option<&MetadataMatch>,
    ) -> Option<Rc<Host>> {
        match self.config.original_dst {
            Some(_) => self.destination_host(destination?),
            None => self.pick(PickKey { hash, attempt: 0 }, criteria),
        }
    }

    /// The host for `destination` in an `ORIGINAL_DST` cluster (its port overridden when the
    /// cluster says so). Hosts unused for the cleanup interval, and without connections, are
    /// forgotten when another is made (with their pooled connections).
    fn destination_host(&self, destination: SocketAddr) -> Option<Rc<Host>> {
        let config = self.config.original_dst.as_ref()?;
        let mut address = destination;
        if let Some(port) = config.port_override {
            address.set_port(port);
        }
        let now = Instant::now();
        let mut destinations = self.destinations.borrow_mut();
        if let Some((host, used)) = destinations.get_mut(&address) {
            *used = now;
            return Some(host.clone());
        }
        destinations.retain(|_, (host, used)| {
            host.active() > 0 || now.duration_since(*used) < config.cleanup_interval
        });
        let host = Rc::new(Host::new(Endpoint::new(address)));
        destinations.insert(address, (host.clone(), now));
        Some(host)
    }

    /// The next host by the cluster's policy among those health lets take traffic (of the
    /// subset `criteria` select, for a subset-balanced cluster), or `None` when it has none.
    pub fn pick(&self, key: PickKey, criteria: Option<&MetadataMatch>) -> Option<Rc<Host>> {
        let mut balancers = self.set.borrow_mut();
        let Balancers { whole, subsets } = &mut *balancers;
        match subsets {
            Some(subsets) => {
                let cells = self.config.stats.shard(self.shard);
                subsets.pick(whole, criteria, key, cells)
            }
            None => whole.pick(key),
        }
    }

    /// The next host by the cluster's policy that `accept` takes, trying at most `attempts`
    /// picks; the last pick when none is accepted (Envoy's host selection retries).
    pub fn pick_where(
        &self,
        attempts: u32,
        hash: Option<u64>,
        criteria: Option<&MetadataMatch>,
        accept: impl Fn(&Host) -> bool,
    ) -> Option<Rc<Host>> {
        let mut last = None;
        for attempt in 0..attempts.max(1) {
            let host = self.pick(PickKey { hash, attempt }, criteria)?;
            if accept(&host) {
                return Some(host);
            }
            last = Some(host);
        }
        last
    }
}

/// What picks go over: the whole cluster, and its subsets when it has `lb_subset_config`.
struct Balancers {
    whole: HostSet,
    subsets: Option<SubsetSets>,
}

/// The balancers of the cluster's hosts: each host's health is what EDS says joined with the
/// agent's verdicts. Subsets (and, as in Envoy, the whole cluster as their fallback) keep the
/// cluster's locality weighting only with `locality_weight_aware`.
fn balancers(
    config: &Cluster,
    hosts: &[Rc<Host>],
    verdicts: Option<&HostVerdicts>,
    shard: usize,
    local: &Option<Rc<LocalSpread>>,
) -> Balancers {
    let subset = config.subset.as_ref();
    let balancing = Balancing {
        policy: config.lb_policy,
        locality_weighted: config.locality_weighted
            && subset.is_none_or(|s| s.config.locality_weight_aware),
        shard,
        panic_threshold: config.panic_threshold,
        slow_start: config.slow_start,
        local: local.clone(),
        zone_aware: config.zone_aware,
        stats: Some(config.stats.clone()),
    };
    let flags = |host: &Host| health_flags(&host.endpoint, verdicts);
    // A host is in slow start from when it was first published or, later, from when an active
    // check brought it back to health.
    let since = |host: &Host| {
        let published = host.endpoint.first_published.0;
        verdicts
            .and_then(|v| v.healthy_since.get(&host.address()))
            .map_or(published, |back| published.max(*back))
    };
    let balance = |hosts: &[Rc<Host>]| HostSet::new(hosts, flags, since, &balancing);
    Balancers {
        whole: balance(hosts),
        subsets: subset.map(|lb| SubsetSets::new(lb, hosts, balance)),
    }
}

/// An endpoint's health: what EDS says joined with the agent's verdicts.
fn health_flags(endpoint: &Endpoint, verdicts: Option<&HostVerdicts>) -> HealthFlags {
    let verdict = verdicts.map_or(HealthFlags::NONE, |v| v.of(&endpoint.address));
    endpoint.eds_health.union(verdict)
}

/// How the local cluster's `endpoints` (zone-aware routing's) spread over localities.
fn local_spread(
    zone: &LocalZone,
    endpoints: &[Endpoint],
    verdicts: Option<&HostVerdicts>,
) -> Rc<LocalSpread> {
    let health = |endpoint: &Endpoint| {
        let flags = health_flags(endpoint, verdicts);
        (!flags.contains(HealthFlags::EDS_STATUS_DRAINING)).then(|| flags.coarse())
    };
    Rc::new(LocalSpread::new(zone, endpoints, health))
}

/// Which shard a cluster manager runs on, and where it reports to.
#[derive(Default)]
pub struct Place {
    pub shard: usize,
    pub shards: usize,
    /// The agent's event queue (`None` in unit tests: nothing is reported).
    pub events: Option<EventSender>,
}

#[derive(Default)]
pub struct ClusterManager {
    place: Place,
    clusters: HashMap<String, Rc<ShardCluster>>,
    /// The same clusters by `ClusterId`: what routes and tcp_proxy resolve.
    by_id: Vec<Option<Rc<ShardCluster>>>,
    /// The agent's health verdicts, by cluster name (kept across cluster rebuilds).
    verdicts: HashMap<String, Arc<HostVerdicts>>,
    /// The generation applied last.
    generation: u64,
    /// The snapshot's local zone (for re-reading the local cluster's spread) and the spread.
    local_zone: Option<Arc<LocalZone>>,
    local: Option<Rc<LocalSpread>>,
}

impl ClusterManager {
    pub fn new(place: Place) -> Self {
        Self {
            place,
            ..Self::default()
        }
    }

    /// Adopts the snapshot's clusters: unchanged ones (same `Arc`) keep their state. When the
    /// snapshot lists what changed since the generation applied last, only those clusters are
    /// looked at.
    pub fn apply(&mut self, snapshot: &Snapshot) {
        let local = snapshot.local_zone.as_ref().and_then(|zone| {
            let cluster = snapshot.clusters.get(&zone.cluster)?;
            let verdicts = self.verdicts.get(&zone.cluster).map(|v| &**v);
            Some(local_spread(zone, &cluster.endpoints, verdicts))
        });
        let local_changed = local != self.local;
        self.local = local;
        self.local_zone = snapshot.local_zone.clone();
        match &snapshot.cluster_changes {
            Some(changes) if snapshot.generation == self.generation + 1 => {
                for name in changes {
                    let previous = self.clusters.remove(name);
                    if let Some(id) = previous.as_ref().map(|p| p.config.id) {
                        self.by_id[id.index()] = None;
                    }
                    match snapshot.clusters.get(name) {
                        Some(config) => {
                            let cluster = self.adopt(config, previous);
                            self.index(&cluster);
                            self.clusters.insert(name.clone(), cluster);
                        }
                        None => {
                            previous.iter().for_each(|gone| gone.leave());
                            self.verdicts.remove(name);
                        }
                    }
                }
            }
            _ => {
                let mut next = HashMap::with_capacity(snapshot.clusters.len());
                self.by_id.clear();
                for (name, config) in &snapshot.clusters {
                    let previous = self.clusters.remove(name);
                    let cluster = self.adopt(config, previous);
                    self.index(&cluster);
                    next.insert(name.clone(), cluster);
                }
                self.clusters.values().for_each(|gone| gone.leave());
                self.clusters = next;
                let clusters = &self.clusters;
                self.verdicts.retain(|name, _| clusters.contains_key(name));
            }
        }
        self.generation = snapshot.generation;
        if local_changed {
            self.spread_local();
        }
    }

    /// Every cluster rebuilt against the local cluster's current spread (those built with it
    /// already are left alone).
    fn spread_local(&self) {
        for (name, cluster) in &self.clusters {
            cluster.set_local(&self.local, self.verdicts.get(name).map(|v| &**v));
        }
    }

    /// The shard's state for `config`: the previous one when its config is the same `Arc`,
    /// else a new one carrying over what it can (hosts that stay, breaker counts).
    fn adopt(&self, config: &Arc<Cluster>, previous: Option<Rc<ShardCluster>>) -> Rc<ShardCluster> {
        match previous {
            Some(existing) if Arc::ptr_eq(&existing.config, config) => existing,
            previous => Rc::new(ShardCluster::new(
                config.clone(),
                &self.place,
                previous.as_deref(),
                self.verdicts.get(&config.name).map(|v| &**v),
                self.local.clone(),
            )),
        }
    }

    /// The agent's new health verdicts on `cluster`'s hosts.
    pub fn set_verdicts(&mut self, cluster: String, verdicts: Arc<HostVerdicts>) {
        if let Some(existing) = self.clusters.get(&cluster) {
            existing.set_verdicts(&verdicts);
        }
        let of_local = self
            .local_zone
            .as_ref()
            .is_some_and(|z| z.cluster == cluster);
        self.verdicts.insert(cluster, verdicts);
        if of_local {
            self.respread_local();
        }
    }

    /// Re-reads the local cluster's spread (its hosts' health changed); clusters are rebuilt
    /// when it moved.
    fn respread_local(&mut self) {
        let Some(zone) = &self.local_zone else {
            return;
        };
        let Some(cluster) = self.clusters.get(&zone.cluster) else {
            return;
        };
        let verdicts = self.verdicts.get(&zone.cluster).map(|v| &**v);
        let local = Some(local_spread(zone, &cluster.config.endpoints, verdicts));
        if local != self.local {
            self.local = local;
            self.spread_local();
        }
    }

    /// `cluster`'s outlier-detection counts since the last collection, by host.
    pub fn take_counts(&self, cluster: &str) -> Vec<(SocketAddr, HostCounts)> {
        self.clusters
            .get(cluster)
            .map(|c| c.take_counts())
            .unwrap_or_default()
    }

    fn index(&mut self, cluster: &Rc<ShardCluster>) {
        let at = cluster.config.id.index();
        if self.by_id.len() <= at {
            self.by_id.resize(at + 1, None);
        }
        self.by_id[at] = Some(cluster.clone());
    }

    /// The cluster a name from a request names (`cluster_header`).
    pub fn get(&self, name: &str) -> Option<Rc<ShardCluster>> {
        self.clusters.get(name).cloned()
    }

    /// The cluster config refers to, if it exists now.
    pub fn resolve(&self, cluster: &ClusterRef) -> Option<Rc<ShardCluster>> {
        self.by_id.get(cluster.id.index()).cloned().flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use xds_agent::translate::{translate, TranslateContext};

    use model::{stats::StatsRegistry, Cluster};

    use super::*;

    /// Generation 1 of a bootstrap with static clusters `a` and `b`.
    fn first() -> Snapshot {
        let cluster = |name: &str, port: u16| {
            format!(
                "{{name: {name}, load_assignment: {{endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}}}"
            )
        };
        let yaml = format!(
            "static_resources: {{clusters: [{}, {}]}}",
            cluster("a", 1),
            cluster("b", 2)
        );
        let bootstrap = proto::from_json(proto::parse_document(&yaml).unwrap(), false).unwrap();
        let mut stats = StatsRegistry::new(1);
        let context = &mut TranslateContext {
            generation: 1,
            stats: &mut stats,
            previous: None,
            dns: &HashMap::new(),
            extensions: &HashMap::new(),
            secrets: Default::default(),
            local_peer: Default::default(),
            ports: None,
        };
        translate(&bootstrap, context).unwrap()
    }

    /// `previous` with cluster `name` replaced by an equal copy (a new `Arc`), listed as the
    /// only change.
    fn next_with_new(previous: &Snapshot, name: &str) -> Snapshot {
        let mut next = previous.clone();
        next.generation += 1;
        let copy = Arc::new(Cluster::clone(&previous.clusters[name]));
        next.clusters.insert(name.to_string(), copy);
        next.cluster_changes = Some(vec![name.to_string()]);
        next
    }

    #[test]
    fn a_listed_change_rebuilds_only_that_cluster() {
        let mut manager = ClusterManager::default();
        let gen1 = first();
        manager.apply(&gen1);
        let (a1, b1) = (manager.get("a").unwrap(), manager.get("b").unwrap());
        let gen2 = next_with_new(&gen1, "a");
        manager.apply(&gen2);
        assert!(!Rc::ptr_eq(&a1, &manager.get("a").unwrap()), "a rebuilt");
        assert!(Rc::ptr_eq(&b1, &manager.get("b").unwrap()), "b kept");
        // A removal listed as a change.
        let mut gen3 = gen2.clone();
        gen3.generation = 3;
        gen3.clusters.remove("b");
        gen3.cluster_changes = Some(vec!["b".to_string()]);
        manager.apply(&gen3);
        assert!(manager.get("b").is_none());
        assert!(manager.get("a").is_some());
    }

    #[test]
    fn a_skipped_generation_compares_every_cluster() {
        let mut manager = ClusterManager::default();
        let gen1 = first();
        manager.apply(&gen1);
        let b1 = manager.get("b").unwrap();
        // Generation 3 after 1: its change list (relative to 2) cannot be trusted.
        let mut gen3 = next_with_new(&next_with_new(&gen1, "b"), "a");
        gen3.cluster_changes = Some(vec!["a".to_string()]);
        manager.apply(&gen3);
        assert!(
            !Rc::ptr_eq(&b1, &manager.get("b").unwrap()),
            "b changed in 2"
        );
    }

    #[test]
    fn a_host_whose_weight_or_health_changes_keeps_its_state_one_whose_address_changes_does_not() {
        let mut manager = ClusterManager::default();
        let gen1 = first();
        manager.apply(&gen1);
        let host = |manager: &ClusterManager| manager.get("a").unwrap().hosts[0].clone();
        let before = host(&manager);
        let _in_use = ActiveHost::new(before.clone());
        let with_endpoint = |previous: &Snapshot, change: &dyn Fn(&mut Endpoint)| {
            let mut next = next_with_new(previous, "a");
            let cluster = Arc::make_mut(next.clusters.get_mut("a").unwrap());
            let mut endpoints = cluster.endpoints.to_vec();
            change(&mut endpoints[0]);
            cluster.endpoints = endpoints.into();
            next
        };
        let gen2 = with_endpoint(&gen1, &|e| {
            e.weight = 5;
            e.eds_health = HealthFlags::DEGRADED_EDS_HEALTH;
            e.hash_key = Some("k".into());
        });
        manager.apply(&gen2);
        let kept = host(&manager);
        assert_eq!(kept.endpoint.weight, 5);
        assert!(Rc::ptr_eq(&kept.state, &before.state), "the same host");
        assert_eq!(kept.active(), 1, "its connections still counted");
        assert!(!kept.pool().retired.is_draining());
        let gen3 = with_endpoint(&gen2, &|e| e.address.set_port(3));
        manager.apply(&gen3);
        assert!(
            !Rc::ptr_eq(&host(&manager).state, &before.state),
            "a new host"
        );
        assert!(before.pool().retired.is_draining(), "the old one retired");
    }
}
