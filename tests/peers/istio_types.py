"""Test peer support: descriptors for Istio extension configs that xds-protos lacks.

Istio's control plane puts a few of istio-proxy's own config messages into `typed_config`
Anys. xds_server.py must encode those byte-correctly to serve the real Istio config dumps, so
this module registers their message descriptors (field names and numbers as istio-proxy
declares them) in protobuf's default pool; json_format then parses them like any other type:

    istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig   (istio.alpn HTTP filter)
    stats.PluginConfig                                          (istio.stats HTTP/TCP filter)
    envoy.tcp.metadataexchange.config.MetadataExchange          (istio's TCP metadata exchange)

A type that is neither here nor in xds-protos is not guessed: xds_server.py carries it as an
`xds.type.v3.TypedStruct` naming the original type (see its docstring).

Import `register()` once before parsing; it is idempotent.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2

_F = descriptor_pb2.FieldDescriptorProto
_registered = False


def _field(name: str, number: int, kind: int, repeated: bool = False, type_name: str = ""):
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    return _F(name=name, number=number, type=kind, label=label, type_name=type_name or None)


def _message(name: str, *fields, nested=(), enums=()):
    return descriptor_pb2.DescriptorProto(
        name=name, field=list(fields), nested_type=list(nested), enum_type=list(enums)
    )


def _enum(name: str, *values: str):
    return descriptor_pb2.EnumDescriptorProto(
        name=name,
        value=[
            descriptor_pb2.EnumValueDescriptorProto(name=v, number=i)
            for i, v in enumerate(values)
        ],
    )


def _file(name: str, package: str, messages, enums=(), deps=()):
    return descriptor_pb2.FileDescriptorProto(
        name=name,
        package=package,
        syntax="proto3",
        dependency=list(deps),
        message_type=list(messages),
        enum_type=list(enums),
    )


def _alpn():
    pkg = "istio.envoy.config.filter.http.alpn.v2alpha1"
    override = _message(
        "AlpnOverride",
        _field("upstream_protocol", 1, _F.TYPE_ENUM,
               type_name=f".{pkg}.FilterConfig.ProtocolVersion"),
        _field("alpn_override", 2, _F.TYPE_STRING, repeated=True),
    )
    config = _message(
        "FilterConfig",
        _field("alpn_override", 1, _F.TYPE_MESSAGE, repeated=True,
               type_name=f".{pkg}.FilterConfig.AlpnOverride"),
        nested=[override],
        enums=[_enum("ProtocolVersion", "HTTP10", "HTTP11", "HTTP2")],
    )
    return _file("shardproxy_test/istio_alpn.proto", pkg, [config])


def _stats():
    duration = ".google.protobuf.Duration"
    entry = descriptor_pb2.DescriptorProto(
        name="DimensionsEntry",
        field=[_field("key", 1, _F.TYPE_STRING), _field("value", 2, _F.TYPE_STRING)],
        options=descriptor_pb2.MessageOptions(map_entry=True),
    )
    metric_config = _message(
        "MetricConfig",
        _field("dimensions", 1, _F.TYPE_MESSAGE, repeated=True,
               type_name=".stats.MetricConfig.DimensionsEntry"),
        _field("name", 2, _F.TYPE_STRING),
        _field("tags_to_remove", 3, _F.TYPE_STRING, repeated=True),
        _field("match", 4, _F.TYPE_STRING),
        _field("drop", 5, _F.TYPE_BOOL),
        nested=[entry],
    )
    definition = _message(
        "MetricDefinition",
        _field("name", 1, _F.TYPE_STRING),
        _field("value", 2, _F.TYPE_STRING),
        _field("type", 3, _F.TYPE_ENUM, type_name=".stats.MetricType"),
    )
    plugin = _message(
        "PluginConfig",
        _field("disable_host_header_fallback", 6, _F.TYPE_BOOL),
        _field("tcp_reporting_duration", 7, _F.TYPE_MESSAGE, type_name=duration),
        _field("metrics", 8, _F.TYPE_MESSAGE, repeated=True, type_name=".stats.MetricConfig"),
        _field("definitions", 9, _F.TYPE_MESSAGE, repeated=True,
               type_name=".stats.MetricDefinition"),
        _field("reporter", 10, _F.TYPE_ENUM, type_name=".stats.Reporter"),
        _field("rotation_interval", 11, _F.TYPE_MESSAGE, type_name=duration),
        _field("graceful_deletion_interval", 12, _F.TYPE_MESSAGE, type_name=duration),
    )
    return _file(
        "shardproxy_test/istio_stats.proto",
        "stats",
        [metric_config, definition, plugin],
        enums=[
            _enum("MetricType", "COUNTER", "GAUGE", "HISTOGRAM"),
            _enum("Reporter", "UNSPECIFIED", "SERVER_GATEWAY"),
        ],
        deps=[duration_pb2.DESCRIPTOR.name],
    )


def _metadata_exchange():
    exchange = _message(
        "MetadataExchange",
        _field("protocol", 1, _F.TYPE_STRING),
        _field("enable_discovery", 2, _F.TYPE_BOOL),
        _field("additional_labels", 3, _F.TYPE_STRING, repeated=True),
    )
    return _file(
        "shardproxy_test/istio_metadata_exchange.proto",
        "envoy.tcp.metadataexchange.config",
        [exchange],
    )


def register() -> None:
    """Adds the Istio descriptors to protobuf's default pool (once)."""
    global _registered
    if _registered:
        return
    pool = descriptor_pool.Default()
    for file in (_alpn(), _stats(), _metadata_exchange()):
        pool.AddSerializedFile(file.SerializeToString())
    _registered = True
