//! Model: references to clusters — a cluster's name and a small number the agent gives each
//! name it meets, so a shard finds a route's or tcp_proxy's cluster by index instead of hashing
//! its name on every request.
use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock, PoisonError},
};

/// A number per cluster name, the same in every snapshot. Numbers are never reused: the table
/// grows with the distinct names the agent has met (a name and a `u32` each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(u32);

impl ClusterId {
    /// The number of `name`, given on first use. Called by the agent as it translates config,
    /// never on a shard.
    pub fn of(name: &str) -> Self {
        static NAMES: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let next = names.len() as u32;
        ClusterId(*names.entry(name.to_owned()).or_insert(next))
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A cluster named by config (a route, a mirror policy, a tcp_proxy): it may not exist yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterRef {
    pub name: String,
    pub id: ClusterId,
}

impl ClusterRef {
    pub fn named(name: impl Into<String>) -> Self {
        let name = name.into();
        let id = ClusterId::of(&name);
        Self { name, id }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_number_and_names_differ() {
        let a = ClusterRef::named("cluster-ref-test-a");
        let b = ClusterRef::named("cluster-ref-test-b");
        assert_ne!(a.id, b.id);
        assert_eq!(ClusterRef::named("cluster-ref-test-a"), a);
    }
}
