//! Stream layer: where a connection finds its route table. RDS tables live in one slot per
//! name on the shard, swapped by each snapshot, so an open connection's next stream sees an
//! update (as in Envoy); an inline table is fixed for the connection's life.
use std::{cell::RefCell, collections::HashMap, rc::Rc, sync::Arc};

use xds_agent::model::{http::Routes, route::RouteConfig, Snapshot};

/// A route table held by a stream (a shard-local handle: cloning it touches no shared atomic).
pub type Table = Rc<Arc<RouteConfig>>;

type Slot = Rc<RefCell<Table>>;

/// The shard's RDS tables, by name.
#[derive(Default)]
pub struct RdsTables {
    slots: RefCell<HashMap<String, Slot>>,
}

impl RdsTables {
    /// Adopts the snapshot's tables: changed ones are swapped in place, removed ones forgotten
    /// (connections that hold one keep its last version).
    pub fn apply(&self, snapshot: &Snapshot) {
        let mut slots = self.slots.borrow_mut();
        slots.retain(|name, _| snapshot.routes.contains_key(name));
        for (name, table) in &snapshot.routes {
            match slots.get(name) {
                Some(slot) if Arc::ptr_eq(&slot.borrow(), table) => {}
                Some(slot) => *slot.borrow_mut() = Rc::new(table.clone()),
                None => {
                    slots.insert(name.clone(), Rc::new(RefCell::new(Rc::new(table.clone()))));
                }
            }
        }
    }

    /// The source a new connection reads its tables from. A table not here yet (the
    /// listener's `initial_fetch_timeout` ran out before it arrived) starts empty, so every
    /// request is answered 404 (no route) until it comes.
    pub fn source(&self, routes: &Routes) -> RouteSource {
        let slot = match routes {
            Routes::Static(table) => Rc::new(RefCell::new(Rc::new(table.clone()))),
            Routes::Rds(rds) => self
                .slots
                .borrow_mut()
                .entry(rds.name.clone())
                .or_insert_with(|| {
                    Rc::new(RefCell::new(Rc::new(Arc::new(RouteConfig::empty(
                        &rds.name,
                    )))))
                })
                .clone(),
        };
        RouteSource(slot)
    }
}

/// A connection's route table source.
pub struct RouteSource(Slot);

impl RouteSource {
    /// The table a new stream uses (kept for the whole stream).
    pub fn current(&self) -> Table {
        self.0.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use xds_agent::model::DiscoveredBy;

    use super::*;

    fn rds(name: &str) -> Routes {
        Routes::Rds(DiscoveredBy {
            name: name.into(),
            initial_fetch_timeout: None,
        })
    }

    fn snapshot(routes: &[(&str, &Arc<RouteConfig>)]) -> Snapshot {
        let mut s = Snapshot::empty();
        for (name, table) in routes {
            s.routes.insert(name.to_string(), (*table).clone());
        }
        s
    }

    #[test]
    fn an_rds_update_reaches_open_sources_and_a_static_table_stays() {
        let tables = RdsTables::default();
        let (v1, v2) = (
            Arc::new(RouteConfig::empty("r")),
            Arc::new(RouteConfig::empty("r")),
        );
        tables.apply(&snapshot(&[("r", &v1)]));
        let rds = tables.source(&rds("r"));
        let fixed = tables.source(&Routes::Static(v1.clone()));
        let held = rds.current();
        tables.apply(&snapshot(&[("r", &v2)]));
        assert!(
            Arc::ptr_eq(&rds.current(), &v2),
            "next stream sees the update"
        );
        assert!(Arc::ptr_eq(&held, &v1), "a running stream keeps its table");
        assert!(Arc::ptr_eq(&fixed.current(), &v1));
        tables.apply(&snapshot(&[]));
        assert!(
            Arc::ptr_eq(&rds.current(), &v2),
            "removal keeps the last version"
        );
    }

    #[test]
    fn an_unknown_name_gets_an_empty_table() {
        let source = RdsTables::default().source(&rds("missing"));
        assert!(source.current().virtual_hosts.is_empty());
    }
}
