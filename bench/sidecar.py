#!/usr/bin/env python3
"""Istio sidecar benchmarks: shardproxy against Envoy as Istio sidecars, in one run (issue 11).

Two parts (--parts chain,config), each its own section of bench/RESULTS.md:

chain   Sidecar to sidecar. client → proxy A (plain HTTP/1.1 in; an outbound cluster with Istio's
        mTLS client context: workload certificate, mesh root, the server's SPIFFE identity
        checked) → proxy B (an inbound listener with STRICT mTLS: client certificate required)
        → the app (the origin nginx, a 1 KiB body). Both proxies of a pair are the same proxy,
        each `--concurrency 1`, both on --proxy-core, from one pair of bootstrap templates
        (templates/sidecar-outbound.yaml, templates/sidecar-inbound.yaml); certificates made
        per run (openssl: an ECDSA P-256 mesh root and workload certificates with
        spiffe://cluster.local/ns/default/sa/<name> URI SANs). Load: h2load --h1 at a fixed
        --rate over --connections keep-alive connections, on --client-core with the origin.
        Each round measures three paths in a rotating order — direct (client → origin),
        shardproxy pair, Envoy pair: CPU per request of the two proxies together
        (utime+stime, bench/procstat.py) and the added p99 (p99 through the pair minus the
        direct p99 of the same round).

config  A sidecar holding a real Istio config: the dynamic resources of the Istio 1.22.3
        sidecar dump (../shared/fixtures/istio-config-dumps/istio-1.22.3_app1_sidecar.json,
        converted by tests/peers/istio_resources.py --empty-eds --rebind-ports) served over
        Delta ADS (SDS on its own `sds-grpc` stream) by tests/peers/xds_server.py. For both
        proxies: the user's own Wasm plugin (a v8 module shardproxy refuses by design) is
        taken out of the HTTP filter chains and ECDS, and the dump's redacted secrets
        (`default`, `ROOTCA`) are replaced by a workload certificate and root made here; for
        Envoy only, Istio's own extensions (metadata exchange, istio.stats, istio.alpn, ...)
        are taken out, since upstream Envoy does not have them (without_istio_extensions).
        Per start, in rotating order: startup = spawn → admin /ready 200, every type the proxy
        subscribed to ACKed at the served version, and every bound listener listening; then,
        after --settle seconds, RSS (VmRSS) and peak RSS (VmHWM).

    python3 bench/sidecar.py --envoy-bin PATH [--parts chain,config] [--rounds 3]

Needs nginx, h2load (nghttp2-client), openssl, and for `config` a Python with grpcio and
xds-protos (--python; tests/run.sh makes target/test-venv). Writes the `sidecar-chain` and
`sidecar-config` sections of bench/RESULTS.md (unless --no-write) and the raw numbers to
bench/results/sidecar-<UTC time>.json (`--render` that file writes the sections again without
measuring). Every wait is bounded.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import peers as peers_mod  # noqa: E402
import procstat  # noqa: E402
import scenarios  # noqa: E402
from bench import Started, free_port, resolve_peers, start_upstream, tail, wait_ready  # noqa: E402
from xds_scale import (CLUSTER, LISTENER, ControlPlane, add_output_args, anon_file, bootstrap,  # noqa: E402
                       http, vm_hwm, write_section)

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
ECDS = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
TYPED_STRUCTS = ("type.googleapis.com/udpa.type.v1.TypedStruct", "type.googleapis.com/xds.type.v3.TypedStruct")
WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
# Istio's own extension configs (docs/istio-gap-list.md), absent from upstream Envoy.
ISTIO_EXTENSIONS = (
    "stats.PluginConfig",
    "envoy.tcp.metadataexchange.config.MetadataExchange",
    "io.istio.http.peer_metadata.Config",
    "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
    "io.istio.network.authn.Config",
    "istio.set_internal_dst_address.v1.Config",
)
DUMP = os.path.join(REPO, "..", "shared", "fixtures", "istio-config-dumps", "istio-1.22.3_app1_sidecar.json")
NODE = "sidecar~127.0.0.1~app1-0.default~default.svc.cluster.local"
CLIENT_SA, SERVER_SA = "client", "server"
BODY = "/1k.bin"
BODY_BYTES = 1024
PATHS = ("direct", "shardproxy", "envoy")


def spiffe(sa: str) -> str:
    return f"spiffe://cluster.local/ns/default/sa/{sa}"


# ---------------------------------------------------------------------------------------------
# certificates


def openssl(*argv: str) -> None:
    out = subprocess.run(["openssl", *argv], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(argv[:2])} failed:\n{out.stderr}")


def make_mesh_pki(tmp: str, accounts: tuple[str, ...]) -> dict:
    """A mesh root CA and, per service account, a workload certificate as istiod issues it (one
    URI SAN, the account's SPIFFE identity; server and client use), all ECDSA P-256. Returns
    {"ca": path, account: {"cert": path, "key": path}}."""
    ca, ca_key = os.path.join(tmp, "mesh-root.crt"), os.path.join(tmp, "mesh-root.key")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", ca_key, "-out", ca, "-days", "30", "-subj", "/O=cluster.local/CN=bench mesh root",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    out = {"ca": ca}
    for i, sa in enumerate(accounts):
        cert, key, csr, ext = (os.path.join(tmp, f"workload-{sa}.{n}") for n in ("crt", "key", "csr", "ext"))
        with open(ext, "w") as f:
            f.write("basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n"
                    "extendedKeyUsage = serverAuth, clientAuth\n"
                    f"subjectAltName = critical, URI:{spiffe(sa)}\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", csr, "-subj", "/O=cluster.local")
        openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", str(1000 + i),
                "-days", "30", "-out", cert, "-extfile", ext)
        out[sa] = {"cert": cert, "key": key}
    return out


# ---------------------------------------------------------------------------------------------
# the Istio resources: what both proxies get, and what Envoy lacks


def extension_type(entry) -> str | None:
    """The config type an extension entry (a dict with `name` and `typed_config`) carries: the
    typed_config's @type, or for a TypedStruct the type it wraps; None for anything else."""
    if not isinstance(entry, dict) or "name" not in entry or not isinstance(entry.get("typed_config"), dict):
        return None
    config = entry["typed_config"]
    if config.get("@type") in TYPED_STRUCTS:
        return config.get("type_url")
    return config.get("@type")


def drop_entries(node, unwanted) -> int:
    """Removes, anywhere in the JSON tree `node`, every list element for which unwanted(element)
    is true; returns how many were removed."""
    removed = 0
    if isinstance(node, dict):
        for value in node.values():
            removed += drop_entries(value, unwanted)
    elif isinstance(node, list):
        keep = [v for v in node if not unwanted(v)]
        removed += len(node) - len(keep)
        node[:] = keep
        for value in node:
            removed += drop_entries(value, unwanted)
    return removed


def without_user_wasm(script: dict) -> tuple[int, int]:
    """Takes the user's own Wasm plugins out: the ECDS resources holding a Wasm config and the
    filters that name them over config_discovery. Returns (filters removed, listeners that
    named one)."""
    resources = script["resources"]
    wasm = {r["name"] for r in resources.get(ECDS, []) if r.get("typed_config", {}).get("@type") == WASM}
    if ECDS in resources:
        resources[ECDS] = [r for r in resources[ECDS] if r["name"] not in wasm]
        if not resources[ECDS]:
            del resources[ECDS]
    filters = listeners = 0
    for listener in resources.get(LISTENER, []):
        n = drop_entries(listener, lambda e: isinstance(e, dict) and "config_discovery" in e
                         and e.get("name") in wasm)
        filters, listeners = filters + n, listeners + (n > 0)
    return filters, listeners


def without_istio_extensions(script: dict) -> int:
    """Takes Istio's own filters out (listener and HTTP filters, clusters' upstream filters),
    which upstream Envoy does not have. Returns how many were removed."""
    def istio(entry) -> bool:
        t = extension_type(entry)
        return t is not None and t.rsplit("/", 1)[-1] in ISTIO_EXTENSIONS
    return drop_entries(script["resources"], istio)


def with_mesh_secrets(script: dict, pki: dict, account: str) -> None:
    """Replaces the dump's secrets (their keys are redacted) by the workload certificate of
    `account` (`default`) and the mesh root (`ROOTCA`), as the pod's agent serves them."""
    def pem(path: str) -> dict:
        with open(path) as f:
            return {"inline_string": f.read()}
    script["resources"][SECRET] = [
        {"name": "default", "tls_certificate": {"certificate_chain": pem(pki[account]["cert"]),
                                                "private_key": pem(pki[account]["key"])}},
        {"name": "ROOTCA", "validation_context": {"trusted_ca": pem(pki["ca"])}},
    ]


def bound_ports(script: dict) -> list[int]:
    """The ports of the listeners that bind one (the rebound virtualOutbound/virtualInbound)."""
    out = []
    for listener in script["resources"].get(LISTENER, []):
        sa = listener.get("address", {}).get("socket_address")
        if sa and listener.get("bind_to_port") is not False:
            out.append(int(sa["port_value"]))
    return out


def counts(script: dict) -> dict:
    return {t.rsplit(".", 1)[-1]: len(rs) for t, rs in sorted(script["resources"].items())}


def verdicts(acks: dict, node: str, served: dict) -> dict:
    """Per served type URL, what the client `node` did with the current version: "ack",
    "nack", "pending" (subscribed, no verdict yet) or None (never subscribed)."""
    records = acks.get("clients", {}).get(node, {})
    out = {}
    for type_url in served:
        record = records.get(type_url)
        if record is None:
            out[type_url] = None
            continue
        version = acks.get("versions", {}).get(type_url)
        if record.get("acked") and record["acked"][-1] == version:
            out[type_url] = "ack"
        elif any(n.get("version") == version for n in record.get("nacked", [])):
            out[type_url] = "nack"
        else:
            out[type_url] = "pending"
    return out


def all_answered(v: dict) -> bool:
    """Every subscribed type has its verdict, and CDS and LDS (always subscribed) are among them."""
    return v.get(CLUSTER) is not None and v.get(LISTENER) is not None and "pending" not in v.values()


# ---------------------------------------------------------------------------------------------
# summaries


def median(values) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def chain_summary(turns: list[dict]) -> dict:
    """Medians over rounds per path, and shardproxy ÷ Envoy for CPU per request and the added
    p99 and p50. A pair's added p99 (p50) is its p99 (p50) minus the direct path's of the same
    round. The added p50 is the steadier one where other tenants share the cores."""
    direct = {t["round"]: t for t in turns if t["path"] == "direct" and "p99_us" in t}
    out = {}
    for path in PATHS:
        rows = [t for t in turns if t["path"] == path and "p99_us" in t]
        for t in rows:
            if path != "direct" and t["round"] in direct:
                for q in ("p99", "p50"):
                    t[f"added_{q}_us"] = t[f"{q}_us"] - direct[t["round"]][f"{q}_us"]
        out[path] = {k: median(t.get(k) for t in rows)
                     for k in ("rps", "p50_us", "p99_us", "added_p50_us", "added_p99_us", "cpu_us_per_req",
                               "rss")}
        out[path]["rounds"] = len(rows)
    out["cpu_ratio"] = ratio(out["shardproxy"]["cpu_us_per_req"], out["envoy"]["cpu_us_per_req"])
    out["added_p99_ratio"] = ratio(out["shardproxy"]["added_p99_us"], out["envoy"]["added_p99_us"])
    out["added_p50_ratio"] = ratio(out["shardproxy"]["added_p50_us"], out["envoy"]["added_p50_us"])
    return out


def config_summary(turns: list[dict]) -> dict:
    out = {}
    for name in ("shardproxy", "envoy"):
        rows = [t for t in turns if t["proxy"] == name and "startup_s" in t]
        out[name] = {k: median(t.get(k) for t in rows) for k in ("startup_s", "rss", "hwm", "cpu_to_ready_s")}
        out[name]["rounds"] = len(rows)
    out["rss_ratio"] = ratio(out["shardproxy"]["rss"], out["envoy"]["rss"])
    out["startup_ratio"] = ratio(out["shardproxy"]["startup_s"], out["envoy"]["startup_s"])
    return out


# ---------------------------------------------------------------------------------------------
# the chain


def loadavg() -> str:
    return " ".join(procstat.machine_info()["loadavg"])


def start_pair(peer, args, tmp: str, pki: dict, origin_port: int, tag: str) -> tuple[list, int]:
    """Proxy B (inbound, to the origin) then proxy A (outbound, mTLS to B), both on the proxy
    core; returns ([A, B] processes, A's port) once a GET through both answers."""
    procs, logs, port = [], [], origin_port
    for side, template, account, peer_sa in (("b", "sidecar-inbound.yaml", SERVER_SA, CLIENT_SA),
                                             ("a", "sidecar-outbound.yaml", CLIENT_SA, SERVER_SA)):
        listen = free_port()
        cfg = peers_mod.render(template, os.path.join(tmp, f"sidecar-{side}-{peer.name}.yaml"),
                               port=listen, upstream_port=port, admin_port=free_port(), ca=pki["ca"],
                               cert=pki[account]["cert"], key=pki[account]["key"],
                               peer_identity=spiffe(peer_sa))
        log = os.path.join(tmp, f"{peer.name}-{side}-{tag}.log")
        procs.insert(0, Started.start(peer.command(cfg, log + ".envoy"), log, args.proxy_core))
        logs.insert(0, log)
        port = listen
    wait_ready(procs[0], port, args.start_timeout, logs[0])
    if procs[1].poll() is not None:
        raise RuntimeError(f"proxy B exited with code {procs[1].returncode}:\n{tail(logs[1])}")
    return procs, port


def body_mismatch(turn: dict, connections: int) -> str:
    """Why the bytes of the bodies h2load received are not 1 KiB per response; "" when they
    are. h2load counts the bodies of requests still in flight at the end (up to one per
    connection) but not their success."""
    ok, got = turn.get("succeeded", 0), turn.get("bytes", 0)
    if not ok or BODY_BYTES * ok <= got <= BODY_BYTES * (ok + connections):
        return ""
    return f"{got} body bytes for {ok} responses of {BODY_BYTES}"


def chain_turn(path: str, peer, args, tmp: str, pki: dict, origin_port: int, round_no: int) -> dict:
    """One path of one round: a warm-up, then the measured run at the fixed rate."""
    turn = {"path": path, "round": round_no, "loadavg": loadavg()}
    procs = []
    try:
        port = origin_port
        if peer is not None:
            procs, port = start_pair(peer, args, tmp, pki, origin_port, f"r{round_no}")

        def run(duration):
            return scenarios.run_fixed_rate_h1(port, BODY, args.rate, args.connections, duration,
                                               args.h2load_bin, args.client_core, tmp)
        run(args.warmup)
        cpu0 = [procstat.cpu_seconds(p.pid) for p in procs]
        cores0 = procstat.core_times()
        r = run(args.duration)
        busy = procstat.core_busy(cores0, procstat.core_times())
        cpu = [procstat.cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0)]
        turn.update(r, proxy_core_busy=busy.get(args.proxy_core), client_core_busy=busy.get(args.client_core))
        if procs:
            turn["cpu_us_per_req"] = sum(cpu) * 1e6 / max(1, r["requests"])
            turn["cpu_us_per_req_a"], turn["cpu_us_per_req_b"] = (c * 1e6 / max(1, r["requests"]) for c in cpu)
            turn["rss"] = sum(procstat.rss_bytes(p.pid) for p in procs)
    except (RuntimeError, scenarios.LoadError, subprocess.TimeoutExpired) as e:
        turn["error"] = f"{type(e).__name__}: {e}"
    finally:
        for p in procs:
            Started.stop(p)
    return turn


