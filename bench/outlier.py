#!/usr/bin/env python3
"""Outlier-detection bench: one of four upstream hosts answers 503 to everything; after
outlier detection settles, what share of requests succeeds through shardproxy and through
Envoy (same bootstrap, same run)?

Upstreams: one nginx with four servers on 127.0.0.1 (the fourth `return 503`). Proxies: an
HTTP/1.1 listener over a ROUND_ROBIN cluster of the four with `outlier_detection`
(`consecutive_5xx: 5`, `interval: 1s`, `base_ejection_time: 60s`, `max_ejection_percent:
50`), `--concurrency 2`. Load: wrk -t1 -c20, keep-alive, for `--settle` seconds (not counted:
detection happens here), then for `--duration` seconds (counted: wrk's non-2xx count over its
total). Target (issue 12): at least 99.9 % succeed.

    python3 bench/outlier.py [--duration 10] [--settle 3] [--peers shardproxy,envoy]
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
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

NGINX = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
{servers}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_bootstrap(port: int, admin: int, upstreams: list[int]) -> dict:
    """One HTTP listener on `port` routing everything to STATIC cluster `backend`."""
    endpoints = [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
                 for p in upstreams]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "http",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "http",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                                             "routes": [{"match": {"prefix": "/"},
                                                                         "route": {"cluster": "backend"}}]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "backend",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": endpoints}]},
            }],
        },
    }


def bootstrap(port: int, admin: int, upstreams: list[int]) -> dict:
    config = http_bootstrap(port, admin, upstreams)
    config["static_resources"]["clusters"][0]["outlier_detection"] = {
        "consecutive_5xx": 5, "interval": "1s", "base_ejection_time": "60s", "max_ejection_percent": 50}
    return config


def wait_ready(admin: int, proc: subprocess.Popen, name: str) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{name} not ready in 30 s")


def wrk(wrk_bin: str, port: int, seconds: int) -> tuple[int, int]:
    """(requests, non-2xx) of a wrk run."""
    out = subprocess.run([wrk_bin, "-t1", "-c20", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return total, int(bad.group(1)) if bad else 0


def stat(admin: int, name: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter={name}", timeout=5) as r:
        for line in r.read().decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
    return 0


def run_peer(peer, tmp: str, upstreams: list[int], args) -> dict:
    port, admin = free_port(), free_port()
    cfg = os.path.join(tmp, f"{peer.name}.json")
    with open(cfg, "w") as f:
        json.dump(bootstrap(port, admin, upstreams), f)
    log = open(os.path.join(tmp, f"{peer.name}.log"), "w")
    proc = subprocess.Popen(peer.command(cfg, os.path.join(tmp, f"{peer.name}.envoy.log"), 2),
                            stdout=log, stderr=log)
    try:
        wait_ready(admin, proc, peer.name)
        settle_total, settle_bad = wrk(args.wrk_bin, port, args.settle)
        total, bad = wrk(args.wrk_bin, port, args.duration)
        ejected = stat(admin, "cluster.backend.outlier_detection.ejections_active")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "peer": peer.name, "settle_requests": settle_total, "settle_non_2xx": settle_bad,
        "requests": total, "non_2xx": bad, "success_pct": 100.0 * (total - bad) / max(total, 1),
        "ejections_active": ejected,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default="shardproxy,envoy")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--settle", type=int, default=3)
    parser.add_argument("--proxy-bin", default=None)
    parser.add_argument("--envoy-bin", default=None)
    parser.add_argument("--nginx-bin", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument("--wrk-bin", default=shutil.which("wrk") or "wrk")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="shardproxy-outlier-")
    upstreams = [free_port() for _ in range(4)]
    servers = "\n".join(
        f"    server {{ listen 127.0.0.1:{p}; location / {{ return {503 if i == 3 else 200} \"ok\\n\"; }} }}"
        for i, p in enumerate(upstreams))
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX.format(tmp=tmp, servers=servers))
    nginx = subprocess.Popen([args.nginx_bin, "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")],
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
            result = run_peer(peer, tmp, upstreams, args)
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
    met = all(r["success_pct"] >= 99.9 for r in results if r["peer"].startswith("shardproxy"))
    print(f"target >= 99.9 % succeed after settling: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
