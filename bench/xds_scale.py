#!/usr/bin/env python3
"""xDS at mesh scale: shardproxy and Envoy follow the same control plane serving one large mesh.

The mesh, Istio-shaped: --clusters EDS clusters (`outbound|8080||svc-N.mesh`) with
--endpoints endpoints each (127.x.y.z addresses), one RDS table `8080` with one virtual host
per service (one route each), and one listener on 127.0.0.1 using that table. The control
plane is tests/peers/xds_server.py (Delta ADS, Istio's default), started once and pre-loaded
with the whole mesh before any proxy starts (its JSON parsing is server time, not counted).
Service svc-0's endpoints are the ports of an upstream nginx, so requests can go through.

Per proxy run (shardproxy with each --concurrency in --shardproxy-concurrency, Envoy with
--concurrency 1), one at a time, proxy pinned to --proxy-core (both cores for concurrency 2):
  1. start → /ready 200: wall time, CPU seconds (whole process; shardproxy's `agent` thread
     too), peak RSS (VmHWM); shardproxy's logged "initial xDS fetch done in".
  2. --changes one-endpoint EDS changes (one ClusterLoadAssignment of a cold service with
     one endpoint's port changed, pushed alone): wall time from push to the proxy's ACK seen
     on the control plane, CPU of the thread that applies xDS (shardproxy's `agent`, Envoy's
     main thread; /proc/<tid>/schedstat, ns) from push to ACK + 50 ms; for shardproxy also
     its own "update applied in" (agent, debug log) and "applied on all shards" times.
  3. h2load (HTTP/1.1, --connections keep-alive connections) at a fixed --rate of requests per
     second through the listener to svc-0: quiet, then while the control plane churns a cold
     service's endpoints every --churn-interval-ms: p99 ratio and failed requests. A fixed
     rate below saturation, because the load generator shares its core with the control plane:
     a closed loop (wrk) there measures the starved client, not the proxy.

    python3 bench/xds_scale.py [--clusters 10000] [--endpoints 10] [--changes 20] [--duration 10]

Writes the `xds-scale` section of bench/RESULTS.md (unless --no-write) and the raw numbers
to bench/results/xds-scale-<UTC time>.json. Bounded: every wait has a deadline.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from string import Template

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import peers as peers_mod  # noqa: E402
import procstat  # noqa: E402
import scenarios  # noqa: E402
from bench import Started, free_port, tail  # noqa: E402

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
UPSTREAM_PORTS = 10  # svc-0's endpoints: one nginx listening on this many ports
SECTION = "xds-scale"

DURATION = re.compile(r"([0-9.]+)(ns|µs|us|ms|s)\b")
UNIT_US = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
INITIAL = re.compile(r"initial (?:xDS )?fetch done in (\S+): live")
APPLIED = re.compile(r"applied on all shards (\S+) after publish")
UPDATE = re.compile(r"update applied in (\S+).*type_url=(\S+)|type_url=(\S+).*update applied in (\S+)")


def to_us(text: str) -> float:
    m = DURATION.match(text)
    return float(m.group(1)) * UNIT_US[m.group(2)] if m else float("nan")


# ---------------------------------------------------------------------------------------------
# the mesh


def service(i: int) -> str:
    return f"outbound|8080||svc-{i}.mesh"


def address(ip: str, port: int) -> dict:
    return {"socket_address": {"address": ip, "port_value": port}}


def assignment(i: int, ports: list[int] | None, per: int, changed_port: int | None = None) -> dict:
    """svc-i's endpoints: the given upstream ports on 127.0.0.1, else `per` distinct fake
    127.x.y.z:8080 addresses (the first one on `changed_port` when given)."""
    if ports:
        eps = [address("127.0.0.1", p) for p in ports]
    else:
        eps = []
        for k in range(per):
            n = i * per + k + 1
            eps.append(address(f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
                               changed_port if k == 0 and changed_port else 8080))
    return {"cluster_name": service(i),
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": a}} for a in eps]}]}


def mesh(clusters: int, per: int, listen_port: int, upstream_ports: list[int]) -> dict:
    ads = {"ads": {}, "resource_api_version": "V3"}
    cds = [{"name": service(i), "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": ads, "service_name": service(i)}}
           for i in range(clusters)]
    eds = [assignment(i, upstream_ports if i == 0 else None, per) for i in range(clusters)]
    vhosts = [{"name": f"svc-{i}.mesh:8080", "domains": [f"svc-{i}.mesh", f"svc-{i}.mesh:8080"],
               "routes": [{"name": "default", "match": {"prefix": "/"},
                           "route": {"cluster": service(i), "timeout": "0s"}}]}
              for i in range(clusters)]
    rds = [{"name": "8080", "virtual_hosts": vhosts}]
    hcm = {"@type": HCM, "stat_prefix": "outbound_0.0.0.0_8080",
           "rds": {"route_config_name": "8080", "config_source": ads},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    lds = [{"name": "0.0.0.0_8080", "address": address("127.0.0.1", listen_port),
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}]
    return {"resources": {CLUSTER: cds, ENDPOINT: eds, ROUTE: rds, LISTENER: lds}}


def bootstrap(node: str, admin_port: int, ads_port: int) -> dict:
    ads = {"ads": {}, "resource_api_version": "V3"}
    xds_cluster = {
        "name": "xds_cluster", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": address("127.0.0.1", ads_port)}}]}]},
        "typed_extension_protocol_options": {HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
            "explicit_http_config": {"http2_protocol_options": {}}}},
    }
    return {
        "node": {"id": node, "cluster": "xds-scale"},
        "admin": {"address": address("127.0.0.1", admin_port)},
        "dynamic_resources": {
            "ads_config": {"api_type": "DELTA_GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]},
            "lds_config": ads, "cds_config": ads},
        "static_resources": {"clusters": [xds_cluster]},
    }


# ---------------------------------------------------------------------------------------------
# processes and probes


def http(port: int, method: str, path: str, body: dict | None = None, host="bench",
         timeout=5.0) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                  + data)
        out = b""
        while chunk := s.recv(1 << 20):
            out += chunk
    head, _, rest = out.partition(b"\r\n\r\n")
    return (int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0), rest


class ControlPlane:
    """tests/peers/xds_server.py on `script`; its ADS and control ports kernel-chosen, or the
    given ones (a restart on the same ports: bench/soak.py)."""

    def __init__(self, python: str, script: str, core: str, log_path: str, timeout: float,
                 ads_port: int = 0, control_port: int = 0):
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(
            ["taskset", "-c", core, python, os.path.join(REPO, "tests/peers/xds_server.py"),
             "--script", script, "--port", str(ads_port), "--control-port", str(control_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        Started.procs.append(self.p)
        deadline, ports = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"xds_server.py exited:\n{tail(log_path)}")
            if line.startswith("LISTEN "):
                _, kind, port = line.split()
                ports[kind] = int(port)
            if line.strip() == "READY":
                break
        self.ads, self.control = ports["ads"], ports["control"]

    def post(self, path: str, body: dict, timeout=60.0) -> dict:
        status, data = http(self.control, "POST", path, body, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"POST {path}: {status} {data[:300]!r}")
        return json.loads(data)

    def acked(self, node: str, type_url: str) -> list[str]:
        _, data = http(self.control, "GET", "/acks")
        return json.loads(data)["clients"].get(node, {}).get(type_url, {}).get("acked", [])

    def stop(self):
        Started.stop(self.p)
        self.log.close()


def tid_of(pid: int, comm: str) -> int | None:
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == comm:
                    return int(tid)
        except OSError:
            pass
    return None


def thread_cpu_ns(pid: int, tid: int | None) -> int:
    """On-CPU time of one thread (schedstat, ns)."""
    if tid is None:
        return 0
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])


def vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def wait(what: str, timeout: float, probe, interval=0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = probe()
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def summary(values: list[float]) -> dict:
    vs = sorted(v for v in values if v == v)
    if not vs:
        return {}
    return {"median": statistics.median(vs), "max": vs[-1], "min": vs[0], "n": len(vs)}


# ---------------------------------------------------------------------------------------------
# one proxy


class Run:
    def __init__(self, name: str, binary: str, concurrency: int, args, cp: ControlPlane,
                 tmp: str, listen_port: int):
        self.name, self.binary, self.concurrency = name, binary, concurrency
        self.label = f"{name} --concurrency {concurrency}"
        self.node = f"{name}-c{concurrency}"
        self.args, self.cp, self.tmp, self.listen = args, cp, tmp, listen_port
        self.admin = free_port()
        self.log_path = os.path.join(tmp, f"{self.node}.log")
        self.is_envoy = name == "envoy"

    def argv(self, cfg: str) -> list[str]:
        common = ["-c", cfg, "--concurrency", str(self.concurrency), "--drain-time-s", "1"]
        if self.is_envoy:
            return [self.binary] + common + [
                "--disable-hot-restart", "--base-id", str(1000 + os.getpid() % 50000),
                "--log-level", "warn", "--log-path", self.log_path]
        # The agent's per-update time is a debug line of its xDS glue (that module only: the
        # client's per-message debug lines would cost the agent time being measured).
        return shlex.split(self.args.wrap) + [self.binary] + common + [
            "--component-log-level", "xds_agent::agent::xds:debug"]

    def start(self) -> dict:
        cfg = os.path.join(self.tmp, f"bootstrap-{self.node}.json")
        with open(cfg, "w") as f:
            json.dump(bootstrap(self.node, self.admin, self.cp.ads), f)
        cores = self.args.proxy_core if self.concurrency == 1 else \
            f"{self.args.proxy_core},{self.args.client_core}"
        t0 = time.monotonic()
        self.p = Started.start(self.argv(cfg), self.log_path, cores)

        def ready():
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.label} exited {self.p.returncode}:\n{tail(self.log_path)}")
            try:
                return http(self.admin, "GET", "/ready", timeout=1.0)[0] == 200
            except OSError:
                return False

        wait(f"{self.label} /ready", self.args.start_timeout, ready)
        ready_s = time.monotonic() - t0
        pid = self.pid = self.p.pid
        self.xds_tid = pid if self.is_envoy else tid_of(pid, "agent")
        r = {"ready_s": ready_s, "cpu_s": procstat.cpu_seconds(pid), "hwm": vm_hwm(pid),
             "smaps": procstat.smaps_rollup(pid),
             "xds_thread_cpu_s": thread_cpu_ns(pid, self.xds_tid) / 1e9}
        if not self.is_envoy:
            m = INITIAL.search(read(self.log_path))
            r["initial_fetch_us"] = to_us(m.group(1)) if m else None
        # The listener routes svc-0's requests to the upstream.
        status = wait(f"{self.label} routing GET / to svc-0", 30,
                      lambda: self.get_svc0() == 200, interval=0.05)
        r["routed"] = bool(status)
        return r

    def get_svc0(self) -> int:
        try:
            return http(self.listen, "GET", "/small", host="svc-0.mesh", timeout=2.0)[0]
        except OSError:
            return 0

    def eds_changes(self, count: int, seq: list[int]) -> dict:
        """`count` one-endpoint changes of svc-1's assignment, each pushed alone."""
        acks, cpus, agent, shards = [], [], [], []
        for _ in range(count):
            seq[0] += 1
            cla = assignment(1, None, self.args.endpoints, changed_port=20000 + seq[0])
            log_before = len(read(self.log_path)) if not self.is_envoy else 0
            before = len(self.cp.acked(self.node, ENDPOINT))
            cpu0 = thread_cpu_ns(self.pid, self.xds_tid)
            t0 = time.monotonic()
            self.cp.post("/churn", {"type_url": ENDPOINT, "template": cla, "count": 1})
            wait(f"{self.label} EDS ACK", 10,
                 lambda: len(self.cp.acked(self.node, ENDPOINT)) > before, interval=0.001)
            acks.append((time.monotonic() - t0) * 1e6)
            time.sleep(0.05)
            cpus.append((thread_cpu_ns(self.pid, self.xds_tid) - cpu0) / 1e3)
            if not self.is_envoy:
                new = read(self.log_path)[log_before:]
                ups = [to_us(m.group(1) or m.group(4)) for m in UPDATE.finditer(new)
                       if ENDPOINT in (m.group(2) or m.group(3) or "")]
                agent.extend(ups)
                shards.extend(to_us(m.group(1)) for m in APPLIED.finditer(new))
            time.sleep(0.05)
        out = {"push_to_ack_us": summary(acks), "xds_thread_cpu_us": summary(cpus)}
        if not self.is_envoy:
            out["agent_update_us"] = summary(agent)
            out["all_shards_us"] = summary(shards)
        return out

    def fixed_rate(self, duration: float) -> dict:
        """h2load at --rate req/s for `duration` s (scenarios.run_fixed_rate_h1), with the
        proxy's CPU per request."""
        a = self.args
        cpu0 = procstat.cpu_seconds(self.pid)
        r = scenarios.run_fixed_rate_h1(self.listen, "/small", a.rate, a.connections, duration,
                                        a.h2load_bin, a.client_core, self.tmp, authority="svc-0.mesh")
        r["cpu_us_per_req"] = (procstat.cpu_seconds(self.pid) - cpu0) * 1e6 / max(1, r["requests"])
        return r

    def eds_updates(self) -> int:
        """EDS updates the proxy accepted (its own counters; the control plane records only
        ACKs of the latest response, and a proxy slower than the pushes ACKs superseded ones)."""
        regex = (r"svc-2\.mesh\.update_success$" if self.is_envoy
                 else r"^xds\.eds\.update_success$")
        _, body = http(self.admin, "GET", "/stats?filter=" + urllib.parse.quote(regex))
        return sum(int(v) for line in body.decode().splitlines()
                   if ":" in line and (v := line.rsplit(":", 1)[1].strip()).isdigit())

    def under_churn(self, seq: list[int]) -> dict:
        a = self.args
        quiet = self.fixed_rate(a.duration)
        steps = int((a.duration + 3) * 1000 / a.churn_interval_ms)
        seq[0] += 1
        # Step n moves svc-2's first endpoint to port 30000 + n: every step is a real change.
        cla = assignment(2, None, a.endpoints, changed_port=1)
        text = json.dumps(cla).replace('"port_value": 1', '"port_value": "3{{n}}"', 1)
        template = json.loads(text)
        before = len(self.cp.acked(self.node, ENDPOINT))
        box: dict = {}

        def churn():
            try:
                box["reply"] = self.cp.post("/churn", {"type_url": ENDPOINT, "template": template,
                                                       "count": steps,
                                                       "interval_ms": a.churn_interval_ms},
                                            timeout=steps * a.churn_interval_ms / 1000 + 120)
            except Exception as e:  # noqa: BLE001 - reported below
                box["error"] = str(e)

        t = threading.Thread(target=churn, daemon=True)
        t.start()
        # The server parses every step before the first push: wait for the first ACK.
        wait(f"{self.label} first churn ACK", 60,
             lambda: len(self.cp.acked(self.node, ENDPOINT)) > before, interval=0.01)
        updates0, cpu0 = self.eds_updates(), thread_cpu_ns(self.pid, self.xds_tid)
        busy = procstat.core_times()
        churned = self.fixed_rate(a.duration)
        busy = procstat.core_busy(busy, procstat.core_times())
        churned["updates_applied"] = self.eds_updates() - updates0
        churned["xds_thread_cpu_s"] = (thread_cpu_ns(self.pid, self.xds_tid) - cpu0) / 1e9
        churned["client_core_busy"] = busy.get(int(a.client_core), 0.0)
        t.join(timeout=steps * a.churn_interval_ms / 1000 + 120)
        if "error" in box:
            churned["churn_error"] = box["error"]
        return {"quiet": quiet, "churn": churned,
                "p99_ratio": churned["p99_us"] / max(1, quiet["p99_us"])}

    def stop(self):
        self.final_hwm = vm_hwm(self.p.pid) if self.p.poll() is None else 0
        Started.stop(self.p)


