//! Translator: the `envoy.filters.network.http_connection_manager` network filter — codec and
//! header policy, timeouts, limits, the HTTP filter chain (router last) and its inline route
//! table.
use std::{collections::HashSet, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{
            http_protocol_options::HeadersWithUnderscoresAction, Http2ProtocolOptions,
            KeepaliveSettings,
        },
        extensions::filters::network::http_connection_manager::v3::{
            http_connection_manager::{
                CodecType, ForwardClientCertDetails, PathWithEscapedSlashesAction, RouteSpecifier,
                ServerHeaderTransformation,
            },
            HttpConnectionManager as HcmProto, HttpFilter as HttpFilterProto,
        },
    },
    google::protobuf::{self, Any},
};

use super::{
    access_log::access_logs, config_source::ads_source, duration, http_filters,
    local_reply::local_reply, route, tracing, TranslateContext, TranslateError,
};
use crate::names;
use model::{
    filters::HttpFilter,
    http::{
        ClientCertDetails, Codec, EscapedSlashes, ForwardClientCert, HcmTimeouts, Http1Options,
        Http2Options, HttpConnectionManager, Keepalive, PathPolicy, Routes, ServerHeader,
        UnderscoreHeaders,
    },
    DiscoveredBy,
};

/// Envoy's defaults.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
/// The largest `max_request_headers_kb` Envoy accepts.
pub const MAX_REQUEST_HEADERS_KB: u32 = 8192;
pub const DEFAULT_MAX_HEADERS_COUNT: u32 = 100;

/// Problems found inside one typed config: each names its field path, all carry the config's
/// type URL.
pub(super) struct Problems<'a> {
    pub url: Option<&'a str>,
    pub errors: &'a mut Vec<TranslateError>,
}

impl Problems<'_> {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors
            .push(TranslateError::new(path, self.url, message));
    }

    /// How many problems so far (compare before and after a part to tell if it failed).
    pub fn count(&self) -> usize {
        self.errors.len()
    }

    /// A proto duration; `None` when malformed (reported).
    pub fn duration(&mut self, value: &protobuf::Duration, path: String) -> Option<Duration> {
        duration(value, &path, self.url, self.errors)
    }

    /// An optional timeout where absent means `default` and `0s` means disabled (`None`).
    pub fn timeout(
        &mut self,
        value: Option<&protobuf::Duration>,
        default: Option<Duration>,
        path: String,
    ) -> Option<Duration> {
        match value {
            None => default,
            Some(v) => self.duration(v, path).filter(|d| !d.is_zero()),
        }
    }
}

