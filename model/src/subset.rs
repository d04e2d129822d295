//! Domain model: subset load balancing (`lb_subset_config`) — the cluster's selectors and
//! fallbacks, its hosts partitioned into subsets by their `envoy.lb` metadata (built by the
//! agent whenever the endpoints change, never on a shard), and a route's `metadata_match`.
use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use serde_json::{Map, Value};

use crate::Endpoint;

/// A `key: value` of `envoy.lb` metadata. The value is kept as its JSON text: two protobuf
/// `Value`s are equal when their JSON is (Envoy compares them as messages).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label {
    pub key: Arc<str>,
    pub value: Arc<str>,
    /// Of the key and the value: what a subset's lookup combines.
    hash: u64,
}

impl Label {
    pub fn new(key: &str, value: &Value) -> Self {
        let value = value.to_string();
        let mut hasher = DefaultHasher::new();
        (key, &value).hash(&mut hasher);
        Self {
            key: key.into(),
            value: value.into(),
            hash: hasher.finish(),
        }
    }
}

/// Labels sorted by key, each key once: what identifies a subset, and what a route asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Box<[Label]>);

impl Labels {
    /// The fields of a metadata struct.
    pub fn of(fields: &Map<String, Value>) -> Self {
        let sorted: BTreeMap<&String, &Value> = fields.iter().collect();
        Self(sorted.into_iter().map(|(k, v)| Label::new(k, v)).collect())
    }

    /// These labels with `over`'s replacing those of the same key (Envoy's
    /// `mergeMatchCriteria`: a weighted cluster's `metadata_match` over its route's).
    pub fn merged(&self, over: &Labels) -> Self {
        let mut by_key: BTreeMap<Arc<str>, Label> =
            self.0.iter().map(|l| (l.key.clone(), l.clone())).collect();
        by_key.extend(over.0.iter().map(|l| (l.key.clone(), l.clone())));
        Self(by_key.into_values().collect())
    }

    /// These labels without `key`.
    pub fn without(&self, key: &str) -> Self {
        Self(self.0.iter().filter(|l| &*l.key != key).cloned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&Label> {
        self.0.iter().find(|l| &*l.key == key)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// All of them, with nothing left out.
    pub fn view(&self) -> View<'_> {
        View {
            labels: self,
            only: None,
        }
    }
}

/// Labels a pick goes by: a route's, or only those of some keys (a `KEYS_SUBSET` fallback),
/// read in place without a copy.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    labels: &'a Labels,
    only: Option<&'a [Arc<str>]>,
}

impl<'a> View<'a> {
    pub fn iter(self) -> impl Iterator<Item = &'a Label> + Clone {
        self.labels
            .0
            .iter()
            .filter(move |l| self.only.is_none_or(|keys| keys.contains(&l.key)))
    }

    /// The same labels, but only those of `keys`.
    pub fn only(self, keys: &'a [Arc<str>]) -> Self {
        Self {
            labels: self.labels,
            only: Some(keys),
        }
    }

    pub fn is_empty(self) -> bool {
        self.iter().next().is_none()
    }

    /// Whether its keys are exactly `keys` (sorted).
    fn has_keys(self, keys: &[Arc<str>]) -> bool {
        self.iter().map(|l| &l.key).eq(keys.iter())
    }
}

/// Combines label hashes in key order: one subset's lookup key.
fn combined<'a>(labels: impl Iterator<Item = &'a Label>) -> u64 {
    labels.fold(0, |h, l| h.rotate_left(5) ^ l.hash)
}

/// The `envoy.lb` key whose list value names fallback criteria (`FALLBACK_LIST`).
pub const FALLBACK_LIST: &str = "fallback_list";

/// A route's `metadata_match` under `envoy.lb` (a weighted cluster's merged over its
/// route's), with its `fallback_list` already merged for clusters that read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataMatch {
    /// Every label, `fallback_list` included (a plain label unless the cluster's
    /// `metadata_fallback_policy` is `FALLBACK_LIST`).
    pub labels: Labels,
    /// With a `fallback_list` label: the criteria a `FALLBACK_LIST` cluster tries in order,
    /// each entry merged over the other labels (an empty list: those labels alone).
    pub fallback_list: Option<Box<[Labels]>>,
}

impl MetadataMatch {
    pub fn new(labels: Labels, fallback_list: Option<&Value>) -> Self {
        let fallback_list = fallback_list.map(|list| {
            let base = labels.without(FALLBACK_LIST);
            let entries = list.as_array().map(Vec::as_slice).unwrap_or_default();
            let merged: Box<[Labels]> = entries
                .iter()
                .map(|entry| match entry {
                    Value::Object(fields) => base.merged(&Labels::of(fields)),
                    _ => base.clone(), // Envoy reads a non-struct entry as an empty struct
                })
                .collect();
            match merged.is_empty() {
                true => Box::from([base]),
                false => merged,
            }
        });
        Self {
            labels,
            fallback_list,
        }
    }

