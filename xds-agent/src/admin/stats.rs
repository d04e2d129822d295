//! `/stats`: every stat as `name: value` lines, or JSON, or Prometheus text; with Envoy's
//! `filter`, `usedonly` and `type` selectors.
//!
//! Histograms report each quantile twice, as Envoy does: `interval` covers the last completed
//! flush interval (5 s, Envoy's default `stats_flush_interval`; intervals end on the agent's
//! tick or, without one, on the first read after 5 s), `cumulative` everything since start.
use std::{fmt::Write, time::Instant};

use regex::Regex;

use super::{prometheus, query::Query, reply::Reply};
use crate::agent::AgentState;
use model::stats::{
    self as registry,
    istio::{Labeled, LabeledValue},
    HistogramValue, StatKind, StatValue, SUPPORTED_QUANTILES,
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

/// The stat kinds `type=` selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Kinds {
    #[default]
    All,
    Counters,
    Gauges,
    Histograms,
    TextReadouts,
}

/// Which stats a query asks for.
#[derive(Debug, Default)]
pub struct Selection {
    filter: Option<Regex>,
    /// Envoy shows a stat under `usedonly` once it was ever written. Our counter and gauge
    /// cells carry no written flag, so one counts as used when its value is non-zero; a
    /// histogram is used once it recorded a value.
    used_only: bool,
    kinds: Kinds,
}

/// Counters and gauges, text readouts (the xDS `version_text`s), and histograms, each in
/// name order.
#[derive(Debug, Default)]
pub struct Stats {
    pub scalars: Vec<StatValue>,
    pub texts: Vec<(String, String)>,
    pub histograms: Vec<HistogramValue>,
}

impl Selection {
    pub fn from_query(query: &Query) -> Result<Self, StatsQueryError> {
        let filter = match query.get("filter") {
            Some(f) if !f.is_empty() => Some(Regex::new(f)?),
            _ => None,
        };
        let kinds = match query.get("type") {
            None | Some("All") => Kinds::All,
            Some("Counters") => Kinds::Counters,
            Some("Gauges") => Kinds::Gauges,
            Some("Histograms") => Kinds::Histograms,
            Some("TextReadouts") => Kinds::TextReadouts,
            Some(other) => return Err(StatsQueryError::Type(other.into())),
        };
        Ok(Self {
            filter,
            used_only: query.has("usedonly"),
            kinds,
        })
    }

    fn name_matches(&self, name: &str) -> bool {
        self.filter.as_ref().is_none_or(|re| re.is_match(name))
    }

    fn keeps(&self, stat: &StatValue) -> bool {
        let kind = match self.kinds {
            Kinds::All => true,
            Kinds::Counters => stat.kind == StatKind::Counter,
            Kinds::Gauges => stat.kind == StatKind::Gauge,
            Kinds::Histograms | Kinds::TextReadouts => false,
        };
        kind && (!self.used_only || stat.value != 0) && self.name_matches(&stat.name)
    }

    fn keeps_histogram(&self, histogram: &HistogramValue) -> bool {
        matches!(self.kinds, Kinds::All | Kinds::Histograms)
            && (!self.used_only || histogram.used())
            && self.name_matches(&histogram.name)
    }

    /// The selected stats, in name order.
    pub fn apply(&self, stats: Stats) -> Stats {
        Stats {
            scalars: stats
                .scalars
                .into_iter()
                .filter(|s| self.keeps(s))
                .collect(),
            texts: stats
                .texts
                .into_iter()
                .filter(|(name, value)| {
                    matches!(self.kinds, Kinds::All | Kinds::TextReadouts)
                        && (!self.used_only || !value.is_empty())
                        && self.name_matches(name)
                })
                .collect(),
            histograms: stats
                .histograms
                .into_iter()
                .filter(|h| self.keeps_histogram(h))
                .collect(),
        }
    }
}

/// `GET /stats`.
pub fn handle(state: &AgentState, query: &Query) -> Reply {
    match query.get("format") {
        None | Some("text") => select(state, query, true).map(|s| Reply::ok_text(text(&s))),
        Some("json") => select(state, query, true).map(|s| Reply::json(&json(&s))),
        Some("prometheus") => return prometheus(state, query),
        Some(other) => Err(StatsQueryError::Format(other.into())),
    }
    .unwrap_or_else(|e| Reply::bad_request(e.to_string()))
}

/// `GET /stats/prometheus` (and `/stats?format=prometheus`).
pub fn prometheus(state: &AgentState, query: &Query) -> Reply {
    match select(state, query, false) {
        Ok(stats) => {
            let naming = &state.snapshot.stat_naming;
            let mut out = prometheus::render(naming, &stats.scalars, &stats.histograms);
            prometheus::render_labeled(&state.stats.istio.read(), &mut out);
            Reply::ok_text(out)
        }
        Err(e) => Reply::bad_request(e.to_string()),
    }
}

