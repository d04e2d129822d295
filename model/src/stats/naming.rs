//! Stat naming as the bootstrap's `stats_config` shapes it: tag extractors (the fixed tags,
//! then the configured `stats_tags`, then Envoy's defaults) turning a stat's name into a
//! tag-extracted name and labels for Prometheus, and the `stats_matcher` choosing which stats
//! the admin interface shows.
//!
//! Envoy's rules: every extractor is tried on the full name; one that matches gives its tag
//! the value of its regex's second group (else its first) and cuts its first group out of the
//! name; the cuts are made once all have run. Tag regexes are ECMAScript in Envoy (lookahead
//! included), so `fancy_regex` runs them.
use crate::matchers::StringMatcher;

/// Envoy's default tag extractors for the scopes shardproxy emits: Envoy's tag name
/// (`envoy.<tag>`, rendered `envoy_<tag>`) and its regex.
const DEFAULT_EXTRACTORS: &[(&str, &str)] = &[
    // `*_rq_<code>`: `upstream_rq_200` → `upstream_rq{envoy_response_code="200"}`.
    ("envoy.response_code", r"_rq(_(\d{3}))$"),
    // `*_rq_<class>xx`: `upstream_rq_2xx` → `upstream_rq_xx{envoy_response_code_class="2"}`.
    ("envoy.response_code_class", r"_rq_((\d))xx$"),
    // `cluster.<name>.<stat>`: the cluster name is one dot-free token, as in Envoy (configs
    // whose cluster names contain dots add their own `stats_tags`, as Istio's do).
    ("envoy.cluster_name", r"^cluster\.(([^.]+)\.)"),
    // `listener.<address>.<stat>`: only an address (`0.0.0.0_80`, `[__1]_80`) is a tag.
    (
        "envoy.listener_address",
        r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
    ),
    // `http.<stat_prefix>.<stat>`: the prefix is one token.
    ("envoy.http_conn_manager_prefix", r"^http\.(([^.]+)\.)"),
    // `tcp.<stat_prefix>.<stat>`: the prefix may contain dots; the stat is the last token.
    ("envoy.tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
];

/// One tag extractor: its tag name and regex.
#[derive(Debug)]
pub struct TagExtractor {
    pub name: Box<str>,
    regex: fancy_regex::Regex,
}

impl TagExtractor {
    /// An extractor; the regex needs at least one group (the part cut from the name).
    pub fn new(name: &str, regex: &str) -> Result<Self, String> {
        let regex = fancy_regex::Regex::new(regex).map_err(|e| e.to_string())?;
        if regex.captures_len() < 2 {
            return Err("the regex needs a capture group: the part cut from the name".into());
        }
        Ok(Self {
            name: name.into(),
            regex,
        })
    }
}

/// Which stats are shown (`stats_matcher`).
#[derive(Debug, Default)]
pub enum StatsMatcher {
    #[default]
    All,
    /// `reject_all: true`.
    None,
    /// `inclusion_list`: only the names one of these matches.
    Include(Vec<StringMatcher>),
    /// `exclusion_list`: all but the names one of these matches.
    Exclude(Vec<StringMatcher>),
}

/// Tags and the matcher, from `stats_config`.
#[derive(Debug)]
pub struct StatNaming {
    /// `stats_tags` with a `fixed_value`: on every stat.
    fixed: Vec<(Box<str>, Box<str>)>,
    /// `stats_tags` with a regex, then (with `use_all_default_tags`) Envoy's defaults whose
    /// names no configured tag takes.
    extractors: Vec<TagExtractor>,
    matcher: StatsMatcher,
}

impl Default for StatNaming {
    /// Without `stats_config`: Envoy's default tags, every stat shown.
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new(), true, StatsMatcher::All)
    }
}

impl StatNaming {
    pub fn new(
        fixed: Vec<(Box<str>, Box<str>)>,
        mut extractors: Vec<TagExtractor>,
        use_all_default_tags: bool,
        matcher: StatsMatcher,
    ) -> Self {
        if use_all_default_tags {
            let taken = |name: &str| {
                extractors.iter().any(|e| &*e.name == name) || fixed.iter().any(|f| &*f.0 == name)
            };
            let defaults: Vec<_> = DEFAULT_EXTRACTORS
                .iter()
                .filter(|(name, _)| !taken(name))
                .map(|(name, re)| TagExtractor::new(name, re).expect("default tag regex compiles"))
                .collect();
            extractors.extend(defaults);
        }
        Self {
            fixed,
            extractors,
            matcher,
        }
    }

    /// Whether the admin interface shows the stat `name`.
    pub fn shows(&self, name: &str) -> bool {
        let any = |list: &[StringMatcher]| list.iter().any(|m| m.matches(name.as_bytes()));
        match &self.matcher {
            StatsMatcher::All => true,
            StatsMatcher::None => false,
            StatsMatcher::Include(list) => any(list),
            StatsMatcher::Exclude(list) => !any(list),
        }
    }

