#!/usr/bin/env python3
"""Bulk-throughput client: N keep-alive HTTP/1.1 connections fetching a large body in a loop.

wrk reads 8 KiB at a time, which makes the client, not the proxy, the bottleneck for large
bodies. This client reads with MSG_WAITALL into a reused 1 MiB buffer (the GIL is released in
recv), so the load generator spends few cycles per GB. Stops by itself after --duration seconds
and prints one JSON line: bytes, responses, errors, duration.

With --tls the connections are TLS 1.3 (Python's ssl, OpenSSL; the server's certificate is not
checked; --sni names the server): each read returns at most one TLS record (16 KiB) of
plaintext, so the body is read in a loop of those instead of MSG_WAITALL.
"""
from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import threading
import time

CHUNK = 1 << 20


def tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def worker(host, port, path, deadline, timeout, out, idx, tls=None, sni=None):
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
                if tls is not None:
                    sock = tls.wrap_socket(sock, server_hostname=sni)
                    st["tls"] = f"{sock.version()} {sock.cipher()[0]}"
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
                if tls is None:
                    n = sock.recv_into(view, min(remaining, CHUNK), socket.MSG_WAITALL)
                else:
                    n = sock.recv_into(view, min(remaining, CHUNK))
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
    ap.add_argument("--tls", action="store_true", help="TLS 1.3 to the port (certificate not checked)")
    ap.add_argument("--sni", default="bench.example.com", help="server name sent with --tls")
    a = ap.parse_args()
    tls = tls_context() if a.tls else None
    start = time.monotonic()
    deadline = start + a.duration
    out = [None] * a.connections
    threads = [threading.Thread(target=worker, daemon=True,
                                args=(a.host, a.port, a.path, deadline, a.timeout, out, i, tls, a.sni))
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
        "tls": next((s["tls"] for s in out if s and s.get("tls")), None),
    }
    print("BENCHJSON " + json.dumps(res))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
