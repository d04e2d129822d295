//! HTTP filters: `envoy.filters.http.ext_authz` — asks the authorization service (gRPC, or an
//! HTTP `http_service`) whether a request may go on (its head, and its body buffered first
//! under `with_request_body`), with
//! the route's context extensions; an allowed request goes on with the service's header
//! changes (and its response gets the service's response headers), a denied one is answered
//! with the service's status, headers and body, and an error (no answer, failed call) refuses
//! it with `status_on_error` unless `failure_mode_allow` — all as Envoy 1.40.
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use envoy_types::pb::{
    envoy::service::auth::v3::{
        attribute_context::{HttpRequest, Request},
        CheckRequest,
    },
    google::protobuf::{Struct, Timestamp},
};
use model::{
    access_log::ResponseFlags,
    ext_authz::{AuthzService, BodyOverride, BodySettings, HttpExtAuthz},
    filters::{HttpFilter, PerRouteFilter},
    stats::inc,
};

use super::{per_route_levels, sampled};
use crate::{
    filters::ext_authz::{
        attributes::{connection_attributes, Connection, Include},
        client, http_client,
        verdict::{Allowed, Denied, HeaderChange, Verdict},
    },
    protocol::http1::reason_phrase,
    stream::{
        body::{BodyFailure, RequestBody},
        headers::{RequestHead, ResponseHead},
        mutations, FilterResult, LocalReply, StreamContext,
    },
};

/// Envoy's response code details.
const DENIED: &str = "ext_authz_denied";
const ERROR: &str = "ext_authz_error";
/// The check-request header that says whether the body sent is all of it.
const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";
/// What an allowed-on-error request carries upstream.
const FAILURE_MODE_ALLOWED: &str = "x-envoy-auth-failure-mode-allowed";

pub(super) async fn on_request(
    filter: &HttpFilter,
    config: &HttpExtAuthz,
    cx: &StreamContext<'_>,
    request: &mut RequestHead,
    body: Option<&mut RequestBody<'_>>,
) -> FilterResult {
    // Without a route Envoy skips the check.
    if cx.route.is_none() {
        return FilterResult::Continue;
    }
    let cells = config.stats.shard(cx.shard.id);
    let enabled_by_metadata = || {
        config
            .filter_enabled_metadata
            .as_ref()
            .is_none_or(|m| m.matches(&cx.notes.metadata()))
    };
    if config.filter_enabled.is_some_and(|share| !sampled(share)) || !enabled_by_metadata() {
        inc(&cells.disabled);
        return match config.deny_at_disable {
            true => FilterResult::Respond(error_reply(config)),
            false => FilterResult::Continue,
        };
    }
    let levels = per_route_levels(filter, cx).map(|level| match level {
        Some(PerRouteFilter::ExtAuthz(settings)) => Some(&**settings),
        _ => None,
    });
    let settings = match levels.iter().flatten().map(|l| l.body).next() {
        None | Some(BodyOverride::Inherit) => config.with_request_body,
        Some(BodyOverride::Disabled) => None,
        Some(BodyOverride::Settings(settings)) => Some(settings),
    };
    let declared_length = body.as_ref().and_then(|b| b.declared_length);
    let buffered = match (settings, body) {
        (Some(settings), Some(body)) if !body.is_done() && !is_upgrade(request) => {
            match buffer(cx, settings, body).await {
                Ok(read) => Some(Buffered {
                    settings,
                    read,
                    whole: body.all_received(),
                }),
                Err(reply) => return FilterResult::Respond(reply),
            }
        }
        _ => None,
    };
    let mut check = check_request(config, cx, request, declared_length, buffered);
    if let Some(attributes) = &mut check.attributes {
        // The virtual host's extensions, then the route's over them.
        for level in levels.iter().rev().flatten() {
            for (key, value) in &level.context_extensions {
                attributes
                    .context_extensions
                    .insert(key.clone(), value.clone());
            }
        }
    }
    let called = Instant::now();
    let verdict = match &config.service {
        AuthzService::Grpc(service) => client::check(cx.shard, service, &check).await,
        AuthzService::Http(service) => http_client::check(cx.shard, service, check).await,
    };
    match verdict {
        Verdict::Allowed(mut allowed) => {
            inc(&cells.ok);
            let took = Some(called.elapsed().as_millis() as u64);
            ingest(config, cx, allowed.metadata.take(), took);
            allow(cx, request, allowed);
            FilterResult::Continue
        }
        Verdict::Denied(mut denied) => {
            inc(&cells.denied);
            ingest(config, cx, denied.metadata.take(), None);
            FilterResult::Respond(deny(config, denied))
        }
        Verdict::Error => {
            inc(&cells.error);
            if !config.failure_mode_allow {
                return FilterResult::Respond(error_reply(config));
            }
            inc(&cells.failure_mode_allowed);
            if config.failure_mode_allow_header_add {
                request
                    .headers
                    .append(FAILURE_MODE_ALLOWED, Bytes::from_static(b"true"));
            }
            FilterResult::Continue
        }
    }
}

