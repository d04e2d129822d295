//! Micro-benchmark (route matching): a 10-route and a 10,000-route table of plain prefixes and
//! paths, translated from Envoy YAML like any bootstrap, each asked for its last routes. The
//! issue's target: the large table matches within 10 % of the small one's time. A linear
//! first-match scan of the large table is measured too, to show what the index saves.
//!
//! Run: `cargo bench -p xds-agent --bench route_match` (add `-- --quick` for a short run). On
//! a shared machine, building only xds-agent optimised is much quicker and gives the same
//! ratio: `cargo bench -p xds-agent --bench route_match --profile dev --config
//! 'profile.dev.package.xds-agent.opt-level=3' --config
//! 'profile.dev.package.xds-agent.debug-assertions=false' --config
//! 'profile.dev.package.xds-agent.overflow-checks=false'`.
use std::{
    collections::HashMap,
    hint::black_box,
    time::{Duration, Instant},
};

use xds_agent::translate::{translate, TranslateContext};

use model::{
    route::{Route, RouteConfig, RouteRequest},
    stats::StatsRegistry,
    NetworkFilter, Snapshot,
};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// A GET with a path and a `host`, nothing else.
struct Request {
    path: Vec<u8>,
}

impl RouteRequest for Request {
    fn method(&self) -> &[u8] {
        b"GET"
    }
    fn path(&self) -> &[u8] {
        &self.path
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        (name == "host").then_some(b"bench.example".as_slice())
    }
}

/// How many late routes each case cycles through (so no single key's hash luck decides).
const LATE: usize = 5;

/// Route `i`: even → `prefix: /svc{i:05}/`, odd → `path: /api/{i:05}/item` (same lengths at
/// every size, so only the table size differs).
fn table(routes: usize) -> Snapshot {
    let mut yaml = format!(
        r#"
static_resources:
  clusters: [{{name: c}}]
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": {HCM}
          stat_prefix: bench
          http_filters: [{{name: envoy.filters.http.router}}]
          route_config:
            virtual_hosts:
            - name: vh
              domains: [bench.example]
              routes:
"#
    );
    for i in 0..routes {
        let matcher = if i % 2 == 0 {
            format!("prefix: /svc{i:05}/")
        } else {
            format!("path: /api/{i:05}/item")
        };
        yaml.push_str(&format!(
            "              - {{match: {{{matcher}}}, route: {{cluster: c}}}}\n"
        ));
    }
    let bootstrap = proto::from_json(proto::parse_document(&yaml).unwrap(), false).unwrap();
    let mut stats = StatsRegistry::new(1);
    let dns = HashMap::new();
    let mut ctx = TranslateContext {
        generation: 1,
        stats: &mut stats,
        previous: None,
        dns: &dns,
        extensions: &Default::default(),
        secrets: Default::default(),
        local_peer: Default::default(),
        ports: None,
    };
    translate(&bootstrap, &mut ctx).unwrap_or_else(|e| panic!("{e:#?}"))
}

/// The whole lookup a stream does (virtual host by authority, then the route), cycling
/// through `requests`; returns the route's address so nothing is optimised away.
fn lookup<'a>(rc: &'a RouteConfig, requests: &'a [Request]) -> impl FnMut() -> usize + 'a {
    let mut next = 0;
    move || {
        let request = &requests[next];
        next = (next + 1) % requests.len();
        let vh = rc.virtual_host(request.header("host").unwrap()).unwrap();
        let route: *const Route = vh.route(request).unwrap();
        route as usize
    }
}

fn routes(snapshot: &Snapshot) -> &RouteConfig {
    match &snapshot.listeners[0].filter_chains[0].network {
        NetworkFilter::HttpConnectionManager(h) => h.routes.inline().expect("inline table"),
        NetworkFilter::TcpProxy(_) => unreachable!("the bench table is HTTP"),
    }
}

/// Best-of-`rounds` nanoseconds per call of `f`.
fn measure(rounds: usize, iterations: u32, mut f: impl FnMut() -> usize) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iterations {
            black_box(f());
        }
        best = best.min(start.elapsed());
    }
    best.as_nanos() as f64 / f64::from(iterations)
}

/// Envoy's algorithm without an index: the first route whose whole match holds.
fn linear_scan(routes: &[Route], request: &Request) -> Option<usize> {
    let path = request.path();
    let end = path.iter().position(|b| *b == b'?').unwrap_or(path.len());
    routes
        .iter()
        .position(|r| r.matcher.path_matches(&path[..end]) && r.matcher.rest_matches(request))
}

/// The last `LATE` routes of kind `odd` (exact paths) or even (prefixes) of a `size`-route
/// table, as requests, with the positions they must match.
fn late_requests(size: usize, odd: bool) -> Vec<(Request, usize)> {
    (0..size)
        .rev()
        .filter(|i| (i % 2 == 1) == odd)
        .take(LATE)
        .map(|i| {
            let path = if odd {
                format!("/api/{i:05}/item")
            } else {
                format!("/svc{i:05}/a/b?x=1")
            };
            (
                Request {
                    path: path.into_bytes(),
                },
                i,
            )
        })
        .collect()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, iterations) = if quick { (5, 20_000) } else { (25, 200_000) };
    let small = table(10);
    let large = table(10_000);
    let (small_rc, large_rc) = (routes(&small), routes(&large));
    println!(
        "route_match: virtual host + route lookup, best of {rounds} rounds x {iterations}, \
         ns per lookup over the last {LATE} routes of a kind"
    );
    println!(
        "{:<16} {:>10} {:>12} {:>8} {:>16}",
        "requests", "10 routes", "10k routes", "ratio", "10k linear scan"
    );
    for (name, odd) in [("exact paths", true), ("prefixes", false)] {
        let mut sets = Vec::new();
        for (rc, size) in [(small_rc, 10), (large_rc, 10_000)] {
            let late = late_requests(size, odd);
            let vh = &rc.virtual_hosts[0];
            for (request, position) in &late {
                let found = vh.route(request).expect("the bench request matches");
                assert!(std::ptr::eq(found, &vh.routes[*position]));
            }
            sets.push(late.into_iter().map(|(r, _)| r).collect::<Vec<_>>());
        }
        // Interleave the two sizes so drift in machine load affects both alike.
        let mut small_ns = f64::MAX;
        let mut large_ns = f64::MAX;
        for _ in 0..3 {
            small_ns = small_ns.min(measure(rounds, iterations, lookup(small_rc, &sets[0])));
            large_ns = large_ns.min(measure(rounds, iterations, lookup(large_rc, &sets[1])));
        }
        let vh = &large_rc.virtual_hosts[0];
        let mut next = 0;
        let scan_ns = measure(rounds.min(5), iterations / 100, || {
            next = (next + 1) % LATE;
            linear_scan(&vh.routes, &sets[1][next]).unwrap()
        });
        println!(
            "{name:<16} {small_ns:>10.1} {large_ns:>12.1} {:>8.3} {scan_ns:>16.1}",
            large_ns / small_ns
        );
    }
}