/// Translates an HTTP connection manager `typed_config` at `path`; route clusters are checked
/// against `clusters`.
pub(super) fn http_connection_manager(
    any: &Any,
    path: &str,
    clusters: &HashSet<&str>,
    ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpConnectionManager> {
    let url = Some(any.type_url.as_str());
    let config: HcmProto = match proto::decode_any(any) {
        Ok(config) => config,
        Err(e) => {
            errors.push(TranslateError::new(path, url, e.to_string()));
            return None;
        }
    };
    let mut p = Problems { url, errors };
    let before = p.count();
    let at = |field: &str| format!("{path}.{field}");
    let codec = match config.codec_type() {
        CodecType::Auto => Codec::Auto,
        CodecType::Http1 => Codec::Http1,
        CodecType::Http2 => Codec::Http2,
        other => {
            p.add(
                at("codec_type"),
                format!(
                    "codec_type {} is not supported: HTTP/1.1 and HTTP/2 are served (AUTO, HTTP1, HTTP2)",
                    other.as_str_name()
                ),
            );
            Codec::Auto
        }
    };
    if config.stat_prefix.is_empty() {
        p.add(at("stat_prefix"), "stat_prefix is required");
    }
    let routes = match &config.route_specifier {
        Some(RouteSpecifier::RouteConfig(rc)) => {
            route::route_config(rc, &at("route_config"), clusters, true, ctx, &mut p)
                .map(Routes::Static)
        }
        Some(RouteSpecifier::Rds(rds)) => {
            let source = ads_source(
                rds.config_source.as_ref(),
                &at("rds.config_source"),
                p.errors,
            );
            if rds.route_config_name.is_empty() {
                p.add(at("rds.route_config_name"), "route_config_name is required");
            }
            source
                .filter(|_| !rds.route_config_name.is_empty())
                .map(|source| {
                    Routes::Rds(DiscoveredBy {
                        name: rds.route_config_name.clone(),
                        initial_fetch_timeout: source.initial_fetch_timeout,
                    })
                })
        }
        // Scoped routes are rejected by the walker.
        Some(_) => None,
        None => {
            p.add(path, "route_config or rds is required");
            None
        }
    };
    let filters = http_filter_chain(
        &config.http_filters,
        &at("http_filters"),
        &config.stat_prefix,
        ctx,
        &mut p,
    );
    let timeouts = timeouts(&config, path, &mut p);
    let max_request_headers_kb = config
        .max_request_headers_kb
        .map_or(DEFAULT_MAX_REQUEST_HEADERS_KB, |v| v.value);
    if !(1..=MAX_REQUEST_HEADERS_KB).contains(&max_request_headers_kb) {
        p.add(
            at("max_request_headers_kb"),
            format!("must be between 1 and {MAX_REQUEST_HEADERS_KB}"),
        );
    }
    let common = config.common_http_protocol_options.unwrap_or_default();
    let max_headers_count = common
        .max_headers_count
        .map_or(DEFAULT_MAX_HEADERS_COUNT, |v| v.value);
    if max_headers_count < 1 {
        p.add(
            at("common_http_protocol_options.max_headers_count"),
            "must be at least 1",
        );
    }
    let upgrades = upgrades(&config, path, &mut p);
    let http2 = http2_options(
        config.http2_protocol_options.as_ref(),
        &at("http2_protocol_options"),
        &mut p,
    );
    let access_logs = access_logs(&config.access_log, &at("access_log"), p.errors);
    let bootstrap_tracing = ctx.secrets.tracing.clone();
    let tracing = tracing::http_tracing(&config, path, &bootstrap_tracing, ctx.stats, &mut p);
    let local_reply = local_reply(
        config.local_reply_config.as_ref(),
        &at("local_reply_config"),
        &mut p,
    );
    if p.count() > before {
        return None;
    }
    let http1 = config.http_protocol_options.clone().unwrap_or_default();
    let details = config.set_current_client_cert_details.unwrap_or_default();
    Some(HttpConnectionManager {
        stat_prefix: config.stat_prefix.clone(),
        routes: routes?,
        filters,
        use_remote_address: config.use_remote_address.is_some_and(|v| v.value),
        xff_num_trusted_hops: config.xff_num_trusted_hops,
        skip_xff_append: config.skip_xff_append,
        generate_request_id: config.generate_request_id.is_none_or(|v| v.value),
        preserve_external_request_id: config.preserve_external_request_id,
        server_name: if config.server_name.is_empty() {
            "envoy".to_string()
        } else {
            config.server_name.clone()
        },
        server_header: match config.server_header_transformation() {
            ServerHeaderTransformation::Overwrite => ServerHeader::Overwrite,
            ServerHeaderTransformation::AppendIfAbsent => ServerHeader::AppendIfAbsent,
            ServerHeaderTransformation::PassThrough => ServerHeader::PassThrough,
        },
        timeouts,
        max_request_headers_bytes: max_request_headers_kb as usize * 1024,
        max_requests_per_connection: common
            .max_requests_per_connection
            .map(|v| v.value)
            .filter(|n| *n > 0),
        max_headers_count: max_headers_count as usize,
        headers_with_underscores: match common.headers_with_underscores_action() {
            HeadersWithUnderscoresAction::Allow => UnderscoreHeaders::Allow,
            HeadersWithUnderscoresAction::RejectRequest => UnderscoreHeaders::RejectRequest,
            HeadersWithUnderscoresAction::DropHeader => UnderscoreHeaders::DropHeader,
        },
        codec,
        http2,
        http1: Http1Options {
            accept_http_10: http1.accept_http_10,
            enable_trailers: http1.enable_trailers,
            default_host_for_http_10: Some(http1.default_host_for_http_10)
                .filter(|h| !h.is_empty()),
        },
        path: PathPolicy {
            normalize: config.normalize_path.is_some_and(|v| v.value),
            merge_slashes: config.merge_slashes,
            escaped_slashes: match config.path_with_escaped_slashes_action() {
                PathWithEscapedSlashesAction::ImplementationSpecificDefault
                | PathWithEscapedSlashesAction::KeepUnchanged => EscapedSlashes::KeepUnchanged,
                PathWithEscapedSlashesAction::RejectRequest => EscapedSlashes::RejectRequest,
                PathWithEscapedSlashesAction::UnescapeAndRedirect => {
                    EscapedSlashes::UnescapeAndRedirect
                }
                PathWithEscapedSlashesAction::UnescapeAndForward => {
                    EscapedSlashes::UnescapeAndForward
                }
            },
        },
        upgrades,
        proxy_100_continue: config.proxy_100_continue,
        forward_client_cert: match config.forward_client_cert_details() {
            ForwardClientCertDetails::Sanitize => ForwardClientCert::Sanitize,
            ForwardClientCertDetails::ForwardOnly => ForwardClientCert::ForwardOnly,
            ForwardClientCertDetails::AppendForward => ForwardClientCert::AppendForward,
            ForwardClientCertDetails::SanitizeSet => ForwardClientCert::SanitizeSet,
            ForwardClientCertDetails::AlwaysForwardOnly => ForwardClientCert::AlwaysForwardOnly,
        },
        client_cert_details: ClientCertDetails {
            cert: details.cert,
            chain: details.chain,
            subject: details.subject.is_some_and(|v| v.value),
            uri: details.uri,
            dns: details.dns,
        },
        access_logs,
        local_reply,
        tracing,
        stats: ctx.stats.http(&config.stat_prefix),
    })
}

fn timeouts(config: &HcmProto, path: &str, p: &mut Problems) -> HcmTimeouts {
    let at = |field: &str| format!("{path}.{field}");
    let idle = config
        .common_http_protocol_options
        .as_ref()
        .and_then(|c| c.idle_timeout.as_ref());
    HcmTimeouts {
        request: p.timeout(config.request_timeout.as_ref(), None, at("request_timeout")),
        request_headers: p.timeout(
            config.request_headers_timeout.as_ref(),
            None,
            at("request_headers_timeout"),
        ),
        stream_idle: p.timeout(
            config.stream_idle_timeout.as_ref(),
            Some(DEFAULT_STREAM_IDLE_TIMEOUT),
            at("stream_idle_timeout"),
        ),
        idle: p.timeout(
            idle,
            Some(DEFAULT_IDLE_TIMEOUT),
            at("common_http_protocol_options.idle_timeout"),
        ),
    }
}

/// `upgrade_configs`: lower-cased types, each at most once.
fn upgrades(config: &HcmProto, path: &str, p: &mut Problems) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for (i, upgrade) in config.upgrade_configs.iter().enumerate() {
        let at = format!("{path}.upgrade_configs[{i}].upgrade_type");
        let kind = upgrade.upgrade_type.to_ascii_lowercase();
        if kind.is_empty() {
            p.add(at, "upgrade_type is required");
        } else if out.iter().any(|(k, _)| *k == kind) {
            p.add(at, format!("duplicate upgrade type {kind:?}"));
        } else {
            out.push((kind, upgrade.enabled.is_none_or(|v| v.value)));
        }
    }
    out
}

