//! Load balancers: subset load balancing — each subset the agent partitioned a cluster into,
//! balanced like the whole cluster (its policy, priorities and health), and a pick's lookup of
//! its route's criteria with Envoy's fallbacks.
use std::{
    collections::{HashMap, HashSet},
    rc::Rc,
};

use model::{
    stats::{add, inc, ClusterCells},
    subset::{
        Fallback, Labels, MetadataMatch, SelectorFallback, SubsetConfig, SubsetLb, Subsets, View,
    },
};

use super::{host_set::HostSet, PickKey};
use crate::proxy::cluster_manager::Host;

/// A subset's hosts as a pick sees them.
enum Members {
    Balanced(HostSet),
    /// A `single_host_per_subset` subset: its host of the lowest priority, whatever its
    /// health (as Envoy).
    Single(Rc<Host>),
}

/// The shard's balancers of a subset-balanced cluster's subsets.
pub struct SubsetSets {
    lb: SubsetLb,
    /// By the agent's subsets (`Subsets::all`).
    members: Box<[Members]>,
    /// The hosts of `default_subset`, when a fallback goes there.
    default: Option<HostSet>,
}

impl SubsetSets {
    /// Balancers for `lb`'s subsets of the cluster's `hosts` (its endpoints' hosts, in order),
    /// each made by `balance`.
    pub fn new(
        lb: &SubsetLb,
        hosts: &[Rc<Host>],
        balance: impl Fn(&[Rc<Host>]) -> HostSet,
    ) -> Self {
        let scale = lb.config.locality_weight_aware && lb.config.scale_locality_weight;
        let of = |indices: &[u32]| -> Vec<Rc<Host>> {
            let members = indices.iter().map(|&i| hosts[i as usize].clone()).collect();
            match scale {
                true => scaled(hosts, members),
                false => members,
            }
        };
        let members = lb
            .subsets
            .all()
            .iter()
            .map(|subset| {
                let hosts = of(&subset.hosts);
                match subset.single_host {
                    true => {
                        let first = hosts.iter().min_by_key(|h| h.endpoint.priority);
                        Members::Single(first.expect("a subset has a host").clone())
                    }
                    false => Members::Balanced(balance(&hosts)),
                }
            })
            .collect();
        let default = uses_default(&lb.config).then(|| balance(&of(&lb.subsets.default)));
        Self {
            lb: lb.clone(),
            members,
            default,
        }
    }

    /// A host for a request with `criteria` (its route's `metadata_match`), by Envoy's order:
    /// the subset of exactly those labels; else its selector's fallback; else the cluster's
    /// (`whole`: every host), then `panic_mode_any`. `FALLBACK_LIST` tries each entry of the
    /// route's `fallback_list` so.
    pub fn pick(
        &mut self,
        whole: &mut HostSet,
        criteria: Option<&MetadataMatch>,
        key: PickKey,
        cells: &ClusterCells,
    ) -> Option<Rc<Host>> {
        let config = &*self.lb.config;
        let mut pick = Pick {
            config,
            subsets: &self.lb.subsets,
            members: &mut self.members,
            default: self.default.as_mut(),
            whole,
            key,
            cells,
        };
        let Some(criteria) = criteria else {
            return pick.iteration(None);
        };
        match &criteria.fallback_list {
            Some(list) if config.fallback_list => list
                .iter()
                .find_map(|labels| pick.iteration(Some(labels.view()))),
            _ => pick.iteration(Some(criteria.labels.view())),
        }
    }

