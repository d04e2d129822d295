//! Translator tests: `envoy.filters.http.ext_authz` — Istio's config, Envoy's defaults, what
//! is refused (each error naming its field) and `ExtAuthzPerRoute`.
use std::time::Duration;

use super::super::tests::{filter_errors, one_filter, per_route_config, per_route_errors};
use super::*;
use model::ext_authz::{CheckPath, GrpcService};

const EXT_AUTHZ: &str = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
const PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";

fn entry(config: &str) -> String {
    format!(r#"{{name: authz, typed_config: {{"@type": "{EXT_AUTHZ}", {config}}}}}"#)
}

fn ext_authz(config: &str) -> Arc<HttpExtAuthz> {
    match one_filter(&entry(config)).kind {
        HttpFilterKind::ExtAuthz(f) => f,
        other => panic!("{other:?}"),
    }
}

fn grpc(f: &HttpExtAuthz) -> &GrpcService {
    match &f.service {
        AuthzService::Grpc(grpc) => grpc,
        other => panic!("{other:?}"),
    }
}

const GRPC: &str = "grpc_service: {envoy_grpc: {cluster_name: authz}}";

/// Istio 1.19's CUSTOM policy filter.
#[test]
fn istio_config_translates() {
    let f = ext_authz(
        r#"grpc_service: {envoy_grpc: {cluster_name: "outbound|9191||sample-ext-authz-grpc",
             authority: sample-ext-authz-grpc.local}, timeout: 600s},
           with_request_body: {max_request_bytes: 8000}, transport_api_version: V3,
           filter_enabled_metadata: {filter: envoy.filters.http.rbac,
             path: [{key: istio_ext_authz_shadow_effective_policy_id}],
             value: {string_match: {prefix: istio-ext-authz}}}"#,
    );
    assert!(f.filter_enabled_metadata.is_some() && f.ingest_metadata);
    assert_eq!(grpc(&f).cluster, "outbound|9191||sample-ext-authz-grpc");
    assert_eq!(grpc(&f).authority, "sample-ext-authz-grpc.local");
    assert_eq!(grpc(&f).timeout, Some(Duration::from_secs(600)));
    assert_eq!(
        f.with_request_body,
        Some(BodySettings {
            max_request_bytes: 8000,
            allow_partial_message: false,
            pack_as_bytes: false
        })
    );
}

/// Envoy's defaults: 200 ms, the cluster's name as authority, 403 on errors, every header,
/// stats under `http.<prefix>.ext_authz[.<stat_prefix>]`.
#[test]
fn defaults_and_stat_names_follow_envoy() {
    let f = ext_authz(GRPC);
    assert_eq!(grpc(&f).timeout, Some(Duration::from_millis(200)));
    assert_eq!(grpc(&f).authority, "authz");
    assert_eq!(f.status_on_error, 403);
    assert!(f.headers.includes(b"anything") && f.filter_enabled.is_none());
    let mut names = vec![];
    f.stats.read(&mut names);
    assert_eq!(names[0].name, "http.ingress.ext_authz.ok");
    let f = ext_authz(&format!(
        r#"{GRPC}, stat_prefix: waf, status_on_error: {{code: 503}},
           grpc_service: {{envoy_grpc: {{cluster_name: a}}, timeout: 0s,
             initial_metadata: [{{key: X-Tenant, value: t1}}]}},
           allowed_headers: {{patterns: [{{prefix: x-}}]}},
           disallowed_headers: {{patterns: [{{exact: x-secret}}]}},
           deny_at_disable: {{default_value: true, runtime_key: k}},
           filter_enabled: {{default_value: {{numerator: 50}}}},
           max_denied_response_body_bytes: 4"#
    ));
    let mut names = vec![];
    f.stats.read(&mut names);
    assert_eq!(names[0].name, "http.ingress.ext_authz.waf.ok");
    assert_eq!(f.status_on_error, 503);
    assert_eq!(grpc(&f).timeout, None, "0s: no deadline");
    assert_eq!(
        grpc(&f).initial_metadata,
        [("x-tenant".into(), "t1".into())]
    );
    assert!(f.headers.includes(b"x-a") && !f.headers.includes(b"x-secret"));
    assert!(!f.headers.includes(b"cookie"));
    assert!(f.deny_at_disable);
    assert_eq!(f.filter_enabled.unwrap().numerator, 50);
    assert_eq!(f.max_denied_body, Some(4));
}

