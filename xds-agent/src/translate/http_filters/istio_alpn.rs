//! Translator: Istio's `istio.alpn` — the ALPN list upstream TLS offers per upstream HTTP
//! version (Istio's `istio-http/1.0`, `istio-http/1.1`, `istio-h2`, which its inbound chains
//! match on).
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;

use super::common::Site;
use crate::translate::{TranslateContext, TranslateError};
use model::filters::{AlpnOverrides, HttpFilterKind};
use proto::istio::alpn::{filter_config::ProtocolVersion, FilterConfig};

pub(super) fn filter(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let config: FilterConfig = super::decode(any, site, errors)?;
    let mut overrides = AlpnOverrides::default();
    for (i, entry) in config.alpn_override.iter().enumerate() {
        let slot = match ProtocolVersion::try_from(entry.upstream_protocol) {
            Ok(ProtocolVersion::Http10) => &mut overrides.http10,
            Ok(ProtocolVersion::Http11) => &mut overrides.http11,
            Ok(ProtocolVersion::Http2) => &mut overrides.http2,
            Err(_) => {
                errors.push(site.error(
                    &format!("alpn_override[{i}].upstream_protocol"),
                    format!("unknown protocol {}", entry.upstream_protocol),
                ));
                return None;
            }
        };
        // An empty list leaves the cluster's, as in Istio.
        if !entry.alpn_override.is_empty() {
            *slot = Some(
                entry
                    .alpn_override
                    .iter()
                    .map(|p| p.as_bytes().to_vec())
                    .collect(),
            );
        }
    }
    Some(HttpFilterKind::IstioAlpn(Arc::new(overrides)))
}
