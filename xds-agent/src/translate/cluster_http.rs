//! Translator: a cluster's HTTP upstream settings — circuit breaker thresholds and
//! `HttpProtocolOptions` (upstream idle timeout, requests per connection, HTTP/1.1 or
//! HTTP/2, `use_downstream_protocol_config`, `auto_config`) and the ALPN they imply.
use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{cluster::ClusterProtocolSelection, Cluster as ClusterProto},
        core::v3::RoutingPriority,
    },
    extensions::upstreams::http::v3::{
        http_protocol_options::{
            explicit_http_config::ProtocolConfig, AutoHttpConfig, ExplicitHttpConfig,
            UpstreamProtocolOptions, UseDownstreamHttpConfig,
        },
        HttpProtocolOptions,
    },
};

use super::{
    duration,
    http_connection_manager::{http2_options, Problems},
    TranslateError,
};
use crate::names;
use model::{CircuitBreakers, UpstreamHttpOptions, UpstreamProtocol};

/// The DEFAULT-priority thresholds (HIGH-priority ones only apply to high-priority routes,
/// which shardproxy does not have, so they are accepted and unused).
pub(super) fn circuit_breakers(proto: &ClusterProto) -> CircuitBreakers {
    let mut limits = CircuitBreakers::DEFAULT;
    let thresholds = proto.circuit_breakers.iter().flat_map(|c| &c.thresholds);
    for t in thresholds.filter(|t| t.priority == RoutingPriority::Default as i32) {
        let set =
            |field: &mut u32, value: Option<&envoy_types::pb::google::protobuf::UInt32Value>| {
                if let Some(v) = value {
                    *field = v.value;
                }
            };
        set(&mut limits.max_connections, t.max_connections.as_ref());
        set(
            &mut limits.max_pending_requests,
            t.max_pending_requests.as_ref(),
        );
        set(&mut limits.max_requests, t.max_requests.as_ref());
        set(&mut limits.max_retries, t.max_retries.as_ref());
    }
    limits
}

/// Whether the cluster's upstream HTTP options ask for `auto_san_validation` (the TLS context
/// then checks the server certificate against the SNI sent).
pub(super) fn auto_san_validation(proto: &ClusterProto) -> bool {
    proto
        .typed_extension_protocol_options
        .get(names::UPSTREAM_HTTP_PROTOCOL_OPTIONS)
        .and_then(|any| proto::decode_any::<HttpProtocolOptions>(any).ok())
        .and_then(|c| c.upstream_http_protocol_options)
        .is_some_and(|u| u.auto_san_validation)
}

/// The ALPN protocols a cluster's TLS offers when its context lists none, as Envoy fills
/// them in: `h2` then `http/1.1` under `auto_config` (the host's pick decides), `h2` for
/// HTTP/2, none otherwise.
pub(super) fn default_alpn(http: &UpstreamHttpOptions) -> &'static [&'static str] {
    match http.protocol {
        UpstreamProtocol::Negotiated => &["h2", "http/1.1"],
        UpstreamProtocol::Http2 => &["h2"],
        UpstreamProtocol::Http1 | UpstreamProtocol::Downstream => &[],
    }
}

/// `typed_extension_protocol_options` → upstream HTTP options (HTTP/3 is an error).
pub(super) fn upstream_http(
    proto: &ClusterProto,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> UpstreamHttpOptions {
    let mut options = UpstreamHttpOptions::default();
    // The deprecated cluster field (as Istio's older bootstraps write `xds-grpc`).
    #[allow(deprecated)]
    if let Some(http2) = &proto.http2_protocol_options {
        options.protocol = UpstreamProtocol::Http2;
        let at = format!("{path}.http2_protocol_options");
        let mut p = Problems { url: None, errors };
        options.http2 = http2_options(Some(http2), &at, &mut p);
    }
    // The deprecated `protocol_selection` (Istio 1.9 writes it): upstream requests follow
    // the downstream's HTTP version.
    #[allow(deprecated)]
    if proto.protocol_selection() == ClusterProtocolSelection::UseDownstreamProtocol {
        options.protocol = UpstreamProtocol::Downstream;
    }
    let key = names::UPSTREAM_HTTP_PROTOCOL_OPTIONS;
    let Some(any) = proto.typed_extension_protocol_options.get(key) else {
        return options;
    };
    let path = format!("{path}.typed_extension_protocol_options[{key}]");
    let url = Some(any.type_url.as_str());
    if names::type_name(&any.type_url) != key {
        errors.push(TranslateError::new(
            &path,
            url,
            format!("expected a {key} under this key"),
        ));
        return options;
    }
    let config: HttpProtocolOptions = match proto::decode_any(any) {
        Ok(config) => config,
        Err(e) => {
            errors.push(TranslateError::new(path, url, e.to_string()));
            return options;
        }
    };
    match &config.upstream_protocol_options {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::HttpProtocolOptions(http1)),
        })) => options.enable_trailers = http1.enable_trailers,
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(http2)),
        })) => {
            options.protocol = UpstreamProtocol::Http2;
            let at = format!("{path}.explicit_http_config.http2_protocol_options");
            options.http2 = http2_options(Some(http2), &at, &mut Problems { url, errors });
        }
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(_),
        })) => errors.push(TranslateError::new(
            format!("{path}.explicit_http_config"),
            url,
            "HTTP/3 upstreams are not supported: HTTP/1.1 and HTTP/2 are",
        )),
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
            http_protocol_options,
            http2_protocol_options,
            ..
        })) => {
            options.protocol = UpstreamProtocol::Downstream;
            options.enable_trailers = http_protocol_options
                .as_ref()
                .is_some_and(|h| h.enable_trailers);
            let at = format!("{path}.use_downstream_protocol_config.http2_protocol_options");
            let mut p = Problems { url, errors };
            options.http2 = http2_options(http2_protocol_options.as_ref(), &at, &mut p);
        }
        Some(UpstreamProtocolOptions::AutoConfig(AutoHttpConfig {
            http_protocol_options,
            http2_protocol_options,
            ..
        })) => {
            options.protocol = UpstreamProtocol::Negotiated;
            options.enable_trailers = http_protocol_options
                .as_ref()
                .is_some_and(|h| h.enable_trailers);
            let at = format!("{path}.auto_config.http2_protocol_options");
            let mut p = Problems { url, errors };
            options.http2 = http2_options(http2_protocol_options.as_ref(), &at, &mut p);
        }
        _ => {}
    }
    options.auto_sni = config
        .upstream_http_protocol_options
        .as_ref()
        .is_some_and(|u| u.auto_sni);
    if let Some(common) = &config.common_http_protocol_options {
        if let Some(idle) = &common.idle_timeout {
            let field = format!("{path}.common_http_protocol_options.idle_timeout");
            options.idle_timeout = duration(idle, &field, url, errors).filter(|d| !d.is_zero());
        }
        if let Some(max) = &common.max_requests_per_connection {
            options.max_requests_per_connection = Some(max.value).filter(|n| *n > 0);
        }
    }
    options
}
