//! Shard-local cluster manager: per-cluster hosts and load-balancer state, keyed by name and
//! carried across snapshots (rebuilt only for clusters whose config or endpoints changed).
use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    net::SocketAddr,
    rc::Rc,
    sync::Arc,
};

use xds_agent::model::{Cluster, Endpoint, Snapshot};

use super::{
    lb::Balancer,
    pool::{Breakers, HostPool},
};

/// An upstream host with this shard's count of its active connections (or requests) and its
/// idle HTTP connections.
pub struct Host {
    pub endpoint: Endpoint,
    active: Cell<u32>,
    pub pool: HostPool,
}

impl Host {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            active: Cell::new(0),
            pool: HostPool::default(),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.endpoint.address
    }

    pub fn active(&self) -> u32 {
        self.active.get()
    }
}

/// A host in use: counts as active (for LEAST_REQUEST) until dropped.
pub struct ActiveHost(Rc<Host>);

impl ActiveHost {
    pub fn new(host: Rc<Host>) -> Self {
        host.active.set(host.active.get() + 1);
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
        self.0.active.set(self.0.active.get() - 1);
    }
}

pub struct ShardCluster {
    pub config: Arc<Cluster>,
    hosts: Box<[Rc<Host>]>,
    balancer: RefCell<Balancer>,
    pub breakers: Rc<Breakers>,
}

impl ShardCluster {
    fn new(
        config: Arc<Cluster>,
        shard: usize,
        shards: usize,
        previous: Option<&ShardCluster>,
    ) -> Self {
        // Hosts that stay keep their active counts (connections still hold them).
        let hosts: Box<[Rc<Host>]> = config
            .endpoints
            .iter()
            .map(|endpoint| {
                previous
                    .and_then(|p| p.hosts.iter().find(|h| h.endpoint == *endpoint))
                    .cloned()
                    .unwrap_or_else(|| Rc::new(Host::new(endpoint.clone())))
            })
            .collect();
        let balancer = RefCell::new(Balancer::new(config.lb_policy, &hosts, shard));
        let breakers = Rc::new(Breakers::new(config.circuit_breakers.per_shard(shards)));
        Self {
            config,
            hosts,
            balancer,
            breakers,
        }
    }

    /// The next host by the cluster's policy, or `None` when it has no hosts.
    pub fn pick(&self) -> Option<Rc<Host>> {
        let index = self.balancer.borrow_mut().pick(&self.hosts)?;
        Some(self.hosts[index].clone())
    }

    /// The next host by the cluster's policy that `accept` takes, trying at most `attempts`
    /// picks; the last pick when none is accepted (Envoy's host selection retries).
    pub fn pick_where(&self, attempts: u32, accept: impl Fn(&Host) -> bool) -> Option<Rc<Host>> {
        let mut last = None;
        for _ in 0..attempts.max(1) {
            let host = self.pick()?;
            if accept(&host) {
                return Some(host);
            }
            last = Some(host);
        }
        last
    }
}

#[derive(Default)]
pub struct ClusterManager {
    clusters: HashMap<String, Rc<ShardCluster>>,
}

impl ClusterManager {
    /// Adopts the snapshot's clusters: unchanged ones (same `Arc`) keep their state.
    pub fn apply(&mut self, snapshot: &Snapshot, shard: usize, shards: usize) {
        let mut next = HashMap::with_capacity(snapshot.clusters.len());
        for (name, config) in &snapshot.clusters {
            let previous = self.clusters.remove(name);
            let cluster = match previous {
                Some(existing) if Arc::ptr_eq(&existing.config, config) => existing,
                previous => Rc::new(ShardCluster::new(
                    config.clone(),
                    shard,
                    shards,
                    previous.as_deref(),
                )),
            };
            next.insert(name.clone(), cluster);
        }
        self.clusters = next;
    }

    pub fn get(&self, name: &str) -> Option<Rc<ShardCluster>> {
        self.clusters.get(name).cloned()
    }
}
