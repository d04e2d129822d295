//! External authorization: one `envoy.service.auth.v3.Authorization/Check` call — the
//! `CheckRequest` framed as a gRPC message and sent through the router to the service's
//! cluster (the shard's own pools, HTTP/2 when the cluster speaks it), the `CheckResponse`
//! read back within the service's timeout, and what it decides.
use std::time::Instant;

use bytes::{Buf, Bytes};
use envoy_types::pb::{
    envoy::{
        config::core::v3::{header_value_option::HeaderAppendAction, HeaderValueOption},
        service::auth::v3::{check_response::HttpResponse, CheckRequest, CheckResponse},
    },
    google::protobuf::Struct,
};
use model::{
    ext_authz::GrpcService,
    route::{AppendAction, HeaderAdd, HeaderValue},
};
use prost::Message;

use crate::{
    context::ShardContext,
    protocol::http1::Framing,
    proxy::router::{self, deadline::Deadlines, Forwarding, Routed, RouterRecord},
    stream::{
        body::RequestBody,
        grpc,
        headers::{Headers, RequestHead, Version},
    },
};

/// The method every check calls.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// The largest `CheckResponse` read (gRPC's default receive limit).
const MAX_RESPONSE: usize = 4 << 20;

/// What the authorization service decided.
#[derive(Debug)]
pub enum Verdict {
    Allowed(Allowed),
    Denied(Denied),
    /// No decision: the service could not be reached, the call failed or timed out, or its
    /// answer was not a `CheckResponse`.
    Error,
}

/// `ok_response`: how the request and its response change.
#[derive(Debug, Default)]
pub struct Allowed {
    /// `headers`: each set (`append: false` or unset) or appended to an existing value
    /// (`append: true`; a header not there is not added), in order.
    pub headers: Vec<(String, String, bool)>,
    pub headers_to_remove: Vec<String>,
    /// `response_headers_to_add`, with their append actions.
    pub response_headers: Vec<HeaderAdd>,
    /// `dynamic_metadata` (the deprecated `ok_response.dynamic_metadata` first).
    pub metadata: Option<Struct>,
}

/// `denied_response`: the local reply.
#[derive(Debug)]
pub struct Denied {
    /// 403 unless the service names another.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub metadata: Option<Struct>,
}

/// Calls the service with `request` (never fails: a failure is `Verdict::Error`).
pub async fn check(ctx: &ShardContext, service: &GrpcService, request: &CheckRequest) -> Verdict {
    match call(ctx, service, request).await {
        Ok(response) => verdict(response),
        Err(reason) => {
            tracing::debug!(cluster = %service.cluster, reason, "ext_authz check failed");
            Verdict::Error
        }
    }
}

/// The call itself: the response, or why there is none.
async fn call(
    ctx: &ShardContext,
    service: &GrpcService,
    request: &CheckRequest,
) -> Result<CheckResponse, &'static str> {
    let cluster = ctx
        .clusters
        .borrow()
        .get(&service.cluster)
        .ok_or("no such cluster")?;
    let message = request.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let head = head(service);
    // As Envoy's gRPC client: no content-length.
    let framing = Framing::Chunked;
    let mut body = RequestBody::complete(vec![Bytes::from(framed)], None);
    let forwarding = Forwarding {
        cluster,
        head: &head,
        auto_host_rewrite: false,
        attempt_count: false,
        trailers: true,
        framing: &framing,
        is_head_request: false,
        retry: None,
        client_version: Version::Http2,
        alpn: None,
        destination: None,
        deadlines: Deadlines {
            route: service.timeout.map(|t| Instant::now() + t),
            request: None,
            stream_idle: None,
        },
    };
    let mut record = RouterRecord::default();
    let mut response = match router::forward(ctx, forwarding, &mut body, &mut record).await {
        Routed::Response(response) => response,
        Routed::Failed(_) => return Err("no response"),
        Routed::Downstream(_) => unreachable!("the request body is complete"),
    };
    if response.head.head.status != 200 {
        return Err("not HTTP 200");
    }
    // A trailers-only answer carries its status in the head.
    let head_status = grpc::status_of(&response.head.head);
    let mut received: Vec<u8> = Vec::new();
    while let Some(chunk) = response.body.next().await.map_err(|_| "body failed")? {
        if received.len() + chunk.len() > MAX_RESPONSE {
            return Err("response too large");
        }
        received.extend_from_slice(&chunk);
    }
    let status = head_status.or_else(|| grpc::status_in(&response.body.trailers()?));
    if status != Some(0) {
        return Err("gRPC status not OK");
    }
    let mut received = &received[..];
    if received.len() < 5 || received[0] != 0 {
        return Err("not one uncompressed gRPC message");
    }
    received.advance(1);
    let length = received.get_u32() as usize;
    if received.len() != length {
        return Err("not one gRPC message");
    }
    CheckResponse::decode(received).map_err(|_| "not a CheckResponse")
}