/// The namespace of the dynamic metadata this filter writes.
const NAMESPACE: &str = "envoy.filters.http.ext_authz";

/// Takes the service's dynamic metadata into the stream's (an allowed check's with
/// `ext_authz_duration`, in milliseconds, as Envoy adds it), unless ingestion is off.
fn ingest(
    config: &HttpExtAuthz,
    cx: &StreamContext<'_>,
    metadata: Option<Struct>,
    took: Option<u64>,
) {
    let Some(metadata) = metadata else {
        return;
    };
    if !config.ingest_metadata {
        inc(&config.stats.shard(cx.shard.id).ignored_dynamic_metadata);
        return;
    }
    let Ok(serde_json::Value::Object(fields)) = proto::try_to_json(&metadata) else {
        return;
    };
    let mut stream = cx.notes.metadata_mut();
    for (key, value) in fields {
        stream.set(NAMESPACE, &key, value);
    }
    if let Some(ms) = took {
        stream.set(NAMESPACE, "ext_authz_duration", serde_json::json!(ms));
    }
}

/// Adds the response headers an allowed check asked for.
pub(super) fn on_response(cx: &StreamContext<'_>, response: &mut ResponseHead) {
    for add in cx.notes.take_response_headers() {
        let value = match &add.value {
            model::route::HeaderValue::Literal(value) => value.clone(),
            model::route::HeaderValue::Formatted(_) => continue,
        };
        mutations::add_header(&add, value, &mut response.headers);
    }
}

/// Whether the request is a WebSocket (or other) upgrade, whose body is never buffered.
fn is_upgrade(request: &RequestHead) -> bool {
    request.headers.contains("upgrade") || request.method == "CONNECT"
}

/// Reads the body ahead of the router (which sends what was read, then the rest): all of it,
/// or with `allow_partial_message` up to `max_request_bytes`. A body larger than that
/// without it is answered 413, as Envoy's buffer limit answers.
async fn buffer(
    cx: &StreamContext<'_>,
    settings: BodySettings,
    body: &mut RequestBody<'_>,
) -> Result<Vec<u8>, LocalReply> {
    let max = settings.max_request_bytes as usize;
    // The router resends what is read here: it must all be kept.
    body.keep_at_least(max.saturating_add(MAX_CHUNK));
    let deadline = cx.hcm.timeouts.request.map(|t| cx.started + t);
    let mut read = Vec::new();
    loop {
        if settings.allow_partial_message && read.len() >= max {
            break;
        }
        match body.next(deadline).await {
            Ok(Some(chunk)) => read.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(failure) => return Err(body_failure(failure)),
        }
        if !settings.allow_partial_message && read.len() > max {
            return Err(LocalReply::new(413, "Payload Too Large")
                .detailed("request_payload_too_large".into()));
        }
    }
    Ok(read)
}

/// The body read for a check.
struct Buffered {
    settings: BodySettings,
    read: Vec<u8>,
    /// The body was read to its end.
    whole: bool,
}

/// The most a single chunk read from a client can add past `max_request_bytes`.
const MAX_CHUNK: usize = 1 << 20;

/// The answer to a body that could not be read for the check.
fn body_failure(failure: BodyFailure) -> LocalReply {
    match failure {
        BodyFailure::Malformed(error) => {
            let status = error.status();
            LocalReply::new(status, reason_phrase(status)).detailed(error.details().into())
        }
        BodyFailure::TimedOut => {
            LocalReply::new(408, "request timeout").detailed("request_overall_timeout".into())
        }
        BodyFailure::Disconnected | BodyFailure::BadGrpcWebText => LocalReply::new(400, "")
            .flagged(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION)
            .detailed("downstream_remote_disconnect".into()),
    }
}

/// The check request: the connection's attributes and the request's (`buffered`: the body
/// read under these settings).
fn check_request(
    config: &HttpExtAuthz,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    declared_length: Option<u64>,
    buffered: Option<Buffered>,
) -> CheckRequest {
    let connection = Connection {
        remote: cx.downstream.remote,
        local: cx.downstream.local,
        server_name: cx.downstream.requested_server_name,
        tls: cx.downstream.tls,
    };
    let include = Include {
        peer_certificate: config.include_peer_certificate,
        tls_session: config.include_tls_session,
    };
    let mut attributes = connection_attributes(&connection, include);
    if let (Some(source), Some(service)) = (
        &mut attributes.source,
        request.headers.get("x-envoy-downstream-service-cluster"),
    ) {
        source.service = String::from_utf8_lossy(service).into_owned();
    }
    attributes.route_metadata_context = Some(Default::default());
    let started = SystemTime::now() - cx.started.elapsed();
    let since_epoch = started.duration_since(UNIX_EPOCH).unwrap_or_default();
    attributes.request = Some(Request {
        time: Some(Timestamp {
            seconds: since_epoch.as_secs() as i64,
            nanos: since_epoch.subsec_nanos() as i32,
        }),
        http: Some(http_request(config, cx, request, declared_length, buffered)),
    });
    CheckRequest {
        attributes: Some(attributes),
    }
}