# ---------------------------------------------------------------------------------------------
# report


def mb(b: float) -> str:
    return f"{b / 1e6:.0f}"


def anon_file(smaps: dict) -> str:
    """RSS split into anonymous memory (heap, stacks) and mapped-file pages (code), MB."""
    if "Rss" not in smaps:
        return "–"
    return f"{smaps['Anonymous'] / 1e6:.1f} + {(smaps['Rss'] - smaps['Anonymous']) / 1e6:.1f}"


def ms(us: float | None) -> str:
    return "–" if us is None else f"{us / 1e3:.2f}" if us < 1e5 else f"{us / 1e3:.0f}"


def render(res: dict) -> str:
    a = res["args"]
    lines = [
        f"<!-- bench:begin {SECTION} -->",
        "## xDS at mesh scale — initial fetch, one-endpoint EDS change, requests during pushes",
        "",
        f"- **Date**: {res['start']} → {res['end']} (UTC)",
        f"- **Machine**: `{res['machine']['hostname']}`, {res['machine']['cpu']}, "
        f"{res['machine']['cores']} cores, {res['machine']['mem_gib']} GiB, {res['machine']['kernel']}; "
        f"load average {' '.join(res['machine']['loadavg'])} at start",
        f"- **Command**: `{res['command']}`",
        f"- **Proxies**: {res['versions']}",
        f"- **Mesh** (Istio-shaped, Delta ADS from `tests/peers/xds_server.py`, pre-loaded before "
        f"each proxy starts): {a['clusters']:,} EDS clusters, {a['clusters'] * a['endpoints']:,} "
        f"endpoints ({a['endpoints']} per cluster), one RDS table with {a['clusters']:,} virtual "
        f"hosts of one route each, one listener. Script {res['script_mb']:.1f} MB of JSON; the "
        f"server parses it in {res['server_load_s']:.0f} s (not counted).",
        f"- **Layout**: proxy on core {a['proxy_core']} (`--concurrency 1`; `--concurrency 2` on "
        f"both cores); control plane, upstream nginx and h2load on core {a['client_core']}.",
        "- **Metrics**: ready = process start → admin `/ready` 200 (initial fetch of CDS, EDS, "
        "LDS, RDS applied, polled every 2 ms); CPU = utime+stime of the process until ready; "
        "xDS thread = the thread that applies xDS (shardproxy `agent`, Envoy's main thread), "
        "on-CPU time from `/proc/<pid>/task/<tid>/schedstat`; peak RSS = VmHWM at ready and at "
        "exit; anon + file = smaps_rollup's Anonymous (heap, stacks) and the rest of RSS at "
        "ready (mapped-file pages: code). EDS change: one ClusterLoadAssignment (10 endpoints, "
        "one port changed) pushed "
        f"alone, {a['changes']} times; push→ACK = POST to the control plane until the proxy's "
        "ACK is recorded there (includes the Python server's push); xDS-thread CPU from push "
        "to ACK + 50 ms; shardproxy's own log: agent time per update (`update applied in`) and "
        "publish → every shard applied. Load: `h2load --h1` at a fixed "
        f"{a['rate']:,} req/s over {a['connections']} keep-alive connections for "
        f"{a['duration']} s, GET /small through the listener to svc-0 (10 endpoints, one nginx), "
        f"quiet, then while the control plane pushes one EDS change of another service every "
        f"{a['churn_interval_ms']} ms; percentiles from h2load's per-request log. (A fixed rate "
        "below saturation: the load generator shares its core with the control plane, so a "
        "closed loop there measures the starved client, not the proxy.)",
        "",
        "| proxy | ready s ↓ | initial fetch s (log) | CPU s to ready ↓ | xDS thread CPU s ↓ | "
        "peak RSS MB at ready ↓ | RSS at ready: anon + file MB | peak RSS MB at exit ↓ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        s = r.get("start", {})
        if not s:
            lines.append(f"| {r['label']} | failed: {r.get('error', '?')[:120]} | | | | | | |")
            continue
        init = s.get("initial_fetch_us")
        lines.append(
            f"| {r['label']} | {s['ready_s']:.2f} | {'–' if init is None else f'{init / 1e6:.2f}'} "
            f"| {s['cpu_s']:.2f} | {s['xds_thread_cpu_s']:.2f} | {mb(s['hwm'])} | "
            f"{anon_file(s.get('smaps', {}))} | {mb(r.get('final_hwm', 0))} |")
    lines += [
        "",
        f"One-endpoint EDS change (median / max of {a['changes']}, ms):",
        "",
        "| proxy | push → ACK ↓ | xDS thread CPU ↓ | agent time per update (log) ↓ | "
        "publish → all shards (log) ↓ |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        e = r.get("eds")
        if not e:
            continue

        def mm(d):
            return f"{ms(d['median'])} / {ms(d['max'])}" if d else "–"

        lines.append(f"| {r['label']} | {mm(e['push_to_ack_us'])} | {mm(e['xds_thread_cpu_us'])} | "
                     f"{mm(e.get('agent_update_us'))} | {mm(e.get('all_shards_us'))} |")
    lines += [
        "",
        "Requests while the control plane pushes EDS changes:",
        "",
        "| proxy | quiet req/s | quiet p99 ms | churn req/s | churn p99 ms | p99 ratio ↓ | "
        "EDS updates applied during the run | xDS thread CPU s | errors (quiet + churn) | "
        "CPU µs/req quiet → churn |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        w = r.get("load")
        if not w:
            continue
        q, c = w["quiet"], w["churn"]
        lines.append(
            f"| {r['label']} | {q['rps']:,.0f} | {q['p99_us'] / 1e3:.3f} | {c['rps']:,.0f} | "
            f"{c['p99_us'] / 1e3:.3f} | {w['p99_ratio']:.2f}× | {c['updates_applied']} | "
            f"{c['xds_thread_cpu_s']:.2f} | "
            f"{q['errors'] + c['errors']} | {q['cpu_us_per_req']:.1f} → {c['cpu_us_per_req']:.1f} |")
    if res.get("note"):
        lines += ["", f"**Note**: {res['note']}"]
    lines.append(f"<!-- bench:end {SECTION} -->")
    return "\n".join(lines) + "\n"


def write_section(path: str, text: str, section: str = SECTION) -> None:
    """Replaces the section `section` of RESULTS.md `path` by text (or appends it)."""
    doc = read(path) if os.path.exists(path) else "# shardproxy bench results\n"
    begin, end = f"<!-- bench:begin {section} -->", f"<!-- bench:end {section} -->"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + text.rstrip("\n") + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(doc)


# ---------------------------------------------------------------------------------------------


def start_upstream(tmp: str, nginx: str, core: str) -> tuple[subprocess.Popen, list[int]]:
    ports = [free_port() for _ in range(UPSTREAM_PORTS)]
    listens = "\n".join(f"        listen 127.0.0.1:{p} backlog=4096;" for p in ports)
    cfg = os.path.join(tmp, "upstream-nginx.conf")
    text = read(os.path.join(HERE, "templates/upstream-nginx.conf")).replace(
        "        listen 127.0.0.1:${upstream_port} backlog=4096;", listens)
    with open(cfg, "w") as f:
        # The template's gRPC listener (bench.py's grpc scenario) gets a port nobody uses here.
        f.write(Template(text).substitute(dir=tmp, tls_listen="", grpc_port=free_port()))
    os.makedirs(os.path.join(tmp, "www"), exist_ok=True)
    log = os.path.join(tmp, "upstream.log")
    p = Started.start([nginx, "-p", tmp + "/", "-e", os.path.join(tmp, "upstream-error.log"),
                       "-c", cfg], log, core)
    for port in ports:
        wait(f"upstream nginx on {port}", 10, lambda: connects(port), interval=0.05)
    return p, ports


def connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def add_output_args(ap: argparse.ArgumentParser) -> None:
    """The options of where a run's results go."""
    ap.add_argument("--note", default="", help="free text added to the RESULTS.md section")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--raw-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-write", action="store_true", help="print the section, write no RESULTS.md")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir with configs and logs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clusters", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10, help="endpoints per cluster")
    ap.add_argument("--peers", default="shardproxy,envoy")
    ap.add_argument("--shardproxy-concurrency", default="1,2")
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--churn-interval-ms", type=float, default=10)
    ap.add_argument("--rate", type=int, default=10000, help="offered req/s of the load runs")
    ap.add_argument("--no-load", action="store_true", help="skip the load runs")
    ap.add_argument("--wrap", default="",
                    help="a command shardproxy runs under, for profiling (e.g. 'heaptrack -o "
                         "/tmp/hp'); the wrapped run's RSS and CPU are the wrapper's too")
    ap.add_argument("--proxy-bin", default=None)
    ap.add_argument("--envoy-bin", default=None)
    ap.add_argument("--nginx-bin", default=None)
    ap.add_argument("--h2load-bin", default="h2load")
    ap.add_argument("--python", default=os.path.join(REPO, "target/test-venv/bin/python"),
                    help="a Python with grpcio and xds-protos (tests/run.sh makes this venv)")
    ap.add_argument("--proxy-core", default="0")
    ap.add_argument("--client-core", default="1")
    ap.add_argument("--start-timeout", type=float, default=120)
    add_output_args(ap)
    args = ap.parse_args()

    proxies = []
    for name in args.peers.split(","):
        peer = peers_mod.make_peer(name, args)
        binary = peer.find()
        if not binary:
            print(f"skip {name}: not found ({peer.install_hint})", file=sys.stderr)
            continue
        peer.binary = binary
        levels = [int(c) for c in args.shardproxy_concurrency.split(",")] if name == "shardproxy" else [1]
        proxies += [(peer, c) for c in levels]
    nginx = peers_mod._which(args.nginx_bin, "nginx")
    if not proxies or not nginx or not os.access(args.python, os.X_OK):
        print("need a proxy, nginx and --python", file=sys.stderr)
        return 1

    tmp = tempfile.mkdtemp(prefix="shardproxy-xds-scale-")
    start = dt.datetime.now(dt.timezone.utc)
    res = {"args": vars(args), "start": start.isoformat(timespec="seconds"),
           "machine": procstat.machine_info(), "note": args.note,
           "command": "python3 bench/xds_scale.py " + " ".join(sys.argv[1:]),
           "versions": "; ".join(sorted({f"{p.name} {p.version()}" for p, _ in proxies})),
           "runs": []}
    failed = False
    try:
        up, ports = start_upstream(tmp, nginx, args.client_core)
        listen = free_port()
        script = os.path.join(tmp, "mesh.json")
        with open(script, "w") as f:
            json.dump(mesh(args.clusters, args.endpoints, listen, ports), f)
        res["script_mb"] = os.path.getsize(script) / 1e6
        print(f"mesh: {args.clusters} clusters, {res['script_mb']:.1f} MB; loading the control "
              f"plane…", file=sys.stderr)
        t0 = time.monotonic()
        cp = ControlPlane(args.python, script, args.client_core,
                          os.path.join(tmp, "xds_server.log"), 600)
        res["server_load_s"] = time.monotonic() - t0
        seq = [0]
        for peer, conc in proxies:
            run = Run(peer.name, peer.binary, conc, args, cp, tmp, listen)
            r = {"label": run.label}
            res["runs"].append(r)
            print(f"{run.label}: starting", file=sys.stderr)
            try:
                r["start"] = run.start()
                print(f"  {json.dumps(r['start'])}", file=sys.stderr)
                r["eds"] = run.eds_changes(args.changes, seq)
                print(f"  {json.dumps(r['eds'])}", file=sys.stderr)
                if not args.no_load:
                    r["load"] = run.under_churn(seq)
                    print(f"  {json.dumps(r['load'])}", file=sys.stderr)
            except Exception as e:  # noqa: BLE001 - reported, the other proxies still run
                failed = True
                r["error"] = f"{type(e).__name__}: {e}"
                print(f"  failed: {r['error']}\n{tail(run.log_path)}", file=sys.stderr)
            finally:
                if getattr(run, "p", None) is not None:
                    run.stop()
                    r["final_hwm"] = run.final_hwm
        cp.stop()
        Started.stop(up)
    finally:
        Started.stop_all()
    res["end"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    text = render(res)
    print(text)
    os.makedirs(args.raw_dir, exist_ok=True)
    with open(os.path.join(args.raw_dir, f"xds-scale-{start:%Y%m%dT%H%M%SZ}.json"), "w") as f:
        json.dump(res, f, indent=1)
    if not args.no_write:
        write_section(args.results, text)
    if not args.keep_tmp:
        subprocess.run(["rm", "-rf", tmp])
    else:
        print(f"temp dir kept: {tmp}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
