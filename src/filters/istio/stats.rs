//! Istio's `istio.stats`: the label values of an HTTP exchange or a TCP connection, derived
//! as Istio's stats filter derives them (which side reports, which peer, Istio's fallbacks),
//! and the series they are recorded in.
use std::sync::Arc;

use model::{
    access_log::ResponseFlags,
    istio::{LocalWorkload, StatsConfig},
    metadata::Metadata,
    stats::{
        inc,
        istio::{record_whole, SeriesCells},
    },
    tls_info::UriSans,
};

use super::peer::{Peer, CANONICAL_NAME, CANONICAL_REVISION};

const UNKNOWN: &str = "unknown";
const LATEST: &str = "latest";
/// Clusters that name the destination service themselves.
const SPECIAL_CLUSTERS: [&str; 5] = [
    "BlackHoleCluster",
    "PassthroughCluster",
    "InboundPassthroughCluster",
    "InboundPassthroughClusterIpv4",
    "InboundPassthroughClusterIpv6",
];

/// Which side reports: a sidecar's outbound (client) or inbound (server) listener, or a
/// waypoint (`reporter: SERVER_GATEWAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Client,
    Server,
    Waypoint,
}

impl Reporter {
    /// Istio's rule: `SERVER_GATEWAY` is a waypoint; else an `INBOUND` listener is the server
    /// and any other the client.
    pub fn of(config: &StatsConfig, inbound_listener: bool) -> Self {
        match (config.waypoint, inbound_listener) {
            (true, _) => Reporter::Waypoint,
            (false, true) => Reporter::Server,
            (false, false) => Reporter::Client,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Reporter::Client => "source",
            Reporter::Server => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }
}

/// What an exchange or connection tells about its two sides.
#[derive(Debug, Default)]
pub struct Sides<'a> {
    /// The downstream workload (metadata exchange), the upstream one.
    pub downstream: Option<&'a Peer>,
    pub upstream: Option<&'a Peer>,
    /// The first URI SAN of the peer's certificate and of this proxy's: on a server, the
    /// downstream connection's (`istio_authn`'s filter state first); on a client, the
    /// upstream connection's. Empty when none.
    pub peer_principal: &'a str,
    pub local_principal: &'a str,
    /// The request's `Host` (HTTP; empty for TCP).
    pub host: &'a str,
    /// The route's name and the upstream cluster's name and metadata.
    pub route_name: &'a str,
    pub cluster: Option<(&'a str, &'a Metadata)>,
}

/// The 25 label values, in `model::stats::istio::LABELS` order.
pub type Values<'a> = [&'a str; 25];

