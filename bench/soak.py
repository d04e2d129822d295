#!/usr/bin/env python3
"""Soak: mixed HTTP/1.1, h2c and TCP load through shardproxy for a long run while its whole
config churns over xDS; zero failed requests and a flat RSS pass.

The control plane is tests/peers/xds_server.py (ADS, Delta by default). Each proxy under test
(shardproxy `--concurrency 2`; Envoy too with `--peer envoy`) gets from it, over ADS:
  - clusters `web` and `echo` (EDS): `web` lists some of --web-endpoints ports of one upstream
    nginx (HTTP/1.1, `GET /small`: 12 bytes), `echo` some of --echo-endpoints TCP echo servers
    (threads of this process);
  - route table `web` (RDS): every request to `web`, with a response header naming the
    listener generation;
  - its own two listeners (per node, so both proxies run side by side): `http` (HCM,
    codec_type AUTO: HTTP/1.1 and h2c with prior knowledge, RDS `web`) and `tcp` (tcp_proxy
    to `echo`).
Churn, all bounded by --duration:
  - EDS every --eds-interval-ms (100): both assignments rotate which endpoints are listed (at
    least one, all of them live) and their weights;
  - listeners every --listener-interval (10 s): both listeners' stat_prefix and the route's
    header change (a new generation: the proxy builds new listeners and drains the old ones);
  - the control plane is killed (SIGKILL) at half the run and restarted on the same ports
    with the current config: the proxy keeps serving its last config, reconnects and resyncs.
Load per proxy, for --duration, from threads of this process, each one request at a time
with a --pause-ms pause: --h1-clients HTTP/1.1 keep-alive clients (raw sockets), --h2-clients
h2c clients (httpx, prior knowledge), --tcp-clients TCP clients (connect, send 64 random
bytes, read the echo, compare, close, --tcp-pause-ms pause). Not wrk and h2load: draining a
listener closes idle keep-alive connections and sends GOAWAY (shardproxy and Envoy alike), and
wrk (which does not watch a connection while it pauses) and h2load (whose client stops at a
GOAWAY, counting its next request failed) count that as failed requests for any proxy.
These clients do what RFC 9112 §9.3.1 and RFC 9110 §9.2.2 let clients do: an idempotent GET
that fails at the transport level on a reused connection (closed by a drain before any
answer) is retried once on a new connection and counted as `retried`, at most one per client
and listener update; everything else is a failure.

Failures counted: HTTP errors on a new connection, a failed retry, a status other than 200 or
a body other than the upstream's, TCP connects refused, echoes that differ or are cut, more
retries than listener updates × clients, xDS NACKs, a proxy that exits, a control plane the
proxies did not resync with within 60 s. RSS (VmRSS of the proxy), its open file descriptors,
the lines its /stats lists, the upstream connections it opened (`upstream_cx_total` of `web`
and `echo`) and the machine's load average are sampled every --sample-interval (10 s). RSS is flat when
the largest sample of the last window is at most 10 % or 4 MB (whichever is more) above the
largest of the first window, open fds when at most 10 % or 64 above; a window is --rss-window
(600 s) long, at most a third of the run after --warmup (60 s, at most a quarter of the run).
PASS = no failure, flat RSS and open fds, for every proxy.

    python3 bench/soak.py [--duration 1800] [--peer envoy] [--proxy-bin PATH]

Writes the `soak` section of bench/RESULTS.md (unless --no-write) and the raw numbers to
bench/results/soak-<UTC time>.json; exit code 0 on PASS, 1 otherwise. Runs on a Python with
httpx and h2, and the control plane on one with grpcio and xds-protos (--python, default the
same): tests/run.sh's venv target/test-venv has all four. Needs nginx.
"""
from __future__ import annotations

import argparse
import importlib.util
import datetime as dt
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests/peers"))

import peers as peers_mod  # noqa: E402
import procstat  # noqa: E402
import xds_scale  # noqa: E402
from bench import Started, free_port, tail  # noqa: E402
from mesh_app import TcpEcho, Threading  # noqa: E402
from xds_scale import CLUSTER, ENDPOINT, HCM, LISTENER, ROUTE, ROUTER, address  # noqa: E402

