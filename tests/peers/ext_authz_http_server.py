#!/usr/bin/env python3
"""Test peer: an HTTP external authorization server (what `ext_authz`'s `http_service` calls)
that answers each check by a header the test's client sets, and records every check request it
gets, for a test to assert on what a proxy sent.

    ext_authz_http_server.py --port 0 --log PATH [--stdin-eof]

Prints `READY <port>` once listening (HTTP/1.1 with keep-alive, 127.0.0.1). Each check is
appended to PATH as one JSON line: `method`, `path`, `headers` (lower-cased names with their
values, in the order received) and `body` (text).

The answer follows the check's `x-verdict` header (the proxy must be configured to pass it):
    (none), allow  200, with headers `x-authz: ok`, `x-authz-append: a`,
                   `x-authz-client: yes`, `x-authz-secret: s` (for no allow list to name),
                   `x-envoy-auth-headers-to-remove: x-remove-me`, and `x-user-id` carrying
                   the check's `x-user` when it has one; empty body
    a number N     N (a denial, or with 5xx an error), body `denied by authz`, headers
                   `x-denied: yes`, `www-authenticate: Basic realm="authz"`, two
                   `set-cookie`s, `x-authz-secret: s`
    slow           waits `x-sleep-ms` milliseconds (default 2000), then allows
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DENIED_BODY = b"denied by authz"


class Checks(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_path = ""
    lock = threading.Lock()

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def record(self, body: bytes) -> None:
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
            "body": body.decode("utf-8", "replace"),
        }
        with self.lock, open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        try:
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The proxy gave up waiting (a timed-out check).
            self.close_connection = True

    def check(self) -> None:
        body = self.body()
        self.record(body)
        verdict = self.headers.get("x-verdict", "allow")
        if verdict == "slow":
            time.sleep(int(self.headers.get("x-sleep-ms", "2000")) / 1000)
            verdict = "allow"
        if verdict.isdigit():
            self.answer(int(verdict), [
                ("x-denied", "yes"),
                ("www-authenticate", 'Basic realm="authz"'),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-authz-secret", "s"),
            ], DENIED_BODY)
            return
        headers = [
            ("x-authz", "ok"),
            ("x-authz-append", "a"),
            ("x-authz-client", "yes"),
            ("x-authz-secret", "s"),
            ("x-envoy-auth-headers-to-remove", "x-remove-me"),
        ]
        if "x-user" in self.headers:
            headers.append(("x-user-id", self.headers["x-user"]))
        self.answer(200, headers, b"")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--stdin-eof", action="store_true", help="exit when stdin closes")
    args = parser.parse_args()
    Checks.log_path = args.log
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), Checks)
    except OSError as e:
        print(f"ext_authz_http_server: cannot listen on port {args.port}: {e}", file=sys.stderr)
        return 1
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    if args.stdin_eof:
        sys.stdin.read()
    else:
        threading.Event().wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
