//! Translator: the supported surface of TLS transport sockets and secrets (see `surface.rs`
//! for how the walker uses it).
use super::surface::{AnySlot, Surface};
use crate::names;

pub const SURFACE: &[Surface] = &[
    Surface {
        message: "envoy.config.core.v3.TransportSocket",
        supported: &["name", "typed_config"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: names::INTERNAL_UPSTREAM,
        supported: &["passthrough_metadata", "transport_socket"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport.MetadataValueSource",
        supported: &["kind", "name"],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.metadata.v3.MetadataKind.Host",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.type.metadata.v3.MetadataKind.Cluster",
        supported: &[],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        supported: &[
            "common_tls_context",
            "require_client_certificate",
            "disable_stateless_session_resumption",
            "disable_stateful_session_resumption",
            "ocsp_staple_policy",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        supported: &["common_tls_context", "sni", "max_session_keys"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
        supported: &[
            "tls_params",
            "tls_certificates",
            "tls_certificate_sds_secret_configs",
            "alpn_protocols",
            "validation_context",
            "validation_context_sds_secret_config",
            "combined_validation_context",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext",
        supported: &[
            "default_validation_context",
            "validation_context_sds_secret_config",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.tls.v3.TlsParameters",
        supported: &[
            "tls_minimum_protocol_version",
            "tls_maximum_protocol_version",
            "cipher_suites",
            "ecdh_curves",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.tls.v3.TlsCertificate",
        supported: &["certificate_chain", "private_key"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext",
        supported: &[
            "trusted_ca",
            "match_typed_subject_alt_names",
            "match_subject_alt_names",
            "crl",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher",
        supported: &["san_type", "matcher"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig",
        supported: &["name", "sds_config"],
        ignored: &[],
    },
    Surface {
        message: "envoy.extensions.transport_sockets.tls.v3.Secret",
        supported: &["name", "tls_certificate", "validation_context"],
        ignored: &[],
    },
];

pub const ANY_SLOTS: &[AnySlot] = &[(
    "envoy.config.core.v3.TransportSocket",
    "transport socket",
    &[
        names::DOWNSTREAM_TLS_CONTEXT,
        names::UPSTREAM_TLS_CONTEXT,
        names::RAW_BUFFER,
        names::INTERNAL_UPSTREAM,
    ],
)];
