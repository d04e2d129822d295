//! Tests: `%COMMAND%` header values in route header mutations and `local_reply_config`
//! (mappers, body formats) end to end, each outcome compared with Envoy on the same bootstrap.
mod common;

use common::{http::try_curl, http_e2e::*, *};
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
    let seen = |r: Resp| {
        (
            r.status,
            r.header("content-type").map(str::to_string),
            r.text(),
            r.header("x-mapped").map(str::to_string),
        )
    };
    let mut out: Vec<ReplySeen> = ["/nowhere-x", "/dead", "/direct"]
        .iter()
        .map(|path| seen(get(s.port, path)))
        .collect();
    // The HTTP/1 codec's own replies and a refused upgrade are rewritten too.
    let upgrade = [("connection", "upgrade"), ("upgrade", "websocket")];
    for bytes in [
        b"GET / HTTP/1.1\r\nhost: a\r\nno colon\r\n\r\n".to_vec(),
        request_bytes("GET", "/direct", &upgrade, b""),
    ] {
        let mut client = Client::connect(s.port);
        client.send(&bytes);
        out.push(seen(client.read_response(false).unwrap()));
    }
    Some(out)
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
    assert_eq!(out[3].2, "400 [Bad Request] -\n");
    assert_eq!(out[4].2, "403 [] -\n");
}

/// Access log lines in `json_format` (plain and `omit_empty_values`) and JSON local reply
/// bodies, as each proxy writes them: values that differ between runs (times, durations, ids)
/// are masked after their type is checked.
#[derive(Debug, PartialEq)]
struct JsonSeen {
    replies: Vec<ReplySeen>,
    content_lengths: Vec<Option<String>>,
    log: String,
    omitting_log: String,
}

fn json_log(path: &std::path::Path, omit_empty: bool) -> Value {
    json!({"name": "envoy.access_loggers.file", "typed_config": {
        "@type": FILE_LOG,
        "path": path.to_str().unwrap(),
        "log_format": {
            "omit_empty_values": omit_empty,
            "json_format": {
                "code": "%RESPONSE_CODE%",
                "dur": "%DURATION%",
                "sent": "%BYTES_SENT%",
                "received": "%BYTES_RECEIVED%",
                "id": "%CONNECTION_ID%",
                "start": "%START_TIME%",
                "path": "%REQ(:PATH)%",
                "esc": "%REQ(x-esc)%",
                "miss": "%REQ(x-missing)%",
                "mid": "m=%REQ(x-missing)% c=%RESPONSE_CODE%",
                "flags": "%RESPONSE_FLAGS%",
                "proto": "%PROTOCOL%",
                "Zed": "%UPSTREAM_CLUSTER%",
                "_u": "lit 100%%",
                "nested": {"b": "%UPSTREAM_CLUSTER%", "a": {"z": "%REQ(x-missing)%"}},
                "list": ["%RESPONSE_CODE%", "lit", 7, true, null, "%REQ(x-missing)%"],
                "none": null,
            },
        },
    }})
}

/// `line` with the values of `keys` replaced by their JSON type, so runs compare.
fn masked(line: &str, keys: &[&str]) -> String {
    let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    keys.iter().fold(line.to_string(), |line, key| {
        let v = &value[key];
        let kind = if v.is_u64() { "<number>" } else { "<string>" };
        assert!(v.is_u64() || v.is_string(), "{key} in {line}");
        line.replace(&format!("\"{key}\":{v}"), &format!("\"{key}\":{kind}"))
    })
}

