//! Stats: Istio's standard metrics (`istio.stats`), counters and histograms keyed by label
//! values. Each shard keeps its own series, found by the hash of their labels without
//! allocating once a series exists; `drop` and `tags_to_remove` apply when the agent reads, by
//! merging the series whose remaining labels are equal.
use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{atomic::AtomicU64, atomic::Ordering::Relaxed, Arc, Mutex},
};

use super::{HistogramCell, HistogramSnapshot, Padded};

/// Istio's label names, in the order Istio emits them. TCP series have all but
/// `response_code` and `grpc_response_status`.
pub const LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// The labels only HTTP series have.
const HTTP_ONLY: [usize; 2] = [21, 22];

/// The position of label `name` in [`LABELS`].
pub fn label_index(name: &str) -> Option<usize> {
    LABELS.iter().position(|l| *l == name)
}

/// Istio's standard metrics, by the names its config uses (`istio_` + name is the family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    RequestsTotal,
    RequestDuration,
    RequestBytes,
    ResponseBytes,
    TcpOpened,
    TcpClosed,
    TcpSent,
    TcpReceived,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::RequestsTotal,
        Metric::RequestDuration,
        Metric::RequestBytes,
        Metric::ResponseBytes,
        Metric::TcpOpened,
        Metric::TcpClosed,
        Metric::TcpSent,
        Metric::TcpReceived,
    ];

    /// The name in `stats.PluginConfig.metrics[].name`.
    pub fn config_name(self) -> &'static str {
        &self.family()["istio_".len()..]
    }

    /// The Prometheus family.
    pub fn family(self) -> &'static str {
        match self {
            Metric::RequestsTotal => "istio_requests_total",
            Metric::RequestDuration => "istio_request_duration_milliseconds",
            Metric::RequestBytes => "istio_request_bytes",
            Metric::ResponseBytes => "istio_response_bytes",
            Metric::TcpOpened => "istio_tcp_connections_opened_total",
            Metric::TcpClosed => "istio_tcp_connections_closed_total",
            Metric::TcpSent => "istio_tcp_sent_bytes_total",
            Metric::TcpReceived => "istio_tcp_received_bytes_total",
        }
    }

    pub fn from_config_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.config_name() == name)
    }

    fn is_tcp(self) -> bool {
        matches!(
            self,
            Metric::TcpOpened | Metric::TcpClosed | Metric::TcpSent | Metric::TcpReceived
        )
    }
}

/// `stats.PluginConfig.metrics`: the metrics dropped and, per metric, the labels removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Overrides {
    /// One bit per [`Metric`] (its position in [`Metric::ALL`]).
    pub dropped: u8,
    /// Per metric, one bit per label removed (its position in [`LABELS`]).
    pub removed: [u32; 8],
}

impl Overrides {
    pub fn drop_metric(&mut self, metric: Metric) {
        self.dropped |= 1 << metric as u8;
    }

    pub fn remove_label(&mut self, metric: Metric, label: usize) {
        self.removed[metric as usize] |= 1 << label;
    }

    fn keeps(&self, metric: Metric) -> bool {
        self.dropped & (1 << metric as u8) == 0
    }
}

