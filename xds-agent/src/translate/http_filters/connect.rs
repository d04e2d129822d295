//! Translator: Istio's CONNECT tunnel filters — `connect_authority` (a route's CONNECT
//! authority becomes the tunnel connection's destination) and `connect_baggage` (the
//! `baggage` header names the downstream workload for it).
use envoy_types::pb::google::protobuf::Any;

use super::common::Site;
use crate::translate::{TranslateContext, TranslateError};
use model::filters::{ConnectAuthority, HttpFilterKind, PerRouteFilter};
use proto::istio::{connect_authority::Config as AuthorityConfig, connect_baggage::Config};

/// The filter in the chain. Its own `enabled` and `port` do nothing, as in Istio: only a
/// route's config turns it on.
pub(super) fn authority(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    port(&super::decode(any, site, errors)?, site, errors)?;
    Some(HttpFilterKind::ConnectAuthority)
}

pub(super) fn authority_per_route(
    any: &Any,
    site: &Site,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<PerRouteFilter> {
    let config: AuthorityConfig = super::decode(any, site, errors)?;
    let port = port(&config, site, errors)?;
    Some(match config.enabled {
        true => PerRouteFilter::ConnectAuthority(ConnectAuthority { port }),
        false => PerRouteFilter::Disabled,
    })
}

/// `port`, when set (0: the authority's own).
fn port(
    config: &AuthorityConfig,
    site: &Site,
    errors: &mut Vec<TranslateError>,
) -> Option<Option<u16>> {
    match config.port {
        0 => Some(None),
        port => match u16::try_from(port) {
            Ok(port) => Some(Some(port)),
            Err(_) => {
                errors.push(site.error("port", format!("port {port} is out of range")));
                None
            }
        },
    }
}

pub(super) fn baggage(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let Config {} = super::decode(any, site, errors)?;
    Some(HttpFilterKind::ConnectBaggage)
}