KINDS = ("h1", "h2c", "tcp")
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ADS = {"ads": {}, "resource_api_version": "V3"}
ECHO_BYTES = 64
SLACK = 0.10  # flat: the last window's max within 10 % or an absolute slack of the first's
RSS_SLACK_BYTES = 4 << 20
FD_SLACK = 64


# ---------------------------------------------------------------------------------------------
# the config the control plane serves


def assignment(cluster: str, ports: list[int], step: int) -> dict:
    """Step `step` of a cluster's rotation: a window of 1..len(ports) consecutive ports
    (wrapping), starting and sized by the step, weights 1..5 varying with it."""
    n = len(ports)
    size = 1 + (step // n) % n
    listed = [ports[(step + i) % n] for i in range(size)]
    return {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": address("127.0.0.1", p)},
         "load_balancing_weight": 1 + (step + i) % 5} for i, p in enumerate(listed)]}]}


def listeners(http_port: int, tcp_port: int, gen: int) -> list[dict]:
    hcm = {"@type": HCM, "stat_prefix": f"soak_http_{gen}", "codec_type": "AUTO",
           "rds": {"route_config_name": "web", "config_source": ADS},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    tcp = {"@type": TCP_PROXY, "stat_prefix": f"soak_tcp_{gen}", "cluster": "echo"}
    return [
        {"name": "http", "address": address("127.0.0.1", http_port), "filter_chains": [{"filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]},
        {"name": "tcp", "address": address("127.0.0.1", tcp_port), "filter_chains": [{"filters": [
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp}]}]},
    ]


def route(gen: int) -> dict:
    return {"name": "web", "virtual_hosts": [{
        "name": "all", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "web"}}],
        "response_headers_to_add": [{"header": {"key": "x-soak-generation", "value": str(gen)}}]}]}


class Config:
    """What the control plane serves now: the EDS step and the listener generation."""

    def __init__(self, web: list[int], echo: list[int], nodes: dict[str, tuple[int, int]]):
        self.web, self.echo, self.nodes = web, echo, nodes
        self.step = self.gen = 0

    def endpoints(self) -> dict:
        return {ENDPOINT: [assignment("web", self.web, self.step),
                           assignment("echo", self.echo, self.step)]}

    def generation(self) -> dict:
        """The listener generation's resources: the route and each node's listeners."""
        return {"resources": {ROUTE: [route(self.gen)]},
                "nodes": {node: {LISTENER: listeners(h, t, self.gen)}
                          for node, (h, t) in self.nodes.items()}}

    def script(self) -> dict:
        clusters = [{"name": c, "type": "EDS", "connect_timeout": "1s",
                     "eds_cluster_config": {"eds_config": ADS}} for c in ("web", "echo")]
        full = self.generation()
        full["resources"].update({CLUSTER: clusters, **self.endpoints()})
        return full


# ---------------------------------------------------------------------------------------------
# upstreams and load


