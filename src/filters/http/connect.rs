//! Istio's CONNECT tunnel filters. `connect_authority`: on a route that enables it, the
//! request's authority is shared with the tunnel's connection (an internal listener's
//! `istio.set_internal_dst_address` restores it as the destination). `connect_baggage`: the
//! `baggage` header names the downstream workload, shared likewise (Istio's stats on the
//! internal listener read it).
use std::rc::Rc;

use model::filters::{HttpFilter, PerRouteFilter};

use crate::{
    filters::istio::peer::Peer,
    stream::{headers::RequestHead, StreamContext},
};

pub fn authority(filter: &HttpFilter, cx: &StreamContext<'_>, request: &RequestHead) {
    if let Some(PerRouteFilter::ConnectAuthority(config)) = cx.per_filter(&filter.name) {
        let authority = String::from_utf8_lossy(request.authority());
        cx.notes
            .set_tunnel_authority(authority.as_ref().into(), config.port);
    }
}

pub fn baggage(cx: &StreamContext<'_>, request: &RequestHead) {
    let values: Vec<_> = request.headers.get_all("baggage").collect();
    if values.is_empty() {
        return;
    }
    // Envoy joins repeated headers with commas.
    let joined = values
        .iter()
        .map(|v| String::from_utf8_lossy(v))
        .collect::<Vec<_>>()
        .join(",");
    cx.notes
        .set_downstream_peer(Rc::new(Peer::from_baggage(&joined)));
}
