"""Load scenarios: each runs one bounded load against a proxy port and returns raw counts.

L4 (the proxy relays TCP):
rps        wrk keep-alive, 12-byte responses: requests/s, latency percentiles.
newconn    wrk with `Connection: close`: every request is a new connection through the relay.
bulk       bulkclient.py, keep-alive, a large file per request: bytes/s.
idle       idleclient.py: N connections, one GET each, held idle; the proxy's RSS before and with them.

HTTP (the proxy parses HTTP/1.1 and keeps its upstream connections alive):
http       wrk keep-alive, 12-byte responses.
http16k    wrk keep-alive, 16 KiB responses.
httpclose  wrk with `Connection: close`: a new client connection per request; upstream kept alive.

TLS (TLS 1.3, ECDSA P-256 certificate; clients offer X25519 and TLS_AES_128_GCM_SHA256 only):
https      wrk keep-alive over TLS to the `http` proxy behind TLS termination, 12-byte responses.
tlsnew     tlsclient (bench/tlsclient): new connections, each a full handshake, then closed.
tlsresume  the same, each resuming with the session ticket of an earlier connection.
tlsidle    idleclient.py --tls: N TLS connections, one GET each, held idle; RSS before and with them.
tlspass    bulkclient.py --tls through an SNI-picked passthrough chain to the upstream's TLS port.
tlsterm    bulkclient.py --tls to a tcp_proxy behind TLS termination, plaintext upstream.

HTTP/2 (cleartext, prior knowledge; h2load from nghttp2):
h2c        h2load -c50 -m10 (--h2-connections, --h2-streams), 12-byte responses; HTTP/1.1 upstream.
grpc       h2load at a fixed rate (--grpc-rate over --grpc-connections): gRPC unary calls with a
           100-byte message (POST, content-type application/grpc, te: trailers) through the proxy
           to the upstream's h2c gRPC listener; CPU per call and p99 at that rate.
h2idle     idleclient.py --h2: N h2 connections (SETTINGS exchanged, one GET each), held idle.
"""
from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HTTP_SCENARIOS = ("http", "http16k", "httpclose")
TLS_SCENARIOS = ("https", "tlsnew", "tlsresume", "tlsidle", "tlspass", "tlsterm")
HANDSHAKE_SCENARIOS = ("tlsnew", "tlsresume")
BULK_SCENARIOS = ("bulk", "tlspass", "tlsterm")
H2_SCENARIOS = ("h2c", "grpc", "h2idle")
IDLE_SCENARIOS = ("idle", "tlsidle", "h2idle")
ALL_SCENARIOS = ("rps", "newconn", "bulk", "idle") + HTTP_SCENARIOS + TLS_SCENARIOS + H2_SCENARIOS
# timed load: warm-up, duration, CPU
LOAD_SCENARIOS = ("rps", "newconn", "bulk") + HTTP_SCENARIOS + ("https", "tlsnew", "tlsresume", "tlspass",
                                                                "tlsterm", "h2c", "grpc")
# The proxy config (peers.py mode) each scenario runs against.
MODE = {"rps": "l4", "newconn": "l4", "bulk": "l4", "idle": "l4", "http": "http", "http16k": "http",
        "httpclose": "http", "https": "https", "tlsnew": "https", "tlsresume": "https",
        "tlsidle": "https", "tlspass": "tlspass", "tlsterm": "tlsterm", "h2c": "h2c", "grpc": "grpc",
        "h2idle": "h2c"}
# The gRPC method every grpc-scenario call names (the upstream answers any path alike).
GRPC_PATH = "/shardproxy.test.Echo/Unary"
GRPC_MESSAGE_BYTES = 100
GRPC_HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
# The server name TLS clients send: the passthrough chain matches PASS_SNI.
SNI = "bench.example.com"
PASS_SNI = "bulk.example.com"
# OpenSSL clients (wrk, Python's ssl) read this config (OPENSSL_CONF): the same TLS 1.3 suite
# and group for every proxy, whatever each one would prefer, and what bench/tlsclient offers.
CLIENT_OPENSSL_CONF = """openssl_conf = bench_conf
[bench_conf]
ssl_conf = bench_ssl
[bench_ssl]
system_default = bench_tls
[bench_tls]
MinProtocol = TLSv1.3
Ciphersuites = TLS_AES_128_GCM_SHA256
Groups = X25519
"""
# wrk scenarios: path, whether the client closes after each request, the connections option.
WRK = {
    "rps": ("/small", False, "connections"),
    "newconn": ("/small", True, "connections"),
    "http": ("/small", False, "http_connections"),
    "http16k": ("/16k.bin", False, "http_connections"),
    "httpclose": ("/small", True, "http_connections"),
    "https": ("/small", False, "http_connections"),
}


