#!/usr/bin/env python3
"""Test peer: an xDS control plane (Aggregated Discovery Service) driven by a script file.

Started by the end-to-end tests as a separate process; it speaks real xDS v3 over gRPC, so the
same control plane drives Envoy and shardproxy's agent. Run from the test venv (grpcio and
xds-protos installed):

    xds_server.py --script resources.json [--port 0] [--control-port 0] [--unix PATH]...

It listens on 127.0.0.1 only, prints `LISTEN ads <port>` and `LISTEN control <port>`
(kernel-chosen when 0), then `READY`. With `--unix PATH` (repeatable) it serves ADS and SDS
on that unix socket too (a pod's `xds-grpc` and `sds-grpc` pipes). It exits when its stdin
reaches EOF (the parent test died or dropped its handle) or on SIGTERM/SIGINT.

Services: envoy.service.discovery.v3.AggregatedDiscoveryService, both
StreamAggregatedResources (state of the world) and DeltaAggregatedResources (incremental);
envoy.service.secret.v3.SecretDiscoveryService (StreamSecrets, DeltaSecrets: SDS on its own
stream, as Istio's `sds-grpc` cluster) serving the same resources with the same semantics.

Script format (JSON; YAML when the file ends in .yaml/.yml and PyYAML is installed):

    {"resources": {
        "type.googleapis.com/envoy.config.listener.v3.Listener": [ {<Listener as proto JSON>} ],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster":   [ {<Cluster as proto JSON>} ]
     },
     "remove": {type_url: [resource name, ...]},
     "nodes": {node_id: {type_url: [ {<resource as proto JSON>} ]}}}

Any key may be left out (not all). `nodes` holds resources only the streams of that node id
see, on top of the shared ones (a node's resource wins over a shared one of the same name): a
pod's own listeners and its workload certificate `default`, as istiod and the pod's agent
serve them. Each resource is the proto3 JSON of the message its
type URL names (any `@type` inside, e.g. an HCM typed_config, is resolved by importing the
matching xds-protos module; Istio's own alpn, stats and metadata-exchange configs are known
through tests/peers/istio_types.py). An Any whose `@type` no descriptor knows (e.g. Istio's
`istio.envoy.config.filter.http.authn.v2alpha1.FilterConfig`) is served as an
`xds.type.v3.TypedStruct` whose `type_url` is that original type and whose `value` is the Any's
other fields as a Struct: the bytes are a correct TypedStruct, and the client decides (Envoy
looks the original type up in its extension registry and accepts or NACKs). A resource's name
is its `name` field (`cluster_name` for ClusterLoadAssignment).

"resources" replaces the whole resource set of each type it names (so a resource left out is
removed); "remove" deletes the named resources of a type and keeps the rest; "nodes" replaces
the node's own resources of each type it names. Types not named
keep their resources. Every type whose resources changed gets a new version ("1", "2", ... per
type URL) and is pushed to every stream subscribed to it: state of the world sends the new
(possibly shorter) set, Delta sends the changed resources and the names of removed ones in
`removed_resources`. The script file is re-read when its mtime or size changes (an unparsable
file is reported on stderr and ignored).

Control endpoints (HTTP/1.1 on the control port, JSON bodies):

    POST /push   body: a resource set as above. 200 {"versions": {type_url: version}};
                 400 {"error": "..."} when it does not parse (nothing is applied).
    POST /churn  body: {"type_url": T, "template": <one resource as proto JSON>,
                        "count": N, "interval_ms": M (default 0)}.
                 Pushes N successive versions of one resource of type T, M ms apart; step n
                 (1..N) is the template with every `{{n}}` in its JSON text replaced by n
                 (so "x-{{n}}" becomes "x-7"; a bare number field may be given as "{{n}}").
                 Each step replaces that one resource (the others of T stay) and bumps T's
                 version. All steps are parsed before the first push; the reply comes when
                 the last is applied: 200 {"type_url": T, "name": resource name,
                 "count": N, "version": T's final version}; 400 {"error": "..."} when the
                 body or any step does not parse or the steps name different resources.
    POST /drop   closes every open stream (gRPC status UNAVAILABLE); clients must
                 reconnect. 200 {"dropped": number of streams closed}.
    GET  /streams  the open streams: {"streams": [{"id": N, "node_id": "...",
                 "node": {the last Node the stream sent, proto JSON field names},
                 "mode": "sotw" or "delta", "subscribed": {type_url: {"wildcard": bool,
                 "names": [names subscribed by name]}}}]}; a delta stream's entries also
                 carry "sent": {name: resource version the client holds}.
    GET  /acks   what every client (by node id) did per type URL:
                 {"versions": {type_url: current version},
                  "clients": {node_id: {type_url: {
                      "mode": "sotw" or "delta" (the stream kind of its last request),
                      "acked": [versions ACKed, in order],
                      "nacked": [{"version": rejected version, "nonce": ...,
                                  "error_detail": {"code": N, "message": "..."}}],
                      "requests": N,
                      "initial_resource_versions": {name: version}}}}}
                 For delta streams, a version is the one the server gave that type's
                 resource set when it sent them. `initial_resource_versions` is what the
                 last delta stream's first request of the type carried (delta only).

Versions: each type URL has a counter, bumped by every change of its resource set; it is
`version_info` on state-of-the-world responses and `system_version_info` on Delta ones. On
Delta each resource also has its own version: the first 16 hex digits of the SHA-256 of its
deterministically serialized Any, so it changes exactly when the resource's bytes do and is
stable across server restarts (a reconnecting client's `initial_resource_versions` that match
are not re-sent).

Protocol notes: each response carries a fresh nonce per stream; a state-of-the-world request
whose response_nonce is not the latest one sent for its type is stale and ignored (xDS spec).
A request with no nonce (subscription start) is answered with the current resources.
Wildcard subscriptions (no names, or "*") get every resource of the type; named ones only
those named. On Delta a name subscribed that the server does not have is listed once in
`removed_resources` (the spec's "resource does not exist"); it is sent when it appears. A
state-of-the-world response whose version the stream already sent is not repeated. On
Delta a plain ACK or NACK is not answered, and a push that changes single resources (`remove`,
/churn) is compared and sent per changed resource, so one change in a 10,000-resource type
costs the server what one resource costs.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import itertools
import json
import os
import pkgutil
import queue
import signal
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from xds.type.v3 import typed_struct_pb2  # noqa: F401 (the fallback for unknown @types)

import istio_types
from json_http import reply_json

istio_types.register()

TYPE_PREFIX = "type.googleapis.com/"
TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"
_imported_packages: set[str] = set()


# ------------------------------------------------------------------------------------------
# Resources: proto JSON -> Any


def _import_package_of(full_name: str) -> None:
    """Imports every *_pb2 module of the proto package holding message `full_name`."""
    package = full_name.rsplit(".", 1)[0]
    if package in _imported_packages:
        return
    _imported_packages.add(package)
    try:
        pkg = importlib.import_module(package)
    except ImportError:
        return
    for mod in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        if mod.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{mod.name}")


def _import_types_in(value) -> None:
    """Makes every `@type` named inside a JSON value known to json_format."""
    if isinstance(value, dict):
        t = value.get("@type")
        if isinstance(t, str):
            _import_package_of(t.split("/")[-1])
        for v in value.values():
            _import_types_in(v)
    elif isinstance(value, list):
        for v in value:
            _import_types_in(v)


def _message_class(type_url: str):
    full_name = type_url[len(TYPE_PREFIX):] if type_url.startswith(TYPE_PREFIX) else type_url
    _import_package_of(full_name)
    return message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(full_name)
    )


def resource_name(type_url: str, doc: dict) -> str:
    key = "cluster_name" if type_url.endswith("ClusterLoadAssignment") else "name"
    name = doc.get(key)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {type_url} resource has no `{key}`")
    return name


def _known(type_url: str) -> bool:
    try:
        _message_class(type_url)
        return True
    except KeyError:
        return False


def carry_unknown_types(value, carried: set[str]):
    """A copy of `value` where each Any whose `@type` no descriptor knows becomes an
    `xds.type.v3.TypedStruct` naming that type, its fields as the Struct `value`; the
    carried type URLs are added to `carried`."""
    if isinstance(value, list):
        return [carry_unknown_types(v, carried) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: carry_unknown_types(v, carried) for k, v in value.items()}
    type_url = out.get("@type")
    if isinstance(type_url, str) and not _known(type_url):
        carried.add(type_url)
        fields = {k: v for k, v in out.items() if k != "@type"}
        return {"@type": TYPED_STRUCT, "type_url": type_url, "value": fields}
    return out


def parse_resource(type_url: str, item: dict, carried: set[str] | None = None):
    """One resource's proto JSON -> (name, Any); raises ValueError. Unknown nested types are
    carried as TypedStruct (see carry_unknown_types) and reported in `carried`."""
    try:
        cls = _message_class(type_url)
    except KeyError:
        raise ValueError(f"unknown resource type {type_url}") from None
    if not isinstance(item, dict):
        raise ValueError(f"a {type_url} resource must be a JSON object")
    _import_types_in(item)
    item = carry_unknown_types(item, set() if carried is None else carried)
    try:
        msg = json_format.ParseDict(item, cls())
    except json_format.ParseError as e:
        raise ValueError(f"{type_url}: {e}") from None
    packed = any_pb2.Any()
    packed.Pack(msg, deterministic=True)
    return resource_name(type_url, item), packed


def _hash(resource: any_pb2.Any) -> str:
    """A resource's Delta version: the first 16 hex digits of its serialized SHA-256."""
    return hashlib.sha256(resource.SerializeToString(deterministic=True)).hexdigest()[:16]