def run_chain(args, tmp: str, proxies: dict, log) -> list[dict]:
    pki = make_mesh_pki(tmp, (CLIENT_SA, SERVER_SA))
    up_args = argparse.Namespace(nginx_bin=args.nginx_bin, bulk_mb=0, tls_files=None, scenario_list=[],
                                 client_core=args.client_core)
    up, origin = start_upstream(tmp, up_args)
    with open(os.path.join(tmp, "www", BODY.lstrip("/")), "wb") as f:
        f.write(os.urandom(BODY_BYTES))
    paths = [p for p in PATHS if p == "direct" or p in proxies]
    turns = []
    try:
        for r in range(args.rounds):
            for path in paths[r % len(paths):] + paths[:r % len(paths)]:
                log(f"chain round {r + 1}/{args.rounds}: {path}")
                t = chain_turn(path, proxies.get(path), args, tmp, pki, origin, r + 1)
                log("  " + json.dumps({k: v for k, v in t.items() if not isinstance(v, dict)}))
                turns.append(t)
    finally:
        Started.stop(up)
    return turns


# ---------------------------------------------------------------------------------------------
# the Istio config


def istio_scripts(args, tmp: str) -> tuple[dict, dict, dict]:
    """(shardproxy's script, Envoy's script, what was converted and stripped)."""
    raw = os.path.join(tmp, "istio-resources.json")
    out = subprocess.run([args.python, os.path.join(REPO, "tests/peers/istio_resources.py"), args.dump,
                          "-o", raw, "--empty-eds", "--rebind-ports"],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"istio_resources.py failed:\n{out.stdout}{out.stderr}")
    with open(raw) as f:
        both = json.load(f)
    notes = {"converted": counts(both), "converter": [ln for ln in out.stdout.splitlines()
                                                      if not ln.startswith("REBIND")]}
    pki = make_mesh_pki(tmp, ("app1",))
    notes["wasm_filters_removed"] = without_user_wasm(both)
    with_mesh_secrets(both, pki, "app1")
    envoy = copy.deepcopy(both)
    notes["istio_extensions_removed_for_envoy"] = without_istio_extensions(envoy)
    notes["served_shardproxy"], notes["served_envoy"] = counts(both), counts(envoy)
    return both, envoy, notes


