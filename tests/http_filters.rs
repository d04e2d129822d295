//! Tests: HTTP filters end to end — fault (abort, delay, header control, per-route override),
//! CORS (preflight, simple requests, origins not allowed), local rate limit (one bucket for
//! the whole process across shards) and header mutation; outcomes compared with Envoy.
mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::{http_e2e::*, *};
use serde_json::{json, Value};

const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
const CORS_POLICY: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
const LOCAL_RATELIMIT: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const HEADER_MUTATION: &str =
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";
const HEADER_MUTATION_PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute";
const FILTER_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn percent(n: u32) -> Value {
    json!({"numerator": n, "denominator": "HUNDRED"})
}

/// An HCM `extra` whose chain is `filters` then the router.
fn chain(filters: Vec<Value>) -> Value {
    let mut all = filters;
    all.push(router_filter());
    json!({"http_filters": all})
}

// ---------------------------------------------------------------------------------------------
// Fault

#[test]
fn fault_abort_at_100_percent() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let fault =
            json!({"@type": FAULT, "abort": {"http_status": 503, "percentage": percent(100)}});
        let s = Scene::with(
            peer,
            "fault_abort",
            chain(vec![http_filter("envoy.filters.http.fault", fault)]),
            to_a(json!({})),
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut c = Client::connect(s.port);
        let r = c.get("/");
        let again = c.get("/");
        if let Running::Shardproxy(p) = &s.running {
            assert_eq!(p.stats()["http.ingress.fault.aborts_injected"], 2);
        }
        Some((r.status, r.text(), again.status, s.flags(0), up.count()))
    });
    assert_eq!(out, (503, "fault filter abort".into(), 503, "FI".into(), 0));
}

#[test]
fn fault_delay_at_100_percent() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let fault =
            json!({"@type": FAULT, "delay": {"fixed_delay": "0.6s", "percentage": percent(100)}});
        let s = Scene::with(
            peer,
            "fault_delay",
            chain(vec![http_filter("envoy.filters.http.fault", fault)]),
            to_a(json!({})),
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let start = Instant::now();
        let r = get(s.port, "/");
        let took = start.elapsed();
        assert!(took >= ms(580) && took < ms(3000), "delayed {took:?}");
        if let Running::Shardproxy(p) = &s.running {
            assert_eq!(p.stats()["http.ingress.fault.delays_injected"], 1);
        }
        Some((r.status, r.text(), s.flags(0)))
    });
    assert_eq!(out, (200, "a".into(), "DI".into()));
}

/// A fault filter whose aborts and delays the request's `x-envoy-fault-*` headers ask for.
fn header_controlled_fault() -> Value {
    json!({
        "@type": FAULT,
        "abort": {"header_abort": {}, "percentage": percent(100)},
        "delay": {"header_delay": {}, "percentage": percent(100)},
    })
}

/// `filter_metadata` goes into the stream's dynamic metadata, under the filter's name, when a
/// fault is injected (a delay or an abort), and only then.
#[test]
fn fault_filter_metadata_marks_injected_faults() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let mut fault = header_controlled_fault();
        fault["filter_metadata"] = json!({"injected": "yes", "by": {"team": "chaos"}});
        let dir = TempDir::new("fault-md-log");
        let log = dir.file("access.log");
        let format = "%RESPONSE_CODE% %DYNAMIC_METADATA(fault-md:injected)% \
                      %DYNAMIC_METADATA(fault-md:by)%\n";
        let mut extra = chain(vec![http_filter("fault-md", fault)]);
        extra["access_log"] = file_access_log(&log, Some(format));
        let s = Scene::with(
            peer,
            "fault_metadata",
            extra,
            to_a(json!({})),
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut c = Client::connect(s.port);
        let plain = c.get("/");
        let aborted = c.request("GET", "/", &[("x-envoy-fault-abort-request", "429")], b"");
        let delayed = c.request("GET", "/", &[("x-envoy-fault-delay-request", "10")], b"");
        let lines = log_lines(&log, 3);
        Some((plain.status, aborted.status, delayed.status, lines))
    });
    assert_eq!(
        out,
        (
            200,
            429,
            200,
            vec![
                "200 - -".to_string(),
                r#"429 yes {"team":"chaos"}"#.to_string(),
                r#"200 yes {"team":"chaos"}"#.to_string(),
            ]
        )
    );
}

