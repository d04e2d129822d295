//! Translator tests: SDS — where a secret comes from (and what is rejected, with its path), a
//! TLS context waiting for its SDS secret and taking it, SDS bytes kept out of the config
//! hash, and unix-socket clusters kept for the agent's streams.
use std::{collections::HashMap, sync::Arc};

use envoy_types::pb::envoy::{
    config::{
        bootstrap::v3::Bootstrap,
        core::v3::{data_source, DataSource},
    },
    extensions::transport_sockets::tls::v3::{secret, Secret, TlsCertificate},
};

use super::*;
use model::tls::{GrpcSecretSource, SdsSecret, SecretKey, SecretSource};

/// A self-signed test certificate (P-256, valid to 2126) and its key.
const CERT: &str = include_str!("testdata/unit.crt");
const KEY: &str = include_str!("testdata/unit.key");

const DOWNSTREAM: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";

/// A bootstrap with an ADS stream (to the unix-socket cluster `xds`), a unix-socket cluster
/// `sds-grpc`, a cluster `c`, and a TLS listener to `c` naming secret `s` from `sds_config`.
fn bootstrap(sds_config: &str) -> Bootstrap {
    let pipe = |name: &str| {
        format!(
            "{{name: {name}, load_assignment: {{endpoints: [{{lb_endpoints: [{{endpoint: \
             {{address: {{pipe: {{path: /run/{name}.sock}}}}}}}}]}}]}}, \
             typed_extension_protocol_options: {{envoy.extensions.upstreams.http.v3.HttpProtocolOptions: \
             {{'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, \
             explicit_http_config: {{http2_protocol_options: {{}}}}}}}}}}"
        )
    };
    let yaml = format!(
        r#"
dynamic_resources:
  ads_config: {{api_type: GRPC, transport_api_version: V3, grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]}}
static_resources:
  clusters:
  - {}
  - {}
  - {{name: c, load_assignment: {{endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 10.0.0.1, port_value: 80}}}}}}}}]}}]}}}}
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10443}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c}}
      transport_socket:
        name: tls
        typed_config:
          "@type": {DOWNSTREAM}
          common_tls_context:
            tls_certificate_sds_secret_configs: [{{name: s, sds_config: {sds_config}}}]
"#,
        pipe("xds"),
        pipe("sds-grpc"),
    );
    proto::from_json(proto::parse_document(&yaml).unwrap(), false).unwrap()
}

fn run(
    bootstrap: &Bootstrap,
    held: HashMap<SecretKey, Secret>,
) -> Result<(Snapshot, Arc<tls::Secrets>), Vec<TranslateError>> {
    let mut stats = StatsRegistry::new(1);
    let mut ctx = TranslateContext {
        generation: 1,
        stats: &mut stats,
        previous: None,
        dns: &HashMap::new(),
        extensions: &Default::default(),
        secrets: Arc::new(tls::Secrets {
            held: Arc::new(held),
            ..Default::default()
        }),
        local_peer: Default::default(),
        ports: None,
    };
    translate(bootstrap, &mut ctx).map(|snapshot| (snapshot, ctx.secrets))
}

fn paths(sds_config: &str) -> Vec<String> {
    let errors = run(&bootstrap(sds_config), HashMap::new()).unwrap_err();
    errors.into_iter().map(|e| e.path).collect()
}

fn certificate(pem: &str) -> Secret {
    let inline = |text: &str| DataSource {
        specifier: Some(data_source::Specifier::InlineString(text.into())),
        ..Default::default()
    };
    Secret {
        name: "s".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(pem)),
            private_key: Some(inline(KEY)),
            ..Default::default()
        })),
    }
}

const AT: &str = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config\
                  .common_tls_context.tls_certificate_sds_secret_configs[0]";

