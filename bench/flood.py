#!/usr/bin/env python3
"""Connection-flood bench: with `global_downstream_max_connections: 1000`, a client opens
10,000 connections as fast as it can and keeps reopening those the proxy closes, while 20
keep-alive connections (opened before the flood) send requests. Is the proxy's memory bounded,
and do the keep-alive connections keep their p99 latency within 2x of the same load without
the flood? shardproxy and Envoy, same bootstrap, same run.

Upstream: nginx `return 200` on 127.0.0.1. Proxies: an HTTP/1.1 listener over that cluster,
one worker (`--concurrency 1`) pinned to core 0; wrk (-t1 -c20, `--latency`), nginx and the
flooder on core 1. Per proxy: a quiet wrk run of `--duration` s, then the same run with the
flood started 1 s into it (the keep-alive connections are open by then). Reported: RSS after
start, peak RSS sampled every 100 ms during the flood, connections refused at the limit
(`downstream_global_cx_overflow`), wrk's p99 in both runs and their ratio.
Target (issue 12): RSS bounded, p99 under flood <= 2x quiet.

    python3 bench/flood.py [--duration 10] [--connections 10000] [--peers shardproxy,envoy]
                           [--accepts-per-event N]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402
import procstat  # noqa: E402
from outlier import free_port, http_bootstrap, stat, wait_ready  # noqa: E402

LIMIT = 1000

NGINX = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}
}}
"""

FLOODER = r"""
import selectors, socket, sys, time
port, total, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
end = time.time() + seconds
sel = selectors.DefaultSelector()
opened = reopened = 0
def open_one():
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    sel.register(s, selectors.EVENT_READ)
    return s
while opened < total and time.time() < end:
    open_one(); opened += 1
# Hold them; reopen each one the proxy closes (the refused ones), until the end.
while time.time() < end:
    for key, _ in sel.select(timeout=0.1):
        s = key.fileobj
        try:
            data = s.recv(1)
        except OSError:
            data = b""
        if not data:
            sel.unregister(s); s.close()
            if time.time() < end:
                open_one(); reopened += 1
print(opened, reopened)
"""


def bootstrap(port: int, admin: int, upstream: int, accepts_per_event: int | None) -> dict:
    config = http_bootstrap(port, admin, [upstream])
    if accepts_per_event:
        listener = config["static_resources"]["listeners"][0]
        listener["max_connections_to_accept_per_socket_event"] = accepts_per_event
    config["overload_manager"] = {"resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
            "max_active_downstream_connections": LIMIT,
        },
    }]}
    return config


def to_ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(wrk_bin: str, port: int, seconds: int) -> dict:
    out = subprocess.run(["taskset", "-c", "1", wrk_bin, "-t1", "-c20", f"-d{seconds}s", "--latency",
                          f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p99_ms": to_ms(p99.group(1)) if p99 else None,
        "socket_errors": errors.group(1) if errors else "",
    }


def run_peer(peer, tmp: str, upstream: int, args) -> dict:
    port, admin = free_port(), free_port()
    cfg = os.path.join(tmp, f"{peer.name}.json")
    with open(cfg, "w") as f:
        json.dump(bootstrap(port, admin, upstream, args.accepts_per_event), f)
    log = open(os.path.join(tmp, f"{peer.name}.log"), "w")
    proc = subprocess.Popen(["taskset", "-c", "0"] + peer.command(cfg, os.path.join(tmp, f"{peer.name}.envoy.log"), 1),
                            stdout=log, stderr=log)
    try:
        wait_ready(admin, proc, peer.name)
        rss_start = procstat.rss_bytes(proc.pid)
        quiet = wrk(args.wrk_bin, port, args.duration)
        rss_quiet = procstat.rss_bytes(proc.pid)
        # The flood: 1 s into the second wrk run, for the rest of it.
        peak = [rss_quiet]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], procstat.rss_bytes(proc.pid) or 0)
                time.sleep(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        flood_out = {}

        def flood():
            time.sleep(1)
            r = subprocess.run(["taskset", "-c", "1", sys.executable, "-c", FLOODER, str(port),
                                str(args.connections), str(args.duration - 1.5)],
                               capture_output=True, text=True, timeout=args.duration + 30)
            flood_out["result"] = r.stdout.strip() or r.stderr.strip()[-300:]

        flooder = threading.Thread(target=flood)
        flooder.start()
        flooded = wrk(args.wrk_bin, port, args.duration)
        flooder.join()
        done.set()
        sampler.join()
        time.sleep(1)
        rss_after = procstat.rss_bytes(proc.pid)
        overflow = stat(admin, "listener.127.0.0.1_%d.downstream_global_cx_overflow" % port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    opened = flood_out.get("result", "")
    ratio = (flooded["p99_ms"] / quiet["p99_ms"]) if quiet["p99_ms"] and flooded["p99_ms"] else None
    return {
        "peer": peer.name,
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_after_quiet_mb": round(rss_quiet / 2**20, 1),
        "rss_peak_flood_mb": round(peak[0] / 2**20, 1),
        "rss_after_flood_mb": round(rss_after / 2**20, 1),
        "flood_opened_reopened": opened,
        "global_cx_overflow": overflow,
        "quiet": quiet,
        "flood": flooded,
        "p99_ratio": round(ratio, 2) if ratio else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default="shardproxy,envoy")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--accepts-per-event", type=int, default=None,
                        help="the listener's max_connections_to_accept_per_socket_event (both proxies; "
                             "unset: each proxy's default, all of the backlog for Envoy, 32 for shardproxy)")
    parser.add_argument("--proxy-bin", default=None)
    parser.add_argument("--envoy-bin", default=None)
    parser.add_argument("--nginx-bin", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument("--wrk-bin", default=shutil.which("wrk") or "wrk")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="shardproxy-flood-")
    upstream = free_port()
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX.format(tmp=tmp, port=upstream))
    nginx = subprocess.Popen(["taskset", "-c", "1", args.nginx_bin, "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")],
                             stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    results = []
    try:
        for name in args.peers.split(","):
            peer = peers.make_peer(name, args)
            peer.binary = peer.find()
            if not peer.binary:
                print(f"{name}: binary not found ({peer.install_hint})", file=sys.stderr)
                return 1
            result = run_peer(peer, tmp, upstream, args)
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
    ours = [r for r in results if r["peer"].startswith("shardproxy")]
    met = all(r["p99_ratio"] is not None and r["p99_ratio"] <= 2.0 for r in ours)
    print(f"target p99 under flood <= 2x quiet: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
