//! Consistent-hash balancing (RING_HASH, MAGLEV): each host's normalized weight and hash key
//! as Envoy computes them, and the table the request's hash looks a host up in. Every shard
//! builds the same table from the same hosts, so a key maps to the same host on each.
use std::{collections::BTreeMap, rc::Rc};

use model::LbPolicy;

use super::{maglev::Maglev, ring_hash::Ring};
use crate::proxy::cluster_manager::Host;

/// A host as a table is built from it: its place in the tier's host list, the key its points
/// are hashed from, and its share of the requests.
pub struct Weighted {
    pub index: u32,
    pub key: Box<str>,
    pub weight: f64,
}

pub enum HashTable {
    Ring(Ring),
    Maglev(Maglev),
}

impl HashTable {
    /// The table for `hosts` (`all`: every host of their priority, whose localities share the
    /// locality weights). `policy` is RING_HASH or MAGLEV.
    pub fn new(
        policy: LbPolicy,
        hosts: &[Rc<Host>],
        all: &[Rc<Host>],
        locality_weighted: bool,
    ) -> Self {
        let by_hostname = match policy {
            LbPolicy::Maglev { use_hostname, .. } => use_hostname,
            LbPolicy::RingHash(config) => config.use_hostname,
            _ => unreachable!("only hashing policies build a table"),
        };
        let weighted = normalized(hosts, all, locality_weighted, by_hostname);
        match policy {
            LbPolicy::Maglev { table_size, .. } => Self::Maglev(Maglev::new(&weighted, table_size)),
            LbPolicy::RingHash(config) => Self::Ring(Ring::new(&weighted, &config)),
            _ => unreachable!("only hashing policies build a table"),
        }
    }

    /// The index of the host for `hash`; `attempt` > 0 moves off it as Envoy's host selection
    /// retries do. `None` when the table is empty.
    pub fn pick(&self, hash: u64, attempt: u32) -> Option<usize> {
        match self {
            Self::Ring(ring) => ring.pick(hash, attempt),
            Self::Maglev(maglev) => maglev.pick(hash, attempt),
        }
    }
}

/// What a host's points are hashed from: its `envoy.lb` `hash_key`, else its hostname
/// (`by_hostname`) or its address as `ip:port` (`[ip]:port` for IPv6).
fn key(host: &Host, by_hostname: bool) -> Box<str> {
    match (&host.endpoint.hash_key, &host.endpoint.hostname) {
        (Some(key), _) => key.as_ref().into(),
        (None, Some(name)) if by_hostname => name.as_ref().into(),
        (None, None) if by_hostname => "".into(),
        _ => host.address().to_string().into_boxed_str(),
    }
}

/// Each host's share, summing to at most 1, with Envoy's floating-point steps (the tables'
/// sizes and point counts follow from them, so they must be bit-identical): a host's weight
/// over its peers' sum, times its locality's weight over the sum of the weights of every
/// locality in the priority under locality weighting (a locality without weight takes
/// nothing; none with weight: no host at all).
fn normalized(
    hosts: &[Rc<Host>],
    all: &[Rc<Host>],
    locality_weighted: bool,
    by_hostname: bool,
) -> Vec<Weighted> {
    let mut out = Vec::with_capacity(hosts.len());
    if !locality_weighted {
        share(hosts.iter().enumerate(), 1.0, by_hostname, &mut out);
        return out;
    }
    let mut localities: BTreeMap<u32, u32> = BTreeMap::new();
    for host in all {
        let locality = host.endpoint.locality;
        localities.insert(locality.index, locality.weight);
    }
    let sum: u64 = localities.values().map(|w| u64::from(*w)).sum();
    if sum == 0 {
        return out;
    }
    for (index, weight) in localities {
        if weight == 0 {
            continue;
        }
        let members = hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.endpoint.locality.index == index);
        let locality = f64::from(weight) / sum as f64;
        share(members, locality, by_hostname, &mut out);
    }
    out
}

/// Appends `hosts` (with their places) sharing `locality` by their weights.
fn share<'a>(
    hosts: impl Iterator<Item = (usize, &'a Rc<Host>)> + Clone,
    locality: f64,
    by_hostname: bool,
    out: &mut Vec<Weighted>,
) {
    let sum: u64 = hosts
        .clone()
        .map(|(_, h)| u64::from(h.endpoint.weight))
        .sum();
    for (index, host) in hosts {
        out.push(Weighted {
            index: index as u32,
            key: key(host, by_hostname),
            weight: f64::from(host.endpoint.weight) * locality / sum as f64,
        });
    }
}

#[cfg(test)]
pub(super) mod tests {
    use model::{Endpoint, Locality};

    use super::*;

    pub fn host(port: u16, weight: u32, locality: (u32, u32)) -> Rc<Host> {
        Rc::new(Host::new(Endpoint {
            weight,
            locality: Locality {
                index: locality.0,
                weight: locality.1,
            },
            ..Endpoint::new(([10, 0, 0, 1], port).into())
        }))
    }

    #[test]
    fn weights_normalize_within_and_across_localities() {
        let all = [
            host(1, 1, (0, 3)),
            host(2, 3, (0, 3)),
            host(3, 1, (1, 1)),
            host(4, 1, (2, 0)),
        ];
        let flat = normalized(&all, &all, false, false);
        let shares: Vec<f64> = flat.iter().map(|w| w.weight).collect();
        assert_eq!(shares, [1.0 / 6.0, 3.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0]);
        assert_eq!(&*flat[0].key, "10.0.0.1:1");
        let by_locality = normalized(&all, &all, true, false);
        let shares: Vec<(u32, f64)> = by_locality.iter().map(|w| (w.index, w.weight)).collect();
        assert_eq!(shares, [(0, 0.1875), (1, 0.5625), (2, 0.25)]);
        // Locality 1 down: its weight still counts in the sum, as in Envoy.
        let up = [all[0].clone(), all[1].clone()];
        let shares: Vec<f64> = normalized(&up, &all, true, false)
            .iter()
            .map(|w| w.weight)
            .collect();
        assert_eq!(shares, [0.1875, 0.5625]);
    }

    #[test]
    fn a_hash_key_replaces_the_address() {
        let host = Rc::new(Host::new(Endpoint {
            hash_key: Some("alpha".into()),
            ..Endpoint::new(([10, 0, 0, 1], 1).into())
        }));
        assert_eq!(&*key(&host, true), "alpha");
        let v6 = Rc::new(Host::new(Endpoint {
            hostname: Some("db.local".into()),
            ..Endpoint::new("[::1]:80".parse().unwrap())
        }));
        assert_eq!(&*key(&v6, false), "[::1]:80");
        assert_eq!(&*key(&v6, true), "db.local");
    }
}