/// What Envoy refuses, and what is not implemented, is an error naming the field.
#[test]
fn refused_fields_are_named() {
    let cases = [
        (
            format!("{GRPC}, transport_api_version: V2"),
            "f.typed_config.transport_api_version",
        ),
        (
            "failure_mode_allow: true".into(),
            "f.typed_config.grpc_service",
        ),
        (
            r#"grpc_service: {google_grpc: {target_uri: a, stat_prefix: s}}"#.into(),
            "f.typed_config.grpc_service.google_grpc",
        ),
        (
            r#"grpc_service: {envoy_grpc: {cluster_name: ""}}"#.into(),
            "f.typed_config.grpc_service.envoy_grpc.cluster_name",
        ),
        (
            r#"grpc_service: {envoy_grpc: {cluster_name: a, retry_policy: {}}}"#.into(),
            "f.typed_config.grpc_service.envoy_grpc.retry_policy",
        ),
        (
            format!("{GRPC}, clear_route_cache: true"),
            "f.typed_config.clear_route_cache",
        ),
        (
            format!("{GRPC}, metadata_context_namespaces: [a]"),
            "f.typed_config.metadata_context_namespaces",
        ),
        (
            format!("{GRPC}, with_request_body: {{max_request_bytes: 0}}"),
            "f.typed_config.with_request_body.max_request_bytes",
        ),
        (
            format!("{GRPC}, status_on_error: {{code: 600}}"),
            "f.typed_config.status_on_error.code",
        ),
        (
            format!("{GRPC}, validate_mutations: true"),
            "f.typed_config.validate_mutations",
        ),
        (
            format!("{GRPC}, encode_raw_headers: true"),
            "f.typed_config.encode_raw_headers",
        ),
        (
            format!("{GRPC}, shadow_mode: true"),
            "f.typed_config.shadow_mode",
        ),
        (
            format!("{GRPC}, bootstrap_metadata_labels_key: k"),
            "f.typed_config.bootstrap_metadata_labels_key",
        ),
        (
            format!("{GRPC}, allowed_headers: {{patterns: [{{prefix: \"\"}}]}}"),
            "f.typed_config.allowed_headers.patterns[0].prefix",
        ),
    ];
    for (config, path) in cases {
        let errors = filter_errors(&entry(&config));
        assert!(
            errors.iter().any(|e| e.path == path),
            "{config}: {errors:?}"
        );
    }
}

/// Istio's CUSTOM policy with an `envoyExtAuthzHttp` provider: the HTTP service, its check
/// headers (the allowed ones and Envoy's four) and where the answer's headers go.
#[test]
fn istio_http_config_translates() {
    let f = ext_authz(
        r#"http_service: {path_prefix: /check,
             server_uri: {uri: "http://authz.foo.svc.cluster.local",
               cluster: "outbound|8000||authz.foo.svc.cluster.local", timeout: 600s},
             authorization_request: {headers_to_add: [{key: X-Tenant, value: "t%%1"}]},
             authorization_response: {
               allowed_upstream_headers: {patterns: [{exact: x-user, ignore_case: true}]},
               allowed_client_headers: {patterns: [{prefix: x-deny-}]},
               allowed_client_headers_on_success: {patterns: [{exact: x-ok}]},
               dynamic_metadata_from_headers: {patterns: [{exact: x-meta}]}}},
           allowed_headers: {patterns: [{exact: x-verdict, ignore_case: true}]},
           status_on_error: {code: 503}, failure_mode_allow: true, transport_api_version: V3"#,
    );
    let AuthzService::Http(http) = &f.service else {
        panic!("{:?}", f.service)
    };
    assert_eq!(http.cluster, "outbound|8000||authz.foo.svc.cluster.local");
    assert_eq!(http.timeout, Some(Duration::from_secs(600)));
    assert_eq!(http.path, CheckPath::Prefix("/check".into()));
    assert_eq!(http.headers_to_add, [("x-tenant".into(), "t%1".into())]);
    assert!(http.upstream[0].matches(b"x-user") && http.upstream_to_append.is_empty());
    assert!(http.client.includes(b"x-deny-reason") && http.client.includes(b"location"));
    assert!(!http.client.includes(b"x-other"));
    assert!(http.client_on_success[0].matches(b"x-ok") && http.metadata[0].matches(b"x-meta"));
    for name in [
        "x-verdict",
        "authorization",
        ":method",
        ":path",
        ":authority",
    ] {
        assert!(f.headers.includes(name.as_bytes()), "{name}");
    }
    assert!(!f.headers.includes(b"cookie") && !f.headers.includes(b":scheme"));
    assert_eq!((f.status_on_error, f.failure_mode_allow), (503, true));
}

