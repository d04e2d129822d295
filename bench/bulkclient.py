#!/usr/bin/env python3
"""Bulk-throughput client: N keep-alive HTTP/1.1 connections fetching a large body in a loop.

wrk reads 8 KiB at a time, which makes the client, not the proxy, the bottleneck for large
bodies. This client reads with MSG_WAITALL into a reused 1 MiB buffer (the GIL is released in
recv), so the load generator spends few cycles per GB. Stops by itself after --duration seconds
and prints one JSON line: bytes, responses, errors, duration.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

CHUNK = 1 << 20


def worker(host, port, path, deadline, timeout, out, idx):
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    st = {"bytes": 0, "responses": 0, "errors": 0, "error": None}
    out[idx] = st
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench-bulk\r\n\r\n".encode()
    sock = None
    try:
        while time.monotonic() < deadline:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(req)
            # Read the header block.
            head = b""
            while b"\r\n\r\n" not in head:
                n = sock.recv_into(view, 65536)
                if n == 0:
                    raise ConnectionError("connection closed while reading headers")
                head += bytes(view[:n])
                st["bytes"] += n
            hdr, _, rest = head.partition(b"\r\n\r\n")
            lines = hdr.split(b"\r\n")
            if b" 200 " not in lines[0] + b" ":
                raise ConnectionError(f"bad status: {lines[0][:80]!r}")
            clen = None
            for ln in lines[1:]:
                k, _, v = ln.partition(b":")
                if k.strip().lower() == b"content-length":
                    clen = int(v.strip())
            if clen is None:
                raise ConnectionError("no content-length")
            remaining = clen - len(rest)
            while remaining > 0:
                if time.monotonic() >= deadline:
                    return
                n = sock.recv_into(view, min(remaining, CHUNK), socket.MSG_WAITALL)
                if n == 0:
                    raise ConnectionError("connection closed mid-body")
                remaining -= n
                st["bytes"] += n
            st["responses"] += 1
    except (OSError, ConnectionError, ValueError) as e:
        st["errors"] += 1
        st["error"] = f"{type(e).__name__}: {e}"
    finally:
        if sock is not None:
            sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/bulk.bin")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    start = time.monotonic()
    deadline = start + a.duration
    out = [None] * a.connections
    threads = [threading.Thread(target=worker, daemon=True,
                                args=(a.host, a.port, a.path, deadline, a.timeout, out, i))
               for i in range(a.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.duration + a.timeout + 5)
    elapsed = min(time.monotonic() - start, a.duration)
    res = {
        "bytes": sum(s["bytes"] for s in out if s),
        "responses": sum(s["responses"] for s in out if s),
        "errors": sum(s["errors"] for s in out if s),
        "error_samples": sorted({s["error"] for s in out if s and s["error"]})[:3],
        "duration_s": elapsed,
    }
    print("BENCHJSON " + json.dumps(res))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