/// `request.http`: the head as Envoy's header map holds it (pseudo-headers, repeated headers
/// joined by `,`, an HTTP/1 request's `content-length`), the body read, and its size so far.
fn http_request(
    config: &HttpExtAuthz,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    declared_length: Option<u64>,
    buffered: Option<Buffered>,
) -> HttpRequest {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut http = HttpRequest {
        id: fastrand::u64(..).to_string(),
        method: text(&request.method),
        path: text(&request.path),
        host: text(request.authority()),
        scheme: cx.downstream.scheme.to_string(),
        protocol: request.version.as_str().to_string(),
        ..Default::default()
    };
    let headers = &mut http.headers;
    let selected = |name: &[u8]| config.headers.includes(name);
    for (name, value) in [
        (":authority", request.authority()),
        (":method", &request.method[..]),
        (":path", &request.path[..]),
        (":scheme", cx.downstream.scheme.as_bytes()),
    ] {
        if selected(name.as_bytes()) {
            headers.insert(name.to_string(), text(value));
        }
    }
    for header in request.headers.iter() {
        if header.name == "host" || !selected(&header.name) {
            continue;
        }
        headers
            .entry(text(&header.name))
            .and_modify(|v| {
                v.push(',');
                v.push_str(&String::from_utf8_lossy(&header.value));
            })
            .or_insert_with(|| text(&header.value));
    }
    if let Some(length) = declared_length.filter(|_| selected(b"content-length")) {
        headers
            .entry("content-length".to_string())
            .or_insert_with(|| length.to_string());
    }
    if let Some(Buffered {
        settings,
        read,
        whole,
    }) = buffered
    {
        http.size = read.len() as i64;
        let max = settings.max_request_bytes as usize;
        let sent = &read[..read.len().min(max)];
        let partial = !whole || sent.len() < read.len();
        headers.insert(PARTIAL_BODY.to_string(), partial.to_string());
        // An HTTP service gets the body's bytes as they are (Envoy packs them so).
        let as_bytes = settings.pack_as_bytes || matches!(config.service, AuthzService::Http(_));
        match as_bytes {
            true => http.raw_body = sent.to_vec(),
            false => http.body = text(sent),
        }
    }
    http
}

/// Applies an allowed check's changes: request headers set, appended to and removed; its
/// response headers noted for the response.
fn allow(cx: &StreamContext<'_>, request: &mut RequestHead, allowed: Allowed) {
    for header in allowed.headers {
        let (name, value) = (header.name, header.value);
        match header.how {
            // Every value goes and the new one comes last, as Envoy sets a header.
            HeaderChange::Set => {
                request.headers.remove(&name);
                request.headers.append(name, value);
            }
            HeaderChange::Add => request.headers.append(name, value),
            HeaderChange::AppendToExisting => {
                let Some(existing) = request.headers.get(&name) else {
                    continue;
                };
                let mut joined = existing.to_vec();
                joined.push(b',');
                joined.extend_from_slice(value.as_bytes());
                request.headers.set(name, joined);
            }
        }
    }
    for name in &allowed.headers_to_remove {
        let name = name.to_ascii_lowercase();
        // Pseudo-headers and `host` are never removed (Envoy's rule).
        if !name.starts_with(':') && name != "host" {
            request.headers.remove(&name);
        }
    }
    if !allowed.response_headers.is_empty() {
        cx.notes.set_response_headers(allowed.response_headers);
    }
}

/// The reply to a denied request: the service's status, headers and body.
fn deny(config: &HttpExtAuthz, denied: Denied) -> LocalReply {
    let mut body = denied.body;
    if let Some(max) = config.max_denied_body {
        body.truncate(max);
    }
    let mut reply = LocalReply::new(denied.status, body)
        .flagged(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE)
        .detailed(DENIED.into());
    for (name, value) in denied.headers {
        reply.headers.append(name, value);
    }
    reply
}

/// The reply to a request refused on an error (or when the filter is disabled and denies).
fn error_reply(config: &HttpExtAuthz) -> LocalReply {
    LocalReply::new(config.status_on_error, "")
        .flagged(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE)
        .detailed(ERROR.into())
}