fn json_outcome(peer: Peer) -> Option<JsonSeen> {
    let up = HttpUpstream::start(|_: &Req| Reply::ok("hello"));
    let dead = refused_port();
    let logs = TempDir::new("json-logs");
    let (log, omitting) = (logs.file("json.log"), logs.file("omitting.log"));
    let routes = json!([
        {"match": {"prefix": "/direct"}, "direct_response": {"status": 200, "body": {"inline_string": "line\n\"quoted\"\t\u{1}"}}},
        {"match": {"prefix": "/dead"}, "route": {"cluster": "dead"}},
        {"match": {"prefix": "/up"}, "route": {"cluster": "a"}},
    ]);
    let hcm = json!({
        "access_log": [json_log(&log, false), json_log(&omitting, true)],
        "local_reply_config": {
            "mappers": [
                {"filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 503, "runtime_key": "k"}}}},
                 "body_format_override": {"json_format": {"error": "%LOCAL_REPLY_BODY%", "gone": "%REQ(x-missing)%"}, "omit_empty_values": true}},
            ],
            "body_format": {"json_format": {
                "status": "%RESPONSE_CODE%",
                "message": "%LOCAL_REPLY_BODY%",
                "detail": {"flags": "%RESPONSE_FLAGS%", "path": "%REQ(:PATH)%", "cluster": "%UPSTREAM_CLUSTER%"},
            }},
        },
    });
    let clusters = vec![
        cluster("a", &[(up.port, 1)], json!(null)),
        cluster("dead", &[(dead, 1)], json!(null)),
    ];
    let s = Scene::with(peer, "json_formats", hcm, routes, clusters)?;
    let mut replies = Vec::new();
    let mut content_lengths = Vec::new();
    for path in ["/up", "/nowhere", "/dead", "/direct"] {
        let r = fetch(s.port, "GET", path, &[("x-esc", "q\"\\/é")], b"");
        content_lengths.push(r.header("content-length").map(str::to_string));
        replies.push((
            r.status,
            r.header("content-type").map(str::to_string),
            r.text(),
            None,
        ));
    }
    let whole = |path: &std::path::Path| {
        log_lines(path, 4);
        std::fs::read_to_string(path).unwrap()
    };
    let dynamic = ["dur", "id", "start"];
    let mask = |text: String| {
        assert!(text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|line| masked(line, &dynamic))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Some(JsonSeen {
        replies,
        content_lengths,
        log: mask(whole(&log)),
        omitting_log: mask(whole(&omitting)),
    })
}

#[test]
fn json_formats_render_as_envoy() {
    let out = same_as_envoy(json_outcome);
    let json = Some("application/json".to_string());
    assert_eq!(out.replies[0].2, "hello");
    assert_eq!(
        out.replies[1],
        (
            404,
            json.clone(),
            "{\"detail\":{\"cluster\":null,\"flags\":\"NR\",\"path\":\"/nowhere\"},\
             \"message\":\"\",\"status\":404}\n"
                .into(),
            None
        )
    );
    // The mapper's format leaves the missing value out.
    assert_eq!(
        out.replies[2],
        (
            503,
            json,
            "{\"error\":\"upstream connect error or disconnect/reset before headers. reset \
             reason: remote connection failure\"}\n"
                .into(),
            None
        )
    );
    assert_eq!(
        out.replies[3].2,
        "{\"detail\":{\"cluster\":null,\"flags\":\"-\",\"path\":\"/direct\"},\
         \"message\":\"line\\n\\\"quoted\\\"\\t\\u0001\",\"status\":200}\n"
    );
    let first = out.log.lines().next().unwrap();
    assert_eq!(
        first,
        "{\"Zed\":\"a\",\"_u\":\"lit 100%\",\"code\":200,\"dur\":<number>,\
         \"esc\":\"q\\\"\\\\/é\",\"flags\":\"-\",\"id\":<number>,\
         \"list\":[200,\"lit\",7,true,null,null],\"mid\":\"m=- c=200\",\"miss\":null,\
         \"nested\":{\"a\":{\"z\":null},\"b\":\"a\"},\"none\":null,\"path\":\"/up\",\
         \"proto\":\"HTTP/1.1\",\"received\":0,\"sent\":5,\"start\":<string>}"
    );
    let first = out.omitting_log.lines().next().unwrap();
    assert_eq!(
        first,
        "{\"Zed\":\"a\",\"_u\":\"lit 100%\",\"code\":200,\"dur\":<number>,\
         \"esc\":\"q\\\"\\\\/é\",\"flags\":\"-\",\"id\":<number>,\
         \"list\":[200,\"lit\",7,true],\"mid\":\"m= c=200\",\
         \"nested\":{\"b\":\"a\"},\"path\":\"/up\",\
         \"proto\":\"HTTP/1.1\",\"received\":0,\"sent\":5,\"start\":<string>}"
    );
}

/// A local reply as a client saw it: status, the sorted header names, the values of the
/// headers that describe a reply, and the body.
#[derive(Debug, PartialEq)]
struct LocalSeen {
    case: &'static str,
    status: u16,
    names: Vec<String>,
    values: Vec<(&'static str, Option<String>)>,
    body: String,
}

const DESCRIBING: [&str; 4] = ["content-type", "content-length", "server", "connection"];

fn seen(case: &'static str, status: u16, headers: &[(String, String)], body: String) -> LocalSeen {
    let mut names: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    LocalSeen {
        case,
        status,
        names,
        values: DESCRIBING.iter().map(|n| (*n, value(n))).collect(),
        body,
    }
}

/// Every kind of local reply, over HTTP/1.1 (raw requests on a socket) and over h2c (curl
/// with prior knowledge), on one bootstrap. (No 413: shardproxy has no filter that buffers a
/// whole request, the only way Envoy answers one.)
fn local_replies_outcome(peer: Peer) -> Option<Vec<LocalSeen>> {
    let slow = HttpUpstream::start(|_: &Req| Reply::after(2_000, Reply::ok("late")));
    let dead = refused_port();
    let routes = json!([
        {"match": {"prefix": "/direct"}, "direct_response": {"status": 200, "body": {"inline_string": "as is"}}},
        {"match": {"prefix": "/empty-direct"}, "direct_response": {"status": 503}},
        {"match": {"prefix": "/redirect"}, "redirect": {"path_redirect": "/elsewhere"}},
        {"match": {"prefix": "/dead"}, "route": {"cluster": "dead"}},
        {"match": {"prefix": "/no-hosts"}, "route": {"cluster": "empty"}},
        {"match": {"prefix": "/slow"}, "route": {"cluster": "slow", "timeout": "0.2s"}},
    ]);
    let hcm = json!({"max_request_headers_kb": 2});
    let clusters = vec![
        cluster("dead", &[(dead, 1)], json!(null)),
        cluster("empty", &[], json!(null)),
        cluster("slow", &[(slow.port, 1)], json!(null)),
    ];
    let s = Scene::with(peer, "local_replies", hcm, routes, clusters)?;
    let paths = [
        ("404 no route", "/nowhere"),
        ("direct response", "/direct"),
        ("empty direct response", "/empty-direct"),
        ("redirect", "/redirect"),
        ("503 connection refused", "/dead"),
        ("503 no healthy host", "/no-hosts"),
        ("504 upstream timeout", "/slow"),
    ];
    let mut out = Vec::new();
    for (case, path) in paths {
        let r = get(s.port, path);
        out.push(seen(case, r.status, &r.headers, r.text()));
    }
    let big = "x".repeat(3_000);
    let raw: [(&'static str, Vec<u8>); 3] = [
        (
            "400 malformed",
            b"GET / HTTP/1.1\r\nhost: a\r\nno colon\r\n\r\n".to_vec(),
        ),
        (
            "431 headers too large",
            request_bytes("GET", "/direct", &[("x-big", &big)], b""),
        ),
        (
            "403 upgrade refused",
            request_bytes(
                "GET",
                "/direct",
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                b"",
            ),
        ),
    ];
    for (case, bytes) in raw {
        let mut client = Client::connect(s.port);
        client.send(&bytes);
        let r = client.read_response(false).unwrap();
        out.push(seen(case, r.status, &r.headers, r.text()));
    }
    let h2c = |case, path: &str, extra: &[&str]| {
        let url = format!("http://127.0.0.1:{}{path}", s.port);
        let args: Vec<&str> = ["--http2-prior-knowledge", url.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        match try_curl(&args) {
            Ok(r) => seen(case, r.status, &r.headers, r.body),
            // A reset stream: curl's exit code stands for the reply.
            Err((code, _)) => seen(case, 0, &[], format!("curl exit {code}")),
        }
    };
    for (case, path) in paths {
        out.push(h2c(case, path, &[]));
    }
    // An HTTP/2 header list over the limit is not compared: the h2 crate answers 431 itself
    // where Envoy resets the stream (docs/http-differences.md).
    Some(out)
}

/// Cases printed one a line, so a difference between the proxies is easy to find.
#[derive(PartialEq)]
struct Cases(Vec<LocalSeen>);

impl std::fmt::Debug for Cases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|case| write!(f, "\n  {case:?}"))
    }
}

#[test]
fn local_replies_carry_envoys_status_headers_and_body() {
    let Cases(out) = same_as_envoy(|peer| local_replies_outcome(peer).map(Cases));
    let statuses: Vec<u16> = out.iter().map(|case| case.status).collect();
    assert_eq!(
        statuses,
        [404, 200, 503, 301, 503, 503, 504, 400, 431, 403, 404, 200, 503, 301, 503, 503, 504]
    );
    // Over HTTP/2 a reply without a body has no content-length.
    assert_eq!(out[10].values[1], ("content-length", None));
}