    /// The tag-extracted name and the tags (`(tag name, value)`, fixed ones first).
    pub fn extract_tags<'s>(&'s self, name: &str) -> (String, Vec<(&'s str, String)>) {
        let mut tags: Vec<(&str, String)> = self
            .fixed
            .iter()
            .map(|(tag, value)| (&**tag, value.to_string()))
            .collect();
        let mut cut = vec![false; name.len()];
        for extractor in &self.extractors {
            let Ok(Some(caps)) = extractor.regex.captures(name) else {
                continue;
            };
            let Some(removed) = caps.get(1) else {
                continue;
            };
            let value = caps.get(2).unwrap_or(removed);
            tags.push((&extractor.name, value.as_str().to_string()));
            cut[removed.range()].fill(true);
        }
        let kept = name
            .char_indices()
            .filter(|(i, _)| !cut[*i])
            .map(|(_, c)| c)
            .collect();
        (kept, tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::StringPattern;

    fn defaults(name: &str) -> (String, Vec<(String, String)>) {
        let naming = StatNaming::default();
        let (name, tags) = naming.extract_tags(name);
        (
            name,
            tags.into_iter().map(|(t, v)| (t.to_string(), v)).collect(),
        )
    }

    fn tag(t: &str, v: &str) -> (String, String) {
        (t.to_string(), v.to_string())
    }

    #[test]
    fn envoys_default_tags() {
        assert_eq!(
            defaults("cluster.backend.upstream_rq_200"),
            (
                "cluster.upstream_rq".into(),
                vec![
                    tag("envoy.response_code", "200"),
                    tag("envoy.cluster_name", "backend")
                ]
            )
        );
        assert_eq!(
            defaults("listener.0.0.0.0_8080.downstream_cx_active"),
            (
                "listener.downstream_cx_active".into(),
                vec![tag("envoy.listener_address", "0.0.0.0_8080")]
            )
        );
        assert_eq!(
            defaults("tcp.ingress.tcp.downstream_cx_total"),
            (
                "tcp.downstream_cx_total".into(),
                vec![tag("envoy.tcp_prefix", "ingress.tcp")]
            )
        );
        assert_eq!(
            defaults("listener.[__1]_80.downstream_cx_total").1,
            vec![tag("envoy.listener_address", "[__1]_80")]
        );
        // Not an address: no tag, the prefix stays in the name (as in Envoy).
        assert_eq!(defaults("listener.admin.downstream_cx_total").1, vec![]);
        assert_eq!(defaults("server.uptime"), ("server.uptime".into(), vec![]));
    }

    /// Istio's bootstrap tags: cluster names end with `;` (its `alt_stat_name`), a lookahead,
    /// POSIX classes in brackets; no default tags.
    #[test]
    fn istios_tags_with_its_alt_stat_names() {
        let extractors = vec![
            TagExtractor::new("cluster_name", r"^cluster(\.(.+);)").unwrap(),
            TagExtractor::new("response_code", r"_rq(_(\d{3}))$").unwrap(),
            TagExtractor::new(
                "http_conn_manager_listener_prefix",
                r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
            )
            .unwrap(),
        ];
        let fixed = vec![("mesh".into(), "m1".into())];
        let naming = StatNaming::new(fixed, extractors, false, StatsMatcher::All);
        let (name, tags) = naming.extract_tags(
            "cluster.outbound|9080||reviews.default.svc.cluster.local;.upstream_rq_503",
        );
        assert_eq!(name, "cluster.upstream_rq");
        assert_eq!(
            tags,
            vec![
                ("mesh", "m1".to_string()),
                (
                    "cluster_name",
                    "outbound|9080||reviews.default.svc.cluster.local".to_string()
                ),
                ("response_code", "503".to_string()),
            ]
        );
        let (name, tags) =
            naming.extract_tags("listener.0.0.0.0_15006.http.10.1.2.3_9080.downstream_rq_total");
        assert_eq!(name, "listener.0.0.0.0_15006.http.downstream_rq_total");
        assert_eq!(
            tags[1],
            ("http_conn_manager_listener_prefix", "10.1.2.3_9080".into())
        );
        // Without defaults, a cluster name without `;` is no tag.
        assert_eq!(
            naming
                .extract_tags("cluster.xds-grpc.upstream_cx_total")
                .1
                .len(),
            1
        );
    }

    #[test]
    fn configured_tags_replace_defaults_of_the_same_name() {
        let own = TagExtractor::new("envoy.cluster_name", r"^cluster\.((.+?)\.)upstream").unwrap();
        let naming = StatNaming::new(vec![], vec![own], true, StatsMatcher::All);
        let (name, tags) = naming.extract_tags("cluster.a.b.upstream_cx_total");
        assert_eq!(name, "cluster.upstream_cx_total");
        assert_eq!(tags, vec![("envoy.cluster_name", "a.b".to_string())]);
        assert!(TagExtractor::new("x", "no_group").is_err());
        assert!(TagExtractor::new("x", "(").is_err());
    }

    #[test]
    fn matchers_choose_what_is_shown() {
        let prefix =
            |p: &str| StringMatcher::new(StringPattern::Prefix(p.as_bytes().into()), false);
        let naming = |m| StatNaming::new(vec![], vec![], true, m);
        let include = naming(StatsMatcher::Include(vec![
            prefix("server"),
            prefix("cluster_manager"),
        ]));
        assert!(include.shows("server.live") && include.shows("cluster_manager.active_clusters"));
        assert!(!include.shows("cluster.x.upstream_rq_total"));
        let exclude = naming(StatsMatcher::Exclude(vec![prefix("server")]));
        assert!(!exclude.shows("server.live") && exclude.shows("http.x.rq_total"));
        assert!(!naming(StatsMatcher::None).shows("server.live"));
        assert!(naming(StatsMatcher::All).shows("anything"));
    }
}
