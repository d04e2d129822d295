#!/usr/bin/env python3
"""Config propagation: how long from the agent finishing a translation until every shard runs
the new generation (the proxy logs "applied on all shards <t> after publish" per generation).

Starts shardproxy with --concurrency N on a bootstrap file, rewrites the file --changes times
(each change adds or removes a cluster and moves a listener between them), and reports the
median, p90 and max of the logged publish-to-applied times. Bounded: each change waits at most
5 s for its generation.

    python3 bench/reload_latency.py [--proxy-bin target/release/shardproxy] [--shards 2] [--changes 50]
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

APPLIED = re.compile(r"applied on all shards ([0-9.]+)(ns|µs|us|ms|s) after publish.*generation=(\d+)")
UNIT = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bootstrap(admin: int, listen: int, upstream: int, generation: int) -> str:
    clusters = "\n".join(
        f"""  - name: c{i}
    connect_timeout: 1s
    load_assignment:
      cluster_name: c{i}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]"""
        for i in range(1 + generation % 2)
    )
    return f"""admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: c{generation % 2}
  clusters:
{clusters}
"""


def write_atomically(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proxy-bin", default="target/release/shardproxy")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--changes", type=int, default=50)
    args = ap.parse_args()
    if not os.access(args.proxy_bin, os.X_OK):
        print(f"{args.proxy_bin} not found: cargo build --release", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="shardproxy-reload-")
    path = os.path.join(tmp, "bootstrap.yaml")
    admin, listen, upstream = free_port(), free_port(), free_port()
    write_atomically(path, bootstrap(admin, listen, upstream, 0))
    log_path = os.path.join(tmp, "proxy.log")
    log = open(log_path, "w")
    proxy = subprocess.Popen(
        [args.proxy_bin, "-c", path, "--concurrency", str(args.shards), "--drain-time-s", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    samples: dict[int, float] = {}
    try:
        def wait_for(generation: int) -> bool:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with open(log_path, encoding="utf-8", errors="replace") as f:
                    for m in APPLIED.finditer(f.read()):
                        samples[int(m.group(3))] = float(m.group(1)) * UNIT[m.group(2)]
                if generation in samples:
                    return True
                time.sleep(0.02)
            return False

        if not wait_for(1):
            print("proxy did not start; log:\n" + open(log_path).read()[-2000:], file=sys.stderr)
            return 1
        for change in range(1, args.changes + 1):
            write_atomically(path, bootstrap(admin, listen, upstream, change))
            if not wait_for(change + 1):
                print(f"generation {change + 1} not applied within 5 s", file=sys.stderr)
                return 1
            print(f"\r{change}/{args.changes} changes applied", end="", file=sys.stderr)
        print(file=sys.stderr)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        log.close()
    times = sorted(v for g, v in samples.items() if g > 1)
    p90 = times[int(0.9 * (len(times) - 1))]
    print(f"shards={args.shards} changes={len(times)} publish→applied on all shards: "
          f"median {statistics.median(times):.0f} µs, p90 {p90:.0f} µs, max {max(times):.0f} µs "
          f"(target: ≤ 5000 µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
