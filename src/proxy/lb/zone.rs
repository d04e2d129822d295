//! Zone-aware routing: Envoy's direct and residual routing of priority 0's requests between
//! localities, planned from how the local cluster (the proxies sending those requests) and the
//! upstream cluster spread over localities, with Envoy's `lb_zone_*` stats.
use std::{collections::BTreeMap, rc::Rc, sync::Arc};

use model::{
    balancing::{LocalZone, LocalityName, ZoneAware, NO_LOCALITY},
    health::CoarseHealth,
    stats::{inc, ClusterStats},
    Endpoint,
};

use super::Balancer;
use crate::proxy::cluster_manager::Host;

/// The local cluster's hosts by locality, as zone-aware routing reads them.
#[derive(Debug, Default, PartialEq)]
pub struct LocalSpread {
    /// The node's locality.
    locality: LocalityName,
    /// Localities with hosts (of any health).
    localities: usize,
    /// Whether the node's locality has hosts.
    has_local: bool,
    /// Healthy hosts per locality.
    healthy: BTreeMap<LocalityName, u64>,
    /// Hosts (not excluded), healthy ones and degraded ones: what the panic test reads.
    counts: (usize, usize, usize),
}

impl LocalSpread {
    /// The spread of the local cluster's `endpoints` (of `health`; `None`: excluded).
    pub fn new(
        local: &LocalZone,
        endpoints: &[Endpoint],
        health: impl Fn(&Endpoint) -> Option<CoarseHealth>,
    ) -> Self {
        let mut spread = Self {
            locality: local.locality.clone(),
            ..Self::default()
        };
        let mut all = BTreeMap::new();
        for endpoint in endpoints {
            let Some(health) = health(endpoint) else {
                continue;
            };
            let locality = locality_of(endpoint);
            *all.entry(locality).or_insert(0) += 1;
            spread.counts.0 += 1;
            match health {
                CoarseHealth::Healthy => {
                    spread.counts.1 += 1;
                    *spread.healthy.entry(locality.clone()).or_insert(0) += 1;
                }
                CoarseHealth::Degraded => spread.counts.2 += 1,
                CoarseHealth::Unhealthy => {}
            }
        }
        spread.localities = all.len();
        spread.has_local = all.contains_key(&spread.locality);
        spread
    }

    /// Envoy's panic test of the local hosts, against the upstream cluster's threshold.
    fn in_panic(&self, threshold: f64) -> bool {
        let (hosts, healthy, degraded) = self.counts;
        let available = match hosts {
            0 => 0.0,
            n => 100.0 * (healthy + degraded) as f64 / n as f64,
        };
        available < threshold
    }
}

fn locality_of(endpoint: &Endpoint) -> &LocalityName {
    endpoint.locality_name.as_deref().unwrap_or(&NO_LOCALITY)
}

/// Where a pick of priority 0 goes between localities.
enum Routing {
    /// Every pick to the local locality (index 0): it can take all of this proxy's share.
    Direct,
    /// `local_percent` of 10,000 picks to the local locality, the rest across localities by
    /// their residual capacity (accumulated, per locality).
    Residual {
        local_percent: u64,
        residual: Box<[u64]>,
    },
}

/// One locality's healthy hosts and the balancer that picks among them.
type Locality = (Box<[Rc<Host>]>, Balancer);

/// Priority 0's healthy hosts by locality (the local one first when it has hosts, then in
/// Envoy's locality order), each locality with its balancer, and how picks route among them.
pub struct Zones {
    localities: Box<[Locality]>,
    routing: Routing,
    config: ZoneAware,
    local_in_panic: bool,
    stats: Arc<ClusterStats>,
    shard: usize,
}

/// What a zone-aware pick settled on.
pub enum ZonePick<'a> {
    /// A locality's hosts and balancer.
    Locality(&'a [Rc<Host>], &'a mut Balancer),
    /// Not routed by zone this time: the whole priority's hosts.
    Whole,
    /// No host (`fail_traffic_on_panic` with the local cluster in panic).
    Fail,
}

/// What [`Zones::plan`] is built from besides the hosts.
pub struct ZonePlan<'a> {
    pub local: &'a LocalSpread,
    pub config: ZoneAware,
    pub panic_threshold: f64,
    pub stats: &'a Arc<ClusterStats>,
    pub shard: usize,
}