#[test]
fn fault_header_controlled() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let fault = header_controlled_fault();
        let s = Scene::with(
            peer,
            "fault_headers",
            chain(vec![http_filter("envoy.filters.http.fault", fault)]),
            to_a(json!({})),
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut c = Client::connect(s.port);
        let plain = c.get("/");
        let aborted = c.request("GET", "/", &[("x-envoy-fault-abort-request", "429")], b"");
        let start = Instant::now();
        let delayed = c.request("GET", "/", &[("x-envoy-fault-delay-request", "500")], b"");
        let took = start.elapsed();
        assert!(took >= ms(480) && took < ms(3000), "delayed {took:?}");
        let start = Instant::now();
        let both = c.request(
            "GET",
            "/",
            &[
                ("x-envoy-fault-delay-request", "300"),
                ("x-envoy-fault-abort-request", "502"),
            ],
            b"",
        );
        let took = start.elapsed();
        assert!(took >= ms(280), "delay before abort: {took:?}");
        let bad = c.request("GET", "/", &[("x-envoy-fault-abort-request", "nope")], b"");
        Some((
            plain.status,
            aborted.status,
            aborted.text(),
            delayed.status,
            both.status,
            bad.status,
            up.count(),
        ))
    });
    assert_eq!(
        out,
        (200, 429, "fault filter abort".into(), 200, 502, 200, 3)
    );
}

#[test]
fn fault_per_route_override_and_disable() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let fault =
            json!({"@type": FAULT, "abort": {"http_status": 503, "percentage": percent(100)}});
        let routes = json!([
            {"match": {"prefix": "/nofault"}, "route": {"cluster": "a"},
             "typed_per_filter_config": {"envoy.filters.http.fault": {"@type": FILTER_CONFIG, "disabled": true}}},
            {"match": {"prefix": "/teapot"}, "route": {"cluster": "a"},
             "typed_per_filter_config": {"envoy.filters.http.fault": {
                 "@type": FAULT, "abort": {"http_status": 418, "percentage": percent(100)}}}},
            route_to("/", "a", json!({})),
        ]);
        let s = Scene::with(
            peer,
            "fault_per_route",
            chain(vec![http_filter("envoy.filters.http.fault", fault)]),
            routes,
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut c = Client::connect(s.port);
        let statuses: Vec<u16> = ["/nofault", "/teapot", "/", "/nofault/x"]
            .iter()
            .map(|p| c.get(p).status)
            .collect();
        Some((statuses, up.count()))
    });
    assert_eq!(out, (vec![200, 418, 503, 200], 2));
}

#[test]
fn fault_disabled_in_the_chain_enabled_per_route() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let fault =
            json!({"@type": FAULT, "abort": {"http_status": 500, "percentage": percent(100)}});
        let mut entry = http_filter("envoy.filters.http.fault", fault);
        entry["disabled"] = json!(true);
        let routes = json!([
            {"match": {"prefix": "/on"}, "route": {"cluster": "a"},
             "typed_per_filter_config": {"envoy.filters.http.fault": {"@type": FILTER_CONFIG, "config": {
                 "@type": FAULT, "abort": {"http_status": 409, "percentage": percent(100)}}}}},
            route_to("/", "a", json!({})),
        ]);
        let s = Scene::with(
            peer,
            "fault_enable_per_route",
            chain(vec![entry]),
            routes,
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        Some((get(s.port, "/on").status, get(s.port, "/").status))
    });
    assert_eq!(out, (409, 200));
}