/// Envoy's defaults for an HTTP service: only its four headers checked, every answer header
/// but `host` to a denied client, `0s`: no deadline; `path_override`.
#[test]
fn http_service_defaults() {
    let f = ext_authz(
        r#"http_service: {path_override: /authz,
             server_uri: {uri: "http://a", cluster: a, timeout: 0s},
             authorization_request: {allowed_headers: {patterns: [{exact: x-a}]}}}"#,
    );
    let AuthzService::Http(http) = &f.service else {
        panic!()
    };
    assert_eq!(http.path, CheckPath::Override("/authz".into()));
    assert_eq!(http.timeout, None);
    assert!(http.client.includes(b"x-anything") && !http.client.includes(b"host"));
    assert!(f.headers.includes(b"x-a") && f.headers.includes(b"authorization"));
    assert!(!f.headers.includes(b"x-b"));
}

/// What an HTTP service refuses, each error naming its field.
#[test]
fn http_service_refusals_are_named() {
    let uri = r#"server_uri: {uri: "http://a", cluster: a, timeout: 1s}"#;
    let cases = [
        (
            r#"http_service: {server_uri: {uri: "http://a", cluster: a}}"#.to_string(),
            "f.typed_config.http_service.server_uri.timeout",
        ),
        (
            r#"http_service: {server_uri: {uri: "http://a", timeout: 1s}}"#.into(),
            "f.typed_config.http_service.server_uri.cluster",
        ),
        (
            r#"http_service: {server_uri: {cluster: a, timeout: 1s}}"#.into(),
            "f.typed_config.http_service.server_uri.uri",
        ),
        (
            format!("http_service: {{{uri}, path_prefix: /a, path_override: /b}}"),
            "f.typed_config.http_service.path_override",
        ),
        (
            format!("http_service: {{{uri}, retry_policy: {{num_retries: 1}}}}"),
            "f.typed_config.http_service.retry_policy",
        ),
        (
            format!(
                r#"http_service: {{{uri}, authorization_request: {{headers_to_add: [{{key: x-a, value: "%REQ(x-b)%"}}]}}}}"#
            ),
            "f.typed_config.http_service.authorization_request.headers_to_add[0].value",
        ),
        (
            format!(
                r#"http_service: {{{uri}, authorization_request: {{headers_to_add: [{{key: ":path", value: a}}]}}}}"#
            ),
            "f.typed_config.http_service.authorization_request.headers_to_add[0].key",
        ),
        (
            format!(
                r#"http_service: {{{uri}, authorization_request: {{allowed_headers: {{patterns: [{{exact: a}}]}}}}}}, allowed_headers: {{patterns: [{{exact: b}}]}}"#
            ),
            "f.typed_config.http_service.authorization_request.allowed_headers",
        ),
    ];
    for (config, path) in cases {
        let errors = filter_errors(&entry(&config));
        assert!(
            errors.iter().any(|e| e.path == path),
            "{config}: {errors:?}"
        );
    }
}

/// `ExtAuthzPerRoute`: disabled, or check settings (context extensions, body override).
#[test]
fn per_route_configs() {
    let config = |body: &str| per_route_config(&format!(r#"{{"@type": "{PER_ROUTE}", {body}}}"#));
    assert!(matches!(config("disabled: true"), PerRouteFilter::Disabled));
    let PerRouteFilter::ExtAuthz(enabled) = config("disabled: false") else {
        panic!()
    };
    assert_eq!(enabled.body, BodyOverride::Inherit);
    let PerRouteFilter::ExtAuthz(settings) = config(
        "check_settings: {context_extensions: {b: \"2\", a: \"1\"}, \
         with_request_body: {max_request_bytes: 5, pack_as_bytes: true}}",
    ) else {
        panic!()
    };
    assert_eq!(
        settings.context_extensions,
        [("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert!(matches!(settings.body, BodyOverride::Settings(b) if b.pack_as_bytes));
    let PerRouteFilter::ExtAuthz(off) =
        config("check_settings: {disable_request_body_buffering: true}")
    else {
        panic!()
    };
    assert_eq!(off.body, BodyOverride::Disabled);
    for (body, path) in [
        (
            "check_settings: {disable_request_body_buffering: true, \
             with_request_body: {max_request_bytes: 5}}",
            "r.typed_per_filter_config[x].check_settings",
        ),
        (
            "check_settings: {grpc_service: {envoy_grpc: {cluster_name: b}}}",
            "r.typed_per_filter_config[x].check_settings.grpc_service",
        ),
    ] {
        let errors = per_route_errors(&format!(r#"{{"@type": "{PER_ROUTE}", {body}}}"#));
        assert!(errors.iter().any(|e| e.path == path), "{errors:?}");
    }
}