class Change:
    """What one push does: `replace` sets whole types, `upsert` adds or replaces single
    resources, `remove` deletes resources by name; types not named are left alone."""

    def __init__(self, replace=None, upsert=None, remove=None):
        self.replace: dict[str, dict[str, any_pb2.Any]] = replace or {}
        self.upsert: dict[str, dict[str, any_pb2.Any]] = upsert or {}
        self.remove: dict[str, list[str]] = remove or {}
        # node id -> type_url -> {name: Any}: replaces that node's own resources of the type.
        self.nodes: dict[str, dict[str, dict[str, any_pb2.Any]]] = {}

    def types(self) -> set[str]:
        return set(self.replace) | set(self.upsert) | set(self.remove)


def parse_resource_set(doc) -> Change:
    """{"resources": {type_url: [proto JSON]}, "remove": {type_url: [name]}} -> Change
    (either key may be absent, not both); raises ValueError."""
    if not isinstance(doc, dict) or not (
        all(isinstance(doc.get(k, {}), dict) for k in ("resources", "remove", "nodes"))
        and ("resources" in doc or "remove" in doc or "nodes" in doc)
    ):
        raise ValueError(
            'a resource set is {"resources": {type_url: [resource, ...]}, '
            '"remove": {type_url: [name, ...]}, "nodes": {node_id: {type_url: [resource]}}} '
            '(any key optional)'
        )
    change = Change()
    change.replace = parse_types(doc.get("resources", {}))
    for node, types in doc.get("nodes", {}).items():
        if not isinstance(types, dict):
            raise ValueError(f"resources of node {node} must be {{type_url: [resource]}}")
        change.nodes[node] = parse_types(types)
    for type_url, names in doc.get("remove", {}).items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"remove of {type_url} must be a list of names")
        if not _known(type_url):
            raise ValueError(f"unknown resource type {type_url}")
        change.remove[type_url] = names
    return change