#[test]
fn secret_sources_and_their_errors() {
    let grpc = "{api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}}";
    let (snapshot, secrets) = run(&bootstrap(grpc), HashMap::new()).unwrap();
    let tls = snapshot.listeners[0].filter_chains[0].tls.as_ref().unwrap();
    let key = SecretKey {
        source: SecretSource::Grpc(GrpcSecretSource {
            cluster: "sds-grpc".into(),
            delta: false,
            set_node_on_first_message_only: false,
        }),
        name: "s".into(),
    };
    assert_eq!(
        tls.secrets,
        vec![SdsSecret {
            key,
            initial_fetch_timeout: Some(config_source::DEFAULT_INITIAL_FETCH_TIMEOUT),
        }]
    );
    // Unix-socket clusters are the agent's: not published, reachable by its streams.
    assert_eq!(snapshot.clusters.keys().collect::<Vec<_>>(), ["c"]);
    assert!(secrets.grpc_clusters.contains_key("sds-grpc") && secrets.ads);

    assert_eq!(
        paths("{api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: nope}}]}}"),
        [format!("{AT}.sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name")]
    );
    assert_eq!(
        paths("{api_config_source: {api_type: REST, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}}"),
        [format!("{AT}.sds_config.api_config_source.api_type")]
    );
    assert_eq!(
        paths("{path_config_source: {path: /nonexistent/secret.yaml}}"),
        [format!("{AT}.sds_config.path_config_source.path")]
    );
    assert_eq!(
        paths("{ads: {}, resource_api_version: V2}"),
        [format!("{AT}.sds_config.resource_api_version")]
    );
    let mut without_ads = bootstrap("{ads: {}}");
    without_ads.dynamic_resources = None;
    let errors = run(&without_ads, HashMap::new()).unwrap_err();
    assert_eq!(errors[0].path, format!("{AT}.sds_config.ads"));
}

#[test]
fn other_sources_serve_ads_only() {
    let mut b = bootstrap("{ads: {}}");
    let dynamic = b.dynamic_resources.as_mut().unwrap();
    dynamic.lds_config = Some(
        proto::from_json(
            serde_json::json!({"path_config_source": {"path": "/etc/lds.yaml"}}),
            false,
        )
        .unwrap(),
    );
    let errors = run(&b, HashMap::new()).unwrap_err();
    assert_eq!(errors[0].path, "dynamic_resources.lds_config");
    assert!(errors[0].message.contains("only ads"), "{errors:?}");
}

#[test]
fn a_context_waits_for_its_secret_and_its_bytes_are_not_config() {
    let b = bootstrap("{ads: {}, initial_fetch_timeout: 0s}");
    let key = SecretKey {
        source: SecretSource::Ads,
        name: "s".into(),
    };
    let tls = |snapshot: &Snapshot| snapshot.listeners[0].filter_chains[0].tls.clone().unwrap();
    let (waiting, _) = run(&b, HashMap::new()).unwrap();
    assert!(tls(&waiting).configs().is_none());
    assert_eq!(tls(&waiting).secrets[0].initial_fetch_timeout, None);
    let held = |pem: &str| HashMap::from([(key.clone(), certificate(pem))]);
    let (ready, _) = run(&b, held(CERT)).unwrap();
    let configs = tls(&ready).configs().expect("the secret is held");
    let served = &configs.listed.chain[0];
    assert_eq!(served.path, "<inline>");
    assert_eq!(served.info.sans.dns, ["unit.example.com"]);
    // Another version of the secret (other bytes) is the same config: it is swapped in place.
    let (rotated, _) = run(&b, held(&format!("{CERT}\n"))).unwrap();
    let hash = |s: &Snapshot| s.listeners[0].config_hash;
    assert_eq!(hash(&waiting), hash(&ready));
    assert_eq!(hash(&ready), hash(&rotated));
    // A key that does not match is reported under the secret's path.
    let mut mismatched = certificate(CERT);
    if let Some(secret::Type::TlsCertificate(cert)) = &mut mismatched.r#type {
        cert.private_key = Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString(
                "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".into(),
            )),
            ..Default::default()
        });
    }
    let errors = run(&b, HashMap::from([(key, mismatched)])).unwrap_err();
    assert_eq!(errors[0].path, "secrets[\"s\"].tls_certificate.private_key");
}
