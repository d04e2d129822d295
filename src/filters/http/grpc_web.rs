//! HTTP filter `envoy.filters.http.grpc_web`: gRPC-Web clients (browsers) to gRPC upstreams.
//! A `application/grpc-web[-text][+proto]` request goes upstream as `application/grpc` (a
//! text body decoded from base64 by the request body), and its gRPC response comes back as
//! gRPC-Web: the content type rewritten, the trailers as a last message of the body (the
//! connection manager's response path, `stream::grpc_web::ResponseEncoder`), base64 again
//! for text clients.
use bytes::Bytes;

use crate::stream::{
    grpc,
    grpc_web::GrpcWebMode,
    headers::{RequestHead, ResponseHead},
    StreamContext,
};

const GRPC_WEB: &[u8] = b"application/grpc-web";
const GRPC_WEB_TEXT: &[u8] = b"application/grpc-web-text";

/// Takes a gRPC-Web request: noted on the stream, sent on as gRPC.
pub fn on_request(cx: &StreamContext<'_>, request: &mut RequestHead) {
    let Some(content_type) = request.headers.get("content-type") else {
        return;
    };
    if !content_type.starts_with(GRPC_WEB) {
        return;
    }
    let text_request = content_type.starts_with(GRPC_WEB_TEXT);
    let wants_text = request
        .headers
        .get("accept")
        .is_some_and(|a| a.windows(GRPC_WEB_TEXT.len()).any(|w| w == GRPC_WEB_TEXT));
    cx.notes.set_grpc_web(GrpcWebMode {
        text_request,
        text_response: wants_text,
    });
    request
        .headers
        .set("content-type", Bytes::from_static(b"application/grpc"));
    request.headers.set("te", Bytes::from_static(b"trailers"));
    if text_request {
        // The decoded body is shorter: its length is the upstream's framing to find.
        request.headers.remove("content-length");
    }
}

/// A gRPC response to a gRPC-Web request: gRPC-Web's content type, no length (the body
/// grows by the trailers message, and base64 for text).
pub fn on_response(cx: &StreamContext<'_>, response: &mut ResponseHead) {
    let Some(mode) = cx.notes.grpc_web() else {
        return;
    };
    if !grpc::is_grpc_response(response) {
        return;
    }
    let content_type: &'static [u8] = match mode.text_response {
        true => b"application/grpc-web-text+proto",
        false => b"application/grpc-web+proto",
    };
    response
        .headers
        .set("content-type", Bytes::from_static(content_type));
    response.headers.remove("content-length");
}