impl Zones {
    /// Envoy's locality routing structures for priority 0's hosts (`all` of them, `healthy`
    /// ones), or `None` when routing by zone is off for them (counted as Envoy counts it).
    /// `balancer` makes a locality's balancer over its healthy hosts.
    pub fn plan(
        all: &[Rc<Host>],
        healthy: &[Rc<Host>],
        plan: &ZonePlan,
        balancer: impl Fn(&[Rc<Host>]) -> Balancer,
    ) -> Option<Self> {
        let ZonePlan {
            local,
            config,
            panic_threshold,
            stats,
            shard,
        } = *plan;
        let cells = stats.shard(shard);
        inc(&cells.lb_recalculate_zone_structures);
        let mut order: Vec<&LocalityName> = all.iter().map(|h| locality_of(&h.endpoint)).collect();
        order.sort();
        order.dedup();
        let has_local = match order.iter().position(|l| **l == local.locality) {
            Some(at) => {
                let own = order.remove(at);
                order.insert(0, own);
                true
            }
            None => false,
        };
        if order.len() < 2 || local.localities < 2 {
            return None;
        }
        if !local.has_local {
            inc(&cells.lb_local_cluster_not_ok);
            return None;
        }
        if (healthy.len() as u64) < config.min_cluster_size {
            inc(&cells.lb_zone_cluster_too_small);
            return None;
        }
        let hosts: Vec<Box<[Rc<Host>]>> = order
            .iter()
            .map(|l| {
                let of = healthy.iter().filter(|h| locality_of(&h.endpoint) == *l);
                of.cloned().collect()
            })
            .collect();
        let routing = routing(&order, &hosts, local, has_local);
        let localities = hosts
            .into_iter()
            .map(|hosts| {
                let balancer = balancer(&hosts);
                (hosts, balancer)
            })
            .collect();
        Some(Self {
            localities,
            routing,
            config,
            local_in_panic: local.in_panic(panic_threshold),
            stats: stats.clone(),
            shard,
        })
    }

    /// Where this pick goes, counted in the `lb_zone_*` stats as Envoy counts it.
    pub fn pick(&mut self) -> ZonePick<'_> {
        if fastrand::u64(..) % 100 >= u64::from(self.config.routing_enabled) {
            return ZonePick::Whole;
        }
        let cells = self.stats.shard(self.shard);
        if self.local_in_panic {
            inc(&cells.lb_local_cluster_not_ok);
            return match self.config.fail_traffic_on_panic {
                true => ZonePick::Fail,
                false => ZonePick::Whole,
            };
        }
        let at = match &self.routing {
            Routing::Direct => {
                inc(&cells.lb_zone_routing_all_directly);
                0
            }
            Routing::Residual { local_percent, .. }
                if fastrand::u64(..) % 10_000 < *local_percent =>
            {
                inc(&cells.lb_zone_routing_sampled);
                0
            }
            Routing::Residual { residual, .. } => {
                inc(&cells.lb_zone_routing_cross_zone);
                match residual.last().copied().unwrap_or(0) {
                    0 => {
                        inc(&cells.lb_zone_no_capacity_left);
                        fastrand::usize(..) % self.localities.len()
                    }
                    total => {
                        let point = fastrand::u64(..) % total;
                        residual.iter().position(|r| point < *r).unwrap_or(0)
                    }
                }
            }
        };
        let (hosts, balancer) = &mut self.localities[at];
        ZonePick::Locality(hosts, balancer)
    }

    /// New weights for every locality's hosts (slow start).
    pub fn reweigh(&mut self, weight_of: impl Fn(&Rc<Host>) -> u64) {
        for (hosts, balancer) in self.localities.iter_mut() {
            let weights: Vec<u64> = hosts.iter().map(&weight_of).collect();
            balancer.reweigh(&weights);
        }
    }
}

