//! Translator: HTTP filters — a registry keyed by type URL from each filter's config to its
//! model, and each filter's supported surface. (Skeleton: filled in by the HTTP filters work.)
use envoy_types::pb::{
    envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter as HttpFilterProto,
    google::protobuf::Any,
};

use super::{
    surface::{AnySlot, Surface},
    TranslateContext, TranslateError,
};
use crate::model::filters::{HttpFilter, PerRouteFilter};

pub const SURFACE: &[Surface] = &[];

pub const ANY_SLOTS: &[AnySlot] = &[];

/// One entry of `http_filters` (at `path`), the router excluded; `None` after reporting why.
pub(super) fn http_filter(
    proto: &HttpFilterProto,
    path: &str,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilter> {
    errors.push(TranslateError::new(
        path,
        None,
        format!("HTTP filter {:?} is not supported yet", proto.name),
    ));
    None
}

/// A `typed_per_filter_config` entry for the filter named `filter_name` (at `path`).
pub(super) fn per_route(
    filter_name: &str,
    any: &Any,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<PerRouteFilter> {
    errors.push(TranslateError::new(
        path,
        Some(&any.type_url),
        format!("per-route config for {filter_name:?} is not supported yet"),
    ));
    None
}
