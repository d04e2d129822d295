//! HTTP connection manager: `local_reply_config` applied to a reply the proxy makes itself —
//! the first matching mapper's status, headers and body, then the body format.
use model::local_reply::BodyFormat;

use super::{
    log::{with_record, Values},
    stream::Exchange,
    Connection,
};
use crate::stream::{
    headers::{RequestHead, ResponseHead},
    mutations, LocalReply,
};

/// Rewrites `reply` by the connection manager's `local_reply_config`. As in Envoy 1.40, direct
/// responses and redirects are local replies too.
pub fn rewrite(
    c: &Connection<'_>,
    request: &RequestHead,
    exchange: &Exchange,
    reply: &mut LocalReply,
) {
    let config = &c.hcm.local_reply;
    if config.mappers.is_empty() && config.body_format.is_none() {
        return;
    }
    // Filters and formats read the reply as a response head with its status and headers.
    let mut head = ResponseHead {
        status: reply.status,
        version: request.version,
        headers: std::mem::take(&mut reply.headers),
    };
    let mapper = with_record(c, request, Some(&head), None, exchange, |record| {
        config.mapper(record)
    });
    let mut body_format = config.body_format.as_ref();
    if let Some(mapper) = mapper {
        // Envoy renders the mapper's headers before it changes the status.
        let values = Values { c, exchange };
        mutations::add_to_response(request, &mut head, &mapper.headers_to_add, &values);
        head.status = mapper.status.unwrap_or(head.status);
        if let Some(body) = &mapper.body {
            reply.body = body.clone();
        }
        body_format = mapper.body_format.as_ref().or(body_format);
    }
    if let Some(BodyFormat {
        format,
        content_type,
    }) = body_format
    {
        let mut body = Vec::new();
        with_record(
            c,
            request,
            Some(&head),
            Some(&reply.body),
            exchange,
            |record| format.render(record, &mut body),
        );
        reply.body = body.into();
        if !reply.body.is_empty() {
            head.headers.set("content-type", content_type.clone());
        }
    }
    reply.status = head.status;
    reply.headers = head.headers;
}