    /// The criteria of a metadata struct (`envoy.lb`'s fields).
    pub fn of(fields: &Map<String, Value>) -> Self {
        Self::new(Labels::of(fields), fields.get(FALLBACK_LIST))
    }

    /// `over`'s fields replacing these (a weighted cluster's criteria over its route's).
    pub fn merged(&self, over: &Map<String, Value>) -> Self {
        let labels = self.labels.merged(&Labels::of(over));
        let list = over.get(FALLBACK_LIST).cloned();
        let list = list.or_else(|| {
            // The route's own fallback list, as JSON again.
            let label = self.labels.get(FALLBACK_LIST)?;
            serde_json::from_str(&label.value).ok()
        });
        Self::new(labels, list.as_ref())
    }
}

/// `lb_subset_config`; its default is Envoy's (no selector, `NO_FALLBACK`, every flag off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubsetConfig {
    pub selectors: Box<[Selector]>,
    /// `fallback_policy`: where a pick goes when no subset matches.
    pub fallback: Fallback,
    /// `default_subset`: the hosts a `DEFAULT_SUBSET` fallback balances over.
    pub default_subset: Labels,
    /// `panic_mode_any`: a fallback that finds no host falls back to every host.
    pub panic_mode_any: bool,
    /// `list_as_any`: a host whose value is a list is in a subset for each element.
    pub list_as_any: bool,
    /// `locality_weight_aware`: subsets keep the cluster's locality weighting.
    pub locality_weight_aware: bool,
    /// `scale_locality_weight` (with `locality_weight_aware`): a locality's weight in a subset
    /// is scaled by the share of its hosts in the subset.
    pub scale_locality_weight: bool,
    /// `metadata_fallback_policy: FALLBACK_LIST`.
    pub fallback_list: bool,
}

/// One `subset_selectors` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Sorted, each once.
    pub keys: Box<[Arc<str>]>,
    /// `single_host_per_subset`.
    pub single_host: bool,
    /// What a pick whose criteria have exactly these keys falls back to. Envoy reads a
    /// selector's own policy only when no earlier selector's keys begin with its keys: then
    /// this is `NotDefined` (its selector tree node was made by the earlier one).
    pub fallback: SelectorFallback,
}

/// `LbSubsetFallbackPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fallback {
    #[default]
    NoFallback,
    AnyEndpoint,
    DefaultSubset,
}

/// `LbSubsetSelectorFallbackPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorFallback {
    /// The cluster's `fallback_policy`.
    NotDefined,
    NoFallback,
    AnyEndpoint,
    DefaultSubset,
    /// Picks again by the criteria of these keys only (`fallback_keys_subset`).
    KeysSubset(Box<[Arc<str>]>),
}

impl SubsetConfig {
    /// The fallback of the selector whose keys are exactly the criteria's (`NotDefined`
    /// without one).
    pub fn selector_fallback(&self, criteria: View<'_>) -> &SelectorFallback {
        self.selectors
            .iter()
            .find(|s| criteria.has_keys(&s.keys))
            .map_or(&SelectorFallback::NotDefined, |s| &s.fallback)
    }

    /// Whether a host with `envoy.lb` metadata `metadata` is in the default subset: it has
    /// each of its labels (as a list element with `list_as_any`).
    fn in_default(&self, metadata: Option<&Map<String, Value>>) -> bool {
        self.default_subset.iter().all(|label| {
            let Some(value) = metadata.and_then(|m| m.get(&*label.key)) else {
                return false;
            };
            // A metadata value's JSON text, as labels keep their values.
            let json = |v: &Value| v.to_string();
            let same = |v: &Value| json(v) == *label.value;
            match (self.list_as_any, value) {
                (true, Value::Array(items)) => items.iter().any(same),
                _ => same(value),
            }
        })
    }

    /// Each label set a host is in for `selector`: none when it lacks a key; with
    /// `list_as_any`, one per combination of its list values' elements.
    fn label_sets(&self, selector: &Selector, metadata: &Map<String, Value>) -> Vec<Labels> {
        let mut sets: Vec<Vec<Label>> = vec![Vec::new()];
        for key in selector.keys.iter() {
            let Some(value) = metadata.get(&**key) else {
                return Vec::new();
            };
            let values = match (self.list_as_any, value) {
                (true, Value::Array(items)) => items.as_slice(),
                _ => std::slice::from_ref(value),
            };
            sets = sets
                .iter()
                .flat_map(|set| {
                    values.iter().map(move |v| {
                        let mut next = set.clone();
                        next.push(Label::new(key, v));
                        next
                    })
                })
                .collect();
        }
        sets.into_iter()
            .map(|mut set| {
                set.sort_by(|a, b| a.key.cmp(&b.key));
                Labels(set.into())
            })
            .collect()
    }
}

