//! `/stats/prometheus`: Prometheus text exposition with Envoy's naming: tags extracted as
//! `stats_config` says (`model::stats::naming`), an `envoy_` prefix, names and tag names
//! sanitised to `[a-zA-Z0-9_]`, one `# TYPE` line per family;
//! histograms as cumulative `_bucket{le=..}` series on Envoy's default bounds, `_sum`, `_count`.
use std::{collections::BTreeMap, fmt::Write};

use model::stats::{
    istio::{Labeled, LabeledValue},
    naming::StatNaming,
    HistogramSnapshot, HistogramValue, StatKind, StatValue, PROMETHEUS_BUCKETS_MS,
};

/// Envoy's metric-name sanitising: every character outside `[a-zA-Z0-9_]` becomes `_`.
fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Label values escape `\`, `"` and newline.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A family name (`envoy_` + the sanitised tag-extracted name) and the series' labels.
fn family_and_labels(naming: &StatNaming, name: &str) -> (String, String) {
    let (name, tags) = naming.extract_tags(name);
    let labels: Vec<String> = tags
        .iter()
        .map(|(tag, value)| format!("{}=\"{}\"", sanitize_name(tag), escape_value(value)))
        .collect();
    (format!("envoy_{}", sanitize_name(&name)), labels.join(","))
}

/// Renders stats as Prometheus text: counters, gauges, then histograms; families in name
/// order, each family's series in label order.
pub fn render(naming: &StatNaming, stats: &[StatValue], histograms: &[HistogramValue]) -> String {
    let mut out = String::new();
    for (kind, type_name) in [(StatKind::Counter, "counter"), (StatKind::Gauge, "gauge")] {
        let mut families: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for stat in stats.iter().filter(|s| s.kind == kind) {
            let (family, labels) = family_and_labels(naming, &stat.name);
            families
                .entry(family)
                .or_default()
                .push((labels, stat.value));
        }
        for (family, mut series) in families {
            series.sort();
            let _ = writeln!(out, "# TYPE {family} {type_name}");
            for (labels, value) in series {
                if labels.is_empty() {
                    let _ = writeln!(out, "{family} {value}");
                } else {
                    let _ = writeln!(out, "{family}{{{labels}}} {value}");
                }
            }
            out.push('\n');
        }
    }
    let mut families: BTreeMap<String, Vec<(String, &HistogramSnapshot)>> = BTreeMap::new();
    for histogram in histograms {
        let (family, labels) = family_and_labels(naming, &histogram.name);
        families
            .entry(family)
            .or_default()
            .push((labels, &histogram.cumulative));
    }
    for (family, mut series) in families {
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = writeln!(out, "# TYPE {family} histogram");
        for (labels, snapshot) in series {
            render_histogram(&mut out, &family, &labels, snapshot);
        }
        out.push('\n');
    }
    out
}

/// Appends Istio's metrics: families named as Istio names them (no `envoy_` prefix), each
/// series with Istio's labels in Istio's order.
pub fn render_labeled(series: &[LabeledValue], out: &mut String) {
    let mut family = "";
    for s in series {
        let kind = match s.value {
            Labeled::Counter(_) => "counter",
            Labeled::Histogram(_) => "histogram",
        };
        if s.family != family {
            if !family.is_empty() {
                out.push('\n');
            }
            family = s.family;
            let _ = writeln!(out, "# TYPE {family} {kind}");
        }
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(name, value)| format!("{name}=\"{}\"", escape_value(value)))
            .collect();
        let labels = labels.join(",");
        match &s.value {
            Labeled::Counter(n) => {
                let _ = writeln!(out, "{family}{{{labels}}} {n}");
            }
            Labeled::Histogram(h) => render_histogram(out, family, &labels, h),
        }
    }
    if !family.is_empty() {
        out.push('\n');
    }
}

