//! Protocol layer: why the HTTP/1 codec refused a message. Plain enums (nothing allocated);
//! each says the status to answer with and Envoy's response-code-details string.
use super::fields::FieldError;

/// A request the proxy must refuse. After any of these the connection must be closed once the
/// error response is written: the request's end cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request line")]
    BadRequestLine,
    #[error("method not in Envoy's HTTP/1 method list")]
    UnknownMethod,
    #[error("invalid byte in a header name (or obs-fold / space before the colon)")]
    InvalidHeaderName,
    #[error("invalid byte in a header value")]
    InvalidHeaderValue,
    #[error("malformed line ending")]
    InvalidLineEnding,
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    #[error("request line longer than the head limit")]
    RequestLineTooLong,
    #[error("request head larger than the limit")]
    HeadTooLarge,
    #[error("more headers than the limit")]
    TooManyHeaders,
    #[error("invalid request target")]
    InvalidTarget,
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("invalid Host header")]
    InvalidHost,
    #[error("invalid Content-Length")]
    InvalidContentLength,
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    #[error("chunked is not the final transfer coding")]
    ChunkedNotFinal,
    #[error("chunked applied more than once")]
    ChunkedTwice,
    #[error("empty Transfer-Encoding")]
    EmptyTransferEncoding,
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    #[error("Transfer-Encoding on an HTTP/1.0 request")]
    TransferEncodingOnHttp10,
    #[error("CONNECT request with a body")]
    ConnectWithBody,
    #[error("Connection header rejected")]
    ConnectionHeaderRejected,
}