def parse_types(doc: dict) -> dict[str, dict[str, any_pb2.Any]]:
    """{type_url: [proto JSON]} -> {type_url: {name: Any}}; raises ValueError."""
    out = {}
    for type_url, items in doc.items():
        if not isinstance(items, list):
            raise ValueError(f"resources of {type_url} must be a list")
        by_name = out[type_url] = {}
        for item in items:
            name, packed = parse_resource(type_url, item)
            by_name[name] = packed
    return out


def churn_steps(doc) -> tuple[str, list[tuple[str, any_pb2.Any]], float]:
    """A /churn body -> (type_url, [(name, Any) per step], interval in seconds); raises
    ValueError. Step n (1-based) is the template with every `{{n}}` replaced by n."""
    if not isinstance(doc, dict):
        raise ValueError("a churn body is a JSON object")
    type_url, template = doc.get("type_url"), doc.get("template")
    count, interval_ms = doc.get("count"), doc.get("interval_ms", 0)
    if not isinstance(type_url, str) or not isinstance(template, dict):
        raise ValueError("churn needs `type_url` (string) and `template` (a resource)")
    if not isinstance(count, int) or count < 1:
        raise ValueError("churn needs `count` >= 1")
    if not isinstance(interval_ms, (int, float)) or interval_ms < 0:
        raise ValueError("churn `interval_ms` must be >= 0")
    text = json.dumps(template)
    steps = [
        parse_resource(type_url, json.loads(text.replace("{{n}}", str(n))))
        for n in range(1, count + 1)
    ]
    if len({name for name, _ in steps}) != 1:
        raise ValueError("churn steps must all name the same resource")
    return type_url, steps, interval_ms / 1000.0


