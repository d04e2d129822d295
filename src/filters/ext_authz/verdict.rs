//! External authorization: what an authorization service decided about a request — allowed
//! (with the changes to the request and its response), denied (with the client's answer) or
//! no decision — whichever way (gRPC or HTTP) it was asked.
use bytes::Bytes;
use envoy_types::pb::google::protobuf::Struct;
use model::route::HeaderAdd;

#[derive(Debug)]
pub enum Verdict {
    Allowed(Allowed),
    Denied(Denied),
    /// No decision: the service could not be reached, the call failed or timed out, or its
    /// answer was not one.
    Error,
}

/// How an allowed request and its response change.
#[derive(Debug, Default)]
pub struct Allowed {
    /// Request headers to change, in order.
    pub headers: Vec<RequestHeader>,
    pub headers_to_remove: Vec<String>,
    /// Headers for the response, with their append actions.
    pub response_headers: Vec<HeaderAdd>,
    pub metadata: Option<Struct>,
}

/// One request header change: a lower-case name, a value and how it applies.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub name: String,
    pub value: String,
    pub how: HeaderChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderChange {
    /// Replaces every value of the header, or adds it.
    Set,
    /// Joined with `,` to the header's value when it is there; else nothing.
    AppendToExisting,
    /// Another line of the header.
    Add,
}

/// The answer a denied request gets.
#[derive(Debug)]
pub struct Denied {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub metadata: Option<Struct>,
}
