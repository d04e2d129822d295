//! HTTP connection manager: the record of one exchange — what its access log line and its
//! `%COMMAND%` header values read, the request and response heads read in place.
use model::access_log::{ConnectionRecord, Format, HttpTimings};

use super::{stream::Exchange, Connection};
use crate::{
    access_log::HttpExchange,
    stream::{
        headers::{RequestHead, ResponseHead},
        mutations,
    },
};

/// Writes the exchange's access log lines.
pub fn write(c: &Connection<'_>, request: &RequestHead, exchange: &Exchange) {
    let response = exchange.response.as_ref();
    with_record(c, request, response, None, exchange, |record| {
        c.ctx.logs.write(&c.hcm.access_logs, record)
    });
}

/// Calls `f` with the exchange's record as it is now: `response` is the response head so far,
/// `local_reply_body` the body of the local reply being made.
pub(super) fn with_record<R>(
    c: &Connection<'_>,
    request: &RequestHead,
    response: Option<&ResponseHead>,
    local_reply_body: Option<&[u8]>,
    exchange: &Exchange,
    f: impl FnOnce(&ConnectionRecord) -> R,
) -> R {
    let http = HttpExchange {
        request,
        response,
        trailers: None,
        scheme: c.scheme,
        response_code_details: Some(&*exchange.details).filter(|d| !d.is_empty()),
        route_name: exchange.route_name.as_deref(),
        local_reply_body,
        metadata: Some(&exchange.metadata),
        timings: HttpTimings {
            last_request_byte_received: exchange.request_done,
            first_upstream_byte_received: exchange.first_upstream_byte,
            last_response_byte_sent: exchange.response_done,
        },
    };
    let record = ConnectionRecord {
        start: exchange.start_wall,
        duration: exchange.started.elapsed(),
        bytes_received: exchange.bytes_received,
        bytes_sent: exchange.bytes_sent,
        downstream_remote: c.remote,
        downstream_local: c.local,
        upstream_host: exchange.upstream_host,
        upstream_local: None,
        upstream_cluster: exchange.upstream_cluster.as_deref(),
        response_flags: exchange.flags,
        connection_id: c.connection_id,
        tls: c.tls(),
        requested_server_name: Some(c.requested_server_name).filter(|n| !n.is_empty()),
        upstream_tls: exchange.upstream_tls,
        termination_details: None,
        http: Some(&http),
    };
    f(&record)
}

/// Header values rendered from the exchange in flight.
pub struct Values<'x, 'c> {
    pub c: &'x Connection<'c>,
    pub exchange: &'x Exchange,
}

impl mutations::Formatter for Values<'_, '_> {
    fn render(
        &self,
        format: &Format,
        request: &RequestHead,
        response: Option<&ResponseHead>,
        out: &mut Vec<u8>,
    ) {
        with_record(self.c, request, response, None, self.exchange, |record| {
            format.render(record, out)
        })
    }
}