/// One subset: the hosts whose metadata has its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    pub labels: Labels,
    /// Indices into the cluster's endpoints, in their order; for a single-host subset, the
    /// first of each priority.
    pub hosts: Box<[u32]>,
    /// Made by a `single_host_per_subset` selector: a pick is its one host of the lowest
    /// priority, whatever its health (as Envoy).
    pub single_host: bool,
    hash: u64,
}

/// A cluster's hosts partitioned by its selectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subsets {
    /// Every subset with at least one host, ordered by hash for lookup.
    subsets: Box<[Subset]>,
    /// The hosts of `default_subset`.
    pub default: Box<[u32]>,
    /// Hosts a single-host subset left out, in the highest priority (Envoy's
    /// `lb_subsets_single_host_per_subset_duplicate` after a full update).
    pub duplicates: u64,
}

impl Subsets {
    /// Partitions `endpoints` by `config`'s selectors, as Envoy: for each host, each selector,
    /// each of the host's label sets, the subset of those labels (made by the first selector
    /// that meets it).
    pub fn build(config: &SubsetConfig, endpoints: &[Endpoint]) -> Self {
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut subsets: Vec<(Labels, Vec<u32>, bool)> = Vec::new();
        let mut duplicates: BTreeMap<u32, u64> = BTreeMap::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            let Some(metadata) = endpoint.lb_metadata.as_deref() else {
                continue;
            };
            let i = i as u32;
            for selector in config.selectors.iter() {
                for labels in config.label_sets(selector, metadata) {
                    let at = *index.entry(labels.clone()).or_insert_with(|| {
                        subsets.push((labels, Vec::new(), selector.single_host));
                        subsets.len() - 1
                    });
                    let (_, hosts, single) = &mut subsets[at];
                    if hosts.last() == Some(&i) {
                        continue;
                    }
                    let priority = endpoint.priority;
                    if *single
                        && hosts
                            .iter()
                            .any(|&h| endpoints[h as usize].priority == priority)
                    {
                        *duplicates.entry(priority).or_default() += 1;
                        continue;
                    }
                    hosts.push(i);
                }
            }
        }
        let highest = endpoints.iter().map(|e| e.priority).max();
        let mut subsets: Vec<Subset> = subsets
            .into_iter()
            .map(|(labels, hosts, single_host)| Subset {
                hash: combined(labels.iter()),
                labels,
                hosts: hosts.into(),
                single_host,
            })
            .collect();
        subsets.sort_by_key(|s| s.hash);
        let default = endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| config.in_default(e.lb_metadata.as_deref()))
            .map(|(i, _)| i as u32)
            .collect();
        Self {
            subsets: subsets.into(),
            default,
            duplicates: highest
                .and_then(|p| duplicates.get(&p).copied())
                .unwrap_or(0),
        }
    }

    /// Every subset, in lookup order.
    pub fn all(&self) -> &[Subset] {
        &self.subsets
    }

    /// The place in [`Self::all`] of the subset whose labels are exactly `criteria`.
    pub fn find(&self, criteria: View<'_>) -> Option<usize> {
        let hash = combined(criteria.iter());
        let start = self.subsets.partition_point(|s| s.hash < hash);
        self.subsets[start..]
            .iter()
            .take_while(|s| s.hash == hash)
            .position(|s| s.labels.iter().eq(criteria.iter()))
            .map(|at| start + at)
    }
}

/// A subset-balanced cluster's config with its current subsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetLb {
    pub config: Arc<SubsetConfig>,
    pub subsets: Arc<Subsets>,
}