def load_script(path: str):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        import yaml  # only needed for YAML scripts

        return yaml.safe_load(text)
    return json.loads(text)


# ------------------------------------------------------------------------------------------
# Shared state: resources, versions, what clients did


class Store:
    """Resources and versions per type URL, the open streams, and ACK/NACK records."""

    def __init__(self):
        self.lock = threading.Lock()
        self.resources: dict[str, dict[str, any_pb2.Any]] = {}
        # Per type URL: {name: Delta resource version}, computed once per new resource (a
        # 10,000-resource type is not rehashed on every push).
        self.hashes: dict[str, dict[str, str]] = {}
        self.versions: dict[str, int] = {}
        # node id -> type_url -> {name: Any} / {name: Delta resource version}: what only that
        # node's streams see, over the shared resources.
        self.node_resources: dict[str, dict[str, dict[str, any_pb2.Any]]] = {}
        self.node_hashes: dict[str, dict[str, dict[str, str]]] = {}
        self.streams: set["Stream"] = set()
        self.clients: dict[str, dict[str, dict]] = {}

    def apply(self, change: Change) -> dict[str, str]:
        # type_url -> the names that changed, or None when the whole type may have.
        changed: dict[str, set | None] = {}
        with self.lock:
            for type_url in sorted(change.types()):
                if type_url not in change.replace and type_url in self.versions:
                    # Single resources: only they are hashed and compared (a 10,000-resource
                    # type is not copied for one change).
                    touched = self._upsert(type_url, change)
                    if touched:
                        self.versions[type_url] += 1
                        changed[type_url] = touched
                    continue
                before = self.resources.get(type_url, {})
                after = dict(change.replace.get(type_url, before))
                after.update(change.upsert.get(type_url, {}))
                for name in change.remove.get(type_url, []):
                    after.pop(name, None)
                if after != before or type_url not in self.versions:
                    self.resources[type_url] = after
                    hashes = self.hashes.get(type_url, {})
                    self.hashes[type_url] = {
                        n: hashes[n] if before.get(n) is r and n in hashes else _hash(r)
                        for n, r in after.items()
                    }
                    self.versions[type_url] = self.versions.get(type_url, 0) + 1
                    changed[type_url] = None
            for node, types in change.nodes.items():
                own = self.node_resources.setdefault(node, {})
                own_hashes = self.node_hashes.setdefault(node, {})
                for type_url, after in types.items():
                    if own.get(type_url) != after or type_url not in self.versions:
                        own[type_url] = after
                        own_hashes[type_url] = {n: _hash(r) for n, r in after.items()}
                        self.versions[type_url] = self.versions.get(type_url, 0) + 1
                        changed[type_url] = None
            streams = list(self.streams)
            versions = {t: str(v) for t, v in self.versions.items()}
        for stream in streams:
            stream.events.put(("push", changed))
        return versions

    def _upsert(self, type_url: str, change: Change) -> set:
        """Applies `change`'s upserts and removals of one type in place (lock held); the names
        that changed."""
        resources = self.resources[type_url]
        hashes = self.hashes.setdefault(type_url, {})
        touched = set()
        for name, resource in change.upsert.get(type_url, {}).items():
            digest = _hash(resource)
            if hashes.get(name) != digest:
                resources[name], hashes[name] = resource, digest
                touched.add(name)
        for name in change.remove.get(type_url, []):
            if resources.pop(name, None) is not None:
                hashes.pop(name, None)
                touched.add(name)
        return touched

    def open_streams(self) -> list[dict]:
        with self.lock:
            streams = sorted(self.streams, key=lambda s: s.id)
        return [stream.describe() for stream in streams]

    def drop_streams(self) -> int:
        with self.lock:
            streams = list(self.streams)
        for stream in streams:
            stream.events.put(("drop", None))
        return len(streams)

    def _view(self, type_url: str, node: str):
        """({name: resource}, {name: Delta resource version}) of one type as `node` sees it:
        the shared ones, then its own (lock held)."""
        resources = self.resources.get(type_url, {})
        hashes = self.hashes.get(type_url, {})
        own = self.node_resources.get(node, {}).get(type_url)
        if own is None:
            return resources, hashes
        own_hashes = self.node_hashes[node][type_url]
        return {**resources, **own}, {**hashes, **own_hashes}

    def snapshot(self, type_url: str, node: str) -> tuple[str, dict[str, any_pb2.Any]]:
        with self.lock:
            return str(self.versions.get(type_url, 0)), dict(self._view(type_url, node)[0])

    def snapshot_hashed(self, type_url: str, node: str):
        """(version, {name: resource}, {name: Delta resource version}) of one type."""
        with self.lock:
            resources, hashes = self._view(type_url, node)
            return str(self.versions.get(type_url, 0)), dict(resources), dict(hashes)

    def lookup_hashed(self, type_url: str, names, node: str):
        """(version, {name: (resource, Delta resource version) or None}) for `names`."""
        with self.lock:
            resources, hashes = self._view(type_url, node)
            found = {n: (resources[n], hashes[n]) if n in resources else None for n in names}
            return str(self.versions.get(type_url, 0)), found

    def _record(self, node_id: str, type_url: str) -> dict:
        per_type = self.clients.setdefault(node_id, {})
        return per_type.setdefault(
            type_url, {"mode": "", "acked": [], "nacked": [], "requests": 0}
        )

    def note_request(self, node_id: str, type_url: str, mode: str) -> None:
        with self.lock:
            record = self._record(node_id, type_url)
            record["mode"] = mode
            record["requests"] += 1

    def note_initial_versions(self, node_id: str, type_url: str, versions) -> None:
        with self.lock:
            self._record(node_id, type_url)["initial_resource_versions"] = dict(versions)

    def note_ack(self, node_id: str, type_url: str, version: str) -> None:
        with self.lock:
            self._record(node_id, type_url)["acked"].append(version)

    def note_nack(self, node_id: str, type_url: str, version: str, nonce: str, status) -> None:
        with self.lock:
            self._record(node_id, type_url)["nacked"].append(
                {
                    "version": version,
                    "nonce": nonce,
                    "error_detail": {"code": status.code, "message": status.message},
                }
            )

    def report(self) -> dict:
        with self.lock:
            return json.loads(
                json.dumps(
                    {
                        "versions": {t: str(v) for t, v in self.versions.items()},
                        "clients": self.clients,
                    }
                )
            )