class LoadError(RuntimeError):
    pass


def _parse(stdout: str) -> dict:
    for line in stdout.splitlines():
        if line.startswith("BENCHJSON "):
            return json.loads(line[len("BENCHJSON "):])
    raise LoadError("load generator printed no result line:\n" + stdout[-800:])


def client_env(args) -> dict | None:
    """The environment of load generators: OPENSSL_CONF for TLS clients, when TLS runs."""
    conf = getattr(args, "client_openssl_conf", None)
    return dict(os.environ, OPENSSL_CONF=conf) if conf else None


def _run(argv: list[str], timeout: float, poll=None, env=None) -> str:
    """Run argv, bounded by timeout; poll() is called about once a second while it runs."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                out, _ = p.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    p.kill()
                    p.communicate()
                    raise LoadError(f"load generator exceeded {timeout:.0f}s: {' '.join(argv)}")
                if poll:
                    poll()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0:
        raise LoadError(f"load generator exited {p.returncode}: {' '.join(argv)}\n{out[-800:]}")
    return out


def run(scenario: str, port: int, duration: float, args, poll=None) -> dict:
    """One bounded load run. Returns requests, bytes, duration_s, errors, latency (µs)."""
    pin = ["taskset", "-c", str(args.client_core)]
    timeout = duration + 30
    if scenario in WRK:
        path, close, connections = WRK[scenario]
        argv = pin + [args.wrk_bin, "-t1", f"-c{getattr(args, connections)}",
                      f"-d{max(1, round(duration))}s", "--timeout", "5s", "--latency",
                      "-s", os.path.join(HERE, "templates/report.lua")]
        if close:
            argv += ["-H", "Connection: close"]
        scheme = "https" if scenario in TLS_SCENARIOS else "http"
        argv.append(f"{scheme}://127.0.0.1:{port}{path}")
        r = _parse(_run(argv, timeout, poll, client_env(args)))
        errors = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"]
        return {
            "requests": r["requests"], "bytes": r["bytes"], "duration_s": r["duration_us"] / 1e6,
            "errors": errors,
            "error_detail": {k[4:]: r[k] for k in r if k.startswith("err_") and r[k]},
            "p50_us": r["p50_us"], "p90_us": r["p90_us"], "p99_us": r["p99_us"],
            "max_us": r["max_us"],
        }
    if scenario in BULK_SCENARIOS:
        argv = pin + [sys.executable, os.path.join(HERE, "bulkclient.py"), "--port", str(port),
                      "--duration", str(duration), "--connections", str(args.bulk_connections)]
        if scenario != "bulk":
            argv += ["--tls", "--sni", PASS_SNI if scenario == "tlspass" else SNI]
        r = _parse(_run(argv, timeout, poll, client_env(args)))
        return {
            "requests": r["responses"], "bytes": r["bytes"], "duration_s": r["duration_s"],
            "errors": r["errors"], "error_detail": {"samples": r["error_samples"]} if r["errors"] else {},
            "tls": r.get("tls"),
        }
    if scenario in HANDSHAKE_SCENARIOS:
        argv = pin + [args.tlsclient_bin, "--port", str(port), "--sni", SNI,
                      "--duration", str(duration), "--connections", str(args.tls_connections)]
        if scenario == "tlsresume":
            argv.append("--resume")
        r = _parse(_run(argv, timeout, poll))
        detail = {"samples": r["error_samples"]} if r["errors"] else {}
        return {
            "requests": r["handshakes"], "resumed": r["resumed"], "bytes": 0,
            "duration_s": r["duration_s"], "errors": r["errors"], "error_detail": detail,
            "p50_us": r["p50_us"], "p90_us": r["p90_us"], "p99_us": r["p99_us"], "max_us": r["max_us"],
            "tls": r["negotiated"],
        }
    if scenario in ("h2c", "grpc"):
        return run_h2load(scenario, port, duration, args, poll)
    raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(ALL_SCENARIOS)})")


def grpc_frame(n: int, fill: int = 0) -> bytes:
    """One length-prefixed gRPC message as gRPC over HTTP/2 frames it (a compressed-flag byte 0,
    a 4-byte big-endian length, then the message), n bytes of `fill`."""
    return b"\x00" + n.to_bytes(4, "big") + bytes([fill]) * n


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]


def parse_h2load(stdout: str) -> dict:
    """h2load's summary: succeeded / failed counts, the status classes, data bytes, duration."""
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", stdout)
    if not m:
        raise LoadError("h2load printed no request summary:\n" + stdout[-800:])
    total, started, done, ok, failed, errored, timeout = map(int, m.groups())
    d = re.search(r"finished in ([\d.]+)(s|ms|us),", stdout)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", stdout)
    data = re.search(r"\((\d+)\) data", stdout)
    return {"succeeded": ok, "failed": failed, "errored": errored, "timeout": timeout, "started": started,
            "duration_s": _seconds(*d.groups()) if d else 0.0,
            "status": dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, codes.groups()))) if codes else {},
            "data_bytes": int(data.group(1)) if data else 0}