def stats(admin: int) -> dict:
    try:
        _, body = http(admin, "GET", "/stats", timeout=5.0)
    except OSError:
        return {}
    out = {}
    for line in body.decode(errors="replace").splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def config_turn(peer, args, tmp: str, cp: ControlPlane, script: dict, round_no: int) -> dict:
    """One start of one proxy on the Istio config: startup, then RSS after --settle."""
    node = NODE.replace("app1-0", f"app1-0-{peer.name}-r{round_no}")
    admin = free_port()
    cfg = os.path.join(tmp, f"istio-bootstrap-{peer.name}-r{round_no}.json")
    boot = bootstrap(node, admin, cp.ads)
    sds = copy.deepcopy(boot["static_resources"]["clusters"][0])
    sds["name"] = sds["load_assignment"]["cluster_name"] = "sds-grpc"
    boot["static_resources"]["clusters"].append(sds)
    with open(cfg, "w") as f:
        json.dump(boot, f)
    log = os.path.join(tmp, f"istio-{peer.name}-r{round_no}.log")
    served, ports = script["resources"], bound_ports(script)
    turn = {"proxy": peer.name, "round": round_no, "loadavg": loadavg()}
    t0 = time.monotonic()
    p = Started.start(peer.command(cfg, log + ".envoy", args.concurrency), log, args.proxy_cores)
    try:
        marks: dict[str, float] = {}
        deadline = t0 + args.start_timeout
        v = {}
        while len(marks) < 3:
            if p.poll() is not None:
                raise RuntimeError(f"exited with code {p.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {args.start_timeout:.0f}s ({sorted(marks)} done; "
                                   f"verdicts {v}):\n{tail(log)}")
            if "ready" not in marks:
                try:
                    if http(admin, "GET", "/ready", timeout=1.0)[0] == 200:
                        marks["ready"] = time.monotonic()
                except OSError:
                    pass
            if "acked" not in marks:
                v = verdicts(json.loads(http(cp.control, "GET", "/acks")[1]), node, served)
                if all_answered(v):
                    marks["acked"] = time.monotonic()
            if "listening" not in marks and set(ports) <= procstat.listening_ports(p.pid):
                marks["listening"] = time.monotonic()
            time.sleep(0.005)
        turn["cpu_to_ready_s"] = procstat.cpu_seconds(p.pid)
        turn.update({f"{k}_s": t - t0 for k, t in marks.items()})
        turn["startup_s"] = max(marks.values()) - t0
        turn["verdicts"] = {t.rsplit(".", 1)[-1]: x for t, x in v.items()}
        time.sleep(args.settle)
        acks = json.loads(http(cp.control, "GET", "/acks")[1])
        nacks = acks["clients"].get(node, {})
        turn["nacks"] = {t.rsplit(".", 1)[-1]: r["nacked"][-1]["error_detail"].get("message", "")[:300]
                         for t, r in nacks.items() if r.get("nacked")}
        turn["rss"], turn["hwm"] = procstat.rss_bytes(p.pid), vm_hwm(p.pid)
        turn["smaps"] = procstat.smaps_rollup(p.pid)
        s = stats(admin)
        turn["listeners_active"] = s.get("listener_manager.total_listeners_active")
        turn["clusters_active"] = s.get("cluster_manager.active_clusters")
    except (RuntimeError, OSError, ValueError) as e:
        turn["error"] = f"{type(e).__name__}: {e}"
    finally:
        Started.stop(p)
    return turn