    /// Counts the subsets made and removed from `before` to `after` (a cluster's rebuild on a
    /// shard, as each Envoy worker counts its own), and sets the single-host duplicates.
    pub fn count(
        before: Option<&Subsets>,
        after: Option<&Subsets>,
        cells: &ClusterCells,
        shard: usize,
    ) {
        fn labels(subsets: Option<&Subsets>) -> HashSet<&Labels> {
            subsets
                .iter()
                .flat_map(|s| s.all())
                .map(|s| &s.labels)
                .collect()
        }
        let (old, new) = (labels(before), labels(after));
        let created = new.difference(&old).count() as u64;
        let removed = old.difference(&new).count() as u64;
        add(&cells.lb_subsets_created, created);
        add(&cells.lb_subsets_removed, removed);
        add(&cells.lb_subsets_active, created.wrapping_sub(removed));
        // A gauge Envoy sets (not adds): one shard reports it.
        if shard == 0 {
            let duplicates = after.map_or(0, |s| s.duplicates);
            model::stats::set(
                &cells.lb_subsets_single_host_per_subset_duplicate,
                duplicates as i64,
            );
        }
    }
}

/// `members` of the cluster's `hosts`, each locality's weight scaled by the share of its hosts
/// that are members, as Envoy: `round(weight × members / hosts)` in single precision.
fn scaled(hosts: &[Rc<Host>], members: Vec<Rc<Host>>) -> Vec<Rc<Host>> {
    let per_locality = |of: &[Rc<Host>]| {
        let mut counts: HashMap<u32, u64> = HashMap::new();
        for host in of {
            *counts.entry(host.endpoint.locality.index).or_default() += 1;
        }
        counts
    };
    let (all, within) = (per_locality(hosts), per_locality(&members));
    members
        .iter()
        .map(|host| {
            let locality = host.endpoint.locality;
            let share = (u64::from(locality.weight) * within[&locality.index]) as f32
                / all[&locality.index] as f32;
            host.with_locality_weight(share.round() as u32)
        })
        .collect()
}

/// Whether a fallback may go to the default subset.
fn uses_default(config: &SubsetConfig) -> bool {
    config.fallback == Fallback::DefaultSubset
        || config
            .selectors
            .iter()
            .any(|s| s.fallback == SelectorFallback::DefaultSubset)
}

/// One pick's view of the balancers.
struct Pick<'a> {
    config: &'a SubsetConfig,
    subsets: &'a Subsets,
    members: &'a mut [Members],
    default: Option<&'a mut HostSet>,
    whole: &'a mut HostSet,
    key: PickKey,
    cells: &'a ClusterCells,
}