/// Whether an `http_filters` entry is the router (by type, or by its well-known name when it
/// has no typed config, as Envoy still accepts).
fn is_router(filter: &HttpFilterProto) -> bool {
    http_filters::is_router(filter)
        || (filter.config_type.is_none() && filter.name == names::ROUTER_FILTER)
}

/// The filters before the router, which must be last and present (an `is_optional` filter of
/// an unsupported type is left out by the HTTP filters translator, as Envoy does).
fn http_filter_chain(
    filters: &[HttpFilterProto],
    path: &str,
    stat_prefix: &str,
    ctx: &mut TranslateContext,
    p: &mut Problems,
) -> Vec<HttpFilter> {
    let Some((last, init)) = filters.split_last() else {
        p.add(
            path,
            format!(
                "the router ({}) is required as the last HTTP filter",
                names::ROUTER_FILTER
            ),
        );
        return Vec::new();
    };
    if !is_router(last) {
        p.add(
            format!("{path}[{}]", init.len()),
            format!(
                "the last HTTP filter must be the router ({})",
                names::ROUTER_FILTER
            ),
        );
    }
    let mut out = Vec::new();
    for (i, filter) in init.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if is_router(filter) {
            p.add(at, "the router is a terminal filter: it must be the last");
        } else if let Some(f) = http_filters::http_filter(filter, &at, stat_prefix, ctx, p.errors) {
            out.push(f);
        }
    }
    out
}