def run_config(args, tmp: str, proxies: dict, log) -> tuple[list[dict], dict]:
    both, envoy, notes = istio_scripts(args, tmp)
    log(f"config: served to shardproxy {notes['served_shardproxy']}, to Envoy {notes['served_envoy']}")
    planes = {}
    try:
        for name, script in (("shardproxy", both), ("envoy", envoy)):
            if name not in proxies:
                continue
            path = os.path.join(tmp, f"istio-{name}.json")
            with open(path, "w") as f:
                json.dump(script, f)
            planes[name] = (ControlPlane(args.python, path, str(args.client_core),
                                         os.path.join(tmp, f"xds-{name}.log"), 120), script)
        names = list(planes)
        turns = []
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                log(f"config round {r + 1}/{args.rounds}: {name}")
                cp, script = planes[name]
                t = config_turn(proxies[name], args, tmp, cp, script, r + 1)
                log("  " + json.dumps(t))
                turns.append(t)
    finally:
        for cp, _ in planes.values():
            cp.stop()
    return turns, notes


# ---------------------------------------------------------------------------------------------
# report


def fmt(v, spec: str, scale: float = 1.0) -> str:
    return "–" if v is None else format(v / scale, spec)


def x(v) -> str:
    return "–" if v is None else f"{v:.2f}×"


