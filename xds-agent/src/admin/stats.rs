//! `/stats`: every stat as `name: value` lines, or JSON, or Prometheus text; with Envoy's
//! `filter`, `usedonly` and `type` selectors.
use regex::Regex;

use super::{prometheus, query::Query, reply::Reply};
use crate::{
    agent::AgentState,
    stats::{self as registry, StatKind, StatValue},
};

/// Why a `/stats` query was rejected.
#[derive(Debug, thiserror::Error)]
pub enum StatsQueryError {
    #[error("Invalid regex: {0}")]
    Filter(#[from] regex::Error),
    #[error(
        "invalid &type= param {0:?}: expected All, Counters, Gauges, Histograms or TextReadouts"
    )]
    Type(String),
    #[error("invalid format {0:?}: expected json, prometheus or text")]
    Format(String),
}

/// Which stats a query asks for.
#[derive(Debug, Default)]
pub struct Selection {
    filter: Option<Regex>,
    /// Envoy shows a stat under `usedonly` once it was ever written. Our cells carry no
    /// written flag, so a stat counts as used when its value is non-zero.
    used_only: bool,
    /// `None`: every kind. `Some(None)`: a kind we have no stats of (histograms, text readouts).
    kind: Option<Option<StatKind>>,
}

impl Selection {
    pub fn from_query(query: &Query) -> Result<Self, StatsQueryError> {
        let filter = match query.get("filter") {
            Some(f) if !f.is_empty() => Some(Regex::new(f)?),
            _ => None,
        };
        let kind = match query.get("type") {
            None | Some("All") => None,
            Some("Counters") => Some(Some(StatKind::Counter)),
            Some("Gauges") => Some(Some(StatKind::Gauge)),
            Some("Histograms" | "TextReadouts") => Some(None),
            Some(other) => return Err(StatsQueryError::Type(other.into())),
        };
        Ok(Self {
            filter,
            used_only: query.has("usedonly"),
            kind,
        })
    }

    fn keeps(&self, stat: &StatValue) -> bool {
        (!self.used_only || stat.value != 0)
            && self.kind.is_none_or(|kind| kind == Some(stat.kind))
            && self
                .filter
                .as_ref()
                .is_none_or(|re| re.is_match(&stat.name))
    }

    /// The selected stats, in name order.
    pub fn apply(&self, stats: Vec<StatValue>) -> Vec<StatValue> {
        stats.into_iter().filter(|s| self.keeps(s)).collect()
    }
}

/// `GET /stats`.
pub fn handle(state: &AgentState, query: &Query) -> Reply {
    match query.get("format") {
        None | Some("text") => select(state, query).map(|s| Reply::ok_text(text(&s))),
        Some("json") => select(state, query).map(|s| Reply::json(&json(&s))),
        Some("prometheus") => return prometheus(state, query),
        Some(other) => Err(StatsQueryError::Format(other.into())),
    }
    .unwrap_or_else(|e| Reply::bad_request(e.to_string()))
}

/// `GET /stats/prometheus` (and `/stats?format=prometheus`).
pub fn prometheus(state: &AgentState, query: &Query) -> Reply {
    match select(state, query) {
        Ok(stats) => Reply::ok_text(prometheus::render(&stats)),
        Err(e) => Reply::bad_request(e.to_string()),
    }
}

/// Refreshes `server.uptime`, reads every stat and applies the query's selection.
fn select(state: &AgentState, query: &Query) -> Result<Vec<StatValue>, StatsQueryError> {
    let selection = Selection::from_query(query)?;
    let uptime = state.started.elapsed().as_secs();
    registry::set(&state.stats.server.shard(0).uptime, uptime as i64);
    Ok(selection.apply(state.stats.read_all()))
}

/// `name: value` lines.
pub fn text(stats: &[StatValue]) -> String {
    stats
        .iter()
        .map(|s| format!("{}: {}\n", s.name, s.value))
        .collect()
}

/// `{"stats":[{"name":..,"value":..}]}`.
pub fn json(stats: &[StatValue]) -> serde_json::Value {
    let stats: Vec<_> = stats
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "value": s.value}))
        .collect();
    serde_json::json!({ "stats": stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(name: &str, kind: StatKind, value: i64) -> StatValue {
        StatValue {
            name: name.into(),
            kind,
            value,
        }
    }

    fn sample() -> Vec<StatValue> {
        vec![
            stat("cluster.a.upstream_cx_active", StatKind::Gauge, 2),
            stat("cluster.a.upstream_cx_total", StatKind::Counter, 0),
            stat("server.uptime", StatKind::Gauge, 7),
        ]
    }

    fn selected(query: &str) -> Vec<String> {
        let selection = Selection::from_query(&Query::parse(query).unwrap()).unwrap();
        selection
            .apply(sample())
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    #[test]
    fn text_lines() {
        assert_eq!(
            text(&sample()),
            "cluster.a.upstream_cx_active: 2\ncluster.a.upstream_cx_total: 0\nserver.uptime: 7\n"
        );
    }

    #[test]
    fn json_shape() {
        let value = json(&sample()[..1]);
        assert_eq!(
            value,
            serde_json::json!({"stats": [{"name": "cluster.a.upstream_cx_active", "value": 2}]})
        );
    }

    #[test]
    fn filter_usedonly_and_type() {
        assert_eq!(
            selected("filter=%5Ecluster"),
            [
                "cluster.a.upstream_cx_active",
                "cluster.a.upstream_cx_total"
            ]
        );
        assert_eq!(
            selected("usedonly"),
            ["cluster.a.upstream_cx_active", "server.uptime"]
        );
        assert_eq!(selected("type=Counters"), ["cluster.a.upstream_cx_total"]);
        assert_eq!(
            selected("type=Gauges&filter=cx"),
            ["cluster.a.upstream_cx_active"]
        );
        assert!(selected("type=Histograms").is_empty());
        assert_eq!(selected("").len(), 3);
    }

    #[test]
    fn bad_filter_and_type_are_rejected() {
        let err = Selection::from_query(&Query::parse("filter=(").unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("Invalid regex"), "{err}");
        let err = Selection::from_query(&Query::parse("type=Bogus").unwrap()).unwrap_err();
        assert!(matches!(err, StatsQueryError::Type(_)));
    }
}
