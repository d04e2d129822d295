//! External authorization: one check with an HTTP authorization service (`http_service`), as
//! Envoy's raw HTTP client makes it — the checked request's method, its path under the
//! service's prefix, the headers the filter selected and the body it read, sent to the
//! service's cluster; a 200 answer allows, a 5xx or none is an error, any other status denies;
//! the answer's headers go where the service's lists say.
use bytes::Bytes;
use envoy_types::pb::{
    envoy::service::auth::v3::{attribute_context::HttpRequest, CheckRequest},
    google::protobuf::{value::Kind, Struct, Value},
};
use model::{
    ext_authz::{CheckPath, HttpService},
    matchers::StringMatcher,
    route::{AppendAction, HeaderAdd, HeaderValue},
};

use super::{
    call::{exchange, mark_internal, Answer},
    verdict::{Allowed, Denied, HeaderChange, RequestHeader, Verdict},
};
use crate::{
    context::ShardContext,
    protocol::http1::Framing,
    stream::headers::{Headers, RequestHead, Version},
};

/// The answer header naming request headers an allowing service consumed (to be removed).
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Asks the service about `request` (never fails: a failure is `Verdict::Error`).
pub async fn check(ctx: &ShardContext, service: &HttpService, request: CheckRequest) -> Verdict {
    let http = request
        .attributes
        .and_then(|a| a.request)
        .and_then(|r| r.http)
        .unwrap_or_default();
    let (head, body) = check_request(service, http);
    // Every check says its length, an empty body's included (Envoy's `content-length: 0`).
    let framing = Framing::Length(body.len() as u64);
    let answer = exchange(ctx, &service.cluster, &head, body, framing, service.timeout).await;
    match answer {
        Ok(answer) if answer.head.status < 500 => verdict(service, answer),
        Ok(_) => {
            tracing::debug!(cluster = %service.cluster, "ext_authz check answered 5xx");
            Verdict::Error
        }
        Err(reason) => {
            tracing::debug!(cluster = %service.cluster, reason, "ext_authz check failed");
            Verdict::Error
        }
    }
}

/// The check's head and body: the request's method, path and authority (`host`), the headers
/// the filter selected but for pseudo-headers and `content-length`, the service's
/// `headers_to_add` over them, and the body read (bytes) or nothing.
fn check_request(service: &HttpService, http: HttpRequest) -> (RequestHead, Bytes) {
    let mut headers = Headers::with_capacity(http.headers.len() + service.headers_to_add.len() + 3);
    headers.append("host", http.host);
    for (name, value) in http.headers {
        if !name.starts_with(':') && name != "content-length" {
            headers.append(name, value);
        }
    }
    for (name, value) in &service.headers_to_add {
        headers.set(name.clone(), value.clone());
    }
    mark_internal(&mut headers, service.timeout);
    let path = match &service.path {
        CheckPath::Prefix(prefix) => format!("{prefix}{}", http.path),
        CheckPath::Override(path) => path.clone(),
    };
    let body = match http.raw_body.is_empty() {
        true => Bytes::from(http.body),
        false => Bytes::from(http.raw_body),
    };
    let head = RequestHead {
        method: Bytes::from(http.method),
        path: Bytes::from(path),
        version: Version::Http11,
        headers,
    };
    (head, body)
}

/// What an answer below 500 decides: 200 allows — the headers the service's lists name set on
/// or added to the request, added to the response, the request headers its
/// `x-envoy-auth-headers-to-remove` names removed — anything else denies with its status, the
/// client's headers and its body. Either way the headers `dynamic_metadata_from_headers`
/// names become dynamic metadata. The answer carries `x-envoy-upstream-service-time` as
/// Envoy's router adds it.
fn verdict(service: &HttpService, answer: Answer) -> Verdict {
    let Answer {
        head, body, took, ..
    } = answer;
    let mut headers = head.headers;
    let to_remove: Vec<String> = headers
        .iter()
        .filter(|h| h.name == HEADERS_TO_REMOVE)
        .flat_map(|h| {
            text(&h.value)
                .split(',')
                .map(str::trim)
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
        })
        .filter(|name| !name.is_empty())
        .collect();
    headers.remove(HEADERS_TO_REMOVE);
    headers.append(
        "x-envoy-upstream-service-time",
        took.as_millis().to_string(),
    );
    let named = |list: &[StringMatcher]| -> Vec<(String, String)> {
        headers
            .iter()
            .filter(|h| list.iter().any(|m| m.matches(&h.name)))
            .map(|h| (text(&h.name), text(&h.value)))
            .collect()
    };
    let metadata = metadata(named(&service.metadata));
    if head.status != 200 {
        return Verdict::Denied(Denied {
            status: head.status,
            headers: headers
                .iter()
                .filter(|h| service.client.includes(&h.name))
                .map(|h| (text(&h.name), text(&h.value)))
                .collect(),
            body,
            metadata,
        });
    }
    // Envoy sets the ones it sets first, then adds the others.
    let change = |how| move |(name, value)| RequestHeader { name, value, how };
    let sets = named(&service.upstream)
        .into_iter()
        .map(change(HeaderChange::Set));
    let adds = named(&service.upstream_to_append)
        .into_iter()
        .map(change(HeaderChange::Add));
    Verdict::Allowed(Allowed {
        headers: sets.chain(adds).collect(),
        headers_to_remove: to_remove,
        response_headers: named(&service.client_on_success)
            .into_iter()
            .map(|(name, value)| HeaderAdd {
                name: Bytes::from(name),
                value: HeaderValue::Literal(Bytes::from(value)),
                action: AppendAction::AppendIfExistsOrAdd,
                keep_empty: true,
            })
            .collect(),
        metadata,
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Headers as dynamic metadata: each name's (last) value, a string; none without any.
fn metadata(headers: Vec<(String, String)>) -> Option<Struct> {
    let fields = headers
        .into_iter()
        .map(|(name, value)| {
            let value = Value {
                kind: Some(Kind::StringValue(value)),
            };
            (name, value)
        })
        .collect();
    Some(Struct { fields }).filter(|s| !s.fields.is_empty())
}