#[test]
fn fault_abort_percentage_is_sampled() {
    let up = HttpUpstream::named("a");
    let fault = json!({"@type": FAULT, "abort": {"http_status": 503, "percentage": percent(30)}});
    let s = Scene::with(
        Peer::Shardproxy,
        "fault_sampled",
        chain(vec![http_filter("envoy.filters.http.fault", fault)]),
        to_a(json!({})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    )
    .unwrap();
    let mut c = Client::connect(s.port);
    let aborted = (0..300).filter(|_| c.get("/").status == 503).count();
    assert!(
        (50..=130).contains(&aborted),
        "{aborted} of 300 aborted at 30 %"
    );
    assert_eq!(up.count(), 300 - aborted);
}

// ---------------------------------------------------------------------------------------------
// CORS

fn cors_scene(peer: Peer, tag: &str, up: &HttpUpstream, policy: Value) -> Option<Scene> {
    let mut policy = policy;
    policy["@type"] = json!(CORS_POLICY);
    let hosts = json!([{
        "name": "cors",
        "domains": ["*"],
        "routes": to_a(json!({})),
        "typed_per_filter_config": {"envoy.filters.http.cors": policy},
    }]);
    Scene::with_hosts(
        peer,
        tag,
        chain(vec![http_filter(
            "envoy.filters.http.cors",
            json!({"@type": CORS}),
        )]),
        hosts,
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    )
}

/// The CORS response headers of `r`, sorted.
fn cors_headers(r: &Resp) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    v.sort();
    v
}

#[test]
fn cors_preflight_simple_and_bad_origin() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = cors_scene(
            peer,
            "cors",
            &up,
            json!({
                "allow_origin_string_match": [{"exact": "https://good.example"}, {"suffix": ".trusted.example"}],
                "allow_methods": "GET, PUT",
                "allow_headers": "x-custom",
                "expose_headers": "x-exposed",
                "max_age": "600",
                "allow_credentials": true,
            }),
        )?;
        let mut c = Client::connect(s.port);
        let preflight = c.request(
            "OPTIONS",
            "/thing",
            &[
                ("origin", "https://good.example"),
                ("access-control-request-method", "PUT"),
            ],
            b"",
        );
        let after_preflight = up.count();
        let simple = c.request(
            "GET",
            "/thing",
            &[("origin", "https://app.trusted.example")],
            b"",
        );
        let bad = c.request("GET", "/thing", &[("origin", "https://evil.example")], b"");
        let bad_preflight = c.request(
            "OPTIONS",
            "/thing",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "PUT"),
            ],
            b"",
        );
        let none = c.get("/thing");
        Some(vec![
            (preflight.status, cors_headers(&preflight), after_preflight),
            (simple.status, cors_headers(&simple), 0),
            (bad.status, cors_headers(&bad), 0),
            (bad_preflight.status, cors_headers(&bad_preflight), 0),
            (none.status, cors_headers(&none), up.count()),
        ])
    });
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        out,
        vec![
            (
                200,
                h(&[
                    ("access-control-allow-credentials", "true"),
                    ("access-control-allow-headers", "x-custom"),
                    ("access-control-allow-methods", "GET, PUT"),
                    ("access-control-allow-origin", "https://good.example"),
                    ("access-control-expose-headers", "x-exposed"),
                    ("access-control-max-age", "600"),
                ]),
                0
            ),
            (
                200,
                h(&[
                    ("access-control-allow-credentials", "true"),
                    ("access-control-allow-origin", "https://app.trusted.example"),
                    ("access-control-expose-headers", "x-exposed"),
                ]),
                0
            ),
            (200, vec![], 0),
            (200, vec![], 0),
            (200, vec![], 4),
        ]
    );
}

#[test]
fn cors_wildcard_origin_and_star_headers() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = cors_scene(
            peer,
            "cors_star",
            &up,
            json!({
                "allow_origin_string_match": [{"exact": "*"}],
                "allow_methods": "*",
                "allow_headers": "*",
            }),
        )?;
        let preflight = fetch(
            s.port,
            "OPTIONS",
            "/",
            &[
                ("origin", "https://anyone.example"),
                ("access-control-request-method", "DELETE"),
                ("access-control-request-headers", "x-one, x-two"),
            ],
            b"",
        );
        Some((preflight.status, cors_headers(&preflight), up.count()))
    });
    assert_eq!(out.0, 200);
    assert_eq!(out.2, 0);
}

