//! Tests: `%COMMAND%` header values in route header mutations and `local_reply_config`
//! (mappers, body formats) end to end, each outcome compared with Envoy on the same bootstrap.
mod common;

use common::{http_e2e::*, *};
use serde_json::{json, Value};

fn add(key: &str, value: &str) -> Value {
    json!({"header": {"key": key, "value": value}})
}

/// The upstream's view of the request's added headers, and the client's of the response's.
fn header_outcome(peer: Peer) -> Option<Vec<(String, Option<String>)>> {
    let up = HttpUpstream::start(|req: &Req| {
        let seen: Vec<String> = [
            "x-client",
            "x-proto",
            "x-missing",
            "x-lit",
            "x-up",
            "x-copy",
        ]
        .iter()
        .map(|h| format!("{h}={}", req.header(h).unwrap_or("<none>")))
        .collect();
        Reply::with_headers(200, &[("x-seen", &seen.join(";"))], "ok")
    });
    let routes = json!([{
        "match": {"prefix": "/"},
        "route": {"cluster": "a"},
        "request_headers_to_add": [
            add("x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
            add("x-proto", "%PROTOCOL%"),
            add("x-missing", "%REQ(x-absent)%"),
            add("x-lit", "100%% sure"),
            add("x-up", "%UPSTREAM_HOST%"),
            add("x-copy", "[%REQ(x-in)%]"),
        ],
        "response_headers_to_add": [
            add("x-code", "%RESPONSE_CODE%"),
            add("x-echo", "%REQ(x-in)%/%RESP(x-seen):6%"),
            add("x-gone", "%RESP(x-absent)%"),
        ],
    }]);
    let s = Scene::start(
        peer,
        "header_formats",
        routes,
        vec![cluster("a", &[(up.port, 1)], json!(null))],
    )?;
    let r = fetch(s.port, "GET", "/", &[("x-in", "v")], b"");
    let names = ["x-seen", "x-code", "x-echo", "x-gone"];
    Some(
        names
            .iter()
            .map(|n| (n.to_string(), r.header(n).map(str::to_string)))
            .collect(),
    )
}

#[test]
fn header_values_render_commands_as_envoy() {
    let out = same_as_envoy(header_outcome);
    assert_eq!(
        out[0].1.as_deref(),
        Some("x-client=127.0.0.1;x-proto=HTTP/1.1;x-missing=<none>;x-lit=100% sure;x-up=<none>;x-copy=[v]")
    );
    assert_eq!(out[1].1.as_deref(), Some("200"));
    assert_eq!(out[2].1.as_deref(), Some("v/x-clie"));
    assert_eq!(out[3].1, None);
}

/// A reply's status, `content-type`, body and `x-mapped`.
type ReplySeen = (u16, Option<String>, String, Option<String>);

/// Status, content-type, body and `x-mapped` of the local replies to a missing route, a route
/// to a dead cluster and a direct response.
fn local_reply_outcome(peer: Peer) -> Option<Vec<ReplySeen>> {
    let dead = refused_port();
    let routes = json!([
        {"match": {"prefix": "/direct"}, "direct_response": {"status": 200, "body": {"inline_string": "as is"}}},
        {"match": {"prefix": "/dead"}, "route": {"cluster": "dead"}},
    ]);
    let hcm = json!({"local_reply_config": {
        "mappers": [
            {"filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 404, "runtime_key": "k"}}}},
             "status_code": 410,
             "headers_to_add": [add("x-mapped", "%RESPONSE_CODE%")],
             "body": {"inline_string": "gone"}},
            {"filter": {"response_flag_filter": {"flags": ["UF"]}},
             "body_format_override": {"text_format": "down: %LOCAL_REPLY_BODY% (%RESPONSE_FLAGS%)", "content_type": "text/x-down"}},
        ],
        "body_format": {"text_format": "%RESPONSE_CODE% [%LOCAL_REPLY_BODY%] %REQ(x-absent)%\n"},
    }});
    let clusters = vec![cluster("dead", &[(dead, 1)], json!(null))];
    let s = Scene::with(peer, "local_reply_config", hcm, routes, clusters)?;
    Some(
        ["/nowhere-x", "/dead", "/direct"]
            .iter()
            .map(|path| {
                let r = get(s.port, path);
                (
                    r.status,
                    r.header("content-type").map(str::to_string),
                    r.text(),
                    r.header("x-mapped").map(str::to_string),
                )
            })
            .collect(),
    )
}

#[test]
fn local_reply_config_rewrites_local_replies_as_envoy() {
    let out = same_as_envoy(local_reply_outcome);
    assert_eq!(out[0].0, 410);
    // The mapper's headers render before its status applies; the body format sees the new one.
    assert_eq!(out[0].2, "410 [gone] -\n");
    assert_eq!(out[0].3.as_deref(), Some("404"));
    assert_eq!(out[1].0, 503);
    assert_eq!(out[1].1.as_deref(), Some("text/x-down"));
    // A direct response is a local reply too (Envoy 1.40 formats its body).
    assert_eq!(
        out[2],
        (
            200,
            Some("text/plain".into()),
            "200 [as is] -\n".into(),
            None
        )
    );
}