/// One label set's cells: the HTTP metrics for HTTP series, the TCP counters for TCP ones.
/// Histograms hold milliseconds (durations) or bytes, recorded as if they were milliseconds.
#[derive(Debug, Default)]
pub struct SeriesCells {
    pub requests: AtomicU64,
    pub duration: HistogramCell,
    pub request_bytes: HistogramCell,
    pub response_bytes: HistogramCell,
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

impl SeriesCells {
    fn histogram(&self, metric: Metric) -> &HistogramCell {
        match metric {
            Metric::RequestDuration => &self.duration,
            Metric::RequestBytes => &self.request_bytes,
            _ => &self.response_bytes,
        }
    }
}

/// Records `value` whole milliseconds (or bytes) into a cell owned by the calling shard.
pub fn record_whole(cell: &HistogramCell, value: u64) {
    super::record(cell, value.saturating_mul(1000));
}

#[derive(Debug)]
struct Series {
    overrides: Arc<Overrides>,
    tcp: bool,
    values: Box<[Box<str>]>,
    cells: Arc<SeriesCells>,
}

impl Series {
    fn is(&self, overrides: &Arc<Overrides>, tcp: bool, values: &[&str; 25]) -> bool {
        Arc::ptr_eq(&self.overrides, overrides)
            && self.tcp == tcp
            && self.values.iter().zip(values).all(|(a, b)| &**a == *b)
    }
}

/// Every shard's series of Istio's metrics. Only its shard adds series; the lock is shared
/// with the agent's reads, so it is not contended on the request path in practice.
#[derive(Debug)]
pub struct IstioMetrics {
    shards: Box<[Padded<Mutex<ShardSeries>>]>,
}

/// One shard's series, by the hash of their label values.
type ShardSeries = HashMap<u64, Vec<Series>>;

/// One series as read: a family, its labels, its value summed over shards.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledValue {
    pub family: &'static str,
    pub labels: Vec<(&'static str, Box<str>)>,
    pub value: Labeled,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Labeled {
    Counter(u64),
    Histogram(HistogramSnapshot),
}

impl IstioMetrics {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| Padded::default()).collect(),
        }
    }

    /// The cells of the series with label `values` (in [`LABELS`] order; TCP series ignore
    /// the HTTP-only ones) under `overrides`, created on first use by `shard`.
    pub fn series(
        &self,
        shard: usize,
        overrides: &Arc<Overrides>,
        tcp: bool,
        values: &[&str; 25],
    ) -> Arc<SeriesCells> {
        let mut hasher = DefaultHasher::new();
        (Arc::as_ptr(overrides) as usize, tcp, values).hash(&mut hasher);
        let hash = hasher.finish();
        let mut map = self.shards[shard]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let bucket = map.entry(hash).or_default();
        if let Some(series) = bucket.iter().find(|s| s.is(overrides, tcp, values)) {
            return series.cells.clone();
        }
        let cells = Arc::new(SeriesCells::default());
        bucket.push(Series {
            overrides: overrides.clone(),
            tcp,
            values: values.iter().map(|v| Box::from(*v)).collect(),
            cells: cells.clone(),
        });
        cells
    }

    /// Every series, summed over shards and merged where `tags_to_remove` made labels equal,
    /// dropped metrics left out; sorted by family, then labels.
    pub fn read(&self) -> Vec<LabeledValue> {
        type Key = (&'static str, Vec<(&'static str, Box<str>)>);
        let mut counters: BTreeMap<Key, u64> = BTreeMap::new();
        let mut histograms: BTreeMap<Key, (Metric, Vec<Arc<SeriesCells>>)> = BTreeMap::new();
        for shard in self.shards.iter() {
            let map = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            for series in map.values().flatten() {
                let metrics = Metric::ALL.into_iter().filter(|m| m.is_tcp() == series.tcp);
                for metric in metrics.filter(|m| series.overrides.keeps(*m)) {
                    let removed = series.overrides.removed[metric as usize];
                    let labels = (0..LABELS.len())
                        .filter(|i| removed & (1 << i) == 0)
                        .filter(|i| !(series.tcp && HTTP_ONLY.contains(i)))
                        .map(|i| (LABELS[i], series.values[i].clone()))
                        .collect();
                    let key = (metric.family(), labels);
                    let cells = &series.cells;
                    let counter = match metric {
                        Metric::RequestsTotal => &cells.requests,
                        Metric::TcpOpened => &cells.opened,
                        Metric::TcpClosed => &cells.closed,
                        Metric::TcpSent => &cells.sent,
                        Metric::TcpReceived => &cells.received,
                        Metric::RequestDuration | Metric::RequestBytes | Metric::ResponseBytes => {
                            histograms
                                .entry(key)
                                .or_insert_with(|| (metric, Vec::new()))
                                .1
                                .push(cells.clone());
                            continue;
                        }
                    };
                    let sum = counters.entry(key).or_default();
                    *sum = sum.wrapping_add(counter.load(Relaxed));
                }
            }
        }
        let mut out: Vec<LabeledValue> = counters
            .into_iter()
            .map(|((family, labels), n)| LabeledValue {
                family,
                labels,
                value: Labeled::Counter(n),
            })
            .collect();
        out.extend(
            histograms
                .into_iter()
                .map(|((family, labels), (metric, cells))| LabeledValue {
                    family,
                    labels,
                    value: Labeled::Histogram(HistogramSnapshot::merge(
                        cells.iter().map(|c| c.histogram(metric)),
                    )),
                }),
        );
        out.sort_by(|a, b| (a.family, &a.labels).cmp(&(b.family, &b.labels)));
        out
    }
}