# ------------------------------------------------------------------------------------------
# ADS streams


class Stream:
    """One client stream: its request reader feeds `events`, pushes are queued there too."""

    _ids = itertools.count(1)
    mode = ""  # "sotw" or "delta"

    def __init__(self, store: Store):
        self.store = store
        self.events: queue.Queue = queue.Queue()
        self.id = next(self._ids)
        self.nonces = itertools.count(1)
        self.node_id = ""
        self.node: dict = {}

    def next_nonce(self) -> str:
        return f"{self.id}-{next(self.nonces)}"

    def read_requests(self, request_iterator) -> None:
        try:
            for request in request_iterator:
                if request.node.id:
                    self.node_id = request.node.id
                if request.HasField("node"):
                    self.node = json_format.MessageToDict(
                        request.node, preserving_proto_field_name=True
                    )
                self.events.put(("request", request))
        except grpc.RpcError:
            pass
        finally:
            self.events.put(("closed", None))

    def run(self, request_iterator, context):
        """Yields responses until the client goes away; registered for pushes meanwhile."""
        threading.Thread(target=self.read_requests, args=(request_iterator,), daemon=True).start()
        with self.store.lock:
            self.store.streams.add(self)
        try:
            while context.is_active():
                try:
                    kind, payload = self.events.get(timeout=0.5)
                except queue.Empty:
                    continue
                if kind == "closed":
                    return
                if kind == "drop":
                    context.set_code(grpc.StatusCode.UNAVAILABLE)
                    context.set_details("stream dropped by the control plane (POST /drop)")
                    return
                handle = self.on_request if kind == "request" else self.on_push
                yield from handle(payload)
        finally:
            with self.store.lock:
                self.store.streams.discard(self)