// ---------------------------------------------------------------------------------------------
// Local rate limit

fn ratelimit(max_tokens: u32, extra: Value) -> Value {
    let mut v = json!({
        "@type": LOCAL_RATELIMIT,
        "stat_prefix": "rl",
        "token_bucket": {"max_tokens": max_tokens, "tokens_per_fill": max_tokens, "fill_interval": "60s"},
        "filter_enabled": {"default_value": percent(100), "runtime_key": "rl_enabled"},
        "filter_enforced": {"default_value": percent(100), "runtime_key": "rl_enforced"},
    });
    merge(&mut v, extra);
    v
}

/// The `http_local_rate_limit` counters in a /stats text, name → value.
fn rl_stats(body: &str) -> Vec<(String, i64)> {
    parse_stats(body)
        .into_iter()
        .filter(|(k, _)| k.contains("http_local_rate_limit"))
        .collect()
}

/// A scene rate limiting every request with a 5-token bucket (no refill within the test).
fn ratelimit_scene(peer: Peer, tag: &str, up: &HttpUpstream) -> Option<Scene> {
    let rl = ratelimit(
        5,
        json!({"response_headers_to_add": [{"header": {"key": "x-limited-by", "value": "e2e"}}]}),
    );
    Scene::with(
        peer,
        tag,
        chain(vec![http_filter("envoy.filters.http.local_ratelimit", rl)]),
        to_a(json!({})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    )
}

#[test]
fn local_ratelimit_token_bucket() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = ratelimit_scene(peer, "ratelimit", &up)?;
        let mut c = Client::connect(s.port);
        let statuses: Vec<u16> = (0..5).map(|_| c.get("/").status).collect();
        let limited = c.get("/");
        let fresh = get(s.port, "/");
        let flags = s.flags(5);
        let stats: Vec<(String, i64)> = rl_stats(&http_get(addr(s.admin), "/stats").unwrap().body)
            .into_iter()
            .filter(|(k, _)| !k.ends_with(".shadow_mode"))
            .collect();
        Some((
            statuses,
            limited.status,
            limited.text(),
            limited.header("x-limited-by").map(str::to_string),
            fresh.status,
            flags,
            up.count(),
            stats,
        ))
    });
    assert_eq!(out.0, vec![200; 5]);
    assert_eq!(out.1, 429);
    assert_eq!(out.2, "local_rate_limited");
    assert_eq!(out.3.as_deref(), Some("e2e"));
    assert_eq!(out.4, 429);
    assert_eq!(out.5, "RL");
    assert_eq!(out.6, 5);
}

#[test]
fn local_ratelimit_429_headers_and_stats_as_envoy() {
    // Envoy 1.40 sends no `x-envoy-ratelimited` on a local rate limit reply (its docs say it
    // does), and has a `shadow_mode` counter.
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let s = ratelimit_scene(peer, "ratelimit_headers", &up)?;
        let mut c = Client::connect(s.port);
        for _ in 0..5 {
            c.get("/");
        }
        let limited = c.get("/");
        let names: Vec<String> = rl_stats(&http_get(addr(s.admin), "/stats").unwrap().body)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        Some((
            limited.status,
            limited.header("x-envoy-ratelimited").map(str::to_string),
            names,
        ))
    });
    assert_eq!((out.0, out.1), (429, None));
    assert!(
        out.2.iter().any(|n| n.ends_with(".shadow_mode")),
        "{:?}",
        out.2
    );
}