/// The call's request head: a gRPC POST to `:authority` with the deadline (`grpc-timeout`,
/// and Envoy's `x-envoy-expected-rq-timeout-ms`), as an internal request with the service's
/// `initial_metadata`.
fn head(service: &GrpcService) -> RequestHead {
    let mut headers = Headers::with_capacity(6 + service.initial_metadata.len());
    headers.append("host", service.authority.clone());
    headers.append("content-type", Bytes::from_static(b"application/grpc"));
    headers.append("te", Bytes::from_static(b"trailers"));
    if let Some(timeout) = service.timeout {
        let ms = timeout.as_millis().max(1);
        headers.append("grpc-timeout", format!("{ms}m"));
        headers.append("x-envoy-expected-rq-timeout-ms", ms.to_string());
    }
    headers.append("x-envoy-internal", Bytes::from_static(b"true"));
    for (name, value) in &service.initial_metadata {
        headers.append(name.clone(), value.clone());
    }
    RequestHead {
        method: Bytes::from_static(b"POST"),
        path: Bytes::from_static(CHECK_PATH.as_bytes()),
        version: Version::Http2,
        headers,
    }
}

/// What a `CheckResponse` decides, as Envoy reads it: `status.code` OK allows (with the
/// `ok_response` changes), anything else denies (403 unless `denied_response` says).
fn verdict(response: CheckResponse) -> Verdict {
    let allowed = response.status.as_ref().map_or(0, |s| s.code) == 0;
    #[allow(deprecated)]
    let metadata = match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) if ok.dynamic_metadata.is_some() => {
            ok.dynamic_metadata.clone()
        }
        _ => response.dynamic_metadata,
    }
    .filter(|m| !m.fields.is_empty());
    match (allowed, response.http_response) {
        (true, Some(HttpResponse::OkResponse(ok))) => Verdict::Allowed(Allowed {
            headers: ok.headers.iter().filter_map(request_header).collect(),
            headers_to_remove: ok.headers_to_remove,
            response_headers: ok
                .response_headers_to_add
                .iter()
                .filter_map(response_header)
                .collect(),
            metadata,
        }),
        (true, _) => Verdict::Allowed(Allowed {
            metadata,
            ..Default::default()
        }),
        (false, Some(HttpResponse::DeniedResponse(denied))) => Verdict::Denied(Denied {
            status: denied
                .status
                .map(|s| s.code)
                .filter(|c| (100..1000).contains(c))
                .map_or(403, |c| c as u16),
            headers: denied
                .headers
                .iter()
                .filter_map(request_header)
                .map(|(name, value, _)| (name, value))
                .collect(),
            body: denied.body,
            metadata,
        }),
        (false, _) => Verdict::Denied(Denied {
            status: 403,
            headers: Vec::new(),
            body: String::new(),
            metadata,
        }),
    }
}

/// A `HeaderValueOption` of `ok_response.headers` or `denied_response.headers`: its
/// lower-cased name, value and `append`.
fn request_header(option: &HeaderValueOption) -> Option<(String, String, bool)> {
    let header = option.header.as_ref()?;
    #[allow(deprecated)]
    let append = option.append.is_some_and(|a| a.value);
    Some((
        header.key.to_ascii_lowercase(),
        header.value.clone(),
        append,
    ))
}

