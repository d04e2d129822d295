//! Translator: a filter chain's `filter_chain_match` into `model::filter_chain_match::
//! ChainMatch`, with Envoy's checks on each value (ports, CIDR ranges, server names).
use std::net::IpAddr;

use envoy_types::pb::envoy::config::{
    core::v3::CidrRange,
    listener::v3::{filter_chain_match::ConnectionSourceType, FilterChainMatch},
};

use super::TranslateError;
use model::filter_chain_match::{ChainMatch, Cidr, SourceType};

pub(super) fn chain_match(
    proto: &FilterChainMatch,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<ChainMatch> {
    let before = errors.len();
    let mut fail = |field: &str, message: String| {
        errors.push(TranslateError::new(
            format!("{path}.{field}"),
            None,
            message,
        ))
    };
    let destination_port = match proto.destination_port.as_ref().map(|p| p.value) {
        None => None,
        Some(port @ 1..=65535) => Some(port as u16),
        Some(port) => {
            fail(
                "destination_port",
                format!("{port} is not a port (1-65535)"),
            );
            None
        }
    };
    let mut source_ports = Vec::new();
    for (i, port) in proto.source_ports.iter().enumerate() {
        match u16::try_from(*port) {
            Ok(p) if p != 0 => source_ports.push(p),
            _ => fail(
                &format!("source_ports[{i}]"),
                format!("{port} is not a port (1-65535)"),
            ),
        }
    }
    let mut server_names = Vec::new();
    for (i, name) in proto.server_names.iter().enumerate() {
        let lower = name.to_ascii_lowercase();
        let wildcard_ok = match lower.find('*') {
            None => true,
            Some(0) => lower.starts_with("*.") && !lower[1..].contains('*') && lower.len() > 2,
            Some(_) => false,
        };
        if lower.is_empty() || !wildcard_ok {
            fail(
                &format!("server_names[{i}]"),
                format!("{name:?}: partial wildcards are not supported (only a leading `*.`)"),
            );
        } else {
            server_names.push(lower);
        }
    }
    let source_type = match ConnectionSourceType::try_from(proto.source_type) {
        Ok(ConnectionSourceType::Any) => None,
        Ok(ConnectionSourceType::SameIpOrLoopback) => Some(SourceType::SameIpOrLoopback),
        Ok(ConnectionSourceType::External) => Some(SourceType::External),
        Err(_) => {
            fail(
                "source_type",
                format!("unknown source type {}", proto.source_type),
            );
            None
        }
    };
    let transport_protocol = Some(proto.transport_protocol.clone()).filter(|t| !t.is_empty());
    let m = ChainMatch {
        destination_port,
        prefix_ranges: cidrs(
            &proto.prefix_ranges,
            &format!("{path}.prefix_ranges"),
            errors,
        ),
        server_names,
        transport_protocol,
        application_protocols: proto.application_protocols.clone(),
        direct_source_prefix_ranges: cidrs(
            &proto.direct_source_prefix_ranges,
            &format!("{path}.direct_source_prefix_ranges"),
            errors,
        ),
        source_type,
        source_prefix_ranges: cidrs(
            &proto.source_prefix_ranges,
            &format!("{path}.source_prefix_ranges"),
            errors,
        ),
        source_ports,
    };
    (errors.len() == before).then_some(m)
}

fn cidrs(ranges: &[CidrRange], path: &str, errors: &mut Vec<TranslateError>) -> Vec<Cidr> {
    ranges
        .iter()
        .enumerate()
        .filter_map(|(i, range)| cidr(range, &format!("{path}[{i}]"), None, errors))
        .collect()
}

/// One `CidrRange` (at `path`, in the config of `type_url`); a missing `prefix_len` is 0.
pub(super) fn cidr(
    range: &CidrRange,
    path: &str,
    type_url: Option<&str>,
    errors: &mut Vec<TranslateError>,
) -> Option<Cidr> {
    let len = range.prefix_len.as_ref().map_or(0, |l| l.value);
    let cidr = range
        .address_prefix
        .parse::<IpAddr>()
        .ok()
        .and_then(|ip| Cidr::new(ip, u8::try_from(len).ok()?));
    if cidr.is_none() {
        errors.push(TranslateError::new(
            path,
            type_url,
            format!(
                "{:?}/{len} is not an IP address range",
                range.address_prefix
            ),
        ));
    }
    cidr
}