/// Fills `reporter` and the source and destination labels (the first 20).
pub fn peer_labels<'a>(
    reporter: Reporter,
    config: &'a StatsConfig,
    sides: &Sides<'a>,
    out: &mut Values<'a>,
) {
    let local: &'a LocalWorkload = &config.local;
    let (host, host_name) = service(config, sides);
    let peer = match reporter {
        Reporter::Client => sides.upstream,
        Reporter::Server | Reporter::Waypoint => sides.downstream,
    };
    let peer_namespace = namespace_of(sides.peer_principal)
        .or(peer.map(|p| &*p.namespace))
        .filter(|n| !n.is_empty());
    let known = |v: Option<&'a str>| v.filter(|v| !v.is_empty()).unwrap_or(UNKNOWN);
    let label = |p: Option<&'a Peer>, key: &str| known(p.and_then(|p| p.label(key)));
    let revision = |p: Option<&'a Peer>| {
        p.and_then(|p| p.label(CANONICAL_REVISION))
            .filter(|v| !v.is_empty())
            .unwrap_or(LATEST)
    };
    let workload = |p: Option<&'a Peer>| known(p.map(|p| &*p.workload));
    let cluster = |p: Option<&'a Peer>| known(p.map(|p| &*p.cluster));
    out[0] = reporter.label();
    // The workload this proxy runs for, as one side.
    let this = [
        &*local.workload,
        &*local.canonical_name,
        &*local.canonical_revision,
        &*local.namespace,
    ];
    match reporter {
        Reporter::Client => {
            out[1..5].copy_from_slice(&this);
            out[5] = known(Some(sides.local_principal));
            out[6] = &local.app;
            out[7] = &local.version;
            out[8] = &local.cluster;
            out[9] = workload(peer);
            out[10] = known(peer_namespace);
            out[11] = known(Some(sides.peer_principal));
            out[12] = label(peer, "app");
            out[13] = label(peer, "version");
            out[14] = known(Some(host));
            out[15] = label(peer, CANONICAL_NAME);
            out[16] = revision(peer);
            out[17] = known(Some(host_name));
            out[18] = known(peer_namespace);
            out[19] = cluster(peer);
        }
        Reporter::Server | Reporter::Waypoint => {
            out[1] = workload(peer);
            out[2] = label(peer, CANONICAL_NAME);
            out[3] = revision(peer);
            out[4] = known(peer_namespace);
            out[5] = known(Some(sides.peer_principal));
            out[6] = label(peer, "app");
            out[7] = label(peer, "version");
            out[8] = cluster(peer);
            if reporter == Reporter::Server {
                out[9] = &local.workload;
                out[10] = &local.namespace;
                out[11] = known(Some(sides.local_principal));
                out[12] = &local.app;
                out[13] = &local.version;
                out[14] = Some(host)
                    .filter(|h| !h.is_empty())
                    .unwrap_or(&local.canonical_name);
                out[15] = &local.canonical_name;
                out[16] = &local.canonical_revision;
                out[17] = Some(host_name)
                    .filter(|h| !h.is_empty())
                    .unwrap_or(&local.canonical_name);
            } else {
                // A waypoint's destination is the endpoint it sent to.
                let endpoint = sides.upstream;
                let canonical = label(endpoint, CANONICAL_NAME);
                out[9] = workload(endpoint);
                out[10] = known(endpoint.map(|p| &*p.namespace));
                // Istio reads the endpoint's identity from EDS metadata, not kept here.
                out[11] = UNKNOWN;
                out[12] = label(endpoint, "app");
                out[13] = label(endpoint, "version");
                out[14] = Some(host).filter(|h| !h.is_empty()).unwrap_or(canonical);
                out[15] = canonical;
                out[16] = known(endpoint.and_then(|p| p.label(CANONICAL_REVISION)));
                out[17] = Some(host_name)
                    .filter(|h| !h.is_empty())
                    .unwrap_or(canonical);
            }
            out[18] = &local.namespace;
            out[19] = &local.cluster;
        }
    }
}

/// The destination service's host and name: the `Host` header unless
/// `disable_host_header_fallback`, replaced by Istio's catch-all routes' and clusters' names,
/// else by the cluster's `istio.services[0]` (`host`, and `name` or the host's first label).
fn service<'a>(config: &StatsConfig, sides: &Sides<'a>) -> (&'a str, &'a str) {
    let mut host = match config.disable_host_header_fallback {
        true => "",
        false => sides.host,
    };
    let mut name = host;
    match sides.route_name {
        "block_all" => return (host, "BlackHoleCluster"),
        "allow_any" => return (host, "PassthroughCluster"),
        _ => {}
    }
    let Some((cluster, metadata)) = sides.cluster else {
        return (host, name);
    };
    if SPECIAL_CLUSTERS.contains(&cluster) {
        return (host, cluster);
    }
    let Some(service) = metadata
        .get("istio", &["services"])
        .and_then(|s| s.as_array()?.first())
    else {
        return (host, name);
    };
    if let Some(h) = service.get("host").and_then(|h| h.as_str()) {
        host = h;
    }
    name = match service.get("name").and_then(|n| n.as_str()) {
        Some(n) => n,
        None => host.split('.').next().unwrap_or(host),
    };
    (host, name)
}

/// The namespace in a SPIFFE id (`…/ns/<namespace>/sa/…`).
/// A client's principals (peer, local): the first URI SANs of the upstream connection's
/// certificates, as Istio reads them; empty without TLS.
pub fn client_principals(sans: Option<&UriSans>) -> (&str, &str) {
    match sans {
        Some(sans) => (
            sans.peer.as_deref().unwrap_or(""),
            sans.local.as_deref().unwrap_or(""),
        ),
        None => ("", ""),
    }
}

fn namespace_of(principal: &str) -> Option<&str> {
    let start = principal.find("/ns/")? + "/ns/".len();
    let rest = &principal[start..];
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Writes `n` in decimal into `buf`.
fn decimal(n: u32, buf: &mut [u8; 10]) -> &str {
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).expect("digits")
}