#[test]
fn local_ratelimit_holds_for_the_whole_process_across_shards() {
    // Two shards, each with its own SO_REUSEPORT listener: 60 concurrent connections are
    // spread over both by the kernel. The process admits the bucket's 20, not 20 per shard.
    let up = HttpUpstream::named("a");
    let rl = ratelimit(20, json!({}));
    let dir = TempDir::new("ratelimit_shards");
    let manager = hcm(
        "ingress",
        any_host(to_a(json!({}))),
        chain(vec![http_filter("envoy.filters.http.local_ratelimit", rl)]),
    );
    let b = bootstrap(
        0,
        vec![http_listener("http", 0, manager)],
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    );
    let p = Proxy::builder("ratelimit_shards", &b)
        .args(&["--concurrency", "2"])
        .start();
    let port = p.port("http");
    let clients: Vec<Client> = (0..60).map(|_| Client::connect(port)).collect();
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| thread::spawn(move || c.get("/").status))
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (20, 40), "statuses: {statuses:?}");
    assert_eq!(up.count(), 20);
    let stats = rl_stats(&p.get("/stats").body);
    let get = |suffix: &str| {
        stats
            .iter()
            .find(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| *v)
    };
    assert_eq!(get(".rate_limited"), Some(40), "{stats:?}");
    assert_eq!(get(".ok"), Some(20), "{stats:?}");
    drop(dir);
}

#[test]
fn local_ratelimit_refills() {
    let up = HttpUpstream::named("a");
    let rl = json!({
        "@type": LOCAL_RATELIMIT,
        "stat_prefix": "rl",
        "token_bucket": {"max_tokens": 2, "tokens_per_fill": 2, "fill_interval": "1s"},
        "filter_enabled": {"default_value": percent(100)},
        "filter_enforced": {"default_value": percent(100)},
    });
    let s = Scene::with(
        Peer::Shardproxy,
        "ratelimit_refill",
        chain(vec![http_filter("envoy.filters.http.local_ratelimit", rl)]),
        to_a(json!({})),
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    )
    .unwrap();
    let mut c = Client::connect(s.port);
    let first: Vec<u16> = (0..3).map(|_| c.get("/").status).collect();
    assert_eq!(first, vec![200, 200, 429]);
    thread::sleep(ms(1200));
    let second: Vec<u16> = (0..3).map(|_| c.get("/").status).collect();
    assert_eq!(second, vec![200, 200, 429]);
}

// ---------------------------------------------------------------------------------------------
// Header mutation

#[test]
fn header_mutation_request_and_response() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::start(|_| {
            Reply::with_headers(200, &[("x-internal", "secret"), ("x-keep", "1")], "body")
        });
        let mutation = json!({"@type": HEADER_MUTATION, "mutations": {
            "request_mutations": [
                {"append": {"header": {"key": "x-added", "value": "chain"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}},
                {"append": {"header": {"key": "x-only-if-absent", "value": "default"}, "append_action": "ADD_IF_ABSENT"}},
                {"append": {"header": {"key": "x-overwrite", "value": "new"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}},
                {"remove": "x-secret"},
            ],
            "response_mutations": [
                {"append": {"header": {"key": "x-resp", "value": "added"}}},
                {"remove": "x-internal"},
            ],
        }});
        let routes = json!([
            {"match": {"prefix": "/route"}, "route": {"cluster": "a"},
             "typed_per_filter_config": {"envoy.filters.http.header_mutation": {
                 "@type": HEADER_MUTATION_PER_ROUTE, "mutations": {
                     "request_mutations": [{"append": {"header": {"key": "x-added", "value": "route"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}}],
                     "response_mutations": [{"remove": "x-keep"}],
                 }}}},
            route_to("/", "a", json!({})),
        ]);
        let s = Scene::with(
            peer,
            "header_mutation",
            chain(vec![http_filter(
                "envoy.filters.http.header_mutation",
                mutation,
            )]),
            routes,
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut out = Vec::new();
        for path in ["/", "/route"] {
            let r = fetch(
                s.port,
                "GET",
                path,
                &[
                    ("x-added", "client"),
                    ("x-only-if-absent", "mine"),
                    ("x-overwrite", "old"),
                    ("x-secret", "hide me"),
                ],
                b"",
            );
            let req = up.last();
            let all = |name: &str| req.header_all(name).join("|");
            out.push((
                path,
                all("x-added"),
                all("x-only-if-absent"),
                all("x-overwrite"),
                req.header("x-secret").is_some(),
                r.header("x-resp").map(str::to_string),
                r.header("x-internal").is_some(),
                r.header("x-keep").map(str::to_string),
            ));
        }
        Some(out)
    });
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        out[0],
        (
            "/",
            "client|chain".to_string(),
            "mine".to_string(),
            "new".to_string(),
            false,
            s("added"),
            false,
            s("1")
        )
    );
    assert_eq!(
        out[1].7, None,
        "the route's response mutation removes x-keep"
    );
}