def latencies(log_path: str) -> tuple[list[int], int]:
    """Per-request durations (µs) from an h2load --log-file (start µs, status, duration µs),
    sorted, and how many of them did not end with a 2xx."""
    times, bad = [], 0
    with open(log_path) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 3:
                times.append(int(fields[2]))
                bad += not fields[1].startswith("2")
    times.sort()
    return times, bad


def percentile(times: list[int], q: float) -> int:
    """The q-quantile (0..1) of sorted durations, nearest rank below; 0 when there are none."""
    return times[min(len(times) - 1, int(q * len(times)))] if times else 0


def run_fixed_rate_h1(port: int, path: str, rate: int, connections: int, duration: float,
                      h2load_bin: str, client_core, tmp: str, authority: str | None = None) -> dict:
    """h2load over HTTP/1.1 keep-alive at a fixed `rate` req/s (--rps per connection, so the
    offered rate is rounded to a multiple of `connections`) for `duration` s: requests (those in
    h2load's per-request log), req/s, percentiles from that log (a late answer delays that
    connection's next request), errors (non-2xx, failed, errored, timed out), and h2load's
    count of succeeded requests with the bytes of their bodies."""
    log = os.path.join(tmp, f"h2load-fixed-{time.monotonic_ns()}.log")
    per_connection = max(1, round(rate / connections))
    argv = ["taskset", "-c", str(client_core), h2load_bin, "--h1", "-c", str(connections),
            "--rps", str(per_connection), "-D", str(max(1, round(duration))), "--log-file", log]
    if authority:
        # `:authority` sets the one Host header (`-H Host:` would add a second).
        argv += ["-H", f":authority: {authority}"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    started = time.monotonic()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
        elapsed = time.monotonic() - started
        r = parse_h2load(out)
        times, bad = latencies(log)
    finally:
        if os.path.exists(log):
            os.remove(log)
    return {"requests": len(times), "rps": len(times) / elapsed, "target_rate": per_connection * connections,
            "succeeded": r["succeeded"], "bytes": r["data_bytes"], "p50_us": percentile(times, 0.50), "p90_us": percentile(times, 0.90),
            "p99_us": percentile(times, 0.99), "max_us": times[-1] if times else 0,
            "errors": max(bad, r["failed"] + r["errored"] + r["timeout"])}


def run_h2load(scenario: str, port: int, duration: float, args, poll=None) -> dict:
    """h2c: closed loop, --h2-connections × --h2-streams in flight, GET of the 12-byte body.
    grpc: open loop at --grpc-rate calls/s over --grpc-connections (h2load --rps per
    connection, up to 10 streams in flight each so a slow answer does not lower the rate),
    each a POST of one 100-byte gRPC message; the upstream answers one 100-byte message and
    grpc-status 0 in the trailers."""
    log = os.path.join(args.tmp, f"h2load-{scenario}-{time.monotonic_ns()}.log")
    argv = ["taskset", "-c", str(args.client_core), args.h2load_bin, "-D", str(max(1, round(duration))),
            "--log-file", log]
    if scenario == "h2c":
        argv += ["-c", str(args.h2_connections), "-m", str(args.h2_streams),
                 f"http://127.0.0.1:{port}/small"]
        body = 12
    else:
        per_connection = max(1, round(args.grpc_rate / args.grpc_connections))
        argv += ["-c", str(args.grpc_connections), "-m", "10", "--rps", str(per_connection),
                 "-d", args.grpc_request_file] + GRPC_HEADERS + [f"http://127.0.0.1:{port}{GRPC_PATH}"]
        body = 5 + GRPC_MESSAGE_BYTES
    try:
        r = parse_h2load(_run(argv, duration + 30, poll))
        times, bad = latencies(log)
    finally:
        if os.path.exists(log):
            os.remove(log)
    errors = r["failed"] + r["errored"] + r["timeout"]
    detail = {k: r[k] for k in ("failed", "errored", "timeout") if r[k]}
    if r["status"] and sum(r["status"].values()) > r["status"]["2xx"]:
        detail["status"] = r["status"]
    if r["succeeded"] and r["data_bytes"] != body * r["succeeded"]:
        # Not the upstream's answer (a proxy's own error reply, or a cut body).
        detail["data_bytes"] = f"{r['data_bytes']} for {r['succeeded']} responses of {body}"
    out = {"requests": r["succeeded"], "bytes": r["data_bytes"], "duration_s": r["duration_s"] or duration,
           "errors": errors, "error_detail": detail, "p50_us": percentile(times, 0.50),
           "p90_us": percentile(times, 0.90), "p99_us": percentile(times, 0.99),
           "max_us": times[-1] if times else 0, "logged_non_2xx": bad}
    if scenario == "grpc":
        out["target_rate"] = per_connection * args.grpc_connections
    return out


def _line(p: subprocess.Popen, prefix: str, timeout: float, poll=None) -> dict:
    """Wait for the line `prefix {json}` on p's stdout, calling poll() while waiting."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        if not select.select([p.stdout], [], [], 1.0)[0]:
            if poll:
                poll()
            continue
        line = p.stdout.readline()
        if not line:
            raise LoadError(f"idle client exited ({p.wait()}) before {prefix.strip()}:\n" + "".join(seen)[-800:])
        if line.startswith(prefix):
            return json.loads(line[len(prefix):])
        seen.append(line)
    raise LoadError(f"idle client printed no {prefix.strip()} line within {timeout:.0f}s")


def run_idle(port: int, args, rss, poll=None, settle=1.0, tls=False, h2=False) -> dict:
    """Open args.idle_connections through the relay (one GET each; with tls, after a TLS
    handshake; with h2, over HTTP/2 with prior knowledge after the SETTINGS exchange), hold
    them idle for `settle` seconds, and sample rss() (the proxy tree's RSS, bytes) before
    opening and while held."""
    argv = ["taskset", "-c", str(args.client_core), sys.executable, os.path.join(HERE, "idleclient.py"),
            "--port", str(port), "--connections", str(args.idle_connections)]
    if tls:
        argv += ["--tls", "--sni", SNI]
    if h2:
        argv.append("--h2")
    rss_before = rss()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=client_env(args))
    try:
        opened = _line(p, "OPEN ", 60, poll)
        if not opened["held"]:
            raise LoadError(f"no connection held open ({opened['errors']} errors)")
        time.sleep(settle)
        rss_open = rss()
        p.stdin.write("close\n")
        p.stdin.flush()
        r = _line(p, "BENCHJSON ", 30, poll)
    finally:
        if p.poll() is None:
            try:
                p.stdin.close()  # EOF: the client closes its connections and exits
                p.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()
                p.wait()
    lost = r["held"] - r["alive"]  # closed by the proxy while they should have been idle
    return {
        "requests": r["held"], "bytes": r["bytes"], "duration_s": opened["open_s"],
        "errors": r["errors"] + lost,
        "error_detail": {"samples": r["error_samples"], "closed_while_idle": lost} if r["errors"] + lost else {},
        "connections": args.idle_connections, "held": r["held"], "alive": r["alive"],
        "rss_before": rss_before, "rss_open": rss_open,
    }