def _wildcard(names) -> bool:
    return not names or "*" in names


class SotwStream(Stream):
    """State of the world: every response holds all the subscribed resources of its type."""

    mode = "sotw"

    def __init__(self, store: Store):
        super().__init__(store)
        # type_url -> {"names": [...], "nonce": str, "version": str}
        self.subs: dict[str, dict] = {}

    def respond(self, type_url: str):
        sub = self.subs[type_url]
        version, resources = self.store.snapshot(type_url, self.node_id)
        if not _wildcard(sub["names"]):
            resources = {n: r for n, r in resources.items() if n in sub["names"]}
        sub["nonce"], sub["version"] = self.next_nonce(), version
        return discovery_pb2.DiscoveryResponse(
            version_info=version,
            resources=list(resources.values()),
            type_url=type_url,
            nonce=sub["nonce"],
        )

    def on_request(self, req):
        type_url = req.type_url
        self.store.note_request(self.node_id, type_url, "sotw")
        names = sorted(req.resource_names)
        sub = self.subs.get(type_url)
        if not req.response_nonce or sub is None:
            self.subs[type_url] = {"names": names, "nonce": "", "version": ""}
            yield self.respond(type_url)
            return
        if req.response_nonce != sub["nonce"]:
            return  # stale: answers a response superseded since
        if req.HasField("error_detail"):
            self.store.note_nack(
                self.node_id, type_url, sub["version"], req.response_nonce, req.error_detail
            )
        else:
            self.store.note_ack(self.node_id, type_url, req.version_info)
        if names != sub["names"]:
            sub["names"] = names
            yield self.respond(type_url)

    def on_push(self, changed):
        for type_url in changed:
            sub = self.subs.get(type_url)
            # Pushes queued during a burst may find their version already sent.
            current = self.store.snapshot(type_url, self.node_id)[0]
            if sub is not None and sub["version"] != current:
                yield self.respond(type_url)

    def describe(self) -> dict:
        subscribed = {
            t: {"wildcard": _wildcard(sub["names"]), "names": [n for n in sub["names"] if n != "*"]}
            for t, sub in list(self.subs.items())
        }
        return {"id": self.id, "node_id": self.node_id, "node": self.node, "mode": self.mode,
                "subscribed": subscribed}


