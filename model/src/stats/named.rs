//! Stats: counters named at run time under a field (`<scope>.<field>.<name>`, e.g.
//! `cluster.a.grpc.helloworld.Greeter.SayHello.success`): each shard keeps its own map,
//! created on first use; reads sum every name over shards.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
};

use super::{StatKind, StatValue};

/// One shard's counters by name. Only its shard adds names; the lock is shared with the
/// admin's reads, so it is never contended on the request path in practice.
#[derive(Debug, Default)]
pub struct NamedCounters(Mutex<HashMap<Box<str>, Arc<AtomicU64>>>);

impl NamedCounters {
    /// The counter `name`, created at zero on first use.
    pub fn counter(&self, name: &str) -> Arc<AtomicU64> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(counter) = map.get(name) {
            return counter.clone();
        }
        map.entry(name.into()).or_default().clone()
    }

    /// Appends `<prefix>.<name>` for every name some shard created, summed over `shards`.
    pub fn read_sum<'a>(
        prefix: &str,
        shards: impl Iterator<Item = &'a NamedCounters>,
        out: &mut Vec<StatValue>,
    ) {
        let mut sums: BTreeMap<Box<str>, u64> = BTreeMap::new();
        for shard in shards {
            let map = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            for (name, counter) in map.iter() {
                let sum = sums.entry(name.clone()).or_default();
                *sum = sum.wrapping_add(counter.load(Relaxed));
            }
        }
        out.extend(sums.into_iter().map(|(name, value)| StatValue {
            name: format!("{prefix}.{name}"),
            kind: StatKind::Counter,
            value: value as i64,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::inc;

    #[test]
    fn names_sum_over_shards_once_created() {
        let shards = [NamedCounters::default(), NamedCounters::default()];
        inc(&shards[0].counter("svc.m.success"));
        inc(&shards[1].counter("svc.m.success"));
        inc(&shards[1].counter("svc.m.total"));
        let _unused = shards[0].counter("zero");
        let mut out = Vec::new();
        NamedCounters::read_sum("cluster.a.grpc", shards.iter(), &mut out);
        let read: Vec<(String, i64)> = out.into_iter().map(|s| (s.name, s.value)).collect();
        assert_eq!(
            read,
            [
                ("cluster.a.grpc.svc.m.success".to_string(), 2),
                ("cluster.a.grpc.svc.m.total".to_string(), 1),
                ("cluster.a.grpc.zero".to_string(), 0),
            ]
        );
    }
}