/// One histogram series: a cumulative count per default bound, `+Inf`, `_sum` (ms), `_count`.
fn render_histogram(out: &mut String, family: &str, labels: &str, snapshot: &HistogramSnapshot) {
    let bucket_labels = match labels.is_empty() {
        true => String::new(),
        false => format!("{labels},"),
    };
    for bound in PROMETHEUS_BUCKETS_MS {
        let count = snapshot.count_below_ms(bound);
        let _ = writeln!(
            out,
            "{family}_bucket{{{bucket_labels}le=\"{bound}\"}} {count}"
        );
    }
    let count = snapshot.count();
    let _ = writeln!(out, "{family}_bucket{{{bucket_labels}le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{family}_sum{{{labels}}} {}", snapshot.sum_ms());
    let _ = writeln!(out, "{family}_count{{{labels}}} {count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(stats: &[StatValue], histograms: &[HistogramValue]) -> String {
        super::render(&StatNaming::default(), stats, histograms)
    }

    fn family_and_labels(name: &str) -> (String, String) {
        super::family_and_labels(&StatNaming::default(), name)
    }

    #[test]
    fn renders_families_with_labels_and_escaping() {
        let stats = vec![
            StatValue {
                name: "cluster.b.upstream_cx_total".into(),
                kind: StatKind::Counter,
                value: 2,
            },
            StatValue {
                name: "cluster.a.upstream_cx_total".into(),
                kind: StatKind::Counter,
                value: 1,
            },
            StatValue {
                name: "server.live".into(),
                kind: StatKind::Gauge,
                value: 1,
            },
            StatValue {
                name: "cluster.q\"\\x\ny.upstream_cx_total".into(),
                kind: StatKind::Counter,
                value: 0,
            },
            StatValue {
                name: "tcp.in.idle_timeout".into(),
                kind: StatKind::Counter,
                value: 3,
            },
        ];
        assert_eq!(
            render(&stats, &[]),
            "# TYPE envoy_cluster_upstream_cx_total counter\n\
             envoy_cluster_upstream_cx_total{envoy_cluster_name=\"a\"} 1\n\
             envoy_cluster_upstream_cx_total{envoy_cluster_name=\"b\"} 2\n\
             envoy_cluster_upstream_cx_total{envoy_cluster_name=\"q\\\"\\\\x\\ny\"} 0\n\
             \n\
             # TYPE envoy_tcp_idle_timeout counter\n\
             envoy_tcp_idle_timeout{envoy_tcp_prefix=\"in\"} 3\n\
             \n\
             # TYPE envoy_server_live gauge\n\
             envoy_server_live 1\n\
             \n"
        );
    }

    #[test]
    fn response_codes_and_http_prefix_are_tags_as_in_envoy() {
        let labelled = |name: &str| family_and_labels(name);
        assert_eq!(
            labelled("cluster.foo.upstream_rq_2xx"),
            (
                "envoy_cluster_upstream_rq_xx".into(),
                "envoy_response_code_class=\"2\",envoy_cluster_name=\"foo\"".into()
            )
        );
        assert_eq!(
            labelled("http.ingress_http.downstream_rq_5xx"),
            (
                "envoy_http_downstream_rq_xx".into(),
                "envoy_response_code_class=\"5\",envoy_http_conn_manager_prefix=\"ingress_http\""
                    .into()
            )
        );
        assert_eq!(
            labelled("cluster.foo.upstream_rq_503"),
            (
                "envoy_cluster_upstream_rq".into(),
                "envoy_response_code=\"503\",envoy_cluster_name=\"foo\"".into()
            )
        );
        assert_eq!(
            labelled("http.in.downstream_rq_time"),
            (
                "envoy_http_downstream_rq_time".into(),
                "envoy_http_conn_manager_prefix=\"in\"".into()
            )
        );
    }

    #[test]
    fn per_code_counters_render_as_one_family_as_in_envoy() {
        let mut registry = model::stats::StatsRegistry::new(1);
        let b = registry.cluster("b");
        let a = registry.cluster("a");
        for (cells, status) in [(&b, 200), (&a, 404), (&a, 200), (&a, 200)] {
            cells.shard(0).record_status(status);
        }
        let out = render(&registry.read_all(), &[]);
        let family: Vec<&str> = out
            .split("\n\n")
            .find(|f| f.starts_with("# TYPE envoy_cluster_upstream_rq counter"))
            .expect("the per-code family")
            .lines()
            .collect();
        assert_eq!(
            family[1..],
            [
                "envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"a\"} 2",
                "envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"b\"} 1",
                "envoy_cluster_upstream_rq{envoy_response_code=\"404\",envoy_cluster_name=\"a\"} 1",
            ]
        );
        assert!(out.contains(
            "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"a\"} 2\n"
        ));
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let cell = model::stats::HistogramCell::default();
        for micros in [300, 2_000, 2_000, 40_000_000] {
            model::stats::record(&cell, micros);
        }
        let used = HistogramValue::cumulative(
            "cluster.b.upstream_rq_time".into(),
            HistogramSnapshot::merge([&cell]),
        );
        let unused =
            HistogramValue::cumulative("cluster.a.upstream_rq_time".into(), Default::default());
        let plain = HistogramValue::cumulative("h".into(), HistogramSnapshot::merge([&cell]));
        let out = render(&[], &[used, unused, plain]);
        let family: Vec<&str> = out.lines().take_while(|l| !l.is_empty()).collect();
        assert_eq!(family[0], "# TYPE envoy_cluster_upstream_rq_time histogram");
        // a (unused) first: all zero.
        assert_eq!(
            family[1],
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"a\",le=\"0.5\"} 0"
        );
        assert_eq!(
            family[22],
            "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"a\"} 0"
        );
        let b: Vec<&str> = family[23..].to_vec();
        let expected_counts = [1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4];
        for ((line, bound), count) in b.iter().zip(PROMETHEUS_BUCKETS_MS).zip(expected_counts) {
            assert_eq!(
                *line,
                format!(
                    "envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"b\",le=\"{bound}\"}} {count}"
                )
            );
        }
        assert_eq!(
            b[8],
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"b\",le=\"500\"} 3"
        );
        assert_eq!(
            b[18],
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"b\",le=\"3600000\"} 4"
        );
        assert_eq!(
            &b[19..],
            [
                "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"b\",le=\"+Inf\"} 4",
                "envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"b\"} 40004.3",
                "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"b\"} 4",
            ]
        );
        // Without tags: `le` alone, and `_sum{}` as Envoy prints it.
        assert!(out.contains("\nenvoy_h_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("\nenvoy_h_sum{} 40004.3\n"), "{out}");
        assert!(out.ends_with("envoy_h_count{} 4\n\n"), "{out}");
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitize_name("a.b-c:d"), "a_b_c_d");
    }
}