/// How an HTTP exchange ended, as its labels and values read it.
pub struct HttpOutcome {
    pub grpc: bool,
    pub status: u16,
    /// The gRPC status (gRPC requests).
    pub grpc_status: Option<u32>,
    pub flags: ResponseFlags,
    /// Whether both sides presented certificates (server side); `None` on a client.
    pub mutual_tls: Option<bool>,
    pub duration_ms: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// Records one HTTP exchange's `istio_requests_total` and histograms.
pub fn record_http(
    config: &StatsConfig,
    shard: usize,
    reporter: Reporter,
    sides: &Sides<'_>,
    outcome: &HttpOutcome,
) {
    let mut values: Values = [""; 25];
    peer_labels(reporter, config, sides, &mut values);
    let (mut code, mut grpc_code) = ([0; 10], [0; 10]);
    values[20] = if outcome.grpc { "grpc" } else { "http" };
    values[21] = decimal(outcome.status.into(), &mut code);
    values[22] = match outcome.grpc_status {
        Some(status) if outcome.grpc => decimal(status, &mut grpc_code),
        _ => "",
    };
    let mut flags = Vec::new();
    values[23] = flags_text(outcome.flags, &mut flags);
    values[24] = security(outcome.mutual_tls);
    let series = config
        .metrics
        .series(shard, &config.overrides, false, &values);
    inc(&series.requests);
    record_whole(&series.duration, outcome.duration_ms);
    record_whole(&series.request_bytes, outcome.request_bytes);
    record_whole(&series.response_bytes, outcome.response_bytes);
}

/// The series of a TCP connection, with `istio_tcp_connections_opened_total` counted: its
/// byte counters are added to as bytes are relayed, and `closed` counted at its end.
pub fn open_tcp(
    config: &StatsConfig,
    shard: usize,
    reporter: Reporter,
    sides: &Sides<'_>,
    flags: ResponseFlags,
    mutual_tls: Option<bool>,
) -> Arc<SeriesCells> {
    let mut values: Values = [""; 25];
    peer_labels(reporter, config, sides, &mut values);
    values[20] = "tcp";
    let mut text = Vec::new();
    values[23] = flags_text(flags, &mut text);
    values[24] = security(mutual_tls);
    let series = config
        .metrics
        .series(shard, &config.overrides, true, &values);
    inc(&series.opened);
    series
}

/// Envoy's short response flags (`-` for none).
fn flags_text(flags: ResponseFlags, buf: &mut Vec<u8>) -> &str {
    if flags.is_empty() {
        return "-";
    }
    flags.render(buf);
    std::str::from_utf8(buf).unwrap_or("-")
}

fn security(mutual_tls: Option<bool>) -> &'static str {
    match mutual_tls {
        Some(true) => "mutual_tls",
        Some(false) => "none",
        None => UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use model::stats::istio::{IstioMetrics, Labeled, Overrides, LABELS};

    use super::*;

    fn config(disable_host_header_fallback: bool) -> StatsConfig {
        StatsConfig {
            waypoint: false,
            disable_host_header_fallback,
            overrides: Arc::new(Overrides::default()),
            local: Arc::new(LocalWorkload {
                workload: "productpage-v1".into(),
                namespace: "default".into(),
                cluster: "Kubernetes".into(),
                app: "productpage".into(),
                version: "v1".into(),
                canonical_name: "productpage".into(),
                canonical_revision: "v1".into(),
            }),
            metrics: Arc::new(IstioMetrics::new(1)),
        }
    }

    fn reviews() -> Peer {
        Peer {
            namespace: "shop".into(),
            workload: "reviews-v2".into(),
            cluster: "east".into(),
            labels: [("app".into(), "reviews".into())].into(),
            ..Peer::default()
        }
    }

    fn labels<'a>(reporter: Reporter, config: &'a StatsConfig, sides: &Sides<'a>) -> Vec<String> {
        let mut out = [""; 25];
        peer_labels(reporter, config, sides, &mut out);
        LABELS[..20]
            .iter()
            .zip(out)
            .map(|(l, v)| format!("{l}={v}"))
            .collect()
    }