impl RequestError {
    /// The status of the error response.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::UnsupportedVersion => 505,
            RequestError::RequestLineTooLong => 414,
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => 431,
            // Envoy answers 501 for a repeated chunked too (not a framing conflict: the body
            // is chunked either way); chunked not final stays a 400 (RFC 9112 §6.3).
            RequestError::UnsupportedTransferCoding | RequestError::ChunkedTwice => 501,
            _ => 400,
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` for the same refusal.
    pub fn details(&self) -> &'static str {
        match self {
            RequestError::InvalidHeaderName | RequestError::InvalidHeaderValue => {
                "http1.invalid_characters"
            }
            RequestError::RequestLineTooLong | RequestError::HeadTooLarge => {
                "http1.headers_too_large"
            }
            RequestError::TooManyHeaders => "http1.too_many_headers",
            RequestError::InvalidTarget => "http1.invalid_url",
            RequestError::MissingHost => "missing_host_header",
            RequestError::ContentLengthWithTransferEncoding => {
                "http1.content_length_and_chunked_not_allowed"
            }
            RequestError::ChunkedNotFinal
            | RequestError::ChunkedTwice
            | RequestError::EmptyTransferEncoding
            | RequestError::UnsupportedTransferCoding
            | RequestError::TransferEncodingOnHttp10 => "http1.invalid_transfer_encoding",
            RequestError::ConnectWithBody => "http1.body_disallowed",
            RequestError::ConnectionHeaderRejected => "http1.connection_header_rejected",
            RequestError::BadRequestLine
            | RequestError::UnknownMethod
            | RequestError::InvalidLineEnding
            | RequestError::UnsupportedVersion
            | RequestError::DuplicateHost
            | RequestError::InvalidHost
            | RequestError::InvalidContentLength
            | RequestError::DuplicateContentLength => "http1.codec_error",
        }
    }
}

impl From<FieldError> for RequestError {
    fn from(e: FieldError) -> Self {
        match e {
            FieldError::InvalidContentLength => RequestError::InvalidContentLength,
            FieldError::DuplicateContentLength => RequestError::DuplicateContentLength,
            FieldError::ContentLengthWithTransferEncoding => {
                RequestError::ContentLengthWithTransferEncoding
            }
            FieldError::ChunkedNotFinal => RequestError::ChunkedNotFinal,
            FieldError::ChunkedTwice => RequestError::ChunkedTwice,
            FieldError::EmptyTransferEncoding => RequestError::EmptyTransferEncoding,
            FieldError::UnsupportedTransferCoding => RequestError::UnsupportedTransferCoding,
        }
    }
}

/// An upstream response the proxy cannot forward; the router answers 502 and closes the
/// upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed status line")]
    BadStatusLine,
    #[error("status code outside 100-599")]
    InvalidStatus,
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    #[error("invalid byte in a header name (or obs-fold / space before the colon)")]
    InvalidHeaderName,
    #[error("invalid byte in a header value")]
    InvalidHeaderValue,
    #[error("malformed line ending")]
    InvalidLineEnding,
    #[error("response head larger than the limit")]
    HeadTooLarge,
    #[error("more headers than the limit")]
    TooManyHeaders,
    #[error("invalid Content-Length")]
    InvalidContentLength,
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    #[error("Transfer-Encoding other than a final chunked, or on HTTP/1.0")]
    InvalidTransferEncoding,
    #[error("body framing on a 1xx or 204 response")]
    FramingNotAllowed,
}

impl ResponseError {
    /// Envoy-style details, for logs (the router's reply carries its own).
    pub fn details(&self) -> &'static str {
        match self {
            ResponseError::InvalidHeaderName | ResponseError::InvalidHeaderValue => {
                "http1.invalid_characters"
            }
            ResponseError::HeadTooLarge => "http1.headers_too_large",
            ResponseError::TooManyHeaders => "http1.too_many_headers",
            ResponseError::ContentLengthWithTransferEncoding => {
                "http1.content_length_and_chunked_not_allowed"
            }
            ResponseError::InvalidTransferEncoding => "http1.invalid_transfer_encoding",
            ResponseError::FramingNotAllowed => "http1.transfer_encoding_not_allowed",
            ResponseError::BadStatusLine
            | ResponseError::InvalidStatus
            | ResponseError::UnsupportedVersion
            | ResponseError::InvalidLineEnding
            | ResponseError::InvalidContentLength
            | ResponseError::DuplicateContentLength => "http1.codec_error",
        }
    }
}

impl From<FieldError> for ResponseError {
    fn from(e: FieldError) -> Self {
        match e {
            FieldError::InvalidContentLength => ResponseError::InvalidContentLength,
            FieldError::DuplicateContentLength => ResponseError::DuplicateContentLength,
            FieldError::ContentLengthWithTransferEncoding => {
                ResponseError::ContentLengthWithTransferEncoding
            }
            FieldError::ChunkedNotFinal
            | FieldError::ChunkedTwice
            | FieldError::EmptyTransferEncoding
            | FieldError::UnsupportedTransferCoding => ResponseError::InvalidTransferEncoding,
        }
    }
}

/// A body that broke its framing. For a request body this is a 400 (when no response has
/// started yet) and a close; for a response body the stream is reset and the upstream
/// connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("invalid chunk size")]
    InvalidChunkSize,
    #[error("chunk size overflows")]
    ChunkSizeOverflow,
    #[error("chunk-size line too long")]
    ChunkLineTooLong,
    #[error("invalid chunk extension")]
    InvalidChunkExtension,
    #[error("chunk extensions exceed their budget")]
    ChunkExtensionsTooLarge,
    #[error("chunk line or data not ended by CRLF")]
    MissingCrlf,
    #[error("malformed trailers")]
    InvalidTrailers,
    #[error("trailers larger than the limit")]
    TrailersTooLarge,
    #[error("more trailers than the limit")]
    TooManyTrailers,
    #[error("connection closed before the body ended")]
    Incomplete,
}

impl BodyError {
    /// The status of the error response when this is a request body.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TrailersTooLarge | BodyError::TooManyTrailers => 431,
            _ => 400,
        }
    }

    /// Envoy-style response code details.
    pub fn details(&self) -> &'static str {
        match self {
            BodyError::TrailersTooLarge => "http1.headers_too_large",
            BodyError::TooManyTrailers => "http1.too_many_headers",
            _ => "http1.codec_error",
        }
    }
}
