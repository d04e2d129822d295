//! HTTP connection manager: the access log line of one exchange, written through the shard's
//! log writers with the request and response heads read in place.
use model::access_log::{ConnectionRecord, HttpTimings};

use super::{stream::Exchange, Connection};
use crate::{access_log::HttpExchange, stream::headers::RequestHead};

pub fn write(c: &Connection<'_>, request: &RequestHead, exchange: &Exchange) {
    let http = HttpExchange {
        request,
        response: exchange.response.as_ref(),
        trailers: None,
        scheme: c.scheme,
        response_code_details: Some(exchange.details).filter(|d| !d.is_empty()),
        route_name: exchange.route_name.as_deref(),
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
        tls: c.hcm.logs_read_tls().then(|| c.tls()).flatten(),
        requested_server_name: Some(c.requested_server_name).filter(|n| !n.is_empty()),
        upstream_tls: exchange.upstream_tls,
        http: Some(&http),
    };
    c.ctx.logs.write(&c.hcm.access_logs, &record);
}