/// A `response_headers_to_add` entry: `append` when set, else its `append_action`.
fn response_header(option: &HeaderValueOption) -> Option<HeaderAdd> {
    let header = option.header.as_ref()?;
    #[allow(deprecated)]
    let action = match (
        option.append,
        HeaderAppendAction::try_from(option.append_action),
    ) {
        (Some(append), _) if append.value => AppendAction::AppendIfExistsOrAdd,
        (Some(_), _) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AddIfAbsent)) => AppendAction::AddIfAbsent,
        (None, Ok(HeaderAppendAction::OverwriteIfExists)) => AppendAction::OverwriteIfExists,
        (None, Ok(HeaderAppendAction::OverwriteIfExistsOrAdd)) => {
            AppendAction::OverwriteIfExistsOrAdd
        }
        (None, _) => AppendAction::AppendIfExistsOrAdd,
    };
    Some(HeaderAdd {
        name: Bytes::from(header.key.to_ascii_lowercase()),
        value: HeaderValue::Literal(Bytes::from(header.value.clone())),
        action,
        keep_empty: true,
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::{
        envoy::{
            config::core::v3::HeaderValue as HeaderProto,
            r#type::v3::HttpStatus,
            service::auth::v3::{DeniedHttpResponse, OkHttpResponse},
        },
        google::{protobuf::BoolValue, rpc::Status},
    };

    use super::*;

    fn option(key: &str, value: &str, append: Option<bool>) -> HeaderValueOption {
        #[allow(deprecated)]
        HeaderValueOption {
            header: Some(HeaderProto {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append: append.map(|value| BoolValue { value }),
            ..Default::default()
        }
    }

    #[test]
    fn ok_responses_carry_their_changes() {
        let response = CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![option("X-A", "1", None), option("x-b", "2", Some(true))],
                headers_to_remove: vec!["x-c".into()],
                response_headers_to_add: vec![
                    option("x-r", "r", None),
                    option("x-s", "s", Some(false)),
                ],
                ..Default::default()
            })),
            ..Default::default()
        };
        let Verdict::Allowed(ok) = verdict(response) else {
            panic!()
        };
        assert_eq!(
            ok.headers,
            [
                ("x-a".into(), "1".into(), false),
                ("x-b".into(), "2".into(), true)
            ]
        );
        assert_eq!(ok.headers_to_remove, ["x-c"]);
        let actions: Vec<_> = ok.response_headers.iter().map(|h| h.action).collect();
        assert_eq!(
            actions,
            [
                AppendAction::AppendIfExistsOrAdd,
                AppendAction::OverwriteIfExistsOrAdd
            ]
        );
        assert!(matches!(
            verdict(CheckResponse::default()),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn denials_default_to_403() {
        let denied = |http_response| CheckResponse {
            status: Some(Status {
                code: 7,
                ..Default::default()
            }),
            http_response,
            ..Default::default()
        };
        let Verdict::Denied(d) = verdict(denied(None)) else {
            panic!()
        };
        assert_eq!((d.status, d.body.as_str()), (403, ""));
        let Verdict::Denied(d) = verdict(denied(Some(HttpResponse::DeniedResponse(
            DeniedHttpResponse {
                status: Some(HttpStatus { code: 401 }),
                headers: vec![option("WWW-Authenticate", "Basic", None)],
                body: "no".into(),
            },
        )))) else {
            panic!()
        };
        assert_eq!((d.status, d.body.as_str()), (401, "no"));
        assert_eq!(d.headers, [("www-authenticate".into(), "Basic".into())]);
    }

    #[test]
    fn the_call_is_a_grpc_post_with_its_deadline() {
        let service = GrpcService {
            cluster: "authz".into(),
            authority: "authz.local".into(),
            timeout: Some(std::time::Duration::from_millis(200)),
            initial_metadata: vec![("x-tenant".into(), "t".into())],
        };
        let head = head(&service);
        assert_eq!(head.path, CHECK_PATH);
        let get = |n: &str| head.headers.get(n).map(|v| v.to_vec());
        assert_eq!(get("host").unwrap(), b"authz.local");
        assert_eq!(get("grpc-timeout").unwrap(), b"200m");
        assert_eq!(get("x-envoy-expected-rq-timeout-ms").unwrap(), b"200");
        assert_eq!(get("x-tenant").unwrap(), b"t");
    }
}