impl SubsetLb {
    pub fn new(config: Arc<SubsetConfig>, endpoints: &[Endpoint]) -> Self {
        let subsets = Arc::new(Subsets::build(&config, endpoints));
        Self { config, subsets }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn endpoint(port: u16, priority: u32, metadata: Value) -> Endpoint {
        Endpoint {
            priority,
            lb_metadata: metadata.as_object().cloned().map(Arc::new),
            ..Endpoint::new(([127, 0, 0, 1], port).into())
        }
    }

    fn selector(keys: &[&str], single_host: bool) -> Selector {
        Selector {
            keys: keys.iter().map(|k| Arc::from(*k)).collect(),
            single_host,
            fallback: SelectorFallback::NotDefined,
        }
    }

    fn config(selectors: Vec<Selector>) -> SubsetConfig {
        SubsetConfig {
            selectors: selectors.into(),
            fallback: Fallback::AnyEndpoint,
            default_subset: Labels::of(json!({"stage": "prod"}).as_object().unwrap()),
            ..SubsetConfig::default()
        }
    }

    fn labels(value: Value) -> Labels {
        Labels::of(value.as_object().unwrap())
    }

    fn hosts_of(subsets: &Subsets, criteria: Value) -> Option<Vec<u32>> {
        let criteria = labels(criteria);
        let at = subsets.find(criteria.view())?;
        Some(subsets.all()[at].hosts.to_vec())
    }

    #[test]
    fn hosts_fall_into_subsets_by_their_labels() {
        let endpoints = [
            endpoint(1, 0, json!({"version": "v1", "stage": "prod"})),
            endpoint(2, 0, json!({"version": "v1", "stage": "canary"})),
            endpoint(3, 0, json!({"version": "v2", "stage": "canary"})),
            endpoint(4, 0, json!({"stage": "prod"})),
            endpoint(5, 0, Value::Null),
        ];
        let config = config(vec![
            selector(&["version"], false),
            selector(&["version", "stage"], false),
        ]);
        let subsets = Subsets::build(&config, &endpoints);
        assert_eq!(
            hosts_of(&subsets, json!({"version": "v1"})),
            Some(vec![0, 1])
        );
        assert_eq!(
            hosts_of(&subsets, json!({"stage": "canary", "version": "v2"})),
            Some(vec![2])
        );
        // No selector has only `stage`; no host has v3.
        assert_eq!(hosts_of(&subsets, json!({"stage": "prod"})), None);
        assert_eq!(hosts_of(&subsets, json!({"version": "v3"})), None);
        // 3 versions-only and stage-version subsets: v1, v2, v1/prod, v1/canary, v2/canary.
        assert_eq!(subsets.all().len(), 5);
        assert_eq!(&*subsets.default, &[0, 3]);
        // A number is not its string.
        assert_eq!(hosts_of(&subsets, json!({"version": 1})), None);
    }

    #[test]
    fn a_keys_subset_view_reads_only_its_keys() {
        let endpoints = [endpoint(1, 0, json!({"version": "v1", "stage": "prod"}))];
        let subsets = Subsets::build(&config(vec![selector(&["version"], false)]), &endpoints);
        let criteria = labels(json!({"version": "v1", "stage": "none"}));
        assert_eq!(subsets.find(criteria.view()), None);
        let keys: [Arc<str>; 1] = ["version".into()];
        assert_eq!(subsets.find(criteria.view().only(&keys)), Some(0));
    }

    #[test]
    fn list_values_are_each_element_with_list_as_any() {
        let endpoints = [endpoint(1, 0, json!({"version": ["v1", "v2"]}))];
        let mut config = config(vec![selector(&["version"], false)]);
        let plain = Subsets::build(&config, &endpoints);
        assert_eq!(
            hosts_of(&plain, json!({"version": ["v1", "v2"]})),
            Some(vec![0])
        );
        config.list_as_any = true;
        let any = Subsets::build(&config, &endpoints);
        assert_eq!(hosts_of(&any, json!({"version": "v1"})), Some(vec![0]));
        assert_eq!(hosts_of(&any, json!({"version": "v2"})), Some(vec![0]));
    }

    #[test]
    fn a_single_host_subset_keeps_the_first_host_of_each_priority() {
        let endpoints = [
            endpoint(1, 0, json!({"id": "a"})),
            endpoint(2, 0, json!({"id": "a"})),
            endpoint(3, 1, json!({"id": "a"})),
            endpoint(4, 1, json!({"id": "a"})),
            endpoint(5, 1, json!({"id": "a"})),
        ];
        let subsets = Subsets::build(&config(vec![selector(&["id"], true)]), &endpoints);
        assert_eq!(hosts_of(&subsets, json!({"id": "a"})), Some(vec![0, 2]));
        assert_eq!(subsets.duplicates, 2);
    }

    #[test]
    fn fallback_lists_merge_over_the_other_labels() {
        let criteria = MetadataMatch::of(
            json!({"stage": "prod", "version": "v9", "fallback_list": [{"version": "v1"}, {"stage": "canary"}]})
                .as_object()
                .unwrap(),
        );
        let list = criteria.fallback_list.as_deref().unwrap();
        assert_eq!(list[0], labels(json!({"stage": "prod", "version": "v1"})));
        assert_eq!(list[1], labels(json!({"stage": "canary", "version": "v9"})));
        let empty = MetadataMatch::of(
            json!({"version": "v9", "fallback_list": []})
                .as_object()
                .unwrap(),
        );
        assert_eq!(
            &*empty.fallback_list.unwrap(),
            &[labels(json!({"version": "v9"}))]
        );
        // A weighted cluster's labels replace its route's.
        let merged = criteria.merged(json!({"version": "v2"}).as_object().unwrap());
        assert_eq!(
            merged.labels.get("version").unwrap().value.as_ref(),
            "\"v2\""
        );
        assert!(merged.fallback_list.is_some());
    }
}
