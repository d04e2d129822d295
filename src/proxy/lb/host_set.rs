//! The hosts a cluster balances over: per priority, its healthy hosts (its degraded ones as a
//! fallback, all of them in panic), and the share of requests each priority takes, computed as
//! Envoy computes priority loads (overprovisioning factor 1.4, the panic threshold, total
//! panic spreading by host count), with slow start ramping the weights of hosts that just
//! became healthy and zone-aware routing of priority 0.
use std::{
    collections::HashMap,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use model::{
    balancing::{SlowStart, ZoneAware},
    health::{CoarseHealth, HealthFlags},
    stats::ClusterStats,
    LbPolicy,
};

use super::{
    weights,
    zone::{LocalSpread, ZonePick, ZonePlan, Zones},
    Balancer, PickKey,
};
use crate::proxy::cluster_manager::Host;

/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING: u32 = 140;

/// Hosts that take a share of the requests, with their balancer.
struct Tier {
    hosts: Box<[Rc<Host>]>,
    balancer: Balancer,
    /// The tier's share of requests, as the upper end of its range in `0..100`.
    until: u32,
    /// With slow start, where each host's window opened (healthy hosts only; none for the
    /// others, which take their full weight as in Envoy).
    since: Option<Box<[Instant]>>,
    /// Priority 0's healthy hosts routed by zone.
    zones: Option<Zones>,
}

impl Tier {
    /// Sets each host's weight to its slow-start share at `now`; false once no host ramps
    /// (then the plain weights are back).
    fn ramp(&mut self, now: Instant, slow_start: &SlowStart, locality_weighted: bool) -> bool {
        let Some(since) = &self.since else {
            return false;
        };
        let mut weights = weights(&self.hosts, locality_weighted);
        let factors: Vec<Option<f64>> = since
            .iter()
            .map(|s| slow_start.factor(now.saturating_duration_since(*s)))
            .collect();
        let ramping = factors.iter().any(Option::is_some);
        if ramping {
            for (weight, factor) in weights.iter_mut().zip(factors) {
                let share = RAMP_SCALE * factor.unwrap_or(1.0);
                if *weight > 0 {
                    *weight = ((*weight as f64) * share).round().max(1.0) as u64;
                }
            }
        }
        self.balancer.reweigh(&weights);
        if let Some(zones) = &mut self.zones {
            let by_host: HashMap<*const Host, u64> = self
                .hosts
                .iter()
                .map(Rc::as_ptr)
                .zip(weights.iter().copied())
                .collect();
            zones.reweigh(|host| by_host[&Rc::as_ptr(host)]);
        }
        ramping
    }
}

/// Weights are scaled by this while some host ramps, so a small share keeps its precision.
const RAMP_SCALE: f64 = 1000.0;

/// Slow-start weights are recomputed this many times per window (Envoy recomputes a host's
/// weight each time its EDF scheduler picks it; steps of 1 % of the window give the same
/// shares within a percent without a clock read per host per pick).
const RAMP_STEPS: u32 = 100;

/// A set whose hosts include some in slow start: when their weights are due again.
struct Ramp {
    slow_start: SlowStart,
    locality_weighted: bool,
    next: Instant,
    step: Duration,
}

/// What the balancers are built with.
pub struct Balancing {
    pub policy: LbPolicy,
    pub locality_weighted: bool,
    pub shard: usize,
    /// Percent of available hosts under which a priority is in panic.
    pub panic_threshold: f64,
    pub slow_start: Option<SlowStart>,
    /// Zone-aware routing: the local cluster's spread over localities (none without a local
    /// cluster), the cluster's settings and where its `lb_zone_*` stats go.
    pub local: Option<Rc<LocalSpread>>,
    pub zone_aware: ZoneAware,
    pub stats: Option<Arc<ClusterStats>>,
}

/// Round robin over the hosts with every option off, Envoy's panic threshold (50 %).
impl Default for Balancing {
    fn default() -> Self {
        Self {
            policy: LbPolicy::RoundRobin,
            locality_weighted: false,
            shard: 0,
            panic_threshold: 50.0,
            slow_start: None,
            local: None,
            zone_aware: ZoneAware::default(),
            stats: None,
        }
    }
}

impl Balancing {
    /// Whether the policy is one of Envoy's zone-aware balancers (not consistent hashing).
    fn zone_aware_policy(&self) -> bool {
        matches!(
            self.policy,
            LbPolicy::RoundRobin | LbPolicy::LeastRequest { .. } | LbPolicy::Random
        )
    }
}

pub struct HostSet {
    /// Tiers with a share: each priority's healthy hosts in priority order, then each one's
    /// degraded hosts.
    tiers: Vec<Tier>,
    /// Picks go by the request's hash (RING_HASH, MAGLEV).
    hashes: bool,
    /// Set while some host is in slow start.
    ramp: Option<Ramp>,
}

/// One priority's hosts by health.
#[derive(Default)]
struct Priority {
    all: Vec<Rc<Host>>,
    healthy: Vec<Rc<Host>>,
    degraded: Vec<Rc<Host>>,
}

impl Priority {
    /// `min(100, 1.4 × hosts / all hosts)` in percent, as Envoy (integer arithmetic).
    fn availability(&self, hosts: usize) -> u32 {
        (OVERPROVISIONING * hosts as u32 / self.all.len().max(1) as u32).min(100)
    }

    fn in_panic(&self, threshold: f64) -> bool {
        let available = self.healthy.len() + self.degraded.len();
        100.0 * available as f64 / (self.all.len().max(1) as f64) < threshold
    }
}

impl HostSet {
    /// The set for `hosts`, each with the health `flags` gives it; a healthy host's slow-start
    /// window opens at `since`.
    pub fn new(
        hosts: &[Rc<Host>],
        flags: impl Fn(&Host) -> HealthFlags,
        since: impl Fn(&Host) -> Instant,
        balancing: &Balancing,
    ) -> Self {
        let mut priorities: Vec<Priority> = Vec::new();
        for host in hosts {
            let flags = flags(host);
            if flags.contains(HealthFlags::EDS_STATUS_DRAINING) {
                continue; // excluded: not even a panic fallback
            }
            let p = host.endpoint.priority as usize;
            if priorities.len() <= p {
                priorities.resize_with(p + 1, Priority::default);
            }
            let priority = &mut priorities[p];
            priority.all.push(host.clone());
            match flags.coarse() {
                CoarseHealth::Healthy => priority.healthy.push(host.clone()),
                CoarseHealth::Degraded => priority.degraded.push(host.clone()),
                CoarseHealth::Unhealthy => {}
            }
        }
        priorities.retain(|p| !p.all.is_empty());
        let loads = loads(&priorities);
        let total_panic = loads_in_total_panic(&priorities);
        let panics: Vec<bool> = priorities
            .iter()
            .map(|p| total_panic || p.in_panic(balancing.panic_threshold))
            .collect();
        // Every priority's healthy share, then every priority's degraded share: the order in
        // which Envoy spends a point of the 100 (a request's hash, for consistent hashing).
        let shares = (0..priorities.len())
            .map(|p| (p, loads[p].0, false))
            .chain((0..priorities.len()).map(|p| (p, loads[p].1, true)));
        let mut tiers = Vec::new();
        let mut until = 0;
        for (p, load, degraded) in shares {
            if load == 0 {
                continue;
            }
            let priority = &priorities[p];
            // A consistent-hash table holds a priority's healthy hosts whichever share picked
            // it (Envoy builds one table per priority).
            let hosts = match (panics[p], degraded && !balancing.policy.hashes()) {
                // Envoy's `fail_traffic_on_panic`: no host at all.
                (true, _)
                    if balancing.zone_aware.fail_traffic_on_panic
                        && balancing.zone_aware_policy() =>
                {
                    &Vec::new()
                }
                (true, _) => &priority.all,
                (false, true) => &priority.degraded,
                (false, false) => &priority.healthy,
            };
            let hosts: Box<[Rc<Host>]> = hosts.clone().into();
            until += load;
            let balancer = Balancer::new(
                balancing.policy,
                &hosts,
                &priority.all,
                balancing.locality_weighted,
                balancing.shard,
            );
            // Only a priority's healthy hosts ramp (not a panic's or the degraded ones).
            let opened = (balancing.slow_start.is_some() && !panics[p] && !degraded)
                .then(|| hosts.iter().map(|h| since(h)).collect());
            // Zone-aware routing: priority 0's healthy share only (Envoy routes no other
            // priority by zone; its degraded share is not routed by zone here).
            let zones = match (&balancing.local, &balancing.stats) {
                (Some(local), Some(stats))
                    if p == 0
                        && !degraded
                        && !panics[p]
                        && balancing.zone_aware_policy()
                        && !balancing.locality_weighted =>
                {
                    let plan = ZonePlan {
                        local,
                        config: balancing.zone_aware,
                        panic_threshold: balancing.panic_threshold,
                        stats,
                        shard: balancing.shard,
                    };
                    Zones::plan(&priority.all, &hosts, &plan, |of| {
                        Balancer::new(balancing.policy, of, &priority.all, false, balancing.shard)
                    })
                }
                _ => None,
            };
            tiers.push(Tier {
                hosts,
                balancer,
                until,
                since: opened,
                zones,
            });
        }
        let ramp = balancing.slow_start.map(|slow_start| Ramp {
            slow_start,
            locality_weighted: balancing.locality_weighted,
            next: Instant::now(),
            step: (slow_start.window / RAMP_STEPS).max(Duration::from_millis(1)),
        });
        let mut set = Self {
            tiers,
            hashes: balancing.policy.hashes(),
            ramp,
        };
        set.ramp_if_due();
        set
    }

    /// Recomputes slow-start weights when a step of the window has passed; forgets the ramp
    /// once no host is in slow start.
    fn ramp_if_due(&mut self) {
        let Some(ramp) = &mut self.ramp else {
            return;
        };
        // The loop's per-turn time: a pick while hosts ramp reads no clock.
        let now = crate::rt::timer::turn_time();
        if now < ramp.next {
            return;
        }
        let mut ramping = false;
        for tier in &mut self.tiers {
            ramping |= tier.ramp(now, &ramp.slow_start, ramp.locality_weighted);
        }
        ramp.next = now + ramp.step;
        if !ramping {
            self.ramp = None;
        }
    }

    /// The next host: a tier by the priority loads, then a host by its balancer. Consistent
    /// hashing spends the request's hash (a random one without) on both, as Envoy does.
    pub fn pick(&mut self, key: PickKey) -> Option<Rc<Host>> {
        self.ramp_if_due();
        let hash = match self.hashes {
            true => key.hash.unwrap_or_else(|| fastrand::u64(..)),
            false => 0,
        };
        let tier = match self.tiers.as_mut_slice() {
            [] => return None,
            [only] => only,
            tiers => {
                let point = match self.hashes {
                    true => (hash % 100) as u32,
                    false => fastrand::u32(0..100),
                };
                let at = tiers.iter().position(|t| point < t.until).unwrap_or(0);
                &mut tiers[at]
            }
        };
        if let Some(zones) = &mut tier.zones {
            match zones.pick() {
                ZonePick::Locality(hosts, balancer) => {
                    let index = balancer.pick(hosts, hash, key.attempt)?;
                    return Some(hosts[index].clone());
                }
                ZonePick::Fail => return None,
                ZonePick::Whole => {}
            }
        }
        let index = tier.balancer.pick(&tier.hosts, hash, key.attempt)?;
        Some(tier.hosts[index].clone())
    }
}

/// Whether no priority has an available host: then each takes a share by its host count and
/// balances over all of its hosts.
fn loads_in_total_panic(priorities: &[Priority]) -> bool {
    priorities
        .iter()
        .all(|p| p.healthy.is_empty() && p.degraded.is_empty())
}

/// Each priority's (healthy, degraded) share of requests in percent, summing to 100 (or 0
/// without hosts), as Envoy's priority load.
fn loads(priorities: &[Priority]) -> Vec<(u32, u32)> {
    let mut loads = vec![(0, 0); priorities.len()];
    if loads_in_total_panic(priorities) {
        let total: usize = priorities.iter().map(|p| p.all.len()).sum();
        if total == 0 {
            return loads;
        }
        let mut left = 100;
        for (load, p) in loads.iter_mut().zip(priorities) {
            load.0 = (100 * p.all.len() / total) as u32;
            left -= load.0;
        }
        loads[0].0 += left;
        return loads;
    }
    let health: Vec<u32> = priorities
        .iter()
        .map(|p| p.availability(p.healthy.len()))
        .collect();
    let degraded: Vec<u32> = priorities
        .iter()
        .map(|p| p.availability(p.degraded.len()))
        .collect();
    let total = (health.iter().sum::<u32>() + degraded.iter().sum::<u32>()).min(100);
    let mut left = 100;
    for (i, h) in health.iter().enumerate() {
        loads[i].0 = (h * 100 / total).min(left);
        left -= loads[i].0;
    }
    for (i, d) in degraded.iter().enumerate() {
        loads[i].1 = (d * 100 / total).min(left);
        left -= loads[i].1;
    }
    if left > 0 {
        // Rounding: the rest goes to the first priority with healthy hosts, else degraded ones.
        match health.iter().position(|h| *h > 0) {
            Some(i) => loads[i].0 += left,
            None => {
                let i = degraded.iter().position(|d| *d > 0).unwrap_or(0);
                loads[i].1 += left;
            }
        }
    }
    loads
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use model::Endpoint;

    use super::*;

    fn hosts(priorities: &[u32]) -> Vec<Rc<Host>> {
        priorities
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Rc::new(Host::new(Endpoint {
                    priority: *p,
                    ..Endpoint::new(([127, 0, 0, 1], 1000 + i as u16).into())
                }))
            })
            .collect()
    }

    fn balancing() -> Balancing {
        Balancing::default()
    }

    fn added(host: &Host) -> Instant {
        host.endpoint.first_published.0
    }

    /// How often each port is picked in 10,000 picks.
    fn spread(set: &mut HostSet) -> HashMap<u16, u32> {
        let mut counts = HashMap::new();
        for _ in 0..10_000 {
            *counts
                .entry(set.pick(PickKey::default()).unwrap().address().port())
                .or_default() += 1;
        }
        counts
    }

    fn failing(ports: &'static [u16]) -> impl Fn(&Host) -> HealthFlags {
        move |h| match ports.contains(&h.address().port()) {
            true => HealthFlags::FAILED_ACTIVE_HC,
            false => HealthFlags::NONE,
        }
    }

    #[test]
    fn unhealthy_hosts_are_skipped_above_the_panic_threshold() {
        let all = hosts(&[0, 0, 0, 0]);
        let mut set = HostSet::new(&all, failing(&[1001]), added, &balancing());
        let counts = spread(&mut set);
        assert!(!counts.contains_key(&1001), "{counts:?}");
        assert_eq!(counts.len(), 3);
    }

    #[test]
    fn below_the_panic_threshold_every_host_takes_traffic() {
        let all = hosts(&[0, 0, 0, 0]);
        let mut set = HostSet::new(&all, failing(&[1000, 1001, 1002]), added, &balancing());
        assert_eq!(spread(&mut set).len(), 4);
    }

    #[test]
    fn a_priority_spills_over_by_its_overprovisioned_health() {
        // Priority 0: 2 of 4 healthy -> 1.4 × 50 = 70 % there, 30 % to priority 1.
        let all = hosts(&[0, 0, 0, 0, 1, 1]);
        let mut set = HostSet::new(&all, failing(&[1000, 1001]), added, &balancing());
        let counts = spread(&mut set);
        let p0 = counts.get(&1002).unwrap_or(&0) + counts.get(&1003).unwrap_or(&0);
        assert!((6_500..7_500).contains(&p0), "{counts:?}");
        assert!(!counts.contains_key(&1000) && !counts.contains_key(&1001));
        // All healthy: priority 1 takes nothing.
        let mut set = HostSet::new(&all, |_| HealthFlags::NONE, added, &balancing());
        let counts = spread(&mut set);
        assert!(
            !counts.contains_key(&1004) && !counts.contains_key(&1005),
            "{counts:?}"
        );
    }

    #[test]
    fn degraded_hosts_take_only_what_healthy_ones_cannot() {
        let all = hosts(&[0, 0, 0, 0]);
        let flags = |h: &Host| match h.address().port() {
            1000 => HealthFlags::DEGRADED_EDS_HEALTH,
            _ => HealthFlags::NONE,
        };
        let mut set = HostSet::new(&all, flags, added, &balancing());
        // 3 of 4 healthy: 1.4 × 75 ≥ 100, so the degraded host takes nothing.
        assert!(!spread(&mut set).contains_key(&1000));
        let flags = |h: &Host| match h.address().port() {
            1000 | 1001 => HealthFlags::DEGRADED_EDS_HEALTH,
            _ => HealthFlags::FAILED_EDS_HEALTH,
        };
        let mut set = HostSet::new(&all, flags, added, &balancing());
        let counts = spread(&mut set);
        assert_eq!(counts.len(), 2, "{counts:?}");
    }

    #[test]
    fn total_panic_spreads_by_host_count() {
        let all = hosts(&[0, 1, 1, 1]);
        let mut set = HostSet::new(
            &all,
            |_| HealthFlags::FAILED_EDS_HEALTH,
            added,
            &balancing(),
        );
        let counts = spread(&mut set);
        assert_eq!(counts.len(), 4, "{counts:?}");
        assert!((2_000..3_000).contains(&counts[&1000]), "{counts:?}");
    }
}