impl Pick<'_> {
    /// Envoy's `chooseHostIteration` for `criteria`.
    fn iteration(&mut self, criteria: Option<View<'_>>) -> Option<Rc<Host>> {
        let config = self.config;
        if let Some(criteria) = criteria.filter(|c| !c.is_empty()) {
            if let Some(at) = self.subsets.find(criteria) {
                inc(&self.cells.lb_subsets_selected);
                return match &mut self.members[at] {
                    Members::Balanced(set) => set.pick(self.key),
                    Members::Single(host) => Some(host.clone()),
                };
            }
            match config.selector_fallback(criteria) {
                SelectorFallback::NotDefined => {}
                SelectorFallback::NoFallback => return None,
                SelectorFallback::AnyEndpoint => return self.whole.pick(self.key),
                SelectorFallback::DefaultSubset => return self.default.as_mut()?.pick(self.key),
                SelectorFallback::KeysSubset(keys) => {
                    return self.iteration(Some(criteria.only(keys)));
                }
            }
        }
        let host = match config.fallback {
            Fallback::NoFallback => return None,
            Fallback::AnyEndpoint => self.whole.pick(self.key),
            Fallback::DefaultSubset => self.default.as_mut()?.pick(self.key),
        };
        if host.is_some() {
            inc(&self.cells.lb_subsets_fallback);
            return host;
        }
        if !config.panic_mode_any {
            return None;
        }
        let host = self.whole.pick(self.key);
        if host.is_some() {
            inc(&self.cells.lb_subsets_fallback_panic);
        }
        host
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use model::{
        health::HealthFlags,
        stats::ClusterStats,
        subset::{Labels, Selector},
        Endpoint,
    };
    use serde_json::{json, Value};

    use super::*;
    use crate::proxy::lb::host_set::Balancing;

    /// Hosts on ports 1.. with `envoy.lb` metadata `labels[i]` (priority in `priority`).
    fn hosts(labels: &[(u32, Value)]) -> Vec<Rc<Host>> {
        labels
            .iter()
            .enumerate()
            .map(|(i, (priority, metadata))| {
                Rc::new(Host::new(Endpoint {
                    priority: *priority,
                    lb_metadata: metadata.as_object().cloned().map(Arc::new),
                    ..Endpoint::new(([127, 0, 0, 1], 1 + i as u16).into())
                }))
            })
            .collect()
    }

    fn selector(keys: &[&str], fallback: SelectorFallback) -> Selector {
        Selector {
            keys: keys.iter().map(|k| Arc::from(*k)).collect(),
            single_host: false,
            fallback,
        }
    }

    fn config(selectors: Vec<Selector>, fallback: Fallback) -> SubsetConfig {
        SubsetConfig {
            selectors: selectors.into(),
            fallback,
            default_subset: Labels::of(json!({"stage": "prod"}).as_object().unwrap()),
            ..SubsetConfig::default()
        }
    }

    /// The cluster's balancers: every host, and the subsets.
    fn sets(config: SubsetConfig, hosts: &[Rc<Host>]) -> (HostSet, SubsetSets) {
        let balancing = Balancing::default();
        let since = |h: &Host| h.endpoint.first_published.0;
        let balance = |of: &[Rc<Host>]| HostSet::new(of, |_| HealthFlags::NONE, since, &balancing);
        let endpoints: Vec<Endpoint> = hosts.iter().map(|h| h.endpoint.clone()).collect();
        let lb = SubsetLb::new(Arc::new(config), &endpoints);
        (balance(hosts), SubsetSets::new(&lb, hosts, balance))
    }

    fn criteria(labels: Value) -> MetadataMatch {
        MetadataMatch::of(labels.as_object().unwrap())
    }

    /// The ports 30 picks reach (0 for no host).
    fn ports(
        whole: &mut HostSet,
        sets: &mut SubsetSets,
        criteria: Option<&MetadataMatch>,
        cells: &ClusterCells,
    ) -> Vec<u16> {
        let mut seen: Vec<u16> = (0..30)
            .map(|_| {
                let host = sets.pick(whole, criteria, PickKey::default(), cells);
                host.map_or(0, |h| h.address().port())
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen
    }

    fn labelled() -> Vec<Rc<Host>> {
        hosts(&[
            (0, json!({"version": "v1", "stage": "prod"})),
            (0, json!({"version": "v1", "stage": "canary"})),
            (0, json!({"version": "v2", "stage": "prod"})),
            (0, json!({"version": "v3"})),
        ])
    }

    #[test]
    fn a_pick_goes_to_the_subset_of_its_criteria_else_to_the_fallbacks() {
        let stats = ClusterStats::new("c".into(), 1);
        let cells = stats.shard(0);
        let hosts = labelled();
        let selectors = vec![
            selector(&["version"], SelectorFallback::NotDefined),
            selector(
                &["stage", "version"],
                SelectorFallback::KeysSubset(["version".into()].into()),
            ),
            selector(&["stage"], SelectorFallback::NoFallback),
        ];
        let (mut whole, mut subsets) = sets(config(selectors, Fallback::DefaultSubset), &hosts);
        let mut reach = |labels: Option<Value>| {
            let criteria = labels.map(criteria);
            ports(&mut whole, &mut subsets, criteria.as_ref(), cells)
        };
        assert_eq!(reach(Some(json!({"version": "v1"}))), [1, 2]);
        assert_eq!(
            reach(Some(json!({"version": "v1", "stage": "canary"}))),
            [2]
        );
        // No such subset: the selector's KEYS_SUBSET finds version v2.
        assert_eq!(
            reach(Some(json!({"version": "v2", "stage": "canary"}))),
            [3]
        );
        // The stage selector does not fall back.
        assert_eq!(reach(Some(json!({"stage": "dev"}))), [0]);
        // No selector has these keys, or no criteria: the default subset (stage prod).
        assert_eq!(reach(Some(json!({"color": "red"}))), [1, 3]);
        assert_eq!(reach(None), [1, 3]);
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(cells.lb_subsets_selected.load(Relaxed), 90);
        assert_eq!(cells.lb_subsets_fallback.load(Relaxed), 60);
    }

    #[test]
    fn an_empty_fallback_subset_panics_to_any_host_with_panic_mode_any() {
        let stats = ClusterStats::new("c".into(), 1);
        let cells = stats.shard(0);
        let hosts = hosts(&[(0, json!({"version": "v1"}))]);
        let mut config = config(
            vec![selector(&["version"], SelectorFallback::NotDefined)],
            Fallback::DefaultSubset,
        );
        let (mut whole, mut subsets) = sets(config.clone(), &hosts);
        let v9 = criteria(json!({"version": "v9"}));
        assert_eq!(ports(&mut whole, &mut subsets, Some(&v9), cells), [0]);
        config.panic_mode_any = true;
        let (mut whole, mut subsets) = sets(config, &hosts);
        assert_eq!(ports(&mut whole, &mut subsets, Some(&v9), cells), [1]);
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(cells.lb_subsets_fallback_panic.load(Relaxed), 30);
    }

    #[test]
    fn a_fallback_list_is_tried_in_order() {
        let stats = ClusterStats::new("c".into(), 1);
        let cells = stats.shard(0);
        let hosts = labelled();
        let mut config = config(
            vec![selector(&["version"], SelectorFallback::NotDefined)],
            Fallback::NoFallback,
        );
        let listed = criteria(json!({"version": "v9",
            "fallback_list": [{"version": "v8"}, {"version": "v2"}, {"version": "v1"}]}));
        // Without FALLBACK_LIST, `fallback_list` is one more key: no subset, no fallback.
        let (mut whole, mut subsets) = sets(config.clone(), &hosts);
        assert_eq!(ports(&mut whole, &mut subsets, Some(&listed), cells), [0]);
        config.fallback_list = true;
        let (mut whole, mut subsets) = sets(config, &hosts);
        assert_eq!(ports(&mut whole, &mut subsets, Some(&listed), cells), [3]);
    }

    #[test]
    fn a_single_host_subset_is_its_first_host_whatever_its_health() {
        let stats = ClusterStats::new("c".into(), 1);
        let cells = stats.shard(0);
        let hosts = hosts(&[
            (1, json!({"id": "a"})),
            (0, json!({"id": "a"})),
            (0, json!({"id": "a"})),
        ]);
        let mut single = selector(&["id"], SelectorFallback::NotDefined);
        single.single_host = true;
        let (mut whole, mut subsets) = sets(config(vec![single], Fallback::NoFallback), &hosts);
        let a = criteria(json!({"id": "a"}));
        assert_eq!(ports(&mut whole, &mut subsets, Some(&a), cells), [2]);
    }

    #[test]
    fn shards_count_subsets_made_and_removed() {
        let stats = ClusterStats::new("c".into(), 1);
        let cells = stats.shard(0);
        let config = config(
            vec![selector(&["version"], SelectorFallback::NotDefined)],
            Fallback::NoFallback,
        );
        let endpoints = |versions: &[&str]| -> Vec<Endpoint> {
            hosts(
                &versions
                    .iter()
                    .map(|v| (0, json!({"version": v})))
                    .collect::<Vec<_>>(),
            )
            .iter()
            .map(|h| h.endpoint.clone())
            .collect()
        };
        let first = Subsets::build(&config, &endpoints(&["v1", "v2"]));
        let second = Subsets::build(&config, &endpoints(&["v2", "v3", "v3"]));
        SubsetSets::count(None, Some(&first), cells, 0);
        SubsetSets::count(Some(&first), Some(&second), cells, 0);
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(cells.lb_subsets_created.load(Relaxed), 3);
        assert_eq!(cells.lb_subsets_removed.load(Relaxed), 1);
        assert_eq!(cells.lb_subsets_active.load(Relaxed), 2);
        SubsetSets::count(Some(&second), None, cells, 0);
        assert_eq!(cells.lb_subsets_active.load(Relaxed), 0);
    }
}
