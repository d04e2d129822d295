//! External authorization: one `envoy.service.auth.v3.Authorization/Check` call over gRPC — the
//! `CheckRequest` framed as a gRPC message and sent to the service's cluster (`call`: HTTP/2
//! when the cluster speaks it), the `CheckResponse` read back within the service's timeout,
//! and what it decides.
use bytes::{Buf, Bytes};
use envoy_types::pb::envoy::{
    config::core::v3::{header_value_option::HeaderAppendAction, HeaderValueOption},
    service::auth::v3::{check_response::HttpResponse, CheckRequest, CheckResponse},
};
use model::{
    ext_authz::GrpcService,
    route::{AppendAction, HeaderAdd, HeaderValue},
};
use prost::Message;

use super::{
    call::{exchange, mark_internal},
    verdict::{Allowed, Denied, HeaderChange, RequestHeader, Verdict},
};
use crate::{
    context::ShardContext,
    protocol::http1::Framing,
    stream::{
        grpc,
        headers::{Headers, RequestHead, Version},
    },
};

/// The method every check calls.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

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
    let message = request.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let head = head(service);
    // As Envoy's gRPC client: no content-length.
    let answer = exchange(
        ctx,
        &service.cluster,
        &head,
        Bytes::from(framed),
        Framing::Chunked,
        service.timeout,
    )
    .await?;
    if answer.head.status != 200 {
        return Err("not HTTP 200");
    }
    // A trailers-only answer carries its status in the head.
    let status = grpc::status_of(&answer.head).or_else(|| grpc::status_in(&answer.trailers?));
    if status != Some(0) {
        return Err("gRPC status not OK");
    }
    let mut received = &answer.body[..];
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
    }
    mark_internal(&mut headers, service.timeout);
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
                .map(|h| (h.name, h.value))
                .collect(),
            body: Bytes::from(denied.body),
            metadata,
        }),
        (false, _) => Verdict::Denied(Denied {
            status: 403,
            headers: Vec::new(),
            body: Bytes::new(),
            metadata,
        }),
    }
}

/// A `HeaderValueOption` of `ok_response.headers` or `denied_response.headers`: its
/// lower-cased name and value, set (`append` unset or false) or appended to an existing value.
fn request_header(option: &HeaderValueOption) -> Option<RequestHeader> {
    let header = option.header.as_ref()?;
    #[allow(deprecated)]
    let how = match option.append.is_some_and(|a| a.value) {
        true => HeaderChange::AppendToExisting,
        false => HeaderChange::Set,
    };
    Some(RequestHeader {
        name: header.key.to_ascii_lowercase(),
        value: header.value.clone(),
        how,
    })
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
        let changes: Vec<_> = ok
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str(), h.how))
            .collect();
        assert_eq!(
            changes,
            [
                ("x-a", "1", HeaderChange::Set),
                ("x-b", "2", HeaderChange::AppendToExisting)
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
        assert_eq!((d.status, &d.body[..]), (403, &b""[..]));
        let Verdict::Denied(d) = verdict(denied(Some(HttpResponse::DeniedResponse(
            DeniedHttpResponse {
                status: Some(HttpStatus { code: 401 }),
                headers: vec![option("WWW-Authenticate", "Basic", None)],
                body: "no".into(),
            },
        )))) else {
            panic!()
        };
        assert_eq!((d.status, &d.body[..]), (401, &b"no"[..]));
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