def footer(lines: list[str], res: dict, section: str, targets: list[tuple[str, float | None, float]]) -> str:
    """The section's end: issue 11's targets (name, shardproxy ÷ Envoy, limit), the note."""
    lines += ["", "| issue 11 target | shardproxy ÷ Envoy (same run) | met |", "|---|---:|---|"]
    for name, value, limit in targets:
        met = "–" if value is None else "yes" if value <= limit else "no"
        lines.append(f"| {name} ≤ {limit}× | {x(value)} | {met} |")
    if res.get("note"):
        lines += ["", f"**Note**: {res['note']}"]
    lines.append(f"<!-- bench:end {section} -->")
    return "\n".join(lines) + "\n"


def round_table(turns: list[dict], label: str, columns: list[str], cells) -> list[str]:
    """A table with a row per turn: round, the turn's `label` field, the 1-minute load average
    at that turn, then `columns` filled by cells(turn); a failed turn shows its error."""
    lines = ["| round | " + label + " | load 1 min | " + " | ".join(columns) + " |",
             "|---:|---|---:|" + "---:|" * len(columns)]
    for t in turns:
        first = f"| {t['round']} | {t[label]} | {t['loadavg'].split()[0]} | "
        if "error" in t:
            lines.append(first + f"failed: {t['error'][:200].replace('|', '/')} " + "|" * len(columns))
        else:
            lines.append(first + " | ".join(cells(t)) + " |")
    return lines


