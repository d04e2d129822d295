#!/usr/bin/env python3
"""Test peer: a pod's outbound interception, run inside a network namespace of its own.

    ip netns exec NS interception.py --bootstrap TEMPLATE --admin PORT \\
        --redirect 9080 --redirect 9090 --request 9080 --request 9090 -- PROXY ARGS...

Brings the namespace's loopback up, installs what Istio's init container does for outbound
traffic (nat OUTPUT: the app's TCP to each --redirect port REDIRECTed to 15001, where the
proxy's virtual outbound listener is; the app is uid 65534 here, and the proxy's own
connections are not redirected, as Istio exempts its proxy's uid), starts
tests/peers/upstream.py with the listener `app`, and a server answering on each
--direct port itself (its JSON `upstream` is `direct:<port>`: what a passthrough reaches,
and `from` the address the connection came from),
writes the bootstrap with `APP_PORT` replaced by its port, starts the
proxy (the command after `--`, given `-c <bootstrap>`), waits until its admin answers /ready,
then GETs http://127.0.0.1:PORT/ for each --request port as the app. Prints one JSON object:
per port the status, the upstream that answered (its echo's `upstream`), where a direct
server saw it come from, and the `x-served-by` response header; then stops everything it
started.
"""
from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUTBOUND = 15001
BOUND = 30
APP_UID = 65534


class Direct(http.server.BaseHTTPRequestHandler):
    """Answers on the port the app asked for, naming it."""

    def do_GET(self):
        body = json.dumps({"upstream": f"direct:{self.server.server_port}",
                           "from": self.client_address[0]}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


# The app's side, run as APP_UID by a system interpreter (this file may sit where that uid
# cannot read): one GET per port given, one JSON object out.
CLIENT = """
import http.client, json, sys

def get(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/", headers={"host": f"svc.test:{port}"})
        r = conn.getresponse()
        body = r.read()
        conn.close()
    except OSError as e:
        return {"error": type(e).__name__}
    try:
        echo = json.loads(body)
    except ValueError:
        echo = {}
    return {"status": r.status, "upstream": echo.get("upstream"), "from": echo.get("from"),
            "served_by": r.getheader("x-served-by")}

print(json.dumps({port: get(int(port)) for port in sys.argv[1:]}))
"""


def app_python() -> str:
    """An interpreter APP_UID can run (the venv's may live under /root)."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--admin", type=int, required=True)
    p.add_argument("--redirect", type=int, action="append", default=[])
    p.add_argument("--request", type=int, action="append", default=[])
    p.add_argument("--direct", type=int, action="append", default=[])
    p.add_argument("proxy", nargs=argparse.REMAINDER)
    args = p.parse_args()
    proxy_cmd = [a for a in args.proxy if a != "--"]

    run("ip", "link", "set", "lo", "up")
    for port in args.redirect:
        run("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1",
            "--dport", str(port), "-m", "owner", "--uid-owner", str(APP_UID),
            "-j", "REDIRECT", "--to-ports", str(OUTBOUND))
    for port in args.direct:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Direct)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    upstream = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "upstream.py"), "--name", "app"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ports = {}
    for line in upstream.stdout:
        if line.startswith("LISTEN"):
            _, name, port = line.split()
            ports[name] = port
        if line.startswith("READY"):
            break
    with open(args.bootstrap) as f:
        text = f.read().replace("APP_PORT", ports["app"])
    work = tempfile.mkdtemp(prefix="interception-")
    config = os.path.join(work, "bootstrap.yaml")
    with open(config, "w") as f:
        f.write(text)
    log = open(os.path.join(work, "proxy.log"), "w")
    proxy = subprocess.Popen(proxy_cmd + ["-c", config], stdout=log, stderr=log)
    out: dict = {}
    try:
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            if proxy.poll() is not None:
                break
            try:
                conn = http.client.HTTPConnection("127.0.0.1", args.admin, timeout=2)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    out["ready"] = True
                    break
            except OSError:
                pass
            time.sleep(0.1)
        client = [app_python(), "-c", CLIENT] + [str(port) for port in args.request]
        answers = subprocess.run(client, user=APP_UID, capture_output=True, text=True,
                                 timeout=BOUND, check=True, cwd="/")
        out.update(json.loads(answers.stdout))
    finally:
        proxy.kill()
        proxy.wait()
        upstream.kill()
        upstream.wait()
        log.close()
    if not out.get("ready"):
        with open(os.path.join(work, "proxy.log")) as f:
            out["log"] = f.read()[-3000:]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