class DeltaStream(Stream):
    """Incremental: responses carry only changed resources and the names of removed ones
    (gone from the server, or subscribed by name and never there)."""

    mode = "delta"

    def __init__(self, store: Store):
        super().__init__(store)
        # type_url -> {"names": set, "wildcard": bool, "sent": {name: hash},
        #              "absent": {names told not to exist}, "nonce": str, "version": str}
        self.subs: dict[str, dict] = {}

    def respond(self, type_url: str, force: bool = False):
        sub = self.subs[type_url]
        version, resources, hashes = self.store.snapshot_hashed(type_url, self.node_id)
        wanted = {
            n: r for n, r in resources.items() if sub["wildcard"] or n in sub["names"]
        }
        updates = []
        for name, res in wanted.items():
            h = hashes[name]
            if sub["sent"].get(name) != h:
                updates.append(
                    discovery_pb2.Resource(name=name, version=h, resource=res)
                )
                sub["sent"][name] = h
        removed = [n for n in sub["sent"] if n not in wanted]
        for name in removed:
            del sub["sent"][name]
        # Subscribed by name but not on the server: "does not exist", told once.
        absent = sub.setdefault("absent", set())
        missing = {n for n in sub["names"] if n not in resources}
        removed += sorted(missing - absent - set(removed))
        sub["absent"] = missing
        if not updates and not removed and not force:
            return None
        return self.response(type_url, version, updates, removed)

    def respond_names(self, type_url: str, names):
        """The response for a push that changed only `names` of the type (None: nothing the
        stream wants changed)."""
        sub = self.subs[type_url]
        wanted = [n for n in names if sub["wildcard"] or n in sub["names"]]
        version, found = self.store.lookup_hashed(type_url, wanted, self.node_id)
        updates, removed = [], []
        for name, entry in found.items():
            if entry is None:
                if sub["sent"].pop(name, None) is not None:
                    removed.append(name)
            elif sub["sent"].get(name) != entry[1]:
                resource, digest = entry
                updates.append(discovery_pb2.Resource(name=name, version=digest, resource=resource))
                sub["sent"][name] = digest
        if not updates and not removed:
            return None
        return self.response(type_url, version, updates, removed)

    def response(self, type_url: str, version: str, updates, removed):
        sub = self.subs[type_url]
        sub["nonce"], sub["version"] = self.next_nonce(), version
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version,
            resources=updates,
            removed_resources=removed,
            type_url=type_url,
            nonce=sub["nonce"],
        )

    def on_request(self, req):
        type_url = req.type_url
        self.store.note_request(self.node_id, type_url, "delta")
        sub = self.subs.get(type_url)
        first = sub is None
        if first:
            sub = self.subs[type_url] = {
                "names": set(),
                "wildcard": False,
                "sent": dict(req.initial_resource_versions),
                "nonce": "",
                "version": "",
            }
            self.store.note_initial_versions(
                self.node_id, type_url, req.initial_resource_versions
            )
            # Legacy wildcard: the first request of a type subscribes to nothing by name.
            sub["wildcard"] = not req.resource_names_subscribe
        if req.response_nonce and req.response_nonce == sub["nonce"]:
            if req.HasField("error_detail"):
                self.store.note_nack(
                    self.node_id, type_url, sub["version"], req.response_nonce, req.error_detail
                )
            else:
                self.store.note_ack(self.node_id, type_url, sub["version"])
        for name in req.resource_names_subscribe:
            if name == "*":
                sub["wildcard"] = True
            else:
                sub["names"].add(name)
        for name in req.resource_names_unsubscribe:
            if name == "*":
                sub["wildcard"] = False
            else:
                sub["names"].discard(name)
                sub["sent"].pop(name, None)
                sub.setdefault("absent", set()).discard(name)
        # A plain ACK or NACK changes nothing the stream wants: pushes answer themselves.
        resubscribed = req.resource_names_subscribe or req.resource_names_unsubscribe
        response = self.respond(type_url, force=first) if first or resubscribed else None
        if response is not None:
            yield response

    def on_push(self, changed):
        for type_url, names in changed.items():
            if type_url in self.subs:
                if names is None:
                    response = self.respond(type_url)
                else:
                    response = self.respond_names(type_url, names)
                if response is not None:
                    yield response

    def describe(self) -> dict:
        subscribed = {
            t: {
                "wildcard": sub["wildcard"],
                "names": sorted(sub["names"]),
                "sent": dict(sub["sent"]),
            }
            for t, sub in list(self.subs.items())
        }
        return {"id": self.id, "node_id": self.node_id, "node": self.node, "mode": self.mode,
                "subscribed": subscribed}


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, store: Store):
        self.store = store

    def StreamAggregatedResources(self, request_iterator, context):
        yield from SotwStream(self.store).run(request_iterator, context)

    def DeltaAggregatedResources(self, request_iterator, context):
        yield from DeltaStream(self.store).run(request_iterator, context)