def header(res: dict, title: str, section: str) -> list[str]:
    m = res["machine"]
    return [
        f"<!-- bench:begin {section} -->",
        f"## {title}",
        "",
        f"- **Date**: {res['start']} → {res['end']} (UTC)",
        f"- **Machine**: `{m['hostname']}`, {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, "
        f"{m['kernel']}; load average {' '.join(m['loadavg'])} at start, {res['loadavg_end']} at end "
        "(per turn in the tables: other tenants' load shows there)",
        f"- **Command**: `{res['command']}`",
        f"- **Proxies**: {res['versions']}",
    ]


def render_chain(res: dict) -> str:
    a, s = res["args"], res["chain_summary"]
    lines = header(res, "Sidecar to sidecar — two proxies, Istio mTLS between them, HTTP/1.1, 1 KiB, "
                   "fixed rate", "sidecar-chain") + [
        f"- **Path**: h2load --h1 → proxy A (plain HTTP/1.1 listener; outbound cluster with "
        f"UpstreamTlsContext: workload certificate, mesh root, SAN exact `{spiffe(SERVER_SA)}`, SNI "
        "`outbound_.8080_._.server.default.svc.cluster.local`, TLS 1.2–1.3) → proxy B (inbound "
        "listener, DownstreamTlsContext with `require_client_certificate`, SAN prefix "
        "`spiffe://cluster.local/`) → origin nginx (`GET /1k.bin`, 1,024-byte body). Both proxies of "
        "a pair are the same proxy on the same bootstrap templates (`templates/sidecar-outbound.yaml`, "
        "`templates/sidecar-inbound.yaml`); ECDSA P-256 certificates made per run with SPIFFE URI SANs.",
        f"- **Load**: {a['rate']:,} req/s fixed (`--rps` {max(1, round(a['rate'] / a['connections']))} on "
        f"each of {a['connections']} keep-alive connections), {a['warmup']:.0f} s warm-up (opens the "
        f"A → B mTLS connections) then {a['duration']:.0f} s measured; latency from h2load's "
        "per-request log. Layout: both proxies (`--concurrency 1` each) on core "
        f"{a['proxy_core']}; h2load and the origin on core {a['client_core']}. Order rotates per "
        "round (direct, shardproxy pair, Envoy pair).",
        "- **Metrics**: CPU µs/req = utime+stime of A and B over the measured run ÷ requests; added "
        "p99 = the pair's p99 − the direct path's p99 in the same round (client → origin at the same "
        "rate); RSS = VmRSS of A + B after the run.",
        "",
    ]

    def chain_cells(t: dict) -> list[str]:
        errors = f"{t['errors']} {body_mismatch(t, a['connections'])}".strip()
        return [f"{t['rps']:,.0f}", f"{t['p50_us'] / 1e3:.3f}", f"{t['p99_us'] / 1e3:.3f}",
                fmt(t.get("added_p99_us"), ".3f", 1e3), fmt(t.get("cpu_us_per_req"), ".1f"),
                fmt(t.get("cpu_us_per_req_a"), ".1f"), fmt(t.get("cpu_us_per_req_b"), ".1f"),
                fmt(t.get("rss"), ".1f", 1e6), fmt(t.get("proxy_core_busy"), ".0%"), errors]
    lines += round_table(res["chain"], "path", ["req/s", "p50 ms", "p99 ms", "added p99 ms",
                                                "CPU µs/req A+B ↓", "A", "B", "RSS MB A+B",
                                                "proxy core busy", "errors"], chain_cells)
    lines += [
        "",
        "Medians over rounds:",
        "",
        "| path | req/s | p50 ms | p99 ms | added p50 ms ↓ | added p99 ms ↓ | CPU µs/req A+B ↓ | RSS MB A+B |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path in PATHS:
        m = s.get(path)
        if not m or not m["rounds"]:
            continue
        lines.append(f"| {path} | {fmt(m['rps'], ',.0f')} | {fmt(m['p50_us'], '.3f', 1e3)} | "
                     f"{fmt(m['p99_us'], '.3f', 1e3)} | {fmt(m['added_p50_us'], '.3f', 1e3)} | "
                     f"{fmt(m['added_p99_us'], '.3f', 1e3)} | "
                     f"{fmt(m['cpu_us_per_req'], '.1f')} | {fmt(m['rss'], '.1f', 1e6)} |")
    lines += ["", f"Added p50, shardproxy ÷ Envoy: {x(s.get('added_p50_ratio'))} (not a target; "
              "steadier than the p99 when other tenants load the cores)."]
    return footer(lines, res, "sidecar-chain", [("CPU per request of the pair", s["cpu_ratio"], 0.4),
                                                ("added p99", s["added_p99_ratio"], 0.5)])


def render_config(res: dict) -> str:
    a, s, n = res["args"], res["config_summary"], res["config_notes"]
    lines = header(res, "Sidecar holding a real Istio config — RSS and startup (Istio 1.22.3 sidecar dump)",
                   "sidecar-config") + [
        f"- **Config**: the dynamic resources of `{os.path.basename(a['dump'])}` "
        f"(`tests/peers/istio_resources.py --empty-eds --rebind-ports`: {n['converted']}), served by "
        "`tests/peers/xds_server.py` over Delta ADS, SDS on its own `sds-grpc` stream. For both "
        f"proxies: the user's Wasm plugin taken out (the {n['wasm_filters_removed'][0]} HTTP filters "
        f"naming it over ECDS, in {n['wasm_filters_removed'][1]} listeners, and its ECDS resource: "
        "shardproxy refuses v8 Wasm by design and would refuse those listeners), and the dump's redacted secrets replaced by a workload certificate "
        "(`spiffe://cluster.local/ns/default/sa/app1`) and root made here. For Envoy only: Istio's own "
        f"extensions taken out ({n['istio_extensions_removed_for_envoy']} filters: "
        f"{', '.join(ISTIO_EXTENSIONS)}), absent from upstream Envoy. Served to shardproxy "
        f"{n['served_shardproxy']}, to Envoy {n['served_envoy']}.",
        f"- **Layout**: each proxy `--concurrency {a['concurrency']}` (Istio's default is 2) on cores "
        f"{a['proxy_cores']}; the control plane on core {a['client_core']}. Order rotates per round.",
        "- **Metrics**: startup = spawn → all of: admin `/ready` 200, every type the proxy subscribed to "
        "ACKed at the served version (the control plane's record), the bound listeners (virtualOutbound, "
        "virtualInbound) listening (the process's sockets in /proc/net/tcp: a test connection to them "
        "would have no original destination but the listener itself), polled every 5 ms; CPU = utime+stime at that "
        f"point; RSS = VmRSS {a['settle']:.0f} s after startup (anon + file from smaps_rollup: "
        "heap and stacks + mapped-file pages such as the executable's code), peak = VmHWM then.",
        "",
    ]

    def config_cells(t: dict) -> list[str]:
        return [f"{t['startup_s']:.3f}", f"{t['ready_s']:.3f}", f"{t['acked_s']:.3f}", f"{t['listening_s']:.3f}",
                f"{t['cpu_to_ready_s']:.2f}", f"{t['rss'] / 1e6:.1f}", anon_file(t.get("smaps", {})),
                f"{t['hwm'] / 1e6:.1f}",
                str(t["listeners_active"]), str(t["clusters_active"]),
                ", ".join(f"{k} {w}" for k, w in t["verdicts"].items() if w),
                "; ".join(f"{k}: {m[:120]}" for k, m in t["nacks"].items()) or "none"]
    lines += round_table(res["config"], "proxy", ["startup s ↓", "/ready s", "all ACKed s", "listening s",
                                                  "CPU s", "RSS MB ↓", "anon + file MB", "peak RSS MB", "listeners active",
                                                  "clusters active", "verdicts", "NACKs"], config_cells)
    lines += [
        "",
        "| proxy | startup s ↓ | CPU s to ready | RSS MB ↓ | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("shardproxy", "envoy"):
        m = s.get(name)
        if m and m["rounds"]:
            lines.append(f"| {name} | {fmt(m['startup_s'], '.3f')} | {fmt(m['cpu_to_ready_s'], '.2f')} | "
                         f"{fmt(m['rss'], '.1f', 1e6)} | {fmt(m['hwm'], '.1f', 1e6)} |")
    lines += [
    ]
    return footer(lines, res, "sidecar-config", [("RSS with the 1.22.3 sidecar config", s["rss_ratio"], 0.2),
                                                 ("startup to ready", s["startup_ratio"], 0.5)])


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="sidecar.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--parts", default="chain,config", help="chain, config")
    ap.add_argument("--peers", default="shardproxy,envoy")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the order rotates each round")
    ap.add_argument("--rate", type=int, default=2000, help="chain: offered req/s, fixed")
    ap.add_argument("--connections", type=int, default=20, help="chain: keep-alive connections")
    ap.add_argument("--duration", type=float, default=10, help="chain: seconds measured per path")
    ap.add_argument("--warmup", type=float, default=2, help="chain: seconds of warm-up per path")
    ap.add_argument("--concurrency", type=int, default=2, help="config: workers per proxy")
    ap.add_argument("--settle", type=float, default=2, help="config: seconds after startup before RSS")
    ap.add_argument("--dump", default=os.path.normpath(DUMP), help="config: the Istio config dump")
    ap.add_argument("--python", default=os.path.join(REPO, "target/test-venv/bin/python"),
                    help="config: a Python with grpcio and xds-protos (tests/run.sh makes this venv)")
    ap.add_argument("--proxy-bin", default=None)
    ap.add_argument("--envoy-bin", default=None)
    ap.add_argument("--nginx-bin", default=None)
    ap.add_argument("--h2load-bin", default="h2load")
    ap.add_argument("--proxy-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=60)
    ap.add_argument("--render", metavar="RAW_JSON", default=None,
                    help="measure nothing: write the sections of an earlier run from its raw results "
                         "(bench/results/sidecar-<time>.json)")
    add_output_args(ap)
    a = ap.parse_args(argv)
    a.part_list = [p.strip() for p in a.parts.split(",") if p.strip()]
    a.peer_list = [p.strip() for p in a.peers.split(",") if p.strip()]
    for p in a.part_list:
        if p not in ("chain", "config"):
            ap.error(f"unknown part {p!r} (chain, config)")
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    a.proxy_cores = str(a.proxy_core) if a.concurrency == 1 else f"{a.proxy_core},{a.client_core}"
    return a


def measure(args, argv) -> dict:
    """Runs the parts asked for; the raw results (turns, summaries, machine, versions)."""
    proxies = {p.name: p for p in resolve_peers(args)[0]}
    if not proxies:
        sys.exit("sidecar: no proxy to measure")
    if "config" in args.part_list and not os.access(args.python, os.X_OK):
        sys.exit(f"sidecar: config needs --python with grpcio and xds-protos ({args.python} missing)")

    def log(msg: str):
        print(msg, file=sys.stderr, flush=True)

    tmp = tempfile.mkdtemp(prefix="shardproxy-sidecar-")
    os.chmod(tmp, 0o755)  # nginx workers run as an unprivileged user and read www/ from here
    start = dt.datetime.now(dt.timezone.utc)
    res = {"args": vars(args), "start": start.isoformat(timespec="seconds"), "machine": procstat.machine_info(),
           "command": "python3 bench/sidecar.py " + shlex.join(sys.argv[1:] if argv is None else argv),
           "versions": "; ".join(f"{p.name} {p.version()}" for p in proxies.values()), "note": args.note}
    try:
        if "chain" in args.part_list:
            res["chain"] = run_chain(args, tmp, proxies, log)
        if "config" in args.part_list:
            res["config"], res["config_notes"] = run_config(args, tmp, proxies, log)
    finally:
        Started.stop_all()
        if args.keep_tmp:
            log(f"temp dir kept: {tmp}")
        else:
            subprocess.run(["rm", "-rf", tmp])
    res["end"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    res["loadavg_end"] = loadavg()
    os.makedirs(args.raw_dir, exist_ok=True)
    with open(os.path.join(args.raw_dir, f"sidecar-{start:%Y%m%dT%H%M%SZ}.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        with open(args.render) as f:
            res = json.load(f)
    else:
        res = measure(args, argv)
    texts = []
    if "chain" in res:
        res["chain_summary"] = chain_summary(res["chain"])
        texts.append(("sidecar-chain", render_chain(res)))
    if "config" in res:
        res["config_summary"] = config_summary(res["config"])
        texts.append(("sidecar-config", render_config(res)))
    for _, text in texts:
        print(text)
    if not args.no_write:
        for section, text in texts:
            write_section(args.results, text, section)
    failed = any("error" in t for t in res.get("chain", []) + res.get("config", []))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
