//! HTTP filter `envoy.filters.http.grpc_stats`: a gRPC call's outcome and message counts,
//! charged to its route cluster's `grpc.` stats as Envoy names them —
//! `grpc[.<service>.<method>].{<status>,success,failure,total}` once the call's `grpc-status`
//! is seen (a trailers-only head, or the trailers), and `request_message_count` /
//! `response_message_count` as the bodies pass.
//!
//! A call is tracked once its cluster is known (after the filters and the route's choice), so
//! a local reply a filter makes before that (a fault abort) is not counted, unlike Envoy's.
use std::{
    cell::{Cell, OnceCell},
    rc::Rc,
    sync::{atomic::AtomicU64, Arc},
};

use model::{
    filters::{GrpcStatsConfig, HttpFilter, HttpFilterKind},
    stats::{add, inc, ClusterStats},
};

use super::runs_here;
use crate::stream::{
    grpc::{self, MessageCounter},
    headers::{Headers, RequestHead, ResponseHead},
    StreamContext,
};

/// One tracked gRPC call.
#[derive(Debug)]
pub struct GrpcCall {
    stats: Arc<ClusterStats>,
    shard: usize,
    /// `<service>.<method>.` when the call has stats of its own, else empty.
    names: Box<str>,
    request: Messages,
    response: Messages,
    /// The response head sent downstream was gRPC's (its body's messages are counted).
    grpc_response: Cell<bool>,
}

/// One direction's messages: counted as chunks pass, charged to a counter looked up once
/// per call (not per chunk).
#[derive(Debug)]
struct Messages {
    counter: MessageCounter,
    stat: &'static str,
    cell: OnceCell<Arc<AtomicU64>>,
}

impl Messages {
    fn new(stat: &'static str) -> Self {
        Self {
            counter: MessageCounter::default(),
            stat,
            cell: OnceCell::new(),
        }
    }
}

impl GrpcCall {
    /// Tracks `request` when a grpc_stats filter runs on it, it is gRPC and its path names a
    /// service and a method (`/<service>/<method>`); `stats` are its route cluster's.
    pub fn start(
        filters: &[HttpFilter],
        cx: &StreamContext<'_>,
        request: &RequestHead,
        stats: &Arc<ClusterStats>,
    ) -> Option<Rc<Self>> {
        let config = filters.iter().find_map(|f| match &f.kind {
            HttpFilterKind::GrpcStats(config) if runs_here(f, cx) => Some(config),
            _ => None,
        })?;
        if !grpc::is_grpc(request) {
            return None;
        }
        let (service, method) = service_and_method(&request.path)?;
        Some(Rc::new(Self {
            stats: stats.clone(),
            shard: cx.shard.id,
            names: stat_names(config, service, method).into(),
            request: Messages::new("request_message_count"),
            response: Messages::new("response_message_count"),
            grpc_response: Cell::new(false),
        }))
    }

    /// A chunk of the request body on its way upstream.
    pub fn request_data(&self, chunk: &[u8]) {
        self.charge_messages(&self.request, chunk);
    }

    /// The response head sent downstream: a trailers-only response's status is charged.
    pub fn response_head(&self, head: &ResponseHead) {
        self.grpc_response.set(grpc::is_grpc_response(head));
        self.charge_status(&head.headers);
    }

    /// A chunk of the response body sent downstream (counted when the head was gRPC's).
    pub fn response_data(&self, chunk: &[u8]) {
        if self.grpc_response.get() {
            self.charge_messages(&self.response, chunk);
        }
    }

    /// The response trailers sent downstream.
    pub fn response_trailers(&self, trailers: &Headers) {
        self.charge_status(trailers);
    }

    fn charge_status(&self, fields: &Headers) {
        let Some(status) = fields.get("grpc-status") else {
            return;
        };
        let status = String::from_utf8_lossy(status);
        self.inc(&status);
        self.inc(if status == "0" { "success" } else { "failure" });
        self.inc("total");
    }

    fn charge_messages(&self, direction: &Messages, chunk: &[u8]) {
        let started = direction.counter.inspect(chunk);
        if started > 0 {
            add(
                direction.cell.get_or_init(|| self.counter(direction.stat)),
                started,
            );
        }
    }

    fn inc(&self, what: &str) {
        inc(&self.counter(what));
    }

    /// The shard's counter `<names><what>` (a lookup under the shard's own lock).
    fn counter(&self, what: &str) -> Arc<AtomicU64> {
        let cells = self.stats.shard(self.shard);
        cells.grpc.counter(&format!("{}{what}", self.names))
    }
}

/// `/<service>/<method>`, as Envoy reads a gRPC path (exactly two non-empty segments).
fn service_and_method(path: &[u8]) -> Option<(&str, &str)> {
    let path = std::str::from_utf8(path).ok()?.strip_prefix('/')?;
    let (service, method) = path.split_once('/')?;
    let plain = |s: &str| !s.is_empty() && !s.contains('/');
    (plain(service) && plain(method)).then_some((service, method))
}

/// `<service>.<method>.` for a call with stats of its own, else empty.
fn stat_names(config: &GrpcStatsConfig, service: &str, method: &str) -> String {
    if !config.methods.names(service, method) {
        return String::new();
    }
    match config.replace_dots_in_service {
        true => format!("{}.{method}.", service.replace('.', "_")),
        false => format!("{service}.{method}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::filters::GrpcMethodStats;

    #[test]
    fn paths_name_a_service_and_a_method() {
        fn read(p: &str) -> Option<(&str, &str)> {
            service_and_method(p.as_bytes())
        }
        assert_eq!(
            read("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(read("/a/b/c"), None);
        assert_eq!(read("/a/"), None);
        assert_eq!(read("//b"), None);
        assert_eq!(read("a/b"), None);
    }

    #[test]
    fn stat_names_follow_the_config() {
        let config = |methods| GrpcStatsConfig {
            methods,
            replace_dots_in_service: false,
        };
        let all = config(GrpcMethodStats::All);
        assert_eq!(stat_names(&all, "pkg.Svc", "Get"), "pkg.Svc.Get.");
        let dots = GrpcStatsConfig {
            replace_dots_in_service: true,
            ..all
        };
        assert_eq!(stat_names(&dots, "pkg.Svc", "Get"), "pkg_Svc.Get.");
        let listed = config(GrpcMethodStats::Allowlist(vec![(
            "pkg.Svc".into(),
            "Get".into(),
        )]));
        assert_eq!(stat_names(&listed, "pkg.Svc", "Get"), "pkg.Svc.Get.");
        assert_eq!(stat_names(&listed, "pkg.Svc", "Put"), "");
        assert_eq!(stat_names(&config(GrpcMethodStats::None), "a", "b"), "");
    }
}
