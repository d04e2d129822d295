//! Micro-benchmark entry points (feature `bench`): shard internals that bench/ times — one
//! request's host pick through a cluster's host set, with and without consistent hashing, and
//! through a subset-balanced cluster's subsets.
use std::{
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use model::{
    hash_policy::{HashInput, HashPolicies, HashPolicy},
    health::HealthFlags,
    stats::ClusterStats,
    subset::{Fallback, MetadataMatch, Selector, SelectorFallback, SubsetConfig, SubsetLb},
    Endpoint, LbPolicy, RingHash, RingHashFunction,
};

use crate::{
    proxy::{
        cluster_manager::Host,
        lb::{
            host_set::{Balancing, HostSet},
            subset::SubsetSets,
            PickKey,
        },
        request_hash::request_hash,
    },
    stream::headers::{Headers, RequestHead, Version},
};

/// The policies benchmarked: Envoy's defaults for each.
pub fn policies() -> [(&'static str, LbPolicy); 3] {
    let ring = RingHash {
        minimum_ring_size: 1024,
        maximum_ring_size: 8 << 20,
        hash_function: RingHashFunction::XxHash,
        use_hostname: false,
    };
    [
        ("ROUND_ROBIN", LbPolicy::RoundRobin),
        ("RING_HASH", LbPolicy::RingHash(ring)),
        (
            "MAGLEV",
            LbPolicy::Maglev {
                table_size: 65537,
                use_hostname: false,
            },
        ),
    ]
}

/// A cluster of `hosts` equal hosts under `policy`, and requests carrying distinct `x-user`
/// headers, hashed by a header `hash_policy`.
pub struct PickCase {
    /// How long building the host set (its tables) took.
    pub built_in: Duration,
    set: HostSet,
    policies: HashPolicies,
    hashes: bool,
    requests: Vec<RequestHead>,
}

impl PickCase {
    pub fn new(policy: LbPolicy, hosts: usize, requests: usize) -> Self {
        let hosts: Vec<Rc<Host>> = (0..hosts)
            .map(|i| {
                let address = ([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080).into();
                Rc::new(Host::new(Endpoint::new(address)))
            })
            .collect();
        let balancing = Balancing {
            policy,
            ..Balancing::default()
        };
        let started = Instant::now();
        let set = HostSet::new(
            &hosts,
            |_| HealthFlags::NONE,
            |h| h.endpoint.first_published.0,
            &balancing,
        );
        let built_in = started.elapsed();
        let policies = HashPolicies {
            policies: vec![HashPolicy {
                input: HashInput::Header {
                    name: "x-user".into(),
                    rewrite: None,
                },
                terminal: false,
            }],
        };
        let requests = (0..requests)
            .map(|i| {
                let mut headers = Headers::with_capacity(4);
                headers.append("host", "bench.example");
                headers.append("user-agent", "bench");
                headers.append("x-user", format!("user-{i}"));
                RequestHead {
                    method: Bytes::from_static(b"GET"),
                    path: Bytes::from_static(b"/"),
                    version: Version::Http11,
                    headers,
                }
            })
            .collect();
        Self {
            built_in,
            set,
            policies,
            hashes: policy.hashes(),
            requests,
        }
    }

    /// Picks the host of request `i` (its hash computed first when the policy hashes), as the
    /// router does; returns its port.
    pub fn pick(&mut self, i: usize) -> u16 {
        let request = &self.requests[i % self.requests.len()];
        let hash = match self.hashes {
            true => {
                let addresses = ([127, 0, 0, 1], 40000).into();
                request_hash(&self.policies, request, addresses, addresses).hash
            }
            false => None,
        };
        let key = PickKey { hash, attempt: 0 };
        self.set.pick(key).map_or(0, |h| h.address().port())
    }
}

/// A ROUND_ROBIN cluster of `hosts` hosts labelled `version` `v0`..`v9` (in turn) and `stage`
/// `prod` or `canary`, subset-balanced by version and by version and stage (falling back to
/// version alone), and the criteria of one request.
pub struct SubsetPickCase {
    whole: HostSet,
    subsets: SubsetSets,
    criteria: MetadataMatch,
    stats: ClusterStats,
}

impl SubsetPickCase {
    pub fn new(hosts: usize, criteria: &serde_json::Value) -> Self {
        let endpoints: Vec<Endpoint> = (0..hosts)
            .map(|i| {
                let address = ([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080).into();
                let stage = if i % 20 < 10 { "prod" } else { "canary" };
                let labels = serde_json::json!({"version": format!("v{}", i % 10), "stage": stage});
                Endpoint {
                    lb_metadata: labels.as_object().cloned().map(Arc::new),
                    ..Endpoint::new(address)
                }
            })
            .collect();
        let keys = |keys: &[&str]| keys.iter().map(|k| Arc::from(*k)).collect();
        let config = SubsetConfig {
            selectors: Box::from([
                Selector {
                    keys: keys(&["version"]),
                    single_host: false,
                    fallback: SelectorFallback::NotDefined,
                },
                Selector {
                    keys: keys(&["stage", "version"]),
                    single_host: false,
                    fallback: SelectorFallback::KeysSubset(keys(&["version"])),
                },
            ]),
            fallback: Fallback::AnyEndpoint,
            ..SubsetConfig::default()
        };
        let lb = SubsetLb::new(Arc::new(config), &endpoints);
        let hosts: Vec<Rc<Host>> = endpoints
            .into_iter()
            .map(|e| Rc::new(Host::new(e)))
            .collect();
        let balancing = Balancing::default();
        let balance = |of: &[Rc<Host>]| {
            HostSet::new(
                of,
                |_| HealthFlags::NONE,
                |h| h.endpoint.first_published.0,
                &balancing,
            )
        };
        Self {
            whole: balance(&hosts),
            subsets: SubsetSets::new(&lb, &hosts, balance),
            criteria: MetadataMatch::of(criteria.as_object().expect("criteria are a struct")),
            stats: ClusterStats::new("bench".into(), 1),
        }
    }

    /// Picks a host for the request's criteria, as the router does; returns its port.
    pub fn pick(&mut self) -> u16 {
        let cells = self.stats.shard(0);
        let host = self.subsets.pick(
            &mut self.whole,
            Some(&self.criteria),
            PickKey::default(),
            cells,
        );
        host.map_or(0, |h| h.address().port())
    }
}