    #[test]
    fn client_labels_its_own_side_and_the_upstream_peer_with_fallbacks() {
        let config = config(false);
        let peer = reviews();
        let metadata = Metadata::new(
            serde_json::from_str(
                r#"{"istio":{"services":[{"host":"reviews.shop.svc.cluster.local"}]}}"#,
            )
            .unwrap(),
        );
        let sides = Sides {
            upstream: Some(&peer),
            peer_principal: "spiffe://cluster.local/ns/other/sa/reviews",
            host: "reviews:9080",
            cluster: Some(("outbound|9080||reviews", &metadata)),
            ..Sides::default()
        };
        let got = labels(Reporter::Client, &config, &sides);
        assert_eq!(
            got,
            [
                "reporter=source",
                "source_workload=productpage-v1",
                "source_canonical_service=productpage",
                "source_canonical_revision=v1",
                "source_workload_namespace=default",
                "source_principal=unknown",
                "source_app=productpage",
                "source_version=v1",
                "source_cluster=Kubernetes",
                "destination_workload=reviews-v2",
                // The SPIFFE id's namespace wins over the peer's metadata.
                "destination_workload_namespace=other",
                "destination_principal=spiffe://cluster.local/ns/other/sa/reviews",
                "destination_app=reviews",
                "destination_version=unknown",
                "destination_service=reviews.shop.svc.cluster.local",
                "destination_canonical_service=unknown",
                "destination_canonical_revision=latest",
                "destination_service_name=reviews",
                "destination_service_namespace=other",
                "destination_cluster=east",
            ]
        );
    }

    #[test]
    fn server_labels_the_downstream_peer_and_falls_back_to_its_canonical_name() {
        let config = config(true);
        let peer = reviews();
        let sides = Sides {
            downstream: Some(&peer),
            peer_principal: "spiffe://cluster.local/ns/shop/sa/reviews",
            local_principal: "spiffe://cluster.local/ns/default/sa/productpage",
            host: "ignored:80",
            ..Sides::default()
        };
        let got = labels(Reporter::Server, &config, &sides);
        assert_eq!(got[0], "reporter=destination");
        assert_eq!(got[1], "source_workload=reviews-v2");
        assert_eq!(got[3], "source_canonical_revision=latest");
        assert_eq!(got[7], "source_version=unknown");
        assert_eq!(got[9], "destination_workload=productpage-v1");
        assert_eq!(
            got[11],
            "destination_principal=spiffe://cluster.local/ns/default/sa/productpage"
        );
        // No Host (disabled) and no cluster metadata: the canonical name stands in.
        assert_eq!(got[14], "destination_service=productpage");
        assert_eq!(got[17], "destination_service_name=productpage");
        let blackhole = Sides {
            route_name: "block_all",
            ..Sides::default()
        };
        let got = labels(Reporter::Client, &config, &blackhole);
        assert_eq!(got[14], "destination_service=unknown");
        assert_eq!(got[17], "destination_service_name=BlackHoleCluster");
        assert_eq!(got[1], "source_workload=productpage-v1");
    }

    #[test]
    fn exchanges_with_equal_labels_share_a_series_and_removed_labels_merge() {
        let mut config = config(false);
        let mut overrides = Overrides::default();
        let code = model::stats::istio::label_index("response_code").unwrap();
        overrides.remove_label(model::stats::istio::Metric::RequestsTotal, code);
        overrides.drop_metric(model::stats::istio::Metric::RequestBytes);
        config.overrides = Arc::new(overrides);
        let outcome = |status| HttpOutcome {
            grpc: false,
            status,
            grpc_status: None,
            flags: ResponseFlags::default(),
            mutual_tls: Some(true),
            duration_ms: 3,
            request_bytes: 0,
            response_bytes: 12,
        };
        let sides = Sides::default();
        for status in [200, 200, 503] {
            record_http(&config, 0, Reporter::Server, &sides, &outcome(status));
        }
        let read = config.metrics.read();
        let requests: Vec<_> = read
            .iter()
            .filter(|s| s.family == "istio_requests_total")
            .collect();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].value, Labeled::Counter(3));
        assert!(requests[0]
            .labels
            .iter()
            .all(|(l, _)| *l != "response_code"));
        assert!(requests[0]
            .labels
            .contains(&("connection_security_policy", "mutual_tls".into())));
        assert!(read.iter().all(|s| s.family != "istio_request_bytes"));
        let durations: Vec<_> = read
            .iter()
            .filter(|s| s.family == "istio_request_duration_milliseconds")
            .collect();
        assert_eq!(durations.len(), 2, "one per response code");
    }
}