class Sds(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """SDS on its own service (Istio's `sds-grpc` cluster): the same store and streams."""

    def __init__(self, store: Store):
        self.store = store

    def StreamSecrets(self, request_iterator, context):
        yield from SotwStream(self.store).run(request_iterator, context)

    def DeltaSecrets(self, request_iterator, context):
        yield from DeltaStream(self.store).run(request_iterator, context)


# ------------------------------------------------------------------------------------------
# Control channel and script watching


def control_handler(store: Store):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, body: dict) -> None:
            reply_json(self, status, body)

        def do_GET(self):
            if self.path == "/acks":
                self.reply(200, store.report())
            elif self.path == "/streams":
                self.reply(200, {"streams": store.open_streams()})
            else:
                self.reply(404, {"error": f"no such endpoint {self.path}"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path == "/drop":
                self.reply(200, {"dropped": store.drop_streams()})
            elif self.path == "/push":
                try:
                    change = parse_resource_set(json.loads(body))
                except (ValueError, json.JSONDecodeError) as e:
                    self.reply(400, {"error": str(e)})
                    return
                self.reply(200, {"versions": store.apply(change)})
            elif self.path == "/churn":
                try:
                    type_url, steps, interval = churn_steps(json.loads(body))
                except (ValueError, json.JSONDecodeError) as e:
                    self.reply(400, {"error": str(e)})
                    return
                self.reply(200, run_churn(store, type_url, steps, interval))
            else:
                self.reply(404, {"error": f"no such endpoint {self.path}"})

        def log_message(self, *args):
            pass

    return Handler


def run_churn(store: Store, type_url: str, steps, interval: float) -> dict:
    """Upserts each step's resource in turn, `interval` seconds apart."""
    versions = {}
    for i, (name, packed) in enumerate(steps):
        if i and interval:
            time.sleep(interval)
        versions = store.apply(Change(upsert={type_url: {name: packed}}))
    return {"type_url": type_url, "name": steps[0][0], "count": len(steps),
            "version": versions[type_url]}


def watch_script(path: str, store: Store, stop: threading.Event) -> None:
    """Re-applies the script whenever its mtime or size changes."""

    def stamp():
        try:
            st = os.stat(path)
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    seen = stamp()
    while not stop.wait(0.2):
        now = stamp()
        if now is None or now == seen:
            continue
        seen = now
        try:
            store.apply(parse_resource_set(load_script(path)))
        except (OSError, ValueError) as e:
            print(f"xds_server: script {path} ignored: {e}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--script", required=True, help="resource set file (JSON or YAML)")
    ap.add_argument("--port", type=int, default=0, help="ADS gRPC port (0: any)")
    ap.add_argument("--control-port", type=int, default=0, help="control HTTP port (0: any)")
    ap.add_argument("--unix", action="append", default=[],
                    help="also serve ADS and SDS on this unix socket path (repeatable)")
    args = ap.parse_args()

    store = Store()
    store.apply(parse_resource_set(load_script(args.script)))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(store), server)
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(Sds(store), server)
    ads_port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    for path in args.unix:
        server.add_insecure_port(f"unix:{path}")
    server.start()

    control = ThreadingHTTPServer(("127.0.0.1", args.control_port), control_handler(store))
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, daemon=True).start()

    stop = threading.Event()
    threading.Thread(target=watch_script, args=(args.script, store, stop), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def wait_stdin_eof():
        while sys.stdin.buffer.read1(4096):
            pass
        stop.set()

    threading.Thread(target=wait_stdin_eof, daemon=True).start()

    print(f"LISTEN ads {ads_port}", flush=True)
    print(f"LISTEN control {control.server_address[1]}", flush=True)
    print("READY", flush=True)
    while not stop.wait(0.5):
        pass
    control.shutdown()
    server.stop(grace=None)


if __name__ == "__main__":
    main()
