//! `/stats/prometheus`: Prometheus text exposition with Envoy's naming: default tag extraction,
//! an `envoy_` prefix, names sanitised to `[a-zA-Z0-9_]`, one `# TYPE` line per family.
use std::{collections::BTreeMap, fmt::Write, sync::OnceLock};

use regex::Regex;

use crate::stats::{StatKind, StatValue};

/// Envoy's default tag extractors for the scopes we emit: tag name and a regex whose group 1
/// is cut out of the stat name and whose group 2 is the tag value. Envoy runs them in order
/// over the name, each on what the previous ones left.
const TAG_EXTRACTORS: &[(&str, &str)] = &[
    // `cluster.<name>.<stat>`: the cluster name is one dot-free token, as in Envoy (configs
    // whose cluster names contain dots add their own `stats_tags`, which we do not read yet).
    ("envoy_cluster_name", r"^cluster\.(([^.]+)\.)"),
    // `listener.<address>.<stat>`: only an address (`0.0.0.0_80`, `[__1]_80`) is a tag.
    (
        "envoy_listener_address",
        r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
    ),
    // `tcp.<stat_prefix>.<stat>`: the prefix may contain dots; the stat is the last token.
    ("envoy_tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
];

fn extractors() -> &'static [(&'static str, Regex)] {
    static COMPILED: OnceLock<Vec<(&str, Regex)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        TAG_EXTRACTORS
            .iter()
            .map(|(tag, re)| (*tag, Regex::new(re).expect("tag extractor regex compiles")))
            .collect()
    })
}

/// Splits a stat name into its tag-extracted name and its tags.
pub fn extract_tags(name: &str) -> (String, Vec<(&'static str, String)>) {
    let mut name = name.to_string();
    let mut tags = Vec::new();
    for (tag, re) in extractors() {
        let Some(caps) = re.captures(&name) else {
            continue;
        };
        let (Some(cut), Some(value)) = (caps.get(1), caps.get(2)) else {
            continue;
        };
        tags.push((*tag, value.as_str().to_string()));
        name.replace_range(cut.range(), "");
    }
    (name, tags)
}

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

/// Renders stats as Prometheus text: counters then gauges, families in name order, each
/// family's series in label order.
pub fn render(stats: &[StatValue]) -> String {
    let mut out = String::new();
    for (kind, type_name) in [(StatKind::Counter, "counter"), (StatKind::Gauge, "gauge")] {
        let mut families: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for stat in stats.iter().filter(|s| s.kind == kind) {
            let (name, tags) = extract_tags(&stat.name);
            let labels: Vec<String> = tags
                .iter()
                .map(|(tag, value)| format!("{tag}=\"{}\"", escape_value(value)))
                .collect();
            families
                .entry(format!("envoy_{}", sanitize_name(&name)))
                .or_default()
                .push((labels.join(","), stat.value));
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(name: &str) -> (String, Vec<(&'static str, String)>) {
        extract_tags(name)
    }

    #[test]
    fn extraction_table() {
        assert_eq!(
            tags("cluster.backend.upstream_cx_total"),
            (
                "cluster.upstream_cx_total".into(),
                vec![("envoy_cluster_name", "backend".into())]
            )
        );
        assert_eq!(
            tags("listener.0.0.0.0_8080.downstream_cx_active"),
            (
                "listener.downstream_cx_active".into(),
                vec![("envoy_listener_address", "0.0.0.0_8080".into())]
            )
        );
        assert_eq!(
            tags("listener.[__1]_80.downstream_cx_total").1,
            vec![("envoy_listener_address", "[__1]_80".into())]
        );
        assert_eq!(
            tags("tcp.ingress.tcp.downstream_cx_total"),
            (
                "tcp.downstream_cx_total".into(),
                vec![("envoy_tcp_prefix", "ingress.tcp".into())]
            )
        );
        // Not an address: no tag, the prefix stays in the name (as in Envoy).
        assert_eq!(tags("listener.admin.downstream_cx_total").1, vec![]);
        assert_eq!(tags("server.uptime"), ("server.uptime".into(), vec![]));
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
            render(&stats),
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
    fn names_are_sanitised() {
        assert_eq!(sanitize_name("a.b-c:d"), "a_b_c_d");
    }
}
