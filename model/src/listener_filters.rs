//! Domain model: a listener's listener filters (`listener_filters`), which look at a new
//! connection's first bytes before a filter chain is chosen, their timeout, and the
//! `filter_disabled` predicates that skip a filter for some connections.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::stats::{HttpInspectorStats, TlsInspectorStats};

/// Envoy's default `listener_filters_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Default)]
pub struct ListenerFilters {
    pub filters: Vec<ListenerFilter>,
    /// `listener_filters_timeout`: `None` = wait forever (`0s`).
    pub timeout: Option<Duration>,
    /// `continue_on_listener_filters_timeout`: on timeout, pick a chain with what was found
    /// so far instead of closing the connection.
    pub continue_on_timeout: bool,
}

impl ListenerFilters {
    /// Whether any filter looks for a TLS ClientHello.
    pub fn inspects_tls(&self) -> bool {
        self.filters
            .iter()
            .any(|f| matches!(f.kind, ListenerFilterKind::TlsInspector { .. }))
    }
}

#[derive(Debug, Clone)]
pub struct ListenerFilter {
    pub kind: ListenerFilterKind,
    /// `filter_disabled`: connections this matches skip the filter.
    pub disabled: Option<Predicate>,
}

#[derive(Debug, Clone)]
pub enum ListenerFilterKind {
    /// `envoy.filters.listener.tls_inspector`: SNI, ALPN and "tls" vs "raw_buffer".
    TlsInspector {
        /// `max_client_hello_size`: a larger ClientHello fails the connection.
        max_client_hello: usize,
        /// `tls_inspector.*`, shared by every listener as in Envoy.
        stats: Arc<TlsInspectorStats>,
    },
    /// `envoy.filters.listener.http_inspector`: `http/1.0`, `http/1.1` or `h2c` as the
    /// application protocol of a cleartext connection.
    HttpInspector {
        /// `http_inspector.*`, shared by every listener.
        stats: Arc<HttpInspectorStats>,
    },
    /// `envoy.filters.listener.original_dst`: the connection's destination before an
    /// iptables REDIRECT (SO_ORIGINAL_DST), as its local address from then on.
    OriginalDst,
    /// Istio's `istio.set_internal_dst_address` (on internal listeners): the destination an
    /// internal connection stands for, from the `tunnel` metadata its endpoint passed
    /// (`destination`, and `address` for `ORIGINAL_DST` clusters), else from the CONNECT
    /// authority `connect_authority` shared.
    SetInternalDstAddress,
}

/// `ListenerFilterChainMatchPredicate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    Any,
    Not(Box<Predicate>),
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
    /// `destination_port_range`: `start..end` (end exclusive).
    DestinationPorts(u16, u32),
}

impl Predicate {
    pub fn matches(&self, local: SocketAddr) -> bool {
        match self {
            Predicate::Any => true,
            Predicate::Not(p) => !p.matches(local),
            Predicate::And(ps) => ps.iter().all(|p| p.matches(local)),
            Predicate::Or(ps) => ps.iter().any(|p| p.matches(local)),
            Predicate::DestinationPorts(start, end) => {
                (*start..).contains(&local.port()) && u32::from(local.port()) < *end
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_combine() {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let range = Predicate::DestinationPorts(80, 81);
        assert!(range.matches(at(80)) && !range.matches(at(81)));
        let not = Predicate::Not(Box::new(range.clone()));
        assert!(not.matches(at(443)));
        let or = Predicate::Or(vec![range.clone(), Predicate::DestinationPorts(443, 444)]);
        assert!(or.matches(at(443)) && !or.matches(at(8080)));
        assert!(!Predicate::And(vec![range, Predicate::Any]).matches(at(8080)));
    }
}