def start_echo(count: int) -> tuple[list[Threading], list[int]]:
    servers = [Threading(("127.0.0.1", 0), TcpEcho) for _ in range(count)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    return servers, [s.server_address[1] for s in servers]


class Counter:
    """Thread-safe counts by name, with the first few error messages."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.samples: list[str] = []

    def add(self, key: str, sample: str = ""):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            if sample and len(self.samples) < 10:
                self.samples.append(f"{time.strftime('%H:%M:%S')} {sample}")


def tcp_loop(port: int, until: float, pause: float, out: Counter) -> None:
    """Connect, send ECHO_BYTES random bytes, read them back, compare, close; until `until`."""
    while time.monotonic() < until:
        payload = os.urandom(ECHO_BYTES)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(payload)
                got = b""
                while len(got) < ECHO_BYTES:
                    chunk = s.recv(ECHO_BYTES - len(got))
                    if not chunk:
                        break
                    got += chunk
            if got == payload:
                out.add("ok")
            else:
                how = "cut" if len(got) < ECHO_BYTES else "differs"
                out.add("mismatch", f"echo of {len(got)} bytes, {how}")
        except ConnectionRefusedError as e:
            out.add("refused", str(e))
        except OSError as e:
            out.add("error", f"{type(e).__name__}: {e}")
        time.sleep(pause)


REQUEST = b"GET /small HTTP/1.1\r\nHost: soak\r\n\r\n"
BODY = b"hello world\n"  # the upstream nginx's /small


class NoResponse(Exception):
    """The connection ended before any byte of a response."""


def read_response(f) -> tuple[int, bytes, bool]:
    """Status, body (Content-Length framed) and whether the server closes after it."""
    try:
        line = f.readline()
    except ConnectionResetError as e:
        raise NoResponse(str(e)) from e
    if not line:
        raise NoResponse("closed")
    status = int(line.split()[1])
    length, close = 0, False
    while (h := f.readline()) not in (b"\r\n", b""):
        name, _, value = h.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        length = int(value) if name == "content-length" else length
        close = close or (name == "connection" and value == "close")
    return status, f.read(length), close


def h1_loop(port: int, until: float, pause: float, out: Counter) -> None:
    """Keep-alive GET /small, one at a time, until `until`. As RFC 9112 §9.3.1 lets a client
    do (and browsers, curl and Envoy do): a request sent on a reused connection that the
    server closed before any byte of a response (a keep-alive close, e.g. a drained listener's
    idle connection) is retried once on a new connection and counted as `retried`, not failed.
    Anything else is a failure: an error on a new connection, a second one, a bad status or
    body."""
    s = f = None
    while time.monotonic() < until:
        for attempt in (0, 1):
            reused = s is not None
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    f = s.makefile("rb")
                s.sendall(REQUEST)
                status, body, close = read_response(f)
            except (NoResponse, BrokenPipeError) as e:
                s.close()
                s = None
                if reused and attempt == 0:
                    out.add("retried")
                    continue
                out.add("error", f"{type(e).__name__}: {e}")
                break
            except (OSError, ValueError, IndexError) as e:
                out.add("error", f"{type(e).__name__}: {e}")
                if s is not None:
                    s.close()
                s = None
                break
            if status == 200 and body == BODY:
                out.add("ok")
            else:
                out.add("bad_response", f"status {status}, {len(body)} bytes")
            if close:
                s.close()
                s = None
            break
        time.sleep(pause)
    if s is not None:
        s.close()


def h2_loop(port: int, until: float, pause: float, out: Counter) -> None:
    """GET /small over h2c (prior knowledge) with httpx, one at a time, until `until`. The
    retry rule of h1_loop: a request that fails at the transport level on a connection that
    already served requests (a drained connection: GOAWAY, then closed) is retried once on a
    new connection and counted as `retried`; any other error or a bad answer is a failure."""
    import httpx  # here: the rest of the harness (and its unit tests) runs without it

    url = f"http://127.0.0.1:{port}/small"
    client, reused = httpx.Client(http1=False, http2=True, timeout=5), False
    while time.monotonic() < until:
        for attempt in (0, 1):
            try:
                r = client.get(url)
            except httpx.TransportError as e:
                client.close()
                client = httpx.Client(http1=False, http2=True, timeout=5)
                if reused and attempt == 0:
                    reused = False
                    out.add("retried")
                    continue
                out.add("error", f"{type(e).__name__}: {e}")
                break
            reused = True
            if r.status_code == 200 and r.content == BODY and r.http_version == "HTTP/2":
                out.add("ok")
            else:
                out.add("bad_response", f"{r.http_version} {r.status_code}, {len(r.content)} bytes")
            break
        time.sleep(pause)
    client.close()


def counts(c: Counter) -> dict:
    fails = {k: v for k, v in c.counts.items() if k not in ("ok", "retried")}
    return {"requests": c.counts.get("ok", 0), "retried": c.counts.get("retried", 0),
            "failed": sum(fails.values()), "detail": fails, "samples": c.samples}


# ---------------------------------------------------------------------------------------------
# proxies


class Proxy:
    def __init__(self, peer, args, tmp: str, ads_port: int):
        self.name, self.peer = peer.name, peer
        self.node = f"soak-{peer.name}"
        self.admin, self.http, self.tcp = free_port(), free_port(), free_port()
        self.log_path = os.path.join(tmp, f"{peer.name}.log")
        self.cfg = os.path.join(tmp, f"bootstrap-{peer.name}.json")
        boot = xds_scale.bootstrap(self.node, self.admin, ads_port)
        boot["node"]["cluster"] = "soak"
        boot["dynamic_resources"]["ads_config"]["api_type"] = args.api_type
        with open(self.cfg, "w") as f:
            json.dump(boot, f)
        self.rss: list[tuple[float, int]] = []
        self.fds: list[tuple[float, int]] = []
        # Per sample: lines /stats lists, and upstream connections opened (upstream_cx_total
        # of `web` and `echo`, clusters that live the whole run).
        self.stat_lines: list[int] = []
        self.upstream_cx: list[int] = []
        self.counters = {kind: Counter() for kind in KINDS}
        self.exit: int | None = None

    def start(self, args, cores: str) -> None:
        argv = self.peer.command(self.cfg, self.log_path, concurrency=args.concurrency)
        self.p = Started.start(argv, self.log_path, cores)

        def serving():
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.p.returncode}:\n{tail(self.log_path)}")
            try:
                return xds_scale.http(self.http, "GET", "/small", timeout=1.0)[0] == 200 and \
                    echo_once(self.tcp)
            except OSError:
                return False

        xds_scale.wait(f"{self.name} serving its xDS listeners", args.start_timeout, serving, 0.1)

    def sample(self, t: float) -> None:
        if self.p.poll() is not None:
            self.exit = self.p.returncode
            return
        self.rss.append((t, procstat.rss_bytes(self.p.pid)))
        self.fds.append((t, len(os.listdir(f"/proc/{self.p.pid}/fd"))))
        try:
            text = xds_scale.http(self.admin, "GET", "/stats", timeout=5.0)[1].decode()
        except OSError:
            text = ""
        self.stat_lines.append(len(STAT_LINE.findall(text)))
        self.upstream_cx.append(sum(int(n) for n in UPSTREAM_CX.findall(text)))


# A /stats line (a chunk-size line of a chunked answer has no colon), and the upstream
# connections opened to the clusters that live the whole run.
STAT_LINE = re.compile(r"^[\w.:\-]+: .*$", re.M)
UPSTREAM_CX = re.compile(r"^cluster\.(?:web|echo)\.upstream_cx_total: (\d+)$", re.M)


def echo_once(port: int) -> bool:
    payload = os.urandom(ECHO_BYTES)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(payload)
        got = b""
        while len(got) < ECHO_BYTES and (chunk := s.recv(ECHO_BYTES)):
            got += chunk
    return got == payload


def flatness(samples: list[tuple[float, int]], duration: float, warmup: float,
             window: float, slack: int) -> dict:
    """First and last windows' max sample (RSS, open fds) after warm-up and whether the last
    stays within SLACK or `slack` of the first."""
    window = min(window, max(1.0, (duration - warmup) / 3))
    first = [r for t, r in samples if warmup <= t < warmup + window]
    last = [r for t, r in samples if t >= duration - window]
    if not first or not last:
        return {"flat": False, "why": "too few samples"}
    a, b = max(first), max(last)
    bound = max(a * (1 + SLACK), a + slack)
    return {"flat": b <= bound, "window_s": window, "first_max": a, "last_max": b,
            "growth": b - a, "min": min(r for _, r in samples), "max": max(r for _, r in samples),
            "samples": len(samples)}


# ---------------------------------------------------------------------------------------------
# the run


class ControlPlaneSlot:
    """The running control plane, replaced at the restart; pushes while it is down are
    counted as skipped (the proxies keep their last config meanwhile)."""

    def __init__(self, args, tmp: str, cfg: Config):
        self.args, self.tmp, self.cfg = args, tmp, cfg
        self.lock = threading.Lock()
        self.cp: xds_scale.ControlPlane | None = None
        self.ports = (0, 0)
        self.acks_before: dict = {}
        self.pushes = {"eds": 0, "listeners": 0, "skipped": 0, "errors": 0}

    def start(self) -> None:
        script = os.path.join(self.tmp, f"script-{time.monotonic_ns()}.json")
        with open(script, "w") as f:
            json.dump(self.cfg.script(), f)
        cp = xds_scale.ControlPlane(self.args.python, script, self.args.cores,
                                    os.path.join(self.tmp, "xds_server.log"), 60, *self.ports)
        self.ports = (cp.ads, cp.control)
        self.cp = cp

    def push(self, kind: str, body: dict) -> None:
        with self.lock:
            cp = self.cp
            if cp is None:
                self.pushes["skipped"] += 1
                return
            try:
                cp.post("/push", body, timeout=10)
                self.pushes[kind] += 1
            except (OSError, RuntimeError) as e:
                self.pushes["errors"] += 1
                print(f"push {kind} failed: {e}", file=sys.stderr)

    def kill(self) -> None:
        """SIGKILL the control plane (its /acks kept first)."""
        with self.lock:
            cp, self.cp = self.cp, None
        self.acks_before = acks(cp)
        cp.p.kill()
        cp.p.wait(5)
        cp.stop()

    def restart(self) -> None:
        with self.lock:
            self.start()


def acks(cp: xds_scale.ControlPlane) -> dict:
    _, data = xds_scale.http(cp.control, "GET", "/acks")
    return json.loads(data)["clients"]


def nacks(clients: dict) -> int:
    return sum(len(t.get("nacked", [])) for node in clients.values() for t in node.values())


def churn(slot: ControlPlaneSlot, cfg: Config, args, t0: float, until: float) -> None:
    next_listener = t0 + args.listener_interval
    next_eds = t0
    while (now := time.monotonic()) < until:
        if now >= next_listener:
            cfg.gen += 1
            slot.push("listeners", cfg.generation())
            next_listener += args.listener_interval
        cfg.step += 1
        slot.push("eds", {"resources": cfg.endpoints()})
        next_eds += args.eds_interval_ms / 1000
        time.sleep(max(0.0, next_eds - time.monotonic()))


def run(args, proxies: list, tmp: str, nginx: str) -> dict:
    up, ports = xds_scale.start_upstream(tmp, nginx, args.cores)
    echo_servers, echo_ports = start_echo(args.echo_endpoints)
    web_ports = ports[:args.web_endpoints]
    res: dict = {"proxies": {}}
    slot = None
    try:
        cfg = Config(web_ports, echo_ports, {})
        slot = ControlPlaneSlot(args, tmp, cfg)
        # Nodes need their listener ports before the first script: make the proxies first.
        slot.start()
        ps = [Proxy(peer, args, tmp, slot.cp.ads) for peer in proxies]
        cfg.nodes = {p.node: (p.http, p.tcp) for p in ps}
        slot.push("listeners", cfg.generation())
        for p in ps:
            p.start(args, args.cores)
            print(f"{p.name}: serving (http {p.http}, tcp {p.tcp})", file=sys.stderr)

        t0 = time.monotonic()
        until = t0 + args.duration
        clients = []
        for p in ps:
            for kind, loop, port, n, pause in (
                    ("h1", h1_loop, p.http, args.h1_clients, args.pause_ms),
                    ("h2c", h2_loop, p.http, args.h2_clients, args.pause_ms),
                    ("tcp", tcp_loop, p.tcp, args.tcp_clients, args.tcp_pause_ms)):
                clients += [threading.Thread(target=loop, daemon=True, args=(
                    port, until, pause / 1000, p.counters[kind])) for _ in range(n)]
        churner = threading.Thread(target=churn, args=(slot, cfg, args, t0, until), daemon=True)
        for t in clients + [churner]:
            t.start()

        restart_at = t0 + args.duration * args.restart_at
        restarted = False
        load_samples, busy0 = [], procstat.core_times()
        next_sample = t0
        while (now := time.monotonic()) < until:
            if now >= next_sample:
                for p in ps:
                    p.sample(now - t0)
                load_samples.append((now - t0, os.getloadavg()[0]))
                print(f"[{now - t0:5.0f}s] " + "  ".join(
                    f"{p.name} rss {p.rss[-1][1] / 1e6:.1f} MB "
                    + " ".join(f"{k} {c.counts}" for k, c in p.counters.items())
                    for p in ps if p.rss) + f"  load {os.getloadavg()[0]:.1f}", file=sys.stderr)
                next_sample += args.sample_interval
            if not restarted and now >= restart_at:
                slot.kill()
                print(f"[{now - t0:5.0f}s] control plane killed", file=sys.stderr)
                time.sleep(args.restart_down)
                slot.restart()
                res["restart"] = resync(slot, ps, now - t0, t0)
                print(f"[{time.monotonic() - t0:5.0f}s] control plane restarted: "
                      f"{res['restart']}", file=sys.stderr)
                restarted = True
            time.sleep(0.2)
        churner.join(30)
        for t in clients:
            t.join(30)
        res["core_busy"] = procstat.core_busy(busy0, procstat.core_times())
        res["loadavg"] = [l for _, l in load_samples]
        res["pushes"] = slot.pushes
        res["listener_updates"] = cfg.gen
        after = acks(slot.cp)
        res["nacks"] = nacks(slot.acks_before) + nacks(after)
        res["nack_detail"] = [n for c in (slot.acks_before, after) for node in c.values()
                              for t in node.values() for n in t.get("nacked", [])][:5]
        for p in ps:
            p.sample(args.duration)
            r = {kind: counts(c) for kind, c in p.counters.items()}
            r["retry_bound"] = {"h1": cfg.gen * args.h1_clients, "h2c": cfg.gen * args.h2_clients,
                                "tcp": 0}
            r["rss"] = flatness(p.rss, args.duration, args.warmup, args.rss_window, RSS_SLACK_BYTES)
            r["rss_samples"] = [[round(t), b] for t, b in p.rss]
            r["fds"] = flatness(p.fds, args.duration, args.warmup, args.rss_window, FD_SLACK)
            r["fd_samples"] = [[round(t), n] for t, n in p.fds]
            r["stat_lines"] = p.stat_lines
            r["upstream_cx"] = p.upstream_cx
            r["exit"] = p.exit if p.exit is not None else p.p.poll()
            r["acked"] = {t.rsplit(".", 1)[-1]: len(v.get("acked", []))
                          for t, v in after.get(p.node, {}).items()}
            res["proxies"][p.name] = r
    finally:
        if slot and slot.cp:
            slot.cp.stop()
        for s in echo_servers:
            s.shutdown()
        Started.stop(up)
    return res


def resync(slot: ControlPlaneSlot, ps: list, killed_at: float, t0: float) -> dict:
    """Waits (at most 60 s) until every proxy ACKed an EDS version on the new control plane."""
    start = time.monotonic()

    def synced():
        clients = acks(slot.cp)
        return all(clients.get(p.node, {}).get(ENDPOINT, {}).get("acked") for p in ps)

    try:
        xds_scale.wait("every proxy's EDS ACK on the restarted control plane", 60, synced, 0.1)
        return {"killed_at_s": round(killed_at), "resync_s": round(time.monotonic() - start, 2)}
    except RuntimeError as e:
        return {"killed_at_s": round(killed_at), "error": str(e)}


# ---------------------------------------------------------------------------------------------
# report


def proxy_ok(r: dict) -> bool:
    """No failure, at most one retry per client and listener drain, RSS and open file
    descriptors flat, still running."""
    return (r["exit"] is None and r["rss"]["flat"] and r["fds"]["flat"]
            and not any(r[k]["failed"] for k in KINDS)
            and all(r[k]["retried"] <= r["retry_bound"][k] for k in KINDS))


def verdict(res: dict) -> bool:
    if "error" in res.get("restart", {"error": "no restart"}) or res.get("nacks"):
        return False
    return bool(res["proxies"]) and all(proxy_ok(r) for r in res["proxies"].values())


def mb(b: float) -> str:
    return f"{b / 1e6:.1f}"


def render(res: dict) -> str:
    a, m = res["args"], res["machine"]
    loads = res.get("loadavg") or [0]
    restart = res.get("restart", {})
    window = next(iter(res["proxies"].values()))["rss"].get("window_s", 0)
    busy = res.get("core_busy", {})
    lines = [
        f"<!-- bench:begin {a['section']} -->",
        f"## Soak — {a['duration'] / 60:.0f} minutes of h1/h2c/TCP load under xDS churn: "
        f"**{'PASS' if res['pass'] else 'FAIL'}**",
        "",
        f"- **Date**: {res['start']} → {res['end']} (UTC)",
        f"- **Machine**: `{m['hostname']}`, {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, "
        f"{m['kernel']}; load average during the run {min(loads):.1f}–{max(loads):.1f} "
        f"(median {sorted(loads)[len(loads) // 2]:.1f}); cores busy "
        + ", ".join(f"{c}: {v:.0%}" for c, v in sorted(busy.items())),
        f"- **Command**: `{res['command']}`",
        f"- **Proxies**: {res['versions']}",
        f"- **Config** ({a['api_type']} ADS from `tests/peers/xds_server.py`): listeners `http` "
        "(HCM, codec AUTO, RDS) and `tcp` (tcp_proxy), clusters `web` "
        f"({a['web_endpoints']} nginx ports) and `echo` ({a['echo_endpoints']} echo servers), "
        f"both EDS. Churn: EDS every {a['eds_interval_ms']} ms (which endpoints are listed and "
        f"their weights), new listeners and route every {a['listener_interval']} s "
        f"(stat_prefix and a response header), control plane killed at "
        f"{restart.get('killed_at_s', '?')} s and restarted after {a['restart_down']} s on the "
        f"same ports; pushes: {res.get('pushes')}, NACKs {res.get('nacks')}; every proxy's "
        f"EDS ACK on the new control plane after {restart.get('resync_s', restart.get('error'))} s.",
        f"- **Load** per proxy, each client one request at a time with a {a['pause_ms']} ms "
        f"pause: {a['h1_clients']} HTTP/1.1 keep-alive clients (a request on a reused "
        "connection closed before any response byte retried once: `retried`), "
        f"{a['h2_clients']} h2c clients (httpx), {a['tcp_clients']} TCP clients (connect, "
        f"{ECHO_BYTES} bytes, echo, close, {a['tcp_pause_ms']} ms pause). "
        f"`--concurrency {a['concurrency']}` and `--drain-time-s 1`, all on cores {a['cores']}.",
        f"- **RSS and open fds flat**: largest sample of the last {window:.0f} s within "
        f"{SLACK:.0%} (or {RSS_SLACK_BYTES >> 20} MB, {FD_SLACK} fds) of the largest of the first "
        f"window after {a['warmup']} s of warm-up (VmRSS and /proc/<pid>/fd every "
        f"{a['sample_interval']} s).",
        "",
        "| proxy | h1 requests | h1 retried | h1 failed | h2c requests | h2c retried | "
        "h2c failed | TCP echoes | TCP failed | RSS first window max MB | "
        "RSS last window max MB | RSS min–max MB | open fds first → last window max | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in res["proxies"].items():
        s = r["rss"]
        exited = "" if r["exit"] is None else f" (exited {r['exit']})"
        ok = proxy_ok(r)
        lines.append(
            f"| {name} | {r['h1']['requests']:,} | {r['h1']['retried']} | {r['h1']['failed']} | "
            f"{r['h2c']['requests']:,} | {r['h2c']['retried']} | {r['h2c']['failed']} | "
            f"{r['tcp']['requests']:,} | "
            f"{r['tcp']['failed']} | {mb(s.get('first_max', 0))} | {mb(s.get('last_max', 0))} | "
            f"{mb(s.get('min', 0))}–{mb(s.get('max', 0))} | "
            f"{r['fds'].get('first_max', '?')} → {r['fds'].get('last_max', '?')} | "
            f"{'PASS' if ok else 'FAIL'}{exited} |")
    for name, r in res["proxies"].items():
        for kind in KINDS:
            if r[kind]["failed"]:
                lines += ["", f"{name} {kind} failures: `{json.dumps(r[kind]['detail'])}`, first: "
                          f"`{'; '.join(r[kind]['samples'][:3])}`"]
    for name, r in res["proxies"].items():
        samples = r["rss_samples"]
        every = max(1, len(samples) // 12)
        lines += ["", f"{name} RSS MB (every {every * a['sample_interval']:.0f} s): " +
                  " ".join(mb(b) for _, b in samples[::every]),
                  "", f"{name} open fds (same times): " +
                  " ".join(str(n) for _, n in r["fd_samples"][::every]),
                  "", f"{name} /stats lines (same times): " +
                  " ".join(str(n) for n in r.get("stat_lines", [])[::every]),
                  "", f"{name} upstream connections opened, `web` and `echo` (same times): " +
                  " ".join(str(n) for n in r.get("upstream_cx", [])[::every])]
    if res.get("nack_detail"):
        lines += ["", f"NACKs: `{json.dumps(res['nack_detail'])}`"]
    if a.get("note"):
        lines += ["", f"**Note**: {a['note']}"]
    lines.append(f"<!-- bench:end {a['section']} -->")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=1800)
    ap.add_argument("--peer", action="append", default=[], choices=["envoy"],
                    help="run this peer too, side by side on the same control plane")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--cores", default="0,1", help="cores every process runs on")
    ap.add_argument("--api-type", default="DELTA_GRPC", choices=["DELTA_GRPC", "GRPC"])
    ap.add_argument("--web-endpoints", type=int, default=4)
    ap.add_argument("--echo-endpoints", type=int, default=3)
    ap.add_argument("--eds-interval-ms", type=float, default=100)
    ap.add_argument("--listener-interval", type=float, default=10)
    ap.add_argument("--restart-at", type=float, default=0.5, help="share of the run")
    ap.add_argument("--restart-down", type=float, default=2.0, help="seconds without a control plane")
    ap.add_argument("--h1-clients", type=int, default=4)
    ap.add_argument("--h2-clients", type=int, default=4)
    ap.add_argument("--tcp-clients", type=int, default=2)
    ap.add_argument("--pause-ms", type=float, default=2, help="HTTP clients' pause between requests")
    ap.add_argument("--tcp-pause-ms", type=float, default=20,
                    help="TCP clients' pause between connections (each leaves a TIME_WAIT)")
    ap.add_argument("--sample-interval", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=60)
    ap.add_argument("--rss-window", type=float, default=600)
    ap.add_argument("--proxy-bin", default=None)
    ap.add_argument("--envoy-bin", default=os.environ.get("SHARDPROXY_TEST_ENVOY"))
    ap.add_argument("--nginx-bin", default=None)
    ap.add_argument("--python", default=sys.executable,
                    help="the control plane's Python: grpcio and xds-protos (default: this one; "
                         "tests/run.sh's venv has them)")
    ap.add_argument("--start-timeout", type=float, default=60)
    ap.add_argument("--section", default="soak", help="the RESULTS.md section written")
    xds_scale.add_output_args(ap)
    args = ap.parse_args(argv)
    args.warmup = min(args.warmup, args.duration / 4)

    found = []
    for name in ["shardproxy"] + args.peer:
        peer = peers_mod.make_peer(name, args)
        peer.binary = peer.find()
        if not peer.binary:
            print(f"soak: {name} not found ({peer.install_hint})", file=sys.stderr)
            return 1
        found.append(peer)
    nginx = peers_mod._which(args.nginx_bin, "nginx")
    missing = [what for what, ok in (("nginx", nginx), ("--python", os.access(args.python, os.X_OK)),
                                     ("httpx", importlib.util.find_spec("httpx")),
                                     ("h2", importlib.util.find_spec("h2"))) if not ok]
    if missing:
        print(f"soak: missing {', '.join(missing)}", file=sys.stderr)
        return 1

    tmp = tempfile.mkdtemp(prefix="shardproxy-soak-")
    start = dt.datetime.now(dt.timezone.utc)
    res = {"args": vars(args), "start": start.isoformat(timespec="seconds"),
           "machine": procstat.machine_info(),
           "command": "python3 bench/soak.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "versions": "; ".join(f"{p.name} {p.version()}" for p in found)}
    try:
        res.update(run(args, found, tmp, nginx))
    except Exception as e:  # noqa: BLE001 - reported, the run fails
        res.setdefault("proxies", {})
        res["error"] = f"{type(e).__name__}: {e}"
        print(f"soak: {res['error']}", file=sys.stderr)
    finally:
        Started.stop_all()
    res["end"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    res["pass"] = "error" not in res and verdict(res)
    text = render(res) if res["proxies"] else f"soak failed: {res.get('error')}\n"
    print(text)
    os.makedirs(args.raw_dir, exist_ok=True)
    with open(os.path.join(args.raw_dir, f"soak-{start:%Y%m%dT%H%M%SZ}.json"), "w") as f:
        json.dump(res, f, indent=1)
    if not args.no_write and res["proxies"]:
        xds_scale.write_section(args.results, text, args.section)
    if args.keep_tmp or not res["pass"]:
        print(f"temp dir kept: {tmp}", file=sys.stderr)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