/// Envoy's routing between localities (in `order`, with their healthy `hosts`): each
/// locality's share of the local cluster's healthy hosts and of the upstream's, in 1/10,000.
fn routing(
    order: &[&LocalityName],
    hosts: &[Box<[Rc<Host>]>],
    local: &LocalSpread,
    has_local: bool,
) -> Routing {
    let local_total: u64 = local.healthy.values().sum();
    let upstream_total: u64 = hosts.iter().map(|h| h.len() as u64).sum();
    let shares: Vec<(u64, u64)> = order
        .iter()
        .zip(hosts)
        .map(|(locality, hosts)| {
            if hosts.is_empty() {
                return (0, 0);
            }
            let here = local.healthy.get(*locality).copied().unwrap_or(0);
            let local_share = match local_total {
                0 => 0,
                total => 10_000 * here / total,
            };
            let upstream_share = match upstream_total {
                0 => 0,
                total => 10_000 * hosts.len() as u64 / total,
            };
            (local_share, upstream_share)
        })
        .collect();
    let (local_share, upstream_share) = shares[0];
    if has_local && upstream_share > 0 && upstream_share >= local_share {
        return Routing::Direct;
    }
    let local_percent = match has_local && local_share > 0 {
        true => upstream_share * 10_000 / local_share,
        false => 0,
    };
    let mut accumulated = 0;
    let residual = shares
        .iter()
        .enumerate()
        .map(|(i, (local_share, upstream_share))| {
            if !(i == 0 && has_local) && upstream_share > local_share {
                accumulated += upstream_share - local_share;
            }
            accumulated
        })
        .collect();
    Routing::Residual {
        local_percent,
        residual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(port: u16, zone: &str) -> Rc<Host> {
        Rc::new(Host::new(Endpoint {
            locality_name: Some(Arc::new(LocalityName {
                zone: zone.into(),
                ..LocalityName::default()
            })),
            ..Endpoint::new(([127, 0, 0, 1], port).into())
        }))
    }

    fn zones(spec: &[(&str, usize)]) -> Vec<Rc<Host>> {
        let mut port = 1000;
        let mut hosts = Vec::new();
        for (zone, n) in spec {
            for _ in 0..*n {
                port += 1;
                hosts.push(host(port, zone));
            }
        }
        hosts
    }

    fn local(spec: &[(&str, usize)]) -> LocalSpread {
        let zone = LocalZone {
            cluster: "local".into(),
            locality: LocalityName {
                zone: "a".into(),
                ..LocalityName::default()
            },
        };
        let endpoints: Vec<Endpoint> = zones(spec).iter().map(|h| h.endpoint.clone()).collect();
        LocalSpread::new(&zone, &endpoints, |_| Some(CoarseHealth::Healthy))
    }

    /// Each zone's share of 100,000 picks.
    fn shares(local: &LocalSpread, upstream: &[(&str, usize)]) -> BTreeMap<String, f64> {
        let hosts = zones(upstream);
        let stats = Arc::new(ClusterStats::new("cluster.c".into(), 1));
        let plan = ZonePlan {
            local,
            config: ZoneAware::default(),
            panic_threshold: 50.0,
            stats: &stats,
            shard: 0,
        };
        let mut zones = Zones::plan(&hosts, &hosts, &plan, |h| {
            Balancer::new(model::LbPolicy::RoundRobin, h, h, false, 0)
        })
        .expect("routed by zone");
        let mut counts = BTreeMap::new();
        for _ in 0..100_000 {
            let ZonePick::Locality(hosts, balancer) = zones.pick() else {
                panic!("not routed by zone");
            };
            let index = balancer.pick(hosts, 0, 0).unwrap();
            let zone = hosts[index].endpoint.locality_name.as_ref().unwrap();
            *counts.entry(zone.zone.clone()).or_insert(0.0) += 1.0 / 100_000.0;
        }
        counts
    }

    #[test]
    fn a_local_zone_with_enough_capacity_takes_everything() {
        let spread = local(&[("a", 1), ("b", 2)]);
        let got = shares(&spread, &[("a", 3), ("b", 3)]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got["a"] > 0.999_999, "{got:?}");
    }

    #[test]
    fn a_small_local_zone_sends_the_rest_to_zones_with_capacity_left() {
        // Local: a 50 %, b 25 %, c 25 %; upstream: a 25 %, b 25 %, c 50 %. Half of the picks
        // stay in a; the other half go where capacity is left over (c).
        let spread = local(&[("a", 2), ("b", 1), ("c", 1)]);
        let got = shares(&spread, &[("a", 2), ("b", 2), ("c", 4)]);
        assert!((got["a"] - 0.5).abs() < 0.01, "{got:?}");
        assert!(!got.contains_key("b"), "{got:?}");
        assert!((got["c"] - 0.5).abs() < 0.01, "{got:?}");
    }

    #[test]
    fn routing_is_off_for_small_or_single_zone_clusters() {
        let stats = Arc::new(ClusterStats::new("cluster.c".into(), 1));
        let spread = local(&[("a", 1), ("b", 1)]);
        let plan = ZonePlan {
            local: &spread,
            config: ZoneAware::default(),
            panic_threshold: 50.0,
            stats: &stats,
            shard: 0,
        };
        let balancer = |h: &[Rc<Host>]| Balancer::new(model::LbPolicy::Random, h, h, false, 0);
        let small = zones(&[("a", 2), ("b", 2)]);
        assert!(Zones::plan(&small, &small, &plan, balancer).is_none());
        let single = zones(&[("a", 8)]);
        assert!(Zones::plan(&single, &single, &plan, balancer).is_none());
        let cells = stats.shard(0);
        let read = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(read(&cells.lb_zone_cluster_too_small), 1);
        assert_eq!(read(&cells.lb_recalculate_zone_structures), 2);
        // The node's zone has no local host: the local cluster is not usable.
        let elsewhere = local(&[("b", 1), ("c", 1)]);
        let plan = ZonePlan {
            local: &elsewhere,
            ..plan
        };
        let large = zones(&[("a", 4), ("b", 4)]);
        assert!(Zones::plan(&large, &large, &plan, balancer).is_none());
        assert_eq!(read(&cells.lb_local_cluster_not_ok), 1);
    }
}
