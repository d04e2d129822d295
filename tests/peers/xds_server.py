#!/usr/bin/env python3
"""Test peer: an xDS control plane (Aggregated Discovery Service) driven by a script file.

Started by the end-to-end tests as a separate process; it speaks real xDS v3 over gRPC, so the
same control plane drives Envoy and shardproxy's agent. Run from the test venv (grpcio and
xds-protos installed):

    xds_server.py --script resources.json [--port 0] [--control-port 0] [--unix PATH]

It listens on 127.0.0.1 only, prints `LISTEN ads <port>` and `LISTEN control <port>`
(kernel-chosen when 0), then `READY`. With `--unix PATH` it serves ADS on that unix socket
too. It exits when its stdin reaches EOF (the parent test
died or dropped its handle) or on SIGTERM/SIGINT.

Services: envoy.service.discovery.v3.AggregatedDiscoveryService, both
StreamAggregatedResources (state of the world) and DeltaAggregatedResources (incremental).

Script format (JSON; YAML when the file ends in .yaml/.yml and PyYAML is installed):

    {"resources": {
        "type.googleapis.com/envoy.config.listener.v3.Listener": [ {<Listener as proto JSON>} ],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster":   [ {<Cluster as proto JSON>} ]
    }}

Each resource is the proto3 JSON of the message its type URL names (any `@type` inside, e.g. an
HCM typed_config, is resolved by importing the matching xds-protos module). A resource's name is
its `name` field (`cluster_name` for ClusterLoadAssignment). A resource set replaces only the
types it names: other types keep their resources. Every type whose resources changed gets a
new version ("1", "2", ... per type URL) and is pushed to every stream subscribed to it. The
script file is re-read when its mtime or size changes (an unparsable file is reported on
stderr and ignored).

Control endpoints (HTTP/1.1 on the control port, JSON bodies):

    POST /push   body: a resource set as above. 200 {"versions": {type_url: version}};
                 400 {"error": "..."} when it does not parse.
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

Protocol notes: each response carries a fresh nonce per stream; a request whose
response_nonce is not the latest one sent for its type is stale and ignored (xDS spec). A
request with no nonce (subscription start) is answered with the current resources. Wildcard
subscriptions (no names, or "*") get every resource of the type; named ones only those named.
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
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import any_pb2, json_format, symbol_database

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

TYPE_PREFIX = "type.googleapis.com/"
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
    return symbol_database.Default().GetSymbol(full_name)


def resource_name(type_url: str, doc: dict) -> str:
    key = "cluster_name" if type_url.endswith("ClusterLoadAssignment") else "name"
    name = doc.get(key)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {type_url} resource has no `{key}`")
    return name


def parse_resource_set(doc) -> dict[str, dict[str, any_pb2.Any]]:
    """{"resources": {type_url: [proto JSON]}} -> {type_url: {name: Any}}; raises ValueError."""
    if not isinstance(doc, dict) or not isinstance(doc.get("resources"), dict):
        raise ValueError('a resource set is {"resources": {type_url: [resource, ...]}}')
    out: dict[str, dict[str, any_pb2.Any]] = {}
    for type_url, items in doc["resources"].items():
        if not isinstance(items, list):
            raise ValueError(f"resources of {type_url} must be a list")
        try:
            cls = _message_class(type_url)
        except KeyError:
            raise ValueError(f"unknown resource type {type_url}") from None
        by_name: dict[str, any_pb2.Any] = {}
        for item in items:
            _import_types_in(item)
            try:
                msg = json_format.ParseDict(item, cls())
            except json_format.ParseError as e:
                raise ValueError(f"{type_url}: {e}") from None
            packed = any_pb2.Any()
            packed.Pack(msg, deterministic=True)
            by_name[resource_name(type_url, item)] = packed
        out[type_url] = by_name
    return out


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
        self.versions: dict[str, int] = {}
        self.streams: set["Stream"] = set()
        self.clients: dict[str, dict[str, dict]] = {}

    def apply(self, resource_set: dict[str, dict[str, any_pb2.Any]]) -> dict[str, str]:
        changed = []
        with self.lock:
            for type_url, by_name in resource_set.items():
                if self.resources.get(type_url) != by_name or type_url not in self.versions:
                    self.resources[type_url] = by_name
                    self.versions[type_url] = self.versions.get(type_url, 0) + 1
                    changed.append(type_url)
            streams = list(self.streams)
            versions = {t: str(v) for t, v in self.versions.items()}
        for stream in streams:
            stream.events.put(("push", changed))
        return versions

    def snapshot(self, type_url: str) -> tuple[str, dict[str, any_pb2.Any]]:
        with self.lock:
            return str(self.versions.get(type_url, 0)), dict(self.resources.get(type_url, {}))

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

    def __init__(self, store: Store):
        self.store = store
        self.events: queue.Queue = queue.Queue()
        self.id = next(self._ids)
        self.nonces = itertools.count(1)
        self.node_id = ""

    def next_nonce(self) -> str:
        return f"{self.id}-{next(self.nonces)}"

    def read_requests(self, request_iterator) -> None:
        try:
            for request in request_iterator:
                if request.node.id:
                    self.node_id = request.node.id
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
                handle = self.on_request if kind == "request" else self.on_push
                yield from handle(payload)
        finally:
            with self.store.lock:
                self.store.streams.discard(self)


def _wildcard(names) -> bool:
    return not names or "*" in names


class SotwStream(Stream):
    """State of the world: every response holds all the subscribed resources of its type."""

    def __init__(self, store: Store):
        super().__init__(store)
        # type_url -> {"names": [...], "nonce": str, "version": str}
        self.subs: dict[str, dict] = {}

    def respond(self, type_url: str):
        sub = self.subs[type_url]
        version, resources = self.store.snapshot(type_url)
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
            if type_url in self.subs:
                yield self.respond(type_url)


class DeltaStream(Stream):
    """Incremental: responses carry only changed resources and the names of removed ones."""

    def __init__(self, store: Store):
        super().__init__(store)
        # type_url -> {"names": set, "wildcard": bool, "sent": {name: hash},
        #              "nonce": str, "version": str}
        self.subs: dict[str, dict] = {}

    @staticmethod
    def _hash(resource: any_pb2.Any) -> str:
        return hashlib.sha256(resource.SerializeToString(deterministic=True)).hexdigest()[:16]

    def respond(self, type_url: str, force: bool = False):
        sub = self.subs[type_url]
        version, resources = self.store.snapshot(type_url)
        wanted = {
            n: r for n, r in resources.items() if sub["wildcard"] or n in sub["names"]
        }
        updates = []
        for name, res in wanted.items():
            h = self._hash(res)
            if sub["sent"].get(name) != h:
                updates.append(
                    discovery_pb2.Resource(name=name, version=h, resource=res)
                )
                sub["sent"][name] = h
        removed = [n for n in sub["sent"] if n not in wanted]
        for name in removed:
            del sub["sent"][name]
        if not updates and not removed and not force:
            return None
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
        response = self.respond(type_url, force=first)
        if response is not None:
            yield response

    def on_push(self, changed):
        for type_url in changed:
            if type_url in self.subs:
                response = self.respond(type_url)
                if response is not None:
                    yield response


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, store: Store):
        self.store = store

    def StreamAggregatedResources(self, request_iterator, context):
        yield from SotwStream(self.store).run(request_iterator, context)

    def DeltaAggregatedResources(self, request_iterator, context):
        yield from DeltaStream(self.store).run(request_iterator, context)


# ------------------------------------------------------------------------------------------
# Control channel and script watching


def control_handler(store: Store):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/acks":
                self.reply(200, store.report())
            else:
                self.reply(404, {"error": f"no such endpoint {self.path}"})

        def do_POST(self):
            if self.path != "/push":
                self.reply(404, {"error": f"no such endpoint {self.path}"})
                return
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            try:
                resource_set = parse_resource_set(json.loads(body))
            except (ValueError, json.JSONDecodeError) as e:
                self.reply(400, {"error": str(e)})
                return
            self.reply(200, {"versions": store.apply(resource_set)})

        def log_message(self, *args):
            pass

    return Handler


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
    ap.add_argument("--unix", help="also serve ADS on this unix socket path")
    args = ap.parse_args()

    store = Store()
    store.apply(parse_resource_set(load_script(args.script)))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(store), server)
    ads_port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if args.unix:
        server.add_insecure_port(f"unix:{args.unix}")
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