#[test]
fn local_ratelimit_per_route_bucket() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let chain_config = json!({"@type": LOCAL_RATELIMIT, "stat_prefix": "rl"});
        let mut per_route = ratelimit(2, json!({}));
        per_route["stat_prefix"] = json!("route_rl");
        let routes = json!([
            {"match": {"prefix": "/limited"}, "route": {"cluster": "a"},
             "typed_per_filter_config": {"envoy.filters.http.local_ratelimit": per_route}},
            route_to("/", "a", json!({})),
        ]);
        let s = Scene::with(
            peer,
            "ratelimit_route",
            chain(vec![http_filter(
                "envoy.filters.http.local_ratelimit",
                chain_config,
            )]),
            routes,
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut c = Client::connect(s.port);
        let limited: Vec<u16> = (0..4).map(|_| c.get("/limited").status).collect();
        let free: Vec<u16> = (0..4).map(|_| c.get("/free").status).collect();
        Some((limited, free))
    });
    assert_eq!(out, (vec![200, 200, 429, 429], vec![200; 4]));
}

#[test]
fn fault_only_for_matching_headers() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let fault = json!({
            "@type": FAULT,
            "abort": {"http_status": 503, "percentage": percent(100)},
            "headers": [{"name": "x-chaos", "string_match": {"exact": "on"}}],
        });
        let s = Scene::with(
            peer,
            "fault_headers_match",
            chain(vec![http_filter("envoy.filters.http.fault", fault)]),
            to_a(json!({})),
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut c = Client::connect(s.port);
        Some(vec![
            c.get("/").status,
            c.request("GET", "/", &[("x-chaos", "on")], b"").status,
            c.request("GET", "/", &[("x-chaos", "off")], b"").status,
        ])
    });
    assert_eq!(out, vec![200, 503, 200]);
}

#[test]
fn cors_route_policy_overrides_the_virtual_host() {
    let out = same_as_envoy(|peer| {
        let up = HttpUpstream::named("a");
        let route_policy = json!({
            "@type": CORS_POLICY,
            "allow_origin_string_match": [{"exact": "https://route.example"}],
            "allow_methods": "POST",
        });
        let hosts = json!([{
            "name": "cors",
            "domains": ["*"],
            "routes": [
                {"match": {"prefix": "/special"}, "route": {"cluster": "a"},
                 "typed_per_filter_config": {"envoy.filters.http.cors": route_policy}},
                route_to("/", "a", json!({})),
            ],
            "typed_per_filter_config": {"envoy.filters.http.cors": {
                "@type": CORS_POLICY,
                "allow_origin_string_match": [{"exact": "https://host.example"}],
                "allow_methods": "GET",
                "max_age": "60",
            }},
        }]);
        let s = Scene::with_hosts(
            peer,
            "cors_route",
            chain(vec![http_filter(
                "envoy.filters.http.cors",
                json!({"@type": CORS}),
            )]),
            hosts,
            vec![cluster("a", &[(up.port, 1)], json!(null))],
        )?;
        let mut out = Vec::new();
        for (path, origin) in [
            ("/special", "https://route.example"),
            ("/special", "https://host.example"),
            ("/", "https://host.example"),
            ("/", "https://route.example"),
        ] {
            let r = fetch(
                s.port,
                "OPTIONS",
                path,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                ],
                b"",
            );
            out.push((path, origin, r.status, cors_headers(&r)));
        }
        Some((out, up.count()))
    });
    assert_eq!(out.0[0].2, 200);
}
