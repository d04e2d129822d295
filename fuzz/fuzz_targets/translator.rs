//! Fuzz target: the agent's translator (xds-agent/src/translate) — an Envoy bootstrap, or one
//! xDS resource (Listener, Cluster, RouteConfiguration, ClusterLoadAssignment), given as
//! proto bytes or as YAML/JSON text, translated into the domain model.
//!
//! Input: a selector byte (which message; proto bytes or text), then the message. Checks, on
//! any input: no panic (a bad input is a list of errors, each naming a field path); and
//! translating the same message twice, from scratch, gives the same result: the same
//! snapshot or resource (compared through its `Debug` form, clusters in name order, the
//! instants state starts from left out) or the same errors in the same order.
#![no_main]

use std::{
    collections::{HashMap, HashSet},
    fmt::Debug,
};

use envoy_types::pb::envoy::config::{
    bootstrap::v3::Bootstrap, cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment,
    listener::v3::Listener, route::v3::RouteConfiguration,
};
use libfuzzer_sys::fuzz_target;
use model::{stats::StatsRegistry, Snapshot};
use xds_agent::translate::{resources, translate, TranslateContext, TranslateError};

/// The clusters an xDS listener or route table may name (the seeds use these).
const KNOWN_CLUSTERS: &[&str] = &["backend", "service", "c"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let text = selector & 0x80 != 0;
    let first = translate_once(selector & 0x7f, text, message);
    let second = translate_once(selector & 0x7f, text, message);
    assert_eq!(first, second, "two translations of one input differ");
});

/// The `Debug` form of what translating `message` gave (a model or errors); `None` when it
/// is not a message of the selected type at all.
fn translate_once(kind: u8, text: bool, message: &[u8]) -> Option<String> {
    let mut stats = StatsRegistry::new(1);
    let dns = HashMap::new();
    let extensions = HashMap::new();
    let mut ctx = TranslateContext {
        generation: 1,
        stats: &mut stats,
        previous: None,
        dns: &dns,
        extensions: &extensions,
        secrets: Default::default(),
        local_peer: Default::default(),
        ports: None,
    };
    let clusters: HashSet<&str> = KNOWN_CLUSTERS.iter().copied().collect();
    Some(match kind % 5 {
        0 => shown(
            translate(&decode::<Bootstrap>(text, message)?, &mut ctx).map(|s| Shown(snapshot(&s))),
        ),
        1 => shown(resources::listener(
            &decode::<Listener>(text, message)?,
            &clusters,
            &mut ctx,
        )),
        2 => shown(resources::cluster(
            &decode::<Cluster>(text, message)?,
            &mut ctx,
        )),
        3 => shown(resources::route_config(
            &decode::<RouteConfiguration>(text, message)?,
            &clusters,
            &mut ctx,
        )),
        _ => shown(resources::assignment(&decode::<ClusterLoadAssignment>(
            text, message,
        )?)),
    })
}

/// `message` as proto bytes, or as YAML/JSON text through the proto3 JSON mapping (what the
/// bootstrap loader does).
fn decode<M: prost::Message + prost::Name + Default>(text: bool, message: &[u8]) -> Option<M> {
    if text {
        let text = std::str::from_utf8(message).ok()?;
        let value = proto::parse_document(text).ok()?;
        proto::from_json(value, false).ok()
    } else {
        M::decode(message).ok()
    }
}

fn shown<T: Debug>(result: Result<T, Vec<TranslateError>>) -> String {
    match result {
        Ok(model) => without_instants(&format!("{model:#?}")),
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal says why");
            format!("{errors:#?}")
        }
    }
}

/// Text shown as it is by `Debug`.
struct Shown(String);

impl Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `shown` without the fields of `Instant`s (a token bucket's epoch is when it was built).
fn without_instants(shown: &str) -> String {
    shown
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            !(line.starts_with("tv_sec: ") || line.starts_with("tv_nsec: "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A snapshot's `Debug` form with its clusters in name order (the map's own order is its
/// hash order).
fn snapshot(s: &Snapshot) -> String {
    let mut clusters: Vec<_> = s.clusters.iter().collect();
    clusters.sort_by(|a, b| a.0.cmp(b.0));
    let mut routes: Vec<_> = s.routes.iter().collect();
    routes.sort_by(|a, b| a.0.cmp(b.0));
    format!(
        "{:#?}\n{clusters:#?}\n{routes:#?}\n{:#?}\n{:#?}\n{}\n{:#?}",
        s.listeners, s.local_peer, s.stat_naming, s.internal_buffer, s.connection_limit
    )
}
