//! Stream layer: where a connection finds its route table. RDS tables live in one slot per
//! name on the shard, swapped by each snapshot, so an open connection's next stream sees an
//! update (as in Envoy); an inline table is fixed for the connection's life.
use std::{cell::RefCell, collections::HashMap, ops::Deref, rc::Rc, sync::Arc};

use model::{http::Routes, route::RouteConfig, Snapshot};

/// The route table a stream uses.
#[derive(Clone)]
pub enum Table<'a> {
    /// The connection manager's inline table (borrowed: it outlives the connection).
    Inline(&'a RouteConfig),
    /// An RDS table, through a shard-local handle: cloning the `Rc` per stream touches no
    /// count shared with other shards, as cloning the `Arc` would.
    #[allow(clippy::redundant_allocation)]
    Rds(Rc<Arc<RouteConfig>>),
}

impl Deref for Table<'_> {
    type Target = RouteConfig;

    fn deref(&self) -> &RouteConfig {
        match self {
            Table::Inline(table) => table,
            Table::Rds(table) => table,
        }
    }
}

type Slot = Rc<RefCell<Rc<Arc<RouteConfig>>>>;

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

    /// The source a new connection reads its tables from. An RDS table not here yet (the
    /// listener's `initial_fetch_timeout` ran out before it arrived) starts empty, so every
    /// request is answered 404 (no route) until it comes.
    pub fn source<'a>(&self, routes: &'a Routes) -> RouteSource<'a> {
        match routes {
            Routes::Static(table) => RouteSource::Inline(table),
            Routes::Rds(rds) => {
                let mut slots = self.slots.borrow_mut();
                let slot = slots.entry(rds.name.clone()).or_insert_with(|| {
                    let empty = Arc::new(RouteConfig::empty(&rds.name));
                    Rc::new(RefCell::new(Rc::new(empty)))
                });
                RouteSource::Rds(slot.clone())
            }
        }
    }
}

/// A connection's route table source.
pub enum RouteSource<'a> {
    Inline(&'a RouteConfig),
    Rds(Slot),
}

impl<'a> RouteSource<'a> {
    /// The table a new stream uses (kept for the whole stream).
    pub fn current(&self) -> Table<'a> {
        match self {
            RouteSource::Inline(table) => Table::Inline(table),
            RouteSource::Rds(slot) => Table::Rds(slot.borrow().clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use model::DiscoveredBy;

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
        let named = rds("r");
        let rds = tables.source(&named);
        let inline = Routes::Static(v1.clone());
        let fixed = tables.source(&inline);
        let same = |table: Table, config: &Arc<RouteConfig>| std::ptr::eq(&*table, &**config);
        let held = rds.current();
        tables.apply(&snapshot(&[("r", &v2)]));
        assert!(same(rds.current(), &v2), "next stream sees the update");
        assert!(same(held, &v1), "a running stream keeps its table");
        assert!(same(fixed.current(), &v1));
        tables.apply(&snapshot(&[]));
        assert!(same(rds.current(), &v2), "removal keeps the last version");
    }

    #[test]
    fn an_unknown_name_gets_an_empty_table() {
        let missing = rds("missing");
        let source = RdsTables::default().source(&missing);
        assert!(source.current().virtual_hosts.is_empty());
    }
}