/// `http2_protocol_options` (of a connection manager or a cluster), Envoy's defaults for what
/// is unset.
pub(super) fn http2_options(
    proto: Option<&Http2ProtocolOptions>,
    path: &str,
    p: &mut Problems,
) -> Http2Options {
    let defaults = Http2Options::default();
    let Some(proto) = proto else {
        return defaults;
    };
    let or = |value: Option<u32>, default: u32| value.unwrap_or(default);
    Http2Options {
        hpack_table_size: or(
            proto.hpack_table_size.map(|v| v.value),
            defaults.hpack_table_size,
        ),
        max_concurrent_streams: or(
            proto.max_concurrent_streams.map(|v| v.value),
            defaults.max_concurrent_streams,
        ),
        initial_stream_window_size: or(
            proto.initial_stream_window_size.map(|v| v.value),
            defaults.initial_stream_window_size,
        ),
        initial_connection_window_size: or(
            proto.initial_connection_window_size.map(|v| v.value),
            defaults.initial_connection_window_size,
        ),
        keepalive: proto
            .connection_keepalive
            .as_ref()
            .and_then(|k| keepalive(k, &format!("{path}.connection_keepalive"), p)),
        allow_connect: proto.allow_connect,
    }
}

/// `connection_keepalive` (Envoy's rules: `timeout` required and at least 1 ms; no PINGs
/// without an `interval`; jitter 15 % unless set).
fn keepalive(proto: &KeepaliveSettings, path: &str, p: &mut Problems) -> Option<Keepalive> {
    let timeout = match &proto.timeout {
        Some(t) => p.duration(t, format!("{path}.timeout"))?,
        None => Duration::ZERO,
    };
    if timeout < Duration::from_millis(1) {
        p.add(
            format!("{path}.timeout"),
            "is required and must be at least 1ms",
        );
        return None;
    }
    let interval = proto
        .interval
        .as_ref()
        .and_then(|i| p.duration(i, format!("{path}.interval")))
        .filter(|i| !i.is_zero())?;
    let jitter = proto.interval_jitter.as_ref().map_or(15.0, |j| j.value);
    if !(0.0..=100.0).contains(&jitter) {
        p.add(
            format!("{path}.interval_jitter"),
            "must be a percentage between 0 and 100",
        );
        return None;
    }
    Some(Keepalive {
        interval,
        timeout,
        jitter_ppm: (jitter * 10_000.0) as u32,
    })
}
