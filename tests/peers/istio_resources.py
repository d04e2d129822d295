#!/usr/bin/env python3
"""Test peer: turns an Envoy/Istio `/config_dump` into a resource set for xds_server.py.

    istio_resources.py DUMP.json [-o OUT.json] [--empty-eds] [--rebind-ports]

Reads the dump (never modifies it) and writes, to OUT.json (or nowhere without -o), a script
in xds_server.py's format holding the dump's DYNAMIC resources:

    ClustersConfigDump   dynamic_active_clusters, dynamic_warming_clusters  -> Cluster
    ListenersConfigDump  dynamic_listeners[].active_state (else warming_state) -> Listener
    RoutesConfigDump     dynamic_route_configs                               -> RouteConfiguration
    EndpointsConfigDump  dynamic_endpoint_configs                            -> ClusterLoadAssignment
    SecretsConfigDump    dynamic_active_secrets, dynamic_warming_secrets    -> Secret
    EcdsConfigDump       ecds_filters                                        -> TypedExtensionConfig

Static resources (the bootstrap's) are left out. Secrets are kept as dumped (Envoy redacts
their key material to "[redacted]"). Each resource is parsed the way xds_server.py will serve
it (its `parse_resource`); one that does not parse is left out and reported. Nested Anys of
types no descriptor knows are carried as TypedStruct by the server; they are reported too.

Options:
    --empty-eds     for each EDS cluster whose ClusterLoadAssignment the dump lacks, add an
                    empty one (no endpoints), so a client's cluster warming can finish; Istio's
                    EDS clusters wait for endpoints forever (`initial_fetch_timeout: 0s`).
    --rebind-ports  give each listener that binds a port (a socket address and no
                    `bind_to_port: false`) a free port chosen by the kernel on 127.0.0.1, keeping
                    its address, so the resources can run beside other tests; the map is
                    printed as `REBIND <listener> <old port> <new port>`.

Stdout: one line per type, `<Type>: <n> converted, <m> skipped`, then `SKIPPED <Type> <name>:
<reason>` per resource left out, `CARRIED <type_url> (<n> resources)` per unknown nested type
served as TypedStruct, and `SYNTHESIZED ClusterLoadAssignment: <n>` with --empty-eds.
Exit status 1 when the dump cannot be read.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys

from xds_server import parse_resource

P = "type.googleapis.com/"
CLUSTER = P + "envoy.config.cluster.v3.Cluster"
LISTENER = P + "envoy.config.listener.v3.Listener"
ROUTE = P + "envoy.config.route.v3.RouteConfiguration"
ENDPOINT = P + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = P + "envoy.extensions.transport_sockets.tls.v3.Secret"
ECDS = P + "envoy.config.core.v3.TypedExtensionConfig"
TYPES = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, ECDS]

# config dump section -> [(list field, entry field holding the resource, type URL)]
SECTIONS = {
    "ClustersConfigDump": [
        ("dynamic_active_clusters", "cluster", CLUSTER),
        ("dynamic_warming_clusters", "cluster", CLUSTER),
    ],
    "RoutesConfigDump": [("dynamic_route_configs", "route_config", ROUTE)],
    "EndpointsConfigDump": [("dynamic_endpoint_configs", "endpoint_config", ENDPOINT)],
    "SecretsConfigDump": [
        ("dynamic_active_secrets", "secret", SECRET),
        ("dynamic_warming_secrets", "secret", SECRET),
    ],
    "EcdsConfigDump": [("ecds_filters", "ecds_filter", ECDS)],
}


def short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


def without_type(resource: dict) -> dict:
    """The dump wraps each resource as an Any; the script wants the bare message."""
    return {k: v for k, v in resource.items() if k != "@type"}


def dynamic_resources(dump: dict) -> list[tuple[str, dict]]:
    """(type URL, resource JSON) for every dynamic resource in the dump, in dump order."""
    out = []
    for section in dump.get("configs", []):
        kind = section.get("@type", "").rsplit(".", 1)[-1]
        if kind == "ListenersConfigDump":
            for entry in section.get("dynamic_listeners", []):
                state = entry.get("active_state") or entry.get("warming_state")
                if state and "listener" in state:
                    out.append((LISTENER, without_type(state["listener"])))
        for field, key, type_url in SECTIONS.get(kind, []):
            for entry in section.get(field, []):
                if key in entry:
                    out.append((type_url, without_type(entry[key])))
    return out


def empty_assignments(clusters: list[dict], present: set[str]) -> list[dict]:
    """An empty ClusterLoadAssignment for each EDS cluster without one."""
    out = []
    for c in clusters:
        if c.get("type") != "EDS":
            continue
        name = c.get("eds_cluster_config", {}).get("service_name") or c["name"]
        if name not in present:
            present.add(name)
            out.append({"cluster_name": name})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rebind(listeners: list[dict]) -> list[tuple[str, int, int]]:
    """Moves every binding listener to a free port; returns (name, old, new)."""
    moved = []
    for listener in listeners:
        sa = listener.get("address", {}).get("socket_address")
        if sa is None or listener.get("bind_to_port") is False:
            continue
        new = free_port()
        moved.append((listener.get("name", ""), sa.get("port_value", 0), new))
        sa["port_value"] = new
    return moved


def convert(dump: dict, empty_eds: bool, rebind_ports: bool):
    """-> (script, report lines)."""
    by_type: dict[str, list[dict]] = {t: [] for t in TYPES}
    skipped: dict[str, list[str]] = {t: [] for t in TYPES}
    carried: dict[str, int] = {}
    lines = []
    pending = dynamic_resources(dump)
    if empty_eds:
        present = {r.get("cluster_name") for t, r in pending if t == ENDPOINT}
        clusters = [r for t, r in pending if t == CLUSTER]
        synthesized = empty_assignments(clusters, present)
        pending += [(ENDPOINT, r) for r in synthesized]
        lines.append(f"SYNTHESIZED ClusterLoadAssignment: {len(synthesized)}")
    if rebind_ports:
        for name, old, new in rebind([r for t, r in pending if t == LISTENER]):
            lines.append(f"REBIND {name} {old} {new}")
    for type_url, resource in pending:
        unknown: set[str] = set()
        try:
            parse_resource(type_url, resource, unknown)
        except ValueError as e:
            name = resource.get("name") or resource.get("cluster_name") or "?"
            skipped[type_url].append(f"SKIPPED {short(type_url)} {name}: {e}")
            continue
        by_type[type_url].append(resource)
        for t in unknown:
            carried[t] = carried.get(t, 0) + 1
    summary = [
        f"{short(t)}: {len(by_type[t])} converted, {len(skipped[t])} skipped" for t in TYPES
    ]
    details = [line for t in TYPES for line in skipped[t]]
    details += [f"CARRIED {t} ({n} resources)" for t, n in sorted(carried.items())]
    script = {"resources": {t: rs for t, rs in by_type.items() if rs}}
    return script, summary + details + lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", help="an Envoy /config_dump JSON file")
    ap.add_argument("-o", "--out", help="where to write the resource set (JSON)")
    ap.add_argument("--empty-eds", action="store_true", help="empty CLAs for EDS clusters")
    ap.add_argument("--rebind-ports", action="store_true", help="binding listeners: free ports")
    args = ap.parse_args()
    try:
        with open(args.dump, encoding="utf-8") as f:
            dump = json.load(f)
    except (OSError, ValueError) as e:
        print(f"istio_resources: cannot read {args.dump}: {e}", file=sys.stderr)
        sys.exit(1)
    script, report = convert(dump, args.empty_eds, args.rebind_ports)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(script, f)
    for line in report:
        print(line)


if __name__ == "__main__":
    main()
