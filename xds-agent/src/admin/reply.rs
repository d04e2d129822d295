//! Admin replies: status, content type and a fully rendered body.
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS},
    Response, StatusCode,
};

pub const TEXT: &str = "text/plain; charset=UTF-8";
pub const JSON: &str = "application/json";

/// One admin response. Admin output is small, so it is rendered whole before sending.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    pub fn text(status: StatusCode, body: String) -> Self {
        Self {
            status,
            content_type: TEXT,
            body: body.into(),
        }
    }

    pub fn ok_text(body: String) -> Self {
        Self::text(StatusCode::OK, body)
    }

    pub fn bad_request(message: String) -> Self {
        let mut body = message;
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Self::text(StatusCode::BAD_REQUEST, body)
    }

    /// Pretty-printed JSON, as Envoy's admin prints it.
    pub fn json(value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_string_pretty(value).expect("a JSON value serialises");
        body.push('\n');
        Self {
            status: StatusCode::OK,
            content_type: JSON,
            body: body.into(),
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("no-cache, max-age=0"),
        );
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        response
    }
}
