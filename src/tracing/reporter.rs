//! Tracing: a shard's span reports — finished spans are buffered per tracer and POSTed as one
//! Zipkin v2 JSON list to the collector cluster through the shard's own upstream pools, when
//! 5 are waiting (Envoy's `min_flush_spans`) or 5 s after the first (its flush interval).
//! Nothing waits for a report; a bounded number are in flight, the rest dropped and counted.
use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use model::{
    stats::{add, inc},
    tracing::Zipkin,
};

use crate::{
    context::ShardContext,
    protocol::http1::Framing,
    proxy::mirror::{send_complete, Shadow},
    rt,
    stream::{
        body::RequestBody,
        headers::{Headers, RequestHead, Version},
    },
};

/// Envoy's `tracing.zipkin.min_flush_spans` default.
pub const MIN_FLUSH_SPANS: usize = 5;
/// Envoy's `tracing.zipkin.flush_interval_ms` default.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Envoy's `tracing.zipkin.request_timeout` default.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reports in flight per shard; a flush beyond this is dropped (`reports_failed`).
const MAX_IN_FLIGHT: usize = 16;

/// One tracer's spans waiting on this shard.
struct Pending {
    tracer: Arc<Zipkin>,
    /// The spans' JSON objects, comma-separated.
    json: Vec<u8>,
    count: usize,
    /// A timed flush is scheduled.
    timer: bool,
}

/// The shard's reports, by tracer (a new config's tracer gets its own buffer).
#[derive(Default)]
pub struct Reporter {
    pending: RefCell<HashMap<*const Zipkin, Pending>>,
    in_flight: Cell<usize>,
}

impl Reporter {
    /// Queues one finished span (`write` appends its JSON object).
    pub fn report(ctx: &Rc<ShardContext>, tracer: &Arc<Zipkin>, write: impl FnOnce(&mut Vec<u8>)) {
        let key = Arc::as_ptr(tracer);
        let (count, arm) = {
            let mut pending = ctx.reporter.pending.borrow_mut();
            let p = pending.entry(key).or_insert_with(|| Pending {
                tracer: tracer.clone(),
                json: Vec::new(),
                count: 0,
                timer: false,
            });
            if p.count > 0 {
                p.json.push(b',');
            }
            write(&mut p.json);
            p.count += 1;
            let arm = !p.timer;
            p.timer = true;
            (p.count, arm)
        };
        if count >= MIN_FLUSH_SPANS {
            flush(ctx, key);
        } else if arm {
            let ctx = ctx.clone();
            rt::spawn_local(async move {
                rt::timer::sleep(FLUSH_INTERVAL).await;
                let tracer = ctx
                    .reporter
                    .pending
                    .borrow()
                    .get(&key)
                    .map(|p| p.tracer.clone());
                if let Some(tracer) = tracer {
                    inc(&tracer.stats.shard(ctx.id).timer_flushed);
                    flush(&ctx, key);
                }
            })
            .detach();
        }
    }
}

/// Sends what `key`'s buffer holds as one report.
fn flush(ctx: &Rc<ShardContext>, key: *const Zipkin) {
    let Some(p) = take(ctx, key) else {
        return;
    };
    let Pending {
        tracer,
        json,
        count,
        ..
    } = p;
    let stats = tracer.stats.shard(ctx.id);
    add(&stats.spans_sent, count as u64);
    let Some(cluster) = ctx.clusters.borrow().get(&tracer.collector_cluster) else {
        inc(&stats.reports_skipped_no_cluster);
        return;
    };
    if ctx.reporter.in_flight.get() >= MAX_IN_FLIGHT {
        inc(&stats.reports_failed);
        return;
    }
    let mut body = Vec::with_capacity(json.len() + 2);
    body.push(b'[');
    body.extend_from_slice(&json);
    body.push(b']');
    let mut headers = Headers::with_capacity(3);
    headers.append("host", tracer.collector_hostname.clone());
    headers.append("content-type", Bytes::from_static(b"application/json"));
    let report = Shadow {
        head: RequestHead {
            method: Bytes::from_static(b"POST"),
            path: Bytes::from(tracer.collector_endpoint.clone()),
            version: Version::Http11,
            headers,
        },
        framing: Framing::Length(body.len() as u64),
        body: RequestBody::complete(vec![Bytes::from(body)], None),
        deadline: Instant::now() + REPORT_TIMEOUT,
    };
    let ctx = ctx.clone();
    ctx.reporter.in_flight.set(ctx.reporter.in_flight.get() + 1);
    rt::spawn_local(async move {
        let answered = send_complete(&ctx, cluster, report).await;
        ctx.reporter.in_flight.set(ctx.reporter.in_flight.get() - 1);
        let stats = tracer.stats.shard(ctx.id);
        match answered {
            Ok(202) => inc(&stats.reports_sent),
            Ok(_) => inc(&stats.reports_dropped),
            Err(reason) => {
                tracing::debug!(reason, "zipkin report failed");
                inc(&stats.reports_failed)
            }
        }
    })
    .detach();
}

/// Takes `key`'s buffer (a later span starts a new one, with its own timer).
fn take(ctx: &ShardContext, key: *const Zipkin) -> Option<Pending> {
    ctx.reporter.pending.borrow_mut().remove(&key)
}