/// Refreshes `server.uptime`, ends a histogram interval if one is due (see
/// [`StatsRegistry::flush_histograms_if_due`]), reads every stat and applies the selection.
/// `labeled`: Istio's metrics join them under their tagged names
/// (`istiocustom.istio_requests_total.reporter.source…`), as Envoy lists them; Prometheus
/// renders them with their labels instead.
///
/// [`StatsRegistry::flush_histograms_if_due`]: model::stats::StatsRegistry::flush_histograms_if_due
fn select(state: &AgentState, query: &Query, labeled: bool) -> Result<Stats, StatsQueryError> {
    let selection = Selection::from_query(query)?;
    let uptime = state.started.elapsed().as_secs();
    registry::set(&state.stats.server.shard(0).uptime, uptime as i64);
    state.stats.flush_histograms_if_due(Instant::now());
    // `stats_matcher`: what Envoy would not have made is not shown.
    let naming = &state.snapshot.stat_naming;
    let mut scalars = state.stats.read_all();
    scalars.retain(|s| naming.shows(&s.name));
    let mut histograms = state.stats.read_histograms();
    histograms.retain(|h| naming.shows(&h.name));
    if labeled {
        for series in state.stats.istio.read() {
            let name = tagged_name(&series);
            match series.value {
                Labeled::Counter(n) => scalars.push(StatValue {
                    name,
                    kind: StatKind::Counter,
                    value: n as i64,
                }),
                Labeled::Histogram(h) => histograms.push(HistogramValue::cumulative(name, h)),
            }
        }
        scalars.sort_by(|a, b| a.name.cmp(&b.name));
        histograms.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(selection.apply(Stats {
        scalars,
        texts: state
            .dynamic
            .version_texts()
            .into_iter()
            .filter(|(name, _)| naming.shows(name))
            .collect(),
        histograms,
    }))
}

/// Envoy's name of a tagged stat: the family, then each label's name and value.
fn tagged_name(series: &LabeledValue) -> String {
    let mut name = format!("istiocustom.{}", series.family);
    for (label, value) in &series.labels {
        let _ = write!(name, ".{label}.{value}");
    }
    name
}

/// Envoy's percentile labels: `SUPPORTED_QUANTILES` × 100 (`0`, `25`, …, `99.5`, `99.9`, `100`).
fn percentiles() -> impl Iterator<Item = f64> {
    SUPPORTED_QUANTILES
        .iter()
        .map(|q| (q * 1000.0).round() / 10.0)
}

/// A number as Envoy's `fmt` prints a double: shortest form, `nan` when undefined.
fn number(value: f64) -> String {
    if value.is_nan() {
        "nan".into()
    } else {
        value.to_string()
    }
}

/// `name: value` lines for counters and gauges, then histograms as
/// `name: P0(interval,cumulative) P25(…) … P100(…)`, or `name: No recorded values`.
pub fn text(stats: &Stats) -> String {
    let mut out = String::new();
    for s in &stats.scalars {
        let _ = writeln!(out, "{}: {}", s.name, s.value);
    }
    for (name, value) in &stats.texts {
        let _ = writeln!(out, "{name}: {value:?}");
    }
    for h in &stats.histograms {
        if !h.used() {
            let _ = writeln!(out, "{}: No recorded values", h.name);
            continue;
        }
        let _ = write!(out, "{}:", h.name);
        let quantiles = percentiles()
            .zip(h.interval.quantiles_ms())
            .zip(h.cumulative.quantiles_ms());
        for ((percentile, interval), cumulative) in quantiles {
            let _ = write!(
                out,
                " P{percentile}({},{})",
                number(interval),
                number(cumulative)
            );
        }
        out.push('\n');
    }
    out
}

/// `{"stats":[{"name":..,"value":..}, …, {"histograms": {"supported_quantiles": [..],
/// "computed_quantiles": [{"name":..,"values":[{"cumulative":..,"interval":..}]}]}}]}`, with
/// `null` for undefined quantiles; the histograms entry only when there are histograms.
pub fn json(stats: &Stats) -> serde_json::Value {
    let mut entries: Vec<_> = stats
        .scalars
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "value": s.value}))
        .chain(
            stats
                .texts
                .iter()
                .map(|(name, value)| serde_json::json!({"name": name, "value": value})),
        )
        .collect();
    if !stats.histograms.is_empty() {
        let quantile = |v: f64| match v.is_nan() {
            true => serde_json::Value::Null,
            false => serde_json::json!(v),
        };
        let computed: Vec<_> = stats
            .histograms
            .iter()
            .map(|h| {
                let values: Vec<_> = h
                    .cumulative
                    .quantiles_ms()
                    .into_iter()
                    .zip(h.interval.quantiles_ms())
                    .map(|(c, i)| serde_json::json!({"cumulative": quantile(c), "interval": quantile(i)}))
                    .collect();
                serde_json::json!({"name": h.name, "values": values})
            })
            .collect();
        let supported: Vec<f64> = percentiles().collect();
        entries.push(serde_json::json!({"histograms": {
            "supported_quantiles": supported,
            "computed_quantiles": computed,
        }}));
    }
    serde_json::json!({ "stats": entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::stats::{record, HistogramCell, HistogramSnapshot};

    fn stat(name: &str, kind: StatKind, value: i64) -> StatValue {
        StatValue {
            name: name.into(),
            kind,
            value,
        }
    }

    fn histogram(name: &str, interval: &[u64], since_start: &[u64]) -> HistogramValue {
        let snapshot = |values: &[u64]| {
            let cell = HistogramCell::default();
            values.iter().for_each(|v| record(&cell, *v));
            HistogramSnapshot::merge([&cell])
        };
        HistogramValue {
            name: name.into(),
            cumulative: snapshot(since_start),
            interval: snapshot(interval),
        }
    }

    fn sample() -> Stats {
        Stats {
            scalars: vec![
                stat("cluster.a.upstream_cx_active", StatKind::Gauge, 2),
                stat("cluster.a.upstream_cx_total", StatKind::Counter, 0),
                stat("server.uptime", StatKind::Gauge, 7),
            ],
            texts: vec![("cluster_manager.cds.version_text".into(), "v3".into())],
            histograms: vec![
                histogram("cluster.a.upstream_rq_time", &[], &[200_000]),
                histogram("cluster.b.upstream_rq_time", &[], &[]),
            ],
        }
    }

    fn selected(query: &str) -> Vec<String> {
        let selection = Selection::from_query(&Query::parse(query).unwrap()).unwrap();
        let stats = selection.apply(sample());
        stats
            .scalars
            .into_iter()
            .map(|s| s.name)
            .chain(stats.texts.into_iter().map(|(name, _)| name))
            .chain(stats.histograms.into_iter().map(|h| h.name))
            .collect()
    }

    #[test]
    fn text_lines() {
        assert_eq!(
            text(&sample()),
            "cluster.a.upstream_cx_active: 2\n\
             cluster.a.upstream_cx_total: 0\n\
             server.uptime: 7\n\
             cluster_manager.cds.version_text: \"v3\"\n\
             cluster.a.upstream_rq_time: P0(nan,200) P25(nan,202.5) P50(nan,205) \
             P75(nan,207.5) P90(nan,209) P95(nan,209.5) P99(nan,209.9) P99.5(nan,209.95) \
             P99.9(nan,209.99) P100(nan,210)\n\
             cluster.b.upstream_rq_time: No recorded values\n"
        );
        let both = Stats {
            scalars: vec![],
            texts: vec![],
            histograms: vec![histogram("h", &[1_500], &[1_500, 3])],
        };
        assert!(
            text(&both).starts_with("h: P0(1.5,0.003) P25(1.525,0.0035) P50(1.55,0.004) "),
            "{}",
            text(&both)
        );
    }

    #[test]
    fn json_shape() {
        let mut stats = sample();
        stats.scalars.truncate(1);
        stats.histograms.truncate(1);
        let value = json(&stats);
        assert_eq!(
            value["stats"][0],
            serde_json::json!({"name": "cluster.a.upstream_cx_active", "value": 2})
        );
        assert_eq!(
            value["stats"][1],
            serde_json::json!({"name": "cluster_manager.cds.version_text", "value": "v3"})
        );
        let histograms = &value["stats"][2]["histograms"];
        assert_eq!(
            histograms["supported_quantiles"],
            serde_json::json!([0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0])
        );
        let computed = &histograms["computed_quantiles"][0];
        assert_eq!(computed["name"], "cluster.a.upstream_rq_time");
        assert_eq!(
            computed["values"][1],
            serde_json::json!({"cumulative": 202.5, "interval": null})
        );
        assert_eq!(computed["values"].as_array().unwrap().len(), 10);
        // No histograms: no histograms entry.
        stats.histograms.clear();
        assert_eq!(json(&stats)["stats"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn filter_usedonly_and_type() {
        assert_eq!(
            selected("filter=%5Ecluster%5C.a"),
            [
                "cluster.a.upstream_cx_active",
                "cluster.a.upstream_cx_total",
                "cluster.a.upstream_rq_time"
            ]
        );
        assert_eq!(
            selected("usedonly"),
            [
                "cluster.a.upstream_cx_active",
                "server.uptime",
                "cluster_manager.cds.version_text",
                "cluster.a.upstream_rq_time"
            ]
        );
        assert_eq!(selected("type=Counters"), ["cluster.a.upstream_cx_total"]);
        assert_eq!(
            selected("type=Gauges&filter=cx"),
            ["cluster.a.upstream_cx_active"]
        );
        assert_eq!(
            selected("type=Histograms"),
            ["cluster.a.upstream_rq_time", "cluster.b.upstream_rq_time"]
        );
        assert_eq!(
            selected("type=Histograms&usedonly"),
            ["cluster.a.upstream_rq_time"]
        );
        assert_eq!(
            selected("type=TextReadouts"),
            ["cluster_manager.cds.version_text"]
        );
        assert_eq!(selected("").len(), 6);
    }

    #[test]
    fn bad_filter_and_type_are_rejected() {
        let err = Selection::from_query(&Query::parse("filter=(").unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("Invalid regex"), "{err}");
        let err = Selection::from_query(&Query::parse("type=Bogus").unwrap()).unwrap_err();
        assert!(matches!(err, StatsQueryError::Type(_)));
    }
}
