//! Translator: the supported surface of the bootstrap's process-wide sections Istio's agent
//! writes (bootstrap extensions, overload manager, tracing, cluster manager), each field
//! accepted with the reason it changes no traffic, or refused by the walker.
use super::surface::{AnySlot, Surface};
use crate::names;

/// The surface (see `surface.rs`).
pub const SURFACE: &[Surface] = &[
    Surface {
        message: "envoy.config.core.v3.TypedExtensionConfig",
        supported: &["name", "typed_config"],
        ignored: &[],
    },
    Surface {
        message: names::INTERNAL_LISTENER,
        supported: &["buffer_size_kb"],
        ignored: &[],
    },
    Surface {
        message: names::ISTIO_WORKLOAD_DISCOVERY,
        supported: &[],
        ignored: &[(
            "config_source",
            "workload metadata discovery is not subscribed (it only labels Istio telemetry)",
        )],
    },
    Surface {
        message: "envoy.config.overload.v3.OverloadManager",
        supported: &["refresh_interval", "resource_monitors", "actions"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.overload.v3.OverloadAction",
        supported: &["name", "triggers"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.overload.v3.Trigger",
        supported: &["name", "threshold", "scaled"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.overload.v3.ThresholdTrigger",
        supported: &["value"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.overload.v3.ScaledTrigger",
        supported: &["scaling_threshold", "saturation_threshold"],
        ignored: &[],
    },
    Surface {
        message: names::FIXED_HEAP,
        supported: &["max_heap_size_bytes"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.overload.v3.ResourceMonitor",
        supported: &["name", "typed_config"],
        ignored: &[],
    },
    Surface {
        message: names::DOWNSTREAM_CONNECTIONS,
        supported: &["max_active_downstream_connections"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.trace.v3.Tracing",
        supported: &["http"],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.trace.v3.Tracing.Http",
        supported: &["name", "typed_config"],
        ignored: &[],
    },
    Surface {
        message: names::ZIPKIN,
        supported: &[
            "collector_cluster",
            "collector_endpoint",
            "collector_endpoint_version",
            "collector_hostname",
            "trace_id_128bit",
            "shared_span_context",
            "split_spans_for_request",
        ],
        ignored: &[],
    },
    Surface {
        message: "envoy.config.bootstrap.v3.ClusterManager",
        supported: &["local_cluster_name"],
        ignored: &[
            (
                "outlier_detection",
                "its event log records ejections, and outlier detection is not supported yet",
            ),
            (
                "enable_deferred_cluster_creation",
                "clusters are built when published; this only defers when their memory is taken",
            ),
        ],
    },
];

/// `Any` slots of these sections. `TypedExtensionConfig` holds only bootstrap extensions as
/// far as the walker reaches (every other field of that type is refused by its parent).
pub const ANY_SLOTS: &[AnySlot] = &[
    (
        "envoy.config.core.v3.TypedExtensionConfig",
        "bootstrap extension",
        &[names::INTERNAL_LISTENER, names::ISTIO_WORKLOAD_DISCOVERY],
    ),
    (
        "envoy.config.overload.v3.ResourceMonitor",
        "resource monitor",
        &[names::DOWNSTREAM_CONNECTIONS, names::FIXED_HEAP],
    ),
    (
        "envoy.config.trace.v3.Tracing.Http",
        "tracer",
        &[names::ZIPKIN],
    ),
];
